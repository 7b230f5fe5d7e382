//! LiveKit as control uses it: creating the call's room (LiveKit runs with
//! `room.auto_create: false`, so only control can bring a room into being), counting who is
//! in it, minting access tokens, and the few RoomService calls it makes on a gateway's behalf
//! (the gateway holds no LiveKit credential).

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use livekit_api::{
    access_token::{AccessToken, VideoGrants},
    services::{
        ServerError, ServerErrorCode, ServiceError,
        room::{CreateRoomOptions, RoomClient, UpdateParticipantOptions},
    },
};
pub use livekit_protocol::ParticipantInfo;
use tracing::warn;

use crate::error::ApiError;

/// A participant of a LiveKit room and the Matrix device it belongs to (from the attributes
/// control put in its token).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LiveParticipant {
    pub identity: String,
    pub matrix_user: Option<String>,
    pub matrix_device: Option<String>,
}

impl From<ParticipantInfo> for LiveParticipant {
    fn from(mut info: ParticipantInfo) -> Self {
        Self {
            matrix_user: info.attributes.remove(MATRIX_USER_ATTRIBUTE),
            matrix_device: info.attributes.remove(MATRIX_DEVICE_ATTRIBUTE),
            identity: info.identity,
        }
    }
}

impl LiveParticipant {
    /// Whether this participant is `user`'s `device` (by attributes, or by a
    /// `<user_id>:<device_id>` identity for participants that carry none).
    pub fn is_device(&self, user: &str, device: &str) -> bool {
        match (&self.matrix_user, &self.matrix_device) {
            (Some(u), Some(d)) => u == user && d == device,
            _ => {
                self.identity
                    .strip_prefix(user)
                    .and_then(|rest| rest.strip_prefix(':'))
                    == Some(device)
            }
        }
    }
}

#[async_trait]
pub trait LiveKitRooms: Send + Sync {
    /// Creates the room if it does not exist (LiveKit's CreateRoom is idempotent).
    async fn ensure_room(&self, name: &str, max_participants: u32) -> Result<(), ApiError>;
    /// Deletes the room, disconnecting everyone in it. A room that does not exist is not an error.
    async fn delete_room(&self, name: &str) -> Result<(), ApiError>;
    /// Removes every participant of `user` from the room (by the Matrix user id attribute every
    /// token carries, so hashed Element Call identities are found too). Returns how many.
    async fn remove_user(&self, name: &str, user: &str) -> Result<usize, ApiError>;
    /// Who is in the room now (empty if the room does not exist).
    async fn participants(&self, name: &str) -> Result<Vec<LiveParticipant>, ApiError>;
    /// Who is in the room now, as LiveKit describes them (empty if the room does not exist).
    async fn participant_infos(&self, name: &str) -> Result<Vec<ParticipantInfo>, ApiError>;
    /// Sets one attribute of a participant (an empty value deletes it).
    async fn set_attribute(
        &self,
        name: &str,
        identity: &str,
        key: &str,
        value: &str,
    ) -> Result<(), ApiError>;
    /// Mutes a published track. There is deliberately no way to unmute here.
    async fn mute_track(&self, name: &str, identity: &str, track_sid: &str)
    -> Result<(), ApiError>;
    /// Removes one participant (a participant already gone is not an error).
    async fn remove_participant(&self, name: &str, identity: &str) -> Result<(), ApiError>;
    /// Every room LiveKit has now, with its participant count.
    async fn rooms(&self) -> Result<Vec<(String, u32)>, ApiError>;
    /// Whether LiveKit answers at all (readiness).
    async fn reachable(&self) -> bool;
}

pub struct LiveKitService {
    rooms: Arc<RoomClient>,
    empty_timeout: Duration,
}

impl LiveKitService {
    pub fn new(api_url: &str, api_key: &str, api_secret: &str, empty_timeout: Duration) -> Self {
        Self {
            rooms: Arc::new(RoomClient::with_api_key(api_url, api_key, api_secret)),
            empty_timeout,
        }
    }
}

