//! Each tenant's issuer endpoints, served by the gateway under `<issuer>/.well-known/…`, i.e.
//! `/<tenant>/.well-known/…` (or `/.well-known/…` for the tenant the request resolves to):
//!
//! - `openid-configuration`: the OpenID discovery document;
//! - `jwks.json`: the public keys of the tenant's signing keys;
//! - `token` (POST): client credentials (account id + secret) or a refresh token → an access token
//!   and a refresh token.
//!
//! A MicroService name never contains a dot, so `.well-known` never shadows a route.

use bytes::Bytes;
use http::{HeaderMap, header};
use sha2::Digest;
use subtle::ConstantTimeEq;

use super::TenantAuth;
use super::token::{Claims, TokenUse, Verifier};
use crate::error::GatewayError;

/// Lifetime of refresh tokens.
pub(crate) const REFRESH_TTL: i64 = 24 * 3600;

/// Which issuer endpoint a path names: `(tenant named in the path, endpoint)`.
pub(crate) fn match_path(raw_path: &str) -> Option<(Option<&str>, &str)> {
    if !raw_path.contains(".well-known") {
        return None;
    }
    let parts: Vec<&str> = raw_path.split('/').filter(|p| !p.is_empty()).collect();
    match parts.as_slice() {
        [".well-known", ep] => Some((None, ep)),
        [tenant, ".well-known", ep] => Some((Some(tenant), ep)),
        _ => None,
    }
}

/// The OpenID discovery document.
pub(crate) fn discovery(t: &TenantAuth) -> serde_json::Value {
    serde_json::json!({
        "issuer": t.issuer,
        "jwks_uri": format!("{}/.well-known/jwks.json", t.issuer),
        "token_endpoint": format!("{}/.well-known/token", t.issuer),
        "grant_types_supported": ["client_credentials", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
        "scopes_supported": [],
    })
}

/// What a token request carries.
#[derive(Default)]
pub(crate) struct TokenRequest {
    /// `client_credentials` (default when an id is given) or `refresh_token`.
    pub grant_type: Option<String>,
    /// Account id.
    pub client_id: Option<String>,
    /// Account secret.
    pub client_secret: Option<String>,
    /// A refresh token.
    pub refresh_token: Option<String>,
}

impl std::fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret or the token.
        f.debug_struct("TokenRequest")
            .field("grant_type", &self.grant_type)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// Reads a token request from a form or JSON body (OAuth names, or Micro's `id`/`secret`), with the
/// client's credentials possibly in `Authorization: Basic`.
pub(crate) fn parse_request(headers: &HeaderMap, body: &Bytes) -> Result<TokenRequest, GatewayError> {
    let mut req = TokenRequest::default();
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let looks_json = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if ct.starts_with("application/json") || looks_json {
        let v: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| GatewayError::bad_request(format!("malformed token request: {e}")))?;
        let get = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        req.grant_type = get("grant_type");
        req.client_id = get("client_id").or_else(|| get("id"));
        req.client_secret = get("client_secret").or_else(|| get("secret"));
        req.refresh_token = get("refresh_token");
    } else {
        for (k, v) in form_urlencoded::parse(body) {
            let v = Some(v.into_owned());
            match k.as_ref() {
                "grant_type" => req.grant_type = v,
                "client_id" | "id" => req.client_id = v,
                "client_secret" | "secret" => req.client_secret = v,
                "refresh_token" => req.refresh_token = v,
                _ => {}
            }
        }
    }
    if let Some(basic) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    {
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .ok_or_else(|| GatewayError::bad_request("malformed Basic credentials"))?;
        let (id, secret) = decoded
            .split_once(':')
            .ok_or_else(|| GatewayError::bad_request("malformed Basic credentials"))?;
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .unwrap_or_else(|_| s.to_string())
        };
        req.client_id = Some(decode(id));
        req.client_secret = Some(decode(secret));
    }
    Ok(req)
}

fn invalid_client() -> GatewayError {
    GatewayError::unauthorized("invalid client credentials")
}

/// Checks a presented secret against an account, in time that does not depend on where they differ
/// or on whether the account exists.
pub(crate) fn check_secret(t: &TenantAuth, id: &str, secret: &str) -> bool {
    let presented = sha2::Sha256::digest(secret.as_bytes());
    match t.accounts.get(id) {
        Some(a) => bool::from(presented.as_slice().ct_eq(&a.secret_sha256)),
        None => {
            // Same work as a real comparison.
            let _ = presented.as_slice().ct_eq(&[0u8; 32]);
            false
        }
    }
}

