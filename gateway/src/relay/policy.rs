//! The session's policy: the ladder, the fallback, and what they lead to.

use super::*;

/// What becomes of a client frame.
pub(super) enum ClientAction {
    /// Forward the original bytes, then send `Out`.
    Forward(Out),
    /// Do not forward it; send `Out` instead.
    Replace(Out),
}

/// What becomes of a server frame, once relayed.
pub(super) enum ServerStep {
    /// Send `Out`.
    Out(Out),
    /// A resume: the policy needs LiveKit's listing of the room ([`Policy::on_listing`]) before
    /// anything that follows.
    ListRoom,
}

/// The session's policy: the ladder, the fallback, and the RoomService requests they lead to.
/// Without I/O: frames, listings and the time come in; what to send, what to ask and what the
/// metrics count go out ([`Out`]).
pub(super) struct Policy {
    pub(super) ladder: Ladder,
    pub(super) fallback: Fallback,
    /// The layer of each camera subscription as last counted in the metrics, and the ladder's
    /// revision it was counted at.
    pub(super) counted: HashMap<String, u32>,
    pub(super) counted_at: Option<u64>,
}

impl Policy {
    /// Whether [`Policy::on_client`] may change or answer this request (the others are
    /// forwarded as they are).
    pub(super) fn watches(request: &SignalRequest) -> bool {
        matches!(
            request.message,
            Some(
                signal_request::Message::TrackSetting(_)
                    | signal_request::Message::Subscription(_)
                    | signal_request::Message::SyncState(_)
                    | signal_request::Message::Mute(_)
            )
        )
    }

    pub(super) fn on_client(&mut self, request: &SignalRequest) -> ClientAction {
        match &request.message {
            Some(signal_request::Message::TrackSetting(settings)) => {
                match self.ladder.on_client_settings(settings, self.receiving()) {
                    Some(replacement) => {
                        debug!(?settings, ?replacement, "client settings clamped");
                        let source = match self.receiving() {
                            Receiving::AudioOnly => "fallback",
                            Receiving::Video => "clamped",
                        };
                        ClientAction::Replace(Out::settings(source, replacement))
                    }
                    None => ClientAction::Forward(Out::default()),
                }
            }
            // Forwarded first, then the caps for what it adds.
            Some(signal_request::Message::Subscription(subscription)) => {
                ClientAction::Forward(self.on_subscription(subscription))
            }
            // A resuming client's state: LiveKit applies the tracks it lists as disabled and its
            // subscription as it would requests of their own, so the policy sees them as such.
            Some(signal_request::Message::SyncState(state)) => {
                let mut out = Out::default();
                if !state.track_sids_disabled.is_empty() {
                    let disabled = UpdateTrackSettings {
                        track_sids: state.track_sids_disabled.clone(),
                        disabled: true,
                        ..Default::default()
                    };
                    // Disabled is a wish the ladder keeps; what it would send instead repeats it.
                    if let Some(settings) =
                        self.ladder.on_client_settings(&disabled, self.receiving())
                    {
                        out = Out::settings(self.injected(), settings);
                    }
                }
                if let Some(subscription) = &state.subscription {
                    out = out.and(self.on_subscription(subscription));
                }
                ClientAction::Forward(out)
            }
            Some(signal_request::Message::Mute(mute))
                if !mute.muted
                    && self.fallback.stage() == Stage::CameraPaused
                    && self.ladder.is_own_camera(&mute.sid) =>
            {
                // The camera is paused for the network's sake: the client's unmute is refused
                // and the client told so, keeping its view of the track true.
                info!(track = %mute.sid, "camera unmute refused during the audio-only fallback");
                ClientAction::Replace(Out {
                    browser: vec![SignalResponse {
                        message: Some(signal_response::Message::Mute(MuteTrackRequest {
                            sid: mute.sid.clone(),
                            muted: true,
                        })),
                    }],
                    tallies: vec![Tally::Policed("unmute_refused")],
                    ..Out::default()
                })
            }
            _ => ClientAction::Forward(Out::default()),
        }
    }

    /// A subscription change, by track or by participant (LiveKit acts on both lists alike).
    fn on_subscription(&mut self, subscription: &UpdateSubscription) -> Out {
        let sids: Vec<String> = subscription
            .track_sids
            .iter()
            .chain(
                subscription
                    .participant_tracks
                    .iter()
                    .flat_map(|p| &p.track_sids),
            )
            .cloned()
            .collect();
        if subscription.subscribe {
            let caps = self.ladder.on_client_subscribe(&sids, self.receiving());
            Out::settings(self.injected(), caps)
        } else {
            self.ladder.on_client_unsubscribe(&sids);
            Out::default()
        }
    }

