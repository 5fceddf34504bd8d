//! HTTP/JSON ↔ protobuf for `Grpc` services (docs/gateway.md).
//!
//! The gateway knows a backend's messages only through descriptors (from gRPC server reflection),
//! so everything here works on [`prost_reflect::DynamicMessage`]:
//!
//! - [`find_method`] maps an endpoint `Svc.Method` to a gRPC method;
//! - [`request_from_json`] (a JSON body) and [`request_from_params`] (query parameters, form fields)
//!   build the request message;
//! - [`DynamicCodec`] carries dynamic messages over tonic;
//! - [`response_to_json`] writes the response message as JSON.
//!
//! Request errors are [`TranscodeError`]s that name the field, and become 400s ([`GatewayError`]).

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use bytes::Bytes;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
    SerializeOptions,
};
use serde_json::{Map, Value};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::error::GatewayError;

/// The most `.`-separated segments a parameter name may have. Bounds the recursion on hostile input
/// (a recursive message type would otherwise let a long name nest without end).
pub const MAX_PARAM_DEPTH: usize = 32;

/// The longest rendering of a client's value quoted back in an error.
const MAX_SHOWN_VALUE: usize = 64;

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

/// Deserialization per the proto3 JSON mapping, unknown fields (and unknown enum names) refused.
const DESERIALIZE: DeserializeOptions = DeserializeOptions::new().deny_unknown_fields(true);

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

/// Builds the request message from query parameters (GET) or form fields.
///
/// Each parameter name is a path of fields, by JSON or proto name, separated by dots (`inner.name=x`
/// sets `name` in the message field `inner`); the value is typed by the descriptor:
///
/// - `bool`: `true` or `false` (nothing else);
/// - integers of every kind (64-bit included) and `float`/`double` in decimal; floats also take
///   `NaN`, `Infinity` and `-Infinity`;
/// - `string` as is; `bytes` in base64, standard or URL-safe (a `+` in standard base64 must be sent
///   as `%2B`, since form encoding reads `+` as a space);
/// - enums by value name (`RED`) or number (`1`);
/// - well-known types in their proto3 JSON string form: `Timestamp` (RFC 3339), `Duration` (`1.5s`),
///   `FieldMask` (`a,b.c`), the wrappers (`Int64Value`, `StringValue`, …) like the wrapped scalar;
///   `Struct`, `ListValue`, `Any` and `Empty` as JSON text; `Value` as JSON text if the value parses
///   as JSON, else as a string (so `5` is a number, `abc` a string, `"5"` the string 5);
/// - repeated scalar fields by repeating the name (`ids=1&ids=2`); values are never split on
///   commas. Repeated message fields cannot be set from parameters;
/// - map fields with brackets, `counts[key]=3`, a message value's fields with `byId[7].name=x`. The
///   key may contain dots (`labels[app.kubernetes.io/name]=web`) but not `]`. `counts.key=3` is not
///   map syntax and is refused.
///
/// A name that is not a field is [`TranscodeError::UnknownField`] with the path; a singular field
/// given twice, a path through a scalar, or a message field given a value directly is
/// [`TranscodeError::InvalidParameter`]; a value that does not parse is
/// [`TranscodeError::InvalidValue`] naming the field (a repeated field's element by index, `ids[1]`).
/// No parameters give the empty message.
pub fn request_from_params<'a>(
    desc: &MessageDescriptor,
    params: impl IntoIterator<Item = (Cow<'a, str>, Cow<'a, str>)>,
) -> Result<DynamicMessage, TranscodeError> {
    let mut root = Map::new();
    for (name, value) in params {
        let segments = parse_param_name(&name)?;
        set_param(desc, &mut root, &segments, String::new(), &value)?;
    }
    let root = Value::Object(root);
    DynamicMessage::deserialize_with_options(desc.clone(), &root, &DESERIALIZE)
        .map_err(|err| diagnose(desc, &root, &err))
}

/// One `.`-separated part of a parameter name: a field name and an optional map key in brackets.
#[derive(Debug, PartialEq, Eq)]
struct Segment<'n> {
    field: &'n str,
    key: Option<&'n str>,
}

