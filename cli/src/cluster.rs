//! The commands that talk to the cluster (kubeconfig): `run`, `kill`, `services`, `status`, `logs`.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use futures::{AsyncBufReadExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use microplane_crds::{MicroService, Phase};
use serde_json::{Value, json};

use crate::{Failure, Output};

/// What `run` deploys.
pub struct RunSpec {
    /// The MicroService's name.
    pub name: String,
    /// An image, or
    pub image: Option<String>,
    /// a git URL, with
    pub git: Option<String>,
    /// `@ref`: a branch, tag or commit (7–40 hex digits).
    pub reference: Option<String>,
    /// Sub-directory.
    pub path: Option<String>,
    /// `Auto`, `Go`, `Rust` or `Dockerfile`.
    pub strategy: Option<String>,
    /// `Grpc` or `Http`.
    pub protocol: Option<String>,
}

/// `url[@ref]` split. The `@` of a ref comes after the host: an `@` before it (`git@host:`) is
/// part of the URL.
pub fn split_ref(source: &str) -> (String, Option<String>) {
    // Where the repository path starts: after `scheme://host`, or after `host:` in scp form.
    let path_start = match source.find("://") {
        Some(i) => source[i + 3..].find('/').map_or(source.len(), |j| i + 3 + j),
        None => source.find(':').unwrap_or(0),
    };
    match source[path_start..].rfind('@') {
        Some(i) => {
            let at = path_start + i;
            (source[..at].to_string(), Some(source[at + 1..].to_string()))
        }
        None => (source.to_string(), None),
    }
}

/// The MicroService object `spec` applies.
pub fn object(spec: &RunSpec) -> Value {
    let mut s = json!({});
    if let Some(image) = &spec.image {
        s["image"] = json!(image);
    }
    if let Some(url) = &spec.git {
        let mut git = json!({"url": url});
        if let Some(r) = &spec.reference {
            let is_commit = (7..=40).contains(&r.len()) && r.bytes().all(|b| b.is_ascii_hexdigit());
            git["ref"] = if is_commit {
                json!({"commit": r})
            } else if r.starts_with('v') && r[1..].starts_with(|c: char| c.is_ascii_digit()) {
                json!({"tag": r})
            } else {
                json!({"branch": r})
            };
        }
        if let Some(p) = &spec.path {
            git["path"] = json!(p);
        }
        let mut source = json!({"git": git});
        if let Some(st) = &spec.strategy {
            source["build"] = json!({"strategy": st});
        }
        s["source"] = source;
    }
    if let Some(p) = &spec.protocol {
        s["protocol"] = json!(p);
    }
    json!({
        "apiVersion": "microplane.dev/v1alpha1",
        "kind": "MicroService",
        "metadata": {"name": spec.name},
        "spec": s,
    })
}

fn api(client: &kube::Client, ns: &str) -> Api<MicroService> {
    Api::namespaced(client.clone(), ns)
}

