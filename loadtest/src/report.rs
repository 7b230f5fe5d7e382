//! The run's outcome: the JSON report (every participant's observations, the CPU of the stack's
//! processes, and the summary) and the human table printed at the end.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::cpu::Usage;
use crate::hostile::{Verdict, verdicts};
use crate::participant::{Observations, RemoteTrack};

#[derive(Debug, Clone, Serialize)]
pub struct RunOptions {
    pub rooms: usize,
    pub participants: usize,
    pub ramp: f64,
    pub duration_secs: u64,
    /// "gateway" or "direct".
    pub path: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: usize,
    pub p50: u64,
    pub p95: u64,
    pub max: u64,
}

impl Percentiles {
    pub fn of(mut values: Vec<u64>) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        values.sort_unstable();
        let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
        Some(Self {
            count: values.len(),
            p50: at(0.5),
            p95: at(0.95),
            max: values[values.len() - 1],
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub participants: usize,
    pub failed: usize,
    /// Start (token request) → LiveKit `join`, ms.
    pub joined_ms: Option<Percentiles>,
    /// Start → the first key frame of every remote camera, ms (one value per participant: the last
    /// of its remotes, i.e. when it saw everyone).
    pub all_video_ms: Option<Percentiles>,
    /// Signalling connect (token in hand) → the first remote camera key frame, ms: the join time a
    /// practitioner feels.
    pub connect_to_first_frame_ms: Option<Percentiles>,
    /// Signalling connect → the first remote audio packet, ms.
    pub first_audio_ms: Option<Percentiles>,
    /// How long the call took to obey the ladder after it grew past 2 and past 4 people.
    pub ladder: Vec<Convergence>,
    /// Height of the last key frame received from each remote camera before the run told
    /// everyone to leave → how many such tracks.
    pub final_heights: BTreeMap<u16, usize>,
    /// Packets missing from what was received, over all remote tracks, in %.
    pub loss_percent: f64,
    /// Received media bitrate, per participant on average, kbit/s.
    pub receive_kbps: f64,
    pub fallback_switches: usize,
    /// For every participant with injected loss: how the gateway's audio-only fallback followed it.
    pub fallback: Vec<FallbackRun>,
    /// For every hostile participant: whether the server's policy held, behaviour by behaviour.
    pub hostile: Vec<HostileRun>,
}

/// The server's policy against one hostile participant (`hostile.rs`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HostileRun {
    pub identity: String,
    pub verdicts: Vec<Verdict>,
}

/// The audio-only fallback against one participant's injected loss.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FallbackRun {
    pub identity: String,
    pub loss_percent: f64,
    /// Loss start → the gateway paused the video this participant receives.
    pub paused_after_ms: Option<u64>,
    /// Loss end → video back (stage none again).
    pub restored_after_ms: Option<u64>,
    /// How many times it entered a fallback over the run (1 for a clean spell: more is flapping).
    pub entered: usize,
}

/// The gateway's ladder: the highest layer a subscriber may receive in a call of `n` people.
pub fn ladder_cap(n: usize) -> u16 {
    match n {
        0..=2 => 720,
        3..=4 => 540,
        _ => 360,
    }
}

/// One step of the ladder in one call: from the moment the participant that lowered the cap had
/// its media connected, until every earlier participant received every earlier camera at no
/// more than the new cap (`None`: not within the run).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Convergence {
    pub room_id: String,
    pub participants: usize,
    pub cap: u16,
    pub converged_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub options: RunOptions,
    pub wall_secs: f64,
    pub summary: Summary,
    pub cpu: BTreeMap<&'static str, Usage>,
    pub participants: Vec<Observations>,
}

impl Report {
    pub fn new(
        options: &RunOptions,
        participants: Vec<Observations>,
        cpu: BTreeMap<&'static str, Usage>,
        wall: Duration,
    ) -> Self {
        let summary = summarize(&participants, options.duration_secs);
        Self {
            options: options.clone(),
            wall_secs: wall.as_secs_f64(),
            summary,
            cpu,
            participants,
        }
    }

