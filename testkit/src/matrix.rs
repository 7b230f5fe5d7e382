//! The homeserver as practitioners (and an ordinary account like mallory) use it.

use serde_json::{Value, json};

use crate::stack::HS;

/// Logs `user` (a demo account, password `koinos-dev`) in: `(access token, user id)`.
pub async fn login(user: &str) -> (String, String) {
    let response: Value = reqwest::Client::new()
        .post(format!("{HS}/_matrix/client/v3/login"))
        .json(&json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": "koinos-dev"}))
        .send()
        .await
        .expect("homeserver reachable")
        .json()
        .await
        .unwrap();
    (
        response["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("login {user}: {response}"))
            .to_owned(),
        response["user_id"].as_str().unwrap().to_owned(),
    )
}

/// A fresh OpenID token of `user` (what the page hands control).
pub async fn openid(user: &str) -> Value {
    let (access, user_id) = login(user).await;
    reqwest::Client::new()
        .post(format!(
            "{HS}/_matrix/client/v3/user/{user_id}/openid/request_token"
        ))
        .bearer_auth(access)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// A client-server API request that must succeed; its JSON answer.
pub async fn matrix(method: reqwest::Method, access: &str, path: &str, body: Value) -> Value {
    let (status, body) = matrix_status(method, access, path, body).await;
    assert!((200..300).contains(&status), "{path}: {status} {body}");
    body
}

/// A client-server API request: `(status, JSON answer)`.
pub async fn matrix_status(
    method: reqwest::Method,
    access: &str,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method.clone(), format!("{HS}/_matrix/client/v3{path}"))
        .bearer_auth(access);
    if method != reqwest::Method::GET {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The room type of a case (`creation_content.type`).
pub use koinos_proto::contract::CASE_ROOM_TYPE as CASE_TYPE;
use koinos_proto::contract::case_room;

/// A fresh room created by `creator` (so tests never disturb "Demo case"), of `room_type`
/// (`Some(CASE_TYPE)` for a case, `None` for an ordinary room): control's service account and
/// `invite` are invited, `join` of them join.
pub async fn new_room(
    creator: &str,
    room_type: Option<&str>,
    invite: &[&str],
    join: &[&str],
) -> String {
    let mut invitees = vec!["@koinos-rtc:localhost".to_owned()];
    invitees.extend(invite.iter().map(|u| format!("@{u}:localhost")));
    let events: serde_json::Map<String, Value> = case_room::EVENT_POWER_LEVELS
        .iter()
        .map(|(event, level)| ((*event).to_owned(), json!(level)))
        .collect();
    let mut body = json!({
        "name": "Test case", "preset": case_room::PRESET,
        "power_level_content_override": {
            "events": events,
            "users": {"@koinos-rtc:localhost": case_room::ADMIN_POWER_LEVEL}
        },
        "invite": invitees
    });
    if let Some(room_type) = room_type {
        body["creation_content"] = json!({ "type": room_type });
    }
    let room = matrix(reqwest::Method::POST, creator, "/createRoom", body).await["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for user in join {
        let (access, _) = login(user).await;
        matrix(
            reqwest::Method::POST,
            &access,
            &format!("/join/{}", urlencode(&room)),
            json!({}),
        )
        .await;
    }
    room
}

/// A fresh case room (see [`new_room`]).
pub async fn new_case(alice: &str, invite: &[&str], join: &[&str]) -> String {
    new_room(alice, Some(CASE_TYPE), invite, join).await
}

/// `host` (the case's creator) kicks `user` from `room`.
pub async fn kick(host: &str, room: &str, user: &str) {
    matrix(
        reqwest::Method::POST,
        host,
        &format!("/rooms/{}/kick", urlencode(room)),
        json!({"user_id": user}),
    )
    .await;
}

/// `host` invites `user` back and `user` joins.
pub async fn reinvite(host: &str, room: &str, user: &str) {
    matrix(
        reqwest::Method::POST,
        host,
        &format!("/rooms/{}/invite", urlencode(room)),
        json!({"user_id": format!("@{user}:localhost")}),
    )
    .await;
    let (access, _) = login(user).await;
    matrix(
        reqwest::Method::POST,
        &access,
        &format!("/join/{}", urlencode(room)),
        json!({}),
    )
    .await;
}

pub use koinos_proto::contract::CALL_MEMBER_EVENT as CALL_MEMBER;

/// A call membership's content as matrix-js-sdk writes it for `device`.
pub fn call_member_content(room: &str, device: &str) -> Value {
    json!({
        "application": "m.call", "call_id": "", "scope": "m.room", "device_id": device,
        "expires": 3_600_000, "m.call.intent": "video",
        "focus_active": {"type": "livekit", "focus_selection": "multi_sfu"},
        "foci_preferred": [{"type": "livekit", "livekit_service_url": "http://localhost:8080/api/rtc", "livekit_alias": room}],
    })
}

/// `writer` writes `content` into the call membership slot `state_key`; the HTTP status.
pub async fn put_call_member_state(
    writer: &str,
    room: &str,
    state_key: &str,
    content: &Value,
) -> u16 {
    let (access, _) = login(writer).await;
    let url = format!(
        "{HS}/_matrix/client/v3/rooms/{}/state/{CALL_MEMBER}/{}",
        urlencode(room),
        urlencode(state_key)
    );
    reqwest::Client::new()
        .put(url)
        .bearer_auth(access)
        .json(content)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Joins `user`'s `device` to the room's MatrixRTC call the way a client on a homeserver
/// without MSC4140 does: a plain state event, no delayed leave. Returns the state key.
pub async fn put_call_membership(user: &str, room: &str, device: &str) -> String {
    let user_id = format!("@{user}:localhost");
    let state_key = format!("_{user_id}_{device}_m.call");
    let status =
        put_call_member_state(user, room, &state_key, &call_member_content(room, device)).await;
    assert!(
        (200..300).contains(&status),
        "{user} could not join the call: {status}"
    );
    state_key
}

/// The current state event (not just its content) of a call membership, as alice sees it.
pub async fn call_membership_event(room: &str, state_key: &str) -> Value {
    let (alice, _) = login("alice").await;
    let state = matrix(
        reqwest::Method::GET,
        &alice,
        &format!("/rooms/{}/state", urlencode(room)),
        Value::Null,
    )
    .await;
    state
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == CALL_MEMBER && e["state_key"] == state_key)
        .cloned()
        .unwrap_or(Value::Null)
}
