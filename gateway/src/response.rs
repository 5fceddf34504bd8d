//! The responses the gateway writes itself: JSON, the docs/gateway.md#errors error object, a
//! redirect.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::body::{BoxBody, empty_body, full};
use crate::error::GatewayError;

/// A JSON response.
pub(crate) fn json_response(code: StatusCode, body: Bytes) -> Response<BoxBody> {
    let mut r = Response::new(full(body));
    *r.status_mut() = code;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// The docs/gateway.md#errors response for an error.
pub(crate) fn error_response(e: &GatewayError) -> Response<BoxBody> {
    json_response(e.code, e.body())
}

/// `307 Temporary Redirect` to `location`, not to be cached; `None` when `location` cannot be a
/// header value.
pub(crate) fn redirect_response(location: &str) -> Option<Response<BoxBody>> {
    let location = HeaderValue::from_str(location).ok()?;
    let mut resp = Response::new(empty_body());
    *resp.status_mut() = StatusCode::TEMPORARY_REDIRECT;
    resp.headers_mut().insert(header::LOCATION, location);
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    Some(resp)
}
