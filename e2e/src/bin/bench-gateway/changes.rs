//! (c), (d) and (f): how long the gateway takes to follow a published snapshot that adds a route,
//! a thousand routes or changes a rule.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use http::StatusCode;
use microplane_wire::sync::v1;
use prost::Message as _;
use tokio::sync::watch;

use crate::fixtures::Routing;
use crate::h1::H1;
use crate::params::{BULK, BULK_POLLERS, PROBES, ROUTE_TIMEOUT, RULE_CHANGES, RULE_TIMEOUT};
use crate::procs::Proc;

/// Where the bench publishes its snapshots (the operator's sync server reads them).
pub type Snapshots = watch::Sender<Option<Arc<v1::Snapshot>>>;

/// (c): `PROBES` times, publishes a snapshot adding the HTTP route `probe-<i>` and polls it back to
/// back on one kept-alive connection until it answers 200; the time from `send_replace` to that 200.
pub async fn route_changes(
    routing: &mut Routing,
    snapshots: &Snapshots,
    gw_addr: SocketAddr,
    gateway: &mut Proc,
) -> Result<Vec<Duration>> {
    let mut route_changes = Vec::with_capacity(PROBES);
    let mut probe = H1::connect(gw_addr).await?;
    for i in 0..PROBES {
        let name = format!("probe-{i}");
        routing.extra.push(name.clone());
        let snapshot = Arc::new(routing.next());
        let path = format!("/{name}/");
        let started = Instant::now();
        snapshots.send_replace(Some(snapshot));
        loop {
            let (status, _) = probe.get_reconnecting(gw_addr, &path).await?;
            if status == StatusCode::OK {
                route_changes.push(started.elapsed());
                break;
            }
            if started.elapsed() > ROUTE_TIMEOUT {
                gateway.check_running()?;
                bail!("route {name} did not answer 200 within {ROUTE_TIMEOUT:?} (last status {status})");
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(route_changes)
}

/// (f): `RULE_CHANGES` times, alternating deny and grant, changes the AuthRule `bench-probe`,
/// publishes the snapshot and polls `GET /web/` with `on_headers` until the answer follows the new
/// rule; the time from before the snapshot was built to that answer.
pub async fn rule_changes(
    routing: &mut Routing,
    snapshots: &Snapshots,
    gw_addr: SocketAddr,
    gateway: &mut Proc,
    on_headers: &[(String, String)],
) -> Result<Vec<Duration>> {
    let mut rule_changes = Vec::with_capacity(RULE_CHANGES);
    let mut probe = H1::connect(gw_addr).await?;
    for i in 0..RULE_CHANGES {
        let deny = i % 2 == 0;
        let want = if deny { StatusCode::FORBIDDEN } else { StatusCode::OK };
        let started = Instant::now();
        routing.probe_denied = deny;
        snapshots.send_replace(Some(Arc::new(routing.next())));
        loop {
            let (status, _) = probe.get_with(gw_addr, "/web/", on_headers).await?;
            if status == want {
                rule_changes.push(started.elapsed());
                break;
            }
            ensure!(
                status == StatusCode::OK || status == StatusCode::FORBIDDEN,
                "GET /web/ answered {status} during rule change {i}"
            );
            if started.elapsed() > RULE_TIMEOUT {
                gateway.check_running()?;
                bail!("rule change {i} was not enforced within {RULE_TIMEOUT:?} (still {status})");
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(rule_changes)
}

/// Outcome of (d).
pub struct Bulk {
    /// Encoded size of the snapshot carrying the bulk routes.
    pub bytes: usize,
    /// Routes in that snapshot.
    pub routes: usize,
    /// `send_replace` → the first bulk route's first 200.
    pub first: Duration,
    /// `send_replace` → the last bulk route's first 200.
    pub all: Duration,
    /// Polling rounds it took.
    pub rounds: usize,
    /// The longest polling round: the resolution of `all`.
    pub round: Duration,
}

/// (d): publishes one snapshot adding `BULK` routes and polls them all in rounds over
/// `BULK_POLLERS` kept-alive connections until every one answered 200.
pub async fn bulk_routes(routing: &mut Routing, snapshots: &Snapshots, gw: SocketAddr) -> Result<Bulk> {
    let names: Vec<String> = (0..BULK).map(|i| format!("bulk-{i}")).collect();
    routing.extra.extend(names.iter().cloned());
    let snapshot = routing.next();
    let bytes = snapshot.encoded_len();
    let routes = snapshot.services.len();
    let mut pollers = Vec::with_capacity(BULK_POLLERS);
    for _ in 0..BULK_POLLERS {
        pollers.push(H1::connect(gw).await?);
    }
    // Every poller owns the routes i ≡ p (mod BULK_POLLERS) and polls its pending ones in rounds.
    let started = Instant::now();
    snapshots.send_replace(Some(Arc::new(snapshot)));
    let tasks = pollers.into_iter().enumerate().map(|(p, mut conn)| {
        let mut pending: Vec<String> = names.iter().skip(p).step_by(BULK_POLLERS).cloned().collect();
        async move {
            let mut first: Option<Duration> = None;
            let mut last = Duration::ZERO;
            let mut rounds = 0;
            let mut longest = Duration::ZERO;
            while !pending.is_empty() {
                rounds += 1;
                let round = Instant::now();
                let mut still = Vec::new();
                for name in pending {
                    let (status, _) = conn.get_reconnecting(gw, &format!("/{name}/")).await?;
                    if status == StatusCode::OK {
                        let at = started.elapsed();
                        first = Some(first.map_or(at, |f| f.min(at)));
                        last = last.max(at);
                    } else {
                        still.push(name);
                    }
                }
                pending = still;
                longest = longest.max(round.elapsed());
                if started.elapsed() > ROUTE_TIMEOUT && !pending.is_empty() {
                    bail!("{} bulk routes still not routed after {ROUTE_TIMEOUT:?}", pending.len());
                }
            }
            Ok::<_, anyhow::Error>((first.unwrap_or_default(), last, rounds, longest))
        }
    });
    let results = futures::future::try_join_all(tasks).await?;
    Ok(Bulk {
        bytes,
        routes,
        first: results.iter().map(|r| r.0).min().unwrap_or_default(),
        all: results.iter().map(|r| r.1).max().unwrap_or_default(),
        rounds: results.iter().map(|r| r.2).max().unwrap_or_default(),
        round: results.iter().map(|r| r.3).max().unwrap_or_default(),
    })
}
