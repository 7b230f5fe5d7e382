//! Prometheus metrics of the control plane (`GET /metrics`, Prometheus text format 0.0.4).
//!
//! Counters and histograms are updated by the service layer as requests complete, so REST and
//! gRPC are counted alike. Gauges that describe the world (call sizes, sync age) are read at
//! scrape time from their owners instead of being mirrored here.

use std::time::Duration;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use crate::error::ApiError;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    operation: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DependencyLabels {
    dependency: &'static str,
}

/// `forged_call_memberships_total{action}`: `cleared` (a fake membership in someone else's
/// slot, cleared by control) or `erased_others` (someone else's membership erased).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForgedLabels {
    pub action: &'static str,
}

/// The forged-membership counter, handed to the membership sync task that sees them.
pub type ForgedCounter = Family<ForgedLabels, Counter>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EnforcementLabels {
    action: &'static str,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    gateway_requests: Family<RequestLabels, Counter>,
    latency: Family<DependencyLabels, Histogram>,
    sync_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    calls_active: Gauge,
    participants: Gauge,
    ghosts_cleared: Counter,
    webhooks: Family<WebhookLabels, Counter>,
    forged: ForgedCounter,
    enforcement: Family<EnforcementLabels, Counter>,
    /// Per-listener connection series (`http`, `grpc`), see `koinos_net`.
    pub connections: koinos_net::ConnectionFamilies,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("koinos_control");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests by operation (token, turn, end_call, sfu_get, get_token) and outcome \
             (issued or the refusal reason)",
            requests.clone(),
        );
        // Apart from `requests`, whose refusals are practitioners' and alerted on as such.
        let gateway_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "gateway_requests",
            "Gateway RPCs by operation (watch_revocations, admit_session, renew_ticket, \
             list_participants, set_participant_attribute, mute_published_track) and outcome \
             (done, unauthenticated or the refusal reason)",
            gateway_requests.clone(),
        );
        let latency = Family::<DependencyLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 14))
        });
        registry.register(
            "dependency_latency_seconds",
            "Latency of calls to the homeserver (OpenID), the membership check and LiveKit",
            latency.clone(),
        );
        let sync_age = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "membership_sync_age_seconds",
            "Seconds since the last successful homeserver sync (membership is refused past the \
             configured staleness); -1 before the first",
            sync_age.clone(),
        );
        let calls_active = Gauge::default();
        registry.register(
            "calls_active",
            "LiveKit rooms (calls) that exist now",
            calls_active.clone(),
        );
        let participants = Gauge::default();
        registry.register(
            "call_participants",
            "Participants across all calls now",
            participants.clone(),
        );
        let ghosts_cleared = Counter::default();
        registry.register(
            "ghost_memberships_cleared",
            "Call memberships control cleared because their device had no participant in the \
             call (crashed clients on homeservers without delayed events)",
            ghosts_cleared.clone(),
        );
        let webhooks = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "livekit_webhooks",
            "Verified LiveKit webhook deliveries by event",
            webhooks.clone(),
        );
        let forged = ForgedCounter::default();
        registry.register(
            "forged_call_memberships",
            "Call membership events written into someone else's slot, by what control did \
             (cleared: a fake membership; erased_others: someone's membership erased)",
            forged.clone(),
        );
        let enforcement = Family::<EnforcementLabels, Counter>::default();
        registry.register(
            "enforcement_actions",
            "What continuous membership enforcement did to LiveKit, by action \
             (removed_not_member, removed_no_matrix_user, room_deleted_no_case)",
            enforcement.clone(),
        );
        let connections = koinos_net::ConnectionStats::register(&mut registry);
        let metrics = Self {
            registry,
            requests,
            gateway_requests,
            latency,
            sync_age,
            calls_active,
            participants,
            ghosts_cleared,
            webhooks,
            forged,
            enforcement,
            connections,
        };
        // Series exist from the start (at 0), so that rates and alerts work before the first
        // event rather than seeing an absent series.
        for operation in ["token", "turn", "end_call", "sfu_get", "get_token"] {
            let _ = metrics.requests.get_or_create(&RequestLabels {
                operation,
                outcome: "issued",
            });
        }
        for action in ["cleared", "erased_others"] {
            let _ = metrics.forged.get_or_create(&ForgedLabels { action });
        }
        for action in [
            "removed_not_member",
            "removed_no_matrix_user",
            "room_deleted_no_case",
        ] {
            let _ = metrics
                .enforcement
                .get_or_create(&EnforcementLabels { action });
        }
        for operation in [
            "watch_revocations",
            "admit_session",
            "renew_ticket",
            "list_participants",
            "set_participant_attribute",
            "mute_published_track",
        ] {
            for outcome in ["done", "unauthenticated"] {
                let _ = metrics
                    .gateway_requests
                    .get_or_create(&RequestLabels { operation, outcome });
            }
        }
        for event in [
            "participant_joined",
            "participant_left",
            "participant_connection_aborted",
            "room_finished",
        ] {
            let _ = metrics.webhooks.get_or_create(&WebhookLabels {
                event: event.to_owned(),
            });
        }
        metrics
    }
}

