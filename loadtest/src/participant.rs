//! One simulated participant, as a browser running the web page would be: an OpenID token from
//! the homeserver, a LiveKit token from control, LiveKit signalling over a WebSocket (through the
//! gateway, or straight to LiveKit), two peer connections from the `webrtc` crate (LiveKit's
//! publisher and subscriber), Opus audio and three VP8 simulcast layers published, and everyone
//! else's tracks subscribed and watched.
//!
//! Concurrency: the participant is one task owning the signalling socket's read side and both
//! peer connections. The peer connections' callbacks only send events into its channel; the
//! media pumps and the per-track readers are tasks of their own that stop when it does. What was
//! measured is kept in [`Observations`], shared with the readers behind a mutex.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use livekit_protocol as lk;
use lk::{signal_request, signal_response};
use prost::Message as _;
use rtc::interceptor::{Registry, Slot};
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_OPUS, MIME_TYPE_VP8, MediaEngine,
};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{RTCIceCandidateInit, RTCIceServer};
use rtc::rtp::extension::HeaderExtension;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::shared::marshal::{Marshal, MarshalSize};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCPeerConnectionState,
};

use koinos_proto::contract::{
    FALLBACK_ATTRIBUTE, FallbackStage, MATRIX_DEVICE_ATTRIBUTE, MATRIX_USER_ATTRIBUTE,
};

use crate::accounts::{self, Account, Homeserver};
use crate::hostile::HostileReport;
use crate::loss::{LossInterceptor, LossSpec, Schedule};
use crate::media::{AUDIO_FRAME, LAYERS, Media, VIDEO_FPS};
use crate::vp8;

mod media_path;
use media_path::*;

const OPUS_PT: u8 = 111;
const VP8_PT: u8 = 96;

/// Where and how one participant connects.
#[derive(Clone)]
pub struct Plan {
    pub http: reqwest::Client,
    pub homeserver: Arc<Homeserver>,
    pub rtc_service_url: String,
    /// Replaces the signalling URL control answers (the gateway): LiveKit's own, or another gateway.
    pub signal_url: Option<String>,
    pub room_id: String,
    pub account: Account,
    pub media: Arc<Media>,
    pub bind_ip: String,
    /// When to leave: everyone leaves together, `--duration` after the last one started.
    pub leave_at: Instant,
    /// When the whole run started: participants' times are also placed on its clock.
    pub run_started: Instant,
    /// Receive loss injected into this participant, if any.
    pub loss: Option<Arc<Schedule>>,
    /// This participant misbehaves (see `hostile.rs`).
    pub hostile: bool,
    /// LiveKit's own signalling URL: where the hostile participant presents its tokens, and
    /// where `--direct` connects.
    pub livekit_url: String,
    /// With `--direct`: LiveKit's API secret, to mint the LiveKit token control never hands out
    /// (control answers with a ticket only a gateway can use).
    pub direct_secret: Option<Arc<String>>,
}

/// What one remote track delivered to this participant.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RemoteTrack {
    /// The publishing participant's identity (`<user_id>:<device_id>`), when known.
    pub from: String,
    pub kind: String,
    /// Milliseconds from this participant's start (its token request) to the first RTP packet.
    pub first_packet_ms: Option<u64>,
    /// …and for video, to the first key frame with a size.
    pub first_frame_ms: Option<u64>,
    pub packets: u64,
    pub bytes: u64,
    /// Packets missing from the sequence numbers seen (lost on the way, or not sent).
    pub lost: u64,
    /// Video: `(ms since start, width, height)` each time the received key frame size changed.
    pub resolutions: Vec<(u64, u16, u16)>,
}

