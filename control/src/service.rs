//! The control plane's operations, independent of transport: REST (`rest.rs`) and gRPC
//! (`grpc.rs`) both decode into these types and call [`RtcService`]; no policy lives in a
//! transport.

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::{
    error::ApiError,
    homeserver::OpenIdVerifier,
    livekit::{LiveKitRooms, ParticipantInfo, TokenMinter},
    membership::MembershipOracle,
    metrics::Metrics,
    ratelimit::RateLimiter,
    replay::ReplayGuard,
    seats::{SeatKeeper, SeatRules},
    ticket::{Ticket, Tickets},
    turn::{TurnCredentials, TurnMinter},
};

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
fn refuse_delegation(
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

/// The only MatrixRTC slot this service runs: the room-wide call.
pub const ROOM_SLOT: &str = "m.call#ROOM";

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

/// The one participant attribute a gateway may set: the audio-only fallback's stage
/// (`gateway/src/fallback.rs`), which the page reads to say why video stopped.
pub const FALLBACK_ATTRIBUTE: &str = "org.koinos.rtc.fallback";
/// The stages the fallback writes; "" deletes the attribute.
const FALLBACK_STAGES: [&str; 3] = ["", "incoming_video", "camera"];

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
fn check_name(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > 256 || value.chars().any(char::is_control) {
        return Err(ApiError::BadJson(format!(
            "{field} must be 1 to 256 characters without control characters"
        )));
    }
    Ok(())
}

/// Whether LiveKit's track is a camera as the gateway's ladder counts them (video that is
/// not a screen share).
fn is_camera(track: &livekit_protocol::TrackInfo) -> bool {
    track.r#type == livekit_protocol::TrackType::Video as i32
        && track.source != livekit_protocol::TrackSource::ScreenShare as i32
}

/// Wall-clock time, behind a trait so that expiry logic is testable.
pub trait Clock: Send + Sync {
    fn now_unix(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }
}

pub struct RtcService {
    pub openid: Arc<dyn OpenIdVerifier>,
    pub membership: Arc<dyn MembershipOracle>,
    pub livekit: Arc<dyn LiveKitRooms>,
    /// LiveKit tokens, minted only when a gateway admits a connection (`admission.rs`).
    pub minter: TokenMinter,
    /// What clients get instead of LiveKit tokens (`ticket.rs`).
    pub tickets: Tickets,
    pub turn: TurnMinter,
    pub rate_limiter: RateLimiter,
    /// Requests per client address before the OpenID check (each costs a homeserver lookup).
    pub address_limiter: koinos_net::AddressLimiter,
    /// Each OpenID token is redeemed once (see `replay.rs`).
    pub replay_guard: ReplayGuard,
    pub metrics: Metrics,
    pub clock: Arc<dyn Clock>,
    /// The signalling URL handed to clients (the gateway).
    pub public_livekit_url: String,
    pub seats: SeatKeeper,
    pub seat_rules: SeatRules,
    /// Lifetime of the LiveKit token minted for one connection (LiveKit checks it only when the
    /// connection opens).
    pub session_token_ttl: Duration,
}

/// The LiveKit room of a Matrix room's room-scoped call, named as lk-jwt-service ≥ 0.4.3 names
/// it so that Element Call clients in the same case land in the same LiveKit room.
pub fn livekit_room_name(room_id: &str) -> String {
    hash_of(&[room_id, ROOM_SLOT])
}

/// `unpaddedBase64(sha256(compact JSON array))`, MSC4195's derivation.
fn hash_of(parts: &[&str]) -> String {
    let json = serde_json::to_string(parts).expect("strings serialise");
    STANDARD_NO_PAD.encode(Sha256::digest(json.as_bytes()))
}

/// The LiveKit identity of a MatrixRTC member as `/get_token` derives it.
pub fn member_identity(user: &UserId, device_id: &str, member_id: &str) -> String {
    hash_of(&[user.as_str(), device_id, member_id])
}

/// The LiveKit identity of a Matrix device in a call: `<user_id>:<device_id>`.
pub fn livekit_identity(user: &UserId, device_id: &str) -> String {
    format!("{user}:{device_id}")
}

fn parse_room_id(raw: &str) -> Result<OwnedRoomId, ApiError> {
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

fn check_openid_shape(token: &OpenIdToken) -> Result<(), ApiError> {
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

impl RtcService {
    /// The gate every operation passes: a well-formed request from a verified Matrix user who
    /// is joined to the room. Returns who the caller is.
    async fn authorize(
        &self,
        room_id: &str,
        openid_token: &OpenIdToken,
        from: IpAddr,
    ) -> Result<(OwnedRoomId, OwnedUserId), ApiError> {
        let room_id = parse_room_id(room_id)?;
        check_openid_shape(openid_token)?;
        // Before the homeserver is asked anything: an unauthenticated caller's requests cost a
        // lookup each.
        if let Err(wait) = self.address_limiter.check(from, Instant::now()) {
            info!(%from, "refused: too many requests from this address");
            return Err(ApiError::AddressRateLimited {
                retry_after_ms: wait.as_millis() as u64 + 1,
            });
        }
        let started = Instant::now();
        let user = self.openid.verify(openid_token).await;
        self.metrics.observe("homeserver_openid", started.elapsed());
        let user = user?;
        if !self
            .replay_guard
            .first_use(&openid_token.access_token, Instant::now())
        {
            info!(%user, "refused: OpenID token already used");
            return Err(ApiError::OpenIdReused);
        }
        if let Err(wait) = self.rate_limiter.check(&user, Instant::now()) {
            info!(%user, "refused: rate limited");
            return Err(ApiError::RateLimited {
                retry_after_ms: wait.as_millis() as u64 + 1,
            });
        }
        let started = Instant::now();
        let joined = self.membership.is_joined(&room_id, &user).await;
        self.metrics.observe("membership", started.elapsed());
        if !joined? {
            info!(%user, %room_id, "refused: not joined");
            return Err(ApiError::Forbidden);
        }
        Ok((room_id, user))
    }

    /// `POST /api/rtc/token`, gRPC `IssueToken`. `from`: the caller's address.
    pub async fn issue_token(
        &self,
        request: TokenRequest,
        from: IpAddr,
    ) -> Result<TokenGrant, ApiError> {
        self.counted("token", self.token_for(request, from)).await
    }

    /// `POST /api/rtc/sfu/get` (lk-jwt-service legacy shape, Element Call).
    pub async fn sfu_get(
        &self,
        request: LegacySfuRequest,
        from: IpAddr,
    ) -> Result<SfuResponse, ApiError> {
        self.counted("sfu_get", self.sfu_get_inner(request, from))
            .await
    }

    /// `POST /api/rtc/get_token` (lk-jwt-service MSC4195 shape, Element Call / Element X).
    pub async fn get_token(
        &self,
        request: SfuRequest,
        from: IpAddr,
    ) -> Result<SfuResponse, ApiError> {
        self.counted("get_token", self.get_token_inner(request, from))
            .await
    }

    /// `POST /api/rtc/turn`, gRPC `IssueTurnCredentials`.
    pub async fn issue_turn(
        &self,
        request: TurnRequest,
        from: IpAddr,
    ) -> Result<TurnCredentials, ApiError> {
        self.counted("turn", self.turn_inner(request, from)).await
    }

    /// `POST /api/rtc/end`, gRPC `EndCall`.
    pub async fn end_call(
        &self,
        request: EndCallRequest,
        from: IpAddr,
    ) -> Result<CallEnded, ApiError> {
        self.counted("end_call", self.end_call_inner(request, from))
            .await
    }

    async fn counted<T>(
        &self,
        operation: &'static str,
        work: impl std::future::Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        let result = work.await;
        self.metrics.record(operation, &result);
        result
    }

    async fn token_for(&self, request: TokenRequest, from: IpAddr) -> Result<TokenGrant, ApiError> {
        check_device_id("device_id", &request.device_id)?;
        let (room_id, user) = self
            .authorize(&request.room_id, &request.openid_token, from)
            .await?;

        let identity = livekit_identity(&user, &request.device_id);
        self.admit(&room_id, &user, &request.device_id, identity)
            .await
    }

    async fn sfu_get_inner(
        &self,
        request: LegacySfuRequest,
        from: IpAddr,
    ) -> Result<SfuResponse, ApiError> {
        refuse_delegation(
            &request.delay_id,
            &request.delay_timeout,
            &request.delay_cs_api_url,
        )?;
        self.token_for(
            TokenRequest {
                room_id: request.room,
                openid_token: request.openid_token,
                device_id: request.device_id,
            },
            from,
        )
        .await
        .map(SfuResponse::from)
    }

    async fn get_token_inner(
        &self,
        request: SfuRequest,
        from: IpAddr,
    ) -> Result<SfuResponse, ApiError> {
        refuse_delegation(
            &request.delay_id,
            &request.delay_timeout,
            &request.delay_cs_api_url,
        )?;
        if request.slot_id != ROOM_SLOT {
            return Err(ApiError::BadJson(format!(
                "slot_id {:?} is not supported; only the room call {ROOM_SLOT:?} is",
                request.slot_id
            )));
        }
        let member = &request.member;
        if member.claimed_user_id.is_empty() || member.claimed_user_id.len() > 255 {
            return Err(ApiError::BadJson(
                "member.claimed_user_id must be 1 to 255 characters".into(),
            ));
        }
        // Hashed into the identity, never shown; bounded and printable all the same.
        if member.id.is_empty()
            || member.id.len() > 255
            || member.id.chars().any(|c| c.is_control())
        {
            return Err(ApiError::BadJson(
                "member.id must be 1 to 255 characters without control characters".into(),
            ));
        }
        check_device_id("member.claimed_device_id", &member.claimed_device_id)?;
        let (room_id, user) = self
            .authorize(&request.room_id, &request.openid_token, from)
            .await?;
        if member.claimed_user_id != user.as_str() {
            info!(%user, "refused: member.claimed_user_id is not the token's user");
            return Err(ApiError::Unauthorized);
        }
        let identity = member_identity(&user, &member.claimed_device_id, &member.id);
        self.admit(&room_id, &user, &member.claimed_device_id, identity)
            .await
            .map(SfuResponse::from)
    }

    /// Creates the call's LiveKit room if needed, says early whether a seat is free (the seat
    /// itself is taken when the gateway admits the connection) and issues the ticket.
    async fn admit(
        &self,
        room_id: &OwnedRoomId,
        user: &UserId,
        device_id: &str,
        identity: String,
    ) -> Result<TokenGrant, ApiError> {
        let livekit_room = livekit_room_name(room_id.as_str());
        let present = self
            .timed_livekit(async {
                self.livekit
                    .ensure_room(&livekit_room, self.seat_rules.max_participants)
                    .await?;
                self.livekit.participants(&livekit_room).await
            })
            .await?;
        if let Err(refusal) = self.seats.check(
            &livekit_room,
            &present,
            &identity,
            user.as_str(),
            &self.seat_rules,
        ) {
            info!(%user, %room_id, present = present.len(), reason = refusal.reason(), "token refused: no seat");
            return Err(refusal);
        }
        let ticket = Ticket {
            room_id: room_id.clone(),
            livekit_room: livekit_room.clone(),
            identity: identity.clone(),
            matrix_user: user.to_owned(),
            matrix_device: device_id.to_owned(),
            name: user.localpart().to_owned(),
            expires_at: 0,
        };
        let (jwt, expires_at) = self.tickets.issue(&ticket, self.clock.now_unix());
        info!(%user, %room_id, %livekit_room, "ticket issued");
        Ok(TokenGrant {
            url: self.public_livekit_url.clone(),
            jwt,
            livekit_room,
            identity,
            expires_at,
        })
    }

    async fn turn_inner(
        &self,
        request: TurnRequest,
        from: IpAddr,
    ) -> Result<TurnCredentials, ApiError> {
        let (room_id, user) = self
            .authorize(&request.room_id, &request.openid_token, from)
            .await?;
        info!(%user, %room_id, "TURN credentials issued");
        Ok(self.turn.mint(&user, self.clock.now_unix()))
    }

    /// `POST /api/rtc/end`, gRPC `EndCall`: a host ends the call for everyone. LiveKit's room
    /// goes first (media stops for everyone at once), then the call memberships are cleared so
    /// the case shows no running call.
    async fn end_call_inner(
        &self,
        request: EndCallRequest,
        from: IpAddr,
    ) -> Result<CallEnded, ApiError> {
        let (room_id, user) = self
            .authorize(&request.room_id, &request.openid_token, from)
            .await?;
        if !self.membership.is_host(&room_id, &user).await? {
            info!(%user, %room_id, "end call refused: not a host");
            return Err(ApiError::Forbidden);
        }
        // The homeserver's record first: it is what every page believes, and it holds while the
        // media server is away (its pages stop re-joining when they read it).
        let memberships_cleared = self.membership.end_call(&room_id, &user).await?;
        let livekit_room = livekit_room_name(room_id.as_str());
        self.seats.forget_room(&livekit_room);
        match self.livekit.delete_room(&livekit_room).await {
            Ok(()) => {}
            // A LiveKit that is away has lost the room with its process (a single node) or
            // keeps it for pages that leave by themselves on the record above (multi-node).
            Err(ApiError::Unavailable) => {
                warn!(%room_id, %livekit_room, "call ended while LiveKit is unreachable; its room was not deleted");
            }
            Err(e) => return Err(e),
        }
        info!(%user, %room_id, %livekit_room, memberships_cleared, "call ended by host");
        Ok(CallEnded {
            livekit_room,
            memberships_cleared,
        })
    }

    /// gRPC `ListParticipants` (gateways): who is in a call now.
    pub async fn call_participants(
        &self,
        livekit_room: &str,
    ) -> Result<Vec<ParticipantInfo>, ApiError> {
        self.gateway_counted("list_participants", async {
            check_name("livekit_room", livekit_room)?;
            self.timed_livekit(self.livekit.participant_infos(livekit_room))
                .await
        })
        .await
    }

    /// gRPC `SetParticipantAttribute` (gateways): only the fallback's stage, only its values.
    pub async fn set_participant_attribute(
        &self,
        request: AttributeRequest,
    ) -> Result<(), ApiError> {
        self.gateway_counted("set_participant_attribute", async {
            check_name("livekit_room", &request.livekit_room)?;
            check_name("identity", &request.identity)?;
            if request.key != FALLBACK_ATTRIBUTE {
                return Err(ApiError::BadJson(format!(
                    "attribute key {:?} may not be set by a gateway; only {FALLBACK_ATTRIBUTE:?} may",
                    request.key
                )));
            }
            if !FALLBACK_STAGES.contains(&request.value.as_str()) {
                return Err(ApiError::BadJson(format!(
                    "{FALLBACK_ATTRIBUTE} must be one of {FALLBACK_STAGES:?}, got {:?}",
                    request.value
                )));
            }
            self.timed_livekit(self.livekit.set_attribute(
                &request.livekit_room,
                &request.identity,
                &request.key,
                &request.value,
            ))
            .await?;
            info!(livekit_room = %request.livekit_room, identity = %request.identity,
                stage = %request.value, "fallback stage set for a gateway");
            Ok(())
        })
        .await
    }

    /// gRPC `MutePublishedTrack` (gateways): pauses a camera; never unmutes, never touches a
    /// microphone or a screen share.
    pub async fn mute_published_track(&self, request: MuteRequest) -> Result<(), ApiError> {
        self.gateway_counted("mute_published_track", async {
            check_name("livekit_room", &request.livekit_room)?;
            check_name("identity", &request.identity)?;
            check_name("track_sid", &request.track_sid)?;
            if !request.muted {
                return Err(ApiError::BadJson(
                    "muted must be true: control never unmutes a track (the practitioner turns                      their camera back on)"
                        .into(),
                ));
            }
            let participants = self
                .timed_livekit(self.livekit.participant_infos(&request.livekit_room))
                .await?;
            let track = participants
                .iter()
                .find(|p| p.identity == request.identity)
                .and_then(|p| p.tracks.iter().find(|t| t.sid == request.track_sid))
                .ok_or(ApiError::NotFound)?;
            if !is_camera(track) {
                return Err(ApiError::BadJson(format!(
                    "track {:?} is not a camera; a gateway may only pause cameras",
                    request.track_sid
                )));
            }
            self.timed_livekit(self.livekit.mute_track(
                &request.livekit_room,
                &request.identity,
                &request.track_sid,
            ))
            .await?;
            info!(livekit_room = %request.livekit_room, identity = %request.identity,
                track = %request.track_sid, "camera paused for a gateway");
            Ok(())
        })
        .await
    }

    pub(crate) async fn gateway_counted<T>(
        &self,
        operation: &'static str,
        work: impl std::future::Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        let result = work.await;
        self.metrics.gateway_request(
            operation,
            match &result {
                Ok(_) => "done",
                Err(e) => e.reason(),
            },
        );
        result
    }

    pub(crate) async fn timed_livekit<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        let started = Instant::now();
        let result = call.await;
        self.metrics.observe("livekit", started.elapsed());
        result
    }

    /// `GET /metrics`: the counters plus what is true now (sync age, calls and participants).
    pub async fn render_metrics(&self) -> String {
        let sizes: Option<Vec<u32>> = self
            .livekit
            .rooms()
            .await
            .ok()
            .map(|rooms| rooms.into_iter().map(|(_, n)| n).collect());
        self.metrics
            .render(self.membership.sync_age(), sizes.as_deref())
    }

    pub async fn is_ready(&self) -> bool {
        self.membership.is_ready() && self.livekit.reachable().await
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;

    /// What a gateway may set is exactly the contract's attribute and stage values.
    #[test]
    fn the_fallback_attribute_and_its_values_are_the_shared_contracts() {
        let contract: serde_json::Value =
            serde_json::from_str(include_str!("../../proto/contract/fallback.json")).unwrap();
        assert_eq!(contract["attribute"], FALLBACK_ATTRIBUTE);
        let mut stages: Vec<&str> = contract["stages"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_str().unwrap())
            .collect();
        stages.sort_unstable();
        let mut ours = FALLBACK_STAGES.to_vec();
        ours.sort_unstable();
        assert_eq!(stages, ours);
    }

    use async_trait::async_trait;
    use matrix_sdk::ruma::{OwnedUserId, RoomId};

    use super::*;
    use crate::livekit::LiveParticipant;

    #[test]
    fn room_name_matches_lk_jwt_service() {
        // Vector from lk-jwt-service's documentation of the room-name rule.
        assert_eq!(
            livekit_room_name("!roomid:example.com"),
            "F4oOprKFBq6JHqy2qYpq6UQQmR7hCvxkQQoUrd0+SbI"
        );
    }

    /// Fakes for the outbound dependencies, shared with the REST router tests.
    pub struct FakeOpenId;
    #[async_trait]
    impl OpenIdVerifier for FakeOpenId {
        async fn verify(&self, token: &OpenIdToken) -> Result<OwnedUserId, ApiError> {
            // "alice-token#3" is alice's third fresh OpenID token.
            match token.access_token.split('#').next().unwrap_or_default() {
                "alice-token" => Ok("@alice:localhost".try_into().unwrap()),
                "mallory-token" => Ok("@mallory:localhost".try_into().unwrap()),
                "hs-down" => Err(ApiError::Unavailable),
                _ => Err(ApiError::Unauthorized),
            }
        }
    }

    pub struct FakeMembership;
    #[async_trait]
    impl MembershipOracle for FakeMembership {
        async fn is_joined(&self, room: &RoomId, user: &UserId) -> Result<bool, ApiError> {
            Ok(room.as_str() == "!case:localhost" && user.as_str() == "@alice:localhost")
        }
        fn is_ready(&self) -> bool {
            true
        }
        fn sync_age(&self) -> Option<std::time::Duration> {
            Some(std::time::Duration::ZERO)
        }
        async fn is_host(&self, _room: &RoomId, user: &UserId) -> Result<bool, ApiError> {
            Ok(user.as_str() == "@alice:localhost")
        }
        async fn end_call(&self, _room: &RoomId, _host: &UserId) -> Result<usize, ApiError> {
            Ok(2)
        }
        async fn live_call_memberships(&self) -> Vec<crate::membership::CallMembership> {
            vec![]
        }
        async fn clear_call_membership(
            &self,
            _membership: &crate::membership::CallMembership,
        ) -> Result<bool, ApiError> {
            Ok(false)
        }
        fn case_rooms(&self) -> Option<Vec<OwnedRoomId>> {
            Some(vec!["!case:localhost".try_into().unwrap()])
        }
    }

    /// A homeserver control cannot reach: nothing about membership is known.
    pub struct StaleMembership;
    #[async_trait]
    impl MembershipOracle for StaleMembership {
        async fn is_joined(&self, _: &RoomId, _: &UserId) -> Result<bool, ApiError> {
            Err(ApiError::Unavailable)
        }
        fn is_ready(&self) -> bool {
            false
        }
        fn sync_age(&self) -> Option<std::time::Duration> {
            None
        }
        async fn is_host(&self, _: &RoomId, _: &UserId) -> Result<bool, ApiError> {
            Err(ApiError::Unavailable)
        }
        async fn end_call(&self, _: &RoomId, _: &UserId) -> Result<usize, ApiError> {
            Err(ApiError::Unavailable)
        }
        async fn live_call_memberships(&self) -> Vec<crate::membership::CallMembership> {
            vec![]
        }
        async fn clear_call_membership(
            &self,
            _: &crate::membership::CallMembership,
        ) -> Result<bool, ApiError> {
            Err(ApiError::Unavailable)
        }
        fn case_rooms(&self) -> Option<Vec<OwnedRoomId>> {
            None
        }
    }

    /// LiveKit as a map of rooms to participants.
    #[derive(Default)]
    pub struct FakeLiveKit {
        /// Every room and who is in it (`ensure_room` adds empty rooms).
        pub rooms: Mutex<std::collections::BTreeMap<String, Vec<ParticipantInfo>>>,
        pub created: Mutex<Vec<String>>,
        pub deleted: Mutex<Vec<String>>,
        /// `(room, identity)` of every RemoveParticipant.
        pub removed: Mutex<Vec<(String, String)>>,
        /// `(room, Matrix user)` of every removal by user.
        pub removed_users: Mutex<Vec<(String, String)>>,
        /// The RoomService calls made for gateways, in order.
        pub admin_calls: Mutex<Vec<String>>,
        /// LiveKit is away: DeleteRoom cannot be made.
        pub away: std::sync::atomic::AtomicBool,
    }

    impl FakeLiveKit {
        /// Puts `identities` (`<user>:<device>`, with their Matrix attributes) into `room`.
        pub fn seat(&self, room: &str, identities: &[&str]) {
            let infos = identities
                .iter()
                .map(|identity| {
                    let (user, device) = identity.rsplit_once(':').unwrap();
                    let mut info = ParticipantInfo {
                        identity: (*identity).into(),
                        ..Default::default()
                    };
                    info.attributes
                        .insert(crate::livekit::MATRIX_USER_ATTRIBUTE.into(), user.into());
                    info.attributes.insert(
                        crate::livekit::MATRIX_DEVICE_ATTRIBUTE.into(),
                        device.into(),
                    );
                    info
                })
                .collect();
            self.rooms.lock().unwrap().insert(room.into(), infos);
        }
    }

    #[async_trait]
    impl LiveKitRooms for FakeLiveKit {
        async fn ensure_room(&self, name: &str, _max: u32) -> Result<(), ApiError> {
            self.created.lock().unwrap().push(name.to_owned());
            self.rooms
                .lock()
                .unwrap()
                .entry(name.to_owned())
                .or_default();
            Ok(())
        }
        async fn delete_room(&self, name: &str) -> Result<(), ApiError> {
            if self.away.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(ApiError::Unavailable);
            }
            self.deleted.lock().unwrap().push(name.to_owned());
            self.rooms.lock().unwrap().remove(name);
            Ok(())
        }
        async fn remove_user(&self, name: &str, user: &str) -> Result<usize, ApiError> {
            self.removed_users
                .lock()
                .unwrap()
                .push((name.to_owned(), user.to_owned()));
            let mut rooms = self.rooms.lock().unwrap();
            let Some(people) = rooms.get_mut(name) else {
                return Ok(0);
            };
            let before = people.len();
            people.retain(|p| {
                p.attributes
                    .get(crate::livekit::MATRIX_USER_ATTRIBUTE)
                    .map(String::as_str)
                    != Some(user)
            });
            Ok(before - people.len())
        }
        async fn remove_participant(&self, name: &str, identity: &str) -> Result<(), ApiError> {
            self.removed
                .lock()
                .unwrap()
                .push((name.to_owned(), identity.to_owned()));
            if let Some(people) = self.rooms.lock().unwrap().get_mut(name) {
                people.retain(|p| p.identity != identity);
            }
            Ok(())
        }
        async fn participants(&self, name: &str) -> Result<Vec<LiveParticipant>, ApiError> {
            Ok(self
                .participant_infos(name)
                .await?
                .into_iter()
                .map(LiveParticipant::from)
                .collect())
        }
        async fn participant_infos(&self, name: &str) -> Result<Vec<ParticipantInfo>, ApiError> {
            Ok(self
                .rooms
                .lock()
                .unwrap()
                .get(name)
                .cloned()
                .unwrap_or_default())
        }
        async fn set_attribute(
            &self,
            name: &str,
            identity: &str,
            key: &str,
            value: &str,
        ) -> Result<(), ApiError> {
            let known = self
                .rooms
                .lock()
                .unwrap()
                .get(name)
                .is_some_and(|people| people.iter().any(|p| p.identity == identity));
            if !known {
                return Err(ApiError::NotFound);
            }
            self.admin_calls
                .lock()
                .unwrap()
                .push(format!("set {name} {identity} {key}={value}"));
            Ok(())
        }
        async fn mute_track(
            &self,
            name: &str,
            identity: &str,
            track_sid: &str,
        ) -> Result<(), ApiError> {
            self.admin_calls
                .lock()
                .unwrap()
                .push(format!("mute {name} {identity} {track_sid}"));
            Ok(())
        }
        async fn rooms(&self) -> Result<Vec<(String, u32)>, ApiError> {
            Ok(self
                .rooms
                .lock()
                .unwrap()
                .iter()
                .map(|(name, people)| (name.clone(), people.len() as u32))
                .collect())
        }
        async fn reachable(&self) -> bool {
            true
        }
    }

    /// A participant publishing a microphone (`TR_mic`), a camera (`TR_cam`) and a screen share
    /// (`TR_screen`).
    pub fn publisher(identity: &str) -> ParticipantInfo {
        use livekit_protocol::{TrackInfo, TrackSource, TrackType};
        let track = |sid: &str, kind: TrackType, source: TrackSource| TrackInfo {
            sid: sid.into(),
            r#type: kind as i32,
            source: source as i32,
            ..Default::default()
        };
        ParticipantInfo {
            identity: identity.into(),
            sid: format!("PA_{identity}"),
            tracks: vec![
                track("TR_mic", TrackType::Audio, TrackSource::Microphone),
                track("TR_cam", TrackType::Video, TrackSource::Camera),
                track("TR_screen", TrackType::Video, TrackSource::ScreenShare),
            ],
            ..Default::default()
        }
    }

    pub struct FixedClock(pub i64);
    impl Clock for FixedClock {
        fn now_unix(&self) -> i64 {
            self.0
        }
    }

    pub const LIVEKIT_SECRET: &str = "secret-secret-secret-secret-secret";

    /// The address tests make their requests from.
    pub const FROM: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    pub fn fake_service(livekit: Arc<FakeLiveKit>) -> RtcService {
        RtcService {
            openid: Arc::new(FakeOpenId),
            membership: Arc::new(FakeMembership),
            livekit,
            minter: TokenMinter::new("devkey", LIVEKIT_SECRET),
            tickets: Tickets::new(LIVEKIT_SECRET, Duration::from_secs(600)),
            address_limiter: koinos_net::AddressLimiter::new(1000, 1000),
            turn: TurnMinter::new(
                "turn-secret",
                Duration::from_secs(3600),
                vec!["turn:t:3478".into()],
            ),
            rate_limiter: RateLimiter::new(5, 60),
            replay_guard: ReplayGuard::new(Duration::from_secs(3600)),
            metrics: Metrics::default(),
            clock: Arc::new(FixedClock(1_000)),
            public_livekit_url: "ws://localhost:7880".into(),
            seats: SeatKeeper::default(),
            seat_rules: SeatRules {
                max_participants: 6,
                max_devices_per_user: 2,
                hold: Duration::from_secs(10),
            },
            session_token_ttl: Duration::from_secs(60),
        }
    }

    /// A token request with a fresh OpenID token of `token`'s user (tokens are single-use).
    pub fn request(token: &str, room: &str) -> TokenRequest {
        static FRESH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = FRESH.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        TokenRequest {
            room_id: room.into(),
            openid_token: OpenIdToken {
                access_token: format!("{token}#{n}"),
                token_type: "Bearer".into(),
                matrix_server_name: "localhost".into(),
                expires_in: 3600,
            },
            device_id: "DEVICE".into(),
        }
    }

    #[tokio::test]
    async fn a_member_gets_a_ticket_for_the_room_that_livekit_would_refuse() {
        let livekit = Arc::new(FakeLiveKit::default());
        let service = fake_service(livekit.clone());
        let grant = service
            .issue_token(request("alice-token", "!case:localhost"), FROM)
            .await
            .unwrap();
        assert_eq!(grant.identity, "@alice:localhost:DEVICE");
        assert_eq!(grant.livekit_room, livekit_room_name("!case:localhost"));
        assert_eq!(grant.expires_at, 1_600);
        assert_eq!(
            *livekit.created.lock().unwrap(),
            vec![grant.livekit_room.clone()]
        );
        // Not a LiveKit token: LiveKit's key does not verify it.
        assert!(
            livekit_api::access_token::TokenVerifier::with_api_key("devkey", LIVEKIT_SECRET)
                .verify(&grant.jwt)
                .is_err()
        );
        let ticket = service
            .tickets
            .verify(&grant.jwt, 1_000, Duration::ZERO)
            .unwrap();
        assert_eq!(ticket.identity, grant.identity);
        assert_eq!(ticket.livekit_room, grant.livekit_room);
        assert_eq!(ticket.matrix_user.as_str(), "@alice:localhost");
        assert_eq!(ticket.matrix_device, "DEVICE");
    }

    #[tokio::test]
    async fn non_member_is_forbidden_and_no_room_is_created() {
        let livekit = Arc::new(FakeLiveKit::default());
        let service = fake_service(livekit.clone());
        let err = service
            .issue_token(request("mallory-token", "!case:localhost"), FROM)
            .await
            .unwrap_err();
        assert_eq!(err, ApiError::Forbidden);
        assert!(livekit.created.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn seventh_participant_is_refused_but_a_rejoin_is_not() {
        let livekit = Arc::new(FakeLiveKit::default());
        let call = livekit_room_name("!case:localhost");
        let six: Vec<String> = (0..6).map(|i| format!("@u{i}:localhost:D")).collect();
        livekit.seat(&call, &six.iter().map(String::as_str).collect::<Vec<_>>());
        let service = fake_service(livekit.clone());
        let err = service
            .issue_token(request("alice-token", "!case:localhost"), FROM)
            .await
            .unwrap_err();
        assert_eq!(err, ApiError::CallFull { max: 6 });

        let mut rejoin: Vec<&str> = six.iter().map(String::as_str).collect();
        rejoin[0] = "@alice:localhost:DEVICE";
        livekit.seat(&call, &rejoin);
        service
            .issue_token(request("alice-token", "!case:localhost"), FROM)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn malformed_fields_are_bad_json_with_the_field_named() {
        let service = fake_service(Arc::new(FakeLiveKit::default()));
        let err = service
            .issue_token(request("alice-token", "not-a-room"), FROM)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ApiError::BadJson(m) if m.contains("room_id")),
            "{err:?}"
        );

        // Whitespace, a zero-width space, a right-to-left override, a Cyrillic look-alike,
        // a ':' (which would make the identity ambiguous).
        for device in [
            "has space",
            "DEV\u{200B}",
            "DEV\u{202E}gnp.exe",
            "DEVІCE",
            "A:B",
            "",
        ] {
            let mut bad_device = request("alice-token", "!case:localhost");
            bad_device.device_id = device.into();
            let err = service.issue_token(bad_device, FROM).await.unwrap_err();
            assert!(
                matches!(&err, ApiError::BadJson(m) if m.contains("device_id")),
                "{device:?}: {err:?}"
            );
        }
        for device in ["ABCDEFGHIJ", "x-y.z_w~0"] {
            let mut good = request("alice-token", "!case:localhost");
            good.device_id = device.into();
            service.issue_token(good, FROM).await.unwrap();
        }
    }

    #[tokio::test]
    async fn too_many_requests_from_one_address_are_refused_before_the_homeserver_is_asked() {
        let mut service = fake_service(Arc::new(FakeLiveKit::default()));
        service.address_limiter = koinos_net::AddressLimiter::new(3, 1);
        // Forged tokens: each would cost a homeserver lookup.
        for _ in 0..3 {
            assert_eq!(
                service
                    .issue_token(request("forged", "!case:localhost"), FROM)
                    .await
                    .unwrap_err(),
                ApiError::Unauthorized
            );
        }
        let err = service
            .issue_token(request("alice-token", "!case:localhost"), FROM)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ApiError::AddressRateLimited { retry_after_ms } if retry_after_ms > 0),
            "{err:?}"
        );
        // Another address is not affected.
        service
            .issue_token(
                request("alice-token", "!case:localhost"),
                "192.0.2.99".parse().unwrap(),
            )
            .await
            .unwrap();
        let text = service.render_metrics().await;
        assert!(
            text.contains(r#"koinos_control_requests_total{operation="token",outcome="address_rate_limited"} 1"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn turn_credentials_are_gated_like_tokens() {
        let service = fake_service(Arc::new(FakeLiveKit::default()));
        let turn = |token: &str| TurnRequest {
            room_id: "!case:localhost".into(),
            openid_token: request(token, "!case:localhost").openid_token,
        };
        let creds = service.issue_turn(turn("alice-token"), FROM).await.unwrap();
        assert_eq!(creds.username, "4600:@alice:localhost");
        assert_eq!(creds.uris, vec!["turn:t:3478".to_string()]);
        assert_eq!(
            service
                .issue_turn(turn("mallory-token"), FROM)
                .await
                .unwrap_err(),
            ApiError::Forbidden
        );
        assert_eq!(
            service.issue_turn(turn("forged"), FROM).await.unwrap_err(),
            ApiError::Unauthorized
        );
    }

    #[test]
    fn member_identity_is_msc4195s_derivation() {
        let user: &UserId = "@alice:localhost".try_into().unwrap();
        // sha256 of ["@alice:localhost","DEV","m1"], unpadded base64, computed independently.
        assert_eq!(
            member_identity(user, "DEV", "m1"),
            "Qy3R17dx0HjiF/Yh1Ub+CPOYXtpsehdZ3DqpBh2SSRg"
        );
    }

    fn sfu_request(token: &str, claimed: &str, slot: &str) -> SfuRequest {
        SfuRequest {
            room_id: "!case:localhost".into(),
            slot_id: slot.into(),
            openid_token: request(token, "!case:localhost").openid_token,
            member: RtcMember {
                id: "m1".into(),
                claimed_user_id: claimed.into(),
                claimed_device_id: "DEV".into(),
            },
            delay_id: None,
            delay_timeout: None,
            delay_cs_api_url: None,
        }
    }

    #[tokio::test]
    async fn get_token_checks_the_claimed_user_and_slot() {
        let service = fake_service(Arc::new(FakeLiveKit::default()));
        let ok = service
            .get_token(
                sfu_request("alice-token", "@alice:localhost", ROOM_SLOT),
                FROM,
            )
            .await
            .unwrap();
        let ticket = service
            .tickets
            .verify(&ok.jwt, 1_000, Duration::ZERO)
            .unwrap();
        assert_eq!(
            ticket.identity,
            "Qy3R17dx0HjiF/Yh1Ub+CPOYXtpsehdZ3DqpBh2SSRg"
        );
        assert_eq!(ticket.livekit_room, livekit_room_name("!case:localhost"));

        let spoof = service
            .get_token(
                sfu_request("alice-token", "@bob:localhost", ROOM_SLOT),
                FROM,
            )
            .await;
        assert_eq!(spoof.unwrap_err(), ApiError::Unauthorized);
        let slot = service
            .get_token(
                sfu_request("alice-token", "@alice:localhost", "m.call#abc"),
                FROM,
            )
            .await;
        assert!(matches!(slot.unwrap_err(), ApiError::BadJson(m) if m.contains("slot_id")));
        let mut delegated = sfu_request("alice-token", "@alice:localhost", ROOM_SLOT);
        delegated.delay_id = Some("d".into());
        assert!(
            matches!(service.get_token(delegated, FROM).await.unwrap_err(), ApiError::BadJson(m) if m.contains("delay_id"))
        );
    }

    #[tokio::test]
    async fn only_a_host_ends_the_call() {
        let livekit = Arc::new(FakeLiveKit::default());
        let service = fake_service(livekit.clone());
        // mallory is not even a member; the fake makes only alice a host.
        let end = |token: &str| EndCallRequest {
            room_id: "!case:localhost".into(),
            openid_token: request(token, "!case:localhost").openid_token,
        };
        assert_eq!(
            service
                .end_call(end("mallory-token"), FROM)
                .await
                .unwrap_err(),
            ApiError::Forbidden
        );
        assert!(livekit.deleted.lock().unwrap().is_empty());

        let ended = service.end_call(end("alice-token"), FROM).await.unwrap();
        assert_eq!(ended.memberships_cleared, 2);
        assert_eq!(
            *livekit.deleted.lock().unwrap(),
            vec![livekit_room_name("!case:localhost")]
        );
    }

    #[tokio::test]
    async fn a_host_ends_the_call_while_livekit_is_away() {
        let livekit = Arc::new(FakeLiveKit::default());
        livekit
            .away
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let service = fake_service(livekit.clone());
        let ended = service
            .end_call(
                EndCallRequest {
                    room_id: "!case:localhost".into(),
                    openid_token: request("alice-token", "!case:localhost").openid_token,
                },
                FROM,
            )
            .await
            .unwrap();
        // The homeserver's record is what ends it; the room went with LiveKit's process.
        assert_eq!(ended.memberships_cleared, 2);
        assert!(livekit.deleted.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_openid_token_is_redeemed_once_across_operations() {
        let livekit = Arc::new(FakeLiveKit::default());
        let service = fake_service(livekit.clone());
        let first = request("alice-token", "!case:localhost");
        let replay = first.clone();
        service.issue_token(first, FROM).await.unwrap();
        assert_eq!(
            service.issue_token(replay.clone(), FROM).await.unwrap_err(),
            ApiError::OpenIdReused
        );
        // Not for TURN either, and nothing was done for the replays.
        let turn = TurnRequest {
            room_id: replay.room_id,
            openid_token: replay.openid_token,
        };
        assert_eq!(
            service.issue_turn(turn, FROM).await.unwrap_err(),
            ApiError::OpenIdReused
        );
        assert_eq!(livekit.created.lock().unwrap().len(), 1);
        // The wire cannot tell a replay from a forgery.
        assert_eq!(ApiError::OpenIdReused.errcode(), "M_UNAUTHORIZED");
        assert_eq!(
            ApiError::OpenIdReused.to_string(),
            ApiError::Unauthorized.to_string()
        );
    }

    #[tokio::test]
    async fn requests_beyond_the_burst_are_rate_limited_per_user() {
        let livekit = Arc::new(FakeLiveKit::default());
        let service = fake_service(livekit.clone());
        for _ in 0..5 {
            service
                .issue_token(request("alice-token", "!case:localhost"), FROM)
                .await
                .unwrap();
        }
        let err = service
            .issue_token(request("alice-token", "!case:localhost"), FROM)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ApiError::RateLimited { retry_after_ms } if retry_after_ms > 0),
            "{err:?}"
        );
        // Nothing was done for the refused request.
        assert_eq!(livekit.created.lock().unwrap().len(), 5);
        // A forged token never reaches the limiter's key space (401 first).
        let err = service
            .issue_token(request("forged", "!case:localhost"), FROM)
            .await
            .unwrap_err();
        assert_eq!(err, ApiError::Unauthorized);
    }

    #[tokio::test]
    async fn homeserver_outage_is_a_refusal() {
        let service = fake_service(Arc::new(FakeLiveKit::default()));
        let err = service
            .issue_token(request("hs-down", "!case:localhost"), FROM)
            .await
            .unwrap_err();
        assert_eq!(err, ApiError::Unavailable);
    }

    #[tokio::test]
    async fn a_gateway_may_set_only_the_fallback_stage() {
        let livekit = Arc::new(FakeLiveKit::default());
        livekit
            .rooms
            .lock()
            .unwrap()
            .insert("R".into(), vec![publisher("@bob:localhost:D")]);
        let service = fake_service(livekit.clone());
        let set = |key: &str, value: &str| AttributeRequest {
            livekit_room: "R".into(),
            identity: "@bob:localhost:D".into(),
            key: key.into(),
            value: value.into(),
        };
        service
            .set_participant_attribute(set(FALLBACK_ATTRIBUTE, "camera"))
            .await
            .unwrap();
        service
            .set_participant_attribute(set(FALLBACK_ATTRIBUTE, ""))
            .await
            .unwrap();
        for (key, value, named) in [
            (
                "org.koinos.matrix_user_id",
                "@mallory:localhost",
                "attribute key",
            ),
            ("", "camera", "attribute key"),
            (FALLBACK_ATTRIBUTE, "anything", "must be one of"),
        ] {
            let err = service
                .set_participant_attribute(set(key, value))
                .await
                .unwrap_err();
            assert!(
                matches!(&err, ApiError::BadJson(m) if m.contains(named)),
                "{key}={value}: {err:?}"
            );
        }
        let mut gone = set(FALLBACK_ATTRIBUTE, "camera");
        gone.identity = "@carol:localhost:D".into();
        assert_eq!(
            service.set_participant_attribute(gone).await.unwrap_err(),
            ApiError::NotFound
        );
        assert_eq!(
            *livekit.admin_calls.lock().unwrap(),
            [
                "set R @bob:localhost:D org.koinos.rtc.fallback=camera",
                "set R @bob:localhost:D org.koinos.rtc.fallback=",
            ]
        );
        let text = service.render_metrics().await;
        assert!(
            text.contains(
                r#"koinos_control_gateway_requests_total{operation="set_participant_attribute",outcome="bad_request"} 3"#
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_gateway_may_only_mute_and_only_a_camera() {
        let livekit = Arc::new(FakeLiveKit::default());
        livekit
            .rooms
            .lock()
            .unwrap()
            .insert("R".into(), vec![publisher("@bob:localhost:D")]);
        let service = fake_service(livekit.clone());
        let mute = |sid: &str, muted: bool| MuteRequest {
            livekit_room: "R".into(),
            identity: "@bob:localhost:D".into(),
            track_sid: sid.into(),
            muted,
        };
        let err = service
            .mute_published_track(mute("TR_cam", false))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ApiError::BadJson(m) if m.contains("never unmutes")),
            "{err:?}"
        );
        for sid in ["TR_mic", "TR_screen"] {
            let err = service
                .mute_published_track(mute(sid, true))
                .await
                .unwrap_err();
            assert!(
                matches!(&err, ApiError::BadJson(m) if m.contains("not a camera")),
                "{sid}: {err:?}"
            );
        }
        assert_eq!(
            service
                .mute_published_track(mute("TR_gone", true))
                .await
                .unwrap_err(),
            ApiError::NotFound
        );
        let mut empty_room = mute("TR_cam", true);
        empty_room.livekit_room = String::new();
        assert!(matches!(
            service.mute_published_track(empty_room).await.unwrap_err(),
            ApiError::BadJson(m) if m.contains("livekit_room")
        ));
        assert!(livekit.admin_calls.lock().unwrap().is_empty());

        service
            .mute_published_track(mute("TR_cam", true))
            .await
            .unwrap();
        assert_eq!(
            *livekit.admin_calls.lock().unwrap(),
            ["mute R @bob:localhost:D TR_cam"]
        );
    }
}
