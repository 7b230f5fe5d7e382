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
    ladder::Ladder,
    metrics::Metrics,
    revocations::Session,
    signal::{
        ClientVerdict, decode_client_frame, decode_client_text, decode_server_frame,
        decode_server_text, encode_server_text, with_ice_servers,
    },
};

/// LiveKit's leg.
pub type Upstream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long to wait before asking control again after a renewal it could not answer.
const RENEW_RETRY: Duration = Duration::from_secs(30);

/// What a session asks of LiveKit's RoomService about its own room, behind a trait so the
/// relay is testable without LiveKit. The gateway holds no LiveKit credential: the real one
/// asks control, which makes the call ([`crate::control::ControlRoom`]).
#[async_trait::async_trait]
pub trait RoomApi: Send + Sync {
    /// Who is in the room now (`ListParticipants`).
    async fn participants(&self) -> anyhow::Result<Vec<livekit_protocol::ParticipantInfo>>;
    /// Sets one attribute of a participant (`UpdateParticipant`; empty deletes it).
    async fn set_attribute(&self, identity: &str, key: &str, value: &str) -> anyhow::Result<()>;
    /// `MutePublishedTrack` (control only ever mutes).
    async fn mute_track(&self, identity: &str, track_sid: &str, muted: bool) -> anyhow::Result<()>;
}

/// A RoomService request of the fallback, carried out in order by [`room_admin`].
#[derive(Debug)]
enum AdminRequest {
    Stage(Stage),
    MuteCamera(String),
}

/// The per-session task that carries out RoomService requests one after another.
async fn room_admin(
    room: Arc<dyn RoomApi>,
    identity: String,
    mut requests: mpsc::UnboundedReceiver<AdminRequest>,
) {
    while let Some(request) = requests.recv().await {
        let result = match &request {
            AdminRequest::Stage(stage) => {
                room.set_attribute(&identity, fallback::ATTRIBUTE, stage.attribute())
                    .await
            }
            AdminRequest::MuteCamera(sid) => room.mute_track(&identity, sid, true).await,
        };
        match result {
            Ok(()) => debug!(?request, "RoomService request done"),
            Err(e) => warn!(?request, error = %e, "RoomService request failed"),
        }
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
            admin,
            metrics: metrics.clone(),
        };
        let end = relay(browser, upstream, session, policy, room, lease).await;
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

/// What livekit-client is told when its user is removed: a leave it must not reconnect from.
fn removed() -> SignalResponse {
    SignalResponse {
        message: Some(signal_response::Message::Leave(LeaveRequest {
            can_reconnect: false,
            reason: DisconnectReason::ParticipantRemoved as i32,
            action: leave_request::Action::Disconnect as i32,
            ..Default::default()
        })),
    }
}

/// How the browser speaks: LiveKit answers a client in the encoding of its last request, and
/// so does the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Binary,
    Json,
}

impl Encoding {
    /// The message in this encoding. A message with a value LiveKit's JSON cannot name (an enum
    /// value newer than our protocol crate) cannot be given to a JSON client: that ends its
    /// session, with the reason logged, rather than pass it on unread.
    fn frame(self, response: &SignalResponse) -> Result<ws::Message, End> {
        match self {
            Encoding::Binary => Ok(ws::Message::Binary(response.encode_to_vec().into())),
            Encoding::Json => encode_server_text(response)
                .map(|text| ws::Message::Text(text.into()))
                .map_err(|e| End::BadFrame(format!("cannot translate to JSON: {e}"))),
        }
    }
}

fn settings_frame(settings: UpdateTrackSettings) -> tungstenite::Message {
    let request = SignalRequest {
        message: Some(signal_request::Message::TrackSetting(settings)),
    };
    tungstenite::Message::Binary(request.encode_to_vec().into())
}

/// What the policy wants sent besides (or instead of) the frame that prompted it.
#[derive(Debug, Default)]
struct Out {
    /// Settings for LiveKit, with the metrics label of why (`injected`, `clamped`, `fallback`).
    upstream: Vec<(&'static str, UpdateTrackSettings)>,
    /// Frames for the browser.
    browser: Vec<SignalResponse>,
}

impl Out {
    fn settings(source: &'static str, settings: Vec<UpdateTrackSettings>) -> Self {
        Self {
            upstream: settings.into_iter().map(|s| (source, s)).collect(),
            browser: vec![],
        }
    }

