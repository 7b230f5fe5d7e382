//! The quality ladder, per subscriber: every camera video a participant receives is capped by
//! the size of the call (≤ 720 lines for 2 people, ≤ 540 for 3–4, ≤ 360 for 5–6).
//!
//! LiveKit picks the layer a subscriber gets from that subscriber's own `UpdateTrackSettings`
//! (the last one wins; `width`/`height` override `quality`), and defaults a new subscription to
//! the top layer. So the gateway, on each subscriber's signalling session:
//! - **injects** settings upstream when a camera track of someone else appears (in `join` or a
//!   participant update: clients subscribe automatically, and LiveKit keeps settings that arrive
//!   before the subscription for when it is made), when the client subscribes to one, after a
//!   resume (`ReconnectResponse`), and for every subscription whenever the call size changes
//!   (`TrackSubscribed` is no cue: LiveKit sends it to the *publisher*);
//! - **clamps** every settings message the client sends (asking for more gets the cap; asking
//!   for less, or disabling, is honoured).
//!
//! Settings sent before a subscription exists can be lost: LiveKit 1.13's `SubscribeToTrack`
//! checks for a subscription record and, if there is none, creates and stores a fresh one in
//! two steps, so settings that create the record in between are overwritten by the empty one
//! and the subscriber gets LiveKit's default, the top layer (seen once in 300 subscriptions at
//! ten six-person calls on two cores). So when a track first shows up in the subscriber's
//! session description from LiveKit (its `a=msid` names the track SID), the subscription is
//! certainly in place, and its settings are sent once more.
//!
//! The SFU never rescales: it serves the smallest published layer whose height is at least 0.9
//! of the requested one, else the top layer. Asking for "540" from a publisher whose layers are
//! 180/360/720 would therefore yield 720; the ladder asks for the exact height of the largest
//! published layer within the cap, read from the track's `layers`.
//!
//! While the subscriber is in the audio-only fallback ([`crate::fallback`]), every video it
//! receives — screen share included — is disabled instead, by the same injection and clamping.
//! The ladder does not hold that state: the fallback does, and every input that can lead to
//! settings says which it is ([`Receiving`]), so the two cannot disagree.
//!
//! This type is pure state, owned by the session's relay task (one per subscriber): it sees the
//! decoded frames and says what to send upstream. Everything it knows comes from that one
//! session's stream, keyed by identity and track SID, so gateways share no state.

use std::collections::{HashMap, HashSet};

use livekit_protocol::{
    ParticipantInfo, SignalResponse, TrackInfo, TrackSource, TrackType, UpdateTrackSettings,
    VideoLayer, VideoQuality, participant_info, signal_response,
};

/// The largest camera height for each call size: `(max participants, max lines)`, ascending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LadderConfig {
    pub steps: Vec<(u32, u32)>,
}

impl Default for LadderConfig {
    fn default() -> Self {
        Self {
            steps: koinos_proto::contract::DEFAULT_LADDER.to_vec(),
        }
    }
}

impl LadderConfig {
    /// The cap for a call of `size` people (the last step beyond the table).
    pub fn cap(&self, size: usize) -> u32 {
        self.steps
            .iter()
            .find(|(max, _)| size <= *max as usize)
            .or(self.steps.last())
            .map_or(u32::MAX, |(_, lines)| *lines)
    }
}

/// What the subscriber receives now. Held by the fallback ([`crate::fallback::Stage`]), passed
/// in with every input that can lead to settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receiving {
    /// Video, each camera within the cap.
    Video,
    /// The audio-only fallback: every incoming video disabled, screen share included.
    AudioOnly,
}

/// A video track someone else publishes.
#[derive(Debug, Clone)]
struct VideoTrack {
    layers: Vec<VideoLayer>,
    /// Screen share: never capped, only paused by the fallback.
    screen: bool,
}

