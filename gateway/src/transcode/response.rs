//! The response message → JSON.

use bytes::Bytes;
use prost_reflect::{DynamicMessage, SerializeOptions};

use super::TranscodeError;

/// Writes a response message as JSON, in the canonical proto3 JSON mapping, with these choices:
///
/// - field names in lowerCamelCase (the JSON names);
/// - every field without presence is written even at its default (`{"message":""}`, not `{}`;
///   `0`, `false`, `[]`, `{}` likewise), so a client sees the whole shape; fields with presence
///   (message fields, oneof members, proto3 `optional`) appear only when set;
/// - enums as value names (a number unknown to the descriptor as the number);
/// - 64-bit integers as strings (`"count":"5"`), as the mapping requires since JavaScript numbers
///   cannot hold them; `NaN`/`Infinity` floats as those strings; bytes in standard base64;
/// - well-known types in their JSON forms (Timestamp as RFC 3339, Duration as `"1.5s"`, …);
/// - unknown fields (from a newer backend) are dropped.
///
/// Fails only for a message that has no JSON form ([`TranscodeError::Response`], a 502).
pub fn response_to_json(msg: &DynamicMessage) -> Result<Bytes, TranscodeError> {
    const SERIALIZE: SerializeOptions = SerializeOptions::new()
        .skip_default_fields(false)
        .stringify_64_bit_integers(true)
        .use_enum_numbers(false)
        .use_proto_field_name(false);
    let mut serializer = serde_json::Serializer::new(Vec::with_capacity(128));
    msg.serialize_with_options(&mut serializer, &SERIALIZE)
        .map_err(|err| TranscodeError::Response {
            reason: err.to_string(),
        })?;
    Ok(Bytes::from(serializer.into_inner()))
}
