//! The gRPC transport (`koinos.rtc.v1.ControlService`): decodes into the service layer's types
//! and calls the same [`RtcService`] as REST. The gateway RPCs (`WatchRevocations`,
//! `ListParticipants`, `SetParticipantAttribute`, `MutePublishedTrack`) are gRPC-only; gateways
//! prove themselves with the gateway credential, a shared secret that is no LiveKit key.

use std::{pin::Pin, sync::Arc};

use koinos_proto::{
    gateway_credential,
    v1::{
        EndCallRequest as ProtoEndCall, EndCallResponse, IssueTokenRequest, IssueTokenResponse,
        IssueTurnCredentialsRequest, ListParticipantsRequest, ListParticipantsResponse,
        MutePublishedTrackRequest, MutePublishedTrackResponse, Revocation as ProtoRevocation,
        SetParticipantAttributeRequest, SetParticipantAttributeResponse, TurnCredentials,
        WatchRevocationsRequest, control_service_server::ControlService,
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
        TurnRequest, livekit_room_name,
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
}

impl GrpcApi {
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

fn to_proto(revocation: Revocation) -> ProtoRevocation {
    ProtoRevocation {
        livekit_room: livekit_room_name(revocation.room_id.as_str()),
        room_id: revocation.room_id.into(),
        user_id: revocation.user_id.into(),
        revoked_at_ms: revocation.revoked_at_ms,
        whole_room: revocation.whole_room,
    }
}

type RevocationStream = Pin<Box<dyn Stream<Item = Result<ProtoRevocation, Status>> + Send>>;

#[tonic::async_trait]
impl ControlService for GrpcApi {
    async fn issue_token(
        &self,
        request: Request<IssueTokenRequest>,
    ) -> Result<Response<IssueTokenResponse>, Status> {
        let request = request.into_inner();
        let grant = self
            .service
            .issue_token(TokenRequest {
                room_id: request.room_id,
                openid_token: openid_token(request.openid_token)?,
                device_id: request.device_id,
            })
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
        let request = request.into_inner();
        let creds = self
            .service
            .issue_turn(TurnRequest {
                room_id: request.room_id,
                openid_token: openid_token(request.openid_token)?,
            })
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
        let request = request.into_inner();
        let ended = self
            .service
            .end_call(EndCallRequest {
                room_id: request.room_id,
                openid_token: openid_token(request.openid_token)?,
            })
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
        self.service
            .metrics
            .gateway_request("watch_revocations", "done");
        info!("a gateway subscribed to revocations");
        let stream = BroadcastStream::new(self.revocations.subscribe()).map(|item| match item {
            Ok(revocation) => Ok(to_proto(revocation)),
            // tonic ends the stream with this status: the subscriber resubscribes.
            Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(missed)) => {
                Err(Status::data_loss(format!(
                    "subscriber fell {missed} revocations behind; resubscribe"
                )))
            }
        });
        Ok(Response::new(Box::pin(stream)))
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
    use crate::service::tests::{FakeLiveKit, fake_service, publisher};
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
        vec![
            code(
                api.watch_revocations(with_auth(WatchRevocationsRequest {}, auth))
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
        *livekit.infos.lock().unwrap() = vec![publisher("@bob:localhost:D")];
        let api = api_with(livekit.clone(), Some(CREDENTIAL));
        for impostor in impostors() {
            assert_eq!(
                gateway_rpcs(&api, impostor.as_deref()).await,
                [tonic::Code::Unauthenticated; 4],
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
        assert_eq!(gateway_rpcs(&api, Some(&right)).await, [tonic::Code::Ok; 4]);
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
        *livekit.infos.lock().unwrap() = vec![publisher("@bob:localhost:D")];
        let api = api_with(livekit.clone(), None);
        let mut attempts = impostors();
        attempts.push(Some(gateway_credential::bearer(CREDENTIAL)));
        for attempt in attempts {
            assert_eq!(
                gateway_rpcs(&api, attempt.as_deref()).await,
                [tonic::Code::Unauthenticated; 4],
                "{attempt:?}"
            );
        }
        assert!(livekit.admin_calls.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_gateway_may_set_only_the_fallback_attribute_and_only_mute() {
        let livekit = Arc::new(FakeLiveKit::default());
        *livekit.infos.lock().unwrap() = vec![publisher("@bob:localhost:D")];
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
        *livekit.infos.lock().unwrap() = vec![bob.clone(), publisher("@alice:localhost:D")];
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
            .watch_revocations(with_auth(WatchRevocationsRequest {}, None))
            .await
        else {
            panic!("must be refused");
        };
        assert_eq!(status.code(), tonic::Code::Unauthenticated);

        let mut stream = api
            .watch_revocations(gateway(WatchRevocationsRequest {}))
            .await
            .unwrap()
            .into_inner();
        api.revocations
            .send(Revocation {
                room_id: "!case:localhost".try_into().unwrap(),
                user_id: "@bob:localhost".try_into().unwrap(),
                revoked_at_ms: 42,
                whole_room: false,
            })
            .unwrap();
        let got = stream.next().await.unwrap().unwrap();
        assert_eq!(got.user_id, "@bob:localhost");
        assert_eq!(got.livekit_room, livekit_room_name("!case:localhost"));
        assert_eq!(got.revoked_at_ms, 42);
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_to_resubscribe() {
        let api = api();
        let mut stream = api
            .watch_revocations(gateway(WatchRevocationsRequest {}))
            .await
            .unwrap()
            .into_inner();
        for n in 0..=crate::enforcement::FEED_CAPACITY as i64 {
            let _ = api.revocations.send(Revocation {
                room_id: "!case:localhost".try_into().unwrap(),
                user_id: "@bob:localhost".try_into().unwrap(),
                revoked_at_ms: n,
                whole_room: false,
            });
        }
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
