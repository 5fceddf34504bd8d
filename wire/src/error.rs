//! The Micro error (docs/gateway.md#errors): the JSON object `{"id","code","detail","status"}` a
//! service puts in its gRPC status message and the gateway writes to HTTP clients, and the table
//! between HTTP codes and gRPC codes both sides use.
//!
//! - A service turns an HTTP code into the gRPC code it answers with ([`grpc_code_for_http`]) and
//!   writes the JSON ([`MicroError`]).
//! - The gateway turns the gRPC code back into the HTTP status ([`http_code_for_grpc`]) and keeps the
//!   id and detail it finds in the message ([`Relayed::parse`]).
//!
//! `code` is the HTTP status, `status` its canonical reason phrase ([`reason_phrase`]).

use std::fmt;

use serde::{Deserialize, Serialize};
use tonic::{Code, Status};

/// A Micro error: `{"id", "code", "detail", "status"}`, serialized in that order. Also reads the
/// capitalised keys of Micro before v3.10 (`{"Id", "Code", "Detail", "Status"}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MicroError {
    /// Where the error comes from, e.g. `helloworld.call`.
    #[serde(alias = "Id", default)]
    pub id: String,
    /// The HTTP status code.
    #[serde(alias = "Code")]
    pub code: u16,
    /// What went wrong, for the caller.
    #[serde(alias = "Detail", default)]
    pub detail: String,
    /// The HTTP reason phrase of `code`, e.g. `Bad Request`.
    #[serde(alias = "Status", default)]
    pub status: String,
}

impl MicroError {
    /// An error with HTTP code `code`; `status` is its reason phrase (empty for unknown codes).
    pub fn new(id: impl Into<String>, code: u16, detail: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            code,
            detail: detail.into(),
            status: reason_phrase(code).to_string(),
        }
    }

    /// The gRPC code the error travels with ([`grpc_code_for_http`]).
    pub fn grpc_code(&self) -> Code {
        grpc_code_for_http(self.code)
    }

    /// The error as a gRPC status whose message is the JSON form.
    pub fn to_status(&self) -> Status {
        Status::new(self.grpc_code(), self.to_string())
    }

    /// The Micro error carried by `status`, if its message is one ([`MicroError::parse`]).
    pub fn from_status(status: &Status) -> Option<Self> {
        Self::parse(status.message())
    }

    /// Parses the JSON form; `None` unless it is an object with a non-zero numeric code. Strict: the
    /// keys are the lower-case or the capitalised ones. The gateway reads backends' messages more
    /// leniently ([`Relayed::parse`]).
    pub fn parse(message: &str) -> Option<Self> {
        serde_json::from_str::<Self>(message).ok().filter(|e| e.code != 0)
    }
}

impl fmt::Display for MicroError {
    /// The JSON form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Serializing strings and a number cannot fail; the fields keep their declared order.
        let json = serde_json::to_string(self).map_err(|_| fmt::Error)?;
        f.write_str(&json)
    }
}

impl std::error::Error for MicroError {}

impl From<MicroError> for Status {
    fn from(error: MicroError) -> Self {
        error.to_status()
    }
}

/// The JSON form, borrowed.
#[derive(Serialize)]
struct Body<'a> {
    id: &'a str,
    code: u16,
    detail: &'a str,
    status: &'a str,
}

/// The JSON form of an error without building a [`MicroError`]:
/// `{"id":"…","code":404,"detail":"…","status":"Not Found"}`, `status` being [`reason_phrase`]
/// of `code`.
pub fn body(id: &str, code: u16, detail: &str) -> Vec<u8> {
    let body = Body {
        id,
        code,
        detail,
        status: reason_phrase(code),
    };
    // Serializing a struct of strings and an integer into a Vec cannot fail.
    serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec())
}

/// The HTTP reason phrase of `code`, empty when it has none (like Go's `http.StatusText`, which
/// Micro uses).
pub fn reason_phrase(code: u16) -> &'static str {
    http::StatusCode::from_u16(code)
        .ok()
        .and_then(|c| c.canonical_reason())
        .unwrap_or("")
}

