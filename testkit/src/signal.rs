//! LiveKit signalling sessions as a test client (or an attacker) opens them: through a gateway
//! with control's ticket, or straight at LiveKit; speaking protobuf binary frames as
//! livekit-client does, or LiveKit's JSON text frames as a hand-written client might.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use livekit_api::{
    access_token::{AccessToken, VideoGrants},
    services::room::{CreateRoomOptions, RoomClient},
};
use livekit_protocol::{
    JoinResponse, ParticipantInfo, SignalRequest, SignalResponse, signal_request, signal_response,
};
use prost::Message as _;
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};

use crate::stack::{LIVEKIT_HTTP, secret};

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How the client encodes its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Binary,
    Json,
}

/// One signalling session.
pub struct Session {
    pub ws: Ws,
    pub encoding: Encoding,
    /// LiveKit's `join`, once received.
    pub join: Option<JoinResponse>,
}

/// The HTTP status of a connection refused before the upgrade.
#[track_caller]
pub fn http_status<T: std::fmt::Debug>(result: Result<T, tungstenite::Error>) -> u16 {
    match result {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        other => panic!("expected an HTTP refusal before upgrade, got {other:?}"),
    }
}

impl Session {
    /// Opens `base/rtc` with `token` (and `extra` query parameters, e.g. `&reconnect=1&sid=…`),
    /// with the page's origin. An HTTP refusal is `Err(tungstenite::Error::Http)`.
    pub async fn open(base: &str, token: &str, extra: &str) -> Result<Session, tungstenite::Error> {
        let mut request =
            format!("{base}/rtc?access_token={token}&protocol=16&sdk=rust&auto_subscribe=1{extra}")
                .into_client_request()
                .unwrap();
        request
            .headers_mut()
            .insert("origin", crate::stack::PAGE_ORIGIN.parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(Session {
            ws,
            encoding: Encoding::Binary,
            join: None,
        })
    }

    /// Opens a session and waits for LiveKit's `join`; panics on anything else.
    pub async fn join(base: &str, token: &str) -> Session {
        let mut session = Self::open(base, token, "")
            .await
            .unwrap_or_else(|e| panic!("the session at {base} was refused: {e}"));
        let join = session
            .wait_for(Duration::from_secs(15), |m| {
                matches!(m, signal_response::Message::Join(_))
            })
            .await;
        match join {
            Some(signal_response::Message::Join(join)) => session.join = Some(join),
            other => panic!("expected join, got {other:?}"),
        }
        session
    }

    /// This session's own participant, from LiveKit's `join`.
    pub fn me(&self) -> &ParticipantInfo {
        self.join
            .as_ref()
            .and_then(|j| j.participant.as_ref())
            .expect("joined")
    }

    /// The next signalling message within `within` (`None`: none, or the session ended).
    pub async fn next(&mut self, within: Duration) -> Option<signal_response::Message> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??
                .ok()?;
            let response = match frame {
                Message::Binary(bytes) => SignalResponse::decode(bytes).ok()?,
                Message::Text(text) => serde_json::from_str::<SignalResponse>(&text).ok()?,
                Message::Close(_) => return None,
                _ => continue,
            };
            if let Some(message) = response.message {
                return Some(message);
            }
        }
    }

    /// The first message within `within` that `wanted` accepts.
    pub async fn wait_for(
        &mut self,
        within: Duration,
        wanted: impl Fn(&signal_response::Message) -> bool,
    ) -> Option<signal_response::Message> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let message = self.next(left).await?;
            if wanted(&message) {
                return Some(message);
            }
        }
    }

    /// Sends a request in the session's encoding.
    pub async fn send(&mut self, message: signal_request::Message) {
        let request = SignalRequest {
            message: Some(message),
        };
        let frame = match self.encoding {
            Encoding::Binary => Message::Binary(request.encode_to_vec().into()),
            Encoding::Json => Message::Text(serde_json::to_string(&request).unwrap().into()),
        };
        let _ = self.ws.send(frame).await;
    }

    /// Sends a raw text frame (JSON written by hand).
    pub async fn send_text(&mut self, text: &str) {
        let _ = self.ws.send(Message::Text(text.into())).await;
    }

    /// Waits until the server tells the session to leave or closes it.
    pub async fn ended_by_server(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while let Ok(frame) = tokio::time::timeout_at(deadline, self.ws.next()).await {
            match frame {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return true,
                Some(Ok(Message::Binary(bytes))) => {
                    if let Ok(SignalResponse {
                        message: Some(signal_response::Message::Leave(_)),
                    }) = SignalResponse::decode(bytes)
                    {
                        return true;
                    }
                }
                Some(Ok(Message::Text(text))) => {
                    if let Ok(SignalResponse {
                        message: Some(signal_response::Message::Leave(_)),
                    }) = serde_json::from_str::<SignalResponse>(&text)
                    {
                        return true;
                    }
                }
                Some(Ok(_)) => {}
            }
        }
        false
    }

    /// LiveKit's answer to a resume (`reconnect=1`): `reconnect`, or `leave` if it refused.
    pub async fn resume_answer(&mut self, within: Duration) -> Option<signal_response::Message> {
        self.wait_for(within, |m| {
            matches!(
                m,
                signal_response::Message::Reconnect(_) | signal_response::Message::Leave(_)
            )
        })
        .await
    }

    /// A signalling ping answered: the session is alive.
    pub async fn answers_ping(&mut self) -> bool {
        self.send(signal_request::Message::PingReq(livekit_protocol::Ping {
            timestamp: 4242,
            rtt: 0,
        }))
        .await;
        self.wait_for(
            Duration::from_secs(10),
            |m| matches!(m, signal_response::Message::PongResp(p) if p.last_ping_timestamp == 4242),
        )
        .await
        .is_some()
    }

    pub async fn leave(mut self) {
        self.send(signal_request::Message::Leave(Default::default()))
            .await;
        let _ = self.ws.close(None).await;
    }
}

