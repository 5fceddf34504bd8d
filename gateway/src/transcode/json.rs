//! A JSON body → the request message.

use prost_reflect::{DynamicMessage, MessageDescriptor};
use serde_json::Value;

use super::diagnose::diagnose;
use super::{DESERIALIZE, TranscodeError};

/// Builds the request message from a JSON body (proto3 JSON mapping).
///
/// - Field names are the lowerCamelCase JSON names or the original proto names (`userId` or
///   `user_id`); 64-bit integers may be numbers or strings; enums are names or numbers; bytes are
///   base64 (standard or URL-safe); well-known types take their JSON forms; `null` means the default.
/// - An empty or whitespace-only body is the empty message (a POST without a body is a call without
///   arguments).
/// - Anything else must be a JSON object: a body that is not JSON is [`TranscodeError::MalformedJson`]
///   (with line and column); an unknown field, a value that does not fit its field, or two members
///   of one oneof is an error naming the field's path.
pub fn request_from_json(desc: &MessageDescriptor, body: &[u8]) -> Result<DynamicMessage, TranscodeError> {
    if body.iter().all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
        return Ok(DynamicMessage::new(desc.clone()));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let result = DynamicMessage::deserialize_with_options(desc.clone(), &mut deserializer, &DESERIALIZE)
        .and_then(|message| deserializer.end().map(|()| message));
    match result {
        Ok(message) => Ok(message),
        // A value the message refused: find the field it belongs to. The whole body is parsed first,
        // so that a syntax error after the refused value is still reported as malformed JSON.
        Err(err) if err.is_data() => match serde_json::from_slice::<Value>(body) {
            Ok(value) => Err(diagnose(desc, &value, &err)),
            Err(syntax) => Err(malformed(&syntax)),
        },
        Err(err) => Err(malformed(&err)),
    }
}

fn malformed(err: &serde_json::Error) -> TranscodeError {
    let text = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    let reason = text.strip_suffix(&suffix).unwrap_or(&text).to_owned();
    TranscodeError::MalformedJson {
        line: err.line(),
        column: err.column(),
        reason,
    }
}
