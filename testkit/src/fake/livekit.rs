//! A fake LiveKit server: the Twirp RoomService control calls (`CreateRoom`, `ListRooms`,
//! `DeleteRoom`, `ListParticipants`, `RemoveParticipant`, `UpdateParticipant`,
//! `MutePublishedTrack`), spoken as livekit-api's client speaks it (protobuf bodies, Twirp's
//! JSON errors), with every request's bearer token checked against the API key and secret
//! (HS256, issuer, expiry, and the grant each method needs). A participant enters a room only
//! with a LiveKit token signed with that secret ([`FakeLiveKit::connect`]), as a gateway's
//! connection does, or by the test's hand ([`FakeLiveKit::add_participant`]).
//!
//! Concurrency model: one `Mutex<State>` holds the rooms and the request log; Twirp handlers
//! and the test's methods take it briefly, never across an `.await`. Requests are logged in
//! the order they were served, refused ones included ([`Call::refused`]).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State as Axum},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use livekit_api::access_token::{Claims, TokenVerifier};
use livekit_protocol as proto;
use prost::Message as _;

use super::Server;

/// One RoomService request as the fake saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// `CreateRoom`, `RemoveParticipant`, …
    pub method: String,
    /// The room it names (empty for `ListRooms`).
    pub room: String,
    /// The participant it names, if any.
    pub identity: String,
    /// Why it was refused (`unauthenticated`, `permission_denied`, `unavailable`, …), if it was.
    pub refused: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Room {
    pub create: proto::CreateRoomRequest,
    pub participants: Vec<proto::ParticipantInfo>,
}

struct State {
    api_key: String,
    api_secret: String,
    rooms: BTreeMap<String, Room>,
    log: Vec<Call>,
    down: bool,
    counter: u64,
}

pub struct FakeLiveKit {
    shared: Arc<Mutex<State>>,
    server: Server,
}

fn lock(shared: &Mutex<State>) -> MutexGuard<'_, State> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

impl FakeLiveKit {
    /// A LiveKit that accepts API requests signed with `api_key` / `api_secret`.
    pub async fn start(api_key: &str, api_secret: &str) -> FakeLiveKit {
        let shared = Arc::new(Mutex::new(State {
            api_key: api_key.to_owned(),
            api_secret: api_secret.to_owned(),
            rooms: BTreeMap::new(),
            log: Vec::new(),
            down: false,
            counter: 0,
        }));
        let router = Router::new()
            .route("/twirp/livekit.RoomService/{method}", post(twirp))
            .with_state(shared.clone());
        FakeLiveKit {
            shared,
            server: Server::start(router).await,
        }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared)
    }

    /// The rooms now, by name.
    pub fn rooms(&self) -> BTreeMap<String, Room> {
        self.state().rooms.clone()
    }

    /// Who is in `room` now.
    pub fn participants(&self, room: &str) -> Vec<proto::ParticipantInfo> {
        self.state()
            .rooms
            .get(room)
            .map(|r| r.participants.clone())
            .unwrap_or_default()
    }

    /// Every RoomService request so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.state().log.clone()
    }

    /// The requests of one method that were served.
    pub fn served(&self, method: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method && c.refused.is_none())
            .collect()
    }

    /// `(room, identity)` of every participant removed by `RemoveParticipant`.
    pub fn removed(&self) -> Vec<(String, String)> {
        self.served("RemoveParticipant")
            .into_iter()
            .map(|c| (c.room, c.identity))
            .collect()
    }

    /// Requests refused for their token (wrong secret or key, expired, or a grant missing).
    pub fn unauthorized(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| {
                matches!(
                    c.refused.as_deref(),
                    Some("unauthenticated" | "permission_denied")
                )
            })
            .collect()
    }

    /// While down, every request is answered 503 (a LiveKit that is restarting).
    pub fn set_down(&self, down: bool) {
        self.state().down = down;
    }

    /// Creates a room by hand (as nobody but control should).
    pub fn create_room(&self, name: &str) {
        self.state().rooms.insert(
            name.to_owned(),
            Room {
                create: proto::CreateRoomRequest {
                    name: name.to_owned(),
                    ..Default::default()
                },
                participants: Vec::new(),
            },
        );
    }

    /// Puts a participant into an existing room by hand, with these attributes (what a
    /// connection with a token control did not mint looks like).
    pub fn add_participant(&self, room: &str, identity: &str, attributes: &[(&str, &str)]) {
        let mut state = self.state();
        state.counter += 1;
        let sid = format!("PA_{}", state.counter);
        let room = state
            .rooms
            .get_mut(room)
            .unwrap_or_else(|| panic!("no LiveKit room {room}"));
        room.participants.push(proto::ParticipantInfo {
            sid,
            identity: identity.to_owned(),
            attributes: attributes
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            state: proto::participant_info::State::Active as i32,
            ..Default::default()
        });
    }

    /// A connection opened with `token`, as LiveKit admits one: the token must be signed with
    /// the API secret, grant `roomJoin` and name an existing room; the participant carries the
    /// token's identity and attributes. `Err` says why it was refused.
    pub fn connect(&self, token: &str) -> Result<proto::ParticipantInfo, String> {
        let claims = {
            let state = self.state();
            TokenVerifier::with_api_key(&state.api_key, &state.api_secret)
                .verify(token)
                .map_err(|e| format!("invalid token: {e}"))?
        };
        if !claims.video.room_join {
            return Err("no roomJoin grant".into());
        }
        let room = claims.video.room.clone();
        if !self.state().rooms.contains_key(&room) {
            return Err(format!("no room {room}"));
        }
        let attributes: Vec<(&str, &str)> = claims
            .attributes
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.add_participant(&room, &claims.sub, &attributes);
        Ok(self
            .participants(&room)
            .into_iter()
            .rfind(|p| p.identity == claims.sub)
            .expect("just added"))
    }

    /// A published camera track of `identity` in `room`; its sid.
    pub fn publish_camera(&self, room: &str, identity: &str) -> String {
        let mut state = self.state();
        state.counter += 1;
        let sid = format!("TR_{}", state.counter);
        let participant = state
            .rooms
            .get_mut(room)
            .and_then(|r| r.participants.iter_mut().find(|p| p.identity == identity))
            .expect("the participant is in the room");
        participant.tracks.push(proto::TrackInfo {
            sid: sid.clone(),
            r#type: proto::TrackType::Video as i32,
            source: proto::TrackSource::Camera as i32,
            ..Default::default()
        });
        sid
    }

    pub fn stop(&mut self) {
        self.server.stop();
    }

    pub async fn restart(&mut self) {
        self.server.restart().await;
    }
}

