use super::*;
use axum::{
    body::Body,
    extract::{Query, ws::WebSocketUpgrade as FakeUpgrade},
    http::Request,
};
use futures_util::StreamExt;
use livekit_api::access_token::{AccessToken, TokenVerifier, VideoGrants};
use std::sync::Mutex;
use tower::ServiceExt;

use crate::{control::Admitted, relay::RoomApi, revocations::Revocation};

/// The secret only LiveKit and control hold; the gateway never sees it.
const SECRET: &str = "the-livekit-secret-the-livekit-secret";

/// A client's ticket: a JWT naming `identity`, room `r` and a Matrix user (what the gateway
/// can read; whether it is genuine is control's to say).
fn ticket(identity: &str) -> String {
    let user = identity.rsplit_once(':').map_or(identity, |(u, _)| u);
    AccessToken::with_api_key("koinos-rtc", "the-ticket-key-the-ticket-key")
        .with_identity(identity)
        .with_attributes([("org.koinos.matrix_user_id", user)])
        .with_grants(VideoGrants {
            room_join: true,
            room: "r".into(),
            ..Default::default()
        })
        .to_jwt()
        .unwrap()
}

/// What control mints for an admitted connection.
fn livekit_token(identity: &str) -> String {
    AccessToken::with_api_key("devkey", SECRET)
        .with_identity(identity)
        .with_grants(VideoGrants {
            room_join: true,
            room: "r".into(),
            ..Default::default()
        })
        .to_jwt()
        .unwrap()
}

/// Control as a table: whose tickets it admits (by identity), what it refuses, and what it
/// was asked.
#[derive(Default)]
struct FakeControl {
    refusals: Mutex<Vec<(String, Refused)>>,
    asked: Mutex<Vec<(String, bool)>>,
    /// Revoked through this registry while "deciding" (a kick racing the admission).
    revoke_while_deciding: Mutex<Option<Registry>>,
    /// What sessions' RoomService requests go to (default: an empty room).
    room: Mutex<Option<Arc<dyn RoomApi>>>,
}

struct NoRoom;
#[async_trait::async_trait]
impl RoomApi for NoRoom {
    async fn participants(&self) -> anyhow::Result<Vec<livekit_protocol::ParticipantInfo>> {
        Ok(vec![])
    }
    async fn set_attribute(&self, _: &str, _: &str, _: &str) -> anyhow::Result<()> {
        Ok(())
    }
    async fn mute_track(&self, _: &str, _: &str, _: bool) -> anyhow::Result<()> {
        Ok(())
    }
}

#[async_trait::async_trait]
impl Control for FakeControl {
    async fn admit(&self, ticket: &str, check_only: bool) -> Result<Admitted, Refused> {
        let claims = token::unverified(ticket).ok_or(Refused::Ticket)?;
        self.asked
            .lock()
            .unwrap()
            .push((claims.identity.clone(), check_only));
        if let Some((_, refused)) = self
            .refusals
            .lock()
            .unwrap()
            .iter()
            .find(|(identity, _)| *identity == claims.identity)
        {
            return Err(refused.clone());
        }
        let racing = self.revoke_while_deciding.lock().unwrap().clone();
        if let Some(registry) = racing {
            registry.revoke(Revocation {
                livekit_room: claims.room.clone(),
                matrix_user: Some(claims.matrix_user.clone()),
            });
            // Let the registry apply it before answering.
            registry.stats().await;
        }
        Ok(Admitted {
            livekit_token: livekit_token(&claims.identity),
            livekit_room: claims.room,
            identity: claims.identity,
            matrix_user: claims.matrix_user,
            ice_servers: vec![],
        })
    }
    async fn renew(&self, ticket: &str) -> Result<String, Refused> {
        Ok(ticket.to_owned())
    }
    fn room(&self, _: String) -> Arc<dyn RoomApi> {
        self.room
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| Arc::new(NoRoom))
    }
}

/// What the fake LiveKit was asked: each request's path, its `access_token`s and whether it
/// carried an `Authorization` header.
type Seen = Arc<Mutex<Vec<(String, Vec<String>, bool)>>>;

