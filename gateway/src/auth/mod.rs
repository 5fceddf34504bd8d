//! Phase 2: authentication and authorization at the edge (docs/auth.md#rules, docs/gateway.md).
//!
//! - [`token`]: extracting the token (`Authorization: Bearer` or cookie `micro-token`), verifying it
//!   against the tenant's own issuer or its external issuers, and signing platform tokens;
//! - [`rules`]: AuthRule evaluation;
//! - [`jwks`]: external issuers' key sets, fetched and refreshed in the background, and at once
//!   when a token names a key the cached set lacks;
//! - [`endpoints`]: each tenant's OpenID discovery document, JWKS and token endpoint;
//! - [`login`]: the redirect of a browser refused without an account to the tenant's login page.
//!
//! Per snapshot, every tenant gets a [`TenantAuth`] (its issuer, keys, rules, accounts) and the
//! gateway one [`token::Verifier`] over all issuers. The identity the gateway verified reaches
//! backends in headers/metadata it sets itself; the same headers sent by a client are removed.

pub(crate) mod endpoints;
pub(crate) mod jwks;
pub(crate) mod limits;
pub(crate) mod login;
pub mod rules;
pub mod token;

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};
use microplane_wire::sync::v1;

use self::rules::{Access, Account, Decision, Rule, RuleSet};
use self::token::{Alg, Issuer, PublicKey, SigningKey, TokenCache, TokenError, Verified};
use crate::error::GatewayError;

/// The identity header names (account id, type and scopes) and the tenant's (set by the gateway),
/// shared with the services (docs/auth.md).
pub(crate) use microplane_wire::headers::{ACCOUNT_ID, ACCOUNT_NAMESPACE, ACCOUNT_SCOPES, ACCOUNT_TYPE, NAMESPACE};

/// Headers (and gRPC metadata keys) that carry the verified caller to backends. The gateway removes
/// any a client sent; only the gateway sets them (see the SDK's `identity` module).
const IDENTITY_HEADER_NAMES: [HeaderName; 4] = [
    HeaderName::from_static(ACCOUNT_ID),
    HeaderName::from_static(ACCOUNT_TYPE),
    HeaderName::from_static(ACCOUNT_SCOPES),
    HeaderName::from_static(ACCOUNT_NAMESPACE),
];
/// [`NAMESPACE`] as a header name.
const NAMESPACE_HEADER: HeaderName = HeaderName::from_static(NAMESPACE);

/// Removes client-sent identity headers.
pub(crate) fn strip_identity(headers: &mut HeaderMap) {
    for h in &IDENTITY_HEADER_NAMES {
        headers.remove(h);
    }
}

/// Sets the verified caller's identity (and the tenant) on a backend request's headers.
pub(crate) fn set_identity(headers: &mut HeaderMap, tenant: &str, account: Option<&Caller>) {
    strip_identity(headers);
    if let Ok(v) = HeaderValue::from_str(tenant) {
        headers.insert(NAMESPACE_HEADER, v);
    }
    if let Some(c) = account {
        let a = &c.verified;
        let [id, kind, scopes, issuer_tenant] = IDENTITY_HEADER_NAMES;
        for (k, v) in [
            (id, a.account_id.clone()),
            (kind, a.account_type.clone()),
            (scopes, a.scopes.join(" ")),
            (issuer_tenant, c.issuer_tenant.clone()),
        ] {
            if !v.is_empty()
                && let Ok(v) = HeaderValue::from_str(&v)
            {
                headers.insert(k, v);
            }
        }
    }
}

