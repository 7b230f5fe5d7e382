//! Prometheus metrics as an SRE's scraper reads them, and the dashboard and alert rules kept
//! with the deployment files that every metric they name must be exported for.

/// The text of `url` (`…/metrics`).
pub async fn scrape(url: &str) -> String {
    reqwest::get(url)
        .await
        .expect("metrics endpoint reachable")
        .text()
        .await
        .unwrap()
}

/// The value of the sample `name_and_labels` (written as it appears, e.g.
/// `koinos_gateway_sessions ` or `x_total{a="b"} `) at `url`; 0 if absent.
pub async fn metric(url: &str, name_and_labels: &str) -> f64 {
    scrape(url)
        .await
        .lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// `promtool check metrics` (Debian's prometheus package) accepts the exposition.
pub fn promtool_check(text: &str) {
    use std::io::Write as _;
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package) runs");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = promtool.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The metric families a text exposition declares (`# TYPE` lines).
pub fn families(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect()
}

/// The metric families a text (a dashboard, alert rules) refers to by a name starting with
/// `prefix`, histogram series (`_bucket`, `_sum`, `_count`) folded into their family.
pub fn referenced(text: &str, prefix: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        names.insert(family.to_owned());
        rest = &tail[end..];
    }
    names
}

/// The dashboard kept with the deployment files, for the services' tests to check against.
pub const GRAFANA_DASHBOARD: &str = include_str!("../../k8s/monitoring/grafana-dashboard.json");

/// The alert rules kept with the deployment files (plain Prometheus rules file), for the
/// services' tests to check that every metric they name is exported.
pub const ALERT_RULES: &str = include_str!("../../k8s/monitoring/alerts.rules.yml");
