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
    let credential = dir.join("credential");
    std::fs::write(&credential, "gateway-credential-gateway-credential-0123\n").unwrap();
    let common = format!(
        r#"listen = "0.0.0.0:7880"
upstream_url = "ws://livekit.invalid:7880"
allowed_origins = ["https://rtc.clinic.example"]
control_grpc_url = "http://control.invalid:50051"
control_credential_file = "{}"
"#,
        credential.display()
    );

    std::fs::write(&config, &common).unwrap();
    let (ok, stdout, stderr) = check(&config);
    assert!(ok, "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(stdout.trim(), "koinos-gateway: configuration OK");

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

    // Following control needs the credential control expects.
    let without: String = common
        .lines()
        .filter(|l| !l.starts_with("control_credential_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&config, &without).unwrap();
    let (ok, _, stderr) = check(&config);
    assert!(!ok);
    assert!(stderr.contains("control_credential"), "{stderr}");
}

#[test]
fn a_configuration_with_the_old_livekit_settings_says_what_replaced_them() {
    let dir = std::env::temp_dir().join(format!("koinos-gateway-old-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        r#"listen = "127.0.0.1:7880"
upstream_url = "ws://127.0.0.1:7881"
api_key = "devkey"
api_secret_file = "/work/.dev/secrets/livekit_api_secret"
control_grpc_url = "http://127.0.0.1:50051"
"#,
    )
    .unwrap();
    let (ok, stdout, stderr) = check(&config);
    assert!(!ok, "stdout: {stdout}");
    assert!(
        stderr.contains("api_key, api_secret and api_secret_file are no longer gateway settings"),
        "{stderr}"
    );
    assert!(
        stderr.contains("found: api_key, api_secret_file"),
        "{stderr}"
    );
    assert!(stderr.contains("control_credential_file"), "{stderr}");
}
