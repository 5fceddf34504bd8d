//! Phase 1, tenant: the tenant is chosen and the caller's token verified for it (an external
//! issuer's keys fetched at once for a `kid` they lack) (docs/gateway.md, docs/auth.md).

use std::borrow::Cow;
use std::sync::Arc;

use http::header::{self, HeaderMap};

use crate::auth::{self, AuthState, Authn};
use crate::error::GatewayError;
use crate::resolve::{self, TenantSource};
use crate::snapshot::{Snapshot, Tenant};
use crate::state::Gateway;

impl Gateway {
    /// The caller's account in a call to `tenant`, if the request carries a valid access token
    /// (`auth_state` verifies it, `tenant`'s own issuer policy first). A token whose external
    /// issuer lacks its `kid` may be signed by a key the issuer just rotated in: that key set is
    /// fetched at once (single flight with the background refresh, rate-limited, a bounded wait)
    /// and the token verified again with the auth state rebuilt from it, which is returned for the
    /// rest of the request.
    pub(crate) async fn authenticate(
        &self,
        auth_state: Arc<AuthState>,
        headers: &HeaderMap,
        tenant: Option<&str>,
    ) -> (Arc<AuthState>, Option<auth::token::Verified>) {
        let authn = auth_state.authenticate_for(headers, tenant);
        if let Authn::UnknownKid { source: Some(source) } = &authn
            && self.routing.jwks.refresh_now(source).await
            && let Some(fresh) = self.routing.try_rebuild_auth()
            && !Arc::ptr_eq(&fresh, &auth_state)
        {
            let authn = fresh.authenticate_for(headers, tenant);
            return (fresh, authn.into_account());
        }
        (auth_state, authn.into_account())
    }

