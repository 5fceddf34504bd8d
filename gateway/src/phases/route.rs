//! Phase 2, route: the path → an `Http` service and the backend path, or Micro's (service,
//! endpoint) (docs/gateway.md, the path table). Whether the service exists is looked up only after
//! phase 3.

use std::sync::Arc;

use http::Method;

use crate::error::GatewayError;
use crate::resolve::{self, PathError, ProxyPath, Resolved};
use crate::snapshot::{Protocol, Route, Tenant};

/// Where a request goes.
#[derive(Debug)]
pub(super) enum Target {
    /// An `Http` service, which owns every path under its name; `path` is what rules match and
    /// what the backend receives.
    Http { route: Arc<Route>, path: ProxyPath },
    /// A `Grpc` service's endpoint, as Micro's resolver reads the path.
    Endpoint(Resolved),
    /// `GET /`: the gateway's version, like Micro.
    Version,
}

/// Phase 2 for a request of `method` to `raw_path` in `tenant`. An ambiguous path is refused here,
/// before any rule is consulted (docs/gateway.md, "Paths").
pub(super) fn route(tenant: &Tenant, raw_path: &str, method: &Method) -> Result<Target, GatewayError> {
    match resolve::proxy_path(raw_path) {
        Ok(path) => {
            if let Some(route) = tenant
                .routes
                .get(&path.service)
                .filter(|r| r.protocol == Protocol::Http)
            {
                return Ok(Target::Http {
                    route: route.clone(),
                    path,
                });
            }
        }
        Err(e @ (PathError::Ambiguous { .. } | PathError::Encoding(_))) => {
            return Err(GatewayError::bad_request(e.to_string()));
        }
        Err(PathError::Empty) => {}
    }
    match resolve::resolve_path(raw_path) {
        Ok(r) => Ok(Target::Endpoint(r)),
        Err(PathError::Empty) if method == Method::GET => Ok(Target::Version),
        Err(PathError::Empty) => Err(GatewayError::not_found("no service in path")),
        Err(e) => Err(GatewayError::bad_request(e.to_string())),
    }
}