fn ready_condition(ms: &MicroService) -> Option<(String, String, String)> {
    let st = ms.status.as_ref()?;
    st.conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn current(ms: &MicroService) -> bool {
    ms.status.as_ref().and_then(|s| s.observed_generation) == ms.metadata.generation
}

/// Applies `spec` and follows the MicroService to Ready (or failure), printing each phase.
pub async fn run(client: &kube::Client, ns: &str, spec: &RunSpec, timeout: Duration) -> Result<()> {
    let api = api(client, ns);
    api.patch(
        &spec.name,
        &PatchParams::apply("microplane-cli").force(),
        &Patch::Apply(object(spec)),
    )
    .await
    .map_err(|e| match e {
        kube::Error::Api(s) if s.code == 422 || s.code == 400 => Failure::Usage(s.message).into(),
        kube::Error::Api(s) if s.code == 404 => Failure::NotFound(format!(
            "{} (is the tenant {ns} there? `microplane tenants`)",
            s.message
        ))
        .into(),
        other => anyhow::Error::from(other).context("applying the MicroService"),
    })?;
    eprintln!("microservice {ns}/{} applied; following it to Ready", spec.name);
    let started = Instant::now();
    let config = watcher::Config::default().fields(&format!("metadata.name={}", spec.name));
    let mut events = std::pin::pin!(watcher::watcher(api.clone(), config).default_backoff());
    let mut last = String::new();
    loop {
        let next = tokio::time::timeout(timeout.saturating_sub(started.elapsed()), events.try_next()).await;
        let Ok(event) = next else {
            bail!(Failure::Failed(format!(
                "not Ready after {} s (phase {last}); see `microplane status {}`",
                timeout.as_secs(),
                spec.name
            )));
        };
        let ms = match event? {
            Some(watcher::Event::Apply(ms) | watcher::Event::InitApply(ms)) => ms,
            Some(_) => continue,
            None => bail!("the watch ended"),
        };
        if !current(&ms) {
            continue;
        }
        let phase = ms
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .map_or("Pending".to_string(), |p| format!("{p:?}"));
        let (ready, reason, message) = ready_condition(&ms).unwrap_or_default();
        let line = format!("{phase}: {reason} {message}");
        if line != last {
            eprintln!("[{:>5.1}s] {line}", started.elapsed().as_secs_f64());
            last = line;
        }
        if ready == "True" {
            let url = ms.status.as_ref().and_then(|s| s.url.clone()).unwrap_or_default();
            println!(
                "{} is Ready{}",
                spec.name,
                if url.is_empty() {
                    String::new()
                } else {
                    format!(": {url}")
                }
            );
            return Ok(());
        }
        if ms.status.as_ref().and_then(|s| s.phase) == Some(Phase::Failed) {
            if reason.starts_with("Build") {
                eprintln!("--- the build's output (microplane logs --build {}) ---", spec.name);
                let _ = build_logs(client, ns, &spec.name, false).await;
            }
            bail!(Failure::Failed(format!("{reason}: {message}")));
        }
    }
}

/// Deletes a MicroService.
pub async fn kill(client: &kube::Client, ns: &str, name: &str) -> Result<()> {
    match api(client, ns).delete(name, &DeleteParams::default()).await {
        Ok(_) => {
            println!("microservice {ns}/{name} deleted");
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => {
            bail!(Failure::NotFound(format!("no microservice {name} in {ns}")))
        }
        Err(e) => Err(e.into()),
    }
}

fn row(ms: &MicroService) -> [String; 5] {
    let st = ms.status.clone().unwrap_or_default();
    [
        ms.metadata.name.clone().unwrap_or_default(),
        st.phase.map_or("Pending".into(), |p| format!("{p:?}")),
        format!("{}/{}", st.ready_replicas.unwrap_or(0), st.replicas.unwrap_or(0)),
        st.url.unwrap_or_default(),
        st.image.or(ms.spec.image.clone()).unwrap_or_default(),
    ]
}

/// Lists the tenant's MicroServices.
pub async fn services(client: &kube::Client, ns: &str, out: Output) -> Result<()> {
    let list = api(client, ns).list(&ListParams::default()).await?;
    match out {
        Output::Table => {
            let rows: Vec<[String; 5]> = list.items.iter().map(row).collect();
            crate::table(&["NAME", "PHASE", "READY", "URL", "IMAGE"], &rows);
        }
        o => crate::print_value(&serde_json::to_value(&list.items)?, o)?,
    }
    Ok(())
}

/// One MicroService's status.
pub async fn status(client: &kube::Client, ns: &str, name: &str, out: Output) -> Result<()> {
    let ms = match api(client, ns).get(name).await {
        Ok(ms) => ms,
        Err(kube::Error::Api(s)) if s.code == 404 => {
            bail!(Failure::NotFound(format!("no microservice {name} in {ns}")))
        }
        Err(e) => return Err(e.into()),
    };
    if out != Output::Table {
        return crate::print_value(&serde_json::to_value(&ms)?, out);
    }
    let st = ms.status.clone().unwrap_or_default();
    let [n, phase, ready, url, image] = row(&ms);
    println!("name:      {n}\nphase:     {phase}\nreplicas:  {ready}\nurl:       {url}\nimage:     {image}");
    if let Some(c) = st.commit {
        println!("commit:    {c}");
    }
    if !st.endpoints.is_empty() {
        println!("endpoints: {}", st.endpoints.join(", "));
    }
    for c in &st.conditions {
        println!("  {:<12} {:<6} {:<24} {}", c.type_, c.status, c.reason, c.message);
    }
    Ok(())
}

/// Prints the service's pods' logs (`follow`: and keeps following), or its last build's.
pub async fn logs(client: &kube::Client, ns: &str, name: &str, build: bool, follow: bool) -> Result<()> {
    if build {
        return build_logs(client, ns, name, follow).await;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(&format!("microplane.dev/service={name}")))
        .await?;
    if list.items.is_empty() {
        bail!(Failure::NotFound(format!("microservice {name} has no pods in {ns}")));
    }
    for pod in &list.items {
        stream_log(&pods, pod, Some("service"), follow).await?;
    }
    Ok(())
}

async fn build_logs(client: &kube::Client, ns: &str, name: &str, follow: bool) -> Result<()> {
    let pods: Api<Pod> = Api::all(client.clone());
    let mut list = pods
        .list(&ListParams::default().labels(&format!("microplane.dev/tenant={ns},microplane.dev/build-of={name}")))
        .await
        .context("listing build pods")?
        .items;
    list.sort_by_key(|p| p.metadata.creation_timestamp.clone());
    let Some(pod) = list.last() else {
        bail!(Failure::NotFound(format!("no build of {name} in {ns} is kept")));
    };
    let api: Api<Pod> = Api::namespaced(client.clone(), pod.metadata.namespace.as_deref().unwrap_or_default());
    // The clone step, then the build.
    for c in pod
        .spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten().chain(s.containers.iter()))
    {
        stream_log(&api, pod, Some(&c.name), follow).await?;
    }
    Ok(())
}

async fn stream_log(api: &Api<Pod>, pod: &Pod, container: Option<&str>, follow: bool) -> Result<()> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let has = |c: &str| {
        pod.spec.as_ref().is_some_and(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .any(|k| k.name == c)
        })
    };
    let params = LogParams {
        follow,
        container: container.filter(|c| has(c)).map(str::to_string),
        ..LogParams::default()
    };
    let stream = api.log_stream(&name, &params).await?;
    let mut lines = stream.lines();
    let prefix = match container {
        Some(c) if has(c) => format!("{name}/{c}"),
        _ => name.clone(),
    };
    while let Some(line) = lines.try_next().await? {
        println!("[{prefix}] {line}");
    }
    Ok(())
}

