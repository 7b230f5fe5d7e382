//! Prometheus metrics of the gateway (`GET /metrics`, text format 0.0.4).
//!
//! Sessions update these atomics as they go (no lock, no per-session state here); gauges that
//! describe the present (live sessions, rooms) are asked of the revocation registry, which owns
//! the table of open sessions, at scrape time.

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Direction {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SettingsLabels {
    /// `injected` (the gateway's own) or `clamped` (a client's, rewritten).
    source: &'static str,
    /// The layer height the subscription was set to.
    height: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HeightLabel {
    /// The layer height a subscription is held at; 0 while disabled (audio-only fallback).
    height: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FromLabel {
    /// The stage left, or `session_end` when the session ended during the fallback.
    from: &'static str,
}

pub struct Metrics {
    registry: Registry,
    sessions: Gauge,
    rooms: Gauge,
    session_outcomes: Family<Outcome, Counter>,
    settings: Family<SettingsLabels, Counter>,
    subscriptions: Family<HeightLabel, Gauge>,
    frames: Family<Direction, Counter>,
    relay_latency: Family<Direction, Histogram>,
    upstream_errors: Counter,
    revocations: Counter,
    fallbacks_entered: Family<StageLabel, Counter>,
    fallbacks_left: Family<FromLabel, Counter>,
    fallback_seconds: Histogram,
    in_fallback: Gauge,
    policed: Family<ActionLabel, Counter>,
    renewals: Family<Outcome, Counter>,
    json_frames: Family<Direction, Counter>,
    caught_up: Gauge,
    resume_listings: Family<Outcome, Histogram>,
    /// Per-listener connection series (`signalling`), see `koinos_net`.
    pub connections: koinos_net::ConnectionFamilies,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("koinos_gateway");
        let sessions = Gauge::default();
        registry.register("sessions", "Signalling sessions open now", sessions.clone());
        let rooms = Gauge::default();
        registry.register(
            "rooms",
            "LiveKit rooms with at least one session through this gateway",
            rooms.clone(),
        );
        let session_outcomes = Family::<Outcome, Counter>::default();
        registry.register(
            "sessions_ended",
            "Sessions by how they ended or were refused (closed, revoked, error, refused_*)",
            session_outcomes.clone(),
        );
        let settings = Family::<SettingsLabels, Counter>::default();
        registry.register(
            "track_settings",
            "Subscription settings sent to LiveKit by the ladder, by source and layer height",
            settings.clone(),
        );
        let subscriptions = Family::<HeightLabel, Gauge>::default();
        registry.register(
            "subscriptions",
            "Camera subscriptions the ladder holds now, by enforced layer height (0: disabled)",
            subscriptions.clone(),
        );
        let frames = Family::<Direction, Counter>::default();
        registry.register(
            "frames",
            "Signalling frames relayed (upstream: browser to LiveKit)",
            frames.clone(),
        );
        let relay_latency = Family::<Direction, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_01, 4.0, 10))
        });
        registry.register(
            "relay_latency_seconds",
            "Time from a frame's arrival to its forwarding (decode, policy, send)",
            relay_latency.clone(),
        );
        let upstream_errors = Counter::default();
        registry.register(
            "upstream_errors",
            "LiveKit legs that failed or could not be opened",
            upstream_errors.clone(),
        );
        let revocations = Counter::default();
        registry.register(
            "revocations",
            "Revocations received from control",
            revocations.clone(),
        );
        let fallbacks_entered = Family::<StageLabel, Counter>::default();
        registry.register(
            "fallbacks_entered",
            "Audio-only fallback steps taken (incoming_video: its received video paused; camera: its camera paused too)",
            fallbacks_entered.clone(),
        );
        let fallbacks_left = Family::<FromLabel, Counter>::default();
        registry.register(
            "fallbacks_left",
            "Audio-only fallbacks ended, by the stage they ended from",
            fallbacks_left.clone(),
        );
        let fallback_seconds = Histogram::new(exponential_buckets(5.0, 2.0, 10));
        registry.register(
            "fallback_seconds",
            "Time participants spent in the audio-only fallback",
            fallback_seconds.clone(),
        );
        let in_fallback = Gauge::default();
        registry.register(
            "sessions_in_fallback",
            "Sessions in the audio-only fallback now",
            in_fallback.clone(),
        );
        let policed = Family::<ActionLabel, Counter>::default();
        registry.register(
            "policed",
            "Client requests and server messages the gateway kept from their destination \
             (simulate_dropped, unmute_refused, refresh_token_withheld)",
            policed.clone(),
        );
        let renewals = Family::<Outcome, Counter>::default();
        registry.register(
            "ticket_renewals",
            "Tickets renewed for connected clients through control, by outcome (renewed, \
             not_member: the session ended; expired; failed: retried)",
            renewals.clone(),
        );
        let json_frames = Family::<Direction, Counter>::default();
        registry.register(
            "json_frames",
            "Signalling frames in LiveKit's JSON encoding (a client speaking JSON), translated",
            json_frames.clone(),
        );
        let caught_up = Gauge::default();
        registry.register(
            "revocations_caught_up",
            "1 while caught up with control's revocations (new sessions are admitted), 0 while \
             not (starting, or cut off from control: every new session is refused)",
            caught_up.clone(),
        );
        let resume_listings = Family::<Outcome, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 4.0, 9))
        });
        registry.register(
            "resume_listing_seconds",
            "After a session resumed: how long LiveKit's listing of the room took to come \
             through control, by outcome (listed, failed); the relay carries on meanwhile",
            resume_listings.clone(),
        );
        let connections = koinos_net::ConnectionStats::register(&mut registry);
        // Series exist from the start (at 0), so that rates and alerts work before the first
        // event rather than seeing an absent series.
        for action in [
            "simulate_dropped",
            "unmute_refused",
            "refresh_token_withheld",
        ] {
            let _ = policed.get_or_create(&ActionLabel { action });
        }
        for outcome in ["renewed", "not_member", "expired", "failed"] {
            let _ = renewals.get_or_create(&Outcome { outcome });
        }
        for stage in ["incoming_video", "camera"] {
            let _ = fallbacks_entered.get_or_create(&StageLabel { stage });
        }
        for from in ["incoming_video", "camera", "session_end"] {
            let _ = fallbacks_left.get_or_create(&FromLabel { from });
        }
        for outcome in ["closed", "revoked"] {
            let _ = session_outcomes.get_or_create(&Outcome { outcome });
        }
        for outcome in ["listed", "failed"] {
            let _ = resume_listings.get_or_create(&Outcome { outcome });
        }
        Self {
            registry,
            fallbacks_entered,
            fallbacks_left,
            fallback_seconds,
            in_fallback,
            sessions,
            rooms,
            session_outcomes,
            settings,
            subscriptions,
            frames,
            relay_latency,
            upstream_errors,
            revocations,
            policed,
            renewals,
            json_frames,
            caught_up,
            resume_listings,
            connections,
        }
    }
}