/// Records a request to the fake LiveKit; whether LiveKit would take its token.
fn livekit_check(
    seen: &Seen,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    query: Vec<(String, String)>,
) -> bool {
    let tokens: Vec<String> = query
        .into_iter()
        .filter(|(k, _)| k == "access_token")
        .map(|(_, v)| v)
        .collect();
    let valid = tokens.len() == 1
        && TokenVerifier::with_api_key("devkey", SECRET)
            .verify(&tokens[0])
            .is_ok();
    seen.lock().unwrap().push((
        uri.path().to_owned(),
        tokens,
        headers.contains_key(header::AUTHORIZATION),
    ));
    valid
}

/// A LiveKit stand-in on a free port that checks tokens as LiveKit does (with the secret
/// only it and control hold): `/rtc` upgrades a valid one and refuses the rest with 401,
/// the validate endpoints answer 200 "success" or 401.
async fn fake_livekit() -> (String, Seen) {
    fake_livekit_with(|mut socket| async move { while socket.recv().await.is_some() {} }).await
}

/// [`fake_livekit`] whose signalling sessions are `session`.
async fn fake_livekit_with<F, Fut>(session: F) -> (String, Seen)
where
    F: Fn(axum::extract::ws::WebSocket) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let seen: Seen = Arc::default();
    let rtc = {
        let seen = seen.clone();
        move |uri: axum::http::Uri,
              headers: HeaderMap,
              Query(query): Query<Vec<(String, String)>>,
              ws: FakeUpgrade| {
            let valid = livekit_check(&seen, &uri, &headers, query);
            let session = session.clone();
            async move {
                if valid {
                    ws.on_upgrade(session)
                } else {
                    (StatusCode::UNAUTHORIZED, "invalid token: signature").into_response()
                }
            }
        }
    };
    let validate = {
        let seen = seen.clone();
        move |uri: axum::http::Uri,
              headers: HeaderMap,
              Query(query): Query<Vec<(String, String)>>| {
            let valid = livekit_check(&seen, &uri, &headers, query);
            async move {
                if valid {
                    (StatusCode::OK, "success").into_response()
                } else {
                    (StatusCode::UNAUTHORIZED, "invalid token: signature").into_response()
                }
            }
        }
    };
    let app = Router::new()
        .route("/rtc", get(rtc))
        .route("/rtc/validate", get(validate.clone()))
        .route("/rtc/v1/validate", get(validate));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("ws://{addr}"), seen)
}

/// A gateway caught up with control, in front of `upstream_url`.
async fn gateway_in_front_of(upstream_url: &str, control: Arc<FakeControl>) -> Gateway {
    let config = Config {
        upstream_url: upstream_url.into(),
        ..Config::default()
    };
    let gateway = Gateway::new(config, control);
    gateway.registry().caught_up(true);
    gateway
}

/// Nothing listens there: a request that got past the gateway's own checks gets 502.
async fn gateway() -> Gateway {
    gateway_in_front_of("ws://127.0.0.1:9", Arc::default()).await
}

async fn get_from(gateway: Gateway, uri: &str, origin: Option<&str>) -> Response {
    let mut request = Request::get(uri);
    if let Some(origin) = origin {
        request = request.header(header::ORIGIN, origin);
    }
    router(gateway)
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

async fn body_text(response: Response) -> String {
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn validate_asks_control_then_livekit_with_controls_token() {
    let (upstream, seen) = fake_livekit().await;
    let control = Arc::new(FakeControl::default());
    control
        .refusals
        .lock()
        .unwrap()
        .push(("@mallory:localhost:M".into(), Refused::NotMember));
    let gateway = gateway_in_front_of(&upstream, control.clone()).await;
    let response = get_from(
        gateway.clone(),
        &format!(
            "/rtc/validate?access_token={}",
            ticket("@mallory:localhost:M")
        ),
        Some("http://localhost:8080"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        response
            .headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .unwrap(),
        "http://localhost:8080"
    );
    assert!(seen.lock().unwrap().is_empty(), "LiveKit never asked");

    let response = get_from(
        gateway,
        &format!(
            "/rtc/v1/validate?access_token={}&protocol=16",
            ticket("@bob:localhost:D")
        ),
        None,
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_text(response).await, "success");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, "/rtc/v1/validate");
    assert_eq!(seen[0].1.len(), 1);
    assert_ne!(seen[0].1[0], ticket("@bob:localhost:D"), "never the ticket");
    // Checking takes no seat.
    assert_eq!(
        *control.asked.lock().unwrap(),
        [
            ("@mallory:localhost:M".to_string(), true),
            ("@bob:localhost:D".to_string(), true)
        ]
    );
}

#[tokio::test]
async fn livekit_is_handed_the_token_control_minted_and_never_the_ticket() {
    let (upstream, seen) = fake_livekit().await;
    let gateway = gateway_in_front_of(&upstream, Arc::default()).await;
    let url = serve(gateway.clone()).await;
    let bob = ticket("@bob:localhost:D");
    let request = tungstenite::client::IntoClientRequest::into_client_request(format!(
        "{url}/rtc?access_token={bob}&sdk=js&access_token=other"
    ))
    .unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let seen_now = seen.lock().unwrap().clone();
    assert_eq!(seen_now[0].1.len(), 1, "one access_token");
    assert!(
        TokenVerifier::with_api_key("devkey", SECRET)
            .verify(&seen_now[0].1[0])
            .is_ok(),
        "control's LiveKit token"
    );
    assert!(
        !seen_now[0].2,
        "no Authorization header, which LiveKit would prefer"
    );
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}

    // A token given only as a header reaches LiveKit in the query.
    let uri: http::Uri = "/rtc?sdk=js&protocol=16".parse().unwrap();
    assert_eq!(
        upstream_path_and_query(&uri, "a.b.c"),
        "/rtc?sdk=js&protocol=16&access_token=a.b.c"
    );
}

/// The gateway served on a free port, as browsers reach it.
async fn serve(gateway: Gateway) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = gateway.metrics().connections.listener("signalling");
    let limits = gateway.config().http.clone();
    let app = router(gateway);
    tokio::spawn(koinos_net::serve(
        listener,
        limits,
        stats,
        move |_| app.clone(),
        std::future::pending(),
    ));
    format!("ws://{addr}")
}