impl Metrics {
    pub fn record<T>(&self, operation: &'static str, result: &Result<T, ApiError>) {
        let outcome = match result {
            Ok(_) => "issued",
            Err(e) => e.reason(),
        };
        self.requests
            .get_or_create(&RequestLabels { operation, outcome })
            .inc();
    }

    /// A gateway RPC's outcome: `done`, `unauthenticated`, or an [`ApiError::reason`].
    pub fn gateway_request(&self, operation: &'static str, outcome: &'static str) {
        self.gateway_requests
            .get_or_create(&RequestLabels { operation, outcome })
            .inc();
    }

    pub fn ghost_cleared(&self) {
        self.ghosts_cleared.inc();
    }

    /// The counter the membership sync task updates.
    pub fn forged_counter(&self) -> ForgedCounter {
        self.forged.clone()
    }

    /// Continuous enforcement acted on LiveKit (see `enforcement.rs`).
    pub fn enforced(&self, action: &'static str) {
        self.enforcement
            .get_or_create(&EnforcementLabels { action })
            .inc();
    }

    pub fn webhook(&self, event: &str) {
        // LiveKit's event names are a small fixed set; anything else is folded so a hostile
        // (but correctly signed) sender cannot grow the label space.
        let event = match event {
            "room_started"
            | "room_finished"
            | "participant_joined"
            | "participant_left"
            | "participant_connection_aborted"
            | "track_published"
            | "track_unpublished"
            | "egress_started"
            | "egress_updated"
            | "egress_ended"
            | "ingress_started"
            | "ingress_ended" => event,
            _ => "other",
        };
        self.webhooks
            .get_or_create(&WebhookLabels {
                event: event.to_owned(),
            })
            .inc();
    }

    pub fn observe(&self, dependency: &'static str, elapsed: Duration) {
        self.latency
            .get_or_create(&DependencyLabels { dependency })
            .observe(elapsed.as_secs_f64());
    }

    /// Encodes everything, after setting the scrape-time gauges.
    pub fn render(&self, sync_age: Option<Duration>, call_sizes: Option<&[u32]>) -> String {
        self.sync_age
            .set(sync_age.map_or(-1.0, |d| d.as_secs_f64()));
        if let Some(sizes) = call_sizes {
            self.calls_active.set(sizes.len() as i64);
            self.participants
                .set(sizes.iter().map(|&n| i64::from(n)).sum());
        }
        koinos_proto::prometheus_text::render(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use koinos_testkit::prom::{ALERT_RULES, GRAFANA_DASHBOARD, referenced};

    use super::*;

    #[test]
    fn outcomes_and_gauges_are_rendered() {
        let metrics = Metrics::default();
        metrics.record("token", &Ok::<(), ApiError>(()));
        metrics.record::<()>("token", &Err(ApiError::Forbidden));
        metrics.observe("livekit", Duration::from_millis(3));
        let text = metrics.render(Some(Duration::from_secs(2)), Some(&[2, 3]));
        assert!(
            text.contains(r#"koinos_control_requests_total{operation="token",outcome="issued"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"koinos_control_requests_total{operation="token",outcome="forbidden"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("koinos_control_calls_active 2"), "{text}");
        assert!(
            text.contains("koinos_control_call_participants 5"),
            "{text}"
        );
        assert!(
            text.contains("koinos_control_membership_sync_age_seconds 2.0"),
            "{text}"
        );
        assert!(
            text.contains(
                r#"koinos_control_dependency_latency_seconds_count{dependency="livekit"} 1"#
            ),
            "{text}"
        );
    }

    /// Every family control exports, each with a sample so that each is declared.
    fn exported() -> std::collections::BTreeSet<String> {
        let metrics = Metrics::default();
        metrics.observe("livekit", Duration::from_millis(3));
        metrics.ghost_cleared();
        koinos_testkit::prom::families(&metrics.render(Some(Duration::ZERO), Some(&[2])))
    }

    #[test]
    fn the_dashboard_graphs_only_metrics_control_exports() {
        let graphed = referenced(GRAFANA_DASHBOARD, "koinos_control_");
        assert!(graphed.len() >= 6, "{graphed:?}");
        let missing: Vec<_> = graphed.difference(&exported()).cloned().collect();
        assert!(missing.is_empty(), "graphed but not exported: {missing:?}");
    }

    /// An alert on a metric control does not export could never fire (k8s/monitoring).
    #[test]
    fn the_alert_rules_name_only_metrics_control_exports() {
        let named = referenced(ALERT_RULES, "koinos_control_");
        assert!(named.len() >= 2, "{named:?}");
        let missing: Vec<_> = named.difference(&exported()).cloned().collect();
        assert!(
            missing.is_empty(),
            "alerted on but not exported: {missing:?}"
        );
    }
}
