//! A tenant's issuer endpoints: `<issuer>/.well-known/{openid-configuration,jwks.json,token}`
//! (docs/auth.md).

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::auth::{self, AuthState};
use crate::body::BoxBody;
use crate::error::GatewayError;
use crate::response::json_response;
use crate::snapshot::Tenant;

/// Answers `endpoint` of `tenant`'s issuer.
pub(super) async fn serve(
    auth_state: &AuthState,
    tenant: &Tenant,
    endpoint: &str,
    req: Request<Incoming>,
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
            let issued = auth::endpoints::issue(&ta, &auth_state.verifier, &request, auth::now_unix())?;
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
