//! The controllers, one module per kind (reconcile and the pure steps it takes), and how they are
//! wired ([`watches`]): one kube-runtime `Controller` per kind, reading shared caches, all gated by
//! the leader flag.

pub(crate) mod authrule;
pub(crate) mod config;
pub mod microservice;
pub mod tenant;
mod watches;

use std::sync::Arc;

use kube::Client;
use tokio::sync::watch;

use crate::context::{Context, Settings};
use crate::discovery::Discovery;

/// Where the routing snapshots for gateways go.
pub struct Routing {
    /// Receives each new snapshot.
    pub snapshots: watch::Sender<Option<Arc<microplane_wire::sync::v1::Snapshot>>>,
    /// This process's identity in snapshots.
    pub source_id: String,
}

/// Runs every controller and the snapshot publisher until `shutdown` resolves. `on_ready` is called
/// once all caches are synced.
pub async fn run(
    client: Client,
    metrics: crate::metrics::Metrics,
    settings: Settings,
    leader: watch::Receiver<bool>,
    routing: Routing,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + Clone + 'static,
    on_ready: impl FnOnce(Arc<Context>) + Send + 'static,
) {
    // Any change to tenants, MicroServices, AuthRules, keys, accounts or EndpointSlices wakes the
    // snapshot publisher; a finished discovery asks for reconciles of the MicroServices waiting.
    let changed = Arc::new(tokio::sync::Notify::new());
    let (rediscovered_tx, rediscovered) = tokio::sync::mpsc::unbounded_channel();
    let discovery = Arc::new(Discovery::new(changed.clone(), rediscovered_tx));

    let caches = watches::Caches::new();
    let sync_metrics = metrics.sync.clone();
    let mut context = Context::with_metrics(client.clone(), settings, caches.stores(), leader.clone(), metrics);
    context.discovery = discovery.clone();
    let ctx = Arc::new(context);
    let w = watches::Wiring {
        client,
        ctx: ctx.clone(),
        leader,
        shutdown,
        changed,
    };
    let watches::Caches {
        microservices,
        children,
        tenants,
        configs,
        rules,
        shared,
        events,
        routing: routing_caches,
    } = caches;
    let (ms_store, rule_store) = (microservices.store.clone(), rules.store.clone());
    let sources = watches::routing::sources(
        &w,
        shared.tenants.clone(),
        ms_store.clone(),
        rule_store.clone(),
        &routing_caches,
    );
    tokio::join!(
        watches::microservice::orphan_builds(&w, ms_store.clone()),
        watches::routing::feeds(&w, shared, routing_caches),
        watches::routing::publisher(&w, sources, discovery, routing, sync_metrics),
        watches::microservice::controller(
            &w,
            microservices,
            children,
            events.tenant_events,
            events.config_events,
            rediscovered
        ),
        watches::tenant::controller(&w, tenants),
        watches::config::controller(&w, configs),
        watches::authrule::controller(&w, rules, events.tenant_events_for_rules),
        watches::readiness(ctx, ms_store, rule_store, on_ready),
    );
    tracing::info!("controllers stopped");
}
