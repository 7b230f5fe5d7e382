//! The names and values the components agree on, written once. Control, the gateway and the
//! load tester use these; the page (TypeScript) keeps copies that its unit tests check against
//! the JSON files in `proto/contract/`, which this module is tested against as well.
//!
//! - here: participant attributes, the fallback's stages, the case-room type, the end-of-call
//!   event, the default ladder;
//! - [`identity`]: MSC4195's LiveKit room names and identities, and a device's identity;
//! - [`case_room`]: how a case room is created (its power levels).

pub mod case_room;
pub mod identity;

/// The one participant attribute a gateway may have control set: the audio-only fallback's
/// stage, which the page reads to say why video stopped.
pub const FALLBACK_ATTRIBUTE: &str = "org.koinos.rtc.fallback";

/// The audio-only fallback's stages as [`FALLBACK_ATTRIBUTE`] carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FallbackStage {
    /// No fallback: the attribute is deleted (written as "").
    None,
    /// The video the participant receives is paused.
    IncomingVideo,
    /// …and its camera is paused too.
    Camera,
}

impl FallbackStage {
    pub const ALL: [FallbackStage; 3] = [Self::None, Self::IncomingVideo, Self::Camera];

    /// The attribute's value for this stage.
    pub const fn wire(self) -> &'static str {
        match self {
            Self::None => "",
            Self::IncomingVideo => "incoming_video",
            Self::Camera => "camera",
        }
    }

    /// The stage an attribute value names, if any.
    pub fn from_wire(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|stage| stage.wire() == value)
    }
}

/// Participant attribute naming the Matrix user a LiveKit participant belongs to, in every
/// token control mints (the participant cannot change it: it lacks `canUpdateOwnMetadata`).
pub const MATRIX_USER_ATTRIBUTE: &str = "org.koinos.matrix_user_id";
/// The Matrix device, so a call membership (one per device) can be matched to its participant.
pub const MATRIX_DEVICE_ATTRIBUTE: &str = "org.koinos.matrix_device_id";

/// The room type of a case room (`creation_content.type`): control serves these only.
pub const CASE_ROOM_TYPE: &str = "org.koinos.case";

/// The MatrixRTC call membership state event (MSC3401/MSC4143), as Element Call sends it.
pub const CALL_MEMBER_EVENT: &str = "org.matrix.msc3401.call.member";

/// The gateway's default ladder: `(max participants, max camera lines)`, ascending; the last
/// step applies beyond the table (720p for 2, 540p for 3–4, 360p for 5–6).
pub const DEFAULT_LADDER: [(u32, u32); 3] = [(2, 720), (4, 540), (6, 360)];

/// The timeline event control sends into a case room when a host ends its call for everyone
/// (`{"ended_by": host}`).
pub const CALL_ENDED_EVENT: &str = "org.koinos.call.ended";

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn contract(file: &str) -> serde_json::Value {
        let path = format!("{}/contract/{file}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    #[test]
    fn the_default_ladder_is_the_shared_contract() {
        let ladder = contract("ladder.json");
        let steps: Vec<(u32, u32)> = ladder["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let n = |k: &str| u32::try_from(s[k].as_u64().unwrap()).unwrap();
                (n("max_participants"), n("max_height"))
            })
            .collect();
        assert_eq!(steps, DEFAULT_LADDER);
    }

    #[test]
    fn the_matrix_names_are_the_shared_contract() {
        let matrix = contract("matrix.json");
        let attributes = &matrix["participant_attributes"];
        assert_eq!(attributes["matrix_user"], MATRIX_USER_ATTRIBUTE);
        assert_eq!(attributes["matrix_device"], MATRIX_DEVICE_ATTRIBUTE);
        assert_eq!(matrix["events"]["call_member"], CALL_MEMBER_EVENT);
        assert_eq!(matrix["events"]["call_ended"], CALL_ENDED_EVENT);
    }

    #[test]
    fn the_call_member_event_is_the_one_the_case_room_opens_to_members() {
        let room = contract("case-room.json");
        assert_eq!(room["event_power_levels"][CALL_MEMBER_EVENT], 0);
        assert_eq!(room["type"], CASE_ROOM_TYPE);
    }

    #[test]
    fn the_fallback_attribute_and_its_stages_are_the_shared_contract() {
        let fallback = contract("fallback.json");
        assert_eq!(fallback["attribute"], FALLBACK_ATTRIBUTE);
        let stages = fallback["stages"].as_object().unwrap();
        assert_eq!(stages.len(), FallbackStage::ALL.len());
        for (name, stage) in [
            ("none", FallbackStage::None),
            ("incoming_video", FallbackStage::IncomingVideo),
            ("camera", FallbackStage::Camera),
        ] {
            assert_eq!(stages[name], stage.wire(), "stage {name}");
            assert_eq!(FallbackStage::from_wire(stage.wire()), Some(stage));
        }
        assert_eq!(FallbackStage::from_wire("video"), None);
    }
}