#[derive(Debug)]
pub struct Ladder {
    config: LadderConfig,
    own_identity: String,
    /// This participant's SID (from `join`, or the room listing after a resume).
    own_sid: String,
    /// Everyone else in the call (by identity, not SID: a full reconnect changes the SID).
    others: HashMap<String, HashSet<String>>,
    videos: HashMap<String, VideoTrack>,
    /// Video tracks this subscriber is subscribed to.
    subscribed: HashSet<String>,
    /// Video tracks LiveKit has put in this subscriber's session description (so their
    /// subscription exists and settings sent now stick).
    in_sdp: HashSet<String>,
    /// This participant's own camera tracks (what the fallback pauses at its second stage).
    own_cameras: HashSet<String>,
    /// Flipped to make a repeated "disabled" differ from the last one, which LiveKit would
    /// otherwise ignore as identical.
    nudge: bool,
    /// What the client itself last asked for, per track (unclamped).
    wanted: HashMap<String, UpdateTrackSettings>,
    /// What was last sent upstream per track, to send only changes.
    sent: HashMap<String, UpdateTrackSettings>,
    /// Bumped whenever `sent` (or what a track is) may have changed, so that the metrics recount
    /// enforced layers only then, not on every frame.
    revision: u64,
    joined: bool,
}

impl Ladder {
    pub fn new(config: LadderConfig, own_identity: String) -> Self {
        Self {
            config,
            own_identity,
            own_sid: String::new(),
            others: HashMap::new(),
            videos: HashMap::new(),
            subscribed: HashSet::new(),
            in_sdp: HashSet::new(),
            own_cameras: HashSet::new(),
            nudge: false,
            wanted: HashMap::new(),
            sent: HashMap::new(),
            revision: 0,
            joined: false,
        }
    }

    /// People in the call, this subscriber included.
    pub fn call_size(&self) -> usize {
        self.others.len() + 1
    }

    /// The height every camera this subscriber receives is capped at now.
    pub fn cap(&self) -> u32 {
        self.config.cap(self.call_size())
    }

    pub fn own_identity(&self) -> &str {
        &self.own_identity
    }

    /// Empty until LiveKit has said.
    pub fn own_sid(&self) -> &str {
        &self.own_sid
    }

    pub fn is_own_camera(&self, sid: &str) -> bool {
        self.own_cameras.contains(sid)
    }

    /// This participant's own camera tracks, as LiveKit last described them.
    pub fn own_cameras(&self) -> Vec<String> {
        let mut sids: Vec<String> = self.own_cameras.iter().cloned().collect();
        sids.sort();
        sids
    }

    /// What receiving changed to (the fallback entered or left): the settings of every
    /// subscription that differ under it from what was last sent.
    pub fn reapply(&mut self, receiving: Receiving) -> Vec<UpdateTrackSettings> {
        self.settings_for(self.subscribed.clone(), receiving)
    }

    /// The layer each camera subscription of this session is held at now, by what was last
    /// sent for it: its height, or 0 while disabled. Screen shares are left out (not capped).
    /// Changes whenever `enforced_layers` may have.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// What was last sent, for changing it (and marking the change).
    fn sent_mut(&mut self) -> &mut HashMap<String, UpdateTrackSettings> {
        self.revision += 1;
        &mut self.sent
    }

    pub fn enforced_layers(&self) -> HashMap<String, u32> {
        self.sent
            .iter()
            .filter(|(sid, _)| self.videos.get(*sid).is_some_and(|v| !v.screen))
            .map(|(sid, s)| (sid.clone(), if s.disabled { 0 } else { s.height }))
            .collect()
    }

    /// LiveKit says a track's stream is flowing (`StreamStateUpdate` ACTIVE). Audio-only, that
    /// is a bandwidth resume undoing the disable: send a fresh, different "disabled" for it.
    pub fn on_stream_active(
        &mut self,
        sid: &str,
        receiving: Receiving,
    ) -> Option<UpdateTrackSettings> {
        if receiving == Receiving::Video
            || !self.subscribed.contains(sid)
            || !self.videos.contains_key(sid)
        {
            return None;
        }
        self.nudge = !self.nudge;
        self.sent_mut().remove(sid);
        self.settings_for([sid.to_owned()], receiving).pop()
    }