/// Everything measured for one participant; serialised into the JSON report.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Observations {
    pub user_id: String,
    pub room_id: String,
    pub identity: String,
    /// The gateway (or LiveKit) its signalling went to.
    pub signal_url: String,
    /// When this participant started, in ms since the run started (its other times count from here).
    pub started_ms: u64,
    /// Set when the participant failed; what failed, in words.
    pub error: Option<String>,
    /// Start → LiveKit token in hand (OpenID + control).
    pub token_ms: Option<u64>,
    /// Start → LiveKit's `join` answer on the signalling socket.
    pub joined_ms: Option<u64>,
    /// Start → both peer connections connected.
    pub media_connected_ms: Option<u64>,
    /// Remote tracks by LiveKit track sid (or stream id until known).
    pub remote: HashMap<String, RemoteTrack>,
    /// `(ms since start, stage)` whenever the gateway's fallback stage for this participant changed.
    pub fallback_changes: Vec<(u64, String)>,
    /// LiveKit's connection quality for this participant, last seen.
    pub last_quality: Option<String>,
    /// The receive loss injected, if any (its window counts from `media_connected_ms`).
    pub loss: Option<LossSpec>,
    /// When the run told everyone to leave: the call as it stood then is what the run measured
    /// (during the departures the call shrinks and the ladder rightly raises its caps).
    pub leave_ms: u64,
    /// What the hostile participant tried and got (see `hostile.rs`).
    pub hostile: Option<HostileReport>,
}

enum Event {
    Candidate {
        target: lk::SignalTarget,
        init: RTCIceCandidateInit,
    },
    State {
        target: lk::SignalTarget,
        state: RTCPeerConnectionState,
    },
    Track(Arc<dyn TrackRemote>),
}

struct Handler {
    target: lk::SignalTarget,
    events: mpsc::UnboundedSender<Event>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(
        &self,
        event: rtc::peer_connection::event::RTCPeerConnectionIceEvent,
    ) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self.events.send(Event::Candidate {
                target: self.target,
                init,
            });
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.events.send(Event::State {
            target: self.target,
            state,
        });
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.events.send(Event::Track(track));
    }
}

