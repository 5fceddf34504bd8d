//! Phase 5, respond: the answer or the error as docs/gateway.md#errors JSON, CORS headers, metrics
//! and the access log line.

use std::time::Instant;

use http::{Method, Response};

use super::RequestContext;
use crate::body::BoxBody;
use crate::cors;
use crate::error::GatewayError;
use crate::response::error_response;
use crate::state::Gateway;

impl Gateway {
    /// Phase 5 for what phases 1–4 gave (`Err(_)`: they did not finish within the request
    /// timeout), for a request of `method` to `path` (`None` without access log) started at
    /// `started`.
    pub(super) fn respond(
        &self,
        result: Result<Result<Response<BoxBody>, GatewayError>, tokio::time::error::Elapsed>,
        ctx: &RequestContext,
        started: Instant,
        method: &Method,
        path: Option<&str>,
    ) -> Response<BoxBody> {
        let mut resp = match result {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => error_response(&e),
            Err(_) => error_response(&GatewayError::gateway_timeout(format!(
                "no response within {:?}",
                self.settings.request_timeout
            ))),
        };
        if let Some(origin) = &ctx.origin {
            cors::apply(
                resp.headers_mut(),
                origin,
                ctx.tenant.as_ref().and_then(|t| t.cors.as_ref()),
            );
        }
        let tenant = ctx.tenant.as_ref().map_or("", |t| t.name.as_str());
        let service = ctx.route.as_ref().map_or("", |r| r.service.as_str());
        let elapsed = started.elapsed();
        let code = resp.status().as_u16();
        match &ctx.route {
            Some(route) => self
                .metrics
                .observe_route(&route.metrics, &route.tenant, &route.service, code, elapsed),
            None => self.metrics.observe(tenant, service, code, elapsed),
        }
        if self.settings.access_log {
            tracing::info!(
                target: "access",
                %method,
                path = path.unwrap_or(""),
                tenant,
                service,
                endpoint = ctx.endpoint.as_deref().unwrap_or(""),
                upstream = ctx.upstream.as_ref().map_or("", |u| u.address.as_str()),
                account = ctx.account.as_deref().unwrap_or(""),
                status = resp.status().as_u16(),
                micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
                "request"
            );
        }
        resp
    }
}
