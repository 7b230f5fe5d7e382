//! The session without I/O: what arrives on the two legs, the fallback's timer and the answer
//! to a listing go in; what to do comes out, in order ([`Effect`]). The pump (`mod.rs`) only
//! reads the sockets and carries the effects out, so the whole session — resumes included — can
//! be driven by a test, deterministically, with no socket and no clock.
//!
//! A resume needs LiveKit's listing of the room before the policy may decide on anything that
//! follows it. The listing is asked beside the relay ([`Effect::ListRoom`]); until it is in,
//! frames still pass both ways, while the policy's view of them — and the client requests it
//! may change, which are held, not forwarded — waits here in arrival order. A resume has one
//! path, whether it comes straight off LiveKit's leg or out of the queue behind an earlier one.

use std::collections::VecDeque;

use super::*;

/// LiveKit's listing of the room, or why there is none.
pub(super) type Listing = anyhow::Result<Vec<livekit_protocol::ParticipantInfo>>;

/// One thing for the pump to do. Effects are carried out in order; a failure ends the session.
#[derive(Debug)]
pub(super) enum Effect {
    /// What the policy wants sent: settings, frames for the browser, RoomService requests, and
    /// what the metrics count (recorded first, so a send that fails loses no tally).
    Send(Out),
    /// The client's own frame, passed on to LiveKit; it arrived at the given time.
    Forward(tungstenite::Message, Instant),
    /// Ask for LiveKit's listing of the room beside the relay, and hand the answer to
    /// [`Session::listed`].
    ListRoom,
}

/// What the policy has yet to see while the listing after a resume is awaited.
enum Deferred {
    /// A server frame, already relayed to the browser.
    Server(Box<SignalResponse>),
    /// A client request the policy may change ([`Policy::watches`]): held, not yet forwarded.
    Client(Box<SignalRequest>, tungstenite::Message, Instant),
}

/// A resume whose listing is awaited: its `reconnect` answer and what waits behind it.
struct Resuming {
    reconnect: SignalResponse,
    deferred: VecDeque<Deferred>,
    since: Instant,
}

pub(super) struct Session {
    pub(super) policy: Policy,
    resuming: Option<Resuming>,
}

impl Session {
    pub(super) fn new(policy: Policy) -> Self {
        Self {
            policy,
            resuming: None,
        }
    }

    /// When [`Session::timer`] is next due, if ever.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.policy.fallback.deadline()
    }

    /// Whether a listing is awaited.
    #[cfg(test)]
    pub(super) fn resuming(&self) -> bool {
        self.resuming.is_some()
    }

    /// A frame from LiveKit, once relayed to the browser.
    pub(super) fn server(&mut self, response: SignalResponse, now: Instant) -> Vec<Effect> {
        if let Some(resuming) = &mut self.resuming {
            resuming
                .deferred
                .push_back(Deferred::Server(Box::new(response)));
            return Vec::new();
        }
        match self.policy.on_server(&response, now) {
            ServerStep::ListRoom => {
                self.resuming = Some(Resuming {
                    reconnect: response,
                    deferred: VecDeque::new(),
                    since: now,
                });
                vec![Effect::ListRoom]
            }
            ServerStep::Out(out) => vec![Effect::Send(self.policy.counted(out))],
        }
    }

    /// A request from the browser, decoded; `forward` is the frame LiveKit gets for it.
    pub(super) fn client(
        &mut self,
        request: SignalRequest,
        forward: tungstenite::Message,
        arrived: Instant,
    ) -> Vec<Effect> {
        if let Some(resuming) = &mut self.resuming
            && Policy::watches(&request)
        {
            resuming
                .deferred
                .push_back(Deferred::Client(Box::new(request), forward, arrived));
            return Vec::new();
        }
        match self.policy.on_client(&request) {
            ClientAction::Replace(instead) => vec![Effect::Send(self.policy.counted(instead))],
            ClientAction::Forward(then) => {
                let mut then = self.policy.counted(then);
                // The policy's bookkeeping has moved: its tallies go before the forward, which
                // may fail (LiveKit gone), or the gauges would be skewed for good.
                let tallies = std::mem::take(&mut then.tallies);
                vec![
                    Effect::Send(Out::tallied(tallies)),
                    Effect::Forward(forward, arrived),
                    Effect::Send(then),
                ]
            }
        }
    }

    /// The answer to [`Effect::ListRoom`]: the policy decides on the resume, then on what
    /// waited for it, in order (up to another resume, which waits for its own listing).
    pub(super) fn listed(&mut self, listing: Listing, now: Instant) -> Vec<Effect> {
        let Some(Resuming {
            reconnect,
            deferred,
            since,
        }) = self.resuming.take()
        else {
            return Vec::new(); // nothing asked: not ours to act on
        };
        let listed = Tally::ResumeListed(listing.is_ok(), now.saturating_duration_since(since));
        let out = self.policy.on_listing(listing, &reconnect, now);
        let mut effects = vec![Effect::Send(
            Out::tallied(vec![listed]).and(self.policy.counted(out)),
        )];
        for event in deferred {
            effects.extend(match event {
                Deferred::Server(response) => self.server(*response, now),
                Deferred::Client(request, forward, arrived) => {
                    self.client(*request, forward, arrived)
                }
            });
        }
        effects
    }

    /// The fallback's deadline has come.
    pub(super) fn timer(&mut self, now: Instant) -> Vec<Effect> {
        let out = self.policy.on_timer(now);
        vec![Effect::Send(self.policy.counted(out))]
    }

    /// The session is over: what the metrics must let go of.
    pub(super) fn end(&mut self, now: Instant) -> Vec<Tally> {
        self.policy.end(now)
    }
}

#[cfg(test)]
mod tests;
