//! Call tickets: what control hands a client (`TokenGrant::jwt`) instead of a LiveKit token.
//!
//! A ticket is a JWT shaped like a LiveKit access token — `sub` is the LiveKit identity and
//! `video.room` the LiveKit room, which is all Element Call and livekit-client read from it — but
//! signed with control's ticket key, derived from LiveKit's API secret and never the same as it
//! (HKDF, its own label), and issued by `koinos-rtc`, a key LiveKit does not know. So LiveKit
//! refuses a ticket, and the only way into a call is a gateway, which exchanges the ticket with
//! control (`AdmitSession`) for a LiveKit token minted for that one connection after membership
//! and seats are checked again. A kicked practitioner's saved ticket is worth nothing, and no
//! LiveKit token ever reaches a client (the gateway also keeps LiveKit's `refresh_token` from
//! it, handing over renewed tickets instead).
//!
//! Pure: signing and checking only, with the time passed in.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId};
use ring::{hkdf, hmac};
use serde::{Deserialize, Serialize};

use crate::{
    error::ApiError,
    livekit::{MATRIX_DEVICE_ATTRIBUTE, MATRIX_USER_ATTRIBUTE},
};

/// The issuer every ticket names (LiveKit looks its keys up by issuer and has none by this name).
pub const ISSUER: &str = "koinos-rtc";
/// The ticket format; a ticket of another version is refused.
const VERSION: u32 = 1;
/// How far in the future a ticket's not-before may lie (clock skew between control replicas).
const SKEW_SECS: i64 = 60;

/// What a ticket says, once its signature and expiry are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub room_id: OwnedRoomId,
    pub livekit_room: String,
    pub identity: String,
    pub matrix_user: OwnedUserId,
    pub matrix_device: String,
    /// The display name LiveKit shows (the user's localpart).
    pub name: String,
    /// Unix seconds.
    pub expires_at: i64,
}

#[derive(Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    #[serde(default)]
    name: String,
    nbf: i64,
    exp: i64,
    video: Video,
    attributes: std::collections::BTreeMap<String, String>,
    koinos: Koinos,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Video {
    room: String,
    room_join: bool,
}

#[derive(Serialize, Deserialize)]
struct Koinos {
    v: u32,
    room_id: String,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    typ: String,
}

/// Issues and checks tickets.
pub struct Tickets {
    key: hmac::Key,
    ttl: Duration,
}

