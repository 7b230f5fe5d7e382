//! Who is joined to which case room, as control's service account sees it through matrix-sdk.
//!
//! Concurrency model: one task — [`MatrixMembership::run_sync`] — owns the matrix-sdk sync loop
//! and is the only writer of the client's in-memory room state; request handlers only read it
//! (`Client::get_room`, `Room::get_member_no_sync`), which matrix-sdk makes safe to do
//! concurrently. The sync task also records when it last synced successfully; readers treat
//! state older than `max_sync_staleness` as unknown and refuse (fail closed).
//!
//! A negative answer from the synced state is confirmed with the homeserver before it is given:
//! a practitioner who joined a case a moment ago must not be refused because control's sync has
//! not caught up yet. Positive answers are served from memory, so revocations are as fresh as
//! the sync stream (the homeserver pushes membership changes to the long-poll at once).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use matrix_sdk::{
    Client, Room, RoomState,
    config::{RequestConfig, SyncSettings},
    deserialized_responses::RawAnySyncOrStrippedState,
    ruma::{
        OwnedRoomId, OwnedUserId, RoomId, UserId,
        api::client::state::{get_state_event_for_key, get_state_events},
        events::{
            StateEventType,
            room::member::{MembershipState, StrippedRoomMemberEvent, SyncRoomMemberEvent},
        },
    },
};
use tracing::{debug, info, warn};

use crate::{
    enforcement::Revocation,
    error::ApiError,
    metrics::{ForgedCounter, ForgedLabels},
};

/// The membership authority as the service layer sees it.
#[async_trait]
pub trait MembershipOracle: Send + Sync {
    /// `Ok(true)` only if `user` is joined to `room` now. `Err(Unavailable)` when control
    /// cannot know (callers must treat that as a refusal).
    async fn is_joined(&self, room: &RoomId, user: &UserId) -> Result<bool, ApiError>;
    /// True once the membership state is known and fresh.
    fn is_ready(&self) -> bool;
    /// Time since the last successful sync (`None` before the first).
    fn sync_age(&self) -> Option<Duration>;
    /// Whether `user` may end the room's call for everyone: a power level at least the room's
    /// kick level (creators of room version 12+ rooms have unlimited power).
    async fn is_host(&self, room: &RoomId, user: &UserId) -> Result<bool, ApiError>;
    /// Ends the room's call for everyone on the homeserver, the durable record of it: first an
    /// [`CALL_ENDED_EVENT`] naming `host` (so that pages can tell the end of the call from the
    /// removal of one device, even while the media server is away and cannot tell them), then
    /// an empty call membership (`{}`) over every live one, as control's service account.
    /// Returns how many memberships were cleared.
    async fn end_call(&self, room: &RoomId, host: &UserId) -> Result<usize, ApiError>;
    /// Every live call membership in the case rooms control is joined to, from the synced
    /// state (no homeserver request). Empty while the state is not fresh.
    async fn live_call_memberships(&self) -> Vec<CallMembership>;
    /// Clears one membership if, on the homeserver, it is still exactly `membership.event_id`
    /// (so a client that has just rejoined is not cleared). Returns whether it was cleared.
    async fn clear_call_membership(&self, membership: &CallMembership) -> Result<bool, ApiError>;
    /// The case rooms control is joined to now; `None` while the state is not fresh (control
    /// cannot tell, so nothing may be concluded from absence).
    fn case_rooms(&self) -> Option<Vec<OwnedRoomId>>;
}

/// A live MatrixRTC call membership: one device of one user in a room's call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallMembership {
    pub room_id: OwnedRoomId,
    pub state_key: String,
    pub event_id: String,
    /// The sender (the member; only they or a room admin can write the state key).
    pub user_id: OwnedUserId,
    pub device_id: String,
    /// The `livekit_service_url`s of `foci_preferred`: which JWT service (and so which
    /// LiveKit) the member's client uses.
    pub service_urls: Vec<String>,
}

