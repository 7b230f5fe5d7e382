//! What the gateway reads from a LiveKit access token, without verifying it: the gateway holds
//! no LiveKit credential. LiveKit verifies this very token on the leg the gateway opens before it
//! accepts the browser's upgrade (the gateway hands LiveKit exactly the token it decoded), so
//! the claims key a session's policy only once LiveKit has accepted that leg. Before that they
//! may only refuse: a refusal based on a forged claim refuses nobody but the forger.

use std::collections::HashMap;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::Deserialize;

use crate::revocations::{MATRIX_USER_ATTRIBUTE, SessionKey};

/// Tokens are a few hundred bytes; anything much larger is not one of control's.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The claims a session's policy is keyed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The LiveKit identity (`sub`).
    pub identity: String,
    /// The LiveKit room the token grants (`video.room`).
    pub room: String,
    /// The Matrix user control put in the token's attributes.
    pub matrix_user: Option<String>,
    /// Unix seconds the token is valid from (`nbf`, else `iat`): a revocation after it covers it.
    pub not_before: i64,
}

impl Claims {
    pub fn session_key(&self) -> SessionKey {
        SessionKey {
            livekit_room: self.room.clone(),
            matrix_user: self.matrix_user.clone(),
            token_nbf: self.not_before,
        }
    }
}

#[derive(Deserialize)]
struct Payload {
    #[serde(default)]
    sub: String,
    nbf: Option<f64>,
    iat: Option<f64>,
    #[serde(default)]
    video: Video,
    #[serde(default)]
    attributes: HashMap<String, String>,
}

#[derive(Deserialize, Default)]
struct Video {
    #[serde(default)]
    room: String,
}

/// The claims of a JWT's payload, signature unchecked. `None` for anything that is not a token
/// naming an identity and a room: such a token cannot key a session, and LiveKit would refuse it
/// too (a token without a room would let LiveKit take the room from the URL instead).
pub fn unverified(token: &str) -> Option<Claims> {
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let mut parts = token.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let mut payload: Payload = serde_json::from_slice(&bytes).ok()?;
    if payload.sub.is_empty() || payload.video.room.is_empty() {
        return None;
    }
    Some(Claims {
        identity: payload.sub,
        room: payload.video.room,
        matrix_user: payload.attributes.remove(MATRIX_USER_ATTRIBUTE),
        not_before: payload.nbf.or(payload.iat).unwrap_or(0.0) as i64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use livekit_api::access_token::{AccessToken, VideoGrants};

    fn token(secret: &str, room: &str, identity: &str) -> String {
        AccessToken::with_api_key("devkey", secret)
            .with_identity(identity)
            .with_attributes([(MATRIX_USER_ATTRIBUTE, "@alice:localhost")])
            .with_grants(VideoGrants {
                room_join: true,
                room: room.into(),
                ..Default::default()
            })
            .to_jwt()
            .unwrap()
    }

    #[test]
    fn claims_are_read_whatever_the_signature() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        // The gateway cannot tell these apart; LiveKit can, and refuses the second.
        for secret in ["the-livekit-secret", "someone-elses-secret"] {
            let claims = unverified(&token(secret, "R", "@alice:localhost:DEV")).unwrap();
            assert_eq!(claims.identity, "@alice:localhost:DEV");
            assert_eq!(claims.room, "R");
            assert_eq!(claims.matrix_user.as_deref(), Some("@alice:localhost"));
            assert!((claims.not_before - now).abs() <= 5, "{claims:?}");
            assert_eq!(claims.session_key().livekit_room, "R");
        }
    }

    #[test]
    fn anything_but_a_token_with_identity_and_room_is_none() {
        let good = token("s", "R", "me");
        let payload = good.split('.').nth(1).unwrap().to_owned();
        let encode = |json: &str| URL_SAFE_NO_PAD.encode(json);
        for bad in [
            String::new(),
            "garbage".into(),
            "a.b".into(),
            format!("{good}.extra"),
            format!("h.{payload}!.s"),
            format!("h.{}.s", encode("not json")),
            format!("h.{}.s", encode(r#"{"sub":"me","video":{}}"#)),
            format!("h.{}.s", encode(r#"{"video":{"room":"R"}}"#)),
            format!(
                "h.{}.s",
                encode(r#"{"sub":"me","video":{"room":"R"},"nbf":"soon"}"#)
            ),
            format!("h.{}.s", "A".repeat(MAX_TOKEN_BYTES)),
        ] {
            assert_eq!(unverified(&bad), None, "{bad}");
        }
        let minimal = unverified(&format!(
            "h.{}.s",
            encode(r#"{"sub":"me","video":{"room":"R"},"iat":12}"#)
        ))
        .unwrap();
        assert_eq!((minimal.matrix_user, minimal.not_before), (None, 12));
    }
}
