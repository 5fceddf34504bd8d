//! What the bench publishes as the operator: the routing state of its tenants and services as
//! snapshots, the tenants' rules and the `secure` tenant's tokens.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use microplane_gateway::auth::token::{Claims, SigningKey};
use microplane_operator::controller::tenant;
use microplane_wire::sync::v1;

/// The tenant of the public routes (a, b, c, d) and of auth off in (e).
pub const TENANT: &str = "micro";
/// The tenant whose every request needs an account (e, f).
pub const SECURE: &str = "secure";
const SECURE_ISSUER: &str = "http://bench-gateway.invalid/secure";
pub const SECURE_KID: &str = "bench-secure-1";
/// The AuthRule (f) flips.
const PROBE_RULE: &str = "bench-probe";
/// The `source` of every snapshot.
const SOURCE: &str = "bench-gateway";
/// The key of helloworld's descriptors in the snapshots.
pub const DESCRIPTORS_KEY: &str = "bench-helloworld";

/// The routing state the bench publishes: helloworld, web and any extra HTTP routes.
pub struct Routing {
    pub version: u64,
    pub backend: String,
    pub helloworld: String,
    pub descriptors: v1::Descriptors,
    /// HTTP routes to the nginx backend besides `web`.
    pub extra: Vec<String>,
    /// PKCS#8 DER of the `secure` tenant's signing key.
    pub secure_key: Vec<u8>,
    /// Whether the AuthRule `bench-probe` denies.
    pub probe_denied: bool,
}

impl Routing {
    /// The next snapshot: a higher version, built now.
    pub fn next(&mut self) -> v1::Snapshot {
        self.version += 1;
        let http = |name: &str, address: &str| v1::Service {
            tenant: TENANT.into(),
            name: name.into(),
            protocol: v1::Protocol::Http as i32,
            endpoints: vec![v1::Endpoint {
                address: address.into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut services = vec![
            v1::Service {
                tenant: TENANT.into(),
                name: "helloworld".into(),
                protocol: v1::Protocol::Grpc as i32,
                endpoints: vec![v1::Endpoint {
                    address: self.helloworld.clone(),
                    ..Default::default()
                }],
                descriptors: DESCRIPTORS_KEY.into(),
                ..Default::default()
            },
            http("web", &self.backend),
        ];
        services.extend(self.extra.iter().map(|n| http(n, &self.backend)));
        services.push(v1::Service {
            tenant: SECURE.into(),
            ..http("web", &self.backend)
        });
        v1::Snapshot {
            version: self.version,
            source: SOURCE.into(),
            built_unix_nanos: unix_nanos(),
            tenants: vec![
                v1::Tenant {
                    name: TENANT.into(),
                    rules: vec![public_default_rule()],
                    ..Default::default()
                },
                v1::Tenant {
                    name: SECURE.into(),
                    issuer: SECURE_ISSUER.into(),
                    signing_keys: vec![v1::SigningKey {
                        kid: SECURE_KID.into(),
                        pkcs8: self.secure_key.clone(),
                    }],
                    token_ttl_seconds: 900,
                    rules: vec![authenticated_default_rule(), probe_rule(self.probe_denied)],
                    ..Default::default()
                },
            ],
            services,
            descriptors: vec![self.descriptors.clone()],
        }
    }
}

/// The rule the operator gives a tenant with `defaultAccess: Public` (the default): anyone may call
/// anything, at the lowest priority.
fn public_default_rule() -> v1::Rule {
    v1::Rule {
        id: tenant::DEFAULT_RULE.into(),
        scope: String::new(),
        r#type: "*".into(),
        name: "*".into(),
        endpoint: "*".into(),
        denied: false,
        priority: tenant::DEFAULT_RULE_PRIORITY,
    }
}

/// The rule the operator gives a tenant with `defaultAccess: Authenticated`: any account of the
/// tenant may call anything, at the lowest priority.
fn authenticated_default_rule() -> v1::Rule {
    v1::Rule {
        scope: "*".into(),
        ..public_default_rule()
    }
}

/// The AuthRule (f) flips: the `secure` tenant's accounts on `web`, above the default rule.
fn probe_rule(denied: bool) -> v1::Rule {
    v1::Rule {
        id: PROBE_RULE.into(),
        scope: "*".into(),
        r#type: "service".into(),
        name: "web".into(),
        endpoint: "*".into(),
        denied,
        priority: 10,
    }
}

/// An access token of the `secure` tenant, signed with its key (what its token endpoint issues),
/// valid for an hour.
pub fn secure_token(pkcs8: &[u8]) -> Result<String> {
    let key = SigningKey::from_pkcs8_der(SECURE_KID, pkcs8)?;
    let now = unix_nanos() / 1_000_000_000;
    let claims = Claims {
        sub: "bench".into(),
        iss: SECURE_ISSUER.into(),
        exp: now + 3600,
        iat: now,
        account_type: "user".into(),
        token_use: "access".into(),
        ..Default::default()
    };
    Ok(key.sign(&claims)?)
}

pub fn unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
