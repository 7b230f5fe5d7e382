//! Continuous enforcement: who is no longer a member is taken out of the call, by the
//! membership sync's revocations and by judging every LiveKit room against the membership.

use super::*;

/// The sync path alone (the periodic judgement is set to a minute, after its first run at
/// start): a kick seen in `/sync` removes the kicked member's participant, only theirs.
#[tokio::test]
async fn a_member_kicked_during_a_call_is_removed_from_livekit_by_the_sync_loop() {
    let w = World::with(|c| {
        c.set("call", "enforce_interval", "60");
    })
    .await;
    let room = w.case(&["bob", "carol"]).await;
    let name = livekit_room_name(&room);
    let bob = w.in_call(&room, "bob", "B").await;
    let carol = w.in_call(&room, "carol", "C").await;
    assert_eq!(w.livekit.participants(&name).len(), 2);
    assert!(w.livekit.removed().is_empty());

    w.homeserver.kick(&room, "alice", "bob");
    wait_for(3, "bob's participant is removed", || async {
        !w.livekit.removed().is_empty()
    })
    .await;
    assert_eq!(
        w.livekit.removed(),
        vec![(name.clone(), bob.identity.clone())]
    );
    let left: Vec<String> = w
        .livekit
        .participants(&name)
        .into_iter()
        .map(|p| p.identity)
        .collect();
    assert_eq!(left, vec![carol.identity]);
    // And no new ticket for him.
    let (status, body) = w.token(&room, "bob", "B").await;
    assert_refused(status, &body, 403, "M_FORBIDDEN");
    w.assert_clean();
}

/// A ban, and a leave, are revocations too; and the revocation reaches gateways first.
#[tokio::test]
async fn a_ban_is_published_to_gateways_and_removes_the_participant() {
    let w = World::with(|c| {
        c.set("call", "enforce_interval", "60");
    })
    .await;
    let room = w.case(&["bob"]).await;
    let bob = w.in_call(&room, "bob", "B").await;
    let mut revocations = w
        .control
        .grpc_client()
        .await
        .watch_revocations(as_gateway(
            koinos_proto::v1::WatchRevocationsRequest {
                open_sessions: vec![],
            },
            Some(&w.secrets.gateway_credential),
        ))
        .await
        .expect("a gateway may watch revocations")
        .into_inner();
    let first = revocations.message().await.unwrap().unwrap();
    assert!(
        matches!(
            first.event,
            Some(koinos_proto::v1::watch_revocations_response::Event::CaughtUp(_))
        ),
        "{first:?}"
    );

    w.homeserver.ban(&room, "alice", "bob");
    let next = tokio::time::timeout(Duration::from_secs(3), revocations.message())
        .await
        .expect("a revocation within 3 s")
        .unwrap()
        .unwrap();
    match next.event {
        Some(koinos_proto::v1::watch_revocations_response::Event::Revocation(r)) => {
            assert_eq!(r.user_id, "@bob:localhost");
            assert_eq!(r.room_id, room);
            assert_eq!(r.livekit_room, livekit_room_name(&room));
            assert!(!r.whole_room);
        }
        other => panic!("expected bob's revocation, got {other:?}"),
    }
    wait_for(3, "bob's participant is removed", || async {
        w.livekit.removed() == vec![(livekit_room_name(&room), bob.identity.clone())]
    })
    .await;
    w.assert_clean();
}

/// The periodic judgement: a participant whose Matrix user is not a member, one who names no
/// Matrix user, and a LiveKit room of no case room are all gone within a few intervals.
#[tokio::test]
async fn the_periodic_judgement_removes_intruders_and_deletes_rooms_of_no_case() {
    let w = World::start().await;
    let room = w.case(&["bob"]).await;
    let name = livekit_room_name(&room);
    let bob = w.in_call(&room, "bob", "B").await;
    let user_attribute = koinos_proto::contract::MATRIX_USER_ATTRIBUTE;
    w.livekit.add_participant(
        &name,
        "@mallory:localhost:M",
        &[(user_attribute, "@mallory:localhost")],
    );
    w.livekit.add_participant(&name, "no-matrix-user", &[]);
    w.livekit.create_room("a-room-nobody-should-have");

    wait_for(
        5,
        "both intruders removed and the stray room deleted",
        || async {
            w.livekit.removed().len() == 2
                && !w.livekit.rooms().contains_key("a-room-nobody-should-have")
        },
    )
    .await;
    let mut removed: Vec<String> = w
        .livekit
        .removed()
        .into_iter()
        .map(|(_, identity)| identity)
        .collect();
    removed.sort();
    assert_eq!(removed, vec!["@mallory:localhost:M", "no-matrix-user"]);
    let left: Vec<String> = w
        .livekit
        .participants(&name)
        .into_iter()
        .map(|p| p.identity)
        .collect();
    assert_eq!(left, vec![bob.identity], "the member stays");
    assert_eq!(
        w.livekit
            .served("DeleteRoom")
            .iter()
            .map(|c| c.room.as_str())
            .collect::<Vec<_>>(),
        vec!["a-room-nobody-should-have"]
    );
    for action in [
        "removed_not_member",
        "removed_no_matrix_user",
        "room_deleted_no_case",
    ] {
        let sample = format!("koinos_control_enforcement_actions_total{{action=\"{action}\"}}");
        assert_eq!(metric(&w.control, &sample).await, 1.0, "{action}");
    }
    w.assert_clean();
}

/// Nothing is removed on a guess: with the membership state stale, an intruder stays until
/// control knows again.
#[tokio::test]
async fn nobody_is_removed_while_membership_is_unknown() {
    let w = World::with(|c| {
        c.set("homeserver", "max_sync_staleness", "2");
    })
    .await;
    let room = w.case(&["bob"]).await;
    let name = livekit_room_name(&room);
    w.in_call(&room, "bob", "B").await;
    w.homeserver.set_failing(Failing::Sync);
    wait_for(10, "not ready once stale", || async {
        w.control.get("/readyz").await.0 == 503
    })
    .await;
    w.livekit.add_participant(
        &name,
        "@mallory:localhost:M",
        &[(
            koinos_proto::contract::MATRIX_USER_ATTRIBUTE,
            "@mallory:localhost",
        )],
    );
    tokio::time::sleep(SETTLE).await;
    assert!(
        w.livekit.removed().is_empty(),
        "removed while unknown: {:?}",
        w.livekit.removed()
    );
    assert!(w.livekit.served("DeleteRoom").is_empty());

    w.homeserver.set_failing(Failing::No);
    wait_for(
        15,
        "mallory removed once membership is known again",
        || async { w.livekit.removed() == vec![(name.clone(), "@mallory:localhost:M".to_owned())] },
    )
    .await;
    w.assert_clean();
}

/// Control removed from a case room can vouch for nobody in its call: the call ends.
#[tokio::test]
async fn control_kicked_from_a_case_ends_its_call() {
    let w = World::start().await;
    let room = w.case(&["bob"]).await;
    w.in_call(&room, "bob", "B").await;
    let name = livekit_room_name(&room);
    w.homeserver
        .kick(&room, "alice", &w.homeserver.service_user());
    wait_for(3, "the call's LiveKit room is deleted", || async {
        !w.livekit.rooms().contains_key(&name)
    })
    .await;
    assert!(
        w.livekit
            .served("DeleteRoom")
            .iter()
            .any(|c| c.room == name)
    );
    let (status, body) = w.token(&room, "bob", "B").await;
    assert_refused(status, &body, 403, "M_FORBIDDEN");
    w.assert_clean();
}
