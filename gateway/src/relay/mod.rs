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
//! Besides the two legs, the task owns the session's policy state — the [`Ladder`] and the
//! [`Fallback`] — and wakes on the fallback's timer. What it asks of LiveKit's RoomService
//! (attributes, muting the camera; through control, see [`RoomApi`]) goes, in order, to a small
//! per-session task so that a slow call never stalls the relay. The listing of the room after a
//! resume is asked beside the loop as well ([`Resuming`]): frames keep flowing both ways while
//! it is awaited, and what the policy would make of them waits for it, in order.
//!
//! Files: `room_api.rs` (RoomService through control, asked beside the loop), `frames.rs`
//! (frames the gateway writes itself), `policy.rs` (ladder and fallback over the frames), here
//! the pump.

mod frames;
mod policy;
mod room_api;
#[cfg(test)]
mod tests;

use axum::extract::ws::{self, WebSocket};
use futures_util::{SinkExt, StreamExt, stream::SplitSink};
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite};
use tracing::{Instrument, debug, info, info_span, warn};

use livekit_protocol::{
    DisconnectReason, LeaveRequest, MuteTrackRequest, SignalRequest, SignalResponse, StreamState,
    UpdateTrackSettings, leave_request, signal_request, signal_response,
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
    revocations::Session,
    signal::{
        ClientVerdict, decode_client_frame, decode_client_text, decode_server_frame,
        decode_server_text, encode_server_text, with_ice_servers,
    },
};

use frames::*;
use policy::*;
pub use room_api::RoomApi;
use room_api::*;

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
    pub session: Session,
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
        let end = relay(browser, upstream, session, policy, admin, room, lease).await;
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

/// Where what the policy decides goes: LiveKit's leg, the browser's leg, the task that carries
/// out RoomService requests, and the metrics.
struct Sinks {
    upstream: UpstreamSink,
    browser: BrowserSink,
    admin: mpsc::UnboundedSender<AdminRequest>,
    metrics: Arc<Metrics>,
}

