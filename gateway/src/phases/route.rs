//! Phase 2, route: the path → an `Http` service and the backend path, or Micro's (service,
//! endpoint) (docs/gateway.md, the path table). Whether the service exists is looked up only after
//! phase 3.

use std::sync::Arc;

use http::Method;

use crate::error::GatewayError;
use crate::resolve::{self, PathError, Resolved};
use crate::snapshot::{Protocol, Route, Tenant};

/// Where a request goes.
#[derive(Debug)]
pub(super) enum Target {
    /// An `Http` service, which owns every path under its name; `rest` is the backend path.
    Http { route: Arc<Route>, rest: String },
    /// A `Grpc` service's endpoint, as Micro's resolver reads the path.
    Endpoint(Resolved),
    /// `GET /`: the gateway's version, like Micro.
    Version,
}

/// Phase 2 for a request of `method` to `raw_path` in `tenant`.
pub(super) fn route(tenant: &Tenant, raw_path: &str, method: &Method) -> Result<Target, GatewayError> {
    if let Ok((first, rest)) = resolve::proxy_rest(raw_path)
        && let Some(route) = tenant.routes.get(&first).filter(|r| r.protocol == Protocol::Http)
    {
        return Ok(Target::Http {
            route: route.clone(),
            rest,
        });
    }
    match resolve::resolve_path(raw_path) {
        Ok(r) => Ok(Target::Endpoint(r)),
        Err(PathError::Empty) if method == Method::GET => Ok(Target::Version),
        Err(PathError::Empty) => Err(GatewayError::not_found("no service in path")),
        Err(e) => Err(GatewayError::bad_request(e.to_string())),
    }
}
