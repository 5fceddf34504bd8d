//! `microplane-gateway`: parses flags and wires the library together.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use futures::FutureExt;
use microplane_gateway::metrics::Metrics;
use microplane_gateway::server::{self, Gateway, Settings};
use microplane_gateway::{admin, sync};

/// mimalloc instead of the system allocator: the data path allocates and frees small buffers on
/// every request (hyper's read buffers, header maps, bodies), where glibc's malloc spent about 8% of
/// the gateway's CPU in `make bench-gateway` (consolidating and unlinking chunks).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The Microplane edge gateway. Every flag can also be set by the environment variable shown.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address of the HTTP/1.1 + h2c listener.
    #[arg(long, env = "MICROPLANE_GATEWAY_ADDRESS", default_value = "0.0.0.0:8080")]
    address: SocketAddr,
    /// Address of the admin server (/healthz, /readyz, /metrics).
    #[arg(long, env = "MICROPLANE_GATEWAY_ADMIN_ADDRESS", default_value = "0.0.0.0:8081")]
    admin_address: SocketAddr,
    /// The operator's sync endpoint.
    #[arg(
        long,
        env = "MICROPLANE_SYNC_ENDPOINT",
        default_value = "http://microplane-operator:8082"
    )]
    sync_endpoint: String,
    /// File holding the shared sync token.
    #[arg(long, env = "MICROPLANE_SYNC_TOKEN_FILE")]
    sync_token_file: std::path::PathBuf,
    /// Tenant of requests that name none.
    #[arg(long, env = "MICROPLANE_DEFAULT_TENANT", default_value = "micro")]
    default_tenant: String,
    /// Largest request body in bytes (larger → 413).
    #[arg(long, env = "MICROPLANE_MAX_BODY_BYTES", default_value_t = 4 << 20)]
    max_body_bytes: usize,
    /// Largest request head (line + headers) in bytes.
    #[arg(long, env = "MICROPLANE_MAX_HEADER_BYTES", default_value_t = 64 << 10)]
    max_header_bytes: usize,
    /// Request deadline in milliseconds, propagated to gRPC backends (exceeded → 504).
    #[arg(long, env = "MICROPLANE_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    request_timeout_ms: u64,
    /// Seconds a client gets to send request headers on an open connection (then it is closed).
    #[arg(long, env = "MICROPLANE_IDLE_TIMEOUT_SECONDS", default_value_t = 60)]
    idle_timeout_seconds: u64,
    /// Log one line per request (target `access`).
    #[arg(long, env = "MICROPLANE_ACCESS_LOG", default_value_t = true, action = clap::ArgAction::Set)]
    access_log: bool,
    /// Worker threads (default: one per CPU; also `TOKIO_WORKER_THREADS`). With 1, a
    /// current-thread runtime serves everything from one thread.
    #[arg(long, env = "MICROPLANE_WORKER_THREADS")]
    worker_threads: Option<usize>,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "MICROPLANE_LOG_JSON", default_value_t = false)]
    log_json: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // One worker: a current-thread runtime (no cross-thread wakeups); more: the multi-thread one.
    let workers = args
        .worker_threads
        .or_else(|| std::env::var("TOKIO_WORKER_THREADS").ok()?.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let runtime = if workers <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    }
    .context("starting the runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MICROPLANE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,h2=warn,hyper=warn,tower=warn"));
    if args.log_json {
        tracing_subscriber::fmt().json().with_env_filter(filter).init();
    } else {
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        tracing_subscriber::fmt().with_ansi(ansi).with_env_filter(filter).init();
    }
    let token = std::fs::read_to_string(&args.sync_token_file)
        .with_context(|| format!("reading the sync token from {}", args.sync_token_file.display()))?
        .trim()
        .to_string();
    anyhow::ensure!(!token.is_empty(), "the sync token file is empty");

    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {},
        }
        tracing::info!("shutting down");
    }
    .shared();

    let metrics = Metrics::new();
    let settings = Settings {
        default_tenant: args.default_tenant,
        max_body_bytes: args.max_body_bytes,
        request_timeout: Duration::from_millis(args.request_timeout_ms.max(1)),
        idle_timeout: Duration::from_secs(args.idle_timeout_seconds.max(1)),
        max_header_bytes: args.max_header_bytes,
        access_log: args.access_log,
        ..Settings::default()
    };
    let gateway = Arc::new(Gateway::new(settings, metrics.clone()));
    let ready = Arc::new(AtomicBool::new(false));
    tokio::spawn(sync::follow_external_keys(gateway.clone()));
    let name = std::env::var("POD_NAME").unwrap_or_else(|_| format!("gateway-{}", std::process::id()));
    tokio::spawn(sync::run(
        gateway.clone(),
        sync::SyncSettings {
            endpoint: args.sync_endpoint,
            token,
            name,
        },
        ready.clone(),
    ));
    let admin = tokio::spawn(admin::serve(args.admin_address, ready, metrics, shutdown.clone()));
    let listener = tokio::net::TcpListener::bind(args.address)
        .await
        .with_context(|| format!("binding {}", args.address))?;
    tracing::info!(address = %args.address, "gateway listening");
    server::serve(gateway, listener, shutdown).await.context("serving")?;
    admin.await.context("admin task")?.context("admin server")?;
    Ok(())
}