/// A Twirp error as LiveKit answers one (livekit-api decodes the JSON body).
fn twirp_error(code: &str, message: &str) -> Response {
    let status = match code {
        "not_found" => StatusCode::NOT_FOUND,
        "unauthenticated" => StatusCode::UNAUTHORIZED,
        "permission_denied" => StatusCode::FORBIDDEN,
        "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        "bad_route" => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_REQUEST,
    };
    (
        status,
        [("content-type", "application/json")],
        serde_json::json!({"code": code, "msg": message}).to_string(),
    )
        .into_response()
}

fn reply(message: impl prost::Message) -> Response {
    (
        [("content-type", "application/protobuf")],
        message.encode_to_vec(),
    )
        .into_response()
}

/// The room and participant a request names, for the log.
fn names(method: &str, body: &[u8]) -> Result<(String, String), prost::DecodeError> {
    Ok(match method {
        "CreateRoom" => (proto::CreateRoomRequest::decode(body)?.name, String::new()),
        "DeleteRoom" => (proto::DeleteRoomRequest::decode(body)?.room, String::new()),
        "ListParticipants" => (
            proto::ListParticipantsRequest::decode(body)?.room,
            String::new(),
        ),
        "RemoveParticipant" => {
            let r = proto::RoomParticipantIdentity::decode(body)?;
            (r.room, r.identity)
        }
        "UpdateParticipant" => {
            let r = proto::UpdateParticipantRequest::decode(body)?;
            (r.room, r.identity)
        }
        "MutePublishedTrack" => {
            let r = proto::MuteRoomTrackRequest::decode(body)?;
            (r.room, r.identity)
        }
        _ => (String::new(), String::new()),
    })
}

/// Whether `claims` grant what `method` on `room` needs (livekit-api asks for exactly these).
fn permitted(method: &str, room: &str, claims: &Claims) -> bool {
    let video = &claims.video;
    match method {
        "CreateRoom" | "DeleteRoom" => video.room_create,
        "ListRooms" => video.room_list,
        _ => video.room_admin && video.room == room,
    }
}

