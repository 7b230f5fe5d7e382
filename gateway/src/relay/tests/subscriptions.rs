//! Every way a client can (re)subscribe meets the ladder: LiveKit acts on a subscription's
//! track list and its per-participant list alike, and on the subscription a resuming client's
//! `SyncState` carries. A new subscription at LiveKit starts from its default, the top layer,
//! so what matters is that the caps follow every subscribe, whichever way it came.

use livekit_protocol::{ParticipantTracks, SyncState, UpdateSubscription};

use super::*;

/// A session in a five-person call (cap 360), its caps sent.
fn in_a_call_of_five() -> session::Session {
    let mut state = session::Session::new(policy(FallbackConfig::default()));
    let join = response(signal_response::Message::Join(JoinResponse {
        participant: Some(person("me", "PA_me", "TR_mine")),
        other_participants: ["a", "b", "c", "d"]
            .iter()
            .map(|id| person(id, &format!("PA_{id}"), &format!("TR_{id}")))
            .collect(),
        ..Default::default()
    }));
    state.server(join, Instant::now());
    state
}

fn client(state: &mut session::Session, message: signal_request::Message) -> Vec<Effect> {
    let request = SignalRequest {
        message: Some(message),
    };
    let frame = tungstenite::Message::Binary(request.encode_to_vec().into());
    state.client(request, frame, Instant::now())
}

/// A way to (un)subscribe: `true` subscribes.
type Way = fn(bool) -> signal_request::Message;

fn by_track(subscribe: bool) -> signal_request::Message {
    signal_request::Message::Subscription(UpdateSubscription {
        track_sids: vec!["TR_a".into()],
        subscribe,
        ..Default::default()
    })
}

fn by_participant(subscribe: bool) -> signal_request::Message {
    signal_request::Message::Subscription(UpdateSubscription {
        participant_tracks: vec![ParticipantTracks {
            participant_sid: "PA_a".into(),
            track_sids: vec!["TR_a".into()],
        }],
        subscribe,
        ..Default::default()
    })
}

fn synced(subscribe: bool) -> signal_request::Message {
    signal_request::Message::SyncState(SyncState {
        subscription: Some(UpdateSubscription {
            track_sids: vec!["TR_a".into()],
            subscribe,
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The settings the effects send upstream, as `(track, height)`.
fn caps(effects: &[Effect]) -> Vec<(String, u32)> {
    effects
        .iter()
        .flat_map(|e| match e {
            Effect::Send(out) => out
                .upstream
                .iter()
                .map(|(_, s)| (s.track_sids.join(","), s.height))
                .collect(),
            _ => vec![],
        })
        .collect()
}

#[test]
fn whichever_way_a_track_is_unsubscribed_and_subscribed_again_its_cap_follows() {
    let ways: [(&str, Way); 3] = [
        ("by track", by_track),
        ("by participant", by_participant),
        ("in a sync state", synced),
    ];
    for (unsubscribed, unsubscribe) in ways {
        for (subscribed, subscribe) in ways {
            let mut state = in_a_call_of_five();
            let off = client(&mut state, unsubscribe(false));
            assert!(caps(&off).is_empty(), "{unsubscribed}: {off:?}");
            let on = client(&mut state, subscribe(true));
            assert_eq!(
                caps(&on),
                [("TR_a".to_owned(), 360)],
                "unsubscribed {unsubscribed}, subscribed {subscribed}"
            );
        }
    }
}

/// Even an unsubscribe the session never saw (however LiveKit came to drop the subscription)
/// does not leave a new subscription at LiveKit's default.
#[test]
fn an_explicit_subscribe_always_sends_the_cap_again() {
    let mut state = in_a_call_of_five();
    for _ in 0..2 {
        assert_eq!(
            caps(&client(&mut state, by_track(true))),
            [("TR_a".to_owned(), 360)]
        );
    }
}

#[test]
fn a_sync_state_is_held_while_a_listing_is_awaited_and_its_disabled_tracks_are_wishes() {
    let mut state = in_a_call_of_five();
    let reconnect = response(signal_response::Message::Reconnect(
        ReconnectResponse::default(),
    ));
    assert!(matches!(
        state.server(reconnect, Instant::now()).as_slice(),
        [Effect::ListRoom]
    ));
    let sync = signal_request::Message::SyncState(SyncState {
        subscription: Some(UpdateSubscription {
            track_sids: vec!["TR_b".into()],
            subscribe: true,
            ..Default::default()
        }),
        track_sids_disabled: vec!["TR_c".into()],
        ..Default::default()
    });
    assert!(client(&mut state, sync).is_empty(), "held for the listing");
    let room: Vec<_> = ["me", "a", "b", "c", "d"]
        .iter()
        .map(|id| person(id, &format!("PA_{id}"), &format!("TR_{id}")))
        .collect();
    let effects = state.listed(Ok(room), Instant::now());
    let forwarded = effects
        .iter()
        .position(|e| matches!(e, Effect::Forward(..)))
        .expect("the sync state goes on to LiveKit");
    // After it: c kept disabled as the client wished, b's cap sent again.
    let after: Vec<_> = effects[forwarded..]
        .iter()
        .flat_map(|e| match e {
            Effect::Send(out) => out.upstream.iter().map(|(_, s)| s.clone()).collect(),
            _ => vec![],
        })
        .collect();
    assert!(
        after.iter().any(|s| s.track_sids == ["TR_c"] && s.disabled),
        "{after:?}"
    );
    assert!(
        after
            .iter()
            .any(|s| s.track_sids == ["TR_b"] && s.height == 360 && !s.disabled),
        "{after:?}"
    );
}
