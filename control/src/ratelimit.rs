//! Per-user rate limiting of the control plane's operations (a token bucket per Matrix user).
//!
//! Checked after the OpenID token is verified (so the key is a proven user, not a claim) and
//! before any membership or LiveKit work. The buckets live behind one mutex held only for a map
//! lookup and a little arithmetic — no I/O — so it is never contended for long; idle buckets are
//! dropped once full again, bounding memory by the number of recently active users.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use matrix_sdk::ruma::{OwnedUserId, UserId};

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

#[derive(Debug)]
pub struct RateLimiter {
    burst: f64,
    per_second: f64,
    buckets: Mutex<HashMap<OwnedUserId, Bucket>>,
}

impl RateLimiter {
    /// `burst` requests at once, refilled at `per_minute` requests a minute.
    pub fn new(burst: u32, per_minute: u32) -> Self {
        Self {
            burst: f64::from(burst),
            per_second: f64::from(per_minute) / 60.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// `Ok(())` if `user` may make a request at `now`, else how long until it may.
    pub fn check(&self, user: &UserId, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > 10_000 {
            let full_after = Duration::from_secs_f64(self.burst / self.per_second);
            buckets.retain(|_, b| now.saturating_duration_since(b.updated) < full_after);
        }
        let bucket = buckets.entry(user.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_second,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_per_user() {
        let limiter = RateLimiter::new(3, 60);
        let alice: &UserId = "@alice:localhost".try_into().unwrap();
        let bob: &UserId = "@bob:localhost".try_into().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            limiter.check(alice, t0).unwrap();
        }
        let wait = limiter.check(alice, t0).unwrap_err();
        assert!(
            wait <= Duration::from_secs(1) && wait > Duration::ZERO,
            "{wait:?}"
        );
        // Another user is not affected.
        limiter.check(bob, t0).unwrap();
        // One a second comes back.
        limiter
            .check(alice, t0 + Duration::from_millis(1_001))
            .unwrap();
        assert!(
            limiter
                .check(alice, t0 + Duration::from_millis(1_002))
                .is_err()
        );
    }
}
