//! Fail closed: whatever control cannot know, it refuses, and it issues nothing meanwhile.

use super::*;

#[tokio::test]
async fn an_unreachable_homeserver_refuses_with_503_and_control_recovers_when_it_returns() {
    let mut w = World::start().await;
    let room = w.case(&["bob"]).await;
    let openid = w.homeserver.issue_openid("bob");
    w.homeserver.stop();
    let (status, body) = w.control.token(&room, &openid, "D").await;
    assert_refused(status, &body, 503, "M_UNAVAILABLE");
    assert_nothing_issued(&body);
    let (status, body) = w
        .control
        .turn(&room, &w.homeserver.issue_openid("bob"))
        .await;
    assert_refused(status, &body, 503, "M_UNAVAILABLE");
    assert_nothing_issued(&body);
    assert!(
        w.livekit.served("CreateRoom").is_empty(),
        "no room made while unsure"
    );

    w.homeserver.restart().await;
    // The refused token was never redeemed (the homeserver did not vouch for it): it works now.
    let (status, grant) = w.control.token(&room, &openid, "D").await;
    assert_eq!(status, 200, "{grant}");
    w.assert_clean();
}

#[tokio::test]
async fn a_homeserver_answering_500_refuses_with_503() {
    let w = World::start().await;
    let room = w.case(&["bob"]).await;
    w.homeserver.set_failing(Failing::All);
    for path in ["token", "turn", "end"] {
        let mut body = json!({"room_id": room, "openid_token": w.homeserver.issue_openid("bob")});
        if path == "token" {
            body["device_id"] = json!("D");
        }
        let (status, answer) = w.control.post(path, &body).await;
        assert_refused(status, &answer, 503, "M_UNAVAILABLE");
        assert_nothing_issued(&answer);
    }
    assert!(w.livekit.served("CreateRoom").is_empty());
    assert!(w.livekit.served("DeleteRoom").is_empty());
    w.homeserver.set_failing(Failing::No);
    w.assert_clean();
}

/// OpenID still verifies, but control's membership state is older than
/// `homeserver.max_sync_staleness`: not ready, and every request refused, until sync resumes.
#[tokio::test]
async fn stale_membership_state_is_not_ready_and_refuses_until_sync_resumes() {
    let w = World::with(|c| {
        c.set("homeserver", "max_sync_staleness", "2");
    })
    .await;
    let room = w.case(&["bob"]).await;
    w.homeserver.set_failing(Failing::Sync);
    wait_for(10, "/readyz says 503 once the state is stale", || async {
        w.control.get("/readyz").await.0 == 503
    })
    .await;
    let before = w.homeserver.userinfo_requests();
    let (status, body) = w.token(&room, "bob", "D").await;
    assert_refused(status, &body, 503, "M_UNAVAILABLE");
    assert_nothing_issued(&body);
    assert_eq!(
        w.homeserver.userinfo_requests(),
        before + 1,
        "bob's identity was proven; his membership was not known"
    );
    assert!(w.livekit.served("CreateRoom").is_empty());
    assert!(metric(&w.control, "koinos_control_membership_sync_age_seconds").await >= 2.0);

    w.homeserver.set_failing(Failing::No);
    assert!(
        w.control.ready_within(15).await,
        "ready again once sync resumes"
    );
    w.ticket(&room, "bob", "D").await;
    w.assert_clean();
}

#[tokio::test]
async fn an_unreachable_livekit_refuses_with_a_clear_503_and_no_ticket() {
    let mut w = World::start().await;
    let room = w.case(&["bob"]).await;

    w.livekit.set_down(true);
    let (status, body) = w.token(&room, "bob", "D").await;
    assert_refused(status, &body, 503, "M_UNAVAILABLE");
    assert_nothing_issued(&body);
    assert!(
        !body["error"].as_str().unwrap_or_default().is_empty(),
        "the refusal says why: {body}"
    );
    assert!(
        w.livekit
            .calls()
            .iter()
            .any(|c| c.method == "CreateRoom" && c.refused.as_deref() == Some("unavailable")),
        "control asked LiveKit and was refused: {:?}",
        w.livekit.calls()
    );
    wait_for(10, "/readyz says 503 while LiveKit is away", || async {
        w.control.get("/readyz").await.0 == 503
    })
    .await;

    w.livekit.set_down(false);
    w.livekit.stop();
    let (status, body) = w.token(&room, "bob", "D").await;
    assert_refused(status, &body, 503, "M_UNAVAILABLE");
    assert_nothing_issued(&body);
    assert!(w.livekit.rooms().is_empty());

    w.livekit.restart().await;
    assert!(w.control.ready_within(15).await);
    w.ticket(&room, "bob", "D").await;
    assert_eq!(w.livekit.rooms().len(), 1);
    w.assert_clean();
}

