//! Black-box tests of control against the running dev stack: real Synapse, real LiveKit, the
//! real gateway, control's own binary under the supervisor (`dev/stack e2e` starts it).
//! On failure the tail of the components' logs is printed.

use std::time::Duration;

use koinos_testkit::{
    control::{
        as_gateway, assert_nothing_issued, assert_refused, gateway_credential, jwt_claims,
        livekit_admin_token, post_json, post_raw, post_token, post_turn,
        tickets_once_control_is_in,
    },
    matrix::{
        call_membership_event, kick, login, matrix, new_case, openid, put_call_membership,
        urlencode,
    },
    prom::{metric, promtool_check},
    signal::{Session, first_signal, http_status},
    stack::{
        self, CONTROL, CONTROL_GRPC, GATEWAY_HTTP, GATEWAY_WS, HS, LIVEKIT_WS, demo_room, dev_dir,
    },
};
use livekit_protocol::{ParticipantInfo, signal_response};
use prost::Message as _;
use serde_json::{Value, json};

/// A sample of control's metrics.
async fn control_metric(name_and_labels: &str) -> f64 {
    metric(&format!("{CONTROL}/metrics"), name_and_labels).await
}

/// A sample of the first gateway's metrics.
async fn gateway_metric(name_and_labels: &str) -> f64 {
    metric(&format!("{GATEWAY_HTTP}/metrics"), name_and_labels).await
}

