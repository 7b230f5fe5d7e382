//! gRPC: the same gate as REST for clients, and the gateway RPCs that reach LiveKit on a
//! gateway's behalf (the gateway holds no LiveKit key).

use super::*;
use koinos_proto::v1::{
    IssueTokenRequest, ListParticipantsRequest, MutePublishedTrackRequest, OpenIdToken,
    SetParticipantAttributeRequest,
};

fn openid_message(openid: &Value) -> Option<OpenIdToken> {
    Some(OpenIdToken {
        access_token: openid["access_token"].as_str().unwrap().to_owned(),
        token_type: openid["token_type"].as_str().unwrap().to_owned(),
        matrix_server_name: openid["matrix_server_name"].as_str().unwrap().to_owned(),
        expires_in: openid["expires_in"].as_i64().unwrap(),
    })
}

#[tokio::test]
async fn grpc_issue_token_has_the_same_gate_as_rest() {
    let w = World::start().await;
    let room = w.case(&["bob"]).await;
    let mut grpc = w.control.grpc_client().await;
    let request = |user: &str| IssueTokenRequest {
        room_id: room.clone(),
        openid_token: openid_message(&w.homeserver.issue_openid(user)),
        device_id: "G".into(),
    };
    let grant = grpc
        .issue_token(request("bob"))
        .await
        .expect("bob is a member")
        .into_inner();
    assert_eq!(grant.livekit_room, livekit_room_name(&room));
    assert_eq!(grant.identity, "@bob:localhost:G");

    let refused = grpc.issue_token(request("mallory")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        refused.metadata().get("x-matrix-errcode").unwrap(),
        "M_FORBIDDEN"
    );
    assert_eq!(
        w.livekit.served("CreateRoom").len(),
        1,
        "only bob's request made the room"
    );
    w.assert_clean();
}

/// What control mints for an admitted connection is a LiveKit token LiveKit accepts, for this
/// room and identity only, with nothing but joining granted; the ticket itself is refused by
/// LiveKit, and a gateway without the credential is refused by control.
#[tokio::test]
async fn an_admitted_connection_gets_a_join_only_livekit_token_and_turn() {
    let w = World::start().await;
    let room = w.case(&["bob"]).await;
    let grant = w.ticket(&room, "bob", "B").await;
    let ticket = grant["jwt"].as_str().unwrap();

    let mut grpc = w.control.grpc_client().await;
    let request = AdmitSessionRequest {
        ticket: ticket.to_owned(),
        check_only: false,
    };
    let refused = grpc
        .admit_session(as_gateway(request.clone(), None))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let wrong = "w".repeat(48);
    let refused = grpc
        .admit_session(as_gateway(request, Some(&wrong)))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    let admission = w.admit(ticket).await.expect("admitted");
    assert_eq!(admission.identity, "@bob:localhost:B");
    assert_eq!(admission.matrix_user, "@bob:localhost");
    let claims = jwt_claims(&admission.livekit_token);
    assert_eq!(claims["video"]["room"], livekit_room_name(&room));
    assert_eq!(claims["video"]["roomJoin"], true);
    for power in ["roomCreate", "roomAdmin", "roomList"] {
        assert!(
            claims["video"].get(power).is_none_or(|v| v == false),
            "{power} granted: {claims}"
        );
    }
    assert_eq!(claims["video"]["canUpdateOwnMetadata"], false);
    let turn = &admission.ice_servers[0];
    assert!(
        turn.username.ends_with(":@bob:localhost"),
        "{}",
        turn.username
    );

    let participant = w
        .livekit
        .connect(&admission.livekit_token)
        .expect("LiveKit accepts it");
    assert_eq!(participant.identity, "@bob:localhost:B");
    assert_eq!(
        participant.attributes[koinos_proto::contract::MATRIX_USER_ATTRIBUTE],
        "@bob:localhost"
    );
    assert_eq!(
        participant.attributes[koinos_proto::contract::MATRIX_DEVICE_ATTRIBUTE],
        "B"
    );
    assert!(
        w.livekit.connect(ticket).is_err(),
        "LiveKit refuses the ticket"
    );

    // A member kicked since the ticket was issued is refused at admission.
    w.homeserver.kick(&room, "alice", "bob");
    w.synced().await;
    let refused = w.admit(ticket).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    w.assert_clean();
}