/// Control configured with a LiveKit secret that is not LiveKit's: every RoomService request
/// is refused by LiveKit, control is never ready and issues nothing. (Also what proves the
/// fake checks control's admin tokens, on which every test's `assert_clean` relies.)
#[tokio::test]
async fn a_wrong_livekit_secret_is_caught_and_nothing_is_issued() {
    let secrets = Secrets::generate();
    let homeserver = FakeHomeserver::start().await;
    let livekit = FakeLiveKit::start(LIVEKIT_API_KEY, &secrets.livekit_api_secret).await;
    let control = ControlBuilder::new(
        env!("CARGO_BIN_EXE_koinos-control"),
        &homeserver,
        &livekit,
        &secrets,
    )
    .livekit_secret("not-livekits-secret-not-livekits-secret")
    .no_wait()
    .start(&homeserver)
    .await;
    let room = homeserver.case_room("alice", &["bob"]);
    assert!(homeserver.caught_up().await);
    assert!(!control.ready_within(2).await, "never ready");
    let (status, body) = control
        .token(&room, &homeserver.issue_openid("bob"), "D")
        .await;
    assert_refused(status, &body, 503, "M_UNAVAILABLE");
    assert_nothing_issued(&body);
    assert!(livekit.rooms().is_empty());
    let refused = livekit.unauthorized();
    assert!(
        refused.iter().any(|c| c.method == "CreateRoom"),
        "{refused:?}"
    );
    assert!(
        refused
            .iter()
            .all(|c| c.refused.as_deref() == Some("unauthenticated"))
    );
}

/// A homeserver whose client API answers 500 (its OpenID route still working): a request that
/// needs the homeserver's word on membership is refused promptly, not held while the Matrix
/// client retries by itself for minutes (its default), and control logs why.
#[tokio::test]
async fn a_homeserver_answering_500_to_a_membership_check_gets_a_prompt_refusal() {
    let w = World::start().await;
    let room = w.case(&["bob"]).await;
    w.homeserver.set_failing(Failing::ClientApi);
    // carol is not a member in control's synced state: control asks the homeserver.
    let answer = tokio::time::timeout(Duration::from_secs(30), w.token(&room, "carol", "C")).await;
    let (status, body) =
        answer.expect("control answers within 30 s instead of retrying for minutes");
    assert_refused(status, &body, 503, "M_UNAVAILABLE");
    assert_nothing_issued(&body);
    assert!(w.livekit.served("CreateRoom").is_empty());
    w.homeserver.set_failing(Failing::No);
}

/// Room-state reads answering 502 (a worker behind the homeserver's proxy down) while control
/// judges an intruder: the judgement gives up on what it cannot read (an unknown is never
/// removed) instead of waiting on retries, and a kick seen meanwhile still removes the member.
#[tokio::test]
async fn failing_state_reads_do_not_stall_removals() {
    let w = World::with(|c| {
        c.set("call", "enforce_interval", "1");
    })
    .await;
    let room = w.case(&["bob", "carol"]).await;
    let name = livekit_room_name(&room);
    w.in_call(&room, "bob", "B").await;
    let carol = w.in_call(&room, "carol", "C").await;
    w.homeserver.set_failing(Failing::StateReads);
    let user_attribute = koinos_proto::contract::MATRIX_USER_ATTRIBUTE;
    w.livekit.add_participant(
        &name,
        "@mallory:localhost:M",
        &[(user_attribute, "@mallory:localhost")],
    );
    // A judgement round meets mallory, whom control must ask the homeserver about.
    tokio::time::sleep(Duration::from_secs(2)).await;
    w.homeserver.kick(&room, "alice", "carol");
    wait_for(20, "carol's participant is removed", || async {
        w.livekit
            .removed()
            .iter()
            .any(|(_, identity)| *identity == carol.identity)
    })
    .await;
    w.homeserver.set_failing(Failing::No);
}
