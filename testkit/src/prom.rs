//! Prometheus metrics as an SRE's scraper reads them.

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
