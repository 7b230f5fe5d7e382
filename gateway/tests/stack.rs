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

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(jwt: &str, origin: Option<&str>) -> Result<Ws, tungstenite::Error> {
    let mut request = format!("{GATEWAY}/rtc?access_token={jwt}&protocol=16&sdk=rust")
        .into_client_request()
        .unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
    }
    Ok(tokio_tungstenite::connect_async(request).await?.0)
}

/// The next signalling message on the session.
async fn next_response(ws: &mut Ws) -> SignalResponse {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(15), ws.next())
            .await
            .expect("a frame within 15 s")
            .expect("open")
            .expect("frame");
        if let Message::Binary(bytes) = frame {
            return SignalResponse::decode(bytes).unwrap();
        }
    }
}

async fn connect(jwt: &str, origin: Option<&str>) -> Result<SignalResponse, tungstenite::Error> {
    Ok(next_response(&mut open(jwt, origin).await?).await)
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

/// A session through the gateway, past LiveKit's `join`.
async fn joined(room: &str, identity: &str) -> Ws {
    let jwt = token(&secret(), room, identity);
    let mut ws = open(&jwt, Some("http://localhost:8080")).await.unwrap();
    while !matches!(
        next_response(&mut ws).await.message,
        Some(signal_response::Message::Join(_))
    ) {}
    ws
}

/// Waits for the gateway to end this session: a close frame or the connection dropping.
async fn ended(ws: &mut Ws) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return false,
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return true,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// A LiveKit ping answered through the gateway: the session is alive.
async fn answers_ping(ws: &mut Ws) -> bool {
    use futures_util::SinkExt;
    use livekit_protocol::{Ping, SignalRequest, signal_request};
    let ping = SignalRequest {
        message: Some(signal_request::Message::PingReq(Ping {
            timestamp: 4242,
            rtt: 0,
        })),
    };
    ws.send(Message::Binary(ping.encode_to_vec().into()))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, ws.next()).await {
        if let Message::Binary(bytes) = frame
            && let Ok(SignalResponse {
                message: Some(signal_response::Message::PongResp(pong)),
            }) = SignalResponse::decode(bytes)
            && pong.last_ping_timestamp == 4242
        {
            return true;
        }
    }
    false
}

async fn sessions_ended(outcome: &str) -> u64 {
    let text = reqwest::get("http://127.0.0.1:7880/metrics")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("koinos_gateway_sessions_ended_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn a_malformed_or_oversized_frame_ends_only_its_own_session() {
    use futures_util::SinkExt;
    let _logs = LogsOnFailure;
    let room = existing_room("gateway-test-bad-frames").await;
    let mut bystander = joined(&room, "bad-frame-bystander").await;
    let bad_before = sessions_ended("bad_frame").await;
    let errors_before = sessions_ended("browser_error").await;

    // Not a LiveKit request at all (an invalid protobuf field tag).
    let mut garbage = joined(&room, "bad-frame-garbage").await;
    garbage
        .send(Message::Binary(vec![0xff; 16].into()))
        .await
        .unwrap();
    assert!(
        ended(&mut garbage).await,
        "a garbage frame ends its session"
    );
    assert_eq!(sessions_ended("bad_frame").await, bad_before + 1);

    // Over the gateway's 1 MiB frame limit (`max_frame_bytes`).
    let mut oversized = joined(&room, "bad-frame-oversized").await;
    let _ = oversized
        .send(Message::Binary(vec![0u8; 2 * 1024 * 1024].into()))
        .await;
    assert!(
        ended(&mut oversized).await,
        "an oversized frame ends its session"
    );
    assert_eq!(sessions_ended("browser_error").await, errors_before + 1);

    // The process and the other session in the same room are unaffected.
    assert!(
        answers_ping(&mut bystander).await,
        "the bystander's session lives on"
    );
    let mut newcomer = joined(&room, "bad-frame-newcomer").await;
    assert!(answers_ping(&mut newcomer).await);
}

/// A second gateway, this test's own, whose control credential is wrong. Stopped on drop.
struct Impostor {
    child: std::process::Child,
    url: String,
    log: PathBuf,
}

impl Impostor {
    async fn start() -> Impostor {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("koinos-impostor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("gateway.toml");
        std::fs::write(
            &config,
            format!(
                r#"listen = "127.0.0.1:{port}"
upstream_url = "ws://127.0.0.1:7881"
control_grpc_url = "http://127.0.0.1:50051"
control_credential = "not-the-gateway-credential-not-the-gateway-credential"
"#
            ),
        )
        .unwrap();
        let log = dir.join("gateway.log");
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_koinos-gateway"));
        command
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.join("gateway.err")).unwrap());
        for (key, _) in std::env::vars() {
            if key.starts_with("KOINOS_GATEWAY_") {
                command.env_remove(key);
            }
        }
        let child = command.spawn().expect("runs koinos-gateway");
        let impostor = Impostor {
            child,
            url: format!("ws://127.0.0.1:{port}"),
            log,
        };
        for _ in 0..100 {
            if reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return impostor;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the impostor gateway did not start: {}",
            impostor.log_text()
        );
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Control's count of gateway RPCs refused for want of the credential.
async fn control_refusals(operation: &str) -> f64 {
    let text = reqwest::get("http://127.0.0.1:8080/metrics")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!(
        "koinos_control_gateway_requests_total{{operation=\"{operation}\",outcome=\"unauthenticated\"}} "
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_gateway_with_the_wrong_credential_is_refused_by_control() {
    let _logs = LogsOnFailure;
    let watch_before = control_refusals("watch_revocations").await;
    let list_before = control_refusals("list_participants").await;
    let impostor = Impostor::start().await;

    // Its revocation stream is refused (it retries with back-off, and keeps relaying).
    let mut refused = false;
    for _ in 0..50 {
        if control_refusals("watch_revocations").await > watch_before {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        refused,
        "control refused its WatchRevocations: {}",
        impostor.log_text()
    );

    // LiveKit still takes a genuine token through it; the room listing after a resume is what
    // control refuses it.
    let room = existing_room("gateway-test-impostor").await;
    let jwt = token(&secret(), &room, "impostor-test");
    let mut first = open(&jwt, None).await.unwrap();
    let sid = loop {
        if let Some(signal_response::Message::Join(join)) = next_response(&mut first).await.message
        {
            break join.participant.unwrap().sid;
        }
    };
    let resume = format!(
        "{}/rtc?access_token={jwt}&protocol=16&sdk=rust&reconnect=1&sid={sid}",
        impostor.url
    );
    let (mut resumed, _) = tokio_tungstenite::connect_async(resume.as_str())
        .await
        .unwrap();
    loop {
        match next_response(&mut resumed).await.message {
            Some(signal_response::Message::Reconnect(_)) => break,
            Some(signal_response::Message::Leave(leave)) => {
                panic!("LiveKit refused the resume through the impostor: {leave:?}")
            }
            _ => {}
        }
    }
    let mut refused = false;
    for _ in 0..50 {
        if control_refusals("list_participants").await > list_before {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        refused,
        "control refused its room listing: {}",
        impostor.log_text()
    );
    let log = impostor.log_text();
    assert!(log.contains("revocation stream failed"), "{log}");
    assert!(log.contains("cannot list the room after a resume"), "{log}");
    assert!(
        !log.contains("not-the-gateway-credential"),
        "the credential never reaches the log"
    );
    drop(resumed);
}
