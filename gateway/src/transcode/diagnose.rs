//! Finding the field at fault in a JSON value its message refused (the error path only).

use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value};

use super::{DESERIALIZE, TranscodeError};

/// The longest rendering of a client's value quoted back in an error.
const MAX_SHOWN_VALUE: usize = 64;

/// Finds, in a JSON value the message `desc` refused with `err`, the field at fault.
///
/// Walks the value along the descriptor, checking each leaf (scalar, enum, well-known type) on its
/// own, so the work stays linear in the size of the value. Runs only on the error path.
pub(super) fn diagnose(desc: &MessageDescriptor, value: &Value, err: &serde_json::Error) -> TranscodeError {
    let fallback = || TranscodeError::Invalid {
        reason: err.to_string(),
    };
    if is_well_known_type(desc) {
        return fallback();
    }
    match value {
        Value::Object(object) => locate_in_message(desc, object, "").unwrap_or_else(fallback),
        other => TranscodeError::NotAnObject {
            message: desc.full_name().to_owned(),
            found: json_type(other),
        },
    }
}

fn locate_in_message(desc: &MessageDescriptor, object: &Map<String, Value>, prefix: &str) -> Option<TranscodeError> {
    // (oneof name, path of the member that set it)
    let mut oneofs_set: Vec<(String, String)> = Vec::new();
    for (key, value) in object {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let Some(field) = desc.get_field_by_json_name(key).or_else(|| desc.get_field_by_name(key)) else {
            if desc.get_extension_by_json_name(key).is_some() {
                // Extensions are rare in service APIs; check the whole entry without going deeper.
                if let Err(err) = check_leaf(desc, key, value.clone()) {
                    return Some(invalid_value(path, value, "extension".to_owned(), &err));
                }
                continue;
            }
            return Some(TranscodeError::UnknownField {
                path,
                message: desc.full_name().to_owned(),
            });
        };
        if value.is_null() {
            continue; // null is the default value, for every field
        }
        if let Some(oneof) = field.containing_oneof() {
            if let Some((_, other)) = oneofs_set.iter().find(|(name, _)| name == oneof.name()) {
                return Some(TranscodeError::OneofConflict {
                    path,
                    oneof: oneof.name().to_owned(),
                    other: other.clone(),
                });
            }
            oneofs_set.push((oneof.name().to_owned(), path.clone()));
        }
        if let Some(err) = locate_in_field(desc, &field, key, value, &path) {
            return Some(err);
        }
    }
    None
}

fn locate_in_field(
    parent: &MessageDescriptor,
    field: &FieldDescriptor,
    key: &str,
    value: &Value,
    path: &str,
) -> Option<TranscodeError> {
    if field.is_map() {
        let Value::Object(entries) = value else {
            return Some(not_a(path, value, type_name(field), "a JSON object"));
        };
        let key_kind = map_key_field(field).kind();
        let value_field = map_value_field(field);
        for (map_key, entry) in entries {
            let entry_path = format!("{path}[{map_key}]");
            if let Some(reason) = map_key_error(&key_kind, map_key) {
                return Some(TranscodeError::InvalidValue {
                    path: entry_path,
                    value: show(&Value::String(map_key.clone())),
                    expected: format!("{} map key", kind_name(&key_kind)),
                    reason,
                });
            }
            let wrap = |entry: Value| Value::Object(Map::from_iter([(map_key.clone(), entry)]));
            if let Some(err) = locate_in_kind(parent, key, &value_field.kind(), entry, &entry_path, &wrap) {
                return Some(err);
            }
        }
        None
    } else if field.is_list() {
        let Value::Array(elements) = value else {
            return Some(not_a(path, value, type_name(field), "a JSON array"));
        };
        let wrap = |element: Value| Value::Array(vec![element]);
        elements.iter().enumerate().find_map(|(index, element)| {
            locate_in_kind(parent, key, &field.kind(), element, &format!("{path}[{index}]"), &wrap)
        })
    } else {
        locate_in_kind(parent, key, &field.kind(), value, path, &|value| value)
    }
}

/// Checks one value of kind `kind`, found at `path`; `wrap` turns it into what the field `key` of
/// `parent` holds (itself, a one-element array, a one-entry map), so a leaf is checked by
/// deserializing `parent` with only that field.
fn locate_in_kind(
    parent: &MessageDescriptor,
    key: &str,
    kind: &Kind,
    value: &Value,
    path: &str,
    wrap: &dyn Fn(Value) -> Value,
) -> Option<TranscodeError> {
    if let Kind::Message(message) = kind
        && !is_well_known_type(message)
    {
        return match value {
            Value::Object(object) => locate_in_message(message, object, path),
            other => Some(not_a(path, other, message.full_name().to_owned(), "a JSON object")),
        };
    }
    check_leaf(parent, key, wrap(value.clone()))
        .err()
        .map(|err| invalid_value(path.to_owned(), value, kind_name(kind), &err))
}

/// Deserializes `parent` from `{key: value}`.
fn check_leaf(parent: &MessageDescriptor, key: &str, value: Value) -> Result<(), serde_json::Error> {
    let object = Value::Object(Map::from_iter([(key.to_owned(), value)]));
    DynamicMessage::deserialize_with_options(parent.clone(), &object, &DESERIALIZE).map(drop)
}

