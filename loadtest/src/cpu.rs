//! CPU time of the stack's own processes on this machine, from `/proc` (Linux): control, the
//! gateway(s) and LiveKit, found by their command lines. Read before and after a run; the
//! difference over the wall time is each one's average load, in cores.

use std::collections::BTreeMap;

use serde::Serialize;

/// Which component a command line belongs to, if any.
fn component(cmdline: &str) -> Option<&'static str> {
    if cmdline.contains("koinos-gateway") {
        Some("gateway")
    } else if cmdline.contains("koinos-control") {
        Some("control")
    } else if cmdline.contains("livekit")
        && !cmdline.contains("koinos-loadtest")
        && !cmdline.contains("supervisor")
    {
        Some("livekit")
    } else {
        None
    }
}

pub struct Processes {
    /// pid → component.
    pids: Vec<(u32, &'static str)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    /// CPU seconds over the run.
    pub cpu_secs: f64,
    /// Average cores busy over the run.
    pub cores: f64,
    pub processes: usize,
}

/// `/proc` counts CPU time in USER_HZ ticks, 100 a second on every Linux architecture the
/// stack runs on (it is ABI, independent of the kernel's own tick rate).
const USER_HZ: f64 = 100.0;

/// utime + stime of a process, in clock ticks.
fn ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

impl Processes {
    pub fn find() -> Self {
        let mut pids = Vec::new();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<u32>().ok())
                else {
                    continue;
                };
                let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                    continue;
                };
                let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
                if pid == std::process::id() {
                    // The load itself shares the machine: what it costs is part of the picture.
                    pids.push((pid, "loadtest"));
                } else if let Some(name) = component(&cmdline) {
                    pids.push((pid, name));
                }
            }
        }
        Self { pids }
    }

    pub fn sample(&self) -> Vec<Option<u64>> {
        self.pids.iter().map(|(pid, _)| ticks(*pid)).collect()
    }

    /// Per component, the CPU used since `before` over `wall`.
    pub fn usage_since(
        &self,
        before: &[Option<u64>],
        wall: std::time::Duration,
    ) -> BTreeMap<&'static str, Usage> {
        let hz = USER_HZ;
        let mut out: BTreeMap<&'static str, Usage> = BTreeMap::new();
        for ((pid, name), start) in self.pids.iter().zip(before) {
            let (Some(start), Some(end)) = (start, ticks(*pid)) else {
                continue;
            };
            let usage = out.entry(name).or_insert(Usage {
                cpu_secs: 0.0,
                cores: 0.0,
                processes: 0,
            });
            usage.cpu_secs += end.saturating_sub(*start) as f64 / hz;
            usage.processes += 1;
        }
        for usage in out.values_mut() {
            usage.cores = usage.cpu_secs / wall.as_secs_f64().max(1e-9);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_told_apart_by_command_line() {
        assert_eq!(
            component("/x/target/release/koinos-gateway --config g.toml"),
            Some("gateway")
        );
        assert_eq!(component("/x/koinos-control"), Some("control"));
        assert_eq!(
            component("/root/.cache/koinos-rtc/bin/livekit-server --config .dev/livekit.yaml"),
            Some("livekit")
        );
        assert_eq!(component("koinos-loadtest --direct ws://livekit"), None);
        assert_eq!(component("bash"), None);
    }

    #[test]
    fn this_process_has_cpu_ticks() {
        assert!(ticks(std::process::id()).is_some());
    }
}
