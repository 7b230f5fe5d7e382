//! Scale-out on LiveKit's own distributed mode: two LiveKit nodes sharing Redis, a gateway in
//! front of each, on this machine (`dev/stack multi-node on`; `dev/stack e2e` switches the stack
//! over, runs this with `--ignored`, and switches it back).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{call, received};

/// LiveKit's count of signalling connections this node accepted (its Prometheus endpoint).
fn signal_connections(prometheus_port: u16) -> f64 {
    let mut stream = TcpStream::connect(("127.0.0.1", prometheus_port)).unwrap_or_else(|e| {
        panic!("LiveKit's metrics on :{prometheus_port}: {e} (is the stack in multi-node mode?)")
    });
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text.lines()
        .filter(|line| {
            line.starts_with("livekit_participant_join_total{")
                && line.contains(r#"state="signal_connected""#)
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
#[ignore = "needs the dev stack in multi-node mode: dev/stack multi-node on"]
fn a_call_spread_over_two_gateways_and_two_livekit_nodes_sees_everyone_and_obeys_the_ladder() {
    let Some(_logs) = koinos_testkit::stack::up() else {
        return;
    };
    // Node A: LiveKit :7881 behind the gateway on :7880; node B: :7891 behind gateway-b on :7884.
    let nodes = [("A", 7894), ("B", 7895)];
    let before = nodes.map(|(_, port)| signal_connections(port));
    let report = call(&[
        "--participants",
        "4",
        "--ramp",
        "1",
        "--duration",
        "10",
        "--gateway-url",
        "ws://127.0.0.1:7880",
        "--gateway-url",
        "ws://127.0.0.1:7884",
    ]);
    let urls: Vec<&str> = report["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["signal_url"].as_str().unwrap())
        .collect();
    assert_eq!(
        urls,
        [
            "ws://127.0.0.1:7880",
            "ws://127.0.0.1:7884",
            "ws://127.0.0.1:7880",
            "ws://127.0.0.1:7884"
        ]
    );
    // One room, whichever node hosts it: everyone hears and sees the three others, at the
    // four-person cap, whichever gateway enforces it.
    for (heights, audio) in received(&report) {
        assert_eq!((heights, audio), (vec![540; 3], 3));
    }
    for ((name, port), before) in nodes.into_iter().zip(before) {
        let accepted = signal_connections(port) - before;
        assert!(
            accepted >= 2.0,
            "LiveKit node {name} accepted {accepted} signalling connections, not the two sent its way"
        );
    }
}
