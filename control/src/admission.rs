//! What a gateway asks of control for each signalling connection, so that nobody is in a call
//! on anything but control's word, given after checking membership *now*:
//!
//! - [`RtcService::admit_session`]: a client presents its ticket to the gateway (on a join and
//!   on every resume); control checks the ticket, that its user is joined to the case now, and
//!   gives the connection a seat, then mints the LiveKit token for that one connection (and the
//!   TURN credentials the gateway hands the client in LiveKit's join answer).
//! - [`RtcService::renew_ticket`]: a connected client gets a fresh ticket for its next resume
//!   (through the gateway, as LiveKit's `refresh_token` would have been), only while its user is
//!   still a member. LiveKit's own refreshed tokens never reach a client.
//! - [`RtcService::catch_up`]: a gateway (re)subscribing to revocations learns which of the
//!   sessions it holds belong to someone who is no longer a member.

use std::{collections::HashMap, time::Duration};

use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId};
use tracing::info;

use crate::{
    enforcement::Revocation,
    error::ApiError,
    service::{RtcService, livekit_room_name},
    turn::TurnCredentials,
};

/// How long after its expiry a ticket can still be renewed. Only a gateway renews, for a session
/// LiveKit holds open; a renewal that failed while control was away is retried this long.
const RENEW_GRACE: Duration = Duration::from_secs(3600);

/// A connection control admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// The LiveKit token for this connection (or, when only checking, for asking LiveKit's
    /// validate endpoint why a connection failed).
    pub livekit_token: String,
    pub livekit_room: String,
    pub identity: String,
    pub matrix_user: OwnedUserId,
    /// TURN credentials for the client (`None` when only checking).
    pub turn: Option<TurnCredentials>,
}

impl RtcService {
    /// gRPC `AdmitSession` (gateways).
    pub async fn admit_session(
        &self,
        ticket: &str,
        check_only: bool,
    ) -> Result<Admission, ApiError> {
        self.gateway_counted("admit_session", self.admit_inner(ticket, check_only))
            .await
    }

    async fn admit_inner(&self, raw: &str, check_only: bool) -> Result<Admission, ApiError> {
        let now = self.clock.now_unix();
        let ticket = self.tickets.verify(raw, now, Duration::ZERO)?;
        if ticket.livekit_room != livekit_room_name(ticket.room_id.as_str()) {
            // Control never signs such a ticket.
            return Err(ApiError::Unauthorized);
        }
        let user = &ticket.matrix_user;
        if !self.membership.is_joined(&ticket.room_id, user).await? {
            info!(%user, room_id = %ticket.room_id, "connection refused: not a member (any more)");
            return Err(ApiError::Forbidden);
        }
        let mint = || {
            self.minter.participant_token(
                &ticket.livekit_room,
                &ticket.identity,
                user.as_str(),
                &ticket.matrix_device,
                &ticket.name,
                self.session_token_ttl,
            )
        };
        if check_only {
            // For LiveKit's validate endpoint only: no seat, no TURN.
            return Ok(Admission {
                livekit_token: mint()?,
                livekit_room: ticket.livekit_room.clone(),
                identity: ticket.identity.clone(),
                matrix_user: user.clone(),
                turn: None,
            });
        }
        let lock = self.seats.lock_of(&ticket.livekit_room);
        let _decided_alone = lock.lock().await;
        let present = self
            .timed_livekit(self.livekit.participants(&ticket.livekit_room))
            .await?;
        if let Err(refusal) = self.seats.take(
            &ticket.livekit_room,
            &present,
            &ticket.identity,
            user.as_str(),
            &self.seat_rules,
        ) {
            info!(%user, room_id = %ticket.room_id, present = present.len(),
                reason = refusal.reason(), "connection refused: no seat");
            return Err(refusal);
        }
        info!(%user, room_id = %ticket.room_id, identity = %ticket.identity, "connection admitted");
        Ok(Admission {
            livekit_token: mint()?,
            livekit_room: ticket.livekit_room.clone(),
            identity: ticket.identity.clone(),
            matrix_user: user.clone(),
            turn: Some(self.turn.mint(user, now)),
        })
    }

