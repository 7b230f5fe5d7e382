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
pub mod fallback;
pub mod ladder;
pub mod metrics;
pub mod relay;
pub mod revocations;
pub mod signal;

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Router,
    body::Body,
    extract::{ConnectInfo, OriginalUri, State, WebSocketUpgrade},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use livekit_api::access_token::TokenVerifier;
use tokio_tungstenite::tungstenite;
use tracing::{info, warn};

use crate::{
    config::Config,
    fallback::Fallback,
    ladder::Ladder,
    metrics::Metrics,
    revocations::{MATRIX_USER_ATTRIBUTE, Registry, SessionKey},
};

#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    verifier: TokenVerifier,
    http: reqwest::Client,
    registry: Registry,
    metrics: Arc<Metrics>,
    rooms: Arc<livekit_api::services::room::RoomClient>,
}

impl Gateway {
    /// Must be called within a Tokio runtime (it starts the revocation registry's task).
    pub fn new(config: Config, api_secret: &str) -> Self {
        let verifier = TokenVerifier::with_api_key(&config.api_key, api_secret);
        let rooms = Arc::new(livekit_api::services::room::RoomClient::with_api_key(
            &config.upstream_http_base(),
            &config.api_key,
            api_secret,
        ));
        let registry = Registry::start(std::time::Duration::from_secs(
            config.revocation_memory_secs,
        ));
        Self {
            inner: Arc::new(Inner {
                config,
                verifier,
                http: reqwest::Client::new(),
                registry,
                metrics: Arc::new(Metrics::default()),
                rooms,
            }),
        }
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

/// Checks what the gateway itself must check before anything reaches LiveKit. Returns the
/// identity and what a revocation would match.
fn admit(
    gateway: &Gateway,
    uri: &http::Uri,
    headers: &HeaderMap,
) -> Result<(String, SessionKey), Refusal> {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if !gateway.inner.config.origin_allowed(origin) {
        warn!(origin, "session refused: origin not allowed");
        return Err(Refusal(StatusCode::FORBIDDEN, "origin not allowed"));
    }
    let Some(token) = access_token(uri, headers) else {
        return Err(Refusal(StatusCode::UNAUTHORIZED, "no access token"));
    };
    match gateway.inner.verifier.verify(&token) {
        Ok(mut claims) => {
            let key = SessionKey {
                livekit_room: claims.video.room,
                matrix_user: claims.attributes.remove(MATRIX_USER_ATTRIBUTE),
                token_nbf: claims.nbf as i64,
            };
            Ok((claims.sub, key))
        }
        Err(e) => {
            // The reason (expired, bad signature…) is logged; the client gets LiveKit's answer.
            info!(reason = %e, "session refused: invalid token");
            Err(Refusal(StatusCode::UNAUTHORIZED, "invalid token"))
        }
    }
}

fn upstream_request(
    gateway: &Gateway,
    uri: &http::Uri,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<tungstenite::handshake::client::Request, Refusal> {
    use tungstenite::client::IntoClientRequest;
    let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let url = format!(
        "{}{}",
        gateway.inner.config.upstream_url.trim_end_matches('/'),
        path_and_query
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

async fn signal_ws(
    State(gateway): State<Gateway>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let metrics = gateway.inner.metrics.clone();
    let (identity, key) = match admit(&gateway, &uri, &headers) {
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
    // take it, the gateway does not.
    let livekit_room = key.livekit_room.clone();
    let Some(session) = gateway.inner.registry.open(key).await else {
        metrics.session_ended("refused_revoked");
        return Refusal(StatusCode::FORBIDDEN, "access revoked").into_response();
    };
    let request = match upstream_request(&gateway, &uri, &headers, peer) {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(),
    };
    let max_frame = gateway.inner.config.max_frame_bytes;
    let ws_config = tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(max_frame))
        .max_frame_size(Some(max_frame));
    // Open LiveKit's leg first: LiveKit checks the token and the room before upgrading, and the
    // browser must get that answer (e.g. 404 room not found) rather than an upgrade that dies.
    let upstream =
        match tokio_tungstenite::connect_async_with_config(request, Some(ws_config), true).await {
            Ok((stream, _)) => stream,
            Err(tungstenite::Error::Http(response)) => {
                let status = response.status();
                info!(%status, %identity, "LiveKit refused the session");
                metrics.session_ended("refused_upstream");
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
    let path = uri.path().to_owned();
    let ladder_config = gateway.inner.config.ladder_config();
    let fallback_config = gateway.inner.config.fallback.clone();
    let room = Arc::new(relay::LiveKitRoom {
        client: gateway.inner.rooms.clone(),
        name: livekit_room,
    });
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
/// The browser masks a response without CORS headers as "unreachable", so they are added here.
async fn validate(
    State(gateway): State<Gateway>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    let mut response = match admit(&gateway, &uri, &headers) {
        Err(refusal) => refusal.into_response(),
        Ok(_) => {
            let url = format!(
                "{}{}",
                gateway.inner.config.upstream_http_base(),
                uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
            );
            let mut request = gateway.inner.http.request(Method::GET, url);
            if let Some(auth) = headers.get(header::AUTHORIZATION) {
                request = request.header(header::AUTHORIZATION, auth.clone());
            }
            match request.send().await {
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
    use axum::{body::Body, http::Request};
    use tower::ServiceExt;

    fn gateway() -> Gateway {
        let config = Config {
            api_key: "devkey".into(),
            api_secret: Some("secret".into()),
            // Nothing listens here: a request that got past admission would fail with 502.
            upstream_url: "ws://127.0.0.1:9".into(),
            ..Config::default()
        };
        Gateway::new(config, "secret")
    }

    fn token(secret: &str) -> String {
        livekit_api::access_token::AccessToken::with_api_key("devkey", secret)
            .with_identity("@alice:localhost:DEV")
            .with_grants(livekit_api::access_token::VideoGrants {
                room_join: true,
                room: "r".into(),
                ..Default::default()
            })
            .to_jwt()
            .unwrap()
    }

    async fn get(uri: &str, origin: Option<&str>) -> Response {
        let mut request = Request::get(uri);
        if let Some(origin) = origin {
            request = request.header(header::ORIGIN, origin);
        }
        router(gateway())
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn validate_refuses_wrong_secret_with_cors() {
        let response = get(
            &format!("/rtc/validate?access_token={}", token("wrong-secret")),
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
    }

    #[tokio::test]
    async fn validate_with_good_token_reaches_upstream() {
        let response = get(
            &format!("/rtc/v1/validate?access_token={}", token("secret")),
            None,
        )
        .await;
        // Admission passed; the (absent) upstream is what failed.
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    }

    #[tokio::test]
    async fn foreign_origin_is_refused() {
        let response = get(
            &format!("/rtc/validate?access_token={}", token("secret")),
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
            get("/rtc/validate", None).await.status(),
            StatusCode::UNAUTHORIZED
        );
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
