//! Prometheus text exposition (format 0.0.4) from prometheus-client's OpenMetrics output, for
//! control's and the gateway's `/metrics`. Lives here, beside the gRPC contract, because it is
//! the other wire format both services share.

/// OpenMetrics names a counter family `x` and its samples `x_total`; the classic Prometheus text
/// format (what `promtool check metrics` and older scrapers read) wants HELP/TYPE on `x_total`
/// and has no `# EOF`. Everything else is the same in both.
/// The registry in Prometheus text format 0.0.4.
pub fn render(registry: &prometheus_client::registry::Registry) -> String {
    let mut open_metrics = String::new();
    prometheus_client::encoding::text::encode(&mut open_metrics, registry)
        .expect("writing to a String cannot fail");
    from_open_metrics(&open_metrics)
}

pub fn from_open_metrics(open_metrics: &str) -> String {
    let counters: Vec<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_total_names_and_eof_goes() {
        let open = "# HELP x_requests Requests.\n# TYPE x_requests counter\nx_requests_total 3\n\
                    # HELP x_live Live.\n# TYPE x_live gauge\nx_live 1\n# EOF\n";
        assert_eq!(
            from_open_metrics(open),
            "# HELP x_requests_total Requests.\n# TYPE x_requests_total counter\n\
             x_requests_total 3\n# HELP x_live Live.\n# TYPE x_live gauge\nx_live 1\n"
        );
    }
}
