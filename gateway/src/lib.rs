//! koinos-rtc gateway: sits on the LiveKit signalling path between browsers and LiveKit.
//!
//! Concurrency model: every browser session is one task ([`relay::run`]) that owns both legs
//! of that session (browser WebSocket and LiveKit WebSocket) and everything known about it; no
//! state is shared between sessions, so any number of gateway instances can stand in front of
//! one LiveKit. The two legs live and die together: when either closes, the task closes the
//! other, so livekit-client runs its own resume/reconnect against a fresh pair. The one shared
//! piece, which sessions are open for whom, is owned by the revocation registry's task
//! (`revocations.rs`) and reached through channels.

pub mod config;
pub mod control;
pub mod fallback;
pub mod ladder;
pub mod metrics;
pub mod relay;
pub mod revocations;
pub mod signal;
pub mod token;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::{ConnectInfo, OriginalUri, State, WebSocketUpgrade},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use futures_util::SinkExt;
use prost::Message as _;
use tokio_tungstenite::tungstenite;
use tracing::{info, warn};

use crate::{
    config::Config, fallback::Fallback, ladder::Ladder, metrics::Metrics, relay::RoomApi,
    revocations::Registry, token::Claims,
};

/// How long a RoomService request through control may take before the session gives up on it.
const CONTROL_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    http: reqwest::Client,
    registry: Registry,
    metrics: Arc<Metrics>,
    /// Control, for the RoomService requests of sessions; `None` without a `control_grpc_url`.
    control: Option<control::Client>,
}

impl Gateway {
    /// Must be called within a Tokio runtime (it starts the revocation registry's task).
    /// `control_credential`: what [`Config::load`] returned.
    pub fn new(config: Config, control_credential: Option<&str>) -> anyhow::Result<Self> {
        let control = match control_credential {
            Some(credential) if !config.control_grpc_url.is_empty() => Some(control::client(
                &config.control_grpc_url,
                control::Credential::new(credential)?,
                Some(CONTROL_REQUEST_TIMEOUT),
            )?),
            _ => None,
        };
        let registry = Registry::start(Duration::from_secs(config.revocation_memory_secs));
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                http: reqwest::Client::new(),
                registry,
                metrics: Arc::new(Metrics::default()),
                control,
            }),
        })
    }

    /// The registry control's revocations are applied to (see [`revocations::follow_control`]).
    pub fn registry(&self) -> Registry {
        self.inner.registry.clone()
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.inner.metrics.clone()
    }
}

/// The gateway's HTTP surface: LiveKit's signalling paths, relayed, plus health.
pub fn router(gateway: Gateway) -> Router {
    Router::new()
        .route("/rtc", get(signal_ws))
        .route("/rtc/v1", get(signal_ws))
        .route("/rtc/validate", get(validate).options(preflight))
        .route("/rtc/v1/validate", get(validate).options(preflight))
        // livekit-client pre-warms the connection with `HEAD /`.
        .route(
            "/",
            get(|| async { "OK" }).head(|| async { StatusCode::OK }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics_text))
        .with_state(gateway)
}

async fn metrics_text(State(gateway): State<Gateway>) -> Response {
    let (sessions, rooms) = gateway.inner.registry.stats().await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        gateway.inner.metrics.render(sessions, rooms),
    )
        .into_response()
}

fn plain(status: StatusCode, message: &'static str) -> Response {
    (status, message).into_response()
}

/// A request the gateway answers itself, without reaching LiveKit.
#[derive(Debug, Clone, Copy)]
struct Refusal(StatusCode, &'static str);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        plain(self.0, self.1)
    }
}

/// The access token from `?access_token=` or `Authorization: Bearer`, as LiveKit accepts it.
fn access_token(uri: &http::Uri, headers: &HeaderMap) -> Option<String> {
    if let Some(query) = uri.query() {
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if key == "access_token" {
                return Some(value.into_owned());
            }
        }
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
}