/// Removes the credentials the gateway reads (a `Bearer` `Authorization` header and the
/// `micro-token` cookie) from a request going to a backend that must not see them: the token is not
/// an account of the backend's own tenant (docs/gateway.md, "Credentials"). Other `Authorization`
/// schemes and other cookies are the backend's own business and stay.
pub(crate) fn strip_credentials(headers: &mut HeaderMap) {
    let bearer = headers.get_all(http::header::AUTHORIZATION).iter().any(|v| {
        let v = v.as_bytes();
        let scheme = v.split(|b| *b == b' ' || *b == b'\t').find(|w| !w.is_empty());
        // A value the gateway could not read as another scheme is removed too.
        scheme.is_none_or(|s| s.eq_ignore_ascii_case(b"bearer")) || std::str::from_utf8(v).is_err()
    });
    if bearer {
        headers.remove(http::header::AUTHORIZATION);
    }
    if !headers.contains_key(http::header::COOKIE) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| {
            // A Cookie header the gateway cannot read may hold the token: it goes.
            let text = v.to_str().ok()?;
            let pairs: Vec<&str> = text
                .split(';')
                .map(|p| p.trim_matches([' ', '\t']))
                .filter(|p| {
                    let name = p.split_once('=').map_or(*p, |(n, _)| n);
                    !p.is_empty() && name.trim_matches([' ', '\t']) != token::TOKEN_COOKIE
                })
                .collect();
            (!pairs.is_empty())
                .then(|| HeaderValue::from_str(&pairs.join("; ")).ok())
                .flatten()
        })
        .collect();
    headers.remove(http::header::COOKIE);
    for v in kept {
        headers.append(http::header::COOKIE, v);
    }
}

/// A verified account as the called tenant sees it (docs/auth.md, "Foreign accounts").
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    /// What the token says.
    pub verified: Verified,
    /// The tenant that issued the account: the tenant whose platform issuer signed the token, or
    /// whose external issuer's policy accepted it (the called tenant's own policy first: see
    /// [`token::Verifier`]).
    pub issuer_tenant: String,
}

impl Caller {
    /// Whether the account is `tenant`'s own (its issuer or one of its external issuers).
    pub(crate) fn is_own_in(&self, tenant: &str) -> bool {
        self.issuer_tenant == tenant
    }
}

/// An account the gateway issues tokens for: what checks its secret, never the secret.
#[derive(Clone, Debug)]
pub(crate) struct AccountEntry {
    /// `user`, `service`, …
    pub account_type: String,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// PBKDF2-HMAC-SHA256 of its secret with `salt` and `iterations`.
    pub secret_pbkdf2: Vec<u8>,
    /// The hash's salt.
    pub salt: Vec<u8>,
    /// The hash's iterations.
    pub iterations: u32,
    /// Carried by its refresh tokens: a changed secret ends them.
    pub secret_version: String,
}

/// A tenant's auth state in one snapshot.
pub(crate) struct TenantAuth {
    /// The tenant.
    pub tenant: String,
    /// Issuer of its platform tokens.
    pub issuer: String,
    /// The key new tokens are signed with (the newest).
    pub signing: Option<SigningKey>,
    /// Public keys of every signing key still valid, as a JWKS document.
    pub jwks: serde_json::Value,
    /// Access token lifetime.
    pub token_ttl: i64,
    /// Accounts by id.
    pub accounts: HashMap<String, AccountEntry>,
    /// Its AuthRules.
    pub rules: RuleSet,
    /// Where a browser refused without an account is sent to sign in (`spec.auth.loginUrl`).
    pub login_url: Option<String>,
}

impl std::fmt::Debug for TenantAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantAuth")
            .field("tenant", &self.tenant)
            .field("issuer", &self.issuer)
            .field("accounts", &self.accounts.len())
            .field("rules", &self.rules.len())
            .finish_non_exhaustive()
    }
}

/// Why a tenant's auth state is refused.
#[derive(Debug, thiserror::Error)]
#[error("tenant {tenant}: {reason}")]
pub(crate) struct AuthConfigError {
    /// The tenant.
    pub tenant: String,
    /// What is wrong.
    pub reason: String,
}

