//! Phase 1: which tenant and which (service, endpoint) a request is for (docs/gateway.md).
//!
//! Pure functions over the request's path and headers; the routing snapshot decides afterwards whether
//! the names exist.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// A path resolved by Micro's `micro` resolver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The MicroService name, e.g. `helloworld` (or `v1.helloworld` for a versioned path).
    pub service: String,
    /// The endpoint, e.g. `Helloworld.Call`.
    pub endpoint: String,
}

/// Why a path cannot be resolved.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// `/` or a path that cleans to nothing names no service.
    #[error("no service in path")]
    Empty,
    /// A segment that is not valid percent-encoded UTF-8.
    #[error("path segment {0:?} is not valid UTF-8 once percent-decoded")]
    Encoding(String),
    /// A segment that decodes to `/`, `.` or `..` would change the route if it were taken literally.
    #[error("path segment {0:?} encodes a slash or a dot segment, which is not allowed")]
    Smuggled(String),
}

/// Cleans a raw (still percent-encoded) path like Go's `path.Clean`: drops empty and `.` segments,
/// applies `..`, never above the root. Then decodes every segment. A segment that decodes to
/// something containing `/`, or to `.` or `..`, is refused: encoded slashes and dots never change
/// which service is chosen.
pub fn clean_segments(raw_path: &str) -> Result<Vec<String>, PathError> {
    let mut parts: Vec<&str> = Vec::new();
    for seg in raw_path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts
        .into_iter()
        .map(|seg| {
            let decoded: Cow<'_, str> = percent_decode_str(seg)
                .decode_utf8()
                .map_err(|_| PathError::Encoding(seg.to_string()))?;
            if decoded.contains('/') || decoded == "." || decoded == ".." {
                return Err(PathError::Smuggled(seg.to_string()));
            }
            Ok(decoded.into_owned())
        })
        .collect()
}