impl std::fmt::Debug for Tickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tickets")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Tickets {
    /// The ticket key is derived from LiveKit's API secret (which only control and LiveKit hold),
    /// so that control replicas agree on it without another secret to distribute, and it never
    /// equals the secret LiveKit verifies with.
    pub fn new(livekit_api_secret: &str, ttl: Duration) -> Self {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, ISSUER.as_bytes())
            .extract(livekit_api_secret.as_bytes());
        let okm = prk
            .expand(&[b"call ticket v1"], hmac::HMAC_SHA256)
            .expect("HMAC key length is a valid HKDF output length");
        Self {
            key: hmac::Key::from(okm),
            ttl,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A ticket for `ticket`'s claims (its `expires_at` is ignored), valid from `now` for the
    /// configured lifetime. Returns the ticket and its expiry.
    pub fn issue(&self, ticket: &Ticket, now: i64) -> (String, i64) {
        let expires_at = now + self.ttl.as_secs() as i64;
        let claims = Claims {
            iss: ISSUER.into(),
            sub: ticket.identity.clone(),
            name: ticket.name.clone(),
            nbf: now,
            exp: expires_at,
            video: Video {
                room: ticket.livekit_room.clone(),
                room_join: true,
            },
            attributes: [
                (
                    MATRIX_USER_ATTRIBUTE.to_owned(),
                    ticket.matrix_user.to_string(),
                ),
                (
                    MATRIX_DEVICE_ATTRIBUTE.to_owned(),
                    ticket.matrix_device.clone(),
                ),
            ]
            .into(),
            koinos: Koinos {
                v: VERSION,
                room_id: ticket.room_id.to_string(),
            },
        };
        let header = Header {
            alg: "HS256".into(),
            typ: "JWT".into(),
        };
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).expect("header serialises")),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims serialise"))
        );
        let signature = URL_SAFE_NO_PAD.encode(hmac::sign(&self.key, signed.as_bytes()));
        (format!("{signed}.{signature}"), expires_at)
    }

    /// The ticket's claims if control signed it and it has not expired more than `grace` ago.
    /// Every failure is the same generic `Unauthorized` (the caller learns nothing more).
    pub fn verify(&self, ticket: &str, now: i64, grace: Duration) -> Result<Ticket, ApiError> {
        self.check(ticket, now, grace).ok_or(ApiError::Unauthorized)
    }

    fn check(&self, ticket: &str, now: i64, grace: Duration) -> Option<Ticket> {
        if ticket.len() > 4096 {
            return None;
        }
        let (signed, signature) = ticket.rsplit_once('.')?;
        let (header, payload) = signed.split_once('.')?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        hmac::verify(&self.key, signed.as_bytes(), &signature).ok()?;
        let header: Header = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
        let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        if header.alg != "HS256" || claims.iss != ISSUER || claims.koinos.v != VERSION {
            return None;
        }
        if claims.exp + grace.as_secs() as i64 <= now || claims.nbf > now + SKEW_SECS {
            return None;
        }
        Some(Ticket {
            room_id: claims.koinos.room_id.try_into().ok()?,
            livekit_room: claims.video.room,
            identity: claims.sub,
            matrix_user: claims
                .attributes
                .get(MATRIX_USER_ATTRIBUTE)?
                .as_str()
                .try_into()
                .ok()?,
            matrix_device: claims.attributes.get(MATRIX_DEVICE_ATTRIBUTE)?.clone(),
            name: claims.name,
            expires_at: claims.exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket() -> Ticket {
        Ticket {
            room_id: "!case:localhost".try_into().unwrap(),
            livekit_room: "ROOM".into(),
            identity: "@bob:localhost:DEV".into(),
            matrix_user: "@bob:localhost".try_into().unwrap(),
            matrix_device: "DEV".into(),
            name: "bob".into(),
            expires_at: 0,
        }
    }

    const SECRET: &str = "the-livekit-secret-the-livekit-secret";

    #[test]
    fn a_ticket_round_trips_and_reads_like_a_livekit_token() {
        let tickets = Tickets::new(SECRET, Duration::from_secs(600));
        let (jwt, expires_at) = tickets.issue(&ticket(), 1_000);
        assert_eq!(expires_at, 1_600);
        let back = tickets.verify(&jwt, 1_100, Duration::ZERO).unwrap();
        assert_eq!(
            back,
            Ticket {
                expires_at: 1_600,
                ..ticket()
            }
        );
        // What Element Call and livekit-client read.
        let payload: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(jwt.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(payload["sub"], "@bob:localhost:DEV");
        assert_eq!(payload["video"]["room"], "ROOM");
        assert_eq!(payload["iss"], ISSUER);
    }

    #[test]
    fn livekit_cannot_verify_a_ticket() {
        // The key is not LiveKit's secret: a verifier holding it refuses the ticket.
        let tickets = Tickets::new(SECRET, Duration::from_secs(600));
        let (jwt, _) = tickets.issue(&ticket(), now());
        let livekit = livekit_api::access_token::TokenVerifier::with_api_key(ISSUER, SECRET);
        assert!(livekit.verify(&jwt).is_err());
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    #[test]
    fn expired_tampered_foreign_and_malformed_tickets_are_refused_alike() {
        let tickets = Tickets::new(SECRET, Duration::from_secs(600));
        let (jwt, _) = tickets.issue(&ticket(), 1_000);
        assert_eq!(
            tickets.verify(&jwt, 1_600, Duration::ZERO),
            Err(ApiError::Unauthorized),
            "expired"
        );
        // Renewal accepts a recently expired one.
        assert!(tickets.verify(&jwt, 1_600, Duration::from_secs(60)).is_ok());
        // Not yet valid (beyond clock skew).
        assert!(tickets.verify(&jwt, 900, Duration::ZERO).is_err());

        let other = Tickets::new(
            "another-secret-another-secret-another",
            Duration::from_secs(600),
        );
        assert!(
            other.verify(&jwt, 1_100, Duration::ZERO).is_err(),
            "other key"
        );

        // Another user's name put into the payload under the same signature.
        let mut parts: Vec<String> = jwt.split('.').map(str::to_owned).collect();
        let mut payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
        payload["attributes"][MATRIX_USER_ATTRIBUTE] = "@alice:localhost".into();
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap());
        assert!(
            tickets
                .verify(&parts.join("."), 1_100, Duration::ZERO)
                .is_err()
        );

        // A LiveKit token (LiveKit's own secret) is no ticket.
        let livekit = livekit_api::access_token::AccessToken::with_api_key("devkey", SECRET)
            .with_identity("@bob:localhost:DEV")
            .to_jwt()
            .unwrap();
        assert!(tickets.verify(&livekit, now(), Duration::ZERO).is_err());

        for garbage in ["", "a.b", "a.b.c", "...", &"x".repeat(5000)] {
            assert!(
                tickets.verify(garbage, 1_100, Duration::ZERO).is_err(),
                "{garbage}"
            );
        }
    }
}