/// The tenants (cluster-wide).
pub async fn tenants(client: &kube::Client, out: Output) -> Result<()> {
    let list = Api::<microplane_crds::Namespace>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    if out != Output::Table {
        return crate::print_value(&serde_json::to_value(&list.items)?, out);
    }
    let rows: Vec<[String; 4]> = list
        .items
        .iter()
        .map(|t| {
            let ready = t
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
                .map_or("Unknown".to_string(), |c| c.status.clone());
            [
                t.metadata.name.clone().unwrap_or_default(),
                format!("{:?}", t.spec.default_access),
                t.spec.hosts.join(","),
                ready,
            ]
        })
        .collect();
    crate::table(&["NAME", "ACCESS", "HOSTS", "READY"], &rows);
    Ok(())
}

/// The tenant's AuthRules, in the order they are evaluated (priority, highest first).
pub async fn rules(client: &kube::Client, ns: &str, out: Output) -> Result<()> {
    let mut list = Api::<microplane_crds::AuthRule>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?
        .items;
    list.sort_by_key(|r| std::cmp::Reverse(r.spec.priority));
    if out != Output::Table {
        return crate::print_value(&serde_json::to_value(&list)?, out);
    }
    let rows: Vec<[String; 5]> = list
        .iter()
        .map(|r| {
            let res = &r.spec.resource;
            [
                r.metadata.name.clone().unwrap_or_default(),
                format!("{}:{}:{}", res.type_, res.name, res.endpoint),
                if r.spec.scope.is_empty() {
                    "(public)".into()
                } else {
                    r.spec.scope.clone()
                },
                format!("{:?}", r.spec.access),
                r.spec.priority.to_string(),
            ]
        })
        .collect();
    crate::table(&["NAME", "RESOURCE", "SCOPE", "ACCESS", "PRIORITY"], &rows);
    Ok(())
}

/// The value at dot-separated `path` of `doc` (the whole document for an empty path).
pub fn lookup<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return Some(doc);
    }
    path.split('.').try_fold(doc, |v, k| v.get(k))
}

/// The merge patch setting dot-separated `path` of a Config's data to `value`.
pub fn config_patch(path: &str, value: Value) -> Value {
    let data = path.rsplit('.').fold(value, |inner, key| json!({ key: inner }));
    json!({"spec": {"data": data}})
}

