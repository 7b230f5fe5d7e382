//! TURN credentials on the real coturn: only for members, tampering and expiry refused.

use super::*;

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
