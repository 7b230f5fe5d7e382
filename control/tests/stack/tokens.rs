//! Who gets a ticket, and every refusal: non-members, forged, expired, reused and malformed requests.

use super::*;

#[tokio::test]
async fn a_members_ticket_joins_through_the_gateway_and_livekit_refuses_it() {
    let Some(_logs) = stack::up() else { return };
    let room = demo_room();
    let (status, grant) = post_token(
        &json!({"room_id": room, "openid_token": openid("carol").await, "device_id": "STACKTEST"}),
    )
    .await;
    assert_eq!(status, 200, "{grant}");
    assert_eq!(grant["identity"], "@carol:localhost:STACKTEST");
    assert_eq!(grant["url"], "ws://localhost:7880");
    let ticket = grant["jwt"].as_str().unwrap();
    // Shaped like a LiveKit token, for Element Call and livekit-client...
    let claims = jwt_claims(ticket);
    assert_eq!(claims["sub"], "@carol:localhost:STACKTEST");
    assert_eq!(claims["video"]["room"], grant["livekit_room"]);

    match first_signal(GATEWAY_WS, ticket).await.unwrap() {
        signal_response::Message::Join(join) => {
            assert_eq!(
                join.participant.unwrap().identity,
                "@carol:localhost:STACKTEST"
            );
            assert_eq!(
                join.room.unwrap().name,
                grant["livekit_room"].as_str().unwrap()
            );
        }
        other => panic!("expected join, got {other:?}"),
    }
    // ...but no LiveKit token: LiveKit itself refuses it, so nobody reaches a call but through
    // a gateway that asked control.
    assert_eq!(http_status(first_signal(LIVEKIT_WS, ticket).await), 401);
}

#[tokio::test]
async fn non_member_is_refused_with_403() {
    let Some(_logs) = stack::up() else { return };
    let (status, body) = post_token(
        &json!({"room_id": demo_room(), "openid_token": openid("mallory").await, "device_id": "D"}),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(body["errcode"], "M_FORBIDDEN");
    assert!(body.get("jwt").is_none());
}

#[tokio::test]
async fn unknown_room_gets_the_same_403() {
    let Some(_logs) = stack::up() else { return };
    let (status, body) = post_token(&json!({"room_id": "!doesnotexist:localhost", "openid_token": openid("alice").await, "device_id": "D"})).await;
    assert_eq!(status, 403);
    assert_eq!(body["errcode"], "M_FORBIDDEN");
}

#[tokio::test]
async fn forged_or_foreign_openid_tokens_are_401() {
    let Some(_logs) = stack::up() else { return };
    let room = demo_room();
    let forged = json!({"access_token": "forgedforgedforged", "token_type": "Bearer", "matrix_server_name": "localhost", "expires_in": 3600});
    let (status, body) =
        post_token(&json!({"room_id": room, "openid_token": forged, "device_id": "D"})).await;
    assert_refused(status, &body, 401, "M_UNAUTHORIZED");

    let mut foreign = openid("alice").await;
    foreign["matrix_server_name"] = json!("evil.example");
    let (status, body) =
        post_token(&json!({"room_id": room, "openid_token": foreign, "device_id": "D"})).await;
    assert_refused(status, &body, 401, "M_UNAUTHORIZED");
}

/// Makes a genuinely issued OpenID token expired in the homeserver's own database (Synapse
/// stores `ts_valid_until_ms` per token and checks it on every userinfo request).
fn expire_in_homeserver(openid_token: &str) {
    let db = dev_dir().join("synapse/homeserver.db");
    let status = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1], timeout=30)\n\
             n = c.execute('UPDATE open_id_tokens SET ts_valid_until_ms = 1 WHERE token = ?', (sys.argv[2],)).rowcount\n\
             c.commit()\n\
             sys.exit(0 if n == 1 else 3)",
        ])
        .arg(&db)
        .arg(openid_token)
        .status()
        .expect("python3 runs");
    assert!(
        status.success(),
        "could not expire the token in {}",
        db.display()
    );
}

#[tokio::test]
async fn expired_openid_token_is_401() {
    let Some(_logs) = stack::up() else { return };
    let room = demo_room();
    let token = openid("dave").await;
    let request = json!({"room_id": room, "openid_token": token, "device_id": "EXPIRY"});
    let (status, body) = post_token(&request).await;
    assert_eq!(status, 200, "the token works before it expires: {body}");

    expire_in_homeserver(token["access_token"].as_str().unwrap());
    let (status, body) = post_token(&request).await;
    assert_refused(status, &body, 401, "M_UNAUTHORIZED");
    assert!(body.get("jwt").is_none());
}

#[tokio::test]
async fn malformed_bodies_are_400_and_issue_nothing() {
    let Some(_logs) = stack::up() else { return };
    let response = reqwest::Client::new()
        .post(format!("{CONTROL}/api/rtc/token"))
        .header("content-type", "application/json")
        .body("{\"room_id\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errcode"], "M_NOT_JSON");

    let (status, body) = post_token(&json!({"room_id": demo_room(), "openid_token": openid("alice").await, "device_id": "D", "grants": {"roomAdmin": true}})).await;
    assert_eq!(status, 400);
    assert_eq!(body["errcode"], "M_BAD_JSON");
    assert!(body["error"].as_str().unwrap().contains("grants"), "{body}");
    assert!(body.get("jwt").is_none());
}

