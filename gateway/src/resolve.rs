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
    /// A segment that servers read in different ways once decoded (docs/gateway.md, "Paths"): the
    /// gateway would authorize one path and the backend act on another.
    #[error("path segment {segment:?} is ambiguous: it holds {what}")]
    Ambiguous {
        /// The segment as the client sent it.
        segment: String,
        /// What makes it ambiguous.
        what: &'static str,
    },
}

/// The raw segments of a path after Go's `path.Clean`: empty and `.` segments dropped, `..` applied,
/// never above the root.
fn raw_segments(raw_path: &str) -> Vec<&str> {
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
}

/// One raw segment, percent-decoded; refused when it is ambiguous: `;` parameters or a `\` as sent,
/// or, once decoded, a `/`, a `\`, a control character, or a `.`/`..` segment.
fn decode_segment(seg: &str) -> Result<String, PathError> {
    let ambiguous = |what| PathError::Ambiguous {
        segment: seg.to_string(),
        what,
    };
    if seg.contains('\\') {
        return Err(ambiguous("a backslash"));
    }
    let decoded: Cow<'_, str> = percent_decode_str(seg)
        .decode_utf8()
        .map_err(|_| PathError::Encoding(seg.to_string()))?;
    if decoded.contains('/') {
        return Err(ambiguous("an encoded slash"));
    }
    if decoded.contains('\\') {
        return Err(ambiguous("an encoded backslash"));
    }
    // Sent or encoded alike (decoding keeps a `;` that was sent).
    if decoded.contains(';') {
        return Err(ambiguous("`;` parameters"));
    }
    if decoded == "." || decoded == ".." {
        return Err(ambiguous("an encoded dot segment"));
    }
    if decoded.chars().any(char::is_control) {
        return Err(ambiguous("a control character"));
    }
    Ok(decoded.into_owned())
}

/// Cleans a raw (still percent-encoded) path like Go's `path.Clean` (drops empty and `.` segments,
/// applies `..`, never above the root), then decodes every segment. An ambiguous segment (see
/// [`PathError::Ambiguous`]) is refused: what the gateway decides on is what a backend reads.
pub fn clean_segments(raw_path: &str) -> Result<Vec<String>, PathError> {
    raw_segments(raw_path).into_iter().map(decode_segment).collect()
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

/// What a path sent to an `Http` service comes to (docs/gateway.md, "Paths").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyPath {
    /// The service: the first segment.
    pub service: String,
    /// The rest of the path, cleaned and decoded: what AuthRules match.
    pub decoded: String,
    /// The same path in one canonical percent-encoding: what the backend receives. Decoding it
    /// gives [`ProxyPath::decoded`] back, so that rules and backend read the same path.
    pub forward: String,
}

/// Bytes a forwarded path segment keeps as they are: RFC 3986's unreserved characters and the
/// sub-delimiters, `:` and `@` (`pchar`), except `;`, which never reaches this point. Everything
/// else, `%` included, is percent-encoded.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b'=')
    .remove(b':')
    .remove(b'@');

