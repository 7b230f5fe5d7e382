//! What members get besides tickets, and what hosts may do: TURN credentials, ending the call.

use super::*;

#[tokio::test]
async fn turn_credentials_are_for_members_only_and_signed_with_the_turn_secret() {
    let w = World::with(|c| {
        c.set("turn", "ttl", "600");
    })
    .await;
    let room = w.case(&["bob"]).await;
    let (status, creds) = w
        .control
        .turn(&room, &w.homeserver.issue_openid("bob"))
        .await;
    assert_eq!(status, 200, "{creds}");
    let username = creds["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, "@bob:localhost");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (expiry.parse::<i64>().unwrap() - (now + 600)).abs() <= 5,
        "{username}"
    );
    assert_eq!(creds["ttl"], 600);
    assert_eq!(creds["uris"], json!(["turn:127.0.0.1:3478?transport=udp"]));
    // coturn's REST-API scheme: base64(HMAC-SHA1(static-auth-secret, username)).
    let key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        w.secrets.turn_secret.as_bytes(),
    );
    let expected = base64::engine::general_purpose::STANDARD
        .encode(ring::hmac::sign(&key, username.as_bytes()));
    assert!(
        creds["password"] == expected.as_str(),
        "the password is not coturn's HMAC of the username"
    );

    let (status, body) = w
        .control
        .turn(&room, &w.homeserver.issue_openid("mallory"))
        .await;
    assert_refused(status, &body, 403, "M_FORBIDDEN");
    assert_nothing_issued(&body);
    // TURN credentials make no call.
    assert!(
        w.livekit.calls().iter().all(|c| c.method == "ListRooms"),
        "{:?}",
        w.livekit.calls()
    );
    w.assert_clean();
}

/// A host ends the call: the homeserver's record first (the end event, every membership
/// cleared), then LiveKit's room deleted. Anyone else is refused and nothing happens.
#[tokio::test]
async fn a_host_ends_the_call_for_everyone_and_a_member_cannot() {
    let w = World::with(|c| {
        c.set("call", "enforce_interval", "60");
    })
    .await;
    let hs = &w.homeserver;
    let url = w.control.public_rtc_service_url.clone();
    let room = w.case(&["bob"]).await;
    let name = livekit_room_name(&room);
    w.in_call(&room, "bob", "B").await;
    w.in_call(&room, "alice", "A").await;
    let memberships = [
        hs.call_membership(&room, "bob", "B", &url),
        hs.call_membership(&room, "alice", "A", &url),
    ];
    w.synced().await;

    let (status, body) = w.post_as("end", "bob", json!({"room_id": room})).await;
    assert_refused(status, &body, 403, "M_FORBIDDEN");
    assert!(
        hs.sent_by_control()
            .iter()
            .all(|e| e["type"] == "m.room.member"),
        "nothing sent for bob"
    );
    assert!(w.livekit.rooms().contains_key(&name), "the call goes on");

    let (status, ended) = w.post_as("end", "alice", json!({"room_id": room})).await;
    assert_eq!(status, 200, "{ended}");
    assert_eq!(ended["livekit_room"], name);
    assert_eq!(ended["memberships_cleared"], 2);
    let sent: Vec<Value> = hs
        .sent_by_control()
        .into_iter()
        .filter(|e| e["type"] != "m.room.member")
        .collect();
    assert_eq!(
        sent[0]["type"],
        koinos_proto::contract::CALL_ENDED_EVENT,
        "the end is recorded first: {sent:?}"
    );
    assert_eq!(sent[0]["content"]["ended_by"], "@alice:localhost");
    for key in &memberships {
        let event = hs
            .state_event(&room, koinos_testkit::matrix::CALL_MEMBER, key)
            .unwrap();
        assert_eq!(event["content"], json!({}), "{key} cleared");
    }
    assert!(
        !w.livekit.rooms().contains_key(&name),
        "LiveKit's room is gone"
    );
    assert_eq!(w.livekit.served("DeleteRoom").len(), 1);
    w.assert_clean();
}

/// A host's end of the call holds while LiveKit is away: recorded on the homeserver, 200.
#[tokio::test]
async fn a_call_ended_while_livekit_is_away_is_still_ended_on_the_homeserver() {
    let w = World::start().await;
    let hs = &w.homeserver;
    let room = w.case(&["bob"]).await;
    w.in_call(&room, "bob", "B").await;
    w.livekit.set_down(true);
    let (status, ended) = w.post_as("end", "alice", json!({"room_id": room})).await;
    assert_eq!(status, 200, "{ended}");
    assert!(
        hs.sent_by_control()
            .iter()
            .any(|e| e["type"] == koinos_proto::contract::CALL_ENDED_EVENT)
    );
    assert!(
        w.livekit
            .calls()
            .iter()
            .any(|c| c.method == "DeleteRoom" && c.refused.as_deref() == Some("unavailable"))
    );
    w.livekit.set_down(false);
    w.assert_clean();
}
