//! Phase 4 for `Grpc` services, transcode: the endpoint's method, the request message
//! ([`crate::decode`]), the call ([`crate::call`]) and its JSON answer.

use std::time::Instant;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::auth::Caller;
use crate::body::BoxBody;
use crate::call::{self, GrpcCall};
use crate::decode;
use crate::error::GatewayError;
use crate::snapshot::Route;
use crate::state::Gateway;
use crate::stream::accepts_event_stream;

impl Gateway {
    /// Phase 4 for `endpoint` of the `Grpc` service `route`.
    pub(super) async fn transcode(
        &self,
        req: Request<Incoming>,
        route: &Route,
        endpoint: &str,
        tenant: &str,
        account: Option<&Caller>,
        upstream_out: &mut Option<std::sync::Arc<crate::upstream::Upstream>>,
    ) -> Result<Response<BoxBody>, GatewayError> {
        let methods = route.methods.as_ref().ok_or_else(|| {
            GatewayError::unavailable(format!(
                "the endpoints of service {} are not discovered yet",
                route.service
            ))
        })?;
        let method = methods.get(endpoint).cloned().ok_or_else(|| {
            GatewayError::not_found(format!("endpoint {endpoint} not found on service {}", route.service))
        })?;
        if method.is_client_streaming() {
            return Err(GatewayError::not_implemented(format!(
                "endpoint {endpoint} streams requests, which HTTP/JSON callers cannot"
            )));
        }
        let sse = accepts_event_stream(req.headers());
        // The body's share of the gateway's body budget is held until the call is done.
        let (input, _held) =
            decode::request_message(req, &method.input(), self.settings.max_body_bytes, &self.bodies).await?;
        let c = GrpcCall {
            route,
            tenant,
            account,
            method: &method,
            input,
            sse,
            deadline: Instant::now() + self.settings.request_timeout,
        };
        call::call(c, &self.metrics, upstream_out).await
    }
}
