//! The admin port: `/healthz` (the process serves), `/readyz` (caches synced), `/metrics`, served
//! by [`microplane_runtime::admin::Admin`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use microplane_runtime::admin::Admin;
use tokio::sync::OnceCell;

use crate::context::Context;

/// What the admin server reads.
#[derive(Clone, Default)]
pub struct AdminState {
    /// Set once every cache has synced.
    pub ready: Arc<AtomicBool>,
    /// The controllers' context (for metrics), once built.
    pub context: Arc<OnceCell<Arc<Context>>>,
}

/// The operator's admin server: ready once every cache has synced, the controllers' metrics.
pub fn admin(state: AdminState) -> Admin {
    let (ready, metrics) = (state.clone(), state);
    Admin::new()
        .readiness(move || {
            if ready.ready.load(Ordering::Acquire) {
                Ok("ok".into())
            } else {
                Err("caches not synced".into())
            }
        })
        .metrics(move || metrics.context.get().map(|c| c.metrics.encode()).unwrap_or_default())
}
