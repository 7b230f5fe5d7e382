//! Who gets a ticket, and every refusal that needs no real homeserver: non-members, rooms that
//! are not case rooms, forged, foreign and reused OpenID tokens, full calls.

use super::*;

#[tokio::test]
async fn a_joined_member_gets_a_ticket_and_control_creates_the_livekit_room() {
    let w = World::with(|c| {
        c.set("call", "max_participants", "4")
            .set("call", "empty_timeout", "77");
    })
    .await;
    let room = w.case(&["bob"]).await;
    let grant = w.ticket(&room, "bob", "DEV").await;

    let name = livekit_room_name(&room);
    assert_eq!(grant["livekit_room"], name);
    assert_eq!(grant["identity"], "@bob:localhost:DEV");
    assert_eq!(grant["url"], "ws://127.0.0.1:7880");
    let claims = jwt_claims(grant["jwt"].as_str().unwrap());
    assert_eq!(claims["sub"], "@bob:localhost:DEV");
    assert_eq!(claims["video"]["room"], name);
    // A ticket, not a LiveKit token: LiveKit refuses it.
    assert!(w.livekit.connect(grant["jwt"].as_str().unwrap()).is_err());

    // LiveKit runs without auto-create: control made the room, with the configured limits.
    let created = w.livekit.served("CreateRoom");
    assert_eq!(created.len(), 1, "{created:?}");
    let rooms = w.livekit.rooms();
    let made = &rooms.get(&name).expect("the call's room exists").create;
    assert_eq!(made.max_participants, 4);
    assert_eq!(made.empty_timeout, 77);
    assert_eq!(rooms.len(), 1);
    // The homeserver vouched for bob once.
    assert_eq!(w.homeserver.userinfo_requests(), 1);
    w.assert_clean();
}

/// The same for lk-jwt-service's endpoints (Element Call): the same room, the same gate.
#[tokio::test]
async fn element_calls_endpoints_land_in_the_same_livekit_room() {
    let w = World::start().await;
    let room = w.case(&["bob"]).await;
    let (status, legacy) = w
        .post_as("sfu/get", "bob", json!({"room": room, "device_id": "EC"}))
        .await;
    assert_eq!(status, 200, "{legacy}");
    let (status, msc4195) = w.post_as("get_token", "bob", json!({"room_id": room, "slot_id": "m.call#ROOM",
                "member": {"id": "m1", "claimed_user_id": "@bob:localhost", "claimed_device_id": "EC2"}})).await;
    assert_eq!(status, 200, "{msc4195}");
    let name = livekit_room_name(&room);
    for grant in [&legacy, &msc4195] {
        assert_eq!(
            jwt_claims(grant["jwt"].as_str().unwrap())["video"]["room"],
            name
        );
    }
    // Someone else's user id claimed: refused.
    let (status, body) = w.post_as("get_token", "bob", json!({"room_id": room, "slot_id": "m.call#ROOM",
                "member": {"id": "m1", "claimed_user_id": "@alice:localhost", "claimed_device_id": "EC2"}})).await;
    assert_refused(status, &body, 401, "M_UNAUTHORIZED");
    assert_nothing_issued(&body);
    assert_eq!(w.livekit.rooms().keys().collect::<Vec<_>>(), vec![&name]);
    w.assert_clean();
}

