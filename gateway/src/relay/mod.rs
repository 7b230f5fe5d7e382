//! One signalling session: the browser's WebSocket and LiveKit's, relayed both ways.
//!
//! The task owns both legs. Every frame is decoded (see [`crate::signal`]), binary or JSON
//! text alike, and goes through the session's policy; binary frames are forwarded as their
//! original bytes, a JSON client's requests are re-encoded for LiveKit (which is only ever
//! spoken to in binary) and LiveKit's answers translated back to JSON for it. WebSocket-level
//! ping/pong stays on each leg (each peer answers its own), since livekit-client keeps the
//! session alive with signalling-level pings that do pass through; a browser that sends nothing
//! at all for `browser_silence` is gone. A close, an error or an undecodable frame on either leg
//! ends both.
//!
//! What the client is given of LiveKit's answers is control's, not LiveKit's: the ICE servers
//! of a join or reconnect answer are control's TURN credentials (one source, with control's
//! lifetime), LiveKit's `refresh_token` (a LiveKit token it signs by itself) is withheld, and
//! every `renew_every` the client is handed a renewed ticket from control instead, only while
//! its user is still a member of the case (otherwise the session ends).
//!
//! Besides the two legs, the task owns the session's state without I/O (`session::Session`:
//! the [`Ladder`] and the [`Fallback`] under the policy, and what waits for a listing after a
//! resume), and wakes on the fallback's timer. What it reads goes in; what comes out
//! (`session::Effect`) is carried out here, in order. What the session asks of LiveKit's
//! RoomService (attributes, muting the camera; through control, see [`RoomApi`]) goes, in
//! order, to a small per-session task, and the listing of the room after a resume is asked
//! beside the loop too: nothing but the two sockets ever holds up a frame.
//!
//! Files: `session.rs` (the session without I/O: inputs in, effects out; resumes), `policy.rs`
//! (ladder and fallback over the frames), `frames.rs` (frames the gateway writes itself, what
//! the policy wants sent), `room_api.rs` (RoomService through control, beside the loop); here
//! the pump.

mod frames;
mod policy;
mod room_api;
mod session;
#[cfg(test)]
mod tests;

use axum::extract::ws::{self, WebSocket};
use futures_util::{SinkExt, StreamExt, stream::SplitSink};
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite};
use tracing::{Instrument, debug, info, info_span, warn};

use livekit_protocol::{
    DisconnectReason, LeaveRequest, MuteTrackRequest, SignalRequest, SignalResponse, StreamState,
    UpdateSubscription, UpdateTrackSettings, leave_request, signal_request, signal_response,
};
use prost::Message as _;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

use crate::{
    control::{Control, Refused},
    fallback::{self, Fallback, Stage, Step},
    ladder::{Ladder, Receiving},
    metrics::Metrics,
    revocations,
    signal::{
        ClientVerdict, decode_client_frame, decode_client_text, decode_server_frame,
        decode_server_text, encode_server_text, with_ice_servers,
    },
};

use frames::*;
use policy::*;
pub use room_api::RoomApi;
use room_api::*;
use session::{Effect, Listing};

/// LiveKit's leg.
pub type Upstream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long to wait before asking control again after a renewal it could not answer.
const RENEW_RETRY: Duration = Duration::from_secs(30);

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
    #[error("the browser sent nothing for {0:?}")]
    BrowserSilent(Duration),
}

/// Everything one session's task owns besides its two sockets.
pub struct SessionContext {
    pub identity: String,
    pub path: String,
    pub session: revocations::Session,
    pub ladder: Ladder,
    pub fallback: Fallback,
    pub metrics: Arc<Metrics>,
    pub room: Arc<dyn RoomApi>,
    pub control: Arc<dyn Control>,
    /// The client's ticket, renewed as the session goes.
    pub ticket: String,
    /// Control's TURN credentials for the client, put into join and reconnect answers.
    pub ice_servers: Vec<livekit_protocol::IceServer>,
    pub renew_every: Duration,
    pub browser_silence: Duration,
}

/// What the relay loop needs besides the policy and the sockets.
struct Lease {
    control: Arc<dyn Control>,
    ticket: String,
    ice_servers: Vec<livekit_protocol::IceServer>,
    renew_every: Duration,
    browser_silence: Duration,
    metrics: Arc<Metrics>,
}

