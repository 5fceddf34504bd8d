//! Query parameters and form fields → the request message.

use std::borrow::Cow;
use std::fmt::Write as _;

use prost_reflect::{DynamicMessage, Kind, MessageDescriptor};
use serde_json::{Map, Value};

use super::diagnose::{diagnose, is_well_known_type, kind_name, map_value_field, show, type_name};
use super::{DESERIALIZE, TranscodeError};

/// The most `.`-separated segments a parameter name may have. Bounds the recursion on hostile input
/// (a recursive message type would otherwise let a long name nest without end).
pub const MAX_PARAM_DEPTH: usize = 32;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
