//! OpenID tokens are single-use here. A Matrix OpenID token is a bearer credential valid until
//! it expires (an hour on Synapse and Tuwunel); anyone who sees one — in a proxy log, a browser
//! extension, a crash report — could otherwise mint LiveKit tokens and TURN credentials as its
//! owner for that hour. Clients ask their homeserver for a fresh OpenID token per request (as
//! Element Call does), so refusing a second redemption costs them nothing.
//!
//! Only a SHA-256 of each redeemed token is kept, for the configured window (at least the
//! homeserver's OpenID token lifetime), behind one mutex: the critical section is a hash-map
//! insert. The state is per process; several control replicas would each accept a token once.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};

pub struct ReplayGuard {
    window: Duration,
    redeemed: Mutex<HashMap<[u8; 32], Instant>>,
}

impl ReplayGuard {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            redeemed: Mutex::new(HashMap::new()),
        }
    }

    /// Records the redemption of `token` at `now`; false if it was already redeemed within the
    /// window.
    pub fn first_use(&self, token: &str, now: Instant) -> bool {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut redeemed = self.redeemed.lock().unwrap_or_else(|p| p.into_inner());
        if redeemed.len() >= 1024 && redeemed.len().is_power_of_two() {
            // Amortised pruning: the map is swept each time it doubles.
            redeemed.retain(|_, at| now.duration_since(*at) < self.window);
        }
        match redeemed.get(&key) {
            Some(at) if now.duration_since(*at) < self.window => false,
            _ => {
                redeemed.insert(key, now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_accepted_once_within_the_window() {
        let guard = ReplayGuard::new(Duration::from_secs(3600));
        let t0 = Instant::now();
        assert!(guard.first_use("openid-a", t0));
        assert!(!guard.first_use("openid-a", t0 + Duration::from_secs(10)));
        assert!(guard.first_use("openid-b", t0 + Duration::from_secs(10)));
        // Past the window the homeserver refuses the token anyway; the entry may go.
        assert!(guard.first_use("openid-a", t0 + Duration::from_secs(3600)));
    }

    #[test]
    fn pruning_keeps_recent_redemptions() {
        let guard = ReplayGuard::new(Duration::from_secs(60));
        let t0 = Instant::now();
        for n in 0..5000 {
            assert!(guard.first_use(&format!("old-{n}"), t0));
        }
        let later = t0 + Duration::from_secs(30);
        assert!(guard.first_use("recent", later));
        for n in 0..5000 {
            assert!(guard.first_use(&format!("new-{n}"), t0 + Duration::from_secs(61)));
        }
        assert!(!guard.first_use("recent", t0 + Duration::from_secs(61)));
        assert!(guard.redeemed.lock().unwrap().len() < 10_001);
    }
}
