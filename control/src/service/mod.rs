//! The control plane's operations, independent of transport: REST (`rest.rs`) and gRPC
//! (`grpc.rs`) both decode into these types and call [`RtcService`]; no policy lives in a
//! transport.
//!
//! - `requests.rs`: the request and answer types and the checks of their fields;
//! - `identity.rs`: MSC4195's room-name and identity derivations;
//! - here: [`RtcService`], its dependencies, and every operation.

mod identity;
mod requests;
#[cfg(test)]
mod tests;

pub use identity::{ROOM_SLOT, livekit_identity, livekit_room_name, member_identity};
pub use requests::*;

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId, UserId};
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

pub use koinos_proto::contract::FALLBACK_ATTRIBUTE;
use koinos_proto::contract::FallbackStage;

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
            if FallbackStage::from_wire(&request.value).is_none() {
                return Err(ApiError::BadJson(format!(
                    "{FALLBACK_ATTRIBUTE} must be one of {:?}, got {:?}",
                    FallbackStage::ALL.map(FallbackStage::wire),
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
