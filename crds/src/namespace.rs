//! `Namespace`: a tenant (docs/api.md).

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A tenant: the core Namespace of the same name, its owners, quota, isolation and auth settings.
/// Served as `tenants.microplane.dev`: a cluster-scoped custom resource with the plural `namespaces`
/// cannot be addressed by name on any API server (kubernetes/kubernetes#97397), see docs/api.md.
/// Its name is also the tenant name at the gateway.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "microplane.dev",
    version = "v1alpha1",
    kind = "Namespace",
    plural = "tenants",
    singular = "tenant",
    shortname = "mns",
    shortname = "tenant",
    category = "microplane",
    derive = "PartialEq",
    status = "NamespaceStatus",
    doc = "A tenant: the core Namespace of the same name with its owners, quota, network isolation and auth settings. Its name is the tenant name at the gateway.",
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status", "description": "Ready condition"}"#,
    printcolumn = r#"{"name": "Access", "type": "string", "jsonPath": ".spec.defaultAccess", "description": "Default access"}"#,
    printcolumn = r#"{"name": "Issuer", "type": "string", "jsonPath": ".status.issuer", "priority": 1, "description": "Token issuer"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#,
    validation = Rule::new("self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("a tenant name must be a DNS label (at most 63 lower-case letters, digits and '-'), as it names a core Namespace"),
    validation = Rule::new("!(self.metadata.name in ['default', 'kube-system', 'kube-public', 'kube-node-lease', 'microplane-system', 'microplane-builds'])").message("this namespace belongs to the cluster or to Microplane and cannot be a tenant")
)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSpec {
    /// Human-readable name of the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,

    /// Users, groups and service accounts bound to the `microplane-tenant-admin` role in the namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub owners: Vec<Owner>,

    /// Host names (DNS names such as `api.acme.com`) the gateway routes to this tenant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(h, h.size() <= 253 && h.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$'))").message("hosts must be DNS names: lower-case letters, digits, '-' and '.', e.g. api.example.com"))]
    #[schemars(length(max = 64), inner(length(max = 253)))]
    pub hosts: Vec<String>,

    /// Access when no AuthRule of the tenant says otherwise: `Public` (Micro's grant-all default rule),
    /// `Authenticated` (any account of the tenant) or `None`.
    #[serde(default)]
    pub default_access: DefaultAccess,

    /// Token issuing and external issuers of the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<TenantAuth>,

    /// Resource limits of the tenant (ResourceQuota and LimitRange).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,

    /// Network isolation of the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,

    /// Browser (CORS) access to the tenant's API. Absent: any origin may call, without credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,

    /// Manage a core Namespace that already exists. When false such a conflict is reported, never adopted.
    #[serde(default)]
    pub adopt: bool,
}

/// A subject bound to the tenant-admin role.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("self.kind == 'ServiceAccount' ? has(self.__namespace__) : !has(self.__namespace__)").message("owners[].namespace is required for a ServiceAccount and not allowed otherwise"))]
pub struct Owner {
    /// `User`, `Group` or `ServiceAccount`.
    pub kind: OwnerKind,
    /// Name of the user, group or service account.
    #[x_kube(validation = Rule::new("self.size() > 0").message("owners[].name must not be empty"))]
    pub name: String,
    /// Namespace of a ServiceAccount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Kind of an owner.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum OwnerKind {
    /// A user, as authenticated by the API server.
    User,
    /// A group of users.
    Group,
    /// A Kubernetes ServiceAccount.
    ServiceAccount,
}

/// Default access of a tenant.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DefaultAccess {
    /// Anyone, even without a token (Micro's default rule).
    #[default]
    Public,
    /// Any account issued by this tenant.
    Authenticated,
    /// Nobody, unless an AuthRule grants access.
    None,
}