async fn connect_status(url: &str) -> Result<(), (u16, String)> {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => Ok(()),
        Err(tungstenite::Error::Http(response)) => Err((
            response.status().as_u16(),
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned(),
        )),
        Err(e) => panic!("unexpected {e}"),
    }
}

fn ended(gateway: &Gateway, outcome: &str) -> String {
    let prefix = format!("koinos_gateway_sessions_ended_total{{outcome=\"{outcome}\"}} ");
    gateway
        .metrics()
        .render(Default::default())
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        .unwrap_or_else(|| "0".into())
}

#[tokio::test]
async fn controls_refusals_reach_the_browser_and_livekit_never_sees_them() {
    let (upstream, seen) = fake_livekit().await;
    let control = Arc::new(FakeControl::default());
    control.refusals.lock().unwrap().extend([
        ("@forger:localhost:F".to_string(), Refused::Ticket),
        ("@mallory:localhost:M".to_string(), Refused::NotMember),
        (
            "@bob:localhost:C".to_string(),
            Refused::NoSeat("You are already in this call on 2 devices.".into()),
        ),
        ("@carol:localhost:D".to_string(), Refused::Unavailable),
    ]);
    let gateway = gateway_in_front_of(&upstream, control.clone()).await;
    let url = serve(gateway.clone()).await;
    for (identity, status, outcome) in [
        ("@forger:localhost:F", 401, "refused_token"),
        ("@mallory:localhost:M", 403, "refused_not_member"),
        ("@bob:localhost:C", 409, "refused_no_seat"),
        ("@carol:localhost:D", 503, "refused_control_unavailable"),
    ] {
        let refused = connect_status(&format!("{url}/rtc?access_token={}", ticket(identity))).await;
        assert_eq!(refused.as_ref().unwrap_err().0, status, "{identity}");
        assert_eq!(ended(&gateway, outcome), "1", "{outcome}");
    }
    assert!(
        connect_status(&format!("{url}/rtc?access_token=garbage"))
            .await
            .unwrap_err()
            .1
            .contains("invalid token")
    );
    assert!(
        seen.lock().unwrap().is_empty(),
        "LiveKit never saw any of them"
    );
    assert_eq!(
        control.asked.lock().unwrap().len(),
        4,
        "garbage never reached control"
    );
    assert_eq!(gateway.registry().stats().await.sessions, 0);
}