/// The refusals of `tests/stack/tokens.rs` that need no real Synapse, on every endpoint that
/// issues something: each the Matrix-shaped error, nothing issued, no LiveKit room made.
#[tokio::test]
async fn non_members_and_rooms_that_are_not_cases_are_refused_and_nothing_is_issued() {
    let w = World::start().await;
    let hs = &w.homeserver;
    // carol: invited, never joined; dave: joined then left; erin: banned; frank: a member of
    // rooms that are not case rooms.
    let case = hs.case_room("alice", &["bob", "dave", "erin"]);
    hs.invite(&case, "alice", "carol");
    hs.leave(&case, "dave");
    hs.ban(&case, "alice", "erin");
    let plain = hs.create_room("alice", None);
    hs.join(&plain, "frank");
    hs.invite(&plain, "alice", &hs.service_user());
    // A room of another type that control is in (joined before it served cases only).
    let other = hs.create_room("alice", Some("org.example.other"));
    hs.join(&other, "frank");
    hs.join(&other, &hs.service_user());
    w.synced().await;
    // Bob's ticket first: a refusal below is not "control is not in the case".
    w.ticket(&case, "bob", "DEV").await;

    let cases: &[(&str, &str)] = &[
        ("mallory", &case),
        ("carol", &case),
        ("dave", &case),
        ("erin", &case),
        ("frank", &plain),
        ("frank", &other),
        ("bob", "!unknown:localhost"),
    ];
    for (user, room) in cases {
        for path in ["token", "turn", "sfu/get"] {
            let openid = hs.issue_openid(user);
            let body = match path {
                "sfu/get" => json!({"room": room, "openid_token": openid, "device_id": "D"}),
                "turn" => json!({"room_id": room, "openid_token": openid}),
                _ => json!({"room_id": room, "openid_token": openid, "device_id": "D"}),
            };
            let (status, answer) = w.control.post(path, &body).await;
            assert_eq!(
                (status, answer["errcode"].as_str()),
                (403, Some("M_FORBIDDEN")),
                "{user} {path} {room}: {answer}"
            );
            assert_nothing_issued(&answer);
        }
    }
    // Control declined the invite to the plain room and left the other-typed one.
    wait_for(5, "control leaves rooms that are not cases", || async {
        hs.membership(&plain, &hs.service_user()).as_deref() == Some("leave")
            && hs.membership(&other, &hs.service_user()).as_deref() == Some("leave")
    })
    .await;
    assert_eq!(
        w.livekit.rooms().into_keys().collect::<Vec<_>>(),
        vec![livekit_room_name(&case)],
        "only bob's call has a LiveKit room"
    );
    w.assert_clean();
}

#[tokio::test]
async fn forged_foreign_and_reused_openid_tokens_are_401() {
    let w = World::start().await;
    let room = w.case(&["bob"]).await;
    let hs = &w.homeserver;
    let refused = |status: u16, body: &Value, why: &str| {
        assert_eq!(
            (status, body["errcode"].as_str()),
            (401, Some("M_UNAUTHORIZED")),
            "{why}: {body}"
        );
        assert_nothing_issued(body);
    };

    let forged = json!({"access_token": "forgedforgedforged", "token_type": "Bearer",
        "matrix_server_name": "localhost", "expires_in": 3600});
    let (status, body) = w.control.token(&room, &forged, "D").await;
    refused(status, &body, "a token the homeserver does not know");
    assert_eq!(hs.userinfo_requests(), 1, "the homeserver was asked");

    // A genuine token presented as another server's: control asks nobody (no SSRF, no
    // federation trust), not even its own homeserver.
    let mut foreign = hs.issue_openid("bob");
    foreign["matrix_server_name"] = json!("evil.example");
    let (status, body) = w.control.token(&room, &foreign, "D").await;
    refused(status, &body, "a token naming another server");
    assert_eq!(
        hs.userinfo_requests(),
        1,
        "nobody was asked about evil.example"
    );

    // Our homeserver vouching for a user of another server.
    let lying = hs.issue_openid_naming("@bob:evil.example");
    let (status, body) = w.control.token(&room, &lying, "D").await;
    refused(status, &body, "a user of another server");

    // Single use: the second redemption of a genuine token is refused on every endpoint.
    let openid = hs.issue_openid("bob");
    assert_eq!(w.control.token(&room, &openid, "D").await.0, 200);
    for (path, body) in [
        (
            "token",
            json!({"room_id": room, "openid_token": openid, "device_id": "D"}),
        ),
        ("turn", json!({"room_id": room, "openid_token": openid})),
        ("end", json!({"room_id": room, "openid_token": openid})),
    ] {
        let (status, answer) = w.control.post(path, &body).await;
        refused(status, &answer, path);
    }
    assert_eq!(
        w.livekit.served("CreateRoom").len(),
        1,
        "only the genuine request made the room"
    );
    w.assert_clean();
}