/// Issues tokens for a request: 200 with `{access_token, token_type, expires_in, refresh_token,
/// scope}`, or a docs/gateway.md#errors error (401 for wrong credentials or an unusable refresh token).
pub(crate) fn issue(
    t: &TenantAuth,
    verifier: &Verifier,
    req: &TokenRequest,
    now: i64,
) -> Result<serde_json::Value, GatewayError> {
    let signing = t
        .signing
        .as_ref()
        .ok_or_else(|| GatewayError::unavailable(format!("tenant {} has no signing key yet", t.tenant)))?;
    let grant = req.grant_type.as_deref().unwrap_or(if req.refresh_token.is_some() {
        "refresh_token"
    } else {
        "client_credentials"
    });
    let id = match grant {
        "client_credentials" | "password" => {
            let (Some(id), Some(secret)) = (req.client_id.as_deref(), req.client_secret.as_deref()) else {
                return Err(GatewayError::bad_request("client_id and client_secret are required"));
            };
            if !check_secret(t, id, secret) {
                return Err(invalid_client());
            }
            id.to_string()
        }
        "refresh_token" => {
            let token = req
                .refresh_token
                .as_deref()
                .ok_or_else(|| GatewayError::bad_request("refresh_token is required"))?;
            let v = verifier
                .verify_refresh(token, now)
                .map_err(|_| GatewayError::unauthorized("invalid refresh token"))?;
            if v.tenant != t.tenant || !t.accounts.contains_key(&v.account_id) {
                return Err(GatewayError::unauthorized("invalid refresh token"));
            }
            v.account_id
        }
        other => {
            return Err(GatewayError::bad_request(format!(
                "unsupported grant_type {other}: use client_credentials or refresh_token"
            )));
        }
    };
    let account = t.accounts.get(&id).ok_or_else(invalid_client)?;
    let claims = |use_: TokenUse, ttl: i64| Claims {
        sub: id.clone(),
        iss: t.issuer.clone(),
        exp: now + ttl,
        iat: now,
        account_type: account.account_type.clone(),
        scopes: account.scopes.clone(),
        token_use: use_.as_str().to_string(),
        ..Default::default()
    };
    let sign = |c: &Claims| {
        signing
            .sign(c)
            .map_err(|e| GatewayError::internal(format!("signing a token failed: {}", e.category())))
    };
    let access = sign(&claims(TokenUse::Access, t.token_ttl))?;
    let refresh = sign(&claims(TokenUse::Refresh, REFRESH_TTL))?;
    Ok(serde_json::json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": t.token_ttl,
        "refresh_token": refresh,
        "scope": account.scopes.join(" "),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(match_path("/.well-known/jwks.json"), Some((None, "jwks.json")));
        assert_eq!(
            match_path("/acme/.well-known/openid-configuration"),
            Some((Some("acme"), "openid-configuration"))
        );
        assert_eq!(match_path("/acme/.well-known/token"), Some((Some("acme"), "token")));
        assert_eq!(match_path("/helloworld/call"), None);
        assert_eq!(match_path("/a/b/.well-known/token"), None);
    }

    #[test]
    fn token_requests_from_forms_json_and_basic() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        let r = parse_request(
            &h,
            &Bytes::from("grant_type=client_credentials&client_id=a&client_secret=s%26"),
        )
        .unwrap();
        assert_eq!(
            (r.client_id.as_deref(), r.client_secret.as_deref()),
            (Some("a"), Some("s&"))
        );
        let r = parse_request(&HeaderMap::new(), &Bytes::from(r#"{"id":"b","secret":"t"}"#)).unwrap();
        assert_eq!(
            (r.client_id.as_deref(), r.client_secret.as_deref()),
            (Some("b"), Some("t"))
        );
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Basic Yzp1".parse().unwrap()); // c:u
        let r = parse_request(&h, &Bytes::new()).unwrap();
        assert_eq!(
            (r.client_id.as_deref(), r.client_secret.as_deref()),
            (Some("c"), Some("u"))
        );
        let err = parse_request(&HeaderMap::new(), &Bytes::from("{not json")).unwrap_err();
        assert_eq!(err.code, http::StatusCode::BAD_REQUEST, "{err:?}");
        assert!(err.detail.starts_with("malformed token request"), "{err:?}");
        assert!(!format!("{r:?}").contains('u') || !format!("{r:?}").contains("\"u\""));
    }
}
