use std::sync::Mutex;

use livekit_protocol::{
    ConnectionQuality, ConnectionQualityInfo, ConnectionQualityUpdate, JoinResponse,
    ParticipantInfo, ReconnectResponse, TrackInfo, TrackSource, TrackType,
};

use super::*;
use crate::{fallback::FallbackConfig, ladder::LadderConfig};

/// RoomService as a list of participants, recording what it is asked to do.
#[derive(Default)]
struct FakeRoom {
    participants: Vec<ParticipantInfo>,
    calls: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl RoomApi for FakeRoom {
    async fn participants(&self) -> anyhow::Result<Vec<ParticipantInfo>> {
        Ok(self.participants.clone())
    }
    async fn set_attribute(&self, identity: &str, key: &str, value: &str) -> anyhow::Result<()> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("set {identity} {key}={value}"));
        Ok(())
    }
    async fn mute_track(&self, identity: &str, sid: &str, muted: bool) -> anyhow::Result<()> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("mute {identity} {sid} {muted}"));
        Ok(())
    }
}

use crate::test_support::person;

fn policy(config: FallbackConfig) -> Policy {
    Policy {
        counted: HashMap::new(),
        counted_at: None,
        ladder: Ladder::new(LadderConfig::default(), "me".into()),
        fallback: Fallback::new(config, Instant::now()),
    }
}

/// A server frame through the policy as the relay takes it, the listing after a resume
/// answered at once.
async fn serve(policy: &mut Policy, response: &SignalResponse, room: &dyn RoomApi) -> Out {
    serve_at(policy, response, room, Instant::now()).await
}

/// [`serve`] at a given time (the policy never reads the clock).
async fn serve_at(
    policy: &mut Policy,
    response: &SignalResponse,
    room: &dyn RoomApi,
    now: Instant,
) -> Out {
    match policy.on_server(response, now) {
        ServerStep::Out(out) => out,
        ServerStep::ListRoom => policy.on_listing(room.participants().await, response, now),
    }
}

fn response(message: signal_response::Message) -> SignalResponse {
    SignalResponse {
        message: Some(message),
    }
}

fn quality(sid: &str, level: ConnectionQuality) -> SignalResponse {
    response(signal_response::Message::ConnectionQuality(
        ConnectionQualityUpdate {
            updates: vec![ConnectionQualityInfo {
                participant_sid: sid.into(),
                quality: level as i32,
                score: 1.0,
            }],
        },
    ))
}