#[async_trait]
impl LiveKitRooms for LiveKitService {
    async fn ensure_room(&self, name: &str, max_participants: u32) -> Result<(), ApiError> {
        let options = CreateRoomOptions {
            max_participants,
            empty_timeout: self.empty_timeout.as_secs() as u32,
            departure_timeout: 20,
            ..Default::default()
        };
        self.rooms
            .create_room(name, options)
            .await
            .map(|_| ())
            .map_err(|e| {
                warn!(error = %e, "LiveKit CreateRoom failed");
                ApiError::Unavailable
            })
    }

    async fn delete_room(&self, name: &str) -> Result<(), ApiError> {
        match self.rooms.delete_room(name).await {
            Ok(()) => Ok(()),
            Err(ServiceError::Twirp(ServerError::Twirp(code)))
                if code.code == ServerErrorCode::NOT_FOUND =>
            {
                Ok(())
            }
            Err(e) => {
                warn!(error = %e, "LiveKit DeleteRoom failed");
                Err(ApiError::Unavailable)
            }
        }
    }

    async fn remove_user(&self, name: &str, user: &str) -> Result<usize, ApiError> {
        let list = match self.rooms.list_participants(name).await {
            Ok(list) => list,
            Err(ServiceError::Twirp(ServerError::Twirp(code)))
                if code.code == ServerErrorCode::NOT_FOUND =>
            {
                return Ok(0);
            }
            Err(e) => {
                warn!(error = %e, "LiveKit ListParticipants failed");
                return Err(ApiError::Unavailable);
            }
        };
        let mut removed = 0;
        for participant in list {
            let owner = participant
                .attributes
                .get(MATRIX_USER_ATTRIBUTE)
                .map(String::as_str);
            if owner == Some(user) {
                self.remove_participant(name, &participant.identity).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn participants(&self, name: &str) -> Result<Vec<LiveParticipant>, ApiError> {
        Ok(self
            .participant_infos(name)
            .await?
            .into_iter()
            .map(LiveParticipant::from)
            .collect())
    }

    async fn participant_infos(&self, name: &str) -> Result<Vec<ParticipantInfo>, ApiError> {
        match self.rooms.list_participants(name).await {
            Ok(list) => Ok(list),
            Err(ServiceError::Twirp(ServerError::Twirp(code)))
                if code.code == ServerErrorCode::NOT_FOUND =>
            {
                Ok(vec![])
            }
            Err(e) => {
                warn!(error = %e, "LiveKit ListParticipants failed");
                Err(ApiError::Unavailable)
            }
        }
    }

    async fn set_attribute(
        &self,
        name: &str,
        identity: &str,
        key: &str,
        value: &str,
    ) -> Result<(), ApiError> {
        let options = UpdateParticipantOptions {
            attributes: HashMap::from([(key.to_owned(), value.to_owned())]),
            ..Default::default()
        };
        match self.rooms.update_participant(name, identity, options).await {
            Ok(_) => Ok(()),
            Err(ServiceError::Twirp(ServerError::Twirp(code)))
                if code.code == ServerErrorCode::NOT_FOUND =>
            {
                Err(ApiError::NotFound)
            }
            Err(e) => {
                warn!(error = %e, "LiveKit UpdateParticipant failed");
                Err(ApiError::Unavailable)
            }
        }
    }

    async fn mute_track(
        &self,
        name: &str,
        identity: &str,
        track_sid: &str,
    ) -> Result<(), ApiError> {
        // livekit-api unwraps the answer's track, which LiveKit leaves out when the track went
        // away meanwhile: keep that from panicking here.
        let rooms = self.rooms.clone();
        let (room, identity, sid) = (name.to_owned(), identity.to_owned(), track_sid.to_owned());
        let muted = tokio::spawn(async move {
            rooms
                .mute_published_track(&room, &identity, &sid, true)
                .await
        })
        .await;
        match muted {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(ServiceError::Twirp(ServerError::Twirp(code))))
                if code.code == ServerErrorCode::NOT_FOUND =>
            {
                Err(ApiError::NotFound)
            }
            Ok(Err(e)) => {
                warn!(error = %e, "LiveKit MutePublishedTrack failed");
                Err(ApiError::Unavailable)
            }
            Err(_) => Err(ApiError::NotFound),
        }
    }

    async fn remove_participant(&self, name: &str, identity: &str) -> Result<(), ApiError> {
        match self.rooms.remove_participant(name, identity).await {
            Ok(()) => Ok(()),
            Err(ServiceError::Twirp(ServerError::Twirp(code)))
                if code.code == ServerErrorCode::NOT_FOUND =>
            {
                Ok(())
            }
            Err(e) => {
                warn!(error = %e, "LiveKit RemoveParticipant failed");
                Err(ApiError::Unavailable)
            }
        }
    }

    async fn rooms(&self) -> Result<Vec<(String, u32)>, ApiError> {
        let rooms = self.rooms.list_rooms(vec![]).await.map_err(|e| {
            warn!(error = %e, "LiveKit ListRooms failed");
            ApiError::Unavailable
        })?;
        Ok(rooms
            .into_iter()
            .map(|r| (r.name, r.num_participants))
            .collect())
    }

    async fn reachable(&self) -> bool {
        self.rooms.list_rooms(vec![]).await.is_ok()
    }
}

pub use koinos_proto::contract::{MATRIX_DEVICE_ATTRIBUTE, MATRIX_USER_ATTRIBUTE};

/// Signs LiveKit access tokens with the API key LiveKit (and the gateway) know.
#[derive(Clone)]
pub struct TokenMinter {
    api_key: String,
    api_secret: String,
}

impl std::fmt::Debug for TokenMinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenMinter")
            .field("api_key", &self.api_key)
            .finish_non_exhaustive()
    }
}