    /// gRPC `RenewTicket` (gateways): a new ticket with the same claims and a new expiry.
    pub async fn renew_ticket(&self, raw: &str) -> Result<(String, i64), ApiError> {
        self.gateway_counted("renew_ticket", async {
            let now = self.clock.now_unix();
            let ticket = self.tickets.verify(raw, now, RENEW_GRACE)?;
            if !self
                .membership
                .is_joined(&ticket.room_id, &ticket.matrix_user)
                .await?
            {
                info!(user = %ticket.matrix_user, room_id = %ticket.room_id, "ticket not renewed: not a member any more");
                return Err(ApiError::Forbidden);
            }
            Ok(self.tickets.issue(&ticket, now))
        })
        .await
    }

    /// Which of a gateway's sessions (LiveKit room, Matrix user) belong to someone who is no
    /// longer joined to the case, or to a call of no case room control is in. Unknown answers
    /// (membership stale) revoke nothing: enforcement catches up once it knows.
    pub async fn catch_up(&self, owners: &[(String, String)]) -> Vec<Revocation> {
        let Some(case_rooms) = self.membership.case_rooms() else {
            return vec![];
        };
        let cases: HashMap<String, OwnedRoomId> = case_rooms
            .into_iter()
            .map(|room_id| (livekit_room_name(room_id.as_str()), room_id))
            .collect();
        let mut revoked = Vec::new();
        for (livekit_room, user) in owners {
            let Some(room_id) = cases.get(livekit_room) else {
                revoked.push(Revocation {
                    livekit_room: livekit_room.clone(),
                    room_id: None,
                    user_id: None,
                    revoked_at_ms: self.clock.now_unix() * 1000,
                });
                continue;
            };
            let Ok(user) = OwnedUserId::try_from(user.as_str()) else {
                continue;
            };
            if let Ok(false) = self.membership.is_joined(room_id, &user).await {
                revoked.push(Revocation::of_member(room_id, user, false));
            }
        }
        revoked
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        service::TokenRequest,
        testing::{FROM, FakeLiveKit, LIVEKIT_SECRET, fake_service, request},
    };

    async fn ticket_of(service: &RtcService, token: &str, device: &str) -> String {
        let mut req: TokenRequest = request(token, "!case:localhost");
        req.device_id = device.into();
        service.issue_token(req, FROM).await.unwrap().jwt
    }

    #[tokio::test]
    async fn a_members_ticket_is_exchanged_for_a_livekit_token_for_one_connection() {
        let livekit = Arc::new(FakeLiveKit::default());
        let service = fake_service(livekit.clone());
        let ticket = ticket_of(&service, "alice-token", "DEV").await;
        let admitted = service.admit_session(&ticket, false).await.unwrap();
        assert_eq!(admitted.identity, "@alice:localhost:DEV");
        assert_eq!(admitted.matrix_user.as_str(), "@alice:localhost");
        let claims =
            livekit_api::access_token::TokenVerifier::with_api_key("devkey", LIVEKIT_SECRET)
                .verify(&admitted.livekit_token)
                .unwrap();
        assert_eq!(claims.sub, "@alice:localhost:DEV");
        assert_eq!(claims.video.room, livekit_room_name("!case:localhost"));
        assert!(claims.video.room_join);
        assert!(!claims.video.room_admin && !claims.video.room_create && !claims.video.room_list);
        assert_eq!(claims.video.can_update_own_metadata, Some(false));
        assert_eq!(
            claims.attributes["org.koinos.matrix_user_id"],
            "@alice:localhost"
        );
        let turn = admitted.turn.unwrap();
        assert_eq!(turn.username, "4600:@alice:localhost");
        // Checking only books no seat and mints no TURN credential.
        let checked = service.admit_session(&ticket, true).await.unwrap();
        assert_eq!(checked.turn, None);
    }

    #[tokio::test]
    async fn a_ticket_of_someone_no_longer_a_member_or_not_controls_is_refused() {
        let livekit = Arc::new(FakeLiveKit::default());
        let service = fake_service(livekit.clone());
        // mallory cannot get a ticket, so make one as control would have for her (e.g. before
        // she was kicked): the membership check at admission refuses it.
        let kicked = crate::ticket::Ticket {
            room_id: "!case:localhost".try_into().unwrap(),
            livekit_room: livekit_room_name("!case:localhost"),
            identity: "@mallory:localhost:M".into(),
            matrix_user: "@mallory:localhost".try_into().unwrap(),
            matrix_device: "M".into(),
            name: "mallory".into(),
            expires_at: 0,
        };
        let (saved, _) = service.tickets.issue(&kicked, 1_000);
        assert_eq!(
            service.admit_session(&saved, false).await.unwrap_err(),
            ApiError::Forbidden
        );
        assert_eq!(
            service.renew_ticket(&saved).await.unwrap_err(),
            ApiError::Forbidden
        );
        // A ticket naming another call than its case's.
        let mut elsewhere = kicked.clone();
        elsewhere.matrix_user = "@alice:localhost".try_into().unwrap();
        elsewhere.livekit_room = "mallorys-own-room".into();
        let (forged, _) = service.tickets.issue(&elsewhere, 1_000);
        assert_eq!(
            service.admit_session(&forged, false).await.unwrap_err(),
            ApiError::Unauthorized
        );
        // A LiveKit token is not a ticket.
        let livekit_token = service
            .minter
            .participant_token(
                "R",
                "@alice:localhost:D",
                "@alice:localhost",
                "D",
                "alice",
                Duration::from_secs(60),
            )
            .unwrap();
        assert_eq!(
            service
                .admit_session(&livekit_token, false)
                .await
                .unwrap_err(),
            ApiError::Unauthorized
        );
    }