fn ms_since(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

/// Runs the participant to its end; what it measured is in `observations` whatever happens.
// The one function over the workspace's length limit, to be split (issue #17).
#[allow(clippy::too_many_lines)]
pub async fn run(
    plan: Plan,
    observations: Arc<Mutex<Observations>>,
    connected: mpsc::UnboundedSender<()>,
) -> Result<()> {
    let started = Instant::now();
    {
        let mut o = observations.lock().unwrap();
        o.started_ms = started.duration_since(plan.run_started).as_millis() as u64;
        o.leave_ms = plan.leave_at.saturating_duration_since(started).as_millis() as u64;
        o.loss = plan.loss.as_ref().map(|l| l.spec.clone());
        o.user_id = plan.account.user_id.clone();
        o.room_id = plan.room_id.clone();
    }
    let openid = plan.homeserver.openid(&plan.account).await?;
    let token = accounts::rtc_token(
        &plan.http,
        &plan.rtc_service_url,
        &plan.room_id,
        &plan.account,
        openid,
    )
    .await?;
    {
        let mut o = observations.lock().unwrap();
        o.token_ms = Some(ms_since(started));
        o.identity = token.identity.clone();
        if plan.hostile {
            o.hostile = Some(HostileReport::default());
        }
    }
    let mut held_tokens = vec![token.jwt.clone()];
    let base = plan.signal_url.clone().unwrap_or(token.url.clone());
    observations.lock().unwrap().signal_url = base.clone();
    // Straight at LiveKit, the ticket is no use: a LiveKit token for the same participant.
    let access = match &plan.direct_secret {
        Some(secret) => direct_token(secret, &token, &plan.account)?,
        None => token.jwt.clone(),
    };
    let url = format!(
        "{}/rtc?access_token={}&protocol=16&sdk=rust&version=0.1.0&auto_subscribe=1&adaptive_stream=0",
        base.trim_end_matches('/'),
        access
    );
    let (socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .with_context(|| format!("cannot open LiveKit signalling at {base}"))?;
    let (mut sink, mut stream) = socket.split();
    let (requests, mut outgoing) = mpsc::unbounded_channel::<signal_request::Message>();
    let json = plan.hostile;
    let sent_json = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer = tokio::spawn({
        let sent_json = Arc::clone(&sent_json);
        async move {
            while let Some(message) = outgoing.recv().await {
                let request = lk::SignalRequest {
                    message: Some(message),
                };
                let frame = if json {
                    sent_json.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Message::Text(
                        serde_json::to_string(&request)
                            .expect("a request serialises")
                            .into(),
                    )
                } else {
                    Message::Binary(request.encode_to_vec().into())
                };
                if sink.send(frame).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        }
    });

    let join = loop {
        let frame = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .context("no answer to the join within 20 s")?
            .context("the signalling socket closed before the join")??;
        match decode_frame(frame, &observations)?.and_then(|r| r.message) {
            Some(signal_response::Message::Join(join)) => break join,
            Some(signal_response::Message::Leave(leave)) => {
                bail!("LiveKit refused the join (reason {})", leave.reason)
            }
            _ => continue,
        }
    };
    observations.lock().unwrap().joined_ms = Some(ms_since(started));

    let (events_tx, mut events) = mpsc::unbounded_channel();
    let ice_servers: Vec<RTCIceServer> = join
        .ice_servers
        .iter()
        .map(|s| RTCIceServer {
            urls: s.urls.clone(),
            username: s.username.clone(),
            credential: s.credential.clone(),
        })
        .collect();
    let publisher = peer_connection(
        &plan,
        &ice_servers,
        lk::SignalTarget::Publisher,
        events_tx.clone(),
    )
    .await?;
    let subscriber = peer_connection(
        &plan,
        &ice_servers,
        lk::SignalTarget::Subscriber,
        events_tx.clone(),
    )
    .await?;

    // Announce the tracks, then offer them once LiveKit has answered both announcements.
    let audio_cid = "koinos-loadtest-audio".to_owned();
    let video_cid = "koinos-loadtest-video".to_owned();
    let top = LAYERS[LAYERS.len() - 1];
    requests.send(signal_request::Message::AddTrack(lk::AddTrackRequest {
        cid: audio_cid.clone(),
        name: "microphone".into(),
        r#type: lk::TrackType::Audio as i32,
        source: lk::TrackSource::Microphone as i32,
        ..Default::default()
    }))?;
    requests.send(signal_request::Message::AddTrack(lk::AddTrackRequest {
        cid: video_cid.clone(),
        name: "camera".into(),
        r#type: lk::TrackType::Video as i32,
        source: lk::TrackSource::Camera as i32,
        width: top.width,
        height: top.height,
        layers: LAYERS
            .iter()
            .zip([
                lk::VideoQuality::Low,
                lk::VideoQuality::Medium,
                lk::VideoQuality::High,
            ])
            .map(|(layer, quality)| lk::VideoLayer {
                quality: quality as i32,
                width: layer.width,
                height: layer.height,
                bitrate: layer.kbps * 1000,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }))?;

    let (audio_track, audio_ssrc) = local_track(&audio_cid, RtpCodecKind::Audio, &[None])?;
    let video_rids: Vec<Option<&str>> = LAYERS.iter().map(|l| Some(l.rid)).collect();
    let (video_track, video_ssrcs) = local_track(&video_cid, RtpCodecKind::Video, &video_rids)?;
    publisher
        .add_track(Arc::clone(&audio_track) as Arc<dyn TrackLocal>)
        .await?;
    publisher
        .add_track(Arc::clone(&video_track) as Arc<dyn TrackLocal>)
        .await?;

    let mut published = 0;
    let mut offered = false;
    let mut pending: HashMap<i32, Vec<RTCIceCandidateInit>> = HashMap::new();
    let mut remote_set: HashMap<i32, bool> = HashMap::new();
    let mut states: HashMap<i32, RTCPeerConnectionState> = HashMap::new();
    let mut pumps: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    let mut sid_to_identity: HashMap<String, String> = join
        .other_participants
        .iter()
        .map(|p| (p.sid.clone(), p.identity.clone()))
        .collect();
    let my_sid = join
        .participant
        .as_ref()
        .map(|p| p.sid.clone())
        .unwrap_or_default();
    let mut connected_at: Option<Instant> = None;
    let mut ping = tokio::time::interval(Duration::from_secs(join.ping_interval.max(1) as u64));
    let mut fallback_stage = String::new();
    let mut video_mid_value = String::new();
    // The hostile participant's own camera, the cameras it receives, and what it tried.
    let mut own_camera = String::new();
    let mut cameras: std::collections::BTreeSet<String> = join
        .other_participants
        .iter()
        .flat_map(|p| p.tracks.iter())
        .filter(|t| is_camera(t))
        .map(|t| t.sid.clone())
        .collect();
    let mut misbehave = tokio::time::interval(Duration::from_secs(2));
    let mut simulated_at: Option<Instant> = None;
    // Ticks of the misbehaviour timer so far: the cameras are unsubscribed (by participant) at
    // the second and subscribed again (by track) at the third, once.
    let mut misbehaved = 0u32;

    let outcome: Result<()> = async {
        loop {
            tokio::select! {
                _ = ping.tick() => {
                    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
                    requests.send(signal_request::Message::Ping(now))?;
                }
                _ = tokio::time::sleep_until(plan.leave_at.into()) => {
                    if connected_at.is_none() {
                        bail!("media not connected by the end of the run");
                    }
                    return Ok(());
                }
                _ = misbehave.tick(), if plan.hostile && connected_at.is_some() => {
                    for sid in &cameras {
                        requests.send(signal_request::Message::TrackSetting(lk::UpdateTrackSettings {
                            track_sids: vec![sid.clone()],
                            quality: lk::VideoQuality::High as i32,
                            width: 1920,
                            height: 1080,
                            ..Default::default()
                        }))?;
                        hostile(&observations, |h| h.above_cap_requests += 1);
                    }
                    if simulated_at.is_none() {
                        simulated_at = Some(Instant::now());
                        requests.send(signal_request::Message::Simulate(lk::SimulateScenario {
                            scenario: Some(lk::simulate_scenario::Scenario::ServerLeave(true)),
                        }))?;
                        hostile(&observations, |h| h.simulate_sent = true);
                    }
                    misbehaved += 1;
                    if (misbehaved == 2 || misbehaved == 3) && !cameras.is_empty() {
                        // LiveKit drops a subscription (and its settings) on an unsubscribe by
                        // participant as by track; a new one starts at the top layer.
                        let subscribe = misbehaved == 3;
                        let tracks: Vec<String> = cameras.iter().cloned().collect();
                        requests.send(signal_request::Message::Subscription(lk::UpdateSubscription {
                            track_sids: if subscribe { tracks.clone() } else { vec![] },
                            participant_tracks: if subscribe {
                                vec![]
                            } else {
                                vec![lk::ParticipantTracks { participant_sid: String::new(), track_sids: tracks }]
                            },
                            subscribe,
                        }))?;
                        if subscribe {
                            hostile(&observations, |h| h.resubscribed = true);
                        }
                    }
                    if fallback_stage == "camera" && !own_camera.is_empty() {
                        requests.send(signal_request::Message::Mute(lk::MuteTrackRequest {
                            sid: own_camera.clone(),
                            muted: false,
                        }))?;
                        hostile(&observations, |h| h.unmute_attempts += 1);
                    }
                }
                frame = stream.next() => {
                    let Some(frame) = frame.transpose()? else {
                        if simulated_at.is_some_and(|at| at.elapsed() < Duration::from_secs(5)) {
                            hostile(&observations, |h| h.simulate_obeyed = true);
                        }
                        bail!("the signalling socket closed");
                    };
                    let Some(response) = decode_frame(frame, &observations)? else { continue };
                    match response.message {
                        Some(signal_response::Message::RefreshToken(refreshed)) => {
                            held_tokens.push(refreshed);
                        }
                        Some(signal_response::Message::TrackPublished(published_track)) => {
                            if published_track.cid == video_cid {
                                own_camera = published_track.track.map(|t| t.sid).unwrap_or_default();
                            }
                            published += 1;
                            if published == 2 && !offered {
                                offered = true;
                                let offer = publisher.create_offer(None).await?;
                                publisher.set_local_description(offer.clone()).await?;
                                video_mid_value = video_mid(&offer.sdp).context("our offer has no video section")?;
                                requests.send(signal_request::Message::Offer(lk::SessionDescription {
                                    r#type: "offer".into(),
                                    sdp: offer.sdp,
                                    ..Default::default()
                                }))?;
                            }
                        }
                        Some(signal_response::Message::Answer(answer)) => {
                            publisher.set_remote_description(RTCSessionDescription::answer(answer.sdp)?).await?;
                            flush(&*publisher, lk::SignalTarget::Publisher, &mut pending, &mut remote_set).await?;
                        }
                        Some(signal_response::Message::Offer(offer)) => {
                            subscriber.set_remote_description(RTCSessionDescription::offer(offer.sdp)?).await?;
                            flush(&*subscriber, lk::SignalTarget::Subscriber, &mut pending, &mut remote_set).await?;
                            let answer = subscriber.create_answer(None).await?;
                            subscriber.set_local_description(answer.clone()).await?;
                            requests.send(signal_request::Message::Answer(lk::SessionDescription {
                                r#type: "answer".into(),
                                sdp: answer.sdp,
                                id: offer.id,
                                ..Default::default()
                            }))?;
                        }
                        Some(signal_response::Message::Trickle(trickle)) => {
                            let init: RTCIceCandidateInit = serde_json::from_str(&trickle.candidate_init)
                                .with_context(|| format!("LiveKit's ICE candidate {:?}", trickle.candidate_init))?;
                            let pc = if trickle.target == lk::SignalTarget::Publisher as i32 { &publisher } else { &subscriber };
                            if remote_set.get(&trickle.target).copied().unwrap_or(false) {
                                pc.add_ice_candidate(init).await?;
                            } else {
                                pending.entry(trickle.target).or_default().push(init);
                            }
                        }
                        Some(signal_response::Message::Update(update)) => {
                            for p in update.participants {
                                cameras.extend(p.tracks.iter().filter(|t| p.sid != my_sid && is_camera(t)).map(|t| t.sid.clone()));
                                if p.sid == my_sid
                                    && fallback_stage == "camera"
                                    && p.tracks.iter().any(|t| t.sid == own_camera && !t.muted)
                                    && p.attributes.get(FALLBACK_ATTRIBUTE).map(String::as_str) == Some(FallbackStage::Camera.wire())
                                {
                                    hostile(&observations, |h| h.unmuted_while_paused = true);
                                }
                                if p.sid == my_sid {
                                    let stage = p.attributes.get(FALLBACK_ATTRIBUTE).cloned().unwrap_or_default();
                                    if stage != fallback_stage {
                                        fallback_stage = stage.clone();
                                        let label = if stage.is_empty() { "none".to_owned() } else { stage };
                                        observations.lock().unwrap().fallback_changes.push((ms_since(started), label));
                                    }
                                } else {
                                    sid_to_identity.insert(p.sid.clone(), p.identity.clone());
                                }
                            }
                        }
                        Some(signal_response::Message::ConnectionQuality(update)) => {
                            if let Some(mine) = update.updates.iter().find(|u| u.participant_sid == my_sid) {
                                let quality = lk::ConnectionQuality::try_from(mine.quality).map(|q| q.as_str_name().to_owned()).unwrap_or_default();
                                observations.lock().unwrap().last_quality = Some(quality);
                            }
                        }
                        Some(signal_response::Message::Leave(leave)) => {
                            if simulated_at.is_some_and(|at| at.elapsed() < Duration::from_secs(5)) {
                                hostile(&observations, |h| h.simulate_obeyed = true);
                            }
                            bail!("LiveKit ended the session (reason {})", leave.reason)
                        }
                        _ => {}
                    }
                }
                event = events.recv() => {
                    match event.context("peer connection events ended")? {
                        Event::Candidate { target, init } => {
                            requests.send(signal_request::Message::Trickle(lk::TrickleRequest {
                                candidate_init: serde_json::to_string(&init)?,
                                target: target as i32,
                                r#final: false,
                            }))?;
                        }
                        Event::State { target, state } => {
                            if state == RTCPeerConnectionState::Failed {
                                bail!("the {} peer connection failed", target.as_str_name().to_lowercase());
                            }
                            states.insert(target as i32, state);
                            let both = [lk::SignalTarget::Publisher, lk::SignalTarget::Subscriber]
                                .iter()
                                .all(|t| states.get(&(*t as i32)) == Some(&RTCPeerConnectionState::Connected));
                            if both && connected_at.is_none() {
                                connected_at = Some(Instant::now());
                                if let Some(loss) = &plan.loss {
                                    loss.start(Instant::now());
                                }
                                observations.lock().unwrap().media_connected_ms = Some(ms_since(started));
                                let _ = connected.send(());
                                pumps.push(tokio::spawn(pump_audio(Arc::clone(&audio_track), audio_ssrc[0], Arc::clone(&plan.media))));
                                pumps.push(tokio::spawn(pump_video(Arc::clone(&video_track), video_ssrcs.clone(), video_mid_value.clone(), Arc::clone(&plan.media))));
                            }
                        }
                        Event::Track(track) => {
                            pumps.push(tokio::spawn(watch(track, Arc::clone(&observations), started, sid_to_identity.clone())));
                        }
                    }
                }
            }
        }
    }
    .await;

    let _ = requests.send(signal_request::Message::Leave(lk::LeaveRequest {
        can_reconnect: false,
        reason: lk::DisconnectReason::ClientInitiated as i32,
        ..Default::default()
    }));
    drop(requests);
    for pump in &pumps {
        pump.abort();
    }
    let _ = publisher.close().await;
    let _ = subscriber.close().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    if plan.hostile {
        let sent = sent_json.load(std::sync::atomic::Ordering::Relaxed);
        let mut accepted = 0;
        for held in &held_tokens {
            if livekit_accepts(&plan.livekit_url, held).await {
                accepted += 1;
            }
        }
        hostile(&observations, |h| {
            h.json_frames_sent = sent;
            h.tokens_held = held_tokens.len() as u64;
            h.tokens_livekit_accepted = accepted;
        });
    }
    outcome
}

/// Updates the hostile participant's report.
fn hostile(observations: &Mutex<Observations>, update: impl FnOnce(&mut HostileReport)) {
    if let Some(report) = observations.lock().unwrap().hostile.as_mut() {
        update(report);
    }
}

/// A server frame in either encoding (LiveKit answers a JSON client in JSON).
fn decode_frame(
    frame: Message,
    observations: &Mutex<Observations>,
) -> Result<Option<lk::SignalResponse>> {
    Ok(match frame {
        Message::Binary(bytes) => Some(lk::SignalResponse::decode(bytes)?),
        Message::Text(text) => {
            hostile(observations, |h| h.json_frames_received += 1);
            Some(serde_json::from_str(&text).context("a JSON signalling frame")?)
        }
        _ => None,
    })
}

fn is_camera(track: &lk::TrackInfo) -> bool {
    track.r#type == lk::TrackType::Video as i32
        && track.source != lk::TrackSource::ScreenShare as i32
}

/// Whether LiveKit, asked directly, lets `token` in (upgrades the signalling socket).
async fn livekit_accepts(livekit_url: &str, token: &str) -> bool {
    let url = format!(
        "{}/rtc?access_token={token}&protocol=16&sdk=rust&auto_subscribe=0",
        livekit_url.trim_end_matches('/')
    );
    match tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(url),
    )
    .await
    {
        Ok(Ok((mut socket, _))) => {
            let _ = socket.close(None).await;
            true
        }
        _ => false,
    }
}

/// A LiveKit token for `token`'s participant, signed with LiveKit's secret: what `--direct`
/// presents to LiveKit (HS256, LiveKit's claims, the attributes control would set).
fn direct_token(secret: &str, token: &accounts::RtcToken, account: &Account) -> Result<String> {
    use base64::Engine as _;
    let claims: serde_json::Value = {
        let payload = token
            .jwt
            .split('.')
            .nth(1)
            .context("the ticket is not a JWT")?;
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload)?)?
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let attributes = serde_json::Map::from_iter([
        (
            MATRIX_USER_ATTRIBUTE.to_owned(),
            account.user_id.clone().into(),
        ),
        (
            MATRIX_DEVICE_ATTRIBUTE.to_owned(),
            account.device_id.clone().into(),
        ),
    ]);
    let body = serde_json::json!({
        "iss": "devkey", "sub": token.identity, "name": claims["name"], "nbf": now, "exp": now + 600,
        "video": {"room": claims["video"]["room"], "roomJoin": true, "canPublish": true,
                  "canSubscribe": true, "canPublishData": true},
        "attributes": attributes,
    });
    let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let signed = format!(
        "{}.{}",
        b64(br#"{"alg":"HS256","typ":"JWT"}"#),
        b64(&serde_json::to_vec(&body)?)
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    Ok(format!(
        "{signed}.{}",
        b64(ring::hmac::sign(&key, signed.as_bytes()).as_ref())
    ))
}

async fn flush(
    pc: &dyn PeerConnection,
    target: lk::SignalTarget,
    pending: &mut HashMap<i32, Vec<RTCIceCandidateInit>>,
    remote_set: &mut HashMap<i32, bool>,
) -> Result<()> {
    remote_set.insert(target as i32, true);
    for init in pending.remove(&(target as i32)).unwrap_or_default() {
        pc.add_ice_candidate(init).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_video_mid_is_read_from_the_offer() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\na=mid:1\r\n";
        assert_eq!(video_mid(sdp).as_deref(), Some("1"));
        assert_eq!(video_mid("v=0\r\nm=audio 9 x 111\r\na=mid:0\r\n"), None);
    }
}
