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
    /// Not joined, banned, unknown room: one answer for all of them.
    #[error("You are not a member of this room.")]
    Forbidden,
    #[error("The call is full ({max} participants).")]
    CallFull { max: u32 },
    /// Control cannot currently tell who is a member (homeserver unreachable, sync stale),
    /// or LiveKit is unreachable. Membership is fail-closed: this is a refusal.
    #[error("The service is temporarily unavailable; try again shortly.")]
    Unavailable,
    #[error("Internal server error.")]
    Internal,
}

#[derive(Serialize)]
struct Body<'a> {
    errcode: &'a str,
    error: String,
}

impl ApiError {
    pub fn errcode(&self) -> &'static str {
        match self {
            ApiError::BadJson(_) => "M_BAD_JSON",
            ApiError::NotJson(_) => "M_NOT_JSON",
            ApiError::TooLarge => "M_TOO_LARGE",
            ApiError::Unauthorized => "M_UNAUTHORIZED",
            ApiError::Forbidden => "M_FORBIDDEN",
            ApiError::CallFull { .. } => "M_LIMIT_EXCEEDED",
            ApiError::Unavailable => "M_UNAVAILABLE",
            ApiError::Internal => "M_UNKNOWN",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadJson(_) | ApiError::NotJson(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::CallFull { .. } => StatusCode::CONFLICT,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            ApiError::BadJson(_) | ApiError::NotJson(_) | ApiError::TooLarge => {
                tonic::Code::InvalidArgument
            }
            ApiError::Unauthorized => tonic::Code::Unauthenticated,
            ApiError::Forbidden => tonic::Code::PermissionDenied,
            ApiError::CallFull { .. } => tonic::Code::ResourceExhausted,
            ApiError::Unavailable => tonic::Code::Unavailable,
            ApiError::Internal => tonic::Code::Internal,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            errcode: self.errcode(),
            error: self.to_string(),
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