/// The gateway admits this ticket into its call.
async fn assert_gateway_admits(ticket: &str) {
    match first_signal(GATEWAY_WS, ticket).await.unwrap() {
        signal_response::Message::Join(_) => {}
        other => panic!("the gateway must admit the ticket, got {other:?}"),
    }
}

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
async fn health_and_readiness() {
    let Some(_logs) = stack::up() else { return };
    for path in ["/healthz", "/readyz"] {
        let status = reqwest::get(format!("{CONTROL}{path}"))
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 200, "{path}");
    }
    let config: Value = reqwest::get(format!("{CONTROL}/config.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["homeserver_url"], "http://localhost:8008");
}

/// Runs coturn's own test client against the dev coturn: allocate a relay with these
/// credentials and send a few packets through it. `Ok(received bytes)` or `Err(output)`.
fn turn_allocation(username: &str, password: &str) -> Result<u64, String> {
    let output = std::process::Command::new("timeout")
        .args(["30", "turnutils_uclient", "-u", username, "-w", password])
        .args([
            "-n",
            "1",
            "-m",
            "1",
            "-l",
            "100",
            "-e",
            "127.0.0.1",
            "-r",
            "3480",
            "-y",
        ])
        .arg("127.0.0.1")
        .output()
        .expect("turnutils_uclient (from the coturn package) runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let received = text
        // Progress lines come first; the last figure is the run's total.
        .rsplit("tot_recv_bytes ~ ")
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.trim_end_matches(',').parse::<u64>().ok());
    match (output.status.success(), received) {
        (true, Some(bytes)) if bytes > 0 => Ok(bytes),
        _ => Err(text),
    }
}

#[tokio::test]
async fn turn_credentials_allocate_on_the_real_coturn_and_tampering_is_refused() {
    let Some(_logs) = stack::up() else { return };
    let (status, creds) =
        post_turn(&json!({"room_id": demo_room(), "openid_token": openid("erin").await})).await;
    assert_eq!(status, 200, "{creds}");
    let username = creds["username"].as_str().unwrap();
    let password = creds["password"].as_str().unwrap();
    assert!(username.ends_with(":@erin:localhost"), "{username}");
    assert_eq!(creds["ttl"], 3600);
    assert!(
        creds["uris"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u == "turn:localhost:3478?transport=udp")
    );

    turn_allocation(username, password).unwrap_or_else(|out| panic!("allocation refused:\n{out}"));

    // A tampered password, and a username whose expiry was moved later, are refused by coturn.
    let mut tampered = password.to_owned();
    tampered.replace_range(0..1, if password.starts_with('A') { "B" } else { "A" });
    assert!(turn_allocation(username, &tampered).is_err());
    let (expiry, user) = username.split_once(':').unwrap();
    let extended = format!("{}:{user}", expiry.parse::<i64>().unwrap() + 86_400);
    assert!(turn_allocation(&extended, password).is_err());
}

#[tokio::test]
async fn an_expired_turn_credential_is_refused_by_coturn() {
    use base64::Engine as _;
    let Some(_logs) = stack::up() else { return };
    // Signed with the real secret exactly as control signs, but expired a minute ago: what a
    // replay of an old credential looks like to coturn.
    let secret = std::fs::read_to_string(dev_dir().join("secrets/turn_secret")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sign = |username: &str| {
        let key = ring::hmac::Key::new(
            ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            secret.trim().as_bytes(),
        );
        base64::engine::general_purpose::STANDARD
            .encode(ring::hmac::sign(&key, username.as_bytes()).as_ref())
    };
    let live = format!("{}:@erin:localhost", now + 600);
    turn_allocation(&live, &sign(&live))
        .unwrap_or_else(|out| panic!("control's scheme must work:\n{out}"));
    let expired = format!("{}:@erin:localhost", now - 60);
    assert!(turn_allocation(&expired, &sign(&expired)).is_err());
}

#[tokio::test]
async fn turn_credentials_are_refused_to_non_members() {
    let Some(_logs) = stack::up() else { return };
    let (status, body) =
        post_turn(&json!({"room_id": demo_room(), "openid_token": openid("mallory").await})).await;
    assert_eq!(status, 403);
    assert_eq!(body["errcode"], "M_FORBIDDEN");
    assert!(body.get("password").is_none());
}

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
async fn metrics_pass_promtool_and_count_outcomes() {
    let Some(_logs) = stack::up() else { return };
    let room = demo_room();
    let (status, _) = post_token(
        &json!({"room_id": room, "openid_token": openid("bob").await, "device_id": "METRICS"}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = post_token(
        &json!({"room_id": room, "openid_token": openid("mallory").await, "device_id": "METRICS"}),
    )
    .await;
    assert_eq!(status, 403);

    let response = reqwest::get(format!("{CONTROL}/metrics")).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let text = response.text().await.unwrap();
    for expected in [
        r#"koinos_control_requests_total{operation="token",outcome="issued"}"#,
        r#"koinos_control_requests_total{operation="token",outcome="forbidden"}"#,
        r#"koinos_control_dependency_latency_seconds_count{dependency="homeserver_openid"}"#,
        r#"koinos_control_dependency_latency_seconds_count{dependency="livekit"}"#,
        "koinos_control_membership_sync_age_seconds ",
        "koinos_control_calls_active ",
    ] {
        assert!(text.contains(expected), "missing {expected} in:\n{text}");
    }
    assert!(!text.contains("eyJ"), "no token may appear in metrics");

    promtool_check(&text);
}

#[tokio::test]
async fn grpc_health_and_reflection_are_served() {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let Some(_logs) = stack::up() else { return };
    let channel = tonic::transport::Endpoint::from_static(CONTROL_GRPC)
        .connect()
        .await
        .expect("control's gRPC port");

    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in ["", "koinos.rtc.v1.ControlService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("reflection must list services");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in ["koinos.rtc.v1.ControlService", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == expected), "{names:?}");
    }
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

/// LiveKit webhooks reporting a participant gone (a signalling-only client's departure is
/// reported as an aborted connection rather than a leave).
async fn departures() -> f64 {
    control_metric(r#"koinos_control_livekit_webhooks_total{event="participant_left"} "#).await
        + control_metric(
            r#"koinos_control_livekit_webhooks_total{event="participant_connection_aborted"} "#,
        )
        .await
}

#[tokio::test]
async fn a_membership_without_its_participant_is_reaped_without_delayed_events() {
    let Some(_logs) = stack::up() else { return };
    let (alice, _) = login("alice").await;
    let room = new_case(&alice, &["bob", "dave"], &["bob", "dave"]).await;
    let jwts = tickets_once_control_is_in(&room, &[("bob", "GHOSTB"), ("dave", "GHOSTD")]).await;
    let bob_session = Session::join(GATEWAY_WS, &jwts[0]).await;
    let dave_session = Session::join(GATEWAY_WS, &jwts[1]).await;
    // Both join the MatrixRTC call with plain state events, as on Tuwunel (no delayed leave).
    let bob_key = put_call_membership("bob", &room, "GHOSTB").await;
    let dave_key = put_call_membership("dave", &room, "GHOSTD").await;
    let webhooks_before = departures().await;

    // dave's client vanishes from LiveKit without ever clearing its membership.
    dave_session.leave().await;
    let left = std::time::Instant::now();
    let mut cleared = Value::Null;
    for _ in 0..90 {
        let event = call_membership_event(&room, &dave_key).await;
        if event["content"] == json!({}) {
            cleared = event;
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!(
        "participant left → ghost membership cleared in {:?}",
        left.elapsed()
    );
    assert_eq!(
        cleared["sender"], "@koinos-rtc:localhost",
        "control's service account clears the ghost: {cleared}"
    );

    // bob, in LiveKit all along (over several reconciliations), keeps his membership.
    let bob = call_membership_event(&room, &bob_key).await;
    assert_eq!(bob["content"]["device_id"], "GHOSTB", "{bob}");
    assert!(
        departures().await > webhooks_before,
        "LiveKit's participant_left webhook reached control and was verified"
    );
    assert!(control_metric("koinos_control_ghost_memberships_cleared_total ").await >= 1.0);
    bob_session.leave().await;
}

/// A member removed from the case cannot clear their own call membership (the homeserver
/// refuses their leave, and a delayed leave fails the same way), so control clears it as soon
/// as it sees them gone, not after the ghost grace: no removed colleague listed in the call.
#[tokio::test]
async fn a_removed_members_call_membership_is_cleared_at_once() {
    let Some(_logs) = stack::up() else { return };
    let (alice, _) = login("alice").await;
    let room = new_case(&alice, &["bob", "dave"], &["bob", "dave"]).await;
    let jwts = tickets_once_control_is_in(&room, &[("bob", "GONEB"), ("dave", "GONED")]).await;
    let bob_session = Session::join(GATEWAY_WS, &jwts[0]).await;
    let dave_session = Session::join(GATEWAY_WS, &jwts[1]).await;
    let bob_key = put_call_membership("bob", &room, "GONEB").await;
    let dave_key = put_call_membership("dave", &room, "GONED").await;

    kick(&alice, &room, "@dave:localhost").await;
    let kicked = std::time::Instant::now();
    let mut cleared = Value::Null;
    // Well inside the ghost grace (call.ghost_after, 30 s on the dev stack), which is what
    // would clear it without this rule.
    for _ in 0..60 {
        let event = call_membership_event(&room, &dave_key).await;
        if event["content"] == json!({}) {
            cleared = event;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "kick → removed member's call membership cleared in {:?}",
        kicked.elapsed()
    );
    assert_eq!(
        cleared["sender"], "@koinos-rtc:localhost",
        "control clears a removed member's call membership within 15 s: {cleared}"
    );
    let bob = call_membership_event(&room, &bob_key).await;
    assert_eq!(
        bob["content"]["device_id"], "GONEB",
        "a member who stayed keeps it: {bob}"
    );
    drop(dave_session);
    bob_session.leave().await;
}

#[tokio::test]
async fn a_forged_livekit_webhook_is_refused() {
    let Some(_logs) = stack::up() else { return };
    let body = r#"{"event":"participant_left","room":{"name":"x"}}"#;
    let client = reqwest::Client::new();
    for auth in [
        None,
        Some("Bearer not-a-jwt".to_owned()),
        Some(livekit_admin_token(
            "wrong-secret-wrong-secret-wrong-secret",
        )),
    ] {
        let mut request = client
            .post(format!("{CONTROL}/livekit/webhook"))
            .header("content-type", "application/webhook+json")
            .body(body);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["errcode"], "M_UNAUTHORIZED");
    }
}

#[tokio::test]
async fn logs_never_contain_tokens_or_secrets() {
    let Some(_logs) = stack::up() else { return };
    let room = demo_room();
    // Exercise every path that handles a credential: issue, refuse, relay, replay, TURN.
    let alice_openid = openid("alice").await;
    let (status, grant) =
        post_token(&json!({"room_id": room, "openid_token": alice_openid, "device_id": "LOGSCAN"}))
            .await;
    assert_eq!(status, 200);
    let jwt = grant["jwt"].as_str().unwrap().to_owned();
    assert_gateway_admits(&jwt).await;
    let (status, _) =
        post_token(&json!({"room_id": room, "openid_token": alice_openid, "device_id": "LOGSCAN"}))
            .await;
    assert_eq!(status, 401);
    let mallory_openid = openid("mallory").await;
    let (status, _) = post_token(
        &json!({"room_id": room, "openid_token": mallory_openid, "device_id": "LOGSCAN"}),
    )
    .await;
    assert_eq!(status, 403);
    let (status, turn) =
        post_turn(&json!({"room_id": room, "openid_token": openid("bob").await})).await;
    assert_eq!(status, 200);
    let forged = "syt_forged_openid_token_for_the_log_scan";
    let (status, _) = post_token(&json!({"room_id": room, "device_id": "LOGSCAN",
        "openid_token": {"access_token": forged, "token_type": "Bearer", "matrix_server_name": "localhost", "expires_in": 3600}}))
    .await;
    assert_eq!(status, 401);
    tokio::time::sleep(Duration::from_millis(500)).await; // let the log writers flush

    let mut secrets: Vec<(String, String)> = std::fs::read_dir(dev_dir().join("secrets"))
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let value = std::fs::read_to_string(&path).unwrap().trim().to_owned();
            (path.display().to_string(), value)
        })
        .collect();
    secrets.extend([
        ("LiveKit JWT".into(), jwt.clone()),
        (
            "JWT signature".into(),
            jwt.rsplit('.').next().unwrap().to_owned(),
        ),
        (
            "alice's OpenID token".into(),
            alice_openid["access_token"].as_str().unwrap().into(),
        ),
        (
            "mallory's OpenID token".into(),
            mallory_openid["access_token"].as_str().unwrap().into(),
        ),
        ("forged OpenID token".into(), forged.into()),
        (
            "TURN password".into(),
            turn["password"].as_str().unwrap().into(),
        ),
    ]);
    for component in ["control", "gateway"] {
        let path = dev_dir().join("logs").join(format!("{component}.log"));
        let log = std::fs::read_to_string(&path).unwrap();
        assert!(!log.is_empty(), "{} is empty", path.display());
        for (what, value) in &secrets {
            assert!(value.len() >= 8, "{what} too short to scan for");
            assert!(
                !log.contains(value.as_str()),
                "{what} appears in {}",
                path.display()
            );
        }
        // No JWT of any kind (their header always starts with base64 of `{"`).
        assert!(!log.contains("eyJ"), "a JWT appears in {}", path.display());
    }
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

/// Every query of the Grafana dashboard kept with the deployment files is valid PromQL: they are
/// handed to `promtool check rules` as recording rules (its parser is Prometheus's own).
#[test]
fn the_grafana_dashboard_queries_are_valid_promql() {
    let dashboard: Value = serde_json::from_str(koinos_testkit::prom::GRAFANA_DASHBOARD).unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .map(|target| target["expr"].as_str().unwrap().replace("$job", ".*"))
        .collect();
    assert!(exprs.len() >= 15, "{exprs:?}");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        // A JSON string is a valid YAML double-quoted scalar.
        rules.push_str(&format!(
            "      - record: koinos:dashboard_{i}\n        expr: {}\n",
            Value::String(expr.clone())
        ));
    }
    let file =
        std::env::temp_dir().join(format!("koinos-dashboard-{}.rules.yml", std::process::id()));
    std::fs::write(&file, rules).unwrap();
    let output = std::process::Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&file)
        .output()
        .expect("promtool (Debian's prometheus package) runs");
    let _ = std::fs::remove_file(&file);
    assert!(
        output.status.success(),
        "promtool check rules failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn gateway_metrics_pass_promtool_and_count_sessions() {
    let Some(_logs) = stack::up() else { return };
    let (alice, _) = login("alice").await;
    let room = new_case(&alice, &["bob"], &["bob"]).await;
    let jwts =
        tickets_once_control_is_in(&room, &[("alice", "GWMETRICS"), ("bob", "GWMETRICS")]).await;
    let alice_session = Session::join(GATEWAY_WS, &jwts[0]).await;
    let bob_session = Session::join(GATEWAY_WS, &jwts[1]).await;

    let text = reqwest::get("http://127.0.0.1:7880/metrics")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        "koinos_gateway_sessions ",
        "koinos_gateway_rooms ",
        r#"koinos_gateway_frames_total{direction="downstream"}"#,
        r#"koinos_gateway_relay_latency_seconds_count{direction="downstream"}"#,
    ] {
        assert!(text.contains(expected), "missing {expected} in:\n{text}");
    }
    let sessions: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("koinos_gateway_sessions ")?.parse().ok())
        .unwrap();
    assert!(sessions >= 2.0, "{sessions}");
    assert!(!text.contains("eyJ"), "no token may appear in metrics");
    promtool_check(&text);
    alice_session.leave().await;
    bob_session.leave().await;
}
