//! What control does in the homeserver by itself: accepting invites to case rooms only,
//! clearing call memberships forged into someone else's slot, and clearing ghosts.

use super::*;

#[tokio::test]
async fn control_accepts_invites_to_case_rooms_and_declines_every_other() {
    let w = World::start().await;
    let hs = &w.homeserver;
    let control = hs.service_user();
    let case = hs.create_room("alice", Some(koinos_proto::contract::CASE_ROOM_TYPE));
    hs.join(&case, "bob");
    let plain = hs.create_room("alice", None);
    let space = hs.create_room("alice", Some("m.space"));
    for room in [&case, &plain, &space] {
        hs.invite(room, "alice", &control);
    }
    wait_for(5, "control answers every invite", || async {
        [&case, &plain, &space]
            .iter()
            .all(|room| hs.membership(room, &control).as_deref() != Some("invite"))
    })
    .await;
    assert_eq!(hs.membership(&case, &control).as_deref(), Some("join"));
    assert_eq!(hs.membership(&plain, &control).as_deref(), Some("leave"));
    assert_eq!(hs.membership(&space, &control).as_deref(), Some("leave"));
    // And the case it joined is served at once.
    w.synced().await;
    w.ticket(&case, "bob", "D").await;
    w.assert_clean();
}

/// The homeserver fails control's join once it was invited into a new case: the invite is
/// seen once, so control tries the join again until it is in (without, every call in that case
/// would be refused until control restarts).
#[tokio::test]
async fn a_join_the_homeserver_failed_is_tried_again() {
    let w = World::start().await;
    let hs = &w.homeserver;
    let control = hs.service_user();
    let case = hs.create_room("alice", Some(koinos_proto::contract::CASE_ROOM_TYPE));
    hs.join(&case, "bob");
    hs.set_failing(Failing::Joins);
    hs.invite(&case, "alice", &control);
    let joins = || {
        hs.requests()
            .iter()
            .filter(|r| r.starts_with("POST") && r.contains(&case) && r.contains("join"))
            .count()
    };
    // Both tries of the one request (the Matrix client's own retry) fail.
    wait_for(10, "control tried to join, twice", || async {
        joins() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hs.membership(&case, &control).as_deref(), Some("invite"));
    hs.set_failing(Failing::No);
    wait_for(20, "control joined once the homeserver let it", || async {
        hs.membership(&case, &control).as_deref() == Some("join")
    })
    .await;
    w.synced().await;
    w.ticket(&case, "bob", "D").await;
    w.assert_clean();
}

/// mallory writes a call membership into bob's slot: not believed, and cleared by control (an
/// empty content from control's account in that slot).
#[tokio::test]
async fn a_call_membership_forged_into_someone_elses_slot_is_cleared() {
    let w = World::start().await;
    let hs = &w.homeserver;
    let room = w.case(&["bob", "mallory"]).await;
    let bobs_own = hs.call_membership(&room, "bob", "BOBDEV", &w.control.public_rtc_service_url);
    let forged_key = "_@bob:localhost_FAKE_m.call";
    let content = koinos_testkit::matrix::call_member_content(&room, "FAKE");
    hs.put_state(
        &room,
        "mallory",
        koinos_testkit::matrix::CALL_MEMBER,
        forged_key,
        content,
    );

    wait_for(5, "control clears the forged membership", || async {
        hs.state_event(&room, koinos_testkit::matrix::CALL_MEMBER, forged_key)
            .is_some_and(|e| e["sender"] == hs.service_user().as_str() && e["content"] == json!({}))
    })
    .await;
    let own = hs
        .state_event(&room, koinos_testkit::matrix::CALL_MEMBER, &bobs_own)
        .unwrap();
    assert_eq!(
        own["sender"], "@bob:localhost",
        "bob's own membership is untouched"
    );
    assert_ne!(own["content"], json!({}));
    assert_eq!(
        metric(
            &w.control,
            "koinos_control_forged_call_memberships_total{action=\"cleared\"}"
        )
        .await,
        1.0
    );
    w.assert_clean();
}

/// The reaper: a membership whose device has no participant for `call.ghost_after` is cleared;
/// one whose participant is in the call stays; one of a member kicked from the case is cleared
/// at once.
#[tokio::test]
async fn ghost_memberships_are_cleared_and_live_ones_kept() {
    let w = World::with(|c| {
        c.set("call", "ghost_after", "5")
            .set("call", "reconcile_interval", "1");
    })
    .await;
    let hs = &w.homeserver;
    let url = w.control.public_rtc_service_url.clone();
    let room = w.case(&["bob", "carol", "dave"]).await;
    w.in_call(&room, "bob", "BOBDEV").await;
    let bob = hs.call_membership(&room, "bob", "BOBDEV", &url);
    let carol = hs.call_membership(&room, "carol", "GHOST", &url);
    let dave = hs.call_membership(&room, "dave", "DAVEDEV", &url);
    // A membership on another JWT service (another SFU) is none of control's business.
    let elsewhere = hs.call_membership(&room, "alice", "ELSEWHERE", "https://other.example/rtc");
    let cleared = |key: &str| {
        hs.state_event(&room, koinos_testkit::matrix::CALL_MEMBER, key)
            .is_some_and(|e| e["content"] == json!({}) && e["sender"] == hs.service_user().as_str())
    };

    hs.kick(&room, "alice", "dave");
    wait_for(
        4,
        "the kicked member's membership is cleared without grace",
        || async { cleared(&dave) },
    )
    .await;
    assert!(!cleared(&carol), "carol's grace has not run out yet");

    wait_for(10, "the ghost is cleared after ghost_after", || async {
        cleared(&carol)
    })
    .await;
    assert!(!cleared(&bob), "bob is in the call");
    assert!(!cleared(&elsewhere), "not control's to judge");
    assert_eq!(
        metric(&w.control, "koinos_control_ghost_memberships_cleared_total").await,
        2.0
    );
    w.assert_clean();
}
