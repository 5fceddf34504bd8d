//! The tenant controller: a `Namespace` (microplane.dev) becomes a core Namespace with quota,
//! isolation, owners' RoleBinding and the default AuthRule. Deleting the tenant deletes the
//! namespace through garbage collection (the core Namespace is owned by the tenant), so no finalizer
//! can wedge deletion.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    LimitRange, LimitRangeItem, LimitRangeSpec, Namespace as CoreNamespace, ResourceQuota, ResourceQuotaSpec,
};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicySpec};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference, Time};
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use microplane_crds::{
    Access, AuthRule, AuthRuleSpec, CondType, DefaultAccess, Isolation, Namespace, NamespaceStatus, OwnerKind, Reason,
    RuleResource,
};

use kube::runtime::reflector::ObjectRef;

use crate::conditions::{self, Cond};
use crate::context::{Context, name_of};
use crate::issuer;
use crate::labels::TENANT_LABEL;
use crate::{Error, Result};

/// Name of this controller in metrics.
pub const CONTROLLER: &str = "tenant";
/// The ClusterRole tenant owners are bound to (shipped in config/rbac).
pub const TENANT_ADMIN_ROLE: &str = "microplane-tenant-admin";
/// Name of the default AuthRule, and its priority: below the default priority (0) of user rules,
/// so any user rule is evaluated first.
pub const DEFAULT_RULE: &str = "default";
/// See [`DEFAULT_RULE`].
pub const DEFAULT_RULE_PRIORITY: i32 = -1000;
/// Names of the other children.
pub const QUOTA: &str = "microplane-quota";
/// LimitRange name.
pub const LIMITS: &str = "microplane-defaults";
/// NetworkPolicy name.
pub const ISOLATION: &str = "microplane-isolation";
/// RoleBinding name.
pub const OWNERS: &str = "microplane-tenant-admin";

/// Everything a tenant wants inside its namespace; `None` means "must not exist".
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    /// The core Namespace.
    pub namespace: CoreNamespace,
    /// Quota, when `quota` is set.
    pub quota: Option<(ResourceQuota, LimitRange)>,
    /// Isolation policy, when `Strict`.
    pub policy: Option<NetworkPolicy>,
    /// Owners' binding, when there are owners.
    pub binding: Option<RoleBinding>,
    /// The default rule, unless `defaultAccess: None`.
    pub rule: Option<AuthRule>,
}

fn labels(tenant: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/managed-by".into(), "microplane-operator".into()),
        (TENANT_LABEL.into(), tenant.into()),
    ])
}

