//! The AuthRule controller: the schema has validated the rule at apply time; this publishes that it
//! is accepted (`Accepted`, `Ready`) for the current generation. The gateway issue adds enforcement.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Resource;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use microplane_crds::{AuthRule, AuthRuleStatus, CondType, Reason};

use crate::Result;
use crate::conditions::{self, Cond};
use crate::context::{Context, namespace_of};

/// Name of this controller in metrics.
pub(crate) const CONTROLLER: &str = "authrule";

/// Reconciles one AuthRule.
pub(crate) async fn reconcile(rule: Arc<AuthRule>, ctx: Arc<Context>) -> Result<Action> {
    ctx.instrumented(CONTROLLER, rule.as_ref(), reconcile_inner(&rule, &ctx))
        .await
}

async fn reconcile_inner(rule: &AuthRule, ctx: &Context) -> Result<Action> {
    let namespace = namespace_of(rule)?;
    let in_tenant = ctx.stores.tenants.get(&ObjectRef::new(&namespace)).is_some();
    let wanted = if in_tenant {
        vec![
            Cond::ok(CondType::Accepted, Reason::Valid, "the rule is valid"),
            Cond::ok(CondType::Ready, Reason::Accepted, "the rule is accepted"),
        ]
    } else {
        let m = format!("namespace {namespace} is not a tenant, so no request is evaluated against this rule");
        vec![
            Cond::ok(CondType::Accepted, Reason::Valid, "the rule is valid"),
            Cond::fail(CondType::Ready, Reason::TenantNotFound, m),
        ]
    };
    let previous = rule.status.as_ref();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let next = AuthRuleStatus {
        observed_generation: rule.meta().generation,
        conditions: conditions::merge(
            previous.map_or(&[][..], |p| &p.conditions),
            &conditions::kstatus(wanted),
            rule.meta().generation,
            &now,
        ),
    };
    if previous != Some(&next) {
        ctx.patch_status(CONTROLLER, rule, &next).await?;
    }
    Ok(Action::await_change())
}
