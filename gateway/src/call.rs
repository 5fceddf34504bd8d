//! The gRPC call of phase 4 for `Grpc` services, with its retry policy: an endpoint is chosen per
//! attempt, and a call is sent again to another endpoint only when the transport says, by type
//! ([`NotSent`](crate::upstream::NotSent)), that it never reached a backend — at most
//! [`MAX_ATTEMPTS`] attempts, within the request's deadline. What a backend answered is never
//! retried, whatever its status code or message.

use std::time::Instant;

use http::header::HeaderMap;
use http::{Response, StatusCode};
use prost_reflect::{DynamicMessage, MethodDescriptor};

use crate::auth::{self, Caller};
use crate::body::BoxBody;
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::response::json_response;
use crate::snapshot::Route;
use crate::stream::stream_response;
use crate::transcode::{self, EncodedRequestCodec};
use crate::upstream;

/// Most endpoints one call tries.
const MAX_ATTEMPTS: usize = 3;

/// What to do after an attempt failed with a status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AfterFailure {
    /// The call never reached a backend: try another endpoint.
    TryElsewhere,
    /// The backend may have seen the call: its status is the answer.
    Answer,
}

/// The retry policy: only a call the transport marked [`NotSent`](crate::upstream::NotSent) goes
/// elsewhere.
pub(crate) fn after_failure(status: &tonic::Status) -> AfterFailure {
    if upstream::never_sent(status) {
        AfterFailure::TryElsewhere
    } else {
        AfterFailure::Answer
    }
}

/// One call of a `Grpc` service's method.
pub(crate) struct GrpcCall<'a> {
    /// The service.
    pub route: &'a Route,
    /// The tenant, for the identity headers.
    pub tenant: &'a str,
    /// The verified caller, for the identity headers.
    pub account: Option<&'a Caller>,
    /// The method.
    pub method: &'a MethodDescriptor,
    /// The request message.
    pub input: DynamicMessage,
    /// Server-sent events rather than NDJSON, for a server-streaming method.
    pub sse: bool,
    /// When the request times out (sent to the backend as `grpc-timeout`).
    pub deadline: Instant,
}

/// Calls the backend, choosing an endpoint per attempt; `upstream_out` is the endpoint of the last
/// attempt. Endpoints that never got the call are reported failed (ejected), as `metrics` counts.
pub(crate) async fn call(
    c: GrpcCall<'_>,
    metrics: &Metrics,
    upstream_out: &mut Option<std::sync::Arc<crate::upstream::Upstream>>,
) -> Result<Response<BoxBody>, GatewayError> {
    let GrpcCall {
        route,
        tenant,
        account,
        method,
        input,
        sse,
        deadline,
    } = c;
    let path = http::uri::PathAndQuery::try_from(format!("/{}/{}", method.parent_service().full_name(), method.name()))
        .map_err(|e| GatewayError::internal(format!("method path: {e}")))?;
    // Encoded once; the message (many times the size of its encoding) is dropped before the call,
    // and a retry sends the same bytes.
    let input = bytes::Bytes::from(prost::Message::encode_to_vec(&input));
    // The identity the gateway verified, set by the gateway alone.
    let mut identity = HeaderMap::new();
    auth::set_identity(&mut identity, tenant, account);
    let mut tried: Vec<String> = Vec::new();
    loop {
        let excluded: Vec<&str> = tried.iter().map(String::as_str).collect();
        let picked = route
            .endpoints
            .pick(&excluded)
            .ok_or_else(|| GatewayError::unavailable(format!("service {} has no ready endpoint", route.service)))?;
        let upstream = picked.upstream().clone();
        *upstream_out = Some(upstream.clone());
        // The channel is always ready (it connects in `call`): no `ready()` first.
        let mut grpc = tonic::client::Grpc::with_origin(upstream.grpc(), upstream.origin());
        let mut request = tonic::Request::new(input.clone());
        request.set_timeout(deadline.saturating_duration_since(Instant::now()));
        for (k, v) in &identity {
            if let (Ok(k), Ok(v)) = (
                tonic::metadata::MetadataKey::from_bytes(k.as_str().as_bytes()),
                tonic::metadata::MetadataValue::try_from(v.as_bytes()),
            ) {
                request.metadata_mut().insert(k, v);
            }
        }
        let codec = EncodedRequestCodec::new(method.output());
        let outcome = if method.is_server_streaming() {
            grpc.server_streaming(request, path.clone(), codec)
                .await
                .map(|r| stream_response(r.into_inner(), sse))
        } else {
            match grpc.unary(request, path.clone(), codec).await {
                Ok(r) => {
                    return transcode::response_to_json(&r.into_inner())
                        .map(|b| {
                            upstream.succeeded();
                            json_response(StatusCode::OK, b)
                        })
                        .map_err(GatewayError::from);
                }
                Err(e) => Err(e),
            }
        };
        let status = match outcome {
            Ok(resp) => {
                upstream.succeeded();
                return Ok(resp);
            }
            Err(status) => status,
        };
        match after_failure(&status) {
            AfterFailure::Answer => return Err(GatewayError::from_grpc_status(&status)),
            AfterFailure::TryElsewhere => {
                if upstream.failed() {
                    metrics.ejected();
                }
                tracing::debug!(upstream = %upstream.address, %status, "endpoint unreachable; trying another");
                tried.push(upstream.address.clone());
                if tried.len() >= MAX_ATTEMPTS || Instant::now() >= deadline {
                    return Err(GatewayError::unavailable(format!(
                        "service {}: no endpoint could be reached",
                        route.service
                    )));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::NotSent;

    #[test]
    fn only_a_call_not_sent_goes_elsewhere() {
        let not_sent = tonic::Status::from_error(Box::new(NotSent("connecting: tcp connect error".into())));
        assert_eq!(after_failure(&not_sent), AfterFailure::TryElsewhere);
    }

    #[test]
    fn what_a_backend_answered_is_never_retried_whatever_its_words() {
        // Statuses from the wire have no source: the backend's handler may have done the work.
        for status in [
            tonic::Status::unavailable("connecting: transport error"),
            tonic::Status::unavailable("error trying to connect: tcp connect error: Connection refused (os error 111)"),
            tonic::Status::unavailable("h2 protocol error: REFUSED_STREAM"),
            tonic::Status::unknown("refused stream"),
            tonic::Status::unknown("operation was canceled"),
            tonic::Status::unavailable("backend is overloaded"),
            tonic::Status::internal("tcp connect error"),
            tonic::Status::deadline_exceeded("connection refused"),
        ] {
            assert_eq!(after_failure(&status), AfterFailure::Answer, "{status:?}");
        }
    }

    #[test]
    fn transport_failures_after_sending_are_not_retried() {
        // A stream reset after the server took it, a connection lost mid-call, hyper's
        // cancellation: none is a `NotSent`, so the call may have reached the backend.
        for e in [
            Box::new(h2::Error::from(h2::Reason::INTERNAL_ERROR)) as crate::body::BoxError,
            Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
            Box::new(std::io::Error::other("operation was canceled")),
        ] {
            let status = tonic::Status::from_error(e);
            assert_eq!(after_failure(&status), AfterFailure::Answer, "{status:?}");
        }
    }
}