impl TokenMinter {
    pub fn new(api_key: &str, api_secret: &str) -> Self {
        Self {
            api_key: api_key.to_owned(),
            api_secret: api_secret.to_owned(),
        }
    }

    /// A join-only token for one room: no roomCreate, no roomAdmin, no room listing, no
    /// updating its own metadata or attributes (so nobody can clear the fallback attribute or
    /// claim another Matrix user).
    pub fn participant_token(
        &self,
        room: &str,
        identity: &str,
        matrix_user: &str,
        matrix_device: &str,
        display_name: &str,
        ttl: Duration,
    ) -> Result<String, ApiError> {
        AccessToken::with_api_key(&self.api_key, &self.api_secret)
            .with_identity(identity)
            .with_name(display_name)
            .with_attributes([
                (MATRIX_USER_ATTRIBUTE, matrix_user),
                (MATRIX_DEVICE_ATTRIBUTE, matrix_device),
            ])
            .with_ttl(ttl)
            .with_grants(VideoGrants {
                room_join: true,
                room: room.to_owned(),
                can_publish: Some(true),
                can_subscribe: Some(true),
                can_publish_data: Some(true),
                can_update_own_metadata: Some(false),
                ..Default::default()
            })
            .to_jwt()
            .map_err(|e| {
                warn!(error = %e, "token signing failed");
                ApiError::Internal
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_participant_is_matched_to_its_matrix_device() {
        let tagged = LiveParticipant {
            identity: "hashed-identity".into(),
            matrix_user: Some("@bob:localhost".into()),
            matrix_device: Some("DEV".into()),
        };
        assert!(tagged.is_device("@bob:localhost", "DEV"));
        assert!(!tagged.is_device("@bob:localhost", "OTHER"));
        assert!(!tagged.is_device("@bo:localhost", "DEV"));
        let untagged = LiveParticipant {
            identity: "@bob:localhost:DEV".into(),
            ..Default::default()
        };
        assert!(untagged.is_device("@bob:localhost", "DEV"));
        assert!(!untagged.is_device("@bob:localhost", "DE"));
        assert!(!untagged.is_device("@bob:local", "host:DEV"));
    }
}
