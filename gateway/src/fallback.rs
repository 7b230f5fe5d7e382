//! Audio-only fallback, per participant: when a participant's link stays bad, the gateway first
//! stops the video it receives, then, if the link is still bad (its uplink is the problem),
//! pauses its camera; it restores video only after the link has stayed good for a while.
//!
//! The signal is LiveKit's own connection quality for the participant (`ConnectionQualityUpdate`,
//! which every participant receives for itself whenever anyone's level changes): the worst of
//! its uplink (packet loss and jitter of what it publishes) and downlink (the receiver reports
//! of what it subscribes to). Disabled subscriptions leave that score, which is what makes the
//! staged policy work: once incoming video is off, a still-bad score comes from the uplink or
//! from the audio.
//!
//! Hysteresis: entering needs the link bad for `enter_after`, leaving needs it good for
//! `restore_after`. Flapping backs off: entering again within `flap_window` of a restore doubles
//! the next `restore_after` (up to `max_restore_after`).
//!
//! Settling: for `settle` after a restore, a bad rating does not count towards entering again.
//! A restore is itself a disturbance LiveKit rates as poor: the browser's bandwidth estimate
//! restarts low after the pause, so for several seconds its camera sends fewer simulcast layers
//! than its subscribers ask for (and it receives fewer than it asked for), and LiveKit scores
//! each missing layer as a lost quality level (`cDistanceWeight` in its
//! `connectionquality/scorer.go`). Counting that would send a recovered participant straight
//! back to audio only; a link that is really bad again is still caught, `settle` later.
//!
//! This type is pure state, owned by the session's relay task, driven by quality reports and a
//! timer ([`Fallback::deadline`]); it says what to do, the relay does it. The stage a participant
//! is in also lives in its LiveKit attributes (set by the relay), so a resumed session — possibly
//! on another gateway — carries on from it ([`Fallback::resume_in`]).

use std::time::{Duration, Instant};

use livekit_protocol::ConnectionQuality;
use serde::{Deserialize, Serialize};

/// The participant attribute holding the stage (absent when video flows normally). The page
/// reads it to tell the practitioner why their video stopped; others see it on their tile.
pub use koinos_proto::contract::FALLBACK_ATTRIBUTE as ATTRIBUTE;
use koinos_proto::contract::FallbackStage;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FallbackConfig {
    pub enabled: bool,
    /// Link bad for this long → the video the participant receives is paused.
    pub enter_after_secs: u64,
    /// Still bad this long after that → its camera is paused too.
    pub uplink_after_secs: u64,
    /// Link good for this long → video comes back (before any back-off).
    pub restore_after_secs: u64,
    /// Falling back again within this long of a restore doubles the next `restore_after`.
    pub flap_window_secs: u64,
    pub max_restore_after_secs: u64,
    /// After a restore, bad ratings start counting only this long later (the media ramping up
    /// again is rated as a bad link; see the module documentation).
    pub settle_secs: u64,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            enter_after_secs: 10,
            uplink_after_secs: 10,
            restore_after_secs: 20,
            flap_window_secs: 120,
            max_restore_after_secs: 160,
            settle_secs: 20,
        }
    }
}

impl FallbackConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.enter_after_secs == 0 || self.restore_after_secs == 0 {
            return Err(
                "fallback.enter_after_secs and fallback.restore_after_secs must be at least 1 \
                 (hysteresis is what keeps a call from flapping)"
                    .into(),
            );
        }
        if self.max_restore_after_secs < self.restore_after_secs {
            return Err(format!(
                "fallback.max_restore_after_secs ({}) is below fallback.restore_after_secs ({})",
                self.max_restore_after_secs, self.restore_after_secs
            ));
        }
        Ok(())
    }
}

/// How far a participant has been switched to audio only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    Normal,
    /// The video it receives is paused.
    IncomingPaused,
    /// …and its camera is paused.
    CameraPaused,
}

impl Stage {
    /// The attribute value (empty deletes the attribute in LiveKit).
    pub fn attribute(self) -> &'static str {
        match self {
            Stage::Normal => FallbackStage::None,
            Stage::IncomingPaused => FallbackStage::IncomingVideo,
            Stage::CameraPaused => FallbackStage::Camera,
        }
        .wire()
    }

    /// The stage an attribute value names; anything else is no fallback.
    pub fn from_attribute(value: &str) -> Stage {
        match FallbackStage::from_wire(value) {
            Some(FallbackStage::IncomingVideo) => Stage::IncomingPaused,
            Some(FallbackStage::Camera) => Stage::CameraPaused,
            Some(FallbackStage::None) | None => Stage::Normal,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Stage::Normal => "normal",
            Stage::IncomingPaused => "incoming_video",
            Stage::CameraPaused => "camera",
        }
    }
}

