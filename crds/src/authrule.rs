//! `AuthRule`: Micro's access rule (docs/auth.md#rules).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An access rule of the tenant, Micro's rule model: who (`scope`) may call what (`resource`).
/// Rules are evaluated by priority, highest first; see docs/auth.md.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "microplane.dev",
    version = "v1alpha1",
    kind = "AuthRule",
    plural = "authrules",
    shortname = "rule",
    category = "microplane",
    derive = "PartialEq",
    namespaced,
    status = "AuthRuleStatus",
    doc = "An access rule of the tenant (Micro's rule model): who (scope) may call what (resource), evaluated by priority, highest first.",
    printcolumn = r#"{"name": "Service", "type": "string", "jsonPath": ".spec.resource.name", "description": "Service name or *"}"#,
    printcolumn = r#"{"name": "Endpoint", "type": "string", "jsonPath": ".spec.resource.endpoint", "description": "Endpoint or wildcard"}"#,
    printcolumn = r#"{"name": "Scope", "type": "string", "jsonPath": ".spec.scope", "description": "Required scope"}"#,
    printcolumn = r#"{"name": "Access", "type": "string", "jsonPath": ".spec.access", "description": "Granted or Denied"}"#,
    printcolumn = r#"{"name": "Priority", "type": "integer", "jsonPath": ".spec.priority", "description": "Higher first"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AuthRuleSpec {
    /// What the rule applies to.
    pub resource: RuleResource,
    /// Who it applies to: `""` anyone (even without a token), `*` any account issued by this tenant,
    /// `+` any valid account of any tenant, anything else a named scope the account must hold.
    #[x_kube(validation = Rule::new("!self.contains(' ')").message("scope must be a single scope without spaces (or \"\", * or +)"))]
    #[schemars(length(max = 256))]
    pub scope: String,
    /// `Granted` or `Denied`.
    pub access: Access,
    /// Rules with a higher priority are evaluated first.
    #[serde(default)]
    pub priority: i32,
}

/// The resource a rule applies to: `<type>:<name>:<endpoint>`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
pub struct RuleResource {
    /// Resource type; `service` for calls through the gateway.
    #[serde(rename = "type", default = "default_type")]
    #[x_kube(validation = Rule::new("self == '*' || self.matches('^[a-z][a-z0-9-]*$')").message("resource.type must be a lower-case word such as service, or *"))]
    #[schemars(length(max = 64))]
    pub type_: String,
    /// A service name or `*`.
    #[x_kube(validation = Rule::new("self == '*' || self.matches('^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$')").message("resource.name must be a service name or *"))]
    #[schemars(length(max = 253))]
    pub name: String,
    /// `*`, an endpoint (`Helloworld.Call`), a path prefix wildcard (`/foo/*`), or a glob ending in `*`
    /// (`Helloworld.*`).
    #[serde(default = "default_endpoint")]
    #[x_kube(validation = Rule::new("self == '*' || self.matches('^/[^ *]*[*]?$') || self.matches('^[A-Za-z_][A-Za-z0-9_.]*[*]?$')").message("resource.endpoint must be *, an endpoint such as Helloworld.Call, a path such as /foo/*, or a glob such as Helloworld.*"))]
    #[schemars(length(max = 1024))]
    pub endpoint: String,
}

fn default_type() -> String {
    "service".into()
}
fn default_endpoint() -> String {
    "*".into()
}

/// Whether a matching rule grants or denies access.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Access {
    /// Allow the request.
    Granted,
    /// Refuse the request.
    Denied,
}

/// Observed state of an AuthRule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthRuleStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted` (the gateways enforce it) and `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::conditions::conditions_schema")]
    pub conditions: Vec<Condition>,
}
