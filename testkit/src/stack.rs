//! The dev stack as the tests find it (design.md's defaults).

use std::io::Write as _;
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

/// Set (to anything but `0`) where a test that needs the stack must not skip: `dev/stack e2e`
/// sets it, so a stack that did not come up fails the run instead of passing it empty.
pub const REQUIRE_STACK: &str = "KOINOS_REQUIRE_STACK";

/// Whether a dev stack is running from `dev`: its supervisor answers on `run/supervisor.sock`
/// (what `dev/stack` itself asks before starting or stopping).
pub fn running_in(dev: &std::path::Path) -> bool {
    std::os::unix::net::UnixStream::connect(dev.join("run/supervisor.sock")).is_ok()
}

/// What a test that needs the running dev stack begins with:
/// `let Some(_logs) = stack::up() else { return };`. With the stack running: its components'
/// logs, printed if the test fails. Without it: `None` after a line saying the test skipped,
/// so a plain `cargo test` on a fresh checkout runs everything that needs nothing and skips the
/// rest; with [`REQUIRE_STACK`] set, a missing stack fails the test instead.
pub fn up() -> Option<LogsOnFailure> {
    up_with(&["control", "gateway", "gateway-b", "livekit"])
}

/// [`up`], printing the named components' logs on failure (instead of control, the gateways
/// and LiveKit).
pub fn up_with(components: &'static [&'static str]) -> Option<LogsOnFailure> {
    let dev = dev_dir();
    if running_in(&dev) {
        return Some(LogsOnFailure(components));
    }
    let required = std::env::var(REQUIRE_STACK).is_ok_and(|v| !v.is_empty() && v != "0");
    assert!(
        !required,
        "no dev stack is running from {} ({REQUIRE_STACK} is set): dev/stack start",
        dev.display()
    );
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    // Straight to the process's stderr: the test harness captures `eprintln!` of a passing test.
    let _ = writeln!(
        std::io::stderr(),
        "skipped {test}: no dev stack is running from {} (`dev/stack start` runs it; \
         {REQUIRE_STACK}=1 makes this a failure)",
        dev.display()
    );
    None
}

/// Prints the tail of the named components' logs (`.dev/logs/NAME.log`) if the test panics.
pub struct LogsOnFailure(pub &'static [&'static str]);

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

/// A component of the dev stack frozen with SIGSTOP (a process that stopped answering, its
/// sockets still open), thawed with SIGCONT when dropped, also when the test fails.
pub struct Frozen {
    pid: String,
}

impl Frozen {
    /// Freezes `name` (`control`, `livekit`, …: the supervisor's program name).
    pub fn component(name: &str) -> Frozen {
        let pid = supervisorctl(&["pid", name]);
        assert!(
            !pid.is_empty() && pid.chars().all(|c| c.is_ascii_digit()) && pid != "0",
            "no pid for {name}: {pid:?}"
        );
        signal(&pid, "-STOP");
        Frozen { pid }
    }
}

/// The dev stack's supervisor (`dev/stack ctl`): `restart synapse`, `pid control`, …; its
/// output.
pub fn supervisorctl(args: &[&str]) -> String {
    let cache = std::env::var_os("KOINOS_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/koinos-rtc"))
        })
        .expect("HOME or KOINOS_CACHE");
    let output = std::process::Command::new(cache.join("venv/bin/supervisorctl"))
        .arg("-c")
        .arg(dev_dir().join("supervisord.conf"))
        .args(args)
        .output()
        .expect("runs supervisorctl (dev/stack setup installs it)");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal(&self.pid, "-CONT");
    }
}

/// A component of the dev stack stopped by its supervisor (a process that is gone: its ports
/// refuse connections), started again when dropped, also when the test fails; the drop waits
/// until `port` accepts connections again so that the next test finds the stack whole.
pub struct Stopped {
    name: String,
    port: u16,
}

impl Stopped {
    pub fn component(name: &str, port: u16) -> Stopped {
        let out = supervisorctl(&["stop", name]);
        assert!(out.contains("stopped"), "supervisorctl stop {name}: {out}");
        Stopped {
            name: name.to_owned(),
            port,
        }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        supervisorctl(&["start", &self.name]);
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        for _ in 0..600 {
            let timeout = std::time::Duration::from_millis(100);
            if std::net::TcpStream::connect_timeout(&address, timeout).is_ok() {
                return;
            }
            std::thread::sleep(timeout);
        }
        eprintln!(
            "{} did not accept connections on :{} again",
            self.name, self.port
        );
    }
}

fn signal(pid: &str, which: &str) {
    let status = std::process::Command::new("kill")
        .args([which, pid])
        .status()
        .expect("runs kill");
    assert!(status.success(), "kill {which} {pid}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stack_runs_only_where_its_supervisor_answers() {
        let dev = std::env::temp_dir().join(format!("koinos-testkit-{}", std::process::id()));
        std::fs::create_dir_all(dev.join("run")).unwrap();
        assert!(!running_in(&dev), "no socket");
        let socket = dev.join("run/supervisor.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        assert!(running_in(&dev), "a supervisor listening");
        drop(listener);
        // A supervisor that died leaves its socket file behind: not running.
        assert!(socket.exists());
        assert!(!running_in(&dev), "a stale socket");
        std::fs::remove_dir_all(&dev).unwrap();
    }
}
