//! The JSON/query ↔ protobuf mapping (docs/gateway.md) against real descriptors compiled
//! from `tests/fixtures` at test time, and the dynamic codec over tonic's own client and server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::borrow::Cow;
use std::sync::OnceLock;

use bytes::Bytes;
use http::StatusCode;
use microplane_gateway::error::GatewayError;
use microplane_gateway::transcode::{
    DynamicCodec, MAX_PARAM_DEPTH, TranscodeError, find_method, request_from_json, request_from_params,
    response_to_json,
};
use prost_reflect::{DescriptorPool, DynamicMessage, MapKey, MessageDescriptor, Value as PValue};
use serde_json::{Value, json};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// The real helloworld service's proto, not a copy.
const HELLOWORLD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../services/helloworld/proto");

fn compile(files: &[&str], includes: &[&str]) -> DescriptorPool {
    let set = protox::compile(files, includes).unwrap();
    DescriptorPool::from_file_descriptor_set(set).unwrap()
}

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| compile(&["kitchen.proto", "helloworld.proto"], &[FIXTURES, HELLOWORLD]))
}

fn message(name: &str) -> MessageDescriptor {
    pool().get_message_by_name(name).unwrap()
}

fn kitchen() -> MessageDescriptor {
    message("kitchen.Kitchen")
}

fn from_json(desc: &MessageDescriptor, body: &str) -> Result<DynamicMessage, TranscodeError> {
    request_from_json(desc, body.as_bytes())
}

fn from_query(desc: &MessageDescriptor, query: &str) -> Result<DynamicMessage, TranscodeError> {
    request_from_params(desc, form_urlencoded::parse(query.as_bytes()))
}

fn from_pairs(desc: &MessageDescriptor, pairs: &[(&str, &str)]) -> Result<DynamicMessage, TranscodeError> {
    request_from_params(desc, pairs.iter().map(|&(k, v)| (Cow::Borrowed(k), Cow::Borrowed(v))))
}

fn to_json(msg: &DynamicMessage) -> Value {
    serde_json::from_slice(&response_to_json(msg).unwrap()).unwrap()
}

/// Compares two messages; on a difference shows both as JSON (the `Debug` of a message whose pool
/// has recursive types overflows the stack, so `assert_eq!` cannot be used).
#[track_caller]
fn assert_same(left: &DynamicMessage, right: &DynamicMessage) {
    assert!(
        left == right,
        "messages differ:\n  left: {}\n right: {}",
        String::from_utf8_lossy(&response_to_json(left).unwrap()),
        String::from_utf8_lossy(&response_to_json(right).unwrap())
    );
}

/// JSON in → message → JSON out.
fn round_trip(desc: &MessageDescriptor, input: &Value) -> Value {
    to_json(&from_json(desc, &input.to_string()).unwrap())
}

fn field<'m>(msg: &'m DynamicMessage, name: &str) -> Cow<'m, PValue> {
    msg.get_field_by_name(name).unwrap_or_else(|| panic!("no field {name}"))
}

/// The JSON of a default `kitchen.Kitchen` (every field without presence), with `set` merged in.
fn kitchen_json(set: Value) -> Value {
    let mut all = json!({
        "color": "COLOR_UNSPECIFIED",
        "ids": [], "names": [], "colors": [], "items": [], "ratios": [], "flags": [], "stamps": [],
        "counts": {}, "byId": {}, "byFlag": {}, "colorByN": {},
    });
    for (k, v) in set.as_object().unwrap() {
        all[k] = v.clone();
    }
    all
}

// ---------------------------------------------------------------------------------------------
// JSON bodies

