//! The ways around the membership gate, tried against the running dev stack as an attacker
//! would: a kicked member who kept his ticket, one who found LiveKit's own port, a gateway that
//! started after the kick, an ordinary account of the homeserver, a member who wants every seat
//! or writes into a colleague's call membership, a client that holds connections open or floods
//! control with forged OpenID tokens. Each test fails on the code before this design (see the
//! README's security section for what each component enforces). And one fault that must not
//! open the gate: a kick control could not see because the homeserver restarted.

use std::{net::IpAddr, time::Duration};

use koinos_testkit::{
    control::{
        assert_nothing_issued, assert_refused, jwt_claims, post_json, post_token,
        tickets_once_control_is_in, token_request,
    },
    matrix::{
        call_member_content, call_membership_event, kick, login, matrix_status, new_case, new_room,
        openid, put_call_member_state, put_call_membership, urlencode,
    },
    process::SideGateway,
    prom::metric,
    signal::{Session, first_signal, http_status, livekit_participants, livekit_token},
    stack::{
        self, CONTROL, Frozen, GATEWAY_B_WS, GATEWAY_HTTP, GATEWAY_WS, HS, LIVEKIT_WS, demo_room,
        eventually, supervisorctl,
    },
};
use livekit_protocol::signal_response;
use serde_json::{Value, json};

/// The gateway binary of this workspace, for gateways the tests start themselves.
fn gateway_bin() -> String {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/hostile-… → target/debug/koinos-gateway (built by `cargo test
    // --workspace`, and by the dev stack).
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("koinos-gateway"))
        .filter(|p| p.exists())
        .expect("target/debug/koinos-gateway (cargo build --workspace --bins)")
        .display()
        .to_string()
}

async fn control_metric(name_and_labels: &str) -> f64 {
    metric(&format!("{CONTROL}/metrics"), name_and_labels).await
}

/// Whether LiveKit lists `identity` in `room` now.
async fn in_livekit(room: &str, identity: &str) -> bool {
    livekit_participants(room)
        .await
        .iter()
        .any(|p| p.identity == identity)
}

/// Time from now until LiveKit no longer lists `identity` in `room` (`None`: still there after
/// `seconds`).
async fn out_of_livekit_within(room: &str, identity: &str, seconds: u64) -> Option<Duration> {
    let started = std::time::Instant::now();
    eventually(seconds, || async { !in_livekit(room, identity).await })
        .await
        .then(|| started.elapsed())
}

/// A new case with alice (host) and `members`, control in it, and their tickets.
async fn case_with(members: &[(&'static str, &'static str)]) -> (String, String, Vec<String>) {
    let (alice, _) = login("alice").await;
    let mut others: Vec<&str> = members
        .iter()
        .map(|(user, _)| *user)
        .filter(|u| *u != "alice")
        .collect();
    others.dedup();
    let room = new_case(&alice, &others, &others).await;
    let tickets = tickets_once_control_is_in(&room, members).await;
    (alice, room, tickets)
}

