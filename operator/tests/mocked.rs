//! Mocked tier: reconcile flows against a mocked API server (tower-test), checking exactly which
//! requests a reconcile sends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::client::Body;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use kube::{Client, Resource};
use microplane_crds::{Config, MicroService, Namespace};
use microplane_operator::context::{Context, Settings, Stores};
use microplane_operator::controller::{microservice, tenant};
use serde_json::{Value, json};
use tokio::sync::watch;

/// One request the mocked API server saw.
#[derive(Clone, Debug)]
struct Call {
    method: Method,
    path: String,
    query: String,
    body: Value,
}

type Calls = Arc<Mutex<Vec<Call>>>;
type Route = Box<dyn Fn(&Call) -> (StatusCode, Value) + Send + Sync>;

/// A mocked API server answering by `route`; returns a client and the log of calls.
fn mock(route: Route) -> (Client, Calls) {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let calls: Calls = Arc::default();
    let log = calls.clone();
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap();
            let call = Call {
                method: parts.method.clone(),
                path: parts.uri.path().to_string(),
                query: parts.uri.query().unwrap_or_default().to_string(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            let (status, answer) = route(&call);
            log.lock().unwrap().push(call);
            let resp = Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                .unwrap();
            send.send_response(resp);
        }
    });
    (Client::new(svc, "default"), calls)
}

/// The usual answers: applies and status patches echo the body (with a generation), deletes of
/// absent objects 404, events are accepted.
fn echo(call: &Call) -> (StatusCode, Value) {
    match call.method {
        Method::PATCH => {
            let mut body = call.body.clone();
            body["metadata"]["generation"] = json!(1);
            body["metadata"]["resourceVersion"] = json!("1");
            // A status patch answers with the whole object.
            if body.get("spec").is_none() {
                body["spec"] = json!({});
            }
            (StatusCode::OK, body)
        }
        Method::POST if call.path.contains("/events") => (StatusCode::CREATED, call.body.clone()),
        _ => not_found(),
    }
}

fn not_found() -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "not found", "reason": "NotFound", "code": 404}),
    )
}

struct Writers {
    deployments: Writer<Deployment>,
    services: Writer<Service>,
    tenants: Writer<Namespace>,
    #[allow(dead_code)]
    configs: Writer<Config>,
}

fn context(client: Client) -> (Arc<Context>, Writers) {
    context_as(client, true)
}

/// A context of a leader (`true`) or a standby (`false`).
fn context_as(client: Client, leader: bool) -> (Arc<Context>, Writers) {
    context_with(client, leader, Settings::default())
}

/// A context with the given settings.
fn context_with(client: Client, leader: bool, settings: Settings) -> (Arc<Context>, Writers) {
    let (deployments, dw) = reflector::store();
    let (services, sw) = reflector::store();
    let (pdbs, _) = reflector::store();
    let (hpas, _) = reflector::store();
    let (pods, _) = reflector::store();
    let (tenants, tw) = reflector::store();
    let (configs, cw) = reflector::store();
    let (issuer_keys, _) = reflector::store();
    let (jobs, _) = reflector::store();
    let (build_pods, _) = reflector::store();
    let stores = Stores {
        deployments,
        services,
        pdbs,
        hpas,
        pods,
        tenants,
        configs,
        issuer_keys,
        jobs,
        build_pods,
    };
    let (_, leader) = watch::channel(leader);
    let ctx = Context::new(client, settings, stores, leader);
    (
        Arc::new(ctx),
        Writers {
            deployments: dw,
            services: sw,
            tenants: tw,
            configs: cw,
        },
    )
}

fn tenant(name: &str) -> Namespace {
    let mut t = Namespace::new(name, Default::default());
    t.meta_mut().uid = Some(format!("uid-{name}"));
    t
}

fn helloworld() -> MicroService {
    serde_json::from_value(json!({
        "apiVersion": "microplane.dev/v1alpha1", "kind": "MicroService",
        "metadata": {"name": "helloworld", "namespace": "micro", "uid": "uid-hw", "generation": 1},
        "spec": {"image": "localhost/microplane/helloworld:latest"}
    }))
    .unwrap()
}

fn summary(calls: &Calls) -> Vec<String> {
    calls
        .lock()
        .unwrap()
        .iter()
        .map(|c| format!("{} {}", c.method, c.path))
        .collect()
}

#[tokio::test]
async fn create_applies_children_then_reports_deploying() {
    let (client, calls) = mock(Box::new(echo));
    let (ctx, mut w) = context(client);
    w.tenants.apply_watcher_event(&watcher::Event::Apply(tenant("micro")));
    microservice::reconcile(Arc::new(helloworld()), ctx.clone())
        .await
        .unwrap();

    assert_eq!(
        summary(&calls),
        [
            "PATCH /apis/apps/v1/namespaces/micro/deployments/helloworld",
            "PATCH /api/v1/namespaces/micro/services/helloworld",
            "POST /apis/events.k8s.io/v1/namespaces/micro/events",
            "PATCH /apis/microplane.dev/v1alpha1/namespaces/micro/microservices/helloworld/status",
        ]
    );
    let log = calls.lock().unwrap().clone();
    assert!(
        log[0].query.contains("fieldManager=microplane.dev%2Foperator") && log[0].query.contains("force=true"),
        "{}",
        log[0].query
    );
    assert_eq!(
        log[0].body["spec"]["template"]["spec"]["containers"][0]["image"],
        "localhost/microplane/helloworld:latest"
    );
    let status = &log[3].body["status"];
    assert_eq!(status["phase"], "Deploying");
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["conditions"][0]["type"], "Ready");
    assert_eq!(status["conditions"][0]["status"], "False");
    assert_eq!(status["conditions"][0]["reason"], "Deploying");
}

