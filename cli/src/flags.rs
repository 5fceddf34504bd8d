//! Dynamic endpoint commands: `microplane helloworld call --name John` becomes the JSON request
//! body of `POST /helloworld/call`, typed by the request message's schema in the tenant's OpenAPI
//! document (docs/explorer.md). Pure: no I/O.
//!
//! - `--field value` or `--field=value`, typed by the field's schema: strings as given, integers
//!   and numbers parsed, booleans `--flag` (true) or `--flag=false`, enums by name;
//! - nested fields with dots: `--address.city Paris`;
//! - repeated fields by repeating the flag (`--tags a --tags b`), maps as `--labels key=value`;
//! - any message field also takes a JSON value (`--address '{"city":"Paris"}'`);
//! - 64-bit integers are sent as the proto3 JSON strings, well-known types in their JSON form
//!   (`--at 2026-12-07T10:00:00Z`, `--timeout 1.5s`).

use serde_json::{Map, Value, json};

/// Why arguments do not make a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    /// Not a `--flag`.
    #[error("unexpected argument {0:?}: fields are given as --field value (see --help)")]
    Positional(String),
    /// The message has no such field.
    #[error("unknown field {field}: {known}")]
    Unknown {
        /// The flag as given.
        field: String,
        /// What the message has.
        known: String,
    },
    /// A flag without its value.
    #[error("--{0} needs a value")]
    Missing(String),
    /// A value of the wrong type.
    #[error("--{field}: {value:?} is not {expected}")]
    Type {
        /// The flag.
        field: String,
        /// The value.
        value: String,
        /// What the schema wants.
        expected: String,
    },
    /// A field given twice that is not repeated.
    #[error("--{0} is given more than once but is not a repeated field")]
    Twice(String),
}

/// An endpoint's operation in the document: its path, whether it streams, and its request schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    /// `/helloworld/call`.
    pub path: String,
    /// `helloworld.Helloworld.Call`.
    pub id: String,
    /// Server-streaming (NDJSON).
    pub streaming: bool,
    /// The request body schema (`$ref` resolved).
    pub request: Value,
    /// Whether it needs a token.
    pub secured: bool,
}

/// Resolves `#/components/schemas/...` references against `doc`.
fn deref<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    let mut s = schema;
    for _ in 0..32 {
        match s.get("$ref").and_then(Value::as_str) {
            Some(r) => match r.strip_prefix("#/components/schemas/") {
                Some(name) => s = &doc["components"]["schemas"][name],
                None => return s,
            },
            None => return s,
        }
    }
    s
}

/// The operations of `doc`, by path.
pub fn operations(doc: &Value) -> Vec<Operation> {
    let Some(paths) = doc["paths"].as_object() else {
        return Vec::new();
    };
    paths
        .iter()
        .filter_map(|(path, item)| {
            let op = item.get("post")?;
            let request = deref(doc, &op["requestBody"]["content"]["application/json"]["schema"]).clone();
            Some(Operation {
                path: path.clone(),
                id: op["operationId"].as_str().unwrap_or_default().to_string(),
                streaming: op["responses"]["200"]["content"].get("application/x-ndjson").is_some(),
                request: inline(doc, &request, 0),
                secured: op.get("security").is_some(),
            })
        })
        .collect()
}