#[tokio::test]
async fn a_json_client_meets_the_same_policy_as_a_binary_one() {
    let room = FakeRoom::default();
    let join = response(signal_response::Message::Join(JoinResponse {
        participant: Some(person("me", "PA_me", "TR_mine")),
        other_participants: vec![person("a", "PA_a", "TR_a"), person("b", "PA_b", "TR_b")],
        ..Default::default()
    }));
    let asks_for_1080 =
        r#"{"trackSetting":{"trackSids":["TR_a"],"quality":"HIGH","width":1920,"height":1080}}"#;
    let (_, from_json) = decode_client_text(asks_for_1080).unwrap();
    let binary = SignalRequest {
        message: from_json.message.clone(),
    }
    .encode_to_vec();
    let (_, from_binary) = decode_client_frame(&binary).unwrap();
    let mut answers = Vec::new();
    for request in [from_json, from_binary] {
        let mut policy = policy(FallbackConfig::default());
        serve(&mut policy, &join, &room).await;
        let ClientAction::Replace(out) = policy.on_client(&request) else {
            panic!("settings above the cap are never forwarded as they are");
        };
        answers.push(
            out.upstream
                .iter()
                .map(|(source, s)| (*source, s.track_sids.clone(), s.height, s.quality))
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(answers[0], answers[1]);
    // Three people: the cap is 540 (the layer is unknown here, so the cap itself).
    assert!(
        answers[0]
            .iter()
            .all(|(source, _, height, _)| *source == "clamped" && *height <= 540),
        "{answers:?}"
    );
    // And simulate, in JSON, is dropped like in binary.
    let (verdict, _) = decode_client_text(r#"{"simulate":{"serverLeave":true}}"#).unwrap();
    assert_eq!(verdict, ClientVerdict::Drop("simulate"));
}

#[tokio::test]
async fn a_bad_link_of_this_participant_disables_its_video_and_tells_everyone_why() {
    let room = FakeRoom::default();
    // Immediate hysteresis so that the test needs no clock.
    let mut policy = policy(FallbackConfig {
        enter_after_secs: 0,
        uplink_after_secs: 0,
        ..Default::default()
    });
    let join = response(signal_response::Message::Join(JoinResponse {
        participant: Some(person("me", "PA_me", "TR_mine")),
        other_participants: vec![person("a", "PA_a", "TR_a")],
        ..Default::default()
    }));
    assert_eq!(serve(&mut policy, &join, &room).await.upstream.len(), 1);

    // Someone else's bad link is not ours to act on.
    let out = serve(
        &mut policy,
        &quality("PA_a", ConnectionQuality::Lost),
        &room,
    )
    .await;
    assert!(out.upstream.is_empty());

    let out = serve(
        &mut policy,
        &quality("PA_me", ConnectionQuality::Poor),
        &room,
    )
    .await;
    let sent: Vec<_> = out
        .upstream
        .iter()
        .map(|(source, s)| (*source, s.disabled))
        .collect();
    assert_eq!(sent, [("fallback", true)]);
    // The attribute is asked for with the step that pauses the video, and nothing else.
    assert!(matches!(
        &out.admin[..],
        [AdminRequest::Stage(Stage::IncomingPaused)]
    ));

    // Still poor: the camera goes too (its own track, learnt from `join`).
    let mut admin = serve(
        &mut policy,
        &quality("PA_me", ConnectionQuality::Poor),
        &room,
    )
    .await
    .admin;
    admin.extend(policy.on_timer(Instant::now()).admin);
    assert!(matches!(
        &admin[..],
        [AdminRequest::Stage(Stage::CameraPaused), AdminRequest::MuteCamera(sid)] if sid == "TR_mine"
    ));

    // The client turning its camera back on is refused and told so.
    let unmute = SignalRequest {
        message: Some(signal_request::Message::Mute(MuteTrackRequest {
            sid: "TR_mine".into(),
            muted: false,
        })),
    };
    match policy.on_client(&unmute) {
        ClientAction::Replace(out) => {
            assert!(out.upstream.is_empty());
            assert_eq!(out.tallies, vec![Tally::Policed("unmute_refused")]);
            assert!(matches!(
                &out.browser[..],
                [SignalResponse { message: Some(signal_response::Message::Mute(m)) }] if m.muted && m.sid == "TR_mine"
            ));
        }
        ClientAction::Forward(_) => {
            panic!("an unmute during the camera pause must not reach LiveKit")
        }
    }
    // Muting, or another track, passes.
    let mute = SignalRequest {
        message: Some(signal_request::Message::Mute(MuteTrackRequest {
            sid: "TR_mine".into(),
            muted: true,
        })),
    };
    assert!(matches!(policy.on_client(&mute), ClientAction::Forward(_)));
}

/// The subscriptions-by-layer gauge at one height, as Prometheus reads it.
fn subscriptions_at(metrics: &Metrics, height: u32) -> String {
    let text = metrics.render(Default::default());
    let prefix = format!("koinos_gateway_subscriptions{{height=\"{height}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        .unwrap_or_else(|| "absent".into())
}

#[tokio::test]
async fn the_subscriptions_gauge_follows_the_layer_each_camera_is_held_at() {
    let room = FakeRoom::default();
    let mut policy = policy(FallbackConfig {
        enter_after_secs: 0,
        ..Default::default()
    });
    let metrics = Metrics::default();
    let count = |tallies: Vec<Tally>| tallies.iter().for_each(|t| t.record(&metrics));
    let gauge = |height| subscriptions_at(&metrics, height);
    let join = response(signal_response::Message::Join(JoinResponse {
        participant: Some(person("me", "PA_me", "TR_mine")),
        other_participants: vec![person("a", "PA_a", "TR_a"), person("b", "PA_b", "TR_b")],
        ..Default::default()
    }));
    serve(&mut policy, &join, &room).await;
    count(policy.count_subscriptions());
    assert_eq!(gauge(540), "2");
    // Nothing moved since: nothing counted twice.
    assert_eq!(policy.count_subscriptions(), vec![]);

    serve(
        &mut policy,
        &quality("PA_me", ConnectionQuality::Poor),
        &room,
    )
    .await;
    count(policy.count_subscriptions());
    assert_eq!(gauge(540), "0");
    assert_eq!(gauge(0), "2");

    count(policy.end(Instant::now()));
    assert_eq!(gauge(0), "0");
}

#[tokio::test]
async fn a_resumed_session_carries_on_the_fallback_from_the_attribute() {
    let mut me = person("me", "PA_me", "TR_mine");
    me.attributes.insert(
        fallback::ATTRIBUTE.into(),
        Stage::CameraPaused.attribute().into(),
    );
    let room = FakeRoom {
        participants: vec![me, person("a", "PA_a", "TR_a")],
        ..Default::default()
    };
    let mut policy = policy(FallbackConfig::default());
    let resumed = response(signal_response::Message::Reconnect(
        ReconnectResponse::default(),
    ));
    let out = serve(&mut policy, &resumed, &room).await;
    assert_eq!(policy.fallback.stage(), Stage::CameraPaused);
    assert!(!out.upstream.is_empty());
    assert!(
        out.upstream.iter().all(|(_, s)| s.disabled),
        "{:?}",
        out.upstream
    );
}

#[tokio::test]
async fn room_service_requests_are_carried_out_in_order() {
    let room = Arc::new(FakeRoom::default());
    let (admin, requests) = mpsc::unbounded_channel();
    admin
        .send(AdminRequest::Stage(Stage::IncomingPaused))
        .unwrap();
    admin
        .send(AdminRequest::Stage(Stage::CameraPaused))
        .unwrap();
    admin
        .send(AdminRequest::MuteCamera("TR_mine".into()))
        .unwrap();
    admin.send(AdminRequest::Stage(Stage::Normal)).unwrap();
    drop(admin);
    room_admin(room.clone(), "me".into(), requests).await;
    assert_eq!(
        *room.calls.lock().unwrap(),
        [
            "set me org.koinos.rtc.fallback=incoming_video",
            "set me org.koinos.rtc.fallback=camera",
            "mute me TR_mine true",
            "set me org.koinos.rtc.fallback=",
        ]
    );
}

/// A leg that fails every send, as LiveKit's does once it is gone.
fn failing<T>() -> impl futures_util::Sink<T, Error = &'static str> + Unpin {
    Box::pin(futures_util::sink::unfold((), |(), _: T| async {
        Err::<(), _>("connection reset")
    }))
}

/// The pump's sinks with this upstream leg, a browser leg that takes everything, and RoomService
/// and listings going nowhere.
fn sinks<U>(
    upstream: U,
    metrics: &Arc<Metrics>,
) -> Sinks<U, futures_util::sink::Drain<ws::Message>> {
    let (admin, _) = mpsc::unbounded_channel();
    let (listed, _) = mpsc::channel(1);
    Sinks {
        upstream,
        browser: futures_util::sink::drain(),
        admin,
        room: Arc::new(FakeRoom::default()),
        listed,
        metrics: metrics.clone(),
    }
}

/// A session in a three-person call with a and b, its join carried out (two cameras at 540).
async fn in_a_call_of_three(config: FallbackConfig, metrics: &Arc<Metrics>) -> session::Session {
    let mut state = session::Session::new(policy(config));
    let join = response(signal_response::Message::Join(JoinResponse {
        participant: Some(person("me", "PA_me", "TR_mine")),
        other_participants: vec![person("a", "PA_a", "TR_a"), person("b", "PA_b", "TR_b")],
        ..Default::default()
    }));
    let effects = state.server(join, Instant::now());
    let mut working = sinks(futures_util::sink::drain(), metrics);
    working.carry_out(effects, Encoding::Binary).await.unwrap();
    assert_eq!(subscriptions_at(metrics, 540), "2");
    state
}

#[tokio::test]
async fn when_livekits_leg_fails_mid_request_the_session_ends_and_the_gauges_stay_true() {
    let metrics = Arc::new(Metrics::default());
    let gauge = |height| subscriptions_at(&metrics, height);
    let mut state = in_a_call_of_three(FallbackConfig::default(), &metrics).await;

    // The client unsubscribes from a's camera as LiveKit's leg breaks.
    let mut broken = sinks(failing(), &metrics);
    let unsubscribe = SignalRequest {
        message: Some(signal_request::Message::Subscription(
            livekit_protocol::UpdateSubscription {
                track_sids: vec!["TR_a".into()],
                subscribe: false,
                ..Default::default()
            },
        )),
    };
    let frame = tungstenite::Message::Binary(unsubscribe.encode_to_vec().into());
    let effects = state.client(unsubscribe, frame, Instant::now());
    let end = broken.carry_out(effects, Encoding::Binary).await;
    assert!(
        matches!(&end, Err(End::UpstreamError(e)) if e.contains("connection reset")),
        "{end:?}"
    );
    // The policy let go of the subscription before the forward failed: so did the gauge.
    assert_eq!(gauge(540), "1");
    // And the session's end lets go of the rest.
    for tally in state.end(Instant::now()) {
        tally.record(&metrics);
    }
    assert_eq!(gauge(540), "0");
}

/// The sessions-in-fallback gauge, as Prometheus reads it.
fn in_fallback(metrics: &Metrics) -> String {
    metrics
        .render(Default::default())
        .lines()
        .find_map(|l| {
            l.strip_prefix("koinos_gateway_sessions_in_fallback ")
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "absent".into())
}

/// Found by review: everything that waited for a listing is decided at once when it comes, so a
/// send failing early leaves the rest undone while the policy has moved for all of it.
#[tokio::test]
async fn when_livekits_leg_fails_while_what_waited_for_a_listing_goes_out_the_gauges_stay_true() {
    let metrics = Arc::new(Metrics::default());
    let config = FallbackConfig {
        enter_after_secs: 0,
        ..Default::default()
    };
    let mut state = in_a_call_of_three(config, &metrics).await;

    // A resume; while its listing is awaited, the link goes bad and c joins.
    let reconnect = response(signal_response::Message::Reconnect(
        ReconnectResponse::default(),
    ));
    assert!(matches!(
        state.server(reconnect, Instant::now()).as_slice(),
        [Effect::ListRoom]
    ));
    assert!(
        state
            .server(quality("PA_me", ConnectionQuality::Poor), Instant::now())
            .is_empty()
    );
    let update = response(signal_response::Message::Update(
        livekit_protocol::ParticipantUpdate {
            participants: vec![person("c", "PA_c", "TR_c")],
        },
    ));
    assert!(state.server(update, Instant::now()).is_empty());

    // The listing comes as LiveKit's leg breaks.
    let mut broken = sinks(failing(), &metrics);
    let listing = vec![
        person("me", "PA_me", "TR_mine"),
        person("a", "PA_a", "TR_a"),
        person("b", "PA_b", "TR_b"),
    ];
    let effects = state.listed(Ok(listing), Instant::now());
    assert!(broken.carry_out(effects, Encoding::Binary).await.is_err());
    for tally in state.end(Instant::now()) {
        tally.record(&metrics);
    }
    assert_eq!(in_fallback(&metrics), "0");
    assert_eq!(subscriptions_at(&metrics, 540), "0");
    assert_eq!(subscriptions_at(&metrics, 0), "0");
}

mod frame_fuzz;
mod subscriptions;
