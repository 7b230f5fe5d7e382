//! Injected receive loss: an interceptor at the wire end of a participant's subscriber
//! connection that drops a share of the RTP packets arriving, during a window of the run. The
//! packets are gone before anything else sees them, so this endpoint's receiver reports and
//! NACKs tell LiveKit about real loss, and LiveKit scores the connection as a browser's on a bad
//! network would be scored: what drives the gateway's audio-only fallback.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use serde::Serialize;

/// `INDEX=PERCENT[@FROM-TO]`: participant INDEX of every call loses PERCENT % of what it receives
/// from FROM to TO seconds after its media connected (the whole run when no window is given).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LossSpec {
    pub participant: usize,
    pub percent: f64,
    pub from_secs: f64,
    pub to_secs: Option<f64>,
}

impl std::str::FromStr for LossSpec {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let usage = || {
            format!(
                "--loss {s:?}: expected INDEX=PERCENT or INDEX=PERCENT@FROM-TO (seconds), e.g. 1=30@10-70"
            )
        };
        let (index, rest) = s.split_once('=').with_context(usage)?;
        let (percent, window) = match rest.split_once('@') {
            Some((p, w)) => (p, Some(w)),
            None => (rest, None),
        };
        let participant: usize = index.trim().parse().with_context(usage)?;
        let percent: f64 = percent
            .trim()
            .trim_end_matches('%')
            .parse()
            .with_context(usage)?;
        ensure!(
            (0.0..=100.0).contains(&percent),
            "--loss {s:?}: the percentage must be 0 to 100"
        );
        let (from_secs, to_secs) = match window {
            None => (0.0, None),
            Some(w) => {
                let (from, to) = w.split_once('-').with_context(usage)?;
                let from: f64 = from.trim().parse().with_context(usage)?;
                let to: f64 = to.trim().parse().with_context(usage)?;
                if !(from >= 0.0 && to > from) {
                    bail!(
                        "--loss {s:?}: the window must start at 0 or later and end after it starts"
                    );
                }
                (from, Some(to))
            }
        };
        Ok(Self {
            participant,
            percent,
            from_secs,
            to_secs,
        })
    }
}

/// A participant's loss, shared between the interceptor and the participant (who says when its
/// media connected, which is when the window's clock starts).
#[derive(Debug)]
pub struct Schedule {
    pub spec: LossSpec,
    connected: OnceLock<Instant>,
}

impl Schedule {
    pub fn new(spec: LossSpec) -> Arc<Self> {
        Arc::new(Self {
            spec,
            connected: OnceLock::new(),
        })
    }

    pub fn start(&self, connected: Instant) {
        let _ = self.connected.set(connected);
    }

    fn active(&self, now: Instant) -> bool {
        let Some(connected) = self.connected.get() else {
            return false;
        };
        let since = now.saturating_duration_since(*connected);
        since >= Duration::from_secs_f64(self.spec.from_secs)
            && self
                .spec
                .to_secs
                .is_none_or(|to| since < Duration::from_secs_f64(to))
    }
}

pub struct LossInterceptor {
    schedule: Arc<Schedule>,
    /// xorshift64 state: a cheap, deterministic-enough coin for dropping packets.
    state: u64,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
    pub dropped: u64,
}

impl LossInterceptor {
    pub fn new(schedule: Arc<Schedule>, seed: u64) -> Self {
        Self {
            schedule,
            state: seed | 1,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
            dropped: 0,
        }
    }

    fn coin(&mut self) -> f64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        (self.state >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for LossInterceptor {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if matches!(msg.message.packet, Packet::Rtp(_))
            && self.schedule.active(msg.now)
            && self.coin() * 100.0 < self.schedule.spec.percent
        {
            self.dropped += 1;
            return Ok(());
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for LossInterceptor {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_specs_parse_and_bad_ones_say_why() {
        assert_eq!(
            "1=30@10-70".parse::<LossSpec>().unwrap(),
            LossSpec {
                participant: 1,
                percent: 30.0,
                from_secs: 10.0,
                to_secs: Some(70.0)
            }
        );
        assert_eq!(
            "0=5%".parse::<LossSpec>().unwrap(),
            LossSpec {
                participant: 0,
                percent: 5.0,
                from_secs: 0.0,
                to_secs: None
            }
        );
        for (bad, reason) in [
            ("1", "expected INDEX=PERCENT"),
            ("x=3", "expected"),
            ("1=150", "0 to 100"),
            ("1=10@5", "expected"),
            ("1=10@7-3", "end after it starts"),
        ] {
            let err = bad.parse::<LossSpec>().expect_err(bad);
            assert!(format!("{err:#}").contains(reason), "{bad}: {err:#}");
        }
    }

    #[test]
    fn the_window_counts_from_the_connection() {
        let schedule = Schedule::new("0=50@10-20".parse().unwrap());
        let t0 = Instant::now();
        assert!(
            !schedule.active(t0 + Duration::from_secs(15)),
            "not before the media connected"
        );
        schedule.start(t0);
        assert!(!schedule.active(t0 + Duration::from_secs(9)));
        assert!(schedule.active(t0 + Duration::from_secs(10)));
        assert!(schedule.active(t0 + Duration::from_secs(19)));
        assert!(!schedule.active(t0 + Duration::from_secs(20)));
    }

    #[test]
    fn the_coin_drops_about_the_share_asked() {
        let schedule = Schedule::new("0=30".parse().unwrap());
        let mut interceptor = LossInterceptor::new(schedule, 42);
        let heads = (0..100_000)
            .filter(|_| interceptor.coin() * 100.0 < 30.0)
            .count();
        assert!((29_000..31_000).contains(&heads), "{heads}");
    }
}