async fn twirp(
    Axum(shared): Axum<Arc<Mutex<State>>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (room, identity) = match names(&method, &body) {
        Ok(names) => names,
        Err(e) => return twirp_error("malformed", &format!("bad {method} body: {e}")),
    };
    let mut state = lock(&shared);
    let refusal = if state.down {
        Some(("unavailable", "LiveKit is down (fake)".to_owned()))
    } else {
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        match TokenVerifier::with_api_key(&state.api_key, &state.api_secret).verify(bearer) {
            Err(e) => Some(("unauthenticated", format!("invalid token: {e}"))),
            Ok(claims) if !permitted(&method, &room, &claims) => {
                Some(("permission_denied", format!("{method} not granted")))
            }
            Ok(_) => None,
        }
    };
    state.log.push(Call {
        method: method.clone(),
        room: room.clone(),
        identity: identity.clone(),
        refused: refusal.as_ref().map(|(code, _)| (*code).to_owned()),
    });
    if let Some((code, message)) = refusal {
        return twirp_error(code, &message);
    }
    serve(&mut state, &method, &room, &identity, &body)
}

fn serve(state: &mut State, method: &str, room: &str, identity: &str, body: &[u8]) -> Response {
    match method {
        "CreateRoom" => {
            let Ok(create) = proto::CreateRoomRequest::decode(body) else {
                return twirp_error("malformed", "bad body");
            };
            state.counter += 1;
            let sid = format!("RM_{}", state.counter);
            let entry = state.rooms.entry(room.to_owned()).or_insert(Room {
                create: create.clone(),
                participants: Vec::new(),
            });
            reply(room_info(room, entry, sid))
        }
        "ListRooms" => {
            let Ok(request) = proto::ListRoomsRequest::decode(body) else {
                return twirp_error("malformed", "bad body");
            };
            let rooms = state
                .rooms
                .iter()
                .filter(|(name, _)| request.names.is_empty() || request.names.contains(name))
                .map(|(name, r)| room_info(name, r, format!("RM_{name}")))
                .collect();
            reply(proto::ListRoomsResponse { rooms })
        }
        "DeleteRoom" => match state.rooms.remove(room) {
            Some(_) => reply(proto::DeleteRoomResponse {}),
            None => twirp_error("not_found", "room not found"),
        },
        "ListParticipants" => match state.rooms.get(room) {
            Some(r) => reply(proto::ListParticipantsResponse {
                participants: r.participants.clone(),
            }),
            None => twirp_error("not_found", "room not found"),
        },
        "RemoveParticipant" => {
            let Some(r) = state.rooms.get_mut(room) else {
                return twirp_error("not_found", "room not found");
            };
            let before = r.participants.len();
            r.participants.retain(|p| p.identity != identity);
            if r.participants.len() == before {
                return twirp_error("not_found", "participant not found");
            }
            reply(proto::RemoveParticipantResponse {})
        }
        "UpdateParticipant" => {
            let Ok(update) = proto::UpdateParticipantRequest::decode(body) else {
                return twirp_error("malformed", "bad body");
            };
            match participant(state, room, identity) {
                Some(p) => {
                    for (key, value) in update.attributes {
                        if value.is_empty() {
                            p.attributes.remove(&key);
                        } else {
                            p.attributes.insert(key, value);
                        }
                    }
                    reply(p.clone())
                }
                None => twirp_error("not_found", "participant not found"),
            }
        }
        "MutePublishedTrack" => {
            let Ok(mute) = proto::MuteRoomTrackRequest::decode(body) else {
                return twirp_error("malformed", "bad body");
            };
            let track = participant(state, room, identity)
                .and_then(|p| p.tracks.iter_mut().find(|t| t.sid == mute.track_sid));
            match track {
                Some(track) => {
                    track.muted = mute.muted;
                    reply(proto::MuteRoomTrackResponse {
                        track: Some(track.clone()),
                    })
                }
                None => twirp_error("not_found", "track not found"),
            }
        }
        _ => twirp_error(
            "bad_route",
            &format!("{method} is not implemented by the fake"),
        ),
    }
}

fn participant<'a>(
    state: &'a mut State,
    room: &str,
    identity: &str,
) -> Option<&'a mut proto::ParticipantInfo> {
    state
        .rooms
        .get_mut(room)?
        .participants
        .iter_mut()
        .find(|p| p.identity == identity)
}

fn room_info(name: &str, room: &Room, sid: String) -> proto::Room {
    proto::Room {
        sid,
        name: name.to_owned(),
        empty_timeout: room.create.empty_timeout,
        departure_timeout: room.create.departure_timeout,
        max_participants: room.create.max_participants,
        num_participants: room.participants.len() as u32,
        ..Default::default()
    }
}