/// For `Http` services: the service is the first cleaned segment, and the backend gets the rest
/// (`/<service>/<rest>` → `/<rest>`), cleaned, decoded and encoded again canonically; a trailing
/// `/` is kept.
pub fn proxy_path(raw_path: &str) -> Result<ProxyPath, PathError> {
    let segments = clean_segments(raw_path)?;
    let Some((service, rest)) = segments.split_first() else {
        return Err(PathError::Empty);
    };
    let mut decoded = String::with_capacity(raw_path.len());
    let mut forward = String::with_capacity(raw_path.len());
    for seg in rest {
        decoded.push('/');
        decoded.push_str(seg);
        forward.push('/');
        forward.extend(percent_encoding::utf8_percent_encode(seg, SEGMENT));
    }
    if decoded.is_empty() || (raw_path.ends_with('/') && !rest.is_empty()) {
        decoded.push('/');
        forward.push('/');
    }
    Ok(ProxyPath {
        service: service.clone(),
        decoded,
        forward,
    })
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

/// A `Micro-Namespace` header that tries to leave the tenant its host is bound to.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("host {host} serves namespace {bound}; Micro-Namespace: {asked} cannot switch it")]
pub(crate) struct HostBound {
    /// The request's host.
    pub host: String,
    /// The tenant that lists it.
    pub bound: String,
    /// The tenant the header named.
    pub asked: String,
}

/// Tenant resolution order of docs/gateway.md for what the request itself carries: a host some
/// tenant lists (`tenant_of_host`), which the `Micro-Namespace` header cannot switch; then that
/// header; else the default. (The token issuer step belongs to the auth phase.)
pub(crate) fn tenant_source<'a, 'h>(
    header: Option<&'a str>,
    host: Option<String>,
    tenant_of_host: impl Fn(&str) -> Option<&'h str>,
) -> Result<TenantSource<'a>, HostBound> {
    let header = header.map(str::trim).filter(|h| !h.is_empty());
    if let Some(h) = host
        && let Some(bound) = tenant_of_host(&h)
    {
        return match header {
            Some(asked) if asked != bound => Err(HostBound {
                host: h,
                bound: bound.to_string(),
                asked: asked.to_string(),
            }),
            _ => Ok(TenantSource::Host(h)),
        };
    }
    Ok(header.map_or(TenantSource::Default, TenantSource::Header))
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
            assert!(matches!(resolve_path(p), Err(PathError::Ambiguous { .. })), "{p}");
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
        let p = |s| {
            let p = proxy_path(s).unwrap();
            (p.service, p.forward)
        };
        assert_eq!(p("/web"), ("web".into(), "/".into()));
        assert_eq!(p("/web/"), ("web".into(), "/".into()));
        assert_eq!(p("/web/a/b"), ("web".into(), "/a/b".into()));
        assert_eq!(p("/web/a/b/"), ("web".into(), "/a/b/".into()));
        assert_eq!(p("/web/a/../b"), ("web".into(), "/b".into()));
        assert_eq!(p("//web//x"), ("web".into(), "/x".into()));
        assert_eq!(proxy_path("/"), Err(PathError::Empty));
        assert!(matches!(proxy_path("/we%2Fb/x"), Err(PathError::Ambiguous { .. })));
        // `..` can never climb out of the service prefix into another service
        assert_eq!(p("/web/../other/x"), ("other".into(), "/x".into()));
    }

    /// The attacks of issue 20 on a rule guarding `/admin/*`: each either reaches the backend as
    /// the path the rules saw, or is refused before any rule is consulted.
    #[test]
    fn the_backend_receives_the_path_the_rules_saw() {
        let decoded = |s: &str| proxy_path(s).map(|p| (p.decoded, p.forward));
        // Encoded letters are decoded for the rules, and sent canonically.
        assert_eq!(
            decoded("/web/%61dmin/secret"),
            Ok(("/admin/secret".into(), "/admin/secret".into()))
        );
        assert_eq!(decoded("/web/ADMIN/x"), Ok(("/ADMIN/x".into(), "/ADMIN/x".into())));
        // What needs encoding stays encoded, one way.
        assert_eq!(
            decoded("/web/a%20b/%c3%a9/%7e/%25"),
            Ok(("/a b/é/~/%".into(), "/a%20b/%C3%A9/~/%25".into()))
        );
        let refused = |s: &str, what: &str| match proxy_path(s) {
            Err(PathError::Ambiguous { what: w, .. }) => assert_eq!(w, what, "{s}"),
            other => panic!("{s}: {other:?}"),
        };
        refused("/web/pub/%2e%2e/admin/secret", "an encoded dot segment");
        refused("/web/pub/.%2E/admin/secret", "an encoded dot segment");
        refused("/web/admin%2Fsecret", "an encoded slash");
        refused("/web/admin%2fsecret", "an encoded slash");
        refused("/web/admin;x/secret", "`;` parameters");
        refused("/web/admin%3Bx/secret", "`;` parameters");
        refused("/web/admin\\secret", "a backslash");
        refused("/web/admin%5Csecret", "an encoded backslash");
        refused("/web/admin%00/secret", "a control character");
        assert!(matches!(proxy_path("/web/%ff"), Err(PathError::Encoding(_))));
    }

    #[test]
    fn forwarded_paths_decode_to_what_the_rules_saw() {
        for raw in [
            "/web/a%20b/c",
            "/web/%E2%82%AC/x/",
            "/web/a+b/(c)/d=e:f@g",
            "/web/%2525",
        ] {
            let p = proxy_path(raw).unwrap();
            let again = proxy_path(&format!("/web{}", p.forward)).unwrap();
            assert_eq!(again.decoded, p.decoded, "{raw}");
            assert_eq!(again.forward, p.forward, "{raw}: canonical means stable");
        }
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
        let bound = |h: &str| (h == "acme.example.com").then_some("acme");
        assert_eq!(
            tenant_source(Some("acme"), Some("other.example.com".into()), bound),
            Ok(TenantSource::Header("acme"))
        );
        assert_eq!(
            tenant_source(Some("  "), Some("acme.example.com".into()), bound),
            Ok(TenantSource::Host("acme.example.com".into()))
        );
        assert_eq!(
            tenant_source(None, Some("acme.example.com".into()), bound),
            Ok(TenantSource::Host("acme.example.com".into()))
        );
        assert_eq!(
            tenant_source(None, Some("localhost".into()), bound),
            Ok(TenantSource::Default)
        );
        assert_eq!(tenant_source(None, None, bound), Ok(TenantSource::Default));
    }

    #[test]
    fn a_host_bound_tenant_cannot_be_switched_by_header() {
        let bound = |h: &str| (h == "api.micro.localhost").then_some("micro");
        assert_eq!(
            tenant_source(Some("beta"), Some("api.micro.localhost".into()), bound),
            Err(HostBound {
                host: "api.micro.localhost".into(),
                bound: "micro".into(),
                asked: "beta".into(),
            })
        );
        // Naming the host's own tenant is fine.
        assert_eq!(
            tenant_source(Some("micro"), Some("api.micro.localhost".into()), bound),
            Ok(TenantSource::Host("api.micro.localhost".into()))
        );
    }
}
