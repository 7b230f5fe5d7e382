//! The JSON REST transport: `/api/rtc/*`, health, the page's runtime config and the page itself.
//! Built by [`router`] so that tests drive it without a socket (`tower::ServiceExt::oneshot`).

use std::{net::IpAddr, path::PathBuf, sync::Arc};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{
        DefaultBodyLimit, FromRequest, FromRequestParts, Request, State, rejection::BytesRejection,
    },
    http::{HeaderValue, StatusCode, header, request::Parts},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use livekit_api::webhooks::WebhookReceiver;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tower_http::{
    cors::{Any, CorsLayer},
    services::{ServeDir, ServeFile},
    trace::TraceLayer,
};

use crate::{
    enforcement,
    error::ApiError,
    reaper::Hint,
    service::{
        EndCallRequest, LegacySfuRequest, RtcService, SfuRequest, TokenRequest, TurnRequest,
    },
};

/// Request bodies are small JSON objects; anything larger is refused before parsing.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub service: Arc<RtcService>,
    /// Served as `/config.json`: what the page needs to find the homeserver and control.
    pub web_config: Arc<serde_json::Value>,
    pub webhooks: Arc<LiveKitWebhooks>,
    /// Proxies whose `X-Forwarded-For` names the caller (the per-address limit's key).
    pub trusted_proxies: Arc<Vec<koinos_net::Cidr>>,
    /// The headers every answer carries (see [`SecurityHeaders`]).
    pub security_headers: Arc<SecurityHeaders>,
}

/// LiveKit's webhooks: verified with the API secret (LiveKit signs the body's SHA-256 into a
/// JWT in `Authorization`), then used as hints: a participant who joined is judged by
/// enforcement at once (MSC4195), one who left by the reaper.
pub struct LiveKitWebhooks {
    pub receiver: WebhookReceiver,
    pub hints: mpsc::Sender<Hint>,
    pub enforcement: mpsc::Sender<enforcement::Hint>,
}

/// What a security reviewer expects of a page that handles patient cases, on every answer:
/// - a Content-Security-Policy that allows scripts, styles, workers and WebAssembly from this
///   origin only (livekit-client's frame-encryption worker and matrix-js-sdk's crypto included),
///   connections to this origin, the homeserver and the gateways only, no plugins, no `<base>`
///   games, and no framing by anyone (`frame-ancestors 'none'`, and `X-Frame-Options: DENY`
///   for older browsers);
/// - `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer` (case ids are in the
///   page's URL fragment, which is never sent, but nothing else leaks either),
///   `Cross-Origin-Opener-Policy: same-origin`, and a Permissions-Policy that gives camera,
///   microphone and screen capture to this origin only.
pub struct SecurityHeaders {
    csp: HeaderValue,
}

impl SecurityHeaders {
    /// `connect`: the origins the page talks to besides its own (homeserver, gateways, both as
    /// `http(s)` and `ws(s)`).
    pub fn new(connect: &[String]) -> Self {
        let connect = connect.join(" ");
        let csp = format!(
            "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self' blob:; \
             connect-src 'self' {connect}; img-src 'self' data: blob:; media-src 'self' blob: \
             mediastream:; style-src 'self'; font-src 'self'; object-src 'none'; \
             base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        );
        Self {
            csp: HeaderValue::from_str(&csp).unwrap_or_else(|_| {
                HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'")
            }),
        }
    }

    fn apply(&self, headers: &mut http::HeaderMap) {
        headers.insert(header::CONTENT_SECURITY_POLICY, self.csp.clone());
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        headers.insert(
            "cross-origin-opener-policy",
            HeaderValue::from_static("same-origin"),
        );
        headers.insert(
            "permissions-policy",
            HeaderValue::from_static(
                "camera=(self), microphone=(self), display-capture=(self), geolocation=(), \
                 payment=(), usb=()",
            ),
        );
    }
}

async fn security_headers(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    state.security_headers.apply(response.headers_mut());
    response
}

/// The caller's address: the socket's peer, or through a trusted proxy its `X-Forwarded-For`.
pub struct ClientAddr(pub IpAddr);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(koinos_net::caller(
            &parts.extensions,
            &parts.headers,
            &state.trusted_proxies,
        )))
    }
}

