//! koinos-rtc gateway: sits on the LiveKit signalling path between browsers and LiveKit.
//!
//! Nobody reaches LiveKit but through a gateway, and no gateway lets anyone through but on
//! control's word: clients hold a *ticket* from control, which LiveKit refuses; for every
//! connection (a join or a resume) the gateway asks control to admit it (membership and seats
//! checked now) and opens LiveKit's leg with the LiveKit token control minted for that one
//! connection, which never reaches the client. LiveKit's own refreshed tokens are withheld;
//! connected clients get renewed tickets from control instead.
//!
//! Concurrency model: every browser session is one task ([`relay::run`]) that owns both legs
//! of that session (browser WebSocket and LiveKit WebSocket) and everything known about it; no
//! state is shared between sessions, so any number of gateway instances can stand in front of
//! one LiveKit. The two legs live and die together: when either closes, the task closes the
//! other, so livekit-client runs its own resume/reconnect against a fresh pair. The one shared
//! piece, which sessions are open for whom and whether the gateway is caught up with control's
//! revocations, is owned by the revocation registry's task (`revocations.rs`) and reached
//! through channels.

pub mod config;
pub mod control;
pub mod fallback;
pub mod ladder;
pub mod metrics;
pub mod relay;
pub mod revocations;
pub mod signal;
pub mod token;

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    extract::{FromRequestParts, OriginalUri, State, WebSocketUpgrade},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
    routing::get,
};
use futures_util::SinkExt;
use prost::Message as _;
use tokio_tungstenite::tungstenite;
use tracing::{info, warn};

use crate::{
    config::Config,
    control::{Control, Refused},
    fallback::Fallback,
    ladder::Ladder,
    metrics::Metrics,
    revocations::{NotAdmitted, Registry},
    token::Claims,
};

#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    http: reqwest::Client,
    registry: Registry,
    metrics: Arc<Metrics>,
    /// Control: admits every session, renews tickets, RoomService on the gateway's behalf.
    control: Arc<dyn Control>,
    /// Sessions opened per client address (each costs control an admission).
    sessions_per_address: koinos_net::AddressLimiter,
}

impl Gateway {
    /// Must be called within a Tokio runtime (it starts the revocation registry's task). The
    /// gateway admits nothing until the registry is told it caught up with control
    /// ([`revocations::follow_control`] does that).
    pub fn new(config: Config, control: Arc<dyn Control>) -> Self {
        let sessions_per_address = koinos_net::AddressLimiter::new(
            config.session_rate_burst,
            config.session_rate_per_minute,
        );
        Self {
            inner: Arc::new(Inner {
                config,
                http: reqwest::Client::new(),
                registry: Registry::start(),
                metrics: Arc::new(Metrics::default()),
                control,
                sessions_per_address,
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

    pub fn config(&self) -> &Config {
        &self.inner.config
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
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(gateway)
}

/// Ready only while caught up with control's revocations: before that (starting, or cut off from
/// control) the gateway admits no session, so a balancer should send none to it.
async fn readyz(State(gateway): State<Gateway>) -> Response {
    if gateway.inner.registry.stats().await.caught_up {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "catching up with control").into_response()
    }
}

async fn metrics_text(State(gateway): State<Gateway>) -> Response {
    let stats = gateway.inner.registry.stats().await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        gateway.inner.metrics.render(stats),
    )
        .into_response()
}

/// A request the gateway answers itself, without reaching LiveKit.
#[derive(Debug, Clone)]
struct Refusal {
    status: StatusCode,
    message: String,
    /// The `sessions_ended` outcome it is counted under.
    outcome: &'static str,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>, outcome: &'static str) -> Self {
        Self {
            status,
            message: message.into(),
            outcome,
        }
    }

    fn from_control(refused: Refused) -> Self {
        match refused {
            Refused::Ticket => {
                Self::new(StatusCode::UNAUTHORIZED, "invalid token", "refused_token")
            }
            Refused::NotMember => Self::new(
                StatusCode::FORBIDDEN,
                "not a member of this case",
                "refused_not_member",
            ),
            Refused::NoSeat(message) => Self::new(StatusCode::CONFLICT, message, "refused_no_seat"),
            Refused::Unavailable => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the call service is temporarily unavailable",
                "refused_control_unavailable",
            ),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.status, self.message).into_response()
    }
}

/// The client's address: the socket's peer, or through a trusted proxy its `X-Forwarded-For`.
struct Caller(IpAddr);

impl FromRequestParts<Gateway> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        gateway: &Gateway,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(koinos_net::caller(
            &parts.extensions,
            &parts.headers,
            &gateway.inner.config.http.trusted_proxies,
        )))
    }
}

