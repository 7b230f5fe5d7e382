//! `token-bench`: how fast control issues LiveKit tokens (`POST /api/rtc/token`), measured side
//! by side with the floor it cannot go below — the homeserver's own OpenID `userinfo` round
//! trip, which control makes once per request.
//!
//! It expects the dev stack and a control instance to benchmark (`bench/run` starts a second
//! one on :18080 so the dev stack's control is not disturbed). Every request uses its own fresh
//! OpenID token, all fetched before timing starts. Progress goes to stderr; the report
//! (Markdown) goes to stdout. See `bench/README.md`.

use std::{
    collections::BTreeMap,
    future::Future,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The seeded demo practitioners, all joined to "Demo case".
const USERS: [&str; 6] = ["alice", "bob", "carol", "dave", "erin", "frank"];

const USAGE: &str = "\
usage: token-bench [OPTIONS]

  --requests N       measured requests per target (default 2000)
  --concurrency C    requests in flight at once (default 8)
  --warmup W         unmeasured requests per target before measuring (default 100)
  --homeserver URL   homeserver base URL (default http://127.0.0.1:8008)
  --control URL      the control instance under test (default http://127.0.0.1:18080)
  --room-name NAME   case room the demo users share (default \"Demo case\")
  --room-id ID       use this room id instead of looking the name up in alice's rooms
  --password PW      the demo users' password (default koinos-dev)

Targets: (a) GET <homeserver>/_matrix/federation/v1/openid/userinfo (the floor),
(b) POST <control>/api/rtc/token. Report (Markdown) on stdout, progress on stderr.";

#[derive(Debug, Clone)]
struct Args {
    requests: usize,
    concurrency: usize,
    warmup: usize,
    homeserver: String,
    control: String,
    room_name: String,
    room_id: Option<String>,
    password: String,
}

impl Args {
    fn parse() -> Result<Self> {
        let mut args = Args {
            requests: 2000,
            concurrency: 8,
            warmup: 100,
            homeserver: "http://127.0.0.1:8008".into(),
            control: "http://127.0.0.1:18080".into(),
            room_name: "Demo case".into(),
            room_id: None,
            password: "koinos-dev".into(),
        };
        let mut raw = std::env::args().skip(1);
        while let Some(arg) = raw.next() {
            if arg == "-h" || arg == "--help" {
                println!("{USAGE}");
                std::process::exit(0);
            }
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
                None => (arg.clone(), None),
            };
            let mut value = || -> Result<String> {
                inline
                    .clone()
                    .or_else(|| raw.next())
                    .with_context(|| format!("{flag} needs a value\n\n{USAGE}"))
            };
            let number = |v: String| -> Result<usize> {
                v.parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .with_context(|| format!("{flag} must be a positive whole number, got {v:?}"))
            };
            match flag.as_str() {
                "--requests" => args.requests = number(value()?)?,
                "--concurrency" => args.concurrency = number(value()?)?,
                "--warmup" => {
                    let v = value()?;
                    args.warmup = v
                        .parse()
                        .with_context(|| format!("--warmup must be a whole number, got {v:?}"))?;
                }
                "--homeserver" => args.homeserver = value()?.trim_end_matches('/').to_owned(),
                "--control" => args.control = value()?.trim_end_matches('/').to_owned(),
                "--room-name" => args.room_name = value()?,
                "--room-id" => args.room_id = Some(value()?),
                "--password" => args.password = value()?,
                _ => bail!("unknown argument {arg:?}\n\n{USAGE}"),
            }
        }
        Ok(args)
    }
}

/// A demo user's client-server session.
#[derive(Debug, Clone)]
struct Session {
    user_id: String,
    access_token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OpenIdToken {
    access_token: String,
    token_type: String,
    matrix_server_name: String,
    expires_in: u64,
}

/// One prepared request: everything is built before timing starts.
#[derive(Debug)]
struct Job {
    user_id: String,
    /// Full URL (userinfo) or the JSON body (token).
    payload: String,
    /// For the token endpoint: the identity control must answer with.
    identity: String,
}

/// One measured request.
#[derive(Debug)]
struct Sample {
    latency: Duration,
    /// `None` when the answer was the expected 200; otherwise a short reason (errcode).
    error: Option<String>,
}

#[derive(Debug)]
struct Stats {
    requests: usize,
    errors: BTreeMap<String, usize>,
    wall: Duration,
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
    mean: Duration,
}

impl Stats {
    fn from(samples: &[Sample], wall: Duration) -> Self {
        let mut latencies: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
        latencies.sort_unstable();
        let mut errors = BTreeMap::new();
        for error in samples.iter().filter_map(|s| s.error.as_ref()) {
            *errors.entry(error.clone()).or_insert(0) += 1;
        }
        let total: Duration = latencies.iter().sum();
        Stats {
            requests: samples.len(),
            errors,
            wall,
            p50: percentile(&latencies, 50.0),
            p90: percentile(&latencies, 90.0),
            p99: percentile(&latencies, 99.0),
            max: latencies.last().copied().unwrap_or_default(),
            mean: total / latencies.len().max(1) as u32,
        }
    }

    fn error_count(&self) -> usize {
        self.errors.values().sum()
    }

    fn throughput(&self) -> f64 {
        self.requests as f64 / self.wall.as_secs_f64()
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// Percent-encodes everything but RFC 3986 unreserved characters (for path segments and query
/// values: room ids, user ids, tokens).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Runs `count` calls of `f(i)` with at most `concurrency` in flight; results in index order
/// and the wall time from the first start to the last answer.
async fn run_pool<R, F, Fut>(count: usize, concurrency: usize, f: F) -> (Vec<R>, Duration)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: Send + 'static,
{
    let f = Arc::new(f);
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    let started = Instant::now();
    for _ in 0..concurrency.min(count) {
        let (f, next) = (f.clone(), next.clone());
        workers.spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break done;
                }
                done.push((i, f(i).await));
            }
        });
    }
    let mut results = Vec::with_capacity(count);
    while let Some(done) = workers.join_next().await {
        results.extend(done.expect("benchmark worker panicked"));
    }
    let wall = started.elapsed();
    results.sort_unstable_by_key(|(i, _)| *i);
    (results.into_iter().map(|(_, r)| r).collect(), wall)
}

/// Matrix errcode of a refusal, with its status; or the status alone.
fn refusal(status: reqwest::StatusCode, body: &[u8]) -> String {
    let errcode = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["errcode"].as_str().map(str::to_owned));
    match errcode {
        Some(code) => format!("{} {code}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    }
}

fn transport_error(e: reqwest::Error) -> String {
    // Never print the URL: for userinfo it carries the token.
    let e = e.without_url();
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "transport"
    };
    format!("{kind}: {:#}", anyhow::Error::from(e))
}

/// Sends one request and reads the whole answer; the latency covers exactly that.
async fn timed(
    request: reqwest::RequestBuilder,
) -> (Duration, Result<(reqwest::StatusCode, Vec<u8>), String>) {
    let started = Instant::now();
    let answer = async {
        let response = request.send().await.map_err(transport_error)?;
        let status = response.status();
        let body = response.bytes().await.map_err(transport_error)?;
        Ok((status, body.to_vec()))
    }
    .await;
    (started.elapsed(), answer)
}

async fn userinfo_request(http: reqwest::Client, job: &Job) -> Sample {
    let (latency, answer) = timed(http.get(&job.payload)).await;
    let error = match answer {
        Err(e) => Some(e),
        Ok((status, body)) if status == reqwest::StatusCode::OK => {
            let sub = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["sub"].as_str().map(str::to_owned));
            (sub.as_deref() != Some(job.user_id.as_str()))
                .then(|| format!("200 with unexpected sub {sub:?}"))
        }
        Ok((status, body)) => Some(refusal(status, &body)),
    };
    Sample { latency, error }
}

async fn token_request(http: reqwest::Client, url: &str, job: &Job) -> Sample {
    let request = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(job.payload.clone());
    let (latency, answer) = timed(request).await;
    let error = match answer {
        Err(e) => Some(e),
        Ok((status, body)) if status == reqwest::StatusCode::OK => {
            let grant = serde_json::from_slice::<Value>(&body).unwrap_or_default();
            let identity = grant["identity"].as_str().unwrap_or_default();
            let has_jwt = grant["jwt"].as_str().is_some_and(|j| !j.is_empty());
            (identity != job.identity || !has_jwt)
                .then(|| "200 without the expected identity and jwt".to_owned())
        }
        Ok((status, body)) => Some(refusal(status, &body)),
    };
    Sample { latency, error }
}

async fn measure<F, Fut>(jobs: Vec<Job>, concurrency: usize, one: F) -> Stats
where
    F: Fn(Arc<Vec<Job>>, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Sample> + Send + 'static,
{
    let jobs = Arc::new(jobs);
    let count = jobs.len();
    let (samples, wall) = run_pool(count, concurrency, move |i| one(jobs.clone(), i)).await;
    Stats::from(&samples, wall)
}

async fn json_answer(request: reqwest::RequestBuilder, what: &str) -> Result<Value> {
    let response = request
        .send()
        .await
        .map_err(|e| anyhow::Error::from(e.without_url()))
        .with_context(|| {
            format!("{what}: homeserver unreachable (is the dev stack up? dev/stack status)")
        })?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{what}: {status} {body}");
    }
    Ok(body)
}

async fn login(http: &reqwest::Client, hs: &str, user: &str, password: &str) -> Result<Session> {
    let body = json_answer(
        http.post(format!("{hs}/_matrix/client/v3/login"))
            .json(&json!({
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": user},
                "password": password,
                "initial_device_display_name": "koinos token-bench",
            })),
        &format!("login as {user}"),
    )
    .await?;
    Ok(Session {
        user_id: body["user_id"]
            .as_str()
            .context("login: no user_id")?
            .to_owned(),
        access_token: body["access_token"]
            .as_str()
            .context("login: no access_token")?
            .to_owned(),
    })
}

async fn logout(http: &reqwest::Client, hs: &str, session: &Session) {
    let _ = http
        .post(format!("{hs}/_matrix/client/v3/logout"))
        .bearer_auth(&session.access_token)
        .json(&json!({}))
        .send()
        .await;
}

/// The id of the one room named `name` among `session`'s joined rooms.
async fn find_room(
    http: &reqwest::Client,
    hs: &str,
    session: &Session,
    name: &str,
) -> Result<String> {
    let joined = json_answer(
        http.get(format!("{hs}/_matrix/client/v3/joined_rooms"))
            .bearer_auth(&session.access_token),
        "joined_rooms",
    )
    .await?;
    let mut found = Vec::new();
    for room in joined["joined_rooms"].as_array().into_iter().flatten() {
        let Some(room) = room.as_str() else { continue };
        let response = http
            .get(format!(
                "{hs}/_matrix/client/v3/rooms/{}/state/m.room.name",
                encode(room)
            ))
            .bearer_auth(&session.access_token)
            .send()
            .await?;
        if !response.status().is_success() {
            continue; // a room without a name
        }
        let state: Value = response.json().await.unwrap_or_default();
        if state["name"].as_str() == Some(name) {
            found.push(room.to_owned());
        }
    }
    match found.as_slice() {
        [room] => Ok(room.clone()),
        [] => bail!(
            "{} is in no room named {name:?}: is the dev stack seeded? (dev/stack status)",
            session.user_id
        ),
        _ => bail!(
            "{} is in several rooms named {name:?} ({}); pick one with --room-id",
            session.user_id,
            found.join(", ")
        ),
    }
}

/// `count` fresh OpenID tokens, round-robin over the sessions: `(session index, token)`.
async fn openid_tokens(
    http: &reqwest::Client,
    hs: &str,
    sessions: &[Session],
    count: usize,
    concurrency: usize,
) -> Result<Vec<(usize, OpenIdToken)>> {
    let sessions = Arc::new(sessions.to_vec());
    let (http, hs) = (http.clone(), hs.to_owned());
    let (tokens, _) = run_pool(count, concurrency, move |i| {
        let (http, hs, sessions) = (http.clone(), hs.clone(), sessions.clone());
        async move {
            let who = i % sessions.len();
            let session = &sessions[who];
            let body = json_answer(
                http.post(format!(
                    "{hs}/_matrix/client/v3/user/{}/openid/request_token",
                    encode(&session.user_id)
                ))
                .bearer_auth(&session.access_token)
                .json(&json!({})),
                "openid/request_token",
            )
            .await?;
            let token: OpenIdToken = serde_json::from_value(body)
                .context("openid/request_token answered an unexpected shape")?;
            Ok::<_, anyhow::Error>((who, token))
        }
    })
    .await;
    tokens.into_iter().collect()
}

fn userinfo_jobs(hs: &str, sessions: &[Session], tokens: &[(usize, OpenIdToken)]) -> Vec<Job> {
    tokens
        .iter()
        .map(|(who, token)| Job {
            user_id: sessions[*who].user_id.clone(),
            payload: format!(
                "{hs}/_matrix/federation/v1/openid/userinfo?access_token={}",
                encode(&token.access_token)
            ),
            identity: String::new(),
        })
        .collect()
}

fn token_jobs(
    room_id: &str,
    device_prefix: &str,
    sessions: &[Session],
    tokens: &[(usize, OpenIdToken)],
) -> Vec<Job> {
    tokens
        .iter()
        .enumerate()
        .map(|(n, (who, token))| {
            let user_id = sessions[*who].user_id.clone();
            let device_id = format!("{device_prefix}{n}");
            Job {
                identity: format!("{user_id}:{device_id}"),
                payload: json!({
                    "room_id": room_id,
                    "openid_token": token,
                    "device_id": device_id,
                })
                .to_string(),
                user_id,
            }
        })
        .collect()
}

/// Control's own Prometheus counters and histogram sums, keyed by `name{labels}`.
async fn scrape_metrics(http: &reqwest::Client, control: &str) -> Option<BTreeMap<String, f64>> {
    let text = http
        .get(format!("{control}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
            .collect(),
    )
}

/// Mean time per observation of one of control's dependencies between two scrapes.
fn dependency_mean(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    dependency: &str,
) -> Option<(Duration, f64)> {
    let get = |m: &BTreeMap<String, f64>, kind: &str| {
        m.get(&format!(
            "koinos_control_dependency_latency_seconds_{kind}{{dependency=\"{dependency}\"}}"
        ))
        .copied()
        .unwrap_or(0.0)
    };
    let count = get(after, "count") - get(before, "count");
    let sum = get(after, "sum") - get(before, "sum");
    (count > 0.0).then(|| (Duration::from_secs_f64(sum / count), count))
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn commit() -> String {
    let Some(head) = command_output("git", &["rev-parse", "HEAD"]) else {
        return "unknown (not a git checkout)".into();
    };
    let dirty = command_output("git", &["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{head} (with uncommitted changes)")
    } else {
        head
    }
}

fn row(target: &str, s: &Stats) -> String {
    format!(
        "| {target} | {} | {} | {:.2} | {:.0} | {} | {} | {} | {} |",
        s.requests,
        s.error_count(),
        s.wall.as_secs_f64(),
        s.throughput(),
        ms(s.p50),
        ms(s.p90),
        ms(s.p99),
        ms(s.max),
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("token-bench: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> Result<()> {
    let args = Args::parse()?;
    let hs = args.homeserver.as_str();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(args.concurrency.max(8))
        .build()?;
    let load_before = load_average();

    eprintln!("logging in {}", USERS.join(", "));
    let mut sessions = Vec::new();
    for user in USERS {
        sessions.push(login(&http, hs, user, &args.password).await?);
    }
    let room_id = match &args.room_id {
        Some(id) => id.clone(),
        None => find_room(&http, hs, &sessions[0], &args.room_name).await?,
    };
    eprintln!("room {:?} is {room_id}", args.room_name);

    let per_target = args.warmup + args.requests;
    eprintln!(
        "fetching {} fresh OpenID tokens ({per_target} per target, one per request)",
        2 * per_target
    );
    let started = Instant::now();
    let mut tokens = openid_tokens(&http, hs, &sessions, 2 * per_target, args.concurrency).await?;
    let token_prep = started.elapsed();
    let control_tokens = tokens.split_off(per_target);
    let userinfo_tokens = tokens;

    let mut userinfo = userinfo_jobs(hs, &sessions, &userinfo_tokens);
    let userinfo_measured = userinfo.split_off(args.warmup);
    let userinfo_warmup = userinfo;
    let token_warmup = token_jobs(
        &room_id,
        "BENCHWARMUP",
        &sessions,
        &control_tokens[..args.warmup],
    );
    let token_measured = token_jobs(&room_id, "BENCH", &sessions, &control_tokens[args.warmup..]);

    let userinfo_one = {
        let http = http.clone();
        move |jobs: Arc<Vec<Job>>, i: usize| {
            let http = http.clone();
            async move { userinfo_request(http, &jobs[i]).await }
        }
    };
    let token_url = Arc::new(format!("{}/api/rtc/token", args.control));
    let token_one = {
        let http = http.clone();
        move |jobs: Arc<Vec<Job>>, i: usize| {
            let (http, url) = (http.clone(), token_url.clone());
            async move { token_request(http, &url, &jobs[i]).await }
        }
    };

    eprintln!(
        "(a) homeserver OpenID userinfo: warmup {}, then {} measured",
        args.warmup, args.requests
    );
    let warm = measure(userinfo_warmup, args.concurrency, userinfo_one.clone()).await;
    if warm.requests > 0 && warm.error_count() == warm.requests {
        bail!("every userinfo warmup request failed: {:?}", warm.errors);
    }
    let floor = measure(userinfo_measured, args.concurrency, userinfo_one).await;

    eprintln!(
        "(b) control POST /api/rtc/token at {}: warmup {}, then {} measured",
        args.control, args.warmup, args.requests
    );
    let warm = measure(token_warmup, args.concurrency, token_one.clone()).await;
    if warm.requests > 0 && warm.error_count() == warm.requests {
        bail!("every token warmup request failed: {:?}", warm.errors);
    }
    let metrics_before = scrape_metrics(&http, &args.control).await;
    let control = measure(token_measured, args.concurrency, token_one).await;
    let metrics_after = scrape_metrics(&http, &args.control).await;
    let load_after = load_average();

    for session in &sessions {
        logout(&http, hs, session).await;
    }

    // The report.
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let arch = command_output("uname", &["-m"]).unwrap_or_else(|| std::env::consts::ARCH.into());
    println!("- commit: `{}`", commit());
    println!(
        "- machine: nproc {nproc}, `uname -m` {arch}, CPU {}",
        cpu_model()
    );
    println!("- load average (1/5/15 min): {load_before} before, {load_after} after");
    println!(
        "- {} measured requests per target after {} warmup, concurrency {}, one fresh OpenID token per request ({} tokens fetched in {:.1} s, before timing)",
        args.requests,
        args.warmup,
        args.concurrency,
        2 * per_target,
        token_prep.as_secs_f64()
    );
    println!(
        "- room: {room_id} ({:?}), users: {}",
        args.room_name,
        USERS.join(" ")
    );
    println!();
    println!(
        "| target | requests | errors | wall (s) | throughput (req/s) | p50 (ms) | p90 (ms) | p99 (ms) | max (ms) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "{}",
        row(
            "(a) homeserver `GET /_matrix/federation/v1/openid/userinfo` (floor)",
            &floor
        )
    );
    println!("{}", row("(b) control `POST /api/rtc/token`", &control));
    println!();
    let p50_ratio = control.p50.as_secs_f64() / floor.p50.as_secs_f64().max(f64::MIN_POSITIVE);
    let throughput_ratio = control.throughput() / floor.throughput().max(f64::MIN_POSITIVE);
    println!("- control p50 / userinfo p50: **{p50_ratio:.2}×**");
    println!("- control throughput / userinfo throughput: **{throughput_ratio:.2}×**");
    for (name, stats) in [("userinfo", &floor), ("control", &control)] {
        for (reason, n) in &stats.errors {
            println!("- {name} non-200: {n} × `{reason}`");
        }
    }
    if let (Some(before), Some(after)) = (&metrics_before, &metrics_after) {
        println!();
        println!("Inside control during (b), from its own `/metrics` (mean per observation):");
        println!();
        println!("| step | observations | mean (ms) |");
        println!("|---|---:|---:|");
        let mut accounted = Duration::ZERO;
        for (dependency, label) in [
            ("homeserver_openid", "homeserver OpenID userinfo"),
            ("membership", "membership (in-memory matrix-sdk state)"),
            ("livekit", "LiveKit CreateRoom + ListParticipants"),
        ] {
            if let Some((mean, count)) = dependency_mean(before, after, dependency) {
                accounted += mean;
                println!("| {label} | {count:.0} | {} |", ms(mean));
            }
        }
        println!(
            "| the rest: client-measured mean {} ms minus the above (HTTP, JSON, JWT signing, queueing) | | {} |",
            ms(control.mean),
            ms(control.mean.saturating_sub(accounted))
        );
    }
    Ok(())
}
