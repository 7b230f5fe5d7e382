//! Resumes through the session without I/O: what waits for the listing, and in what order.

use livekit_protocol::{ReconnectResponse, UpdateTrackSettings};

use super::*;
use crate::{fallback::FallbackConfig, ladder::LadderConfig, test_support::person};

fn session() -> Session {
    Session::new(Policy {
        counted: HashMap::new(),
        counted_at: None,
        ladder: Ladder::new(LadderConfig::default(), "me".into()),
        fallback: Fallback::new(FallbackConfig::default(), Instant::now()),
    })
}

fn reconnect() -> SignalResponse {
    SignalResponse {
        message: Some(signal_response::Message::Reconnect(
            ReconnectResponse::default(),
        )),
    }
}

fn request(message: signal_request::Message) -> (SignalRequest, tungstenite::Message) {
    let request = SignalRequest {
        message: Some(message),
    };
    let frame = tungstenite::Message::Binary(request.encode_to_vec().into());
    (request, frame)
}

fn ping(n: i64) -> (SignalRequest, tungstenite::Message) {
    request(signal_request::Message::Ping(n))
}

fn asking_for(height: u32, sid: &str) -> (SignalRequest, tungstenite::Message) {
    request(signal_request::Message::TrackSetting(UpdateTrackSettings {
        track_sids: vec![sid.into()],
        width: height * 16 / 9,
        height,
        ..Default::default()
    }))
}

/// Five people: every camera is capped at 360.
fn room_of_five() -> Vec<livekit_protocol::ParticipantInfo> {
    ["me", "a", "b", "c", "d"]
        .iter()
        .map(|id| person(id, &format!("PA_{id}"), &format!("TR_{id}")))
        .collect()
}

/// What the effects do, in a form a test can compare.
fn summary(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Send(out) => {
                let mut parts: Vec<String> = out
                    .upstream
                    .iter()
                    .map(|(source, s)| format!("{source} {} {}", s.track_sids.join(","), s.height))
                    .collect();
                parts.extend(out.tallies.iter().filter_map(|t| match t {
                    Tally::ResumeListed(ok, _) => Some(format!("listed {ok}")),
                    _ => None,
                }));
                (!parts.is_empty()).then(|| parts.join("; "))
            }
            Effect::Forward(frame, _) => {
                let tungstenite::Message::Binary(bytes) = frame else {
                    unreachable!()
                };
                let request = SignalRequest::decode(bytes.as_ref()).unwrap();
                Some(format!("forward {:?}", request.message.unwrap()))
            }
            Effect::ListRoom => Some("list".into()),
        })
        .collect()
}

#[test]
fn while_the_listing_is_awaited_frames_pass_and_what_the_policy_may_change_waits_in_order() {
    let mut session = session();
    let t0 = Instant::now();
    assert_eq!(summary(&session.server(reconnect(), t0)), ["list"]);

    // A ping goes through at once; a greedy setting waits for the room (so it is clamped to a
    // cap the session does not know yet), and so does a server frame's policy.
    let (greedy, greedy_frame) = asking_for(1080, "TR_a");
    assert!(session.client(greedy, greedy_frame, t0).is_empty());
    let (p, frame) = ping(7);
    assert_eq!(summary(&session.client(p, frame, t0)), ["forward Ping(7)"]);
    let (modest, modest_frame) = asking_for(180, "TR_b");
    assert!(session.client(modest, modest_frame, t0).is_empty());

    // The listing: the caps for the room as LiveKit lists it, then the held requests, in order.
    assert_eq!(
        summary(&session.listed(Ok(room_of_five()), t0)),
        [
            "injected TR_a 360; injected TR_b 360; injected TR_c 360; injected TR_d 360; listed true",
            // 1080 in a five-person call: the 360 already sent stands, nothing more to send.
            // 180 is a lower wish, honoured (these tracks publish no layer information).
            "clamped TR_b 180",
        ]
    );
    // Nothing is held any more: the next setting is decided at once.
    let (greedy, greedy_frame) = asking_for(1080, "TR_c");
    assert_eq!(
        summary(&session.client(greedy, greedy_frame, t0)),
        Vec::<String>::new()
    );
    assert!(!session.resuming());
}

#[test]
fn a_resume_behind_a_resume_waits_for_its_own_listing() {
    let mut session = session();
    let t0 = Instant::now();
    assert_eq!(summary(&session.server(reconnect(), t0)), ["list"]);
    assert!(session.server(reconnect(), t0).is_empty());
    let (greedy, frame) = asking_for(1080, "TR_a");
    assert!(session.client(greedy, frame, t0).is_empty());

    // The first listing (control could not list): caps follow the next updates; then the second
    // resume asks again, and the setting behind it still waits.
    assert_eq!(
        summary(&session.listed(Err(anyhow::anyhow!("control away")), t0)),
        ["listed false", "list"]
    );
    assert!(session.resuming());
    let after = t0 + Duration::from_millis(40);
    let effects = session.listed(Ok(room_of_five()), after);
    assert_eq!(
        summary(&effects),
        ["injected TR_a 360; injected TR_b 360; injected TR_c 360; injected TR_d 360; listed true"]
    );
    // The time the second listing took is from its own asking.
    let took = effects.iter().find_map(|e| match e {
        Effect::Send(out) => out.tallies.iter().find_map(|t| match t {
            Tally::ResumeListed(_, took) => Some(*took),
            _ => None,
        }),
        _ => None,
    });
    assert_eq!(took, Some(Duration::from_millis(40)));
    assert!(!session.resuming());
}

#[test]
fn a_listing_nobody_asked_for_changes_nothing() {
    let mut session = session();
    assert!(
        session
            .listed(Ok(room_of_five()), Instant::now())
            .is_empty()
    );
    assert_eq!(session.policy.ladder.call_size(), 1);
}

#[test]
fn a_forwarded_request_has_its_tallies_recorded_before_the_forward() {
    let mut session = session();
    let t0 = Instant::now();
    session.server(reconnect(), t0);
    session.listed(Ok(room_of_five()), t0);
    let (unsubscribe, frame) = request(signal_request::Message::Subscription(
        livekit_protocol::UpdateSubscription {
            track_sids: vec!["TR_a".into()],
            subscribe: false,
            ..Default::default()
        },
    ));
    let effects = session.client(unsubscribe, frame, t0);
    let forward = effects
        .iter()
        .position(|e| matches!(e, Effect::Forward(..)))
        .expect("forwarded");
    let moved = effects
        .iter()
        .position(|e| matches!(e, Effect::Send(out) if out.tallies.iter().any(|t| matches!(t, Tally::SubscriptionMoved(Some(360), None)))))
        .expect("the gauge lets go of the subscription");
    assert!(moved < forward, "{effects:?}");
}
