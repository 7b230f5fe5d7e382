//! What a gateway may do through control (it holds no LiveKit key), and only with its credential.

use super::*;

/// Waits until the session hears that its own participant `identity` has the fallback
/// attribute at `stage` ("" for none), as the page learns it.
async fn hears_own_stage(session: &mut Session, identity: &str, stage: &str) -> bool {
    session
        .wait_for(Duration::from_secs(10), |message| {
            matches!(message, signal_response::Message::Update(update)
            if update.participants.iter().any(|p| {
                p.identity == identity
                    && p.attributes
                        .get("org.koinos.rtc.fallback")
                        .map_or("", String::as_str)
                        == stage
            }))
        })
        .await
        .is_some()
}

/// The gateway holds no LiveKit key: what its fallback and a resumed session need of LiveKit's
/// RoomService, control does for it, for the gateway credential only and within narrow bounds.
/// (A real camera paused by the fallback: `web/e2e/fallback.spec.ts`; the attribute set by the
/// gateway on a really lossy link: loadtest's injected-loss stack test.)
#[tokio::test]
async fn a_gateway_acts_on_its_calls_through_control_and_only_with_the_credential() {
    use koinos_proto::v1::{
        ListParticipantsRequest, MutePublishedTrackRequest, SetParticipantAttributeRequest,
        control_service_client::ControlServiceClient,
    };
    let Some(_logs) = stack::up() else { return };
    let (alice, _) = login("alice").await;
    let room = new_case(&alice, &["bob"], &["bob"]).await;
    let jwts = tickets_once_control_is_in(&room, &[("alice", "GWRPC"), ("bob", "GWRPC")]).await;
    let livekit_room = koinos_control::service::livekit_room_name(&room);
    let alice_session = Session::join(GATEWAY_WS, &jwts[0]).await;
    let mut bob_session = Session::join(GATEWAY_WS, &jwts[1]).await;
    let bob = bob_session.me().clone();
    assert!(bob.identity.ends_with("GWRPC"), "{}", bob.identity);
    let bob_sid = bob.sid;
    let bob = "@bob:localhost:GWRPC";
    let mut client = ControlServiceClient::connect(CONTROL_GRPC).await.unwrap();
    let credential = gateway_credential();
    let list = ListParticipantsRequest {
        livekit_room: livekit_room.clone(),
    };
    let set = |key: &str, value: &str| SetParticipantAttributeRequest {
        livekit_room: livekit_room.clone(),
        identity: bob.into(),
        key: key.into(),
        value: value.into(),
    };
    let mute = |track_sid: &str, muted: bool| MutePublishedTrackRequest {
        livekit_room: livekit_room.clone(),
        identity: bob.into(),
        track_sid: track_sid.into(),
        muted,
    };
    let participants = |answer: koinos_proto::v1::ListParticipantsResponse| {
        answer
            .participants
            .iter()
            .map(|bytes| ParticipantInfo::decode(bytes.as_slice()).unwrap())
            .collect::<Vec<_>>()
    };

    // Not a gateway: nothing is listed, set or muted. bob's own LiveKit token is no credential.
    let wrong = "not-the-gateway-credential-not-the-gateway-credential";
    for impostor in [None, Some(wrong), Some(jwts[1].as_str())] {
        let codes = [
            client
                .list_participants(as_gateway(list.clone(), impostor))
                .await
                .map(drop),
            client
                .set_participant_attribute(as_gateway(
                    set("org.koinos.rtc.fallback", "camera"),
                    impostor,
                ))
                .await
                .map(drop),
            client
                .mute_published_track(as_gateway(mute("TR_none", true), impostor))
                .await
                .map(drop),
        ]
        .map(|result| result.unwrap_err().code());
        assert_eq!(codes, [tonic::Code::Unauthenticated; 3], "{impostor:?}");
    }

    // The listing a resumed session re-derives its call from.
    let listed = participants(
        client
            .list_participants(as_gateway(list.clone(), Some(&credential)))
            .await
            .unwrap()
            .into_inner(),
    );
    let mut identities: Vec<&str> = listed.iter().map(|p| p.identity.as_str()).collect();
    identities.sort();
    assert_eq!(identities, ["@alice:localhost:GWRPC", bob]);

    // The fallback's stage reaches bob's own session, as his page reads it.
    client
        .set_participant_attribute(as_gateway(
            set("org.koinos.rtc.fallback", "incoming_video"),
            Some(&credential),
        ))
        .await
        .unwrap();
    assert!(
        hears_own_stage(&mut bob_session, bob, "incoming_video").await,
        "bob's session is told his fallback stage"
    );

    // Nothing else may be set, not even with the credential: bob stays bob.
    let refused = client
        .set_participant_attribute(as_gateway(
            set("org.koinos.matrix_user_id", "@mallory:localhost"),
            Some(&credential),
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused
            .message()
            .contains(r#"only "org.koinos.rtc.fallback""#),
        "{}",
        refused.message()
    );
    let listed = participants(
        client
            .list_participants(as_gateway(list.clone(), Some(&credential)))
            .await
            .unwrap()
            .into_inner(),
    );
    let bob_info = listed.iter().find(|p| p.identity == bob).unwrap();
    assert_eq!(
        bob_info.attributes["org.koinos.matrix_user_id"],
        "@bob:localhost"
    );
    assert_eq!(
        bob_info.attributes["org.koinos.rtc.fallback"],
        "incoming_video"
    );

    // Muting only, and only a camera bob publishes (he publishes nothing here).
    let refused = client
        .mute_published_track(as_gateway(mute("TR_none", false), Some(&credential)))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let refused = client
        .mute_published_track(as_gateway(mute("TR_none", true), Some(&credential)))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound);

    // bob's signalling resumes (as livekit-client's does): the gateway lists the call through
    // control and carries on the fallback it finds in his attribute.
    let listings =
        r#"koinos_control_gateway_requests_total{operation="list_participants",outcome="done"} "#;
    let listed_before = control_metric(listings).await;
    let in_fallback_before = gateway_metric("koinos_gateway_sessions_in_fallback ").await;
    let mut resumed = Session::open(GATEWAY_WS, &jwts[1], &format!("&reconnect=1&sid={bob_sid}"))
        .await
        .expect("resume opens");
    let answer = resumed.resume_answer(Duration::from_secs(15)).await;
    assert!(
        matches!(answer, Some(signal_response::Message::Reconnect(_))),
        "LiveKit resumes bob's session: {answer:?}"
    );
    let mut carried_on = false;
    for _ in 0..50 {
        if control_metric(listings).await > listed_before
            && gateway_metric("koinos_gateway_sessions_in_fallback ").await > in_fallback_before
        {
            carried_on = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        carried_on,
        "the resumed session listed the call through control and resumed bob's fallback"
    );

    client
        .set_participant_attribute(as_gateway(
            set("org.koinos.rtc.fallback", ""),
            Some(&credential),
        ))
        .await
        .unwrap();
    assert!(hears_own_stage(&mut resumed, bob, "").await);
    resumed.leave().await;
    drop(bob_session);
    alice_session.leave().await;
}
