//! The fake homeserver's HTTP side: the client-server endpoints control's service account
//! uses, the OpenID userinfo endpoint, and the gate in front of them (request log, failure
//! modes, the access token).

use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{Path, Query, Request, State as Axum},
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use serde_json::{Value, json};

use super::{Failing, Shared, State, append, percent_decoded, random_suffix, user_id};

/// Every endpoint control uses, behind [`gate`].
pub(super) fn router(shared: Arc<Shared>) -> Router {
    let client = Router::new()
        .route("/login", post(login))
        .route("/sync", get(sync))
        .route("/rooms/{room}/join", post(join_room))
        .route("/join/{room}", post(join_room))
        .route("/rooms/{room}/leave", post(leave_room))
        // matrix-sdk forgets a room it declined the invite to.
        .route("/rooms/{room}/forget", post(|| async { Json(json!({})) }))
        .route("/rooms/{room}/state", get(room_state))
        .route(
            "/rooms/{room}/state/{event_type}/{state_key}",
            get(state_event).put(put_state_event),
        )
        .route("/rooms/{room}/send/{event_type}/{txn}", put(send_event));
    Router::new()
        .route("/_matrix/client/versions", get(versions))
        .nest("/_matrix/client/v3", client)
        .route("/_matrix/federation/v1/openid/userinfo", get(userinfo))
        .fallback(unhandled)
        .layer(middleware::from_fn_with_state(shared.clone(), gate))
        .with_state(shared.clone())
}

fn error(status: StatusCode, errcode: &str, message: &str) -> Response {
    (status, Json(json!({"errcode": errcode, "error": message}))).into_response()
}

/// Logs every request, answers 500 while failing, and checks the service account's access
/// token on the client-server API (everything but login and versions).
async fn gate(Axum(shared): Axum<Arc<Shared>>, request: Request, next: Next) -> Response {
    let path = percent_decoded(request.uri().path());
    let (failing, token) = {
        let mut state = shared.lock();
        state.requests.push(format!("{} {path}", request.method()));
        (state.failing, state.access_token.clone())
    };
    let client_api = path.starts_with("/_matrix/client/");
    let state_read = request.method() == axum::http::Method::GET && path.contains("/state");
    if failing == Failing::All || (failing == Failing::ClientApi && client_api) {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "M_UNKNOWN",
            "failing on purpose",
        );
    }
    if failing == Failing::StateReads && state_read {
        return error(StatusCode::BAD_GATEWAY, "M_UNKNOWN", "failing on purpose");
    }
    let join = request.method() == axum::http::Method::POST
        && (path.contains("/join/") || path.ends_with("/join"));
    if failing == Failing::Joins && join {
        return error(StatusCode::BAD_GATEWAY, "M_UNKNOWN", "failing on purpose");
    }
    let open =
        path.ends_with("/login") || path.ends_with("/versions") || path.contains("/federation/");
    if !open && path.starts_with("/_matrix/client/") {
        let bearer = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if token.is_none() || bearer != token.as_deref() {
            return error(
                StatusCode::UNAUTHORIZED,
                "M_UNKNOWN_TOKEN",
                "unknown access token",
            );
        }
    }
    next.run(request).await
}

async fn unhandled(Axum(shared): Axum<Arc<Shared>>, request: Request) -> Response {
    let entry = format!(
        "{} {}",
        request.method(),
        percent_decoded(request.uri().path())
    );
    shared.lock().unhandled.push(entry);
    error(
        StatusCode::NOT_FOUND,
        "M_UNRECOGNIZED",
        "not implemented by the fake homeserver",
    )
}

async fn versions() -> Json<Value> {
    Json(
        json!({"versions": ["r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6",
        "v1.7", "v1.8", "v1.9", "v1.10", "v1.11", "v1.12"], "unstable_features": {}}),
    )
}

async fn login(Axum(shared): Axum<Arc<Shared>>, Json(body): Json<Value>) -> Response {
    let mut state = shared.lock();
    let user = body["identifier"]["user"]
        .as_str()
        .or(body["user"].as_str())
        .unwrap_or_default();
    let user = user_id(user, &state.server_name);
    if user != state.service_user || body["password"] != state.service_password.as_str() {
        return error(
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
            "Invalid username or password",
        );
    }
    let token = format!("syt-{}", random_suffix());
    state.access_token = Some(token.clone());
    let device = body["device_id"].as_str().unwrap_or("FAKEDEVICE");
    Json(
        json!({"user_id": user, "access_token": token, "device_id": device,
        "home_server": state.server_name}),
    )
    .into_response()
}