fn livekit_room(ticket: &str) -> String {
    jwt_claims(ticket)["video"]["room"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_gateway_started_after_a_kick_refuses_the_kicked_members_saved_ticket() {
    let Some(_logs) = stack::up() else { return };
    let (alice, room, tickets) = case_with(&[("bob", "SAVED")]).await;
    let mut session = Session::join(GATEWAY_WS, &tickets[0]).await;
    kick(&alice, &room, "@bob:localhost").await;
    assert!(session.ended_by_server(Duration::from_secs(5)).await);

    // A replica that started (or scaled out, or lost control's stream) after the kick has seen
    // no revocation: it admits nothing until it has caught up, and then only on control's word.
    let late = SideGateway::genuine(&gateway_bin(), "late-replica").await;
    assert!(late.ready().await, "{}", late.log_text());
    for base in [late.ws.as_str(), GATEWAY_WS, GATEWAY_B_WS] {
        assert_eq!(
            http_status(first_signal(base, &tickets[0]).await),
            403,
            "{base} refuses the kicked member's ticket"
        );
    }
    // Nor does LiveKit take it, reached directly.
    assert_eq!(
        http_status(first_signal(LIVEKIT_WS, &tickets[0]).await),
        401
    );
}

#[tokio::test]
async fn livekits_own_refreshed_tokens_never_reach_a_client_only_controls_tickets_do() {
    let Some(_logs) = stack::up() else { return };
    let (alice, room, tickets) = case_with(&[("carol", "REFRESH")]).await;
    // A gateway that renews every 5 s, so that the test sees a renewal soon.
    let credential = stack::dev_dir().join("secrets/gateway_credential");
    let fast = SideGateway::start(
        &gateway_bin(),
        "fast-renewal",
        &format!(
            "upstream_url = \"ws://127.0.0.1:7881\"\ncontrol_grpc_url = \"http://127.0.0.1:50051\"\n\
             control_credential_file = \"{}\"\nticket_renew_interval_secs = 5\n",
            credential.display()
        ),
    )
    .await;
    assert!(fast.ready().await, "{}", fast.log_text());
    let mut session = Session::join(&fast.ws, &tickets[0]).await;
    // LiveKit sends a refresh_token right after the join (and every few minutes): a LiveKit
    // token it signs itself. What reaches the client within 8 s is control's renewed ticket.
    let refresh = session
        .wait_for(Duration::from_secs(8), |m| {
            matches!(m, signal_response::Message::RefreshToken(_))
        })
        .await;
    let Some(signal_response::Message::RefreshToken(renewed)) = refresh else {
        panic!("a renewed ticket within 8 s: {}", fast.log_text());
    };
    assert_eq!(
        jwt_claims(&renewed)["iss"],
        "koinos-rtc",
        "a ticket, not LiveKit's token"
    );
    assert_ne!(renewed, tickets[0]);
    assert_eq!(http_status(first_signal(LIVEKIT_WS, &renewed).await), 401);
    assert!(
        metric(
            &format!("{}/metrics", fast.http),
            r#"koinos_gateway_policed_total{action="refresh_token_withheld"} "#
        )
        .await
            >= 1.0
    );

    // Once carol is no longer a member, no renewal keeps her in: her session ends, and the
    // ticket she was handed last opens nothing.
    kick(&alice, &room, "@carol:localhost").await;
    assert!(session.ended_by_server(Duration::from_secs(8)).await);
    assert_eq!(http_status(first_signal(GATEWAY_WS, &renewed).await), 403);
}

#[tokio::test]
async fn someone_in_livekit_who_is_no_member_is_removed_within_two_seconds() {
    let Some(_logs) = stack::up() else { return };
    let (_, _, tickets) = case_with(&[("alice", "HOST")]).await;
    let room = livekit_room(&tickets[0]);
    let _host = Session::join(GATEWAY_WS, &tickets[0]).await;
    // Whatever way someone found into LiveKit itself (here a token minted with LiveKit's own
    // secret, straight at LiveKit's port): an ordinary account, and a participant that names
    // no Matrix user at all.
    for (identity, user) in [
        ("@mallory:localhost:DIRECT", Some("@mallory:localhost")),
        ("no-matrix-user", None),
    ] {
        let token = livekit_token(&room, identity, user);
        let mut intruder = Session::join(LIVEKIT_WS, &token).await;
        let gone = out_of_livekit_within(&room, identity, 5).await;
        eprintln!("{identity} in LiveKit → removed in {gone:?} (goal ≤ 2 s)");
        assert!(
            gone.is_some_and(|d| d <= Duration::from_secs(2)),
            "{gone:?}"
        );
        assert!(intruder.ended_by_server(Duration::from_secs(5)).await);
    }
    assert!(
        control_metric(r#"koinos_control_enforcement_actions_total{action="removed_not_member"} "#)
            .await
            >= 1.0
    );
    assert!(
        control_metric(
            r#"koinos_control_enforcement_actions_total{action="removed_no_matrix_user"} "#
        )
        .await
            >= 1.0
    );
}

#[tokio::test]
async fn a_kicked_member_who_comes_back_after_the_removal_is_removed_again() {
    let Some(_logs) = stack::up() else { return };
    let (alice, room_id, tickets) = case_with(&[("alice", "HOST"), ("dave", "BACKAGAIN")]).await;
    let room = livekit_room(&tickets[0]);
    let _host = Session::join(GATEWAY_WS, &tickets[0]).await;
    let mut dave = Session::join(GATEWAY_WS, &tickets[1]).await;
    let identity = "@dave:localhost:BACKAGAIN";
    kick(&alice, &room_id, "@dave:localhost").await;
    assert!(dave.ended_by_server(Duration::from_secs(5)).await);
    // Control removed him once when it saw the kick; he gets back in (with a LiveKit token he
    // somehow holds) after that: control keeps looking, and removes him again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let token = livekit_token(&room, identity, Some("@dave:localhost"));
    let _back = Session::join(LIVEKIT_WS, &token).await;
    let gone = out_of_livekit_within(&room, identity, 5).await;
    eprintln!("kicked member back in LiveKit → removed in {gone:?} (goal ≤ 2 s)");
    assert!(
        gone.is_some_and(|d| d <= Duration::from_secs(2)),
        "{gone:?}"
    );
    // And it stays so: 3 s later he is still not listed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!in_livekit(&room, identity).await);
}

#[tokio::test]
async fn a_ticket_obtained_while_the_kick_is_processed_keeps_nobody_in_the_call() {
    let Some(_logs) = stack::up() else { return };
    let (alice, room_id, tickets) = case_with(&[("alice", "HOST"), ("erin", "RACE0")]).await;
    let room = livekit_room(&tickets[0]);
    let _host = Session::join(GATEWAY_WS, &tickets[0]).await;
    // erin asks for tickets as fast as she can while she is being kicked.
    let racing = tokio::spawn({
        let room_id = room_id.clone();
        async move {
            let mut got = Vec::new();
            for n in 1..=12 {
                let (status, grant) = token_request("erin", &room_id, &format!("RACE{n}")).await;
                if status == 200 {
                    got.push(grant["jwt"].as_str().unwrap().to_owned());
                }
            }
            got
        }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    kick(&alice, &room_id, "@erin:localhost").await;
    let kicked = std::time::Instant::now();
    let got = racing.await.unwrap();
    // Whatever she got, through either gateway: refused, or out within 2 s of the kick.
    for ticket in &got {
        for base in [GATEWAY_WS, GATEWAY_B_WS] {
            if let Ok(mut session) = Session::open(base, ticket, "").await {
                assert!(
                    session.ended_by_server(Duration::from_secs(2)).await
                        || kicked.elapsed() <= Duration::from_secs(2),
                    "a ticket from the race kept erin in through {base}"
                );
            }
        }
    }
    assert!(
        eventually(3, || async {
            !livekit_participants(&room)
                .await
                .iter()
                .any(|p| p.identity.starts_with("@erin:localhost"))
        })
        .await,
        "erin is out of LiveKit"
    );
}

#[tokio::test]
async fn an_ordinary_room_gets_no_call_and_no_turn_relay() {
    let Some(_logs) = stack::up() else { return };
    let (mallory, _) = login("mallory").await;
    // mallory, in no case, makes her own room and invites control into it.
    let room = new_room(&mallory, None, &[], &[]).await;
    let control_joined = eventually(3, || async {
        let (status, member) = matrix_status(
            reqwest::Method::GET,
            &mallory,
            &format!(
                "/rooms/{}/state/m.room.member/%40koinos-rtc%3Alocalhost",
                urlencode(&room)
            ),
            Value::Null,
        )
        .await;
        status == 200 && member["membership"] == "join"
    })
    .await;
    assert!(!control_joined, "control joins case rooms only");
    for (path, body) in [
        (
            "token",
            json!({"room_id": room, "openid_token": openid("mallory").await, "device_id": "OWN"}),
        ),
        (
            "turn",
            json!({"room_id": room, "openid_token": openid("mallory").await}),
        ),
        (
            "sfu/get",
            json!({"room": room, "openid_token": openid("mallory").await, "device_id": "OWN"}),
        ),
    ] {
        let (status, body) = post_json(path, &body).await;
        assert_refused(status, &body, 403, "M_FORBIDDEN");
        assert_nothing_issued(&body);
    }
}

#[tokio::test]
async fn one_member_cannot_take_every_seat() {
    let Some(_logs) = stack::up() else { return };
    let devices: Vec<(&'static str, &'static str)> =
        ["SEAT1", "SEAT2", "SEAT3", "SEAT4", "SEAT5", "SEAT6"]
            .into_iter()
            .map(|d| ("bob", d))
            .collect();
    let (_, room_id, tickets) = case_with(&devices).await;
    // Tickets for six made-up devices: they take no seat; two of them can connect.
    let first = Session::join(GATEWAY_WS, &tickets[0]).await;
    let second = Session::join(GATEWAY_B_WS, &tickets[1]).await;
    let refused = Session::open(GATEWAY_WS, &tickets[2], "").await.err();
    assert_eq!(http_status::<()>(Err(refused.expect("refused"))), 409);
    // The colleague still gets in, and control says why bob's third device did not.
    let (status, body) = token_request("alice", &room_id, "HOSTSEAT").await;
    assert_eq!(status, 200, "{body}");
    let _alice = Session::join(GATEWAY_WS, body["jwt"].as_str().unwrap()).await;
    let (status, body) = token_request("bob", &room_id, "SEAT7").await;
    assert_refused(status, &body, 409, "M_LIMIT_EXCEEDED");
    assert!(
        body["error"].as_str().unwrap().contains("2 devices"),
        "{body}"
    );
    first.leave().await;
    second.leave().await;
}

#[tokio::test]
async fn a_call_membership_written_into_someone_elses_slot_is_cleared_by_control() {
    let Some(_logs) = stack::up() else { return };
    let room = demo_room();
    let cleared_before =
        control_metric(r#"koinos_control_forged_call_memberships_total{action="cleared"} "#).await;
    let erased_before =
        control_metric(r#"koinos_control_forged_call_memberships_total{action="erased_others"} "#)
            .await;
    // bob puts a live membership into alice's slot: every MatrixRTC client would show it (as
    // bob's, with whatever device it names).
    let slot = "_@alice:localhost_FORGED_m.call";
    assert_eq!(
        put_call_member_state("bob", &room, slot, &call_member_content(&room, "FORGED")).await,
        200,
        "room version without MSC3757: the homeserver lets him"
    );
    let cleared = eventually(5, || async {
        let event = call_membership_event(&room, slot).await;
        event["content"] == json!({}) && event["sender"] == "@koinos-rtc:localhost"
    })
    .await;
    assert!(
        cleared,
        "control clears it: {}",
        call_membership_event(&room, slot).await
    );
    assert!(
        control_metric(r#"koinos_control_forged_call_memberships_total{action="cleared"} "#).await
            > cleared_before
    );

    // bob erases carol's real membership: nothing to clear; it is counted (and the page does not
    // believe it, web/e2e/forged-membership.spec.ts).
    let carol_slot = put_call_membership("carol", &room, "REAL").await;
    assert_eq!(
        put_call_member_state("bob", &room, &carol_slot, &json!({})).await,
        200
    );
    assert!(
        eventually(5, || async {
            control_metric(
                r#"koinos_control_forged_call_memberships_total{action="erased_others"} "#,
            )
            .await
                > erased_before
        })
        .await
    );
    // Control never writes in carol's name; her own client writes again (here, the test).
    assert_eq!(
        call_membership_event(&room, &carol_slot).await["sender"],
        "@bob:localhost"
    );
    assert_eq!(
        put_call_member_state("carol", &room, &carol_slot, &json!({})).await,
        200
    );
}

#[tokio::test]
async fn turn_credentials_in_livekits_join_answer_are_controls_with_controls_lifetime() {
    let Some(_logs) = stack::up() else { return };
    let (ticket, _) = {
        let (status, grant) = token_request("frank", &demo_room(), "ICE").await;
        assert_eq!(status, 200);
        (grant["jwt"].as_str().unwrap().to_owned(), ())
    };
    let session = Session::join(GATEWAY_WS, &ticket).await;
    let servers = &session.join.as_ref().unwrap().ice_servers;
    assert!(!servers.is_empty(), "the join answer carries TURN");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for server in servers {
        assert!(
            server.urls.iter().all(|u| u.starts_with("turn:")),
            "{server:?}"
        );
        let (expiry, user) = server.username.split_once(':').expect("<expiry>:<user>");
        assert_eq!(
            user, "@frank:localhost",
            "control's credential names the Matrix user"
        );
        let ttl = expiry.parse::<i64>().unwrap() - now;
        // control's turn.ttl (3600 s), never LiveKit's 24 h.
        assert!((3500..=3600).contains(&ttl), "ttl {ttl} s");
    }
    session.leave().await;
}

/// An HTTP client whose requests leave from `source` (another loopback address: the limits
/// are per client address, and every other test comes from 127.0.0.1).
fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

#[tokio::test]
async fn forged_openid_tokens_from_one_address_cost_the_homeserver_a_bounded_number_of_lookups() {
    let Some(_logs) = stack::up() else { return };
    let lookups =
        r#"koinos_control_dependency_latency_seconds_count{dependency="homeserver_openid"} "#;
    let before = control_metric(lookups).await;
    let client = client_from("127.0.0.77");
    let mut statuses = Vec::new();
    for n in 0..100 {
        let forged = json!({"room_id": demo_room(), "device_id": "FLOOD", "openid_token": {
            "access_token": format!("forged-{n}"), "token_type": "Bearer",
            "matrix_server_name": "localhost", "expires_in": 3600}});
        let response = client
            .post(format!("{CONTROL}/api/rtc/token"))
            .json(&forged)
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    let asked = control_metric(lookups).await - before;
    let limited = statuses.iter().filter(|s| **s == 429).count();
    eprintln!("100 forged OpenID tokens: {asked} homeserver lookups, {limited} refused with 429");
    // The burst (50) and what refilled meanwhile, not 100.
    assert!(asked <= 60.0, "{asked} lookups");
    assert!(limited >= 40, "{statuses:?}");
    assert!(
        control_metric(
            r#"koinos_control_requests_total{operation="token",outcome="address_rate_limited"} "#
        )
        .await
            >= 40.0
    );
    // A practitioner elsewhere is not affected.
    let (status, _) = token_request("dave", &demo_room(), "ELSEWHERE").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn device_ids_with_invisible_or_bidirectional_characters_are_refused() {
    let Some(_logs) = stack::up() else { return };
    for device in [
        "DEV\u{200B}ICE",
        "DEV\u{202E}ECI",
        "DEV ICE",
        "DEVІCE",
        "A:B",
    ] {
        let (status, body) = post_token(
            &json!({"room_id": demo_room(), "openid_token": openid("dave").await, "device_id": device}),
        )
        .await;
        assert_refused(status, &body, 400, "M_BAD_JSON");
        assert!(
            body["error"].as_str().unwrap().contains("device_id"),
            "{body}"
        );
    }
}

/// Opens `count` TCP connections to `addr` from `source`; how many the server closed at once.
async fn closed_at_once(
    addr: &str,
    source: &str,
    count: usize,
) -> (usize, Vec<tokio::net::TcpStream>) {
    use tokio::io::AsyncReadExt;
    let mut open = Vec::new();
    let mut closed = 0;
    for _ in 0..count {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        let mut stream = socket.connect(addr.parse().unwrap()).await.unwrap();
        let mut buf = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            _ => open.push(stream),
        }
    }
    (closed, open)
}

/// Whether the server closes `stream` within `seconds`.
async fn closes_within(stream: &mut tokio::net::TcpStream, seconds: u64) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 256];
    tokio::time::timeout(Duration::from_secs(seconds), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn connections_are_not_held_for_free() {
    use tokio::io::AsyncWriteExt;
    let Some(_logs) = stack::up() else { return };
    // control's REST listener: 128 connections per address, the rest closed at once.
    let (closed, held) = closed_at_once("127.0.0.1:8080", "127.0.0.88", 140).await;
    assert_eq!((closed, held.len()), (12, 128));
    // Everyone else is still served meanwhile.
    assert_eq!(
        reqwest::get(format!("{CONTROL}/healthz"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    drop(held);
    // gRPC: 64 per address.
    let (closed, held) = closed_at_once("127.0.0.1:50051", "127.0.0.88", 70).await;
    assert_eq!((closed, held.len()), (6, 64));
    drop(held);
    // The gateway: 256 per address.
    let (closed, held) = closed_at_once("127.0.0.1:7880", "127.0.0.88", 260).await;
    assert_eq!((closed, held.len()), (4, 256));
    drop(held);

    // A request head that never ends, on each listener: closed after the header timeout (10 s).
    let mut slow = Vec::new();
    for addr in ["127.0.0.1:8080", "127.0.0.1:7880"] {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        slow.push(stream);
    }
    for stream in &mut slow {
        assert!(
            closes_within(stream, 20).await,
            "a slow request head is cut off"
        );
    }
    // A body that never ends: a clear error after the body timeout (10 s), nothing issued.
    let mut stream = tokio::net::TcpStream::connect("127.0.0.1:8080")
        .await
        .unwrap();
    stream
        .write_all(b"POST /api/rtc/token HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"room_id\"")
        .await
        .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::io::AsyncReadExt::read(&mut stream, &mut answer),
    )
    .await
    .expect("an answer")
    .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within 10 s"), "{answer}");
    assert!(
        metric(&format!("{GATEWAY_HTTP}/metrics"), r#"koinos_gateway_connections_refused_total{listener="signalling",reason="max_connections_per_address"} "#).await >= 4.0
    );
}

#[tokio::test]
async fn the_page_is_served_with_the_headers_a_security_reviewer_expects() {
    let Some(_logs) = stack::up() else { return };
    for path in ["/", "/config.json", "/api/rtc/token"] {
        let response = reqwest::get(format!("{CONTROL}{path}")).await.unwrap();
        let headers = response.headers();
        let csp = headers["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'self'",
            "frame-ancestors 'none'",
            "object-src 'none'",
            "base-uri 'none'",
        ] {
            assert!(
                csp.contains(directive),
                "{path}: {directive} missing from {csp}"
            );
        }
        assert!(
            csp.contains("http://localhost:8008") && csp.contains("ws://localhost:7880"),
            "{csp}"
        );
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["referrer-policy"], "no-referrer");
    }
}

/// An echo peer (coturn's `turnutils_peer`) on a free UDP port of `address`, stopped on drop.
struct EchoPeer {
    process: std::process::Child,
    port: u16,
}

impl EchoPeer {
    fn on(address: &str) -> Self {
        // The port is free when asked; the peer takes it a moment later (tests own their ports).
        let port = std::net::UdpSocket::bind((address, 0))
            .and_then(|socket| socket.local_addr())
            .expect("a free UDP port")
            .port();
        let process = std::process::Command::new("turnutils_peer")
            .args(["-L", address, "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("turnutils_peer (from the coturn package) runs");
        std::thread::sleep(Duration::from_millis(300));
        Self { process, port }
    }
}

impl Drop for EchoPeer {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// The messages `turnutils_uclient` sent and got back, from its summary line
/// (`start_mclient: tot_send_msgs=2, tot_recv_msgs=2`): over every allocation it made, which
/// is one or, with its RTCP companion, two.
fn relayed_totals(output: &str) -> Option<(u64, u64)> {
    let line = output
        .lines()
        .rev()
        .find(|line| line.contains("tot_send_msgs=") && !line.contains("msz="))?;
    let count = |key: &str| -> Option<u64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    Some((count("tot_send_msgs=")?, count("tot_recv_msgs=")?))
}

#[test]
fn the_relay_clients_totals_are_read_from_its_summary_line() {
    let two = "1: : start_mclient: msz=2, tot_send_msgs=0, tot_recv_msgs=0, tot_send_bytes ~ 0\n\
               2: : start_mclient: tot_send_msgs=2, tot_recv_msgs=2\n\
               2: : start_mclient: tot_send_bytes ~ 200, tot_recv_bytes ~ 200\n";
    assert_eq!(relayed_totals(two), Some((2, 2)));
    let lost = "0: : start_mclient: tot_send_msgs=1, tot_recv_msgs=0\n";
    assert_eq!(relayed_totals(lost), Some((1, 0)));
    assert_eq!(relayed_totals("0: : 403 (Forbidden IP)\n"), None);
}

/// What coturn's own test client says when it relays to `peer` (`-e`, `-r`) with these
/// credentials, over a UDP or (`tcp_relay`) an RFC 6062 TCP allocation. A run that had to be
/// killed says so: the client's buffered output dies with it.
fn relay_attempt(username: &str, password: &str, peer: (&str, u16), tcp_relay: bool) -> String {
    let mut command = std::process::Command::new("timeout");
    command.args(["60", "turnutils_uclient", "-u", username, "-w", password]);
    command.args(["-n", "1", "-m", "1", "-l", "100"]);
    if tcp_relay {
        command.arg("-T");
    } else {
        command.args(["-e", peer.0, "-r", &peer.1.to_string()]);
    }
    let output = command
        .arg("127.0.0.1")
        .output()
        .expect("turnutils_uclient (from the coturn package) runs");
    format!(
        "{}{}(turnutils_uclient {})",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        match output.status.code() {
            Some(124) => "killed after 60 s".to_owned(),
            code => format!("exited with {code:?}"),
        }
    )
}

#[tokio::test]
async fn the_dev_turn_relay_reaches_livekits_media_address_only() {
    let Some(_logs) = stack::up_with(&["coturn"]) else {
        return;
    };
    let (status, creds) = post_json(
        "turn",
        &json!({"room_id": demo_room(), "openid_token": openid("erin").await}),
    )
    .await;
    assert_eq!(status, 200, "{creds}");
    let (username, password) = (
        creds["username"].as_str().unwrap(),
        creds["password"].as_str().unwrap(),
    );
    // LiveKit's media address (127.0.0.1 in the dev stack): relayed there and back. An echo
    // answers, so the client is done as soon as its packet returns instead of waiting out its
    // loss timer (12 s idle, over 20 s on a loaded CI machine).
    let echo = EchoPeer::on("127.0.0.1");
    let to_livekit = relay_attempt(username, password, ("127.0.0.1", echo.port), false);
    drop(echo);
    assert!(!to_livekit.contains("403"), "{to_livekit}");
    let (sent, received) = relayed_totals(&to_livekit).expect("the client's totals");
    assert!(sent >= 1 && received == sent, "{to_livekit}");
    // Any other loopback address: refused by coturn (at the permission, before any packet).
    let elsewhere = relay_attempt(username, password, ("127.0.0.2", 3497), false);
    assert!(elsewhere.contains("403 (Forbidden IP)"), "{elsewhere}");
    // A TCP relay (which would reach control's REST port, LiveKit's API, Synapse…): refused.
    let tcp = relay_attempt(username, password, ("127.0.0.1", 0), true);
    assert!(tcp.contains("442"), "{tcp}");
}

#[tokio::test]
async fn a_kick_during_a_homeserver_restart_still_removes_the_member_once_sync_resumes() {
    let Some(_logs) = stack::up() else { return };
    let (alice, room, tickets) = case_with(&[("bob", "OUTAGE")]).await;
    let session = Session::join(GATEWAY_WS, &tickets[0]).await;
    let identity = session.me().identity.clone();
    let livekit_room = livekit_room(&tickets[0]);

    // Control, frozen, cannot see the kick happen; then the homeserver restarts under its
    // sync request. What it missed must come to it when its sync resumes.
    {
        let _frozen = Frozen::component("control");
        kick(&alice, &room, "@bob:localhost").await;
        supervisorctl(&["restart", "synapse"]);
    }
    let healthy = || async {
        reqwest::get(format!("{HS}/health"))
            .await
            .is_ok_and(|r| r.status().is_success())
    };
    assert!(eventually(60, healthy).await, "Synapse came back");
    let removed = out_of_livekit_within(&livekit_room, &identity, 30).await;
    assert!(
        removed.is_some(),
        "bob was still in the call 30 s after the homeserver came back"
    );
    println!(
        "kicked during the homeserver's restart: out {:.1} s after it was back",
        removed.unwrap().as_secs_f64()
    );
    // And control is ready again (a fresh sync) for the tests after this one.
    assert!(
        eventually(60, || async {
            reqwest::get(format!("{CONTROL}/readyz"))
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await
    );
    drop(session);
}