/// The page's origin may use the gateway at all.
fn check_origin(gateway: &Gateway, headers: &HeaderMap) -> Result<(), Refusal> {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if !gateway.inner.config.origin_allowed(origin) {
        warn!(origin, "session refused: origin not allowed");
        return Err(Refusal(StatusCode::FORBIDDEN, "origin not allowed"));
    }
    Ok(())
}

/// What the gateway checks before anything reaches LiveKit: the origin, and that there is a
/// token whose claims can key a session. Returns the token and its claims, which are
/// unverified: only LiveKit's acceptance of this very token makes them true.
fn admit(
    gateway: &Gateway,
    uri: &http::Uri,
    headers: &HeaderMap,
) -> Result<(String, Claims), Refusal> {
    check_origin(gateway, headers)?;
    let Some(token) = access_token(uri, headers) else {
        return Err(Refusal(StatusCode::UNAUTHORIZED, "no access token"));
    };
    match token::unverified(&token) {
        Some(claims) => Ok((token, claims)),
        None => {
            // LiveKit would refuse it with the same status.
            info!("session refused: not a LiveKit access token");
            Err(Refusal(StatusCode::UNAUTHORIZED, "invalid token"))
        }
    }
}

/// The path and query LiveKit gets: the browser's, carrying exactly one `access_token`, the
/// one the gateway decoded, so that the token LiveKit verifies is the one whose claims key the
/// session (LiveKit prefers an `Authorization` header, which is therefore never forwarded).
fn upstream_path_and_query(uri: &http::Uri, token: &str) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    if let Some(raw) = uri.query() {
        for (key, value) in url::form_urlencoded::parse(raw.as_bytes()) {
            if key != "access_token" {
                query.append_pair(&key, &value);
            }
        }
    }
    query.append_pair("access_token", token);
    format!("{}?{}", uri.path(), query.finish())
}

