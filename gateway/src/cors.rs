//! CORS for browser callers (docs/gateway.md#cors): a safe default, or a tenant's own policy.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use crate::body::{BoxBody, empty_body};
use crate::snapshot::Cors;

/// Micro's allowed request headers.
pub(crate) const DEFAULT_HEADERS: &str =
    "Accept, Content-Type, Content-Length, Accept-Encoding, X-CSRF-Token, Authorization, Micro-Namespace";
/// Micro's allowed methods.
pub(crate) const DEFAULT_METHODS: &str = "POST, PATCH, GET, OPTIONS, PUT, DELETE";

/// The answer to a preflight request (`OPTIONS` with `Origin`); [`apply`] adds the headers.
pub(crate) fn preflight() -> Response<BoxBody> {
    let mut r = Response::new(empty_body());
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

/// Adds the CORS headers for `origin` to a response. Without a tenant policy: any origin may call,
/// but never with the browser's credentials (Micro echoed the origin with credentials allowed, which
/// lets any site act with a signed-in user's `micro-token` cookie). With one: only an origin it
/// lists (or `*`) gets headers, and its non-empty header and method lists replace the defaults;
/// credentials are allowed only for an origin it lists by name, never through `*`.
pub(crate) fn apply(headers: &mut HeaderMap, origin: &HeaderValue, policy: Option<&Cors>) {
    let (allowed, methods, allow_headers, credentials) = match policy {
        None => (true, DEFAULT_METHODS.to_string(), DEFAULT_HEADERS.to_string(), false),
        Some(p) => {
            let o = origin.to_str().unwrap_or("");
            let named = p.allowed_origins.iter().any(|a| a != "*" && a.eq_ignore_ascii_case(o));
            let allowed = named || p.allowed_origins.iter().any(|a| a == "*");
            let methods = if p.allowed_methods.is_empty() {
                DEFAULT_METHODS.to_string()
            } else {
                p.allowed_methods.join(", ")
            };
            let hdrs = if p.allowed_headers.is_empty() {
                DEFAULT_HEADERS.to_string()
            } else {
                p.allowed_headers.join(", ")
            };
            (allowed, methods, hdrs, p.allow_credentials && named)
        }
    };
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    if !allowed {
        return;
    }
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    if let Ok(v) = HeaderValue::from_str(&methods) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
    }
    if let Ok(v) = HeaderValue::from_str(&allow_headers) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    if credentials {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_lets_any_origin_call_without_credentials() {
        let mut h = HeaderMap::new();
        apply(&mut h, &HeaderValue::from_static("https://app.example"), None);
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example");
        assert!(
            !h.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS),
            "any site could act with a signed-in user's cookie"
        );
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_METHODS], DEFAULT_METHODS);
        assert!(
            h[header::ACCESS_CONTROL_ALLOW_HEADERS]
                .to_str()
                .unwrap()
                .contains("Micro-Namespace")
        );
    }

    #[test]
    fn tenant_policy_limits_origins() {
        let p = Cors {
            allowed_origins: vec!["https://acme.dev".into()],
            allowed_headers: vec!["Content-Type".into()],
            allowed_methods: vec!["GET".into(), "POST".into()],
            allow_credentials: false,
        };
        let mut h = HeaderMap::new();
        apply(&mut h, &HeaderValue::from_static("https://evil.example"), Some(&p));
        assert!(!h.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        assert_eq!(h[header::VARY], "Origin");
        let mut h = HeaderMap::new();
        apply(&mut h, &HeaderValue::from_static("https://ACME.dev"), Some(&p));
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://ACME.dev");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_METHODS], "GET, POST");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_HEADERS], "Content-Type");
        assert!(!h.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
        let star = Cors {
            allowed_origins: vec!["*".into()],
            ..Default::default()
        };
        let mut h = HeaderMap::new();
        apply(&mut h, &HeaderValue::from_static("https://any.example"), Some(&star));
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://any.example");
    }

    #[test]
    fn credentials_only_for_origins_listed_by_name() {
        let p = Cors {
            allowed_origins: vec!["*".into(), "https://acme.dev".into()],
            allow_credentials: true,
            ..Default::default()
        };
        let mut h = HeaderMap::new();
        apply(&mut h, &HeaderValue::from_static("https://acme.dev"), Some(&p));
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        let mut h = HeaderMap::new();
        apply(&mut h, &HeaderValue::from_static("https://evil.example"), Some(&p));
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://evil.example");
        assert!(
            !h.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS),
            "`*` never reflects an origin with credentials"
        );
    }
}
