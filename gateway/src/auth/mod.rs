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
pub(crate) use microplane_wire::headers::{ACCOUNT_ID, ACCOUNT_SCOPES, ACCOUNT_TYPE, NAMESPACE};

/// Headers (and gRPC metadata keys) that carry the verified caller to backends. The gateway removes
/// any a client sent; only the gateway sets them (see the SDK's `identity` module).
const IDENTITY_HEADER_NAMES: [HeaderName; 3] = [
    HeaderName::from_static(ACCOUNT_ID),
    HeaderName::from_static(ACCOUNT_TYPE),
    HeaderName::from_static(ACCOUNT_SCOPES),
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
pub(crate) fn set_identity(headers: &mut HeaderMap, tenant: &str, account: Option<&Verified>) {
    strip_identity(headers);
    if let Ok(v) = HeaderValue::from_str(tenant) {
        headers.insert(NAMESPACE_HEADER, v);
    }
    if let Some(a) = account {
        let [id, kind, scopes] = IDENTITY_HEADER_NAMES;
        for (k, v) in [
            (id, a.account_id.clone()),
            (kind, a.account_type.clone()),
            (scopes, a.scopes.join(" ")),
        ] {
            if let Ok(v) = HeaderValue::from_str(&v) {
                headers.insert(k, v);
            }
        }
    }
}

/// An account the gateway issues tokens for: what checks its secret, never the secret.
#[derive(Clone, Debug)]
pub(crate) struct AccountEntry {
    /// `user`, `service`, …
    pub account_type: String,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// SHA-256 of its secret.
    pub secret_sha256: Vec<u8>,
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
    /// External issuers (`iss`) the tenant trusts.
    pub external: Vec<String>,
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
    /// Builds a tenant's auth state from its snapshot entry.
    pub(crate) fn build(t: &v1::Tenant) -> Result<Self, AuthConfigError> {
        let err = |reason: String| AuthConfigError {
            tenant: t.name.clone(),
            reason,
        };
        let mut keys = Vec::new();
        for k in &t.signing_keys {
            keys.push(
                SigningKey::from_pkcs8_der(k.kid.clone(), &k.pkcs8)
                    .map_err(|e| err(format!("signing key {}: {e}", k.kid)))?,
            );
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
                        secret_sha256: a.secret_sha256.clone(),
                    },
                )
            })
            .collect();
        Ok(Self {
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
            external: t.external_issuers.iter().map(|e| e.issuer.clone()).collect(),
            login_url: (!t.login_url.is_empty()).then(|| t.login_url.clone()),
        })
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

    /// docs/auth.md#rules for a request to `service`/`endpoint` by `account` (one [`Self::account_of`]
    /// admitted, or `None`).
    pub(crate) fn authorize(
        &self,
        account: Option<&Verified>,
        service: &str,
        endpoint: &str,
    ) -> Result<(), GatewayError> {
        // `account_of` admitted only this tenant's own and external issuers' accounts.
        let acc = account.map(|v| Account {
            id: v.account_id.clone(),
            issuer_tenant: self.tenant.clone(),
            scopes: v.scopes.clone(),
            account_type: v.account_type.clone(),
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
                account.map_or("", |a| a.account_id.as_str())
            ))),
        }
    }

    /// The account a verified token gives in this tenant: issued by its own issuer or one of its
    /// external issuers. A token of another tenant is treated as no token (docs/gateway.md).
    pub(crate) fn account_of(&self, v: Verified) -> Option<Verified> {
        (v.tenant == self.tenant || self.external.contains(&v.issuer)).then_some(v)
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
        /// The `iss` the token claims (not verified).
        issuer: String,
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
    ) -> Result<Self, AuthConfigError> {
        let mut tenants = HashMap::new();
        let mut issuers_by_iss: HashMap<String, Issuer> = HashMap::new();
        let mut own = HashMap::new();
        for t in &msg.tenants {
            let ta = TenantAuth::build(t)?;
            if !ta.issuer.is_empty() {
                own.insert(ta.issuer.clone(), ta.tenant.clone());
                issuers_by_iss.insert(ta.issuer.clone(), ta.own_issuer(t));
            }
            for e in &t.external_issuers {
                if issuers_by_iss.contains_key(&e.issuer) {
                    // The first tenant's configuration of a shared external issuer wins.
                    continue;
                }
                let algorithms: Vec<Alg> = e.algorithms.iter().filter_map(|a| Alg::from_name(a)).collect();
                issuers_by_iss.insert(
                    e.issuer.clone(),
                    Issuer {
                        issuer: e.issuer.clone(),
                        tenant: String::new(),
                        algorithms: if algorithms.is_empty() {
                            vec![Alg::RS256]
                        } else {
                            algorithms
                        },
                        audiences: e.audiences.clone(),
                        scopes_claim: (!e.scopes_claim.is_empty()).then(|| e.scopes_claim.clone()),
                        keys: external_keys.get(&e.issuer).cloned().unwrap_or_default(),
                    },
                );
            }
            tenants.insert(ta.tenant.clone(), Arc::new(ta));
        }
        Ok(Self {
            tenants,
            issuers: own,
            verifier: token::Verifier::with_cache(
                issuers_by_iss.into_values().collect(),
                token::VerifierSettings::default(),
                cache,
            ),
            keys_generation,
        })
    }

    /// The verified caller of a request, if it presented a valid token. A missing, ambiguous
    /// (two `Authorization` headers, header and cookie disagreeing), non-Bearer or invalid token is
    /// no account: the least privilege, so public endpoints still answer (an `Http` backend may use
    /// Basic auth of its own) and the rules refuse with 401 where an account is needed. A token
    /// whose issuer lacks its `kid` says which issuer, so that the caller may refresh its keys and
    /// try again.
    pub(crate) fn authenticate(&self, headers: &HeaderMap) -> Authn {
        let token = match token::extract(headers) {
            Ok(Some(t)) => t,
            Ok(None) => return Authn::Anonymous,
            Err(e) => {
                tracing::debug!(category = e.category(), "no usable token");
                return Authn::Anonymous;
            }
        };
        let now = now_unix();
        match self.verifier.verify(&token, now) {
            Ok(v) if v.token_use == "access" => Authn::Account(v),
            Ok(_) => Authn::Anonymous,
            Err(TokenError::UnknownKid) => match token::unverified_issuer(&token) {
                Some(issuer) => Authn::UnknownKid { issuer },
                None => Authn::Anonymous,
            },
            Err(e) => {
                tracing::debug!(category = e.category(), "token refused");
                Authn::Anonymous
            }
        }
    }
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
        };
        h.insert("micro-account-id", "forged".parse().unwrap());
        set_identity(&mut h, "acme", Some(&v));
        assert_eq!(h[ACCOUNT_ID], "alice");
        assert_eq!(h[ACCOUNT_SCOPES], "a b");
        assert_eq!(h[NAMESPACE], "acme");
        set_identity(&mut h, "acme", None);
        assert!(!h.contains_key(ACCOUNT_ID));
    }
}
