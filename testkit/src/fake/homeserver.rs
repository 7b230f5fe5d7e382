//! A fake Matrix homeserver: the client-server API control's service account uses through
//! matrix-sdk (login, `/sync` with room state and member events, invites, joining and leaving,
//! reading room state, sending state and message events) and the federation OpenID userinfo
//! endpoint control verifies callers with. Nothing else: a request for anything else is
//! answered `404 M_UNRECOGNIZED` and recorded ([`FakeHomeserver::unhandled`]), so a test sees
//! when control starts to need more of the homeserver.
//!
//! Concurrency model: one `Mutex<State>` holds the rooms, the event stream and the request log;
//! handlers and the test's methods take it briefly and never across an `.await`. Every event
//! appended to the stream bumps a `watch` channel, which is what a long-polling `/sync` waits
//! on (without the lock), so a kick made by the test reaches control's sync at once, as a real
//! homeserver pushes it. The stream position is the number of events; a sync token is `s<pos>`.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard},
};

use serde_json::{Value, json};
use tokio::sync::watch;

use super::Server;
use crate::matrix::CALL_MEMBER;

mod api;

/// What the fake does instead of answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failing {
    /// Answers as a homeserver does.
    No,
    /// Every request gets 500 (a homeserver whose database is gone).
    All,
    /// `/sync` never answers (a stuck sync worker): everything else works, the membership
    /// state goes stale, and it resumes at once when the failure ends.
    Sync,
    /// The client-server API answers 500; OpenID checks (federation API) still work.
    ClientApi,
    /// Reading room state (`GET /rooms/{id}/state…`) answers 502, as a proxy in front of a
    /// worker that is down would; sync and everything else still work.
    StateReads,
    /// Joining a room answers 502; everything else works.
    Joins,
}

struct Room {
    /// `(type, state_key)` → index of the current event in `State::events`.
    state: BTreeMap<(String, String), usize>,
}

struct State {
    server_name: String,
    service_user: String,
    service_password: String,
    access_token: Option<String>,
    /// OpenID token → the user id userinfo answers with.
    openid: HashMap<String, String>,
    rooms: BTreeMap<String, Room>,
    /// Every event, in stream order; an event's position is its index + 1.
    events: Vec<(String, Value)>,
    failing: Failing,
    requests: Vec<String>,
    unhandled: Vec<String>,
    /// The highest `since` control has synced from: it has processed everything up to it.
    synced_to: u64,
    counter: u64,
}

struct Shared {
    state: Mutex<State>,
    changed: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }
}

pub struct FakeHomeserver {
    shared: Arc<Shared>,
    server: Server,
}

