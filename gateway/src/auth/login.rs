//! The login redirect: a browser that a tenant's rules refuse for want of an account goes to the
//! tenant's login page (`spec.auth.loginUrl`) instead of reading a 401, as Micro's API gateway did
//! with its `LoginURL` (docs/auth.md, "Login page").
//!
//! The rule, decided here and nowhere else:
//! - only a refusal **without an account** (401) redirects; a refused account (403) never does;
//! - only a **browser navigation** redirects: method `GET` or `HEAD` and an `Accept` header naming
//!   `text/html` (with a non-zero `q`). `fetch`/XHR callers and API clients (`Accept:
//!   application/json`, `*/*`, none) keep the 401 JSON of docs/gateway.md#errors;
//! - the answer is `307 Temporary Redirect` to `<loginUrl>?redirect_to=<original URL>` (`&` when
//!   the login URL has a query already), the original URL absolute and percent-encoded as one
//!   query value.

use http::{HeaderMap, Method, StatusCode, Uri, header};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// What a query value keeps unencoded: RFC 3986's unreserved characters.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// The query parameter carrying the URL to come back to.
pub(crate) const REDIRECT_PARAM: &str = "redirect_to";

/// Where to send the client instead of answering a refusal with status `refused`: the `Location`
/// of the 307, or `None` to answer with the error itself.
pub(crate) fn login_redirect(
    refused: StatusCode,
    login_url: Option<&str>,
    method: &Method,
    headers: &HeaderMap,
    uri: &Uri,
) -> Option<String> {
    let login_url = login_url.filter(|u| !u.is_empty())?;
    if refused != StatusCode::UNAUTHORIZED || !is_browser_navigation(method, headers) {
        return None;
    }
    Some(redirect_location(login_url, &original_url(headers, uri)))
}

/// A browser navigation: `GET` or `HEAD` with an `Accept` header that names `text/html` (any of
/// several `Accept` headers; `text/html;q=0` refuses HTML, so it does not count).
pub(crate) fn is_browser_navigation(method: &Method, headers: &HeaderMap) -> bool {
    if method != Method::GET && method != Method::HEAD {
        return false;
    }
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(accepts_html)
}

/// One media range of an `Accept` header: `text/html` with a `q` other than 0.
fn accepts_html(range: &str) -> bool {
    let mut parts = range.split(';').map(str::trim);
    if !parts.next().is_some_and(|m| m.eq_ignore_ascii_case("text/html")) {
        return false;
    }
    !parts.any(|p| {
        p.split_once('=')
            .is_some_and(|(k, v)| k.trim().eq_ignore_ascii_case("q") && v.trim().parse::<f32>().is_ok_and(|q| q <= 0.0))
    })
}

/// The URL the client asked for, as the browser sees it: `X-Forwarded-Proto` (`http` or `https`,
/// as a TLS-terminating load balancer in front sets it; anything else is ignored) or `http`, the
/// `Host` header (or the request's authority, HTTP/2), the path and the query. Without a usable
/// host, only the path and query.
pub(crate) fn original_url(headers: &HeaderMap, uri: &Uri) -> String {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .filter(|h| is_host(h));
    let Some(host) = host else {
        return path.to_string();
    };
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|s| s.eq_ignore_ascii_case("https") || s.eq_ignore_ascii_case("http"))
        .map_or("http", |s| {
            if s.eq_ignore_ascii_case("https") {
                "https"
            } else {
                "http"
            }
        });
    format!("{scheme}://{host}{path}")
}

/// A host with an optional port, as a `Host` header carries it: nothing that could end the
/// authority (`/`, `?`, `#`, `@`, `\`) or is not printable.
fn is_host(h: &str) -> bool {
    !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'[' | b']' | b'_'))
}