async fn userinfo(
    Axum(shared): Axum<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let sub = query
        .get("access_token")
        .and_then(|token| shared.lock().openid.get(token).cloned());
    match sub {
        Some(sub) => Json(json!({ "sub": sub })).into_response(),
        None => error(
            StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
            "Access Token unknown or expired",
        ),
    }
}

/// Long-polls like a homeserver: answers at once when anything happened since `since`,
/// otherwise when something does or the client's timeout (at most 30 s) runs out.
async fn sync(
    Axum(shared): Axum<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let since: Option<u64> = query
        .get("since")
        .and_then(|s| s.strip_prefix('s'))
        .and_then(|s| s.parse().ok());
    let timeout = query
        .get("timeout")
        .and_then(|t| t.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or_default()
        .min(Duration::from_secs(30));
    let deadline = tokio::time::Instant::now() + timeout;
    let mut changed = shared.changed.subscribe();
    {
        let mut state = shared.lock();
        state.synced_to = state.synced_to.max(since.unwrap_or(0));
    }
    // A sync held by a failure is answered as soon as the failure ends, not at its timeout.
    let mut was_stuck = false;
    loop {
        let stuck = {
            let state = shared.lock();
            match state.failing {
                Failing::No | Failing::ClientApi | Failing::StateReads | Failing::Joins => {
                    let position = state.events.len() as u64;
                    if was_stuck
                        || since.is_none_or(|since| position > since)
                        || tokio::time::Instant::now() >= deadline
                    {
                        return Json(sync_response(&state, since)).into_response();
                    }
                    false
                }
                // Held until the failure ends (or the client gives up on it).
                Failing::Sync => true,
                Failing::All => {
                    return error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "M_UNKNOWN",
                        "failing on purpose",
                    );
                }
            }
        };
        if stuck {
            was_stuck = true;
            let _ = changed.changed().await;
            continue;
        }
        let _ = tokio::time::timeout_at(deadline, changed.changed()).await;
    }
}

/// What changed for control's account since `since` (everything, on an initial sync).
fn sync_response(state: &State, since: Option<u64>) -> Value {
    let position = state.events.len() as u64;
    let after = since.unwrap_or(0);
    let me = &state.service_user;
    let (mut join, mut invite, mut leave) = (json!({}), json!({}), json!({}));
    for (room_id, room) in &state.rooms {
        let Some(&mine) = room.state.get(&("m.room.member".to_owned(), me.clone())) else {
            continue;
        };
        let my_event = &state.events[mine].1;
        let changed_for_me = since.is_none() || mine as u64 >= after;
        let timeline: Vec<Value> = state
            .events
            .iter()
            .enumerate()
            .skip(after as usize)
            .filter(|(_, (room, _))| room == room_id)
            .map(|(_, (_, e))| e.clone())
            .collect();
        match my_event["content"]["membership"].as_str() {
            // Newly joined (or the first sync): the room's whole state, as a homeserver sends
            // it; afterwards only what happened since.
            Some("join") if changed_for_me => {
                let full: Vec<Value> = room
                    .state
                    .values()
                    .map(|&i| state.events[i].1.clone())
                    .collect();
                join[room_id] = json!({"state": {"events": full},
                    "timeline": {"events": [], "limited": false}});
            }
            Some("join") if !timeline.is_empty() => {
                join[room_id] = json!({"state": {"events": []},
                    "timeline": {"events": timeline, "limited": false}});
            }
            Some("invite") if changed_for_me => {
                let stripped: Vec<Value> = room
                    .state
                    .iter()
                    .filter(|((t, k), _)| t == "m.room.create" || (t == "m.room.member" && k == me))
                    .map(|(_, &i)| {
                        let e = &state.events[i].1;
                        json!({"type": e["type"], "state_key": e["state_key"],
                            "content": e["content"], "sender": e["sender"]})
                    })
                    .collect();
                invite[room_id] = json!({"invite_state": {"events": stripped}});
            }
            Some("leave" | "ban") if since.is_some() && changed_for_me => {
                leave[room_id] = json!({"state": {"events": []},
                    "timeline": {"events": timeline, "limited": false}});
            }
            _ => {}
        }
    }
    json!({"next_batch": format!("s{position}"),
        "rooms": {"join": join, "invite": invite, "leave": leave}})
}

