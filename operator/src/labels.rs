//! The labels the operator puts on the objects it makes and selects them by, in one place, and how
//! any text is made fit for a label value.

/// Label on a MicroService's children (Deployment, Service, PodDisruptionBudget, HPA, pods): the
/// MicroService's name. Also selects the EndpointSlices of its Service.
pub const SERVICE_LABEL: &str = "microplane.dev/service";
/// Label naming the tenant: on every object the tenant controller manages, on the issuer-key
/// Secret, and on build Jobs and their pods.
pub const TENANT_LABEL: &str = "microplane.dev/tenant";
/// Label on build Jobs and their pods: the MicroService built.
pub const BUILD_OF_LABEL: &str = "microplane.dev/build-of";
/// Label on build Jobs and their pods: the commit built.
pub const COMMIT_LABEL: &str = "microplane.dev/commit";
/// Label on a Config's ConfigMap and Secret: the Config's name.
pub const CONFIG_LABEL: &str = "microplane.dev/config";
/// Label that lets the operator watch exactly the tenants' issuer-key Secrets.
pub const KEYS_LABEL: &str = "microplane.dev/issuer-keys";
/// Label the EndpointSlice controller puts on every slice of a Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A string made fit for a label value: at most 63 of `[A-Za-z0-9._-]`, alphanumeric at both ends.
pub fn label_value(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cut: String = cleaned.chars().take(63).collect();
    cut.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_string()
}
