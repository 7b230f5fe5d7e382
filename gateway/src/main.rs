use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use koinos_gateway::{Gateway, config::Config, control::GrpcControl, router};
use tracing::{error, info};

/// How long an admission or a RoomService request through control may take.
const CONTROL_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

struct Args {
    config: Option<PathBuf>,
    check_config: bool,
}

fn args() -> Args {
    let mut args = std::env::args().skip(1);
    let mut parsed = Args {
        config: std::env::var_os("KOINOS_GATEWAY_CONFIG").map(PathBuf::from),
        check_config: false,
    };
    while let Some(arg) = args.next() {
        let file = if arg == "--config" { args.next() } else { None };
        match (arg.as_str(), file) {
            ("--check-config", _) => parsed.check_config = true,
            ("--config", Some(file)) => parsed.config = Some(file.into()),
            _ => {
                eprintln!(
                    "usage: koinos-gateway [--config FILE] [--check-config]\n\nSettings come from \
                     FILE (TOML; also KOINOS_GATEWAY_CONFIG) and KOINOS_GATEWAY_* environment \
                     variables.\n--check-config loads them as at start-up (secret files read), \
                     prints OK or the error and exits 0 or 1, without listening or connecting \
                     anywhere."
                );
                std::process::exit(2);
            }
        }
    }
    parsed
}

/// `--check-config`: the configuration exactly as `run` would load it, and nothing else.
fn check_config(path: Option<&std::path::Path>) -> ! {
    match Config::load(path) {
        Ok(_) => {
            println!("koinos-gateway: configuration OK");
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("koinos-gateway: {e}");
            std::process::exit(1)
        }
    }
}

#[tokio::main]
async fn main() {
    let args = args();
    if args.check_config {
        check_config(args.config.as_deref());
    }
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    if std::env::var("KOINOS_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
    if let Err(e) = run(args.config).await {
        error!("{e:#}");
        std::process::exit(1);
    }
}

async fn run(config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let (config, control_credential) = Config::load(config_path.as_deref())?;
    let listen = config.listen;
    info!(%listen, upstream = %config.upstream_url, control = %config.control_grpc_url, "starting koinos-gateway");
    let credential = koinos_gateway::control::Credential::new(&control_credential)?;
    // Admissions and RoomService requests are bounded; the revocation stream lives as long as
    // control does, on its own connection.
    let requests = koinos_gateway::control::client(
        &config.control_grpc_url,
        credential.clone(),
        Some(CONTROL_REQUEST_TIMEOUT),
    )?;
    let stream = koinos_gateway::control::client(&config.control_grpc_url, credential, None)?;
    let limits = config.http.clone();
    let gateway = Gateway::new(config, Arc::new(GrpcControl::new(requests)));
    tokio::spawn(koinos_gateway::revocations::follow_control(
        stream,
        gateway.registry(),
        gateway.metrics(),
    ));
    let stats = gateway.metrics().connections.listener("signalling");
    let app = router(gateway);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    koinos_net::serve(listener, limits, stats, |_| app.clone(), shutdown())
        .await
        .context("server failed")?;
    Ok(())
}

/// Ctrl-C in a terminal, SIGTERM from a supervisor or Kubernetes.
async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term => {} }
    info!("shutting down");
}