impl CallMembership {
    /// Parses a state event; `None` unless it is a live (non-empty) call membership.
    pub fn from_state_event(room_id: &RoomId, event: &serde_json::Value) -> Option<Self> {
        if event["type"] != CALL_MEMBER_EVENT {
            return None;
        }
        let content = event["content"].as_object().filter(|c| !c.is_empty())?;
        let sender: OwnedUserId = event["sender"].as_str()?.try_into().ok()?;
        let state_key = event["state_key"].as_str()?;
        if state_key_owner(state_key).is_some_and(|owner| owner != sender) {
            // Written into someone else's slot: not believed (see `forged_membership`).
            return None;
        }
        let service_urls = content
            .get("foci_preferred")
            .and_then(|f| f.as_array())
            .into_iter()
            .flatten()
            .filter_map(|focus| focus["livekit_service_url"].as_str().map(str::to_owned))
            .collect();
        Some(Self {
            room_id: room_id.to_owned(),
            state_key: state_key.to_owned(),
            event_id: event["event_id"].as_str()?.to_owned(),
            user_id: sender,
            device_id: content.get("device_id")?.as_str()?.to_owned(),
            service_urls,
        })
    }
}

/// How control's Matrix client asks the homeserver. By default matrix-sdk retries a request
/// the homeserver answers with a 5xx or a 429 by itself, with growing waits, for up to 15
/// minutes, and control would neither see nor log the failure meanwhile: a token request
/// needing the homeserver's word would hang instead of being refused, the sync loop would not
/// back off or become "not ready", and a state read while judging a LiveKit room would hold up
/// every removal behind it. Here a request is tried twice (matrix-sdk's `retry_limit` counts
/// attempts; the second after the homeserver's own `retry_after` on a 429, else after 0.5 s, and
/// never more than 5 s later), each for at most 10 s (a sync's long-poll is added to that);
/// then the failure is control's to handle: refuse (fail closed), log, back off.
fn homeserver_requests() -> RequestConfig {
    RequestConfig::new()
        .timeout(Duration::from_secs(10))
        .retry_limit(2)
        .max_retry_time(Duration::from_secs(5))
}

/// The MatrixRTC call membership state event (Element Call "compatibility" mode).
pub use koinos_proto::contract::CALL_MEMBER_EVENT;

/// The room type of a case room, and the event a host's end of the call is recorded as (believed
/// by the page only from a sender who may remove members).
pub use koinos_proto::contract::{CALL_ENDED_EVENT, CASE_ROOM_TYPE};

/// The user whose slot a call membership's state key names, in the spellings MatrixRTC clients
/// use: `_@user:server_DEVICE_m.call` (matrix-js-sdk, Element Call), `@user:server_DEVICE` and
/// `@user:server` (older ones). `None` for a key that names no user.
///
/// Room versions without MSC3757 (owned state keys) let any member with the event's power level
/// write any state key, so who wrote an event (its sender) and whose slot it is can differ:
/// MatrixRTC clients attribute a membership to its sender, so a member can erase a colleague's
/// membership (`{}`) or put a fake one in their slot. A membership whose sender is not the
/// slot's owner is not believed here (nor by the page), and control clears a fake one.
pub fn state_key_owner(state_key: &str) -> Option<OwnedUserId> {
    let key = state_key.strip_prefix('_').unwrap_or(state_key);
    let rest = key.strip_prefix('@')?;
    // A localpart has no ':'; a server name has no '_' (hostname, IP literal, port).
    let (localpart, after) = rest.split_once(':')?;
    // Nobody's slot (ruma would accept an empty localpart; no homeserver has such a user).
    if localpart.is_empty() {
        return None;
    }
    let server = after.split('_').next()?;
    OwnedUserId::try_from(format!("@{localpart}:{server}")).ok()
}

/// What control does about a call membership event in a case room, decided from the event
/// alone: nothing, or it was written by someone other than the slot's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForgedMembership {
    /// A live membership put into someone else's slot: control clears it (`{}`).
    Clear { state_key: String },
    /// Someone else's membership erased: nothing to clear, and restoring it as control would
    /// put control's name on it in every MatrixRTC client (they attribute a membership to its
    /// sender). The owner's client notices its membership is gone and sends it again
    /// (matrix-js-sdk: "Missing own membership: force re-join"); the page ignores the forged
    /// leave meanwhile.
    ErasedOthers { state_key: String },
}

/// Judges one state event of a case room (`control` is control's own account, whose clears are
/// not forgeries).
pub fn forged_membership(event: &serde_json::Value, control: &UserId) -> Option<ForgedMembership> {
    if event["type"] != CALL_MEMBER_EVENT {
        return None;
    }
    let state_key = event["state_key"].as_str()?;
    let sender = event["sender"].as_str()?;
    let owner = state_key_owner(state_key)?;
    if owner.as_str() == sender || control.as_str() == sender {
        return None;
    }
    let live = event["content"].as_object().is_some_and(|c| !c.is_empty());
    let state_key = state_key.to_owned();
    Some(if live {
        ForgedMembership::Clear { state_key }
    } else {
        ForgedMembership::ErasedOthers { state_key }
    })
}

