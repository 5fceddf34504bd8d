//! The explorer document: an OpenAPI 3.1 description of a tenant's API as the gateway serves it
//! (docs/explorer.md), built from the reflected descriptors of its `Grpc` services:
//!
//! - one `POST` operation per endpoint, at the path Micro's resolver routes to it
//!   (`/helloworld/call` for `Helloworld.Call` of MicroService `helloworld`, `/greeter/helloworld/call`
//!   when the proto service's name is not the MicroService's);
//! - request and response bodies are the messages in their proto3 JSON form (lowerCamel field
//!   names, 64-bit integers as strings, enums by name, well-known types as their JSON), as JSON
//!   Schema 2020-12 under `components.schemas`, named by their full proto names;
//! - server-streaming endpoints answer `application/x-ndjson` and `text/event-stream`;
//! - errors are the gateway's JSON error (`{id, code, detail, status}`);
//! - only what the caller may call: each endpoint is checked against the tenant's AuthRules with the
//!   caller's account, exactly as a call would be; endpoints the rules leave to accounts carry the
//!   bearer security requirement;
//! - one tag per MicroService with a described endpoint; for the tenant's own accounts the tag
//!   carries the service's status (`x-microplane-status`: phase, readiness, what runs, the build),
//!   which the dashboard shows.
//!
//! Pure: the phase serves what [`document`] returns.

use std::collections::{BTreeMap, BTreeSet};

use prost_reflect::{Cardinality, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor};
use serde_json::{Value, json};

use crate::auth::{Caller, TenantAuth};
use crate::resolve;
use crate::snapshot::Tenant;

/// Where the document is served: `/.well-known/openapi.json` (the tenant as for any request) or
/// `/<tenant>/.well-known/openapi.json`.
pub(crate) const WELL_KNOWN: &str = "openapi.json";

/// The path Micro's resolver routes to endpoint `endpoint` (`Svc.Method`) of MicroService
/// `service`, or `None` when no path reaches it (a name the resolver cannot produce).
pub(crate) fn path_of(service: &str, endpoint: &str) -> Option<String> {
    let (svc, method) = endpoint.split_once('.')?;
    let method = segment_for(method)?;
    let path = if resolve::camel(service) == svc {
        format!("/{service}/{method}")
    } else {
        format!("/{service}/{}/{method}", segment_for(svc)?)
    };
    // Only a path that resolves back to exactly this service and endpoint.
    let back = resolve::resolve_path(&path).ok()?;
    (back.service == service && back.endpoint == endpoint).then_some(path)
}

/// A path segment that `Camel` turns into `name`: kebab case when it round-trips
/// (`SayHello` → `say-hello`), else the name with its first letter lower-cased.
fn segment_for(name: &str) -> Option<String> {
    // A word starts at an upper-case letter after a lower-case letter or digit.
    let mut kebab = String::with_capacity(name.len() + 4);
    let mut after_lower = false;
    for c in name.chars() {
        if c.is_ascii_uppercase() && after_lower {
            kebab.push('-');
        }
        after_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        kebab.push(c.to_ascii_lowercase());
    }
    if resolve::camel(&kebab) == name {
        return Some(kebab);
    }
    let mut chars = name.chars();
    let first = chars.next()?;
    let lower: String = first.to_lowercase().chain(chars).collect();
    (resolve::camel(&lower) == name).then_some(lower)
}

