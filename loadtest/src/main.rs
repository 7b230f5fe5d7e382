//! koinos-loadtest: drives simulated call participants (real WebRTC with the `webrtc` crate,
//! Opus audio, VP8 simulcast video) through the homeserver, control, the gateway and LiveKit, and
//! reports what each one received. See loadtest/README.md.

mod accounts;
mod cpu;
mod hostile;
mod loss;
mod media;
mod participant;
mod report;
mod vp8;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::mpsc;

use accounts::Homeserver;
use participant::{Observations, Plan};

/// Simulated practitioners in case-room calls, through the real stack.
#[derive(Debug, Parser)]
#[command(name = "koinos-loadtest", version)]
struct Options {
    /// Calls to run at once (one case room each).
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Participants in each call (1–6: a 7th is refused by control).
    #[arg(long, default_value_t = 2)]
    participants: usize,
    /// Participants started per second, over all rooms.
    #[arg(long, default_value_t = 2.0)]
    ramp: f64,
    /// Seconds the call goes on once the last participant has started; then everyone leaves.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Connect straight to LiveKit at this URL instead of the gateway control names.
    #[arg(long, value_name = "WS_URL", conflicts_with = "gateway_url")]
    direct: Option<String>,
    /// Connect through the gateway at this URL instead of the one control names (another
    /// instance, a release build for a benchmark). Repeat it to spread each call over several
    /// gateways: participant N of every call uses the (N mod count)-th.
    #[arg(long, value_name = "WS_URL")]
    gateway_url: Vec<String>,
    /// The homeserver (Synapse, with a registration shared secret).
    #[arg(long, default_value = "http://127.0.0.1:8008")]
    homeserver: String,
    /// Control's REST base (`rtc_service_url`).
    #[arg(long, default_value = "http://127.0.0.1:8080/api/rtc")]
    control: String,
    /// File holding Synapse's `registration_shared_secret` (to make the run's accounts).
    #[arg(long, default_value = ".dev/secrets/registration_shared_secret")]
    registration_secret_file: PathBuf,
    /// File holding the password of control's service account (it joins every case room).
    #[arg(long, default_value = ".dev/secrets/service_password")]
    service_password_file: PathBuf,
    /// Local address the peer connections gather candidates on.
    #[arg(long, default_value = "127.0.0.1")]
    bind_ip: String,
    /// Where the encoded VP8 clips are kept between runs.
    #[arg(long)]
    media_cache: Option<PathBuf>,
    /// The JSON report.
    #[arg(long, default_value = "loadtest-report.json")]
    output: PathBuf,
    /// Receive loss for participant INDEX of every call: INDEX=PERCENT[@FROM-TO], FROM and TO in
    /// seconds after its media connected (e.g. 1=30@10-70). Repeatable.
    #[arg(long, value_name = "SPEC")]
    loss: Vec<loss::LossSpec>,
    /// Stop the whole run at the first participant that fails.
    #[arg(long)]
    fail_fast: bool,
    /// Participant INDEX of every call misbehaves (hostile.rs): LiveKit's JSON encoding,
    /// settings above the cap, `simulate`, unmuting a paused camera, its tokens tried at
    /// LiveKit directly. The report says whether the server's policy held. Repeatable.
    #[arg(long, value_name = "INDEX")]
    hostile: Vec<usize>,
    /// LiveKit's own signalling URL (where a hostile participant presents its tokens).
    #[arg(long, value_name = "WS_URL", default_value = "ws://127.0.0.1:7881")]
    livekit_url: String,
    /// With --direct: the file holding LiveKit's API secret. Control hands out tickets only a
    /// gateway can use, so going straight to LiveKit needs a LiveKit token minted here.
    #[arg(long, default_value = ".dev/secrets/livekit_api_secret")]
    livekit_secret_file: PathBuf,
}