fn upstream_request(
    gateway: &Gateway,
    uri: &http::Uri,
    token: &str,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<tungstenite::handshake::client::Request, Refusal> {
    use tungstenite::client::IntoClientRequest;
    let url = format!(
        "{}{}",
        gateway.inner.config.upstream_url.trim_end_matches('/'),
        upstream_path_and_query(uri, token)
    );
    let mut request = url.into_client_request().map_err(|e| {
        warn!(error = %e, "cannot build upstream request");
        Refusal(StatusCode::BAD_REQUEST, "malformed request")
    })?;
    let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(chain) => format!("{chain}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    let upstream_headers = request.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        upstream_headers.insert("x-forwarded-for", value);
    }
    if let Some(agent) = headers.get(header::USER_AGENT) {
        upstream_headers.insert(header::USER_AGENT, agent.clone());
    }
    Ok(request)
}

/// Tells LiveKit the participant is leaving (rather than letting it wait for a resume).
fn leave_frame() -> tungstenite::Message {
    let leave = livekit_protocol::SignalRequest {
        message: Some(livekit_protocol::signal_request::Message::Leave(
            livekit_protocol::LeaveRequest {
                reason: livekit_protocol::DisconnectReason::ClientInitiated as i32,
                ..Default::default()
            },
        )),
    };
    tungstenite::Message::Binary(leave.encode_to_vec().into())
}

async fn signal_ws(
    State(gateway): State<Gateway>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let metrics = gateway.inner.metrics.clone();
    let (token, claims) = match admit(&gateway, &uri, &headers) {
        Ok(admitted) => admitted,
        Err(refusal) => {
            metrics.session_ended(match refusal.0 {
                StatusCode::FORBIDDEN => "refused_origin",
                _ => "refused_token",
            });
            return refusal.into_response();
        }
    };
    // A practitioner removed from the case still holds a valid LiveKit token; LiveKit would
    // take it, the gateway does not, and does not even show it to LiveKit. The claims are not
    // verified yet, which is fine for a refusal: a forged one refuses only its forger.
    if gateway
        .inner
        .registry
        .is_revoked(claims.session_key())
        .await
    {
        info!(livekit_room = %claims.room, user = ?claims.matrix_user,
            "session refused: its token predates a revocation");
        metrics.session_ended("refused_revoked");
        return Refusal(StatusCode::FORBIDDEN, "access revoked").into_response();
    }
    let request = match upstream_request(&gateway, &uri, &token, &headers, peer) {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(),
    };
    let max_frame = gateway.inner.config.max_frame_bytes;
    let ws_config = tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(max_frame))
        .max_frame_size(Some(max_frame));
    // Open LiveKit's leg first: LiveKit checks the token (signature, expiry, grant) and the room
    // before upgrading, and the browser must get that answer (401 for a forged token, 404 for a
    // room that does not exist) rather than an upgrade that dies.
    let mut upstream =
        match tokio_tungstenite::connect_async_with_config(request, Some(ws_config), true).await {
            Ok((stream, _)) => stream,
            Err(tungstenite::Error::Http(response)) => {
                let status = response.status();
                info!(%status, claimed_identity = %claims.identity, "LiveKit refused the session");
                metrics.session_ended(if status == StatusCode::UNAUTHORIZED {
                    "refused_token"
                } else {
                    "refused_upstream"
                });
                let body = response.into_body().unwrap_or_default();
                return Response::builder()
                    .status(status)
                    .body(Body::from(body))
                    .unwrap_or_else(|_| plain(StatusCode::BAD_GATEWAY, "bad upstream answer"));
            }
            Err(e) => {
                warn!(error = %e, "LiveKit unreachable");
                metrics.upstream_error();
                metrics.session_ended("refused_unreachable");
                return plain(StatusCode::BAD_GATEWAY, "LiveKit unreachable");
            }
        };
    // LiveKit accepted this very token: from here on its claims are LiveKit's word. Registering
    // checks the revocations again, for one that arrived while LiveKit was being asked.
    let Some(session) = gateway.inner.registry.open(claims.session_key()).await else {
        info!(livekit_room = %claims.room, user = ?claims.matrix_user,
            "session refused: revoked while LiveKit was admitting it");
        let _ = upstream.send(leave_frame()).await;
        let _ = upstream.close(None).await;
        metrics.session_ended("refused_revoked");
        return Refusal(StatusCode::FORBIDDEN, "access revoked").into_response();
    };
    let Claims { identity, room, .. } = claims;
    let path = uri.path().to_owned();
    let ladder_config = gateway.inner.config.ladder_config();
    let fallback_config = gateway.inner.config.fallback.clone();
    let room: Arc<dyn RoomApi> = match &gateway.inner.control {
        Some(client) => Arc::new(control::ControlRoom::new(client.clone(), room)),
        None => Arc::new(control::NoControl),
    };
    ws.max_message_size(max_frame)
        .max_frame_size(max_frame)
        .on_upgrade(move |browser| {
            let ladder = Ladder::new(ladder_config, identity.clone());
            let fallback = Fallback::new(fallback_config, std::time::Instant::now());
            let context = relay::SessionContext {
                identity,
                path,
                session,
                ladder,
                fallback,
                metrics,
                room,
            };
            relay::run(browser, upstream, context)
        })
}

fn cors_headers(gateway: &Gateway, headers: &HeaderMap, response: &mut Response) {
    if let Some(origin) = headers.get(header::ORIGIN)
        && gateway.inner.config.origin_allowed(origin.to_str().ok())
    {
        let h = response.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
}

async fn preflight(State(gateway): State<Gateway>, headers: HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    cors_headers(&gateway, &headers, &mut response);
    let h = response.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization"),
    );
    response
}

