//! Control's API as the page, Element Call and gateways use it.

use std::time::Duration;

use serde_json::{Value, json};

use crate::{
    matrix::openid,
    stack::{CONTROL, secret},
};

/// POSTs `body` to the dev stack's control at `/api/rtc/{path}`: `(status, JSON answer)`.
pub async fn post_json(path: &str, body: &Value) -> (u16, Value) {
    post_json_to(CONTROL, path, body).await
}

/// POSTs `body` to the control at `base` (`http://host:port`), `/api/rtc/{path}`.
pub async fn post_json_to(base: &str, path: &str, body: &Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}/api/rtc/{path}"))
        .json(body)
        .send()
        .await
        .expect("control reachable");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// POSTs raw bytes with a content type to `/api/rtc/{path}`.
pub async fn post_raw(path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{CONTROL}/api/rtc/{path}"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("control reachable");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub async fn post_token(body: &Value) -> (u16, Value) {
    post_json("token", body).await
}

pub async fn post_turn(body: &Value) -> (u16, Value) {
    post_json("turn", body).await
}

/// `user`'s `/token` request for `device` in `room`, with a fresh OpenID token.
pub async fn token_request(user: &str, room: &str, device: &str) -> (u16, Value) {
    post_token(&json!({"room_id": room, "openid_token": openid(user).await, "device_id": device}))
        .await
}

/// A refusal with exactly this status and Matrix errcode.
#[track_caller]
pub fn assert_refused(status: u16, body: &Value, expected_status: u16, errcode: &str) {
    assert_eq!(
        (status, body["errcode"].as_str()),
        (expected_status, Some(errcode)),
        "{body}"
    );
}

#[track_caller]
pub fn assert_nothing_issued(body: &Value) {
    for field in ["jwt", "password", "username"] {
        assert!(body.get(field).is_none(), "{field} issued in {body}");
    }
}

/// Tickets for `users` (`(user, device)`) in `room`, waiting for control to have joined a
/// brand-new case.
pub async fn tickets_once_control_is_in(room: &str, users: &[(&str, &str)]) -> Vec<String> {
    let mut tickets = Vec::new();
    for (user, device) in users {
        let mut ticket = None;
        for _ in 0..40 {
            let (status, grant) = token_request(user, room, device).await;
            if status == 200 {
                ticket = grant["jwt"].as_str().map(str::to_owned);
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        tickets.push(ticket.unwrap_or_else(|| panic!("{user} never got a ticket")));
    }
    tickets
}

/// The claims of a JWT (a ticket, a LiveKit token), unverified.
pub fn jwt_claims(jwt: &str) -> Value {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1).expect("a JWT has three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// What the dev stack's gateways present to control's gateway RPCs (no LiveKit key).
pub fn gateway_credential() -> String {
    secret("gateway_credential")
}

/// `message` as a gateway sends it: `authorization: Bearer <credential>` (none if `None`).
pub fn as_gateway<T>(message: T, credential: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(credential) = credential {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {credential}").parse().unwrap(),
        );
    }
    request
}

/// A LiveKit admin token signed with `secret`, as a forger would make one.
pub fn livekit_admin_token(secret: &str) -> String {
    livekit_api::access_token::AccessToken::with_api_key("devkey", secret)
        .with_identity("koinos-forger")
        .with_grants(livekit_api::access_token::VideoGrants {
            room_admin: true,
            ..Default::default()
        })
        .to_jwt()
        .unwrap()
}
