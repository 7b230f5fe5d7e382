//! The gRPC transport (`koinos.rtc.v1.ControlService`): decodes into the service layer's types
//! and calls the same [`RtcService`] as REST.

use std::sync::Arc;

use koinos_proto::v1::{
    EndCallRequest as ProtoEndCall, EndCallResponse, IssueTokenRequest, IssueTokenResponse,
    IssueTurnCredentialsRequest, TurnCredentials, control_service_server::ControlService,
};
use tonic::{Request, Response, Status};

use crate::{
    error::ApiError,
    service::{EndCallRequest, OpenIdToken, RtcService, TokenRequest, TurnRequest},
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
}

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

    #[tokio::test]
    async fn grpc_and_rest_share_the_policy() {
        let api = GrpcApi {
            service: Arc::new(fake_service(Arc::new(FakeLiveKit::default()))),
        };
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
