//! How a case room is created: its type, preset, power levels and initial state (end-to-end
//! encrypted, its MatrixRTC slot open). The page and the seeding
//! create case rooms too; all three are checked against `proto/contract/case-room.json`.

use serde_json::{Map, Value, json};

use super::{CALL_MEMBER_EVENT, CASE_ROOM_TYPE, identity::ROOM_SLOT};

/// The `createRoom` preset of a case room.
pub const PRESET: &str = "private_chat";

/// The power level of the creator and of control's service account.
pub const ADMIN_POWER_LEVEL: i64 = 100;

/// MSC4143's slot state event, unstable spelling (stable: `m.rtc.slot`).
pub const RTC_SLOT_EVENT: &str = "org.matrix.msc4143.rtc.slot";
/// The slot's encryption: every member draws its own media key (unstable spelling).
pub const RTC_SLOT_PER_MEMBER_ENCRYPTION: &str = "org.matrix.msc4143.per_member";
/// The room encryption algorithm of a case room.
pub const MEGOLM: &str = "m.megolm.v1.aes-sha2";

/// Per-event power levels. The homeserver replaces (not merges) `events` when overriding, so
/// the usual private-room levels are restated; call memberships are open to every member.
pub const EVENT_POWER_LEVELS: [(&str, i64); 11] = [
    ("m.room.name", 50),
    ("m.room.avatar", 50),
    ("m.room.canonical_alias", 50),
    ("m.room.topic", 50),
    ("m.room.power_levels", 100),
    ("m.room.history_visibility", 100),
    ("m.room.tombstone", 100),
    ("m.room.server_acl", 100),
    ("m.room.encryption", 100),
    (CALL_MEMBER_EVENT, 0),
    (RTC_SLOT_EVENT, 100),
];

/// The state a case room is created with: end-to-end encryption, and its call's MatrixRTC slot
/// open with per-member media encryption.
pub fn initial_state() -> Value {
    json!([
        {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": MEGOLM}},
        {
            "type": RTC_SLOT_EVENT,
            "state_key": ROOM_SLOT,
            "content": {
                "status": "open",
                "application": {"type": "m.call"},
                "encryption": {"type": RTC_SLOT_PER_MEMBER_ENCRYPTION},
            },
        },
    ])
}

/// Whether the creators of a room of this version hold their power implicitly (MSC4289, room
/// versions 12 and later): they must then not be listed in the power levels' `users`.
pub fn creators_are_privileged(room_version: &str) -> bool {
    room_version.starts_with("org.matrix.hydra")
        || room_version.parse::<u32>().is_ok_and(|v| v >= 12)
}

/// The `createRoom` body of a case room named `name`, created by `creator` in the homeserver's
/// default `room_version`, with control's `service_account` at admin level and `invite`d.
pub fn create_room_body(
    name: &str,
    creator: &str,
    service_account: &str,
    room_version: &str,
    invite: &[String],
) -> Value {
    let mut users = Map::new();
    users.insert(service_account.to_owned(), json!(ADMIN_POWER_LEVEL));
    if !creators_are_privileged(room_version) {
        users.insert(creator.to_owned(), json!(ADMIN_POWER_LEVEL));
    }
    let events: Map<String, Value> = EVENT_POWER_LEVELS
        .iter()
        .map(|(event, level)| ((*event).to_owned(), json!(level)))
        .collect();
    json!({
        "name": name,
        "preset": PRESET,
        "creation_content": {"type": CASE_ROOM_TYPE},
        "power_level_content_override": {"events": events, "users": users},
        "initial_state": initial_state(),
        "invite": invite,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::tests::contract;

    #[test]
    fn the_template_is_the_shared_contract() {
        let room = contract("case-room.json");
        assert_eq!(room["type"], CASE_ROOM_TYPE);
        assert_eq!(room["preset"], PRESET);
        assert_eq!(room["admin_power_level"], ADMIN_POWER_LEVEL);
        let events = room["event_power_levels"].as_object().unwrap();
        assert_eq!(events.len(), EVENT_POWER_LEVELS.len());
        for (event, level) in EVENT_POWER_LEVELS {
            assert_eq!(events[event], level, "{event}");
        }
        assert_eq!(room["initial_state"], initial_state());
        for case in room["room_versions"].as_array().unwrap() {
            let version = case["version"].as_str().unwrap();
            assert_eq!(
                creators_are_privileged(version),
                case["creators_privileged"].as_bool().unwrap(),
                "room version {version:?}"
            );
        }
    }

    #[test]
    fn the_service_account_is_admin_and_the_creator_only_where_it_may_be_listed() {
        let invite = ["@bob:x".to_owned()];
        let body = create_room_body("Case", "@alice:x", "@koinos-rtc:x", "10", &invite);
        let users = &body["power_level_content_override"]["users"];
        assert_eq!(users["@koinos-rtc:x"], 100);
        assert_eq!(users["@alice:x"], 100);
        assert_eq!(body["invite"], json!(["@bob:x"]));
        assert_eq!(body["creation_content"]["type"], CASE_ROOM_TYPE);
        let v12 = create_room_body("Case", "@alice:x", "@koinos-rtc:x", "12", &invite);
        assert!(
            v12["power_level_content_override"]["users"]
                .get("@alice:x")
                .is_none()
        );
        assert_eq!(
            v12["power_level_content_override"]["users"]["@koinos-rtc:x"],
            100
        );
    }
}