/// Auth settings of a tenant.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantAuth {
    /// Lifetime of access tokens the platform issues, e.g. `15m` (the default) or `1h`.
    #[serde(default, rename = "tokenTTL", skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(s|m|h))+$')").message("tokenTTL must be a duration such as 15m or 1h"))]
    #[schemars(length(max = 32))]
    pub token_ttl: Option<String>,
    /// External OIDC issuers whose tokens the tenant accepts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub issuers: Vec<ExternalIssuer>,
    /// Login page of the tenant, an absolute `https://` (or `http://`) URL without a fragment. A
    /// browser navigation (`GET`/`HEAD` accepting `text/html`) that the rules refuse for want of an
    /// account is redirected (307) to `<loginUrl>?redirect_to=<the URL it asked for>`; API clients
    /// and refused accounts still get the 401/403 error. Absent: no redirect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isURL(self) && (url(self).getScheme() == 'https' || url(self).getScheme() == 'http') && url(self).getHostname() != '' && !self.contains('#')").message("loginUrl must be an absolute https:// or http:// URL with a host and no fragment, e.g. https://login.example.com/sign-in"))]
    #[schemars(length(max = 2048))]
    pub login_url: Option<String>,
}

/// An external OIDC issuer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.jwksUri) != has(self.jwks)").message("exactly one of issuers[].jwksUri and issuers[].jwks must be set"))]
#[x_kube(validation = Rule::new("has(self.audiences) && size(self.audiences) > 0").message("issuers[].audiences must name the audiences (aud) of the tokens to accept, usually your application's client id: without them any token of the issuer, for any application, would pass"))]
pub struct ExternalIssuer {
    /// Exact `iss` claim of the issuer's tokens.
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("issuers[].issuer must be an http(s) URL"))]
    #[schemars(length(max = 2048))]
    pub issuer: String,
    /// URL of the issuer's JWKS document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("issuers[].jwksUri must be an http(s) URL"))]
    #[schemars(length(max = 2048))]
    pub jwks_uri: Option<String>,
    /// Inline JWKS document (JSON), instead of `jwksUri`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    /// Accepted `aud` values (at least one): a token must carry one of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Accepted signing algorithms. Default `RS256`. `none` and HMAC algorithms are never accepted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub algorithms: Vec<JwtAlgorithm>,
    /// Claim holding the account's scopes (a space-separated string or an array). Default `scope`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes_claim: Option<String>,
}

/// An asymmetric JWT signing algorithm.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[allow(missing_docs)]
pub enum JwtAlgorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

/// Resource limits of a tenant.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Quota {
    /// Total CPU requests of the tenant's pods, e.g. `4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Total memory requests of the tenant's pods, e.g. `8Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
    /// Maximum number of pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub pods: Option<i32>,
    /// Maximum number of MicroServices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub micro_services: Option<i32>,
}

/// Network settings of a tenant.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct Network {
    /// `Strict` (default): ingress only from the same namespace and the gateway. `None`: no policy.
    #[serde(default)]
    pub isolation: Isolation,
}

/// Network isolation of a tenant.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Isolation {
    /// A NetworkPolicy denies ingress except from the same namespace and the gateway.
    #[default]
    Strict,
    /// No NetworkPolicy.
    None,
}

/// CORS settings of a tenant.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.allowCredentials) || !self.allowCredentials || (has(self.allowedOrigins) && self.allowedOrigins.exists(o, o != '*'))").message("allowCredentials needs origins listed by name: '*' never receives credentials"))]
pub struct Cors {
    /// Allowed origins (`https://app.example.com`, or `*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
    /// Allowed request headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_headers: Vec<String>,
    /// Allowed methods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_methods: Vec<String>,
    /// Whether credentials (cookies, Authorization) may be sent, by the origins listed by name
    /// (never through `*`).
    #[serde(default)]
    pub allow_credentials: bool,
}

/// Observed state of a tenant.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The core Namespace managed for the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Issuer (`iss`) of the tokens the platform issues for the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// `Ready` and its reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::conditions::conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Key ids (`kid`) of the tenant's current signing keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_ids: Vec<String>,
}