/// `<login_url>?redirect_to=<original, percent-encoded>`: `&` instead of `?` when `login_url`
/// already has a query; a fragment of `login_url` stays last.
pub(crate) fn redirect_location(login_url: &str, original: &str) -> String {
    let (base, fragment) = match login_url.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (login_url, None),
    };
    let sep = if !base.contains('?') {
        "?"
    } else if base.ends_with('?') || base.ends_with('&') {
        ""
    } else {
        "&"
    };
    let mut out = format!(
        "{base}{sep}{REDIRECT_PARAM}={}",
        utf8_percent_encode(original, QUERY_VALUE)
    );
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    const BROWSER: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    const LOGIN: &str = "https://login.example.com/sign-in";

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn browser_navigations_are_get_or_head_accepting_html() {
        let browser = headers(&[("accept", BROWSER)]);
        assert!(is_browser_navigation(&Method::GET, &browser));
        assert!(is_browser_navigation(&Method::HEAD, &browser));
        for m in [
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
            Method::PATCH,
        ] {
            assert!(!is_browser_navigation(&m, &browser), "{m}");
        }
        for accept in [
            "application/json",
            "*/*",
            "text/*",
            "text/html-fragment",
            "text/html;q=0",
            "text/html; q=0.0, application/json",
            "",
        ] {
            let h = headers(&[("accept", accept)]);
            assert!(!is_browser_navigation(&Method::GET, &h), "{accept:?}");
        }
        assert!(!is_browser_navigation(&Method::GET, &HeaderMap::new()), "no Accept");
        for accept in [
            "TEXT/HTML",
            "application/json, text/html;q=0.1",
            " text/html ; charset=utf-8",
        ] {
            let h = headers(&[("accept", accept)]);
            assert!(is_browser_navigation(&Method::GET, &h), "{accept:?}");
        }
        // Split over two headers.
        let h = headers(&[("accept", "application/json"), ("accept", "text/html")]);
        assert!(is_browser_navigation(&Method::GET, &h));
    }

    #[test]
    fn only_an_anonymous_browser_refusal_with_a_login_url_redirects() {
        let browser = headers(&[("accept", BROWSER), ("host", "api.acme.com")]);
        let u = uri("/helloworld/call?name=Jo");
        let got = login_redirect(StatusCode::UNAUTHORIZED, Some(LOGIN), &Method::GET, &browser, &u);
        assert_eq!(
            got.as_deref(),
            Some(
                "https://login.example.com/sign-in?redirect_to=http%3A%2F%2Fapi.acme.com%2Fhelloworld%2Fcall%3Fname%3DJo"
            )
        );
        // A refused account, no login URL, an API client: no redirect.
        assert_eq!(
            login_redirect(StatusCode::FORBIDDEN, Some(LOGIN), &Method::GET, &browser, &u),
            None
        );
        assert_eq!(
            login_redirect(StatusCode::UNAUTHORIZED, None, &Method::GET, &browser, &u),
            None
        );
        assert_eq!(
            login_redirect(StatusCode::UNAUTHORIZED, Some(""), &Method::GET, &browser, &u),
            None
        );
        let api = headers(&[("accept", "application/json"), ("host", "api.acme.com")]);
        assert_eq!(
            login_redirect(StatusCode::UNAUTHORIZED, Some(LOGIN), &Method::GET, &api, &u),
            None
        );
        assert_eq!(
            login_redirect(StatusCode::UNAUTHORIZED, Some(LOGIN), &Method::POST, &browser, &u),
            None
        );
        for code in [
            StatusCode::NOT_FOUND,
            StatusCode::BAD_REQUEST,
            StatusCode::SERVICE_UNAVAILABLE,
        ] {
            assert_eq!(
                login_redirect(code, Some(LOGIN), &Method::GET, &browser, &u),
                None,
                "{code}"
            );
        }
    }

    #[test]
    fn redirect_locations_append_to_the_login_query() {
        let original = "http://a.example/x?y=1&z=2";
        let enc = "http%3A%2F%2Fa.example%2Fx%3Fy%3D1%26z%3D2";
        assert_eq!(redirect_location(LOGIN, original), format!("{LOGIN}?redirect_to={enc}"));
        assert_eq!(
            redirect_location("https://l.example/in?app=web", original),
            format!("https://l.example/in?app=web&redirect_to={enc}")
        );
        assert_eq!(
            redirect_location("https://l.example/in?", original),
            format!("https://l.example/in?redirect_to={enc}")
        );
        assert_eq!(
            redirect_location("https://l.example/in?a=1&", original),
            format!("https://l.example/in?a=1&redirect_to={enc}")
        );
        assert_eq!(
            redirect_location("http://l.example/#/login", original),
            format!("http://l.example/?redirect_to={enc}#/login")
        );
        // Whatever the original holds, it stays one query value.
        let nasty = "http://h/a b/é?q=%2F&r=#frag";
        let loc = redirect_location(LOGIN, nasty);
        let query = loc.split_once('?').unwrap().1;
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        assert_eq!(pairs, [(REDIRECT_PARAM.to_string(), nasty.to_string())]);
    }

    #[test]
    fn the_original_url_is_absolute_when_the_host_is_usable() {
        let u = uri("/helloworld/call?name=Jo");
        assert_eq!(
            original_url(&headers(&[("host", "api.acme.com:8080")]), &u),
            "http://api.acme.com:8080/helloworld/call?name=Jo"
        );
        assert_eq!(
            original_url(
                &headers(&[("host", "api.acme.com"), ("x-forwarded-proto", "https")]),
                &u
            ),
            "https://api.acme.com/helloworld/call?name=Jo"
        );
        assert_eq!(
            original_url(
                &headers(&[("host", "[::1]:8080"), ("x-forwarded-proto", "HTTPS, http")]),
                &u
            ),
            "https://[::1]:8080/helloworld/call?name=Jo"
        );
        // Another scheme is ignored.
        assert_eq!(
            original_url(&headers(&[("host", "h"), ("x-forwarded-proto", "javascript")]), &u),
            "http://h/helloworld/call?name=Jo"
        );
        // A host that could move the authority, or none: only the path.
        for host in ["evil.example/x", "a@b", "h?x", ""] {
            let h = headers(&[("host", host)]);
            assert_eq!(original_url(&h, &u), "/helloworld/call?name=Jo", "{host:?}");
        }
        assert_eq!(original_url(&HeaderMap::new(), &u), "/helloworld/call?name=Jo");
        // HTTP/2: the authority of the request.
        assert_eq!(
            original_url(&HeaderMap::new(), &uri("http://api.acme.com/x")),
            "http://api.acme.com/x"
        );
    }
}