/// Opens a session and returns LiveKit's first message (then leaves).
pub async fn first_signal(
    base: &str,
    token: &str,
) -> Result<signal_response::Message, tungstenite::Error> {
    let mut session = Session::open(base, token, "").await?;
    let message = session
        .next(Duration::from_secs(15))
        .await
        .expect("a signalling message within 15 s");
    session.leave().await;
    Ok(message)
}

/// A LiveKit token minted for the test with the dev stack's LiveKit secret (as only control
/// does in the real system): a test-only participant, or an attacker who got hold of one.
pub fn livekit_token(room: &str, identity: &str, matrix_user: Option<&str>) -> String {
    let mut token = AccessToken::with_api_key("devkey", &secret("livekit_api_secret"))
        .with_identity(identity)
        .with_grants(VideoGrants {
            room_join: true,
            room: room.into(),
            ..Default::default()
        });
    if let Some(user) = matrix_user {
        token = token.with_attributes([(koinos_proto::contract::MATRIX_USER_ATTRIBUTE, user)]);
    }
    token.to_jwt().unwrap()
}

fn rooms() -> RoomClient {
    RoomClient::with_api_key(LIVEKIT_HTTP, "devkey", &secret("livekit_api_secret"))
}

/// Creates a LiveKit room directly (as nobody but control should).
pub async fn create_livekit_room(name: &str) {
    rooms()
        .create_room(name, CreateRoomOptions::default())
        .await
        .expect("LiveKit reachable");
}

/// Who LiveKit lists in a room (empty if it does not exist).
pub async fn livekit_participants(room: &str) -> Vec<ParticipantInfo> {
    rooms().list_participants(room).await.unwrap_or_default()
}

/// Whether LiveKit has a room of this name.
pub async fn livekit_room_exists(room: &str) -> bool {
    rooms()
        .list_rooms(vec![room.to_owned()])
        .await
        .map(|rooms| rooms.iter().any(|r| r.name == room))
        .unwrap_or(false)
}