    /// Phase 1: the tenant, and the caller's account verified for it. The tenant is a host some
    /// tenant lists (a `Micro-Namespace` naming another tenant there is refused with 400), else the
    /// `Micro-Namespace` header, else the tenant whose platform issuer signed the verified token,
    /// else the default tenant. The token is verified once, with the named tenant's issuer policy
    /// first, or, when none is named, the default tenant's: a platform token has one issuer
    /// whichever tenant is preferred, and an external issuer's token never names a tenant.
    pub(super) async fn tenant_and_account(
        &self,
        snap: &Snapshot,
        auth_state: Arc<AuthState>,
        headers: &HeaderMap,
        authority: Option<&str>,
    ) -> Result<(Arc<Tenant>, Arc<AuthState>, Option<auth::token::Verified>), GatewayError> {
        let named = self.named_tenant(snap, headers, authority)?;
        let default = self.settings.default_tenant.as_str();
        let preferred = named.as_deref().unwrap_or(default);
        let (auth_state, verified) = self.authenticate(auth_state, headers, Some(preferred)).await;
        let name: Cow<'_, str> = match named {
            Some(n) => n,
            None => match verified.as_ref().and_then(|v| auth_state.issuers.get(&v.issuer)) {
                Some(t) => Cow::Owned(t.clone()),
                None => Cow::Borrowed(default),
            },
        };
        let tenant = snap
            .tenants
            .get(name.as_ref())
            .cloned()
            .ok_or_else(|| GatewayError::not_found(format!("namespace {name} not found")))?;
        Ok((tenant, auth_state, verified))
    }

    /// The tenant a request names by host or `Micro-Namespace`, if any.
    fn named_tenant<'a>(
        &self,
        snap: &Snapshot,
        headers: &'a HeaderMap,
        authority: Option<&str>,
    ) -> Result<Option<Cow<'a, str>>, GatewayError> {
        let header = headers
            .get(microplane_wire::headers::NAMESPACE)
            .and_then(|v| v.to_str().ok());
        let host = resolve::host_of(headers.get(header::HOST).and_then(|v| v.to_str().ok()), authority);
        let source = resolve::tenant_source(header, host, |h| snap.hosts.get(h).map(String::as_str))
            .map_err(|e| GatewayError::bad_request(e.to_string()))?;
        Ok(match source {
            TenantSource::Header(h) => Some(Cow::Borrowed(h)),
            TenantSource::Host(h) => Some(Cow::Owned(snap.hosts.get(&h).cloned().unwrap_or_default())),
            TenantSource::Default => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::HeaderValue;

    use super::*;
    use crate::metrics::Metrics;
    use crate::state::Settings;

    /// Phase 1 against an external issuer whose JWKS a loopback server serves: rotations are
    /// followed at once, removed keys stop verifying, and an unreachable issuer keeps its keys.
    #[tokio::test]
    async fn external_key_rotation_is_followed_on_demand() {
        use crate::auth::jwks::testing::{Serve, Server, jwks};
        use crate::auth::token::{Claims, SigningKey};
        use microplane_wire::sync::v1;

        const ISS: &str = "https://idp.rotation.test";
        let (k1, k2, k3) = (
            SigningKey::generate("k1").unwrap(),
            SigningKey::generate("k2").unwrap(),
            SigningKey::generate("never-published").unwrap(),
        );
        let server = Server::start(jwks(&[&k1])).await;
        // Every unknown kid may refresh (no rate limit), so that failed fetches are exercised too.
        let settings = Settings {
            jwks: crate::auth::jwks::JwksSettings {
                on_demand_interval: Duration::ZERO,
                ..Default::default()
            },
            ..Settings::default()
        };
        let gw = Arc::new(Gateway::new(settings, Metrics::new()));
        tokio::spawn(crate::sync::follow_external_keys(gw.clone()));
        let wire = v1::Snapshot {
            version: 1,
            source: "test".into(),
            tenants: vec![v1::Tenant {
                name: "acme".into(),
                external_issuers: vec![v1::ExternalIssuer {
                    issuer: ISS.into(),
                    jwks_uri: server.uri.clone(),
                    algorithms: vec!["ES256".into()],
                    audiences: vec!["app".into()],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(crate::sync::apply(&gw, &wire), Ok(true));

        let now = auth::now_unix();
        let bearer = |k: &SigningKey| {
            let claims = Claims {
                sub: format!("user-of-{}", k.kid),
                iss: ISS.into(),
                exp: now + 600,
                iat: now,
                account_type: "user".into(),
                token_use: "access".into(),
                aud: Some(crate::auth::token::Audience::One("app".into())),
                ..Default::default()
            };
            let mut h = HeaderMap::new();
            h.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {}", k.sign(&claims).unwrap())).unwrap(),
            );
            h
        };
        let account = |h: HeaderMap| {
            let gw = gw.clone();
            async move {
                let state = gw.routing.auth.load_full().unwrap();
                gw.authenticate(state, &h, Some("acme")).await.1.map(|v| v.account_id)
            }
        };

        // The first fetch (or the on-demand one the first token asks for) brings k1.
        assert_eq!(account(bearer(&k1)).await.as_deref(), Some("user-of-k1"));
        assert!(!gw.routing.token_cache.is_empty(), "verified and cached");
        let hits = server.hits();

        // Rotation: k2 replaces k1. A k2 token is accepted on its first request, by one fetch.
        server.set(jwks(&[&k2]));
        assert_eq!(account(bearer(&k2)).await.as_deref(), Some("user-of-k2"));
        assert_eq!(server.hits(), hits + 1);
        // The removed key no longer verifies, though its token was cached.
        assert_eq!(account(bearer(&k1)).await, None);

        // The issuer goes away: k2 keeps verifying; a never-published kid is refused.
        server.set(Serve::Status(503));
        let hits = server.hits();
        assert_eq!(account(bearer(&k3)).await, None);
        assert_eq!(
            server.hits(),
            hits + 1,
            "the unknown kid asked for a fetch, which failed"
        );
        assert_eq!(account(bearer(&k2)).await.as_deref(), Some("user-of-k2"));
        server.task.abort();
        assert_eq!(account(bearer(&k3)).await, None);
        assert_eq!(account(bearer(&k2)).await.as_deref(), Some("user-of-k2"));
    }
}