#[tokio::test]
async fn nothing_is_admitted_until_the_gateway_caught_up_with_control() {
    let (upstream, seen) = fake_livekit().await;
    let control = Arc::new(FakeControl::default());
    let gateway = gateway_in_front_of(&upstream, control.clone()).await;
    gateway.registry().caught_up(false);
    let url = serve(gateway.clone()).await;
    let refused = connect_status(&format!(
        "{url}/rtc?access_token={}",
        ticket("@bob:localhost:D")
    ))
    .await;
    assert_eq!(refused.unwrap_err().0, 503);
    assert!(control.asked.lock().unwrap().is_empty());
    assert!(seen.lock().unwrap().is_empty());
    let ready = router(gateway.clone())
        .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ended(&gateway, "refused_catching_up"), "1");

    gateway.registry().caught_up(true);
    let ready = router(gateway.clone())
        .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "{url}/rtc?access_token={}",
        ticket("@bob:localhost:D")
    ))
    .await
    .unwrap();
    let mut registered = Default::default();
    for _ in 0..50 {
        registered = gateway.registry().stats().await;
        if registered.sessions == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!((registered.sessions, registered.rooms), (1, 1));
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
}

/// A room whose listing hangs until `release` (control stopped in the middle of a resume).
struct StalledRoom {
    release: tokio::sync::Notify,
    listing: Vec<livekit_protocol::ParticipantInfo>,
}