impl Metrics {
    pub fn session_ended(&self, outcome: &'static str) {
        self.session_outcomes
            .get_or_create(&Outcome { outcome })
            .inc();
    }

    pub fn settings_sent(&self, source: &'static str, height: u32) {
        self.settings
            .get_or_create(&SettingsLabels { source, height })
            .inc();
    }

    /// A camera subscription moved between layers (`None`: it appeared or went away).
    pub fn subscription_moved(&self, from: Option<u32>, to: Option<u32>) {
        if let Some(height) = from {
            self.subscriptions
                .get_or_create(&HeightLabel { height })
                .dec();
        }
        if let Some(height) = to {
            self.subscriptions
                .get_or_create(&HeightLabel { height })
                .inc();
        }
    }

    pub fn frame_relayed(&self, direction: &'static str, elapsed: Duration) {
        self.frames.get_or_create(&Direction { direction }).inc();
        self.relay_latency
            .get_or_create(&Direction { direction })
            .observe(elapsed.as_secs_f64());
    }

    pub fn upstream_error(&self) {
        self.upstream_errors.inc();
    }

    pub fn revocation(&self) {
        self.revocations.inc();
    }

    pub fn fallback_entered(&self, stage: &'static str) {
        self.fallbacks_entered
            .get_or_create(&StageLabel { stage })
            .inc();
        if stage == "incoming_video" {
            self.in_fallback.inc();
        }
    }

    /// A resumed session carries on a fallback its participant was already in.
    pub fn fallback_resumed(&self) {
        self.in_fallback.inc();
    }

    pub fn fallback_left(&self, from: &'static str, spent: Duration) {
        self.fallbacks_left.get_or_create(&FromLabel { from }).inc();
        self.fallback_seconds.observe(spent.as_secs_f64());
        self.in_fallback.dec();
    }

