//! The errors the gateway writes (docs/gateway.md#errors).
//!
//! Every error is the JSON object `{"id":"…","code":404,"detail":"…","status":"Not Found"}` with
//! `Content-Type: application/json`: `code` is the HTTP status, `status` its canonical reason phrase.
//! Errors the gateway makes itself carry the id [`GATEWAY_ID`]; backend errors that arrive as a Micro
//! error JSON keep the backend's id and detail ([`GatewayError::from_grpc_status`]).

use std::fmt;

use bytes::Bytes;
use http::StatusCode;
use microplane_wire::error::{Relayed, reason_phrase};

/// The `id` of the errors the gateway makes itself.
pub const GATEWAY_ID: &str = "microplane.gateway";

/// An error as the gateway writes it to the client (docs/gateway.md#errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayError {
    /// The HTTP status of the response, also written as `code` in the body.
    pub code: StatusCode,
    /// Who made the error: [`GATEWAY_ID`] for the gateway, or the id of a backend's Micro error.
    pub id: String,
    /// What went wrong, for a human.
    pub detail: String,
}

impl GatewayError {
    /// An error with the given status and detail, made by the gateway (id [`GATEWAY_ID`]).
    pub(crate) fn new(code: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            id: GATEWAY_ID.to_owned(),
            detail: detail.into(),
        }
    }

    /// 400 Bad Request: a request the gateway cannot map (malformed JSON, unknown field, bad value).
    pub(crate) fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    /// 401 Unauthorized: refused without an account (docs/auth.md#rules).
    pub(crate) fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, detail)
    }

    /// 403 Forbidden: refused with an account (docs/auth.md#rules).
    pub(crate) fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, detail)
    }

    /// 404 Not Found: unknown tenant, service or endpoint.
    pub(crate) fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    /// 405 Method Not Allowed.
    pub(crate) fn method_not_allowed(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, detail)
    }

    /// 413 Payload Too Large: a request body over the gateway's limit.
    pub(crate) fn payload_too_large(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, detail)
    }

    /// 415 Unsupported Media Type: a body in a content type the gateway does not map.
    pub(crate) fn unsupported_media_type(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, detail)
    }

    /// 500 Internal Server Error.
    pub(crate) fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, detail)
    }

    /// 501 Not Implemented: an endpoint the gateway cannot serve over HTTP/JSON.
    pub(crate) fn not_implemented(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_IMPLEMENTED, detail)
    }

    /// 502 Bad Gateway: the backend answered with something the gateway cannot use.
    pub(crate) fn bad_gateway(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, detail)
    }

    /// 503 Service Unavailable: no backend to send the request to.
    pub(crate) fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, detail)
    }

    /// 504 Gateway Timeout: the backend did not answer in time.
    pub(crate) fn gateway_timeout(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, detail)
    }

    /// The canonical reason phrase of [`code`](Self::code) (`"Not Found"`), or `""` for a code
    /// without one, as Go's `http.StatusText` (which Micro uses) does.
    pub fn status(&self) -> &'static str {
        reason_phrase(self.code.as_u16())
    }

    /// The JSON body of docs/gateway.md#errors: `{"id":"…","code":404,"detail":"…","status":"Not Found"}`.
    pub(crate) fn body(&self) -> Bytes {
        Bytes::from(microplane_wire::error::body(&self.id, self.code.as_u16(), &self.detail))
    }

    /// Maps a gRPC status from a backend to the error the gateway writes (docs/gateway.md#errors).
    ///
    /// The HTTP status comes from the gRPC code: InvalidArgument 400, Unauthenticated 401,
    /// PermissionDenied 403, NotFound 404, AlreadyExists 409, ResourceExhausted 429, Unimplemented
    /// 501, Unavailable 503, DeadlineExceeded 504, any other code 500.
    ///
    /// A message that is a Micro error JSON object (keys matched case-insensitively, so both the
    /// `{"Id","Code","Detail","Status"}` of Micro before v3.10 and the lower-case keys of later
    /// versions are understood; a string `id` or `detail` is what makes it one) keeps its `id` and
    /// `detail`; a missing `id` becomes [`GATEWAY_ID`], a missing `detail` becomes `""`. The gRPC code
    /// still decides the HTTP status, because it is what the backend's gRPC server actually said —
    /// except when that code is Unknown or Internal and the JSON carries a `code` from 400 to 599:
    /// then that code is used, since a Micro service returning, e.g., `errors.BadRequest` or a 422
    /// that has no gRPC equivalent reaches the gateway exactly that way. The JSON's `status` is
    /// ignored; it is recomputed from the final code.
    ///
    /// Any other message (not JSON, JSON that is not an object, an object without `id`/`detail`) is
    /// the detail as it is; an empty message is replaced by the gRPC code's description so that the
    /// client always reads something.
    pub fn from_grpc_status(status: &tonic::Status) -> GatewayError {
        let code = http_code_for_grpc(status.code());
        match Relayed::parse(status.message()) {
            Some(micro) => {
                let code = match (status.code(), micro.code.and_then(|c| StatusCode::from_u16(c).ok())) {
                    (tonic::Code::Unknown | tonic::Code::Internal, Some(micro_code)) => micro_code,
                    _ => code,
                };
                GatewayError {
                    code,
                    id: micro.id.unwrap_or_else(|| GATEWAY_ID.to_owned()),
                    detail: micro.detail.unwrap_or_default(),
                }
            }
            None if status.message().is_empty() => GatewayError::new(code, status.code().description()),
            None => GatewayError::new(code, status.message()),
        }
    }
}

