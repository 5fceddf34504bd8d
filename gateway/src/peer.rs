//! The client end of a downstream connection: its address, whether it is a trusted proxy, and the
//! client IP a request comes from (docs/gateway.md, "Headers").

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The client end of a downstream connection, made once per connection.
#[derive(Debug)]
pub struct Peer {
    /// Its address.
    pub addr: SocketAddr,
    /// Its IP as an `X-Forwarded-For` element.
    pub forwarded_for: Option<HeaderValue>,
    /// Whether it is a proxy whose forwarding headers are believed.
    pub trusted: bool,
}

impl Peer {
    /// The peer at `addr`, trusted when one of `trusted_proxies` holds its address.
    pub fn new(addr: SocketAddr, trusted_proxies: &[ipnet::IpNet]) -> Self {
        let ip = addr.ip().to_canonical();
        Self {
            addr,
            forwarded_for: HeaderValue::from_str(&ip.to_string()).ok(),
            trusted: trusted_proxies.iter().any(|net| net.contains(&ip)),
        }
    }

    /// The client's IP for a request with `headers`: this peer, or, when it is a trusted proxy, the
    /// last address its `X-Forwarded-For` names (the one the proxy saw).
    pub fn client_ip(&self, headers: &HeaderMap) -> IpAddr {
        let peer_ip = self.addr.ip().to_canonical();
        if !self.trusted {
            return peer_ip;
        }
        headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse::<IpAddr>().ok())
            .next_back()
            .map_or(peer_ip, |ip| ip.to_canonical())
    }
}
