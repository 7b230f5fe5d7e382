//! No ghost participants: a call membership whose device has no participant in the call's
//! LiveKit room for `ghost_after` is cleared by control's service account, and so, at once, is
//! the membership of someone who is no longer joined to the case room (removed, banned or gone):
//! their own leave is refused by the homeserver, so nobody else would ever clear it.
//!
//! Clients normally clear their own membership when they leave, and on a homeserver with
//! MSC4140 delayed events (Synapse) the homeserver does it for a client that crashed. Tuwunel
//! has no delayed events, so there a crashed browser or a dropped laptop would otherwise leave a
//! membership that shows a participant who is not there. The reaper runs everywhere: on Synapse
//! the client's delayed leave (a few seconds) normally wins, and clients that do not use
//! delayed events are covered too.
//!
//! Concurrency model: one task owns the bookkeeping (when each membership was first seen
//! without its participant). It wakes on a timer (periodic reconciliation, which also covers
//! missed webhooks and control restarts) and on hints from LiveKit's `participant_left` /
//! `room_finished` webhooks (so the absence clock starts when the participant left, not at the
//! next tick). Reads of memberships come from the synced state; a clear is confirmed with the
//! homeserver first and only removes the exact event that was judged a ghost. When the
//! membership state cannot be read, nothing is cleared (an unknown is never a ghost); when
//! LiveKit cannot be listed, nobody's absence is judged, but the memberships of those no longer
//! in the case room are cleared all the same (that needs only the homeserver, and a LiveKit
//! outage must not keep a removed member listed in the call).

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use matrix_sdk::ruma::{RoomId, UserId};
use tokio::{sync::mpsc, time::Instant};
use tracing::{info, warn};

use crate::{
    livekit::LiveParticipant,
    membership::CallMembership,
    service::{RtcService, livekit_room_name},
};

#[derive(Debug, Clone)]
pub struct ReaperSettings {
    /// How often every case room's call is reconciled against LiveKit.
    pub interval: Duration,
    /// How long a membership may be without a LiveKit participant before it is cleared.
    pub ghost_after: Duration,
    /// Only memberships whose `foci_preferred` names this JWT service are ours to judge: a
    /// member on another SFU is never in our LiveKit.
    pub service_url: String,
}

/// Something happened in LiveKit; reconcile now.
#[derive(Debug, Clone, Copy)]
pub struct Hint;

pub fn hints() -> (mpsc::Sender<Hint>, mpsc::Receiver<Hint>) {
    // A hint only means "look now"; one pending is as good as many.
    mpsc::channel(1)
}

/// The decision, free of I/O: which memberships have been without a participant long enough.
#[derive(Default)]
pub struct GhostTracker {
    absent_since: HashMap<String, Instant>,
}

impl GhostTracker {
    /// Records what one room looks like at `now` and returns its ghosts. `departed` holds the
    /// members known not to be joined to the case room any more: their memberships are ghosts
    /// without a grace (a reconnecting client is still joined; a removed one cannot come back
    /// into the call with this membership). `present` is LiveKit's listing of the call, `None`
    /// when it could not be read: then only the departed are ghosts, and every other
    /// membership's absence clock stays as it was (neither started nor reset by an unknown).
    pub fn observe(
        &mut self,
        memberships: &[CallMembership],
        present: Option<&[LiveParticipant]>,
        departed: &HashSet<&UserId>,
        now: Instant,
        ghost_after: Duration,
    ) -> Vec<CallMembership> {
        let mut ghosts = Vec::new();
        for membership in memberships {
            if departed.contains(membership.user_id.as_ref() as &UserId) {
                self.absent_since.remove(&membership.event_id);
                ghosts.push(membership.clone());
                continue;
            }
            let Some(present) = present else { continue };
            let here = present
                .iter()
                .any(|p| p.is_device(membership.user_id.as_str(), &membership.device_id));
            if here {
                self.absent_since.remove(&membership.event_id);
                continue;
            }
            let since = *self
                .absent_since
                .entry(membership.event_id.clone())
                .or_insert(now);
            if now.duration_since(since) >= ghost_after {
                ghosts.push(membership.clone());
            }
        }
        ghosts
    }

    /// Forgets memberships that no longer exist (left, replaced or cleared).
    pub fn retain(&mut self, live_event_ids: &HashSet<&str>) {
        self.absent_since
            .retain(|event_id, _| live_event_ids.contains(event_id.as_str()));
    }
}

pub async fn run(
    service: Arc<RtcService>,
    mut hints: mpsc::Receiver<Hint>,
    settings: ReaperSettings,
) {
    let mut tracker = GhostTracker::default();
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            hint = hints.recv() => if hint.is_none() { return },
        }
        reconcile(&service, &mut tracker, &settings).await;
    }
}