/// LiveKit's webhook bodies carry whole room and participant objects; still bounded.
pub const MAX_WEBHOOK_BYTES: usize = 256 * 1024;

pub fn router(state: AppState, web_dir: Option<PathBuf>) -> Router {
    // Element Call runs on its own origin and calls the JWT endpoints cross-origin, as it does
    // with lk-jwt-service; the endpoints authenticate by body, not by cookie.
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([http::Method::POST, http::Method::OPTIONS])
        .allow_headers([header::CONTENT_TYPE]);
    let api = Router::new()
        .route("/token", post(issue_token))
        .route("/turn", post(issue_turn))
        .route("/end", post(end_call))
        // lk-jwt-service's endpoints, so Element Call / Element X can use control directly.
        .route("/sfu/get", post(sfu_get))
        .route("/get_token", post(get_token))
        .fallback(|| async { ApiError::Unrecognized })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(cors)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));

    let mut app = Router::new()
        .nest("/api/rtc", api)
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/config.json", get(web_config))
        .route(
            "/livekit/webhook",
            post(livekit_webhook).layer(DefaultBodyLimit::max(MAX_WEBHOOK_BYTES)),
        );
    if let Some(dir) = web_dir {
        let index = dir.join("index.html");
        app = app.fallback_service(ServeDir::new(dir).fallback(ServeFile::new(index)));
    }
    app.layer(middleware::from_fn_with_state(
        state.clone(),
        security_headers,
    ))
    .layer(TraceLayer::new_for_http())
    .with_state(state)
}

async fn issue_token(
    State(state): State<AppState>,
    ClientAddr(from): ClientAddr,
    ApiJson(request): ApiJson<TokenRequest>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(state.service.issue_token(request, from).await?))
}

async fn issue_turn(
    State(state): State<AppState>,
    ClientAddr(from): ClientAddr,
    ApiJson(request): ApiJson<TurnRequest>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(state.service.issue_turn(request, from).await?))
}

async fn end_call(
    State(state): State<AppState>,
    ClientAddr(from): ClientAddr,
    ApiJson(request): ApiJson<EndCallRequest>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(state.service.end_call(request, from).await?))
}

async fn sfu_get(
    State(state): State<AppState>,
    ClientAddr(from): ClientAddr,
    ApiJson(request): ApiJson<LegacySfuRequest>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(state.service.sfu_get(request, from).await?))
}

async fn get_token(
    State(state): State<AppState>,
    ClientAddr(from): ClientAddr,
    ApiJson(request): ApiJson<SfuRequest>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(state.service.get_token(request, from).await?))
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.service.render_metrics().await,
    )
        .into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.service.is_ready().await {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn livekit_webhook(
    State(state): State<AppState>,
    headers: header::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let body = body.map_err(|_| ApiError::TooLarge)?;
    let body = std::str::from_utf8(&body)
        .map_err(|_| ApiError::NotJson("webhook body is not UTF-8".into()))?;
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v))
        .ok_or(ApiError::Unauthorized)?;
    let event = state.webhooks.receiver.receive(body, auth).map_err(|e| {
        tracing::warn!(error = %e, "LiveKit webhook refused");
        ApiError::Unauthorized
    })?;
    state.service.metrics.webhook(&event.event);
    // Full channels mean a run is already pending.
    match event.event.as_str() {
        // Someone is in a call: is it a joined member of the case? (MSC4195) And the seat
        // control booked for the connection is now LiveKit's to count.
        "participant_joined" => {
            if let (Some(room), Some(participant)) = (&event.room, &event.participant) {
                state
                    .service
                    .seats
                    .settled(&room.name, &participant.identity);
            }
            let _ = state.webhooks.enforcement.try_send(enforcement::Hint);
        }
        // A participant whose connection never completed (or dropped) is reported as aborted,
        // not left.
        "participant_left" | "participant_connection_aborted" | "room_finished" => {
            let _ = state.webhooks.hints.try_send(Hint);
        }
        _ => {}
    }
    Ok(StatusCode::OK)
}

