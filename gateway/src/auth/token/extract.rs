//! Where a request carries its token: `Authorization: Bearer …` or the `micro-token` cookie.

use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE};

use super::TokenError;

/// The cookie Micro's web clients keep the token in.
pub const TOKEN_COOKIE: &str = "micro-token";

/// The request's bearer token, if it sends one.
///
/// - `Authorization: Bearer <token>` (scheme case-insensitive, RFC 9110). More than one
///   `Authorization` header, another scheme (`Basic …`), an empty token or a token with whitespace
///   inside is an error: a request that sends credentials the gateway cannot use is refused rather
///   than served anonymously.
/// - The cookie `micro-token` (in any `Cookie` header; HTTP/2 may split them). An empty value is
///   no token (that is how clients clear it); two different non-empty values are an error.
/// - Header and cookie both present: fine when equal, an error when they differ.
///
/// Errors never contain the token.
pub fn extract(headers: &HeaderMap) -> Result<Option<String>, TokenError> {
    let bearer = bearer(headers)?;
    let cookie = cookie(headers)?;
    match (bearer, cookie) {
        (Some(b), Some(c)) if b != c => Err(TokenError::Credentials(
            "the Authorization header and the micro-token cookie differ",
        )),
        (Some(token), _) | (None, Some(token)) => Ok(Some(token.to_owned())),
        (None, None) => Ok(None),
    }
}

fn bearer(headers: &HeaderMap) -> Result<Option<&str>, TokenError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(TokenError::Credentials("more than one Authorization header"));
    }
    let value = value
        .to_str()
        .map_err(|_| TokenError::Credentials("the Authorization header is not visible ASCII"))?
        .trim_matches(|c| c == ' ' || c == '\t');
    let (scheme, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(TokenError::Credentials("the Authorization scheme is not Bearer"));
    }
    let token = rest.trim_start_matches([' ', '\t']);
    if token.is_empty() {
        return Err(TokenError::Credentials("the bearer token is empty"));
    }
    if token.contains([' ', '\t']) {
        return Err(TokenError::Credentials("the bearer token contains whitespace"));
    }
    Ok(Some(token))
}

fn cookie(headers: &HeaderMap) -> Result<Option<&str>, TokenError> {
    let mut found: Option<&str> = None;
    for header in headers.get_all(COOKIE) {
        // A Cookie header that is not ASCII cannot hold a token; skip it rather than guess.
        let Ok(header) = header.to_str() else { continue };
        for pair in header.split(';') {
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            if name.trim_matches([' ', '\t']) != TOKEN_COOKIE {
                continue;
            }
            let value = value.trim_matches([' ', '\t']);
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            if value.is_empty() {
                continue;
            }
            match found {
                Some(previous) if previous != value => {
                    return Err(TokenError::Credentials("two different micro-token cookies"));
                }
                _ => found = Some(value),
            }
        }
    }
    Ok(found)
}