/// The gRPC code a service answers for an HTTP code: Micro's table (go-micro
/// `server/grpc/error.go`) plus 429 and 504. Codes not in the table are `Unknown` (the gateway then
/// keeps the JSON's code if it is from 400 to 599, see [`Relayed`]).
pub fn grpc_code_for_http(http: u16) -> Code {
    match http {
        200 => Code::Ok,
        400 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        408 | 504 => Code::DeadlineExceeded,
        409 => Code::AlreadyExists,
        412 => Code::FailedPrecondition,
        429 => Code::ResourceExhausted,
        500 => Code::Internal,
        501 => Code::Unimplemented,
        503 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// The HTTP status the gateway answers for a backend's gRPC error code (docs/gateway.md#errors):
/// InvalidArgument 400, Unauthenticated 401, PermissionDenied 403, NotFound 404, AlreadyExists 409,
/// ResourceExhausted 429, Unimplemented 501, Unavailable 503, DeadlineExceeded 504, any other code
/// 500 — `Ok` included, since a status with it is no answer.
pub fn http_code_for_grpc(code: Code) -> u16 {
    match code {
        Code::InvalidArgument => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound => 404,
        Code::AlreadyExists => 409,
        Code::ResourceExhausted => 429,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::DeadlineExceeded => 504,
        Code::Ok
        | Code::Cancelled
        | Code::Unknown
        | Code::FailedPrecondition
        | Code::Aborted
        | Code::OutOfRange
        | Code::Internal
        | Code::DataLoss => 500,
    }
}

/// What the gateway keeps of a Micro error JSON found in a backend's gRPC status message.
///
/// Lenient where [`MicroError::parse`] is strict, since it reads what any Micro version wrote: keys
/// match in any case; a string `id` or `detail` is what makes an object one (a `code` alone does
/// not); `code` counts only when it is a number from 400 to 599; `status` is ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Relayed {
    /// The `id`, when a string.
    pub id: Option<String>,
    /// The `detail`, when a string.
    pub detail: Option<String>,
    /// The `code`, when a number from 400 to 599.
    pub code: Option<u16>,
}

impl Relayed {
    /// The parts of the Micro error in `message`; `None` when it is not JSON, not an object, or an
    /// object without a string `id` or `detail`.
    pub fn parse(message: &str) -> Option<Self> {
        let serde_json::Value::Object(object) = serde_json::from_str(message).ok()? else {
            return None;
        };
        let field = |name: &str| {
            object
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        };
        let string = |name: &str| field(name).and_then(serde_json::Value::as_str).map(str::to_owned);
        let id = string("id");
        let detail = string("detail");
        if id.is_none() && detail.is_none() {
            return None;
        }
        let code = field("code")
            .and_then(serde_json::Value::as_u64)
            .filter(|code| (400..=599).contains(code))
            .and_then(|code| u16::try_from(code).ok());
        Some(Self { id, detail, code })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use serde_json::{Value, json};

    use super::*;

    const ALL_CODES: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    #[test]
    fn json_round_trip() {
        let error = MicroError::new("helloworld.call", 400, "name \"x\" is\nbad");
        let json = error.to_string();
        assert_eq!(
            json,
            r#"{"id":"helloworld.call","code":400,"detail":"name \"x\" is\nbad","status":"Bad Request"}"#
        );
        assert_eq!(MicroError::parse(&json), Some(error.clone()));
        assert_eq!(body(&error.id, error.code, &error.detail), json.as_bytes());
        let status = error.to_status();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(MicroError::from_status(&status), Some(error.clone()));
        assert_eq!(Status::from(error).message(), json);
        let relayed = Relayed::parse(&json).unwrap();
        assert_eq!(
            relayed,
            Relayed {
                id: Some("helloworld.call".into()),
                detail: Some("name \"x\" is\nbad".into()),
                code: Some(400),
            }
        );
    }

    #[test]
    fn parse_is_strict() {
        let old = MicroError::parse(r#"{"Id":"go.micro.api","Code":401,"Detail":"no","Status":"Unauthorized"}"#);
        assert_eq!(old, Some(MicroError::new("go.micro.api", 401, "no")));
        // The status is kept as sent.
        assert_eq!(
            MicroError::parse(r#"{"code":404,"status":"Gone"}"#).map(|e| (e.id, e.status)),
            Some((String::new(), "Gone".to_string()))
        );
        for other in [
            "",
            "not json",
            "[]",
            r#"{"id":"x"}"#,
            r#"{"code":0}"#,
            r#"{"code":"400"}"#,
            r#"{"ID":"x","CODE":400}"#,
            "{\"code\":70000}",
        ] {
            assert_eq!(MicroError::parse(other), None, "{other}");
        }
    }

    #[test]
    fn relayed_is_lenient() {
        let any_case = Relayed::parse(r#"{"ID":"svc","DETAIL":"bad"}"#).unwrap();
        assert_eq!(
            (any_case.id.as_deref(), any_case.detail.as_deref()),
            (Some("svc"), Some("bad"))
        );
        assert_eq!(Relayed::parse(r#"{"detail":"only"}"#).unwrap().id, None);
        assert_eq!(Relayed::parse(r#"{"id":"only"}"#).unwrap().detail, None);
        for (code, kept) in [
            ("422", Some(422)),
            ("400", Some(400)),
            ("599", Some(599)),
            ("200", None),
            ("302", None),
            ("0", None),
            ("600", None),
            ("-1", None),
            ("404.5", None),
            ("\"404\"", None),
            ("null", None),
            ("99999999999", None),
        ] {
            let message = format!(r#"{{"id":"svc","code":{code},"detail":"d"}}"#);
            assert_eq!(Relayed::parse(&message).unwrap().code, kept, "{code}");
        }
        for not_one in [
            r#"{"code":404}"#,
            r#"{"error":"x"}"#,
            r#"{"id":1,"detail":2}"#,
            "{}",
            "[1,2]",
            "\"quoted\"",
            "42",
            "null",
            "{\"id\":",
            "not json at all",
        ] {
            assert_eq!(Relayed::parse(not_one), None, "{not_one}");
        }
    }

    #[test]
    fn grpc_to_http_table() {
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
        assert_eq!(table.map(|(code, _)| code), ALL_CODES);
        for (code, http) in table {
            assert_eq!(http_code_for_grpc(code), http, "{code:?}");
        }
    }

    #[test]
    fn http_to_grpc_table_and_round_trip() {
        // (HTTP, gRPC, HTTP the gateway answers for that gRPC code)
        let table = [
            (400, Code::InvalidArgument, 400),
            (401, Code::Unauthenticated, 401),
            (403, Code::PermissionDenied, 403),
            (404, Code::NotFound, 404),
            (408, Code::DeadlineExceeded, 504),
            (409, Code::AlreadyExists, 409),
            (412, Code::FailedPrecondition, 500),
            (429, Code::ResourceExhausted, 429),
            (500, Code::Internal, 500),
            (501, Code::Unimplemented, 501),
            (503, Code::Unavailable, 503),
            (504, Code::DeadlineExceeded, 504),
            (418, Code::Unknown, 500),
            (422, Code::Unknown, 500),
            (502, Code::Unknown, 500),
        ];
        for (http, grpc, back) in table {
            assert_eq!(grpc_code_for_http(http), grpc, "{http}");
            assert_eq!(MicroError::new("x", http, "").grpc_code(), grpc, "{http}");
            assert_eq!(http_code_for_grpc(grpc), back, "{http}");
        }
        assert_eq!(grpc_code_for_http(200), Code::Ok);
    }

    #[test]
    fn reason_phrases() {
        let body: Value = serde_json::from_slice(&body("svc", 429, "slow down")).unwrap();
        assert_eq!(
            body,
            json!({"id": "svc", "code": 429, "detail": "slow down", "status": "Too Many Requests"})
        );
        assert_eq!(reason_phrase(404), "Not Found");
        assert_eq!(reason_phrase(499), "");
        assert_eq!(reason_phrase(0), "");
        assert_eq!(reason_phrase(1000), "");
        assert_eq!(MicroError::new("x", 499, "").status, "");
    }
}
