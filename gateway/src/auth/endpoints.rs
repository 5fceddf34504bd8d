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

use super::TenantAuth;
use super::limits::SpentRefreshTokens;
use super::token::{Audience, Claims, REFRESH_AUDIENCE, TokenUse, Verifier};
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

/// The `aud` of refresh tokens issued for a secret of version `version`.
fn refresh_audience(version: &str) -> String {
    format!("{REFRESH_AUDIENCE}{version}")
}

fn invalid_client() -> GatewayError {
    GatewayError::unauthorized("invalid client credentials")
}

/// Most PBKDF2 iterations a check does, whatever a snapshot says.
const MAX_ITERATIONS: u32 = 1_000_000;
/// Iterations of the check made for an unknown account: the operator's.
const UNKNOWN_ITERATIONS: u32 = 20_000;

/// Checks a presented secret against an account's PBKDF2 hash (constant time), doing the same work
/// whether or not the account exists. It takes milliseconds: call it off the runtime's threads.
pub(crate) fn check_secret(t: &TenantAuth, id: &str, secret: &str) -> bool {
    use aws_lc_rs::pbkdf2;
    let (salt, iterations, hash, known) = match t.accounts.get(id) {
        Some(a) => (a.salt.as_slice(), a.iterations, a.secret_pbkdf2.as_slice(), true),
        None => (
            &b"microplane.dev/unknown-account"[..],
            UNKNOWN_ITERATIONS,
            &[0u8; 32][..],
            false,
        ),
    };
    let Some(iterations) = std::num::NonZeroU32::new(iterations.min(MAX_ITERATIONS)) else {
        return false;
    };
    let ok = pbkdf2::verify(pbkdf2::PBKDF2_HMAC_SHA256, iterations, salt, secret.as_bytes(), hash).is_ok();
    ok && known
}

