//! The data path: one request through the phases of docs/gateway.md ("A request, phase by phase"),
//! in this order, over one per-request context ([`Gateway::handle`]):
//!
//! 1. **Tenant** (`tenant.rs`): who the caller is (token verification) and which tenant it calls;
//! 2. **Route** (`route.rs`): the path → an `Http` service and the backend path, or Micro's
//!    (service, endpoint);
//! 3. **Auth** (`auth.rs`): the tenant's rules decide, before anything reveals whether the service
//!    exists;
//! 4. **Transcode** (`transcode.rs`) for `Grpc` services, or **proxy** ([`crate::proxy`]) for
//!    `Http` services;
//! 5. **Respond** (`respond.rs`): errors as JSON, CORS headers, metrics, the access log line.
//!
//! A tenant's issuer endpoints (`issuer.rs`) are answered between phases 1 and 2 (or before phase
//! 1, when the path names the tenant).

mod auth;
mod issuer;
mod respond;
mod route;
mod tenant;
mod transcode;

use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::body::BoxBody;
use crate::error::GatewayError;
use crate::peer::Peer;
use crate::response::json_response;
use crate::snapshot::{Route, Tenant};
use crate::state::Gateway;
use crate::{cors, proxy};

/// What one request learned on its way, for the response, the metrics and the access log.
#[derive(Default)]
struct RequestContext {
    tenant: Option<Arc<Tenant>>,
    route: Option<Arc<Route>>,
    endpoint: Option<String>,
    /// The endpoint the request went to last (for the access log).
    upstream: Option<Arc<crate::upstream::Upstream>>,
    origin: Option<HeaderValue>,
    account: Option<String>,
}