fn parse_param_name(name: &str) -> Result<Vec<Segment<'_>>, TranscodeError> {
    let bad = |reason: &str| TranscodeError::InvalidParameter {
        path: name.to_owned(),
        reason: reason.to_owned(),
    };
    let mut segments = Vec::new();
    let mut rest = name;
    loop {
        if segments.len() == MAX_PARAM_DEPTH {
            return Err(bad(&format!("more than {MAX_PARAM_DEPTH} nested fields")));
        }
        let end = rest.find(['.', '[', ']']).unwrap_or(rest.len());
        let field = &rest[..end];
        if field.is_empty() {
            return Err(bad("malformed parameter name: empty field name"));
        }
        rest = &rest[end..];
        let mut key = None;
        if let Some(after) = rest.strip_prefix('[') {
            let close = after
                .find(']')
                .ok_or_else(|| bad("malformed parameter name: `[` without `]`"))?;
            key = Some(&after[..close]);
            rest = &after[close + 1..];
        }
        segments.push(Segment { field, key });
        if rest.is_empty() {
            return Ok(segments);
        }
        rest = rest
            .strip_prefix('.')
            .ok_or_else(|| bad("malformed parameter name: expected `.` or the end"))?;
    }
}

/// Sets one parameter into the JSON object of the message `desc`, the object keyed by the names the
/// client used (so errors found later name the client's path).
fn set_param(
    desc: &MessageDescriptor,
    object: &mut Map<String, Value>,
    segments: &[Segment<'_>],
    mut path: String,
    raw: &str,
) -> Result<(), TranscodeError> {
    let Some((segment, rest)) = segments.split_first() else {
        return Ok(());
    };
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(segment.field);
    let field = (!is_well_known_type(desc))
        .then(|| {
            desc.get_field_by_json_name(segment.field)
                .or_else(|| desc.get_field_by_name(segment.field))
        })
        .flatten()
        .ok_or_else(|| TranscodeError::UnknownField {
            path: path.clone(),
            message: desc.full_name().to_owned(),
        })?;
    let invalid = |path: &str, reason: String| TranscodeError::InvalidParameter {
        path: path.to_owned(),
        reason,
    };
    // The same field may already be there under its other name.
    let json_key = [field.json_name(), field.name()]
        .into_iter()
        .find(|name| object.contains_key(*name))
        .unwrap_or(segment.field)
        .to_owned();

    if field.is_map() {
        let Some(map_key) = segment.key else {
            return Err(invalid(
                &path,
                format!("is a map; set an entry with {}[key]=value", segment.field),
            ));
        };
        let _ = write!(path, "[{map_key}]");
        let value_field = map_value_field(&field);
        let entries = object.entry(json_key).or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(entries) = entries else {
            return Err(invalid(&path, "given more than once".to_owned()));
        };
        return match (value_field.kind(), rest.is_empty()) {
            (Kind::Message(message), false) if !is_well_known_type(&message) => {
                let entry = entries
                    .entry(map_key.to_owned())
                    .or_insert_with(|| Value::Object(Map::new()));
                let Value::Object(entry) = entry else {
                    return Err(invalid(&path, "given more than once".to_owned()));
                };
                set_param(&message, entry, rest, path, raw)
            }
            (Kind::Message(message), true) if !is_well_known_type(&message) => Err(invalid(
                &path,
                format!(
                    "is a message ({}); set its fields with {path}.<field>=value",
                    message.full_name()
                ),
            )),
            (kind, false) => Err(invalid(&path, format!("is a {}, not a message", kind_name(&kind)))),
            (kind, true) => {
                let value = param_value(&kind, raw, &path)?;
                if entries.insert(map_key.to_owned(), value).is_some() {
                    return Err(invalid(&path, "given more than once".to_owned()));
                }
                Ok(())
            }
        };
    }
    if segment.key.is_some() {
        return Err(invalid(
            &path,
            "is not a map field; brackets are only for map keys".to_owned(),
        ));
    }
    let kind = field.kind();
    let plain_message = kind.as_message().filter(|message| !is_well_known_type(message));
    if field.is_list() {
        if plain_message.is_some() {
            return Err(invalid(
                &path,
                "repeated message fields cannot be set from parameters".to_owned(),
            ));
        }
        if !rest.is_empty() {
            return Err(invalid(&path, format!("is a {}, not a message", type_name(&field))));
        }
        let value = param_value(&kind, raw, &path)?;
        match object.entry(json_key).or_insert_with(|| Value::Array(Vec::new())) {
            Value::Array(values) => values.push(value),
            _ => return Err(invalid(&path, "given more than once".to_owned())),
        }
        return Ok(());
    }
    match (plain_message, rest.is_empty()) {
        (Some(message), false) => {
            let entry = object.entry(json_key).or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(entry) = entry else {
                return Err(invalid(&path, "given more than once".to_owned()));
            };
            set_param(message, entry, rest, path, raw)
        }
        (Some(_), true) => Err(invalid(
            &path,
            format!(
                "is a message ({}); set its fields with {path}.<field>=value",
                type_name(&field)
            ),
        )),
        (None, false) => Err(invalid(&path, format!("is a {}, not a message", type_name(&field)))),
        (None, true) => {
            let value = param_value(&kind, raw, &path)?;
            if object.insert(json_key, value).is_some() {
                return Err(invalid(&path, "given more than once".to_owned()));
            }
            Ok(())
        }
    }
}

/// The JSON for one parameter value of a field of kind `kind` (not a plain message): what the proto3
/// JSON mapping accepts for it, with the parsing itself left to the deserializer.
fn param_value(kind: &Kind, raw: &str, path: &str) -> Result<Value, TranscodeError> {
    let boolean = |expected: &str| match raw {
        "true" => Ok(Value::Bool(true)),
        "false" => Ok(Value::Bool(false)),
        _ => Err(TranscodeError::InvalidValue {
            path: path.to_owned(),
            value: show(&Value::String(raw.to_owned())),
            expected: expected.to_owned(),
            reason: "expected true or false".to_owned(),
        }),
    };
    match kind {
        Kind::Bool => boolean("bool"),
        Kind::Enum(_) => Ok(raw
            .parse::<i32>()
            .map_or_else(|_| Value::String(raw.to_owned()), Value::from)),
        Kind::Message(message) => match message.full_name() {
            "google.protobuf.BoolValue" => boolean(message.full_name()),
            "google.protobuf.Value" => Ok(serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))),
            "google.protobuf.Struct"
            | "google.protobuf.ListValue"
            | "google.protobuf.Any"
            | "google.protobuf.Empty" => serde_json::from_str(raw).map_err(|err| TranscodeError::InvalidValue {
                path: path.to_owned(),
                value: show(&Value::String(raw.to_owned())),
                expected: message.full_name().to_owned(),
                reason: format!("expected JSON: {err}"),
            }),
            _ => Ok(Value::String(raw.to_owned())),
        },
        _ => Ok(Value::String(raw.to_owned())),
    }
}

