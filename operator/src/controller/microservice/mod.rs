//! The MicroService controller: `dereference → validate → build → apply → update_status`.

pub mod build;
pub mod source;
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
use microplane_crds::CondType;

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
    // Source mode: resolve, build, and choose what runs.
    let plan = match (&blocked, &ms.spec.source) {
        (None, Some(src)) if ms.spec.image.is_none() => {
            if ms.status.as_ref().and_then(|s| s.commit.as_ref()).is_none()
                && ms.status.as_ref().and_then(|s| s.phase) != Some(microplane_crds::Phase::Resolving)
                && source::needs_resolution(ms, src, ctx)
            {
                // The first resolution uses the network: say so before it starts.
                let (mut interim, wanted) =
                    status::compute(ms.status.as_ref(), ms.meta().generation, None, None, None, None);
                let wanted =
                    status::with_source(&mut interim, wanted, &source::SourceState::Resolving, None, Vec::new());
                interim.conditions = conditions::merge(
                    ms.status.as_ref().map_or(&[][..], |p| &p.conditions),
                    &conditions::kstatus(wanted),
                    ms.meta().generation,
                    &Time(k8s_openapi::jiff::Timestamp::now()),
                );
                ctx.patch_status(CONTROLLER, ms, &interim).await?;
            }
            Some(source::plan(ms, src, ctx, &name, &namespace).await?)
        }
        _ => None,
    };
    let run = match &plan {
        Some(p) => p.run.clone(),
        None => ms.spec.image.as_ref().map(|image| source::Run {
            image: image.clone(),
            version: build::image_version(image),
        }),
    };
    let (rollout, problem) = if let Some(ref b) = blocked {
        tracing::debug!(%name, %namespace, ?b, "not deployable");
        (None, None)
    } else if let Some(run) = &run {
        let listed = listed_configs(ms, ctx, &namespace);
        // Build and apply.
        let desired = build::desired_running(ms, &run.image, &run.version, &listed)?;
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
                        && p.labels().get(crate::labels::SERVICE_LABEL) == Some(&name)
                }))
            })
            .flatten();
        (Some(rollout), problem)
    } else {
        // Source mode before the first image: nothing to run yet.
        (None, None)
    };

    // Update status, only when it changed.
    let previous = ms.status.as_ref();
    let (mut next, mut wanted) = status::compute(
        previous,
        ms.meta().generation,
        run.as_ref().map(|r| r.image.as_str()),
        blocked.as_ref(),
        rollout.as_ref(),
        problem.as_ref(),
    );
    if let Some(p) = &plan {
        wanted = status::with_source(&mut next, wanted, &p.state, p.run.as_ref(), p.builds.clone());
    }
    if blocked.is_none() {
        let state = crate::discovery::key_of(ms).map(|k| ctx.discovery.state(&k));
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
    let wanted = conditions::kstatus(wanted);
    next.conditions = conditions::merge(
        previous.map_or(&[][..], |p| &p.conditions),
        &wanted,
        ms.meta().generation,
        &now,
    );
    if previous != Some(&next) {
        let instant = tokio::time::Instant::now();
        let uid = ms.metadata.uid.as_deref().unwrap_or_default();
        // Held: a new object with nothing to report but progress yet (the settle), or only counts
        // moved since a write moments ago (the progress interval). The next change of substance,
        // or the hold's end, writes.
        let hold = status::settling(ms, previous, &wanted, ctx.settings.status_settle, now.0).or_else(|| {
            previous
                .filter(|p| status::progress_only(p, &next))
                .and_then(|_| ctx.progress_hold(uid, instant))
        });
        if let Some(wait) = hold {
            return Ok(Action::requeue(wait.max(Duration::from_millis(100))));
        }
        let old_reason = previous
            .and_then(|p| p.conditions.iter().find(|c| c.type_ == CondType::Ready.as_str()))
            .map(|c| c.reason.clone());
        if let Some(ready) = wanted.iter().find(|c| c.type_ == CondType::Ready)
            && old_reason.as_deref() != Some(ready.reason.as_str())
        {
            // Warnings for what a user must fix (Stalled); progress is Normal.
            let warning = !ready.status && conditions::progress(ready.reason) == conditions::Progress::Stalled;
            ctx.event(ms, warning, ready.reason, ready.message.clone(), "Reconcile")
                .await;
        }
        ctx.patch_status(CONTROLLER, ms, &next).await?;
        ctx.status_wrote(uid, instant);
    }

    let backstop = match (&blocked, &rollout) {
        // Progress arrives through watches (Deployment, pods, tenants, Configs, build Jobs); the
        // timer is a backstop.
        (None, Some(r)) if r.complete() => ctx.settings.resync,
        _ => Duration::from_secs(60),
    };
    // A source is polled (`pollInterval`) or retried (backoff after a failed resolution).
    let again = plan
        .as_ref()
        .and_then(|p| p.again_in)
        .map(|d| d.max(Duration::from_millis(100)));
    Ok(Action::requeue(again.map_or(backstop, |a| a.min(backstop))))
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

/// Deletes build Jobs whose MicroService is gone and forgets their resolutions, once a minute on
/// the leader. (Build Jobs run in the build namespace, where owner references cannot reach.)
pub async fn collect_orphan_builds(ctx: Arc<Context>, services: kube::runtime::reflector::Store<MicroService>) {
    if services.wait_until_ready().await.is_err() || ctx.stores.jobs.wait_until_ready().await.is_err() {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        if !ctx.is_leader() {
            continue;
        }
        let exists = |ns: &str, name: &str| services.get(&ObjectRef::new(name).within(ns)).is_some();
        ctx.resolver
            .retain(|key| key.split_once('/').is_some_and(|(ns, name)| exists(ns, name)));
        for job in ctx.stores.jobs.state() {
            let labels = job.labels();
            let (Some(ns), Some(name)) = (
                labels.get(crate::labels::TENANT_LABEL),
                labels.get(crate::labels::BUILD_OF_LABEL),
            ) else {
                continue;
            };
            if exists(ns, name) {
                continue;
            }
            let job_ns = job.namespace().unwrap_or_default();
            tracing::info!(job = %job.name_any(), tenant = %ns, service = %name, "deleting the build of a deleted MicroService");
            if let Err(e) = ctx
                .delete_if_exists::<k8s_openapi::api::batch::v1::Job>(CONTROLLER, &job_ns, &job.name_any())
                .await
            {
                tracing::warn!(error = %e, "cannot delete an orphaned build Job");
            }
        }
    }
}
