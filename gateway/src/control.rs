//! The gateway's side of control's gRPC. The gateway holds no LiveKit credential: control
//! admits every connection (exchanging the client's ticket for a LiveKit token after checking
//! membership and seats), renews connected clients' tickets, and makes the RoomService calls
//! the gateway needs (listing a call after a resume, the fallback's attribute, pausing a
//! camera). Every request carries the gateway credential.

use std::{sync::Arc, time::Duration};

use koinos_proto::{
    gateway_credential,
    v1::{
        AdmitSessionRequest, ListParticipantsRequest, MutePublishedTrackRequest,
        RenewTicketRequest, SetParticipantAttributeRequest,
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

/// What control answered for a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// The LiveKit token for this connection (empty when only checking).
    pub livekit_token: String,
    pub livekit_room: String,
    pub identity: String,
    pub matrix_user: String,
    /// TURN for the client, put into LiveKit's join and reconnect answers.
    pub ice_servers: Vec<livekit_protocol::IceServer>,
}

/// Why control did not admit a connection or renew a ticket, as the browser is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Not a ticket of control's (forged, expired, a LiveKit token): 401.
    Ticket,
    /// Its user is not (any more) a joined member of the case: 403.
    NotMember,
    /// No seat (call full, too many devices of the user): 409, with control's message.
    NoSeat(String),
    /// Control could not decide (homeserver or LiveKit unknown) or could not be reached: 503.
    Unavailable,
}

impl Refused {
    fn from_status(status: &tonic::Status) -> Self {
        match status.code() {
            tonic::Code::Unauthenticated | tonic::Code::InvalidArgument => Refused::Ticket,
            tonic::Code::PermissionDenied => Refused::NotMember,
            tonic::Code::ResourceExhausted => Refused::NoSeat(status.message().to_owned()),
            _ => Refused::Unavailable,
        }
    }
}

/// What sessions ask of control, behind a trait so that the gateway is testable without it.
#[async_trait::async_trait]
pub trait Control: Send + Sync {
    /// Admits a connection with the client's ticket (`check_only`: say whether it would be,
    /// taking no seat and minting nothing).
    async fn admit(&self, ticket: &str, check_only: bool) -> Result<Admitted, Refused>;
    /// A fresh ticket for a connected client; `Err(NotMember)` means the session must end.
    async fn renew(&self, ticket: &str) -> Result<String, Refused>;
    /// RoomService on one call, for a session's policy.
    fn room(&self, livekit_room: String) -> Arc<dyn RoomApi>;
}

/// Control over gRPC.
pub struct GrpcControl {
    client: Client,
}

impl GrpcControl {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

#[async_trait::async_trait]
impl Control for GrpcControl {
    async fn admit(&self, ticket: &str, check_only: bool) -> Result<Admitted, Refused> {
        let answer = self
            .client
            .clone()
            .admit_session(AdmitSessionRequest {
                ticket: ticket.to_owned(),
                check_only,
            })
            .await
            .map_err(|status| {
                if Refused::from_status(&status) == Refused::Unavailable {
                    tracing::warn!(code = ?status.code(), message = status.message(), "control could not admit a session");
                }
                Refused::from_status(&status)
            })?
            .into_inner();
        Ok(Admitted {
            livekit_token: answer.livekit_token,
            livekit_room: answer.livekit_room,
            identity: answer.identity,
            matrix_user: answer.matrix_user,
            ice_servers: answer
                .ice_servers
                .into_iter()
                .map(|s| livekit_protocol::IceServer {
                    urls: s.urls,
                    username: s.username,
                    credential: s.credential,
                })
                .collect(),
        })
    }

    async fn renew(&self, ticket: &str) -> Result<String, Refused> {
        Ok(self
            .client
            .clone()
            .renew_ticket(RenewTicketRequest {
                ticket: ticket.to_owned(),
            })
            .await
            .map_err(|status| Refused::from_status(&status))?
            .into_inner()
            .ticket)
    }

    fn room(&self, livekit_room: String) -> Arc<dyn RoomApi> {
        Arc::new(ControlRoom::new(self.client.clone(), livekit_room))
    }
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
