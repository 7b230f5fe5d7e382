//! `koinos-gateway --check-config`: the binary loads its configuration as at start-up (file,
//! environment, secret files) and says whether it is usable, without listening or connecting.
//! No dev stack needed.

use std::{path::Path, process::Command};

fn check(config: &Path) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_koinos-gateway"));
    command.arg("--config").arg(config).arg("--check-config");
    for (key, _) in std::env::vars() {
        if key.starts_with("KOINOS_GATEWAY_") {
            command.env_remove(key);
        }
    }
    let out = command.output().expect("runs koinos-gateway");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_reports_ok_or_the_setting_at_fault() {
    let dir = std::env::temp_dir().join(format!("koinos-gateway-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("gateway.toml");
    // Every setting that names no secret file is valid in both the current and the coming
    // configuration shape (the LiveKit key leaves the gateway), so the test holds across it.
    let common = r#"listen = "0.0.0.0:7880"
upstream_url = "ws://livekit.invalid:7880"
allowed_origins = ["https://rtc.clinic.example"]
control_grpc_url = "http://control.invalid:50051"
"#;

    std::fs::write(&config, common.replace("ws://livekit", "http://livekit")).unwrap();
    let (ok, stdout, stderr) = check(&config);
    assert!(!ok, "stdout: {stdout}");
    assert!(stderr.starts_with("koinos-gateway: "), "{stderr}");
    assert!(stderr.contains("upstream_url must be ws://"), "{stderr}");

    std::fs::write(&config, format!("{common}unknown_setting = 1\n")).unwrap();
    let (ok, _, stderr) = check(&config);
    assert!(!ok);
    assert!(stderr.contains("unknown_setting"), "{stderr}");

    std::fs::write(&config, format!("{common}upstream = 1\n")).unwrap();
    let (ok, _, _) = check(&config);
    assert!(!ok);
}