/// Sends what the policy asked for; a failure ends the session.
async fn send_out(out: Out, sinks: &mut Sinks, encoding: Encoding) -> Result<(), End> {
    for tally in &out.tallies {
        tally.record(&sinks.metrics);
    }
    for request in out.admin {
        // The task ends only with the session.
        let _ = sinks.admin.send(request);
    }
    for (source, settings) in out.upstream {
        sinks.metrics.settings_sent(source, settings.height);
        sinks
            .upstream
            .send(settings_frame(settings))
            .await
            .map_err(|e| End::UpstreamError(e.to_string()))?;
    }
    for response in out.browser {
        sinks
            .browser
            .send(encoding.frame(&response)?)
            .await
            .map_err(|e| End::BrowserError(e.to_string()))?;
    }
    Ok(())
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

/// A client request through the policy: forwarded (unless the policy answers it instead), then
/// what the policy adds.
async fn client_request(
    request: &SignalRequest,
    forward: tungstenite::Message,
    arrived: Instant,
    policy: &mut Policy,
    sinks: &mut Sinks,
    encoding: Encoding,
) -> Result<(), End> {
    let mut then = match policy.on_client(request) {
        ClientAction::Forward(then) => policy.counted(then),
        ClientAction::Replace(instead) => {
            let instead = policy.counted(instead);
            return send_out(instead, sinks, encoding).await;
        }
    };
    // What the policy counted is recorded now: the forward below may fail (LiveKit gone), and
    // the policy's bookkeeping already moved, so a lost tally would skew the gauges for good.
    for tally in std::mem::take(&mut then.tallies) {
        tally.record(&sinks.metrics);
    }
    sinks
        .upstream
        .send(forward)
        .await
        .map_err(|e| End::UpstreamError(e.to_string()))?;
    sinks.metrics.frame_relayed("upstream", arrived.elapsed());
    send_out(then, sinks, encoding).await
}

/// Asks for LiveKit's listing of the room beside the relay; the answer comes on `listed`.
fn list_room(room: &Arc<dyn RoomApi>, listed: &mpsc::Sender<Listing>) {
    let (room, listed) = (room.clone(), listed.clone());
    tokio::spawn(
        async move {
            let _ = listed.send(room.participants().await).await;
        }
        .in_current_span(),
    );
}

type Listing = anyhow::Result<Vec<livekit_protocol::ParticipantInfo>>;

/// A resume whose listing is awaited: its `reconnect` answer and what the policy has yet to see.
struct Resuming {
    reconnect: SignalResponse,
    deferred: std::collections::VecDeque<Deferred>,
    since: Instant,
}

async fn relay(
    browser: WebSocket,
    upstream: Upstream,
    mut session: Session,
    mut policy: Policy,
    admin: mpsc::UnboundedSender<AdminRequest>,
    room: Arc<dyn RoomApi>,
    mut lease: Lease,
) -> End {
    let metrics = lease.metrics.clone();
    let (to_browser, mut from_browser) = browser.split();
    let (to_upstream, mut from_upstream) = upstream.split();
    let mut sinks = Sinks {
        upstream: to_upstream,
        browser: to_browser,
        admin,
        metrics: metrics.clone(),
    };
    let mut encoding = Encoding::Binary;
    let mut heard_from_browser = Instant::now();
    let mut renew_at = Instant::now() + lease.renew_every;
    let (renewed_tx, mut renewed) = mpsc::channel::<Result<String, Refused>>(1);
    let mut renewing = false;
    let (listed_tx, mut listed) = mpsc::channel::<Listing>(1);
    // After a resume, until LiveKit's listing of the room is in. The relay goes on meanwhile
    // (control being slow or stopped never holds up a frame); what the policy would decide
    // waits for the listing, in order, as do the client requests it may change.
    let mut resuming: Option<Resuming> = None;

    let end = loop {
        let deadline = policy.fallback.deadline();
        tokio::select! {
            _ = &mut session.revoked => {
                if let Ok(frame) = encoding.frame(&removed()) {
                    let _ = sinks.browser.send(frame).await;
                }
                break End::Revoked;
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now).into()), if deadline.is_some() => {
                let out = policy.on_timer(Instant::now());
                if let Err(end) = send_out(policy.counted(out), &mut sinks, encoding).await {
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
                let Some(Resuming { reconnect, mut deferred, since }) = resuming.take() else {
                    continue;
                };
                metrics.resume_listed(listing.is_ok(), since.elapsed());
                let out = policy.on_listing(listing, &reconnect, Instant::now());
                if let Err(end) = send_out(policy.counted(out), &mut sinks, encoding).await {
                    break end;
                }
                // What waited, in order, until one of them is another resume.
                let mut failed = None;
                while let Some(event) = deferred.pop_front() {
                    let result = match event {
                        Deferred::Server(response) => match policy.on_server(&response, Instant::now()) {
                            ServerStep::ListRoom => {
                                list_room(&room, &listed_tx);
                                resuming = Some(Resuming {
                                    reconnect: *response,
                                    deferred: std::mem::take(&mut deferred),
                                    since: Instant::now(),
                                });
                                Ok(())
                            }
                            ServerStep::Out(out) => {
                                send_out(policy.counted(out), &mut sinks, encoding).await
                            }
                        },
                        Deferred::Client(request, forward, arrived) => {
                            client_request(&request, forward, arrived, &mut policy, &mut sinks, encoding).await
                        }
                    };
                    if let Err(end) = result {
                        failed = Some(end);
                        break;
                    }
                }
                if let Some(end) = failed {
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
                if let Some(resuming) = &mut resuming
                    && Policy::watches(&request)
                {
                    resuming.deferred.push_back(Deferred::Client(Box::new(request), forward, arrived));
                    continue;
                }
                if let Err(end) = client_request(&request, forward, arrived, &mut policy, &mut sinks, encoding).await {
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
                if let Some(resuming) = &mut resuming {
                    resuming.deferred.push_back(Deferred::Server(Box::new(response)));
                    continue;
                }
                match policy.on_server(&response, Instant::now()) {
                    ServerStep::ListRoom => {
                        list_room(&room, &listed_tx);
                        resuming = Some(Resuming {
                            reconnect: response,
                            deferred: Default::default(),
                            since: Instant::now(),
                        });
                    }
                    ServerStep::Out(out) => {
                        if let Err(end) = send_out(policy.counted(out), &mut sinks, encoding).await {
                            break end;
                        }
                    }
                }
            }
        }
    };
    for tally in policy.end(Instant::now()) {
        tally.record(&metrics);
    }
    // Couple the legs: whichever side ended, the other is closed now, so that the client's
    // own resume logic starts from a clean pair instead of a half-open session.
    let _ = sinks.browser.send(ws::Message::Close(None)).await;
    let _ = sinks.upstream.send(tungstenite::Message::Close(None)).await;
    end
}
