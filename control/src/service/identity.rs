//! The identities and room names control issues, from the shared contract
//! (`koinos_proto::contract::identity`), for the Matrix types control works with.

use matrix_sdk::ruma::UserId;

pub use koinos_proto::contract::identity::{ROOM_SLOT, livekit_room_name};

/// The LiveKit identity of a MatrixRTC member as `/get_token` derives it (MSC4195).
pub fn member_identity(user: &UserId, device_id: &str, member_id: &str) -> String {
    koinos_proto::contract::identity::member_identity(user.as_str(), device_id, member_id)
}

/// The LiveKit identity of a Matrix device in a call: `<user_id>:<device_id>`.
pub fn livekit_identity(user: &UserId, device_id: &str) -> String {
    koinos_proto::contract::identity::device_identity(user.as_str(), device_id)
}