/// Control answers "call full" and "too many devices" early, from LiveKit's own listing.
#[tokio::test]
async fn a_full_call_and_a_third_device_are_refused_with_409() {
    let w = World::with(|c| {
        c.set("call", "max_participants", "3");
    })
    .await;
    let room = w.case(&["bob", "carol", "dave"]).await;
    w.in_call(&room, "bob", "B1").await;
    w.in_call(&room, "bob", "B2").await;
    let (status, body) = w.token(&room, "bob", "B3").await;
    assert_refused(status, &body, 409, "M_LIMIT_EXCEEDED");
    assert_nothing_issued(&body);

    w.in_call(&room, "carol", "C1").await;
    assert_eq!(w.livekit.participants(&livekit_room_name(&room)).len(), 3);
    let (status, body) = w.token(&room, "dave", "D1").await;
    assert_refused(status, &body, 409, "M_LIMIT_EXCEEDED");
    assert_nothing_issued(&body);
    w.assert_clean();
}

/// A practitioner who joined after control's last successful sync is confirmed with the
/// homeserver rather than refused from a stale memory.
#[tokio::test]
async fn a_member_control_has_not_synced_yet_is_confirmed_with_the_homeserver() {
    let w = World::start().await;
    let room = w.case(&["bob"]).await;
    // No sync gets through from now on; the state is still fresh enough to answer from.
    w.homeserver.set_failing(Failing::Sync);
    w.homeserver.join(&room, "carol");
    let (status, grant) = w.token(&room, "carol", "NEW").await;
    assert_eq!(status, 200, "{grant}");
    let asked = format!("GET /_matrix/client/v3/rooms/{room}/state/m.room.member/@carol:localhost");
    assert!(
        w.homeserver.requests().contains(&asked),
        "control asked the homeserver about carol: {:?}",
        w.homeserver.requests()
    );
    w.assert_clean();
}

/// The per-address limit comes before anything costs a homeserver lookup.
#[tokio::test]
async fn the_per_address_limit_refuses_before_the_homeserver_is_asked() {
    let w = World::with(|c| {
        c.set("call", "rate_limit_per_address_burst", "2").set(
            "call",
            "rate_limit_per_address_per_minute",
            "1",
        );
    })
    .await;
    let room = w.case(&["bob"]).await;
    w.ticket(&room, "bob", "A").await;
    w.ticket(&room, "bob", "B").await;
    let (status, body) = w.token(&room, "bob", "C").await;
    assert_refused(status, &body, 429, "M_LIMIT_EXCEEDED");
    assert!(
        body["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{body}"
    );
    assert_nothing_issued(&body);
    assert_eq!(
        w.homeserver.userinfo_requests(),
        2,
        "the third was not looked up"
    );
    w.assert_clean();
}

/// The per-user limit counts the verified user, whatever tokens they bring; others are not
/// affected.
#[tokio::test]
async fn the_per_user_limit_refuses_that_user_only() {
    let w = World::with(|c| {
        c.set("call", "rate_limit_burst", "2")
            .set("call", "rate_limit_per_minute", "1");
    })
    .await;
    let room = w.case(&["bob", "carol"]).await;
    w.ticket(&room, "bob", "A").await;
    w.ticket(&room, "bob", "B").await;
    let (status, body) = w
        .control
        .turn(&room, &w.homeserver.issue_openid("bob"))
        .await;
    assert_refused(status, &body, 429, "M_LIMIT_EXCEEDED");
    assert_nothing_issued(&body);
    w.ticket(&room, "carol", "C").await;
    w.assert_clean();
}