/// Control accepting an invite (a join of anyone else is the test's to make).
async fn join_room(Axum(shared): Axum<Arc<Shared>>, Path(room): Path<String>) -> Response {
    let me = shared.lock().service_user.clone();
    let invited = {
        let state = shared.lock();
        state
            .rooms
            .get(&room)
            .and_then(|r| r.state.get(&("m.room.member".to_owned(), me.clone())))
            .is_some_and(|&i| {
                matches!(
                    state.events[i].1["content"]["membership"].as_str(),
                    Some("invite" | "join")
                )
            })
    };
    if !invited {
        return error(
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
            "You are not invited to this room.",
        );
    }
    append(
        &shared,
        &room,
        &me,
        "m.room.member",
        Some(&me),
        json!({"membership": "join"}),
    );
    shared.bump();
    Json(json!({ "room_id": room })).into_response()
}

async fn leave_room(Axum(shared): Axum<Arc<Shared>>, Path(room): Path<String>) -> Response {
    let me = shared.lock().service_user.clone();
    if append(
        &shared,
        &room,
        &me,
        "m.room.member",
        Some(&me),
        json!({"membership": "leave"}),
    )
    .is_none()
    {
        return error(StatusCode::NOT_FOUND, "M_NOT_FOUND", "no such room");
    }
    shared.bump();
    Json(json!({})).into_response()
}

/// Whether control's account is joined to `room` (what a homeserver checks before it lets
/// anyone read or write the room).
fn control_joined(state: &State, room: &str) -> bool {
    state
        .rooms
        .get(room)
        .and_then(|r| {
            r.state
                .get(&("m.room.member".to_owned(), state.service_user.clone()))
        })
        .is_some_and(|&i| state.events[i].1["content"]["membership"] == "join")
}

async fn room_state(Axum(shared): Axum<Arc<Shared>>, Path(room): Path<String>) -> Response {
    let state = shared.lock();
    if !control_joined(&state, &room) {
        return error(StatusCode::FORBIDDEN, "M_FORBIDDEN", "not in the room");
    }
    let events: Vec<Value> = state.rooms[&room]
        .state
        .values()
        .map(|&i| state.events[i].1.clone())
        .collect();
    Json(Value::Array(events)).into_response()
}

async fn state_event(
    Axum(shared): Axum<Arc<Shared>>,
    Path((room, event_type, state_key)): Path<(String, String, String)>,
) -> Response {
    let state = shared.lock();
    if !control_joined(&state, &room) {
        return error(StatusCode::FORBIDDEN, "M_FORBIDDEN", "not in the room");
    }
    match state.rooms[&room].state.get(&(event_type, state_key)) {
        Some(&i) => Json(state.events[i].1["content"].clone()).into_response(),
        None => error(StatusCode::NOT_FOUND, "M_NOT_FOUND", "Event not found."),
    }
}

async fn put_state_event(
    Axum(shared): Axum<Arc<Shared>>,
    Path((room, event_type, state_key)): Path<(String, String, String)>,
    Json(content): Json<Value>,
) -> Response {
    send(&shared, &room, &event_type, Some(&state_key), content)
}

async fn send_event(
    Axum(shared): Axum<Arc<Shared>>,
    Path((room, event_type, _txn)): Path<(String, String, String)>,
    Json(content): Json<Value>,
) -> Response {
    send(&shared, &room, &event_type, None, content)
}

fn send(
    shared: &Shared,
    room: &str,
    event_type: &str,
    state_key: Option<&str>,
    content: Value,
) -> Response {
    let me = {
        let state = shared.lock();
        if !control_joined(&state, room) {
            return error(StatusCode::FORBIDDEN, "M_FORBIDDEN", "not in the room");
        }
        state.service_user.clone()
    };
    let Some(event_id) = append(shared, room, &me, event_type, state_key, content) else {
        return error(StatusCode::NOT_FOUND, "M_NOT_FOUND", "no such room");
    };
    shared.bump();
    Json(json!({ "event_id": event_id })).into_response()
}
