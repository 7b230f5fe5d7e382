use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use koinos_control::{
    config::Config,
    enforcement,
    grpc::{GatewayCredential, GrpcApi},
    homeserver::HomeserverOpenId,
    livekit::{LiveKitRooms, LiveKitService, TokenMinter},
    membership::MatrixMembership,
    metrics::Metrics,
    ratelimit::RateLimiter,
    reaper::{self, ReaperSettings},
    replay::ReplayGuard,
    rest::{AppState, LiveKitWebhooks, SecurityHeaders, router},
    seats::{SeatKeeper, SeatRules},
    service::{RtcService, SystemClock},
    ticket::Tickets,
    turn::TurnMinter,
};
use koinos_proto::v1::control_service_server::ControlServiceServer;
use tracing::{error, info, warn};

fn usage() -> ! {
    eprintln!(
        "usage: koinos-control [--config FILE] [--check-config]\n\n\
         Settings come from FILE (TOML; also KOINOS_CONTROL_CONFIG) and KOINOS_CONTROL_* \
         environment variables. See the README's configuration table.\n\
         --check-config loads them as at start-up (secret files read), prints OK or the \
         error and exits 0 or 1, without listening or connecting anywhere."
    );
    std::process::exit(2)
}

struct Args {
    config: Option<PathBuf>,
    check_config: bool,
}

fn args() -> Args {
    let mut args = std::env::args().skip(1);
    let mut parsed = Args {
        config: std::env::var_os("KOINOS_CONTROL_CONFIG").map(PathBuf::from),
        check_config: false,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => parsed.config = Some(args.next().unwrap_or_else(|| usage()).into()),
            "--check-config" => parsed.check_config = true,
            _ => usage(),
        }
    }
    parsed
}

/// `--check-config`: the configuration exactly as `run` would load it, and nothing else.
fn check_config(path: Option<&std::path::Path>) -> ! {
    match Config::load(path) {
        Ok(_) => {
            println!("koinos-control: configuration OK");
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("koinos-control: {e}");
            std::process::exit(1)
        }
    }
}