/// The OpenAPI document of `tenant` for `account` (`None`: anonymous), as `auth` decides.
pub(crate) fn document(tenant: &Tenant, auth: &TenantAuth, account: Option<&Caller>, version: u64) -> Value {
    let mut paths = BTreeMap::new();
    let mut tags = Vec::new();
    let mut schemas = Schemas::default();
    // Status is for the tenant's own accounts: anonymous and foreign callers see the API only.
    let own = account.is_some_and(|a| a.is_own_in(&tenant.name));
    let mut routes: Vec<_> = tenant.routes.values().collect();
    routes.sort_by(|a, b| a.service.cmp(&b.service));
    for route in routes {
        let Some(methods) = &route.methods else {
            continue;
        };
        let mut endpoints: Vec<(&String, &MethodDescriptor)> = methods.iter().collect();
        endpoints.sort_by(|a, b| a.0.cmp(b.0));
        let described = paths.len();
        for (endpoint, method) in endpoints {
            // What the caller could not call is not described.
            if auth.authorize(account, &route.service, endpoint).is_err() {
                continue;
            }
            let Some(path) = path_of(&route.service, endpoint) else {
                continue;
            };
            let public = auth.authorize(None, &route.service, endpoint).is_ok();
            let op = operation(&route.service, endpoint, method, public, &mut schemas);
            paths.insert(path, json!({ "post": op }));
        }
        if paths.len() > described {
            let mut tag = json!({ "name": route.service });
            if let (true, Some(status)) = (own, &route.status) {
                tag["x-microplane-status"] = status_json(status);
            }
            tags.push(tag);
        }
    }
    let mut components = schemas.done();
    components.insert(
        "GatewayError".into(),
        json!({
            "type": "object",
            "description": "The gateway's error body (docs/gateway.md#errors).",
            "properties": {
                "id": {"type": "string"},
                "code": {"type": "integer"},
                "detail": {"type": "string"},
                "status": {"type": "string"}
            },
            "required": ["id", "code", "detail", "status"]
        }),
    );
    json!({
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": format!("{} API", tenant.name),
            "version": version.to_string(),
            "description": format!(
                "The endpoints of tenant {} this caller may call, as the Microplane gateway routes them.",
                tenant.name
            ),
        },
        "servers": [{"url": "/"}],
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "An access token of the tenant's token endpoint (/.well-known/token) or of an issuer it trusts."
                }
            }
        }
    })
}

/// A service's status as the dashboard reads it; empty fields are left out.
fn status_json(s: &microplane_wire::sync::v1::ServiceStatus) -> Value {
    let mut out = serde_json::Map::new();
    let text = |out: &mut serde_json::Map<String, Value>, key: &str, value: &str| {
        if !value.is_empty() {
            out.insert(key.into(), json!(value));
        }
    };
    text(&mut out, "phase", &s.phase);
    text(&mut out, "reason", &s.reason);
    text(&mut out, "message", &s.message);
    text(&mut out, "image", &s.image);
    text(&mut out, "commit", &s.commit);
    text(&mut out, "url", &s.url);
    out.insert("ready".into(), json!(s.ready));
    out.insert("replicas".into(), json!(s.replicas));
    out.insert("readyReplicas".into(), json!(s.ready_replicas));
    if let Some(b) = &s.build {
        let mut build = serde_json::Map::new();
        text(&mut build, "job", &b.job);
        text(&mut build, "commit", &b.commit);
        text(&mut build, "state", &b.state);
        text(&mut build, "reason", &b.reason);
        text(&mut build, "message", &b.message);
        out.insert("build".into(), Value::Object(build));
    }
    Value::Object(out)
}

fn operation(service: &str, endpoint: &str, method: &MethodDescriptor, public: bool, schemas: &mut Schemas) -> Value {
    let input = schemas.reference(&method.input());
    let output = schemas.reference(&method.output());
    let ok = if method.is_server_streaming() {
        json!({
            "description": "One message per line (NDJSON), or server-sent events with `Accept: text/event-stream`.",
            "content": {
                "application/x-ndjson": {"schema": output},
                "text/event-stream": {"schema": {"type": "string"}}
            }
        })
    } else {
        json!({"description": "The response message.", "content": {"application/json": {"schema": output}}})
    };
    let error = json!({"$ref": "#/components/schemas/GatewayError"});
    let mut op = json!({
        "operationId": format!("{service}.{endpoint}"),
        "summary": endpoint,
        "tags": [service],
        "requestBody": {
            "required": false,
            "content": {"application/json": {"schema": input}}
        },
        "responses": {
            "200": ok,
            "default": {"description": "An error of the gateway or the service.", "content": {"application/json": {"schema": error}}}
        }
    });
    if !public {
        op["security"] = json!([{"bearer": []}]);
    }
    op
}

/// The message schemas met so far, by full name.
#[derive(Default)]
struct Schemas {
    done: BTreeMap<String, Value>,
    pending: BTreeSet<String>,
}

impl Schemas {
    /// A schema for `message`: inline for well-known types, else a `$ref` (its schema added).
    fn reference(&mut self, message: &MessageDescriptor) -> Value {
        if let Some(wkt) = well_known(message) {
            return wkt;
        }
        let name = message.full_name().to_string();
        if !self.done.contains_key(&name) && self.pending.insert(name.clone()) {
            let schema = self.message(message);
            self.done.insert(name.clone(), schema);
        }
        json!({"$ref": format!("#/components/schemas/{name}")})
    }

