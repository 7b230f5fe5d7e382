use std::sync::Arc;

use super::*;
use crate::testing::*;

#[tokio::test]
async fn a_member_gets_a_ticket_for_the_room_that_livekit_would_refuse() {
    let livekit = Arc::new(FakeLiveKit::default());
    let service = fake_service(livekit.clone());
    let grant = service
        .issue_token(request("alice-token", "!case:localhost"), FROM)
        .await
        .unwrap();
    assert_eq!(grant.identity, "@alice:localhost:DEVICE");
    assert_eq!(grant.livekit_room, livekit_room_name("!case:localhost"));
    assert_eq!(grant.expires_at, 1_600);
    assert_eq!(
        *livekit.created.lock().unwrap(),
        vec![grant.livekit_room.clone()]
    );
    // Not a LiveKit token: LiveKit's key does not verify it.
    assert!(
        livekit_api::access_token::TokenVerifier::with_api_key("devkey", LIVEKIT_SECRET)
            .verify(&grant.jwt)
            .is_err()
    );
    let ticket = service
        .tickets
        .verify(&grant.jwt, 1_000, Duration::ZERO)
        .unwrap();
    assert_eq!(ticket.identity, grant.identity);
    assert_eq!(ticket.livekit_room, grant.livekit_room);
    assert_eq!(ticket.matrix_user.as_str(), "@alice:localhost");
    assert_eq!(ticket.matrix_device, "DEVICE");
}

#[tokio::test]
async fn non_member_is_forbidden_and_no_room_is_created() {
    let livekit = Arc::new(FakeLiveKit::default());
    let service = fake_service(livekit.clone());
    let err = service
        .issue_token(request("mallory-token", "!case:localhost"), FROM)
        .await
        .unwrap_err();
    assert_eq!(err, ApiError::Forbidden);
    assert!(livekit.created.lock().unwrap().is_empty());
}

#[tokio::test]
async fn seventh_participant_is_refused_but_a_rejoin_is_not() {
    let livekit = Arc::new(FakeLiveKit::default());
    let call = livekit_room_name("!case:localhost");
    let six: Vec<String> = (0..6).map(|i| format!("@u{i}:localhost:D")).collect();
    livekit.seat(&call, &six.iter().map(String::as_str).collect::<Vec<_>>());
    let service = fake_service(livekit.clone());
    let err = service
        .issue_token(request("alice-token", "!case:localhost"), FROM)
        .await
        .unwrap_err();
    assert_eq!(err, ApiError::CallFull { max: 6 });

    let mut rejoin: Vec<&str> = six.iter().map(String::as_str).collect();
    rejoin[0] = "@alice:localhost:DEVICE";
    livekit.seat(&call, &rejoin);
    service
        .issue_token(request("alice-token", "!case:localhost"), FROM)
        .await
        .unwrap();
}

#[tokio::test]
async fn malformed_fields_are_bad_json_with_the_field_named() {
    let service = fake_service(Arc::new(FakeLiveKit::default()));
    let err = service
        .issue_token(request("alice-token", "not-a-room"), FROM)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ApiError::BadJson(m) if m.contains("room_id")),
        "{err:?}"
    );

    // Whitespace, a zero-width space, a right-to-left override, a Cyrillic look-alike,
    // a ':' (which would make the identity ambiguous).
    for device in [
        "has space",
        "DEV\u{200B}",
        "DEV\u{202E}gnp.exe",
        "DEVІCE",
        "A:B",
        "",
    ] {
        let mut bad_device = request("alice-token", "!case:localhost");
        bad_device.device_id = device.into();
        let err = service.issue_token(bad_device, FROM).await.unwrap_err();
        assert!(
            matches!(&err, ApiError::BadJson(m) if m.contains("device_id")),
            "{device:?}: {err:?}"
        );
    }
    for device in ["ABCDEFGHIJ", "x-y.z_w~0"] {
        let mut good = request("alice-token", "!case:localhost");
        good.device_id = device.into();
        service.issue_token(good, FROM).await.unwrap();
    }
}

#[tokio::test]
async fn too_many_requests_from_one_address_are_refused_before_the_homeserver_is_asked() {
    let mut service = fake_service(Arc::new(FakeLiveKit::default()));
    service.address_limiter = koinos_net::AddressLimiter::new(3, 1);
    // Forged tokens: each would cost a homeserver lookup.
    for _ in 0..3 {
        assert_eq!(
            service
                .issue_token(request("forged", "!case:localhost"), FROM)
                .await
                .unwrap_err(),
            ApiError::Unauthorized
        );
    }
    let err = service
        .issue_token(request("alice-token", "!case:localhost"), FROM)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ApiError::AddressRateLimited { retry_after_ms } if retry_after_ms > 0),
        "{err:?}"
    );
    // Another address is not affected.
    service
        .issue_token(
            request("alice-token", "!case:localhost"),
            "192.0.2.99".parse().unwrap(),
        )
        .await
        .unwrap();
    let text = service.render_metrics().await;
    assert!(
        text.contains(
            r#"koinos_control_requests_total{operation="token",outcome="address_rate_limited"} 1"#
        ),
        "{text}"
    );
}

