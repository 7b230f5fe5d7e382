//! The gRPC transport (`koinos.rtc.v1.ControlService`): decodes into the service layer's types
//! and calls the same [`RtcService`] as REST. The gateway RPCs (`WatchRevocations`,
//! `ListParticipants`, `SetParticipantAttribute`, `MutePublishedTrack`) are gRPC-only; gateways
//! prove themselves with the gateway credential, a shared secret that is no LiveKit key.

use std::{net::IpAddr, pin::Pin, sync::Arc};

use koinos_proto::{
    gateway_credential,
    v1::{
        AdmitSessionRequest, AdmitSessionResponse, CaughtUp, EndCallRequest as ProtoEndCall,
        EndCallResponse, IceServer, IssueTokenRequest, IssueTokenResponse,
        IssueTurnCredentialsRequest, ListParticipantsRequest, ListParticipantsResponse,
        MutePublishedTrackRequest, MutePublishedTrackResponse, RenewTicketRequest,
        RenewTicketResponse, Revocation as ProtoRevocation, SetParticipantAttributeRequest,
        SetParticipantAttributeResponse, TurnCredentials, WatchRevocationsRequest,
        WatchRevocationsResponse, control_service_server::ControlService,
        watch_revocations_response::Event,
    },
};
use prost::Message as _;
use ring::{hmac, rand::SystemRandom};
use tokio::sync::broadcast;
use tokio_stream::{Stream, StreamExt, wrappers::BroadcastStream};
use tonic::{Request, Response, Status, metadata::MetadataMap};
use tracing::{info, warn};

use crate::{
    enforcement::Revocation,
    error::ApiError,
    service::{
        AttributeRequest, EndCallRequest, MuteRequest, OpenIdToken, RtcService, TokenRequest,
        TurnRequest,
    },
};

fn openid_token(token: Option<koinos_proto::v1::OpenIdToken>) -> Result<OpenIdToken, ApiError> {
    let token = token.ok_or_else(|| ApiError::BadJson("openid_token is required".into()))?;
    Ok(OpenIdToken {
        access_token: token.access_token,
        token_type: token.token_type,
        matrix_server_name: token.matrix_server_name,
        expires_in: token.expires_in,
    })
}

/// The gateway credential as control keeps it: an HMAC of it under a key made at start, so that
/// a presented credential is compared in constant time (ring's `hmac::verify`) and the value
/// itself is not kept around.
pub struct GatewayCredential {
    key: hmac::Key,
    tag: hmac::Tag,
}

impl GatewayCredential {
    pub fn new(credential: &str) -> Self {
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())
            .expect("the system's random source");
        let tag = hmac::sign(&key, credential.as_bytes());
        Self { key, tag }
    }

    fn matches(&self, presented: &str) -> bool {
        hmac::verify(&self.key, presented.as_bytes(), self.tag.as_ref()).is_ok()
    }
}

impl std::fmt::Debug for GatewayCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GatewayCredential(..)")
    }
}

pub struct GrpcApi {
    pub service: Arc<RtcService>,
    pub revocations: broadcast::Sender<Revocation>,
    /// What gateways must present; `None` (not configured) refuses every gateway RPC.
    pub gateway_credential: Option<GatewayCredential>,
    /// Proxies whose `x-forwarded-for` metadata names the caller.
    pub trusted_proxies: Vec<koinos_net::Cidr>,
}

