//! The frames the gateway writes itself, and what the policy wants written.

use super::*;

/// What livekit-client is told when its user is removed: a leave it must not reconnect from.
pub(super) fn removed() -> SignalResponse {
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
pub(super) enum Encoding {
    Binary,
    Json,
}

impl Encoding {
    /// The message in this encoding. A message with a value LiveKit's JSON cannot name (an enum
    /// value newer than our protocol crate) cannot be given to a JSON client: that ends its
    /// session, with the reason logged, rather than pass it on unread.
    pub(super) fn frame(self, response: &SignalResponse) -> Result<ws::Message, End> {
        match self {
            Encoding::Binary => Ok(ws::Message::Binary(response.encode_to_vec().into())),
            Encoding::Json => encode_server_text(response)
                .map(|text| ws::Message::Text(text.into()))
                .map_err(|e| End::BadFrame(format!("cannot translate to JSON: {e}"))),
        }
    }
}

pub(super) fn settings_frame(settings: UpdateTrackSettings) -> tungstenite::Message {
    let request = SignalRequest {
        message: Some(signal_request::Message::TrackSetting(settings)),
    };
    tungstenite::Message::Binary(request.encode_to_vec().into())
}

/// What the policy wants sent besides (or instead of) the frame that prompted it.
#[derive(Debug, Default)]
pub(super) struct Out {
    /// Settings for LiveKit, with the metrics label of why (`injected`, `clamped`, `fallback`).
    pub(super) upstream: Vec<(&'static str, UpdateTrackSettings)>,
    /// Frames for the browser.
    pub(super) browser: Vec<SignalResponse>,
    /// RoomService requests (through control), carried out in order beside the loop, before
    /// any of the frames above are sent.
    pub(super) admin: Vec<AdminRequest>,
    /// What happened that the metrics count.
    pub(super) tallies: Vec<Tally>,
}

/// Something the policy decided that the gateway's metrics count; the pump records it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tally {
    /// A client request refused or rewritten, by reason.
    Policed(&'static str),
    /// The fallback reached a stage (its label).
    FallbackEntered(&'static str),
    /// The fallback ended, from a stage (or `session_end`), after so long in it.
    FallbackLeft(&'static str, Duration),
    /// A resumed session carried on the fallback from the participant's attribute.
    FallbackResumed,
    /// A camera subscription moved between layers (`None`: not counted at all).
    SubscriptionMoved(Option<u32>, Option<u32>),
    /// LiveKit's listing after a resume came in (or failed), so long after it was asked.
    ResumeListed(bool, Duration),
}

impl Tally {
    pub(super) fn record(&self, metrics: &Metrics) {
        match *self {
            Self::Policed(reason) => metrics.policed(reason),
            Self::FallbackEntered(stage) => metrics.fallback_entered(stage),
            Self::FallbackLeft(from, spent) => metrics.fallback_left(from, spent),
            Self::FallbackResumed => metrics.fallback_resumed(),
            Self::SubscriptionMoved(from, to) => metrics.subscription_moved(from, to),
            Self::ResumeListed(listed, took) => metrics.resume_listed(listed, took),
        }
    }
}

impl Out {
    pub(super) fn settings(source: &'static str, settings: Vec<UpdateTrackSettings>) -> Self {
        Self {
            upstream: settings.into_iter().map(|s| (source, s)).collect(),
            ..Self::default()
        }
    }

    pub(super) fn and(mut self, other: Out) -> Self {
        self.upstream.extend(other.upstream);
        self.browser.extend(other.browser);
        self.admin.extend(other.admin);
        self.tallies.extend(other.tallies);
        self
    }

    pub(super) fn tallied(tallies: Vec<Tally>) -> Self {
        Self {
            tallies,
            ..Self::default()
        }
    }
}
