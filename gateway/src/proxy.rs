//! Phase 3 for `Http` services: `/<service>/<rest>` → the backend's `/<rest>`, query kept, hop-by-hop
//! headers handled, websockets upgraded (SPEC §6).

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::balance::Picked;
use crate::error::GatewayError;
use crate::server::{BoxBody, empty_body};
use crate::snapshot::Route;

/// The pooled HTTP/1.1 client used for `Http` backends.
pub type HttpClient = Client<HttpConnector, BoxBody>;

/// A client with connection pooling and a short connect timeout.
pub fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(1)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .build(connector)
}

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
];

/// Whether the request asks to switch to websockets.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    let conn_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    conn_upgrade && headers.contains_key(header::UPGRADE)
}

/// Removes hop-by-hop headers, including those the `Connection` header names; keeps the upgrade
/// pair when `keep_upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for h in named.iter().chain(HOP_BY_HOP.iter()) {
        if !(keep_upgrade && h == header::UPGRADE) {
            headers.remove(h);
        }
    }
    headers.remove(header::TRAILER);
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// Forwards `req` to one endpoint of `route`. Only a request without a body is sent again to another
/// endpoint, and only when the first could not be connected to (it never reached a backend).
pub async fn forward(
    client: &HttpClient,
    route: &Route,
    rest: &str,
    mut req: Request<Incoming>,
    client_addr: Option<std::net::IpAddr>,
    upstream_out: &mut Option<String>,
) -> Result<Response<BoxBody>, GatewayError> {
    let upgrade = is_upgrade(req.headers());
    let query = req.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let original_host = parts.headers.get(header::HOST).cloned();
    strip_hop_by_hop(&mut parts.headers, upgrade);
    if let Some(ip) = client_addr {
        let xff = match parts.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prev) => format!("{prev}, {ip}"),
            None => ip.to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&xff) {
            parts.headers.insert("x-forwarded-for", v);
        }
    }
    if let Some(h) = original_host {
        parts.headers.insert("x-forwarded-host", h);
    }
    parts
        .headers
        .insert("x-forwarded-proto", HeaderValue::from_static("http"));
    let bodyless = body_is_empty(&parts.headers, &parts.method);
    let mut body = Some(body.map_err(Into::into).boxed_unsync());
    let mut tried: Vec<String> = Vec::new();

    loop {
        let excluded: Vec<&str> = tried.iter().map(String::as_str).collect();
        let picked: Picked = route
            .endpoints
            .pick(&excluded)
            .ok_or_else(|| GatewayError::unavailable(format!("service {} has no ready endpoint", route.service)))?;
        let addr = picked.upstream().address.clone();
        *upstream_out = Some(addr.clone());
        let uri: Uri = format!("http://{addr}{rest}{query}")
            .parse()
            .map_err(|_| GatewayError::bad_request(format!("cannot forward to path {rest}")))?;
        let mut out = Request::builder().method(parts.method.clone()).uri(uri);
        if let Some(h) = out.headers_mut() {
            *h = parts.headers.clone();
            h.remove(header::HOST);
        }
        let this_body = match body.take() {
            Some(b) => b,
            None => empty_body(),
        };
        let out = out
            .body(this_body)
            .map_err(|e| GatewayError::internal(format!("building the backend request: {e}")))?;
        match client.request(out).await {
            Ok(mut resp) => {
                picked.upstream().succeeded();
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS
                    && let Some(client_side) = client_upgrade
                {
                    let backend_side = hyper::upgrade::on(&mut resp);
                    tokio::spawn(async move {
                        if let (Ok(c), Ok(b)) = (client_side.await, backend_side.await) {
                            let mut c = TokioIo::new(c);
                            let mut b = TokioIo::new(b);
                            let _ = tokio::io::copy_bidirectional(&mut c, &mut b).await;
                        }
                    });
                    let (mut rp, _) = resp.into_parts();
                    rp.headers
                        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                    return Ok(Response::from_parts(rp, empty_body()));
                }
                let (mut rp, rb) = resp.into_parts();
                strip_hop_by_hop(&mut rp.headers, false);
                return Ok(Response::from_parts(rp, rb.map_err(Into::into).boxed_unsync()));
            }
            Err(e) if e.is_connect() => {
                picked.upstream().failed();
                tried.push(addr);
                if !bodyless || tried.len() >= 3 {
                    return Err(GatewayError::unavailable(format!(
                        "service {}: cannot connect to an endpoint",
                        route.service
                    )));
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, upstream = %addr, "backend request failed");
                return Err(GatewayError::bad_gateway(format!(
                    "service {}: the backend closed the request",
                    route.service
                )));
            }
        }
    }
}

fn body_is_empty(headers: &HeaderMap, method: &http::Method) -> bool {
    let len_zero = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "0");
    let no_len = !headers.contains_key(header::CONTENT_LENGTH) && !headers.contains_key(header::TRANSFER_ENCODING);
    len_zero || (no_len && matches!(*method, http::Method::GET | http::Method::HEAD | http::Method::OPTIONS))
}

/// A response body from bytes.
pub fn full(b: impl Into<Bytes>) -> BoxBody {
    http_body_util::Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret-hop"));
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn upgrades_keep_their_pair() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get(header::UPGRADE).unwrap(), "websocket");
        assert_eq!(h.get(header::CONNECTION).unwrap(), "upgrade");
        let mut plain = HeaderMap::new();
        plain.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(!is_upgrade(&plain));
    }

    #[test]
    fn only_bodyless_requests_are_retryable() {
        let mut h = HeaderMap::new();
        assert!(body_is_empty(&h, &http::Method::GET));
        assert!(!body_is_empty(&h, &http::Method::POST));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        assert!(body_is_empty(&h, &http::Method::POST));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
        assert!(!body_is_empty(&h, &http::Method::GET));
    }
}