    /// LiveKit's listing after a resume came in (or failed) `took` after it was asked for.
    pub fn resume_listed(&self, listed: bool, took: Duration) {
        let outcome = if listed { "listed" } else { "failed" };
        self.resume_listings
            .get_or_create(&Outcome { outcome })
            .observe(took.as_secs_f64());
    }

    /// Something a client sent, or LiveKit sent a client, did not get through.
    pub fn policed(&self, action: &'static str) {
        self.policed.get_or_create(&ActionLabel { action }).inc();
    }

    pub fn ticket_renewal(&self, outcome: &'static str) {
        self.renewals.get_or_create(&Outcome { outcome }).inc();
    }

    pub fn json_frame(&self, direction: &'static str) {
        self.json_frames
            .get_or_create(&Direction { direction })
            .inc();
    }

    pub fn render(&self, stats: crate::revocations::Stats) -> String {
        self.sessions.set(stats.sessions as i64);
        self.rooms.set(stats.rooms as i64);
        self.caught_up.set(i64::from(stats.caught_up));
        koinos_proto::prometheus_text::render(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use koinos_testkit::prom::{ALERT_RULES, GRAFANA_DASHBOARD, referenced};

    use super::*;

    #[test]
    fn renders_in_prometheus_text_format() {
        let metrics = Metrics::default();
        metrics.settings_sent("injected", 540);
        metrics.subscription_moved(None, Some(720));
        metrics.subscription_moved(Some(720), Some(540));
        metrics.frame_relayed("upstream", Duration::from_micros(40));
        metrics.session_ended("revoked");
        metrics.fallback_entered("incoming_video");
        metrics.fallback_entered("camera");
        metrics.fallback_left("camera", Duration::from_secs(42));
        let text = metrics.render(crate::revocations::Stats {
            sessions: 3,
            rooms: 1,
            caught_up: true,
        });
        for expected in [
            r#"koinos_gateway_track_settings_total{source="injected",height="540"} 1"#,
            r#"koinos_gateway_frames_total{direction="upstream"} 1"#,
            r#"koinos_gateway_subscriptions{height="540"} 1"#,
            r#"koinos_gateway_subscriptions{height="720"} 0"#,
            r#"koinos_gateway_sessions_ended_total{outcome="revoked"} 1"#,
            "koinos_gateway_sessions 3",
            "koinos_gateway_rooms 1",
            r#"koinos_gateway_fallbacks_entered_total{stage="camera"} 1"#,
            r#"koinos_gateway_fallbacks_left_total{from="camera"} 1"#,
            "koinos_gateway_fallback_seconds_count 1",
            "koinos_gateway_sessions_in_fallback 0",
            "koinos_gateway_revocations_caught_up 1",
            r#"koinos_gateway_policed_total{action="refresh_token_withheld"} 0"#,
            "# TYPE koinos_gateway_frames_total counter",
        ] {
            assert!(text.contains(expected), "missing {expected} in\n{text}");
        }
        assert!(!text.contains("# EOF"));
    }

    /// Every family the gateway exports, each with a sample so that each is declared.
    fn exported() -> std::collections::BTreeSet<String> {
        let metrics = Metrics::default();
        metrics.settings_sent("injected", 540);
        metrics.subscription_moved(None, Some(540));
        metrics.frame_relayed("upstream", Duration::from_micros(40));
        metrics.upstream_error();
        metrics.revocation();
        metrics.fallback_left("camera", Duration::from_secs(1));
        metrics.json_frame("upstream");
        koinos_testkit::prom::families(&metrics.render(Default::default()))
    }

    #[test]
    fn the_dashboard_graphs_only_metrics_the_gateway_exports() {
        let graphed = referenced(GRAFANA_DASHBOARD, "koinos_gateway_");
        assert!(graphed.len() >= 8, "{graphed:?}");
        let missing: Vec<_> = graphed.difference(&exported()).cloned().collect();
        assert!(missing.is_empty(), "graphed but not exported: {missing:?}");
    }

    /// An alert on a metric the gateway does not export could never fire (k8s/monitoring).
    #[test]
    fn the_alert_rules_name_only_metrics_the_gateway_exports() {
        let named = referenced(ALERT_RULES, "koinos_gateway_");
        assert!(named.len() >= 4, "{named:?}");
        let missing: Vec<_> = named.difference(&exported()).cloned().collect();
        assert!(
            missing.is_empty(),
            "alerted on but not exported: {missing:?}"
        );
    }
}
