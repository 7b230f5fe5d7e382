//! MSC4195's derivations, as lk-jwt-service computes them, so that Element Call clients and
//! ours land in the same LiveKit room under the same identities.

use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use matrix_sdk::ruma::UserId;
use sha2::{Digest, Sha256};

/// The only MatrixRTC slot this service runs: the room-wide call.
pub const ROOM_SLOT: &str = "m.call#ROOM";

/// The LiveKit room of a Matrix room's room-scoped call, named as lk-jwt-service ≥ 0.4.3 names
/// it so that Element Call clients in the same case land in the same LiveKit room.
pub fn livekit_room_name(room_id: &str) -> String {
    hash_of(&[room_id, ROOM_SLOT])
}

/// `unpaddedBase64(sha256(compact JSON array))`, MSC4195's derivation.
fn hash_of(parts: &[&str]) -> String {
    let json = serde_json::to_string(parts).expect("strings serialise");
    STANDARD_NO_PAD.encode(Sha256::digest(json.as_bytes()))
}

/// The LiveKit identity of a MatrixRTC member as `/get_token` derives it.
pub fn member_identity(user: &UserId, device_id: &str, member_id: &str) -> String {
    hash_of(&[user.as_str(), device_id, member_id])
}

/// The LiveKit identity of a Matrix device in a call: `<user_id>:<device_id>`.
pub fn livekit_identity(user: &UserId, device_id: &str) -> String {
    format!("{user}:{device_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_name_matches_lk_jwt_service() {
        // Vector from lk-jwt-service's documentation of the room-name rule.
        assert_eq!(
            livekit_room_name("!roomid:example.com"),
            "F4oOprKFBq6JHqy2qYpq6UQQmR7hCvxkQQoUrd0+SbI"
        );
    }

    #[test]
    fn member_identity_is_msc4195s_derivation() {
        let user: &UserId = "@alice:localhost".try_into().unwrap();
        // sha256 of ["@alice:localhost","DEV","m1"], unpadded base64, computed independently.
        assert_eq!(
            member_identity(user, "DEV", "m1"),
            "Qy3R17dx0HjiF/Yh1Ub+CPOYXtpsehdZ3DqpBh2SSRg"
        );
    }
}