    /// The summary as a table for the terminal.
    pub fn table(&self) -> String {
        let s = &self.summary;
        let mut out = String::new();
        let fmt = |p: &Option<Percentiles>| match p {
            Some(p) => format!(
                "p50 {:>6} ms   p95 {:>6} ms   max {:>6} ms   (n={})",
                p.p50, p.p95, p.max, p.count
            ),
            None => "—".to_owned(),
        };
        let _ = writeln!(
            out,
            "\n{} room(s) × {} participant(s) through the {}, {:.0} s",
            self.options.rooms, self.options.participants, self.options.path, self.wall_secs
        );
        let _ = writeln!(
            out,
            "  participants        {} ({} failed)",
            s.participants, s.failed
        );
        let _ = writeln!(out, "  joined              {}", fmt(&s.joined_ms));
        let _ = writeln!(out, "  connect→1st audio   {}", fmt(&s.first_audio_ms));
        let _ = writeln!(out, "  start→saw everyone  {}", fmt(&s.all_video_ms));
        let _ = writeln!(
            out,
            "  connect→1st frame   {}",
            fmt(&s.connect_to_first_frame_ms)
        );
        for step in &s.ladder {
            let took = step
                .converged_ms
                .map_or("not within the run".to_owned(), |ms| format!("{ms} ms"));
            let _ = writeln!(
                out,
                "  ladder at {} people  ≤{}p after {took}",
                step.participants, step.cap
            );
        }
        let heights: Vec<String> = s
            .final_heights
            .iter()
            .map(|(h, n)| format!("{n}×{h}p"))
            .collect();
        let _ = writeln!(
            out,
            "  received video      {}",
            if heights.is_empty() {
                "—".to_owned()
            } else {
                heights.join(", ")
            }
        );
        let _ = writeln!(
            out,
            "  loss                {:.2} %   receive {:.0} kbit/s per participant",
            s.loss_percent, s.receive_kbps
        );
        let _ = writeln!(out, "  audio-only switches {}", s.fallback_switches);
        for f in &s.fallback {
            let ms = |v: Option<u64>| {
                v.map_or("never".to_owned(), |ms| {
                    format!("{:.1} s", ms as f64 / 1000.0)
                })
            };
            let _ = writeln!(
                out,
                "  fallback at {:.0} % loss: video paused after {}, back after {}, entered {} time(s)",
                f.loss_percent,
                ms(f.paused_after_ms),
                ms(f.restored_after_ms),
                f.entered
            );
        }
        for run in &s.hostile {
            let _ = writeln!(out, "  hostile participant {}", run.identity);
            for v in &run.verdicts {
                let held = match v.held {
                    Some(true) => "held",
                    Some(false) => "BROKEN",
                    None => "not tried",
                };
                let _ = writeln!(out, "    {held:<9} {}: {}", v.behaviour, v.detail);
            }
        }
        for (name, usage) in &self.cpu {
            let _ = writeln!(
                out,
                "  cpu {name:<15} {:.2} cores ({:.1} s over {} process(es))",
                usage.cores, usage.cpu_secs, usage.processes
            );
        }
        out
    }
}

