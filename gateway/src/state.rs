//! The gateway's shared state: the routing state, the data path's limits and the metrics.

use std::time::Duration;

use crate::auth::jwks::JwksSettings;
use crate::metrics::Metrics;
use crate::routing::Routing;

/// Limits and defaults of the data path.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Tenant of requests that name none (docs/gateway.md: `micro`).
    pub default_tenant: String,
    /// Largest request body accepted (→ 413).
    pub max_body_bytes: usize,
    /// Request bodies held in memory at once, over all requests (→ 503 beyond): the bound that
    /// makes many slow bodies, on many HTTP/2 streams, cost no more than this.
    pub max_buffered_body_bytes: usize,
    /// Deadline of a request, propagated to gRPC backends as `grpc-timeout` (→ 504).
    pub request_timeout: Duration,
    /// Time a client gets to send a request's headers, and an idle HTTP/1.1 connection stays open.
    pub idle_timeout: Duration,
    /// Largest request head (request line and headers) accepted.
    pub max_header_bytes: usize,
    /// A websocket tunnel with no traffic either way for this long is closed.
    pub tunnel_idle_timeout: Duration,
    /// Client connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// Token requests a minute per (tenant, client id), and per client IP.
    pub token_rate: (u32, u32),
    /// Log one line per request.
    pub access_log: bool,
    /// Timing of external issuers' key set fetches.
    pub jwks: JwksSettings,
    /// Peers whose `X-Forwarded-*`, `Forwarded` and `X-Real-IP` headers are believed (a load
    /// balancer in front of the gateway); from anyone else they are replaced (docs/gateway.md).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The web dashboard's files, served at `/.dashboard/` (none: not served).
    pub dashboard: Option<std::sync::Arc<crate::dashboard::Dashboard>>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            default_tenant: "micro".into(),
            max_body_bytes: 4 << 20,
            max_buffered_body_bytes: 64 << 20,
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 64 << 10,
            tunnel_idle_timeout: Duration::from_secs(300),
            max_connections: 10_000,
            token_rate: (
                crate::auth::limits::PER_CLIENT_PER_MINUTE,
                crate::auth::limits::PER_IP_PER_MINUTE,
            ),
            access_log: true,
            jwks: JwksSettings::default(),
            trusted_proxies: Vec::new(),
            dashboard: None,
        }
    }
}

/// The gateway's shared state.
pub struct Gateway {
    /// What the sync task writes and requests read.
    pub routing: Routing,
    /// Limits.
    pub settings: Settings,
    /// Metrics.
    pub metrics: Metrics,
    /// Rate limits of the tenants' token endpoints.
    pub(crate) token_limits: crate::auth::limits::TokenLimits,
    /// The memory request bodies being read may take, gateway-wide.
    pub(crate) bodies: crate::decode::BodyBudget,
}

impl Gateway {
    /// A gateway with no snapshot yet.
    pub fn new(settings: Settings, metrics: Metrics) -> Self {
        Self {
            routing: Routing::new(settings.jwks),
            token_limits: crate::auth::limits::TokenLimits::new(settings.token_rate.0, settings.token_rate.1),
            bodies: crate::decode::BodyBudget::new(settings.max_buffered_body_bytes),
            settings,
            metrics,
        }
    }
}