impl Options {
    fn validate(&self) -> Result<()> {
        if self.rooms == 0 {
            bail!("--rooms must be at least 1");
        }
        if !(1..=6).contains(&self.participants) {
            bail!("--participants must be 1 to 6 (a call holds six; control refuses a seventh)");
        }
        if !(self.ramp.is_finite() && self.ramp > 0.0) {
            bail!("--ramp must be a positive number of participants per second");
        }
        if self.duration == 0 {
            bail!("--duration must be at least 1 second");
        }
        if let Some(index) = self.hostile.iter().find(|i| **i >= self.participants) {
            bail!(
                "--hostile names participant {index} but calls have {} (0 to {})",
                self.participants,
                self.participants - 1
            );
        }
        if !self.hostile.is_empty() && self.direct.is_some() {
            bail!("--hostile tests the gateway's policy: it goes with the gateway, not --direct");
        }
        for spec in &self.loss {
            if spec.participant >= self.participants {
                bail!(
                    "--loss names participant {} but calls have {} (0 to {})",
                    spec.participant,
                    self.participants,
                    self.participants - 1
                );
            }
        }
        let urls = self
            .direct
            .iter()
            .map(|url| ("--direct", url))
            .chain(self.gateway_url.iter().map(|url| ("--gateway-url", url)));
        for (flag, url) in urls {
            if !(url.starts_with("ws://") || url.starts_with("wss://")) {
                bail!("{flag} must be a ws:// or wss:// URL, got {url:?}");
            }
        }
        Ok(())
    }
}

fn read_secret(path: &PathBuf, what: &str) -> Result<String> {
    let value = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read {what} from {} (start the dev stack, or pass the file's path)",
            path.display()
        )
    })?;
    Ok(value.trim().to_owned())
}

fn default_media_cache() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".cache/koinos-rtc/loadtest")
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = Options::parse();
    if let Err(err) = options.validate() {
        eprintln!("koinos-loadtest: {err}");
        return ExitCode::from(2);
    }
    match run(options).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("koinos-loadtest: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// The run; `Ok(false)` when participants failed.
async fn run(options: Options) -> Result<bool> {
    let secret = read_secret(&options.registration_secret_file, "the registration secret")?;
    let service_password = read_secret(
        &options.service_password_file,
        "the service account's password",
    )?;
    let direct_secret = match &options.direct {
        Some(_) => Some(Arc::new(read_secret(
            &options.livekit_secret_file,
            "LiveKit's API secret (for --direct)",
        )?)),
        None => None,
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let homeserver = Arc::new(Homeserver::new(http.clone(), &options.homeserver));
    accounts::control_reachable(&http, &options.control).await?;

    let run_id = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
    );
    eprintln!(
        "provisioning {} case room(s) with {} practitioner(s) each (run {run_id})…",
        options.rooms, options.participants
    );
    homeserver
        .register(&secret, "koinos-rtc", &service_password)
        .await?;
    let service = homeserver
        .login("koinos-rtc", &service_password, "KOINOSLOADTEST")
        .await?;
    let mut plans = Vec::new();
    for room in 0..options.rooms {
        let mut accounts = Vec::new();
        for p in 0..options.participants {
            let localpart = format!("lt-{run_id}-r{room}-p{p}");
            homeserver.register(&secret, &localpart, &run_id).await?;
            accounts.push(
                homeserver
                    .login(&localpart, &run_id, &format!("LT{p}"))
                    .await?,
            );
        }
        let others: Vec<&accounts::Account> = accounts[1..].iter().collect();
        let room_id = homeserver
            .create_case(
                &accounts[0],
                &format!("Load test {run_id} #{room}"),
                &others,
            )
            .await?;
        for account in accounts[1..].iter().chain([&service]) {
            homeserver.join(account, &room_id).await?;
        }
        for (index, account) in accounts.into_iter().enumerate() {
            plans.push((room, index, room_id.clone(), account));
        }
    }

    let cache = options
        .media_cache
        .clone()
        .unwrap_or_else(default_media_cache);
    eprintln!(
        "preparing media (Opus, and VP8 clips in {})…",
        cache.display()
    );
    let media =
        Arc::new(tokio::task::spawn_blocking(move || media::Media::prepare(&cache)).await??);

    let processes = cpu::Processes::find();
    let cpu_before = processes.sample();
    let started = Instant::now();
    let total = plans.len();
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} connected · {msg}")?
            .progress_chars("=> "),
    );
    let (connected_tx, mut connected_rx) = mpsc::unbounded_channel();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(usize, Result<()>)>();
    let mut all: Vec<Arc<Mutex<Observations>>> = Vec::new();
    // Interleave rooms so that every call grows at the same pace.
    plans.sort_by_key(|(room, index, _, _)| (*index, *room));
    let gap = Duration::from_secs_f64(1.0 / options.ramp);
    let leave_at =
        started + gap * (total.saturating_sub(1)) as u32 + Duration::from_secs(options.duration);
    let mut tasks = Vec::new();
    for (index, (_, in_room, room_id, account)) in plans.into_iter().enumerate() {
        let observations = Arc::new(Mutex::new(Observations::default()));
        all.push(Arc::clone(&observations));
        let plan = Plan {
            http: http.clone(),
            homeserver: Arc::clone(&homeserver),
            rtc_service_url: options.control.clone(),
            signal_url: options.direct.clone().or_else(|| {
                (!options.gateway_url.is_empty())
                    .then(|| options.gateway_url[in_room % options.gateway_url.len()].clone())
            }),
            room_id,
            account,
            media: Arc::clone(&media),
            bind_ip: options.bind_ip.clone(),
            leave_at,
            run_started: started,
            loss: options
                .loss
                .iter()
                .find(|l| l.participant == in_room)
                .cloned()
                .map(loss::Schedule::new),
            hostile: options.hostile.contains(&in_room),
            livekit_url: options.livekit_url.clone(),
            direct_secret: direct_secret.clone(),
        };
        let connected = connected_tx.clone();
        let done = done_tx.clone();
        let start_at = started + gap * index as u32;
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start_at.into()).await;
            let outcome = participant::run(plan, observations, connected).await;
            let _ = done.send((index, outcome));
        }));
    }
    drop(done_tx);
    drop(connected_tx);

    let mut failed = 0;
    let mut finished = 0;
    bar.set_message("0 failed");
    while finished < total {
        tokio::select! {
            Some(()) = connected_rx.recv() => bar.inc(1),
            Some((index, outcome)) = done_rx.recv() => {
                finished += 1;
                if let Err(err) = outcome {
                    failed += 1;
                    let message = format!("{err:#}");
                    bar.println(format!("participant {index} failed: {message}"));
                    all[index].lock().unwrap().error = Some(message);
                    bar.set_message(format!("{failed} failed"));
                    if options.fail_fast {
                        for task in &tasks {
                            task.abort();
                        }
                        break;
                    }
                }
            }
            else => break,
        }
    }
    bar.finish();
    let wall = started.elapsed();
    let cpu = processes.usage_since(&cpu_before, wall);

    let observations: Vec<Observations> = all.iter().map(|o| o.lock().unwrap().clone()).collect();
    let report = report::Report::new(&options_summary(&options), observations, cpu, wall);
    print!("{}", report.table());
    std::fs::write(&options.output, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("cannot write the report to {}", options.output.display()))?;
    eprintln!("report: {}", options.output.display());
    Ok(failed == 0)
}

