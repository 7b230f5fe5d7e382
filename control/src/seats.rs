//! Who holds a seat in a call: the rule that keeps one member from taking every place.
//!
//! A seat belongs to a device that is in the call: a participant LiveKit lists, or one the
//! gateway is connecting right now (admitted by control a moment ago and not listed yet). A token
//! request takes no seat, so asking for tokens with made-up device ids holds nothing; each of
//! them would have to connect, and then:
//! - a call has at most `max_participants` devices (LiveKit's room limit is the same number, as
//!   a backstop);
//! - one Matrix user has at most `max_devices_per_user` of them (a laptop and a phone);
//! - a device already in the call (a resume, a reload) keeps its seat.
//!
//! Pure: the caller lists LiveKit's participants and passes the time; [`Seats`] remembers only
//! the admissions not yet listed, for `hold` at most.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use crate::{error::ApiError, livekit::LiveParticipant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeatRules {
    pub max_participants: u32,
    pub max_devices_per_user: u32,
    /// How long an admitted connection keeps its seat before LiveKit lists it.
    pub hold: Duration,
}

#[derive(Debug, Clone)]
struct Admitted {
    identity: String,
    user: String,
    at: Instant,
}

/// Admissions not yet seen in LiveKit's listing, per LiveKit room.
#[derive(Debug, Default)]
pub struct Seats {
    admitted: HashMap<String, Vec<Admitted>>,
}

/// Whether `identity` of `user` may have a seat given who holds one now.
fn decide<'a>(
    holders: impl Iterator<Item = (&'a str, Option<&'a str>)> + Clone,
    identity: &str,
    user: &str,
    rules: &SeatRules,
) -> Result<(), ApiError> {
    if holders.clone().any(|(held, _)| held == identity) {
        return Ok(());
    }
    if holders.clone().count() >= rules.max_participants as usize {
        return Err(ApiError::CallFull {
            max: rules.max_participants,
        });
    }
    if holders.filter(|(_, owner)| *owner == Some(user)).count()
        >= rules.max_devices_per_user as usize
    {
        return Err(ApiError::TooManyDevices {
            max: rules.max_devices_per_user,
        });
    }
    Ok(())
}

impl Seats {
    /// Gives `identity` (a device of `user`) a seat in `room`, or says why not. `present` is
    /// LiveKit's listing of the room, taken just now.
    pub fn take(
        &mut self,
        room: &str,
        present: &[LiveParticipant],
        identity: &str,
        user: &str,
        now: Instant,
        rules: &SeatRules,
    ) -> Result<(), ApiError> {
        let admitted = self.admitted.entry(room.to_owned()).or_default();
        admitted.retain(|a| {
            now.saturating_duration_since(a.at) < rules.hold
                && !present.iter().any(|p| p.identity == a.identity)
        });
        let holders = present
            .iter()
            .map(|p| (p.identity.as_str(), p.matrix_user.as_deref()))
            .chain(
                admitted
                    .iter()
                    .map(|a| (a.identity.as_str(), Some(a.user.as_str()))),
            );
        decide(holders, identity, user, rules)?;
        if !present.iter().any(|p| p.identity == identity) {
            // A connection opened again before LiveKit listed it holds its seat from now.
            match admitted.iter_mut().find(|a| a.identity == identity) {
                Some(again) => again.at = now,
                None => admitted.push(Admitted {
                    identity: identity.to_owned(),
                    user: user.to_owned(),
                    at: now,
                }),
            }
        }
        if self.admitted.len() > 1024 {
            self.admitted.retain(|_, a| !a.is_empty());
        }
        Ok(())
    }

    /// LiveKit reported `identity` in `room` (its `participant_joined`, `participant_left` or
    /// `participant_connection_aborted` webhook), or listed it: from now on LiveKit's listing
    /// speaks for its seat, and once it has left the seat is free at once.
    pub fn settled(&mut self, room: &str, identity: &str) {
        if let Some(admitted) = self.admitted.get_mut(room) {
            admitted.retain(|a| a.identity != identity);
        }
    }

    /// The call's room is gone (ended, deleted): nobody holds a seat in it any more.
    pub fn forget_room(&mut self, room: &str) {
        self.admitted.remove(room);
    }