/// What the relay must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    PauseIncoming,
    PauseCamera,
    /// Back to normal from `from`, after `spent` in fallback.
    Restore {
        from: Stage,
        spent: Duration,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Unknown,
    Bad,
    Good,
}

fn link(quality: i32) -> Link {
    match ConnectionQuality::try_from(quality) {
        Ok(ConnectionQuality::Poor | ConnectionQuality::Lost) => Link::Bad,
        Ok(ConnectionQuality::Good | ConnectionQuality::Excellent) => Link::Good,
        Err(_) => Link::Unknown,
    }
}

#[derive(Debug)]
pub struct Fallback {
    config: FallbackConfig,
    stage: Stage,
    link: Link,
    /// When the link entered its present state (bad or good).
    link_since: Instant,
    /// When the present stage was entered.
    stage_since: Instant,
    /// When the fallback began (for the time spent in it).
    entered_at: Option<Instant>,
    restore_after: Duration,
    last_restore: Option<Instant>,
}

impl Fallback {
    pub fn new(config: FallbackConfig, now: Instant) -> Self {
        let restore_after = Duration::from_secs(config.restore_after_secs);
        Self {
            config,
            stage: Stage::Normal,
            link: Link::Unknown,
            link_since: now,
            stage_since: now,
            entered_at: None,
            restore_after,
            last_restore: None,
        }
    }

    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// How long the link must stay good before video comes back, now (with back-off).
    pub fn restore_after(&self) -> Duration {
        self.restore_after
    }

    /// A resumed session whose participant was already in `stage` (from its attribute). Until
    /// LiveKit reports its quality again, the link is taken to be as bad as it was. Whether the
    /// fallback carries on from it (not if this session is in a fallback already).
    pub fn resume_in(&mut self, stage: Stage, now: Instant) -> bool {
        if stage == Stage::Normal || self.stage != Stage::Normal {
            return false;
        }
        self.stage = stage;
        self.stage_since = now;
        self.entered_at = Some(now);
        self.link = Link::Bad;
        self.link_since = now;
        true
    }

    /// LiveKit reported this participant's connection quality.
    pub fn on_quality(&mut self, quality: i32, now: Instant) -> Option<Step> {
        let new = link(quality);
        if new != self.link {
            self.link = new;
            self.link_since = now;
        }
        self.poll(now)
    }

    /// When [`Fallback::poll`] next has something to decide, if ever without a new report.
    pub fn deadline(&self) -> Option<Instant> {
        if !self.config.enabled {
            return None;
        }
        match (self.stage, self.link) {
            (Stage::Normal, Link::Bad) => {
                Some(self.bad_counts_from() + Duration::from_secs(self.config.enter_after_secs))
            }
            (Stage::IncomingPaused, Link::Bad) => Some(
                self.link_since.max(self.stage_since)
                    + Duration::from_secs(self.config.uplink_after_secs),
            ),
            (Stage::IncomingPaused | Stage::CameraPaused, Link::Good) => {
                Some(self.link_since + self.restore_after)
            }
            _ => None,
        }
    }

    /// Takes the step that is due at `now`, if any.
    pub fn poll(&mut self, now: Instant) -> Option<Step> {
        let due = self.deadline().is_some_and(|at| at <= now);
        if !due {
            return None;
        }
        match (self.stage, self.link) {
            (Stage::Normal, Link::Bad) => {
                self.back_off(now);
                self.enter(Stage::IncomingPaused, now);
                self.entered_at = Some(now);
                Some(Step::PauseIncoming)
            }
            (Stage::IncomingPaused, Link::Bad) => {
                self.enter(Stage::CameraPaused, now);
                Some(Step::PauseCamera)
            }
            (from, Link::Good) => {
                let spent = now.duration_since(self.entered_at.unwrap_or(self.stage_since));
                self.enter(Stage::Normal, now);
                self.entered_at = None;
                self.last_restore = Some(now);
                Some(Step::Restore { from, spent })
            }
            _ => None,
        }
    }