    #[tokio::test]
    async fn made_up_devices_do_not_take_the_call() {
        let livekit = Arc::new(FakeLiveKit::default());
        let mut service = fake_service(livekit.clone());
        service.rate_limiter = crate::ratelimit::RateLimiter::new(100, 100);
        // Tickets for six made-up devices take no seat...
        let mut tickets = Vec::new();
        for n in 0..6 {
            tickets.push(ticket_of(&service, "alice-token", &format!("FAKE{n}")).await);
        }
        // ...and only two of them can connect.
        assert!(service.admit_session(&tickets[0], false).await.is_ok());
        assert!(service.admit_session(&tickets[1], false).await.is_ok());
        assert_eq!(
            service.admit_session(&tickets[2], false).await.unwrap_err(),
            ApiError::TooManyDevices { max: 2 }
        );
        // A resume of one of her two devices is still fine.
        assert!(service.admit_session(&tickets[0], false).await.is_ok());
    }

    #[tokio::test]
    async fn concurrent_admissions_never_overfill_a_call() {
        let livekit = Arc::new(FakeLiveKit::default());
        let mut service = fake_service(livekit.clone());
        service.seat_rules.max_devices_per_user = 8;
        service.rate_limiter = crate::ratelimit::RateLimiter::new(100, 100);
        let service = Arc::new(service);
        let mut tickets = Vec::new();
        for n in 0..8 {
            tickets.push(ticket_of(&service, "alice-token", &format!("D{n}")).await);
        }
        let admitted = futures_join_all(tickets.into_iter().map(|ticket| {
            let service = service.clone();
            tokio::spawn(async move { service.admit_session(&ticket, false).await.is_ok() })
        }))
        .await;
        assert_eq!(admitted.iter().filter(|ok| **ok).count(), 6, "{admitted:?}");
    }

    async fn futures_join_all(
        handles: impl Iterator<Item = tokio::task::JoinHandle<bool>>,
    ) -> Vec<bool> {
        let mut out = Vec::new();
        for handle in handles {
            out.push(handle.await.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn renewal_keeps_the_claims_and_moves_the_expiry() {
        let service = fake_service(Arc::new(FakeLiveKit::default()));
        let ticket = ticket_of(&service, "alice-token", "DEV").await;
        let (renewed, expires_at) = service.renew_ticket(&ticket).await.unwrap();
        assert_eq!(expires_at, 1_600);
        let before = service
            .tickets
            .verify(&ticket, 1_000, Duration::ZERO)
            .unwrap();
        let after = service
            .tickets
            .verify(&renewed, 1_000, Duration::ZERO)
            .unwrap();
        assert_eq!(before, after);
    }

    #[tokio::test]
    async fn catch_up_names_the_sessions_of_former_members_and_of_rooms_of_no_case() {
        let service = fake_service(Arc::new(FakeLiveKit::default()));
        let call = livekit_room_name("!case:localhost");
        let revoked = service
            .catch_up(&[
                (call.clone(), "@alice:localhost".into()),
                (call.clone(), "@mallory:localhost".into()),
                ("elsewhere".into(), "@alice:localhost".into()),
            ])
            .await;
        assert_eq!(revoked.len(), 2, "{revoked:?}");
        assert_eq!(
            revoked[0].user_id.as_ref().map(|u| u.as_str()),
            Some("@mallory:localhost")
        );
        assert_eq!(revoked[0].livekit_room, call);
        assert_eq!(
            (revoked[1].livekit_room.as_str(), &revoked[1].user_id),
            ("elsewhere", &None)
        );
    }
}