impl TenantAuth {
    /// Builds a tenant's auth state from its snapshot entry. A signing key that does not parse is
    /// left out and reported: the tenant's other keys, and every other tenant, keep working.
    pub(crate) fn build(t: &v1::Tenant, problems: &mut Vec<AuthConfigError>) -> Self {
        let mut keys = Vec::new();
        for k in &t.signing_keys {
            match SigningKey::from_pkcs8_der(k.kid.clone(), &k.pkcs8) {
                Ok(key) => keys.push(key),
                Err(e) => problems.push(AuthConfigError {
                    tenant: t.name.clone(),
                    reason: format!("signing key {}: {e}", k.kid),
                }),
            }
        }
        let jwks = serde_json::json!({"keys": keys.iter().map(|k| k.public().to_jwk()).collect::<Vec<_>>()});
        let rules = t
            .rules
            .iter()
            .map(|r| Rule {
                id: r.id.clone(),
                scope: r.scope.clone(),
                resource_type: if r.r#type.is_empty() {
                    "service".into()
                } else {
                    r.r#type.clone()
                },
                name: r.name.clone(),
                endpoint: r.endpoint.clone(),
                access: if r.denied { Access::Denied } else { Access::Granted },
                priority: r.priority,
            })
            .collect();
        let accounts = t
            .accounts
            .iter()
            .map(|a| {
                (
                    a.id.clone(),
                    AccountEntry {
                        account_type: a.r#type.clone(),
                        scopes: a.scopes.clone(),
                        secret_pbkdf2: a.secret_pbkdf2.clone(),
                        salt: a.salt.clone(),
                        iterations: a.iterations,
                        secret_version: a.secret_version.iter().map(|b| format!("{b:02x}")).collect(),
                    },
                )
            })
            .collect();
        Self {
            tenant: t.name.clone(),
            issuer: t.issuer.clone(),
            signing: keys.into_iter().next(),
            jwks,
            token_ttl: if t.token_ttl_seconds > 0 {
                t.token_ttl_seconds
            } else {
                900
            },
            accounts,
            rules: RuleSet::new(rules),
            login_url: (!t.login_url.is_empty()).then(|| t.login_url.clone()),
        }
    }

    /// The tenant's own issuer, for the verifier.
    pub(crate) fn own_issuer(&self, t: &v1::Tenant) -> Issuer {
        let keys: Vec<PublicKey> = t
            .signing_keys
            .iter()
            .filter_map(|k| SigningKey::from_pkcs8_der(k.kid.clone(), &k.pkcs8).ok())
            .map(|k| k.public())
            .collect();
        Issuer {
            issuer: self.issuer.clone(),
            tenant: self.tenant.clone(),
            algorithms: vec![Alg::ES256],
            audiences: Vec::new(),
            scopes_claim: None,
            keys,
        }
    }

    /// docs/auth.md#rules for a request to `service`/`endpoint` by `account` (as [`Self::account_of`]
    /// saw it, or `None`). A foreign account is admitted only by public and `+` rules.
    pub(crate) fn authorize(
        &self,
        account: Option<&Caller>,
        service: &str,
        endpoint: &str,
    ) -> Result<(), GatewayError> {
        let acc = account.map(|c| Account {
            id: c.verified.account_id.clone(),
            // Never equal to this tenant for a foreign account (an empty name is no tenant's).
            issuer_tenant: c.issuer_tenant.clone(),
            scopes: c.verified.scopes.clone(),
            account_type: c.verified.account_type.clone(),
        });
        match self
            .rules
            .decide(&self.tenant, acc.as_ref(), "service", service, endpoint)
        {
            Decision::Granted => Ok(()),
            Decision::Unauthorized => Err(GatewayError::unauthorized(format!(
                "Unauthorized call made to {service}:{endpoint}"
            ))),
            Decision::Forbidden => Err(GatewayError::forbidden(format!(
                "Forbidden call made to {service}:{endpoint} by {}",
                account.map_or("", |a| a.verified.account_id.as_str())
            ))),
        }
    }

    /// The account a verified token gives in this tenant: its own when its issuer verified it (its
    /// platform issuer, or one of its external issuers under its own policy), else a foreign
    /// account of the tenant whose issuer did (docs/auth.md#foreign-accounts: the rules decide;
    /// only public and `+` rules admit it).
    pub(crate) fn account_of(&self, v: Verified) -> Caller {
        Caller {
            issuer_tenant: v.tenant.clone(),
            verified: v,
        }
    }
}

/// Every tenant's auth state plus the verifier, rebuilt per snapshot (and when external keys change).
pub(crate) struct AuthState {
    /// By tenant.
    pub tenants: HashMap<String, Arc<TenantAuth>>,
    /// Issuer → tenant, for tenant resolution by token.
    pub issuers: HashMap<String, String>,
    /// Verifies every issuer's tokens.
    pub verifier: token::Verifier,
    /// The [`jwks::JwksCache::generation`] of the external keys it was built with.
    pub keys_generation: u64,
    /// External issuer (`iss`) → the tenants trusting it and the [`jwks::source_key`] of each
    /// one's keys: which key set to refresh for a token with an unknown `kid`.
    pub key_sources: HashMap<String, Vec<(String, String)>>,
}