/// Why `key` is not a map key of kind `kind`, parsed as the proto3 JSON mapping (and prost-reflect) do.
fn map_key_error(kind: &Kind, key: &str) -> Option<String> {
    let result = match kind {
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => key.parse::<i32>().map(drop).map_err(|e| e.to_string()),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => key.parse::<i64>().map(drop).map_err(|e| e.to_string()),
        Kind::Uint32 | Kind::Fixed32 => key.parse::<u32>().map(drop).map_err(|e| e.to_string()),
        Kind::Uint64 | Kind::Fixed64 => key.parse::<u64>().map(drop).map_err(|e| e.to_string()),
        Kind::Bool => key.parse::<bool>().map(drop).map_err(|e| e.to_string()),
        _ => Ok(()),
    };
    result.err()
}

fn invalid_value(path: String, value: &Value, expected: String, err: &serde_json::Error) -> TranscodeError {
    TranscodeError::InvalidValue {
        path,
        value: show(value),
        expected,
        reason: err.to_string(),
    }
}

fn not_a(path: &str, value: &Value, expected: String, wanted: &str) -> TranscodeError {
    TranscodeError::InvalidValue {
        path: path.to_owned(),
        value: show(value),
        expected,
        reason: format!("expected {wanted}, found {}", json_type(value)),
    }
}

/// A client's value as JSON, shortened to [`MAX_SHOWN_VALUE`] characters.
pub(super) fn show(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(MAX_SHOWN_VALUE) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The field's type as the proto file writes it: `int64`, `repeated string`, `map<string, int32>`.
pub(super) fn type_name(field: &FieldDescriptor) -> String {
    if field.is_map() {
        format!(
            "map<{}, {}>",
            kind_name(&map_key_field(field).kind()),
            kind_name(&map_value_field(field).kind())
        )
    } else if field.is_list() {
        format!("repeated {}", kind_name(&field.kind()))
    } else {
        kind_name(&field.kind())
    }
}

pub(super) fn kind_name(kind: &Kind) -> String {
    let name = match kind {
        Kind::Double => "double",
        Kind::Float => "float",
        Kind::Int32 => "int32",
        Kind::Int64 => "int64",
        Kind::Uint32 => "uint32",
        Kind::Uint64 => "uint64",
        Kind::Sint32 => "sint32",
        Kind::Sint64 => "sint64",
        Kind::Fixed32 => "fixed32",
        Kind::Fixed64 => "fixed64",
        Kind::Sfixed32 => "sfixed32",
        Kind::Sfixed64 => "sfixed64",
        Kind::Bool => "bool",
        Kind::String => "string",
        Kind::Bytes => "bytes",
        Kind::Message(message) => return message.full_name().to_owned(),
        Kind::Enum(enumeration) => return enumeration.full_name().to_owned(),
    };
    name.to_owned()
}

fn map_key_field(field: &FieldDescriptor) -> FieldDescriptor {
    match field.kind() {
        Kind::Message(entry) => entry.map_entry_key_field(),
        // A map field's kind is always its entry message.
        _ => field.clone(),
    }
}

pub(super) fn map_value_field(field: &FieldDescriptor) -> FieldDescriptor {
    match field.kind() {
        Kind::Message(entry) => entry.map_entry_value_field(),
        _ => field.clone(),
    }
}

/// The well-known types whose JSON form is not an object of their fields.
pub(super) fn is_well_known_type(desc: &MessageDescriptor) -> bool {
    matches!(
        desc.full_name(),
        "google.protobuf.Any"
            | "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.Struct"
            | "google.protobuf.FloatValue"
            | "google.protobuf.DoubleValue"
            | "google.protobuf.Int32Value"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.BoolValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
            | "google.protobuf.FieldMask"
            | "google.protobuf.ListValue"
            | "google.protobuf.Value"
            | "google.protobuf.Empty"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_values_are_json_and_short() {
        assert_eq!(show(&Value::String("abc".into())), "\"abc\"");
        assert_eq!(show(&serde_json::json!({"a": [1]})), r#"{"a":[1]}"#);
        let long = show(&Value::String("é".repeat(200)));
        assert_eq!(long.chars().count(), MAX_SHOWN_VALUE + 1);
        assert!(long.starts_with("\"éé") && long.ends_with('…'));
        // exactly at the limit: not shortened
        let exact = Value::String("x".repeat(MAX_SHOWN_VALUE - 2));
        assert_eq!(show(&exact), exact.to_string());
    }

    #[test]
    fn map_keys_parse_like_the_json_mapping() {
        assert_eq!(map_key_error(&Kind::Int32, "-5"), None);
        assert!(map_key_error(&Kind::Int32, "2147483648").is_some());
        assert_eq!(map_key_error(&Kind::Sfixed64, "-9223372036854775808"), None);
        assert!(map_key_error(&Kind::Uint32, "-1").is_some());
        assert!(map_key_error(&Kind::Fixed64, "1.0").is_some());
        assert_eq!(map_key_error(&Kind::Bool, "true"), None);
        assert!(map_key_error(&Kind::Bool, "True").is_some());
        assert_eq!(map_key_error(&Kind::String, "anything at all"), None);
    }
}
