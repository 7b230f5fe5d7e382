//! Seats, the host's end of the call, and the Element Call (lk-jwt-service) routes.

use super::*;

#[tokio::test]
async fn the_seventh_participant_is_refused_with_409() {
    let Some(_logs) = stack::up() else { return };
    let room = demo_room();
    let token = |user: &'static str, device: &'static str| {
        let room = room.clone();
        async move {
            let body =
                json!({"room_id": room, "openid_token": openid(user).await, "device_id": device});
            post_token(&body).await
        }
    };
    let mut sessions = Vec::new();
    for user in ["alice", "bob", "carol", "dave", "erin", "frank"] {
        let (status, grant) = token(user, "FULLTEST").await;
        assert_eq!(status, 200, "{user}: {grant}");
        sessions.push(Session::join(GATEWAY_WS, grant["jwt"].as_str().unwrap()).await);
    }

    // A seventh identity (alice's second device) is refused a token, with a clear error.
    let (status, body) = token("alice", "SEVENTH").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
    assert!(body["error"].as_str().unwrap().contains("full"), "{body}");
    assert!(body.get("jwt").is_none());

    // Someone already in the call may rejoin (a reload), and once one leaves there is room.
    let (status, _) = token("bob", "FULLTEST").await;
    assert_eq!(status, 200);
    sessions.pop().unwrap().leave().await;
    let mut answer = (0, Value::Null);
    for _ in 0..20 {
        answer = token("alice", "SEVENTH").await;
        if answer.0 == 200 {
            break;
        }
        // LiveKit drops a participant that sent `leave` within moments; poll, don't assume.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(answer.0, 200, "{}", answer.1);
    for session in sessions {
        session.leave().await;
    }
}

async fn post_end(user: &str, room: &str) -> (u16, Value) {
    post_json(
        "end",
        &json!({"room_id": room, "openid_token": openid(user).await}),
    )
    .await
}

#[tokio::test]
async fn only_the_host_ends_the_call_for_everyone() {
    let Some(_logs) = stack::up() else { return };
    let room = demo_room();
    let bob_key = put_call_membership("bob", &room, "ENDTEST").await;
    let carol_key = put_call_membership("carol", &room, "ENDTEST").await;
    let (status, grant) = post_token(
        &json!({"room_id": room, "openid_token": openid("carol").await, "device_id": "ENDTEST"}),
    )
    .await;
    assert_eq!(status, 200, "{grant}");
    let mut carol = Session::join(GATEWAY_WS, grant["jwt"].as_str().unwrap()).await;

    // bob is a member but not a host (power level 0 < kick level 50); mallory is no member.
    for user in ["bob", "mallory"] {
        let (status, body) = post_end(user, &room).await;
        assert_eq!(
            (status, body["errcode"].as_str()),
            (403, Some("M_FORBIDDEN")),
            "{user}: {body}"
        );
    }
    assert_eq!(
        call_membership_event(&room, &bob_key).await["content"]["application"],
        "m.call",
        "a refused end changes nothing"
    );

    // alice created the case (room version 12: creators outrank every power level).
    let (status, body) = post_end("alice", &room).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["livekit_room"], grant["livekit_room"]);
    assert!(body["memberships_cleared"].as_u64().unwrap() >= 2, "{body}");
    assert!(
        carol.ended_by_server(Duration::from_secs(15)).await,
        "carol's LiveKit session must be ended"
    );
    for key in [bob_key, carol_key] {
        assert_eq!(
            call_membership_event(&room, &key).await["content"],
            json!({}),
            "{key} must be cleared"
        );
    }
}

#[tokio::test]
async fn element_call_sfu_get_is_served_like_lk_jwt_service() {
    let Some(_logs) = stack::up() else { return };
    let room = demo_room();
    let request =
        json!({"room": room, "openid_token": openid("frank").await, "device_id": "ELEMENTCALL"});
    let (status, body) = post_json("sfu/get", &request).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body.as_object().unwrap().len(),
        2,
        "exactly {{url, jwt}}: {body}"
    );
    assert_eq!(body["url"], "ws://localhost:7880");
    let claims = jwt_claims(body["jwt"].as_str().unwrap());
    // Element Call reads these from the JWT to find its room and itself.
    assert_eq!(claims["sub"], "@frank:localhost:ELEMENTCALL");
    let (_, grant) = post_token(
        &json!({"room_id": room, "openid_token": openid("frank").await, "device_id": "X"}),
    )
    .await;
    assert_eq!(
        claims["video"]["room"], grant["livekit_room"],
        "same LiveKit room as our own page"
    );
    assert_gateway_admits(body["jwt"].as_str().unwrap()).await;

    // Asking for delayed-leave delegation is refused with 400, so Element Call retries without.
    let mut delegated = request.clone();
    delegated["delay_id"] = json!("syd_abc");
    delegated["delay_timeout"] = json!(10000);
    delegated["delay_cs_api_url"] = json!("http://localhost:8008");
    let (status, body) = post_json("sfu/get", &delegated).await;
    assert_refused(status, &body, 400, "M_BAD_JSON");

    let (status, body) = post_json(
        "sfu/get",
        &json!({"room": room, "openid_token": openid("mallory").await, "device_id": "D"}),
    )
    .await;
    assert_refused(status, &body, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn element_call_get_token_derives_the_member_identity() {
    use base64::Engine as _;
    use sha2::Digest as _;
    let Some(_logs) = stack::up() else { return };
    let room = demo_room();
    let member = json!({"id": "member-1", "claimed_user_id": "@erin:localhost", "claimed_device_id": "EXDEVICE"});
    let request = json!({"room_id": room, "slot_id": "m.call#ROOM", "openid_token": openid("erin").await, "member": member});
    let (status, body) = post_json("get_token", &request).await;
    assert_eq!(status, 200, "{body}");
    let claims = jwt_claims(body["jwt"].as_str().unwrap());
    let expected = base64::engine::general_purpose::STANDARD_NO_PAD.encode(sha2::Sha256::digest(
        br#"["@erin:localhost","EXDEVICE","member-1"]"#,
    ));
    assert_eq!(claims["sub"], expected);
    assert_gateway_admits(body["jwt"].as_str().unwrap()).await;

    // Claiming to be someone else than the OpenID token says is refused.
    let mut spoofed = request.clone();
    spoofed["openid_token"] = openid("erin").await;
    spoofed["member"]["claimed_user_id"] = json!("@alice:localhost");
    let (status, body) = post_json("get_token", &spoofed).await;
    assert_refused(status, &body, 401, "M_UNAUTHORIZED");
}

#[tokio::test]
async fn the_homeserver_advertises_control_as_its_matrixrtc_transport() {
    let Some(_logs) = stack::up() else { return };
    let (access, _) = login("alice").await;
    let transports: Value = reqwest::Client::new()
        .get(format!(
            "{HS}/_matrix/client/unstable/org.matrix.msc4143/rtc/transports"
        ))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        transports["rtc_transports"][0]["livekit_service_url"], "http://localhost:8080/api/rtc",
        "{transports}"
    );
    let well_known: Value = reqwest::get(format!("{HS}/.well-known/matrix/client"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        well_known["org.matrix.msc4143.rtc_foci"][0]["livekit_service_url"],
        "http://localhost:8080/api/rtc",
        "{well_known}"
    );
}
