//! The real `koinos-control` binary, started by the test against a [`FakeHomeserver`] and a
//! [`FakeLiveKit`] on free ports, with its configuration (secrets in files, as production
//! gives them) in a directory of its own. Its log is printed only if the test fails; it is
//! stopped when dropped.
//!
//! Concurrency model: the process is owned by the [`Control`] value alone; the test talks to it
//! over HTTP and gRPC like any client.

use std::{
    collections::BTreeMap,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use super::{free_port, homeserver::FakeHomeserver, livekit::FakeLiveKit};

/// The LiveKit API key control and the fake LiveKit share.
pub const LIVEKIT_API_KEY: &str = "fakekey";

/// Secrets made for one run (never printed by the tests).
#[derive(Clone)]
pub struct Secrets {
    pub livekit_api_secret: String,
    pub turn_secret: String,
    pub gateway_credential: String,
}

impl Secrets {
    pub fn generate() -> Secrets {
        let random = || {
            use std::hash::{BuildHasher, Hasher};
            let mut out = String::new();
            for _ in 0..3 {
                let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
                hasher.write_u64(out.len() as u64);
                out.push_str(&format!("{:016x}", hasher.finish()));
            }
            out
        };
        Secrets {
            livekit_api_secret: random(),
            turn_secret: random(),
            gateway_credential: random(),
        }
    }
}

/// Control's configuration before it starts: the settings the fakes need, and whatever a test
/// changes (`set("call", "enforce_interval", "60")`).
pub struct ControlBuilder {
    binary: String,
    /// section (`""` for the top level) → key → TOML value.
    settings: BTreeMap<String, BTreeMap<String, String>>,
    secrets: Secrets,
    /// The LiveKit secret control is given, if not the one the fake LiveKit checks.
    livekit_secret_override: Option<String>,
    wait_ready: bool,
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

impl ControlBuilder {
    /// `binary`: the test's `env!("CARGO_BIN_EXE_koinos-control")`.
    pub fn new(
        binary: &str,
        homeserver: &FakeHomeserver,
        livekit: &FakeLiveKit,
        secrets: &Secrets,
    ) -> ControlBuilder {
        let mut builder = ControlBuilder {
            binary: binary.to_owned(),
            settings: BTreeMap::new(),
            secrets: secrets.clone(),
            livekit_secret_override: None,
            wait_ready: true,
        };
        builder
            .set("homeserver", "url", &quoted(&homeserver.url()))
            .set(
                "homeserver",
                "server_name",
                &quoted(&homeserver.server_name()),
            )
            .set(
                "homeserver",
                "service_user",
                &quoted(&homeserver.service_user()),
            )
            .set("livekit", "api_url", &quoted(&livekit.url()))
            .set("livekit", "public_url", &quoted("ws://127.0.0.1:7880"))
            .set("livekit", "api_key", &quoted(LIVEKIT_API_KEY))
            .set("turn", "uris", r#"["turn:127.0.0.1:3478?transport=udp"]"#);
        builder
    }

    /// Sets one setting (`value` is TOML: `"60"`, `"\"text\""`, `"[\"a\"]"`).
    pub fn set(&mut self, section: &str, key: &str, value: &str) -> &mut Self {
        self.settings
            .entry(section.to_owned())
            .or_default()
            .insert(key.to_owned(), value.to_owned());
        self
    }

    /// Gives control this LiveKit secret instead of the one the fake LiveKit checks.
    pub fn livekit_secret(&mut self, secret: &str) -> &mut Self {
        self.livekit_secret_override = Some(secret.to_owned());
        self
    }

    /// Returns as soon as control listens, without waiting for `/readyz`.
    pub fn no_wait(&mut self) -> &mut Self {
        self.wait_ready = false;
        self
    }

    /// Starts control with the service account's password from `homeserver`, and (unless
    /// [`ControlBuilder::no_wait`]) waits until it is ready.
    pub async fn start(&mut self, homeserver: &FakeHomeserver) -> Control {
        // A port found free may be taken by another test's fake before control binds it (the
        // tests run in parallel): control then exits at start, and is started on other ports.
        for _ in 0..2 {
            match self.try_start(homeserver).await {
                Ok(control) => return control,
                Err(exited) if exited.log_text().contains("in use") => {}
                Err(_) => panic!("koinos-control exited at start (log follows)"),
            }
        }
        match self.try_start(homeserver).await {
            Ok(control) => control,
            Err(_) => panic!("koinos-control exited at start, three times (log follows)"),
        }
    }

    /// One start on fresh ports: the running control, or the one that exited at start.
    async fn try_start(&mut self, homeserver: &FakeHomeserver) -> Result<Control, Control> {
        let (http_port, grpc_port) = (free_port(), free_port());
        let dir =
            std::env::temp_dir().join(format!("koinos-middle-{}-{http_port}", std::process::id()));
        // The secrets go in files, as in production: a directory of this test's own (an
        // existing one, perhaps planted, is refused), readable by nobody else.
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .unwrap_or_else(|e| panic!("a private directory {}: {e}", dir.display()));
        let livekit_secret = self
            .livekit_secret_override
            .clone()
            .unwrap_or_else(|| self.secrets.livekit_api_secret.clone());
        for (file, value) in [
            ("service_password", homeserver.service_password()),
            ("livekit_api_secret", livekit_secret),
            ("turn_secret", self.secrets.turn_secret.clone()),
            (
                "gateway_credential",
                self.secrets.gateway_credential.clone(),
            ),
        ] {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(dir.join(file))
                .and_then(|mut f| std::io::Write::write_all(&mut f, value.as_bytes()))
                .unwrap();
        }
        let path = |file: &str| quoted(&dir.join(file).display().to_string());
        let http = format!("http://127.0.0.1:{http_port}");
        let mut settings = self.settings.clone();
        let top = settings.entry(String::new()).or_default();
        top.insert(
            "http_listen".into(),
            quoted(&format!("127.0.0.1:{http_port}")),
        );
        top.insert(
            "grpc_listen".into(),
            quoted(&format!("127.0.0.1:{grpc_port}")),
        );
        top.entry("public_rtc_service_url".into())
            .or_insert_with(|| quoted(&format!("{http}/api/rtc")));
        top.insert("gateway_credential_file".into(), path("gateway_credential"));
        for (section, key, file) in [
            ("homeserver", "service_password_file", "service_password"),
            ("livekit", "api_secret_file", "livekit_api_secret"),
            ("turn", "secret_file", "turn_secret"),
        ] {
            settings
                .entry(section.into())
                .or_default()
                .insert(key.into(), path(file));
        }
        let config_path = dir.join("control.toml");
        std::fs::write(&config_path, render(&settings)).unwrap();

        let log = dir.join("control.log");
        let mut command = Command::new(&self.binary);
        command
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.join("control.err")).unwrap());
        for (key, _) in std::env::vars() {
            if key.starts_with("KOINOS_") {
                command.env_remove(key);
            }
        }
        let public_rtc_service_url = settings[""]["public_rtc_service_url"]
            .trim_matches('"')
            .to_owned();
        let mut control = Control {
            child: command.spawn().expect("runs koinos-control"),
            http,
            grpc: format!("http://127.0.0.1:{grpc_port}"),
            public_rtc_service_url,
            dir,
            log,
        };
        let wanted = if self.wait_ready {
            "/readyz"
        } else {
            "/healthz"
        };
        for _ in 0..200 {
            if let Ok(Some(_)) = control.child.try_wait() {
                return Err(control);
            }
            if control.get(wanted).await.0 == 200 {
                return Ok(control);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("koinos-control did not answer {wanted} within 10 s (log follows)");
    }
}

fn render(settings: &BTreeMap<String, BTreeMap<String, String>>) -> String {
    let mut text = String::new();
    // The top level first: in TOML, keys after a [section] header belong to it.
    for (section, keys) in settings {
        if !section.is_empty() {
            text.push_str(&format!("\n[{section}]\n"));
        }
        for (key, value) in keys {
            text.push_str(&format!("{key} = {value}\n"));
        }
    }
    text
}

/// A running `koinos-control`.
pub struct Control {
    child: Child,
    /// `http://127.0.0.1:PORT` of the REST listener.
    pub http: String,
    /// `http://127.0.0.1:PORT` of the gRPC listener.
    pub grpc: String,
    /// What control names itself as in call memberships (`foci_preferred`).
    pub public_rtc_service_url: String,
    dir: PathBuf,
    log: PathBuf,
}

impl Control {
    /// GETs `path`: `(status, body text)` (status 0: no answer).
    pub async fn get(&self, path: &str) -> (u16, String) {
        match reqwest::get(format!("{}{path}", self.http)).await {
            Ok(response) => {
                let status = response.status().as_u16();
                (status, response.text().await.unwrap_or_default())
            }
            Err(_) => (0, String::new()),
        }
    }

    /// POSTs `body` to `/api/rtc/{path}`: `(status, JSON answer)`.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        crate::control::post_json_to(&self.http, path, body).await
    }

    /// `POST /api/rtc/token` with this OpenID token.
    pub async fn token(&self, room: &str, openid: &Value, device: &str) -> (u16, Value) {
        self.post(
            "token",
            &serde_json::json!({"room_id": room, "openid_token": openid, "device_id": device}),
        )
        .await
    }

    /// `POST /api/rtc/turn` with this OpenID token.
    pub async fn turn(&self, room: &str, openid: &Value) -> (u16, Value) {
        self.post(
            "turn",
            &serde_json::json!({"room_id": room, "openid_token": openid}),
        )
        .await
    }

    /// Whether `/readyz` answers 200 within `seconds`.
    pub async fn ready_within(&self, seconds: u64) -> bool {
        crate::stack::eventually(seconds, || async { self.get("/readyz").await.0 == 200 }).await
    }

    /// A gRPC client of control's API.
    pub async fn grpc_client(
        &self,
    ) -> koinos_proto::v1::control_service_client::ControlServiceClient<tonic::transport::Channel>
    {
        koinos_proto::v1::control_service_client::ControlServiceClient::connect(self.grpc.clone())
            .await
            .expect("control's gRPC listener")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
            + &std::fs::read_to_string(self.dir.join("control.err")).unwrap_or_default()
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("----- koinos-control log ({})", self.log.display());
            eprintln!("{}", self.log_text());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
