//! The MicroService controller: `dereference → validate → build → apply → update_status`.

pub mod build;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use microplane_crds::{MicroService, Rollout as ConfigRollout};

use self::build::ListedConfig;
use self::status::{Blocked, Rollout};
use crate::context::{Context, name_of, namespace_of};
use crate::{Result, conditions};

/// Name of this controller in metrics.
pub const CONTROLLER: &str = "microservice";

/// Reconciles one MicroService.
pub async fn reconcile(ms: Arc<MicroService>, ctx: Arc<Context>) -> Result<Action> {
    ctx.instrumented(CONTROLLER, ms.as_ref(), reconcile_inner(&ms, &ctx))
        .await
}

async fn reconcile_inner(ms: &MicroService, ctx: &Context) -> Result<Action> {
    let name = name_of(ms)?;
    let namespace = namespace_of(ms)?;

    // Dereference and validate: the tenant, the listed Configs, the mode.
    let blocked = blocked(ms, ctx, &namespace);
    let (rollout, problem) = if let Some(ref b) = blocked {
        tracing::debug!(%name, %namespace, ?b, "not deployable");
        (None, None)
    } else {
        let listed = listed_configs(ms, ctx, &namespace);
        // Build and apply.
        let desired = build::desired(ms, &listed)?;
        let current = ctx.stores.deployments.get(&ObjectRef::new(&name).within(&namespace));
        let deployment: Deployment = ctx.apply(CONTROLLER, current.as_deref(), &desired.deployment).await?;
        let current = ctx.stores.services.get(&ObjectRef::new(&name).within(&namespace));
        ctx.apply::<Service>(CONTROLLER, current.as_deref(), &desired.service)
            .await?;
        // Orphans (a budget after scaling to one replica, an HPA after autoscaling is removed) are
        // deleted; the caches say whether there is anything to delete.
        let current = ctx.stores.pdbs.get(&ObjectRef::new(&name).within(&namespace));
        match (&desired.pdb, current) {
            (Some(pdb), current) => ctx.apply(CONTROLLER, current.as_deref(), pdb).await.map(|_| ())?,
            (None, Some(_)) => {
                ctx.delete_if_exists::<PodDisruptionBudget>(CONTROLLER, &namespace, &name)
                    .await?
            }
            (None, None) => {}
        }
        let current = ctx.stores.hpas.get(&ObjectRef::new(&name).within(&namespace));
        match (&desired.hpa, current) {
            (Some(hpa), current) => ctx.apply(CONTROLLER, current.as_deref(), hpa).await.map(|_| ())?,
            (None, Some(_)) => {
                ctx.delete_if_exists::<HorizontalPodAutoscaler>(CONTROLLER, &namespace, &name)
                    .await?
            }
            (None, None) => {}
        }
        let rollout = Rollout::of(&deployment);
        let problem = (!rollout.complete())
            .then(|| {
                let pods = ctx.stores.pods.state();
                status::pod_problem(pods.iter().map(AsRef::as_ref).filter(|p| {
                    p.namespace().as_deref() == Some(namespace.as_str())
                        && p.labels().get(build::SERVICE_LABEL) == Some(&name)
                }))
            })
            .flatten();
        (Some(rollout), problem)
    };

    // Update status, only when it changed.
    let previous = ms.status.as_ref();
    let (mut next, mut wanted) = status::compute(
        previous,
        ms.meta().generation,
        ms.spec.image.as_deref(),
        blocked.as_ref(),
        rollout.as_ref(),
        problem.as_ref(),
    );
    if blocked.is_none() {
        let state = crate::sync::snapshot::discovery_key(ms).map(|k| ctx.discovery.state(&k));
        let (endpoints, url, routed) = status::routing(
            &name,
            ms.spec.expose,
            ms.spec.protocol,
            state.as_ref(),
            ctx.settings.gateway_url.as_deref(),
        );
        next.endpoints = endpoints;
        next.url = url;
        wanted.push(routed);
    }
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    next.conditions = conditions::merge(
        previous.map_or(&[][..], |p| &p.conditions),
        &wanted,
        ms.meta().generation,
        &now,
    );
    if previous != Some(&next) {
        let old_reason = previous
            .and_then(|p| p.conditions.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.reason.clone());
        let ready = &next.conditions[0];
        if old_reason.as_deref() != Some(ready.reason.as_str()) {
            let warning =
                ready.status != "True" && !matches!(ready.reason.as_str(), "Deploying" | "Pending" | "ConfigNotReady");
            ctx.event(ms, warning, &ready.reason, ready.message.clone(), "Reconcile")
                .await;
        }
        ctx.patch_status(CONTROLLER, ms, &next).await?;
    }

    Ok(match (&blocked, &rollout) {
        // Progress arrives through watches (Deployment, pods, tenants, Configs); the timer is a backstop.
        (None, Some(r)) if r.complete() => Action::requeue(ctx.settings.resync),
        _ => Action::requeue(Duration::from_secs(60)),
    })
}

fn blocked(ms: &MicroService, ctx: &Context, namespace: &str) -> Option<Blocked> {
    if ctx.stores.tenants.get(&ObjectRef::new(namespace)).is_none() {
        return Some(Blocked::TenantNotFound(namespace.to_string()));
    }
    let missing: Vec<String> = ms
        .spec
        .config
        .iter()
        .filter(|c| ctx.stores.configs.get(&ObjectRef::new(c).within(namespace)).is_none())
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Some(Blocked::ConfigNotFound(missing));
    }
    // A Config that exists but whose ConfigMap/Secret are not delivered would leave pods stuck in
    // ContainerCreating; wait for it instead.
    for c in &ms.spec.config {
        let cfg = ctx.stores.configs.get(&ObjectRef::new(c).within(namespace));
        let status = cfg.as_ref().and_then(|cfg| cfg.status.as_ref());
        if status.and_then(|s| s.hash.as_ref()).is_none() {
            // Say why, when the Config knows (a missing Secret, say).
            let why = status
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready" && c.status == "False"))
                .map(|c| format!("{}: {}", c.reason, c.message));
            return Some(Blocked::ConfigNotReady(c.clone(), why));
        }
    }
    if ms.spec.image.is_none() {
        return Some(Blocked::SourceNotSupported);
    }
    None
}

fn listed_configs(ms: &MicroService, ctx: &Context, namespace: &str) -> Vec<ListedConfig> {
    ms.spec
        .config
        .iter()
        .map(|c| {
            let cfg = ctx.stores.configs.get(&ObjectRef::new(c).within(namespace));
            ListedConfig {
                name: c.clone(),
                restart: cfg
                    .as_ref()
                    .is_some_and(|cfg| cfg.spec.rollout == ConfigRollout::Restart),
                hash: cfg.and_then(|cfg| cfg.status.as_ref().and_then(|s| s.hash.clone())),
            }
        })
        .collect()
}
