//! What the transports decode requests into, and the checks of their fields: every bad field
//! gets a specific `M_BAD_JSON` naming it, before anyone is asked anything.

use matrix_sdk::ruma::OwnedRoomId;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// An OpenID token as the Matrix client-server API returns it. Never logged.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenIdToken {
    pub access_token: String,
    pub token_type: String,
    pub matrix_server_name: String,
    pub expires_in: i64,
}

impl std::fmt::Debug for OpenIdToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenIdToken")
            .field("matrix_server_name", &self.matrix_server_name)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub room_id: String,
    pub openid_token: OpenIdToken,
    pub device_id: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnRequest {
    pub room_id: String,
    pub openid_token: OpenIdToken,
}

/// `POST /api/rtc/sfu/get`: lk-jwt-service's legacy request (Element Call before Matrix 2.0).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacySfuRequest {
    pub room: String,
    pub openid_token: OpenIdToken,
    pub device_id: String,
    pub delay_id: Option<String>,
    pub delay_timeout: Option<i64>,
    pub delay_cs_api_url: Option<String>,
}

/// `POST /api/rtc/get_token`: lk-jwt-service's MatrixRTC (MSC4195) request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SfuRequest {
    pub room_id: String,
    pub slot_id: String,
    pub openid_token: OpenIdToken,
    pub member: RtcMember,
    pub delay_id: Option<String>,
    pub delay_timeout: Option<i64>,
    pub delay_cs_api_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtcMember {
    pub id: String,
    pub claimed_user_id: String,
    pub claimed_device_id: String,
}

/// Delegation of the client's MSC4140 delayed leave to the JWT service (`delay_id`,
/// `delay_timeout`, `delay_cs_api_url`) is not offered here: Element Call retries without those
/// fields when refused with 400.
pub(crate) fn refuse_delegation(
    delay_id: &Option<String>,
    delay_timeout: &Option<i64>,
    delay_cs_api_url: &Option<String>,
) -> Result<(), ApiError> {
    if delay_id.is_some() || delay_timeout.is_some() || delay_cs_api_url.is_some() {
        return Err(ApiError::BadJson(
            "delegation of delayed events (delay_id, delay_timeout, delay_cs_api_url) is not \
             supported; send the request without them"
                .into(),
        ));
    }
    Ok(())
}

/// lk-jwt-service's answer: just the signalling URL and the token.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SfuResponse {
    pub url: String,
    pub jwt: String,
}

impl From<TokenGrant> for SfuResponse {
    fn from(grant: TokenGrant) -> Self {
        Self {
            url: grant.url,
            jwt: grant.jwt,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndCallRequest {
    pub room_id: String,
    pub openid_token: OpenIdToken,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CallEnded {
    pub livekit_room: String,
    pub memberships_cleared: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TokenGrant {
    pub url: String,
    pub jwt: String,
    pub livekit_room: String,
    pub identity: String,
    pub expires_at: i64,
}

/// gRPC `SetParticipantAttribute`, for gateways (the transport checks the gateway credential).
#[derive(Debug, Clone)]
pub struct AttributeRequest {
    pub livekit_room: String,
    pub identity: String,
    pub key: String,
    pub value: String,
}

/// gRPC `MutePublishedTrack`, for gateways.
#[derive(Debug, Clone)]
pub struct MuteRequest {
    pub livekit_room: String,
    pub identity: String,
    pub track_sid: String,
    pub muted: bool,
}

/// A LiveKit room name, identity or track sid from a gateway: bounded and printable, so that
/// nothing odd reaches LiveKit or the log.
pub(crate) fn check_name(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > 256 || value.chars().any(char::is_control) {
        return Err(ApiError::BadJson(format!(
            "{field} must be 1 to 256 characters without control characters"
        )));
    }
    Ok(())
}

pub(crate) fn parse_room_id(raw: &str) -> Result<OwnedRoomId, ApiError> {
    let bad = |why: &dyn std::fmt::Display| {
        ApiError::BadJson(format!("room_id {raw:?} is not a Matrix room id: {why}"))
    };
    // Room version 12 ids are "!" and an opaque hash, so ruma accepts a bare "!"; nothing
    // real is that short. The spec caps every identifier at 255 bytes.
    if raw.len() < 2 || raw.len() > 255 {
        return Err(bad(&"it must be 2 to 255 characters"));
    }
    OwnedRoomId::try_from(raw).map_err(|e| bad(&e))
}

/// Device ids become part of a LiveKit identity, a state key, logs and the page. The Matrix
/// spec leaves them opaque but tells clients to draw them from RFC 3986's unreserved set
/// (client-server API, OAuth 2.0 "Device ID allocation"), which is also what homeservers
/// generate: only those characters are accepted, so nothing invisible, bidirectional or
/// look-alike (U+200B, U+202E, Cyrillic letters) can get into a name practitioners read.
pub fn check_device_id(field: &str, device_id: &str) -> Result<(), ApiError> {
    if device_id.is_empty() || device_id.len() > 255 {
        return Err(ApiError::BadJson(format!(
            "{field} must be 1 to 255 characters"
        )));
    }
    if let Some(bad) = device_id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')))
    {
        return Err(ApiError::BadJson(format!(
            "{field} may only contain A-Z, a-z, 0-9, '-', '.', '_' and '~' (found U+{:04X})",
            bad as u32
        )));
    }
    Ok(())
}

pub(crate) fn check_openid_shape(token: &OpenIdToken) -> Result<(), ApiError> {
    if token.access_token.is_empty() || token.access_token.len() > 1024 {
        return Err(ApiError::BadJson(
            "openid_token.access_token must be 1 to 1024 characters".into(),
        ));
    }
    if !token.token_type.eq_ignore_ascii_case("Bearer") {
        return Err(ApiError::BadJson(
            "openid_token.token_type must be \"Bearer\"".into(),
        ));
    }
    if token.matrix_server_name.is_empty() {
        return Err(ApiError::BadJson(
            "openid_token.matrix_server_name is required".into(),
        ));
    }
    Ok(())
}