pub async fn run(browser: WebSocket, upstream: Upstream, context: SessionContext) {
    let SessionContext {
        identity,
        path,
        session,
        ladder,
        fallback,
        metrics,
        room,
        control,
        ticket,
        ice_servers,
        renew_every,
        browser_silence,
    } = context;
    let lease = Lease {
        control,
        ticket,
        ice_servers,
        renew_every,
        browser_silence,
        metrics: metrics.clone(),
    };
    let span = info_span!("session", %identity, %path);
    async move {
        info!("session open");
        let (admin, requests) = mpsc::unbounded_channel();
        tokio::spawn(room_admin(room.clone(), identity.clone(), requests).in_current_span());
        let policy = Policy {
            counted: HashMap::new(),
            counted_at: None,
            ladder,
            fallback,
        };
        let state = session::Session::new(policy);
        let end = relay(browser, upstream, session, state, admin, room, lease).await;
        metrics.session_ended(match &end {
            End::BrowserClosed | End::UpstreamClosed => "closed",
            End::Revoked => "revoked",
            End::BadFrame(_) => "bad_frame",
            End::BrowserSilent(_) => "browser_silent",
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

type BrowserSink = SplitSink<WebSocket, ws::Message>;
type UpstreamSink = SplitSink<Upstream, tungstenite::Message>;

/// Where what the session decides goes: LiveKit's leg, the browser's leg, the task that
/// carries out RoomService requests, the listing asked beside the loop, and the metrics.
/// Generic over the legs so that a test can hand it legs that fail.
struct Sinks<U, B> {
    upstream: U,
    browser: B,
    admin: mpsc::UnboundedSender<AdminRequest>,
    room: Arc<dyn RoomApi>,
    listed: mpsc::Sender<Listing>,
    metrics: Arc<Metrics>,
}

impl<U, B> Sinks<U, B>
where
    U: futures_util::Sink<tungstenite::Message> + Unpin,
    U::Error: std::fmt::Display,
    B: futures_util::Sink<ws::Message> + Unpin,
    B::Error: std::fmt::Display,
{
    /// Carries out the session's effects, in order; a failure ends the session.
    async fn carry_out(&mut self, effects: Vec<Effect>, encoding: Encoding) -> Result<(), End> {
        let mut effects = effects.into_iter();
        while let Some(effect) = effects.next() {
            if let Err(end) = self.carry_out_one(effect, encoding).await {
                // The session's bookkeeping has moved for what is left undone (after a listing,
                // for everything that waited for it): the metrics move with it, or the gauges
                // would stay skewed once the session ends and lets go of what it counted.
                for effect in effects {
                    if let Effect::Send(out) = effect {
                        out.tallies.iter().for_each(|t| t.record(&self.metrics));
                    }
                }
                return Err(end);
            }
        }
        Ok(())
    }

    async fn carry_out_one(&mut self, effect: Effect, encoding: Encoding) -> Result<(), End> {
        match effect {
            Effect::Send(out) => self.send_out(out, encoding).await?,
            Effect::Forward(frame, arrived) => {
                self.upstream
                    .send(frame)
                    .await
                    .map_err(|e| End::UpstreamError(e.to_string()))?;
                self.metrics.frame_relayed("upstream", arrived.elapsed());
            }
            Effect::ListRoom => {
                let (room, listed) = (self.room.clone(), self.listed.clone());
                tokio::spawn(
                    async move {
                        let _ = listed.send(room.participants().await).await;
                    }
                    .in_current_span(),
                );
            }
        }
        Ok(())
    }

    /// Sends what the policy asked for, its tallies first.
    async fn send_out(&mut self, out: Out, encoding: Encoding) -> Result<(), End> {
        for tally in &out.tallies {
            tally.record(&self.metrics);
        }
        for request in out.admin {
            // The task ends only with the session.
            let _ = self.admin.send(request);
        }
        for (source, settings) in out.upstream {
            self.metrics.settings_sent(source, settings.height);
            self.upstream
                .send(settings_frame(settings))
                .await
                .map_err(|e| End::UpstreamError(e.to_string()))?;
        }
        for response in out.browser {
            self.browser
                .send(encoding.frame(&response)?)
                .await
                .map_err(|e| End::BrowserError(e.to_string()))?;
        }
        Ok(())
    }
}

/// A decoded client request, or why the relay stops or skips.
enum FromClient {
    Request(Box<SignalRequest>, tungstenite::Message),
    Skip,
}

/// Decodes a browser frame in either encoding. The frame for LiveKit is always binary: the
/// original bytes, or a JSON request re-encoded.
fn from_client(
    message: ws::Message,
    encoding: &mut Encoding,
    metrics: &Metrics,
) -> Result<FromClient, End> {
    let (verdict, request, forward) = match message {
        ws::Message::Binary(bytes) => {
            *encoding = Encoding::Binary;
            let (verdict, request) =
                decode_client_frame(&bytes).map_err(|e| End::BadFrame(e.to_string()))?;
            (verdict, request, tungstenite::Message::Binary(bytes))
        }
        ws::Message::Text(text) => {
            *encoding = Encoding::Json;
            metrics.json_frame("upstream");
            let (verdict, request) =
                decode_client_text(text.as_str()).map_err(|e| End::BadFrame(e.to_string()))?;
            let bytes = request.encode_to_vec();
            (verdict, request, tungstenite::Message::Binary(bytes.into()))
        }
        ws::Message::Close(_) => return Err(End::BrowserClosed),
        ws::Message::Ping(_) | ws::Message::Pong(_) => return Ok(FromClient::Skip),
    };
    match verdict {
        ClientVerdict::Forward(kind) => {
            debug!(kind, "client frame");
            Ok(FromClient::Request(Box::new(request), forward))
        }
        ClientVerdict::Drop(kind) => {
            warn!(kind, "dropped a client request the server must not see");
            metrics.policed("simulate_dropped");
            Ok(FromClient::Skip)
        }
    }
}

async fn relay(
    browser: WebSocket,
    upstream: Upstream,
    mut registered: revocations::Session,
    mut state: session::Session,
    admin: mpsc::UnboundedSender<AdminRequest>,
    room: Arc<dyn RoomApi>,
    mut lease: Lease,
) -> End {
    let metrics = lease.metrics.clone();
    let (to_browser, mut from_browser) = browser.split();
    let (to_upstream, mut from_upstream) = upstream.split();
    let (listed_tx, mut listed) = mpsc::channel::<Listing>(1);
    let mut sinks: Sinks<UpstreamSink, BrowserSink> = Sinks {
        upstream: to_upstream,
        browser: to_browser,
        admin,
        room,
        listed: listed_tx,
        metrics: metrics.clone(),
    };
    let mut encoding = Encoding::Binary;
    let mut heard_from_browser = Instant::now();
    let mut renew_at = Instant::now() + lease.renew_every;
    let (renewed_tx, mut renewed) = mpsc::channel::<Result<String, Refused>>(1);
    let mut renewing = false;

    let end = loop {
        let deadline = state.deadline();
        tokio::select! {
            _ = &mut registered.revoked => {
                if let Ok(frame) = encoding.frame(&removed()) {
                    let _ = sinks.browser.send(frame).await;
                }
                break End::Revoked;
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now).into()), if deadline.is_some() => {
                let effects = state.timer(Instant::now());
                if let Err(end) = sinks.carry_out(effects, encoding).await {
                    break end;
                }
            }
            _ = tokio::time::sleep_until((heard_from_browser + lease.browser_silence).into()) => {
                break End::BrowserSilent(lease.browser_silence);
            }
            // Asked beside the relay: control being slow never holds up a frame.
            _ = tokio::time::sleep_until(renew_at.into()), if !renewing => {
                renewing = true;
                let (control, ticket, done) = (lease.control.clone(), lease.ticket.clone(), renewed_tx.clone());
                tokio::spawn(async move {
                    let _ = done.send(control.renew(&ticket).await).await;
                }.in_current_span());
            }
            Some(result) = renewed.recv() => {
                renewing = false;
                match result {
                    Ok(ticket) => {
                        metrics.ticket_renewal("renewed");
                        lease.ticket = ticket.clone();
                        renew_at = Instant::now() + lease.renew_every;
                        let refresh = SignalResponse {
                            message: Some(signal_response::Message::RefreshToken(ticket)),
                        };
                        let frame = match encoding.frame(&refresh) {
                            Ok(frame) => frame,
                            Err(end) => break end,
                        };
                        if let Err(e) = sinks.browser.send(frame).await {
                            break End::BrowserError(e.to_string());
                        }
                    }
                    Err(Refused::NotMember) => {
                        metrics.ticket_renewal("not_member");
                        info!("ticket not renewed: no longer a member of the case");
                        if let Ok(frame) = encoding.frame(&removed()) {
                            let _ = sinks.browser.send(frame).await;
                        }
                        break End::Revoked;
                    }
                    Err(Refused::Ticket) => {
                        // Too old to renew (control was away for long): the session goes on,
                        // the client asks control for a new ticket if it has to reconnect.
                        metrics.ticket_renewal("expired");
                        warn!("ticket too old to renew; the client will need a new one to resume");
                        renew_at = Instant::now() + Duration::from_secs(86_400 * 365);
                    }
                    Err(Refused::NoSeat(_) | Refused::Unavailable) => {
                        metrics.ticket_renewal("failed");
                        renew_at = Instant::now() + RENEW_RETRY;
                    }
                }
            }
            Some(listing) = listed.recv() => {
                let effects = state.listed(listing, Instant::now());
                if let Err(end) = sinks.carry_out(effects, encoding).await {
                    break end;
                }
            }
            message = from_browser.next() => {
                let arrived = Instant::now();
                heard_from_browser = arrived;
                let message = match message {
                    None => break End::BrowserClosed,
                    Some(Err(e)) => break End::BrowserError(e.to_string()),
                    Some(Ok(m)) => m,
                };
                let (request, forward) = match from_client(message, &mut encoding, &metrics) {
                    Err(end) => break end,
                    Ok(FromClient::Skip) => continue,
                    Ok(FromClient::Request(request, forward)) => (*request, forward),
                };
                let effects = state.client(request, forward, arrived);
                if let Err(end) = sinks.carry_out(effects, encoding).await {
                    break end;
                }
            }
            message = from_upstream.next() => {
                let arrived = Instant::now();
                let message = match message {
                    None => break End::UpstreamClosed,
                    Some(Err(e)) => break End::UpstreamError(e.to_string()),
                    Some(Ok(m)) => m,
                };
                let (bytes, decoded) = match message {
                    tungstenite::Message::Binary(bytes) => {
                        let decoded = decode_server_frame(&bytes);
                        (Some(bytes), decoded)
                    }
                    tungstenite::Message::Text(text) => (None, decode_server_text(text.as_str())),
                    tungstenite::Message::Close(_) => break End::UpstreamClosed,
                    tungstenite::Message::Ping(_)
                    | tungstenite::Message::Pong(_)
                    | tungstenite::Message::Frame(_) => continue,
                };
                let (kind, mut response) = match decoded {
                    Ok(decoded) => decoded,
                    Err(e) => break End::BadFrame(e.to_string()),
                };
                debug!(kind, "server frame");
                if kind == "refresh_token" {
                    // A LiveKit token LiveKit signed by itself: the client gets control's
                    // renewed tickets instead.
                    metrics.policed("refresh_token_withheld");
                    continue;
                }
                let forward = match (encoding, bytes) {
                    (Encoding::Binary, Some(bytes)) if matches!(kind, "join" | "reconnect") => {
                        ws::Message::Binary(
                            with_ice_servers(&bytes, &lease.ice_servers)
                                .map_or(bytes, Into::into),
                        )
                    }
                    (Encoding::Binary, Some(bytes)) => ws::Message::Binary(bytes),
                    (encoding, _) => {
                        use signal_response::Message as M;
                        match &mut response.message {
                            Some(M::Join(join)) => join.ice_servers = lease.ice_servers.clone(),
                            Some(M::Reconnect(reconnect)) => {
                                reconnect.ice_servers = lease.ice_servers.clone()
                            }
                            _ => {}
                        }
                        if encoding == Encoding::Json {
                            metrics.json_frame("downstream");
                        }
                        match encoding.frame(&response) {
                            Ok(frame) => frame,
                            Err(end) => break end,
                        }
                    }
                };
                if let Err(e) = sinks.browser.send(forward).await {
                    break End::BrowserError(e.to_string());
                }
                metrics.frame_relayed("downstream", arrived.elapsed());
                // After the frame that prompted it (never before `join`): what the policy says.
                let effects = state.server(response, Instant::now());
                if let Err(end) = sinks.carry_out(effects, encoding).await {
                    break end;
                }
            }
        }
    };
    for tally in state.end(Instant::now()) {
        tally.record(&metrics);
    }
    // Couple the legs: whichever side ended, the other is closed now, so that the client's
    // own resume logic starts from a clean pair instead of a half-open session.
    let _ = sinks.browser.send(ws::Message::Close(None)).await;
    let _ = sinks.upstream.send(tungstenite::Message::Close(None)).await;
    end
}
