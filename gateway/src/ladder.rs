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
            steps: vec![(2, 720), (4, 540), (6, 360)],
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
    /// All incoming video disabled (audio-only fallback).
    paused: bool,
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
            paused: false,
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

    /// Pauses (audio-only fallback) or restores every incoming video; returns the settings.
    pub fn set_paused(&mut self, paused: bool) -> Vec<UpdateTrackSettings> {
        if self.paused == paused {
            return vec![];
        }
        self.paused = paused;
        self.settings_for(self.subscribed.clone())
    }

    pub fn paused(&self) -> bool {
        self.paused
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

    /// LiveKit says a track's stream is flowing (`StreamStateUpdate` ACTIVE). While paused that
    /// is a bandwidth resume undoing the disable: send a fresh, different "disabled" for it.
    pub fn on_stream_active(&mut self, sid: &str) -> Option<UpdateTrackSettings> {
        if !self.paused || !self.subscribed.contains(sid) || !self.videos.contains_key(sid) {
            return None;
        }
        self.nudge = !self.nudge;
        self.sent_mut().remove(sid);
        self.settings_for([sid.to_owned()]).pop()
    }

    /// A frame from LiveKit to this subscriber; returns settings to send upstream.
    pub fn on_server(&mut self, response: &SignalResponse) -> Vec<UpdateTrackSettings> {
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
                return self.on_session_description(&description.sdp);
            }
            Some(M::Reconnect(_)) => {
                // A resumed session starts from LiveKit's defaults again: re-send everything.
                self.in_sdp.clear();
                self.sent_mut().clear();
                return self.settings_for(self.subscribed.clone());
            }
            _ => return vec![],
        }
        if !self.joined {
            return vec![];
        }
        // Automatic subscription: a new camera is (about to be) subscribed.
        self.subscribed.extend(new_cameras.iter().cloned());
        if self.cap() != before {
            self.settings_for(self.subscribed.clone())
        } else {
            self.settings_for(new_cameras)
        }
    }

    /// After a resume the session is new to this gateway (LiveKit sends no `join`): the room as
    /// LiveKit lists it now stands in for one. Returns the caps for every camera.
    pub fn on_resume(&mut self, participants: &[ParticipantInfo]) -> Vec<UpdateTrackSettings> {
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
        self.settings_for(self.subscribed.clone())
    }

    /// A session description from LiveKit: the settings of every video subscription in it
    /// that was not in an earlier one are sent again, now that the subscription exists.
    fn on_session_description(&mut self, sdp: &str) -> Vec<UpdateTrackSettings> {
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
        self.settings_for(arrived)
    }

    /// The client subscribed to tracks (`UpdateSubscription{subscribe:true}`).
    pub fn on_client_subscribe(&mut self, track_sids: &[String]) -> Vec<UpdateTrackSettings> {
        let videos: Vec<String> = track_sids
            .iter()
            .filter(|sid| self.videos.contains_key(*sid))
            .cloned()
            .collect();
        self.subscribed.extend(videos.iter().cloned());
        self.settings_for(videos)
    }

    /// A settings message from the client. Returns what to send upstream in its place (empty if
    /// nothing needs sending), or `None` to forward the client's original bytes untouched.
    pub fn on_client_settings(
        &mut self,
        settings: &UpdateTrackSettings,
    ) -> Option<Vec<UpdateTrackSettings>> {
        // Screen share is only ours while paused; its wishes are kept for the restore.
        for sid in &settings.track_sids {
            if self.videos.get(sid).is_some_and(|v| v.screen) {
                self.wanted.insert(sid.clone(), settings.clone());
            }
        }
        let (cameras, others): (Vec<&String>, Vec<&String>) =
            settings.track_sids.iter().partition(|sid| {
                self.videos
                    .get(*sid)
                    .is_some_and(|v| self.paused || !v.screen)
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
        out.extend(self.settings_for(cameras));
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
    fn settings_for(&mut self, sids: impl IntoIterator<Item = String>) -> Vec<UpdateTrackSettings> {
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
            let settings = if self.paused {
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
mod tests {
    use livekit_protocol::{JoinResponse, ParticipantUpdate, ReconnectResponse};

    use super::*;

    #[test]
    fn extreme_dimensions_from_a_client_are_capped_not_overflowed() {
        // Found by the relay's frame fuzz target: a width-only request near u32::MAX.
        for (width, height) in [(u32::MAX, 0), (u32::MAX, u32::MAX), (0, u32::MAX)] {
            let wanted = UpdateTrackSettings {
                width,
                height,
                ..Default::default()
            };
            assert_eq!(capped("TR_a", &wanted, &layers(), 540).height, 540);
            assert_eq!(capped("TR_a", &wanted, &[], 360).height, 360);
        }
    }

    fn layers() -> Vec<VideoLayer> {
        [
            (VideoQuality::Low, 640, 360),
            (VideoQuality::Medium, 960, 540),
            (VideoQuality::High, 1280, 720),
        ]
        .into_iter()
        .map(|(q, w, h)| VideoLayer {
            quality: q as i32,
            width: w,
            height: h,
            ..Default::default()
        })
        .collect()
    }

    fn participant(identity: &str, camera: Option<&str>) -> ParticipantInfo {
        let mut tracks = vec![TrackInfo {
            sid: format!("TR_audio_{identity}"),
            r#type: TrackType::Audio as i32,
            ..Default::default()
        }];
        if let Some(sid) = camera {
            tracks.push(TrackInfo {
                sid: sid.into(),
                r#type: TrackType::Video as i32,
                source: TrackSource::Camera as i32,
                codecs: vec![livekit_protocol::SimulcastCodecInfo {
                    mime_type: "video/VP8".into(),
                    layers: layers(),
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
        ParticipantInfo {
            identity: identity.into(),
            state: participant_info::State::Active as i32,
            tracks,
            ..Default::default()
        }
    }

    fn join(others: Vec<ParticipantInfo>) -> SignalResponse {
        SignalResponse {
            message: Some(signal_response::Message::Join(JoinResponse {
                other_participants: others,
                ..Default::default()
            })),
        }
    }

    fn update(participants: Vec<ParticipantInfo>) -> SignalResponse {
        SignalResponse {
            message: Some(signal_response::Message::Update(ParticipantUpdate {
                participants,
            })),
        }
    }

    fn heights(settings: &[UpdateTrackSettings]) -> Vec<(String, u32)> {
        settings
            .iter()
            .map(|s| (s.track_sids.join(","), s.height))
            .collect()
    }

    #[test]
    fn the_cap_follows_the_call_size() {
        let config = LadderConfig::default();
        let caps: Vec<u32> = (1..=7).map(|n| config.cap(n)).collect();
        assert_eq!(caps, [720, 720, 540, 540, 360, 360, 360]);
    }

    #[test]
    fn new_cameras_are_capped_without_any_client_settings() {
        let mut ladder = Ladder::new(LadderConfig::default(), "me".into());
        let others = vec![participant("a", Some("TR_a")), participant("b", None)];
        assert_eq!(
            heights(&ladder.on_server(&join(others))),
            [("TR_a".into(), 540)]
        );
        assert_eq!(ladder.call_size(), 3);
        // b starts its camera later; b's audio track is none of the ladder's business.
        assert_eq!(
            heights(&ladder.on_server(&update(vec![participant("b", Some("TR_b"))]))),
            [("TR_b".into(), 540)]
        );
        // Our own camera is never capped for us.
        assert!(
            ladder
                .on_server(&update(vec![participant("me", Some("TR_me"))]))
                .is_empty()
        );
    }

    fn offer(tracks: &[&str]) -> SignalResponse {
        let mut sdp = String::from("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n");
        for (mid, track) in tracks.iter().enumerate() {
            sdp.push_str(&format!(
                "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:{mid}\r\na=msid:PA_x|{track} {track}\r\n"
            ));
        }
        SignalResponse {
            message: Some(signal_response::Message::Offer(
                livekit_protocol::SessionDescription {
                    r#type: "offer".into(),
                    sdp,
                    ..Default::default()
                },
            )),
        }
    }

    #[test]
    fn settings_are_sent_again_once_the_subscription_is_in_the_offer() {
        let mut ladder = Ladder::new(LadderConfig::default(), "me".into());
        let others = ["a", "b", "c", "d"].map(|id| participant(id, Some(&format!("TR_{id}"))));
        assert_eq!(ladder.on_server(&join(others.to_vec())).len(), 4);
        // LiveKit may have lost those to its subscribe race: once a track is in the
        // subscriber's offer its cap goes again, exactly once, audio and unknown tracks aside.
        assert_eq!(
            heights(&ladder.on_server(&offer(&["TR_audio_a", "TR_a", "TR_b", "TR_zz"]))),
            [("TR_a".into(), 360), ("TR_b".into(), 360)]
        );
        assert_eq!(
            heights(&ladder.on_server(&offer(&["TR_audio_a", "TR_a", "TR_b", "TR_c"]))),
            [("TR_c".into(), 360)]
        );
        // A resume starts over: the next offer confirms everything again.
        ladder.on_server(&SignalResponse {
            message: Some(signal_response::Message::Reconnect(
                ReconnectResponse::default(),
            )),
        });
        assert_eq!(
            heights(&ladder.on_server(&offer(&["TR_a"]))),
            [("TR_a".into(), 360)]
        );
        // An unsubscribed track in a later offer is left alone.
        ladder.on_client_unsubscribe(&["TR_d".into()]);
        assert!(ladder.on_server(&offer(&["TR_a", "TR_d"])).is_empty());
    }

    #[test]
    fn an_explicit_subscription_is_capped_and_an_unsubscribed_track_left_alone() {
        let mut ladder = Ladder::new(LadderConfig::default(), "me".into());
        ladder.on_server(&join(vec![participant("a", Some("TR_a"))]));
        ladder.on_client_unsubscribe(&["TR_a".into()]);
        // The call grows: nothing to send for a track we are not subscribed to.
        assert!(
            ladder
                .on_server(&update(vec![participant("b", None)]))
                .is_empty()
        );
        assert_eq!(
            heights(&ladder.on_client_subscribe(&["TR_a".into(), "TR_audio_a".into()])),
            [("TR_a".into(), 540)]
        );
    }

    #[test]
    fn call_size_changes_reapply_to_every_subscription_and_go_back_up() {
        let mut ladder = Ladder::new(LadderConfig::default(), "me".into());
        assert_eq!(
            heights(&ladder.on_server(&join(vec![participant("a", Some("TR_a"))]))),
            [("TR_a".into(), 720)]
        );

        let more: Vec<_> = ["b", "c", "d"]
            .iter()
            .map(|id| participant(id, None))
            .collect();
        assert_eq!(
            heights(&ladder.on_server(&update(more))),
            [("TR_a".into(), 360)]
        );
        assert_eq!(ladder.call_size(), 5);

        let mut gone = participant("d", None);
        gone.state = participant_info::State::Disconnected as i32;
        assert_eq!(
            heights(&ladder.on_server(&update(vec![gone]))),
            [("TR_a".into(), 540)]
        );
        // Nothing changed: nothing sent.
        assert!(
            ladder
                .on_server(&update(vec![participant("b", None)]))
                .is_empty()
        );
    }

    #[test]
    fn client_settings_are_clamped_and_lower_wishes_honoured() {
        let mut ladder = Ladder::new(LadderConfig::default(), "me".into());
        let others: Vec<_> = ["a", "b", "c", "d"]
            .iter()
            .map(|id| participant(id, Some(&format!("TR_{id}"))))
            .collect();
        assert_eq!(ladder.on_server(&join(others)).len(), 4);
        assert_eq!(ladder.cap(), 360);

        // Asking for 1080 in a 5-person call: the 360 cap already in force stays; the client's
        // message is not passed on.
        let greedy = UpdateTrackSettings {
            track_sids: vec!["TR_a".into()],
            width: 1920,
            height: 1080,
            ..Default::default()
        };
        assert_eq!(ladder.on_client_settings(&greedy), Some(vec![]));
        let clamped = capped("TR_a", &greedy, &layers(), 360);
        assert_eq!((clamped.width, clamped.height), (640, 360));

        // 180 is below every published layer: the smallest one (360) is what the SFU can serve.
        let modest = UpdateTrackSettings {
            track_sids: vec!["TR_b".into()],
            width: 320,
            height: 180,
            ..Default::default()
        };
        assert_eq!(capped("TR_b", &modest, &layers(), 360).height, 360);

        // In a 2-person call, asking for 540 gets exactly the 540 layer, not the cap.
        let medium = UpdateTrackSettings {
            height: 540,
            ..Default::default()
        };
        assert_eq!(capped("TR_b", &medium, &layers(), 720).height, 540);

        let off = UpdateTrackSettings {
            track_sids: vec!["TR_c".into()],
            disabled: true,
            ..Default::default()
        };
        assert!(ladder.on_client_settings(&off).unwrap()[0].disabled);

        // Screen share and unknown tracks pass untouched.
        let other = UpdateTrackSettings {
            track_sids: vec!["TR_screen".into()],
            height: 1080,
            ..Default::default()
        };
        assert_eq!(ladder.on_client_settings(&other), None);
    }

    #[test]
    fn a_lower_wish_is_kept_when_the_cap_rises() {
        let mut ladder = Ladder::new(LadderConfig::default(), "me".into());
        ladder.on_server(&join(vec![
            participant("a", Some("TR_a")),
            participant("b", None),
        ]));
        let low = UpdateTrackSettings {
            track_sids: vec!["TR_a".into()],
            quality: VideoQuality::Low as i32,
            ..Default::default()
        };
        assert_eq!(
            heights(&ladder.on_client_settings(&low).unwrap()),
            [("TR_a".into(), 360)]
        );
        let mut gone = participant("b", None);
        gone.state = participant_info::State::Disconnected as i32;
        // Cap 540 → 720, but the client asked for LOW: nothing to change.
        assert!(ladder.on_server(&update(vec![gone])).is_empty());
    }

    #[test]
    fn a_resume_resends_the_caps() {
        let mut ladder = Ladder::new(LadderConfig::default(), "me".into());
        ladder.on_server(&join(vec![
            participant("a", Some("TR_a")),
            participant("b", Some("TR_b")),
        ]));
        let resumed = SignalResponse {
            message: Some(signal_response::Message::Reconnect(
                ReconnectResponse::default(),
            )),
        };
        assert_eq!(
            heights(&ladder.on_server(&resumed)),
            [("TR_a".into(), 540), ("TR_b".into(), 540)]
        );
    }

    #[test]
    fn a_resumed_session_learns_the_room_and_follows_it() {
        // A fresh ladder (new gateway session after a resume): no join, the listed room instead.
        let mut ladder = Ladder::new(LadderConfig::default(), "me".into());
        let room = vec![
            participant("me", Some("TR_me")),
            participant("a", Some("TR_a")),
            participant("b", Some("TR_b")),
        ];
        assert_eq!(
            heights(&ladder.on_resume(&room)),
            [("TR_a".into(), 540), ("TR_b".into(), 540)]
        );
        let mut gone = participant("b", None);
        gone.state = participant_info::State::Disconnected as i32;
        assert_eq!(
            heights(&ladder.on_server(&update(vec![gone]))),
            [("TR_a".into(), 720)]
        );
    }

    fn screen(identity: &str, sid: &str) -> ParticipantInfo {
        let mut p = participant(identity, None);
        p.tracks.push(TrackInfo {
            sid: sid.into(),
            r#type: TrackType::Video as i32,
            source: TrackSource::ScreenShare as i32,
            ..Default::default()
        });
        p
    }

    fn disabled(settings: &[UpdateTrackSettings]) -> Vec<(String, bool)> {
        settings
            .iter()
            .map(|s| (s.track_sids.join(","), s.disabled))
            .collect()
    }

    #[test]
    fn the_fallback_disables_all_incoming_video_and_the_restore_brings_back_the_caps() {
        let mut ladder = Ladder::new(LadderConfig::default(), "me".into());
        ladder.on_server(&join(vec![
            participant("a", Some("TR_a")),
            screen("b", "TR_screen"),
        ]));
        // A screen share outside a fallback is left to LiveKit's defaults.
        assert_eq!(
            heights(&ladder.on_client_subscribe(&["TR_screen".into()])),
            []
        );

        assert_eq!(
            disabled(&ladder.set_paused(true)),
            [("TR_a".into(), true), ("TR_screen".into(), true)]
        );
        assert!(ladder.set_paused(true).is_empty());

        // The client asking for video while paused gets "disabled", for both kinds.
        let wish = UpdateTrackSettings {
            track_sids: vec!["TR_a".into(), "TR_screen".into()],
            quality: VideoQuality::High as i32,
            ..Default::default()
        };
        assert_eq!(ladder.on_client_settings(&wish), Some(vec![]));
        // A camera appearing while paused is disabled from the start.
        assert_eq!(
            disabled(&ladder.on_server(&update(vec![participant("c", Some("TR_c"))]))),
            [("TR_c".into(), true)]
        );

        let restored = ladder.set_paused(false);
        assert!(restored.iter().all(|s| !s.disabled), "{restored:?}");
        assert_eq!(
            heights(&restored),
            [
                ("TR_a".into(), 540),
                ("TR_c".into(), 540),
                ("TR_screen".into(), 0)
            ]
        );
    }

    #[test]
    fn a_bandwidth_resume_while_paused_is_answered_with_a_different_disable() {
        let mut ladder = Ladder::new(LadderConfig::default(), "me".into());
        ladder.on_server(&join(vec![participant("a", Some("TR_a"))]));
        assert_eq!(ladder.on_stream_active("TR_a"), None); // not paused: LiveKit's business
        let first = ladder.set_paused(true).pop().unwrap();
        let again = ladder.on_stream_active("TR_a").unwrap();
        assert!(again.disabled);
        assert_ne!(
            again, first,
            "LiveKit ignores a settings message identical to the last"
        );
        let third = ladder.on_stream_active("TR_a").unwrap();
        assert_ne!(third, again);
        assert_eq!(ladder.on_stream_active("TR_unknown"), None);
    }

    #[test]
    fn own_cameras_are_followed_for_the_second_stage() {
        let mut ladder = Ladder::new(LadderConfig::default(), "me".into());
        ladder.on_server(&join(vec![]));
        let published = SignalResponse {
            message: Some(signal_response::Message::TrackPublished(
                livekit_protocol::TrackPublishedResponse {
                    cid: "local".into(),
                    track: Some(participant("me", Some("TR_mine")).tracks[1].clone()),
                },
            )),
        };
        assert!(ladder.on_server(&published).is_empty());
        assert_eq!(ladder.own_cameras(), ["TR_mine"]);
        ladder.on_server(&update(vec![participant("me", None)]));
        assert!(ladder.own_cameras().is_empty());
    }

    #[test]
    fn without_layer_information_the_cap_is_asked_for_directly() {
        let settings = capped("TR", &UpdateTrackSettings::default(), &[], 540);
        assert_eq!((settings.width, settings.height), (960, 540));
    }

    /// Property tests of the rewriting path: any sequence of room changes and client settings,
    /// including frames that are garbage, never panics, and every camera setting the gateway sends
    /// stays within the cap in force (or is the smallest published layer when none fits).
    mod fuzz {
        use proptest::prelude::*;

        use super::*;
        use crate::signal::{decode_client_frame, decode_server_frame};

        #[derive(Debug, Clone)]
        enum Event {
            Join(Vec<u8>),
            Arrive(u8, bool),
            Leave(u8),
            Client(u8, u32, u32, i32, bool),
            Subscribe(u8, bool),
            Resume(Vec<u8>),
            Pause(bool),
            StreamActive(u8),
        }

        fn event() -> impl Strategy<Value = Event> {
            prop_oneof![
                prop::collection::vec(0u8..8, 0..6).prop_map(Event::Join),
                (0u8..8, any::<bool>()).prop_map(|(p, cam)| Event::Arrive(p, cam)),
                (0u8..8).prop_map(Event::Leave),
                (0u8..10, 0u32..4000, 0u32..2200, 0i32..4, any::<bool>())
                    .prop_map(|(p, w, h, q, off)| Event::Client(p, w, h, q, off)),
                (0u8..10, any::<bool>()).prop_map(|(p, on)| Event::Subscribe(p, on)),
                prop::collection::vec(0u8..8, 0..6).prop_map(Event::Resume),
                any::<bool>().prop_map(Event::Pause),
                (0u8..10).prop_map(Event::StreamActive),
            ]
        }

        fn person(n: u8, camera: bool) -> ParticipantInfo {
            participant(
                &format!("p{n}"),
                camera.then(|| format!("TR_{n}")).as_deref(),
            )
        }

        fn check(ladder: &Ladder, sent: &[UpdateTrackSettings]) {
            for settings in sent {
                // While paused, nothing but "disabled" goes out.
                assert!(
                    !ladder.paused() || settings.disabled,
                    "{settings:?} while paused"
                );
                assert!(
                    settings.height <= ladder.cap() || settings.height == 360,
                    "{settings:?} over cap {}",
                    ladder.cap()
                );
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            #[test]
            fn any_sequence_stays_within_the_cap(events in prop::collection::vec(event(), 1..40)) {
                let mut ladder = Ladder::new(LadderConfig::default(), "p0".into());
                for event in events {
                    let sent = match event {
                        Event::Join(people) => ladder.on_server(&join(
                            people.into_iter().map(|n| person(n, true)).collect(),
                        )),
                        Event::Arrive(n, camera) => ladder.on_server(&update(vec![person(n, camera)])),
                        Event::Leave(n) => {
                            let mut gone = person(n, false);
                            gone.state = participant_info::State::Disconnected as i32;
                            ladder.on_server(&update(vec![gone]))
                        }
                        Event::Client(n, width, height, quality, disabled) => ladder
                            .on_client_settings(&UpdateTrackSettings {
                                track_sids: vec![format!("TR_{n}")],
                                width,
                                height,
                                quality,
                                disabled,
                                ..Default::default()
                            })
                            .unwrap_or_default(),
                        Event::Subscribe(n, true) => ladder.on_client_subscribe(&[format!("TR_{n}")]),
                        Event::Subscribe(n, false) => {
                            ladder.on_client_unsubscribe(&[format!("TR_{n}")]);
                            vec![]
                        }
                        Event::Resume(people) => ladder.on_resume(
                            &people.into_iter().map(|n| person(n, true)).collect::<Vec<_>>(),
                        ),
                        Event::Pause(on) => ladder.set_paused(on),
                        Event::StreamActive(n) => {
                            ladder.on_stream_active(&format!("TR_{n}")).into_iter().collect()
                        }
                    };
                    check(&ladder, &sent);
                }
            }

            #[test]
            fn garbage_frames_are_errors_not_panics(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
                let _ = decode_client_frame(&bytes);
                if let Ok((_, response)) = decode_server_frame(&bytes) {
                    // Whatever decodes is fed to the ladder as the relay would.
                    let mut ladder = Ladder::new(LadderConfig::default(), "me".into());
                    let sent = ladder.on_server(&response);
                    check(&ladder, &sent);
                }
            }
        }
    }
}
