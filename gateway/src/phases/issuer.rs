//! A tenant's issuer endpoints: `<issuer>/.well-known/{openid-configuration,jwks.json,token}`
//! (docs/auth.md).

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::auth::limits::TokenLimits;
use crate::auth::{self, AuthState};
use crate::body::BoxBody;
use crate::error::GatewayError;
use crate::response::json_response;
use crate::snapshot::Tenant;

/// Answers `endpoint` of `tenant`'s issuer; token requests from `ip` count against `limits`.
pub(super) async fn serve(
    auth_state: &AuthState,
    tenant: &Tenant,
    endpoint: &str,
    req: Request<Incoming>,
    limits: &TokenLimits,
    ip: std::net::IpAddr,
) -> Result<Response<BoxBody>, GatewayError> {
    let ta = auth_state
        .tenants
        .get(&tenant.name)
        .cloned()
        .ok_or_else(|| GatewayError::not_found(format!("namespace {} not found", tenant.name)))?;
    let json = |v: serde_json::Value| json_response(StatusCode::OK, Bytes::from(v.to_string()));
    match (endpoint, req.method().clone()) {
        ("openid-configuration", Method::GET) => Ok(json(auth::endpoints::discovery(&ta))),
        ("jwks.json", Method::GET) => Ok(json(ta.jwks.clone())),
        ("token", Method::POST) => {
            let limit = 64 << 10;
            let headers = req.headers().clone();
            let body = Limited::new(req.into_body(), limit)
                .collect()
                .await
                .map_err(|_| GatewayError::payload_too_large("token request too large"))?
                .to_bytes();
            let request = auth::endpoints::parse_request(&headers, &body)?;
            let client = request.client_id.as_deref();
            let known = client.is_some_and(|id| ta.accounts.contains_key(id));
            if let Err(wait) = limits.check(&tenant.name, client, known, ip) {
                return Err(GatewayError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("too many token requests; try again in {} s", wait.as_secs().max(1)),
                ));
            }
            // PBKDF2 takes milliseconds: off the runtime's threads.
            let secret_ok = match (request.client_id.clone(), request.client_secret.clone()) {
                (Some(id), Some(secret)) => {
                    let ta = ta.clone();
                    tokio::task::spawn_blocking(move || auth::endpoints::check_secret(&ta, &id, &secret))
                        .await
                        .unwrap_or(false)
                }
                _ => false,
            };
            let issued = auth::endpoints::issue(
                &ta,
                &auth_state.verifier,
                &limits.spent,
                &request,
                auth::now_unix(),
                secret_ok,
            )?;
            let mut r = json(issued);
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(r)
        }
        ("openid-configuration" | "jwks.json" | "token", m) => Err(GatewayError::method_not_allowed(format!(
            "{m} is not served on {endpoint}"
        ))),
        _ => Err(GatewayError::not_found(format!("no issuer endpoint {endpoint}"))),
    }
}