/// What a request's credentials come to.
#[derive(Debug)]
pub(crate) enum Authn {
    /// A valid access token.
    Account(Verified),
    /// No usable token: none, an ambiguous or non-Bearer one, an invalid or expired one, a refresh
    /// token.
    Anonymous,
    /// A token whose issuer has no key with its `kid`: no account, unless a refresh of that
    /// issuer's key set brings the key (the issuer rotated its keys).
    UnknownKid {
        /// The [`jwks::source_key`] of the fetched key set to refresh: the called tenant's for
        /// the `iss` the token claims (not verified), else the first trusting tenant's; `None`
        /// when no fetched key set could bring the key (a platform issuer, inline keys).
        source: Option<String>,
    },
}

impl Authn {
    /// The verified account, if any.
    pub(crate) fn into_account(self) -> Option<Verified> {
        match self {
            Authn::Account(v) => Some(v),
            Authn::Anonymous | Authn::UnknownKid { .. } => None,
        }
    }
}

impl std::fmt::Debug for AuthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthState")
            .field("tenants", &self.tenants.len())
            .finish_non_exhaustive()
    }
}

impl AuthState {
    /// Builds the auth state of a snapshot, with external issuers' keys from `external_keys` (of
    /// generation `keys_generation`); its verifier uses `cache`, which the state it replaces used.
    pub(crate) fn build(
        msg: &v1::Snapshot,
        external_keys: &HashMap<String, Vec<PublicKey>>,
        keys_generation: u64,
        cache: TokenCache,
    ) -> (Self, Vec<AuthConfigError>) {
        let mut problems = Vec::new();
        let mut tenants = HashMap::new();
        let mut issuers: Vec<Issuer> = Vec::new();
        let mut own = HashMap::new();
        let mut key_sources: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for t in &msg.tenants {
            let ta = TenantAuth::build(t, &mut problems);
            if !ta.issuer.is_empty() {
                own.insert(ta.issuer.clone(), ta.tenant.clone());
                issuers.push(ta.own_issuer(t));
            }
            for e in &t.external_issuers {
                // Every tenant trusting an issuer is a candidate of its own, with its own policy
                // and the keys of its own source: tenants sharing an issuer never lend each other
                // audiences, algorithms, scopes claim or keys (docs/auth.md#external-issuers).
                if let Some(issuer) = external_issuer(t, e, external_keys, &mut problems) {
                    if !e.jwks_uri.is_empty() && e.jwks.is_empty() {
                        key_sources
                            .entry(e.issuer.clone())
                            .or_default()
                            .push((t.name.clone(), jwks::source_key(e)));
                    }
                    issuers.push(issuer);
                }
            }
            tenants.insert(ta.tenant.clone(), Arc::new(ta));
        }
        let state = Self {
            tenants,
            issuers: own,
            verifier: token::Verifier::with_cache(issuers, token::VerifierSettings::default(), cache),
            keys_generation,
            key_sources,
        };
        (state, problems)
    }

    /// The verified caller of a request, if it presented a valid token. A missing, ambiguous
    /// (two `Authorization` headers, header and cookie disagreeing), non-Bearer or invalid token is
    /// no account: the least privilege, so public endpoints still answer (an `Http` backend may use
    /// Basic auth of its own) and the rules refuse with 401 where an account is needed. A token
    /// whose issuer lacks its `kid` says which issuer, so that the caller may refresh its keys and
    /// try again.
    ///
    /// Where tenants share the token's issuer, `tenant`'s own policy is tried first (its own
    /// account), then the others' (a foreign one).
    pub(crate) fn authenticate_for(&self, headers: &HeaderMap, tenant: Option<&str>) -> Authn {
        let token = match token::extract(headers) {
            Ok(Some(t)) => t,
            Ok(None) => return Authn::Anonymous,
            Err(e) => {
                tracing::debug!(category = e.category(), "no usable token");
                return Authn::Anonymous;
            }
        };
        let now = now_unix();
        match self.verifier.verify_for(&token, now, token::TokenUse::Access, tenant) {
            Ok(v) if v.token_use == "access" => Authn::Account(v),
            Ok(_) => Authn::Anonymous,
            Err(TokenError::UnknownKid) => {
                let source = token::unverified_issuer(&token).and_then(|iss| {
                    let trusting = self.key_sources.get(&iss)?;
                    trusting
                        .iter()
                        .find(|(t, _)| Some(t.as_str()) == tenant)
                        .or_else(|| trusting.first())
                        .map(|(_, source)| source.clone())
                });
                Authn::UnknownKid { source }
            }
            Err(e) => {
                tracing::debug!(category = e.category(), "token refused");
                Authn::Anonymous
            }
        }
    }
}