fn meta(tenant: &str, name: &str, owner: &OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(tenant.into()),
        labels: Some(labels(tenant)),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// Builds the desired objects of a tenant. `gateway_namespace` is admitted by the isolation policy.
pub fn desired(tenant: &Namespace, gateway_namespace: &str) -> Result<Desired> {
    let name = name_of(tenant)?;
    let owner = tenant
        .controller_owner_ref(&())
        .ok_or(Error::Malformed("tenant without a uid"))?;
    let spec = &tenant.spec;

    let mut ns_labels = labels(&name);
    // Pods of a tenant meet the restricted Pod Security Standard, enforced by the API server too.
    ns_labels.insert("pod-security.kubernetes.io/enforce".into(), "restricted".into());
    ns_labels.insert("pod-security.kubernetes.io/enforce-version".into(), "latest".into());
    let namespace = CoreNamespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(ns_labels),
            annotations: spec
                .display_name
                .as_ref()
                .map(|d| BTreeMap::from([("microplane.dev/display-name".into(), d.clone())])),
            owner_references: Some(vec![owner.clone()]),
            ..ObjectMeta::default()
        },
        ..CoreNamespace::default()
    };

    let quota = spec.quota.as_ref().map(|q| {
        let mut hard = BTreeMap::new();
        if let Some(cpu) = &q.cpu {
            hard.insert("requests.cpu".to_string(), cpu.clone());
        }
        if let Some(memory) = &q.memory {
            hard.insert("requests.memory".to_string(), memory.clone());
        }
        if let Some(pods) = q.pods {
            hard.insert("pods".to_string(), Quantity(pods.to_string()));
        }
        if let Some(n) = q.micro_services {
            hard.insert(
                "count/microservices.microplane.dev".to_string(),
                Quantity(n.to_string()),
            );
        }
        let quota = ResourceQuota {
            metadata: meta(&name, QUOTA, &owner),
            spec: Some(ResourceQuotaSpec {
                hard: Some(hard),
                ..ResourceQuotaSpec::default()
            }),
            status: None,
        };
        // Under a CPU/memory quota every pod needs requests; these defaults fill them in.
        let limits = LimitRange {
            metadata: meta(&name, LIMITS, &owner),
            spec: Some(LimitRangeSpec {
                limits: vec![LimitRangeItem {
                    type_: "Container".into(),
                    default_request: Some(BTreeMap::from([
                        ("cpu".into(), Quantity("50m".into())),
                        ("memory".into(), Quantity("64Mi".into())),
                    ])),
                    default: Some(BTreeMap::from([("memory".into(), Quantity("256Mi".into()))])),
                    ..LimitRangeItem::default()
                }],
            }),
        };
        (quota, limits)
    });

    let isolation = spec.network.as_ref().map(|n| n.isolation).unwrap_or_default();
    let policy = (isolation == Isolation::Strict).then(|| NetworkPolicy {
        metadata: meta(&name, ISOLATION, &owner),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![
                    NetworkPolicyPeer {
                        pod_selector: Some(LabelSelector::default()),
                        ..NetworkPolicyPeer::default()
                    },
                    NetworkPolicyPeer {
                        namespace_selector: Some(LabelSelector {
                            match_labels: Some(BTreeMap::from([(
                                "kubernetes.io/metadata.name".into(),
                                gateway_namespace.into(),
                            )])),
                            match_expressions: None,
                        }),
                        ..NetworkPolicyPeer::default()
                    },
                ]),
                ports: None,
            }]),
            egress: None,
        }),
    });

    let binding = (!spec.owners.is_empty()).then(|| RoleBinding {
        metadata: meta(&name, OWNERS, &owner),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: TENANT_ADMIN_ROLE.into(),
        },
        subjects: Some(
            spec.owners
                .iter()
                .map(|o| Subject {
                    kind: match o.kind {
                        OwnerKind::User => "User",
                        OwnerKind::Group => "Group",
                        OwnerKind::ServiceAccount => "ServiceAccount",
                    }
                    .into(),
                    api_group: (o.kind != OwnerKind::ServiceAccount).then(|| "rbac.authorization.k8s.io".into()),
                    name: o.name.clone(),
                    namespace: o.namespace.clone(),
                })
                .collect(),
        ),
    });

    let scope = match spec.default_access {
        DefaultAccess::Public => Some(""),
        DefaultAccess::Authenticated => Some("*"),
        DefaultAccess::None => None,
    };
    let rule = scope.map(|scope| {
        let mut rule = AuthRule::new(
            DEFAULT_RULE,
            AuthRuleSpec {
                resource: RuleResource {
                    type_: "*".into(),
                    name: "*".into(),
                    endpoint: "*".into(),
                },
                scope: scope.into(),
                access: Access::Granted,
                priority: DEFAULT_RULE_PRIORITY,
            },
        );
        rule.metadata = meta(&name, DEFAULT_RULE, &owner);
        rule
    });

    Ok(Desired {
        namespace,
        quota,
        policy,
        binding,
        rule,
    })
}

/// Whether an existing core Namespace belongs to the tenant (owned by it).
pub fn owned_by(ns: &CoreNamespace, tenant: &Namespace) -> bool {
    let uid = tenant.uid();
    ns.owner_references().iter().any(|o| Some(&o.uid) == uid.as_ref())
}

/// Core namespaces that are never a tenant, whatever `adopt` says: the cluster's own. The API server
/// refuses these names (the CRD's CEL rule); the operator also refuses its own, gateway and build
/// namespaces, which the chart may have named otherwise.
pub const RESERVED_NAMESPACES: [&str; 6] = [
    "default",
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "microplane-system",
    "microplane-builds",
];

