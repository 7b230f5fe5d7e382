//! `join-bench`: what the gateway adds to joining a call. Opens LiveKit signalling sessions
//! alternately straight at LiveKit and through the gateway, in the same run, and times each from
//! the WebSocket connect to LiveKit's `join` answer (token check, room lookup, participant
//! creation, and for the gateway: its origin check, control's admission of the ticket —
//! membership and seats checked, a LiveKit token minted — and the second WebSocket). Reports
//! p50/p90/p99 for both and their ratio. Media is not involved: the gateway never carries media,
//! so its cost per participant is signalling only.
//!
//! alice's ticket for "Demo case" comes from control once (OpenID → `/api/rtc/token`); the direct
//! joins use a LiveKit token for the same participant minted with LiveKit's secret (control hands
//! clients none). Needs the dev stack (`dev/stack start`); reads `.dev/secrets/` and
//! `.dev/state/demo.json`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use koinos_proto::contract::{MATRIX_DEVICE_ATTRIBUTE, MATRIX_USER_ATTRIBUTE};
use livekit_api::access_token::{AccessToken, VideoGrants};
use livekit_protocol::{SignalRequest, SignalResponse, signal_request, signal_response};
use prost::Message as _;
use tokio_tungstenite::tungstenite::Message;

const USAGE: &str = "usage: join-bench [--joins N] [--livekit ws://127.0.0.1:7881] [--gateway ws://127.0.0.1:7880] [--dev-dir .dev]";

struct Args {
    joins: usize,
    livekit: String,
    gateway: String,
    dev_dir: String,
}

fn parse() -> Result<Args> {
    let mut args = Args {
        joins: 200,
        livekit: "ws://127.0.0.1:7881".into(),
        gateway: "ws://127.0.0.1:7880".into(),
        dev_dir: ".dev".into(),
    };
    let mut raw = std::env::args().skip(1);
    while let Some(flag) = raw.next() {
        let mut value = || {
            raw.next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--joins" => args.joins = value()?.parse().context("--joins")?,
            "--livekit" => args.livekit = value()?,
            "--gateway" => args.gateway = value()?,
            "--dev-dir" => args.dev_dir = value()?,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if args.joins == 0 {
        bail!("--joins must be at least 1");
    }
    Ok(args)
}

/// One signalling session from connect to `join`; leaves at once.
async fn join_once(base: &str, jwt: &str) -> Result<Duration> {
    let url = format!("{base}/rtc?access_token={jwt}&protocol=16&sdk=rust&auto_subscribe=0");
    let started = Instant::now();
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .context("connect")?;
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .context("no join within 10 s")?
            .context("closed before join")??;
        if let Message::Binary(bytes) = frame {
            match SignalResponse::decode(bytes)?.message {
                Some(signal_response::Message::Join(_)) => break,
                other => bail!("expected join, got {other:?}"),
            }
        }
    }
    let elapsed = started.elapsed();
    let leave = SignalRequest {
        message: Some(signal_request::Message::Leave(Default::default())),
    };
    let _ = ws.send(Message::Binary(leave.encode_to_vec().into())).await;
    let _ = ws.close(None).await;
    Ok(elapsed)
}

/// alice's ticket for `room_id`, as the page gets one (OpenID token → control).
async fn ticket(room_id: &str) -> Result<serde_json::Value> {
    let http = reqwest::Client::new();
    let login: serde_json::Value = http
        .post("http://127.0.0.1:8008/_matrix/client/v3/login")
        .json(&serde_json::json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "koinos-dev", "device_id": "JOINBENCH"}))
        .send()
        .await?
        .json()
        .await?;
    let access = login["access_token"].as_str().context("alice's login")?;
    let openid: serde_json::Value = http
        .post("http://127.0.0.1:8008/_matrix/client/v3/user/@alice:localhost/openid/request_token")
        .bearer_auth(access)
        .json(&serde_json::json!({}))
        .send()
        .await?
        .json()
        .await?;
    let grant: serde_json::Value = http
        .post("http://127.0.0.1:8080/api/rtc/token")
        .json(&serde_json::json!({"room_id": room_id, "openid_token": openid, "device_id": "JOINBENCH"}))
        .send()
        .await?
        .json()
        .await?;
    if grant["jwt"].is_null() {
        bail!("control refused alice's ticket: {grant}");
    }
    Ok(grant)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("join-bench: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> Result<()> {
    let args = parse()?;
    let secret_path = format!("{}/secrets/livekit_api_secret", args.dev_dir);
    let secret = std::fs::read_to_string(&secret_path)
        .with_context(|| format!("{secret_path}: is the dev stack set up?"))?
        .trim()
        .to_owned();
    let demo: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{}/state/demo.json", args.dev_dir))
            .context("the demo case (is the dev stack up?)")?,
    )?;
    let room_id = demo["room_id"].as_str().context("demo.json room_id")?;
    let grant = ticket(room_id).await?;
    let room = grant["livekit_room"]
        .as_str()
        .context("livekit_room")?
        .to_owned();
    let identity = grant["identity"].as_str().context("identity")?.to_owned();
    let ticket = grant["jwt"].as_str().context("jwt")?.to_owned();
    let livekit_token = AccessToken::with_api_key("devkey", &secret)
        .with_identity(&identity)
        .with_attributes([
            (MATRIX_USER_ATTRIBUTE, "@alice:localhost"),
            (MATRIX_DEVICE_ATTRIBUTE, "JOINBENCH"),
        ])
        .with_grants(VideoGrants {
            room_join: true,
            room: room.clone(),
            ..Default::default()
        })
        .to_jwt()?;

    let mut direct = Vec::with_capacity(args.joins);
    let mut gateway = Vec::with_capacity(args.joins);
    for n in 0..args.joins {
        // Alternate which goes first so neither side always meets a warmer LiveKit.
        let (first, second) = if n % 2 == 0 {
            (&args.livekit, &args.gateway)
        } else {
            (&args.gateway, &args.livekit)
        };
        let token_for = |base: &String| {
            if base == &args.livekit {
                &livekit_token
            } else {
                &ticket
            }
        };
        let a = join_once(first, token_for(first)).await?;
        let b = join_once(second, token_for(second)).await?;
        if n % 2 == 0 {
            direct.push(a);
            gateway.push(b);
        } else {
            gateway.push(a);
            direct.push(b);
        }
    }
    direct.sort();
    gateway.sort();
    println!("| path | joins | p50 (ms) | p90 (ms) | p99 (ms) |");
    println!("|---|---:|---:|---:|---:|");
    for (name, samples) in [
        ("LiveKit directly", &direct),
        ("through the gateway", &gateway),
    ] {
        println!(
            "| {name} | {} | {:.2} | {:.2} | {:.2} |",
            samples.len(),
            percentile(samples, 0.5),
            percentile(samples, 0.9),
            percentile(samples, 0.99)
        );
    }
    println!();
    println!(
        "gateway / direct: p50 {:.2}×, p90 {:.2}×",
        percentile(&gateway, 0.5) / percentile(&direct, 0.5),
        percentile(&gateway, 0.9) / percentile(&direct, 0.9)
    );
    Ok(())
}
