//! Errors the gateway writes (SPEC §7): `{"id","code","detail","status"}` as `application/json`.

use bytes::Bytes;
use http::StatusCode;

/// The `id` of errors the gateway itself produces.
pub const GATEWAY_ID: &str = "microplane.gateway";

/// An error response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayError {
    /// HTTP status.
    pub code: StatusCode,
    /// Who produced it.
    pub id: String,
    /// What happened, for the caller.
    pub detail: String,
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code.as_u16(), self.detail)
    }
}

impl std::error::Error for GatewayError {}

impl GatewayError {
    /// An error with the gateway's id.
    pub fn new(code: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            id: GATEWAY_ID.to_string(),
            detail: detail.into(),
        }
    }
    /// 400.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }
    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }
    /// 405.
    pub fn method_not_allowed(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, detail)
    }
    /// 413.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {limit} bytes"),
        )
    }
    /// 415.
    pub fn unsupported_media_type(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, detail)
    }
    /// 500.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, detail)
    }
    /// 501.
    pub fn not_implemented(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_IMPLEMENTED, detail)
    }
    /// 502.
    pub fn bad_gateway(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, detail)
    }
    /// 503.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, detail)
    }
    /// 504.
    pub fn gateway_timeout(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, detail)
    }

    /// The JSON body.
    pub fn body(&self) -> Bytes {
        let v = serde_json::json!({
            "id": self.id,
            "code": self.code.as_u16(),
            "detail": self.detail,
            "status": self.code.canonical_reason().unwrap_or(""),
        });
        Bytes::from(v.to_string())
    }
}

/// HTTP status for a gRPC code (SPEC §7).
pub fn http_code(code: tonic::Code) -> StatusCode {
    use tonic::Code;
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The error for a backend's gRPC status. The HTTP code follows the gRPC code; a message that is a
/// Micro error object (`{"id","code","detail",…}`, keys in any case) keeps its id and detail, and,
/// when the gRPC code says nothing more precise (Unknown, Internal), its code too.
pub fn from_grpc_status(status: &tonic::Status) -> GatewayError {
    let mut code = http_code(status.code());
    let mut id = "microplane.backend".to_string();
    let mut detail = status.message().to_string();
    if let Ok(serde_json::Value::Object(obj)) = serde_json::from_str::<serde_json::Value>(status.message()) {
        let get = |k: &str| obj.iter().find(|(key, _)| key.eq_ignore_ascii_case(k)).map(|(_, v)| v);
        if let Some(d) = get("detail").and_then(|v| v.as_str()) {
            detail = d.to_string();
            if let Some(i) = get("id").and_then(|v| v.as_str()) {
                id = i.to_string();
            }
            let imprecise = matches!(status.code(), tonic::Code::Unknown | tonic::Code::Internal);
            if imprecise
                && let Some(c) = get("code")
                    .and_then(serde_json::Value::as_u64)
                    .and_then(|c| u16::try_from(c).ok())
                    .and_then(|c| StatusCode::from_u16(c).ok())
                    .filter(|c| c.is_client_error() || c.is_server_error())
            {
                code = c;
            }
        }
    }
    GatewayError { code, id, detail }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn body_shape() {
        let e = GatewayError::not_found("service x not found");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id": GATEWAY_ID, "code": 404, "detail": "service x not found", "status": "Not Found"})
        );
    }

    #[test]
    fn code_table() {
        let table = [
            (Code::InvalidArgument, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::ResourceExhausted, 429),
            (Code::Unimplemented, 501),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
            (Code::Unknown, 500),
            (Code::Internal, 500),
            (Code::Aborted, 500),
            (Code::FailedPrecondition, 500),
            (Code::DataLoss, 500),
            (Code::Cancelled, 500),
            (Code::OutOfRange, 500),
        ];
        for (c, http) in table {
            let e = from_grpc_status(&tonic::Status::new(c, "boom"));
            assert_eq!(e.code.as_u16(), http, "{c:?}");
            assert_eq!(e.detail, "boom");
        }
    }

    #[test]
    fn micro_error_messages_keep_id_and_detail() {
        let s = tonic::Status::new(
            Code::InvalidArgument,
            r#"{"id":"helloworld","code":400,"detail":"name is required","status":"Bad Request"}"#,
        );
        let e = from_grpc_status(&s);
        assert_eq!((e.code.as_u16(), e.id.as_str(), e.detail.as_str()), (400, "helloworld", "name is required"));
        // Micro before v3.10 capitalised the keys; an Unknown code takes the object's code.
        let s = tonic::Status::new(Code::Unknown, r#"{"Id":"go.micro.x","Code":409,"Detail":"dup"}"#);
        let e = from_grpc_status(&s);
        assert_eq!((e.code.as_u16(), e.id.as_str(), e.detail.as_str()), (409, "go.micro.x", "dup"));
        // A precise gRPC code wins over the object's code.
        let s = tonic::Status::new(Code::NotFound, r#"{"id":"x","code":400,"detail":"gone"}"#);
        assert_eq!(from_grpc_status(&s).code.as_u16(), 404);
        // Not a Micro error object: the message is the detail.
        for m in ["[1,2]", "\"str\"", "{\"other\":1}", "{not json", "{\"code\":200,\"detail\":5}"] {
            let e = from_grpc_status(&tonic::Status::new(Code::Internal, m));
            assert_eq!((e.code.as_u16(), e.detail.as_str()), (500, m), "{m}");
        }
        // A code that is not an error status is ignored.
        let s = tonic::Status::new(Code::Unknown, r#"{"id":"x","code":200,"detail":"odd"}"#);
        assert_eq!(from_grpc_status(&s).code.as_u16(), 500);
    }
}
