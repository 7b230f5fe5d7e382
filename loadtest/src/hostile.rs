//! The hostile participant: one of the simulated participants that speaks LiveKit's protocol as
//! a misbehaving client would, to show that the server's policy holds against it and not only
//! against well-behaved browsers. It:
//! - speaks LiveKit's JSON encoding (text frames) instead of protobuf, all the way;
//! - asks every two seconds for every camera it receives at 1080 lines (above any cap);
//! - sends `simulate` (a server shutdown leave, which LiveKit honours for any client);
//! - unsubscribes from every camera it receives by participant (a list the gateway once did not
//!   read) and, two seconds later, subscribes to them again by track: LiveKit starts a new
//!   subscription at the top layer, so the cap must follow;
//! - while the gateway has paused its camera (the audio-only fallback's second stage, with
//!   `--loss` on it), tries every two seconds to unmute it;
//! - keeps its ticket and every refreshed token it is handed, and after the call tries each of
//!   them straight at LiveKit.
//!
//! What it got is recorded in [`HostileReport`]; [`verdicts`] says, behaviour by behaviour,
//! whether the server's policy held.

use serde::Serialize;

use crate::report::ladder_cap;

/// What the hostile participant tried and what came of it.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct HostileReport {
    /// Every request went out as a JSON text frame.
    pub json_frames_sent: u64,
    /// Answers received as JSON text frames (LiveKit's JSON, translated by the gateway).
    pub json_frames_received: u64,
    /// Settings asking for 1080 lines sent.
    pub above_cap_requests: u64,
    /// `simulate` sent (a server-shutdown leave).
    pub simulate_sent: bool,
    /// Every camera unsubscribed by participant, then subscribed again by track.
    pub resubscribed: bool,
    /// LiveKit acted on it: a leave, or the session closing, within 5 s.
    pub simulate_obeyed: bool,
    /// Unmutes of its paused camera sent.
    pub unmute_attempts: u64,
    /// LiveKit showed its camera unmuted while the fallback held it paused.
    pub unmuted_while_paused: bool,
    /// Tokens it held: its ticket and every refresh.
    pub tokens_held: u64,
    /// Of those, how many LiveKit accepted when presented to it directly.
    pub tokens_livekit_accepted: u64,
}

/// One behaviour and whether the policy held against it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Verdict {
    pub behaviour: &'static str,
    /// `None`: the run did not give the behaviour a chance (e.g. no fallback happened).
    pub held: Option<bool>,
    pub detail: String,
}

/// Judges a hostile participant's report against what it received. `call_size`: the call's size
/// when the run told everyone to leave; `heights`: the height of the last key frame of every
/// camera it received then.
pub fn verdicts(report: &HostileReport, call_size: usize, heights: &[u16]) -> Vec<Verdict> {
    let cap = ladder_cap(call_size);
    let highest = heights.iter().copied().max();
    vec![
        Verdict {
            behaviour: "speaks JSON and asks for 1080 lines",
            held: (report.above_cap_requests > 0 && highest.is_some())
                .then(|| highest.is_some_and(|h| h <= cap)),
            detail: format!(
                "{} requests, {} JSON frames out and {} in; highest camera received {} lines, cap {cap} for {call_size} people",
                report.above_cap_requests,
                report.json_frames_sent,
                report.json_frames_received,
                highest.map_or("none".into(), |h| h.to_string()),
            ),
        },
        Verdict {
            behaviour: "unsubscribes by participant and subscribes again",
            held: (report.resubscribed && highest.is_some())
                .then(|| highest.is_some_and(|h| h <= cap)),
            detail: format!(
                "highest camera received afterwards {} lines, cap {cap} for {call_size} people",
                highest.map_or("none".into(), |h| h.to_string()),
            ),
        },
        Verdict {
            behaviour: "sends simulate (server shutdown)",
            held: report.simulate_sent.then_some(!report.simulate_obeyed),
            detail: if report.simulate_obeyed {
                "LiveKit acted on it".into()
            } else {
                "nothing happened".into()
            },
        },
        Verdict {
            behaviour: "unmutes the camera the fallback paused",
            held: (report.unmute_attempts > 0).then_some(!report.unmuted_while_paused),
            detail: format!("{} attempts", report.unmute_attempts),
        },
        Verdict {
            behaviour: "presents its ticket and refreshed tokens to LiveKit directly",
            held: (report.tokens_held > 0).then_some(report.tokens_livekit_accepted == 0),
            detail: format!(
                "{} of {} accepted",
                report.tokens_livekit_accepted, report.tokens_held
            ),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ladder_holding_against_json_is_judged_by_what_arrived() {
        let report = HostileReport {
            above_cap_requests: 5,
            json_frames_sent: 40,
            ..Default::default()
        };
        assert_eq!(verdicts(&report, 6, &[360, 360])[0].held, Some(true));
        assert_eq!(verdicts(&report, 6, &[360, 720])[0].held, Some(false));
        // Nothing received: nothing to judge.
        assert_eq!(verdicts(&report, 6, &[])[0].held, None);
    }

    #[test]
    fn a_resubscription_is_judged_by_what_arrived_after_it() {
        let report = HostileReport {
            resubscribed: true,
            ..Default::default()
        };
        assert_eq!(verdicts(&report, 6, &[360, 360])[1].held, Some(true));
        assert_eq!(verdicts(&report, 6, &[720, 360])[1].held, Some(false));
        assert_eq!(verdicts(&HostileReport::default(), 6, &[720])[1].held, None);
    }

    #[test]
    fn untried_behaviours_are_not_judged() {
        let all = verdicts(&HostileReport::default(), 3, &[540]);
        assert!(all.iter().all(|v| v.held.is_none()), "{all:?}");
        let tried = HostileReport {
            simulate_sent: true,
            simulate_obeyed: true,
            unmute_attempts: 3,
            tokens_held: 2,
            tokens_livekit_accepted: 1,
            ..Default::default()
        };
        let held: Vec<Option<bool>> = verdicts(&tried, 3, &[540]).iter().map(|v| v.held).collect();
        assert_eq!(held, [None, None, Some(false), Some(true), Some(false)]);
    }
}
