//! Phase 2: authentication and authorization. Until per-tenant issuers and AuthRule enforcement
//! land (the auth work), this phase guarantees one thing: identity a client sends is never passed
//! on as if the gateway had verified it.

use http::HeaderMap;

pub mod rules;
pub mod token;

/// Headers (and gRPC metadata keys) that carry the verified caller to backends. The gateway removes
/// any a client sent; only the gateway sets them (see the SDK's `identity` module).
pub const IDENTITY_HEADERS: [&str; 3] = ["micro-account-id", "micro-account-type", "micro-account-scopes"];
/// Metadata key of the tenant the request was resolved to, set by the gateway.
pub const NAMESPACE: &str = "micro-namespace";

/// Removes client-sent identity headers.
pub fn strip_identity(headers: &mut HeaderMap) {
    for h in IDENTITY_HEADERS {
        headers.remove(h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_identity_is_removed() {
        let mut h = HeaderMap::new();
        h.insert("micro-account-id", "admin".parse().unwrap());
        h.append("Micro-Account-Scopes", "admin".parse().unwrap());
        h.insert("x-other", "1".parse().unwrap());
        strip_identity(&mut h);
        assert_eq!(h.len(), 1);
    }
}
