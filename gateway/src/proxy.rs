//! Phase 4 for `Http` services: `/<service>/<rest>` → the backend's `/<rest>`, query kept, hop-by-hop
//! headers handled, websockets upgraded (docs/gateway.md).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::body::{BoxBody, empty_body};
use crate::error::GatewayError;
use crate::snapshot::Route;
use crate::upstream::{Picked, PooledBody};

/// Most endpoints one request tries when it cannot connect, and most fresh connections it tries
/// when they close before taking the request. (Idle connections found closed do not count: the
/// pool is finite.)
const MAX_ATTEMPTS: usize = 3;

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1), `Connection` first and
/// `Upgrade` (kept on upgrades) last.
const HOP_BY_HOP_COUNT: usize = 9;
const HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::TRAILER,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Whether the request asks to switch to websockets.
pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
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
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the (few) headers notes which hop-by-hop ones are present; most messages carry
    // only `Connection` (naming `keep-alive` or `close`), so only what is there is removed.
    let mut present = [false; HOP_BY_HOP_COUNT];
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present[i] = true;
        }
    }
    if present[0] {
        // Headers the `Connection` header names are hop-by-hop too. Its usual tokens (`close`,
        // `keep-alive`, `upgrade`) are handled below without making a header name of them.
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| {
                !["close", "keep-alive", "upgrade", ""]
                    .iter()
                    .any(|k| t.eq_ignore_ascii_case(k))
            })
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for h in &named {
            headers.remove(h);
        }
    }
    for (h, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, there)| *there) {
        if !(keep_upgrade && h == header::UPGRADE) {
            headers.remove(h);
        }
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// The `X-Forwarded-For` value of a client at `ip`: made once per downstream connection.
pub(crate) fn forwarded_for(ip: std::net::IpAddr) -> Option<HeaderValue> {
    HeaderValue::from_str(&ip.to_string()).ok()
}

/// Forwards `req` to one endpoint of `route` over a kept-alive HTTP/1.1 connection of that
/// endpoint's pool. A request is sent again only when it never reached a backend: no connection
/// could be made to the endpoint (another one is tried), or a pooled connection closed before the
/// request was written (a fresh connection is tried).
pub(crate) async fn forward(
    route: &Route,
    rest: &str,
    mut req: Request<Incoming>,
    client_ip: Option<&HeaderValue>,
    upstream_out: &mut Option<String>,
) -> Result<Response<BoxBody>, GatewayError> {
    let upgrade = is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let path = match parts.uri.query() {
        Some(q) => PathAndQuery::try_from(format!("{rest}?{q}")),
        None => PathAndQuery::try_from(rest),
    }
    .map_err(|_| GatewayError::bad_request(format!("cannot forward to path {rest}")))?;
    let original_host = parts.headers.remove(header::HOST);
    strip_hop_by_hop(&mut parts.headers, upgrade);
    if let Some(ip) = client_ip {
        let xff = match parts.headers.get(X_FORWARDED_FOR).map(HeaderValue::as_bytes) {
            Some(prev) => {
                let mut v = Vec::with_capacity(prev.len() + 2 + ip.len());
                v.extend_from_slice(prev);
                v.extend_from_slice(b", ");
                v.extend_from_slice(ip.as_bytes());
                HeaderValue::from_bytes(&v).ok()
            }
            None => Some(ip.clone()),
        };
        if let Some(v) = xff {
            parts.headers.insert(X_FORWARDED_FOR, v);
        }
    }
    if let Some(h) = original_host {
        parts.headers.insert(X_FORWARDED_HOST, h);
    }
    parts
        .headers
        .insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    let mut out = Request::new(body.map_err(Into::into).boxed_unsync());
    *out.method_mut() = parts.method;
    *out.uri_mut() = Uri::from(path);
    *out.headers_mut() = parts.headers;

    let mut tried: Vec<String> = Vec::new();
    let mut fresh_failures = 0;
    let mut picked: Option<Picked> = None;
    loop {
        // An endpoint: the same one again after a pooled connection turned out closed.
        let current = match picked.take() {
            Some(p) => p,
            None => {
                let excluded: Vec<&str> = tried.iter().map(String::as_str).collect();
                route.endpoints.pick(&excluded).ok_or_else(|| {
                    GatewayError::unavailable(format!("service {} has no ready endpoint", route.service))
                })?
            }
        };
        let upstream = current.upstream().clone();
        *upstream_out = Some(upstream.address.clone());
        let pooled = upstream.h1.take();
        let reused = pooled.is_some();
        let mut tx = match pooled {
            Some(tx) => tx,
            None => match upstream.connect_h1().await {
                Ok(tx) => tx,
                Err(e) => {
                    tracing::debug!(error = %e, upstream = %upstream.address, "cannot connect to the endpoint");
                    upstream.failed();
                    tried.push(upstream.address.clone());
                    if tried.len() >= MAX_ATTEMPTS {
                        return Err(GatewayError::unavailable(format!(
                            "service {}: cannot connect to an endpoint",
                            route.service
                        )));
                    }
                    continue;
                }
            },
        };
        if tx.ready().await.is_err() {
            // Closed while idle (the backend's keep-alive timeout): nothing was sent. The next idle
            // one, or a fresh connection; fresh ones that close at once count against the limit.
            if !reused {
                fresh_failures += 1;
                if fresh_failures >= MAX_ATTEMPTS {
                    return Err(GatewayError::bad_gateway(format!(
                        "service {}: the backend keeps closing connections",
                        route.service
                    )));
                }
            }
            picked = Some(current);
            continue;
        }
        out.headers_mut().insert(header::HOST, upstream.host_header());
        match tx.try_send_request(out).await {
            Ok(mut resp) => {
                upstream.succeeded();
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
                let body = PooledBody::new(
                    rb,
                    (rp.status != StatusCode::SWITCHING_PROTOCOLS).then(|| (tx, upstream.h1.clone())),
                );
                return Ok(Response::from_parts(rp, body.boxed_unsync()));
            }
            Err(mut e) => match e.take_message() {
                // Never written: the connection closed first. Again, on another one.
                Some(again) if reused || fresh_failures + 1 < MAX_ATTEMPTS => {
                    tracing::debug!(error = %e.error(), upstream = %upstream.address, "connection closed before the request was sent; sending on another");
                    if !reused {
                        fresh_failures += 1;
                    }
                    out = again;
                    picked = Some(current);
                }
                _ => {
                    tracing::debug!(error = %e.error(), upstream = %upstream.address, "backend request failed");
                    return Err(GatewayError::bad_gateway(format!(
                        "service {}: the backend closed the request",
                        route.service
                    )));
                }
            },
        }
    }
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
    fn every_hop_by_hop_header_goes_and_only_those() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("close"));
        h.append(header::CONNECTION, HeaderValue::from_static(" X-Other ,, Upgrade"));
        h.insert("x-other", HeaderValue::from_static("1"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert(header::PROXY_AUTHORIZATION, HeaderValue::from_static("Basic x"));
        h.insert(header::PROXY_AUTHENTICATE, HeaderValue::from_static("Basic"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::TRAILER, HeaderValue::from_static("x-checksum"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        h.insert("x-close", HeaderValue::from_static("kept: only named tokens go"));
        strip_hop_by_hop(&mut h, false);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-close"]);

        // Nothing hop-by-hop: nothing changes.
        let mut plain = HeaderMap::new();
        plain.insert(header::CONTENT_LENGTH, HeaderValue::from_static("2"));
        plain.insert(header::DATE, HeaderValue::from_static("now"));
        let before = plain.clone();
        strip_hop_by_hop(&mut plain, false);
        assert_eq!(plain, before);
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
}
