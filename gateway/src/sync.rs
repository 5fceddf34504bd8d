//! The sync client: follows the operator's snapshot stream, applies each snapshot atomically,
//! acknowledges it, and reconnects with backoff. While the operator (or the API server behind it)
//! is away, the last good snapshot keeps serving.

use std::sync::Arc;
use std::time::Duration;

use microplane_wire::sync::v1::routing_sync_client::RoutingSyncClient;
use microplane_wire::sync::v1::{Ack, GatewayMessage, Hello, Snapshot as WireSnapshot, gateway_message};
use tokio::sync::mpsc;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::health::Health;
use crate::state::Gateway;

/// Where and how to reach the operator.
#[derive(Clone, Debug)]
pub struct SyncSettings {
    /// The operator's sync endpoint, e.g. `http://microplane-operator:8082`.
    pub endpoint: String,
    /// The token sent as `authorization: Bearer …`.
    pub token: TokenSource,
    /// This gateway's name, for the operator's logs.
    pub name: String,
    /// PEM file of the CA the operator's serving certificate must chain to (an `https://`
    /// endpoint); read again on every (re)connect. `None`: cleartext h2c (`http://`).
    pub ca_file: Option<std::path::PathBuf>,
}

impl SyncSettings {
    /// Whether endpoint and CA agree: `https://` needs a CA file, and a CA file an `https://`
    /// endpoint (never a silent fall back to cleartext).
    pub fn check(&self) -> Result<(), String> {
        match (self.endpoint.starts_with("https://"), &self.ca_file) {
            (true, None) => Err(format!(
                "the sync endpoint {} is https: give --sync-ca-file, the CA its certificate chains to",
                self.endpoint
            )),
            (false, Some(_)) => Err(format!(
                "--sync-ca-file is given but the sync endpoint {} is not https://",
                self.endpoint
            )),
            _ => Ok(()),
        }
    }

    /// The endpoint to dial, with TLS trusting exactly the CA file when there is one.
    fn endpoint(&self) -> Result<Endpoint, Box<dyn std::error::Error + Send + Sync>> {
        let mut endpoint = Endpoint::from_shared(self.endpoint.clone())?;
        if let Some(path) = &self.ca_file {
            let pem = std::fs::read(path).map_err(|e| format!("reading the sync CA from {}: {e}", path.display()))?;
            endpoint = endpoint.tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))?;
        }
        Ok(endpoint)
    }
}

/// Where the sync token comes from.
#[derive(Clone, Debug)]
pub enum TokenSource {
    /// A fixed token (tests).
    Static(String),
    /// A file read again on every (re)connect: a shared token, or a projected ServiceAccount token
    /// the kubelet rotates in place.
    File(std::path::PathBuf),
}

impl TokenSource {
    /// The current token (never logged).
    pub fn read(&self) -> Result<String, String> {
        let token = match self {
            Self::Static(t) => t.clone(),
            Self::File(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("reading the sync token from {}: {e}", path.display()))?
                .trim()
                .to_string(),
        };
        if token.is_empty() {
            return Err("the sync token is empty".into());
        }
        Ok(token)
    }
}

/// Backoff between reconnects: 100 ms doubling to 5 s, with jitter (`attempt` counts from 0).
pub(crate) fn backoff(attempt: u32) -> Duration {
    const RECONNECT: microplane_runtime::Backoff =
        microplane_runtime::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    RECONNECT.jittered(attempt.saturating_add(1))
}

/// Applies one snapshot: builds the routing state and swaps it in, unless it is older than the one
/// served (same operator process, lower or equal version). Returns whether it was applied, and the
/// parts left out of it (a broken part of one tenant never stops the others).
pub fn apply(gateway: &Gateway, wire: &WireSnapshot) -> Result<bool, String> {
    apply_reporting(gateway, wire).map(|(applied, _)| applied)
}