impl GrpcApi {
    /// The caller's address, for the per-address limit.
    fn caller<T>(&self, request: &Request<T>) -> IpAddr {
        let peer = request
            .extensions()
            .get::<koinos_net::PeerAddr>()
            .map(|p| p.0)
            .or_else(|| request.remote_addr())
            .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
        let forwarded = request
            .metadata()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok());
        koinos_net::client_address(peer, forwarded, &self.trusted_proxies)
    }

    /// Only a gateway may use the gateway RPCs: the revocation stream says who was removed from
    /// which case, and the others act on calls. Every refusal has the same generic answer.
    fn authorize_gateway(
        &self,
        operation: &'static str,
        metadata: &MetadataMap,
    ) -> Result<(), Status> {
        let refused = || {
            self.service
                .metrics
                .gateway_request(operation, "unauthenticated");
            Status::unauthenticated("a gateway credential is required")
        };
        let Some(expected) = &self.gateway_credential else {
            warn!(
                operation,
                "gateway RPC refused: control has no gateway_credential configured"
            );
            return Err(refused());
        };
        let presented = metadata
            .get(gateway_credential::METADATA_KEY)
            .and_then(|v| v.to_str().ok())
            .and_then(gateway_credential::presented);
        match presented {
            Some(presented) if expected.matches(presented) => Ok(()),
            Some(_) => {
                warn!(operation, "gateway RPC refused: wrong gateway credential");
                Err(refused())
            }
            None => {
                warn!(operation, "gateway RPC refused: no gateway credential");
                Err(refused())
            }
        }
    }
}

fn to_proto(revocation: Revocation) -> WatchRevocationsResponse {
    WatchRevocationsResponse {
        event: Some(Event::Revocation(ProtoRevocation {
            livekit_room: revocation.livekit_room,
            room_id: revocation.room_id.map(String::from).unwrap_or_default(),
            whole_room: revocation.user_id.is_none(),
            user_id: revocation.user_id.map(String::from).unwrap_or_default(),
            revoked_at_ms: revocation.revoked_at_ms,
        })),
    }
}

