//! One signalling session: the browser's WebSocket and LiveKit's, relayed both ways.
//!
//! The task owns both legs. Binary frames are decoded (see [`crate::signal`]) and their
//! original bytes forwarded; WebSocket-level ping/pong stays on each leg (each peer answers its
//! own), since livekit-client keeps the session alive with signalling-level pings that do pass
//! through. A close, an error or an undecodable frame on either leg ends both.

use axum::extract::ws::{self, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite};
use tracing::{Instrument, debug, info, info_span, warn};

use livekit_protocol::{
    DisconnectReason, LeaveRequest, SignalRequest, SignalResponse, UpdateTrackSettings,
    leave_request, signal_request, signal_response,
};
use prost::Message as _;

use std::{sync::Arc, time::Instant};

use crate::{
    ladder::Ladder,
    metrics::Metrics,
    revocations::Session,
    signal::{ClientVerdict, decode_client_frame, decode_server_frame},
};

type Upstream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Who is in this session's LiveKit room now (RoomService `ListParticipants`), behind a trait
/// so the relay is testable without LiveKit.
#[async_trait::async_trait]
pub trait RoomLister: Send + Sync {
    async fn participants(&self) -> anyhow::Result<Vec<livekit_protocol::ParticipantInfo>>;
}

/// The real lister: LiveKit's RoomService with the gateway's API key.
pub struct LiveKitRoom {
    pub client: Arc<livekit_api::services::room::RoomClient>,
    pub name: String,
}

#[async_trait::async_trait]
impl RoomLister for LiveKitRoom {
    async fn participants(&self) -> anyhow::Result<Vec<livekit_protocol::ParticipantInfo>> {
        Ok(self.client.list_participants(&self.name).await?)
    }
}

/// Why a session ended, for the log.
#[derive(Debug, thiserror::Error)]
enum End {
    #[error("browser closed")]
    BrowserClosed,
    #[error("LiveKit closed")]
    UpstreamClosed,
    #[error("browser leg failed: {0}")]
    BrowserError(String),
    #[error("LiveKit leg failed: {0}")]
    UpstreamError(String),
    #[error("bad frame: {0}")]
    BadFrame(String),
    #[error("access revoked by control")]
    Revoked,
}

/// Everything one session's task owns besides its two sockets.
pub struct SessionContext {
    pub identity: String,
    pub path: String,
    pub session: Session,
    pub ladder: Ladder,
    pub metrics: Arc<Metrics>,
    pub room: Arc<dyn RoomLister>,
}

pub async fn run(browser: WebSocket, upstream: Upstream, context: SessionContext) {
    let SessionContext {
        identity,
        path,
        session,
        ladder,
        metrics,
        room,
    } = context;
    let span = info_span!("session", %identity, %path);
    async move {
        info!("session open");
        let end = relay(browser, upstream, session, ladder, &metrics, room.as_ref()).await;
        metrics.session_ended(match &end {
            End::BrowserClosed | End::UpstreamClosed => "closed",
            End::Revoked => "revoked",
            End::BadFrame(_) => "bad_frame",
            End::BrowserError(_) => "browser_error",
            End::UpstreamError(_) => {
                metrics.upstream_error();
                "upstream_error"
            }
        });
        match &end {
            End::BrowserClosed | End::UpstreamClosed | End::Revoked => {
                info!(reason = %end, "session closed")
            }
            _ => warn!(reason = %end, "session ended"),
        }
    }
    .instrument(span)
    .await
}

/// What livekit-client is told when its user is removed: a leave it must not reconnect from.
fn removed_frame() -> ws::Message {
    let leave = SignalResponse {
        message: Some(signal_response::Message::Leave(LeaveRequest {
            can_reconnect: false,
            reason: DisconnectReason::ParticipantRemoved as i32,
            action: leave_request::Action::Disconnect as i32,
            ..Default::default()
        })),
    };
    ws::Message::Binary(leave.encode_to_vec().into())
}

fn settings_frame(settings: UpdateTrackSettings) -> tungstenite::Message {
    let request = SignalRequest {
        message: Some(signal_request::Message::TrackSetting(settings)),
    };
    tungstenite::Message::Binary(request.encode_to_vec().into())
}