    /// A server frame, after it went to the browser. A resume needs LiveKit's listing of the
    /// room first ([`Policy::on_listing`]); the relay asks for it beside its loop.
    pub(super) fn on_server(&mut self, response: &SignalResponse, now: Instant) -> ServerStep {
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
                        let step = self.fallback.on_quality(info.quality, now);
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
                    .filter_map(|s| self.ladder.on_stream_active(&s.track_sid, self.receiving()))
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
                let settings = self.ladder.on_server(response, self.receiving());
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
    pub(super) fn on_listing(
        &mut self,
        listing: anyhow::Result<Vec<livekit_protocol::ParticipantInfo>>,
        reconnect: &SignalResponse,
        now: Instant,
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
                // Counted once: a session already in a fallback (a second resume on the same
                // LiveKit connection) carries on in its own.
                if self.fallback.resume_in(stage, now) {
                    info!(stage = stage.label(), "resumed in the audio-only fallback");
                    out = Out::settings("fallback", self.ladder.reapply(self.receiving()))
                        .and(Out::tallied(vec![Tally::FallbackResumed]));
                }
                out.and(Out::settings(
                    self.injected(),
                    self.ladder.on_resume(&participants, self.receiving()),
                ))
            }
            Err(e) => {
                warn!(error = %e, "cannot list the room after a resume; caps follow the next updates");
                Out::settings(
                    self.injected(),
                    self.ladder.on_server(reconnect, self.receiving()),
                )
            }
        }
    }

    pub(super) fn on_timer(&mut self, now: Instant) -> Out {
        let step = self.fallback.poll(now);
        self.take(step)
    }

    /// What this subscriber receives: the fallback's stage is the one record of it.
    pub(super) fn receiving(&self) -> Receiving {
        match self.fallback.stage() {
            Stage::Normal => Receiving::Video,
            Stage::IncomingPaused | Stage::CameraPaused => Receiving::AudioOnly,
        }
    }

    /// The metrics label of settings the ladder injects now.
    pub(super) fn injected(&self) -> &'static str {
        match self.receiving() {
            Receiving::AudioOnly => "fallback",
            Receiving::Video => "injected",
        }
    }

    pub(super) fn take(&mut self, step: Option<Step>) -> Out {
        let Some(step) = step else {
            return Out::default();
        };
        let stage = self.fallback.stage();
        // The attribute first: the page learns why before its video stops.
        let told = Out {
            admin: vec![AdminRequest::Stage(stage)],
            ..Out::default()
        };
        told.and(match step {
            Step::PauseIncoming => {
                info!("link stayed bad: incoming video paused (audio-only fallback)");
                Out::settings("fallback", self.ladder.reapply(self.receiving()))
                    .and(Out::tallied(vec![Tally::FallbackEntered(stage.label())]))
            }
            Step::PauseCamera => {
                let cameras = self.ladder.own_cameras();
                info!(
                    cameras = cameras.len(),
                    "link still bad without incoming video: camera paused"
                );
                Out {
                    admin: cameras.into_iter().map(AdminRequest::MuteCamera).collect(),
                    tallies: vec![Tally::FallbackEntered(stage.label())],
                    ..Out::default()
                }
            }
            Step::Restore { from, spent } => {
                info!(
                    from = from.label(),
                    spent_secs = spent.as_secs(),
                    "link stayed good: video restored"
                );
                let settings = self.ladder.reapply(self.receiving());
                Out::settings("injected", settings)
                    .and(Out::tallied(vec![Tally::FallbackLeft(from.label(), spent)]))
            }
        })
    }

    /// What moved in the subscriptions-by-layer gauge since it was last brought up to date with
    /// what the ladder holds.
    pub(super) fn count_subscriptions(&mut self) -> Vec<Tally> {
        // Most frames (pings, offers, quality updates) change nothing here.
        let revision = self.ladder.revision();
        if self.counted_at == Some(revision) {
            return Vec::new();
        }
        self.counted_at = Some(revision);
        let now = self.ladder.enforced_layers();
        let mut moved = Vec::new();
        for (sid, height) in &now {
            let before = self.counted.get(sid).copied();
            if before != Some(*height) {
                moved.push(Tally::SubscriptionMoved(before, Some(*height)));
            }
        }
        for (sid, height) in &self.counted {
            if !now.contains_key(sid) {
                moved.push(Tally::SubscriptionMoved(Some(*height), None));
            }
        }
        self.counted = now;
        moved
    }

    /// `out`, with what it moved in the subscriptions-by-layer gauge.
    pub(super) fn counted(&mut self, out: Out) -> Out {
        let moved = self.count_subscriptions();
        out.and(Out::tallied(moved))
    }

    /// The session is over; a fallback in progress ends with it (the attribute stays, for a
    /// resume to carry on from).
    pub(super) fn end(&mut self, now: Instant) -> Vec<Tally> {
        let mut tallies: Vec<Tally> = std::mem::take(&mut self.counted)
            .into_values()
            .map(|height| Tally::SubscriptionMoved(Some(height), None))
            .collect();
        if let Some(spent) = self.fallback.abandon(now) {
            tallies.push(Tally::FallbackLeft("session_end", spent));
        }
        tallies
    }
}
