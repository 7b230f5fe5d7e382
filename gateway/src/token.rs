//! What the gateway reads from a client's ticket before control has looked at it: the gateway
//! holds neither LiveKit's key nor control's ticket key. The claims only register the session
//! as pending (so that a revocation arriving while control decides refuses it) and refuse what
//! cannot be a ticket without bothering control; control verifies the ticket and answers with
//! the session's real identity and room, which must match. A refusal based on a forged claim
//! refuses nobody but the forger.

use std::collections::HashMap;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::Deserialize;

use crate::revocations::SessionKey;

/// The Matrix user a ticket (and a LiveKit participant) belongs to, set by control.
pub use koinos_proto::contract::MATRIX_USER_ATTRIBUTE;

/// Tokens are a few hundred bytes; anything much larger is not one of control's.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// What a ticket claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The LiveKit identity (`sub`).
    pub identity: String,
    /// The LiveKit room (`video.room`).
    pub room: String,
    /// The Matrix user control put in the ticket.
    pub matrix_user: String,
}

impl Claims {
    pub fn session_key(&self) -> SessionKey {
        SessionKey {
            livekit_room: self.room.clone(),
            matrix_user: self.matrix_user.clone(),
        }
    }
}

#[derive(Deserialize)]
struct Payload {
    #[serde(default)]
    sub: String,
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

/// The claims of a JWT's payload, signature unchecked. `None` for anything that is not a ticket
/// naming an identity, a room and a Matrix user (control would refuse it).
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
    let matrix_user = payload.attributes.remove(MATRIX_USER_ATTRIBUTE)?;
    if payload.sub.is_empty() || payload.video.room.is_empty() || matrix_user.is_empty() {
        return None;
    }
    Some(Claims {
        identity: payload.sub,
        room: payload.video.room,
        matrix_user,
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
        // The gateway cannot tell these apart; control can, and refuses the second.
        for secret in ["the-ticket-key", "someone-elses-key"] {
            let claims = unverified(&token(secret, "R", "@alice:localhost:DEV")).unwrap();
            assert_eq!(claims.identity, "@alice:localhost:DEV");
            assert_eq!(claims.room, "R");
            assert_eq!(claims.matrix_user, "@alice:localhost");
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
        // No Matrix user: not one of control's tickets.
        assert_eq!(
            unverified(&format!(
                "h.{}.s",
                encode(r#"{"sub":"me","video":{"room":"R"},"iat":12}"#)
            )),
            None
        );
    }
}
