//! A gateway of the test's own, beside the dev stack's two: started on a free port with the
//! configuration the test gives, stopped when dropped. What a clinic scaling out, or a gateway
//! restarted after something happened, looks like to control.

use std::{path::PathBuf, process::Child, time::Duration};

pub struct SideGateway {
    child: Child,
    pub ws: String,
    pub http: String,
    log: PathBuf,
}

impl SideGateway {
    /// Starts `binary` (the test's `env!("CARGO_BIN_EXE_koinos-gateway")`) with `config` (TOML
    /// without `listen`, which is chosen here) and waits until it answers `/healthz`.
    pub async fn start(binary: &str, name: &str, config: &str) -> SideGateway {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("koinos-{name}-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config_path = dir.join("gateway.toml");
        std::fs::write(
            &config_path,
            format!("listen = \"127.0.0.1:{port}\"\n{config}"),
        )
        .unwrap();
        let log = dir.join("gateway.log");
        let mut command = std::process::Command::new(binary);
        command
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.join("gateway.err")).unwrap());
        for (key, _) in std::env::vars() {
            if key.starts_with("KOINOS_GATEWAY_") {
                command.env_remove(key);
            }
        }
        let gateway = SideGateway {
            child: command.spawn().expect("runs koinos-gateway"),
            ws: format!("ws://127.0.0.1:{port}"),
            http: format!("http://127.0.0.1:{port}"),
            log,
        };
        for _ in 0..100 {
            if reqwest::get(format!("{}/healthz", gateway.http))
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return gateway;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the side gateway did not start: {}", gateway.log_text());
    }

    /// A gateway like the dev stack's: in front of its LiveKit, with the real credential.
    pub async fn genuine(binary: &str, name: &str) -> SideGateway {
        let credential = crate::stack::dev_dir().join("secrets/gateway_credential");
        Self::start(
            binary,
            name,
            &format!(
                "upstream_url = \"ws://127.0.0.1:7881\"\nallowed_origins = [\"{}\"]\n\
                 control_grpc_url = \"{}\"\ncontrol_credential_file = \"{}\"\n",
                crate::stack::PAGE_ORIGIN,
                crate::stack::CONTROL_GRPC,
                credential.display()
            ),
        )
        .await
    }

    /// Waits until it is caught up with control's revocations (`/readyz`).
    pub async fn ready(&self) -> bool {
        crate::stack::eventually(15, || async {
            reqwest::get(format!("{}/readyz", self.http))
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops it as a crash would (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Freezes it (SIGSTOP), as a process that stopped answering.
    pub fn pause(&self) {
        let _ = std::process::Command::new("kill")
            .args(["-STOP", &self.child.id().to_string()])
            .status();
    }

    pub fn resume(&self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
    }
}

impl Drop for SideGateway {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}
