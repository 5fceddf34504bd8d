//! `microplane-gateway`: parses flags and wires the library together.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use futures::FutureExt;
use microplane_gateway::health::{Health, Readiness};
use microplane_gateway::metrics::Metrics;
use microplane_gateway::server::{self, Drain};
use microplane_gateway::state::{Gateway, Settings};
use microplane_gateway::sync;
use microplane_runtime::admin::Admin;
use microplane_runtime::{Format, Logging};

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
    /// PEM file of the CA the operator's sync certificate chains to (the `ca.crt` of the
    /// operator's `--sync-tls-secret`); required for an `https://` endpoint, refused for `http://`.
    #[arg(long, env = "MICROPLANE_SYNC_CA_FILE")]
    sync_ca_file: Option<std::path::PathBuf>,
    /// File holding the sync token: the shared token, or a projected ServiceAccount token (the
    /// operator reviews it). Read again on every (re)connect, since the kubelet rotates it.
    #[arg(long, env = "MICROPLANE_SYNC_TOKEN_FILE")]
    sync_token_file: std::path::PathBuf,
    /// Seconds the sync stream may be down before /readyz says not ready (the last snapshot keeps
    /// serving meanwhile).
    #[arg(long, env = "MICROPLANE_SYNC_STALE_SECONDS", default_value_t = 30)]
    sync_stale_seconds: u64,
    /// Seconds to keep serving after SIGTERM (not ready meanwhile) while endpoints are withdrawn.
    #[arg(long, env = "MICROPLANE_SHUTDOWN_DELAY_SECONDS", default_value_t = 5)]
    shutdown_delay_seconds: u64,
    /// Then the longest wait in seconds for in-flight requests to finish.
    #[arg(long, env = "MICROPLANE_DRAIN_TIMEOUT_SECONDS", default_value_t = 25)]
    drain_timeout_seconds: u64,
    /// Tenant of requests that name none.
    #[arg(long, env = "MICROPLANE_DEFAULT_TENANT", default_value = "micro")]
    default_tenant: String,
    /// Largest request body in bytes (larger → 413).
    #[arg(long, env = "MICROPLANE_MAX_BODY_BYTES", default_value_t = 4 << 20)]
    max_body_bytes: usize,
    /// Bytes of request bodies held in memory at once, over all requests (beyond → 503): keeps
    /// the gateway inside its memory limit however many bodies arrive together.
    #[arg(long, env = "MICROPLANE_MAX_BUFFERED_BODY_BYTES", default_value_t = 64 << 20)]
    max_buffered_body_bytes: usize,
    /// Largest request head (line + headers) in bytes.
    #[arg(long, env = "MICROPLANE_MAX_HEADER_BYTES", default_value_t = 64 << 10)]
    max_header_bytes: usize,
    /// Request deadline in milliseconds, propagated to gRPC backends (exceeded → 504).
    #[arg(long, env = "MICROPLANE_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    request_timeout_ms: u64,
    /// Seconds a client gets to send request headers on an open connection (then it is closed).
    #[arg(long, env = "MICROPLANE_IDLE_TIMEOUT_SECONDS", default_value_t = 60)]
    idle_timeout_seconds: u64,
    /// Seconds a websocket tunnel may carry nothing either way before it is closed.
    #[arg(long, env = "MICROPLANE_TUNNEL_IDLE_TIMEOUT_SECONDS", default_value_t = 300)]
    tunnel_idle_timeout_seconds: u64,
    /// Client connections served at once; more wait in the listen backlog until one closes.
    #[arg(long, env = "MICROPLANE_MAX_CONNECTIONS", default_value_t = 10_000)]
    max_connections: usize,
    /// Token requests a minute (and burst) per tenant and client id at the token endpoints.
    #[arg(long, env = "MICROPLANE_TOKEN_REQUESTS_PER_MINUTE_PER_CLIENT", default_value_t = 10)]
    token_requests_per_minute_per_client: u32,
    /// Token requests a minute (and burst) per client IP at the token endpoints.
    #[arg(long, env = "MICROPLANE_TOKEN_REQUESTS_PER_MINUTE_PER_IP", default_value_t = 30)]
    token_requests_per_minute_per_ip: u32,
    /// Comma-separated CIDRs of proxies in front of the gateway (a load balancer ending TLS) whose
    /// `X-Forwarded-*`, `Forwarded` and `X-Real-IP` headers are believed; from anyone else they
    /// are replaced. Empty: nobody's.
    #[arg(long, env = "MICROPLANE_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_cidr)]
    trusted_proxies: Vec<ipnet::IpNet>,
    /// Directory of the built web dashboard (dashboard/dist), served at `/.dashboard/`; unset: no
    /// dashboard.
    #[arg(long, env = "MICROPLANE_DASHBOARD_DIR")]
    dashboard_dir: Option<std::path::PathBuf>,
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
    // One worker (or `--worker-threads 0`): a current-thread runtime (no cross-thread wakeups);
    // more: the multi-thread one.
    let runtime = microplane_runtime::runtime(args.worker_threads).context("starting the runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    Logging::new("MICROPLANE_LOG", "info,h2=warn,hyper=warn,tower=warn")
        .format(Format::json_if(args.log_json))
        .init();
    // Fail fast on a missing file; it is read again on every connect.
    let token = sync::TokenSource::File(args.sync_token_file.clone());
    token.read().map_err(anyhow::Error::msg)?;
    let sync_settings = sync::SyncSettings {
        endpoint: args.sync_endpoint.clone(),
        token,
        name: std::env::var("POD_NAME").unwrap_or_else(|_| format!("gateway-{}", std::process::id())),
        ca_file: args.sync_ca_file.clone(),
    };
    sync_settings.check().map_err(anyhow::Error::msg)?;

    let signal = microplane_runtime::shutdown_signal().context("installing the signal handlers")?;
    let shutdown = async move {
        signal.await;
        tracing::info!("shutting down");
    }
    .shared();

    let dashboard = match &args.dashboard_dir {
        Some(dir) => Some(Arc::new(
            microplane_gateway::dashboard::Dashboard::load(dir).map_err(anyhow::Error::msg)?,
        )),
        None => None,
    };
    let metrics = Metrics::new();
    let settings = Settings {
        dashboard,
        default_tenant: args.default_tenant,
        max_body_bytes: args.max_body_bytes,
        max_buffered_body_bytes: args.max_buffered_body_bytes,
        request_timeout: Duration::from_millis(args.request_timeout_ms.max(1)),
        idle_timeout: Duration::from_secs(args.idle_timeout_seconds.max(1)),
        max_header_bytes: args.max_header_bytes,
        access_log: args.access_log,
        trusted_proxies: args.trusted_proxies,
        tunnel_idle_timeout: Duration::from_secs(args.tunnel_idle_timeout_seconds.max(1)),
        max_connections: args.max_connections.max(1),
        token_rate: (
            args.token_requests_per_minute_per_client,
            args.token_requests_per_minute_per_ip,
        ),
        ..Settings::default()
    };
    let gateway = Arc::new(Gateway::new(settings, metrics.clone()));
    let health = Arc::new(Health::new(Duration::from_secs(args.sync_stale_seconds)));
    tokio::spawn(sync::follow_external_keys(gateway.clone()));
    tokio::spawn(sync::supervise(gateway.clone(), sync_settings, health.clone()));
    // The admin port outlives the drain: probes keep getting answers (not ready, but live).
    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
    let (live, ready) = (health.clone(), health.clone());
    let admin = Admin::new()
        .liveness(move || match live.live() {
            true => Ok("ok".into()),
            false => Err("sync task stopped".into()),
        })
        .readiness(move || match ready.readiness() {
            Readiness::Ready => Ok("ready".into()),
            r => Err(r.describe().into()),
        })
        .metrics(move || metrics.encode());
    let admin = tokio::spawn(admin.serve(args.admin_address, async {
        let _ = drained_rx.await;
    }));
    let listener = tokio::net::TcpListener::bind(args.address)
        .await
        .with_context(|| format!("binding {}", args.address))?;
    tracing::info!(address = %args.address, "gateway listening");
    let drain = Drain {
        delay: Duration::from_secs(args.shutdown_delay_seconds),
        timeout: Duration::from_secs(args.drain_timeout_seconds),
    };
    server::serve_graceful(gateway, listener, shutdown, drain, Some(health))
        .await
        .context("serving")?;
    let _ = drained_tx.send(());
    admin.await.context("admin task")?.context("admin server")?;
    tracing::info!("drained; exiting");
    Ok(())
}

/// A CIDR (`10.0.0.0/8`) or one address (`10.0.0.1`).
fn parse_cidr(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{s:?} is not a CIDR (10.0.0.0/8) or an IP address"))
}