fn summarize(participants: &[Observations], duration_secs: u64) -> Summary {
    let mut joined = Vec::new();
    let mut all_video = Vec::new();
    let mut final_heights = BTreeMap::new();
    let (mut packets, mut lost, mut bytes) = (0u64, 0u64, 0u64);
    let mut fallback_switches = 0;
    for p in participants {
        joined.extend(p.joined_ms);
        fallback_switches += p
            .fallback_changes
            .iter()
            .filter(|(_, stage)| stage != "none")
            .count();
        let cameras: Vec<_> = p.remote.values().filter(|t| t.kind == "video").collect();
        if !cameras.is_empty() && cameras.iter().all(|t| t.first_frame_ms.is_some()) {
            all_video.extend(cameras.iter().filter_map(|t| t.first_frame_ms).max());
        }
        for t in p.remote.values() {
            packets += t.packets;
            lost += t.lost;
            bytes += t.bytes;
            if let Some((_, _, h)) = t.resolutions.iter().rfind(|(at, _, _)| *at <= p.leave_ms) {
                *final_heights.entry(*h).or_insert(0) += 1;
            }
        }
    }
    let first_audio = after_connect(participants, "audio", |t| t.first_packet_ms);
    let connect_to_first_frame = after_connect(participants, "video", |t| t.first_frame_ms);
    let loss_percent = if packets + lost == 0 {
        0.0
    } else {
        100.0 * lost as f64 / (packets + lost) as f64
    };
    let connected = participants
        .iter()
        .filter(|p| p.media_connected_ms.is_some())
        .count()
        .max(1);
    Summary {
        participants: participants.len(),
        failed: participants.iter().filter(|p| p.error.is_some()).count(),
        joined_ms: Percentiles::of(joined),
        all_video_ms: Percentiles::of(all_video),
        connect_to_first_frame_ms: Percentiles::of(connect_to_first_frame),
        first_audio_ms: Percentiles::of(first_audio),
        ladder: ladder_convergence(participants),
        fallback: participants.iter().filter_map(fallback_run).collect(),
        hostile: participants
            .iter()
            .filter_map(|p| hostile_run(p, participants))
            .collect(),
        final_heights,
        loss_percent,
        receive_kbps: bytes as f64 * 8.0 / 1000.0 / duration_secs.max(1) as f64 / connected as f64,
        fallback_switches,
    }
}

/// Per participant: from its signalling connect (token in hand) to the earliest `at` among its
/// remote tracks of `kind`.
fn after_connect(
    participants: &[Observations],
    kind: &str,
    at: impl Fn(&RemoteTrack) -> Option<u64>,
) -> Vec<u64> {
    participants
        .iter()
        .filter_map(|p| {
            let first = p
                .remote
                .values()
                .filter(|t| t.kind == kind)
                .filter_map(&at)
                .min()?;
            Some(first.saturating_sub(p.token_ms?))
        })
        .collect()
}

/// The verdicts on a hostile participant, from what it received before the run told everyone
/// to leave (the call's size then sets the cap).
fn hostile_run(p: &Observations, all: &[Observations]) -> Option<HostileRun> {
    let report = p.hostile.as_ref()?;
    let call_size = all
        .iter()
        .filter(|o| o.room_id == p.room_id && o.media_connected_ms.is_some())
        .count();
    let heights: Vec<u16> = p
        .remote
        .values()
        .filter(|t| t.kind == "video")
        .filter_map(|t| t.resolutions.iter().rfind(|(at, _, _)| *at <= p.leave_ms))
        .map(|(_, _, h)| *h)
        .collect();
    Some(HostileRun {
        identity: p.identity.clone(),
        verdicts: verdicts(report, call_size, &heights),
    })
}

fn fallback_run(p: &Observations) -> Option<FallbackRun> {
    let spec = p.loss.as_ref()?;
    let connected = p.media_connected_ms?;
    let start = connected + (spec.from_secs * 1000.0) as u64;
    let end = spec.to_secs.map(|to| connected + (to * 1000.0) as u64);
    let paused = p
        .fallback_changes
        .iter()
        .find(|(t, stage)| *t >= start && stage != "none")
        .map(|(t, _)| t - start);
    let restored = end.and_then(|end| {
        p.fallback_changes
            .iter()
            .find(|(t, stage)| *t >= end && stage == "none")
            .map(|(t, _)| t - end)
    });
    let mut entered = 0;
    let mut previous = "none";
    for (_, stage) in &p.fallback_changes {
        if previous == "none" && stage != "none" {
            entered += 1;
        }
        previous = stage;
    }
    Some(FallbackRun {
        identity: p.identity.clone(),
        loss_percent: spec.percent,
        paused_after_ms: paused,
        restored_after_ms: restored,
        entered,
    })
}