type RevocationStream =
    Pin<Box<dyn Stream<Item = Result<WatchRevocationsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ControlService for GrpcApi {
    async fn issue_token(
        &self,
        request: Request<IssueTokenRequest>,
    ) -> Result<Response<IssueTokenResponse>, Status> {
        let from = self.caller(&request);
        let request = request.into_inner();
        let grant = self
            .service
            .issue_token(
                TokenRequest {
                    room_id: request.room_id,
                    openid_token: openid_token(request.openid_token)?,
                    device_id: request.device_id,
                },
                from,
            )
            .await?;
        Ok(Response::new(IssueTokenResponse {
            url: grant.url,
            jwt: grant.jwt,
            livekit_room: grant.livekit_room,
            identity: grant.identity,
            expires_at: grant.expires_at,
        }))
    }

    async fn issue_turn_credentials(
        &self,
        request: Request<IssueTurnCredentialsRequest>,
    ) -> Result<Response<TurnCredentials>, Status> {
        let from = self.caller(&request);
        let request = request.into_inner();
        let creds = self
            .service
            .issue_turn(
                TurnRequest {
                    room_id: request.room_id,
                    openid_token: openid_token(request.openid_token)?,
                },
                from,
            )
            .await?;
        Ok(Response::new(TurnCredentials {
            username: creds.username,
            password: creds.password,
            ttl: creds.ttl as i64,
            uris: creds.uris,
        }))
    }

    async fn end_call(
        &self,
        request: Request<ProtoEndCall>,
    ) -> Result<Response<EndCallResponse>, Status> {
        let from = self.caller(&request);
        let request = request.into_inner();
        let ended = self
            .service
            .end_call(
                EndCallRequest {
                    room_id: request.room_id,
                    openid_token: openid_token(request.openid_token)?,
                },
                from,
            )
            .await?;
        Ok(Response::new(EndCallResponse {
            livekit_room: ended.livekit_room,
            memberships_cleared: ended.memberships_cleared as u32,
        }))
    }

    type WatchRevocationsStream = RevocationStream;

    async fn watch_revocations(
        &self,
        request: Request<WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        self.authorize_gateway("watch_revocations", request.metadata())?;
        // Subscribed before the catch-up is computed: a revocation in between is sent twice
        // (harmless), never lost.
        let live = BroadcastStream::new(self.revocations.subscribe());
        let owners: Vec<(String, String)> = request
            .into_inner()
            .open_sessions
            .into_iter()
            .take(100_000)
            .map(|owner| (owner.livekit_room, owner.matrix_user))
            .collect();
        let missed = self.service.catch_up(&owners).await;
        self.service
            .metrics
            .gateway_request("watch_revocations", "done");
        info!(
            open_sessions = owners.len(),
            revoked = missed.len(),
            "a gateway subscribed to revocations"
        );
        let caught_up = missed
            .into_iter()
            .map(|revocation| Ok(to_proto(revocation)))
            .chain(std::iter::once(Ok(WatchRevocationsResponse {
                event: Some(Event::CaughtUp(CaughtUp {})),
            })));
        let live = live.map(|item| match item {
            Ok(revocation) => Ok(to_proto(revocation)),
            // tonic ends the stream with this status: the subscriber resubscribes.
            Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(missed)) => {
                Err(Status::data_loss(format!(
                    "subscriber fell {missed} revocations behind; resubscribe"
                )))
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::iter(caught_up).chain(live),
        )))
    }

    async fn admit_session(
        &self,
        request: Request<AdmitSessionRequest>,
    ) -> Result<Response<AdmitSessionResponse>, Status> {
        self.authorize_gateway("admit_session", request.metadata())?;
        let request = request.into_inner();
        let admission = self
            .service
            .admit_session(&request.ticket, request.check_only)
            .await?;
        Ok(Response::new(AdmitSessionResponse {
            livekit_token: admission.livekit_token,
            livekit_room: admission.livekit_room,
            identity: admission.identity,
            matrix_user: admission.matrix_user.into(),
            ice_servers: admission
                .turn
                .into_iter()
                .map(|turn| IceServer {
                    urls: turn.uris,
                    username: turn.username,
                    credential: turn.password,
                })
                .collect(),
        }))
    }

    async fn renew_ticket(
        &self,
        request: Request<RenewTicketRequest>,
    ) -> Result<Response<RenewTicketResponse>, Status> {
        self.authorize_gateway("renew_ticket", request.metadata())?;
        let (ticket, expires_at) = self
            .service
            .renew_ticket(&request.into_inner().ticket)
            .await?;
        Ok(Response::new(RenewTicketResponse { ticket, expires_at }))
    }

    async fn list_participants(
        &self,
        request: Request<ListParticipantsRequest>,
    ) -> Result<Response<ListParticipantsResponse>, Status> {
        self.authorize_gateway("list_participants", request.metadata())?;
        let participants = self
            .service
            .call_participants(&request.into_inner().livekit_room)
            .await?;
        Ok(Response::new(ListParticipantsResponse {
            participants: participants.iter().map(|p| p.encode_to_vec()).collect(),
        }))
    }

    async fn set_participant_attribute(
        &self,
        request: Request<SetParticipantAttributeRequest>,
    ) -> Result<Response<SetParticipantAttributeResponse>, Status> {
        self.authorize_gateway("set_participant_attribute", request.metadata())?;
        let request = request.into_inner();
        self.service
            .set_participant_attribute(AttributeRequest {
                livekit_room: request.livekit_room,
                identity: request.identity,
                key: request.key,
                value: request.value,
            })
            .await?;
        Ok(Response::new(SetParticipantAttributeResponse {}))
    }

    async fn mute_published_track(
        &self,
        request: Request<MutePublishedTrackRequest>,
    ) -> Result<Response<MutePublishedTrackResponse>, Status> {
        self.authorize_gateway("mute_published_track", request.metadata())?;
        let request = request.into_inner();
        self.service
            .mute_published_track(MuteRequest {
                livekit_room: request.livekit_room,
                identity: request.identity,
                track_sid: request.track_sid,
                muted: request.muted,
            })
            .await?;
        Ok(Response::new(MutePublishedTrackResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FakeLiveKit, fake_service, publisher};
    use koinos_proto::v1::OpenIdToken as ProtoOpenId;

    fn request(token: &str) -> IssueTokenRequest {
        IssueTokenRequest {
            room_id: "!case:localhost".into(),
            openid_token: Some(ProtoOpenId {
                access_token: token.into(),
                token_type: "Bearer".into(),
                matrix_server_name: "localhost".into(),
                expires_in: 3600,
            }),
            device_id: "DEV".into(),
        }
    }

    const CREDENTIAL: &str = "gateway-credential-gateway-credential-0123";

    fn api_with(livekit: Arc<FakeLiveKit>, credential: Option<&str>) -> GrpcApi {
        GrpcApi {
            service: Arc::new(fake_service(livekit)),
            revocations: crate::enforcement::feed(),
            gateway_credential: credential.map(GatewayCredential::new),
            trusted_proxies: vec![],
        }
    }

    fn api() -> GrpcApi {
        api_with(Arc::new(FakeLiveKit::default()), Some(CREDENTIAL))
    }

    /// `message` with `authorization` metadata set to `value` (none if `None`).
    fn with_auth<T>(message: T, value: Option<&str>) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(value) = value {
            request
                .metadata_mut()
                .insert("authorization", value.parse().unwrap());
        }
        request
    }

    fn gateway<T>(message: T) -> Request<T> {
        with_auth(message, Some(&gateway_credential::bearer(CREDENTIAL)))
    }

    /// Every way of not being the configured gateway.
    fn impostors() -> Vec<Option<String>> {
        vec![
            None,
            Some("Bearer".into()),
            Some(CREDENTIAL.into()),
            Some(gateway_credential::bearer(
                "gateway-credential-gateway-credential-0124",
            )),
            Some(gateway_credential::bearer(
                &CREDENTIAL[..CREDENTIAL.len() - 1],
            )),
            Some(format!("Basic {CREDENTIAL}")),
            // What gateways used to send: a LiveKit token is no gateway credential.
            Some("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJrb2lub3MtZ2F0ZXdheSJ9.c2ln".into()),
        ]
    }

    fn set_fallback(value: &str) -> SetParticipantAttributeRequest {
        SetParticipantAttributeRequest {
            livekit_room: "R".into(),
            identity: "@bob:localhost:D".into(),
            key: "org.koinos.rtc.fallback".into(),
            value: value.into(),
        }
    }

    fn mute(muted: bool) -> MutePublishedTrackRequest {
        MutePublishedTrackRequest {
            livekit_room: "R".into(),
            identity: "@bob:localhost:D".into(),
            track_sid: "TR_cam".into(),
            muted,
        }
    }

    /// The code of each gateway RPC's answer to a request with this `authorization` value.
    async fn gateway_rpcs(api: &GrpcApi, auth: Option<&str>) -> Vec<tonic::Code> {
        let code = |result: Result<(), Status>| match result {
            Ok(()) => tonic::Code::Ok,
            Err(status) => status.code(),
        };
        let ticket = || {
            api.service
                .tickets
                .issue(
                    &crate::ticket::Ticket {
                        room_id: "!case:localhost".try_into().unwrap(),
                        livekit_room: crate::service::livekit_room_name("!case:localhost"),
                        identity: "@alice:localhost:D".into(),
                        matrix_user: "@alice:localhost".try_into().unwrap(),
                        matrix_device: "D".into(),
                        name: "alice".into(),
                        expires_at: 0,
                    },
                    1_000,
                )
                .0
        };
        vec![
            code(
                api.watch_revocations(with_auth(WatchRevocationsRequest::default(), auth))
                    .await
                    .map(drop),
            ),
            code(
                api.admit_session(with_auth(
                    AdmitSessionRequest {
                        ticket: ticket(),
                        check_only: false,
                    },
                    auth,
                ))
                .await
                .map(drop),
            ),
            code(
                api.renew_ticket(with_auth(RenewTicketRequest { ticket: ticket() }, auth))
                    .await
                    .map(drop),
            ),
            code(
                api.list_participants(with_auth(
                    ListParticipantsRequest {
                        livekit_room: "R".into(),
                    },
                    auth,
                ))
                .await
                .map(drop),
            ),
            code(
                api.set_participant_attribute(with_auth(set_fallback("camera"), auth))
                    .await
                    .map(drop),
            ),
            code(
                api.mute_published_track(with_auth(mute(true), auth))
                    .await
                    .map(drop),
            ),
        ]
    }

    #[tokio::test]
    async fn gateway_rpcs_need_the_gateway_credential() {
        let livekit = Arc::new(FakeLiveKit::default());
        livekit
            .rooms
            .lock()
            .unwrap()
            .insert("R".into(), vec![publisher("@bob:localhost:D")]);
        let api = api_with(livekit.clone(), Some(CREDENTIAL));
        for impostor in impostors() {
            assert_eq!(
                gateway_rpcs(&api, impostor.as_deref()).await,
                [tonic::Code::Unauthenticated; 6],
                "{impostor:?}"
            );
        }
        assert!(
            livekit.admin_calls.lock().unwrap().is_empty(),
            "nothing reached LiveKit"
        );
        let status = api
            .list_participants(with_auth(ListParticipantsRequest::default(), None))
            .await
            .unwrap_err();
        assert_eq!(status.message(), "a gateway credential is required");

        let right = gateway_credential::bearer(CREDENTIAL);
        assert_eq!(gateway_rpcs(&api, Some(&right)).await, [tonic::Code::Ok; 6]);
        assert_eq!(livekit.admin_calls.lock().unwrap().len(), 2);
        let text = api.service.render_metrics().await;
        assert!(
            text.contains(
                r#"koinos_control_gateway_requests_total{operation="mute_published_track",outcome="unauthenticated"} 7"#
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn without_a_configured_credential_every_gateway_is_refused() {
        let livekit = Arc::new(FakeLiveKit::default());
        livekit
            .rooms
            .lock()
            .unwrap()
            .insert("R".into(), vec![publisher("@bob:localhost:D")]);
        let api = api_with(livekit.clone(), None);
        let mut attempts = impostors();
        attempts.push(Some(gateway_credential::bearer(CREDENTIAL)));
        for attempt in attempts {
            assert_eq!(
                gateway_rpcs(&api, attempt.as_deref()).await,
                [tonic::Code::Unauthenticated; 6],
                "{attempt:?}"
            );
        }
        assert!(livekit.admin_calls.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_gateway_may_set_only_the_fallback_attribute_and_only_mute() {
        let livekit = Arc::new(FakeLiveKit::default());
        livekit
            .rooms
            .lock()
            .unwrap()
            .insert("R".into(), vec![publisher("@bob:localhost:D")]);
        let api = api_with(livekit.clone(), Some(CREDENTIAL));

        let mut other_key = set_fallback("camera");
        other_key.key = "org.koinos.matrix_user_id".into();
        let status = api
            .set_participant_attribute(gateway(other_key))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status
                .message()
                .contains("\"org.koinos.matrix_user_id\" may not be set")
                && status
                    .message()
                    .contains("only \"org.koinos.rtc.fallback\""),
            "{}",
            status.message()
        );
        assert_eq!(
            status.metadata().get("x-matrix-errcode").unwrap(),
            "M_BAD_JSON"
        );

        let status = api
            .mute_published_track(gateway(mute(false)))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().contains("never unmutes"),
            "{}",
            status.message()
        );
        assert!(livekit.admin_calls.lock().unwrap().is_empty());

        let mut gone = mute(true);
        gone.identity = "@carol:localhost:D".into();
        let status = api.mute_published_track(gateway(gone)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound);

        api.set_participant_attribute(gateway(set_fallback("incoming_video")))
            .await
            .unwrap();
        api.mute_published_track(gateway(mute(true))).await.unwrap();
        assert_eq!(
            *livekit.admin_calls.lock().unwrap(),
            [
                "set R @bob:localhost:D org.koinos.rtc.fallback=incoming_video",
                "mute R @bob:localhost:D TR_cam",
            ]
        );
    }

    #[tokio::test]
    async fn a_gateway_gets_the_participants_as_livekit_encoded_them() {
        let livekit = Arc::new(FakeLiveKit::default());
        let mut bob = publisher("@bob:localhost:D");
        bob.attributes
            .insert("org.koinos.rtc.fallback".into(), "camera".into());
        livekit.rooms.lock().unwrap().insert(
            "R".into(),
            vec![bob.clone(), publisher("@alice:localhost:D")],
        );
        let api = api_with(livekit, Some(CREDENTIAL));
        let answer = api
            .list_participants(gateway(ListParticipantsRequest {
                livekit_room: "R".into(),
            }))
            .await
            .unwrap()
            .into_inner();
        let decoded: Vec<livekit_protocol::ParticipantInfo> = answer
            .participants
            .iter()
            .map(|bytes| livekit_protocol::ParticipantInfo::decode(bytes.as_slice()).unwrap())
            .collect();
        assert_eq!(decoded.len(), 2);
        assert_eq!(decoded[0], bob);

        let status = api
            .list_participants(gateway(ListParticipantsRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }

    #[tokio::test]
    async fn only_a_gateway_may_watch_revocations() {
        let api = api();
        let Err(status) = api
            .watch_revocations(with_auth(WatchRevocationsRequest::default(), None))
            .await
        else {
            panic!("must be refused");
        };
        assert_eq!(status.code(), tonic::Code::Unauthenticated);

        let mut stream = api
            .watch_revocations(gateway(WatchRevocationsRequest::default()))
            .await
            .unwrap()
            .into_inner();
        assert!(matches!(
            stream.next().await.unwrap().unwrap().event,
            Some(Event::CaughtUp(_))
        ));
        let mut revocation = Revocation::of_member(
            &"!case:localhost".try_into().unwrap(),
            "@bob:localhost".try_into().unwrap(),
            false,
        );
        revocation.revoked_at_ms = 42;
        api.revocations.send(revocation).unwrap();
        let Some(Event::Revocation(got)) = stream.next().await.unwrap().unwrap().event else {
            panic!("a revocation");
        };
        assert_eq!(got.user_id, "@bob:localhost");
        assert_eq!(
            got.livekit_room,
            crate::service::livekit_room_name("!case:localhost")
        );
        assert_eq!(got.revoked_at_ms, 42);
        assert!(!got.whole_room);
    }

    #[tokio::test]
    async fn a_resubscribing_gateway_first_hears_which_of_its_sessions_to_end() {
        use koinos_proto::v1::SessionOwner;
        let api = api();
        let call = crate::service::livekit_room_name("!case:localhost");
        let owner = |room: &str, user: &str| SessionOwner {
            livekit_room: room.into(),
            matrix_user: user.into(),
        };
        let mut stream = api
            .watch_revocations(gateway(WatchRevocationsRequest {
                open_sessions: vec![
                    owner(&call, "@alice:localhost"),
                    owner(&call, "@mallory:localhost"),
                ],
            }))
            .await
            .unwrap()
            .into_inner();
        let Some(Event::Revocation(first)) = stream.next().await.unwrap().unwrap().event else {
            panic!("the catch-up first");
        };
        assert_eq!(
            (first.livekit_room.as_str(), first.user_id.as_str()),
            (call.as_str(), "@mallory:localhost")
        );
        assert!(matches!(
            stream.next().await.unwrap().unwrap().event,
            Some(Event::CaughtUp(_))
        ));
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_to_resubscribe() {
        let api = api();
        let mut stream = api
            .watch_revocations(gateway(WatchRevocationsRequest::default()))
            .await
            .unwrap()
            .into_inner();
        for _ in 0..=crate::enforcement::FEED_CAPACITY {
            let _ = api.revocations.send(Revocation::of_member(
                &"!case:localhost".try_into().unwrap(),
                "@bob:localhost".try_into().unwrap(),
                false,
            ));
        }
        // The catch-up marker was queued before the flood; then the stream is cut.
        assert!(stream.next().await.unwrap().is_ok());
        let status = stream.next().await.unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::DataLoss);
    }

    #[tokio::test]
    async fn grpc_and_rest_share_the_policy() {
        let api = api();
        let ok = api
            .issue_token(Request::new(request("alice-token")))
            .await
            .unwrap();
        assert_eq!(ok.get_ref().identity, "@alice:localhost:DEV");

        let denied = api
            .issue_token(Request::new(request("mallory-token")))
            .await
            .unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            denied.metadata().get("x-matrix-errcode").unwrap(),
            "M_FORBIDDEN"
        );

        let mut missing = request("alice-token");
        missing.openid_token = None;
        let bad = api.issue_token(Request::new(missing)).await.unwrap_err();
        assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    }
}
