//! What the black-box tests of koinos-loadtest share: running the built binary against the dev
//! stack as a load tester would, and reading its JSON report.
#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// Runs the built tool with the dev stack's secrets and `args`.
pub fn loadtest(args: &[&str]) -> Output {
    loadtest_in(&koinos_testkit::stack::dev_dir(), args)
}

/// The tool's secret options and the dev stack's files they name (`secrets/NAME`).
const SECRETS: [(&str, &str); 3] = [
    ("--registration-secret-file", "registration_shared_secret"),
    ("--service-password-file", "service_password"),
    ("--livekit-secret-file", "livekit_api_secret"),
];

/// Runs the built tool with the secrets under `dev` and `args`.
pub fn loadtest_in(dev: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_koinos-loadtest"));
    for (option, file) in SECRETS {
        command.arg(option).arg(dev.join("secrets").join(file));
    }
    command.args(args).output().expect("run koinos-loadtest")
}

/// A dev dir of made-up secrets, for runs the tool must refuse before using any.
pub fn made_up_dev() -> PathBuf {
    let dev = std::env::temp_dir().join(format!("koinos-loadtest-made-up-{}", std::process::id()));
    std::fs::create_dir_all(dev.join("secrets")).unwrap();
    for (_, file) in SECRETS {
        std::fs::write(dev.join("secrets").join(file), "made-up\n").unwrap();
    }
    dev
}

/// Runs a call and returns its report; prints the tool's output if it did not succeed.
pub fn call(args: &[&str]) -> Value {
    let report = tempfile_path();
    let mut all = vec!["--output", report.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = loadtest(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "koinos-loadtest {args:?} failed ({})\n{stdout}\n{stderr}",
        out.status
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    eprintln!("{stdout}");
    report
}

fn tempfile_path() -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "koinos-loadtest-{}-{}.json",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// For every participant: the height of the last key frame from each remote camera, and whether
/// each remote's audio arrived.
pub fn received(report: &Value) -> Vec<(Vec<u64>, usize)> {
    report["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert!(
                p["error"].is_null(),
                "participant {} failed: {}",
                p["identity"],
                p["error"]
            );
            let tracks: Vec<&Value> = p["remote"].as_object().unwrap().values().collect();
            let heights = tracks
                .iter()
                .filter(|t| t["kind"] == "video")
                .map(|t| {
                    // As the call stood when the run told everyone to leave.
                    let leave = p["leave_ms"].as_u64().unwrap();
                    t["resolutions"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .rfind(|r| r[0].as_u64().unwrap() <= leave)
                        .map_or(0, |r| r[2].as_u64().unwrap())
                })
                .collect();
            let audio = tracks
                .iter()
                .filter(|t| t["kind"] == "audio" && t["packets"].as_u64().unwrap() > 0)
                .count();
            (heights, audio)
        })
        .collect()
}