    fn and(mut self, other: Out) -> Self {
        self.upstream.extend(other.upstream);
        self.browser.extend(other.browser);
        self
    }
}

/// What becomes of a client frame.
enum ClientAction {
    /// Forward the original bytes, then send `Out`.
    Forward(Out),
    /// Do not forward it; send `Out` instead.
    Replace(Out),
}

/// What becomes of a server frame, once relayed.
enum ServerStep {
    /// Send `Out`.
    Out(Out),
    /// A resume: the policy needs LiveKit's listing of the room ([`Policy::on_listing`]) before
    /// anything that follows.
    ListRoom,
}

/// What the policy has yet to see while the listing after a resume is awaited, in arrival order.
enum Deferred {
    /// A server frame, already relayed to the browser.
    Server(Box<SignalResponse>),
    /// A client request the policy may change ([`Policy::watches`]): held, not yet forwarded.
    Client(Box<SignalRequest>, tungstenite::Message, Instant),
}

/// The session's policy: the ladder, the fallback, and the RoomService requests they lead to.
struct Policy {
    ladder: Ladder,
    fallback: Fallback,
    /// The layer of each camera subscription as last counted in the metrics, and the ladder's
    /// revision it was counted at.
    counted: HashMap<String, u32>,
    counted_at: Option<u64>,
    admin: mpsc::UnboundedSender<AdminRequest>,
    metrics: Arc<Metrics>,
}

impl Policy {
    /// Whether [`Policy::on_client`] may change or answer this request (the others are
    /// forwarded as they are).
    fn watches(request: &SignalRequest) -> bool {
        matches!(
            request.message,
            Some(
                signal_request::Message::TrackSetting(_)
                    | signal_request::Message::Subscription(_)
                    | signal_request::Message::Mute(_)
            )
        )
    }

    fn on_client(&mut self, request: &SignalRequest) -> ClientAction {
        match &request.message {
            Some(signal_request::Message::TrackSetting(settings)) => {
                match self.ladder.on_client_settings(settings) {
                    Some(replacement) => {
                        debug!(?settings, ?replacement, "client settings clamped");
                        let source = if self.ladder.paused() {
                            "fallback"
                        } else {
                            "clamped"
                        };
                        ClientAction::Replace(Out::settings(source, replacement))
                    }
                    None => ClientAction::Forward(Out::default()),
                }
            }
            Some(signal_request::Message::Subscription(subscription)) => {
                if subscription.subscribe {
                    // Forwarded first, then the caps for what it adds.
                    let caps = self.ladder.on_client_subscribe(&subscription.track_sids);
                    ClientAction::Forward(Out::settings(self.injected(), caps))
                } else {
                    self.ladder.on_client_unsubscribe(&subscription.track_sids);
                    ClientAction::Forward(Out::default())
                }
            }
            Some(signal_request::Message::Mute(mute))
                if !mute.muted
                    && self.fallback.stage() == Stage::CameraPaused
                    && self.ladder.is_own_camera(&mute.sid) =>
            {
                // The camera is paused for the network's sake: the client's unmute is refused
                // and the client told so, keeping its view of the track true.
                info!(track = %mute.sid, "camera unmute refused during the audio-only fallback");
                self.metrics.policed("unmute_refused");
                ClientAction::Replace(Out {
                    upstream: vec![],
                    browser: vec![SignalResponse {
                        message: Some(signal_response::Message::Mute(MuteTrackRequest {
                            sid: mute.sid.clone(),
                            muted: true,
                        })),
                    }],
                })
            }
            _ => ClientAction::Forward(Out::default()),
        }
    }

    /// A server frame, after it went to the browser. A resume needs LiveKit's listing of the
    /// room first ([`Policy::on_listing`]); the relay asks for it beside its loop.
    fn on_server(&mut self, response: &SignalResponse) -> ServerStep {
        use signal_response::Message as M;
        match &response.message {
            // A resume: this session's first view of the room comes from LiveKit.
            Some(M::Reconnect(_)) => ServerStep::ListRoom,
            Some(M::ConnectionQuality(update)) => ServerStep::Out({
                let own = self.ladder.own_sid();
                match update
                    .updates
                    .iter()
                    .find(|u| !own.is_empty() && u.participant_sid == own)
                {
                    Some(info) => {
                        debug!(
                            quality = info.quality,
                            score = info.score,
                            "own connection quality"
                        );
                        let step = self.fallback.on_quality(info.quality, Instant::now());
                        self.take(step)
                    }
                    None => Out::default(),
                }
            }),
            Some(M::StreamStateUpdate(update)) => ServerStep::Out({
                let resumed = update
                    .stream_states
                    .iter()
                    .filter(|s| s.state == StreamState::Active as i32)
                    .filter_map(|s| self.ladder.on_stream_active(&s.track_sid))
                    .collect::<Vec<_>>();
                if !resumed.is_empty() {
                    info!(
                        count = resumed.len(),
                        "LiveKit resumed paused video; disabled again"
                    );
                }
                Out::settings("fallback", resumed)
            }),
            _ => ServerStep::Out({
                let settings = self.ladder.on_server(response);
                if !settings.is_empty() {
                    info!(
                        count = settings.len(),
                        cap = self.ladder.cap(),
                        call_size = self.ladder.call_size(),
                        "ladder settings injected"
                    );
                    for s in &settings {
                        debug!(track = ?s.track_sids, height = s.height, disabled = s.disabled, "injected");
                    }
                }
                Out::settings(self.injected(), settings)
            }),
        }
    }

