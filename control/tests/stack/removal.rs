//! Removal is enforced for the whole call: kicks, revocations to gateways, control's own removal.

use super::*;

#[tokio::test]
async fn a_member_removed_from_the_case_is_removed_from_the_call() {
    let Some(_logs) = stack::up() else { return };
    let (alice, _) = login("alice").await;
    let room = new_case(&alice, &["carol", "dave"], &["carol", "dave"]).await;
    let quoted = urlencode(&room);

    // Control joins on the invite; until then it cannot vouch for anyone (403).
    let mut sessions = Vec::new();
    for user in ["carol", "dave"] {
        let mut grant = Value::Null;
        for _ in 0..40 {
            let (status, body) = post_token(&json!({"room_id": room, "openid_token": openid(user).await, "device_id": "REVOKE"})).await;
            if status == 200 {
                grant = body;
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let jwt = grant["jwt"]
            .as_str()
            .unwrap_or_else(|| panic!("{user} never got a token"));
        sessions.push(Session::join(GATEWAY_WS, jwt).await);
    }
    let mut dave_session = sessions.pop().unwrap();
    let mut carol_session = sessions.pop().unwrap();

    // alice kicks carol: carol's live session is ended by the server.
    let started = std::time::Instant::now();
    kick(&alice, &room, "@carol:localhost").await;
    assert!(
        carol_session.ended_by_server(Duration::from_secs(15)).await,
        "a kicked member must be removed from the call"
    );
    eprintln!(
        "kick → removed from the call in {:?} (target: 2 s)",
        started.elapsed()
    );

    // dave leaves the case on his own: same.
    let (dave, _) = login("dave").await;
    let started = std::time::Instant::now();
    matrix(
        reqwest::Method::POST,
        &dave,
        &format!("/rooms/{quoted}/leave"),
        json!({}),
    )
    .await;
    assert!(
        dave_session.ended_by_server(Duration::from_secs(15)).await,
        "a member who left must be removed from the call"
    );
    eprintln!(
        "leave → removed from the call in {:?} (target: 2 s)",
        started.elapsed()
    );

    // And neither gets a new token.
    let (status, _) = post_token(
        &json!({"room_id": room, "openid_token": openid("carol").await, "device_id": "REVOKE"}),
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn gateways_are_told_of_revocations_over_grpc() {
    use koinos_proto::v1::{
        WatchRevocationsRequest, control_service_client::ControlServiceClient,
        watch_revocations_response::Event,
    };
    let Some(_logs) = stack::up() else { return };
    let mut client = ControlServiceClient::connect(CONTROL_GRPC).await.unwrap();
    // Without the gateway credential there is no stream; a LiveKit admin token is none.
    let wrong = "not-the-gateway-credential-not-the-gateway-credential";
    let livekit_admin = livekit_admin_token("wrong-secret-wrong-secret-wrong-secret");
    for credential in [None, Some(wrong), Some(livekit_admin.as_str())] {
        let refused = client
            .watch_revocations(as_gateway(WatchRevocationsRequest::default(), credential))
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            tonic::Code::Unauthenticated,
            "{credential:?}"
        );
    }

    let mut stream = client
        .watch_revocations(as_gateway(
            WatchRevocationsRequest::default(),
            Some(&gateway_credential()),
        ))
        .await
        .unwrap()
        .into_inner();
    // A subscriber that holds no session is caught up at once.
    let first = stream.message().await.unwrap().expect("stream open");
    assert!(matches!(first.event, Some(Event::CaughtUp(_))), "{first:?}");
    let (alice, _) = login("alice").await;
    let room = new_case(&alice, &["erin"], &["erin"]).await;
    // Control must be in the room to see the kick: wait until it vouches for erin.
    let mut joined = false;
    for _ in 0..40 {
        let body = json!({"room_id": room, "openid_token": openid("erin").await});
        if post_turn(&body).await.0 == 200 {
            joined = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(joined, "control joins the new case on invite");

    let started = std::time::Instant::now();
    kick(&alice, &room, "@erin:localhost").await;
    let revocation = loop {
        let next = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("a revocation within 5 s")
            .unwrap()
            .expect("stream open");
        // Other tests may revoke in other rooms meanwhile.
        if let Some(Event::Revocation(revocation)) = next.event
            && revocation.room_id == room
        {
            break revocation;
        }
    };
    eprintln!("kick → WatchRevocations in {:?}", started.elapsed());
    assert_eq!(revocation.user_id, "@erin:localhost");
    assert_eq!(
        revocation.livekit_room,
        koinos_control::service::livekit_room_name(&room)
    );
}

#[tokio::test]
async fn removing_control_from_a_case_ends_its_call() {
    let Some(_logs) = stack::up() else { return };
    let (alice, _) = login("alice").await;
    let room = new_case(&alice, &["frank"], &["frank"]).await;
    let jwts = tickets_once_control_is_in(&room, &[("frank", "LOSTROOM")]).await;
    let mut session = Session::join(GATEWAY_WS, &jwts[0]).await;

    // Without control in the room nobody's membership can be checked any more.
    kick(&alice, &room, "@koinos-rtc:localhost").await;
    assert!(
        session.ended_by_server(Duration::from_secs(15)).await,
        "the call of a case control was removed from must end"
    );
    let (status, body) = post_token(
        &json!({"room_id": room, "openid_token": openid("frank").await, "device_id": "LOSTROOM"}),
    )
    .await;
    assert_refused(status, &body, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn a_removed_member_cannot_come_back_with_the_token_they_still_hold() {
    let Some(_logs) = stack::up() else { return };
    let (alice, _) = login("alice").await;
    let room = new_case(&alice, &["carol"], &["carol"]).await;
    let jwts = tickets_once_control_is_in(&room, &[("carol", "REJOIN")]).await;
    let mut session = Session::join(GATEWAY_WS, &jwts[0]).await;

    kick(&alice, &room, "@carol:localhost").await;
    assert!(session.ended_by_server(Duration::from_secs(15)).await);

    // The ticket is still within its TTL: control, asked by the gateway to admit it, checks
    // membership again and refuses it; LiveKit never sees it.
    assert_eq!(http_status(first_signal(GATEWAY_WS, &jwts[0]).await), 403);
    assert_eq!(http_status(first_signal(LIVEKIT_WS, &jwts[0]).await), 401);
}
