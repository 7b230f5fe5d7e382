//! Continuous enforcement: only joined members of a case room are in its call, for the whole
//! call, judged against LiveKit's own view of who is there.
//!
//! Two ways in, one task:
//! - **Revocations.** The membership sync task sends a [`Revocation`] for every leave, kick or
//!   ban it sees. The task publishes it on a broadcast channel first (gateways subscribed to
//!   `WatchRevocations` cut the user's signalling at once, including sessions still being
//!   admitted), then removes that user's LiveKit participants from the call.
//! - **Reconciliation** (MSC4195's advice to self-hosters, since open-source LiveKit cannot
//!   revoke a token): every `interval`, and at once when LiveKit reports `participant_joined`,
//!   every LiveKit room is judged. A room that belongs to no case room control is in (a room
//!   nobody should have, or a case control lost) is deleted. A participant whose Matrix user is
//!   not joined to the case, or who carries no Matrix user at all (no token control minted), is
//!   removed, and the removal is published like a revocation. So whatever path someone found
//!   into LiveKit — a token minted in a race with a kick, a gateway that missed a revocation, a
//!   direct connection — they are out within one interval.
//!
//! Unknown is never a reason to act: while the membership state is stale (homeserver down) or
//! LiveKit cannot be listed, nothing is removed (new joins are refused instead, elsewhere).
//!
//! Concurrency model: this module's single task owns both inputs; revocations go first. LiveKit
//! calls are made in order from this task, so a slow LiveKit delays enforcement but never the
//! membership sync, which only sends on an unbounded channel.

use std::{collections::HashMap, sync::Arc, time::Duration};

use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId};
use tokio::sync::{broadcast, mpsc};
use tracing::{info, warn};

use crate::{
    livekit::LiveKitRooms,
    service::{RtcService, livekit_room_name},
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The call's LiveKit room.
    pub livekit_room: String,
    /// The case room, when there is one.
    pub room_id: Option<OwnedRoomId>,
    /// `None`: everyone in the call (control lost the case room, or the LiveKit room belongs to
    /// no case), so the whole call ends.
    pub user_id: Option<OwnedUserId>,
    /// Unix milliseconds when control saw the membership change.
    pub revoked_at_ms: i64,
}

impl Revocation {
    /// `user` is no longer joined to `room_id` (`whole_room`: `user` is control's own account,
    /// which lost the room).
    pub fn of_member(room_id: &OwnedRoomId, user: OwnedUserId, whole_room: bool) -> Self {
        Self {
            livekit_room: livekit_room_name(room_id.as_str()),
            room_id: Some(room_id.clone()),
            user_id: (!whole_room).then_some(user),
            revoked_at_ms: now_ms(),
        }
    }
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

/// LiveKit said someone joined: judge the calls now rather than at the next tick.
#[derive(Debug, Clone, Copy)]
pub struct Hint;

pub fn hints() -> (mpsc::Sender<Hint>, mpsc::Receiver<Hint>) {
    // A hint only means "look now"; one pending is as good as many.
    mpsc::channel(1)
}

/// Runs until the revocation channel closes.
pub async fn run(
    service: Arc<RtcService>,
    mut revocations: mpsc::UnboundedReceiver<Revocation>,
    mut hints: mpsc::Receiver<Hint>,
    feed: broadcast::Sender<Revocation>,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            revocation = revocations.recv() => match revocation {
                Some(revocation) => revoke(service.livekit.as_ref(), &feed, revocation).await,
                None => return,
            },
            _ = hints.recv() => reconcile(&service, &feed).await,
            _ = tick.tick() => reconcile(&service, &feed).await,
        }
    }
}

