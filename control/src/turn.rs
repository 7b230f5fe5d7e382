//! coturn REST-API credentials (`use-auth-secret`, the TURN REST draft): the username carries
//! its own expiry and the password is an HMAC of it, so coturn checks them without calling us.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD};
use matrix_sdk::ruma::UserId;
use ring::hmac;
use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TurnCredentials {
    pub username: String,
    pub password: String,
    pub ttl: u64,
    pub uris: Vec<String>,
}

#[derive(Clone)]
pub struct TurnMinter {
    key: hmac::Key,
    ttl: Duration,
    uris: Vec<String>,
}

impl std::fmt::Debug for TurnMinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnMinter")
            .field("ttl", &self.ttl)
            .field("uris", &self.uris)
            .finish_non_exhaustive()
    }
}

impl TurnMinter {
    pub fn new(secret: &str, ttl: Duration, uris: Vec<String>) -> Self {
        Self {
            // coturn's REST API fixes HMAC-SHA1; it is a MAC here, not a signature to last.
            key: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes()),
            ttl,
            uris,
        }
    }

    pub fn mint(&self, user: &UserId, now_unix: i64) -> TurnCredentials {
        let username = format!("{}:{user}", now_unix + self.ttl.as_secs() as i64);
        let password = STANDARD.encode(hmac::sign(&self.key, username.as_bytes()).as_ref());
        TurnCredentials {
            username,
            password,
            ttl: self.ttl.as_secs(),
            uris: self.uris.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_coturns_rest_api_scheme() {
        let minter = TurnMinter::new(
            "s3cret",
            Duration::from_secs(3600),
            vec!["turn:t:3478".into()],
        );
        let user: &UserId = "@alice:localhost".try_into().unwrap();
        let creds = minter.mint(user, 1_700_000_000);
        assert_eq!(creds.username, "1700003600:@alice:localhost");
        // base64(HMAC-SHA1("s3cret", username)), computed independently with Python's hmac.
        assert_eq!(creds.password, "8DrzI0Rz0G42GYfAL0NAK+RCQ/E=");
        assert_eq!(creds.ttl, 3600);
    }
}
