//! Phase 4 for `Http` services: `/<service>/<rest>` → the backend's `/<rest>`, query kept, hop-by-hop
//! headers handled, websockets upgraded (docs/gateway.md).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::auth::{self, Caller};
use crate::body::{BoxBody, empty_body};
use crate::error::GatewayError;
use crate::peer::Peer;
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
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Who the backend is told is calling, set by the gateway alone.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Identity<'a> {
    /// The tenant the request was resolved to.
    pub tenant: &'a str,
    /// The verified account, if any (possibly foreign).
    pub account: Option<&'a Caller>,
    /// Whether the request's credentials are an account of the backend's own tenant; otherwise
    /// they never reach the backend.
    pub own_credentials: bool,
}

/// What bounds one proxied request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Largest request body forwarded (→ 413).
    pub max_body_bytes: usize,
    /// A websocket tunnel with no traffic either way for this long is closed.
    pub tunnel_idle_timeout: std::time::Duration,
}

fn too_large(limit: usize) -> GatewayError {
    GatewayError::payload_too_large(format!("the request body is larger than {limit} bytes"))
}

/// Whether a failed backend request failed because its body went over the limit.
fn body_over_limit(e: &hyper::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Copies both ways between `a` and `b` until either side closes, or neither sends anything for
/// `idle` (an error then).
async fn tunnel<A, B>(a: &mut A, b: &mut B, idle: std::time::Duration) -> std::io::Result<()>
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let (mut up, mut down) = (vec![0u8; 16 << 10], vec![0u8; 16 << 10]);
    let (mut a_open, mut b_open) = (true, true);
    while a_open || b_open {
        tokio::select! {
            n = ar.read(&mut up), if a_open => match n? {
                0 => { a_open = false; bw.shutdown().await?; }
                n => bw.write_all(&up[..n]).await?,
            },
            n = br.read(&mut down), if b_open => match n? {
                0 => { b_open = false; aw.shutdown().await?; }
                n => aw.write_all(&down[..n]).await?,
            },
            () = tokio::time::sleep(idle) => {
                return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "tunnel idle"));
            }
        }
    }
    Ok(())
}

