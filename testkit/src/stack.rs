//! The dev stack as the tests find it (design.md's defaults).

use std::path::PathBuf;

pub const HS: &str = "http://127.0.0.1:8008";
pub const CONTROL: &str = "http://127.0.0.1:8080";
pub const CONTROL_GRPC: &str = "http://127.0.0.1:50051";
/// LiveKit itself (behind the gateways; reachable here only because the test runs on the host).
pub const LIVEKIT_WS: &str = "ws://127.0.0.1:7881";
pub const LIVEKIT_HTTP: &str = "http://127.0.0.1:7881";
pub const GATEWAY_WS: &str = "ws://127.0.0.1:7880";
pub const GATEWAY_HTTP: &str = "http://127.0.0.1:7880";
/// The second gateway instance (no shared state with the first).
pub const GATEWAY_B_WS: &str = "ws://127.0.0.1:7884";
pub const GATEWAY_B_HTTP: &str = "http://127.0.0.1:7884";
/// The page's origin, which the gateways allow.
pub const PAGE_ORIGIN: &str = "http://localhost:8080";

/// `.dev/` of this checkout (or `KOINOS_DEV_DIR`).
pub fn dev_dir() -> PathBuf {
    std::env::var_os("KOINOS_DEV_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.dev"))
}

/// A secret the dev stack generated (`.dev/secrets/NAME`).
pub fn secret(name: &str) -> String {
    let path = dev_dir().join("secrets").join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| {
            panic!(
                "{} ({e}): is the dev stack up? (dev/stack start)",
                path.display()
            )
        })
        .trim()
        .to_owned()
}

/// The room id of "Demo case".
pub fn demo_room() -> String {
    let path = dev_dir().join("state/demo.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{} missing ({e}): is the dev stack up? (dev/stack start)",
            path.display()
        )
    });
    serde_json::from_str::<serde_json::Value>(&text).unwrap()["room_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Prints the tail of the named components' logs (`.dev/logs/NAME.log`) if the test panics.
pub struct LogsOnFailure(pub &'static [&'static str]);

impl LogsOnFailure {
    /// control, the gateways and LiveKit.
    pub fn stack() -> Self {
        Self(&["control", "gateway", "gateway-b", "livekit"])
    }
}

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for name in self.0 {
                let path = dev_dir().join("logs").join(format!("{name}.log"));
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                eprintln!("----- {} (last 40 lines)", path.display());
                for line in tail.into_iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// Polls `check` every 100 ms for up to `seconds`; whether it came true.
pub async fn eventually<F, Fut>(seconds: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