    /// LiveKit's listing of the room after the resume `reconnect` (or why there is none).
    fn on_listing(
        &mut self,
        listing: anyhow::Result<Vec<livekit_protocol::ParticipantInfo>>,
        reconnect: &SignalResponse,
    ) -> Out {
        match listing {
            Ok(participants) => {
                let own = participants
                    .iter()
                    .find(|p| p.identity == self.ladder.own_identity());
                let stage = own
                    .and_then(|p| p.attributes.get(fallback::ATTRIBUTE))
                    .map_or(Stage::Normal, |value| Stage::from_attribute(value));
                let mut out = Out::default();
                if stage != Stage::Normal {
                    info!(stage = stage.label(), "resumed in the audio-only fallback");
                    self.fallback.resume_in(stage, Instant::now());
                    self.metrics.fallback_resumed();
                    out = Out::settings("fallback", self.ladder.set_paused(true));
                }
                out.and(Out::settings(
                    self.injected(),
                    self.ladder.on_resume(&participants),
                ))
            }
            Err(e) => {
                warn!(error = %e, "cannot list the room after a resume; caps follow the next updates");
                Out::settings(self.injected(), self.ladder.on_server(reconnect))
            }
        }
    }

    fn on_timer(&mut self) -> Out {
        let step = self.fallback.poll(Instant::now());
        self.take(step)
    }

    /// The metrics label of settings the ladder injects now.
    fn injected(&self) -> &'static str {
        if self.ladder.paused() {
            "fallback"
        } else {
            "injected"
        }
    }

    fn take(&mut self, step: Option<Step>) -> Out {
        let Some(step) = step else {
            return Out::default();
        };
        let stage = self.fallback.stage();
        // The attribute first: the page learns why before its video stops.
        let _ = self.admin.send(AdminRequest::Stage(stage));
        match step {
            Step::PauseIncoming => {
                info!("link stayed bad: incoming video paused (audio-only fallback)");
                self.metrics.fallback_entered(stage.label());
                Out::settings("fallback", self.ladder.set_paused(true))
            }
            Step::PauseCamera => {
                let cameras = self.ladder.own_cameras();
                info!(
                    cameras = cameras.len(),
                    "link still bad without incoming video: camera paused"
                );
                self.metrics.fallback_entered(stage.label());
                for sid in cameras {
                    let _ = self.admin.send(AdminRequest::MuteCamera(sid));
                }
                Out::default()
            }
            Step::Restore { from, spent } => {
                info!(
                    from = from.label(),
                    spent_secs = spent.as_secs(),
                    "link stayed good: video restored"
                );
                self.metrics.fallback_left(from.label(), spent);
                let settings = self.ladder.set_paused(false);
                Out::settings("injected", settings)
            }
        }
    }

    /// Brings the subscriptions-by-layer gauge up to date with what the ladder holds now.
    fn count_subscriptions(&mut self) {
        // Most frames (pings, offers, quality updates) change nothing here.
        let revision = self.ladder.revision();
        if self.counted_at == Some(revision) {
            return;
        }
        self.counted_at = Some(revision);
        let now = self.ladder.enforced_layers();
        for (sid, height) in &now {
            let before = self.counted.get(sid).copied();
            if before != Some(*height) {
                self.metrics.subscription_moved(before, Some(*height));
            }
        }
        for (sid, height) in &self.counted {
            if !now.contains_key(sid) {
                self.metrics.subscription_moved(Some(*height), None);
            }
        }
        self.counted = now;
    }

    /// The session is over; a fallback in progress ends with it (the attribute stays, for a
    /// resume to carry on from).
    fn end(&mut self) {
        for height in std::mem::take(&mut self.counted).into_values() {
            self.metrics.subscription_moved(Some(height), None);
        }
        if let Some(spent) = self.fallback.abandon(Instant::now()) {
            self.metrics.fallback_left("session_end", spent);
        }
    }
}

type BrowserSink = SplitSink<WebSocket, ws::Message>;
type UpstreamSink = SplitSink<Upstream, tungstenite::Message>;

