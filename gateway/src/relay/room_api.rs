//! What a session asks of LiveKit's RoomService, and the per-session task that asks it.

use super::*;

/// What a session asks of LiveKit's RoomService about its own room, behind a trait so the
/// relay is testable without LiveKit. The gateway holds no LiveKit credential: the real one
/// asks control, which makes the call ([`crate::control::ControlRoom`]).
#[async_trait::async_trait]
pub trait RoomApi: Send + Sync {
    /// Who is in the room now (`ListParticipants`).
    async fn participants(&self) -> anyhow::Result<Vec<livekit_protocol::ParticipantInfo>>;
    /// Sets one attribute of a participant (`UpdateParticipant`; empty deletes it).
    async fn set_attribute(&self, identity: &str, key: &str, value: &str) -> anyhow::Result<()>;
    /// `MutePublishedTrack` (control only ever mutes).
    async fn mute_track(&self, identity: &str, track_sid: &str, muted: bool) -> anyhow::Result<()>;
}

/// A RoomService request of the fallback, carried out in order by [`room_admin`].
#[derive(Debug)]
pub(super) enum AdminRequest {
    Stage(Stage),
    MuteCamera(String),
}

/// The per-session task that carries out RoomService requests one after another.
pub(super) async fn room_admin(
    room: Arc<dyn RoomApi>,
    identity: String,
    mut requests: mpsc::UnboundedReceiver<AdminRequest>,
) {
    while let Some(request) = requests.recv().await {
        let result = match &request {
            AdminRequest::Stage(stage) => {
                room.set_attribute(&identity, fallback::ATTRIBUTE, stage.attribute())
                    .await
            }
            AdminRequest::MuteCamera(sid) => room.mute_track(&identity, sid, true).await,
        };
        match result {
            Ok(()) => debug!(?request, "RoomService request done"),
            Err(e) => warn!(?request, error = %e, "RoomService request failed"),
        }
    }
}
