//! Micro-style errors (docs/gateway.md#errors).
//!
//! A handler returns `Err(errors::bad_request("helloworld.call", "name is required"))`: a
//! [`tonic::Status`] whose code fits the HTTP code and whose message is the JSON
//! `{"id": "helloworld.call", "code": 400, "detail": "name is required", "status": "Bad Request"}`.
//! The gateway turns the gRPC code back into the HTTP status (with [`http_code`]'s table) and keeps
//! the id and detail from the message. The constructors below are exactly the codes that survive
//! that round trip; [`MicroError::new`] takes any other.

use tonic::{Code, Status};

/// A Micro error: `{"id", "code", "detail", "status"}`. Also reads the capitalised keys of Micro
/// before v3.10 (`{"Id", "Code", "Detail", "Status"}`). [`MicroError::to_status`] is the gRPC status
/// a handler returns; [`MicroError::from_status`] reads one back.
pub use microplane_wire::error::MicroError;
/// The gRPC code for an HTTP code: Micro's table (go-micro `server/grpc/error.go`) plus 429 and 504.
pub use microplane_wire::error::grpc_code_for_http as grpc_code;
/// The HTTP reason phrase of `code`, empty when it has none (like Go's `http.StatusText`).
pub use microplane_wire::error::reason_phrase;

/// The HTTP code the gateway answers for a gRPC code (docs/gateway.md#errors), and 200 for `Ok`
/// (the gateway answers 500 for a status with `Ok`, which is no error).
pub fn http_code(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        code => microplane_wire::error::http_code_for_grpc(code),
    }
}

macro_rules! constructors {
    ($($(#[$doc:meta])* $name:ident => $code:literal;)*) => {$(
        $(#[$doc])*
        pub fn $name(id: impl Into<String>, detail: impl Into<String>) -> Status {
            MicroError::new(id, $code, detail).to_status()
        }
    )*};
}

constructors! {
    /// 400 Bad Request, gRPC `InvalidArgument`: the request is malformed or invalid.
    bad_request => 400;
    /// 401 Unauthorized, gRPC `Unauthenticated`: the call needs an account.
    unauthorized => 401;
    /// 403 Forbidden, gRPC `PermissionDenied`: the account may not do this.
    forbidden => 403;
    /// 404 Not Found, gRPC `NotFound`.
    not_found => 404;
    /// 409 Conflict, gRPC `AlreadyExists`.
    conflict => 409;
    /// 429 Too Many Requests, gRPC `ResourceExhausted`.
    too_many_requests => 429;
    /// 500 Internal Server Error, gRPC `Internal`.
    internal => 500;
    /// 501 Not Implemented, gRPC `Unimplemented`.
    not_implemented => 501;
    /// 503 Service Unavailable, gRPC `Unavailable`.
    unavailable => 503;
    /// 504 Gateway Timeout, gRPC `DeadlineExceeded`.
    gateway_timeout => 504;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn constructors_map_to_grpc_codes_and_back() {
        type Make = fn(&'static str, &'static str) -> Status;
        let cases: [(Make, Code, u16, &str); 10] = [
            (bad_request, Code::InvalidArgument, 400, "Bad Request"),
            (unauthorized, Code::Unauthenticated, 401, "Unauthorized"),
            (forbidden, Code::PermissionDenied, 403, "Forbidden"),
            (not_found, Code::NotFound, 404, "Not Found"),
            (conflict, Code::AlreadyExists, 409, "Conflict"),
            (too_many_requests, Code::ResourceExhausted, 429, "Too Many Requests"),
            (internal, Code::Internal, 500, "Internal Server Error"),
            (not_implemented, Code::Unimplemented, 501, "Not Implemented"),
            (unavailable, Code::Unavailable, 503, "Service Unavailable"),
            (gateway_timeout, Code::DeadlineExceeded, 504, "Gateway Timeout"),
        ];
        for (make, grpc, http, phrase) in cases {
            let status = make("svc.method", "what went wrong");
            assert_eq!(status.code(), grpc, "{http}");
            assert_eq!(http_code(status.code()), http, "round trip through the gateway's table");
            let body: Value = serde_json::from_str(status.message()).unwrap();
            assert_eq!(
                body,
                json!({"id": "svc.method", "code": http, "detail": "what went wrong", "status": phrase})
            );
        }
    }

    #[test]
    fn message_is_the_json_form_with_escaping() {
        let status = bad_request("helloworld.call", "name \"x\" is\nbad");
        assert_eq!(
            status.message(),
            r#"{"id":"helloworld.call","code":400,"detail":"name \"x\" is\nbad","status":"Bad Request"}"#
        );
        let parsed = MicroError::from_status(&status).unwrap();
        assert_eq!(parsed, MicroError::new("helloworld.call", 400, "name \"x\" is\nbad"));
    }

    #[test]
    fn parses_both_key_spellings_and_refuses_other_messages() {
        let old = MicroError::parse(r#"{"Id":"go.micro.api","Code":401,"Detail":"no","Status":"Unauthorized"}"#);
        assert_eq!(old, Some(MicroError::new("go.micro.api", 401, "no")));
        assert_eq!(
            MicroError::parse(r#"{"code": 404}"#).map(|e| e.status),
            Some(String::new())
        );
        for other in [
            "",
            "not json",
            "[]",
            r#"{"id":"x"}"#,
            r#"{"code":0}"#,
            r#"{"code":"400"}"#,
            "{\"code\":70000}",
        ] {
            assert_eq!(MicroError::parse(other), None, "{other}");
        }
        assert_eq!(MicroError::from_status(&Status::internal("plain")), None);
    }

    #[test]
    fn other_codes() {
        assert_eq!(MicroError::new("x", 408, "slow").grpc_code(), Code::DeadlineExceeded);
        assert_eq!(MicroError::new("x", 412, "").grpc_code(), Code::FailedPrecondition);
        assert_eq!(MicroError::new("x", 418, "").grpc_code(), Code::Unknown);
        assert_eq!(MicroError::new("x", 499, "").status, "");
        assert_eq!(Status::from(MicroError::new("x", 404, "gone")).code(), Code::NotFound);
        for code in [
            Code::Unknown,
            Code::Internal,
            Code::DataLoss,
            Code::Aborted,
            Code::Cancelled,
        ] {
            assert_eq!(http_code(code), 500, "{code:?}");
        }
    }
}