    /// A frame from LiveKit to this subscriber; returns settings to send upstream.
    pub fn on_server(
        &mut self,
        response: &SignalResponse,
        receiving: Receiving,
    ) -> Vec<UpdateTrackSettings> {
        use signal_response::Message as M;
        let before = self.cap();
        let mut new_cameras = Vec::new();
        match &response.message {
            Some(M::Join(join)) => {
                self.joined = true;
                if let Some(own) = &join.participant {
                    self.update_participant(own);
                }
                for p in &join.other_participants {
                    new_cameras.extend(self.update_participant(p));
                }
            }
            Some(M::Update(update)) => {
                for p in &update.participants {
                    new_cameras.extend(self.update_participant(p));
                }
            }
            Some(M::TrackPublished(published)) => {
                if let Some(track) = &published.track
                    && is_camera(track)
                {
                    self.own_cameras.insert(track.sid.clone());
                }
                return vec![];
            }
            Some(M::TrackUnpublished(unpublished)) => {
                self.own_cameras.remove(&unpublished.track_sid);
                return vec![];
            }
            Some(M::Offer(description) | M::Answer(description)) => {
                return self.on_session_description(&description.sdp, receiving);
            }
            Some(M::Reconnect(_)) => {
                // A resumed session starts from LiveKit's defaults again: re-send everything.
                self.in_sdp.clear();
                self.sent_mut().clear();
                return self.settings_for(self.subscribed.clone(), receiving);
            }
            _ => return vec![],
        }
        if !self.joined {
            return vec![];
        }
        // Automatic subscription: a new camera is (about to be) subscribed.
        self.subscribed.extend(new_cameras.iter().cloned());
        if self.cap() != before {
            self.settings_for(self.subscribed.clone(), receiving)
        } else {
            self.settings_for(new_cameras, receiving)
        }
    }

    /// After a resume the session is new to this gateway (LiveKit sends no `join`): the room as
    /// LiveKit lists it now stands in for one. Returns the caps for every camera.
    pub fn on_resume(
        &mut self,
        participants: &[ParticipantInfo],
        receiving: Receiving,
    ) -> Vec<UpdateTrackSettings> {
        self.joined = true;
        self.others.clear();
        self.videos.clear();
        self.in_sdp.clear();
        self.sent_mut().clear();
        let mut cameras = Vec::new();
        for p in participants {
            cameras.extend(self.update_participant(p));
        }
        self.subscribed.extend(cameras.iter().cloned());
        self.settings_for(self.subscribed.clone(), receiving)
    }

    /// A session description from LiveKit: the settings of every video subscription in it
    /// that was not in an earlier one are sent again, now that the subscription exists.
    fn on_session_description(
        &mut self,
        sdp: &str,
        receiving: Receiving,
    ) -> Vec<UpdateTrackSettings> {
        let arrived: Vec<String> = msid_tracks(sdp)
            .filter(|sid| self.subscribed.contains(*sid) && !self.in_sdp.contains(*sid))
            .map(str::to_owned)
            .collect();
        if arrived.is_empty() {
            return vec![];
        }
        let sent = self.sent_mut();
        for sid in &arrived {
            sent.remove(sid);
        }
        self.in_sdp.extend(arrived.iter().cloned());
        self.settings_for(arrived, receiving)
    }

    /// The client subscribed to tracks (`UpdateSubscription{subscribe:true}`). An explicit
    /// subscription may be a new one at LiveKit, starting from its default (the top layer),
    /// whatever this session thinks it had sent before — an unsubscribe it did not see, say —
    /// so its settings are always sent again, and once more when it is in a description.
    pub fn on_client_subscribe(
        &mut self,
        track_sids: &[String],
        receiving: Receiving,
    ) -> Vec<UpdateTrackSettings> {
        let videos: Vec<String> = track_sids
            .iter()
            .filter(|sid| self.videos.contains_key(*sid))
            .cloned()
            .collect();
        for sid in &videos {
            self.in_sdp.remove(sid);
            self.sent_mut().remove(sid);
        }
        self.subscribed.extend(videos.iter().cloned());
        self.settings_for(videos, receiving)
    }