/// The client's ticket from `?access_token=` or `Authorization: Bearer`, as LiveKit accepts
/// tokens.
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
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "origin not allowed",
            "refused_origin",
        ));
    }
    Ok(())
}

/// What the gateway checks before control is asked: the origin, the client address's rate, and
/// that there is a ticket whose claims can key a pending session. The claims are unverified:
/// only control's admission makes them true.
fn admit(
    gateway: &Gateway,
    uri: &http::Uri,
    headers: &HeaderMap,
    from: IpAddr,
) -> Result<(String, Claims), Refusal> {
    check_origin(gateway, headers)?;
    if let Err(wait) = gateway
        .inner
        .sessions_per_address
        .check(from, Instant::now())
    {
        info!(%from, "session refused: too many from this address");
        return Err(Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many sessions from this address; retry in {} ms",
                wait.as_millis() + 1
            ),
            "refused_address_limit",
        ));
    }
    let Some(ticket) = access_token(uri, headers) else {
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "no access token",
            "refused_token",
        ));
    };
    match token::unverified(&ticket) {
        Some(claims) => Ok((ticket, claims)),
        None => {
            info!("session refused: not a ticket");
            Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "invalid token",
                "refused_token",
            ))
        }
    }
}

/// The path and query LiveKit gets: the browser's, carrying exactly one `access_token`, the
/// LiveKit token control minted for this connection (LiveKit prefers an `Authorization` header,
/// which is therefore never forwarded).
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
    from: IpAddr,
) -> Result<tungstenite::handshake::client::Request, Refusal> {
    use tungstenite::client::IntoClientRequest;
    let url = format!(
        "{}{}",
        gateway.inner.config.upstream_url.trim_end_matches('/'),
        upstream_path_and_query(uri, token)
    );
    let mut request = url.into_client_request().map_err(|e| {
        warn!(error = %e, "cannot build upstream request");
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "malformed request",
            "refused_upstream",
        )
    })?;
    let upstream_headers = request.headers_mut();
    // The client's address as the gateway judged it (LiveKit records it); never a chain the
    // client wrote itself.
    if let Ok(value) = HeaderValue::from_str(&from.to_string()) {
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
    Caller(from): Caller,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let metrics = gateway.inner.metrics.clone();
    match open_session(&gateway, from, &uri, &headers).await {
        Ok(opened) => {
            let max_frame = gateway.inner.config.max_frame_bytes;
            let context = relay::SessionContext {
                identity: opened.identity.clone(),
                path: uri.path().to_owned(),
                session: opened.session,
                ladder: Ladder::new(gateway.inner.config.ladder_config(), opened.identity),
                fallback: Fallback::new(
                    gateway.inner.config.fallback.clone(),
                    std::time::Instant::now(),
                ),
                metrics,
                room: gateway.inner.control.room(opened.livekit_room),
                control: gateway.inner.control.clone(),
                ticket: opened.ticket,
                ice_servers: opened.ice_servers,
                renew_every: Duration::from_secs(gateway.inner.config.ticket_renew_interval_secs),
                browser_silence: Duration::from_secs(
                    gateway.inner.config.browser_silence_timeout_secs,
                ),
            };
            let upstream = opened.upstream;
            ws.max_message_size(max_frame)
                .max_frame_size(max_frame)
                .on_upgrade(move |browser| relay::run(browser, upstream, context))
        }
        Err(refusal) => {
            metrics.session_ended(refusal.outcome);
            refusal.into_response()
        }
    }
}

/// A session ready to relay: admitted by control, accepted by LiveKit, registered.
struct Opened {
    identity: String,
    livekit_room: String,
    ticket: String,
    ice_servers: Vec<livekit_protocol::IceServer>,
    session: revocations::Session,
    upstream: relay::Upstream,
}