/// The HTTP status for a gRPC code (docs/gateway.md#errors), from the table the services share
/// ([`microplane_wire::error::http_code_for_grpc`]).
fn http_code_for_grpc(code: tonic::Code) -> StatusCode {
    StatusCode::from_u16(microplane_wire::error::http_code_for_grpc(code)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.id, self.detail)
    }
}

impl std::error::Error for GatewayError {}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::{Code, Status};

    fn json(bytes: &Bytes) -> serde_json::Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn body_is_exactly_the_spec_shape() {
        let err = GatewayError::not_found("service foo not found");
        assert_eq!(
            err.body(),
            Bytes::from_static(
                br#"{"id":"microplane.gateway","code":404,"detail":"service foo not found","status":"Not Found"}"#
            )
        );
    }

    #[test]
    fn body_escapes_json_in_id_and_detail() {
        let mut err = GatewayError::bad_request("field \"a\": bad\nvalue");
        err.id = "x\"y".into();
        let body = json(&err.body());
        assert_eq!(body["detail"], "field \"a\": bad\nvalue");
        assert_eq!(body["id"], "x\"y");
        assert_eq!(body["status"], "Bad Request");
        assert_eq!(body["code"], 400);
    }

    #[test]
    fn constructors_set_code_and_default_id() {
        let cases = [
            (GatewayError::bad_request("d"), 400, "Bad Request"),
            (GatewayError::unauthorized("d"), 401, "Unauthorized"),
            (GatewayError::forbidden("d"), 403, "Forbidden"),
            (GatewayError::not_found("d"), 404, "Not Found"),
            (GatewayError::method_not_allowed("d"), 405, "Method Not Allowed"),
            (GatewayError::payload_too_large("d"), 413, "Payload Too Large"),
            (GatewayError::unsupported_media_type("d"), 415, "Unsupported Media Type"),
            (GatewayError::internal("d"), 500, "Internal Server Error"),
            (GatewayError::bad_gateway("d"), 502, "Bad Gateway"),
            (GatewayError::unavailable("d"), 503, "Service Unavailable"),
            (GatewayError::gateway_timeout("d"), 504, "Gateway Timeout"),
        ];
        for (err, code, status) in cases {
            assert_eq!(err.code.as_u16(), code, "{err}");
            assert_eq!(err.id, GATEWAY_ID);
            assert_eq!(err.detail, "d");
            assert_eq!(err.status(), status);
            assert_eq!(json(&err.body())["status"], status);
        }
    }

    #[test]
    fn code_without_reason_phrase_has_empty_status() {
        let err = GatewayError::new(StatusCode::from_u16(499).unwrap(), "gone");
        assert_eq!(json(&err.body())["status"], "");
        assert_eq!(json(&err.body())["code"], 499);
    }

    #[test]
    fn display_names_code_id_and_detail() {
        assert_eq!(
            GatewayError::not_found("no such thing").to_string(),
            "404 Not Found (microplane.gateway): no such thing"
        );
    }

    #[test]
    fn every_grpc_code_maps_per_spec() {
        let table = [
            (Code::Ok, 500),
            (Code::Cancelled, 500),
            (Code::Unknown, 500),
            (Code::InvalidArgument, 400),
            (Code::DeadlineExceeded, 504),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::PermissionDenied, 403),
            (Code::ResourceExhausted, 429),
            (Code::FailedPrecondition, 500),
            (Code::Aborted, 500),
            (Code::OutOfRange, 500),
            (Code::Unimplemented, 501),
            (Code::Internal, 500),
            (Code::Unavailable, 503),
            (Code::DataLoss, 500),
            (Code::Unauthenticated, 401),
        ];
        // All 17 gRPC codes are in the table.
        assert_eq!(table.len(), 17);
        for (code, http) in table {
            let err = GatewayError::from_grpc_status(&Status::new(code, "boom"));
            assert_eq!(err.code.as_u16(), http, "{code:?}");
            assert_eq!(err.detail, "boom");
            assert_eq!(err.id, GATEWAY_ID);
        }
    }

    #[test]
    fn lower_case_micro_json_keeps_id_and_detail() {
        let msg = r#"{"id":"helloworld","code":404,"detail":"no such user","status":"Not Found"}"#;
        let err = GatewayError::from_grpc_status(&Status::not_found(msg));
        assert_eq!(err.code, StatusCode::NOT_FOUND);
        assert_eq!(err.id, "helloworld");
        assert_eq!(err.detail, "no such user");
        assert_eq!(
            err.body(),
            Bytes::from_static(br#"{"id":"helloworld","code":404,"detail":"no such user","status":"Not Found"}"#)
        );
    }

    #[test]
    fn capitalised_micro_json_keeps_id_and_detail() {
        let msg = r#"{"Id":"helloworld","Code":401,"Detail":"Unauthorized call made to helloworld:Helloworld.Call","Status":"Unauthorized"}"#;
        let err = GatewayError::from_grpc_status(&Status::unauthenticated(msg));
        assert_eq!(err.code, StatusCode::UNAUTHORIZED);
        assert_eq!(err.id, "helloworld");
        assert_eq!(err.detail, "Unauthorized call made to helloworld:Helloworld.Call");
    }

    #[test]
    fn keys_match_in_any_case() {
        let err = GatewayError::from_grpc_status(&Status::invalid_argument(r#"{"ID":"svc","DETAIL":"bad"}"#));
        assert_eq!((err.id.as_str(), err.detail.as_str()), ("svc", "bad"));
    }

    #[test]
    fn grpc_code_wins_over_json_code_for_specific_codes() {
        // The backend said NotFound over gRPC; a JSON claiming 400 does not change the status.
        let msg = r#"{"id":"svc","code":400,"detail":"x"}"#;
        let err = GatewayError::from_grpc_status(&Status::not_found(msg));
        assert_eq!(err.code, StatusCode::NOT_FOUND);
        assert_eq!(json(&err.body())["status"], "Not Found");
    }

    #[test]
    fn json_code_is_used_for_unknown_and_internal() {
        for status in [Status::unknown(""), Status::internal("")] {
            let msg = r#"{"id":"svc","code":422,"detail":"too short","status":"Unprocessable Entity"}"#;
            let err = GatewayError::from_grpc_status(&Status::new(status.code(), msg));
            assert_eq!(err.code, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", status.code());
            assert_eq!(err.id, "svc");
            assert_eq!(err.detail, "too short");
        }
        let capitalised = r#"{"Id":"svc","Code":400,"Detail":"bad","Status":"Bad Request"}"#;
        assert_eq!(
            GatewayError::from_grpc_status(&Status::unknown(capitalised)).code,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn json_code_outside_4xx_5xx_is_ignored() {
        for code in [
            "200",
            "302",
            "0",
            "600",
            "-1",
            "404.5",
            "\"404\"",
            "null",
            "99999999999",
        ] {
            let msg = format!(r#"{{"id":"svc","code":{code},"detail":"d"}}"#);
            let err = GatewayError::from_grpc_status(&Status::unknown(msg));
            assert_eq!(err.code, StatusCode::INTERNAL_SERVER_ERROR, "code {code}");
            assert_eq!(err.detail, "d", "code {code}");
        }
    }

    #[test]
    fn json_without_id_or_detail_is_plain_text() {
        for msg in [r#"{"code":404}"#, r#"{"error":"x"}"#, r#"{"id":1,"detail":2}"#, "{}"] {
            let err = GatewayError::from_grpc_status(&Status::internal(msg));
            assert_eq!(err.detail, msg);
            assert_eq!(err.id, GATEWAY_ID);
            assert_eq!(err.code, StatusCode::INTERNAL_SERVER_ERROR);
        }
    }

    #[test]
    fn partial_micro_json_fills_the_missing_part() {
        let err = GatewayError::from_grpc_status(&Status::not_found(r#"{"detail":"only detail"}"#));
        assert_eq!((err.id.as_str(), err.detail.as_str()), (GATEWAY_ID, "only detail"));
        let err = GatewayError::from_grpc_status(&Status::not_found(r#"{"id":"only-id"}"#));
        assert_eq!((err.id.as_str(), err.detail.as_str()), ("only-id", ""));
    }

    #[test]
    fn non_object_json_is_plain_text() {
        for msg in ["[1,2]", "\"quoted\"", "42", "true", "null"] {
            let err = GatewayError::from_grpc_status(&Status::invalid_argument(msg));
            assert_eq!(err.detail, msg);
            assert_eq!(err.code, StatusCode::BAD_REQUEST);
            assert_eq!(err.id, GATEWAY_ID);
        }
    }

    #[test]
    fn garbage_is_plain_text() {
        for msg in ["{\"id\":", "not json at all", "{id: 'x'}", "\u{0}\u{1}{"] {
            let err = GatewayError::from_grpc_status(&Status::unavailable(msg));
            assert_eq!(err.detail, msg);
            assert_eq!(err.code, StatusCode::SERVICE_UNAVAILABLE);
        }
    }

    #[test]
    fn empty_message_uses_the_code_description() {
        let err = GatewayError::from_grpc_status(&Status::unimplemented(""));
        assert_eq!(err.code, StatusCode::NOT_IMPLEMENTED);
        assert_eq!(err.detail, Code::Unimplemented.description());
        assert!(!err.detail.is_empty());
    }
}
