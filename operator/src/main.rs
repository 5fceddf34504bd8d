//! `microplane-operator`: parses flags and wires the library together.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use anyhow::Context as _;
use clap::Parser;
use futures::FutureExt;
use microplane_operator::admin::{self, AdminState};
use microplane_operator::context::Settings;
use microplane_operator::metrics::{ApiRequests, Metrics};
use microplane_operator::publish::auth::{SyncAuth, TokenReviewer};
use microplane_operator::publish::server::{self as sync_server, SyncService};
use microplane_operator::source::SourceSettings;
use microplane_operator::source::job::BuildSettings;
use microplane_operator::{controller, leader};
use microplane_runtime::{Format, Logging};

/// The Microplane operator. Every flag can also be set by the environment variable shown.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address of the admin server (/healthz, /readyz, /metrics).
    #[arg(long, env = "MICROPLANE_ADMIN_ADDRESS", default_value = "0.0.0.0:8081")]
    admin_address: SocketAddr,
    /// Elect a leader on a Lease; standbys watch but never write.
    #[arg(long, env = "MICROPLANE_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Namespace of the leader Lease (defaults to the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "microplane-system")]
    lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, env = "MICROPLANE_LEASE_NAME", default_value = "microplane-operator")]
    lease_name: String,
    /// Lease duration in seconds: how long a dead leader keeps the lease.
    #[arg(long, env = "MICROPLANE_LEASE_SECONDS", default_value_t = 15)]
    lease_seconds: u64,
    /// Milliseconds between a standby's reads of the Lease: how soon it takes over a released one.
    #[arg(long, env = "MICROPLANE_LEASE_RETRY_MS", default_value_t = 1000)]
    lease_retry_ms: u64,
    /// Namespace of the gateway, admitted by tenants' NetworkPolicies.
    #[arg(long, env = "MICROPLANE_GATEWAY_NAMESPACE", default_value = "microplane-system")]
    gateway_namespace: String,
    /// Accept `http://` and `file://` git URLs (tests and development only).
    #[arg(
        long,
        env = "MICROPLANE_ALLOW_INSECURE_GIT_URLS",
        alias = "allow-file-git-urls",
        default_value_t = false
    )]
    allow_insecure_git_urls: bool,
    /// Directory of the git cache (bare repositories, one per URL).
    #[arg(long, env = "MICROPLANE_GIT_CACHE_DIR", default_value = "/tmp/microplane-git-cache")]
    git_cache_dir: std::path::PathBuf,
    /// Upper bound of the git cache in MiB; least recently used repositories are removed first.
    #[arg(long, env = "MICROPLANE_GIT_CACHE_MIB", default_value_t = 2048)]
    git_cache_mib: u64,
    /// Largest repository (fetched pack) in MiB a source may have.
    #[arg(long, env = "MICROPLANE_GIT_MAX_REPO_MIB", default_value_t = 512)]
    git_max_repo_mib: u64,
    /// Seconds one git resolution may take (connect, list, fetch).
    #[arg(long, env = "MICROPLANE_GIT_TIMEOUT_SECONDS", default_value_t = 60)]
    git_timeout_seconds: u64,
    /// Namespace of build Jobs.
    #[arg(long, env = "MICROPLANE_BUILD_NAMESPACE", default_value = "microplane-builds")]
    build_namespace: String,
    /// Registry (and prefix) images are pushed to: `<registry>/<tenant>/<service>:<commit>`.
    #[arg(long, env = "MICROPLANE_REGISTRY", default_value = "localhost:5000")]
    registry: String,
    /// Secret in the build namespace with the registry's docker `config.json`.
    #[arg(long, env = "MICROPLANE_REGISTRY_SECRET")]
    registry_secret: Option<String>,
    /// The registry as build pods reach it, when nodes pull from it by another name (`--registry`).
    #[arg(long, env = "MICROPLANE_PUSH_REGISTRY")]
    push_registry: Option<String>,
    /// Registry mirror for base images, `registry=host[:port][/path]` (repeatable).
    #[arg(long = "build-mirror", env = "MICROPLANE_BUILD_MIRRORS", value_delimiter = ',', value_parser = microplane_operator::source::job::parse_mirror)]
    build_mirrors: Vec<(String, String)>,
    /// Registry builds reach over plain HTTP, `host[:port]` (repeatable).
    #[arg(
        long = "insecure-registry",
        env = "MICROPLANE_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    insecure_registries: Vec<String>,
    /// Image of the build step (BuildKit; see docs/builds.md for what it must hold).
    #[arg(long, env = "MICROPLANE_BUILDER_IMAGE", default_value = microplane_operator::source::job::DEFAULT_BUILDER_IMAGE)]
    builder_image: String,
    /// Image of the clone step (needs git and sh).
    #[arg(long, env = "MICROPLANE_CLONE_IMAGE", default_value = microplane_operator::source::job::DEFAULT_CLONE_IMAGE)]
    clone_image: String,
    /// Seconds a build may run.
    #[arg(long, env = "MICROPLANE_BUILD_DEADLINE_SECONDS", default_value_t = 1800)]
    build_deadline_seconds: i64,
    /// Node label a build pod must match, `key=value` (repeatable): dedicated build nodes.
    #[arg(long = "build-node-selector", env = "MICROPLANE_BUILD_NODE_SELECTOR", value_delimiter = ',', value_parser = microplane_operator::source::job::parse_label)]
    build_node_selector: Vec<(String, String)>,
    /// Taint build pods tolerate, `key[=value][:Effect]` (repeatable).
    #[arg(long = "build-toleration", env = "MICROPLANE_BUILD_TOLERATIONS", value_delimiter = ',', value_parser = microplane_operator::source::job::parse_toleration)]
    build_tolerations: Vec<k8s_openapi::api::core::v1::Toleration>,
    /// Seconds a finished build Job is kept.
    #[arg(long, env = "MICROPLANE_BUILD_TTL_SECONDS", default_value_t = 3600)]
    build_ttl_seconds: i32,
    /// Seconds between resyncs of a healthy object (a backstop for missed events; writes nothing
    /// when nothing drifted).
    #[arg(long, env = "MICROPLANE_RESYNC_SECONDS", default_value_t = 600)]
    resync_seconds: u64,
    /// Milliseconds a new MicroService's first status may wait while its rollout only progresses:
    /// one that is Ready within it gets one status write (Ready) instead of Deploying, progress and
    /// Ready. Problems (a failing pod, a missing Config) are written at once. Off (0) by default:
    /// kstatus (Flux) reads a missing status as Current, so a settle lets Flux call a new
    /// MicroService healthy before it is (docs/operator.md#status-writes).
    #[arg(long, env = "MICROPLANE_STATUS_SETTLE_MS", default_value_t = 0)]
    status_settle_ms: u64,
    /// Milliseconds between two status writes of a MicroService that only report progress (pod
    /// counts, condition messages, endpoints) while no condition's status or reason changes: a
    /// rollout's intermediate counts are written at most this often. A change of phase, reason or
    /// generation is written at once, and a held count is written when the interval ends. 0:
    /// every change at once.
    #[arg(long, env = "MICROPLANE_STATUS_PROGRESS_INTERVAL_MS", default_value_t = 2000)]
    status_progress_interval_ms: u64,
    /// Reconciles running at once per controller (each mostly waits on the API server).
    #[arg(long, env = "MICROPLANE_RECONCILE_CONCURRENCY", default_value_t = 64)]
    reconcile_concurrency: u16,
    /// Address of the gateway sync server (gRPC).
    #[arg(long, env = "MICROPLANE_SYNC_ADDRESS", default_value = "0.0.0.0:8082")]
    sync_address: SocketAddr,
    /// File holding the shared token gateways present on the sync stream (`--sync-auth
    /// token-file`, implied when given).
    #[arg(long, env = "MICROPLANE_SYNC_TOKEN_FILE")]
    sync_token_file: Option<std::path::PathBuf>,
    /// How gateways authenticate: `token-file` (a shared token), `token-review` (their projected
    /// ServiceAccount token, reviewed with the API server), or `off` (no sync server). Default:
    /// `token-file` when `--sync-token-file` is given, else `token-review`.
    #[arg(long, env = "MICROPLANE_SYNC_AUTH", value_enum)]
    sync_auth: Option<SyncAuthMode>,
    /// Audience gateways' projected tokens must carry (`token-review`).
    #[arg(long, env = "MICROPLANE_SYNC_AUDIENCE", default_value = "microplane-sync")]
    sync_audience: String,
    /// ServiceAccounts (`namespace/name`, comma-separated or repeated) admitted to the sync stream
    /// (`token-review`).
    #[arg(
        long,
        env = "MICROPLANE_SYNC_ALLOWED_SERVICE_ACCOUNTS",
        value_delimiter = ',',
        default_value = "microplane-system/microplane-gateway"
    )]
    sync_allowed_service_accounts: Vec<String>,
    /// Secret in the operator's namespace holding the sync stream's CA and serving certificate
    /// (issued when missing; gateways trust its `ca.crt`). Empty: cleartext h2c, only for
    /// host-process setups (docs/operator.md#sync-tls).
    #[arg(long, env = "MICROPLANE_SYNC_TLS_SECRET", default_value = "")]
    sync_tls_secret: String,
    /// DNS names the sync serving certificate is issued for (comma-separated): the names gateways
    /// dial, such as `microplane-operator.microplane-system.svc`.
    #[arg(long, env = "MICROPLANE_SYNC_TLS_DNS_NAMES", value_delimiter = ',')]
    sync_tls_dns_names: Vec<String>,
    /// Base URL of the gateway, shown as `status.url` of MicroServices.
    #[arg(long, env = "MICROPLANE_GATEWAY_URL")]
    gateway_url: Option<String>,
    /// Hours after which a tenant's signing key is replaced by a new one.
    #[arg(long, env = "MICROPLANE_KEY_ROTATION_HOURS", default_value_t = 720)]
    key_rotation_hours: i64,
    /// Hours a replaced signing key keeps verifying (longer than tokens live).
    #[arg(long, env = "MICROPLANE_KEY_OVERLAP_HOURS", default_value_t = 48)]
    key_overlap_hours: i64,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "MICROPLANE_LOG_JSON", default_value_t = false)]
    log_json: bool,
}

