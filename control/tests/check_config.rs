//! `koinos-control --check-config`: the binary loads its configuration as at start-up (file,
//! environment, secret files) and says whether it is usable, without listening or connecting.
//! No dev stack needed: nothing here is contacted (the addresses below are never reached).

use std::{path::Path, process::Command};

fn dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "koinos-control-check-{name}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_config(dir: &Path, secret_name: &str) -> std::path::PathBuf {
    for secret in ["password", "livekit", "turn"] {
        std::fs::write(dir.join(secret), format!("{secret}-value\n")).unwrap();
    }
    let config = dir.join("control.toml");
    std::fs::write(
        &config,
        format!(
            r#"http_listen = "0.0.0.0:8080"
grpc_listen = "0.0.0.0:50051"
public_rtc_service_url = "https://rtc.clinic.example/api/rtc"
[homeserver]
url = "http://homeserver.invalid:8008"
server_name = "clinic.example"
service_password_file = "{dir}/password"
[livekit]
api_url = "http://livekit.invalid:7880"
public_url = "wss://rtc.clinic.example"
api_secret_file = "{dir}/{secret_name}"
[turn]
uris = ["turns:turn.clinic.example:443?transport=tcp"]
secret_file = "{dir}/turn"
"#,
            dir = dir.display()
        ),
    )
    .unwrap();
    config
}

fn check(config: &Path, api_key: Option<&str>) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_koinos-control"));
    command
        .arg("--config")
        .arg(config)
        .arg("--check-config")
        .env_remove("KOINOS_CONTROL_CONFIG");
    for (key, _) in std::env::vars() {
        if key.starts_with("KOINOS_CONTROL_") {
            command.env_remove(key);
        }
    }
    if let Some(key) = api_key {
        command.env("KOINOS_CONTROL_LIVEKIT__API_KEY", key);
    }
    let out = command.output().expect("runs koinos-control");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_usable_configuration_is_reported_ok_without_connecting() {
    let dir = dir("ok");
    let config = write_config(&dir, "livekit");
    // The API key comes from the environment, as in the Kubernetes Deployment.
    let (ok, stdout, stderr) = check(&config, Some("clinic-key"));
    assert!(ok, "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(stdout.trim(), "koinos-control: configuration OK");
}

#[test]
fn a_missing_secret_file_or_setting_is_named_and_exits_1() {
    let dir = dir("bad");
    let config = write_config(&dir, "no-such-secret");
    let (ok, stdout, stderr) = check(&config, Some("clinic-key"));
    assert!(!ok, "stdout: {stdout}");
    assert!(stderr.contains("livekit.api_secret"), "{stderr}");
    assert!(stderr.contains("no-such-secret"), "{stderr}");

    let config = write_config(&dir, "livekit");
    let (ok, _, stderr) = check(&config, None);
    assert!(!ok);
    assert!(stderr.contains("livekit.api_key is required"), "{stderr}");

    std::fs::write(&config, "unknown_setting = 1\n").unwrap();
    let (ok, _, stderr) = check(&config, Some("clinic-key"));
    assert!(!ok);
    assert!(stderr.contains("unknown_setting"), "{stderr}");
}
