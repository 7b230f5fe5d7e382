//! Continuous enforcement: a practitioner who leaves, is kicked from or banned from a case room
//! loses the call at once, not when their token expires.
//!
//! Concurrency model: the membership sync task (the only reader of the homeserver's membership
//! stream) sends a [`Revocation`] on an unbounded channel for every leave or ban it sees; this
//! module's single task owns the other end. For each revocation it first publishes it on a
//! broadcast channel (the gRPC `WatchRevocations` subscribers, i.e. gateways, which cut the
//! user's signalling at once) and then performs the LiveKit removals in order, so a slow LiveKit
//! call never holds up sync. Revocations are idempotent: replaying one (e.g. the initial sync
//! after a restart) removes nobody who is allowed in. The LiveKit removal is the authority; a
//! gateway that missed a broadcast loses nothing but speed.

use std::{sync::Arc, time::Duration};

use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId};
use tokio::sync::{broadcast, mpsc};
use tracing::{info, warn};

use crate::{livekit::LiveKitRooms, service::livekit_room_name};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub room_id: OwnedRoomId,
    pub user_id: OwnedUserId,
    /// `user_id` is control's own service account: control lost the room (kicked, banned,
    /// left) and can vouch for nobody there any more, so the whole call ends.
    pub whole_room: bool,
    /// Unix milliseconds when control saw the membership change.
    pub revoked_at_ms: i64,
}

/// How many revocations a slow `WatchRevocations` subscriber may fall behind before it is cut
/// off (and must resubscribe).
pub const FEED_CAPACITY: usize = 1024;

/// The broadcast side gRPC subscribers attach to.
pub fn feed() -> broadcast::Sender<Revocation> {
    broadcast::channel(FEED_CAPACITY).0
}

pub fn channel() -> (
    mpsc::UnboundedSender<Revocation>,
    mpsc::UnboundedReceiver<Revocation>,
) {
    mpsc::unbounded_channel()
}

/// Tells subscribers, then removes revoked users' participants from their case room's call,
/// until the channel closes.
pub async fn run(
    mut revocations: mpsc::UnboundedReceiver<Revocation>,
    livekit: Arc<dyn LiveKitRooms>,
    feed: broadcast::Sender<Revocation>,
) {
    while let Some(revocation) = revocations.recv().await {
        // No subscriber is not an error: gateways are optional for enforcement.
        let _ = feed.send(revocation.clone());
        let Revocation {
            room_id,
            user_id,
            whole_room,
            ..
        } = revocation;
        let room = livekit_room_name(room_id.as_str());
        if whole_room {
            end_call_of_lost_room(livekit.as_ref(), &room, &room_id).await;
            continue;
        }
        let mut delay = Duration::from_millis(200);
        for attempt in 1..=5 {
            match livekit.remove_user(&room, user_id.as_str()).await {
                Ok(0) => break,
                Ok(removed) => {
                    info!(%user_id, %room_id, removed, "removed from the call: no longer a member");
                    break;
                }
                Err(e) if attempt < 5 => {
                    warn!(%user_id, %room_id, error = %e, attempt, "revocation failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => warn!(%user_id, %room_id, error = %e, "revocation failed; giving up"),
            }
        }
    }
}

/// Control is no longer in the case room: it cannot see who is a member, so the call ends.
async fn end_call_of_lost_room(livekit: &dyn LiveKitRooms, room: &str, room_id: &OwnedRoomId) {
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=5 {
        match livekit.delete_room(room).await {
            Ok(()) => {
                info!(%room_id, "call ended: control's service account is no longer in the case room");
                return;
            }
            Err(e) => {
                warn!(%room_id, error = %e, attempt, "could not end the call of a lost room");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::error::ApiError;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(String, String)>>, Mutex<Vec<String>>);

    #[async_trait]
    impl LiveKitRooms for Recorder {
        async fn ensure_room(&self, _: &str, _: u32) -> Result<(), ApiError> {
            Ok(())
        }
        async fn delete_room(&self, name: &str) -> Result<(), ApiError> {
            self.1.lock().unwrap().push(name.into());
            Ok(())
        }
        async fn remove_user(&self, name: &str, user: &str) -> Result<usize, ApiError> {
            self.0.lock().unwrap().push((name.into(), user.into()));
            Ok(1)
        }
        async fn participants(
            &self,
            _: &str,
        ) -> Result<Vec<crate::livekit::LiveParticipant>, ApiError> {
            Ok(vec![])
        }
        async fn participant_infos(
            &self,
            _: &str,
        ) -> Result<Vec<crate::livekit::ParticipantInfo>, ApiError> {
            Ok(vec![])
        }
        async fn set_attribute(&self, _: &str, _: &str, _: &str, _: &str) -> Result<(), ApiError> {
            Ok(())
        }
        async fn mute_track(&self, _: &str, _: &str, _: &str) -> Result<(), ApiError> {
            Ok(())
        }
        async fn call_sizes(&self) -> Result<Vec<u32>, ApiError> {
            Ok(vec![])
        }
        async fn reachable(&self) -> bool {
            true
        }
    }

    fn service_user() -> OwnedUserId {
        "@koinos-rtc:localhost".try_into().unwrap()
    }

    #[tokio::test]
    async fn losing_the_room_ends_its_call_for_everyone() {
        let recorder = Arc::new(Recorder::default());
        let (tx, rx) = channel();
        tx.send(Revocation {
            room_id: "!case:localhost".try_into().unwrap(),
            user_id: service_user(),
            revoked_at_ms: 1,
            whole_room: true,
        })
        .unwrap();
        drop(tx);
        run(rx, recorder.clone(), feed()).await;
        assert_eq!(
            *recorder.1.lock().unwrap(),
            vec![livekit_room_name("!case:localhost")]
        );
        assert!(recorder.0.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_revocation_removes_the_user_from_the_rooms_call() {
        let recorder = Arc::new(Recorder::default());
        let (tx, rx) = channel();
        let revocation = Revocation {
            room_id: "!case:localhost".try_into().unwrap(),
            user_id: "@bob:localhost".try_into().unwrap(),
            revoked_at_ms: 1,
            whole_room: false,
        };
        tx.send(revocation.clone()).unwrap();
        drop(tx);
        let feed = feed();
        let mut subscriber = feed.subscribe();
        run(rx, recorder.clone(), feed).await;
        assert_eq!(subscriber.recv().await.unwrap(), revocation);
        assert_eq!(
            *recorder.0.lock().unwrap(),
            vec![(
                livekit_room_name("!case:localhost"),
                "@bob:localhost".to_string()
            )]
        );
    }
}