/// [`apply`], with the parts left out.
fn apply_reporting(gateway: &Gateway, wire: &WireSnapshot) -> Result<(bool, Vec<String>), String> {
    match gateway.routing.apply(wire) {
        None => Ok((false, Vec::new())),
        Some(crate::routing::Applied { routes, problems }) => {
            gateway.metrics.snapshot(true, wire.version, routes);
            gateway.metrics.snapshot_problems(problems.len());
            for p in &problems {
                tracing::warn!(version = wire.version, problem = %p, "snapshot part left out");
            }
            if wire.built_unix_nanos > 0 {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
                    .unwrap_or(0);
                tracing::debug!(
                    version = wire.version,
                    routes,
                    latency_us = (now - wire.built_unix_nanos) / 1000,
                    "snapshot applied"
                );
            }
            Ok((true, problems))
        }
    }
}

/// Rebuilds the auth state from the last snapshot whenever an external issuer's keys change.
pub async fn follow_external_keys(gateway: Arc<Gateway>) {
    loop {
        gateway.routing.jwks_changed.notified().await;
        gateway.routing.rebuild_auth();
    }
}

/// Follows the operator forever, reporting to `health` (connected, first snapshot).
pub(crate) async fn run(gateway: Arc<Gateway>, settings: SyncSettings, health: Arc<Health>) {
    let mut attempt = 0u32;
    loop {
        match follow(&gateway, &settings, &health, &mut attempt).await {
            Ok(()) => tracing::info!("sync stream ended; reconnecting"),
            Err(e) => tracing::warn!(error = %e, "sync stream failed; reconnecting"),
        }
        health.disconnected();
        gateway.metrics.connected(false);
        tokio::time::sleep(backoff(attempt)).await;
        attempt = attempt.saturating_add(1);
    }
}

async fn follow(
    gateway: &Gateway,
    settings: &SyncSettings,
    health: &Health,
    attempt: &mut u32,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let channel = settings
        .endpoint()?
        .connect_timeout(Duration::from_secs(2))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    // Read on every connect: the kubelet rotates a projected token in place.
    let token: MetadataValue<_> = format!("Bearer {}", settings.token.read()?).parse()?;
    let mut client = RoutingSyncClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", token.clone());
        Ok(req)
    })
    .max_decoding_message_size(256 << 20);
    let (tx, rx) = mpsc::channel(16);
    let served = gateway.routing.snapshot.load().as_ref().map_or(0, |s| s.version);
    tx.send(GatewayMessage {
        kind: Some(gateway_message::Kind::Hello(Hello {
            gateway: settings.name.clone(),
            version: served,
        })),
    })
    .await?;
    let mut stream = client
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    gateway.metrics.connected(true);
    health.connected();
    tracing::info!(endpoint = %settings.endpoint, "sync stream open");
    while let Some(wire) = stream.message().await? {
        *attempt = 0;
        let (error, problems) = match apply_reporting(gateway, &wire) {
            Ok((_, problems)) => {
                if gateway.routing.snapshot.load().is_some() {
                    health.snapshot_applied();
                }
                (String::new(), problems)
            }
            Err(e) => (e, Vec::new()),
        };
        tx.send(GatewayMessage {
            kind: Some(gateway_message::Kind::Ack(Ack {
                version: wire.version,
                error,
                problems,
            })),
        })
        .await?;
    }
    Ok(())
}