impl FakeHomeserver {
    /// A homeserver for `localhost` with control's service account `koinos-rtc`.
    pub async fn start() -> FakeHomeserver {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                server_name: "localhost".into(),
                service_user: "@koinos-rtc:localhost".into(),
                service_password: format!("pw-{}", random_suffix()),
                access_token: None,
                openid: HashMap::new(),
                rooms: BTreeMap::new(),
                events: Vec::new(),
                failing: Failing::No,
                requests: Vec::new(),
                unhandled: Vec::new(),
                synced_to: 0,
                counter: 0,
            }),
            changed: watch::channel(0).0,
        });
        let router = api::router(shared.clone());
        FakeHomeserver {
            shared,
            server: Server::start(router).await,
        }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn server_name(&self) -> String {
        self.shared.lock().server_name.clone()
    }

    /// Control's service account (`@koinos-rtc:localhost`).
    pub fn service_user(&self) -> String {
        self.shared.lock().service_user.clone()
    }

    /// The service account's password, for control's configuration (a secret: never print it).
    pub fn service_password(&self) -> String {
        self.shared.lock().service_password.clone()
    }

    /// `@name:localhost` for a localpart; a full user id is kept as it is.
    pub fn user_id(&self, user: &str) -> String {
        user_id(user, &self.shared.lock().server_name)
    }

    /// A fresh OpenID token of `user`, shaped as `/openid/request_token` answers it.
    pub fn issue_openid(&self, user: &str) -> Value {
        let sub = self.user_id(user);
        self.issue_openid_naming(&sub)
    }

    /// An OpenID token this homeserver vouches for as `sub`, whatever server `sub` names (a
    /// homeserver that answers for users of another server is lying; control must notice).
    pub fn issue_openid_naming(&self, sub: &str) -> Value {
        let mut state = self.shared.lock();
        let token = format!("openid-{}-{}", state.counter, random_suffix());
        state.counter += 1;
        state.openid.insert(token.clone(), sub.to_owned());
        json!({"access_token": token, "token_type": "Bearer",
            "matrix_server_name": state.server_name, "expires_in": 3600})
    }

    /// A room created by `creator` (joined, power level 100), of `room_type` (`Some(case)` for
    /// a case room). Control's account has power level 100 in it but is not invited.
    pub fn create_room(&self, creator: &str, room_type: Option<&str>) -> String {
        let creator = self.user_id(creator);
        let room_id = {
            let mut state = self.shared.lock();
            state.counter += 1;
            let room_id = format!(
                "!room{}-{}:{}",
                state.counter,
                random_suffix(),
                state.server_name
            );
            state.rooms.insert(
                room_id.clone(),
                Room {
                    state: BTreeMap::new(),
                },
            );
            room_id
        };
        let mut create = json!({"room_version": "11", "creator": creator});
        if let Some(room_type) = room_type {
            create["type"] = json!(room_type);
        }
        self.put_state(&room_id, &creator, "m.room.create", "", create);
        self.set_membership(&room_id, &creator, &creator, "join");
        let control = self.service_user();
        self.put_state(
            &room_id,
            &creator,
            "m.room.power_levels",
            "",
            json!({"users": {creator.clone(): 100, control: 100}, "users_default": 0,
                "kick": 50, "ban": 50, "state_default": 50, "events_default": 0,
                "events": {CALL_MEMBER: 0, "m.room.power_levels": 100}}),
        );
        room_id
    }

    /// A case room created by `creator` that control is already joined to (as after it
    /// accepted the invite), with `members` joined.
    pub fn case_room(&self, creator: &str, members: &[&str]) -> String {
        let room = self.create_room(creator, Some(koinos_proto::contract::CASE_ROOM_TYPE));
        let control = self.service_user();
        self.set_membership(&room, &control, &control, "join");
        for member in members {
            self.join(&room, member);
        }
        room
    }

    /// `sender` invites `user`.
    pub fn invite(&self, room: &str, sender: &str, user: &str) {
        let (sender, user) = (self.user_id(sender), self.user_id(user));
        self.set_membership(room, &sender, &user, "invite");
    }

    pub fn join(&self, room: &str, user: &str) {
        let user = self.user_id(user);
        self.set_membership(room, &user, &user, "join");
    }

    pub fn leave(&self, room: &str, user: &str) {
        let user = self.user_id(user);
        self.set_membership(room, &user, &user, "leave");
    }

    /// `kicker` removes `user` from the room (a leave sent by someone else).
    pub fn kick(&self, room: &str, kicker: &str, user: &str) {
        let (kicker, user) = (self.user_id(kicker), self.user_id(user));
        self.set_membership(room, &kicker, &user, "leave");
    }

    pub fn ban(&self, room: &str, banner: &str, user: &str) {
        let (banner, user) = (self.user_id(banner), self.user_id(user));
        self.set_membership(room, &banner, &user, "ban");
    }

    fn set_membership(&self, room: &str, sender: &str, user: &str, membership: &str) {
        self.put_state(
            room,
            sender,
            "m.room.member",
            user,
            json!({"membership": membership}),
        );
    }

    /// Appends a state event to the room (as `sender`); its event id.
    pub fn put_state(
        &self,
        room: &str,
        sender: &str,
        event_type: &str,
        state_key: &str,
        content: Value,
    ) -> String {
        let sender = self.user_id(sender);
        let id = append(
            &self.shared,
            room,
            &sender,
            event_type,
            Some(state_key),
            content,
        )
        .unwrap_or_else(|| panic!("no room {room} in the fake homeserver"));
        self.shared.bump();
        id
    }

    /// `user` joins `device` to the room's MatrixRTC call (a membership naming `service_url` as
    /// its JWT service, as our page writes it); the state key.
    pub fn call_membership(
        &self,
        room: &str,
        user: &str,
        device: &str,
        service_url: &str,
    ) -> String {
        let user = self.user_id(user);
        let state_key = format!("_{user}_{device}_m.call");
        let mut content = crate::matrix::call_member_content(room, device);
        content["foci_preferred"][0]["livekit_service_url"] = json!(service_url);
        self.put_state(room, &user, CALL_MEMBER, &state_key, content);
        state_key
    }

    /// The current state event of `(event_type, state_key)` in the room.
    pub fn state_event(&self, room: &str, event_type: &str, state_key: &str) -> Option<Value> {
        let state = self.shared.lock();
        let index = state
            .rooms
            .get(room)?
            .state
            .get(&(event_type.to_owned(), state_key.to_owned()))?;
        Some(state.events[*index].1.clone())
    }

    /// `user`'s membership in the room now (`join`, `invite`, `leave`, `ban`).
    pub fn membership(&self, room: &str, user: &str) -> Option<String> {
        let user = self.user_id(user);
        self.state_event(room, "m.room.member", &user)
            .and_then(|e| e["content"]["membership"].as_str().map(str::to_owned))
    }

    /// Every event control's service account sent (through the API), in order.
    pub fn sent_by_control(&self) -> Vec<Value> {
        let state = self.shared.lock();
        state
            .events
            .iter()
            .filter(|(_, e)| e["sender"] == state.service_user.as_str())
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// Every request, as `METHOD /path` (no query: it may carry tokens).
    pub fn requests(&self) -> Vec<String> {
        self.shared.lock().requests.clone()
    }

    /// How many OpenID userinfo requests control made.
    pub fn userinfo_requests(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.ends_with("/openid/userinfo"))
            .count()
    }

    /// Requests for endpoints this fake does not implement.
    pub fn unhandled(&self) -> Vec<String> {
        self.shared.lock().unhandled.clone()
    }

    pub fn set_failing(&self, failing: Failing) {
        self.shared.lock().failing = failing;
        // A sync waiting now must answer in the new mode, not at the end of its long poll.
        self.shared.bump();
    }

    /// Waits (up to 10 s) until control has synced everything in the stream now: it asked for
    /// a sync from the current position, so it has processed every event before it.
    pub async fn caught_up(&self) -> bool {
        let target = self.shared.lock().events.len() as u64;
        crate::stack::eventually(10, || async { self.shared.lock().synced_to >= target }).await
    }

    /// Stops answering: the port refuses, open connections are closed.
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// Answers again on the same port, with the same state.
    pub async fn restart(&mut self) {
        self.server.restart().await;
    }
}

fn user_id(user: &str, server_name: &str) -> String {
    if user.starts_with('@') {
        user.to_owned()
    } else {
        format!("@{user}:{server_name}")
    }
}

fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("{:016x}", hasher.finish())
}

/// Appends an event to `room` (a state event when `state_key` is given); its event id, or
/// `None` for an unknown room.
fn append(
    shared: &Shared,
    room: &str,
    sender: &str,
    event_type: &str,
    state_key: Option<&str>,
    content: Value,
) -> Option<String> {
    let mut state = shared.lock();
    if !state.rooms.contains_key(room) {
        return None;
    }
    let index = state.events.len();
    let event_id = format!("$e{index}-{}", random_suffix());
    let mut event = json!({"type": event_type, "sender": sender, "content": content,
        "event_id": event_id, "origin_server_ts": now_ms(), "room_id": room});
    if let Some(key) = state_key {
        event["state_key"] = json!(key);
        state
            .rooms
            .get_mut(room)?
            .state
            .insert((event_type.to_owned(), key.to_owned()), index);
    }
    state.events.push((room.to_owned(), event));
    Some(event_id)
}

/// A request path as the test names things (`!room:localhost`, `@bob:localhost`).
fn percent_decoded(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
