//! Black-box tests of the gateway in front of the real LiveKit and control of the running dev
//! stack.

use std::time::Duration;

use koinos_testkit::{
    control::{tickets_once_control_is_in, token_request},
    door::Door,
    matrix::{login, new_case},
    process::SideGateway,
    prom::metric,
    signal::{Session, first_signal, http_status, livekit_token},
    stack::{
        self, CONTROL, CONTROL_GRPC, Frozen, GATEWAY_HTTP, GATEWAY_WS, PAGE_ORIGIN, demo_room,
        eventually, secret,
    },
};
use livekit_api::services::room::RoomClient;
use livekit_protocol::signal_response;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

const GATEWAY_BIN: &str = env!("CARGO_BIN_EXE_koinos-gateway");

/// A ticket of `user` for "Demo case".
async fn demo_ticket(user: &str, device: &str) -> (String, String) {
    let (status, grant) = token_request(user, &demo_room(), device).await;
    assert_eq!(status, 200, "{grant}");
    (
        grant["jwt"].as_str().unwrap().to_owned(),
        grant["livekit_room"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn relays_a_session_to_livekit() {
    let Some(_logs) = stack::up() else { return };
    let (ticket, room) = demo_ticket("carol", "RELAYTEST").await;
    match first_signal(GATEWAY_WS, &ticket).await.unwrap() {
        signal_response::Message::Join(join) => {
            assert_eq!(
                join.participant.unwrap().identity,
                "@carol:localhost:RELAYTEST"
            );
            assert_eq!(join.room.unwrap().name, room);
        }
        other => panic!("expected join, got {other:?}"),
    }
}

#[tokio::test]
async fn only_controls_tickets_open_a_session() {
    let Some(_logs) = stack::up() else { return };
    let (_, room) = demo_ticket("carol", "FORGERY").await;
    // A genuine LiveKit token for the call (minted with LiveKit's own secret, which only control
    // holds): the gateway wants control's ticket, so even this is refused.
    let livekit = livekit_token(&room, "@carol:localhost:FORGERY", Some("@carol:localhost"));
    assert_eq!(http_status(first_signal(GATEWAY_WS, &livekit).await), 401);
    // A ticket-shaped token signed with some other key.
    let forged = livekit_api::access_token::AccessToken::with_api_key(
        "koinos-rtc",
        "not-the-ticket-key-not-the-ticket-key",
    )
    .with_identity("@carol:localhost:FORGERY")
    .with_attributes([("org.koinos.matrix_user_id", "@carol:localhost")])
    .with_grants(livekit_api::access_token::VideoGrants {
        room_join: true,
        room,
        ..Default::default()
    })
    .to_jwt()
    .unwrap();
    assert_eq!(http_status(first_signal(GATEWAY_WS, &forged).await), 401);
    assert_eq!(http_status(first_signal(GATEWAY_WS, "garbage").await), 401);
}

#[tokio::test]
async fn refuses_pages_from_other_origins() {
    let Some(_logs) = stack::up() else { return };
    let (ticket, _) = demo_ticket("carol", "ORIGIN").await;
    let mut request = format!("{GATEWAY_WS}/rtc?access_token={ticket}&protocol=16&sdk=rust")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    assert_eq!(
        http_status(tokio_tungstenite::connect_async(request).await),
        403
    );
}

#[tokio::test]
async fn passes_livekits_refusal_through_before_upgrading() {
    let Some(_logs) = stack::up() else { return };
    let (alice, _) = login("alice").await;
    let case = new_case(&alice, &[], &[]).await;
    let tickets = tickets_once_control_is_in(&case, &[("alice", "GONE")]).await;
    let room = koinos_testkit::control::jwt_claims(&tickets[0])["video"]["room"]
        .as_str()
        .unwrap()
        .to_owned();
    // The call's room is gone (ended, or LiveKit forgot it): control admits alice, LiveKit
    // refuses the room, and the browser gets LiveKit's answer, not an upgrade that dies.
    RoomClient::with_api_key(
        "http://127.0.0.1:7881",
        "devkey",
        &secret("livekit_api_secret"),
    )
    .delete_room(&room)
    .await
    .unwrap();
    let status = http_status(first_signal(GATEWAY_WS, &tickets[0]).await);
    assert!(
        (400..500).contains(&status),
        "LiveKit's refusal, got {status}"
    );
}

async fn sessions_ended(outcome: &str) -> f64 {
    metric(
        &format!("{GATEWAY_HTTP}/metrics"),
        &format!("koinos_gateway_sessions_ended_total{{outcome=\"{outcome}\"}} "),
    )
    .await
}

#[tokio::test]
async fn a_malformed_or_oversized_frame_ends_only_its_own_session() {
    use futures_util::SinkExt;
    let Some(_logs) = stack::up() else { return };
    let (alice, _) = login("alice").await;
    let case = new_case(&alice, &["bob", "carol", "dave"], &["bob", "carol", "dave"]).await;
    let tickets = tickets_once_control_is_in(
        &case,
        &[
            ("alice", "BYSTANDER"),
            ("bob", "GARBAGE"),
            ("carol", "OVERSIZED"),
            ("dave", "NEWCOMER"),
        ],
    )
    .await;
    let mut bystander = Session::join(GATEWAY_WS, &tickets[0]).await;
    let bad_before = sessions_ended("bad_frame").await;
    let errors_before = sessions_ended("browser_error").await;

    // Not a LiveKit request at all (an invalid protobuf field tag).
    let mut garbage = Session::join(GATEWAY_WS, &tickets[1]).await;
    garbage
        .ws
        .send(Message::Binary(vec![0xff; 16].into()))
        .await
        .unwrap();
    assert!(
        garbage.ended_by_server(Duration::from_secs(10)).await,
        "a garbage frame ends its session"
    );
    assert_eq!(sessions_ended("bad_frame").await, bad_before + 1.0);

    // Over the gateway's 1 MiB frame limit (`max_frame_bytes`).
    let mut oversized = Session::join(GATEWAY_WS, &tickets[2]).await;
    let _ = oversized
        .ws
        .send(Message::Binary(vec![0u8; 2 * 1024 * 1024].into()))
        .await;
    assert!(
        oversized.ended_by_server(Duration::from_secs(10)).await,
        "an oversized frame ends its session"
    );
    assert_eq!(sessions_ended("browser_error").await, errors_before + 1.0);

    // The process and the other session in the same room are unaffected.
    assert!(
        bystander.answers_ping().await,
        "the bystander's session lives on"
    );
    let mut newcomer = Session::join(GATEWAY_WS, &tickets[3]).await;
    assert!(newcomer.answers_ping().await);
}

/// Control's count of gateway RPCs refused for want of the credential.
async fn control_refusals(operation: &str) -> f64 {
    metric(
        &format!("{CONTROL}/metrics"),
        &format!(
            "koinos_control_gateway_requests_total{{operation=\"{operation}\",outcome=\"unauthenticated\"}} "
        ),
    )
    .await
}

#[tokio::test]
async fn a_gateway_with_the_wrong_credential_is_refused_by_control_and_admits_nobody() {
    let Some(_logs) = stack::up() else { return };
    let watch_before = control_refusals("watch_revocations").await;
    let admit_before = control_refusals("admit_session").await;
    let impostor = SideGateway::start(
        GATEWAY_BIN,
        "impostor",
        "upstream_url = \"ws://127.0.0.1:7881\"\ncontrol_grpc_url = \"http://127.0.0.1:50051\"\n\
         control_credential = \"not-the-gateway-credential-not-the-gateway-credential\"\n",
    )
    .await;

    // Its revocation stream is refused (it retries with back-off) ...
    assert!(
        eventually(5, || async {
            control_refusals("watch_revocations").await > watch_before
        })
        .await,
        "control refused its WatchRevocations: {}",
        impostor.log_text()
    );
    // ... so it never catches up, is not ready, and admits nobody: a member's genuine ticket is
    // refused without control (or LiveKit) being asked.
    let ready = reqwest::get(format!("{}/readyz", impostor.http))
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    let (ticket, _) = demo_ticket("carol", "IMPOSTOR").await;
    assert_eq!(http_status(first_signal(&impostor.ws, &ticket).await), 503);
    assert_eq!(control_refusals("admit_session").await, admit_before);
    let log = impostor.log_text();
    assert!(log.contains("revocation stream failed"), "{log}");
    assert!(
        !log.contains("not-the-gateway-credential"),
        "the credential never reaches the log"
    );
}

#[tokio::test]
async fn a_session_resuming_while_control_is_frozen_still_relays_both_ways() {
    let Some(_logs) = stack::up() else { return };
    let (ticket, _) = demo_ticket("bob", "FROZENRESUME").await;
    let first = Session::join(GATEWAY_WS, &ticket).await;
    let sid = first.me().sid.clone();
    // A gateway of the test's own whose LiveKit leg passes a door the test holds: the resume
    // is admitted by control, and LiveKit's answer waits until control is frozen.
    let door = Door::shut("127.0.0.1:7881").await;
    let credential = stack::dev_dir().join("secrets/gateway_credential");
    let side = SideGateway::start(
        GATEWAY_BIN,
        "frozen-resume",
        &format!(
            "upstream_url = \"ws://{}\"\nallowed_origins = [\"{PAGE_ORIGIN}\"]\n\
             control_grpc_url = \"{CONTROL_GRPC}\"\ncontrol_credential_file = \"{}\"\n",
            door.address,
            credential.display()
        ),
    )
    .await;
    assert!(side.ready().await, "{}", side.log_text());
    let listings = |outcome: &'static str| {
        let http = side.http.clone();
        async move {
            metric(
                &format!("{http}/metrics"),
                &format!("koinos_gateway_resume_listing_seconds_count{{outcome=\"{outcome}\"}} "),
            )
            .await
        }
    };

    let mut resumed = Session::open(&side.ws, &ticket, &format!("&reconnect=1&sid={sid}"))
        .await
        .expect("control admits the resume");
    let frozen = Frozen::component("control");
    door.open();
    let answer = resumed.resume_answer(Duration::from_secs(10)).await;
    assert!(
        matches!(answer, Some(signal_response::Message::Reconnect(_))),
        "LiveKit resumes the session: {answer:?}"
    );
    // The gateway has asked frozen control for the room's listing. Pings go up to LiveKit and
    // its pongs come down all the same.
    for _ in 0..3 {
        assert!(
            resumed.answers_ping().await,
            "both legs relay while the listing waits: {}",
            side.log_text()
        );
    }
    assert_eq!(
        (listings("listed").await, listings("failed").await),
        (0.0, 0.0),
        "the listing was still waiting on control"
    );

    drop(frozen);
    assert!(
        eventually(15, || async { listings("listed").await == 1.0 }).await,
        "the listing comes once control is back: {}",
        side.log_text()
    );
    assert!(resumed.answers_ping().await);
    resumed.leave().await;
    drop(first);
}
