//! Fuzzing the whole session the relay runs: frames from either side, well-formed LiveKit
//! messages over a small vocabulary of identities and tracks (so that they interact) or those
//! with bytes flipped, cut short or replaced by garbage, are decoded and fed to the session
//! exactly as `relay` does, with fallback timers firing and the listings a resume asks for
//! answered (or failing) in between.
//!
//! Nothing may panic; what does not decode is an error (which ends that session only); only
//! `simulate` is dropped; what the session writes is well-formed; one listing at a time is
//! asked; the client requests the policy may change reach LiveKit in the order they came, and
//! so do the others (those may overtake held ones: that is what keeps the relay going while
//! control is slow); audio-only, no camera is let through; and the gauge balances. (That the
//! settings keep to the cap is the ladder's own property test.)

use livekit_protocol::{
    ParticipantTracks, ParticipantUpdate, SimulateScenario, StreamStateInfo, StreamStateUpdate,
    SyncState, TrackPublishedResponse, UpdateSubscription, UpdateTrackSettings, VideoLayer,
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

/// A subscription change, by track or by participant (LiveKit reads both lists).
fn subscription() -> impl Strategy<Value = UpdateSubscription> {
    (
        prop::collection::vec(sid(), 0..4),
        prop::collection::vec(sid(), 0..3),
        any::<bool>(),
    )
        .prop_map(
            |(track_sids, by_participant, subscribe)| UpdateSubscription {
                track_sids,
                participant_tracks: vec![ParticipantTracks {
                    participant_sid: "PA_a".into(),
                    track_sids: by_participant,
                }],
                subscribe,
            },
        )
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
        subscription().prop_map(M::Subscription),
        (
            prop::option::of(subscription()),
            prop::collection::vec(sid(), 0..3)
        )
            .prop_map(
                |(subscription, track_sids_disabled)| M::SyncState(SyncState {
                    subscription,
                    track_sids_disabled,
                    ..Default::default()
                })
            ),
        (sid(), any::<bool>()).prop_map(|(sid, muted)| M::Mute(MuteTrackRequest { sid, muted })),
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
    /// The listing a resume asked for comes in (or control could not list the room); in it,
    /// this participant's fallback attribute as an earlier session left it.
    Listed(bool, Stage),
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
        1 => (
            any::<bool>(),
            prop::sample::select(vec![Stage::Normal, Stage::IncomingPaused, Stage::CameraPaused])
        )
            .prop_map(|(ok, stage)| Event::Listed(ok, stage)),
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

/// The gauges as the metrics count them from the tallies: camera subscriptions held per
/// layer, and whether the session is in a fallback.
#[derive(Default)]
struct Held(HashMap<u32, i64>, i64);

impl Held {
    fn add(&mut self, tallies: &[Tally]) {
        for tally in tallies {
            match *tally {
                Tally::SubscriptionMoved(from, to) => {
                    assert_ne!(from, to, "a move that moves nothing");
                    from.into_iter()
                        .for_each(|h| *self.0.entry(h).or_default() -= 1);
                    to.into_iter()
                        .for_each(|h| *self.0.entry(h).or_default() += 1);
                }
                Tally::FallbackEntered("incoming_video") | Tally::FallbackResumed => self.1 += 1,
                Tally::FallbackLeft(..) => self.1 -= 1,
                _ => {}
            }
        }
        assert!(
            self.0.values().all(|n| *n >= 0),
            "gauge below zero: {:?}",
            self.0
        );
        assert!(
            (0..=1).contains(&self.1),
            "one session in the fallback {} times",
            self.1
        );
    }
}

/// The session as the fuzz drives it, with what it checks of every effect.
struct Driven {
    session: session::Session,
    held: Held,
    /// A listing asked and not yet answered.
    listing: bool,
    /// When the last client frame LiveKit got arrived, of those the policy watches and of
    /// the others.
    forwarded: [Option<Instant>; 2],
    clock: Instant,
}

impl Driven {
    fn effects(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Send(out) => {
                    self.held.add(&out.tallies);
                    assert_well_formed(&out);
                }
                Effect::Forward(frame, arrived) => {
                    let tungstenite::Message::Binary(bytes) = frame else {
                        unreachable!("LiveKit is spoken to in binary")
                    };
                    let (_, request) =
                        decode_client_frame(&bytes).expect("a forwarded frame decodes");
                    let last = &mut self.forwarded[usize::from(Policy::watches(&request))];
                    assert!(
                        last.is_none_or(|last| last < arrived),
                        "client frames reordered: {request:?}"
                    );
                    *last = Some(arrived);
                }
                Effect::ListRoom => {
                    assert!(
                        !self.listing,
                        "a second listing asked before the first came"
                    );
                    self.listing = true;
                }
            }
        }
        assert_eq!(self.listing, self.session.resuming());
        assert_audio_only_holds(&self.session.policy);
    }

    /// A decoded client frame, as `relay` takes it whatever its encoding.
    fn client(
        &mut self,
        decoded: Result<(ClientVerdict, SignalRequest), crate::signal::FrameError>,
    ) {
        match decoded {
            Ok((ClientVerdict::Forward(_), request)) => {
                self.clock += Duration::from_millis(1);
                let forward = tungstenite::Message::Binary(request.encode_to_vec().into());
                let effects = self.session.client(request, forward, self.clock);
                self.effects(effects);
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

    fn listed(&mut self, room: &FakeRoom, ok: bool, stage: Stage) {
        if !self.listing {
            return;
        }
        self.listing = false;
        let listing = if ok {
            let mut participants = room.participants.clone();
            for p in participants.iter_mut().filter(|p| p.identity == "me") {
                p.attributes
                    .insert(fallback::ATTRIBUTE.into(), stage.attribute().into());
            }
            Ok(participants)
        } else {
            Err(anyhow::anyhow!("control is away"))
        };
        let effects = self.session.listed(listing, self.clock);
        self.effects(effects);
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
            let mut driven = Driven {
                session: session::Session::new(policy(FallbackConfig::default())),
                held: Held::default(),
                listing: false,
                forwarded: [None; 2],
                clock: Instant::now(),
            };
            for event in events {
                match event {
                    Event::FromServer(bytes) => {
                        if let Ok((_, response)) = decode_server_frame(&bytes) {
                            let effects = driven.session.server(response, driven.clock);
                            driven.effects(effects);
                        }
                    }
                    Event::FromClient(bytes) => driven.client(decode_client_frame(&bytes)),
                    Event::FromClientText(text) => driven.client(decode_client_text(&text)),
                    Event::Timer(secs) => {
                        driven.clock += Duration::from_secs(secs);
                        let effects = driven.session.timer(driven.clock);
                        driven.effects(effects);
                    }
                    Event::Listed(ok, stage) => driven.listed(&room, ok, stage),
                }
            }
            // Whatever waited for a listing is decided once it comes.
            while driven.listing {
                driven.listed(&room, true, Stage::Normal);
            }
            // Whatever the session did, the gauge it leaves behind is back to nothing.
            let now = driven.clock;
            driven.held.add(&driven.session.end(now));
            assert!(driven.held.0.values().all(|n| *n == 0), "left in the gauge: {:?}", driven.held.0);
            assert_eq!(driven.held.1, 0, "left in the fallback gauge");
        });
    }
}