/// `config get <name> [path]`: a Config's document, or the value at `path`.
pub async fn config_get(client: &kube::Client, ns: &str, name: &str, path: Option<&str>, out: Output) -> Result<()> {
    let cfg = match Api::<microplane_crds::Config>::namespaced(client.clone(), ns)
        .get(name)
        .await
    {
        Ok(c) => c,
        Err(kube::Error::Api(s)) if s.code == 404 => bail!(Failure::NotFound(format!("no config {name} in {ns}"))),
        Err(e) => return Err(e.into()),
    };
    let path = path.unwrap_or("");
    let value = lookup(&cfg.spec.data, path)
        .ok_or_else(|| Failure::NotFound(format!("config {name} has no value at {path}")))?;
    match (value, out) {
        (Value::String(s), Output::Table) => println!("{s}"),
        (v, Output::Yaml) => crate::print_value(v, Output::Yaml)?,
        (v, _) => println!("{}", serde_json::to_string_pretty(v)?),
    }
    Ok(())
}

/// `config set <name> <path> <value>`: sets one value of a Config's document (JSON when it
/// parses as JSON, else the text), creating the Config when it is missing.
pub async fn config_set(client: &kube::Client, ns: &str, name: &str, path: &str, value: &str) -> Result<()> {
    if path.is_empty() || path.split('.').any(str::is_empty) {
        bail!(Failure::Usage(format!(
            "{path:?} is not a dot-separated path such as helloworld.greeting"
        )));
    }
    let value = serde_json::from_str::<Value>(value).unwrap_or_else(|_| json!(value));
    let api = Api::<microplane_crds::Config>::namespaced(client.clone(), ns);
    let patch = config_patch(path, value);
    let result = match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Err(kube::Error::Api(s)) if s.code == 404 => {
            let mut object = patch;
            object["apiVersion"] = json!("microplane.dev/v1alpha1");
            object["kind"] = json!("Config");
            object["metadata"] = json!({"name": name});
            api.patch(name, &PatchParams::apply("microplane-cli"), &Patch::Apply(&object))
                .await
        }
        other => other,
    };
    match result {
        Ok(_) => {
            println!("config {ns}/{name}: {path} set");
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 422 || s.code == 400 => bail!(Failure::Usage(s.message)),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_paths() {
        let doc = json!({"helloworld": {"greeting": "Hi", "n": 2}});
        assert_eq!(lookup(&doc, "helloworld.greeting"), Some(&json!("Hi")));
        assert_eq!(lookup(&doc, ""), Some(&doc));
        assert_eq!(lookup(&doc, "helloworld.nope"), None);
        assert_eq!(
            config_patch("helloworld.greeting", json!("Hey")),
            json!({"spec": {"data": {"helloworld": {"greeting": "Hey"}}}})
        );
    }

    #[test]
    fn sources_and_refs() {
        assert_eq!(
            split_ref("https://git.example/a/b.git@main"),
            ("https://git.example/a/b.git".into(), Some("main".into()))
        );
        assert_eq!(
            split_ref("https://git.example/a/b.git"),
            ("https://git.example/a/b.git".into(), None)
        );
        assert_eq!(
            split_ref("git@github.com:a/b.git"),
            ("git@github.com:a/b.git".into(), None)
        );
        assert_eq!(
            split_ref("git@github.com:a/b.git@v1.2.0"),
            ("git@github.com:a/b.git".into(), Some("v1.2.0".into()))
        );
        let spec = |r: &str| RunSpec {
            name: "hw".into(),
            image: None,
            git: Some("https://g/r".into()),
            reference: Some(r.into()),
            path: Some("services/hw".into()),
            strategy: Some("Rust".into()),
            protocol: None,
        };
        assert_eq!(
            object(&spec("main"))["spec"]["source"]["git"]["ref"],
            json!({"branch": "main"})
        );
        assert_eq!(
            object(&spec("v1.2.0"))["spec"]["source"]["git"]["ref"],
            json!({"tag": "v1.2.0"})
        );
        assert_eq!(
            object(&spec("0123abc"))["spec"]["source"]["git"]["ref"],
            json!({"commit": "0123abc"})
        );
        let o = object(&spec("main"));
        assert_eq!(o["spec"]["source"]["build"]["strategy"], "Rust");
        assert_eq!(o["spec"]["source"]["git"]["path"], "services/hw");
        assert_eq!(o["kind"], "MicroService");
    }
}