    /// A settings message from the client. Returns what to send upstream in its place (empty if
    /// nothing needs sending), or `None` to forward the client's original bytes untouched.
    pub fn on_client_settings(
        &mut self,
        settings: &UpdateTrackSettings,
        receiving: Receiving,
    ) -> Option<Vec<UpdateTrackSettings>> {
        // Screen share is only ours audio-only; its wishes are kept for the restore.
        for sid in &settings.track_sids {
            if self.videos.get(sid).is_some_and(|v| v.screen) {
                self.wanted.insert(sid.clone(), settings.clone());
            }
        }
        let (cameras, others): (Vec<&String>, Vec<&String>) =
            settings.track_sids.iter().partition(|sid| {
                self.videos
                    .get(*sid)
                    .is_some_and(|v| receiving == Receiving::AudioOnly || !v.screen)
            });
        if cameras.is_empty() {
            return None; // audio, unknown tracks, or screen share outside a fallback
        }
        let mut out = Vec::new();
        if !others.is_empty() {
            out.push(UpdateTrackSettings {
                track_sids: others.into_iter().cloned().collect(),
                ..settings.clone()
            });
        }
        let cameras: Vec<String> = cameras.into_iter().cloned().collect();
        for sid in &cameras {
            self.wanted.insert(sid.clone(), settings.clone());
            // A client only sends settings for what it subscribes to.
            self.subscribed.insert(sid.clone());
        }
        out.extend(self.settings_for(cameras, receiving));
        Some(out)
    }

    /// The client unsubscribed from tracks (`UpdateSubscription{subscribe:false}`).
    pub fn on_client_unsubscribe(&mut self, track_sids: &[String]) {
        for sid in track_sids {
            self.subscribed.remove(sid);
            self.in_sdp.remove(sid);
            self.sent_mut().remove(sid);
        }
    }

    /// Records one participant's state; returns its camera tracks that are new.
    fn update_participant(&mut self, p: &ParticipantInfo) -> Vec<String> {
        self.revision += 1;
        if p.identity == self.own_identity {
            self.own_sid = p.sid.clone();
            self.own_cameras = p
                .tracks
                .iter()
                .filter(|t| is_camera(t))
                .map(|t| t.sid.clone())
                .collect();
            return vec![];
        }
        let gone = p.state == participant_info::State::Disconnected as i32;
        let old = self.others.remove(&p.identity).unwrap_or_default();
        for sid in &old {
            self.videos.remove(sid);
        }
        if gone {
            for sid in &old {
                self.forget(sid);
            }
            return vec![];
        }
        let mut sids = HashSet::new();
        for track in &p.tracks {
            if track.r#type == TrackType::Video as i32 {
                self.videos.insert(
                    track.sid.clone(),
                    VideoTrack {
                        layers: published_layers(track),
                        screen: !is_camera(track),
                    },
                );
                sids.insert(track.sid.clone());
            }
        }
        for sid in old.difference(&sids) {
            self.forget(sid);
        }
        let new = sids.difference(&old).cloned().collect();
        self.others.insert(p.identity.clone(), sids);
        new
    }

    fn forget(&mut self, sid: &str) {
        self.subscribed.remove(sid);
        self.in_sdp.remove(sid);
        self.wanted.remove(sid);
        self.sent_mut().remove(sid);
    }

    /// The capped settings for these tracks, leaving out what was already sent.
    fn settings_for(
        &mut self,
        sids: impl IntoIterator<Item = String>,
        receiving: Receiving,
    ) -> Vec<UpdateTrackSettings> {
        let cap = self.cap();
        let mut out = Vec::new();
        let mut sids: Vec<String> = sids.into_iter().collect();
        sids.sort(); // deterministic order for tests and logs
        for sid in sids {
            let Some(track) = self.videos.get(&sid) else {
                continue;
            };
            // No wish from the client: LiveKit's default for a new subscription, the top layer.
            let wanted = self
                .wanted
                .get(&sid)
                .cloned()
                .unwrap_or(UpdateTrackSettings {
                    quality: VideoQuality::High as i32,
                    ..Default::default()
                });
            let settings = if receiving == Receiving::AudioOnly {
                UpdateTrackSettings {
                    track_sids: vec![sid.clone()],
                    disabled: true,
                    quality: VideoQuality::Low as i32,
                    priority: u32::from(self.nudge),
                    ..Default::default()
                }
            } else if track.screen {
                if !self.wanted.contains_key(&sid) && !self.sent.contains_key(&sid) {
                    continue; // LiveKit's default (the top layer) stands; nothing to say
                }
                UpdateTrackSettings {
                    track_sids: vec![sid.clone()],
                    ..wanted
                }
            } else {
                capped(&sid, &wanted, &track.layers, cap)
            };
            if self.sent.get(&sid) != Some(&settings) {
                self.sent_mut().insert(sid.clone(), settings.clone());
                out.push(settings);
            }
        }
        out
    }
}

