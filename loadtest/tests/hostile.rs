//! The hostile participant (`--hostile`) against the running dev stack: one simulated
//! participant of the call speaks LiveKit's protocol as a misbehaving client would (JSON text
//! frames, settings above the cap, re-subscribing by another route, `simulate`, unmuting a camera
//! the fallback paused, its tokens presented to LiveKit directly), and the server's policy must
//! hold against each.

mod common;

use common::{call, received};
use serde_json::Value;

/// The verdicts on the one hostile participant of a report, by behaviour.
fn verdicts(report: &Value) -> Vec<(String, Option<bool>, String)> {
    let runs = report["summary"]["hostile"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs[0]["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["behaviour"].as_str().unwrap().to_owned(),
                v["held"].as_bool(),
                v["detail"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn held(report: &Value, behaviour: &str) -> Option<bool> {
    let all = verdicts(report);
    let (_, held, detail) = all
        .iter()
        .find(|(b, _, _)| b.contains(behaviour))
        .unwrap_or_else(|| panic!("no verdict on {behaviour}: {all:?}"));
    eprintln!("{behaviour}: {held:?} ({detail})");
    *held
}

#[test]
fn a_client_speaking_json_gets_the_ladder_and_its_simulate_and_tokens_get_nothing() {
    let Some(_logs) = koinos_testkit::stack::up() else {
        return;
    };
    let report = call(&[
        "--participants",
        "6",
        "--ramp",
        "2",
        "--duration",
        "12",
        "--hostile",
        "0",
    ]);
    assert_eq!(
        report["summary"]["failed"], 0,
        "nobody's session was ended by the simulate"
    );
    // Everyone, the hostile participant included, receives every camera at 360 lines.
    for (heights, audio) in received(&report) {
        assert_eq!((heights, audio), (vec![360; 5], 5));
    }
    let hostile = report["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| !p["hostile"].is_null())
        .unwrap();
    assert!(
        hostile["hostile"]["json_frames_received"].as_u64().unwrap() > 0,
        "LiveKit's answers reached it in JSON"
    );
    assert_eq!(held(&report, "asks for 1080 lines"), Some(true));
    assert_eq!(
        held(&report, "unsubscribes by participant and subscribes again"),
        Some(true)
    );
    assert_eq!(held(&report, "simulate"), Some(true));
    assert_eq!(held(&report, "tokens to LiveKit directly"), Some(true));
}

#[test]
fn a_client_cannot_unmute_the_camera_the_fallback_paused() {
    let Some(_logs) = koinos_testkit::stack::up() else {
        return;
    };
    // 30 % receive loss on the hostile participant: audio-only, then its camera paused; it
    // keeps trying to unmute it (in JSON) until the loss ends.
    let report = call(&[
        "--participants",
        "2",
        "--duration",
        "50",
        "--loss",
        "1=30@3-40",
        "--hostile",
        "1",
    ]);
    let run = &report["summary"]["fallback"][0];
    assert!(
        run["paused_after_ms"].is_u64(),
        "the fallback happened: {run}"
    );
    assert_eq!(held(&report, "unmutes the camera"), Some(true));
}