/// [`Convergence`] for every call and every size at which the cap drops (3 and 5 people).
fn ladder_convergence(participants: &[Observations]) -> Vec<Convergence> {
    let mut rooms: BTreeMap<&str, Vec<&Observations>> = BTreeMap::new();
    for p in participants
        .iter()
        .filter(|p| p.media_connected_ms.is_some())
    {
        rooms.entry(p.room_id.as_str()).or_default().push(p);
    }
    let mut out = Vec::new();
    for (room_id, mut members) in rooms {
        let connected_at = |p: &Observations| p.started_ms + p.media_connected_ms.unwrap_or(0);
        members.sort_by_key(|p| connected_at(p));
        for n in 3..=members.len() {
            let cap = ladder_cap(n);
            if cap == ladder_cap(n - 1) {
                continue;
            }
            let since = connected_at(members[n - 1]);
            let earlier: Vec<&str> = members[..n - 1]
                .iter()
                .map(|p| p.identity.as_str())
                .collect();
            // Each earlier subscriber, each earlier camera: when it first came at or under the cap.
            let mut latest = Some(since);
            for subscriber in &members[..n - 1] {
                for track in subscriber
                    .remote
                    .values()
                    .filter(|t| t.kind == "video" && earlier.contains(&t.from.as_str()))
                {
                    let at = track
                        .resolutions
                        .iter()
                        .map(|(t, _, h)| (subscriber.started_ms + t, *h))
                        .filter(|(t, h)| *t >= since && *h <= cap)
                        .map(|(t, _)| t)
                        .next()
                        // Already at or under the cap before, and nothing above it since.
                        .or_else(|| {
                            let before = track
                                .resolutions
                                .iter()
                                .rev()
                                .find(|(t, _, _)| subscriber.started_ms + t <= since)?;
                            let above_after = track
                                .resolutions
                                .iter()
                                .any(|(t, _, h)| subscriber.started_ms + t > since && *h > cap);
                            (before.2 <= cap && !above_after).then_some(since)
                        });
                    latest = match (latest, at) {
                        (Some(l), Some(a)) => Some(l.max(a)),
                        _ => None,
                    };
                }
            }
            out.push(Convergence {
                room_id: room_id.to_owned(),
                participants: n,
                cap,
                converged_ms: latest.map(|t| t - since),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A subscriber's view: per remote camera, its sender and the sizes received.
    type Seen<'a> = Vec<(&'a str, Vec<(u64, u16, u16)>)>;

    fn member(
        identity: &str,
        started_ms: u64,
        connected_ms: u64,
        remotes: Seen<'_>,
    ) -> Observations {
        let mut o = Observations {
            identity: identity.into(),
            room_id: "!r".into(),
            started_ms,
            token_ms: Some(10),
            media_connected_ms: Some(connected_ms),
            ..Default::default()
        };
        for (i, (from, resolutions)) in remotes.into_iter().enumerate() {
            o.remote.insert(
                format!("TR_{identity}_{i}"),
                RemoteTrack {
                    from: from.into(),
                    kind: "video".into(),
                    resolutions,
                    ..Default::default()
                },
            );
        }
        o
    }

    #[test]
    fn ladder_convergence_is_measured_from_the_newcomer_to_the_last_subscriber_at_the_cap() {
        // a and b at 720; c's media connects at 10 s on the run's clock. a sees b drop to 540 at
        // 10.8 s; b, who started 1 s into the run, sees a drop at 10.5 s on its own clock = 11.5 s.
        let a = member(
            "a",
            0,
            500,
            vec![("b", vec![(2_000, 1280, 720), (10_800, 960, 540)])],
        );
        let b = member(
            "b",
            1_000,
            500,
            vec![("a", vec![(1_500, 1280, 720), (10_500, 960, 540)])],
        );
        let c = member(
            "c",
            9_000,
            1_000,
            vec![
                ("a", vec![(1_500, 960, 540)]),
                ("b", vec![(1_600, 960, 540)]),
            ],
        );
        let steps = ladder_convergence(&[a.clone(), b.clone(), c.clone()]);
        assert_eq!(
            steps,
            vec![Convergence {
                room_id: "!r".into(),
                participants: 3,
                cap: 540,
                converged_ms: Some(1_500)
            }]
        );

        // One subscriber never comes down: not converged.
        let stuck = member("b", 1_000, 500, vec![("a", vec![(1_500, 1280, 720)])]);
        assert_eq!(ladder_convergence(&[a, stuck, c])[0].converged_ms, None);
    }

    #[test]
    fn the_fallback_is_timed_from_the_loss_window() {
        let p = Observations {
            identity: "b".into(),
            media_connected_ms: Some(1_000),
            loss: Some("1=30@10-40".parse().unwrap()),
            fallback_changes: vec![
                (22_000, "incoming_video".into()),
                (32_000, "camera".into()),
                (63_000, "none".into()),
            ],
            ..Default::default()
        };
        assert_eq!(
            fallback_run(&p),
            Some(FallbackRun {
                identity: "b".into(),
                loss_percent: 30.0,
                paused_after_ms: Some(11_000),
                restored_after_ms: Some(22_000),
                entered: 1
            })
        );
        assert_eq!(
            fallback_run(&Observations::default()),
            None,
            "no loss, nothing to time"
        );
    }

    #[test]
    fn the_ladder_cap_follows_the_design() {
        assert_eq!(
            [1, 2, 3, 4, 5, 6].map(ladder_cap),
            [720, 720, 540, 540, 360, 360]
        );
    }

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        assert_eq!(Percentiles::of(vec![]), None);
        let p = Percentiles::of((1..=100).rev().collect()).unwrap();
        assert_eq!((p.count, p.p50, p.p95, p.max), (100, 51, 95, 100));
    }

    #[test]
    fn the_summary_counts_what_participants_saw() {
        let video = |first: Option<u64>, h: Option<u16>| RemoteTrack {
            kind: "video".into(),
            first_frame_ms: first,
            packets: 90,
            lost: 10,
            resolutions: h
                .map(|h| vec![(first.unwrap_or(0), 640, h)])
                .unwrap_or_default(),
            ..Default::default()
        };
        let mut a = Observations {
            joined_ms: Some(100),
            media_connected_ms: Some(300),
            leave_ms: 20_000,
            ..Default::default()
        };
        let mut tr_1 = video(Some(900), Some(360));
        // The call shrinking as everyone leaves is not what the run measured.
        tr_1.resolutions.push((20_400, 1280, 720));
        a.remote.insert("TR_1".into(), tr_1);
        a.remote.insert("TR_2".into(), video(Some(1200), Some(540)));
        let mut b = Observations {
            joined_ms: Some(200),
            ..Default::default()
        };
        b.remote.insert("TR_1".into(), video(None, None));
        b.fallback_changes = vec![(5000, "incoming_video".into()), (9000, "none".into())];
        let failed = Observations {
            error: Some("refused".into()),
            ..Default::default()
        };
        let s = summarize(&[a, b, failed], 10);
        assert_eq!(s.participants, 3);
        assert_eq!(s.failed, 1);
        assert_eq!(
            s.all_video_ms.unwrap().p50,
            1200,
            "a saw everyone at 1.2 s; b never did"
        );
        assert_eq!(s.final_heights, BTreeMap::from([(360, 1), (540, 1)]));
        assert!((s.loss_percent - 10.0).abs() < 1e-9);
        assert_eq!(s.fallback_switches, 1);
    }
}