/// `schema` with every `$ref` inlined (to a bounded depth: recursive messages end in `{}`).
fn inline(doc: &Value, schema: &Value, depth: usize) -> Value {
    if depth > 8 {
        return json!({});
    }
    let s = deref(doc, schema);
    match s {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let v = match k.as_str() {
                        "properties" => Value::Object(
                            v.as_object()
                                .map(|p| {
                                    p.iter()
                                        .map(|(name, f)| (name.clone(), inline(doc, f, depth + 1)))
                                        .collect()
                                })
                                .unwrap_or_default(),
                        ),
                        "items" | "additionalProperties" if v.is_object() => inline(doc, v, depth + 1),
                        _ => v.clone(),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The operation a dynamic command names: `<service> <endpoint>` as a path (`helloworld call` →
/// `/helloworld/call`, `greeter helloworld call` → `/greeter/helloworld/call`), or `<service>`
/// alone for `/<service>/call`.
pub fn find<'a>(ops: &'a [Operation], words: &[String]) -> Option<&'a Operation> {
    let path = format!("/{}", words.join("/"));
    ops.iter()
        .find(|o| o.path == path)
        .or_else(|| (words.len() == 1).then(|| ops.iter().find(|o| o.path == format!("{path}/call")))?)
}

fn types(schema: &Value) -> Vec<&str> {
    match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn field_names(schema: &Value) -> String {
    let names: Vec<String> = schema["properties"]
        .as_object()
        .map(|p| p.keys().map(|k| format!("--{k}")).collect())
        .unwrap_or_default();
    if names.is_empty() {
        "the message has no fields".into()
    } else {
        format!("the message has {}", names.join(", "))
    }
}

/// One scalar value of `schema` from `text`.
fn scalar(field: &str, schema: &Value, text: &str) -> Result<Value, FlagError> {
    let bad = |expected: &str| FlagError::Type {
        field: field.to_string(),
        value: text.to_string(),
        expected: expected.to_string(),
    };
    if let Some(values) = schema["enum"].as_array() {
        if values.iter().any(|v| v.as_str() == Some(text)) {
            return Ok(json!(text));
        }
        if let Ok(n) = text.parse::<i64>()
            && values.iter().any(|v| v.as_i64() == Some(n))
        {
            return Ok(json!(n));
        }
        let names: Vec<&str> = values.iter().filter_map(Value::as_str).collect();
        return Err(bad(&format!("one of {}", names.join(", "))));
    }
    let t = types(schema);
    if t.contains(&"object") || t.contains(&"array") || (t.is_empty() && schema.get("properties").is_some()) {
        return serde_json::from_str(text).map_err(|_| bad("a JSON value (this field is a message)"));
    }
    if t.contains(&"boolean") {
        return match text {
            "true" | "yes" | "1" => Ok(json!(true)),
            "false" | "no" | "0" => Ok(json!(false)),
            _ => Err(bad("true or false")),
        };
    }
    if t.contains(&"integer") {
        if t.contains(&"string") {
            // 64-bit: the proto3 JSON string, once it is a whole number.
            return text
                .parse::<i128>()
                .map(|_| json!(text))
                .map_err(|_| bad("a whole number"));
        }
        return text.parse::<i64>().map(|n| json!(n)).map_err(|_| bad("a whole number"));
    }
    if t.contains(&"number") {
        return text.parse::<f64>().map(|n| json!(n)).map_err(|_| bad("a number"));
    }
    Ok(json!(text))
}

/// Sets `path` (dot-separated) in `body` from `text`, typed by `schema` (the message's).
fn set(body: &mut Map<String, Value>, schema: &Value, flag: &str, path: &[&str], text: &str) -> Result<(), FlagError> {
    let (name, rest) = (path[0], &path[1..]);
    let Some(field) = schema["properties"].get(name) else {
        return Err(FlagError::Unknown {
            field: format!("--{flag}"),
            known: field_names(schema),
        });
    };
    if !rest.is_empty() {
        let nested = body.entry(name.to_string()).or_insert_with(|| json!({}));
        let Some(nested) = nested.as_object_mut() else {
            return Err(FlagError::Twice(flag.to_string()));
        };
        if field.get("properties").is_none() {
            return Err(FlagError::Unknown {
                field: format!("--{flag}"),
                known: format!("{name} is not a message"),
            });
        }
        return set(nested, field, flag, rest, text);
    }
    let t = types(field);
    if t.contains(&"array") {
        let item = scalar(flag, &field["items"], text)?;
        match body.entry(name.to_string()).or_insert_with(|| json!([])) {
            Value::Array(a) => a.push(item),
            _ => return Err(FlagError::Twice(flag.to_string())),
        }
        return Ok(());
    }
    if t.contains(&"object") && field.get("additionalProperties").is_some_and(Value::is_object) {
        // A map: key=value, repeatable.
        if let Some((k, v)) = text.split_once('=')
            && !text.trim_start().starts_with('{')
        {
            let value = scalar(flag, &field["additionalProperties"], v)?;
            match body.entry(name.to_string()).or_insert_with(|| json!({})) {
                Value::Object(m) => {
                    m.insert(k.to_string(), value);
                }
                _ => return Err(FlagError::Twice(flag.to_string())),
            }
            return Ok(());
        }
    }
    if body.contains_key(name) {
        return Err(FlagError::Twice(flag.to_string()));
    }
    body.insert(name.to_string(), scalar(flag, field, text)?);
    Ok(())
}

/// The request body `args` (`--field value …`) give for a message of `schema`.
pub fn request(schema: &Value, args: &[String]) -> Result<Value, FlagError> {
    let mut body = Map::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        let Some(flag) = arg.strip_prefix("--") else {
            return Err(FlagError::Positional(arg.clone()));
        };
        let (flag, inline_value) = match flag.split_once('=') {
            Some((f, v)) => (f, Some(v.to_string())),
            None => (flag, None),
        };
        let path: Vec<&str> = flag.split('.').collect();
        let field_schema = path
            .iter()
            .try_fold(schema, |s, p| s["properties"].get(*p))
            .cloned()
            .unwrap_or(Value::Null);
        let value = match inline_value {
            Some(v) => v,
            None => {
                let next_is_value = args.get(i + 1).is_some_and(|n| !n.starts_with("--"));
                if types(&field_schema).contains(&"boolean") && !next_is_value {
                    "true".to_string()
                } else if next_is_value {
                    i += 1;
                    args[i].clone()
                } else if field_schema.is_null() {
                    return Err(FlagError::Unknown {
                        field: format!("--{flag}"),
                        known: field_names(schema),
                    });
                } else {
                    return Err(FlagError::Missing(flag.to_string()));
                }
            }
        };
        set(&mut body, schema, flag, &path, &value)?;
        i += 1;
    }
    Ok(Value::Object(body))
}

/// `--help` of an operation: its fields with their types, nested ones with dots.
pub fn help(op: &Operation) -> String {
    let mut out = format!(
        "POST {}{}{}\n\nFields:\n",
        op.path,
        if op.streaming {
            " (server-streaming: prints each message)"
        } else {
            ""
        },
        if op.secured {
            " (needs a token: microplane login)"
        } else {
            ""
        },
    );
    let mut lines = Vec::new();
    describe(&op.request, "", &mut lines, 0);
    if lines.is_empty() {
        out.push_str("  (none)\n");
    }
    for l in lines {
        out.push_str(&l);
        out.push('\n');
    }
    out
}

fn describe(schema: &Value, prefix: &str, out: &mut Vec<String>, depth: usize) {
    let Some(props) = schema["properties"].as_object() else {
        return;
    };
    for (name, field) in props {
        let flag = format!("{prefix}{name}");
        let t = types(field);
        let kind = if let Some(e) = field["enum"].as_array() {
            let names: Vec<&str> = e.iter().filter_map(Value::as_str).collect();
            format!("one of {}", names.join("|"))
        } else if t.contains(&"array") {
            "repeated: give it once per item".into()
        } else if t.contains(&"object") && field["additionalProperties"].is_object() {
            "map: key=value, repeatable".into()
        } else if field.get("properties").is_some() {
            "message: JSON, or its fields with dots".into()
        } else if t.contains(&"integer") {
            "integer".into()
        } else {
            t.first().copied().unwrap_or("JSON").to_string()
        };
        out.push(format!("  --{flag:<28} {kind}"));
        if field.get("properties").is_some() && depth < 3 {
            describe(field, &format!("{flag}."), out, depth + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "count": {"type": "integer", "format": "int32"},
                "big": {"type": ["string", "integer"], "format": "int64"},
                "ratio": {"type": "number"},
                "on": {"type": "boolean"},
                "color": {"type": ["string", "integer"], "enum": ["RED", "GREEN", 0, 1]},
                "tags": {"type": "array", "items": {"type": "string"}},
                "nums": {"type": "array", "items": {"type": "integer", "format": "int32"}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "at": {"type": "string", "format": "date-time"},
                "address": {"type": "object", "properties": {
                    "city": {"type": "string"},
                    "geo": {"type": "object", "properties": {"lat": {"type": "number"}}}
                }}
            }
        })
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn flags_become_a_typed_message() {
        let body = request(
            &schema(),
            &args(&[
                "--name",
                "John",
                "--count=3",
                "--big",
                "9007199254740993",
                "--ratio",
                "0.5",
                "--on",
                "--color",
                "GREEN",
                "--tags",
                "a",
                "--tags",
                "b",
                "--nums",
                "1",
                "--nums",
                "2",
                "--labels",
                "k=v",
                "--labels=x=y",
                "--at",
                "2026-12-07T10:00:00Z",
                "--address.city",
                "Paris",
                "--address.geo.lat",
                "48.85",
            ]),
        )
        .unwrap();
        assert_eq!(
            body,
            json!({
                "name": "John", "count": 3, "big": "9007199254740993", "ratio": 0.5, "on": true,
                "color": "GREEN", "tags": ["a", "b"], "nums": [1, 2], "labels": {"k": "v", "x": "y"},
                "at": "2026-12-07T10:00:00Z", "address": {"city": "Paris", "geo": {"lat": 48.85}}
            })
        );
        // A message as JSON, a boolean set false, an enum by number.
        let body = request(
            &schema(),
            &args(&["--address", r#"{"city":"Rome"}"#, "--on=false", "--color", "1"]),
        )
        .unwrap();
        assert_eq!(body, json!({"address": {"city": "Rome"}, "on": false, "color": 1}));
    }

    #[test]
    fn bad_flags_say_what_to_do() {
        let s = schema();
        let e = request(&s, &args(&["--nmae", "x"])).unwrap_err();
        assert!(e.to_string().contains("--name"), "{e}");
        assert_eq!(
            request(&s, &args(&["--count", "many"])).unwrap_err().to_string(),
            "--count: \"many\" is not a whole number"
        );
        assert!(
            request(&s, &args(&["--color", "BLUE"]))
                .unwrap_err()
                .to_string()
                .contains("RED, GREEN")
        );
        assert_eq!(
            request(&s, &args(&["--name"])).unwrap_err(),
            FlagError::Missing("name".into())
        );
        assert_eq!(
            request(&s, &args(&["--name", "a", "--name", "b"])).unwrap_err(),
            FlagError::Twice("name".into())
        );
        assert_eq!(
            request(&s, &args(&["John"])).unwrap_err(),
            FlagError::Positional("John".into())
        );
        assert!(matches!(
            request(&s, &args(&["--name.first", "x"])).unwrap_err(),
            FlagError::Unknown { .. }
        ));
    }

    #[test]
    fn operations_come_from_the_document_and_are_found_by_words() {
        let doc = json!({
            "paths": {
                "/helloworld/call": {"post": {
                    "operationId": "helloworld.Helloworld.Call",
                    "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/helloworld.CallRequest"}}}},
                    "responses": {"200": {"content": {"application/json": {}}}}
                }},
                "/helloworld/stream": {"post": {
                    "operationId": "helloworld.Helloworld.Stream",
                    "security": [{"bearer": []}],
                    "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": {"n": {"$ref": "#/components/schemas/N"}}}}}},
                    "responses": {"200": {"content": {"application/x-ndjson": {}}}}
                }}
            },
            "components": {"schemas": {
                "helloworld.CallRequest": {"type": "object", "properties": {"name": {"type": "string"}}},
                "N": {"type": "object", "properties": {"v": {"type": "integer"}}}
            }}
        });
        let ops = operations(&doc);
        let call = find(&ops, &args(&["helloworld", "call"])).unwrap();
        assert_eq!(call.request["properties"]["name"]["type"], "string");
        assert!(!call.streaming && !call.secured);
        assert_eq!(find(&ops, &args(&["helloworld"])).unwrap().path, "/helloworld/call");
        let stream = find(&ops, &args(&["helloworld", "stream"])).unwrap();
        assert!(stream.streaming && stream.secured);
        assert_eq!(
            request(&stream.request, &args(&["--n.v", "3"])).unwrap(),
            json!({"n": {"v": 3}})
        );
        assert!(help(stream).contains("--n.v"), "{}", help(stream));
        assert!(find(&ops, &args(&["nosuch"])).is_none());
    }
}