async fn web_config(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json((*state.web_config).clone())
}

/// `Json` with Matrix-shaped rejections that say exactly what is wrong with the body.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ApiError::NotJson(
                "Content-Type must be application/json".into(),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if let Some(secs) = timed_out(&e) {
                return ApiError::Timeout { secs };
            }
            match e {
                BytesRejection::FailedToBufferBody(ref inner)
                    if inner.status() == StatusCode::PAYLOAD_TOO_LARGE =>
                {
                    ApiError::TooLarge
                }
                _ => ApiError::BadJson("could not read the request body".into()),
            }
        })?;
        serde_json::from_slice(&bytes).map(ApiJson).map_err(|e| {
            if e.is_syntax() || e.is_eof() {
                ApiError::NotJson(format!("request body is not valid JSON: {e}"))
            } else {
                ApiError::BadJson(format!("invalid request: {e}"))
            }
        })
    }
}

/// The listener's body deadline, if that is why the body could not be read.
fn timed_out(error: &(dyn std::error::Error + 'static)) -> Option<u64> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(timeout) = e.downcast_ref::<koinos_net::BodyTimedOut>() {
            return Some(timeout.0.as_secs());
        }
        cause = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::testing::{FakeLiveKit, fake_service};

    fn app() -> Router {
        let state = AppState {
            service: Arc::new(fake_service(Arc::new(FakeLiveKit::default()))),
            web_config: Arc::new(serde_json::json!({"homeserver_url": "http://hs"})),
            webhooks: Arc::new(LiveKitWebhooks {
                receiver: WebhookReceiver::new(
                    livekit_api::access_token::TokenVerifier::with_api_key(
                        "devkey",
                        "secret-secret-secret-secret-secret",
                    ),
                ),
                hints: crate::reaper::hints().0,
                enforcement: crate::enforcement::hints().0,
            }),
            trusted_proxies: Arc::new(vec![]),
            security_headers: Arc::new(SecurityHeaders::new(&[
                "http://hs".into(),
                "ws://localhost:7880".into(),
            ])),
        };
        router(state, None)
    }

    async fn post_token(body: &str, content_type: &str) -> (StatusCode, serde_json::Value) {
        let response = app()
            .oneshot(
                Request::post("/api/rtc/token")
                    .header(header::CONTENT_TYPE, content_type)
                    .body(Body::from(body.to_owned()))
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    fn body(token: &str, room: &str, extra: &str) -> String {
        format!(
            r#"{{"room_id":"{room}","openid_token":{{"access_token":"{token}","token_type":"Bearer","matrix_server_name":"localhost","expires_in":3600}},"device_id":"DEV"{extra}}}"#
        )
    }

    #[tokio::test]
    async fn member_gets_token() {
        let (status, json) = post_token(
            &body("alice-token", "!case:localhost", ""),
            "application/json",
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{json}");
        assert_eq!(json["identity"], "@alice:localhost:DEV");
        assert_eq!(json["url"], "ws://localhost:7880");
        assert!(json["jwt"].as_str().unwrap().split('.').count() == 3);
    }

    #[tokio::test]
    async fn non_member_gets_403_m_forbidden() {
        let (status, json) = post_token(
            &body("mallory-token", "!case:localhost", ""),
            "application/json",
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(json["errcode"], "M_FORBIDDEN");
        assert!(json.get("jwt").is_none());
    }

    #[tokio::test]
    async fn bad_openid_token_gets_401() {
        let (status, json) =
            post_token(&body("forged", "!case:localhost", ""), "application/json").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(json["errcode"], "M_UNAUTHORIZED");
    }

    #[tokio::test]
    async fn unknown_field_is_rejected_by_name() {
        let (status, json) = post_token(
            &body("alice-token", "!case:localhost", r#","admin":true"#),
            "application/json",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(json["errcode"], "M_BAD_JSON");
        assert!(
            json["error"]
                .as_str()
                .unwrap()
                .contains("unknown field `admin`"),
            "{json}"
        );
    }

    #[tokio::test]
    async fn missing_field_is_rejected_by_name() {
        let (status, json) =
            post_token(r#"{"room_id":"!case:localhost"}"#, "application/json").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            json["error"].as_str().unwrap().contains("openid_token"),
            "{json}"
        );
    }

    #[tokio::test]
    async fn malformed_json_and_wrong_content_type_are_400_not_json() {
        let (status, json) = post_token("{not json", "application/json").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(json["errcode"], "M_NOT_JSON");
        let (status, json) =
            post_token(&body("alice-token", "!case:localhost", ""), "text/plain").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(json["errcode"], "M_NOT_JSON");
    }

    #[tokio::test]
    async fn oversized_body_is_413() {
        let huge = body(&"a".repeat(MAX_BODY_BYTES), "!case:localhost", "");
        let (status, json) = post_token(&huge, "application/json").await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(json["errcode"], "M_TOO_LARGE");
    }

    #[tokio::test]
    async fn turn_route_answers_with_coturn_credentials() {
        let response = app()
            .oneshot(
                Request::post("/api/rtc/turn")
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(
                        r#"{"room_id":"!case:localhost","openid_token":{"access_token":"alice-token","token_type":"Bearer","matrix_server_name":"localhost","expires_in":3600}}"#,
                    ))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["username"], "4600:@alice:localhost");
        assert!(json["password"].as_str().unwrap().ends_with('='));
    }

    #[tokio::test]
    async fn unknown_endpoints_are_404_and_wrong_methods_405_both_m_unrecognized() {
        // Element Call probes `delegate_delayed_leave` and treats anything but 404 as "offered".
        for (request, status) in [
            (
                Request::post("/api/rtc/delegate_delayed_leave"),
                StatusCode::NOT_FOUND,
            ),
            (Request::get("/api/rtc/nothing/here"), StatusCode::NOT_FOUND),
            (
                Request::get("/api/rtc/token"),
                StatusCode::METHOD_NOT_ALLOWED,
            ),
        ] {
            let response = app()
                .oneshot(
                    request
                        .header(header::CONTENT_TYPE, "application/json")
                        .body(Body::from("{}"))
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(response.status(), status);
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(json["errcode"], "M_UNRECOGNIZED");
        }
    }

    #[tokio::test]
    async fn every_answer_carries_the_security_headers() {
        for request in [
            Request::get("/config.json").body(Body::empty()).unwrap(),
            Request::post("/api/rtc/token")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{}"))
                .unwrap(),
        ] {
            let response = app().oneshot(request).await.unwrap();
            let headers = response.headers();
            let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            for directive in [
                "default-src 'self'",
                "frame-ancestors 'none'",
                "object-src 'none'",
                "connect-src 'self' http://hs ws://localhost:7880",
                "script-src 'self' 'wasm-unsafe-eval'",
            ] {
                assert!(csp.contains(directive), "{directive} missing from {csp}");
            }
            assert!(
                !csp.contains("unsafe-inline") && !csp.contains(" 'unsafe-eval'"),
                "{csp}"
            );
            assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
        }
    }

    #[tokio::test]
    async fn config_json_is_served() {
        let response = app()
            .oneshot(Request::get("/config.json").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    /// Property tests of the REST input parsing: whatever arrives, the answer is a Matrix-shaped
    /// error or a grant, never a panic, and nothing is issued to a request that is not exactly
    /// right.
    mod fuzz {
        use proptest::prelude::*;

        use super::*;

        const ENDPOINTS: [&str; 5] = ["token", "turn", "end", "sfu/get", "get_token"];

        fn answer(
            path: &str,
            content_type: &str,
            body: Vec<u8>,
        ) -> (StatusCode, serde_json::Value) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let response = app()
                    .oneshot(
                        Request::post(format!("/api/rtc/{path}"))
                            .header(header::CONTENT_TYPE, content_type)
                            .body(Body::from(body))
                            .unwrap(),
                    )
                    .await
                    .unwrap();
                let status = response.status();
                let bytes = response.into_body().collect().await.unwrap().to_bytes();
                (
                    status,
                    serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
                )
            })
        }

        fn assert_refusal(status: StatusCode, body: &serde_json::Value) {
            assert!(
                [400, 401, 403, 413].contains(&status.as_u16()),
                "unexpected {status}: {body}"
            );
            assert!(
                body["errcode"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("M_")),
                "{body}"
            );
            assert!(body["error"].is_string(), "{body}");
            for field in ["jwt", "password", "url"] {
                assert!(body.get(field).is_none(), "{field} issued: {body}");
            }
        }

        /// Any JSON value, a few levels deep.
        fn json_value() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<f64>().prop_map(serde_json::Value::from),
                ".{0,40}".prop_map(serde_json::Value::from),
            ];
            leaf.prop_recursive(3, 24, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                    prop::collection::btree_map(".{0,12}", inner, 0..4)
                        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
                ]
            })
        }

        /// Request-shaped objects whose fields are each sometimes right, sometimes anything.
        fn request_like() -> impl Strategy<Value = serde_json::Value> {
            let room = prop_oneof![
                Just(serde_json::json!("!case:localhost")),
                "[!#@]?.{0,30}".prop_map(serde_json::Value::from),
                json_value(),
            ];
            let token = prop_oneof![
                Just(
                    serde_json::json!({"access_token": "forged", "token_type": "Bearer",
                    "matrix_server_name": "localhost", "expires_in": 3600})
                ),
                json_value(),
            ];
            let device = prop_oneof![
                Just(serde_json::json!("DEV")),
                ".{0,300}".prop_map(serde_json::Value::from),
                json_value(),
            ];
            (
                room,
                token,
                device,
                prop::option::of((".{1,10}", json_value())),
            )
                .prop_map(|(room, token, device, extra)| {
                    let mut object = serde_json::json!({
                        "room_id": room, "room": "!case:localhost", "slot_id": "m.call#ROOM",
                        "openid_token": token, "device_id": device,
                    });
                    if let Some((key, value)) = extra {
                        object[key] = value;
                    }
                    object
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            #[test]
            fn arbitrary_bytes_are_refused_cleanly(
                endpoint in 0..ENDPOINTS.len(),
                content_type in prop_oneof![
                    Just("application/json".to_owned()), Just("application/json; charset=utf-8".to_owned()),
                    Just("text/plain".to_owned()), Just("".to_owned()), "[ -~]{0,30}"
                ],
                body in prop::collection::vec(any::<u8>(), 0..2048),
            ) {
                let (status, answer) = answer(ENDPOINTS[endpoint], &content_type, body);
                assert_refusal(status, &answer);
            }

            #[test]
            fn arbitrary_json_is_refused_cleanly(
                endpoint in 0..ENDPOINTS.len(),
                value in json_value(),
            ) {
                let (status, answer) = answer(
                    ENDPOINTS[endpoint], "application/json", serde_json::to_vec(&value).unwrap());
                assert_refusal(status, &answer);
            }

            #[test]
            fn request_shaped_bodies_with_a_forged_token_never_get_a_grant(
                endpoint in 0..ENDPOINTS.len(),
                value in request_like(),
            ) {
                // Every OpenID token here is forged or malformed: the best any body can get
                // is 401, never a grant.
                let (status, answer) = answer(
                    ENDPOINTS[endpoint], "application/json", serde_json::to_vec(&value).unwrap());
                assert_refusal(status, &answer);
            }
        }
    }
}