#[tokio::test]
async fn turn_credentials_are_gated_like_tokens() {
    let service = fake_service(Arc::new(FakeLiveKit::default()));
    let turn = |token: &str| TurnRequest {
        room_id: "!case:localhost".into(),
        openid_token: request(token, "!case:localhost").openid_token,
    };
    let creds = service.issue_turn(turn("alice-token"), FROM).await.unwrap();
    assert_eq!(creds.username, "4600:@alice:localhost");
    assert_eq!(creds.uris, vec!["turn:t:3478".to_string()]);
    assert_eq!(
        service
            .issue_turn(turn("mallory-token"), FROM)
            .await
            .unwrap_err(),
        ApiError::Forbidden
    );
    assert_eq!(
        service.issue_turn(turn("forged"), FROM).await.unwrap_err(),
        ApiError::Unauthorized
    );
}

fn sfu_request(token: &str, claimed: &str, slot: &str) -> SfuRequest {
    SfuRequest {
        room_id: "!case:localhost".into(),
        slot_id: slot.into(),
        openid_token: request(token, "!case:localhost").openid_token,
        member: RtcMember {
            id: "m1".into(),
            claimed_user_id: claimed.into(),
            claimed_device_id: "DEV".into(),
        },
        delay_id: None,
        delay_timeout: None,
        delay_cs_api_url: None,
    }
}

#[tokio::test]
async fn get_token_checks_the_claimed_user_and_slot() {
    let service = fake_service(Arc::new(FakeLiveKit::default()));
    let ok = service
        .get_token(
            sfu_request("alice-token", "@alice:localhost", ROOM_SLOT),
            FROM,
        )
        .await
        .unwrap();
    let ticket = service
        .tickets
        .verify(&ok.jwt, 1_000, Duration::ZERO)
        .unwrap();
    assert_eq!(
        ticket.identity,
        "Qy3R17dx0HjiF/Yh1Ub+CPOYXtpsehdZ3DqpBh2SSRg"
    );
    assert_eq!(ticket.livekit_room, livekit_room_name("!case:localhost"));

    let spoof = service
        .get_token(
            sfu_request("alice-token", "@bob:localhost", ROOM_SLOT),
            FROM,
        )
        .await;
    assert_eq!(spoof.unwrap_err(), ApiError::Unauthorized);
    let slot = service
        .get_token(
            sfu_request("alice-token", "@alice:localhost", "m.call#abc"),
            FROM,
        )
        .await;
    assert!(matches!(slot.unwrap_err(), ApiError::BadJson(m) if m.contains("slot_id")));
    let mut delegated = sfu_request("alice-token", "@alice:localhost", ROOM_SLOT);
    delegated.delay_id = Some("d".into());
    assert!(
        matches!(service.get_token(delegated, FROM).await.unwrap_err(), ApiError::BadJson(m) if m.contains("delay_id"))
    );
}

#[tokio::test]
async fn only_a_host_ends_the_call() {
    let livekit = Arc::new(FakeLiveKit::default());
    let service = fake_service(livekit.clone());
    // mallory is not even a member; the fake makes only alice a host.
    let end = |token: &str| EndCallRequest {
        room_id: "!case:localhost".into(),
        openid_token: request(token, "!case:localhost").openid_token,
    };
    assert_eq!(
        service
            .end_call(end("mallory-token"), FROM)
            .await
            .unwrap_err(),
        ApiError::Forbidden
    );
    assert!(livekit.deleted.lock().unwrap().is_empty());

    let ended = service.end_call(end("alice-token"), FROM).await.unwrap();
    assert_eq!(ended.memberships_cleared, 2);
    assert_eq!(
        *livekit.deleted.lock().unwrap(),
        vec![livekit_room_name("!case:localhost")]
    );
}

#[tokio::test]
async fn a_host_ends_the_call_while_livekit_is_away() {
    let livekit = Arc::new(FakeLiveKit::default());
    livekit
        .away
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let service = fake_service(livekit.clone());
    let ended = service
        .end_call(
            EndCallRequest {
                room_id: "!case:localhost".into(),
                openid_token: request("alice-token", "!case:localhost").openid_token,
            },
            FROM,
        )
        .await
        .unwrap();
    // The homeserver's record is what ends it; the room went with LiveKit's process.
    assert_eq!(ended.memberships_cleared, 2);
    assert!(livekit.deleted.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_openid_token_is_redeemed_once_across_operations() {
    let livekit = Arc::new(FakeLiveKit::default());
    let service = fake_service(livekit.clone());
    let first = request("alice-token", "!case:localhost");
    let replay = first.clone();
    service.issue_token(first, FROM).await.unwrap();
    assert_eq!(
        service.issue_token(replay.clone(), FROM).await.unwrap_err(),
        ApiError::OpenIdReused
    );
    // Not for TURN either, and nothing was done for the replays.
    let turn = TurnRequest {
        room_id: replay.room_id,
        openid_token: replay.openid_token,
    };
    assert_eq!(
        service.issue_turn(turn, FROM).await.unwrap_err(),
        ApiError::OpenIdReused
    );
    assert_eq!(livekit.created.lock().unwrap().len(), 1);
    // The wire cannot tell a replay from a forgery.
    assert_eq!(ApiError::OpenIdReused.errcode(), "M_UNAUTHORIZED");
    assert_eq!(
        ApiError::OpenIdReused.to_string(),
        ApiError::Unauthorized.to_string()
    );
}

#[tokio::test]
async fn requests_beyond_the_burst_are_rate_limited_per_user() {
    let livekit = Arc::new(FakeLiveKit::default());
    let service = fake_service(livekit.clone());
    for _ in 0..5 {
        service
            .issue_token(request("alice-token", "!case:localhost"), FROM)
            .await
            .unwrap();
    }
    let err = service
        .issue_token(request("alice-token", "!case:localhost"), FROM)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ApiError::RateLimited { retry_after_ms } if retry_after_ms > 0),
        "{err:?}"
    );
    // Nothing was done for the refused request.
    assert_eq!(livekit.created.lock().unwrap().len(), 5);
    // A forged token never reaches the limiter's key space (401 first).
    let err = service
        .issue_token(request("forged", "!case:localhost"), FROM)
        .await
        .unwrap_err();
    assert_eq!(err, ApiError::Unauthorized);
}