/// Issues tokens for a request: 200 with `{access_token, token_type, expires_in, refresh_token,
/// scope}`, or a docs/gateway.md#errors error (401 for wrong credentials or an unusable refresh token).
/// `secret_ok` says whether the request's client secret matched ([`check_secret`], run before).
///
/// A refresh token names the account's secret version, so a changed secret ends it; one obtained
/// by refreshing keeps the expiry of the one presented, so a chain of refreshes ends
/// [`REFRESH_TTL`] after the secret was last presented. Each refresh token is good for one refresh
/// (`spent` remembers the redeemed ones).
pub(crate) fn issue(
    t: &TenantAuth,
    verifier: &Verifier,
    spent: &SpentRefreshTokens,
    req: &TokenRequest,
    now: i64,
    secret_ok: bool,
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
    let (id, refresh_expires) = match grant {
        "client_credentials" | "password" => {
            let (Some(id), Some(_)) = (req.client_id.as_deref(), req.client_secret.as_deref()) else {
                return Err(GatewayError::bad_request("client_id and client_secret are required"));
            };
            if !secret_ok {
                return Err(invalid_client());
            }
            (id.to_string(), now + REFRESH_TTL)
        }
        "refresh_token" => {
            let token = req
                .refresh_token
                .as_deref()
                .ok_or_else(|| GatewayError::bad_request("refresh_token is required"))?;
            let v = verifier
                .verify_refresh(token, now)
                .map_err(|_| GatewayError::unauthorized("invalid refresh token"))?;
            let current = t
                .accounts
                .get(&v.account_id)
                .map(|a| refresh_audience(&a.secret_version));
            if v.tenant != t.tenant || current.is_none_or(|aud| !v.audiences.contains(&aud)) {
                // Another tenant's, an account that is gone, or a secret that changed since.
                return Err(GatewayError::unauthorized("invalid refresh token"));
            }
            if !spent.spend(token) {
                return Err(GatewayError::unauthorized(
                    "refresh token already used: each is good for one refresh",
                ));
            }
            (v.account_id, v.expires_at)
        }
        other => {
            return Err(GatewayError::bad_request(format!(
                "unsupported grant_type {other}: use client_credentials or refresh_token"
            )));
        }
    };
    let account = t.accounts.get(&id).ok_or_else(invalid_client)?;
    let claims = |use_: TokenUse, exp: i64| Claims {
        sub: id.clone(),
        iss: t.issuer.clone(),
        exp,
        iat: now,
        aud: (use_ == TokenUse::Refresh).then(|| Audience::One(refresh_audience(&account.secret_version))),
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
    let access = sign(&claims(TokenUse::Access, now + t.token_ttl))?;
    let refresh = sign(&claims(TokenUse::Refresh, refresh_expires))?;
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
    use sha2::Digest;

    use crate::auth::AuthState;
    use crate::auth::token::{SigningKey, TokenCache};
    use microplane_wire::sync::v1;

    /// Tenant `acme` with the account `alice` whose secret is `secret`, as the operator sends it.
    fn state(key: &SigningKey, secret: &str) -> AuthState {
        let salt = b"0123456789abcdef".to_vec();
        let mut hash = vec![0u8; 32];
        let iterations = std::num::NonZeroU32::new(1000).unwrap();
        aws_lc_rs::pbkdf2::derive(
            aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256,
            iterations,
            &salt,
            secret.as_bytes(),
            &mut hash,
        );
        let wire = v1::Snapshot {
            version: 1,
            tenants: vec![v1::Tenant {
                name: "acme".into(),
                issuer: "http://gw/acme".into(),
                signing_keys: vec![v1::SigningKey {
                    kid: key.kid.clone(),
                    pkcs8: key.pkcs8_der(),
                }],
                accounts: vec![v1::Account {
                    id: "alice".into(),
                    r#type: "user".into(),
                    secret_version: sha2::Sha256::digest(&hash)[..8].to_vec(),
                    secret_pbkdf2: hash,
                    salt,
                    iterations: 1000,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        AuthState::build(&wire, &std::collections::HashMap::new(), 0, TokenCache::new(64)).0
    }

    fn login(s: &AuthState, secret: &str, now: i64) -> Result<serde_json::Value, GatewayError> {
        let t = &s.tenants["acme"];
        let req = TokenRequest {
            client_id: Some("alice".into()),
            client_secret: Some(secret.into()),
            ..Default::default()
        };
        let spent = SpentRefreshTokens::new(16);
        issue(t, &s.verifier, &spent, &req, now, check_secret(t, "alice", secret))
    }

    fn refresh(
        s: &AuthState,
        spent: &SpentRefreshTokens,
        token: &str,
        now: i64,
    ) -> Result<serde_json::Value, GatewayError> {
        let req = TokenRequest {
            refresh_token: Some(token.into()),
            ..Default::default()
        };
        issue(&s.tenants["acme"], &s.verifier, spent, &req, now, false)
    }

    /// Issue 20, item 5: secrets checked against a salted PBKDF2 hash; a refresh chain ends when
    /// the first refresh token would have (no endless renewal); a new secret ends every refresh
    /// token of the old one.
    #[test]
    fn refresh_tokens_neither_outlive_their_login_nor_a_changed_secret() {
        let key = SigningKey::generate("k").unwrap();
        let s = state(&key, "correct-horse-battery");
        let now = crate::auth::now_unix();
        assert_eq!(login(&s, "wrong-horse-battery!", now).unwrap_err().code, 401);
        assert!(!check_secret(&s.tenants["acme"], "nobody", "correct-horse-battery"));
        let first = login(&s, "correct-horse-battery", now).unwrap();
        let r1 = first["refresh_token"].as_str().unwrap().to_string();
        let exp = |t: &str| s.verifier.verify_refresh(t, now + 1).unwrap().expires_at;
        assert_eq!(exp(&r1), now + REFRESH_TTL);

        // An hour later: a new refresh token, expiring when the first one does.
        let spent = SpentRefreshTokens::new(16);
        let second = refresh(&s, &spent, &r1, now + 3600).unwrap();
        let r2 = second["refresh_token"].as_str().unwrap().to_string();
        assert_eq!(exp(&r2), now + REFRESH_TTL, "refreshing does not extend the chain");
        // Each refresh token is good once: a copy replayed (stolen, or a retry) is refused.
        let replayed = refresh(&s, &spent, &r1, now + 3601).unwrap_err();
        assert_eq!(replayed.code, 401);
        assert!(replayed.detail.contains("already used"), "{replayed:?}");

        // The secret is rotated: the old refresh tokens are refused, a login with the new one works.
        let rotated = state(&key, "a-brand-new-secret-0001");
        assert_eq!(refresh(&rotated, &spent, &r2, now + 7200).unwrap_err().code, 401);
        assert!(login(&rotated, "a-brand-new-secret-0001", now).is_ok());
        assert_eq!(login(&rotated, "correct-horse-battery", now).unwrap_err().code, 401);
    }

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