/// Sends what the policy asked for; a failure ends the session.
async fn send_out(
    out: Out,
    to_upstream: &mut UpstreamSink,
    to_browser: &mut BrowserSink,
    encoding: Encoding,
    metrics: &Metrics,
) -> Result<(), End> {
    for (source, settings) in out.upstream {
        metrics.settings_sent(source, settings.height);
        to_upstream
            .send(settings_frame(settings))
            .await
            .map_err(|e| End::UpstreamError(e.to_string()))?;
    }
    for response in out.browser {
        to_browser
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
    to_upstream: &mut UpstreamSink,
    to_browser: &mut BrowserSink,
    encoding: Encoding,
) -> Result<(), End> {
    let metrics = policy.metrics.clone();
    let action = policy.on_client(request);
    policy.count_subscriptions();
    let then = match action {
        ClientAction::Forward(then) => then,
        ClientAction::Replace(instead) => {
            return send_out(instead, to_upstream, to_browser, encoding, &metrics).await;
        }
    };
    to_upstream
        .send(forward)
        .await
        .map_err(|e| End::UpstreamError(e.to_string()))?;
    metrics.frame_relayed("upstream", arrived.elapsed());
    send_out(then, to_upstream, to_browser, encoding, &metrics).await
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
    room: Arc<dyn RoomApi>,
    mut lease: Lease,
) -> End {
    let (mut to_browser, mut from_browser) = browser.split();
    let (mut to_upstream, mut from_upstream) = upstream.split();
    let metrics = policy.metrics.clone();
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
                    let _ = to_browser.send(frame).await;
                }
                break End::Revoked;
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now).into()), if deadline.is_some() => {
                let out = policy.on_timer();
                policy.count_subscriptions();
                if let Err(end) = send_out(out, &mut to_upstream, &mut to_browser, encoding, &metrics).await {
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
                        if let Err(e) = to_browser.send(frame).await {
                            break End::BrowserError(e.to_string());
                        }
                    }
                    Err(Refused::NotMember) => {
                        metrics.ticket_renewal("not_member");
                        info!("ticket not renewed: no longer a member of the case");
                        if let Ok(frame) = encoding.frame(&removed()) {
                            let _ = to_browser.send(frame).await;
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
                let out = policy.on_listing(listing, &reconnect);
                policy.count_subscriptions();
                if let Err(end) = send_out(out, &mut to_upstream, &mut to_browser, encoding, &metrics).await {
                    break end;
                }
                // What waited, in order, until one of them is another resume.
                let mut failed = None;
                while let Some(event) = deferred.pop_front() {
                    let result = match event {
                        Deferred::Server(response) => match policy.on_server(&response) {
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
                                policy.count_subscriptions();
                                send_out(out, &mut to_upstream, &mut to_browser, encoding, &metrics).await
                            }
                        },
                        Deferred::Client(request, forward, arrived) => {
                            client_request(&request, forward, arrived, &mut policy, &mut to_upstream, &mut to_browser, encoding).await
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
                if let Err(end) = client_request(&request, forward, arrived, &mut policy, &mut to_upstream, &mut to_browser, encoding).await {
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
                if let Err(e) = to_browser.send(forward).await {
                    break End::BrowserError(e.to_string());
                }
                metrics.frame_relayed("downstream", arrived.elapsed());
                // After the frame that prompted it (never before `join`): what the policy says.
                if let Some(resuming) = &mut resuming {
                    resuming.deferred.push_back(Deferred::Server(Box::new(response)));
                    continue;
                }
                match policy.on_server(&response) {
                    ServerStep::ListRoom => {
                        list_room(&room, &listed_tx);
                        resuming = Some(Resuming {
                            reconnect: response,
                            deferred: Default::default(),
                            since: Instant::now(),
                        });
                    }
                    ServerStep::Out(out) => {
                        policy.count_subscriptions();
                        if let Err(end) = send_out(out, &mut to_upstream, &mut to_browser, encoding, &metrics).await {
                            break end;
                        }
                    }
                }
            }
        }
    };
    policy.end();
    // Couple the legs: whichever side ended, the other is closed now, so that the client's
    // own resume logic starts from a clean pair instead of a half-open session.
    let _ = to_browser.send(ws::Message::Close(None)).await;
    let _ = to_upstream.send(tungstenite::Message::Close(None)).await;
    end
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use livekit_protocol::{
        ConnectionQuality, ConnectionQualityInfo, ConnectionQualityUpdate, JoinResponse,
        ParticipantInfo, ReconnectResponse, TrackInfo, TrackSource, TrackType,
    };

    use super::*;
    use crate::{fallback::FallbackConfig, ladder::LadderConfig};

    /// RoomService as a list of participants, recording what it is asked to do.
    #[derive(Default)]
    struct FakeRoom {
        participants: Vec<ParticipantInfo>,
        calls: Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl RoomApi for FakeRoom {
        async fn participants(&self) -> anyhow::Result<Vec<ParticipantInfo>> {
            Ok(self.participants.clone())
        }
        async fn set_attribute(
            &self,
            identity: &str,
            key: &str,
            value: &str,
        ) -> anyhow::Result<()> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("set {identity} {key}={value}"));
            Ok(())
        }
        async fn mute_track(&self, identity: &str, sid: &str, muted: bool) -> anyhow::Result<()> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("mute {identity} {sid} {muted}"));
            Ok(())
        }
    }

    use crate::test_support::person;

    fn policy(config: FallbackConfig) -> (Policy, mpsc::UnboundedReceiver<AdminRequest>) {
        let (admin, requests) = mpsc::unbounded_channel();
        let policy = Policy {
            counted: HashMap::new(),
            counted_at: None,
            ladder: Ladder::new(LadderConfig::default(), "me".into()),
            fallback: Fallback::new(config, Instant::now()),
            admin,
            metrics: Arc::new(Metrics::default()),
        };
        (policy, requests)
    }

    /// A server frame through the policy as the relay takes it, the listing after a resume
    /// answered at once.
    async fn serve(policy: &mut Policy, response: &SignalResponse, room: &dyn RoomApi) -> Out {
        match policy.on_server(response) {
            ServerStep::Out(out) => out,
            ServerStep::ListRoom => policy.on_listing(room.participants().await, response),
        }
    }

    fn response(message: signal_response::Message) -> SignalResponse {
        SignalResponse {
            message: Some(message),
        }
    }

    fn quality(sid: &str, level: ConnectionQuality) -> SignalResponse {
        response(signal_response::Message::ConnectionQuality(
            ConnectionQualityUpdate {
                updates: vec![ConnectionQualityInfo {
                    participant_sid: sid.into(),
                    quality: level as i32,
                    score: 1.0,
                }],
            },
        ))
    }

    #[tokio::test]
    async fn a_json_client_meets_the_same_policy_as_a_binary_one() {
        let room = FakeRoom::default();
        let join = response(signal_response::Message::Join(JoinResponse {
            participant: Some(person("me", "PA_me", "TR_mine")),
            other_participants: vec![person("a", "PA_a", "TR_a"), person("b", "PA_b", "TR_b")],
            ..Default::default()
        }));
        let asks_for_1080 = r#"{"trackSetting":{"trackSids":["TR_a"],"quality":"HIGH","width":1920,"height":1080}}"#;
        let (_, from_json) = decode_client_text(asks_for_1080).unwrap();
        let binary = SignalRequest {
            message: from_json.message.clone(),
        }
        .encode_to_vec();
        let (_, from_binary) = decode_client_frame(&binary).unwrap();
        let mut answers = Vec::new();
        for request in [from_json, from_binary] {
            let (mut policy, _requests) = policy(FallbackConfig::default());
            serve(&mut policy, &join, &room).await;
            let ClientAction::Replace(out) = policy.on_client(&request) else {
                panic!("settings above the cap are never forwarded as they are");
            };
            answers.push(
                out.upstream
                    .iter()
                    .map(|(source, s)| (*source, s.track_sids.clone(), s.height, s.quality))
                    .collect::<Vec<_>>(),
            );
        }
        assert_eq!(answers[0], answers[1]);
        // Three people: the cap is 540 (the layer is unknown here, so the cap itself).
        assert!(
            answers[0]
                .iter()
                .all(|(source, _, height, _)| *source == "clamped" && *height <= 540),
            "{answers:?}"
        );
        // And simulate, in JSON, is dropped like in binary.
        let (verdict, _) = decode_client_text(r#"{"simulate":{"serverLeave":true}}"#).unwrap();
        assert_eq!(verdict, ClientVerdict::Drop("simulate"));
    }

    #[tokio::test]
    async fn a_bad_link_of_this_participant_disables_its_video_and_tells_everyone_why() {
        let room = FakeRoom::default();
        // Immediate hysteresis so that the test needs no clock.
        let (mut policy, mut requests) = policy(FallbackConfig {
            enter_after_secs: 0,
            uplink_after_secs: 0,
            ..Default::default()
        });
        let join = response(signal_response::Message::Join(JoinResponse {
            participant: Some(person("me", "PA_me", "TR_mine")),
            other_participants: vec![person("a", "PA_a", "TR_a")],
            ..Default::default()
        }));
        assert_eq!(serve(&mut policy, &join, &room).await.upstream.len(), 1);

        // Someone else's bad link is not ours to act on.
        let out = serve(
            &mut policy,
            &quality("PA_a", ConnectionQuality::Lost),
            &room,
        )
        .await;
        assert!(out.upstream.is_empty());

        let out = serve(
            &mut policy,
            &quality("PA_me", ConnectionQuality::Poor),
            &room,
        )
        .await;
        let sent: Vec<_> = out
            .upstream
            .iter()
            .map(|(source, s)| (*source, s.disabled))
            .collect();
        assert_eq!(sent, [("fallback", true)]);
        assert!(matches!(
            requests.try_recv(),
            Ok(AdminRequest::Stage(Stage::IncomingPaused))
        ));

        // Still poor: the camera goes too (its own track, learnt from `join`).
        serve(
            &mut policy,
            &quality("PA_me", ConnectionQuality::Poor),
            &room,
        )
        .await;
        policy.on_timer();
        assert!(matches!(
            requests.try_recv(),
            Ok(AdminRequest::Stage(Stage::CameraPaused))
        ));
        assert!(
            matches!(requests.try_recv(), Ok(AdminRequest::MuteCamera(sid)) if sid == "TR_mine")
        );

        // The client turning its camera back on is refused and told so.
        let unmute = SignalRequest {
            message: Some(signal_request::Message::Mute(MuteTrackRequest {
                sid: "TR_mine".into(),
                muted: false,
            })),
        };
        match policy.on_client(&unmute) {
            ClientAction::Replace(out) => {
                assert!(out.upstream.is_empty());
                assert!(matches!(
                    &out.browser[..],
                    [SignalResponse { message: Some(signal_response::Message::Mute(m)) }] if m.muted && m.sid == "TR_mine"
                ));
            }
            ClientAction::Forward(_) => {
                panic!("an unmute during the camera pause must not reach LiveKit")
            }
        }
        // Muting, or another track, passes.
        let mute = SignalRequest {
            message: Some(signal_request::Message::Mute(MuteTrackRequest {
                sid: "TR_mine".into(),
                muted: true,
            })),
        };
        assert!(matches!(policy.on_client(&mute), ClientAction::Forward(_)));
    }

    #[tokio::test]
    async fn the_subscriptions_gauge_follows_the_layer_each_camera_is_held_at() {
        let room = FakeRoom::default();
        let (mut policy, _requests) = policy(FallbackConfig {
            enter_after_secs: 0,
            ..Default::default()
        });
        let gauge = |policy: &Policy, height: u32| -> String {
            let text = policy.metrics.render(Default::default());
            let prefix = format!("koinos_gateway_subscriptions{{height=\"{height}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
                .unwrap_or_else(|| "absent".into())
        };
        let join = response(signal_response::Message::Join(JoinResponse {
            participant: Some(person("me", "PA_me", "TR_mine")),
            other_participants: vec![person("a", "PA_a", "TR_a"), person("b", "PA_b", "TR_b")],
            ..Default::default()
        }));
        serve(&mut policy, &join, &room).await;
        policy.count_subscriptions();
        assert_eq!(gauge(&policy, 540), "2");

        serve(
            &mut policy,
            &quality("PA_me", ConnectionQuality::Poor),
            &room,
        )
        .await;
        policy.count_subscriptions();
        assert_eq!(gauge(&policy, 540), "0");
        assert_eq!(gauge(&policy, 0), "2");

        policy.end();
        assert_eq!(gauge(&policy, 0), "0");
    }

    #[tokio::test]
    async fn a_resumed_session_carries_on_the_fallback_from_the_attribute() {
        let mut me = person("me", "PA_me", "TR_mine");
        me.attributes.insert(
            fallback::ATTRIBUTE.into(),
            Stage::CameraPaused.attribute().into(),
        );
        let room = FakeRoom {
            participants: vec![me, person("a", "PA_a", "TR_a")],
            ..Default::default()
        };
        let (mut policy, _requests) = policy(FallbackConfig::default());
        let resumed = response(signal_response::Message::Reconnect(
            ReconnectResponse::default(),
        ));
        let out = serve(&mut policy, &resumed, &room).await;
        assert_eq!(policy.fallback.stage(), Stage::CameraPaused);
        assert!(!out.upstream.is_empty());
        assert!(
            out.upstream.iter().all(|(_, s)| s.disabled),
            "{:?}",
            out.upstream
        );
    }

    #[tokio::test]
    async fn room_service_requests_are_carried_out_in_order() {
        let room = Arc::new(FakeRoom::default());
        let (admin, requests) = mpsc::unbounded_channel();
        admin
            .send(AdminRequest::Stage(Stage::IncomingPaused))
            .unwrap();
        admin
            .send(AdminRequest::Stage(Stage::CameraPaused))
            .unwrap();
        admin
            .send(AdminRequest::MuteCamera("TR_mine".into()))
            .unwrap();
        admin.send(AdminRequest::Stage(Stage::Normal)).unwrap();
        drop(admin);
        room_admin(room.clone(), "me".into(), requests).await;
        assert_eq!(
            *room.calls.lock().unwrap(),
            [
                "set me org.koinos.rtc.fallback=incoming_video",
                "set me org.koinos.rtc.fallback=camera",
                "mute me TR_mine true",
                "set me org.koinos.rtc.fallback=",
            ]
        );
    }

    /// Fuzzing the frame path the relay runs: frames from either side, well-formed LiveKit
    /// messages over a small vocabulary of identities and tracks (so that they interact) or
    /// those with bytes flipped, cut short or replaced by garbage, are decoded and fed to the
    /// session's policy exactly as `relay` does, with fallback timers firing in between. Nothing
    /// may panic; what does not decode is an error (which ends that session only); only
    /// `simulate` is dropped; and what the policy writes is well-formed. (That the settings
    /// keep to the cap is the ladder's own property test.)
    mod frame_fuzz {
        use livekit_protocol::{
            ParticipantUpdate, SimulateScenario, StreamStateInfo, StreamStateUpdate,
            TrackPublishedResponse, UpdateSubscription, UpdateTrackSettings, VideoLayer,
            simulate_scenario,
        };
        use proptest::prelude::*;

        use super::*;

        const IDENTITIES: [&str; 4] = ["me", "a", "b", "c"];

        fn sid() -> impl Strategy<Value = String> {
            (0u8..4).prop_map(|n| format!("TR_{n}"))
        }

        fn track() -> impl Strategy<Value = TrackInfo> {
            (
                sid(),
                prop::bool::weighted(0.8),
                prop::bool::weighted(0.8),
                prop::collection::vec(
                    prop_oneof![Just(180u32), Just(360), Just(540), Just(720), any::<u32>()],
                    0..4,
                ),
            )
                .prop_map(|(sid, video, camera, heights)| {
                    #[allow(deprecated)]
                    TrackInfo {
                        sid,
                        r#type: if video {
                            TrackType::Video
                        } else {
                            TrackType::Audio
                        } as i32,
                        source: if camera {
                            TrackSource::Camera
                        } else {
                            TrackSource::ScreenShare
                        } as i32,
                        layers: heights
                            .into_iter()
                            .enumerate()
                            .map(|(q, height)| VideoLayer {
                                quality: q as i32,
                                width: height.saturating_mul(16) / 9,
                                height,
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    }
                })
        }

        fn participant() -> impl Strategy<Value = ParticipantInfo> {
            (
                prop::sample::select(&IDENTITIES[..]),
                0i32..5,
                prop::collection::vec(track(), 0..3),
            )
                .prop_map(|(identity, state, tracks)| ParticipantInfo {
                    identity: identity.into(),
                    sid: format!("PA_{identity}"),
                    state,
                    tracks,
                    ..Default::default()
                })
        }

        fn server_message() -> impl Strategy<Value = signal_response::Message> {
            use signal_response::Message as M;
            prop_oneof![
                (participant(), prop::collection::vec(participant(), 0..6)).prop_map(
                    |(participant, others)| M::Join(JoinResponse {
                        participant: Some(participant),
                        other_participants: others,
                        ..Default::default()
                    })
                ),
                prop::collection::vec(participant(), 0..6)
                    .prop_map(|participants| M::Update(ParticipantUpdate { participants })),
                Just(M::Reconnect(ReconnectResponse::default())),
                (
                    prop::sample::select(&IDENTITIES[..]),
                    prop_oneof![4 => 0i32..4, 1 => any::<i32>()],
                    any::<f32>()
                )
                    .prop_map(|(who, quality, score)| M::ConnectionQuality(
                        ConnectionQualityUpdate {
                            updates: vec![ConnectionQualityInfo {
                                participant_sid: format!("PA_{who}"),
                                quality,
                                score,
                            }],
                        }
                    )),
                (sid(), prop_oneof![4 => 0i32..2, 1 => any::<i32>()]).prop_map(
                    |(track_sid, state)| M::StreamStateUpdate(StreamStateUpdate {
                        stream_states: vec![StreamStateInfo {
                            track_sid,
                            state,
                            ..Default::default()
                        }],
                    })
                ),
                track().prop_map(|track| M::TrackPublished(TrackPublishedResponse {
                    track: Some(track),
                    ..Default::default()
                })),
            ]
        }

        fn client_message() -> impl Strategy<Value = signal_request::Message> {
            use signal_request::Message as M;
            prop_oneof![
                (
                    prop::collection::vec(sid(), 0..4),
                    any::<bool>(),
                    any::<i32>(),
                    any::<u32>(),
                    prop_oneof![Just(180u32), Just(1080), any::<u32>()],
                    any::<u32>(),
                )
                    .prop_map(
                        |(track_sids, disabled, quality, width, height, fps)| {
                            M::TrackSetting(UpdateTrackSettings {
                                track_sids,
                                disabled,
                                quality,
                                width,
                                height,
                                fps,
                                priority: 0,
                            })
                        }
                    ),
                (prop::collection::vec(sid(), 0..4), any::<bool>()).prop_map(
                    |(track_sids, subscribe)| M::Subscription(UpdateSubscription {
                        track_sids,
                        subscribe,
                        ..Default::default()
                    })
                ),
                (sid(), any::<bool>())
                    .prop_map(|(sid, muted)| M::Mute(MuteTrackRequest { sid, muted })),
                Just(M::Simulate(SimulateScenario {
                    scenario: Some(simulate_scenario::Scenario::SubscriberBandwidth(1)),
                })),
            ]
        }

        /// A frame's bytes: as encoded, or damaged.
        fn damaged(bytes: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
            let len = bytes.len();
            prop_oneof![
                6 => Just(bytes.clone()),
                1 => (any::<prop::sample::Index>(), any::<u8>()).prop_map({
                    let bytes = bytes.clone();
                    move |(at, value)| {
                        let mut bytes = bytes.clone();
                        if !bytes.is_empty() {
                            let at = at.index(bytes.len());
                            bytes[at] ^= value;
                        }
                        bytes
                    }
                }),
                1 => (0..=len).prop_map(move |cut| bytes[..cut].to_vec()),
                1 => prop::collection::vec(any::<u8>(), 0..512),
            ]
        }

        #[derive(Debug, Clone)]
        enum Event {
            FromServer(Vec<u8>),
            FromClient(Vec<u8>),
            /// LiveKit's JSON encoding: every message must meet the same policy.
            FromClientText(String),
            Timer,
        }

        /// A request as JSON text, or damaged text.
        fn damaged_text(text: String) -> impl Strategy<Value = String> {
            let len = text.chars().count();
            prop_oneof![
                6 => Just(text.clone()),
                1 => (0..=len).prop_map(move |cut| text.chars().take(cut).collect()),
                1 => ".{0,200}",
            ]
        }

        fn event() -> impl Strategy<Value = Event> {
            prop_oneof![
                5 => server_message()
                    .prop_map(|m| response(m).encode_to_vec())
                    .prop_flat_map(damaged)
                    .prop_map(Event::FromServer),
                4 => client_message()
                    .prop_map(|m| SignalRequest { message: Some(m) }.encode_to_vec())
                    .prop_flat_map(damaged)
                    .prop_map(Event::FromClient),
                2 => client_message()
                    // Enum values outside the protocol have no JSON name: not sendable as JSON.
                    .prop_filter_map("JSON-encodable", |m| serde_json::to_string(&SignalRequest { message: Some(m) }).ok())
                    .prop_flat_map(damaged_text)
                    .prop_map(Event::FromClientText),
                1 => Just(Event::Timer),
            ]
        }

        /// What the policy sends is what LiveKit and the browser will decode: every settings
        /// frame the relay would write decodes as a settings request for at least one track,
        /// and every frame for the browser decodes as a server frame.
        fn assert_well_formed(out: &Out) {
            for (_, settings) in &out.upstream {
                assert!(!settings.track_sids.is_empty(), "{settings:?}");
                let tungstenite::Message::Binary(frame) = settings_frame(settings.clone()) else {
                    unreachable!("settings are binary frames")
                };
                let (verdict, _) = decode_client_frame(&frame).expect("our own settings decode");
                assert_eq!(verdict, ClientVerdict::Forward("track_setting"));
            }
            for response in &out.browser {
                decode_server_frame(&response.encode_to_vec()).expect("our own responses decode");
            }
        }

        /// A decoded client frame through the policy, as `relay` does whatever its encoding.
        fn client(
            policy: &mut Policy,
            decoded: Result<(ClientVerdict, SignalRequest), crate::signal::FrameError>,
        ) {
            match decoded {
                Ok((ClientVerdict::Forward(_), request)) => {
                    let out = match policy.on_client(&request) {
                        ClientAction::Forward(out) | ClientAction::Replace(out) => out,
                    };
                    assert_well_formed(&out);
                }
                Ok((ClientVerdict::Drop(kind), request)) => {
                    assert_eq!(kind, "simulate");
                    assert!(matches!(
                        request.message,
                        Some(signal_request::Message::Simulate(_))
                    ));
                }
                Err(_) => {}
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: std::env::var("KOINOS_FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(2048),
                ..ProptestConfig::default()
            })]

            #[test]
            fn the_frame_path_never_panics_and_writes_only_well_formed_frames(
                events in prop::collection::vec(event(), 1..60),
            ) {
                let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
                runtime.block_on(async {
                    let room = FakeRoom {
                        participants: vec![person("me", "PA_me", "TR_0"), person("a", "PA_a", "TR_1")],
                        ..Default::default()
                    };
                    let (mut policy, _requests) = policy(FallbackConfig {
                        enter_after_secs: 0,
                        uplink_after_secs: 0,
                        restore_after_secs: 0,
                        ..Default::default()
                    });
                    for event in events {
                        match event {
                            Event::FromServer(bytes) => {
                                if let Ok((_, response)) = decode_server_frame(&bytes) {
                                    let out = serve(&mut policy, &response, &room).await;
                                    assert_well_formed(&out);
                                }
                            }
                            Event::FromClient(bytes) => client(&mut policy, decode_client_frame(&bytes)),
                            Event::FromClientText(text) => client(&mut policy, decode_client_text(&text)),
                            Event::Timer => {
                                let out = policy.on_timer();
                                assert_well_formed(&out);
                            }
                        }
                    }
                    policy.end();
                });
            }
        }
    }
}