async fn relay(
    browser: WebSocket,
    upstream: Upstream,
    mut session: Session,
    mut ladder: Ladder,
    metrics: &Metrics,
    room: &dyn RoomLister,
) -> End {
    let (mut to_browser, mut from_browser) = browser.split();
    let (mut to_upstream, mut from_upstream) = upstream.split();

    let end = 'relay: loop {
        tokio::select! {
            _ = &mut session.revoked => {
                let _ = to_browser.send(removed_frame()).await;
                break End::Revoked;
            }
            message = from_browser.next() => {
                let arrived = Instant::now();
                let message = match message {
                    None => break End::BrowserClosed,
                    Some(Err(e)) => break End::BrowserError(e.to_string()),
                    Some(Ok(m)) => m,
                };
                let forward = match message {
                    ws::Message::Binary(bytes) => match decode_client_frame(&bytes) {
                        Ok((ClientVerdict::Forward(kind), request)) => {
                            debug!(kind, len = bytes.len(), "client frame");
                            match request.message {
                                Some(signal_request::Message::TrackSetting(settings)) => {
                                    if let Some(replacement) = ladder.on_client_settings(&settings) {
                                        debug!(count = replacement.len(), "client settings clamped");
                                        for settings in replacement {
                                            metrics.settings_sent("clamped", settings.height);
                                            if let Err(e) = to_upstream.send(settings_frame(settings)).await {
                                                break 'relay End::UpstreamError(e.to_string());
                                            }
                                        }
                                        continue;
                                    }
                                }
                                Some(signal_request::Message::Subscription(subscription)) => {
                                    if subscription.subscribe {
                                        // Forwarded first, then the caps for what it adds.
                                        let caps = ladder.on_client_subscribe(&subscription.track_sids);
                                        if let Err(e) = to_upstream.send(tungstenite::Message::Binary(bytes)).await {
                                            break End::UpstreamError(e.to_string());
                                        }
                                        for settings in caps {
                                            metrics.settings_sent("injected", settings.height);
                                            if let Err(e) = to_upstream.send(settings_frame(settings)).await {
                                                break 'relay End::UpstreamError(e.to_string());
                                            }
                                        }
                                        continue;
                                    }
                                    ladder.on_client_unsubscribe(&subscription.track_sids);
                                }
                                _ => {}
                            }
                            tungstenite::Message::Binary(bytes)
                        }
                        Ok((ClientVerdict::Drop(kind), _)) => {
                            warn!(kind, "dropped a client request the server must not see");
                            continue;
                        }
                        Err(e) => break End::BadFrame(e.to_string()),
                    },
                    ws::Message::Text(text) => tungstenite::Message::Text(text.as_str().into()),
                    ws::Message::Close(_) => break End::BrowserClosed,
                    ws::Message::Ping(_) | ws::Message::Pong(_) => continue,
                };
                if let Err(e) = to_upstream.send(forward).await {
                    break End::UpstreamError(e.to_string());
                }
                metrics.frame_relayed("upstream", arrived.elapsed());
            }
            message = from_upstream.next() => {
                let arrived = Instant::now();
                let message = match message {
                    None => break End::UpstreamClosed,
                    Some(Err(e)) => break End::UpstreamError(e.to_string()),
                    Some(Ok(m)) => m,
                };
                let (forward, response) = match message {
                    tungstenite::Message::Binary(bytes) => match decode_server_frame(&bytes) {
                        Ok((kind, response)) => {
                            debug!(kind, len = bytes.len(), "server frame");
                            (ws::Message::Binary(bytes), Some(response))
                        }
                        Err(e) => break End::BadFrame(e.to_string()),
                    },
                    tungstenite::Message::Text(text) => (ws::Message::Text(text.as_str().into()), None),
                    tungstenite::Message::Close(_) => break End::UpstreamClosed,
                    tungstenite::Message::Ping(_)
                    | tungstenite::Message::Pong(_)
                    | tungstenite::Message::Frame(_) => continue,
                };
                if let Err(e) = to_browser.send(forward).await {
                    break End::BrowserError(e.to_string());
                }
                metrics.frame_relayed("downstream", arrived.elapsed());
                // After the frame that prompted them (never before `join`): the caps.
                if let Some(response) = response {
                    let injected = if matches!(response.message, Some(signal_response::Message::Reconnect(_))) {
                        // A resume: this session's first view of the room comes from LiveKit.
                        match room.participants().await {
                            Ok(participants) => ladder.on_resume(&participants),
                            Err(e) => {
                                warn!(error = %e, "cannot list the room after a resume; caps follow the next updates");
                                ladder.on_server(&response)
                            }
                        }
                    } else {
                        ladder.on_server(&response)
                    };
                    if !injected.is_empty() {
                        info!(count = injected.len(), cap = ladder.cap(), call_size = ladder.call_size(), "ladder settings injected");
                    }
                    for settings in injected {
                        metrics.settings_sent("injected", settings.height);
                        if let Err(e) = to_upstream.send(settings_frame(settings)).await {
                            break 'relay End::UpstreamError(e.to_string());
                        }
                    }
                }
            }
        }
    };
    // Couple the legs: whichever side ended, the other is closed now, so that the client's
    // own resume logic starts from a clean pair instead of a half-open session.
    let _ = to_browser.send(ws::Message::Close(None)).await;
    let _ = to_upstream.send(tungstenite::Message::Close(None)).await;
    end
}
