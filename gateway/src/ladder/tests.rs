use livekit_protocol::{JoinResponse, ParticipantUpdate, ReconnectResponse};

use super::*;
use Receiving::{AudioOnly, Video};

#[test]
fn extreme_dimensions_from_a_client_are_capped_not_overflowed() {
    // Found by the relay's frame fuzz target: a width-only request near u32::MAX.
    for (width, height) in [(u32::MAX, 0), (u32::MAX, u32::MAX), (0, u32::MAX)] {
        let wanted = UpdateTrackSettings {
            width,
            height,
            ..Default::default()
        };
        assert_eq!(capped("TR_a", &wanted, &layers(), 540).height, 540);
        assert_eq!(capped("TR_a", &wanted, &[], 360).height, 360);
    }
}

fn layers() -> Vec<VideoLayer> {
    [
        (VideoQuality::Low, 640, 360),
        (VideoQuality::Medium, 960, 540),
        (VideoQuality::High, 1280, 720),
    ]
    .into_iter()
    .map(|(q, w, h)| VideoLayer {
        quality: q as i32,
        width: w,
        height: h,
        ..Default::default()
    })
    .collect()
}

fn participant(identity: &str, camera: Option<&str>) -> ParticipantInfo {
    let mut tracks = vec![TrackInfo {
        sid: format!("TR_audio_{identity}"),
        r#type: TrackType::Audio as i32,
        ..Default::default()
    }];
    if let Some(sid) = camera {
        tracks.push(TrackInfo {
            sid: sid.into(),
            r#type: TrackType::Video as i32,
            source: TrackSource::Camera as i32,
            codecs: vec![livekit_protocol::SimulcastCodecInfo {
                mime_type: "video/VP8".into(),
                layers: layers(),
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    ParticipantInfo {
        identity: identity.into(),
        state: participant_info::State::Active as i32,
        tracks,
        ..Default::default()
    }
}

fn join(others: Vec<ParticipantInfo>) -> SignalResponse {
    SignalResponse {
        message: Some(signal_response::Message::Join(JoinResponse {
            other_participants: others,
            ..Default::default()
        })),
    }
}

fn update(participants: Vec<ParticipantInfo>) -> SignalResponse {
    SignalResponse {
        message: Some(signal_response::Message::Update(ParticipantUpdate {
            participants,
        })),
    }
}

fn heights(settings: &[UpdateTrackSettings]) -> Vec<(String, u32)> {
    settings
        .iter()
        .map(|s| (s.track_sids.join(","), s.height))
        .collect()
}

#[test]
fn the_cap_follows_the_call_size() {
    let config = LadderConfig::default();
    let caps: Vec<u32> = (1..=7).map(|n| config.cap(n)).collect();
    assert_eq!(caps, [720, 720, 540, 540, 360, 360, 360]);
}

#[test]
fn new_cameras_are_capped_without_any_client_settings() {
    let mut ladder = Ladder::new(LadderConfig::default(), "me".into());
    let others = vec![participant("a", Some("TR_a")), participant("b", None)];
    assert_eq!(
        heights(&ladder.on_server(&join(others), Video)),
        [("TR_a".into(), 540)]
    );
    assert_eq!(ladder.call_size(), 3);
    // b starts its camera later; b's audio track is none of the ladder's business.
    assert_eq!(
        heights(&ladder.on_server(&update(vec![participant("b", Some("TR_b"))]), Video)),
        [("TR_b".into(), 540)]
    );
    // Our own camera is never capped for us.
    assert!(
        ladder
            .on_server(&update(vec![participant("me", Some("TR_me"))]), Video)
            .is_empty()
    );
}

fn offer(tracks: &[&str]) -> SignalResponse {
    let mut sdp = String::from("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n");
    for (mid, track) in tracks.iter().enumerate() {
        sdp.push_str(&format!(
            "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:{mid}\r\na=msid:PA_x|{track} {track}\r\n"
        ));
    }
    SignalResponse {
        message: Some(signal_response::Message::Offer(
            livekit_protocol::SessionDescription {
                r#type: "offer".into(),
                sdp,
                ..Default::default()
            },
        )),
    }
}

#[test]
fn settings_are_sent_again_once_the_subscription_is_in_the_offer() {
    let mut ladder = Ladder::new(LadderConfig::default(), "me".into());
    let others = ["a", "b", "c", "d"].map(|id| participant(id, Some(&format!("TR_{id}"))));
    assert_eq!(ladder.on_server(&join(others.to_vec()), Video).len(), 4);
    // LiveKit may have lost those to its subscribe race: once a track is in the
    // subscriber's offer its cap goes again, exactly once, audio and unknown tracks aside.
    assert_eq!(
        heights(&ladder.on_server(&offer(&["TR_audio_a", "TR_a", "TR_b", "TR_zz"]), Video)),
        [("TR_a".into(), 360), ("TR_b".into(), 360)]
    );
    assert_eq!(
        heights(&ladder.on_server(&offer(&["TR_audio_a", "TR_a", "TR_b", "TR_c"]), Video)),
        [("TR_c".into(), 360)]
    );
    // A resume starts over: the next offer confirms everything again.
    ladder.on_server(
        &SignalResponse {
            message: Some(signal_response::Message::Reconnect(
                ReconnectResponse::default(),
            )),
        },
        Video,
    );
    assert_eq!(
        heights(&ladder.on_server(&offer(&["TR_a"]), Video)),
        [("TR_a".into(), 360)]
    );
    // An unsubscribed track in a later offer is left alone.
    ladder.on_client_unsubscribe(&["TR_d".into()]);
    assert!(
        ladder
            .on_server(&offer(&["TR_a", "TR_d"]), Video)
            .is_empty()
    );
}

#[test]
fn an_explicit_subscription_is_capped_and_an_unsubscribed_track_left_alone() {
    let mut ladder = Ladder::new(LadderConfig::default(), "me".into());
    ladder.on_server(&join(vec![participant("a", Some("TR_a"))]), Video);
    ladder.on_client_unsubscribe(&["TR_a".into()]);
    // The call grows: nothing to send for a track we are not subscribed to.
    assert!(
        ladder
            .on_server(&update(vec![participant("b", None)]), Video)
            .is_empty()
    );
    assert_eq!(
        heights(&ladder.on_client_subscribe(&["TR_a".into(), "TR_audio_a".into()], Video)),
        [("TR_a".into(), 540)]
    );
}

#[test]
fn call_size_changes_reapply_to_every_subscription_and_go_back_up() {
    let mut ladder = Ladder::new(LadderConfig::default(), "me".into());
    assert_eq!(
        heights(&ladder.on_server(&join(vec![participant("a", Some("TR_a"))]), Video)),
        [("TR_a".into(), 720)]
    );

    let more: Vec<_> = ["b", "c", "d"]
        .iter()
        .map(|id| participant(id, None))
        .collect();
    assert_eq!(
        heights(&ladder.on_server(&update(more), Video)),
        [("TR_a".into(), 360)]
    );
    assert_eq!(ladder.call_size(), 5);

    let mut gone = participant("d", None);
    gone.state = participant_info::State::Disconnected as i32;
    assert_eq!(
        heights(&ladder.on_server(&update(vec![gone]), Video)),
        [("TR_a".into(), 540)]
    );
    // Nothing changed: nothing sent.
    assert!(
        ladder
            .on_server(&update(vec![participant("b", None)]), Video)
            .is_empty()
    );
}

#[test]
fn client_settings_are_clamped_and_lower_wishes_honoured() {
    let mut ladder = Ladder::new(LadderConfig::default(), "me".into());
    let others: Vec<_> = ["a", "b", "c", "d"]
        .iter()
        .map(|id| participant(id, Some(&format!("TR_{id}"))))
        .collect();
    assert_eq!(ladder.on_server(&join(others), Video).len(), 4);
    assert_eq!(ladder.cap(), 360);

    // Asking for 1080 in a 5-person call: the 360 cap already in force stays; the client's
    // message is not passed on.
    let greedy = UpdateTrackSettings {
        track_sids: vec!["TR_a".into()],
        width: 1920,
        height: 1080,
        ..Default::default()
    };
    assert_eq!(ladder.on_client_settings(&greedy, Video), Some(vec![]));
    let clamped = capped("TR_a", &greedy, &layers(), 360);
    assert_eq!((clamped.width, clamped.height), (640, 360));

    // 180 is below every published layer: the smallest one (360) is what the SFU can serve.
    let modest = UpdateTrackSettings {
        track_sids: vec!["TR_b".into()],
        width: 320,
        height: 180,
        ..Default::default()
    };
    assert_eq!(capped("TR_b", &modest, &layers(), 360).height, 360);

    // In a 2-person call, asking for 540 gets exactly the 540 layer, not the cap.
    let medium = UpdateTrackSettings {
        height: 540,
        ..Default::default()
    };
    assert_eq!(capped("TR_b", &medium, &layers(), 720).height, 540);

    let off = UpdateTrackSettings {
        track_sids: vec!["TR_c".into()],
        disabled: true,
        ..Default::default()
    };
    assert!(ladder.on_client_settings(&off, Video).unwrap()[0].disabled);

    // Screen share and unknown tracks pass untouched.
    let other = UpdateTrackSettings {
        track_sids: vec!["TR_screen".into()],
        height: 1080,
        ..Default::default()
    };
    assert_eq!(ladder.on_client_settings(&other, Video), None);
}

#[test]
fn a_lower_wish_is_kept_when_the_cap_rises() {
    let mut ladder = Ladder::new(LadderConfig::default(), "me".into());
    ladder.on_server(
        &join(vec![participant("a", Some("TR_a")), participant("b", None)]),
        Video,
    );
    let low = UpdateTrackSettings {
        track_sids: vec!["TR_a".into()],
        quality: VideoQuality::Low as i32,
        ..Default::default()
    };
    assert_eq!(
        heights(&ladder.on_client_settings(&low, Video).unwrap()),
        [("TR_a".into(), 360)]
    );
    let mut gone = participant("b", None);
    gone.state = participant_info::State::Disconnected as i32;
    // Cap 540 → 720, but the client asked for LOW: nothing to change.
    assert!(ladder.on_server(&update(vec![gone]), Video).is_empty());
}

#[test]
fn a_resume_resends_the_caps() {
    let mut ladder = Ladder::new(LadderConfig::default(), "me".into());
    ladder.on_server(
        &join(vec![
            participant("a", Some("TR_a")),
            participant("b", Some("TR_b")),
        ]),
        Video,
    );
    let resumed = SignalResponse {
        message: Some(signal_response::Message::Reconnect(
            ReconnectResponse::default(),
        )),
    };
    assert_eq!(
        heights(&ladder.on_server(&resumed, Video)),
        [("TR_a".into(), 540), ("TR_b".into(), 540)]
    );
}

#[test]
fn a_resumed_session_learns_the_room_and_follows_it() {
    // A fresh ladder (new gateway session after a resume): no join, the listed room instead.
    let mut ladder = Ladder::new(LadderConfig::default(), "me".into());
    let room = vec![
        participant("me", Some("TR_me")),
        participant("a", Some("TR_a")),
        participant("b", Some("TR_b")),
    ];
    assert_eq!(
        heights(&ladder.on_resume(&room, Video)),
        [("TR_a".into(), 540), ("TR_b".into(), 540)]
    );
    let mut gone = participant("b", None);
    gone.state = participant_info::State::Disconnected as i32;
    assert_eq!(
        heights(&ladder.on_server(&update(vec![gone]), Video)),
        [("TR_a".into(), 720)]
    );
}

fn screen(identity: &str, sid: &str) -> ParticipantInfo {
    let mut p = participant(identity, None);
    p.tracks.push(TrackInfo {
        sid: sid.into(),
        r#type: TrackType::Video as i32,
        source: TrackSource::ScreenShare as i32,
        ..Default::default()
    });
    p
}

fn disabled(settings: &[UpdateTrackSettings]) -> Vec<(String, bool)> {
    settings
        .iter()
        .map(|s| (s.track_sids.join(","), s.disabled))
        .collect()
}

#[test]
fn the_fallback_disables_all_incoming_video_and_the_restore_brings_back_the_caps() {
    let mut ladder = Ladder::new(LadderConfig::default(), "me".into());
    ladder.on_server(
        &join(vec![
            participant("a", Some("TR_a")),
            screen("b", "TR_screen"),
        ]),
        Video,
    );
    // A screen share outside a fallback is left to LiveKit's defaults.
    assert_eq!(
        heights(&ladder.on_client_subscribe(&["TR_screen".into()], Video)),
        []
    );

    assert_eq!(
        disabled(&ladder.reapply(AudioOnly)),
        [("TR_a".into(), true), ("TR_screen".into(), true)]
    );
    assert!(ladder.reapply(AudioOnly).is_empty());

    // The client asking for video while audio-only gets "disabled", for both kinds.
    let wish = UpdateTrackSettings {
        track_sids: vec!["TR_a".into(), "TR_screen".into()],
        quality: VideoQuality::High as i32,
        ..Default::default()
    };
    assert_eq!(ladder.on_client_settings(&wish, AudioOnly), Some(vec![]));
    // A camera appearing while audio-only is disabled from the start.
    assert_eq!(
        disabled(&ladder.on_server(&update(vec![participant("c", Some("TR_c"))]), AudioOnly)),
        [("TR_c".into(), true)]
    );

    let restored = ladder.reapply(Video);
    assert!(restored.iter().all(|s| !s.disabled), "{restored:?}");
    assert_eq!(
        heights(&restored),
        [
            ("TR_a".into(), 540),
            ("TR_c".into(), 540),
            ("TR_screen".into(), 0)
        ]
    );
}

#[test]
fn a_bandwidth_resume_while_paused_is_answered_with_a_different_disable() {
    let mut ladder = Ladder::new(LadderConfig::default(), "me".into());
    ladder.on_server(&join(vec![participant("a", Some("TR_a"))]), Video);
    assert_eq!(ladder.on_stream_active("TR_a", Video), None); // LiveKit's business
    let first = ladder.reapply(AudioOnly).pop().unwrap();
    let again = ladder.on_stream_active("TR_a", AudioOnly).unwrap();
    assert!(again.disabled);
    assert_ne!(
        again, first,
        "LiveKit ignores a settings message identical to the last"
    );
    let third = ladder.on_stream_active("TR_a", AudioOnly).unwrap();
    assert_ne!(third, again);
    assert_eq!(ladder.on_stream_active("TR_unknown", AudioOnly), None);
}

#[test]
fn own_cameras_are_followed_for_the_second_stage() {
    let mut ladder = Ladder::new(LadderConfig::default(), "me".into());
    ladder.on_server(&join(vec![]), Video);
    let published = SignalResponse {
        message: Some(signal_response::Message::TrackPublished(
            livekit_protocol::TrackPublishedResponse {
                cid: "local".into(),
                track: Some(participant("me", Some("TR_mine")).tracks[1].clone()),
            },
        )),
    };
    assert!(ladder.on_server(&published, Video).is_empty());
    assert_eq!(ladder.own_cameras(), ["TR_mine"]);
    ladder.on_server(&update(vec![participant("me", None)]), Video);
    assert!(ladder.own_cameras().is_empty());
}

#[test]
fn without_layer_information_the_cap_is_asked_for_directly() {
    let settings = capped("TR", &UpdateTrackSettings::default(), &[], 540);
    assert_eq!((settings.width, settings.height), (960, 540));
}

/// Property tests of the rewriting path: any sequence of room changes and client settings,
/// including frames that are garbage, never panics, and every camera setting the gateway sends
/// stays within the cap in force (or is the smallest published layer when none fits).
mod fuzz {
    use proptest::prelude::*;

    use super::*;
    use crate::signal::{decode_client_frame, decode_server_frame};

    #[derive(Debug, Clone)]
    enum Event {
        Join(Vec<u8>),
        Arrive(u8, bool),
        Leave(u8),
        Client(u8, u32, u32, i32, bool),
        Subscribe(u8, bool),
        Resume(Vec<u8>),
        Pause(bool),
        StreamActive(u8),
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            prop::collection::vec(0u8..8, 0..6).prop_map(Event::Join),
            (0u8..8, any::<bool>()).prop_map(|(p, cam)| Event::Arrive(p, cam)),
            (0u8..8).prop_map(Event::Leave),
            (0u8..10, 0u32..4000, 0u32..2200, 0i32..4, any::<bool>())
                .prop_map(|(p, w, h, q, off)| Event::Client(p, w, h, q, off)),
            (0u8..10, any::<bool>()).prop_map(|(p, on)| Event::Subscribe(p, on)),
            prop::collection::vec(0u8..8, 0..6).prop_map(Event::Resume),
            any::<bool>().prop_map(Event::Pause),
            (0u8..10).prop_map(Event::StreamActive),
        ]
    }

    fn person(n: u8, camera: bool) -> ParticipantInfo {
        participant(
            &format!("p{n}"),
            camera.then(|| format!("TR_{n}")).as_deref(),
        )
    }

    fn check(ladder: &Ladder, receiving: Receiving, sent: &[UpdateTrackSettings]) {
        for settings in sent {
            // Audio-only, nothing but "disabled" goes out.
            assert!(
                receiving == Video || settings.disabled,
                "{settings:?} while audio-only"
            );
            assert!(
                settings.height <= ladder.cap() || settings.height == 360,
                "{settings:?} over cap {}",
                ladder.cap()
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn any_sequence_stays_within_the_cap(events in prop::collection::vec(event(), 1..40)) {
            let mut ladder = Ladder::new(LadderConfig::default(), "p0".into());
            // Held outside the ladder, as the fallback holds it in a session.
            let mut receiving = Video;
            for event in events {
                let sent = match event {
                    Event::Join(people) => ladder.on_server(
                        &join(people.into_iter().map(|n| person(n, true)).collect()),
                        receiving,
                    ),
                    Event::Arrive(n, camera) => {
                        ladder.on_server(&update(vec![person(n, camera)]), receiving)
                    }
                    Event::Leave(n) => {
                        let mut gone = person(n, false);
                        gone.state = participant_info::State::Disconnected as i32;
                        ladder.on_server(&update(vec![gone]), receiving)
                    }
                    Event::Client(n, width, height, quality, disabled) => ladder
                        .on_client_settings(
                            &UpdateTrackSettings {
                                track_sids: vec![format!("TR_{n}")],
                                width,
                                height,
                                quality,
                                disabled,
                                ..Default::default()
                            },
                            receiving,
                        )
                        .unwrap_or_default(),
                    Event::Subscribe(n, true) => {
                        ladder.on_client_subscribe(&[format!("TR_{n}")], receiving)
                    }
                    Event::Subscribe(n, false) => {
                        ladder.on_client_unsubscribe(&[format!("TR_{n}")]);
                        vec![]
                    }
                    Event::Resume(people) => ladder.on_resume(
                        &people.into_iter().map(|n| person(n, true)).collect::<Vec<_>>(),
                        receiving,
                    ),
                    Event::Pause(on) => {
                        receiving = if on { AudioOnly } else { Video };
                        ladder.reapply(receiving)
                    }
                    Event::StreamActive(n) => ladder
                        .on_stream_active(&format!("TR_{n}"), receiving)
                        .into_iter()
                        .collect(),
                };
                check(&ladder, receiving, &sent);
            }
        }

        #[test]
        fn garbage_frames_are_errors_not_panics(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
            let _ = decode_client_frame(&bytes);
            if let Ok((_, response)) = decode_server_frame(&bytes) {
                // Whatever decodes is fed to the ladder as the relay would.
                let mut ladder = Ladder::new(LadderConfig::default(), "me".into());
                let sent = ladder.on_server(&response, Video);
                check(&ladder, Video, &sent);
            }
        }
    }
}
