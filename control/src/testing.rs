//! Fakes for control's outbound dependencies and a service built from them, shared by the
//! unit tests of every module (the operations, REST, gRPC, admission, enforcement).

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};

use crate::{
    error::ApiError,
    homeserver::OpenIdVerifier,
    livekit::{LiveKitRooms, LiveParticipant, ParticipantInfo, TokenMinter},
    membership::MembershipOracle,
    metrics::Metrics,
    ratelimit::RateLimiter,
    replay::ReplayGuard,
    seats::{SeatKeeper, SeatRules},
    service::*,
    ticket::Tickets,
    turn::TurnMinter,
};

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