async fn reconcile(service: &RtcService, tracker: &mut GhostTracker, settings: &ReaperSettings) {
    let live: Vec<CallMembership> = service
        .membership
        .live_call_memberships()
        .await
        .into_iter()
        .filter(|m| m.service_urls.contains(&settings.service_url))
        .collect();
    tracker.retain(&live.iter().map(|m| m.event_id.as_str()).collect());

    let mut by_room: HashMap<&str, Vec<CallMembership>> = HashMap::new();
    for membership in &live {
        by_room
            .entry(membership.room_id.as_str())
            .or_default()
            .push(membership.clone());
    }
    for (room_id, memberships) in by_room {
        let departed = departed_members(service, room_id, &memberships).await;
        let departed: HashSet<&UserId> = departed.iter().map(AsRef::as_ref).collect();
        let now = Instant::now();
        // Departures need only the homeserver: cleared before LiveKit is asked, which may be
        // slow or away.
        let gone = tracker.observe(&memberships, None, &departed, now, settings.ghost_after);
        clear_ghosts(service, room_id, gone).await;
        let staying: Vec<CallMembership> = memberships
            .into_iter()
            .filter(|m| !departed.contains(m.user_id.as_ref() as &UserId))
            .collect();
        if staying.is_empty() {
            continue;
        }
        let Ok(present) = service
            .livekit
            .participants(&livekit_room_name(room_id))
            .await
        else {
            continue;
        };
        let absent = tracker.observe(
            &staying,
            Some(&present),
            &HashSet::new(),
            now,
            settings.ghost_after,
        );
        clear_ghosts(service, room_id, absent).await;
    }
}

async fn clear_ghosts(service: &RtcService, room_id: &str, ghosts: Vec<CallMembership>) {
    for ghost in ghosts {
        match service.membership.clear_call_membership(&ghost).await {
            Ok(true) => {
                service.metrics.ghost_cleared();
                info!(
                    room_id,
                    user_id = %ghost.user_id,
                    device_id = %ghost.device_id,
                    "cleared a call membership with no participant in the call"
                );
            }
            Ok(false) => {}
            Err(e) => warn!(room_id, error = %e, "could not clear a ghost membership"),
        }
    }
}

