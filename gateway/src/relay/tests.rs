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

#[tokio::test]
async fn the_subscriptions_gauge_follows_the_layer_each_camera_is_held_at() {
    let room = FakeRoom::default();
    let mut policy = policy(FallbackConfig {
        enter_after_secs: 0,
        ..Default::default()
    });
    let metrics = Metrics::default();
    let count = |tallies: Vec<Tally>| tallies.iter().for_each(|t| t.record(&metrics));
    let gauge = |height: u32| -> String {
        let text = metrics.render(Default::default());
        let prefix = format!("koinos_gateway_subscriptions{{height=\"{height}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
            .unwrap_or_else(|| "absent".into())
    };
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

/// Fuzzing the frame path the relay runs: frames from either side, well-formed LiveKit
/// messages over a small vocabulary of identities and tracks (so that they interact) or
/// those with bytes flipped, cut short or replaced by garbage, are decoded and fed to the
/// session's policy exactly as `relay` does, with fallback timers firing in between. Nothing
/// may panic; what does not decode is an error (which ends that session only); only
/// `simulate` is dropped; and what the policy writes is well-formed. (That the settings
/// keep to the cap is the ladder's own property test.)
mod frame_fuzz {
    use livekit_protocol::{
        ParticipantUpdate, SimulateScenario, StreamStateInfo, StreamStateUpdate,
        TrackPublishedResponse, UpdateSubscription, UpdateTrackSettings, VideoLayer,
        simulate_scenario,
    };
    use proptest::prelude::*;

    use super::*;

    const IDENTITIES: [&str; 4] = ["me", "a", "b", "c"];

    fn sid() -> impl Strategy<Value = String> {
        (0u8..4).prop_map(|n| format!("TR_{n}"))
    }

    fn track() -> impl Strategy<Value = TrackInfo> {
        (
            sid(),
            prop::bool::weighted(0.8),
            prop::bool::weighted(0.8),
            prop::collection::vec(
                prop_oneof![Just(180u32), Just(360), Just(540), Just(720), any::<u32>()],
                0..4,
            ),
        )
            .prop_map(|(sid, video, camera, heights)| {
                #[allow(deprecated)]
                TrackInfo {
                    sid,
                    r#type: if video {
                        TrackType::Video
                    } else {
                        TrackType::Audio
                    } as i32,
                    source: if camera {
                        TrackSource::Camera
                    } else {
                        TrackSource::ScreenShare
                    } as i32,
                    layers: heights
                        .into_iter()
                        .enumerate()
                        .map(|(q, height)| VideoLayer {
                            quality: q as i32,
                            width: height.saturating_mul(16) / 9,
                            height,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }
            })
    }

    fn participant() -> impl Strategy<Value = ParticipantInfo> {
        (
            prop::sample::select(&IDENTITIES[..]),
            0i32..5,
            prop::collection::vec(track(), 0..3),
        )
            .prop_map(|(identity, state, tracks)| ParticipantInfo {
                identity: identity.into(),
                sid: format!("PA_{identity}"),
                state,
                tracks,
                ..Default::default()
            })
    }

    fn server_message() -> impl Strategy<Value = signal_response::Message> {
        use signal_response::Message as M;
        prop_oneof![
            (participant(), prop::collection::vec(participant(), 0..6)).prop_map(
                |(participant, others)| M::Join(JoinResponse {
                    participant: Some(participant),
                    other_participants: others,
                    ..Default::default()
                })
            ),
            prop::collection::vec(participant(), 0..6)
                .prop_map(|participants| M::Update(ParticipantUpdate { participants })),
            Just(M::Reconnect(ReconnectResponse::default())),
            (
                prop::sample::select(&IDENTITIES[..]),
                prop_oneof![4 => 0i32..4, 1 => any::<i32>()],
                any::<f32>()
            )
                .prop_map(|(who, quality, score)| M::ConnectionQuality(
                    ConnectionQualityUpdate {
                        updates: vec![ConnectionQualityInfo {
                            participant_sid: format!("PA_{who}"),
                            quality,
                            score,
                        }],
                    }
                )),
            (sid(), prop_oneof![4 => 0i32..2, 1 => any::<i32>()]).prop_map(|(track_sid, state)| {
                M::StreamStateUpdate(StreamStateUpdate {
                    stream_states: vec![StreamStateInfo {
                        track_sid,
                        state,
                        ..Default::default()
                    }],
                })
            }),
            track().prop_map(|track| M::TrackPublished(TrackPublishedResponse {
                track: Some(track),
                ..Default::default()
            })),
        ]
    }

    fn client_message() -> impl Strategy<Value = signal_request::Message> {
        use signal_request::Message as M;
        prop_oneof![
            (
                prop::collection::vec(sid(), 0..4),
                any::<bool>(),
                any::<i32>(),
                any::<u32>(),
                prop_oneof![Just(180u32), Just(1080), any::<u32>()],
                any::<u32>(),
            )
                .prop_map(|(track_sids, disabled, quality, width, height, fps)| {
                    M::TrackSetting(UpdateTrackSettings {
                        track_sids,
                        disabled,
                        quality,
                        width,
                        height,
                        fps,
                        priority: 0,
                    })
                }),
            (prop::collection::vec(sid(), 0..4), any::<bool>()).prop_map(
                |(track_sids, subscribe)| M::Subscription(UpdateSubscription {
                    track_sids,
                    subscribe,
                    ..Default::default()
                })
            ),
            (sid(), any::<bool>())
                .prop_map(|(sid, muted)| M::Mute(MuteTrackRequest { sid, muted })),
            Just(M::Simulate(SimulateScenario {
                scenario: Some(simulate_scenario::Scenario::SubscriberBandwidth(1)),
            })),
        ]
    }

    /// A frame's bytes: as encoded, or damaged.
    fn damaged(bytes: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
        let len = bytes.len();
        prop_oneof![
            6 => Just(bytes.clone()),
            1 => (any::<prop::sample::Index>(), any::<u8>()).prop_map({
                let bytes = bytes.clone();
                move |(at, value)| {
                    let mut bytes = bytes.clone();
                    if !bytes.is_empty() {
                        let at = at.index(bytes.len());
                        bytes[at] ^= value;
                    }
                    bytes
                }
            }),
            1 => (0..=len).prop_map(move |cut| bytes[..cut].to_vec()),
            1 => prop::collection::vec(any::<u8>(), 0..512),
        ]
    }

    #[derive(Debug, Clone)]
    enum Event {
        FromServer(Vec<u8>),
        FromClient(Vec<u8>),
        /// LiveKit's JSON encoding: every message must meet the same policy.
        FromClientText(String),
        /// The fallback's timer, this many seconds after the previous event.
        Timer(u64),
    }

    /// A request as JSON text, or damaged text.
    fn damaged_text(text: String) -> impl Strategy<Value = String> {
        let len = text.chars().count();
        prop_oneof![
            6 => Just(text.clone()),
            1 => (0..=len).prop_map(move |cut| text.chars().take(cut).collect()),
            1 => ".{0,200}",
        ]
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            5 => server_message()
                .prop_map(|m| response(m).encode_to_vec())
                .prop_flat_map(damaged)
                .prop_map(Event::FromServer),
            4 => client_message()
                .prop_map(|m| SignalRequest { message: Some(m) }.encode_to_vec())
                .prop_flat_map(damaged)
                .prop_map(Event::FromClient),
            2 => client_message()
                // Enum values outside the protocol have no JSON name: not sendable as JSON.
                .prop_filter_map("JSON-encodable", |m| serde_json::to_string(&SignalRequest { message: Some(m) }).ok())
                .prop_flat_map(damaged_text)
                .prop_map(Event::FromClientText),
            1 => (0u64..20).prop_map(Event::Timer),
        ]
    }

    /// What the policy sends is what LiveKit and the browser will decode: every settings
    /// frame the relay would write decodes as a settings request for at least one track,
    /// and every frame for the browser decodes as a server frame.
    fn assert_well_formed(out: &Out) {
        for (_, settings) in &out.upstream {
            assert!(!settings.track_sids.is_empty(), "{settings:?}");
            let tungstenite::Message::Binary(frame) = settings_frame(settings.clone()) else {
                unreachable!("settings are binary frames")
            };
            let (verdict, _) = decode_client_frame(&frame).expect("our own settings decode");
            assert_eq!(verdict, ClientVerdict::Forward("track_setting"));
        }
        for response in &out.browser {
            decode_server_frame(&response.encode_to_vec()).expect("our own responses decode");
        }
        // A camera is muted only in the step that tells everyone why, after the telling.
        if out
            .admin
            .iter()
            .any(|r| matches!(r, AdminRequest::MuteCamera(_)))
        {
            assert!(
                matches!(
                    out.admin.first(),
                    Some(AdminRequest::Stage(Stage::CameraPaused))
                ),
                "{:?}",
                out.admin
            );
        }
    }

    /// Audio-only (the fallback past its first stage), every camera subscription is held
    /// disabled, whatever came in.
    fn assert_audio_only_holds(policy: &Policy) {
        if policy.receiving() == Receiving::AudioOnly {
            let layers = policy.ladder.enforced_layers();
            assert!(
                layers.values().all(|height| *height == 0),
                "video let through in {:?}: {layers:?}",
                policy.fallback.stage()
            );
        }
    }

    /// Camera subscriptions held per layer, as the gauge counts them from the tallies.
    #[derive(Default)]
    struct Held(HashMap<u32, i64>);

    impl Held {
        fn add(&mut self, tallies: &[Tally]) {
            for tally in tallies {
                if let Tally::SubscriptionMoved(from, to) = *tally {
                    assert_ne!(from, to, "a move that moves nothing");
                    from.into_iter()
                        .for_each(|h| *self.0.entry(h).or_default() -= 1);
                    to.into_iter()
                        .for_each(|h| *self.0.entry(h).or_default() += 1);
                }
            }
            assert!(
                self.0.values().all(|n| *n >= 0),
                "gauge below zero: {:?}",
                self.0
            );
        }
    }

    /// A decoded client frame through the policy, as `relay` does whatever its encoding.
    fn client(
        policy: &mut Policy,
        held: &mut Held,
        decoded: Result<(ClientVerdict, SignalRequest), crate::signal::FrameError>,
    ) {
        match decoded {
            Ok((ClientVerdict::Forward(_), request)) => {
                let out = match policy.on_client(&request) {
                    ClientAction::Forward(out) | ClientAction::Replace(out) => out,
                };
                let out = policy.counted(out);
                held.add(&out.tallies);
                assert_well_formed(&out);
                assert_audio_only_holds(policy);
            }
            Ok((ClientVerdict::Drop(kind), request)) => {
                assert_eq!(kind, "simulate");
                assert!(matches!(
                    request.message,
                    Some(signal_request::Message::Simulate(_))
                ));
            }
            Err(_) => {}
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: std::env::var("KOINOS_FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(2048),
            ..ProptestConfig::default()
        })]

        #[test]
        fn the_frame_path_never_panics_writes_only_well_formed_frames_and_counts_true(
            events in prop::collection::vec(event(), 1..60),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            runtime.block_on(async {
                let room = FakeRoom {
                    participants: vec![person("me", "PA_me", "TR_0"), person("a", "PA_a", "TR_1")],
                    ..Default::default()
                };
                // The fallback's own hysteresis, on a clock the events drive: the whole
                // session is deterministic.
                let mut policy = policy(FallbackConfig::default());
                let mut now = Instant::now();
                let mut held = Held::default();
                for event in events {
                    match event {
                        Event::FromServer(bytes) => {
                            if let Ok((_, response)) = decode_server_frame(&bytes) {
                                let out = serve_at(&mut policy, &response, &room, now).await;
                                let out = policy.counted(out);
                                held.add(&out.tallies);
                                assert_well_formed(&out);
                                assert_audio_only_holds(&policy);
                            }
                        }
                        Event::FromClient(bytes) => client(&mut policy, &mut held, decode_client_frame(&bytes)),
                        Event::FromClientText(text) => client(&mut policy, &mut held, decode_client_text(&text)),
                        Event::Timer(secs) => {
                            now += Duration::from_secs(secs);
                            let out = policy.on_timer(now);
                            let out = policy.counted(out);
                            held.add(&out.tallies);
                            assert_well_formed(&out);
                            assert_audio_only_holds(&policy);
                        }
                    }
                }
                // Whatever the session did, the gauge it leaves behind is back to nothing.
                held.add(&policy.end(now));
                assert!(held.0.values().all(|n| *n == 0), "left in the gauge: {:?}", held.0);
            });
        }
    }
}