/// The layers a track is published with: per codec in current LiveKit, in the deprecated
/// top-level field in older servers. With several codecs, the first (primary) one's.
fn published_layers(track: &TrackInfo) -> Vec<VideoLayer> {
    if let Some(codec) = track.codecs.iter().find(|c| !c.layers.is_empty()) {
        return codec.layers.clone();
    }
    #[allow(deprecated)]
    track.layers.clone()
}

/// The track IDs an SDP's media sections carry (`a=msid:<stream id> <track id>`; LiveKit's track
/// ID is the track SID).
fn msid_tracks(sdp: &str) -> impl Iterator<Item = &str> {
    sdp.lines()
        .filter_map(|line| line.trim_end().strip_prefix("a=msid:"))
        .filter_map(|msid| msid.split_whitespace().nth(1))
}

fn is_camera(track: &TrackInfo) -> bool {
    track.r#type == TrackType::Video as i32 && track.source != TrackSource::ScreenShare as i32
}

/// The height the client asked for: explicit dimensions first, else its quality's layer.
fn requested_height(wanted: &UpdateTrackSettings, layers: &[VideoLayer]) -> u32 {
    if wanted.height > 0 {
        return wanted.height;
    }
    if wanted.width > 0 {
        // Width only: assume 16:9. In u64: any u32 a client sends must not overflow.
        return u32::try_from(u64::from(wanted.width) * 9 / 16).unwrap_or(u32::MAX);
    }
    if wanted.quality == VideoQuality::High as i32 {
        return u32::MAX;
    }
    layers
        .iter()
        .find(|l| l.quality == wanted.quality)
        .map_or(u32::MAX, |l| l.height)
}

/// One track's settings: the client's wishes (disable, fps, priority, a lower layer) kept, the
/// height capped, and expressed as an exact published layer so the SFU cannot round up past it.
pub fn capped(
    sid: &str,
    wanted: &UpdateTrackSettings,
    layers: &[VideoLayer],
    cap: u32,
) -> UpdateTrackSettings {
    let target = requested_height(wanted, layers).min(cap);
    let mut sorted: Vec<&VideoLayer> = layers.iter().filter(|l| l.height > 0).collect();
    sorted.sort_by_key(|l| l.height);
    let (width, height, quality) = match sorted
        .iter()
        .rev()
        .find(|l| l.height <= target)
        .or(sorted.first())
    {
        Some(layer) => (layer.width, layer.height, layer.quality),
        // No layer information: ask for the cap in 16:9 and let the SFU pick at or above it.
        None => (
            u32::try_from(u64::from(target) * 16 / 9).unwrap_or(u32::MAX),
            target,
            VideoQuality::Low as i32,
        ),
    };
    UpdateTrackSettings {
        track_sids: vec![sid.to_owned()],
        disabled: wanted.disabled,
        quality,
        width,
        height,
        fps: wanted.fps,
        priority: wanted.priority,
    }
}

#[cfg(test)]
mod tests;