/// The owners of `memberships` known not to be joined to the case room. An owner whose
/// membership cannot be read is not counted: an unknown is never a ghost.
async fn departed_members(
    service: &RtcService,
    room_id: &str,
    memberships: &[CallMembership],
) -> Vec<matrix_sdk::ruma::OwnedUserId> {
    let Ok(room) = <&RoomId>::try_from(room_id) else {
        return vec![];
    };
    let owners: HashSet<&UserId> = memberships.iter().map(|m| m.user_id.as_ref()).collect();
    let mut departed = Vec::new();
    for owner in owners {
        if matches!(service.membership.is_joined(room, owner).await, Ok(false)) {
            departed.push(owner.to_owned());
        }
    }
    departed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn membership(event_id: &str, user: &str, device: &str) -> CallMembership {
        CallMembership {
            room_id: "!case:localhost".try_into().unwrap(),
            state_key: format!("_{user}_{device}_m.call"),
            event_id: event_id.into(),
            user_id: user.try_into().unwrap(),
            device_id: device.into(),
            service_urls: vec!["http://c/api/rtc".into()],
        }
    }

    fn participant(user: &str, device: &str) -> LiveParticipant {
        LiveParticipant {
            identity: format!("{user}:{device}"),
            matrix_user: Some(user.into()),
            matrix_device: Some(device.into()),
        }
    }

    const GRACE: Duration = Duration::from_secs(30);

    static NOBODY_LEFT: std::sync::LazyLock<HashSet<&'static UserId>> =
        std::sync::LazyLock::new(HashSet::new);

    #[test]
    fn a_membership_is_a_ghost_only_after_the_grace_without_its_participant() {
        let mut tracker = GhostTracker::default();
        let t0 = Instant::now();
        let bob = membership("$bob", "@bob:localhost", "B");
        let carol = membership("$carol", "@carol:localhost", "C");
        let both = [bob.clone(), carol.clone()];
        let only_carol = [participant("@carol:localhost", "C")];

        assert!(
            tracker
                .observe(&both, Some(&only_carol), &NOBODY_LEFT, t0, GRACE)
                .is_empty()
        );
        let almost = t0 + GRACE - Duration::from_millis(1);
        assert!(
            tracker
                .observe(&both, Some(&only_carol), &NOBODY_LEFT, almost, GRACE)
                .is_empty()
        );
        assert_eq!(
            tracker.observe(&both, Some(&only_carol), &NOBODY_LEFT, t0 + GRACE, GRACE),
            vec![bob]
        );
    }

    #[test]
    fn coming_back_resets_the_clock_and_other_devices_do_not_count() {
        let mut tracker = GhostTracker::default();
        let t0 = Instant::now();
        let bob = [membership("$bob", "@bob:localhost", "B")];
        // bob's other device is in the call: this membership's device is still absent.
        let other_device = [participant("@bob:localhost", "PHONE")];
        assert!(
            tracker
                .observe(&bob, Some(&other_device), &NOBODY_LEFT, t0, GRACE)
                .is_empty()
        );
        // A reconnect within the grace: present again, the clock restarts from scratch.
        let back = [participant("@bob:localhost", "B")];
        let t1 = t0 + Duration::from_secs(20);
        assert!(
            tracker
                .observe(&bob, Some(&back), &NOBODY_LEFT, t1, GRACE)
                .is_empty()
        );
        let t2 = t1 + Duration::from_secs(20);
        assert!(
            tracker
                .observe(&bob, Some(&[]), &NOBODY_LEFT, t2, GRACE)
                .is_empty()
        );
        assert_eq!(
            tracker
                .observe(&bob, Some(&[]), &NOBODY_LEFT, t2 + GRACE, GRACE)
                .len(),
            1
        );
    }

    #[test]
    fn a_new_membership_event_gets_a_fresh_clock() {
        let mut tracker = GhostTracker::default();
        let t0 = Instant::now();
        assert!(
            tracker
                .observe(
                    &[membership("$old", "@bob:localhost", "B")],
                    Some(&[]),
                    &NOBODY_LEFT,
                    t0,
                    GRACE
                )
                .is_empty()
        );
        // bob's client rejoined (a new event) just before the old one would have been reaped.
        let renewed = [membership("$new", "@bob:localhost", "B")];
        tracker.retain(&HashSet::from(["$new"]));
        assert!(
            tracker
                .observe(&renewed, Some(&[]), &NOBODY_LEFT, t0 + GRACE, GRACE)
                .is_empty()
        );
    }

    /// bob's and carol's memberships, and bob alone removed from the case.
    fn bob_departed() -> (CallMembership, CallMembership, HashSet<&'static UserId>) {
        let bob_id: &UserId = "@bob:localhost".try_into().unwrap();
        (
            membership("$bob", "@bob:localhost", "B"),
            membership("$carol", "@carol:localhost", "C"),
            HashSet::from([bob_id]),
        )
    }

    #[test]
    fn a_member_who_left_the_case_is_a_ghost_at_once_present_or_not() {
        let mut tracker = GhostTracker::default();
        let t0 = Instant::now();
        let (bob, carol, departed) = bob_departed();
        // bob was removed from the case: his leave would be refused, so his membership goes
        // now, even while LiveKit still lists him (enforcement is removing him there).
        let present = [participant("@bob:localhost", "B")];
        assert_eq!(
            tracker.observe(&[bob, carol.clone()], Some(&present), &departed, t0, GRACE),
            vec![membership("$bob", "@bob:localhost", "B")]
        );
        // carol, still a member, keeps her grace.
        assert!(
            tracker
                .observe(&[carol], Some(&[]), &departed, t0, GRACE)
                .is_empty()
        );
    }

    #[test]
    fn while_livekit_cannot_be_listed_only_the_departed_are_ghosts_and_no_clock_moves() {
        let mut tracker = GhostTracker::default();
        let t0 = Instant::now();
        let (bob, carol, departed) = bob_departed();
        // carol is absent from LiveKit: her clock starts.
        assert!(
            tracker
                .observe(
                    std::slice::from_ref(&carol),
                    Some(&[]),
                    &NOBODY_LEFT,
                    t0,
                    GRACE
                )
                .is_empty()
        );
        // LiveKit is away: bob, removed from the case meanwhile, is cleared all the same; carol
        // is not judged on an unknown, even past her grace.
        assert_eq!(
            tracker.observe(&[bob, carol.clone()], None, &departed, t0 + GRACE, GRACE),
            vec![membership("$bob", "@bob:localhost", "B")]
        );
        // Her clock was not reset by the outage either: once LiveKit answers without her, she
        // is a ghost at once.
        assert_eq!(
            tracker.observe(
                std::slice::from_ref(&carol),
                Some(&[]),
                &NOBODY_LEFT,
                t0 + GRACE,
                GRACE
            ),
            vec![carol]
        );
    }
}