/// Finds, in a JSON value the message `desc` refused with `err`, the field at fault.
///
/// Walks the value along the descriptor, checking each leaf (scalar, enum, well-known type) on its
/// own, so the work stays linear in the size of the value. Runs only on the error path.
fn diagnose(desc: &MessageDescriptor, value: &Value, err: &serde_json::Error) -> TranscodeError {
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
fn show(value: &Value) -> String {
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
fn type_name(field: &FieldDescriptor) -> String {
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

fn kind_name(kind: &Kind) -> String {
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

fn map_value_field(field: &FieldDescriptor) -> FieldDescriptor {
    match field.kind() {
        Kind::Message(entry) => entry.map_entry_value_field(),
        _ => field.clone(),
    }
}

/// The well-known types whose JSON form is not an object of their fields.
fn is_well_known_type(desc: &MessageDescriptor) -> bool {
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

/// A tonic [`Codec`] for messages known only by descriptor: it encodes any [`DynamicMessage`] and
/// decodes messages of one type, the one given to [`DynamicCodec::new`].
///
/// For a client call that is the method's output (`DynamicCodec::new(method.output())`), for use
/// with `tonic::client::Grpc::unary`/`server_streaming`; a server decodes its input type instead.
///
/// `Debug` shows only the message name: prost-reflect's `Debug` of a descriptor follows message
/// fields without end, and overflows the stack on a recursive type.
#[derive(Clone)]
pub struct DynamicCodec {
    response: MessageDescriptor,
}

impl DynamicCodec {
    /// A codec that decodes messages of type `response`.
    pub fn new(response: MessageDescriptor) -> Self {
        Self { response }
    }
}

impl fmt::Debug for DynamicCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamicCodec")
            .field("response", &self.response.full_name())
            .finish()
    }
}

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        DynamicDecoder {
            desc: self.response.clone(),
        }
    }
}

/// The encoder of [`DynamicCodec`].
#[derive(Debug, Clone, Default)]
pub struct DynamicEncoder;

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        // `EncodeBuf` grows as needed, so prost's only error (not enough room) cannot happen.
        prost::Message::encode(&item, dst).map_err(|err| Status::internal(format!("encoding request: {err}")))
    }
}

/// The decoder of [`DynamicCodec`].
#[derive(Clone)]
pub struct DynamicDecoder {
    desc: MessageDescriptor,
}

