//! The gRPC transport (`koinos.rtc.v1.ControlService`): decodes into the service layer's types
//! and calls the same [`RtcService`] as REST. `WatchRevocations` is gRPC-only: it is for
//! gateways, which prove themselves with a LiveKit admin token (they hold the API secret).

use std::{pin::Pin, sync::Arc};

use koinos_proto::v1::{
    EndCallRequest as ProtoEndCall, EndCallResponse, IssueTokenRequest, IssueTokenResponse,
    IssueTurnCredentialsRequest, Revocation as ProtoRevocation, TurnCredentials,
    WatchRevocationsRequest, control_service_server::ControlService,
};
use livekit_api::access_token::TokenVerifier;
use tokio::sync::broadcast;
use tokio_stream::{Stream, StreamExt, wrappers::BroadcastStream};
use tonic::{Request, Response, Status, metadata::MetadataMap};
use tracing::{info, warn};

use crate::{
    enforcement::Revocation,
    error::ApiError,
    service::{
        EndCallRequest, OpenIdToken, RtcService, TokenRequest, TurnRequest, livekit_room_name,
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

pub struct GrpcApi {
    pub service: Arc<RtcService>,
    pub revocations: broadcast::Sender<Revocation>,
    /// Verifies the gateways' LiveKit admin tokens (same API key and secret as LiveKit).
    pub gateway_verifier: TokenVerifier,
}

impl GrpcApi {
    /// Only a holder of the LiveKit API secret — a gateway — may watch revocations: the stream
    /// says who was removed from which case, which is nobody else's business.
    fn authorize_gateway(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let refused = || Status::unauthenticated("a LiveKit admin token is required");
        let token = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(refused)?;
        match self.gateway_verifier.verify(token) {
            Ok(claims) if claims.video.room_admin => Ok(()),
            Ok(_) => {
                warn!("WatchRevocations refused: token lacks the roomAdmin grant");
                Err(refused())
            }
            Err(e) => {
                warn!(error = %e, "WatchRevocations refused: invalid token");
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
        self.authorize_gateway(request.metadata())?;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::tests::{FakeLiveKit, fake_service};
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

    const KEY: &str = "devkey";
    const SECRET: &str = "secret-secret-secret-secret-secret";

    fn api() -> GrpcApi {
        GrpcApi {
            service: Arc::new(fake_service(Arc::new(FakeLiveKit::default()))),
            revocations: crate::enforcement::feed(),
            gateway_verifier: TokenVerifier::with_api_key(KEY, SECRET),
        }
    }

    fn bearer(jwt: &str) -> Request<WatchRevocationsRequest> {
        let mut request = Request::new(WatchRevocationsRequest {});
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {jwt}").parse().unwrap());
        request
    }

    fn admin_token(secret: &str, room_admin: bool) -> String {
        livekit_api::access_token::AccessToken::with_api_key(KEY, secret)
            .with_identity("koinos-gateway")
            .with_grants(livekit_api::access_token::VideoGrants {
                room_admin,
                ..Default::default()
            })
            .to_jwt()
            .unwrap()
    }

    #[tokio::test]
    async fn only_a_livekit_admin_may_watch_revocations() {
        let api = api();
        for request in [
            Request::new(WatchRevocationsRequest {}),
            bearer("not-a-jwt"),
            bearer(&admin_token("another-secret-another-secret-xx", true)),
            // A participant token (no roomAdmin) signed with the right secret.
            bearer(&admin_token(SECRET, false)),
        ] {
            let Err(status) = api.watch_revocations(request).await else {
                panic!("must be refused");
            };
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
        }

        let mut stream = api
            .watch_revocations(bearer(&admin_token(SECRET, true)))
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
            .watch_revocations(bearer(&admin_token(SECRET, true)))
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
