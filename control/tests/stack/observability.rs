//! Health, readiness, metrics (promtool), gRPC reflection, and logs without secrets.

use super::*;

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