pub struct MatrixMembership {
    client: Client,
    server_name: String,
    max_staleness: Duration,
    /// Milliseconds since the epoch of the last successful sync (0: never).
    last_sync_ms: AtomicU64,
    synced_once: AtomicBool,
}

impl MatrixMembership {
    /// Logs the service account in (reusing one device id across restarts).
    pub async fn login(
        homeserver_url: &str,
        server_name: &str,
        user: &str,
        password: &str,
        device_id: &str,
        max_staleness: Duration,
    ) -> anyhow::Result<Arc<Self>> {
        let client = Client::builder()
            .homeserver_url(homeserver_url)
            .request_config(homeserver_requests())
            .build()
            .await?;
        client
            .matrix_auth()
            .login_username(user, password)
            .device_id(device_id)
            .initial_device_display_name("koinos-rtc control plane")
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("service account login as {user} failed: {e}"))?;
        info!(user_id = ?client.user_id(), "service account logged in");
        Ok(Arc::new(Self {
            client,
            server_name: server_name.to_owned(),
            max_staleness,
            last_sync_ms: AtomicU64::new(0),
            synced_once: AtomicBool::new(false),
        }))
    }

    /// The sync loop: the only writer of membership state. Runs until the process ends,
    /// backing off on errors (and so becoming "not ready" once the state is stale). Every leave,
    /// kick or ban it sees in a case room is sent to `revocations` (see `enforcement.rs`);
    /// forged call memberships are counted in `forged` (see [`forged_membership`]).
    pub async fn run_sync(
        self: Arc<Self>,
        revocations: tokio::sync::mpsc::UnboundedSender<Revocation>,
        forged: ForgedCounter,
    ) {
        self.client.add_event_handler(
            move |ev: SyncRoomMemberEvent, room: Room, client: Client| {
                let revocations = revocations.clone();
                async move {
                    if matches!(
                        ev.membership(),
                        MembershipState::Leave | MembershipState::Ban
                    ) {
                        let _ = revocations.send(Revocation::of_member(
                            &room.room_id().to_owned(),
                            ev.state_key().to_owned(),
                            client.user_id() == Some(ev.state_key()),
                        ));
                    }
                }
            },
        );
        let server_name = self.server_name.clone();
        // Accept invites to case rooms from users of our own homeserver: that is how a new
        // case room gets control into it. Any other room is declined: an ordinary account of
        // the homeserver must not be able to provision itself video rooms and TURN relays by
        // inviting control.
        self.client.add_event_handler(
            move |ev: StrippedRoomMemberEvent, room: Room, client: Client| {
                let server_name = server_name.clone();
                async move {
                    if Some(ev.state_key.as_ref()) != client.user_id()
                        || ev.content.membership != MembershipState::Invite
                    {
                        return;
                    }
                    let room_id = room.room_id().to_owned();
                    if ev.sender.server_name().as_str() != server_name {
                        warn!(%room_id, sender = %ev.sender, "declining invite from another homeserver");
                        decline(&room).await;
                        return;
                    }
                    if !is_case(&room) {
                        warn!(%room_id, inviter = %ev.sender, "declining invite to a room that is not a case room");
                        decline(&room).await;
                        return;
                    }
                    // A join the homeserver fails now is tried again (the invite is seen once,
                    // and without control in it a case room's calls would all be refused),
                    // beside the sync: event handlers run inside it, and must not hold it up.
                    let inviter = ev.sender.clone();
                    tokio::spawn(async move {
                        let mut wait = Duration::from_secs(2);
                        loop {
                            match room.join().await {
                                Ok(()) => {
                                    info!(%room_id, %inviter, "joined case room on invite");
                                    return;
                                }
                                Err(e) if wait <= Duration::from_secs(64) => {
                                    warn!(%room_id, error = %e, retry_in = ?wait, "could not accept invite");
                                    tokio::time::sleep(wait).await;
                                    wait *= 2;
                                }
                                Err(e) => {
                                    warn!(%room_id, error = %e, "could not accept invite; given up until control restarts");
                                    return;
                                }
                            }
                        }
                    });
                }
            },
        );

        let mut settings = SyncSettings::default().timeout(Duration::from_secs(30));
        let mut backoff = Duration::from_secs(1);
        loop {
            match self.client.sync_once(settings.clone()).await {
                Ok(response) => {
                    settings = settings.token(response.next_batch.clone());
                    self.last_sync_ms.store(now_ms(), Ordering::Release);
                    if !self.synced_once.swap(true, Ordering::AcqRel) {
                        info!(
                            rooms = self.client.joined_rooms().len(),
                            "membership state synced"
                        );
                    }
                    self.police(&response, &forged);
                    backoff = Duration::from_secs(1);
                }
                Err(e) => {
                    warn!(error = %e, retry_in = ?backoff, "homeserver sync failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// What one sync brought that control must act on: rooms that are not case rooms are left
    /// (joined before control served case rooms only, or joined by hand), and call memberships
    /// written into someone else's slot are cleared. The homeserver requests run beside the
    /// sync loop, which never waits for them.
    fn police(&self, response: &matrix_sdk::sync::SyncResponse, forged: &ForgedCounter) {
        let Some(me) = self.client.user_id().map(ToOwned::to_owned) else {
            return;
        };
        for (room_id, update) in &response.rooms.joined {
            let Some(room) = self.client.get_room(room_id) else {
                continue;
            };
            if !is_case(&room) {
                if room.state() == RoomState::Joined {
                    warn!(%room_id, "leaving a room that is not a case room");
                    tokio::spawn(async move { decline(&room).await });
                }
                continue;
            }
            let state = match &update.state {
                matrix_sdk::sync::State::Before(events)
                | matrix_sdk::sync::State::After(events) => {
                    events.iter().map(|e| e.json().get()).collect::<Vec<_>>()
                }
            };
            let timeline = update.timeline.events.iter().map(|e| e.raw().json().get());
            for raw in state.into_iter().chain(timeline) {
                let Ok(event) = serde_json::from_str::<serde_json::Value>(raw) else {
                    continue;
                };
                let Some(verdict) = forged_membership(&event, &me) else {
                    continue;
                };
                let sender = event["sender"].as_str().unwrap_or_default().to_owned();
                match verdict {
                    ForgedMembership::Clear { state_key } => {
                        forged
                            .get_or_create(&ForgedLabels { action: "cleared" })
                            .inc();
                        warn!(%room_id, %sender, %state_key,
                            "a call membership was written into someone else's slot; clearing it");
                        let room = room.clone();
                        tokio::spawn(async move {
                            if clear_if_current(&room, &state_key, &event).await.is_err() {
                                warn!(room_id = %room.room_id(), %state_key, "could not clear a forged call membership");
                            }
                        });
                    }
                    ForgedMembership::ErasedOthers { state_key } => {
                        forged
                            .get_or_create(&ForgedLabels {
                                action: "erased_others",
                            })
                            .inc();
                        warn!(%room_id, %sender, %state_key,
                            "someone else's call membership was erased; not believed (its owner's client sends it again)");
                    }
                }
            }
        }
    }

    fn is_fresh(&self) -> bool {
        let last = self.last_sync_ms.load(Ordering::Acquire);
        last != 0 && now_ms().saturating_sub(last) <= self.max_staleness.as_millis() as u64
    }

    /// Asks the homeserver directly for `user`'s membership event in `room`.
    async fn membership_from_homeserver(
        &self,
        room: &RoomId,
        user: &UserId,
    ) -> Result<Option<String>, ApiError> {
        let request = get_state_event_for_key::v3::Request::new(
            room.to_owned(),
            StateEventType::RoomMember,
            user.to_string(),
        );
        let started = Instant::now();
        match self.client.send(request).await {
            Ok(response) => {
                debug!(elapsed = ?started.elapsed(), "membership confirmed with homeserver");
                let content: serde_json::Value =
                    serde_json::from_str(response.event_or_content.get()).map_err(|e| {
                        warn!(error = %e, "homeserver returned a malformed member event");
                        ApiError::Unavailable
                    })?;
                Ok(content
                    .get("membership")
                    .and_then(|m| m.as_str())
                    .map(str::to_owned))
            }
            Err(e) => match e.as_client_api_error().map(|api| api.status_code.as_u16()) {
                // No member event, or the service account cannot see the room: not a member.
                Some(403 | 404) => Ok(None),
                _ => {
                    warn!(error = %e, "cannot confirm membership with the homeserver");
                    Err(ApiError::Unavailable)
                }
            },
        }
    }
}

impl MatrixMembership {
    /// A joined room and its full current state, read from the homeserver.
    async fn room_state_from_homeserver(
        &self,
        room_id: &RoomId,
    ) -> Result<(Room, Vec<serde_json::Value>), ApiError> {
        let room = self.client.get_room(room_id).ok_or(ApiError::Forbidden)?;
        let state = self
            .client
            .send(get_state_events::v3::Request::new(room_id.to_owned()))
            .await
            .map_err(|e| {
                warn!(error = %e, %room_id, "cannot read room state");
                ApiError::Unavailable
            })?;
        let events = state
            .room_state
            .iter()
            .filter_map(|raw| serde_json::from_str(raw.json().get()).ok())
            .collect();
        Ok((room, events))
    }
}

#[async_trait]
impl MembershipOracle for MatrixMembership {
    async fn is_joined(&self, room_id: &RoomId, user: &UserId) -> Result<bool, ApiError> {
        if !self.is_fresh() {
            return Err(ApiError::Unavailable);
        }
        // Control must itself be in the room to know its membership; a room it is not in is
        // answered like any room the caller is not in.
        let Some(room) = self.client.get_room(room_id) else {
            return Ok(false);
        };
        // Case rooms only: any other room is answered like a room the caller is not in.
        if room.state() != RoomState::Joined || !is_case(&room) {
            return Ok(false);
        }
        let member = room.get_member_no_sync(user).await.map_err(|e| {
            warn!(error = %e, "membership store read failed");
            ApiError::Internal
        })?;
        if member.is_some_and(|m| *m.membership() == MembershipState::Join) {
            return Ok(true);
        }
        Ok(self
            .membership_from_homeserver(room_id, user)
            .await?
            .as_deref()
            == Some("join"))
    }

    fn is_ready(&self) -> bool {
        self.synced_once.load(Ordering::Acquire) && self.is_fresh()
    }

    fn sync_age(&self) -> Option<Duration> {
        match self.last_sync_ms.load(Ordering::Acquire) {
            0 => None,
            last => Some(Duration::from_millis(now_ms().saturating_sub(last))),
        }
    }

    async fn is_host(&self, room_id: &RoomId, user: &UserId) -> Result<bool, ApiError> {
        if !self.is_fresh() {
            return Err(ApiError::Unavailable);
        }
        let Some(room) = self.client.get_room(room_id).filter(is_case) else {
            return Ok(false);
        };
        let power_levels = room.power_levels().await.map_err(|e| {
            warn!(error = %e, %room_id, "power levels unknown");
            ApiError::Unavailable
        })?;
        Ok(power_levels.user_can_kick(user))
    }

    async fn end_call(&self, room_id: &RoomId, host: &UserId) -> Result<usize, ApiError> {
        // The homeserver's state, not the synced store: a membership sent a moment ago must not
        // survive the end of the call.
        let (room, state) = self.room_state_from_homeserver(room_id).await?;
        room.send_raw(
            CALL_ENDED_EVENT,
            serde_json::json!({ "ended_by": host.as_str() }),
        )
        .await
        .map_err(|e| {
            warn!(error = %e, %room_id, "cannot announce the end of the call");
            ApiError::Unavailable
        })?;
        let mut cleared = 0;
        for event in state {
            let live = event["type"] == CALL_MEMBER_EVENT
                && event["content"].as_object().is_some_and(|c| !c.is_empty());
            if let Some(state_key) = event["state_key"].as_str().filter(|_| live) {
                clear_membership(&room, state_key).await?;
                cleared += 1;
            }
        }
        Ok(cleared)
    }

    async fn live_call_memberships(&self) -> Vec<CallMembership> {
        if !self.is_fresh() {
            return vec![];
        }
        let mut live = Vec::new();
        for room in self.client.joined_rooms().into_iter().filter(is_case) {
            let events = match room
                .get_state_events(StateEventType::from(CALL_MEMBER_EVENT))
                .await
            {
                Ok(events) => events,
                Err(e) => {
                    warn!(error = %e, room_id = %room.room_id(), "state store read failed");
                    continue;
                }
            };
            for event in events {
                let RawAnySyncOrStrippedState::Sync(raw) = event else {
                    continue;
                };
                let Ok(value) = serde_json::from_str::<serde_json::Value>(raw.json().get()) else {
                    continue;
                };
                live.extend(CallMembership::from_state_event(room.room_id(), &value));
            }
        }
        live
    }

    async fn clear_call_membership(&self, membership: &CallMembership) -> Result<bool, ApiError> {
        let room_id = &membership.room_id;
        let (room, state) = self.room_state_from_homeserver(room_id).await?;
        let still_current = state.iter().any(|event| {
            CallMembership::from_state_event(room_id, event).as_ref() == Some(membership)
        });
        if still_current {
            clear_membership(&room, &membership.state_key).await?;
        }
        Ok(still_current)
    }

    fn case_rooms(&self) -> Option<Vec<OwnedRoomId>> {
        if !self.is_fresh() {
            return None;
        }
        Some(
            self.client
                .joined_rooms()
                .into_iter()
                .filter(is_case)
                .map(|room| room.room_id().to_owned())
                .collect(),
        )
    }
}

/// Whether a room is a case room (its create event's `type`). For an invite this is the
/// invite's stripped state, which the homeserver takes from the room's real state.
fn is_case(room: &Room) -> bool {
    room.room_type()
        .is_some_and(|t| t.to_string() == CASE_ROOM_TYPE)
}

/// Declines an invite, or leaves a joined room.
async fn decline(room: &Room) {
    if let Err(e) = room.leave().await {
        warn!(room_id = %room.room_id(), error = %e, "could not leave the room");
    }
}

/// Clears a forged call membership if it is still the room's current state for its key (its
/// owner may have written a new one meanwhile).
async fn clear_if_current(
    room: &Room,
    state_key: &str,
    event: &serde_json::Value,
) -> Result<(), ApiError> {
    let request = get_state_events::v3::Request::new(room.room_id().to_owned());
    let state = room.client().send(request).await.map_err(|e| {
        warn!(error = %e, "cannot read room state");
        ApiError::Unavailable
    })?;
    let current = state.room_state.iter().any(|raw| {
        serde_json::from_str::<serde_json::Value>(raw.json().get())
            .is_ok_and(|e| e["state_key"] == state_key && e["event_id"] == event["event_id"])
    });
    if current {
        clear_membership(room, state_key).await?;
    }
    Ok(())
}

/// Overwrites one call membership with `{}` (what a client writes when it leaves).
async fn clear_membership(room: &Room, state_key: &str) -> Result<(), ApiError> {
    room.send_state_event_raw(CALL_MEMBER_EVENT, state_key, serde_json::json!({}))
        .await
        .map(|_| ())
        .map_err(|e| {
            warn!(error = %e, room_id = %room.room_id(), "cannot clear a call membership");
            ApiError::Unavailable
        })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cases the page's `stateKeyOwner` is tested against too (`membershipTrust.test.ts`).
    #[test]
    fn state_key_owners_are_the_shared_contracts() {
        let vectors: serde_json::Value = serde_json::from_str(include_str!(
            "../../proto/contract/call-member-state-keys.json"
        ))
        .unwrap();
        let cases = vectors["cases"].as_array().unwrap();
        assert!(cases.len() > 10);
        for case in cases {
            let key = case["state_key"].as_str().unwrap();
            assert_eq!(
                state_key_owner(key).map(|u| u.to_string()).as_deref(),
                case["owner"].as_str(),
                "state key {key:?}"
            );
        }
    }

    #[test]
    fn a_call_membership_is_read_from_its_state_event() {
        let room: OwnedRoomId = "!case:localhost".try_into().unwrap();
        let event = serde_json::json!({
            "type": CALL_MEMBER_EVENT, "state_key": "_@bob:localhost_DEV_m.call",
            "event_id": "$e", "sender": "@bob:localhost",
            "content": {"application": "m.call", "device_id": "DEV",
                "foci_preferred": [{"type": "livekit", "livekit_service_url": "https://c/api/rtc"}]}
        });
        let membership = CallMembership::from_state_event(&room, &event).unwrap();
        assert_eq!(membership.device_id, "DEV");
        assert_eq!(membership.user_id.as_str(), "@bob:localhost");
        assert_eq!(membership.service_urls, ["https://c/api/rtc"]);

        let mut left = event.clone();
        left["content"] = serde_json::json!({});
        assert_eq!(CallMembership::from_state_event(&room, &left), None);
        let mut other = event;
        other["type"] = "m.room.topic".into();
        assert_eq!(CallMembership::from_state_event(&room, &other), None);
    }
}
