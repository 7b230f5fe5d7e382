//! The gateway's side of control's gRPC. The gateway holds no LiveKit credential: what it needs
//! of LiveKit's RoomService (listing a call after a resume, the fallback's attribute, pausing a
//! camera) control does on its behalf, and every request carries the gateway credential.

use std::time::Duration;

use koinos_proto::{
    gateway_credential,
    v1::{
        ListParticipantsRequest, MutePublishedTrackRequest, SetParticipantAttributeRequest,
        control_service_client::ControlServiceClient,
    },
};
use prost::Message as _;
use tonic::{
    Request, Status,
    metadata::{AsciiMetadataValue, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint},
};

use crate::relay::RoomApi;

/// Adds `authorization: Bearer <credential>` to every request. Marked sensitive, and its Debug
/// says nothing, so that it cannot reach a log.
#[derive(Clone)]
pub struct Credential(AsciiMetadataValue);

impl Credential {
    pub fn new(credential: &str) -> anyhow::Result<Self> {
        let mut value: AsciiMetadataValue =
            MetadataValue::try_from(gateway_credential::bearer(credential))
                .map_err(|_| anyhow::anyhow!("the control credential is not a header value"))?;
        value.set_sensitive(true);
        Ok(Self(value))
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(..)")
    }
}

impl Interceptor for Credential {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert(gateway_credential::METADATA_KEY, self.0.clone());
        Ok(request)
    }
}

pub type Client = ControlServiceClient<InterceptedService<Channel, Credential>>;

/// A client of control that connects on first use and reconnects by itself. `timeout` bounds
/// each request (none for the long-lived revocation stream).
pub fn client(
    url: &str,
    credential: Credential,
    timeout: Option<Duration>,
) -> anyhow::Result<Client> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    if let Some(timeout) = timeout {
        endpoint = endpoint.timeout(timeout);
    }
    Ok(ControlServiceClient::with_interceptor(
        endpoint.connect_lazy(),
        credential,
    ))
}

/// One session's room, through control.
pub struct ControlRoom {
    client: Client,
    name: String,
}

impl ControlRoom {
    /// `name`: the LiveKit room of the session, from its token (accepted by LiveKit).
    pub fn new(client: Client, name: String) -> Self {
        Self { client, name }
    }
}

#[async_trait::async_trait]
impl RoomApi for ControlRoom {
    async fn participants(&self) -> anyhow::Result<Vec<livekit_protocol::ParticipantInfo>> {
        let answer = self
            .client
            .clone()
            .list_participants(ListParticipantsRequest {
                livekit_room: self.name.clone(),
            })
            .await?
            .into_inner();
        answer
            .participants
            .iter()
            .map(|bytes| Ok(livekit_protocol::ParticipantInfo::decode(bytes.as_slice())?))
            .collect()
    }

    async fn set_attribute(&self, identity: &str, key: &str, value: &str) -> anyhow::Result<()> {
        self.client
            .clone()
            .set_participant_attribute(SetParticipantAttributeRequest {
                livekit_room: self.name.clone(),
                identity: identity.to_owned(),
                key: key.to_owned(),
                value: value.to_owned(),
            })
            .await?;
        Ok(())
    }

    async fn mute_track(&self, identity: &str, track_sid: &str, muted: bool) -> anyhow::Result<()> {
        self.client
            .clone()
            .mute_published_track(MutePublishedTrackRequest {
                livekit_room: self.name.clone(),
                identity: identity.to_owned(),
                track_sid: track_sid.to_owned(),
                muted,
            })
            .await?;
        Ok(())
    }
}

/// Without control (`control_grpc_url` empty) there is nobody to ask.
pub struct NoControl;

#[async_trait::async_trait]
impl RoomApi for NoControl {
    async fn participants(&self) -> anyhow::Result<Vec<livekit_protocol::ParticipantInfo>> {
        anyhow::bail!("control_grpc_url is empty: the room cannot be listed")
    }

    async fn set_attribute(&self, _: &str, _: &str, _: &str) -> anyhow::Result<()> {
        anyhow::bail!("control_grpc_url is empty: the attribute cannot be set")
    }

    async fn mute_track(&self, _: &str, _: &str, _: bool) -> anyhow::Result<()> {
        anyhow::bail!("control_grpc_url is empty: the track cannot be muted")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_credential_travels_as_a_sensitive_bearer_value_and_is_never_printed() {
        let secret = "gateway-credential-gateway-credential-0123";
        let mut credential = Credential::new(secret).unwrap();
        assert_eq!(format!("{credential:?}"), "Credential(..)");
        let request = credential.call(Request::new(())).unwrap();
        let value = request.metadata().get("authorization").unwrap();
        assert_eq!(value.to_str().unwrap(), format!("Bearer {secret}"));
        assert!(value.is_sensitive());
        assert!(!format!("{:?}", request.metadata()).contains(secret));
    }
}