/// Runs the sync task and restarts it if it panics; after `MAX_RESTARTS` failures within a minute
/// it stays stopped, and liveness fails so the kubelet restarts the gateway.
pub async fn supervise(gateway: Arc<Gateway>, settings: SyncSettings, health: Arc<Health>) {
    const MAX_RESTARTS: usize = 5;
    let mut failures: Vec<std::time::Instant> = Vec::new();
    loop {
        health.task_started();
        let task = tokio::spawn(run(gateway.clone(), settings.clone(), health.clone()));
        let ended = task.await;
        let now = std::time::Instant::now();
        failures.retain(|t| now.duration_since(*t) < Duration::from_secs(60));
        failures.push(now);
        let for_good = failures.len() > MAX_RESTARTS;
        health.task_stopped(for_good);
        match ended {
            Err(e) if e.is_cancelled() => return,
            Err(e) => tracing::error!(error = %e, restarts = failures.len(), for_good, "sync task failed"),
            Ok(()) => tracing::error!(for_good, "sync task ended"),
        }
        if for_good {
            return;
        }
        tokio::time::sleep(backoff(u32::try_from(failures.len()).unwrap_or(u32::MAX))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::state::Settings;
    use microplane_wire::sync::v1;

    fn snap(source: &str, version: u64) -> WireSnapshot {
        v1::Snapshot {
            version,
            source: source.into(),
            tenants: vec![v1::Tenant {
                name: "micro".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn applies_newer_snapshots_only_and_keeps_the_last_good_one() {
        let gw = Gateway::new(Settings::default(), Metrics::new());
        assert_eq!(apply(&gw, &snap("a", 2)), Ok(true));
        assert_eq!(apply(&gw, &snap("a", 1)), Ok(false));
        assert_eq!(apply(&gw, &snap("a", 2)), Ok(false));
        // Another operator process: taken whatever its version.
        assert_eq!(apply(&gw, &snap("b", 1)), Ok(true));
        let cur = gw.routing.snapshot.load_full().unwrap();
        assert_eq!((cur.source.as_str(), cur.version), ("b", 1));
    }

    /// Issue 20, item 1: a tenant admin's broken signing key, a host two tenants claim and an
    /// undecodable descriptor set are left out and reported; the snapshot is applied, every other
    /// tenant is served from it, and the broken tenant's other keys still verify.
    #[test]
    fn one_tenants_broken_parts_never_stop_the_snapshot() {
        use crate::auth::token::{Claims, SigningKey};
        let gw = Gateway::new(Settings::default(), Metrics::new());
        let (good_a, good_b) = (SigningKey::generate("a1").unwrap(), SigningKey::generate("b1").unwrap());
        let key = |k: &SigningKey| v1::SigningKey {
            kid: k.kid.clone(),
            pkcs8: k.pkcs8_der(),
        };
        let mut wire = snap("op", 1);
        wire.tenants = vec![
            v1::Tenant {
                name: "alpha".into(),
                issuer: "http://gw/alpha".into(),
                hosts: vec!["api.shared.example".into()],
                signing_keys: vec![
                    v1::SigningKey {
                        kid: "broken".into(),
                        pkcs8: b"not a key".to_vec(),
                    },
                    key(&good_a),
                ],
                ..Default::default()
            },
            v1::Tenant {
                name: "beta".into(),
                issuer: "http://gw/beta".into(),
                hosts: vec!["api.shared.example".into(), "api.beta.example".into()],
                signing_keys: vec![key(&good_b)],
                ..Default::default()
            },
        ];
        wire.descriptors.push(v1::Descriptors {
            key: "k".into(),
            file_descriptor_set: vec![0xff, 0xff, 0xff],
            services: vec![],
        });
        let (applied, problems) = apply_reporting(&gw, &wire).unwrap();
        assert!(applied);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("descriptor set k")), "{problems:?}");
        assert!(
            problems.iter().any(|p| p.contains("api.shared.example")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("alpha") && p.contains("broken")),
            "{problems:?}"
        );
        assert!(gw.metrics.encode().contains("microplane_gateway_snapshot_problems 3"));

        let snapshot = gw.routing.snapshot.load_full().unwrap();
        assert_eq!(snapshot.hosts["api.beta.example"], "beta");
        assert_eq!(snapshot.hosts["api.shared.example"], "alpha");
        let auth = gw.routing.auth.load_full().unwrap();
        let now = crate::auth::now_unix();
        for (k, tenant) in [(&good_a, "alpha"), (&good_b, "beta")] {
            let claims = Claims {
                sub: "u".into(),
                iss: format!("http://gw/{tenant}"),
                exp: now + 60,
                iat: now,
                token_use: "access".into(),
                ..Default::default()
            };
            let mut h = http::HeaderMap::new();
            h.insert(
                http::header::AUTHORIZATION,
                format!("Bearer {}", k.sign(&claims).unwrap()).parse().unwrap(),
            );
            let who = auth.authenticate_for(&h, None).into_account().map(|v| v.tenant);
            assert_eq!(who.as_deref(), Some(tenant));
        }
        assert_eq!(
            auth.tenants["alpha"].signing.as_ref().map(|k| k.kid.as_str()),
            Some("a1")
        );
    }

    #[test]
    fn the_token_cache_outlives_snapshots_but_not_the_keys() {
        use crate::auth::token::{Claims, SigningKey};
        let gw = Gateway::new(Settings::default(), Metrics::new());
        let (old, new) = (
            SigningKey::generate("old").unwrap(),
            SigningKey::generate("new").unwrap(),
        );
        let tenant = |keys: &[&SigningKey], denied: bool| v1::Tenant {
            name: "micro".into(),
            issuer: "http://gw/micro".into(),
            signing_keys: keys
                .iter()
                .map(|k| v1::SigningKey {
                    kid: k.kid.clone(),
                    pkcs8: k.pkcs8_der(),
                })
                .collect(),
            rules: vec![v1::Rule {
                id: "r".into(),
                scope: "*".into(),
                name: "*".into(),
                endpoint: "*".into(),
                denied,
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut wire = snap("a", 1);
        wire.tenants = vec![tenant(&[&old], false)];
        assert_eq!(apply(&gw, &wire), Ok(true));
        let now = crate::auth::now_unix();
        let claims = Claims {
            sub: "alice".into(),
            iss: "http://gw/micro".into(),
            exp: now + 600,
            iat: now,
            account_type: "user".into(),
            token_use: "access".into(),
            ..Default::default()
        };
        let mut headers = http::HeaderMap::new();
        let bearer = format!("Bearer {}", old.sign(&claims).unwrap());
        headers.insert(http::header::AUTHORIZATION, bearer.parse().unwrap());
        let first = gw.routing.auth.load_full().unwrap();
        assert!(first.authenticate_for(&headers, None).into_account().is_some());
        assert_eq!(gw.routing.token_cache.len(), 1);
        // No external key changed: nothing to rebuild.
        assert!(Arc::ptr_eq(&gw.routing.rebuild_auth().unwrap(), &first));

        // A rule change: a new auth state, the same cache.
        wire.version = 2;
        wire.tenants = vec![tenant(&[&new, &old], true)];
        assert_eq!(apply(&gw, &wire), Ok(true));
        let second = gw.routing.auth.load_full().unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(gw.routing.token_cache.len(), 1);
        assert!(second.authenticate_for(&headers, None).into_account().is_some());

        // The old key is rotated out: its token, cached or not, no longer verifies.
        wire.version = 3;
        wire.tenants = vec![tenant(&[&new], false)];
        assert_eq!(apply(&gw, &wire), Ok(true));
        let third = gw.routing.auth.load_full().unwrap();
        let refused = third.authenticate_for(&headers, None);
        assert!(
            matches!(&refused, crate::auth::Authn::UnknownKid { .. }),
            "refused because its key is gone, not for another reason: {refused:?}"
        );
    }

    #[test]
    fn an_https_endpoint_needs_a_ca_and_a_ca_needs_https() {
        let settings = |endpoint: &str, ca: Option<&str>| SyncSettings {
            endpoint: endpoint.into(),
            token: TokenSource::Static("t".into()),
            name: "gw".into(),
            ca_file: ca.map(Into::into),
        };
        assert!(settings("https://op.ns.svc:8082", Some("/ca.crt")).check().is_ok());
        assert!(settings("http://127.0.0.1:8082", None).check().is_ok());
        let no_ca = settings("https://op.ns.svc:8082", None).check().unwrap_err();
        assert!(no_ca.contains("--sync-ca-file"), "{no_ca}");
        let cleartext = settings("http://op.ns.svc:8082", Some("/ca.crt")).check().unwrap_err();
        assert!(cleartext.contains("not https"), "{cleartext}");
        // A CA file that cannot be read fails the connect, naming the file.
        let missing = settings("https://op.ns.svc:8082", Some("/nonexistent/ca.crt"));
        let err = missing.endpoint().unwrap_err().to_string();
        assert!(err.contains("/nonexistent/ca.crt"), "{err}");
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        assert!(backoff(0) <= Duration::from_millis(100));
        assert!(backoff(3) >= Duration::from_millis(400));
        for a in [7, 20, u32::MAX] {
            assert!(backoff(a) <= Duration::from_secs(5));
            assert!(backoff(a) >= Duration::from_millis(2500));
        }
    }
}