#[test]
fn helloworld_call_request() {
    let msg = from_json(&message("helloworld.CallRequest"), r#"{"name": "Alice"}"#).unwrap();
    assert_eq!(field(&msg, "name").as_str(), Some("Alice"));
}

#[test]
fn empty_and_whitespace_bodies_are_the_empty_message() {
    let desc = kitchen();
    for body in ["", " ", "\n", " \t\r\n "] {
        let msg = from_json(&desc, body).unwrap();
        assert_same(&msg, &DynamicMessage::new(desc.clone()));
    }
    assert_same(&from_json(&desc, "{}").unwrap(), &DynamicMessage::new(desc.clone()));
}

#[test]
fn every_scalar_kind_round_trips() {
    let input = json!({"scalars": {
        "fDouble": 1.5, "fFloat": -2.25, "fInt32": -7, "fInt64": "-9223372036854775808",
        "fUint32": 4294967295u32, "fUint64": "18446744073709551615", "fSint32": -2147483648i32,
        "fSint64": "-42", "fFixed32": 7, "fFixed64": "8", "fSfixed32": -9, "fSfixed64": "-10",
        "fBool": true, "fString": "héllo \"q\"", "fBytes": "AAEC/w==",
    }});
    let output = round_trip(&kitchen(), &input);
    assert_eq!(output["scalars"], input["scalars"]);
    let msg = from_json(&kitchen(), &input.to_string()).unwrap();
    let scalars = field(&msg, "scalars").as_message().unwrap().clone();
    assert_eq!(field(&scalars, "f_int64").as_i64(), Some(i64::MIN));
    assert_eq!(field(&scalars, "f_uint64").as_u64(), Some(u64::MAX));
    assert_eq!(
        field(&scalars, "f_bytes").as_bytes().map(|b| b.to_vec()),
        Some(vec![0, 1, 2, 255])
    );
}

#[test]
fn sixty_four_bit_integers_accept_numbers_and_strings() {
    let desc = message("kitchen.Scalars");
    for body in [
        r#"{"fInt64": 123, "fUint64": 456}"#,
        r#"{"fInt64": "123", "fUint64": "456"}"#,
    ] {
        let msg = from_json(&desc, body).unwrap();
        assert_eq!(field(&msg, "f_int64").as_i64(), Some(123), "{body}");
        assert_eq!(field(&msg, "f_uint64").as_u64(), Some(456), "{body}");
    }
    // Out loud in the response: strings.
    assert_eq!(
        to_json(&from_json(&desc, r#"{"fInt64": 123}"#).unwrap())["fInt64"],
        "123"
    );
}

#[test]
fn json_names_and_proto_names_are_both_accepted() {
    let desc = message("kitchen.Scalars");
    let camel = from_json(&desc, r#"{"fInt32": 5, "fString": "x"}"#).unwrap();
    let snake = from_json(&desc, r#"{"f_int32": 5, "f_string": "x"}"#).unwrap();
    assert_same(&camel, &snake);
    assert_eq!(field(&camel, "f_int32").as_i32(), Some(5));
}

#[test]
fn floats_accept_special_values() {
    let desc = message("kitchen.Scalars");
    let msg = from_json(&desc, r#"{"fDouble": "NaN", "fFloat": "-Infinity"}"#).unwrap();
    assert!(field(&msg, "f_double").as_f64().unwrap().is_nan());
    assert_eq!(field(&msg, "f_float").as_f32(), Some(f32::NEG_INFINITY));
    let out = to_json(&msg);
    assert_eq!(out["fDouble"], "NaN");
    assert_eq!(out["fFloat"], "-Infinity");
}

#[test]
fn enums_by_name_and_number() {
    let desc = kitchen();
    assert_eq!(
        field(&from_json(&desc, r#"{"color": "BLUE"}"#).unwrap(), "color").as_enum_number(),
        Some(7)
    );
    assert_eq!(
        field(&from_json(&desc, r#"{"color": 2}"#).unwrap(), "color").as_enum_number(),
        Some(2)
    );
    assert_eq!(round_trip(&desc, &json!({"color": 1}))["color"], "RED");
    // A number the enum does not name is kept (open enums) and written back as the number.
    assert_eq!(round_trip(&desc, &json!({"color": 99}))["color"], 99);
}

#[test]
fn repeated_fields_round_trip() {
    let input = json!({
        "ids": ["1", "-2", "9007199254740993"],
        "names": ["a", "b,c"],
        "colors": ["RED", "BLUE"],
        "items": [{"name": "x", "count": "1", "color": "GREEN", "tags": ["t"]}, {"name": "y"}],
        "ratios": [0.5, -1.0],
        "flags": [true, false],
    });
    let output = round_trip(&kitchen(), &input);
    assert_eq!(output["ids"], input["ids"]);
    assert_eq!(output["names"], input["names"]);
    assert_eq!(output["colors"], input["colors"]);
    assert_eq!(output["ratios"], json!([0.5, -1.0]));
    assert_eq!(output["flags"], input["flags"]);
    assert_eq!(
        output["items"],
        json!([
            {"name": "x", "count": "1", "color": "GREEN", "tags": ["t"]},
            {"name": "y", "count": "0", "color": "COLOR_UNSPECIFIED", "tags": []},
        ])
    );
    // ids given as numbers too
    let msg = from_json(&kitchen(), r#"{"ids": [1, 2]}"#).unwrap();
    assert_eq!(field(&msg, "ids").as_list().unwrap(), &[PValue::I64(1), PValue::I64(2)]);
}

#[test]
fn map_fields_round_trip() {
    let input = json!({
        "counts": {"a": 1, "b.c": -2},
        "byId": {"7": {"name": "seven"}, "-1": {"count": "3"}},
        "byFlag": {"true": "yes", "false": "no"},
        "colorByN": {"3": "GREEN"},
    });
    let output = round_trip(&kitchen(), &input);
    assert_eq!(output["counts"], input["counts"]);
    assert_eq!(output["byFlag"], input["byFlag"]);
    assert_eq!(output["colorByN"], input["colorByN"]);
    assert_eq!(output["byId"]["7"]["name"], "seven");
    assert_eq!(output["byId"]["-1"]["count"], "3");
    let msg = from_json(&kitchen(), &input.to_string()).unwrap();
    assert!(field(&msg, "by_id").as_map().unwrap().contains_key(&MapKey::I64(-1)));
}

#[test]
fn nested_messages_round_trip() {
    let input = json!({"inner": {"name": "a", "child": {"name": "b", "child": {"count": "5"}}}});
    let output = round_trip(&kitchen(), &input);
    assert_eq!(output["inner"]["child"]["name"], "b");
    assert_eq!(output["inner"]["child"]["child"]["count"], "5");
    assert_eq!(output["inner"]["child"]["child"]["name"], "");
    assert!(output["inner"]["child"]["child"].get("child").is_none());
}

#[test]
fn oneof_members_round_trip_one_at_a_time() {
    for (input, key) in [
        (json!({"choiceText": "t"}), "choiceText"),
        (json!({"choiceNumber": 0}), "choiceNumber"),
        (json!({"choiceInner": {"name": "n"}}), "choiceInner"),
    ] {
        let output = round_trip(&kitchen(), &input);
        assert_eq!(output[key], to_json_value_like(&input[key]), "{input}");
        let others = ["choiceText", "choiceNumber", "choiceInner"]
            .into_iter()
            .filter(|k| *k != key);
        for other in others {
            assert!(output.get(other).is_none(), "{other} in {output}");
        }
    }
}

/// The response form of a oneof value above (the Inner gets its defaults).
fn to_json_value_like(value: &Value) -> Value {
    if value.is_object() {
        json!({"name": value["name"], "count": "0", "color": "COLOR_UNSPECIFIED", "tags": []})
    } else {
        value.clone()
    }
}

#[test]
fn two_oneof_members_are_an_error_naming_the_field() {
    let err = from_json(&kitchen(), r#"{"choiceText": "t", "choiceNumber": 1}"#)
        .err()
        .unwrap();
    match &err {
        TranscodeError::OneofConflict { path, oneof, other } => {
            assert_eq!(oneof, "choice");
            let mut both = [path.as_str(), other.as_str()];
            both.sort_unstable();
            assert_eq!(both, ["choiceNumber", "choiceText"]);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("oneof \"choice\""), "{err}");
    // null does not set a member
    assert!(from_json(&kitchen(), r#"{"choiceText": "t", "choiceNumber": null}"#).is_ok());
}

#[test]
fn well_known_types_round_trip() {
    let input = json!({
        "createdAt": "2024-01-02T03:04:05.500Z",
        "ttl": "1.500s",
        "attrs": {"a": 1.0, "b": [true, null, "s"], "c": {"d": "e"}},
        "anyValue": "text",
        "listValue": [1.0, "two", false],
        "maxItems": "9007199254740993",
        "nickname": "bob",
        "enabled": false,
        "weight": 2.5,
        "port": 8080,
        "blob": "aGk=",
        "ratio": 0.5,
        "level": -3,
        "big": "18446744073709551615",
        "updateMask": "name,inner.childName",
        "nothing": {},
        "stamps": ["1970-01-01T00:00:00Z", "2000-02-29T12:00:00Z"],
    });
    let output = round_trip(&kitchen(), &input);
    for (key, value) in input.as_object().unwrap() {
        assert_eq!(&output[key], value, "{key}");
    }
}

#[test]
fn value_accepts_every_json_kind() {
    for value in [
        json!(null),
        json!(1.5),
        json!("s"),
        json!(true),
        json!([1.0]),
        json!({"k": "v"}),
    ] {
        let output = round_trip(&kitchen(), &json!({"anyValue": value}));
        assert_eq!(output["anyValue"], value);
    }
}

#[test]
fn nulls_are_skipped_when_looking_for_the_bad_field() {
    // Keys sort before "zzz", so the search meets every null first.
    let body = r#"{"color": null, "counts": null, "ids": null, "inner": null, "createdAt": null, "zzz": 1}"#;
    let err = from_json(&kitchen(), body).err().unwrap();
    assert_eq!(
        err,
        TranscodeError::UnknownField {
            path: "zzz".into(),
            message: "kitchen.Kitchen".into()
        }
    );
}

#[test]
fn null_means_default() {
    let msg = from_json(
        &kitchen(),
        r#"{"color": null, "inner": null, "ids": null, "counts": null}"#,
    )
    .unwrap();
    assert_same(&msg, &DynamicMessage::new(kitchen()));
}

// JSON errors

#[test]
fn malformed_json_names_line_and_column() {
    let err = from_json(&message("helloworld.CallRequest"), r#"{"name": }"#)
        .err()
        .unwrap();
    match &err {
        TranscodeError::MalformedJson { line, column, reason } => {
            assert_eq!((*line, *column), (1, 10));
            assert!(!reason.contains("at line"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string().starts_with("malformed JSON at line 1 column 10: "),
        "{err}"
    );

    let err = from_json(&kitchen(), "{\n  \"color\": \"RED\",\n  oops\n}")
        .err()
        .unwrap();
    assert!(matches!(err, TranscodeError::MalformedJson { line: 3, .. }), "{err:?}");
}

#[test]
fn truncated_and_trailing_json_are_malformed() {
    for body in [
        r#"{"name": "a""#,
        r#"{"name": "a"} x"#,
        r#"{"name": "a"}{}"#,
        "{",
        "nul",
        "\u{feff}{}",
    ] {
        let err = from_json(&message("helloworld.CallRequest"), body).err().unwrap();
        assert!(matches!(err, TranscodeError::MalformedJson { .. }), "{body:?}: {err:?}");
    }
}

#[test]
fn a_syntax_error_after_a_refused_field_is_still_malformed() {
    let err = from_json(&message("helloworld.CallRequest"), r#"{"nmae": 1, "#)
        .err()
        .unwrap();
    assert!(matches!(err, TranscodeError::MalformedJson { .. }), "{err:?}");
}

#[test]
fn invalid_utf8_is_malformed() {
    let err = request_from_json(&message("helloworld.CallRequest"), b"{\"name\": \"\xff\"}")
        .err()
        .unwrap();
    assert!(matches!(err, TranscodeError::MalformedJson { .. }), "{err:?}");
}

#[test]
fn unknown_field_names_field_and_message() {
    let err = from_json(&message("helloworld.CallRequest"), r#"{"nmae": "Alice"}"#)
        .err()
        .unwrap();
    assert_eq!(err.to_string(), r#"unknown field "nmae" in helloworld.CallRequest"#);
    assert_eq!(err.category(), "unknown_field");
}

#[test]
fn nested_unknown_field_names_the_path() {
    let err = from_json(&kitchen(), r#"{"inner": {"child": {"name": "x", "nmae": 1}}}"#)
        .err()
        .unwrap();
    assert_eq!(
        err,
        TranscodeError::UnknownField {
            path: "inner.child.nmae".into(),
            message: "kitchen.Inner".into()
        }
    );
    let err = from_json(&kitchen(), r#"{"items": [{}, {"bogus": 1}]}"#).err().unwrap();
    assert_eq!(
        err,
        TranscodeError::UnknownField {
            path: "items[1].bogus".into(),
            message: "kitchen.Inner".into()
        }
    );
    let err = from_json(&kitchen(), r#"{"byId": {"5": {"bogus": 1}}}"#).err().unwrap();
    assert_eq!(
        err,
        TranscodeError::UnknownField {
            path: "byId[5].bogus".into(),
            message: "kitchen.Inner".into()
        }
    );
}

/// The error for `body` must be an `InvalidValue` at `path` for the type `expected`.
fn assert_invalid(desc: &MessageDescriptor, body: &str, path: &str, expected: &str) -> TranscodeError {
    let err = from_json(desc, body).err().unwrap();
    match &err {
        TranscodeError::InvalidValue {
            path: p,
            expected: e,
            reason,
            ..
        } => {
            assert_eq!((p.as_str(), e.as_str()), (path, expected), "{body}: {err}");
            assert!(!reason.is_empty());
        }
        other => panic!("{body}: {other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with(&format!("field \"{path}\": invalid value ")),
        "{err}"
    );
    err
}

#[test]
fn wrong_types_name_the_field() {
    let stream = message("helloworld.StreamRequest");
    let err = assert_invalid(&stream, r#"{"count": "abc"}"#, "count", "int64");
    assert!(
        err.to_string()
            .starts_with(r#"field "count": invalid value "abc" for int64: "#),
        "{err}"
    );

    let k = kitchen();
    assert_invalid(&k, r#"{"scalars": {"fInt32": "abc"}}"#, "scalars.fInt32", "int32");
    assert_invalid(&k, r#"{"scalars": {"fString": {"a": 1}}}"#, "scalars.fString", "string");
    assert_invalid(&k, r#"{"scalars": {"fInt32": 3000000000}}"#, "scalars.fInt32", "int32");
    assert_invalid(&k, r#"{"scalars": {"fInt32": -2147483649}}"#, "scalars.fInt32", "int32");
    assert_invalid(&k, r#"{"scalars": {"fUint32": -1}}"#, "scalars.fUint32", "uint32");
    assert_invalid(&k, r#"{"scalars": {"fUint64": "-1"}}"#, "scalars.fUint64", "uint64");
    assert_invalid(&k, r#"{"scalars": {"fInt64": 1.5}}"#, "scalars.fInt64", "int64");
    assert_invalid(
        &k,
        r#"{"scalars": {"fInt64": "9223372036854775808"}}"#,
        "scalars.fInt64",
        "int64",
    );
    assert_invalid(&k, r#"{"scalars": {"fBool": "true"}}"#, "scalars.fBool", "bool");
    assert_invalid(&k, r#"{"scalars": {"fBytes": "***"}}"#, "scalars.fBytes", "bytes");
    assert_invalid(&k, r#"{"scalars": {"fFloat": 1e300}}"#, "scalars.fFloat", "float");
    assert_invalid(&k, r#"{"scalars": {"fDouble": "lots"}}"#, "scalars.fDouble", "double");
    assert_invalid(&k, r#"{"scalars": {"f_sint32": [1]}}"#, "scalars.f_sint32", "sint32");
    assert_invalid(&k, r#"{"color": "PURPLE"}"#, "color", "kitchen.Color");
    assert_invalid(&k, r#"{"color": 1.5}"#, "color", "kitchen.Color");
    assert_invalid(&k, r#"{"inner": "x"}"#, "inner", "kitchen.Inner");
    assert_invalid(&k, r#"{"inner": {"count": true}}"#, "inner.count", "int64");
    assert_invalid(
        &k,
        r#"{"createdAt": "yesterday"}"#,
        "createdAt",
        "google.protobuf.Timestamp",
    );
    assert_invalid(&k, r#"{"createdAt": 5}"#, "createdAt", "google.protobuf.Timestamp");
    assert_invalid(&k, r#"{"ttl": "5 minutes"}"#, "ttl", "google.protobuf.Duration");
    assert_invalid(&k, r#"{"maxItems": "many"}"#, "maxItems", "google.protobuf.Int64Value");
    assert_invalid(&k, r#"{"enabled": "yes"}"#, "enabled", "google.protobuf.BoolValue");
    assert_invalid(&k, r#"{"attrs": [1]}"#, "attrs", "google.protobuf.Struct");
    assert_invalid(&k, r#"{"nothing": {"a": 1}}"#, "nothing", "google.protobuf.Empty");
}

#[test]
fn wrong_container_types_name_the_field() {
    let k = kitchen();
    assert_invalid(&k, r#"{"ids": 5}"#, "ids", "repeated int64");
    assert_invalid(&k, r#"{"ids": {"a": 1}}"#, "ids", "repeated int64");
    assert_invalid(&k, r#"{"counts": [1]}"#, "counts", "map<string, int32>");
    assert_invalid(&k, r#"{"items": [{}, 5]}"#, "items[1]", "kitchen.Inner");
}

#[test]
fn bad_elements_and_entries_are_named_by_index_and_key() {
    let k = kitchen();
    assert_invalid(&k, r#"{"ids": [1, 2, "x"]}"#, "ids[2]", "int64");
    assert_invalid(&k, r#"{"ids": [1, null]}"#, "ids[1]", "int64");
    assert_invalid(&k, r#"{"colors": ["RED", "PINK"]}"#, "colors[1]", "kitchen.Color");
    assert_invalid(
        &k,
        r#"{"items": [{"count": "1"}, {"count": "x"}]}"#,
        "items[1].count",
        "int64",
    );
    assert_invalid(
        &k,
        r#"{"stamps": ["2020-01-01T00:00:00Z", "nope"]}"#,
        "stamps[1]",
        "google.protobuf.Timestamp",
    );
    assert_invalid(&k, r#"{"counts": {"a": 1, "b": "x"}}"#, "counts[b]", "int32");
    assert_invalid(&k, r#"{"byId": {"x": {}}}"#, "byId[x]", "int64 map key");
    assert_invalid(&k, r#"{"byFlag": {"yes": "a"}}"#, "byFlag[yes]", "bool map key");
    assert_invalid(&k, r#"{"colorByN": {"-1": "RED"}}"#, "colorByN[-1]", "uint32 map key");
    assert_invalid(&k, r#"{"colorByN": {"1": "TEAL"}}"#, "colorByN[1]", "kitchen.Color");
    assert_invalid(&k, r#"{"byId": {"1": {"count": "x"}}}"#, "byId[1].count", "int64");
}

#[test]
fn body_that_is_not_an_object_is_refused() {
    for (body, found) in [
        ("[]", "an array"),
        ("\"x\"", "a string"),
        ("5", "a number"),
        ("null", "null"),
        ("true", "a boolean"),
    ] {
        let err = from_json(&message("helloworld.CallRequest"), body).err().unwrap();
        assert_eq!(
            err,
            TranscodeError::NotAnObject {
                message: "helloworld.CallRequest".into(),
                found
            },
            "{body}"
        );
    }
}

#[test]
fn well_known_request_types_take_their_json_form() {
    let empty = message("google.protobuf.Empty");
    assert_same(&from_json(&empty, "{}").unwrap(), &DynamicMessage::new(empty.clone()));
    assert_same(&from_json(&empty, "").unwrap(), &DynamicMessage::new(empty.clone()));
    let err = from_json(&empty, r#"{"a": 1}"#).err().unwrap();
    assert!(matches!(err, TranscodeError::Invalid { .. }), "{err:?}");
}

#[test]
fn long_values_are_shortened_in_errors() {
    let long = "9".repeat(10_000);
    let err = from_json(
        &message("helloworld.StreamRequest"),
        &format!(r#"{{"count": "{long}"}}"#),
    )
    .err()
    .unwrap();
    let TranscodeError::InvalidValue { value, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(value.chars().count() <= 65, "{value}");
    assert!(value.ends_with('…'), "{value}");
    assert!(err.to_string().len() < 300);
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let depth = 100_000;
    let body = format!("{}{{}}{}", r#"{"child":"#.repeat(depth), "}".repeat(depth));
    let err = from_json(&message("kitchen.Inner"), &body).err().unwrap();
    assert!(
        matches!(&err, TranscodeError::MalformedJson { reason, .. } if reason.contains("recursion")),
        "{err:?}"
    );
    // Within the limit, it works.
    let body = format!("{}{{}}{}", r#"{"child":"#.repeat(50), "}".repeat(50));
    assert!(from_json(&message("kitchen.Inner"), &body).is_ok());
}

#[test]
fn errors_become_400_and_response_errors_502() {
    let err = from_json(&message("helloworld.CallRequest"), r#"{"nmae": 1}"#)
        .err()
        .unwrap();
    let text = err.to_string();
    let gateway = GatewayError::from(err);
    assert_eq!(gateway.code, StatusCode::BAD_REQUEST);
    assert_eq!(gateway.detail, text);
    assert_eq!(gateway.id, "microplane.gateway");

    let response = GatewayError::from(TranscodeError::Response { reason: "r".into() });
    assert_eq!(response.code, StatusCode::BAD_GATEWAY);
}

// ---------------------------------------------------------------------------------------------
// Query parameters and form fields

#[test]
fn helloworld_from_query() {
    let msg = from_query(&message("helloworld.CallRequest"), "name=Al%20ice+B").unwrap();
    assert_eq!(field(&msg, "name").as_str(), Some("Al ice B"));
}

#[test]
fn no_parameters_is_the_empty_message() {
    assert_same(&from_query(&kitchen(), "").unwrap(), &DynamicMessage::new(kitchen()));
    let empty = message("google.protobuf.Empty");
    assert_same(&from_query(&empty, "").unwrap(), &DynamicMessage::new(empty.clone()));
    let err = from_query(&empty, "a=1").err().unwrap();
    assert_eq!(
        err,
        TranscodeError::UnknownField {
            path: "a".into(),
            message: "google.protobuf.Empty".into()
        }
    );
}

#[test]
fn every_scalar_kind_from_parameters_matches_json() {
    let query = [
        ("scalars.fDouble", "1.5"),
        ("scalars.fFloat", "-2.25"),
        ("scalars.fInt32", "-7"),
        ("scalars.fInt64", "-9223372036854775808"),
        ("scalars.fUint32", "4294967295"),
        ("scalars.fUint64", "18446744073709551615"),
        ("scalars.fSint32", "-2147483648"),
        ("scalars.fSint64", "-42"),
        ("scalars.fFixed32", "7"),
        ("scalars.fFixed64", "8"),
        ("scalars.fSfixed32", "-9"),
        ("scalars.fSfixed64", "-10"),
        ("scalars.fBool", "true"),
        ("scalars.fString", "héllo, world"),
        ("scalars.fBytes", "AAEC/w=="),
    ];
    let from_params = from_pairs(&kitchen(), &query).unwrap();
    let expected = from_json(
        &kitchen(),
        r#"{"scalars": {"fDouble": 1.5, "fFloat": -2.25, "fInt32": -7, "fInt64": "-9223372036854775808",
            "fUint32": 4294967295, "fUint64": "18446744073709551615", "fSint32": -2147483648, "fSint64": -42,
            "fFixed32": 7, "fFixed64": 8, "fSfixed32": -9, "fSfixed64": -10, "fBool": true,
            "fString": "héllo, world", "fBytes": "AAEC/w=="}}"#,
    )
    .unwrap();
    assert_same(&from_params, &expected);
}

#[test]
fn proto_names_work_in_parameters() {
    let msg = from_pairs(&kitchen(), &[("scalars.f_int32", "3"), ("color_by_n[1]", "RED")]).unwrap();
    assert_eq!(to_json(&msg)["scalars"]["fInt32"], 3);
    assert_eq!(to_json(&msg)["colorByN"]["1"], "RED");
}

#[test]
fn bool_parameters_are_true_or_false_only() {
    assert_eq!(
        to_json(&from_query(&kitchen(), "scalars.fBool=false").unwrap())["scalars"]["fBool"],
        false
    );
    for bad in ["yes", "1", "TRUE", ""] {
        let err = from_pairs(&kitchen(), &[("scalars.fBool", bad)]).err().unwrap();
        let TranscodeError::InvalidValue { path, expected, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!((path.as_str(), expected.as_str()), ("scalars.fBool", "bool"));
    }
}

#[test]
fn special_floats_from_parameters() {
    let msg = from_query(
        &kitchen(),
        "scalars.fDouble=NaN&scalars.fFloat=Infinity&ratios=-Infinity",
    )
    .unwrap();
    let out = to_json(&msg);
    assert_eq!(out["scalars"]["fDouble"], "NaN");
    assert_eq!(out["scalars"]["fFloat"], "Infinity");
    assert_eq!(out["ratios"], json!(["-Infinity"]));
}

#[test]
fn bad_numbers_in_parameters_name_the_field() {
    for (query, path, expected) in [
        ("scalars.fInt32=abc", "scalars.fInt32", "int32"),
        ("scalars.fInt32=", "scalars.fInt32", "int32"),
        ("scalars.fInt32=1.0", "scalars.fInt32", "int32"),
        ("scalars.fInt32=2147483648", "scalars.fInt32", "int32"),
        ("scalars.fUint64=-1", "scalars.fUint64", "uint64"),
        ("scalars.fFloat=x", "scalars.fFloat", "float"),
        ("inner.count=12abc", "inner.count", "int64"),
        ("ids=1&ids=two", "ids[1]", "int64"),
        ("scalars.fBytes=%21%21", "scalars.fBytes", "bytes"),
    ] {
        let err = from_query(&kitchen(), query).err().unwrap();
        let TranscodeError::InvalidValue {
            path: p, expected: e, ..
        } = &err
        else {
            panic!("{query}: {err:?}")
        };
        assert_eq!((p.as_str(), e.as_str()), (path, expected), "{query}");
    }
}

#[test]
fn nested_dots_fill_nested_messages() {
    let msg = from_query(&kitchen(), "inner.name=a&inner.child.name=b&inner.child.child.count=3").unwrap();
    let out = to_json(&msg);
    assert_eq!(out["inner"]["name"], "a");
    assert_eq!(out["inner"]["child"]["name"], "b");
    assert_eq!(out["inner"]["child"]["child"]["count"], "3");
}

#[test]
fn json_and_proto_spellings_of_a_message_field_merge() {
    let msg = from_query(&kitchen(), "choice_inner.name=a&choiceInner.count=2").unwrap();
    let out = to_json(&msg);
    assert_eq!(out["choiceInner"]["name"], "a");
    assert_eq!(out["choiceInner"]["count"], "2");
}

#[test]
fn repeated_parameters_repeat_the_name_and_never_split_commas() {
    let msg = from_query(
        &kitchen(),
        "ids=1&ids=2&names=a,b&names=c&inner.tags=x&inner.tags=y&flags=true",
    )
    .unwrap();
    let out = to_json(&msg);
    assert_eq!(out["ids"], json!(["1", "2"]));
    assert_eq!(out["names"], json!(["a,b", "c"]));
    assert_eq!(out["inner"]["tags"], json!(["x", "y"]));
    assert_eq!(out["flags"], json!([true]));
}

#[test]
fn enums_from_parameters_by_name_and_number() {
    let out = to_json(&from_query(&kitchen(), "color=GREEN&colors=RED&colors=7&colors=2").unwrap());
    assert_eq!(out["color"], "GREEN");
    assert_eq!(out["colors"], json!(["RED", "BLUE", "GREEN"]));
    assert_eq!(to_json(&from_query(&kitchen(), "color=7").unwrap())["color"], "BLUE");
    let err = from_query(&kitchen(), "color=PURPLE").err().unwrap();
    let TranscodeError::InvalidValue { path, expected, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!((path.as_str(), expected.as_str()), ("color", "kitchen.Color"));
}

#[test]
fn map_parameters_use_brackets() {
    let query = "counts[a]=1&counts[b.c]=2&byId[7].name=seven&byId[7].count=3&byFlag[true]=yes&colorByN[3]=GREEN\
                 &counts[app.kubernetes.io%2Fname]=4&counts[]=5";
    let out = to_json(&from_query(&kitchen(), query).unwrap());
    assert_eq!(
        out["counts"],
        json!({"a": 1, "b.c": 2, "app.kubernetes.io/name": 4, "": 5})
    );
    assert_eq!(out["byId"]["7"]["name"], "seven");
    assert_eq!(out["byId"]["7"]["count"], "3");
    assert_eq!(out["byFlag"], json!({"true": "yes"}));
    assert_eq!(out["colorByN"], json!({"3": "GREEN"}));
}

#[test]
fn map_parameter_errors() {
    let k = kitchen();
    let invalid_param = |query: &str, path: &str| {
        let err = from_query(&k, query).err().unwrap();
        let TranscodeError::InvalidParameter { path: p, .. } = &err else {
            panic!("{query}: {err:?}")
        };
        assert_eq!(p, path, "{query}");
        err
    };
    let err = invalid_param("counts.a=1", "counts");
    assert!(err.to_string().contains("counts[key]=value"), "{err}");
    invalid_param("counts=1", "counts");
    invalid_param("counts[a]=1&counts[a]=2", "counts[a]");
    invalid_param("byId[1]=x", "byId[1]");
    invalid_param("counts[a].b=1", "counts[a]");
    let err = from_query(&k, "byId[x].name=y").err().unwrap();
    let TranscodeError::InvalidValue { path, expected, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!((path.as_str(), expected.as_str()), ("byId[x]", "int64 map key"));
    let err = from_query(&k, "counts[a]=x").err().unwrap();
    let TranscodeError::InvalidValue { path, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(path, "counts[a]");
    let err = from_query(&k, "byId[1].nope=1").err().unwrap();
    assert_eq!(
        err,
        TranscodeError::UnknownField {
            path: "byId[1].nope".into(),
            message: "kitchen.Inner".into()
        }
    );
}

#[test]
fn well_known_types_from_parameters() {
    let query = [
        ("createdAt", "2024-01-02T03:04:05Z"),
        ("ttl", "1.5s"),
        ("maxItems", "9007199254740993"),
        ("nickname", "bob"),
        ("enabled", "true"),
        ("weight", "2.5"),
        ("port", "8080"),
        ("blob", "aGk="),
        ("ratio", "0.5"),
        ("level", "-3"),
        ("big", "18446744073709551615"),
        ("updateMask", "name,inner.childName"),
        ("nothing", "{}"),
        ("attrs", r#"{"a":"b"}"#),
        ("listValue", r#"[1,"x"]"#),
        ("stamps", "1970-01-01T00:00:00Z"),
        ("stamps", "2000-01-01T00:00:00Z"),
    ];
    let out = to_json(&from_pairs(&kitchen(), &query).unwrap());
    assert_eq!(out["createdAt"], "2024-01-02T03:04:05Z");
    assert_eq!(out["ttl"], "1.500s");
    assert_eq!(out["maxItems"], "9007199254740993");
    assert_eq!(out["nickname"], "bob");
    assert_eq!(out["enabled"], true);
    assert_eq!(out["weight"], 2.5);
    assert_eq!(out["port"], 8080);
    assert_eq!(out["blob"], "aGk=");
    assert_eq!(out["ratio"], 0.5);
    assert_eq!(out["level"], -3);
    assert_eq!(out["big"], "18446744073709551615");
    assert_eq!(out["updateMask"], "name,inner.childName");
    assert_eq!(out["nothing"], json!({}));
    assert_eq!(out["attrs"], json!({"a": "b"}));
    assert_eq!(out["listValue"], json!([1.0, "x"]));
    assert_eq!(out["stamps"], json!(["1970-01-01T00:00:00Z", "2000-01-01T00:00:00Z"]));
}

#[test]
fn value_parameters_are_json_when_they_parse() {
    for (raw, expected) in [
        ("5", json!(5.0)),
        ("abc", json!("abc")),
        ("\"5\"", json!("5")),
        ("true", json!(true)),
    ] {
        let out = to_json(&from_pairs(&kitchen(), &[("anyValue", raw)]).unwrap());
        assert_eq!(out["anyValue"], expected, "{raw}");
    }
}

#[test]
fn well_known_type_parameter_errors() {
    for (query, path, expected) in [
        ("createdAt=yesterday", "createdAt", "google.protobuf.Timestamp"),
        ("ttl=forever", "ttl", "google.protobuf.Duration"),
        ("enabled=maybe", "enabled", "google.protobuf.BoolValue"),
        ("attrs=not-json", "attrs", "google.protobuf.Struct"),
        ("attrs=[1]", "attrs", "google.protobuf.Struct"),
        ("port=-1", "port", "google.protobuf.UInt32Value"),
    ] {
        let err = from_query(&kitchen(), query).err().unwrap();
        let TranscodeError::InvalidValue {
            path: p, expected: e, ..
        } = &err
        else {
            panic!("{query}: {err:?}")
        };
        assert_eq!((p.as_str(), e.as_str()), (path, expected), "{query}");
    }
    // A well-known type is set by its JSON form, not through its fields.
    let err = from_query(&kitchen(), "createdAt.seconds=5").err().unwrap();
    assert!(
        matches!(&err, TranscodeError::InvalidParameter { path, .. } if path == "createdAt"),
        "{err:?}"
    );
}

#[test]
fn unknown_parameter_names_the_path() {
    let err = from_query(&message("helloworld.CallRequest"), "nmae=x").err().unwrap();
    assert_eq!(err.to_string(), r#"unknown field "nmae" in helloworld.CallRequest"#);
    let err = from_query(&kitchen(), "inner.child.nmae=x").err().unwrap();
    assert_eq!(
        err,
        TranscodeError::UnknownField {
            path: "inner.child.nmae".into(),
            message: "kitchen.Inner".into()
        }
    );
}

#[test]
fn structural_parameter_errors() {
    for (query, path) in [
        ("inner.name=a&inner.name=b", "inner.name"),
        ("scalars.fInt32=1&scalars.f_int32=2", "scalars.f_int32"),
        ("color.x=1", "color"),
        ("inner=x", "inner"),
        ("inner.name.first=x", "inner.name"),
        ("items.name=x", "items"),
        ("ids.x=1", "ids"),
        ("ids[0]=1", "ids"),
        ("inner[a]=1", "inner"),
    ] {
        let err = from_query(&kitchen(), query).err().unwrap();
        let TranscodeError::InvalidParameter { path: p, .. } = &err else {
            panic!("{query}: {err:?}")
        };
        assert_eq!(p, path, "{query}");
        assert!(err.to_string().starts_with(&format!("parameter \"{path}\": ")), "{err}");
    }
}

#[test]
fn malformed_parameter_names() {
    for name in ["", ".a", "a.", "a..b", "a[", "a[b", "a]", "a[b]c", "a[b][c]", "[a]"] {
        let err = from_pairs(&kitchen(), &[(name, "1")]).err().unwrap();
        assert!(
            matches!(&err, TranscodeError::InvalidParameter { path, .. } if path == name),
            "{name:?}: {err:?}"
        );
    }
}

#[test]
fn parameter_depth_is_bounded() {
    let ok = format!("inner.{}name", "child.".repeat(MAX_PARAM_DEPTH - 2));
    assert!(from_pairs(&kitchen(), &[(ok.as_str(), "x")]).is_ok(), "{ok}");
    let deep = format!("inner.{}name", "child.".repeat(MAX_PARAM_DEPTH - 1));
    let err = from_pairs(&kitchen(), &[(deep.as_str(), "x")]).err().unwrap();
    assert!(matches!(err, TranscodeError::InvalidParameter { .. }), "{err:?}");
    let hostile = "a.".repeat(100_000);
    assert!(from_pairs(&kitchen(), &[(hostile.as_str(), "x")]).is_err());
}

#[test]
fn oneof_conflict_from_parameters() {
    let err = from_query(&kitchen(), "choiceText=a&choiceNumber=1").err().unwrap();
    assert!(
        matches!(&err, TranscodeError::OneofConflict { oneof, .. } if oneof == "choice"),
        "{err:?}"
    );
    assert!(from_query(&kitchen(), "choiceNumber=1").is_ok());
}

#[test]
fn owned_parameters_are_accepted() {
    let params = vec![(Cow::Owned("name".to_owned()), Cow::Owned("Bo".to_owned()))];
    let msg = request_from_params(&message("helloworld.CallRequest"), params).unwrap();
    assert_eq!(field(&msg, "name").as_str(), Some("Bo"));
}

// ---------------------------------------------------------------------------------------------
// Responses

#[test]
fn response_writes_default_fields() {
    let msg = DynamicMessage::new(message("helloworld.CallResponse"));
    assert_eq!(
        response_to_json(&msg).unwrap(),
        Bytes::from_static(br#"{"message":""}"#)
    );
}

#[test]
fn response_shape_is_canonical_with_defaults() {
    assert_eq!(to_json(&DynamicMessage::new(kitchen())), kitchen_json(json!({})));
    let scalars = to_json(&DynamicMessage::new(message("kitchen.Scalars")));
    assert_eq!(
        scalars,
        json!({"fDouble": 0.0, "fFloat": 0.0, "fInt32": 0, "fInt64": "0", "fUint32": 0, "fUint64": "0",
               "fSint32": 0, "fSint64": "0", "fFixed32": 0, "fFixed64": "0", "fSfixed32": 0, "fSfixed64": "0",
               "fBool": false, "fString": "", "fBytes": ""})
    );
}

#[test]
fn response_uses_camel_case_int64_strings_and_enum_names() {
    let msg = from_json(
        &kitchen(),
        r#"{"by_id": {"1": {"count": 5, "color": 2}}, "color_by_n": {"4": 1}}"#,
    )
    .unwrap();
    let body = response_to_json(&msg).unwrap();
    let text = std::str::from_utf8(&body).unwrap();
    assert!(
        text.contains(r#""byId":{"1":{"name":"","count":"5","color":"GREEN","tags":[]}}"#),
        "{text}"
    );
    assert!(text.contains(r#""colorByN":{"4":"RED"}"#), "{text}");
    assert!(!text.contains("by_id"), "{text}");
}

#[test]
fn response_drops_unknown_fields() {
    // field 1 = "hi", field 9 (unknown to CallResponse) = varint 1
    let bytes = [0x0a, 0x02, b'h', b'i', 0x48, 0x01];
    let msg = DynamicMessage::decode(message("helloworld.CallResponse"), &bytes[..]).unwrap();
    assert_eq!(msg.unknown_fields().count(), 1);
    assert_eq!(
        response_to_json(&msg).unwrap(),
        Bytes::from_static(br#"{"message":"hi"}"#)
    );
}

#[test]
fn response_without_json_form_is_an_error() {
    let mut stamp = DynamicMessage::new(message("google.protobuf.Timestamp"));
    stamp.set_field_by_name("seconds", PValue::I64(1_000_000_000_000));
    let mut msg = DynamicMessage::new(kitchen());
    msg.set_field_by_name("created_at", PValue::Message(stamp));
    let err = response_to_json(&msg).err().unwrap();
    assert!(matches!(err, TranscodeError::Response { .. }), "{err:?}");
    assert_eq!(GatewayError::from(err).code, StatusCode::BAD_GATEWAY);
}

// ---------------------------------------------------------------------------------------------
// Method lookup

fn dup_pool(order: &[&str]) -> DescriptorPool {
    compile(order, &[&format!("{FIXTURES}/dup")])
}

const DUP_FILES: [&str; 6] = [
    "alpha.proto",
    "beta.proto",
    "gamma.proto",
    "grpc/health.proto",
    "grpc/reflection.proto",
    "shop.proto",
];

fn service_of(found: Option<prost_reflect::MethodDescriptor>) -> Option<String> {
    found.map(|m| m.parent_service().full_name().to_owned())
}

#[test]
fn find_method_helloworld() {
    let method = find_method(pool(), "Helloworld", "Call", "helloworld").unwrap();
    assert_eq!(method.full_name(), "helloworld.Helloworld.Call");
    assert_eq!(method.input().full_name(), "helloworld.CallRequest");
    assert_eq!(method.output().full_name(), "helloworld.CallResponse");
    let stream = find_method(pool(), "Helloworld", "Stream", "helloworld").unwrap();
    assert!(stream.is_server_streaming());
}

#[test]
fn find_method_prefers_the_package_named_like_the_service() {
    let pool = dup_pool(&DUP_FILES);
    assert_eq!(
        service_of(find_method(&pool, "Greeter", "Hello", "beta")).as_deref(),
        Some("beta.Greeter")
    );
    assert_eq!(
        service_of(find_method(&pool, "Greeter", "Hello", "alpha")).as_deref(),
        Some("alpha.Greeter")
    );
    assert_eq!(
        service_of(find_method(&pool, "Greeter", "Hello", "zeta.gamma")).as_deref(),
        Some("zeta.gamma.Greeter")
    );
}

#[test]
fn find_method_without_preferred_package_picks_the_smallest_full_name() {
    let mut orders = vec![DUP_FILES.to_vec()];
    let mut reversed = DUP_FILES.to_vec();
    reversed.reverse();
    orders.push(reversed);
    orders.push(vec!["gamma.proto", "beta.proto", "alpha.proto"]);
    for order in orders {
        let pool = dup_pool(&order);
        for prefer in ["nope", "", "Alpha", "gamma"] {
            assert_eq!(
                service_of(find_method(&pool, "Greeter", "Hello", prefer)).as_deref(),
                Some("alpha.Greeter"),
                "{order:?} {prefer}"
            );
        }
    }
    let pool = dup_pool(&["gamma.proto", "beta.proto"]);
    assert_eq!(
        service_of(find_method(&pool, "Greeter", "Hello", "x")).as_deref(),
        Some("beta.Greeter")
    );
}

#[test]
fn find_method_only_considers_services_that_have_the_method() {
    let pool = dup_pool(&DUP_FILES);
    assert_eq!(
        service_of(find_method(&pool, "Greeter", "OnlyInGamma", "alpha")).as_deref(),
        Some("zeta.gamma.Greeter")
    );
    assert_eq!(
        service_of(find_method(&pool, "Greeter", "OnlyInAlpha", "beta")).as_deref(),
        Some("alpha.Greeter")
    );
}

#[test]
fn find_method_misses() {
    let pool = dup_pool(&DUP_FILES);
    assert!(find_method(&pool, "Greeter", "Goodbye", "alpha").is_none());
    assert!(
        find_method(&pool, "Greeter", "hello", "alpha").is_none(),
        "method names are case-sensitive"
    );
    assert!(
        find_method(&pool, "greeter", "Hello", "alpha").is_none(),
        "service names are case-sensitive"
    );
    assert!(
        find_method(&pool, "alpha.Greeter", "Hello", "alpha").is_none(),
        "simple names only"
    );
    assert!(find_method(&pool, "Nope", "Hello", "alpha").is_none());
}

#[test]
fn find_method_ignores_grpc_health_and_reflection() {
    let pool = dup_pool(&DUP_FILES);
    assert_eq!(
        service_of(find_method(&pool, "Health", "Check", "grpc.health.v1")).as_deref(),
        Some("shop.Health")
    );
    assert_eq!(
        service_of(find_method(
            &pool,
            "ServerReflection",
            "ServerReflectionInfo",
            "grpc.reflection.v1"
        ))
        .as_deref(),
        Some("shop.ServerReflection")
    );
    let grpc_only = dup_pool(&["grpc/health.proto", "grpc/reflection.proto"]);
    assert!(grpc_only.get_service_by_name("grpc.health.v1.Health").is_some());
    assert!(find_method(&grpc_only, "Health", "Check", "grpc.health.v1").is_none());
    assert!(find_method(&grpc_only, "ServerReflection", "ServerReflectionInfo", "").is_none());
}

// ---------------------------------------------------------------------------------------------
// The codec, through tonic's own client and server, in process

mod codec {
    use super::*;
    use prost_reflect::ReflectMessage as _;
    use std::convert::Infallible;
    use tonic::{Request, Response, Status};

    type ServerResult = Result<http::Response<tonic::body::Body>, Infallible>;

    /// A tonic client whose transport is `handler`, itself a tonic server (or a fake one).
    fn client_for<F, Fut>(handler: F) -> tonic::client::Grpc<tower::util::ServiceFn<F>>
    where
        F: FnMut(http::Request<tonic::body::Body>) -> Fut,
        Fut: Future<Output = ServerResult>,
    {
        tonic::client::Grpc::new(tower::service_fn(handler))
    }

    fn hello_request(name: &str) -> DynamicMessage {
        from_json(&message("helloworld.CallRequest"), &json!({"name": name}).to_string()).unwrap()
    }

    fn greet(request: &DynamicMessage) -> DynamicMessage {
        let name = field(request, "name").as_str().unwrap().to_owned();
        from_json(
            &message("helloworld.CallResponse"),
            &json!({"message": format!("Hello {name}")}).to_string(),
        )
        .unwrap()
    }

    async fn serve_unary(req: http::Request<tonic::body::Body>) -> ServerResult {
        let mut server = tonic::server::Grpc::new(DynamicCodec::new(message("helloworld.CallRequest")));
        let service = tower::service_fn(|request: Request<DynamicMessage>| async move {
            Ok::<_, Status>(Response::new(greet(request.get_ref())))
        });
        Ok(server.unary(service, req).await)
    }

    #[tokio::test]
    async fn unary_round_trip() {
        let mut client = client_for(serve_unary);
        client.ready().await.unwrap();
        let method = find_method(pool(), "Helloworld", "Call", "helloworld").unwrap();
        let path = http::uri::PathAndQuery::from_static("/helloworld.Helloworld/Call");
        let response = client
            .unary(
                Request::new(hello_request("Alice")),
                path,
                DynamicCodec::new(method.output()),
            )
            .await
            .unwrap();
        let response = response.into_inner();
        assert_eq!(response.descriptor().full_name(), "helloworld.CallResponse");
        assert_eq!(
            response_to_json(&response).unwrap(),
            Bytes::from_static(br#"{"message":"Hello Alice"}"#)
        );
    }

    #[tokio::test]
    async fn server_streaming_round_trip() {
        let serve = |req: http::Request<tonic::body::Body>| async move {
            let mut server = tonic::server::Grpc::new(DynamicCodec::new(message("helloworld.StreamRequest")));
            let service = tower::service_fn(|request: Request<DynamicMessage>| async move {
                let name = field(request.get_ref(), "name").as_str().unwrap().to_owned();
                let count = field(request.get_ref(), "count").as_i64().unwrap();
                let replies: Vec<Result<DynamicMessage, Status>> = (0..count)
                    .map(|i| {
                        let body = json!({"message": format!("{i} {name}")}).to_string();
                        Ok(from_json(&message("helloworld.StreamResponse"), &body).unwrap())
                    })
                    .collect();
                Ok::<_, Status>(Response::new(tokio_stream::iter(replies)))
            });
            Ok(server.server_streaming(service, req).await)
        };
        let mut client = client_for(serve);
        client.ready().await.unwrap();
        let method = find_method(pool(), "Helloworld", "Stream", "helloworld").unwrap();
        let request = from_query(&method.input(), "name=Bo&count=3").unwrap();
        let path = http::uri::PathAndQuery::from_static("/helloworld.Helloworld/Stream");
        let mut stream = client
            .server_streaming(Request::new(request), path, DynamicCodec::new(method.output()))
            .await
            .unwrap()
            .into_inner();
        let mut got = Vec::new();
        while let Some(reply) = stream.message().await.unwrap() {
            got.push(field(&reply, "message").as_str().unwrap().to_owned());
        }
        assert_eq!(got, ["0 Bo", "1 Bo", "2 Bo"]);
    }

    #[tokio::test]
    async fn undecodable_response_is_internal() {
        // A gRPC response whose message is not a valid protobuf encoding (a truncated field).
        let serve = |_req: http::Request<tonic::body::Body>| async move {
            let mut frame = vec![0u8, 0, 0, 0, 2];
            frame.extend_from_slice(&[0x0a, 0x05]);
            let body = http_body_util::Full::new(Bytes::from(frame));
            let response = http::Response::builder()
                .header("content-type", "application/grpc")
                .body(tonic::body::Body::new(body))
                .unwrap();
            Ok(response)
        };
        let mut client = client_for(serve);
        client.ready().await.unwrap();
        let path = http::uri::PathAndQuery::from_static("/helloworld.Helloworld/Call");
        let err = client
            .unary(
                Request::new(hello_request("x")),
                path,
                DynamicCodec::new(message("helloworld.CallResponse")),
            )
            .await
            .err()
            .unwrap();
        assert_eq!(err.code(), tonic::Code::Internal);
        assert!(err.message().contains("helloworld.CallResponse"), "{}", err.message());
        assert_eq!(
            GatewayError::from_grpc_status(&err).code,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[tokio::test]
    async fn backend_status_reaches_the_client() {
        let serve = |req: http::Request<tonic::body::Body>| async move {
            let mut server = tonic::server::Grpc::new(DynamicCodec::new(message("helloworld.CallRequest")));
            let service = tower::service_fn(|_request: Request<DynamicMessage>| async move {
                Err::<Response<DynamicMessage>, _>(Status::not_found(
                    r#"{"id":"helloworld","code":404,"detail":"nobody","status":"Not Found"}"#,
                ))
            });
            Ok(server.unary(service, req).await)
        };
        let mut client = client_for(serve);
        client.ready().await.unwrap();
        let path = http::uri::PathAndQuery::from_static("/helloworld.Helloworld/Call");
        let status = client
            .unary(
                Request::new(hello_request("x")),
                path,
                DynamicCodec::new(message("helloworld.CallResponse")),
            )
            .await
            .err()
            .unwrap();
        let err = GatewayError::from_grpc_status(&status);
        assert_eq!(
            (err.code, err.id.as_str(), err.detail.as_str()),
            (StatusCode::NOT_FOUND, "helloworld", "nobody")
        );
    }
}
