//! No ghost memberships, and LiveKit's webhooks verified.

use super::*;

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

/// Removed from the case while LiveKit is down: the member's call membership is cleared all the
/// same (who is in the case needs only the homeserver), so no page lists them in the call when
/// LiveKit is back. Without it, nothing was cleared while LiveKit could not be listed.
#[tokio::test]
async fn a_member_removed_while_livekit_is_down_is_cleared_all_the_same() {
    let Some(_logs) = stack::up() else { return };
    let (alice, _) = login("alice").await;
    let room = new_case(&alice, &["dave"], &["dave"]).await;
    tickets_once_control_is_in(&room, &[("dave", "AWAYD")]).await;
    let dave_key = put_call_membership("dave", &room, "AWAYD").await;

    let livekit = stack::Stopped::component("livekit", 7881);
    kick(&alice, &room, "@dave:localhost").await;
    // The reaper's round (call.reconcile_interval, 10 s) and the kick's sync, with room to spare.
    let mut cleared = Value::Null;
    for _ in 0..100 {
        let event = call_membership_event(&room, &dave_key).await;
        if event["content"] == json!({}) {
            cleared = event;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(livekit);
    assert_eq!(
        cleared["sender"], "@koinos-rtc:localhost",
        "control clears a removed member's call membership while LiveKit is down: {cleared}"
    );
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