impl fmt::Debug for DynamicDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamicDecoder")
            .field("desc", &self.desc.full_name())
            .finish()
    }
}

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        // Like tonic's own prost codec: a message that does not decode is Internal.
        DynamicMessage::decode(self.desc.clone(), src)
            .map(Some)
            .map_err(|err| Status::internal(format!("decoding {}: {err}", self.desc.full_name())))
    }
}

/// Finds the gRPC method for the endpoint `service_simple.method` (docs/gateway.md).
///
/// The candidates are the services of `pool` whose simple name (without package) is
/// `service_simple` and that have a method named exactly `method` (case-sensitive, as in the proto;
/// the path resolver has already camel-cased it). gRPC's own services (`grpc.health.v1.*`,
/// `grpc.reflection.*`) are never candidates. Among the candidates, the one whose package equals
/// `prefer_package` (the Micro service name, compared exactly) wins; if there is none, the one with
/// the lexicographically smallest full name, so the choice does not depend on the order in which
/// descriptors were loaded.
pub fn find_method(
    pool: &DescriptorPool,
    service_simple: &str,
    method: &str,
    prefer_package: &str,
) -> Option<MethodDescriptor> {
    let mut best: Option<MethodDescriptor> = None;
    for service in pool.services() {
        let package = service.package_name();
        if service.name() != service_simple
            || package == "grpc.health.v1"
            || package == "grpc.reflection"
            || package.starts_with("grpc.reflection.")
        {
            continue;
        }
        let Some(found) = service.methods().find(|candidate| candidate.name() == method) else {
            continue;
        };
        if package == prefer_package {
            return Some(found);
        }
        if best
            .as_ref()
            .is_none_or(|best| service.full_name() < best.parent_service().full_name())
        {
            best = Some(found);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    fn seg<'n>(field: &'n str, key: Option<&'n str>) -> Segment<'n> {
        Segment { field, key }
    }

    #[test]
    fn param_names_split_on_dots_outside_brackets() {
        assert_eq!(parse_param_name("a").unwrap(), [seg("a", None)]);
        assert_eq!(
            parse_param_name("a.b_c.dE").unwrap(),
            [seg("a", None), seg("b_c", None), seg("dE", None)]
        );
        assert_eq!(
            parse_param_name("m[k.x/y].v").unwrap(),
            [seg("m", Some("k.x/y")), seg("v", None)]
        );
        assert_eq!(parse_param_name("m[]").unwrap(), [seg("m", Some(""))]);
        assert_eq!(parse_param_name("m[a[b]").unwrap(), [seg("m", Some("a[b"))]);
    }

    #[test]
    fn malformed_param_names_are_refused_with_the_whole_name() {
        for name in [
            "", ".", "a.", ".a", "a..b", "a[", "a]", "a[b]c", "a[b][c]", "[b]", "a.[b]",
        ] {
            match parse_param_name(name) {
                Err(TranscodeError::InvalidParameter { path, .. }) => assert_eq!(path, name),
                other => panic!("{name:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn param_name_depth_limit() {
        let at_limit = vec!["a"; MAX_PARAM_DEPTH].join(".");
        assert_eq!(parse_param_name(&at_limit).unwrap().len(), MAX_PARAM_DEPTH);
        let over = vec!["a"; MAX_PARAM_DEPTH + 1].join(".");
        assert!(parse_param_name(&over).is_err());
    }

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

    #[test]
    fn codec_debug_does_not_follow_recursive_descriptors() {
        let pool = DescriptorPool::decode(
            prost_types::FileDescriptorSet {
                file: vec![prost_types::FileDescriptorProto {
                    name: Some("node.proto".into()),
                    package: Some("t".into()),
                    syntax: Some("proto3".into()),
                    message_type: vec![prost_types::DescriptorProto {
                        name: Some("Node".into()),
                        field: vec![prost_types::FieldDescriptorProto {
                            name: Some("child".into()),
                            number: Some(1),
                            label: Some(prost_types::field_descriptor_proto::Label::Optional as i32),
                            r#type: Some(prost_types::field_descriptor_proto::Type::Message as i32),
                            type_name: Some(".t.Node".into()),
                            json_name: Some("child".into()),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            }
            .encode_to_vec()
            .as_slice(),
        )
        .unwrap();
        let mut codec = DynamicCodec::new(pool.get_message_by_name("t.Node").unwrap());
        assert_eq!(format!("{codec:?}"), r#"DynamicCodec { response: "t.Node" }"#);
        assert_eq!(format!("{:?}", codec.decoder()), r#"DynamicDecoder { desc: "t.Node" }"#);
    }

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