/// Whether the tenant `name` would take over a namespace of the cluster or of Microplane.
pub fn reserved(name: &str, settings: &crate::context::Settings) -> bool {
    RESERVED_NAMESPACES.contains(&name)
        || name == settings.gateway_namespace
        || name == settings.operator_namespace
        || name == settings.source.build.namespace
}

/// Reconciles one tenant.
pub async fn reconcile(tenant: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action> {
    ctx.instrumented(CONTROLLER, tenant.as_ref(), reconcile_inner(&tenant, &ctx))
        .await
}

async fn reconcile_inner(tenant: &Namespace, ctx: &Context) -> Result<Action> {
    let name = name_of(tenant)?;
    if tenant.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    // A reserved name is never touched: not read, not labelled, never deleted with the tenant.
    let reserved_name = reserved(&name, &ctx.settings);
    let namespaces: Api<CoreNamespace> = Api::all(ctx.client.clone());
    let existing = if reserved_name {
        None
    } else {
        namespaces.get_opt(&name).await?
    };
    let conflict = reserved_name
        || existing
            .as_ref()
            .is_some_and(|ns| !owned_by(ns, tenant) && !tenant.spec.adopt);
    let terminating = existing
        .as_ref()
        .is_some_and(|ns| ns.metadata.deletion_timestamp.is_some());

    let mut quota_pending = false;
    let mut key_ids: Vec<String> = tenant.status.as_ref().map(|p| p.key_ids.clone()).unwrap_or_default();
    let wanted = if reserved_name {
        Cond::fail(
            CondType::Ready,
            Reason::NamespaceReserved,
            format!(
                "namespace {name} belongs to the cluster or to Microplane and is never a tenant; choose another name"
            ),
        )
    } else if conflict {
        Cond::fail(
            CondType::Ready,
            Reason::NamespaceConflict,
            format!(
                "core Namespace {name} exists and is not managed by this tenant; set spec.adopt: true to manage it"
            ),
        )
    } else if terminating {
        Cond::fail(
            CondType::Ready,
            Reason::NamespaceTerminating,
            format!("core Namespace {name} is being deleted; it is recreated afterwards"),
        )
    } else {
        let d = desired(tenant, &ctx.settings.gateway_namespace)?;
        ctx.apply(CONTROLLER, existing.as_ref().filter(|_| !conflict), &d.namespace)
            .await?;
        match &d.quota {
            Some((q, l)) => {
                let applied = ctx.apply_read(CONTROLLER, q).await?;
                ctx.apply_read(CONTROLLER, l).await?;
                // Until the quota controller has counted what the quota covers, the API server
                // refuses every MicroService in the namespace ("status unknown for quota"); the
                // tenant is not Ready before that.
                let counted = applied
                    .status
                    .as_ref()
                    .and_then(|st| st.used.as_ref())
                    .is_some_and(|used| {
                        q.spec
                            .as_ref()
                            .and_then(|sp| sp.hard.as_ref())
                            .is_some_and(|want| want.keys().all(|k| used.contains_key(k)))
                    });
                quota_pending = !counted;
            }
            None => {
                ctx.delete_if_exists::<ResourceQuota>(CONTROLLER, &name, QUOTA).await?;
                ctx.delete_if_exists::<LimitRange>(CONTROLLER, &name, LIMITS).await?;
            }
        }
        match &d.policy {
            Some(p) => ctx.apply_read(CONTROLLER, p).await.map(|_| ())?,
            None => {
                ctx.delete_if_exists::<NetworkPolicy>(CONTROLLER, &name, ISOLATION)
                    .await?
            }
        }
        match &d.binding {
            Some(b) => ctx.apply_read(CONTROLLER, b).await.map(|_| ())?,
            None => ctx.delete_if_exists::<RoleBinding>(CONTROLLER, &name, OWNERS).await?,
        }
        match &d.rule {
            Some(r) => ctx.apply_read(CONTROLLER, r).await.map(|_| ())?,
            None => {
                ctx.delete_if_exists::<AuthRule>(CONTROLLER, &name, DEFAULT_RULE)
                    .await?
            }
        }
        // The tenant's issuer: signing keys in a Secret, rotated with an overlap.
        let current = ctx
            .stores
            .issuer_keys
            .get(&ObjectRef::new(issuer::KEYS_SECRET).within(&name));
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        let stored = issuer::read(current.as_deref(), now);
        if !stored.rejected.is_empty() {
            // Only the usable keys reach the gateways; the Secret is written back without the rest.
            ctx.event(
                tenant,
                true,
                Reason::SigningKeysReplaced,
                format!(
                    "{} of Secret {}: {}; written again without them",
                    issuer::KEYS_FIELD,
                    issuer::KEYS_SECRET,
                    stored.rejected.join("; ")
                ),
                "Provision",
            )
            .await;
        }
        let rotated = issuer::rotate(&stored.keys, now, ctx.settings.key_rotation, || issuer::generate(now))?;
        let rotated = rotated.or_else(|| (!stored.rejected.is_empty()).then(|| stored.keys.clone()));
        key_ids = match rotated {
            Some(keys) => {
                let owner = tenant
                    .controller_owner_ref(&())
                    .ok_or(Error::Malformed("tenant without uid"))?;
                ctx.apply_read(CONTROLLER, &issuer::secret(&name, &keys, owner)?)
                    .await?;
                keys.into_iter().map(|k| k.kid).collect()
            }
            None => stored.keys.into_iter().map(|k| k.kid).collect(),
        };
        let tenants = ctx.stores.tenants.state();
        let owners = crate::snapshot::host_owners(tenants.iter().map(AsRef::as_ref));
        let taken: Vec<String> = tenant
            .spec
            .hosts
            .iter()
            .filter_map(|h| {
                let owner = owners.get(&h.trim_end_matches('.').to_ascii_lowercase())?;
                (*owner != name).then(|| format!("{h} (tenant {owner})"))
            })
            .collect();
        if quota_pending {
            Cond::fail(
                CondType::Ready,
                Reason::QuotaPending,
                format!("waiting for the quota controller to count namespace {name}"),
            )
        } else if !taken.is_empty() {
            Cond::fail(
                CondType::Ready,
                Reason::HostConflict,
                format!(
                    "hosts claimed by tenants created earlier, which the gateway routes to them: {}; remove them from spec.hosts",
                    taken.join(", ")
                ),
            )
        } else {
            Cond::ok(
                CondType::Ready,
                Reason::Provisioned,
                format!("namespace {name} is provisioned"),
            )
        }
    };

    let previous = tenant.status.as_ref();
    let mut next = NamespaceStatus {
        observed_generation: tenant.meta().generation,
        namespace: (!conflict).then(|| name.clone()),
        issuer: (!conflict).then(|| issuer::issuer_url(ctx.settings.gateway_url.as_deref(), &name)),
        key_ids,
        ..NamespaceStatus::default()
    };
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    next.conditions = conditions::merge(
        previous.map_or(&[][..], |p| &p.conditions),
        &conditions::kstatus(vec![wanted.clone()]),
        tenant.meta().generation,
        &now,
    );
    if previous != Some(&next) {
        if !wanted.status {
            let warning = conditions::progress(wanted.reason) == conditions::Progress::Stalled;
            ctx.event(tenant, warning, wanted.reason, wanted.message.clone(), "Provision")
                .await;
        }
        ctx.patch_status(CONTROLLER, tenant, &next).await?;
    }
    // A conflict or a terminating namespace is resolved outside this object: look again soon.
    Ok(if wanted.status {
        Action::requeue(ctx.settings.resync)
    } else {
        Action::requeue(Duration::from_secs(15))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clusters_and_microplanes_namespaces_are_never_tenants() {
        let mut settings = crate::context::Settings {
            gateway_namespace: "edge".into(),
            operator_namespace: "platform".into(),
            ..Default::default()
        };
        settings.source.build.namespace = "builds".into();
        for name in [
            "kube-system",
            "default",
            "kube-public",
            "kube-node-lease",
            "microplane-system",
            "edge",
            "platform",
            "builds",
        ] {
            assert!(reserved(name, &settings), "{name}");
        }
        for name in ["acme", "micro", "kube-systemx", "system"] {
            assert!(!reserved(name, &settings), "{name}");
        }
    }
}
