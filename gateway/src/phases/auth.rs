//! Phase 3, auth: the tenant's AuthRules decide for the account phase 1 verified (docs/auth.md).

use http::{Request, Response};

use crate::auth::Caller;
use crate::auth::TenantAuth;
use crate::body::BoxBody;
use crate::error::GatewayError;
use crate::response::{error_response, redirect_response};

/// Phase 3: whether `account` may call `endpoint` of `service`: `None` if it may, else what the
/// client gets instead: a browser navigation refused without an account goes to the tenant's login page (307,
/// `auth::login`); anything else is the error.
pub(super) fn authorize<B>(
    tenant_auth: &TenantAuth,
    account: Option<&Caller>,
    service: &str,
    endpoint: &str,
    req: &Request<B>,
) -> Option<Result<Response<BoxBody>, GatewayError>> {
    tenant_auth
        .authorize(account, service, endpoint)
        .err()
        .map(|e| refused(e, tenant_auth, req))
}

/// A refusal of the rules as the client gets it.
fn refused<B>(e: GatewayError, tenant_auth: &TenantAuth, req: &Request<B>) -> Result<Response<BoxBody>, GatewayError> {
    match crate::auth::login::login_redirect(
        e.code,
        tenant_auth.login_url.as_deref(),
        req.method(),
        req.headers(),
        req.uri(),
    ) {
        Some(location) => Ok(redirect_response(&location).unwrap_or_else(|| error_response(&e))),
        None => Err(e),
    }
}