/// `GET /rtc[/v1]/validate`: livekit-client asks this after a failed connection to learn why.
/// LiveKit's own validate answers (the gateway cannot judge a token); its status and body are
/// relayed. The browser masks a response without CORS headers as "unreachable", so they are
/// added here.
async fn validate(
    State(gateway): State<Gateway>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    let token = check_origin(&gateway, &headers).and_then(|()| {
        access_token(&uri, &headers).ok_or(Refusal(StatusCode::UNAUTHORIZED, "no access token"))
    });
    let mut response = match token {
        Err(refusal) => refusal.into_response(),
        Ok(token) => {
            let url = format!(
                "{}{}",
                gateway.inner.config.upstream_http_base(),
                upstream_path_and_query(&uri, &token)
            );
            match gateway.inner.http.request(Method::GET, url).send().await {
                Ok(upstream) => {
                    let status = upstream.status();
                    let body = upstream.bytes().await.unwrap_or_default();
                    (status, body).into_response()
                }
                Err(e) => {
                    warn!(error = %e.without_url(), "LiveKit unreachable for validate");
                    plain(StatusCode::BAD_GATEWAY, "LiveKit unreachable")
                }
            }
        }
    };
    cors_headers(&gateway, &headers, &mut response);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::{
        body::Body,
        extract::{Query, ws::WebSocketUpgrade as FakeUpgrade},
        http::Request,
    };
    use futures_util::StreamExt;
    use livekit_api::access_token::{AccessToken, TokenVerifier, VideoGrants};
    use std::sync::{Arc, Mutex};
    use tower::ServiceExt;

    const SECRET: &str = "the-livekit-secret-the-livekit-secret";

    fn token(secret: &str, identity: &str) -> String {
        AccessToken::with_api_key("devkey", secret)
            .with_identity(identity)
            .with_attributes([("org.koinos.matrix_user_id", "@bob:localhost")])
            .with_grants(VideoGrants {
                room_join: true,
                room: "r".into(),
                ..Default::default()
            })
            .to_jwt()
            .unwrap()
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
        let seen: Seen = Arc::default();
        let rtc = {
            let seen = seen.clone();
            move |uri: axum::http::Uri,
                  headers: HeaderMap,
                  Query(query): Query<Vec<(String, String)>>,
                  ws: FakeUpgrade| {
                let valid = livekit_check(&seen, &uri, &headers, query);
                async move {
                    if valid {
                        ws.on_upgrade(
                            |mut socket| async move { while socket.recv().await.is_some() {} },
                        )
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

    fn gateway_in_front_of(upstream_url: &str) -> Gateway {
        let config = Config {
            upstream_url: upstream_url.into(),
            control_grpc_url: String::new(),
            ..Config::default()
        };
        Gateway::new(config, None).unwrap()
    }

    /// Nothing listens there: a request that got past the gateway's own checks gets 502.
    fn gateway() -> Gateway {
        gateway_in_front_of("ws://127.0.0.1:9")
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
    async fn validate_relays_livekits_answer_with_cors() {
        let (upstream, seen) = fake_livekit().await;
        let gateway = gateway_in_front_of(&upstream);
        let forged = token("someone-elses-secret-someone-elses", "@bob:localhost:D");
        let response = get_from(
            gateway.clone(),
            &format!("/rtc/validate?access_token={forged}"),
            Some("http://localhost:8080"),
        )
        .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response
                .headers()
                .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
                .unwrap(),
            "http://localhost:8080"
        );
        assert_eq!(body_text(response).await, "invalid token: signature");

        let good = token(SECRET, "@bob:localhost:D");
        let response = get_from(
            gateway,
            &format!("/rtc/v1/validate?access_token={good}&protocol=16"),
            None,
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(body_text(response).await, "success");
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1].0, "/rtc/v1/validate");
        assert_eq!(seen[1].1, [good]);
    }

    #[tokio::test]
    async fn livekit_is_handed_exactly_the_token_the_gateway_read() {
        let (upstream, seen) = fake_livekit().await;
        let read = token(SECRET, "@bob:localhost:D");
        let other = token(SECRET, "@alice:localhost:D");
        let request = Request::get(format!(
            "/rtc/validate?access_token={read}&sdk=js&access_token={other}"
        ))
        .header(header::AUTHORIZATION, format!("Bearer {other}"))
        .body(Body::empty())
        .unwrap();
        let response = router(gateway_in_front_of(&upstream))
            .oneshot(request)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].1, [read], "one access_token, the first one");
        assert!(
            !seen[0].2,
            "no Authorization header, which LiveKit would prefer"
        );

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
        let app = router(gateway).into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("ws://{addr}")
    }

    async fn connect_status(url: &str) -> Result<(), (u16, String)> {
        match tokio_tungstenite::connect_async(url).await {
            Ok(_) => Ok(()),
            Err(tungstenite::Error::Http(response)) => Err((
                response.status().as_u16(),
                String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                    .into_owned(),
            )),
            Err(e) => panic!("unexpected {e}"),
        }
    }

    fn ended(gateway: &Gateway, outcome: &str) -> String {
        let prefix = format!("koinos_gateway_sessions_ended_total{{outcome=\"{outcome}\"}} ");
        gateway
            .metrics()
            .render(0, 0)
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
            .unwrap_or_else(|| "0".into())
    }

    #[tokio::test]
    async fn a_forged_token_gets_livekits_401_and_nothing_is_registered() {
        let (upstream, seen) = fake_livekit().await;
        let gateway = gateway_in_front_of(&upstream);
        let url = serve(gateway.clone()).await;
        let forged = token("someone-elses-secret-someone-elses", "@bob:localhost:D");
        let refused = connect_status(&format!("{url}/rtc?access_token={forged}")).await;
        assert_eq!(
            refused,
            Err((401, "invalid token: signature".to_owned())),
            "LiveKit's own refusal, relayed"
        );
        assert_eq!(seen.lock().unwrap()[0].1, [forged]);
        assert_eq!(gateway.registry().stats().await, (0, 0));
        assert_eq!(ended(&gateway, "refused_token"), "1");

        // Garbage cannot key a session: refused with the same status, LiveKit not bothered.
        let refused = connect_status(&format!("{url}/rtc?access_token=garbage")).await;
        assert_eq!(refused.unwrap_err().0, 401);
        assert_eq!(seen.lock().unwrap().len(), 1);

        // The genuine token is accepted by LiveKit, and only then is the session registered.
        let good = token(SECRET, "@bob:localhost:D");
        let (mut ws, _) =
            tokio_tungstenite::connect_async(format!("{url}/rtc?access_token={good}").as_str())
                .await
                .unwrap();
        let mut registered = (0, 0);
        for _ in 0..50 {
            registered = gateway.registry().stats().await;
            if registered == (1, 1) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(registered, (1, 1));
        ws.close(None).await.unwrap();
        while ws.next().await.is_some() {}
    }

    #[tokio::test]
    async fn a_revoked_users_old_token_is_refused_before_livekit_sees_it() {
        let (upstream, seen) = fake_livekit().await;
        let gateway = gateway_in_front_of(&upstream);
        let url = serve(gateway.clone()).await;
        let old = token(SECRET, "@bob:localhost:D");
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        gateway.registry().revoke(revocations::Revocation {
            livekit_room: "r".into(),
            matrix_user: Some("@bob:localhost".into()),
            revoked_at_ms: now_ms + 1_000,
        });
        let refused = connect_status(&format!("{url}/rtc?access_token={old}")).await;
        assert_eq!(refused.unwrap_err().0, 403);
        assert!(seen.lock().unwrap().is_empty(), "LiveKit never saw it");
        assert_eq!(ended(&gateway, "refused_revoked"), "1");
        assert_eq!(gateway.registry().stats().await, (0, 0));
    }

    #[tokio::test]
    async fn foreign_origin_is_refused() {
        let response = get_from(
            gateway(),
            &format!("/rtc/validate?access_token={}", token(SECRET, "x")),
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
            get_from(gateway(), "/rtc/validate", None).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }

    #[tokio::test]
    async fn validate_without_livekit_is_502() {
        let response = get_from(
            gateway(),
            &format!("/rtc/v1/validate?access_token={}", token(SECRET, "x")),
            None,
        )
        .await;
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    }

    #[tokio::test]
    async fn head_root_answers() {
        let response = router(gateway())
            .oneshot(Request::head("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}