/// `Camel` of docs/gateway.md: upper-cases the first letter of each `-`-separated word and drops the `-`;
/// the rest of each word keeps its case.
pub(crate) fn camel(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split('-') {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    out
}

fn is_version(s: &str) -> bool {
    s.len() > 1 && s.starts_with('v') && s[1..].bytes().all(|b| b.is_ascii_digit())
}

/// Micro's path → (service, endpoint) algorithm (docs/gateway.md) over cleaned, decoded segments.
pub(crate) fn resolve_segments(parts: &[String]) -> Result<Resolved, PathError> {
    let (service, endpoint) = match parts {
        [] => return Err(PathError::Empty),
        [p0] => (p0.clone(), format!("{}.Call", camel(p0))),
        [p0, p1] => (p0.clone(), format!("{}.{}", camel(p0), camel(p1))),
        [p0, p1, p2] if is_version(p0) => (format!("{p0}.{p1}"), format!("{}.{}", camel(p1), camel(p2))),
        [rest @ .., a, b] => (rest.join("."), format!("{}.{}", camel(a), camel(b))),
    };
    Ok(Resolved { service, endpoint })
}

/// Resolves a raw request path (no query).
pub fn resolve_path(raw_path: &str) -> Result<Resolved, PathError> {
    resolve_segments(&clean_segments(raw_path)?)
}

/// For `Http` services: the service is the first cleaned segment, and the backend gets the rest of
/// the path (`/<service>/<rest>` → `/<rest>`), still percent-encoded as the client sent it, with the
/// same dot-segment cleaning applied.
pub fn proxy_rest(raw_path: &str) -> Result<(String, String), PathError> {
    let mut parts: Vec<&str> = Vec::new();
    for seg in raw_path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let Some((first, rest)) = parts.split_first() else {
        return Err(PathError::Empty);
    };
    let service = clean_segments(first)?.pop().ok_or(PathError::Empty)?;
    let mut path = String::with_capacity(raw_path.len());
    for seg in rest {
        path.push('/');
        path.push_str(seg);
    }
    if path.is_empty() || (raw_path.ends_with('/') && !rest.is_empty()) {
        path.push('/');
    }
    Ok((service, path))
}

/// How a request names its tenant, before the snapshot says whether that tenant exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TenantSource<'a> {
    /// The `Micro-Namespace` header.
    Header(&'a str),
    /// A host listed in a tenant's `hosts`.
    Host(String),
    /// The gateway's default tenant.
    Default,
}

/// The request host without port, lower-cased; from `Host` (HTTP/1.1) or the URI authority (h2).
pub(crate) fn host_of(host_header: Option<&str>, authority: Option<&str>) -> Option<String> {
    let h = host_header.or(authority)?;
    let h = if let Some(stripped) = h.strip_prefix('[') {
        // [v6]:port
        stripped.split(']').next().unwrap_or("")
    } else {
        h.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(h, |(host, _)| host)
    };
    let h = h.trim_end_matches('.').to_ascii_lowercase();
    (!h.is_empty()).then_some(h)
}

/// Tenant resolution order of docs/gateway.md for what the request itself carries: the `Micro-Namespace`
/// header, then a host some tenant lists (`host_known`), else the default. (The token issuer step
/// belongs to the auth phase.)
pub(crate) fn tenant_source<'a>(
    header: Option<&'a str>,
    host: Option<String>,
    host_known: impl Fn(&str) -> bool,
) -> TenantSource<'a> {
    if let Some(h) = header.map(str::trim).filter(|h| !h.is_empty()) {
        return TenantSource::Header(h);
    }
    match host {
        Some(h) if host_known(&h) => TenantSource::Host(h),
        _ => TenantSource::Default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(path: &str) -> (String, String) {
        let res = resolve_path(path).unwrap();
        (res.service, res.endpoint)
    }

    #[test]
    fn micro_resolver_table() {
        let table: &[(&str, &str, &str)] = &[
            ("/helloworld", "helloworld", "Helloworld.Call"),
            ("/helloworld/call", "helloworld", "Helloworld.Call"),
            ("/helloworld/Call", "helloworld", "Helloworld.Call"),
            ("/helloworld/helloworld/call", "helloworld", "Helloworld.Call"),
            ("/foo/bar", "foo", "Foo.Bar"),
            ("/foo/bar/baz", "foo", "Bar.Baz"),
            ("/foo/bar/baz/qux", "foo.bar", "Baz.Qux"),
            ("/v1/foo/bar", "v1.foo", "Foo.Bar"),
            ("/v12/foo/bar", "v12.foo", "Foo.Bar"),
            ("/v1x/foo/bar", "v1x", "Foo.Bar"),
            ("/v/foo/bar", "v", "Foo.Bar"),
            ("/v1/foo", "v1", "V1.Foo"),
            ("/v1/foo/bar/baz", "v1.foo", "Bar.Baz"),
            ("/foo-bar/baz-xyz", "foo-bar", "FooBar.BazXyz"),
            ("/foo/fooBar", "foo", "Foo.FooBar"),
            ("/foo/foo_bar", "foo", "Foo.Foo_bar"),
            ("/Foo/bar", "Foo", "Foo.Bar"),
            ("/foo-/-bar", "foo-", "Foo.Bar"),
            // cleaning
            ("/helloworld/call/", "helloworld", "Helloworld.Call"),
            ("//helloworld//call", "helloworld", "Helloworld.Call"),
            ("/./helloworld/./call", "helloworld", "Helloworld.Call"),
            ("/x/../helloworld/call", "helloworld", "Helloworld.Call"),
            ("/../../helloworld/call", "helloworld", "Helloworld.Call"),
            ("/helloworld/call/..", "helloworld", "Helloworld.Call"),
            ("helloworld/call", "helloworld", "Helloworld.Call"),
            // percent-encoding is decoded per segment
            ("/hello%77orld/call", "helloworld", "Helloworld.Call"),
        ];
        for (path, service, endpoint) in table {
            assert_eq!(r(path), (service.to_string(), endpoint.to_string()), "{path}");
        }
    }

    #[test]
    fn empty_paths_name_no_service() {
        for p in ["", "/", "//", "/.", "/..", "/a/.."] {
            assert_eq!(resolve_path(p), Err(PathError::Empty), "{p}");
        }
    }

    #[test]
    fn encoded_slashes_and_dots_never_move_the_route() {
        for p in [
            "/helloworld%2Fcall",
            "/helloworld%2fcall",
            "/other/%2E%2E/helloworld/call",
            "/other/%2e%2e/helloworld/call",
            "/other/.%2E/helloworld/call",
            "/%2e/helloworld",
        ] {
            assert!(matches!(resolve_path(p), Err(PathError::Smuggled(_))), "{p}");
        }
        assert!(matches!(resolve_path("/hello%ffworld"), Err(PathError::Encoding(_))));
    }

    #[test]
    fn endpoint_parts() {
        let res = resolve_path("/helloworld/call").unwrap();
        assert_eq!(res.endpoint, "Helloworld.Call");
    }

    #[test]
    fn camel_cases() {
        assert_eq!(camel("call"), "Call");
        assert_eq!(camel("baz-xyz"), "BazXyz");
        assert_eq!(camel("fooBar"), "FooBar");
        assert_eq!(camel("a--b"), "AB");
        assert_eq!(camel("ünï"), "Ünï");
        assert_eq!(camel(""), "");
    }

    #[test]
    fn proxy_paths() {
        let p = |s| proxy_rest(s).unwrap();
        assert_eq!(p("/web"), ("web".into(), "/".into()));
        assert_eq!(p("/web/"), ("web".into(), "/".into()));
        assert_eq!(p("/web/a/b"), ("web".into(), "/a/b".into()));
        assert_eq!(p("/web/a/b/"), ("web".into(), "/a/b/".into()));
        assert_eq!(p("/web/a/../b"), ("web".into(), "/b".into()));
        assert_eq!(p("/web/a%2Fb"), ("web".into(), "/a%2Fb".into()));
        assert_eq!(p("//web//x"), ("web".into(), "/x".into()));
        assert_eq!(proxy_rest("/"), Err(PathError::Empty));
        assert!(matches!(proxy_rest("/we%2Fb/x"), Err(PathError::Smuggled(_))));
        // `..` can never climb out of the service prefix into another service
        assert_eq!(p("/web/../other/x"), ("other".into(), "/x".into()));
    }

    #[test]
    fn hosts() {
        assert_eq!(
            host_of(Some("Api.Example.com:8080"), None),
            Some("api.example.com".into())
        );
        assert_eq!(host_of(Some("example.com."), None), Some("example.com".into()));
        assert_eq!(host_of(None, Some("h2.example.com")), Some("h2.example.com".into()));
        assert_eq!(host_of(Some("[::1]:80"), None), Some("::1".into()));
        assert_eq!(host_of(Some(""), None), None);
        assert_eq!(host_of(None, None), None);
    }

    #[test]
    fn tenant_order() {
        let known = |h: &str| h == "acme.example.com";
        assert_eq!(
            tenant_source(Some("acme"), Some("other.example.com".into()), known),
            TenantSource::Header("acme")
        );
        assert_eq!(
            tenant_source(Some("  "), Some("acme.example.com".into()), known),
            TenantSource::Host("acme.example.com".into())
        );
        assert_eq!(
            tenant_source(None, Some("acme.example.com".into()), known),
            TenantSource::Host("acme.example.com".into())
        );
        assert_eq!(
            tenant_source(None, Some("localhost".into()), known),
            TenantSource::Default
        );
        assert_eq!(tenant_source(None, None, known), TenantSource::Default);
    }
}