    fn message(&mut self, message: &MessageDescriptor) -> Value {
        let mut properties = serde_json::Map::new();
        for field in message.fields() {
            properties.insert(field.json_name().to_string(), self.field(&field));
        }
        json!({
            "type": "object",
            "properties": properties,
            "additionalProperties": false,
        })
    }

    fn field(&mut self, field: &FieldDescriptor) -> Value {
        if field.is_map() {
            let Kind::Message(entry) = field.kind() else {
                return json!({});
            };
            let value = entry.map_entry_value_field();
            return json!({"type": "object", "additionalProperties": self.single(&value.kind())});
        }
        let one = self.single(&field.kind());
        if field.cardinality() == Cardinality::Repeated {
            json!({"type": "array", "items": one})
        } else {
            one
        }
    }

    fn single(&mut self, kind: &Kind) -> Value {
        match kind {
            Kind::Double | Kind::Float => json!({"type": "number"}),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => json!({"type": "integer", "format": "int32"}),
            Kind::Uint32 | Kind::Fixed32 => json!({"type": "integer", "format": "uint32", "minimum": 0}),
            // proto3 JSON writes 64-bit integers as strings and reads either.
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => json!({"type": ["string", "integer"], "format": "int64"}),
            Kind::Uint64 | Kind::Fixed64 => json!({"type": ["string", "integer"], "format": "uint64"}),
            Kind::Bool => json!({"type": "boolean"}),
            Kind::String => json!({"type": "string"}),
            Kind::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
            Kind::Enum(e) => {
                // By name, as the gateway writes them; numbers are read too.
                let values: Vec<Value> = e
                    .values()
                    .map(|v| json!(v.name()))
                    .chain(e.values().map(|v| json!(v.number())))
                    .collect();
                json!({"type": ["string", "integer"], "enum": values})
            }
            Kind::Message(m) => self.reference(m),
        }
    }

    fn done(self) -> serde_json::Map<String, Value> {
        self.done.into_iter().collect()
    }
}

/// The proto3 JSON form of the well-known types.
fn well_known(message: &MessageDescriptor) -> Option<Value> {
    let wrapper = |t: &str| json!({"type": [t, "null"]});
    Some(match message.full_name() {
        "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
        "google.protobuf.Duration" => json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$"}),
        "google.protobuf.FieldMask" => json!({"type": "string"}),
        "google.protobuf.Struct" => json!({"type": "object"}),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.ListValue" => json!({"type": "array"}),
        "google.protobuf.Empty" => json!({"type": "object", "additionalProperties": false}),
        "google.protobuf.Any" => {
            json!({"type": "object", "properties": {"@type": {"type": "string"}}, "required": ["@type"]})
        }
        "google.protobuf.StringValue" => wrapper("string"),
        "google.protobuf.BytesValue" => json!({"type": ["string", "null"], "contentEncoding": "base64"}),
        "google.protobuf.BoolValue" => wrapper("boolean"),
        "google.protobuf.DoubleValue" | "google.protobuf.FloatValue" => wrapper("number"),
        "google.protobuf.Int32Value" | "google.protobuf.UInt32Value" => wrapper("integer"),
        "google.protobuf.Int64Value" | "google.protobuf.UInt64Value" => json!({"type": ["string", "integer", "null"]}),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_back_to_their_endpoint() {
        assert_eq!(
            path_of("helloworld", "Helloworld.Call").as_deref(),
            Some("/helloworld/call")
        );
        assert_eq!(path_of("foo-bar", "FooBar.BazXyz").as_deref(), Some("/foo-bar/baz-xyz"));
        assert_eq!(
            path_of("greeter", "Helloworld.SayHello").as_deref(),
            Some("/greeter/helloworld/say-hello")
        );
        // Letters kebab case cannot give back: the first letter lower-cased.
        assert_eq!(
            path_of("helloworld", "Helloworld.GetURL").as_deref(),
            Some("/helloworld/getURL")
        );
        for (svc, ep) in [
            ("helloworld", "Helloworld.Stream"),
            ("a", "B.C"),
            ("my-svc", "MySvc.Do2Things"),
            ("x", "Y.ABC"),
        ] {
            let path = path_of(svc, ep).expect(ep);
            let back = resolve::resolve_path(&path).unwrap();
            assert_eq!((back.service.as_str(), back.endpoint.as_str()), (svc, ep), "{path}");
        }
        assert_eq!(path_of("helloworld", "NoDot"), None);
    }
}
