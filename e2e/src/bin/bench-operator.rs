//! `make bench-operator`: the operator's cost as a ratio, in one run on one control plane.
//!
//! 1. **Plain**: N Deployments + Services — exactly the children the operator makes for a MicroService
//!    (`build::desired_running`, owner references removed) — server-side applied 32 at a time,
//!    timed until every Deployment is Available: the API server's and kube-controller-manager's own
//!    pace on this machine.
//! 2. **MicroServices**: N MicroServices (image mode, `protocol: Http`), applied the same way, timed until all are Ready
//!    through the operator, with the operator's peak RSS, CPU, API requests and writes per object.
//! 3. **Idle**: two resync periods; the writes must be zero.
//!
//! Needs a control plane (MICROPLANE_STATE, KUBECONFIG) with untainted kwok nodes for 2N pods and a
//! running operator; `make bench-operator` sets all of that up.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams, Patch, PatchParams};
use microplane_crds::{MicroService, Namespace};
use microplane_e2e::operator::{Operator, metric_sum};
use microplane_e2e::{Cluster, create_tenant, install_crds};
use serde_json::json;

fn ready(m: &MicroService) -> bool {
    m.status.as_ref().is_some_and(|s| {
        s.observed_generation == m.metadata.generation
            && s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// The process's user + system CPU seconds so far.
fn cpu_seconds(pid: u32) -> f64 {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| {
        // Fields after the command (which may hold spaces) end at its closing parenthesis.
        let rest = s.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
    });
    // USER_HZ is 100 on Linux.
    ticks.map_or(0.0, |t| t / 100.0)
}

/// The whole machine's busy and total CPU time so far (clock ticks, all CPUs), from /proc/stat.
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    busy_and_total(&stat)
}

/// Busy and total ticks of the `cpu ` line of a /proc/stat text (idle and iowait are not busy).
fn busy_and_total(stat: &str) -> (u64, u64) {
    let v: Vec<u64> = stat
        .lines()
        .find_map(|l| l.strip_prefix("cpu "))
        .map(|l| l.split_whitespace().filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_default();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// The busy share of the machine between two [`machine_ticks`].
fn busy_share(before: (u64, u64), after: (u64, u64)) -> f64 {
    let total = after.1.saturating_sub(before.1).max(1) as f64;
    after.0.saturating_sub(before.0) as f64 / total
}

/// An image-mode MicroService, `protocol: Http`: the operator then never calls its pods. Pods on kwok
/// nodes have addresses that lead nowhere on this machine (kwok's pool, e2e/kwok/kwok.yaml); the
/// gRPC reflection that discovers a gRPC service's methods would dial them — off this machine,
/// where nothing may be dialled — and fail, and its retries would measure that failure.
fn microservice(name: &str) -> MicroService {
    serde_json::from_value(json!({
        "apiVersion": "microplane.dev/v1alpha1", "kind": "MicroService", "metadata": {"name": name},
        "spec": {"image": "localhost/microplane/helloworld:1", "protocol": "Http"}
    }))
    .expect("a literal MicroService always deserializes")
}

/// N Deployments + Services as the operator would make them, applied 32 at a time in a namespace
/// of their own: seconds until every Deployment is Available.
async fn plain(c: &Cluster, n: usize) -> Result<Duration, Box<dyn std::error::Error>> {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(c.client.clone());
    let ns = format!("bench-plain-{}", std::process::id());
    let object: k8s_openapi::api::core::v1::Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
    namespaces
        .patch(&ns, &PatchParams::apply("bench").force(), &Patch::Apply(&object))
        .await?;
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(c.client.clone(), &ns);
    let started = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let (deployments, services, ns) = (deployments.clone(), services.clone(), ns.clone());
            async move {
                let name = format!("svc-{i:04}");
                let mut ms = microservice(&name);
                ms.metadata.namespace = Some(ns);
                // The builder names its owner by uid; the reference is removed below.
                ms.metadata.uid = Some(format!("00000000-0000-0000-0000-{i:012}"));
                let mut d = microplane_operator::controller::microservice::build::desired_running(
                    &ms,
                    "localhost/microplane/helloworld:1",
                    "1",
                    &[],
                )
                .map_err(|e| e.to_string())?;
                // Nothing owns them: the garbage collector would delete children of a missing owner.
                d.deployment.metadata.owner_references = None;
                d.service.metadata.owner_references = None;
                let pp = PatchParams::apply("bench").force();
                deployments
                    .patch(&name, &pp, &Patch::Apply(&d.deployment))
                    .await
                    .map_err(|e| e.to_string())?;
                services
                    .patch(&name, &pp, &Patch::Apply(&d.service))
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<(), String>(())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        tick.tick().await;
        let list = deployments.list(&ListParams::default()).await?;
        let available = list
            .items
            .iter()
            .filter(|d| {
                d.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True"))
                })
            })
            .count();
        if available == n {
            return Ok(started.elapsed());
        }
        if Instant::now() > deadline {
            return Err(format!("plain: only {available}/{n} Available after 600s").into());
        }
    }
}

fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

#[tokio::main]
async fn main() -> anyhow_free::Result {
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let resync: u64 = std::env::var("BENCH_RESYNC_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let c = Cluster::connect().await?;
    install_crds(&c, Duration::from_secs(30)).await?;
    // Untainted kwok nodes come from `e2e/scripts/kwok-nodes.sh` (make bench-operator).
    let op = Operator::ensure(&c).await?;

    let ns = create_tenant(
        &c,
        "bench",
        json!({"network": {"isolation": "None"}}),
        Duration::from_secs(60),
    )
    .await?;
    let tenants: Api<Namespace> = Api::all(c.client.clone());

    // 1. The API server's and kube-controller-manager's own pace, with the operator idle.
    let machine0 = machine_ticks();
    let plain_writes0 = apiserver_writes(&c).await;
    let plain_took = plain(&c, n).await?;
    let plain_busy = busy_share(machine0, machine_ticks());
    let plain_writes = (apiserver_writes(&c).await - plain_writes0) / n as f64;
    let plain_rate = n as f64 / plain_took.as_secs_f64();

    let page = op.metrics()?;
    let cpu0 = cpu_seconds(op.pid);
    let (req0, writes0, rec0) = (
        metric_sum(&page, "microplane_operator_api_requests_total"),
        metric_sum(&page, "microplane_operator_writes_total"),
        metric_sum(&page, "microplane_operator_reconciles_total"),
    );
    let api: Api<MicroService> = Api::namespaced(c.client.clone(), &ns);
    let cluster_writes0 = apiserver_writes(&c).await;
    let machine1 = machine_ticks();
    let started = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let name = format!("svc-{i:04}");
                let ms = microservice(&name);
                api.patch(&name, &PatchParams::apply("bench").force(), &Patch::Apply(&ms))
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    let created = started.elapsed();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let deadline = Instant::now() + Duration::from_secs(600);
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(c.client.clone(), &ns);
    let mut all_applied = None;
    let all_ready = loop {
        tick.tick().await;
        if all_applied.is_none() {
            let lp = ListParams::default().labels("microplane.dev/service");
            if deployments.list_metadata(&lp).await?.items.len() == n {
                all_applied = Some(started.elapsed());
            }
        }
        let list = api.list(&ListParams::default()).await?;
        let count = list.items.iter().filter(|m| ready(m)).count();
        if count == n {
            break started.elapsed();
        }
        if Instant::now() > deadline {
            return Err(format!("only {count}/{n} Ready after 600s").into());
        }
    };
    let ms_busy = busy_share(machine1, machine_ticks());
    let cluster_writes1 = apiserver_writes(&c).await;
    let cpu1 = cpu_seconds(op.pid);
    let page = op.metrics()?;
    let (req1, writes1, rec1) = (
        metric_sum(&page, "microplane_operator_api_requests_total"),
        metric_sum(&page, "microplane_operator_writes_total"),
        metric_sum(&page, "microplane_operator_reconciles_total"),
    );

    // Idle: two resync periods in which every object is reconciled again without a change.
    let idle_start = Instant::now();
    while idle_start.elapsed() < Duration::from_secs(2 * resync + 5) {
        tick.tick().await;
    }
    let page = op.metrics()?;
    let (req2, writes2, rec2) = (
        metric_sum(&page, "microplane_operator_api_requests_total"),
        metric_sum(&page, "microplane_operator_writes_total"),
        metric_sum(&page, "microplane_operator_reconciles_total"),
    );
    let rss = peak_rss_mib(op.pid);
    let idle_writes: Vec<String> = page
        .lines()
        .filter(|l| l.starts_with("microplane_operator_writes_total{"))
        .map(str::to_string)
        .collect();

    let rate = n as f64 / all_ready.as_secs_f64();
    let ratio = rate / plain_rate;
    println!(
        "## bench-operator: {n} MicroServices (image mode) vs {n} plain Deployments + Services, kwok nodes, one control plane"
    );
    println!();
    println!("| measure | value | target |");
    println!("|---|---|---|");
    println!(
        "| plain: first apply → all {n} Deployments Available (the API server's and KCM's pace) | {:.1} s ({plain_rate:.1}/s) | |",
        plain_took.as_secs_f64()
    );
    println!("| **MicroServices to Ready / plain to Available (rate ratio)** | **{ratio:.2}×** | ≥ 0.9× |");
    println!(
        "| the machine's busy share ({} CPUs): plain phase / MicroService phase | {:.0}% / {:.0}% | |",
        std::thread::available_parallelism().map_or(1, usize::from),
        plain_busy * 100.0,
        ms_busy * 100.0
    );
    println!(
        "| operator CPU per MicroService (to Ready) | {:.2} ms | |",
        (cpu1 - cpu0) * 1000.0 / n as f64
    );
    println!(
        "| created (client side, 32 in flight) | {:.1} s | |",
        created.as_secs_f64()
    );
    println!("| first create → all Ready | {:.1} s | |", all_ready.as_secs_f64());
    println!("| MicroServices reconciled to Ready per second | {rate:.1} | |");
    if let Some(applied) = all_applied {
        println!(
            "| first create → every Deployment applied by the operator | {:.1} s ({:.1}/s) | |",
            applied.as_secs_f64(),
            n as f64 / applied.as_secs_f64()
        );
    }
    println!("| operator peak RSS (VmHWM) | {rss:.1} MiB | ≤ 100 MB |");
    println!(
        "| operator API requests per MicroService (to Ready) | {:.2} | |",
        (req1 - req0) / n as f64
    );
    println!(
        "| operator writes per MicroService (to Ready) | {:.2} | |",
        (writes1 - writes0) / n as f64
    );
    println!(
        "| all clients' writes to the API server per MicroService (to Ready) | {:.1} ({:.0}/s) | |",
        (cluster_writes1 - cluster_writes0) / n as f64,
        (cluster_writes1 - cluster_writes0) / all_ready.as_secs_f64()
    );
    println!(
        "| all clients' writes per plain Deployment + Service (to Available) | {plain_writes:.1} ({:.0}/s) | |",
        plain_writes * n as f64 / plain_took.as_secs_f64()
    );
    println!(
        "| reconciles per MicroService (to Ready) | {:.2} | |",
        (rec1 - rec0) / n as f64
    );
    println!(
        "| idle {}s ({} resyncs): reconciles / writes / API requests | {:.0} / {:.0} / {:.0} | writes = 0 |",
        2 * resync + 5,
        2,
        rec2 - rec1,
        writes2 - writes1,
        req2 - req1
    );

    println!();
    println!("writes by kind after the idle period (cumulative): {idle_writes:?}");
    tenants.delete(&ns, &Default::default()).await?;
    let mut failed = Vec::new();
    if ratio < 0.9 {
        failed.push(format!("MicroServices at {ratio:.2}× the plain rate < 0.9×"));
    }
    if rss > 100.0 * 1_000_000.0 / 1_048_576.0 {
        failed.push(format!("peak RSS {rss:.1} MiB > 100 MB"));
    }
    if writes2 - writes1 > 0.0 {
        failed.push(format!("{} writes on an idle resync", writes2 - writes1));
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; ").into())
    }
}

/// Mutating requests the API server has served (all clients), from its own metrics.
async fn apiserver_writes(c: &Cluster) -> f64 {
    let Ok(req) = http::Request::get("/metrics").body(Vec::new()) else {
        return 0.0;
    };
    let Ok(text) = c.client.request_text(req).await else {
        return 0.0;
    };
    text.lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter(|l| {
            ["POST", "PUT", "PATCH", "DELETE", "APPLY"]
                .iter()
                .any(|v| l.contains(&format!("verb=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_busy_share_from_proc_stat() {
        let before = busy_and_total("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n");
        assert_eq!(before, (200, 1000));
        let after = busy_and_total("cpu  250 0 150 800 100 0 0 0 0 0\n");
        assert_eq!(after, (400, 1300));
        assert!((busy_share(before, after) - 200.0 / 300.0).abs() < 1e-9);
        assert_eq!(busy_and_total("no cpu line"), (0, 0));
        assert_eq!(busy_share((5, 5), (5, 5)), 0.0);
    }
}

/// `main` returns errors as text without pulling in anyhow.
mod anyhow_free {
    pub type Result = std::result::Result<(), Box<dyn std::error::Error>>;
}