/// Makes a client's request headers safe to forward, in this order: hop-by-hop headers go (and
/// those `Connection` names); every `Micro-*` header a client sent goes (the gateway sets its own
/// afterwards, so a `Connection` header cannot remove them); credentials of another tenant go;
/// the forwarding headers are believed only from a trusted proxy, else replaced by what the
/// gateway saw (docs/gateway.md, "Headers").
pub(crate) fn prepare_headers(headers: &mut HeaderMap, upgrade: bool, peer: &Peer, identity: Identity<'_>) {
    let original_host = headers.remove(header::HOST);
    strip_hop_by_hop(headers, upgrade);
    // Most requests carry none: look before collecting.
    let is_micro = |k: &HeaderName| k.as_str().starts_with("micro-");
    if headers.keys().any(is_micro) {
        let micro: Vec<HeaderName> = headers.keys().filter(|k| is_micro(k)).cloned().collect();
        for k in micro {
            headers.remove(k);
        }
    }
    if !identity.own_credentials {
        auth::strip_credentials(headers);
    }
    auth::set_identity(headers, identity.tenant, identity.account);

    if !peer.trusted {
        for h in [
            &X_FORWARDED_FOR,
            &X_FORWARDED_PROTO,
            &X_FORWARDED_HOST,
            &header::FORWARDED,
            &X_REAL_IP,
        ] {
            headers.remove(h);
        }
    }
    if let Some(ip) = &peer.forwarded_for {
        let xff = match headers.get(X_FORWARDED_FOR).map(HeaderValue::as_bytes) {
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
            headers.insert(X_FORWARDED_FOR, v);
        }
        if !headers.contains_key(&X_REAL_IP) {
            headers.insert(X_REAL_IP, ip.clone());
        }
    }
    if let Some(h) = original_host
        && !headers.contains_key(&X_FORWARDED_HOST)
    {
        headers.insert(X_FORWARDED_HOST, h);
    }
    let proto_ok = headers
        .get(&X_FORWARDED_PROTO)
        .is_some_and(|p| p == "https" || p == "http");
    if !proto_ok {
        // The gateway's own listener speaks cleartext HTTP (TLS ends in front of it).
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
}

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

/// Forwards `req` to one endpoint of `route` over a kept-alive HTTP/1.1 connection of that
/// endpoint's pool. A request is sent again only when it never reached a backend: no connection
/// could be made to the endpoint (another one is tried), or a pooled connection closed before the
/// request was written (a fresh connection is tried).
pub(crate) async fn forward(
    route: &Route,
    rest: &str,
    mut req: Request<Incoming>,
    peer: &Peer,
    identity: Identity<'_>,
    limits: Limits,
    upstream_out: &mut Option<std::sync::Arc<crate::upstream::Upstream>>,
) -> Result<Response<BoxBody>, GatewayError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return Err(too_large(limits.max_body_bytes));
    }
    let upgrade = is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let path = match parts.uri.query() {
        Some(q) => PathAndQuery::try_from(format!("{rest}?{q}")),
        None => PathAndQuery::try_from(rest),
    }
    .map_err(|_| GatewayError::bad_request(format!("cannot forward to path {rest}")))?;
    prepare_headers(&mut parts.headers, upgrade, peer, identity);
    // A body without a declared length is cut off at the limit: the backend's request fails and the
    // client gets 413.
    let limited = http_body_util::Limited::new(body, limits.max_body_bytes);
    let mut out = Request::new(limited.boxed_unsync());
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
        *upstream_out = Some(upstream.clone());
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
                    let idle = limits.tunnel_idle_timeout;
                    tokio::spawn(async move {
                        if let (Ok(c), Ok(b)) = (client_side.await, backend_side.await) {
                            let mut c = TokioIo::new(c);
                            let mut b = TokioIo::new(b);
                            if let Err(e) = tunnel(&mut c, &mut b, idle).await {
                                tracing::debug!(error = %e, "websocket tunnel ended");
                            }
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
                _ if body_over_limit(e.error()) => return Err(too_large(limits.max_body_bytes)),
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

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    fn caller(tenant: &str) -> Caller {
        Caller {
            verified: crate::auth::token::Verified {
                account_id: "alice".into(),
                account_type: "user".into(),
                scopes: vec!["admin".into()],
                tenant: tenant.into(),
                issuer: format!("https://{tenant}"),
                expires_at: 0,
                token_use: "access".into(),
                audiences: vec![],
            },
            issuer_tenant: tenant.into(),
        }
    }

    /// Issue 20, item 9: what a client sends cannot remove or forge what the gateway tells the
    /// backend.
    #[test]
    fn clients_cannot_remove_or_forge_what_the_gateway_sets() {
        let peer = Peer::new("203.0.113.7:5000".parse().unwrap(), &[]);
        let account = caller("micro");
        let identity = Identity {
            tenant: "micro",
            account: Some(&account),
            own_credentials: true,
        };
        let mut h = headers(&[
            ("host", "api.micro.localhost"),
            (
                "connection",
                "micro-account-id, micro-namespace, micro-account-namespace, x-forwarded-for",
            ),
            ("micro-account-id", "forged"),
            ("micro-namespace", "beta"),
            ("micro-endpoint", "Admin.Delete"),
            ("forwarded", "for=10.0.0.1;proto=https"),
            ("x-real-ip", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "admin.internal"),
            ("authorization", "Bearer own-token"),
        ]);
        prepare_headers(&mut h, false, &peer, identity);
        assert_eq!(h["micro-account-id"], "alice");
        assert_eq!(h["micro-namespace"], "micro");
        assert_eq!(h["micro-account-namespace"], "micro");
        assert!(
            !h.contains_key("micro-endpoint"),
            "other Micro-* headers of a client go"
        );
        assert!(!h.contains_key("forwarded"));
        assert_eq!(h["x-real-ip"], "203.0.113.7");
        assert_eq!(h["x-forwarded-for"], "203.0.113.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "api.micro.localhost");
        assert_eq!(
            h["authorization"], "Bearer own-token",
            "the tenant's own token reaches its backend"
        );
    }

    #[test]
    fn the_client_ip_comes_from_a_trusted_proxy_only() {
        let h = headers(&[("x-forwarded-for", "198.51.100.1, 203.0.113.5")]);
        let direct = Peer::new("192.0.2.7:1000".parse().unwrap(), &[]);
        assert_eq!(direct.client_ip(&h).to_string(), "192.0.2.7");
        let lb = Peer::new("10.0.0.2:1000".parse().unwrap(), &["10.0.0.0/8".parse().unwrap()]);
        assert_eq!(lb.client_ip(&h).to_string(), "203.0.113.5");
        assert_eq!(lb.client_ip(&HeaderMap::new()).to_string(), "10.0.0.2");
    }

    #[test]
    fn a_trusted_proxy_is_believed() {
        let nets = ["10.0.0.0/8".parse().unwrap()];
        let lb = Peer::new("10.1.2.3:5000".parse().unwrap(), &nets);
        assert!(lb.trusted);
        let mapped = Peer::new("[::ffff:10.1.2.3]:5000".parse().unwrap(), &nets);
        assert!(mapped.trusted, "an IPv4-mapped address is its IPv4 address");
        let identity = Identity {
            tenant: "micro",
            account: None,
            own_credentials: false,
        };
        let mut h = headers(&[
            ("x-forwarded-for", "198.51.100.9"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "api.example.com"),
            ("x-real-ip", "198.51.100.9"),
        ]);
        prepare_headers(&mut h, false, &lb, identity);
        assert_eq!(h["x-forwarded-for"], "198.51.100.9, 10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
        assert_eq!(h["x-real-ip"], "198.51.100.9");
    }

    /// Issue 20: another tenant's token (a foreign account, or no valid account) never reaches the
    /// backend; the identity the rules admitted does, with the tenant that issued it.
    #[test]
    fn another_tenants_credentials_stay_at_the_gateway() {
        let peer = Peer::new("127.0.0.1:1".parse().unwrap(), &[]);
        let foreign = caller("beta");
        let mut h = headers(&[
            ("authorization", "Bearer beta-token"),
            ("cookie", "micro-token=beta-token; theme=dark"),
        ]);
        let identity = Identity {
            tenant: "micro",
            account: Some(&foreign),
            own_credentials: false,
        };
        prepare_headers(&mut h, false, &peer, identity);
        assert!(!h.contains_key("authorization"));
        assert_eq!(h["cookie"], "theme=dark");
        assert_eq!(h["micro-account-namespace"], "beta");
        assert_eq!(h["micro-namespace"], "micro");
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