#[tokio::test]
async fn wrong_content_type_oversized_and_malformed_room_ids_are_refused() {
    let Some(_logs) = stack::up() else { return };
    let good = json!({"room_id": demo_room(), "openid_token": openid("alice").await, "device_id": "HOSTILE"});
    for path in ["token", "turn", "end", "sfu/get", "get_token"] {
        // A genuine member's body, but not declared as JSON.
        let (status, body) = post_raw(path, "text/plain", serde_json::to_vec(&good).unwrap()).await;
        assert_refused(status, &body, 400, "M_NOT_JSON");
        assert_nothing_issued(&body);
        // Far over the 16 KiB limit: refused before parsing.
        let mut huge = good.clone();
        huge["device_id"] = json!("D".repeat(64 * 1024));
        let (status, body) =
            post_raw(path, "application/json", serde_json::to_vec(&huge).unwrap()).await;
        assert_refused(status, &body, 413, "M_TOO_LARGE");
        assert_nothing_issued(&body);
    }
    for bad_room in [
        "not-a-room",
        "#alias:localhost",
        "!",
        "@alice:localhost",
        "",
    ] {
        let (status, body) = post_token(
            &json!({"room_id": bad_room, "openid_token": openid("alice").await, "device_id": "HOSTILE"}),
        )
        .await;
        assert_refused(status, &body, 400, "M_BAD_JSON");
        assert!(
            body["error"].as_str().unwrap().contains("room_id"),
            "{body}"
        );
        assert_nothing_issued(&body);
    }
}

#[tokio::test]
async fn a_reused_openid_token_is_refused_everywhere() {
    let Some(_logs) = stack::up() else { return };
    let room = demo_room();
    let openid_token = openid("alice").await;
    let (status, grant) =
        post_token(&json!({"room_id": room, "openid_token": openid_token, "device_id": "REUSE"}))
            .await;
    assert_eq!(status, 200, "{grant}");
    // The same (still valid, genuine) OpenID token again, on every endpoint.
    for (path, body) in [
        (
            "token",
            json!({"room_id": room, "openid_token": openid_token, "device_id": "REUSE"}),
        ),
        (
            "turn",
            json!({"room_id": room, "openid_token": openid_token}),
        ),
        (
            "sfu/get",
            json!({"room": room, "openid_token": openid_token, "device_id": "REUSE"}),
        ),
        (
            "end",
            json!({"room_id": room, "openid_token": openid_token}),
        ),
    ] {
        let (status, body) = post_json(path, &body).await;
        assert_refused(status, &body, 401, "M_UNAUTHORIZED");
        assert_nothing_issued(&body);
    }
    // The homeserver itself still vouches for it: the refusal is control's, not an expiry.
    let userinfo: Value = reqwest::get(format!(
        "{HS}/_matrix/federation/v1/openid/userinfo?access_token={}",
        openid_token["access_token"].as_str().unwrap()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(userinfo["sub"], "@alice:localhost");
    let text = reqwest::get(format!("{CONTROL}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"outcome="openid_reused""#),
        "replays are counted apart: {text}"
    );
}

#[tokio::test]
async fn invited_left_and_banned_users_get_no_token() {
    let Some(_logs) = stack::up() else { return };
    let (alice, _) = login("alice").await;
    // carol: invited, never joined; dave: joined then left; erin: joined then banned;
    // frank: joined (the control case, so a 403 below is not "control is not in the room").
    let room = new_case(
        &alice,
        &["carol", "dave", "erin", "frank"],
        &["dave", "erin", "frank"],
    )
    .await;
    let quoted = urlencode(&room);
    let (dave, _) = login("dave").await;
    matrix(
        reqwest::Method::POST,
        &dave,
        &format!("/rooms/{quoted}/leave"),
        json!({}),
    )
    .await;
    matrix(
        reqwest::Method::POST,
        &alice,
        &format!("/rooms/{quoted}/ban"),
        json!({"user_id": "@erin:localhost"}),
    )
    .await;

    let mut frank_ok = false;
    for _ in 0..40 {
        let body =
            json!({"room_id": room, "openid_token": openid("frank").await, "device_id": "HOSTILE"});
        if post_token(&body).await.0 == 200 {
            frank_ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        frank_ok,
        "a joined member of the new case gets a token once control is in it"
    );
    for user in ["carol", "dave", "erin"] {
        for path in ["token", "turn", "sfu/get"] {
            let body = match path {
                "sfu/get" => {
                    json!({"room": room, "openid_token": openid(user).await, "device_id": "HOSTILE"})
                }
                "turn" => json!({"room_id": room, "openid_token": openid(user).await}),
                _ => {
                    json!({"room_id": room, "openid_token": openid(user).await, "device_id": "HOSTILE"})
                }
            };
            let (status, body) = post_json(path, &body).await;
            assert_eq!(
                (status, body["errcode"].as_str()),
                (403, Some("M_FORBIDDEN")),
                "{user} {path}: {body}"
            );
            assert!(body.get("jwt").is_none() && body.get("password").is_none());
        }
    }
}
