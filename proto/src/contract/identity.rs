//! MSC4195's derivations, as lk-jwt-service computes them, so that Element Call clients and ours
//! land in the same LiveKit room under the same identities; and the identity control gives a
//! Matrix device. Vectors: `proto/contract/identity.json`.

use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use sha2::{Digest, Sha256};

/// The only MatrixRTC slot this service runs: the room-wide call, `<application>#<slot id>` as
/// matrix-js-sdk and Element Call spell it (the slot event's state key, and part of the LiveKit
/// room name). Some MSC4143 revisions write `m.call#room`; state keys are case-sensitive.
pub const ROOM_SLOT: &str = "m.call#ROOM";

/// The LiveKit room of a Matrix room's room-scoped call, named as lk-jwt-service ≥ 0.4.3 names
/// it so that Element Call clients in the same case land in the same LiveKit room.
pub fn livekit_room_name(room_id: &str) -> String {
    hash_of(&[room_id, ROOM_SLOT])
}

/// The LiveKit identity of a MatrixRTC member as `/get_token` derives it.
pub fn member_identity(user_id: &str, device_id: &str, member_id: &str) -> String {
    hash_of(&[user_id, device_id, member_id])
}

/// The LiveKit identity of a Matrix device in a call: `<user_id>:<device_id>`. Display code
/// must not parse it back (a user id contains colons): every token carries the user and device
/// as attributes (`MATRIX_USER_ATTRIBUTE`, `MATRIX_DEVICE_ATTRIBUTE`).
pub fn device_identity(user_id: &str, device_id: &str) -> String {
    format!("{user_id}:{device_id}")
}

/// `unpaddedBase64(sha256(compact JSON array))`, MSC4195's derivation.
fn hash_of(parts: &[&str]) -> String {
    let json = serde_json::to_string(parts).expect("strings serialise");
    STANDARD_NO_PAD.encode(Sha256::digest(json.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::tests::contract;

    fn s<'a>(case: &'a serde_json::Value, key: &str) -> &'a str {
        case[key].as_str().unwrap()
    }

    #[test]
    fn derivations_match_the_contract_vectors() {
        let vectors = contract("identity.json");
        assert_eq!(vectors["room_slot"], ROOM_SLOT);
        for case in vectors["livekit_room_names"].as_array().unwrap() {
            assert_eq!(
                livekit_room_name(s(case, "room_id")),
                s(case, "livekit_room")
            );
        }
        for case in vectors["member_identities"].as_array().unwrap() {
            let got = member_identity(
                s(case, "user_id"),
                s(case, "device_id"),
                s(case, "member_id"),
            );
            assert_eq!(got, s(case, "identity"));
        }
        for case in vectors["device_identities"].as_array().unwrap() {
            assert_eq!(
                device_identity(s(case, "user_id"), s(case, "device_id")),
                s(case, "identity")
            );
        }
    }

    #[test]
    fn the_room_name_hashes_the_compact_json_array() {
        // A quote in the room id must be escaped inside the hashed JSON, not break it.
        assert_ne!(livekit_room_name("!a\":x"), livekit_room_name("!a:x"));
        assert_eq!(livekit_room_name("!r:x").len(), 43);
    }
}