fn init_tracing() {
    // matrix-sdk logs request details at debug level; keep it at warn so that access tokens
    // can never reach the log even when RUST_LOG=debug is set for our own crates.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info".into())
        .add_directive("matrix_sdk=warn".parse().expect("static directive"))
        .add_directive("matrix_sdk_base=warn".parse().expect("static directive"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    if std::env::var("KOINOS_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() {
    let args = args();
    if args.check_config {
        check_config(args.config.as_deref());
    }
    init_tracing();
    if let Err(e) = run(args.config).await {
        error!("{e:#}");
        std::process::exit(1);
    }
}

async fn run(config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let (config, secrets) = Config::load(config_path.as_deref())?;
    info!(http = %config.http_listen, grpc = %config.grpc_listen, homeserver = %config.homeserver.url, "starting koinos-control");
    if secrets.gateway_credential.is_none() {
        warn!(
            "no gateway_credential: gateways are refused (no revocations for them, no fallback \
             attribute or camera pause, no room listing after a resume)"
        );
    }

    let membership = login_with_retry(&config, &secrets.service_password).await?;
    let livekit: Arc<dyn LiveKitRooms> = Arc::new(LiveKitService::new(
        &config.livekit.api_url,
        &config.livekit.api_key,
        &secrets.livekit_api_secret,
        config.call.empty_timeout,
    ));
    let metrics = Metrics::default();
    let (revoke, revocations) = enforcement::channel();
    let revocation_feed = enforcement::feed();
    tokio::spawn(
        membership
            .clone()
            .run_sync(revoke, metrics.forged_counter()),
    );

    let service = Arc::new(RtcService {
        openid: Arc::new(HomeserverOpenId::new(
            &config.homeserver.url,
            &config.homeserver.server_name,
        )?),
        membership,
        livekit,
        minter: TokenMinter::new(&config.livekit.api_key, &secrets.livekit_api_secret),
        tickets: Tickets::new(&secrets.livekit_api_secret, config.call.token_ttl),
        turn: TurnMinter::new(
            &secrets.turn_secret,
            config.turn.ttl,
            config.turn.uris.clone(),
        ),
        rate_limiter: RateLimiter::new(
            config.call.rate_limit_burst,
            config.call.rate_limit_per_minute,
        ),
        address_limiter: koinos_net::AddressLimiter::new(
            config.call.rate_limit_per_address_burst,
            config.call.rate_limit_per_address_per_minute,
        ),
        replay_guard: ReplayGuard::new(config.homeserver.openid_token_lifetime),
        metrics,
        clock: Arc::new(SystemClock),
        public_livekit_url: config.livekit.public_url.clone(),
        seats: SeatKeeper::default(),
        seat_rules: SeatRules {
            max_participants: config.call.max_participants,
            max_devices_per_user: config.call.max_devices_per_user,
            hold: config.call.seat_hold,
        },
        session_token_ttl: config.call.session_token_ttl,
    });
    let (enforce_now, enforcement_hints) = enforcement::hints();
    tokio::spawn(enforcement::run(
        service.clone(),
        revocations,
        enforcement_hints,
        revocation_feed.clone(),
        config.call.enforce_interval,
    ));

    let web_config = serde_json::json!({
        "homeserver_url": config.homeserver.public_url.as_deref().unwrap_or(&config.homeserver.url),
        "server_name": config.homeserver.server_name,
        "rtc_service_url": config.public_rtc_service_url,
    });
    if let Some(dir) = &config.web_dir
        && !dir.join("index.html").exists()
    {
        warn!(dir = %dir.display(), "web_dir has no index.html; build it with `make build`");
    }
    let (hints, hinted) = reaper::hints();
    tokio::spawn(reaper::run(
        service.clone(),
        hinted,
        ReaperSettings {
            interval: config.call.reconcile_interval,
            ghost_after: config.call.ghost_after,
            service_url: config.public_rtc_service_url.clone(),
        },
    ));
    let app = router(
        AppState {
            service: service.clone(),
            web_config: Arc::new(web_config),
            webhooks: Arc::new(LiveKitWebhooks {
                receiver: livekit_api::webhooks::WebhookReceiver::new(
                    livekit_api::access_token::TokenVerifier::with_api_key(
                        &config.livekit.api_key,
                        &secrets.livekit_api_secret,
                    ),
                ),
                hints,
                enforcement: enforce_now,
            }),
            trusted_proxies: Arc::new(config.http.trusted_proxies.clone()),
            security_headers: Arc::new(SecurityHeaders::new(&connect_sources(&config))),
        },
        config.web_dir.clone(),
    );

    let http = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.http_listen))?;
    let grpc = tokio::net::TcpListener::bind(config.grpc_listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.grpc_listen))?;
    let (health, health_service) = tonic_health::server::health_reporter();
    tokio::spawn(report_health(health, service.clone()));
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(koinos_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("gRPC reflection descriptors")?;
    let grpc_routes = tonic::service::Routes::new(health_service)
        .add_service(reflection)
        .add_service(ControlServiceServer::new(GrpcApi {
            service: service.clone(),
            revocations: revocation_feed,
            gateway_credential: secrets
                .gateway_credential
                .as_deref()
                .map(GatewayCredential::new),
            trusted_proxies: config.grpc.trusted_proxies.clone(),
        }))
        .prepare();
    let http_stats = service.metrics.connections.listener("http");
    let grpc_stats = service.metrics.connections.listener("grpc");
    info!("ready to serve");
    tokio::try_join!(
        async {
            koinos_net::serve(
                http,
                config.http.clone(),
                http_stats,
                |_| app.clone(),
                shutdown(),
            )
            .await
            .context("HTTP server failed")
        },
        async {
            koinos_net::serve(
                grpc,
                config.grpc.clone(),
                grpc_stats,
                |_| grpc_routes.clone(),
                shutdown(),
            )
            .await
            .context("gRPC server failed")
        },
    )?;
    info!("stopped");
    Ok(())
}

/// What the page may connect to besides itself: the homeserver and the gateway, over HTTP(S)
/// and WebSocket alike (livekit-client asks the gateway's `/rtc/validate` over HTTP), and what
/// the operator added.
fn connect_sources(config: &Config) -> Vec<String> {
    let homeserver = config
        .homeserver
        .public_url
        .as_deref()
        .unwrap_or(&config.homeserver.url);
    let mut sources = Vec::new();
    for url in [homeserver, config.livekit.public_url.as_str()] {
        if let Ok(url) = url::Url::parse(url) {
            let origin = url.origin().ascii_serialization();
            let (http, ws) = match url.scheme() {
                "https" | "wss" => ("https", "wss"),
                _ => ("http", "ws"),
            };
            if let Some((_, rest)) = origin.split_once("://") {
                sources.push(format!("{http}://{rest}"));
                sources.push(format!("{ws}://{rest}"));
            }
        }
    }
    sources.extend(config.web_connect_src.iter().cloned());
    sources.dedup();
    sources
}

/// gRPC health (`grpc.health.v1`) follows the same readiness as `/readyz`: SERVING only while
/// membership is synced and fresh and LiveKit answers, for the whole server ("") and for
/// `koinos.rtc.v1.ControlService`.
async fn report_health(health: tonic_health::server::HealthReporter, service: Arc<RtcService>) {
    use tonic_health::ServingStatus;
    const SERVICE: &str = "koinos.rtc.v1.ControlService";
    let mut last = None;
    loop {
        let status = if service.is_ready().await {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        if last != Some(status) {
            for name in ["", SERVICE] {
                health.set_service_status(name, status).await;
            }
            info!(?status, "gRPC health");
            last = Some(status);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// The homeserver may still be starting; a wrong password, though, is fatal at once.
async fn login_with_retry(
    config: &Config,
    password: &str,
) -> anyhow::Result<Arc<MatrixMembership>> {
    let hs = &config.homeserver;
    let mut delay = Duration::from_millis(500);
    for attempt in 1.. {
        match MatrixMembership::login(
            &hs.url,
            &hs.server_name,
            &hs.service_user,
            password,
            &hs.service_device_id,
            hs.max_sync_staleness,
        )
        .await
        {
            Ok(m) => return Ok(m),
            Err(e) if e.to_string().contains("M_FORBIDDEN") || attempt >= 60 => {
                return Err(e.context("cannot log control's service account in"));
            }
            Err(e) => {
                warn!(attempt, "homeserver not available yet: {e:#}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    unreachable!()
}

async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler")
            .recv()
            .await;
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