/// ListParticipants, SetParticipantAttribute and MutePublishedTrack reach LiveKit as the
/// narrow operations they are: the fallback attribute only, muting a camera only.
#[tokio::test]
async fn the_gateway_rpcs_reach_livekit_narrowly() {
    let w = World::start().await;
    let room = w.case(&["bob"]).await;
    let name = livekit_room_name(&room);
    let bob = w.in_call(&room, "bob", "B").await;
    let camera = w.livekit.publish_camera(&name, &bob.identity);
    let credential = Some(w.secrets.gateway_credential.as_str());
    let mut grpc = w.control.grpc_client().await;

    let listed = grpc
        .list_participants(as_gateway(
            ListParticipantsRequest {
                livekit_room: name.clone(),
            },
            credential,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.participants.len(), 1);

    let stage = koinos_proto::contract::FallbackStage::Camera.wire();
    let attribute = |key: &str| SetParticipantAttributeRequest {
        livekit_room: name.clone(),
        identity: bob.identity.clone(),
        key: key.to_owned(),
        value: stage.to_owned(),
    };
    grpc.set_participant_attribute(as_gateway(
        attribute(koinos_proto::contract::FALLBACK_ATTRIBUTE),
        credential,
    ))
    .await
    .expect("the fallback stage may be set");
    let refused = grpc
        .set_participant_attribute(as_gateway(
            attribute(koinos_proto::contract::MATRIX_USER_ATTRIBUTE),
            credential,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let now = &w.livekit.participants(&name)[0];
    assert_eq!(
        now.attributes[koinos_proto::contract::FALLBACK_ATTRIBUTE],
        stage
    );
    assert_eq!(
        now.attributes[koinos_proto::contract::MATRIX_USER_ATTRIBUTE],
        "@bob:localhost"
    );
    assert_eq!(w.livekit.served("UpdateParticipant").len(), 1);

    let mute = |muted: bool| MutePublishedTrackRequest {
        livekit_room: name.clone(),
        identity: bob.identity.clone(),
        track_sid: camera.clone(),
        muted,
    };
    let refused = grpc
        .mute_published_track(as_gateway(mute(false), credential))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::InvalidArgument,
        "never an unmute"
    );
    grpc.mute_published_track(as_gateway(mute(true), credential))
        .await
        .expect("a camera may be paused");
    assert!(w.livekit.participants(&name)[0].tracks[0].muted);
    assert_eq!(w.livekit.served("MutePublishedTrack").len(), 1);

    let refused = grpc
        .list_participants(as_gateway(
            ListParticipantsRequest {
                livekit_room: name.clone(),
            },
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    w.assert_clean();
}

/// LiveKit's webhooks must be signed with the API secret.
#[tokio::test]
async fn unsigned_or_wrongly_signed_webhooks_are_refused() {
    let w = World::start().await;
    let body =
        r#"{"event":"participant_joined","room":{"name":"x"},"participant":{"identity":"y"}}"#;
    let post = |auth: Option<String>| {
        let mut request = reqwest::Client::new()
            .post(format!("{}/livekit/webhook", w.control.http))
            .header("content-type", "application/webhook+json")
            .body(body);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(post(None).await, 401);
    let forged = koinos_testkit::control::livekit_admin_token("not-the-secret-not-the-secret-x");
    assert_eq!(post(Some(forged)).await, 401);
    assert_eq!(
        metric(
            &w.control,
            "koinos_control_livekit_webhooks_total{event=\"participant_joined\"}"
        )
        .await,
        0.0
    );
    w.assert_clean();
}
