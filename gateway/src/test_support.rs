//! What the unit tests of several modules build alike.

use livekit_protocol::{ParticipantInfo, TrackInfo, TrackSource, TrackType, participant_info};

/// An active participant publishing one camera.
pub fn person(identity: &str, sid: &str, camera: &str) -> ParticipantInfo {
    ParticipantInfo {
        identity: identity.into(),
        sid: sid.into(),
        state: participant_info::State::Active as i32,
        tracks: vec![TrackInfo {
            sid: camera.into(),
            r#type: TrackType::Video as i32,
            source: TrackSource::Camera as i32,
            ..Default::default()
        }],
        ..Default::default()
    }
}