impl Gateway {
    /// Serves one request: never fails, errors become docs/gateway.md#errors JSON responses.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>, peer: &Peer) -> Response<BoxBody> {
        let started = Instant::now();
        let method = req.method().clone();
        let path = self.settings.access_log.then(|| req.uri().path().to_string());
        let mut ctx = RequestContext {
            origin: req.headers().get(header::ORIGIN).cloned(),
            ..Default::default()
        };
        let result = tokio::time::timeout(self.settings.request_timeout, self.phases(req, peer, &mut ctx)).await;
        self.respond(result, &ctx, started, &method, path.as_deref())
    }

    /// Phases 1 to 4.
    async fn phases(
        &self,
        req: Request<Incoming>,
        peer: &Peer,
        ctx: &mut RequestContext,
    ) -> Result<Response<BoxBody>, GatewayError> {
        // The dashboard's files need no snapshot: the app loads and says what the API answers.
        if let Some(served) = self.settings.dashboard.as_ref().and_then(|d| d.serve(&req)) {
            return served;
        }
        let snap = self
            .routing
            .snapshot
            .load_full()
            .ok_or_else(|| GatewayError::unavailable("the gateway has no routing snapshot yet"))?;
        let auth_state = self
            .routing
            .auth
            .load_full()
            .ok_or_else(|| GatewayError::unavailable("the gateway has no routing snapshot yet"))?;

        // The issuer endpoints of a tenant named in the path need no other resolution.
        // The URI shares the request's buffer: its clone copies no path.
        let uri = req.uri().clone();
        let raw_path = uri.path();
        let well_known = crate::auth::endpoints::match_path(raw_path);
        if let Some((Some(named), endpoint)) = well_known {
            let tenant = snap
                .tenants
                .get(named)
                .cloned()
                .ok_or_else(|| GatewayError::not_found(format!("namespace {named} not found")))?;
            ctx.tenant = Some(tenant.clone());
            if endpoint == crate::openapi::WELL_KNOWN {
                let (auth_state, verified) = self.authenticate(auth_state, req.headers(), Some(named)).await;
                return self.explorer(&snap, &auth_state, &tenant, verified, &req);
            }
            let ip = peer.client_ip(req.headers());
            return issuer::serve(&auth_state, &tenant, endpoint, req, &self.token_limits, ip).await;
        }

        // Phase 1: tenant (host, header, the issuer of a valid token, the default) and the account
        // verified for it.
        let (tenant, auth_state, verified) = self
            .tenant_and_account(
                &snap,
                auth_state,
                req.headers(),
                req.uri().authority().map(|a| a.as_str()),
            )
            .await?;
        ctx.tenant = Some(tenant.clone());
        if req.method() == Method::OPTIONS && ctx.origin.is_some() {
            return Ok(cors::preflight());
        }
        if let Some((None, endpoint)) = well_known {
            if endpoint == crate::openapi::WELL_KNOWN {
                return self.explorer(&snap, &auth_state, &tenant, verified, &req);
            }
            let ip = peer.client_ip(req.headers());
            return issuer::serve(&auth_state, &tenant, endpoint, req, &self.token_limits, ip).await;
        }
        let tenant_auth = auth_state
            .tenants
            .get(&tenant.name)
            .cloned()
            .ok_or_else(|| GatewayError::not_found(format!("namespace {} not found", tenant.name)))?;
        // Another tenant's token is a foreign account: the rules decide (docs/auth.md#foreign-accounts).
        let account = verified.map(|v| tenant_auth.account_of(v));
        ctx.account = account.as_ref().map(|a| a.verified.account_id.clone());

        // Phase 2: route. An `Http` service owns every path under its name; otherwise Micro's resolver.
        match route::route(&tenant, raw_path, req.method())? {
            route::Target::Http { route, path } => {
                ctx.route = Some(route.clone());
                // Phase 3: auth; the resource endpoint of an `Http` service is the decoded backend
                // path, exactly what the backend receives (encoded canonically).
                if let Some(refusal) =
                    auth::authorize(&tenant_auth, account.as_ref(), &route.service, &path.decoded, &req)
                {
                    return refusal;
                }
                // Phase 4: proxy, with the identity the gateway verified and no credentials the
                // backend's tenant does not own.
                let own_credentials = account.as_ref().is_some_and(|a| a.is_own_in(&tenant.name));
                let identity = proxy::Identity {
                    tenant: &tenant.name,
                    account: account.as_ref(),
                    own_credentials,
                };
                let limits = proxy::Limits {
                    max_body_bytes: self.settings.max_body_bytes,
                    tunnel_idle_timeout: self.settings.tunnel_idle_timeout,
                };
                proxy::forward(&route, &path.forward, req, peer, identity, limits, &mut ctx.upstream).await
            }
            route::Target::Version => Ok(json_response(
                StatusCode::OK,
                bytes::Bytes::from(format!("{{\"version\":\"{}\"}}", env!("CARGO_PKG_VERSION"))),
            )),
            route::Target::Endpoint(resolved) => {
                ctx.endpoint = Some(resolved.endpoint.clone());
                // Phase 3: auth, before anything reveals whether the service exists.
                if let Some(refusal) = auth::authorize(
                    &tenant_auth,
                    account.as_ref(),
                    &resolved.service,
                    &resolved.endpoint,
                    &req,
                ) {
                    return refusal;
                }
                let route = tenant.routes.get(&resolved.service).cloned().ok_or_else(|| {
                    GatewayError::not_found(format!(
                        "service {} not found in namespace {}",
                        resolved.service, tenant.name
                    ))
                })?;
                ctx.route = Some(route.clone());
                // Phase 4: transcode.
                self.transcode(
                    req,
                    &route,
                    &resolved.endpoint,
                    &tenant.name,
                    account.as_ref(),
                    &mut ctx.upstream,
                )
                .await
            }
        }
    }
}

impl Gateway {
    /// `GET <tenant>/.well-known/openapi.json`: the tenant's endpoints the caller may call
    /// ([`crate::openapi`]).
    fn explorer(
        &self,
        snap: &crate::snapshot::Snapshot,
        auth_state: &crate::auth::AuthState,
        tenant: &Tenant,
        verified: Option<crate::auth::token::Verified>,
        req: &Request<Incoming>,
    ) -> Result<Response<BoxBody>, GatewayError> {
        if req.method() != Method::GET {
            return Err(GatewayError::method_not_allowed(format!(
                "{} is not allowed on openapi.json: use GET",
                req.method()
            )));
        }
        let ta = auth_state
            .tenants
            .get(&tenant.name)
            .ok_or_else(|| GatewayError::not_found(format!("namespace {} not found", tenant.name)))?;
        let account = verified.map(|v| ta.account_of(v));
        let doc = crate::openapi::document(tenant, ta, account.as_ref(), snap.version);
        Ok(json_response(StatusCode::OK, bytes::Bytes::from(doc.to_string())))
    }
}