    /// Whether `identity` would get a seat, without taking one (a token request's early answer).
    pub fn check(
        &self,
        room: &str,
        present: &[LiveParticipant],
        identity: &str,
        user: &str,
        now: Instant,
        rules: &SeatRules,
    ) -> Result<(), ApiError> {
        let admitted = self
            .admitted
            .get(room)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let pending = admitted.iter().filter(|a| {
            now.saturating_duration_since(a.at) < rules.hold
                && !present.iter().any(|p| p.identity == a.identity)
        });
        let holders = present
            .iter()
            .map(|p| (p.identity.as_str(), p.matrix_user.as_deref()))
            .chain(pending.map(|a| (a.identity.as_str(), Some(a.user.as_str()))));
        decide(holders, identity, user, rules)
    }
}

/// The seat book of every call, and one lock per call so that two admissions to the same call
/// are decided one after the other (LiveKit's listing and the book must not change between the
/// check and the booking), while different calls never wait for each other.
#[derive(Debug, Default)]
pub struct SeatKeeper {
    seats: std::sync::Mutex<Seats>,
    locks: std::sync::Mutex<HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
}

impl SeatKeeper {
    /// The lock of `room`'s call; hold it from listing LiveKit to booking.
    pub fn lock_of(&self, room: &str) -> std::sync::Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().expect("seat locks");
        if locks.len() > 1024 {
            locks.retain(|_, lock| std::sync::Arc::strong_count(lock) > 1);
        }
        locks.entry(room.to_owned()).or_default().clone()
    }

    /// See [`Seats::take`]; call with `room`'s lock held.
    pub fn take(
        &self,
        room: &str,
        present: &[LiveParticipant],
        identity: &str,
        user: &str,
        rules: &SeatRules,
    ) -> Result<(), ApiError> {
        self.seats
            .lock()
            .expect("seats")
            .take(room, present, identity, user, Instant::now(), rules)
    }

    /// See [`Seats::settled`].
    pub fn settled(&self, room: &str, identity: &str) {
        self.seats.lock().expect("seats").settled(room, identity);
    }

    /// See [`Seats::forget_room`].
    pub fn forget_room(&self, room: &str) {
        self.seats.lock().expect("seats").forget_room(room);
    }

    /// LiveKit lists `present` in `room` now (enforcement's periodic listing).
    pub fn observed(&self, room: &str, present: &[LiveParticipant]) {
        let mut seats = self.seats.lock().expect("seats");
        for participant in present {
            seats.settled(room, &participant.identity);
        }
    }

    /// See [`Seats::check`].
    pub fn check(
        &self,
        room: &str,
        present: &[LiveParticipant],
        identity: &str,
        user: &str,
        rules: &SeatRules,
    ) -> Result<(), ApiError> {
        self.seats.lock().expect("seats").check(
            room,
            present,
            identity,
            user,
            Instant::now(),
            rules,
        )
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const RULES: SeatRules = SeatRules {
        max_participants: 6,
        max_devices_per_user: 2,
        hold: Duration::from_secs(10),
    };

    fn participant(user: &str, device: &str) -> LiveParticipant {
        LiveParticipant {
            identity: format!("{user}:{device}"),
            matrix_user: Some(user.into()),
            matrix_device: Some(device.into()),
        }
    }

    #[test]
    fn one_member_cannot_take_every_seat() {
        let mut seats = Seats::default();
        let now = Instant::now();
        seats
            .take("R", &[], "@bob:l:A", "@bob:l", now, &RULES)
            .unwrap();
        seats
            .take("R", &[], "@bob:l:B", "@bob:l", now, &RULES)
            .unwrap();
        assert_eq!(
            seats.take("R", &[], "@bob:l:C", "@bob:l", now, &RULES),
            Err(ApiError::TooManyDevices { max: 2 })
        );
        // A resume of a device he already has is fine; colleagues still have four seats.
        seats
            .take("R", &[], "@bob:l:A", "@bob:l", now, &RULES)
            .unwrap();
        for user in ["@a:l", "@c:l", "@d:l", "@e:l"] {
            seats
                .take("R", &[], &format!("{user}:X"), user, now, &RULES)
                .unwrap();
        }
        assert_eq!(
            seats.take("R", &[], "@f:l:X", "@f:l", now, &RULES),
            Err(ApiError::CallFull { max: 6 })
        );
    }

    #[test]
    fn an_admission_holds_its_seat_until_listed_or_for_the_hold_only() {
        let mut seats = Seats::default();
        let t0 = Instant::now();
        seats
            .take("R", &[], "@bob:l:A", "@bob:l", t0, &RULES)
            .unwrap();
        seats
            .take("R", &[], "@bob:l:B", "@bob:l", t0, &RULES)
            .unwrap();
        // Never connected: after the hold the seats are free again.
        let later = t0 + RULES.hold;
        seats
            .take("R", &[], "@bob:l:C", "@bob:l", later, &RULES)
            .unwrap();
        // Listed by LiveKit: the listing counts, not the admission twice.
        let present = [participant("@bob:l", "C")];
        seats
            .take("R", &present, "@bob:l:D", "@bob:l", later, &RULES)
            .unwrap();
        assert!(
            seats
                .check("R", &present, "@bob:l:E", "@bob:l", later, &RULES)
                .is_err()
        );
        // Rooms are separate.
        seats
            .take("S", &[], "@bob:l:E", "@bob:l", later, &RULES)
            .unwrap();
    }

    #[test]
    fn a_participant_that_came_and_went_holds_no_seat() {
        let mut seats = Seats::default();
        let t0 = Instant::now();
        seats
            .take("R", &[], "@bob:l:A", "@bob:l", t0, &RULES)
            .unwrap();
        seats
            .take("R", &[], "@bob:l:B", "@bob:l", t0, &RULES)
            .unwrap();
        // LiveKit reports A joined; A leaves again before anyone looks at the listing.
        seats.settled("R", "@bob:l:A");
        seats
            .take("R", &[], "@bob:l:C", "@bob:l", t0, &RULES)
            .unwrap();
    }

    #[test]
    fn a_participant_without_a_matrix_user_still_takes_a_seat() {
        let seats = Seats::default();
        let present: Vec<LiveParticipant> = (0..6)
            .map(|n| LiveParticipant {
                identity: format!("stranger-{n}"),
                ..Default::default()
            })
            .collect();
        assert_eq!(
            seats.check("R", &present, "@a:l:X", "@a:l", Instant::now(), &RULES),
            Err(ApiError::CallFull { max: 6 })
        );
    }

    proptest! {
        /// Whatever order admissions arrive in, nobody is ever given a seat that would make the
        /// call larger than allowed or give a user more devices than allowed.
        #[test]
        fn seats_never_exceed_the_rules(
            requests in prop::collection::vec((0u8..5, 0u8..4, 0u64..30), 1..60),
            listed in prop::collection::vec((0u8..5, 0u8..4), 0..4),
        ) {
            let t0 = Instant::now();
            let present: Vec<LiveParticipant> = listed
                .iter()
                .map(|(u, d)| {
                    let p = participant(&format!("@u{u}:l"), &format!("D{d}"));
                    (p.identity.clone(), p)
                })
                .collect::<std::collections::BTreeMap<_, _>>()
                .into_values()
                .take(RULES.max_participants as usize)
                .collect();
            let mut seats = Seats::default();
            let mut granted: Vec<(String, String, Instant)> = Vec::new();
            let mut at = t0;
            for (u, d, step) in requests {
                at += Duration::from_millis(step * 100);
                let user = format!("@u{u}:l");
                let identity = format!("{user}:D{d}");
                if seats.take("R", &present, &identity, &user, at, &RULES).is_ok() {
                    granted.push((identity, user, at));
                }
                // Who holds a seat now: the listing plus admissions within the hold.
                let mut holders: Vec<(String, String)> = present
                    .iter()
                    .map(|p| (p.identity.clone(), p.matrix_user.clone().unwrap()))
                    .collect();
                for (identity, user, when) in &granted {
                    if at.duration_since(*when) < RULES.hold && !holders.iter().any(|h| &h.0 == identity) {
                        holders.push((identity.clone(), user.clone()));
                    }
                }
                prop_assert!(holders.len() <= RULES.max_participants as usize);
                for (_, user) in &holders {
                    let devices = holders.iter().filter(|h| &h.1 == user).count();
                    // The listing may already exceed the device rule (it is LiveKit's); admissions never add to it.
                    let listed_devices = present.iter().filter(|p| p.matrix_user.as_deref() == Some(user)).count();
                    prop_assert!(devices <= (RULES.max_devices_per_user as usize).max(listed_devices));
                }
            }
        }
    }
}
