//! Black-box tests of the gateway in front of the real LiveKit of the running dev stack.

use std::{path::PathBuf, time::Duration};

use futures_util::StreamExt;
use livekit_api::{
    access_token::{AccessToken, VideoGrants},
    services::room::{CreateRoomOptions, RoomClient},
};
use livekit_protocol::{SignalResponse, signal_response};
use prost::Message as _;
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};

const GATEWAY: &str = "ws://127.0.0.1:7880";

fn dev_dir() -> PathBuf {
    std::env::var_os("KOINOS_DEV_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.dev"))
}

fn secret() -> String {
    let path = dev_dir().join("secrets/livekit_api_secret");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} ({e}): is the dev stack up?", path.display()))
        .trim()
        .to_owned()
}

struct LogsOnFailure;
impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let path = dev_dir().join("logs/gateway.log");
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            eprintln!("----- {}", path.display());
            for line in text
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                eprintln!("{line}");
            }
        }
    }
}

fn token(secret: &str, room: &str, identity: &str) -> String {
    AccessToken::with_api_key("devkey", secret)
        .with_identity(identity)
        .with_grants(VideoGrants {
            room_join: true,
            room: room.into(),
            ..Default::default()
        })
        .to_jwt()
        .unwrap()
}

async fn existing_room(name: &str) -> String {
    RoomClient::with_api_key("http://127.0.0.1:7881", "devkey", &secret())
        .create_room(name, CreateRoomOptions::default())
        .await
        .expect("LiveKit reachable");
    name.to_owned()
}

async fn connect(jwt: &str, origin: Option<&str>) -> Result<SignalResponse, tungstenite::Error> {
    let mut request = format!("{GATEWAY}/rtc?access_token={jwt}&protocol=16&sdk=rust")
        .into_client_request()
        .unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(15), ws.next())
            .await
            .expect("first frame within 15 s")
            .expect("open")
            .expect("frame");
        if let Message::Binary(bytes) = frame {
            return Ok(SignalResponse::decode(bytes).unwrap());
        }
    }
}

fn http_status(result: Result<SignalResponse, tungstenite::Error>) -> u16 {
    match result {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        other => panic!("expected an HTTP refusal before upgrade, got {other:?}"),
    }
}

#[tokio::test]
async fn relays_a_session_to_livekit() {
    let _logs = LogsOnFailure;
    let room = existing_room("gateway-test-relay").await;
    let response = connect(
        &token(&secret(), &room, "relay-test"),
        Some("http://localhost:8080"),
    )
    .await
    .unwrap();
    match response.message {
        Some(signal_response::Message::Join(join)) => {
            assert_eq!(join.participant.unwrap().identity, "relay-test")
        }
        other => panic!("expected join, got {other:?}"),
    }
}

#[tokio::test]
async fn rejects_a_token_signed_with_the_wrong_secret() {
    let _logs = LogsOnFailure;
    let room = existing_room("gateway-test-forged").await;
    let forged = token(
        "not-the-livekit-secret-not-the-livekit-secret",
        &room,
        "mallory",
    );
    assert_eq!(http_status(connect(&forged, None).await), 401);
}

#[tokio::test]
async fn refuses_pages_from_other_origins() {
    let _logs = LogsOnFailure;
    let room = existing_room("gateway-test-origin").await;
    let jwt = token(&secret(), &room, "origin-test");
    assert_eq!(
        http_status(connect(&jwt, Some("https://evil.example")).await),
        403
    );
}

#[tokio::test]
async fn passes_livekits_refusal_through_before_upgrading() {
    let _logs = LogsOnFailure;
    // Valid signature, but the room was never created and LiveKit runs with auto_create off.
    let jwt = token(&secret(), "gateway-test-no-such-room", "nobody");
    let status = http_status(connect(&jwt, None).await);
    assert!(
        (400..500).contains(&status),
        "LiveKit's refusal, got {status}"
    );
}
