//! koinos-loadtest against the running dev stack (`dev/stack start`): real Synapse, control,
//! gateway and LiveKit, simulated participants with real WebRTC. Each test runs the built binary
//! as a load tester would and reads its JSON report.

mod common;

use common::{call, loadtest_in, made_up_dev, received};

#[test]
fn two_participants_through_the_gateway_hear_each_other_and_see_each_other_at_720() {
    let Some(_logs) = koinos_testkit::stack::up() else {
        return;
    };
    let report = call(&["--participants", "2", "--duration", "8"]);
    assert_eq!(report["summary"]["failed"], 0);
    assert_eq!(received(&report), vec![(vec![720], 1), (vec![720], 1)]);
    assert!(
        report["cpu"]["gateway"]["processes"].as_u64().unwrap() >= 1,
        "the gateway's CPU is read"
    );
    assert!(
        report["cpu"]["livekit"]["cpu_secs"].as_f64().unwrap() > 0.0,
        "LiveKit worked"
    );
}

#[test]
fn three_participants_get_540_through_the_gateway_and_720_straight_from_livekit() {
    let Some(_logs) = koinos_testkit::stack::up() else {
        return;
    };
    // The same simulated call two ways: the gateway's ladder caps it; LiveKit alone does not.
    let through = call(&["--participants", "3", "--duration", "10"]);
    for (heights, audio) in received(&through) {
        assert_eq!((heights, audio), (vec![540, 540], 2));
    }
    let direct = call(&[
        "--participants",
        "3",
        "--duration",
        "10",
        "--direct",
        "ws://127.0.0.1:7881",
    ]);
    assert_eq!(direct["options"]["path"], "direct");
    for (heights, audio) in received(&direct) {
        assert_eq!((heights, audio), (vec![720, 720], 2));
    }
}

/// Runs the tool with `args`, expecting exit status 2 and `reason` in what it prints. Its
/// secrets are made up: nothing it is refused for needs the dev stack.
fn refused(args: &[&str], reason: &str) {
    let out = loadtest_in(&made_up_dev(), args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stderr.contains(reason), "{args:?}: {stderr}");
}

#[test]
fn bad_options_and_an_unreachable_control_are_refused_with_a_reason() {
    refused(&["--participants", "7"], "--participants must be 1 to 6");
    refused(
        &["--control", "http://127.0.0.1:9/api/rtc"],
        "cannot reach control at http://127.0.0.1:9/api/rtc/token",
    );
}

#[test]
fn an_unreachable_homeserver_is_refused_with_a_reason() {
    // Control is asked first: it must be there for the homeserver to be the one missing.
    let Some(_logs) = koinos_testkit::stack::up() else {
        return;
    };
    refused(
        &["--homeserver", "http://127.0.0.1:9"],
        "cannot reach the homeserver at http://127.0.0.1:9",
    );
}

#[test]
fn six_participants_joining_one_by_one_are_brought_down_the_ladder_to_360() {
    let Some(_logs) = koinos_testkit::stack::up() else {
        return;
    };
    let report = call(&["--participants", "6", "--ramp", "0.5", "--duration", "8"]);
    for (heights, audio) in received(&report) {
        assert_eq!((heights, audio), (vec![360; 5], 5));
    }
    let steps = report["summary"]["ladder"].as_array().unwrap();
    let caps: Vec<(u64, u64)> = steps
        .iter()
        .map(|s| {
            (
                s["participants"].as_u64().unwrap(),
                s["cap"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(caps, vec![(3, 540), (5, 360)]);
    for step in steps {
        assert!(
            step["converged_ms"].is_u64(),
            "the call came down the ladder within the run: {step}"
        );
    }
}

#[test]
fn injected_receive_loss_sends_a_participant_to_audio_only_and_back() {
    let Some(_logs) = koinos_testkit::stack::up() else {
        return;
    };
    // The dev gateway pauses after 10 s of a bad link and restores after 20 s of a good one.
    let report = call(&[
        "--participants",
        "2",
        "--duration",
        "65",
        "--loss",
        "1=30@3-28",
    ]);
    let fallback = report["summary"]["fallback"].as_array().unwrap();
    assert_eq!(fallback.len(), 1, "{fallback:?}");
    let run = &fallback[0];
    assert!(run["identity"].as_str().unwrap().contains("-p1:"), "{run}");
    assert!(
        run["paused_after_ms"]
            .as_u64()
            .is_some_and(|ms| ms < 25_000),
        "video paused during the loss: {run}"
    );
    assert!(
        run["restored_after_ms"].as_u64().is_some(),
        "video came back after it: {run}"
    );
    assert_eq!(run["entered"], 1, "one fallback for one bad spell: {run}");
    // The other participant, without loss, never fell back.
    let clean = report["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["loss"].is_null())
        .unwrap();
    assert_eq!(clean["fallback_changes"].as_array().unwrap().len(), 0);
}
