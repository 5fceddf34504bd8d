//! `Config`: dynamic configuration for services (docs/api.md).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Dynamic configuration for services, the Kubernetes form of Micro's config service: a JSON document
/// plus values taken from Secrets, delivered to the pods of the MicroServices that list it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "microplane.dev",
    version = "v1alpha1",
    kind = "Config",
    plural = "configs",
    shortname = "mcfg",
    category = "microplane",
    derive = "PartialEq",
    namespaced,
    status = "ConfigStatus",
    doc = "Dynamic configuration for services: a JSON document plus values from Secrets, delivered to the pods of the MicroServices that list it.",
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status", "description": "Ready condition"}"#,
    printcolumn = r#"{"name": "Rollout", "type": "string", "jsonPath": ".spec.rollout", "description": "How changes reach pods"}"#,
    printcolumn = r#"{"name": "Hash", "type": "string", "jsonPath": ".status.hash", "priority": 1, "description": "Content hash"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ConfigSpec {
    /// The configuration document: a JSON object. Services read values by dot-separated path
    /// (`helloworld.greeting`).
    #[serde(default = "empty_object")]
    #[schemars(schema_with = "object_schema")]
    pub data: serde_json::Value,

    /// Values taken from Secrets and placed at a path of the document. Secret values never appear
    /// in the Config, its status, events or logs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(s, self.exists_one(t, t.path == s.path))").message("secrets[].path must be unique"))]
    #[schemars(length(max = 64))]
    pub secrets: Vec<ConfigSecret>,

    /// How changes reach pods: `Live` (mounted files change, no restart) or `Restart` (a rollout).
    #[serde(default)]
    pub rollout: Rollout,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

fn object_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "description": "The configuration document: a JSON object. Services read values by dot-separated path (`helloworld.greeting`).",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// A value taken from a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigSecret {
    /// Dot-separated path in the document where the value is placed, e.g. `db.password`.
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_-]+([.][A-Za-z0-9_-]+)*$')").message("secrets[].path must be dot-separated keys such as db.password"))]
    #[schemars(length(max = 256))]
    pub path: String,
    /// The Secret key holding the value.
    pub secret_key_ref: SecretKeyRef,
}

/// A key of a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct SecretKeyRef {
    /// Name of the Secret.
    pub name: String,
    /// Key in the Secret's data.
    pub key: String,
}

/// How configuration changes reach pods.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Rollout {
    /// Mounted files are updated in place; the SDK reloads them without a restart.
    #[default]
    Live,
    /// The Deployments using the Config roll out new pods.
    Restart,
}

/// Observed state of a Config.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Hash of the delivered content (document and secret values), without revealing them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// `Ready` and its reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::conditions::conditions_schema")]
    pub conditions: Vec<Condition>,
}