/// The verifier's candidate for tenant `t`'s external issuer `e`, with keys from `external_keys`
/// (by [`jwks::source_key`]), or `None` (reported in `problems`) when it can verify nothing.
fn external_issuer(
    t: &v1::Tenant,
    e: &v1::ExternalIssuer,
    external_keys: &HashMap<String, Vec<PublicKey>>,
    problems: &mut Vec<AuthConfigError>,
) -> Option<Issuer> {
    let mut report = |reason: String| {
        problems.push(AuthConfigError {
            tenant: t.name.clone(),
            reason,
        });
    };
    // RS256 when none is configured; a name the gateway does not support is left out (never
    // replaced by another algorithm), and an issuer left with none, or without audiences (any
    // token of the issuer, for any application, would pass), verifies nothing. The CRD refuses
    // both at apply time; this holds for older objects too.
    let mut algorithms = Vec::new();
    for name in &e.algorithms {
        match Alg::from_name(name) {
            Some(a) => algorithms.push(a),
            None => report(format!(
                "external issuer {}: algorithm {name:?} is not supported",
                e.issuer
            )),
        }
    }
    if e.algorithms.is_empty() {
        algorithms.push(Alg::RS256);
    }
    if e.audiences.is_empty() {
        report(format!(
            "external issuer {} lists no audiences: its tokens are refused until spec.auth.issuers[].audiences names them",
            e.issuer
        ));
        return None;
    }
    if algorithms.is_empty() {
        // Reported above, per name: trusting it with other algorithms would be a guess.
        return None;
    }
    // The key cache parsed an inline set when it followed the snapshot; one it could not parse
    // is missing from it.
    let keys = external_keys.get(&jwks::source_key(e));
    if !e.jwks.is_empty() && keys.is_none() {
        report(format!("external issuer {}: the inline jwks does not parse", e.issuer));
        return None;
    }
    Some(Issuer {
        issuer: e.issuer.clone(),
        tenant: t.name.clone(),
        algorithms,
        audiences: e.audiences.clone(),
        scopes_claim: (!e.scopes_claim.is_empty()).then(|| e.scopes_claim.clone()),
        keys: keys.cloned().unwrap_or_default(),
    })
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_identity_is_removed_and_the_gateway_sets_its_own() {
        let mut h = HeaderMap::new();
        h.insert("micro-account-id", "admin".parse().unwrap());
        h.append("Micro-Account-Scopes", "admin".parse().unwrap());
        h.insert("x-other", "1".parse().unwrap());
        strip_identity(&mut h);
        assert_eq!(h.len(), 1);
        let v = Verified {
            account_id: "alice".into(),
            account_type: "user".into(),
            scopes: vec!["a".into(), "b".into()],
            tenant: "acme".into(),
            issuer: "i".into(),
            expires_at: 0,
            token_use: "access".into(),
            audiences: vec![],
        };
        h.insert("micro-account-id", "forged".parse().unwrap());
        h.insert("micro-account-namespace", "forged".parse().unwrap());
        let own = Caller {
            verified: v.clone(),
            issuer_tenant: "acme".into(),
        };
        set_identity(&mut h, "acme", Some(&own));
        assert_eq!(h[ACCOUNT_ID], "alice");
        assert_eq!(h[ACCOUNT_SCOPES], "a b");
        assert_eq!(h[NAMESPACE], "acme");
        assert_eq!(h[ACCOUNT_NAMESPACE], "acme");
        set_identity(&mut h, "acme", None);
        assert!(!h.contains_key(ACCOUNT_ID));
        assert!(!h.contains_key(ACCOUNT_NAMESPACE), "a forged issuing tenant is removed");
    }

    fn tenant_auth(name: &str, rules: Vec<Rule>) -> TenantAuth {
        TenantAuth {
            tenant: name.into(),
            issuer: format!("https://{name}.issuer"),
            signing: None,
            jwks: serde_json::Value::Null,
            token_ttl: 900,
            accounts: HashMap::new(),
            rules: RuleSet::new(rules),
            login_url: None,
        }
    }

    fn verified(tenant: &str, issuer: &str, scopes: &[&str]) -> Verified {
        Verified {
            account_id: format!("someone-of-{tenant}"),
            account_type: "user".into(),
            scopes: scopes.iter().map(|s| (*s).to_string()).collect(),
            tenant: tenant.into(),
            issuer: issuer.into(),
            expires_at: 0,
            token_use: "access".into(),
            audiences: vec![],
        }
    }

    fn rule(scope: &str, endpoint: &str, access: Access, priority: i32) -> Rule {
        Rule {
            id: format!("{scope}-{endpoint}-{priority}"),
            scope: scope.into(),
            resource_type: "service".into(),
            name: "*".into(),
            endpoint: endpoint.into(),
            access,
            priority,
        }
    }

    /// docs/auth.md#foreign-accounts: another tenant's valid token is a foreign account, which `+` admits and `*` or a
    /// named scope refuses (403, not the anonymous 401), even above a public grant.
    #[test]
    fn foreign_accounts_are_decided_by_the_rules() {
        let micro = |rules| tenant_auth("micro", rules);
        let beta_token = verified("beta", "https://beta.issuer", &["admin"]);
        let foreign = micro(vec![]).account_of(beta_token.clone());
        assert!(!foreign.is_own_in("micro"));
        assert_eq!(foreign.issuer_tenant, "beta");
        let code = |t: &TenantAuth, c: &Caller| t.authorize(Some(c), "web", "/x").map_err(|e| e.code.as_u16());

        // `+`: any valid account of any tenant.
        let plus = micro(vec![rule("+", "*", Access::Granted, 0)]);
        assert_eq!(code(&plus, &foreign), Ok(()));
        // `*`: this tenant's accounts only; refused at once (403), even with a public grant below.
        let star = micro(vec![
            rule("*", "*", Access::Granted, 10),
            rule("", "*", Access::Granted, 0),
        ]);
        assert_eq!(code(&star, &foreign), Err(403));
        // A named scope the foreign account holds does not admit it either.
        let named = micro(vec![rule("admin", "*", Access::Granted, 0)]);
        assert_eq!(code(&named, &foreign), Err(403));
        // Public rules admit everyone.
        let public = micro(vec![rule("", "*", Access::Granted, 0)]);
        assert_eq!(code(&public, &foreign), Ok(()));

        // The tenant's own token and one its external issuer verified under its policy are its
        // own accounts.
        let own = micro(vec![]).account_of(verified("micro", "https://micro.issuer", &[]));
        assert!(own.is_own_in("micro"));
        let external = micro(vec![]).account_of(verified("micro", "https://idp.shared", &["admin"]));
        assert!(external.is_own_in("micro"));
        assert_eq!(external.issuer_tenant, "micro");
        assert_eq!(code(&named, &external), Ok(()));
        assert_eq!(code(&star, &own), Ok(()));
        // A token of the same external issuer that only beta's policy accepted is beta's account.
        let stranger = micro(vec![]).account_of(verified("beta", "https://idp.shared", &["admin"]));
        assert!(!stranger.is_own_in("micro"));
        assert_eq!(code(&star, &stranger), Err(403));
        assert_eq!(code(&named, &stranger), Err(403));
        assert_eq!(code(&plus, &stranger), Ok(()));
    }

    #[test]
    fn consumed_credentials_are_stripped_and_others_kept() {
        let strip = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
            }
            strip_credentials(&mut h);
            let mut out: Vec<String> = h.iter().map(|(k, v)| format!("{k}: {}", v.to_str().unwrap())).collect();
            out.sort();
            out
        };
        assert_eq!(strip(&[("authorization", "Bearer abc")]), Vec::<String>::new());
        assert_eq!(strip(&[("authorization", "bearer abc")]), Vec::<String>::new());
        assert_eq!(
            strip(&[("authorization", "Basic dXNlcg==")]),
            ["authorization: Basic dXNlcg=="]
        );
        assert_eq!(
            strip(&[("cookie", "a=1; micro-token=secret; b=2"), ("cookie", "micro-token=x")]),
            ["cookie: a=1; b=2"]
        );
        assert_eq!(strip(&[("cookie", " micro-token = secret ")]), Vec::<String>::new());
        assert_eq!(
            strip(&[("cookie", "session=1"), ("x-y", "z")]),
            ["cookie: session=1", "x-y: z"]
        );
    }
}