#[tokio::test]
async fn homeserver_outage_is_a_refusal() {
    let service = fake_service(Arc::new(FakeLiveKit::default()));
    let err = service
        .issue_token(request("hs-down", "!case:localhost"), FROM)
        .await
        .unwrap_err();
    assert_eq!(err, ApiError::Unavailable);
}

#[tokio::test]
async fn a_gateway_may_set_only_the_fallback_stage() {
    let livekit = Arc::new(FakeLiveKit::default());
    livekit
        .rooms
        .lock()
        .unwrap()
        .insert("R".into(), vec![publisher("@bob:localhost:D")]);
    let service = fake_service(livekit.clone());
    let set = |key: &str, value: &str| AttributeRequest {
        livekit_room: "R".into(),
        identity: "@bob:localhost:D".into(),
        key: key.into(),
        value: value.into(),
    };
    service
        .set_participant_attribute(set(FALLBACK_ATTRIBUTE, "camera"))
        .await
        .unwrap();
    service
        .set_participant_attribute(set(FALLBACK_ATTRIBUTE, ""))
        .await
        .unwrap();
    for (key, value, named) in [
        (
            "org.koinos.matrix_user_id",
            "@mallory:localhost",
            "attribute key",
        ),
        ("", "camera", "attribute key"),
        (FALLBACK_ATTRIBUTE, "anything", "must be one of"),
    ] {
        let err = service
            .set_participant_attribute(set(key, value))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ApiError::BadJson(m) if m.contains(named)),
            "{key}={value}: {err:?}"
        );
    }
    let mut gone = set(FALLBACK_ATTRIBUTE, "camera");
    gone.identity = "@carol:localhost:D".into();
    assert_eq!(
        service.set_participant_attribute(gone).await.unwrap_err(),
        ApiError::NotFound
    );
    assert_eq!(
        *livekit.admin_calls.lock().unwrap(),
        [
            "set R @bob:localhost:D org.koinos.rtc.fallback=camera",
            "set R @bob:localhost:D org.koinos.rtc.fallback=",
        ]
    );
    let text = service.render_metrics().await;
    assert!(
        text.contains(
            r#"koinos_control_gateway_requests_total{operation="set_participant_attribute",outcome="bad_request"} 3"#
        ),
        "{text}"
    );
}

#[tokio::test]
async fn a_gateway_may_only_mute_and_only_a_camera() {
    let livekit = Arc::new(FakeLiveKit::default());
    livekit
        .rooms
        .lock()
        .unwrap()
        .insert("R".into(), vec![publisher("@bob:localhost:D")]);
    let service = fake_service(livekit.clone());
    let mute = |sid: &str, muted: bool| MuteRequest {
        livekit_room: "R".into(),
        identity: "@bob:localhost:D".into(),
        track_sid: sid.into(),
        muted,
    };
    let err = service
        .mute_published_track(mute("TR_cam", false))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ApiError::BadJson(m) if m.contains("never unmutes")),
        "{err:?}"
    );
    for sid in ["TR_mic", "TR_screen"] {
        let err = service
            .mute_published_track(mute(sid, true))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ApiError::BadJson(m) if m.contains("not a camera")),
            "{sid}: {err:?}"
        );
    }
    assert_eq!(
        service
            .mute_published_track(mute("TR_gone", true))
            .await
            .unwrap_err(),
        ApiError::NotFound
    );
    let mut empty_room = mute("TR_cam", true);
    empty_room.livekit_room = String::new();
    assert!(matches!(
        service.mute_published_track(empty_room).await.unwrap_err(),
        ApiError::BadJson(m) if m.contains("livekit_room")
    ));
    assert!(livekit.admin_calls.lock().unwrap().is_empty());

    service
        .mute_published_track(mute("TR_cam", true))
        .await
        .unwrap();
    assert_eq!(
        *livekit.admin_calls.lock().unwrap(),
        ["mute R @bob:localhost:D TR_cam"]
    );
}