async fn open_session(
    gateway: &Gateway,
    from: IpAddr,
    uri: &http::Uri,
    headers: &HeaderMap,
) -> Result<Opened, Refusal> {
    let (ticket, claims) = admit(gateway, uri, headers, from)?;
    // Registered before control decides, so that a revocation meanwhile refuses it.
    let pending = gateway
        .inner
        .registry
        .begin(claims.session_key())
        .await
        .map_err(|_| {
            warn!("session refused: not caught up with control's revocations");
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the gateway is catching up with the call service; retry shortly",
                "refused_catching_up",
            )
        })?;
    let admitted = gateway
        .inner
        .control
        .admit(&ticket, false)
        .await
        .map_err(|refused| {
            info!(claimed_user = %claims.matrix_user, ?refused, "control did not admit the session");
            Refusal::from_control(refused)
        })?;
    if (
        &admitted.livekit_room,
        &admitted.matrix_user,
        &admitted.identity,
    ) != (&claims.room, &claims.matrix_user, &claims.identity)
    {
        // Control verified the ticket whose claims these are: they cannot differ.
        warn!("control admitted other claims than the ticket's; refused");
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "invalid token",
            "refused_token",
        ));
    }
    let request = upstream_request(gateway, uri, &admitted.livekit_token, headers, from)?;
    let max_frame = gateway.inner.config.max_frame_bytes;
    let ws_config = tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(max_frame))
        .max_frame_size(Some(max_frame));
    // Open LiveKit's leg first: LiveKit checks the token and the room before upgrading, and the
    // browser must get that answer (404 for a room that does not exist) rather than an upgrade
    // that dies.
    let mut upstream =
        match tokio_tungstenite::connect_async_with_config(request, Some(ws_config), true).await {
            Ok((stream, _)) => stream,
            Err(tungstenite::Error::Http(response)) => {
                let status = response.status();
                info!(%status, identity = %admitted.identity, "LiveKit refused the session");
                let body = response.into_body().unwrap_or_default();
                return Err(Refusal::new(
                    status,
                    String::from_utf8_lossy(&body).into_owned(),
                    "refused_upstream",
                ));
            }
            Err(e) => {
                warn!(error = %e, "LiveKit unreachable");
                gateway.inner.metrics.upstream_error();
                return Err(Refusal::new(
                    StatusCode::BAD_GATEWAY,
                    "LiveKit unreachable",
                    "refused_unreachable",
                ));
            }
        };
    let session = match pending.open().await {
        Ok(session) => session,
        Err(NotAdmitted::Revoked | NotAdmitted::CatchingUp) => {
            info!(livekit_room = %claims.room, user = %claims.matrix_user,
                "session refused: revoked while it was being admitted");
            let _ = upstream.send(leave_frame()).await;
            let _ = upstream.close(None).await;
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "access revoked",
                "refused_revoked",
            ));
        }
    };
    Ok(Opened {
        identity: admitted.identity,
        livekit_room: admitted.livekit_room,
        ticket,
        ice_servers: admitted.ice_servers,
        session,
        upstream,
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
/// Control judges the ticket (without taking a seat); if it would be admitted, LiveKit's own
/// validate answers for the token control minted (e.g. that the room no longer exists), and its
/// status and body are relayed. The browser masks a response without CORS headers as
/// "unreachable", so they are added here.
async fn validate(
    State(gateway): State<Gateway>,
    Caller(from): Caller,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    let mut response = match admit(&gateway, &uri, &headers, from) {
        Err(refusal) => refusal.into_response(),
        Ok((ticket, _)) => match gateway.inner.control.admit(&ticket, true).await {
            Err(refused) => Refusal::from_control(refused).into_response(),
            Ok(admitted) => {
                let url = format!(
                    "{}{}",
                    gateway.inner.config.upstream_http_base(),
                    upstream_path_and_query(&uri, &admitted.livekit_token)
                );
                match gateway.inner.http.request(Method::GET, url).send().await {
                    Ok(upstream) => {
                        let status = upstream.status();
                        let body = upstream.bytes().await.unwrap_or_default();
                        (status, Body::from(body)).into_response()
                    }
                    Err(e) => {
                        warn!(error = %e.without_url(), "LiveKit unreachable for validate");
                        (StatusCode::BAD_GATEWAY, "LiveKit unreachable").into_response()
                    }
                }
            }
        },
    };
    cors_headers(&gateway, &headers, &mut response);
    response
}

/// What the unit tests of several modules build alike.
#[cfg(test)]
mod test_support;

/// The HTTP front's tests: the router driven without a socket.
#[cfg(test)]
mod tests;
