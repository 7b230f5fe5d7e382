//! The run's outcome: the JSON report (every participant's observations, the CPU of the stack's
//! processes, and the summary) and the human table printed at the end.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::cpu::Usage;
use crate::participant::Observations;

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
    /// Start → the first audio packet from each remote, ms.
    pub first_audio_ms: Option<Percentiles>,
    /// Height of the last key frame received from each remote camera → how many such tracks.
    pub final_heights: BTreeMap<u16, usize>,
    /// Packets missing from what was received, over all remote tracks, in %.
    pub loss_percent: f64,
    /// Received media bitrate, per participant on average, kbit/s.
    pub receive_kbps: f64,
    pub fallback_switches: usize,
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
        let _ = writeln!(out, "  first remote audio  {}", fmt(&s.first_audio_ms));
        let _ = writeln!(out, "  all remote video    {}", fmt(&s.all_video_ms));
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
    let mut first_audio = Vec::new();
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
            if t.kind == "audio" {
                first_audio.extend(t.first_packet_ms);
            }
            if let Some((_, _, h)) = t.resolutions.last() {
                *final_heights.entry(*h).or_insert(0) += 1;
            }
        }
    }
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
        first_audio_ms: Percentiles::of(first_audio),
        final_heights,
        loss_percent,
        receive_kbps: bytes as f64 * 8.0 / 1000.0 / duration_secs.max(1) as f64 / connected as f64,
        fallback_switches,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::participant::RemoteTrack;

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
            ..Default::default()
        };
        a.remote.insert("TR_1".into(), video(Some(900), Some(360)));
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