    /// The session ends: returns the time spent in a fallback in progress.
    pub fn abandon(&mut self, now: Instant) -> Option<Duration> {
        let entered = self.entered_at.take()?;
        self.stage = Stage::Normal;
        Some(now.duration_since(entered))
    }

    /// Since when the present bad rating counts towards entering: not before the media of the
    /// last restore has settled.
    fn bad_counts_from(&self) -> Instant {
        let settled = self
            .last_restore
            .map(|at| at + Duration::from_secs(self.config.settle_secs));
        settled.map_or(self.link_since, |settled| settled.max(self.link_since))
    }

    fn enter(&mut self, stage: Stage, now: Instant) {
        self.stage = stage;
        self.stage_since = now;
    }

    /// Falling back again soon after a restore means the restore was premature: wait longer
    /// next time. A fallback after a quiet spell starts from the configured wait again.
    fn back_off(&mut self, now: Instant) {
        let base = Duration::from_secs(self.config.restore_after_secs);
        let max = Duration::from_secs(self.config.max_restore_after_secs);
        let flapping = self.last_restore.is_some_and(|at| {
            now.duration_since(at) < Duration::from_secs(self.config.flap_window_secs)
        });
        self.restore_after = if flapping {
            (self.restore_after * 2).min(max)
        } else {
            base
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each stage is written as a distinct value of the shared contract, and read back as itself.
    #[test]
    fn each_stage_is_a_value_of_the_shared_contract() {
        let stages = [Stage::Normal, Stage::IncomingPaused, Stage::CameraPaused];
        for stage in stages {
            assert!(
                FallbackStage::from_wire(stage.attribute()).is_some(),
                "{stage:?}"
            );
            assert_eq!(Stage::from_attribute(stage.attribute()), stage);
        }
        let written: std::collections::HashSet<_> = stages.map(Stage::attribute).into();
        assert_eq!(written.len(), FallbackStage::ALL.len());
        assert_eq!(Stage::from_attribute("anything else"), Stage::Normal);
    }

    const POOR: i32 = ConnectionQuality::Poor as i32;
    const LOST: i32 = ConnectionQuality::Lost as i32;
    const GOOD: i32 = ConnectionQuality::Good as i32;
    const EXCELLENT: i32 = ConnectionQuality::Excellent as i32;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// Drives the machine second by second through `(quality at that second)` reports,
    /// polling in between as the relay's timer would; returns `(second, step)`s.
    fn run(
        fallback: &mut Fallback,
        t0: Instant,
        reports: &[(u64, i32)],
        until: u64,
    ) -> Vec<(u64, Step)> {
        let mut steps = Vec::new();
        for second in 0..=until {
            let now = t0 + s(second);
            for (at, quality) in reports {
                if *at == second
                    && let Some(step) = fallback.on_quality(*quality, now)
                {
                    steps.push((second, step));
                }
            }
            if let Some(step) = fallback.poll(now) {
                steps.push((second, step));
            }
        }
        steps
    }

    /// [`run`] on a fresh machine with the default configuration.
    fn steps_of(reports: &[(u64, i32)], until: u64) -> Vec<(u64, Step)> {
        let t0 = Instant::now();
        run(
            &mut Fallback::new(FallbackConfig::default(), t0),
            t0,
            reports,
            until,
        )
    }

    fn restore(from: Stage, spent: u64) -> Step {
        Step::Restore {
            from,
            spent: s(spent),
        }
    }

    #[test]
    fn a_bad_link_loses_incoming_video_then_its_camera_and_gets_both_back_after_staying_good() {
        let steps = steps_of(&[(0, GOOD), (5, POOR), (40, EXCELLENT)], 80);
        assert_eq!(
            steps,
            [
                (15, Step::PauseIncoming),
                (25, Step::PauseCamera),
                (60, restore(Stage::CameraPaused, 45)),
            ]
        );
    }

    #[test]
    fn a_link_that_recovers_once_incoming_video_is_off_keeps_its_camera() {
        let steps = steps_of(&[(0, LOST), (12, GOOD)], 40);
        assert_eq!(
            steps,
            [
                (10, Step::PauseIncoming),
                (32, restore(Stage::IncomingPaused, 22))
            ]
        );
    }

    #[test]
    fn short_dips_and_short_recoveries_change_nothing() {
        // Bad for 9 s, good, bad for 9 s: never 10 s in a row.
        let steps = steps_of(&[(0, POOR), (9, GOOD), (12, POOR), (21, GOOD)], 60);
        assert!(steps.is_empty(), "{steps:?}");
        // In fallback, good for 19 s then bad again: video stays off (and the camera goes).
        let steps = steps_of(&[(0, POOR), (11, GOOD), (30, POOR)], 45);
        assert_eq!(steps, [(10, Step::PauseIncoming), (40, Step::PauseCamera)]);
    }

    #[test]
    fn flapping_doubles_the_wait_for_video_and_a_quiet_spell_resets_it() {
        let t0 = Instant::now();
        let mut fallback = Fallback::new(FallbackConfig::default(), t0);
        // Bad 0–12, good until 50, bad 50–66 (within 2 min of the restore at 32), good after.
        let reports = [(0, POOR), (12, GOOD), (50, POOR), (66, GOOD)];
        assert_eq!(
            run(&mut fallback, t0, &reports, 120),
            [
                (10, Step::PauseIncoming),
                (32, restore(Stage::IncomingPaused, 22)),
                // Bad since 50, counted from 52 (settled 20 s after the restore).
                (62, Step::PauseIncoming),
                // 40 s of good link needed this time, not 20.
                (106, restore(Stage::IncomingPaused, 44)),
            ]
        );
        assert_eq!(fallback.restore_after(), s(40));

        // Much later, a new fallback waits the configured 20 s again.
        let later = t0 + s(400);
        assert_eq!(fallback.on_quality(POOR, later), None);
        assert_eq!(fallback.poll(later + s(10)), Some(Step::PauseIncoming));
        assert_eq!(fallback.restore_after(), s(20));
    }

    #[test]
    fn the_back_off_stops_at_its_maximum() {
        let t0 = Instant::now();
        let mut fallback = Fallback::new(FallbackConfig::default(), t0);
        let mut now = t0;
        for _ in 0..8 {
            fallback.on_quality(POOR, now);
            // Bad from the restore on: counted once settled (20 s), entered 10 s after that.
            now += s(30);
            assert_eq!(fallback.poll(now), Some(Step::PauseIncoming));
            fallback.on_quality(GOOD, now);
            now += fallback.restore_after();
            assert!(matches!(fallback.poll(now), Some(Step::Restore { .. })));
        }
        assert_eq!(fallback.restore_after(), s(160));
    }

    /// What failed a browser test once: 10 s after a restore from the camera stage, with no loss
    /// at all, LiveKit rated the participant POOR for 13 s while its camera's top layer was not
    /// back yet. That is the restore settling, not a bad link.
    #[test]
    fn a_restore_settling_is_not_taken_for_a_bad_link_and_a_link_bad_again_still_is() {
        let settling = [(0, POOR), (12, GOOD), (42, POOR), (55, GOOD)];
        assert_eq!(
            steps_of(&settling, 200),
            [
                (10, Step::PauseIncoming),
                (32, restore(Stage::IncomingPaused, 22))
            ]
        );
        let bad_again = [(0, POOR), (12, GOOD), (42, POOR)];
        assert_eq!(
            steps_of(&bad_again, 70),
            [
                (10, Step::PauseIncoming),
                (32, restore(Stage::IncomingPaused, 22)),
                // Counted from 52, when the restore has settled.
                (62, Step::PauseIncoming),
            ]
        );
        // Before any restore nothing settles: bad for `enter_after` is enough.
        assert_eq!(
            steps_of(&[(0, GOOD), (3, LOST)], 20),
            [(13, Step::PauseIncoming)]
        );
    }

    mod invariants {
        use super::*;
        use proptest::prelude::*;

        /// Quality reports at increasing seconds, some of them levels LiveKit does not define.
        fn reports() -> impl Strategy<Value = Vec<(u64, i32)>> {
            let level = prop_oneof![
                3 => Just(POOR),
                1 => Just(LOST),
                2 => Just(GOOD),
                2 => Just(EXCELLENT),
                1 => Just(99),
            ];
            prop::collection::vec((1u64..40, level), 0..24).prop_map(|gaps| {
                let mut at = 0;
                gaps.into_iter()
                    .map(|(gap, level)| {
                        at += gap;
                        (at, level)
                    })
                    .collect()
            })
        }

        /// The link as the reports say at `second`, and since when it has been so.
        fn link_at(reports: &[(u64, i32)], second: u64) -> (Link, u64) {
            let mut state = (Link::Unknown, 0);
            for &(at, quality) in reports.iter().filter(|(at, _)| *at <= second) {
                if link(quality) != state.0 {
                    state = (link(quality), at);
                }
            }
            state
        }

        proptest! {
            /// Whatever LiveKit reports: video is paused exactly when the link has been bad for
            /// `enter_after` (counted from when the last restore settled), never earlier and
            /// never later; the camera only after that and `uplink_after` more; video comes back
            /// only after the link stayed good for at least `restore_after`; and the steps come in
            /// the order of the stages.
            #[test]
            fn steps_follow_the_link_and_nothing_else(reports in reports()) {
                let config = FallbackConfig::default();
                let (enter, uplink, restore_base, settle) = (
                    config.enter_after_secs,
                    config.uplink_after_secs,
                    config.restore_after_secs,
                    config.settle_secs,
                );
                let until = reports.last().map_or(0, |(at, _)| *at) + 200;
                let t0 = Instant::now();
                let steps = run(&mut Fallback::new(config, t0), t0, &reports, until);

                let mut stage = Stage::Normal;
                let (mut last_restore, mut stage_since) = (None::<u64>, 0);
                let mut next = steps.iter().peekable();
                for second in 0..=until {
                    let (state, since) = link_at(&reports, second);
                    let step = next.next_if(|(at, _)| *at == second).map(|(_, step)| *step);
                    prop_assert!(next.peek().is_none_or(|(at, _)| *at > second), "two steps at {second}: {steps:?}");
                    let counts_from = last_restore.map_or(since, |r| since.max(r + settle));
                    let due_in_normal =
                        stage == Stage::Normal && state == Link::Bad && second >= counts_from + enter;
                    prop_assert_eq!(
                        due_in_normal,
                        step == Some(Step::PauseIncoming),
                        "at {}: {:?} in {:?}; steps {:?}", second, state, stage, steps
                    );
                    match step {
                        Some(Step::PauseIncoming) => {
                            stage = Stage::IncomingPaused;
                            stage_since = second;
                        }
                        Some(Step::PauseCamera) => {
                            prop_assert_eq!(stage, Stage::IncomingPaused);
                            prop_assert_eq!(state, Link::Bad);
                            prop_assert!(second >= since.max(stage_since) + uplink);
                            stage = Stage::CameraPaused;
                        }
                        Some(Step::Restore { from, .. }) => {
                            prop_assert_eq!(from, stage);
                            prop_assert_eq!(state, Link::Good);
                            prop_assert!(second >= since + restore_base, "restored at {second}, good since {since}");
                            stage = Stage::Normal;
                            last_restore = Some(second);
                        }
                        None => {}
                    }
                }
                prop_assert!(next.peek().is_none());
            }
        }
    }

    #[test]
    fn a_resumed_session_keeps_the_stage_until_the_link_is_reported_good() {
        let t0 = Instant::now();
        let mut fallback = Fallback::new(FallbackConfig::default(), t0);
        fallback.resume_in(Stage::CameraPaused, t0);
        assert_eq!(fallback.stage(), Stage::CameraPaused);
        assert_eq!(fallback.poll(t0 + s(3600)), None);
        fallback.on_quality(GOOD, t0 + s(3600));
        assert!(matches!(
            fallback.poll(t0 + s(3620)),
            Some(Step::Restore {
                from: Stage::CameraPaused,
                ..
            })
        ));
    }

    #[test]
    fn disabled_does_nothing_and_unknown_levels_are_ignored() {
        let t0 = Instant::now();
        let config = FallbackConfig {
            enabled: false,
            ..Default::default()
        };
        let mut fallback = Fallback::new(config, t0);
        assert!(run(&mut fallback, t0, &[(0, LOST)], 100).is_empty());

        let mut fallback = Fallback::new(FallbackConfig::default(), t0);
        assert!(run(&mut fallback, t0, &[(0, 99)], 100).is_empty());
    }

    #[test]
    fn the_stage_round_trips_through_its_attribute() {
        for stage in [Stage::Normal, Stage::IncomingPaused, Stage::CameraPaused] {
            assert_eq!(Stage::from_attribute(stage.attribute()), stage);
        }
        assert_eq!(Stage::from_attribute("nonsense"), Stage::Normal);
    }

    #[test]
    fn contradictory_config_is_refused() {
        let config = FallbackConfig {
            restore_after_secs: 30,
            max_restore_after_secs: 20,
            ..Default::default()
        };
        assert!(
            config
                .validate()
                .unwrap_err()
                .contains("max_restore_after_secs")
        );
        assert!(FallbackConfig::default().validate().is_ok());
    }
}