#[async_trait::async_trait]
impl RoomApi for StalledRoom {
    async fn participants(&self) -> anyhow::Result<Vec<livekit_protocol::ParticipantInfo>> {
        self.release.notified().await;
        Ok(self.listing.clone())
    }
    async fn set_attribute(&self, _: &str, _: &str, _: &str) -> anyhow::Result<()> {
        Ok(())
    }
    async fn mute_track(&self, _: &str, _: &str, _: bool) -> anyhow::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_resume_relays_both_ways_while_control_has_not_listed_the_room() {
    use livekit_protocol::{
        Ping, SignalRequest, SignalResponse, UpdateTrackSettings, signal_request::Message as Req,
        signal_response::Message as Resp,
    };
    use prost::Message as _;
    use tungstenite::Message;

    // LiveKit answers a resume, then every ping, and keeps what it was sent.
    let requests: Arc<Mutex<Vec<SignalRequest>>> = Arc::default();
    let kept = requests.clone();
    let (upstream, _seen) = fake_livekit_with(move |mut socket| {
        let kept = kept.clone();
        async move {
            let resumed = SignalResponse {
                message: Some(Resp::Reconnect(Default::default())),
            };
            let _ = socket
                .send(axum::extract::ws::Message::Binary(
                    resumed.encode_to_vec().into(),
                ))
                .await;
            while let Some(Ok(axum::extract::ws::Message::Binary(bytes))) = socket.recv().await {
                let request = SignalRequest::decode(bytes).unwrap();
                if let Some(Req::PingReq(ping)) = &request.message {
                    let pong = SignalResponse {
                        message: Some(Resp::PongResp(livekit_protocol::Pong {
                            last_ping_timestamp: ping.timestamp,
                            timestamp: 1,
                        })),
                    };
                    let _ = socket
                        .send(axum::extract::ws::Message::Binary(
                            pong.encode_to_vec().into(),
                        ))
                        .await;
                }
                kept.lock().unwrap().push(request);
            }
        }
    })
    .await;
    let person = |identity: &str, camera: &str| {
        crate::test_support::person(identity, &format!("PA_{identity}"), camera)
    };
    let room = Arc::new(StalledRoom {
        release: tokio::sync::Notify::new(),
        // Three people: the cap is 540.
        listing: vec![
            person("@bob:localhost:D", "TR_bob"),
            person("@alice:localhost:A", "TR_alice"),
            person("@carol:localhost:C", "TR_carol"),
        ],
    });
    let control = Arc::new(FakeControl::default());
    *control.room.lock().unwrap() = Some(room.clone());
    let gateway = gateway_in_front_of(&upstream, control).await;
    let url = serve(gateway.clone()).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "{url}/rtc?access_token={}&reconnect=1&sid=PA_bob",
        ticket("@bob:localhost:D")
    ))
    .await
    .unwrap();
    // The next binary frame from the gateway, within 5 s: the relay is not held up.
    async fn next_response(
        ws: &mut tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    ) -> Option<Resp> {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await
                .expect("a frame within 5 s while control is away")
                .unwrap()
                .unwrap();
            if let Message::Binary(bytes) = frame {
                return SignalResponse::decode(bytes).unwrap().message;
            }
        }
    }
    let first = next_response(&mut ws).await;
    assert!(matches!(first, Some(Resp::Reconnect(_))), "{first:?}");

    // The listing hangs. A subscription setting above the cap waits for it; a ping does not.
    let send = |request: Req| {
        Message::Binary(
            SignalRequest {
                message: Some(request),
            }
            .encode_to_vec()
            .into(),
        )
    };
    ws.send(send(Req::TrackSetting(UpdateTrackSettings {
        track_sids: vec!["TR_alice".into()],
        height: 1080,
        width: 1920,
        ..Default::default()
    })))
    .await
    .unwrap();
    for timestamp in [1, 2] {
        ws.send(send(Req::PingReq(Ping { timestamp, rtt: 0 })))
            .await
            .unwrap();
        let pong = loop {
            if let Some(Resp::PongResp(pong)) = next_response(&mut ws).await {
                break pong;
            }
        };
        assert_eq!(pong.last_ping_timestamp, timestamp);
    }
    let settings = |requests: &[SignalRequest]| {
        requests
            .iter()
            .filter_map(|r| match &r.message {
                Some(Req::TrackSetting(s)) => Some((s.track_sids.clone(), s.height)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        settings(&requests.lock().unwrap()),
        vec![],
        "the setting waits for the ladder"
    );

    // The listing comes: the held setting reaches LiveKit within the cap, never above it.
    room.release.notify_one();
    let mut capped = false;
    for _ in 0..100 {
        let now = settings(&requests.lock().unwrap());
        assert!(now.iter().all(|(_, height)| *height <= 540), "{now:?}");
        if now
            .iter()
            .any(|(sids, _)| sids.contains(&"TR_alice".to_string()))
        {
            capped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(capped, "{:?}", settings(&requests.lock().unwrap()));
    let listed = gateway
        .metrics()
        .render(Default::default())
        .lines()
        .any(|l| {
            l.starts_with("koinos_gateway_resume_listing_seconds_count{outcome=\"listed\"} 1")
        });
    assert!(listed);
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
}

#[tokio::test]
async fn a_kick_while_control_admits_refuses_the_session_at_once() {
    let (upstream, _seen) = fake_livekit().await;
    let control = Arc::new(FakeControl::default());
    let gateway = gateway_in_front_of(&upstream, control.clone()).await;
    *control.revoke_while_deciding.lock().unwrap() = Some(gateway.registry());
    let url = serve(gateway.clone()).await;
    let refused = connect_status(&format!(
        "{url}/rtc?access_token={}",
        ticket("@bob:localhost:D")
    ))
    .await;
    assert_eq!(refused.unwrap_err().0, 403);
    assert_eq!(ended(&gateway, "refused_revoked"), "1");
    assert_eq!(gateway.registry().stats().await.sessions, 0);
}

#[tokio::test]
async fn too_many_sessions_from_one_address_are_refused_before_control_is_asked() {
    let (upstream, _seen) = fake_livekit().await;
    let control = Arc::new(FakeControl::default());
    control
        .refusals
        .lock()
        .unwrap()
        .push(("@x:localhost:X".into(), Refused::Ticket));
    let config = Config {
        upstream_url: upstream,
        session_rate_burst: 3,
        session_rate_per_minute: 1,
        ..Config::default()
    };
    let gateway = Gateway::new(config, control.clone());
    gateway.registry().caught_up(true);
    let url = serve(gateway.clone()).await;
    let forged = ticket("@x:localhost:X");
    for _ in 0..3 {
        let refused = connect_status(&format!("{url}/rtc?access_token={forged}")).await;
        assert_eq!(refused.unwrap_err().0, 401);
    }
    let refused = connect_status(&format!("{url}/rtc?access_token={forged}")).await;
    assert_eq!(refused.unwrap_err().0, 429);
    assert_eq!(control.asked.lock().unwrap().len(), 3);
    assert_eq!(ended(&gateway, "refused_address_limit"), "1");
}

#[tokio::test]
async fn foreign_origin_is_refused() {
    let response = get_from(
        gateway().await,
        &format!("/rtc/validate?access_token={}", ticket("@x:l:X")),
        Some("https://evil.example"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(
        response
            .headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none()
    );
}

#[tokio::test]
async fn missing_token_is_401() {
    assert_eq!(
        get_from(gateway().await, "/rtc/validate", None)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn validate_without_livekit_is_502() {
    let response = get_from(
        gateway().await,
        &format!("/rtc/v1/validate?access_token={}", ticket("@x:l:X")),
        None,
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn head_root_answers() {
    let response = router(gateway().await)
        .oneshot(Request::head("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}