fn options_summary(options: &Options) -> report::RunOptions {
    report::RunOptions {
        rooms: options.rooms,
        participants: options.participants,
        ramp: options.ramp,
        duration_secs: options.duration,
        path: if options.direct.is_some() {
            "direct".into()
        } else {
            "gateway".into()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options> {
        let options = Options::try_parse_from(
            std::iter::once("koinos-loadtest").chain(args.iter().copied()),
        )?;
        options.validate()?;
        Ok(options)
    }

    #[test]
    fn bad_options_are_refused_with_a_reason() {
        for (args, reason) in [
            (&["--participants", "7"][..], "1 to 6"),
            (&["--participants", "0"][..], "1 to 6"),
            (&["--rooms", "0"][..], "--rooms"),
            (&["--ramp", "0"][..], "--ramp"),
            (&["--ramp", "NaN"][..], "--ramp"),
            (&["--duration", "0"][..], "--duration"),
            (&["--direct", "http://x"][..], "ws://"),
            (&["--gateway-url", "localhost:7880"][..], "ws://"),
            (&["--participants", "2", "--loss", "2=10"][..], "0 to 1"),
            (&["--loss", "1=200"][..], "0 to 100"),
        ] {
            let err = parse(args).expect_err(&format!("{args:?} should be refused"));
            assert!(format!("{err:#}").contains(reason), "{args:?}: {err:#}");
        }
        assert!(parse(&["--participants", "abc"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
        assert!(
            parse(&["--direct", "ws://a", "--gateway-url", "ws://b"]).is_err(),
            "one path at a time"
        );
    }

    #[test]
    fn the_defaults_are_a_small_call_through_the_gateway() {
        let options = parse(&[]).unwrap();
        assert_eq!((options.rooms, options.participants), (1, 2));
        assert!(options.direct.is_none());
    }
}
