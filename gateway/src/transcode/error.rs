//! The error of a request that does not map to its message.

use crate::error::GatewayError;

/// A request the gateway cannot map to the request message. Every variant names the problem and,
/// where there is one, the field (as a path: `inner.child.name`, `ids[2]`, `counts[key]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranscodeError {
    /// The body is not JSON.
    #[error("malformed JSON at line {line} column {column}: {reason}")]
    MalformedJson {
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// What the JSON parser found.
        reason: String,
    },
    /// The body is JSON, but not the object a message needs.
    #[error("expected a JSON object for {message}, found {found}")]
    NotAnObject {
        /// Full name of the request message.
        message: String,
        /// The JSON type found (`an array`, `a string`, …).
        found: &'static str,
    },
    /// A field the message does not have.
    #[error("unknown field \"{path}\" in {message}")]
    UnknownField {
        /// Path of the field, as the client wrote it.
        path: String,
        /// Full name of the message that has no such field.
        message: String,
    },
    /// A value that does not fit the field's type.
    #[error("field \"{path}\": invalid value {value} for {expected}: {reason}")]
    InvalidValue {
        /// Path of the field.
        path: String,
        /// The client's value as JSON, shortened.
        value: String,
        /// The field's type (`int64`, `kitchen.Color`, `google.protobuf.Timestamp`, `repeated string`, …).
        expected: String,
        /// Why it does not fit.
        reason: String,
    },
    /// Two fields of the same `oneof`.
    #[error("field \"{path}\": oneof \"{oneof}\" is already set by \"{other}\"")]
    OneofConflict {
        /// Path of the second field.
        path: String,
        /// Name of the oneof.
        oneof: String,
        /// Path of the field set first.
        other: String,
    },
    /// A query or form parameter whose name or use does not fit the message (a map without a key,
    /// a path through a scalar, a singular field given twice, …).
    #[error("parameter \"{path}\": {reason}")]
    InvalidParameter {
        /// The parameter name, or the part of it that is wrong.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A request that does not map for a reason not pinned to one field.
    #[error("invalid request: {reason}")]
    Invalid {
        /// What is wrong.
        reason: String,
    },
    /// A response message that has no proto3 JSON form (a Timestamp outside years 1–9999, an `Any`
    /// of a type not in the descriptors, …): the backend's fault, not the client's.
    #[error("response has no JSON form: {reason}")]
    Response {
        /// What is wrong.
        reason: String,
    },
}

impl TranscodeError {
    /// A bounded name for the kind of error, for metrics labels and logs.
    pub fn category(&self) -> &'static str {
        match self {
            TranscodeError::MalformedJson { .. } => "malformed_json",
            TranscodeError::NotAnObject { .. } => "not_an_object",
            TranscodeError::UnknownField { .. } => "unknown_field",
            TranscodeError::InvalidValue { .. } => "invalid_value",
            TranscodeError::OneofConflict { .. } => "oneof_conflict",
            TranscodeError::InvalidParameter { .. } => "invalid_parameter",
            TranscodeError::Invalid { .. } => "invalid",
            TranscodeError::Response { .. } => "response",
        }
    }
}

/// Request errors are 400 Bad Request with the error's text as detail; a [`TranscodeError::Response`]
/// is the backend's fault and becomes 502 Bad Gateway.
impl From<TranscodeError> for GatewayError {
    fn from(err: TranscodeError) -> Self {
        match err {
            TranscodeError::Response { .. } => GatewayError::bad_gateway(err.to_string()),
            _ => GatewayError::bad_request(err.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_are_distinct() {
        let errors = [
            TranscodeError::MalformedJson {
                line: 1,
                column: 1,
                reason: String::new(),
            },
            TranscodeError::NotAnObject {
                message: String::new(),
                found: "null",
            },
            TranscodeError::UnknownField {
                path: String::new(),
                message: String::new(),
            },
            TranscodeError::InvalidValue {
                path: String::new(),
                value: String::new(),
                expected: String::new(),
                reason: String::new(),
            },
            TranscodeError::OneofConflict {
                path: String::new(),
                oneof: String::new(),
                other: String::new(),
            },
            TranscodeError::InvalidParameter {
                path: String::new(),
                reason: String::new(),
            },
            TranscodeError::Invalid { reason: String::new() },
            TranscodeError::Response { reason: String::new() },
        ];
        let mut categories: Vec<_> = errors.iter().map(TranscodeError::category).collect();
        categories.sort_unstable();
        categories.dedup();
        assert_eq!(categories.len(), errors.len());
    }

    #[test]
    fn only_response_errors_are_not_400() {
        let bad = GatewayError::from(TranscodeError::UnknownField {
            path: "nmae".into(),
            message: "m.M".into(),
        });
        assert_eq!(bad.code, http::StatusCode::BAD_REQUEST);
        assert_eq!(bad.detail, r#"unknown field "nmae" in m.M"#);
        let upstream = GatewayError::from(TranscodeError::Response { reason: "r".into() });
        assert_eq!(upstream.code, http::StatusCode::BAD_GATEWAY);
        assert_eq!(upstream.detail, "response has no JSON form: r");
    }
}
