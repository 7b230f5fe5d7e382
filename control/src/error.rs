//! The one error type of the control plane, and its wire formats.
//!
//! REST answers are Matrix-shaped `{"errcode","error"}`; gRPC answers map to the matching
//! status code with the errcode in `x-matrix-errcode` metadata. Authentication and
//! authorisation failures carry deliberately generic messages (a caller must not learn whether
//! a room exists or why a token was refused); internal details are logged where they happen and
//! never returned.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The request body or a field of it is malformed; the message says which and why.
    #[error("{0}")]
    BadJson(String),
    /// The body is not JSON at all, or not declared as JSON.
    #[error("{0}")]
    NotJson(String),
    #[error("request body too large")]
    TooLarge,
    /// The OpenID token could not be verified (forged, expired, other homeserver).
    #[error("The OpenID token could not be verified.")]
    Unauthorized,
    /// A genuine OpenID token presented a second time. Same answer on the wire as any other
    /// unverifiable token; a distinct reason in metrics and logs.
    #[error("The OpenID token could not be verified.")]
    OpenIdReused,
    /// Not joined, banned, unknown room: one answer for all of them.
    #[error("You are not a member of this room.")]
    Forbidden,
    #[error("Too many requests; retry in {retry_after_ms} ms.")]
    RateLimited { retry_after_ms: u64 },
    /// Too many requests from one client address before anyone is authenticated (each costs a
    /// homeserver lookup).
    #[error("Too many requests from this address; retry in {retry_after_ms} ms.")]
    AddressRateLimited { retry_after_ms: u64 },
    #[error("The call is full ({max} participants).")]
    CallFull { max: u32 },
    /// The user already has this many devices in the call: a seat belongs to a device that is
    /// there, and one person cannot hold every seat.
    #[error("You are already in this call on {max} devices; leave it on one of them first.")]
    TooManyDevices { max: u32 },
    /// The request (its body) did not arrive in time.
    #[error("The request did not arrive within {secs} s.")]
    Timeout { secs: u64 },
    /// A gateway named a participant or track that is not in the call (it may just have left).
    #[error("No such participant or track in this call.")]
    NotFound,
    /// Control cannot currently tell who is a member (homeserver unreachable, sync stale),
    /// or LiveKit is unreachable. Membership is fail-closed: this is a refusal.
    #[error("The service is temporarily unavailable; try again shortly.")]
    Unavailable,
    #[error("Internal server error.")]
    Internal,
    /// No such endpoint. A 404 (not the web page's 405) tells Element Call that an optional
    /// lk-jwt-service endpoint such as `delegate_delayed_leave` is not offered.
    #[error("Unrecognized request.")]
    Unrecognized,
    /// A known endpoint called with the wrong method.
    #[error("Method not allowed on this endpoint.")]
    MethodNotAllowed,
}

#[derive(Serialize)]
struct Body<'a> {
    errcode: &'a str,
    error: String,
    /// Matrix's hint on 429s.
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
}

impl ApiError {
    pub fn errcode(&self) -> &'static str {
        match self {
            ApiError::BadJson(_) => "M_BAD_JSON",
            ApiError::NotJson(_) => "M_NOT_JSON",
            ApiError::TooLarge => "M_TOO_LARGE",
            ApiError::Unauthorized | ApiError::OpenIdReused => "M_UNAUTHORIZED",
            ApiError::Forbidden => "M_FORBIDDEN",
            ApiError::NotFound => "M_NOT_FOUND",
            ApiError::CallFull { .. }
            | ApiError::TooManyDevices { .. }
            | ApiError::RateLimited { .. }
            | ApiError::AddressRateLimited { .. } => "M_LIMIT_EXCEEDED",
            ApiError::Unavailable => "M_UNAVAILABLE",
            ApiError::Internal | ApiError::Timeout { .. } => "M_UNKNOWN",
            ApiError::Unrecognized | ApiError::MethodNotAllowed => "M_UNRECOGNIZED",
        }
    }

    /// A short, stable label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::BadJson(_) | ApiError::NotJson(_) | ApiError::TooLarge => "bad_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::OpenIdReused => "openid_reused",
            ApiError::Forbidden => "forbidden",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::AddressRateLimited { .. } => "address_rate_limited",
            ApiError::CallFull { .. } => "call_full",
            ApiError::TooManyDevices { .. } => "too_many_devices",
            ApiError::Timeout { .. } => "timeout",
            ApiError::NotFound => "not_found",
            ApiError::Unavailable => "unavailable",
            ApiError::Internal => "internal",
            ApiError::Unrecognized | ApiError::MethodNotAllowed => "unrecognized",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadJson(_) | ApiError::NotJson(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unauthorized | ApiError::OpenIdReused => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::CallFull { .. } | ApiError::TooManyDevices { .. } => StatusCode::CONFLICT,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::RateLimited { .. } | ApiError::AddressRateLimited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Timeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unrecognized => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            ApiError::BadJson(_) | ApiError::NotJson(_) | ApiError::TooLarge => {
                tonic::Code::InvalidArgument
            }
            ApiError::Unauthorized | ApiError::OpenIdReused => tonic::Code::Unauthenticated,
            ApiError::Forbidden => tonic::Code::PermissionDenied,
            ApiError::NotFound => tonic::Code::NotFound,
            ApiError::CallFull { .. }
            | ApiError::TooManyDevices { .. }
            | ApiError::RateLimited { .. }
            | ApiError::AddressRateLimited { .. } => tonic::Code::ResourceExhausted,
            ApiError::Timeout { .. } => tonic::Code::DeadlineExceeded,
            ApiError::Unavailable => tonic::Code::Unavailable,
            ApiError::Internal => tonic::Code::Internal,
            ApiError::Unrecognized | ApiError::MethodNotAllowed => tonic::Code::Unimplemented,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            errcode: self.errcode(),
            error: self.to_string(),
            retry_after_ms: match self {
                ApiError::RateLimited { retry_after_ms }
                | ApiError::AddressRateLimited { retry_after_ms } => Some(retry_after_ms),
                _ => None,
            },
        };
        (self.status(), Json(body)).into_response()
    }
}

impl From<ApiError> for tonic::Status {
    fn from(err: ApiError) -> Self {
        let mut status = tonic::Status::new(err.grpc_code(), err.to_string());
        status.metadata_mut().insert(
            "x-matrix-errcode",
            tonic::metadata::MetadataValue::from_static(err.errcode()),
        );
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_failures_are_generic() {
        // The message must not reveal why: same text whatever the cause.
        assert_eq!(
            ApiError::Forbidden.to_string(),
            "You are not a member of this room."
        );
        assert_eq!(ApiError::Unauthorized.errcode(), "M_UNAUTHORIZED");
    }

    #[tokio::test]
    async fn rate_limit_is_429_with_matrix_retry_hint() {
        use http_body_util::BodyExt;
        let response = ApiError::RateLimited {
            retry_after_ms: 1500,
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["errcode"], "M_LIMIT_EXCEEDED");
        assert_eq!(json["retry_after_ms"], 1500);
    }

    #[test]
    fn grpc_status_carries_errcode() {
        let status: tonic::Status = ApiError::CallFull { max: 6 }.into();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            status.metadata().get("x-matrix-errcode").unwrap(),
            "M_LIMIT_EXCEEDED"
        );
    }
}
