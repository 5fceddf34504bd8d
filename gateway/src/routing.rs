//! The routing state: what the sync task writes and every request reads. The routing snapshot and
//! the auth state built with it are swapped atomically; the endpoints and the verified-token cache
//! outlive snapshots.

use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwapOption;
use microplane_wire::sync::v1;

use crate::auth::AuthState;
use crate::auth::jwks::{JwksCache, JwksSettings};
use crate::auth::token::{TokenCache, VerifierSettings};
use crate::snapshot::Snapshot;
use crate::upstream::Upstreams;

/// The routing state.
pub struct Routing {
    /// The routing snapshot, swapped atomically by the sync client.
    pub(crate) snapshot: ArcSwapOption<Snapshot>,
    /// Every tenant's auth state and the token verifier, swapped with the snapshot (and when an
    /// external issuer's keys change).
    pub(crate) auth: ArcSwapOption<AuthState>,
    /// External issuers' key sets.
    pub(crate) jwks: Arc<JwksCache>,
    /// Wakes when `jwks` changed.
    pub(crate) jwks_changed: Arc<tokio::sync::Notify>,
    /// The last snapshot applied, to rebuild `auth` when external keys change.
    last_wire: Mutex<Option<Arc<v1::Snapshot>>>,
    /// Held while `auth` is built and stored ([`Routing::apply`], [`Routing::rebuild_auth`]), so
    /// that none stores one built from older inputs.
    auth_build: Mutex<()>,
    /// Verified tokens, shared by every auth state's verifier.
    pub(crate) token_cache: TokenCache,
    /// Endpoints, kept across snapshots.
    pub upstreams: Upstreams,
}

impl Routing {
    /// No snapshot yet; external issuers' keys fetched as `jwks` says.
    pub(crate) fn new(jwks: JwksSettings) -> Self {
        let jwks_changed = Arc::new(tokio::sync::Notify::new());
        Self {
            snapshot: ArcSwapOption::empty(),
            auth: ArcSwapOption::empty(),
            jwks: Arc::new(JwksCache::with_settings(jwks_changed.clone(), jwks)),
            jwks_changed,
            last_wire: Mutex::new(None),
            auth_build: Mutex::new(()),
            token_cache: TokenCache::new(VerifierSettings::default().cache_capacity),
            upstreams: Upstreams::default(),
        }
    }

    /// Builds the routing snapshot and the auth state of `wire` and swaps them in, unless `wire` is
    /// older than the snapshot served (same operator process, lower or equal version). Returns the
    /// number of routes installed (`None`: not newer), or why `wire` was refused.
    pub(crate) fn apply(&self, wire: &v1::Snapshot) -> Option<Applied> {
        let _building = self.auth_build.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cur) = self.snapshot.load().as_ref()
            && cur.source == wire.source
            && cur.version >= wire.version
        {
            return None;
        }
        let (s, snapshot_problems) = Snapshot::build(wire, &self.upstreams);
        let externals: Vec<&v1::ExternalIssuer> = wire.tenants.iter().flat_map(|t| t.external_issuers.iter()).collect();
        self.jwks.follow(&externals);
        let (generation, keys) = self.jwks.snapshot();
        let (auth, auth_problems) = AuthState::build(wire, &keys, generation, self.token_cache.clone());
        let routes = s.route_count();
        self.auth.store(Some(Arc::new(auth)));
        self.snapshot.store(Some(Arc::new(s)));
        if let Ok(mut last) = self.last_wire.lock() {
            *last = Some(Arc::new(wire.clone()));
        }
        let problems = snapshot_problems
            .iter()
            .map(ToString::to_string)
            .chain(auth_problems.iter().map(ToString::to_string))
            .collect();
        Some(Applied { routes, problems })
    }

    /// Rebuilds the auth state from the last snapshot if external issuers' keys changed since it was
    /// built. Returns the auth state served afterwards. Waits for a build in progress: for the
    /// sync task, never for a request ([`Routing::try_rebuild_auth`]).
    pub(crate) fn rebuild_auth(&self) -> Option<Arc<AuthState>> {
        let building = self.auth_build.lock().unwrap_or_else(PoisonError::into_inner);
        self.rebuild_auth_locked(&building)
    }

    /// [`Routing::rebuild_auth`] for the request path, which never blocks a runtime thread on a
    /// lock: while a snapshot or auth state is being built (which may take a while with many
    /// descriptors), the state served now is returned. That build reads the key sets when it builds
    /// the auth state, and the sync task's key follower (`follow_external_keys`) rebuilds after every key change, so
    /// a request that loses this race at worst sees the new key a moment later.
    pub(crate) fn try_rebuild_auth(&self) -> Option<Arc<AuthState>> {
        match self.auth_build.try_lock() {
            Ok(building) => self.rebuild_auth_locked(&building),
            Err(std::sync::TryLockError::Poisoned(p)) => self.rebuild_auth_locked(&p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => self.auth.load_full(),
        }
    }

    fn rebuild_auth_locked(&self, _building: &std::sync::MutexGuard<'_, ()>) -> Option<Arc<AuthState>> {
        let current = self.auth.load_full();
        let (generation, keys) = self.jwks.snapshot();
        if current.as_ref().is_some_and(|a| a.keys_generation >= generation) {
            return current;
        }
        let wire = self.last_wire.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let Some(wire) = wire else {
            return current;
        };
        let (a, _problems) = AuthState::build(&wire, &keys, generation, self.token_cache.clone());
        let a = Arc::new(a);
        self.auth.store(Some(a.clone()));
        Some(a)
    }
}

/// A snapshot swapped in: its routes, and the parts left out (each within its tenant).
#[derive(Debug)]
pub(crate) struct Applied {
    /// Routes installed.
    pub(crate) routes: usize,
    /// What was left out and why, one line each.
    pub(crate) problems: Vec<String>,
}