/// `--sync-auth`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum SyncAuthMode {
    /// A shared token from `--sync-token-file`.
    TokenFile,
    /// Projected ServiceAccount tokens, checked with a TokenReview.
    TokenReview,
    /// No sync server.
    Off,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    Logging::new("MICROPLANE_LOG", "info,kube_runtime=warn")
        .format(Format::json_if(args.log_json))
        .init();

    // Every request the client sends is counted by method (microplane_operator_api_requests_total).
    let api_requests = ApiRequests::default();
    let counter = api_requests.clone();
    let config = kube::Config::infer()
        .await
        .context("loading the kubeconfig or in-cluster config")?;
    let client = kube::client::ClientBuilder::try_from(config)
        .context("building the API client")?
        .with_layer(&tower::util::MapRequestLayer::new(
            move |req: http::Request<kube::client::Body>| {
                counter.count(req.method());
                req
            },
        ))
        .build();
    let signal = microplane_runtime::shutdown_signal().context("installing the signal handlers")?;
    let shutdown = async move {
        signal.await;
        tracing::info!("shutting down");
    }
    .shared();

    let (snapshots, snapshot_rx) = tokio::sync::watch::channel(None);
    let identity = std::env::var("POD_NAME").unwrap_or_else(|_| format!("{}-{}", hostname(), std::process::id()));
    let source_id = format!(
        "{identity}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    let election = args.leader_elect.then(|| leader::Election {
        namespace: args.lease_namespace.clone(),
        name: args.lease_name.clone(),
        identity,
        duration: args.lease_seconds,
        retry: std::time::Duration::from_millis(args.lease_retry_ms.max(100)),
    });
    // On SIGTERM the leader stops writing and releases the Lease at once, while the controllers
    // wind down, so a standby takes over within about `--lease-retry-ms`.
    let leadership = leader::start(client.clone(), election, shutdown.clone());
    let is_leader = leadership.is_leader.clone();

    let state = AdminState::default();
    let admin = tokio::spawn(admin::admin(state.clone()).serve(args.admin_address, shutdown.clone()));
    let settings = Settings {
        operator_namespace: args.lease_namespace.clone(),
        gateway_namespace: args.gateway_namespace,
        source: SourceSettings {
            cache_dir: args.git_cache_dir,
            cache_max_bytes: args.git_cache_mib << 20,
            max_repo_bytes: args.git_max_repo_mib << 20,
            timeout: std::time::Duration::from_secs(args.git_timeout_seconds.max(1)),
            allow_insecure: args.allow_insecure_git_urls,
            build: BuildSettings {
                namespace: args.build_namespace,
                registry: args.registry,
                push_registry: args.push_registry,
                mirrors: args.build_mirrors,
                insecure_registries: args.insecure_registries,
                builder_image: args.builder_image,
                clone_image: args.clone_image,
                registry_secret: args.registry_secret,
                deadline_seconds: args.build_deadline_seconds.max(60),
                ttl_seconds: args.build_ttl_seconds.max(0),
                node_selector: args.build_node_selector.into_iter().collect(),
                tolerations: args.build_tolerations,
                ..BuildSettings::default()
            },
        },
        resync: std::time::Duration::from_secs(args.resync_seconds.max(1)),
        status_settle: std::time::Duration::from_millis(args.status_settle_ms),
        status_progress_interval: std::time::Duration::from_millis(args.status_progress_interval_ms),
        concurrency: args.reconcile_concurrency,
        gateway_url: args.gateway_url,
        key_rotation: microplane_operator::issuer::Rotation {
            every_seconds: args.key_rotation_hours.max(1) * 3600,
            overlap_seconds: args.key_overlap_hours.max(1) * 3600,
        },
    };
    let metrics = Metrics::new(api_requests);
    let mode = args.sync_auth.unwrap_or(if args.sync_token_file.is_some() {
        SyncAuthMode::TokenFile
    } else {
        SyncAuthMode::TokenReview
    });
    let auth = match mode {
        SyncAuthMode::TokenFile => {
            let path = args
                .sync_token_file
                .as_ref()
                .context("--sync-auth token-file needs --sync-token-file")?;
            let token = std::fs::read_to_string(path)
                .with_context(|| format!("reading the sync token from {}", path.display()))?
                .trim()
                .to_string();
            anyhow::ensure!(!token.is_empty(), "the sync token file {} is empty", path.display());
            tracing::info!("sync stream: shared token");
            Some(SyncAuth::Static(token))
        }
        SyncAuthMode::TokenReview => {
            let reviewer = TokenReviewer::new(
                client.clone(),
                args.sync_audience.clone(),
                &args.sync_allowed_service_accounts,
            )?;
            tracing::info!(
                audience = %args.sync_audience,
                allowed = ?args.sync_allowed_service_accounts,
                "sync stream: ServiceAccount tokens (TokenReview)"
            );
            Some(SyncAuth::Review(reviewer))
        }
        SyncAuthMode::Off => {
            tracing::warn!("--sync-auth off: the gateway sync server is off");
            None
        }
    };
    // Set on shutdown: every sync stream ends, so gateways reconnect to another replica at once.
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            shutdown.await;
            closing_tx.send_replace(true);
        }
    });
    // The stream carries every tenant's signing keys: TLS unless asked to run without.
    let tls = match (&auth, args.sync_tls_secret.as_str()) {
        (None, _) | (_, "") => None,
        (Some(_), secret) => Some(
            microplane_operator::publish::tls::ensure(
                client.clone(),
                &args.lease_namespace,
                secret,
                &args.sync_tls_dns_names,
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            )
            .await
            .context("sync TLS")?,
        ),
    };
    let sync_server = auth.map(|auth| {
        let service = SyncService::with_auth(snapshot_rx, auth, metrics.sync.clone(), closing);
        let shutdown = shutdown.clone();
        tokio::spawn(async move { sync_server::serve(args.sync_address, service, tls.as_ref(), shutdown).await })
    });
    let ready = state.clone();
    controller::run(
        client,
        metrics,
        settings,
        is_leader,
        controller::Routing { snapshots, source_id },
        shutdown,
        move |ctx| {
            let _ = ready.context.set(ctx);
            ready.ready.store(true, Ordering::Release);
        },
    )
    .await;
    leadership.stop().await;
    admin.await.context("admin server task")?.context("admin server")?;
    if let Some(s) = sync_server {
        s.await.context("sync server task")?.context("sync server")?;
    }
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "operator".into())
}