/// Tells subscribers, then removes the revoked user's participants (or the whole call).
async fn revoke(
    livekit: &dyn LiveKitRooms,
    feed: &broadcast::Sender<Revocation>,
    revocation: Revocation,
) {
    // No subscriber is not an error: gateways are optional for enforcement.
    let _ = feed.send(revocation.clone());
    let room = &revocation.livekit_room;
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=5 {
        let done = match &revocation.user_id {
            None => livekit.delete_room(room).await.map(|()| {
                info!(room_id = ?revocation.room_id, "call ended: control can vouch for nobody in it");
            }),
            Some(user) => livekit.remove_user(room, user.as_str()).await.map(|removed| {
                if removed > 0 {
                    info!(%user, room_id = ?revocation.room_id, removed, "removed from the call: no longer a member");
                }
            }),
        };
        match done {
            Ok(()) => return,
            Err(e) if attempt < 5 => {
                warn!(%room, error = %e, attempt, "revocation failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            // Reconciliation tries again at its next tick.
            Err(e) => warn!(%room, error = %e, "revocation failed; giving up"),
        }
    }
}

/// Judges every LiveKit room against the membership state (see the module doc).
async fn reconcile(service: &RtcService, feed: &broadcast::Sender<Revocation>) {
    let Some(case_rooms) = service.membership.case_rooms() else {
        return;
    };
    let cases: HashMap<String, OwnedRoomId> = case_rooms
        .into_iter()
        .map(|room_id| (livekit_room_name(room_id.as_str()), room_id))
        .collect();
    let Ok(rooms) = service.livekit.rooms().await else {
        return;
    };
    for (name, _) in rooms {
        let Some(room_id) = cases.get(&name) else {
            warn!(livekit_room = %name, "a LiveKit room of no case room control is in: deleting it");
            if service.livekit.delete_room(&name).await.is_ok() {
                service.metrics.enforced("room_deleted_no_case");
                let _ = feed.send(Revocation {
                    livekit_room: name.clone(),
                    room_id: None,
                    user_id: None,
                    revoked_at_ms: now_ms(),
                });
            }
            continue;
        };
        let Ok(participants) = service.livekit.participants(&name).await else {
            continue;
        };
        service.seats.observed(&name, &participants);
        for participant in participants {
            let user = participant
                .matrix_user
                .as_deref()
                .and_then(|u| OwnedUserId::try_from(u).ok());
            let action = match &user {
                None => "removed_no_matrix_user",
                Some(user) => match service.membership.is_joined(room_id, user).await {
                    Ok(true) => continue,
                    Ok(false) => "removed_not_member",
                    // Unknown now: judged again at the next tick.
                    Err(_) => continue,
                },
            };
            warn!(%room_id, identity = %participant.identity, user = ?user, action,
                "a participant who is not a joined member is in the call: removing");
            if service
                .livekit
                .remove_participant(&name, &participant.identity)
                .await
                .is_ok()
            {
                service.metrics.enforced(action);
                if let Some(user) = user {
                    let _ = feed.send(Revocation::of_member(room_id, user, false));
                }
            }
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        livekit::ParticipantInfo,
        testing::{FakeLiveKit, fake_service},
    };

    fn case() -> OwnedRoomId {
        "!case:localhost".try_into().unwrap()
    }

    fn user(name: &str) -> OwnedUserId {
        format!("@{name}:localhost").try_into().unwrap()
    }

    fn member_of(identity: &str, user: Option<&str>) -> ParticipantInfo {
        let mut info = ParticipantInfo {
            identity: identity.into(),
            ..Default::default()
        };
        if let Some(user) = user {
            info.attributes
                .insert(crate::livekit::MATRIX_USER_ATTRIBUTE.into(), user.into());
        }
        info
    }

    #[tokio::test]
    async fn losing_the_room_ends_its_call_for_everyone() {
        let livekit = Arc::new(FakeLiveKit::default());
        let feed = feed();
        let mut subscriber = feed.subscribe();
        let revocation = Revocation::of_member(&case(), user("koinos-rtc"), true);
        revoke(livekit.as_ref(), &feed, revocation.clone()).await;
        assert_eq!(subscriber.recv().await.unwrap(), revocation);
        assert_eq!(revocation.user_id, None);
        assert_eq!(
            *livekit.deleted.lock().unwrap(),
            vec![livekit_room_name("!case:localhost")]
        );
    }

    #[tokio::test]
    async fn a_revocation_is_published_then_removes_the_user() {
        let livekit = Arc::new(FakeLiveKit::default());
        let feed = feed();
        let mut subscriber = feed.subscribe();
        let revocation = Revocation::of_member(&case(), user("bob"), false);
        revoke(livekit.as_ref(), &feed, revocation.clone()).await;
        assert_eq!(subscriber.recv().await.unwrap(), revocation);
        assert_eq!(
            *livekit.removed_users.lock().unwrap(),
            vec![(
                livekit_room_name("!case:localhost"),
                "@bob:localhost".to_string()
            )]
        );
    }

    #[tokio::test]
    async fn reconciliation_removes_non_members_and_strangers_and_deletes_rooms_of_no_case() {
        let livekit = Arc::new(FakeLiveKit::default());
        let call = livekit_room_name("!case:localhost");
        livekit.rooms.lock().unwrap().insert(
            call.clone(),
            vec![
                // The fake homeserver: only alice is joined to !case.
                member_of("@alice:localhost:A", Some("@alice:localhost")),
                member_of("@mallory:localhost:M", Some("@mallory:localhost")),
                member_of("direct-token", None),
            ],
        );
        livekit
            .rooms
            .lock()
            .unwrap()
            .insert("mallorys-own-room".into(), vec![]);
        let service = fake_service(livekit.clone());
        let feed = feed();
        let mut subscriber = feed.subscribe();
        reconcile(&service, &feed).await;
        assert_eq!(
            *livekit.removed.lock().unwrap(),
            vec![
                (call.clone(), "@mallory:localhost:M".to_string()),
                (call.clone(), "direct-token".to_string()),
            ]
        );
        assert_eq!(*livekit.deleted.lock().unwrap(), vec!["mallorys-own-room"]);
        // Gateways hear of the removed member and of the deleted room.
        let heard: Vec<Revocation> = vec![
            subscriber.recv().await.unwrap(),
            subscriber.recv().await.unwrap(),
        ];
        assert!(
            heard
                .iter()
                .any(|r| r.user_id == Some(user("mallory")) && r.livekit_room == call)
        );
        assert!(
            heard
                .iter()
                .any(|r| r.user_id.is_none() && r.livekit_room == "mallorys-own-room")
        );
        let text = service.render_metrics().await;
        for action in [
            "removed_not_member",
            "removed_no_matrix_user",
            "room_deleted_no_case",
        ] {
            assert!(
                text.contains(&format!(
                    "koinos_control_enforcement_actions_total{{action=\"{action}\"}} 1"
                )),
                "{action}: {text}"
            );
        }
    }

    #[tokio::test]
    async fn nothing_is_removed_while_membership_is_unknown() {
        let livekit = Arc::new(FakeLiveKit::default());
        livekit.rooms.lock().unwrap().insert(
            livekit_room_name("!case:localhost"),
            vec![member_of(
                "@mallory:localhost:M",
                Some("@mallory:localhost"),
            )],
        );
        livekit.rooms.lock().unwrap().insert("other".into(), vec![]);
        let mut service = fake_service(livekit.clone());
        service.membership = Arc::new(crate::testing::StaleMembership);
        reconcile(&service, &feed()).await;
        assert!(livekit.removed.lock().unwrap().is_empty());
        assert!(livekit.deleted.lock().unwrap().is_empty());
    }
}