/// A reconcile of a new helloworld, and what the API server answered fed back through the watches
/// into the caches (Deployment, Service) and the object (its status). The calls are cleared.
async fn created_and_observed(ctx: &Arc<Context>, calls: &Calls, w: &mut Writers) -> MicroService {
    w.tenants.apply_watcher_event(&watcher::Event::Apply(tenant("micro")));
    let mut ms = helloworld();
    microservice::reconcile(Arc::new(ms.clone()), ctx.clone())
        .await
        .unwrap();
    let log = calls.lock().unwrap().clone();
    let answered = |i: usize| echo(&log[i]).1;
    w.deployments
        .apply_watcher_event(&watcher::Event::Apply(serde_json::from_value(answered(0)).unwrap()));
    w.services
        .apply_watcher_event(&watcher::Event::Apply(serde_json::from_value(answered(1)).unwrap()));
    ms.status = Some(serde_json::from_value(log[3].body["status"].clone()).unwrap());
    calls.lock().unwrap().clear();
    ms
}

#[tokio::test]
async fn idle_resync_sends_nothing() {
    let (client, calls) = mock(Box::new(echo));
    let (ctx, mut w) = context(client);
    let ms = created_and_observed(&ctx, &calls, &mut w).await;

    microservice::reconcile(Arc::new(ms), ctx.clone()).await.unwrap();
    assert_eq!(
        summary(&calls),
        Vec::<String>::new(),
        "an idle resync must not touch the API server"
    );
}

#[tokio::test]
async fn a_rollouts_counts_are_written_at_most_once_per_progress_interval() {
    use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
    let interval = std::time::Duration::from_millis(300);
    let (client, calls) = mock(Box::new(echo));
    let settings = Settings {
        status_progress_interval: interval,
        ..Settings::default()
    };
    let (ctx, mut w) = context_with(client, true, settings);
    let mut ms = created_and_observed(&ctx, &calls, &mut w).await;
    let mut deployment: Deployment = (*ctx
        .stores
        .deployments
        .get(&reflector::ObjectRef::new("helloworld").within("micro"))
        .unwrap())
    .clone();
    let status_of = |call: &Call| serde_json::from_value(call.body["status"].clone()).unwrap();
    // The Deployment controller has made the pod: one updated, none available yet.
    let mut rollout = |w: &mut Writers, updated: i32, available: i32| {
        deployment.status = Some(DeploymentStatus {
            observed_generation: deployment.metadata.generation,
            replicas: Some(1),
            updated_replicas: Some(updated),
            available_replicas: Some(available),
            ready_replicas: Some(available),
            ..DeploymentStatus::default()
        });
        w.deployments
            .apply_watcher_event(&watcher::Event::Apply(deployment.clone()));
    };
    rollout(&mut w, 1, 0);
    microservice::reconcile(Arc::new(ms.clone()), ctx.clone())
        .await
        .unwrap();
    assert_eq!(
        summary(&calls),
        Vec::<String>::new(),
        "only the counts moved, right after a write: held"
    );

    // Once the interval has passed, the held counts are written.
    tokio::time::pause();
    tokio::time::advance(interval).await;
    microservice::reconcile(Arc::new(ms.clone()), ctx.clone())
        .await
        .unwrap();
    let log = calls.lock().unwrap().clone();
    assert_eq!(
        summary(&calls),
        ["PATCH /apis/microplane.dev/v1alpha1/namespaces/micro/microservices/helloworld/status"]
    );
    assert_eq!(log[0].body["status"]["phase"], "Deploying");
    assert_eq!(log[0].body["status"]["replicas"], 1);
    ms.status = Some(status_of(&log[0]));

    // Rolled out, at once after that write: a change of substance is never held.
    rollout(&mut w, 1, 1);
    calls.lock().unwrap().clear();
    microservice::reconcile(Arc::new(ms.clone()), ctx.clone())
        .await
        .unwrap();
    let log = calls.lock().unwrap().clone();
    let status = log
        .iter()
        .find(|c| c.path.ends_with("/status"))
        .expect("Running is written at once");
    assert_eq!(status.body["status"]["phase"], "Running");
    assert_eq!(status.body["status"]["conditions"][0]["status"], "True");
}

#[tokio::test]
async fn missing_tenant_deploys_nothing_and_says_why() {
    let (client, calls) = mock(Box::new(echo));
    let (ctx, _w) = context(client);
    microservice::reconcile(Arc::new(helloworld()), ctx).await.unwrap();
    let log = calls.lock().unwrap().clone();
    assert!(
        log.iter().all(|c| !c.path.contains("/deployments/")),
        "{:?}",
        summary(&calls)
    );
    let status = &log.last().unwrap().body["status"];
    assert_eq!(status["conditions"][0]["reason"], "TenantNotFound");
    assert_eq!(status["phase"], "Failed");
    // A problem a user must fix is a Warning event.
    let event = log.iter().find(|c| c.path.contains("/events")).unwrap();
    assert_eq!(event.body["type"], "Warning");
    assert_eq!(event.body["reason"], "TenantNotFound");
}

#[tokio::test]
async fn missing_config_blocks_until_it_exists() {
    let (client, calls) = mock(Box::new(echo));
    let (ctx, mut w) = context(client);
    w.tenants.apply_watcher_event(&watcher::Event::Apply(tenant("micro")));
    let mut ms = helloworld();
    ms.spec.config = vec!["greeting".into()];
    microservice::reconcile(Arc::new(ms), ctx).await.unwrap();
    let log = calls.lock().unwrap().clone();
    assert!(log.iter().all(|c| !c.path.contains("/deployments/")));
    let ready = &log.last().unwrap().body["status"]["conditions"][0];
    assert_eq!(
        (ready["reason"].as_str(), ready["message"].as_str()),
        (
            Some("ConfigNotFound"),
            Some("Config greeting not found in this namespace")
        )
    );
}

#[tokio::test]
async fn api_conflict_is_an_error_with_a_bounded_category() {
    let (client, _calls) = mock(Box::new(|c: &Call| {
        if c.path.ends_with("/deployments/helloworld") {
            (
                StatusCode::CONFLICT,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "conflict", "reason": "Conflict", "code": 409}),
            )
        } else {
            echo(c)
        }
    }));
    let (ctx, mut w) = context(client);
    w.tenants.apply_watcher_event(&watcher::Event::Apply(tenant("micro")));
    let err = microservice::reconcile(Arc::new(helloworld()), ctx.clone())
        .await
        .unwrap_err();
    assert_eq!(err.category(), "conflict");
    assert!(
        ctx.metrics.encode().contains(
            "microplane_operator_reconcile_errors_total{controller=\"microservice\",category=\"conflict\"} 1"
        ),
        "{}",
        ctx.metrics.encode()
    );
    assert!(ctx.backoff("k") < ctx.backoff("k"), "backoff grows");
}

#[tokio::test]
async fn tenant_reports_a_conflict_with_a_foreign_namespace() {
    let (client, calls) = mock(Box::new(|c: &Call| {
        if c.method == Method::GET && c.path == "/api/v1/namespaces/acme" {
            (
                StatusCode::OK,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "acme", "uid": "someone-else"}}),
            )
        } else {
            echo(c)
        }
    }));
    let (ctx, _w) = context(client);
    tenant::reconcile(Arc::new(tenant("acme")), ctx).await.unwrap();
    let paths = summary(&calls);
    assert!(
        paths.iter().all(|p| !p.starts_with("PATCH /api/v1/namespaces/acme")),
        "never adopted silently: {paths:?}"
    );
    let status = calls.lock().unwrap().last().unwrap().body["status"].clone();
    assert_eq!(status["conditions"][0]["reason"], "NamespaceConflict");
    assert!(status["namespace"].is_null());
}

#[tokio::test]
async fn tenant_provisions_namespace_policy_and_default_rule() {
    let (client, calls) = mock(Box::new(
        |c: &Call| if c.method == Method::GET { not_found() } else { echo(c) },
    ));
    let (ctx, _w) = context(client);
    tenant::reconcile(Arc::new(tenant("acme")), ctx).await.unwrap();
    let paths = summary(&calls);
    for want in [
        "GET /api/v1/namespaces/acme",
        "PATCH /api/v1/namespaces/acme",
        "PATCH /apis/networking.k8s.io/v1/namespaces/acme/networkpolicies/microplane-isolation",
        "PATCH /apis/microplane.dev/v1alpha1/namespaces/acme/authrules/default",
        "PATCH /apis/microplane.dev/v1alpha1/tenants/acme/status",
    ] {
        assert!(paths.iter().any(|p| p == want), "missing {want} in {paths:#?}");
    }
    let status = calls.lock().unwrap().last().unwrap().body["status"].clone();
    assert_eq!(status["conditions"][0]["status"], "True");
    assert_eq!(status["namespace"], "acme");
}

#[tokio::test]
async fn standby_never_writes() {
    let (client, calls) = mock(Box::new(echo));
    let (ctx, mut w) = context_as(client, false);
    w.tenants.apply_watcher_event(&watcher::Event::Apply(tenant("micro")));
    microservice::reconcile(Arc::new(helloworld()), ctx.clone())
        .await
        .unwrap();
    tenant::reconcile(Arc::new(tenant("micro")), ctx).await.unwrap();
    assert!(calls.lock().unwrap().is_empty());
}
