//! The routing snapshot the gateways follow, computed from the caches: a pure function.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use microplane_crds::{MicroService, Namespace, Protocol};
use microplane_wire::sync::v1;

use crate::discovery::Wanted;
use crate::discovery::reflection::Discovered;
use crate::labels::SERVICE_NAME_LABEL;

/// The snapshot (version and build time left at 0) and the discoveries it misses.
#[derive(Debug, Default)]
pub(crate) struct Built {
    /// The content.
    pub(crate) snapshot: v1::Snapshot,
    /// Discoveries to start.
    pub(crate) wanted: Vec<Wanted>,
}

fn endpoints_of(slices: &[&EndpointSlice]) -> (Vec<v1::Endpoint>, Vec<String>) {
    let mut ready: BTreeSet<String> = BTreeSet::new();
    let mut terminating: BTreeSet<String> = BTreeSet::new();
    for slice in slices {
        if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
            continue;
        }
        // A MicroService's Service has one port.
        let Some(port) = slice.ports.iter().flatten().find_map(|p| p.port) else {
            continue;
        };
        for ep in slice.endpoints.iter().flatten() {
            let Some(ip) = ep.addresses.first() else { continue };
            let address = if slice.address_type == "IPv6" {
                format!("[{ip}]:{port}")
            } else {
                format!("{ip}:{port}")
            };
            let c = ep.conditions.clone().unwrap_or_default();
            // `ready` absent means ready (discovery/v1 semantics).
            if c.ready.unwrap_or(true) {
                ready.insert(address);
            } else if c.serving.unwrap_or(false) && c.terminating.unwrap_or(false) {
                terminating.insert(address);
            }
        }
    }
    let ready_list: Vec<String> = ready.iter().cloned().collect();
    let eps = ready
        .into_iter()
        .map(|address| v1::Endpoint {
            address,
            terminating: false,
        })
        .chain(terminating.into_iter().map(|address| v1::Endpoint {
            address,
            terminating: true,
        }))
        .collect();
    (eps, ready_list)
}

/// Type of the Secrets that are accounts of a tenant (docs/auth.md).
pub(crate) const ACCOUNT_TYPE: &str = "microplane.dev/account";
/// Data key the operator puts in place of an account's secret: its PBKDF2 hash ([`hash_secret`]).
pub(crate) const SECRET_HASH: &str = "secret-pbkdf2";
/// Data key of the hash's salt.
pub(crate) const SECRET_SALT: &str = "secret-salt";
/// Data key set instead when the secret is too short to be an account secret.
pub(crate) const SECRET_TOO_SHORT: &str = "secret-too-short";
/// The shortest account secret accepted: 16 bytes (128 bits when random; `openssl rand -hex 16`
/// gives 32 characters). A shorter one never signs in, and the tenant says why.
pub(crate) const MIN_SECRET_BYTES: usize = 16;
/// PBKDF2-HMAC-SHA256 iterations of account secrets: about 10 ms per check on one core, which
/// the token endpoint's rate limit makes the most a client can cost.
pub(crate) const SECRET_ITERATIONS: u32 = 20_000;

/// The PBKDF2-HMAC-SHA256 hash of `secret` with `salt`.
pub(crate) fn hash_secret(secret: &[u8], salt: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 32];
    let iterations = std::num::NonZeroU32::new(SECRET_ITERATIONS).unwrap_or(std::num::NonZeroU32::MIN);
    aws_lc_rs::pbkdf2::derive(
        aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        secret,
        &mut out,
    );
    out
}

/// Replaces an account Secret's `secret` by its salted PBKDF2 hash before the Secret reaches a
/// cache: the operator never holds account secrets, and the gateway gets only what checks them.
/// The salt is the Secret's own (its uid, else its namespace and name), so that one secret hashes
/// the same way on every event and two accounts with one secret hash differently. Hash fields a
/// user wrote into the Secret are removed first: only the operator sets them.
pub(crate) fn hash_account(secret: &mut k8s_openapi::api::core::v1::Secret) {
    use sha2::Digest;
    secret.metadata.managed_fields = None;
    secret.metadata.annotations = None;
    secret.string_data = None;
    let salt = sha2::Sha256::digest(format!(
        "microplane.dev/account:{}:{}/{}",
        secret.metadata.uid.as_deref().unwrap_or(""),
        secret.metadata.namespace.as_deref().unwrap_or(""),
        secret.metadata.name.as_deref().unwrap_or("")
    ))[..16]
        .to_vec();
    if let Some(data) = secret.data.as_mut() {
        let raw = data.remove("secret");
        for k in [SECRET_HASH, SECRET_SALT, SECRET_TOO_SHORT] {
            data.remove(k);
        }
        match raw {
            Some(v) if v.0.len() < MIN_SECRET_BYTES => {
                tracing::warn!(
                    namespace = secret.metadata.namespace.as_deref().unwrap_or(""),
                    account = secret.metadata.name.as_deref().unwrap_or(""),
                    "account secret shorter than {MIN_SECRET_BYTES} bytes: it cannot sign in"
                );
                data.insert(SECRET_TOO_SHORT.into(), k8s_openapi::ByteString(b"true".to_vec()));
            }
            Some(v) => {
                data.insert(SECRET_HASH.into(), k8s_openapi::ByteString(hash_secret(&v.0, &salt)));
                data.insert(SECRET_SALT.into(), k8s_openapi::ByteString(salt));
            }
            None => {}
        }
    }
}

/// A `tokenTTL` in whole seconds; none when it is not a duration of at least a second.
fn ttl_seconds(s: &str) -> Option<i64> {
    let d = microplane_crds::Duration::parse(s).ok()?;
    i64::try_from(d.get().as_secs()).ok().filter(|&n| n > 0)
}

/// Default lifetime of platform-issued access tokens.
pub(crate) const DEFAULT_TOKEN_TTL: i64 = 15 * 60;

/// Everything a snapshot is built from.
#[derive(Clone, Copy, Default)]
pub(crate) struct Inputs<'a> {
    /// Tenants.
    pub(crate) tenants: &'a [Arc<Namespace>],
    /// MicroServices.
    pub(crate) services: &'a [Arc<MicroService>],
    /// Their EndpointSlices.
    pub(crate) slices: &'a [Arc<EndpointSlice>],
    /// Descriptors by key.
    pub(crate) discovered: Option<&'a HashMap<String, Arc<Discovered>>>,
    /// AuthRules.
    pub(crate) rules: &'a [Arc<microplane_crds::AuthRule>],
    /// Tenants' issuer-key Secrets.
    pub(crate) keys: &'a [Arc<k8s_openapi::api::core::v1::Secret>],
    /// Account Secrets, already hashed by [`hash_account`].
    pub(crate) accounts: &'a [Arc<k8s_openapi::api::core::v1::Secret>],
    /// Base of tenants' issuer URLs (the gateway's URL).
    pub(crate) issuer_base: Option<&'a str>,
}

fn text(data: &BTreeMap<String, k8s_openapi::ByteString>, key: &str) -> Option<String> {
    data.get(key)
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn tenant_auth(
    t: &Namespace,
    name: &str,
    inputs: &Inputs<'_>,
) -> (
    Vec<v1::SigningKey>,
    Vec<v1::Rule>,
    Vec<v1::Account>,
    Vec<v1::ExternalIssuer>,
) {
    use base64::Engine;
    let keys = inputs
        .keys
        .iter()
        .find(|s| s.namespace().as_deref() == Some(name) && s.name_any() == crate::issuer::KEYS_SECRET)
        .map(|s| crate::issuer::read(Some(s), k8s_openapi::jiff::Timestamp::now().as_second()).keys)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|k| {
            let der = base64::engine::general_purpose::STANDARD.decode(&k.pkcs8).ok()?;
            Some(v1::SigningKey { kid: k.kid, pkcs8: der })
        })
        .collect();
    let mut rules: Vec<(&Arc<microplane_crds::AuthRule>, v1::Rule)> = inputs
        .rules
        .iter()
        .filter(|r| r.namespace().as_deref() == Some(name) && r.meta().deletion_timestamp.is_none())
        .map(|r| {
            (
                r,
                v1::Rule {
                    id: r.name_any(),
                    scope: r.spec.scope.clone(),
                    r#type: r.spec.resource.type_.clone(),
                    name: r.spec.resource.name.clone(),
                    endpoint: r.spec.resource.endpoint.clone(),
                    denied: r.spec.access == microplane_crds::Access::Denied,
                    priority: r.spec.priority,
                },
            )
        })
        .collect();
    // Equal priorities keep a stable order: by creation, then name.
    rules.sort_by(|a, b| {
        a.0.meta()
            .creation_timestamp
            .cmp(&b.0.meta().creation_timestamp)
            .then_with(|| a.1.id.cmp(&b.1.id))
    });
    let accounts = inputs
        .accounts
        .iter()
        .filter(|s| s.namespace().as_deref() == Some(name))
        .filter_map(|s| {
            use sha2::Digest;
            let data = s.data.as_ref()?;
            let hash = data.get(SECRET_HASH)?.0.clone();
            let salt = data.get(SECRET_SALT)?.0.clone();
            Some(v1::Account {
                id: text(data, "id").unwrap_or_else(|| s.name_any()),
                r#type: text(data, "type").unwrap_or_else(|| "user".into()),
                scopes: text(data, "scopes")
                    .map(|v| {
                        v.split([' ', ','])
                            .filter(|x| !x.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
                secret_version: sha2::Sha256::digest(&hash)[..8].to_vec(),
                secret_pbkdf2: hash,
                salt,
                iterations: SECRET_ITERATIONS,
            })
        })
        .collect();
    let external = t
        .spec
        .auth
        .iter()
        .flat_map(|a| a.issuers.iter())
        .map(|i| v1::ExternalIssuer {
            issuer: i.issuer.clone(),
            jwks_uri: i.jwks_uri.clone().unwrap_or_default(),
            jwks: i.jwks.clone().unwrap_or_default(),
            audiences: i.audiences.clone(),
            algorithms: i
                .algorithms
                .iter()
                .map(|a| {
                    serde_json::to_value(a)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                })
                .collect(),
            scopes_claim: i.scopes_claim.clone().unwrap_or_default(),
        })
        .collect();
    (keys, rules.into_iter().map(|(_, r)| r).collect(), accounts, external)
}

/// Which tenant each host routes to: hosts are claimed in the order the tenants were created (then
/// by name), so a tenant listing a host another one already has never takes it over, and one
/// conflict never stops the snapshot (issue 20). The later tenant reports `HostConflict`.
pub(crate) fn host_owners<'a>(tenants: impl IntoIterator<Item = &'a Namespace>) -> BTreeMap<String, String> {
    let mut live: Vec<&Namespace> = tenants
        .into_iter()
        .filter(|t| t.meta().deletion_timestamp.is_none())
        .collect();
    live.sort_by(|a, b| {
        let key = |t: &Namespace| (t.meta().creation_timestamp.as_ref().map(|c| c.0), t.name_any());
        key(a).cmp(&key(b))
    });
    let mut owners = BTreeMap::new();
    for t in live {
        for h in &t.spec.hosts {
            owners
                .entry(h.trim_end_matches('.').to_ascii_lowercase())
                .or_insert_with(|| t.name_any());
        }
    }
    owners
}

/// The longest condition message the snapshot carries (a build log's tail can be long).
const MAX_MESSAGE_BYTES: usize = 1024;

fn cut(message: &str) -> String {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message.to_string();
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

/// What the explorer and the dashboard show of a MicroService's status: its phase, readiness, what
/// runs and the state of its build, all read from `status` (nothing the status does not say).
fn status_of(ms: &MicroService) -> v1::ServiceStatus {
    let Some(status) = ms.status.as_ref() else {
        return v1::ServiceStatus {
            phase: "Pending".into(),
            ..Default::default()
        };
    };
    let condition = |t: &str| status.conditions.iter().find(|c| c.type_ == t);
    let ready = condition("Ready");
    let build = condition("BuildSucceeded").and_then(|c| {
        let state = match (c.status.as_str(), c.reason.as_str()) {
            ("True", _) => "Succeeded",
            (_, "Building") => "Running",
            (_, "BuildFailed") => "Failed",
            // Still resolving the source: no build yet.
            _ => return None,
        };
        // The Job of the running build is named in its message; a finished one in `builds`.
        let job = match state {
            "Running" => c
                .message
                .rsplit_once("(Job ")
                .map(|(_, rest)| rest.trim_end_matches(')').to_string())
                .unwrap_or_default(),
            _ => status
                .builds
                .iter()
                .find(|b| Some(&b.commit) == status.commit.as_ref())
                .map(|b| b.build.clone())
                .unwrap_or_default(),
        };
        Some(v1::Build {
            job,
            commit: status.commit.clone().unwrap_or_default(),
            state: state.into(),
            reason: c.reason.clone(),
            message: cut(&c.message),
        })
    });
    v1::ServiceStatus {
        phase: format!("{:?}", status.phase.unwrap_or_default()),
        ready: ready.is_some_and(|c| c.status == "True"),
        reason: ready.map(|c| c.reason.clone()).unwrap_or_default(),
        message: ready.map(|c| cut(&c.message)).unwrap_or_default(),
        image: status.image.clone().unwrap_or_default(),
        commit: status.commit.clone().unwrap_or_default(),
        replicas: status.replicas.unwrap_or_default(),
        ready_replicas: status.ready_replicas.unwrap_or_default(),
        url: status.url.clone().unwrap_or_default(),
        build,
    }
}

/// Builds the snapshot: every tenant with a Namespace object (its issuer, keys, rules, accounts),
/// every exposed MicroService of those tenants with its ready endpoints, and the descriptors
/// discovered for their images.
pub(crate) fn build(inputs: Inputs<'_>) -> Built {
    let Inputs {
        tenants,
        services,
        slices,
        ..
    } = inputs;
    let empty = HashMap::new();
    let discovered = inputs.discovered.unwrap_or(&empty);
    let owners = host_owners(tenants.iter().map(AsRef::as_ref));
    let mut tenant_list: Vec<v1::Tenant> = tenants
        .iter()
        .filter(|t| t.meta().deletion_timestamp.is_none())
        .map(|t| {
            let name = t.name_any();
            let (signing_keys, rules, accounts, external_issuers) = tenant_auth(t, &name, &inputs);
            v1::Tenant {
                issuer: crate::issuer::issuer_url(inputs.issuer_base, &name),
                token_ttl_seconds: t
                    .spec
                    .auth
                    .as_ref()
                    .and_then(|a| a.token_ttl.as_deref())
                    .and_then(ttl_seconds)
                    .unwrap_or(DEFAULT_TOKEN_TTL),
                signing_keys,
                rules,
                accounts,
                external_issuers,
                login_url: t
                    .spec
                    .auth
                    .as_ref()
                    .and_then(|a| a.login_url.clone())
                    .unwrap_or_default(),
                hosts: t
                    .spec
                    .hosts
                    .iter()
                    .filter(|h| owners.get(&h.trim_end_matches('.').to_ascii_lowercase()) == Some(&name))
                    .cloned()
                    .collect(),
                cors: t.spec.cors.as_ref().map(|c| v1::Cors {
                    allowed_origins: c.allowed_origins.clone(),
                    allowed_headers: c.allowed_headers.clone(),
                    allowed_methods: c.allowed_methods.clone(),
                    allow_credentials: c.allow_credentials,
                }),
                name,
            }
        })
        .collect();
    tenant_list.sort_by(|a, b| a.name.cmp(&b.name));
    let tenant_names: BTreeSet<&str> = tenant_list.iter().map(|t| t.name.as_str()).collect();

    let mut by_service: HashMap<(String, String), Vec<&EndpointSlice>> = HashMap::new();
    for s in slices {
        if let (Some(ns), Some(svc)) = (s.namespace(), s.labels().get(SERVICE_NAME_LABEL)) {
            by_service.entry((ns, svc.clone())).or_default().push(s.as_ref());
        }
    }

    let mut sorted: Vec<&Arc<MicroService>> = services.iter().collect();
    sorted.sort_by_key(|m| (m.namespace(), m.name_any()));
    let mut out_services = Vec::new();
    let mut used: BTreeMap<String, Arc<Discovered>> = BTreeMap::new();
    let mut wanted: BTreeMap<String, Wanted> = BTreeMap::new();
    for ms in sorted {
        let (Some(ns), name) = (ms.namespace(), ms.name_any()) else {
            continue;
        };
        if !ms.spec.expose || ms.meta().deletion_timestamp.is_some() || !tenant_names.contains(ns.as_str()) {
            continue;
        }
        let slices = by_service.get(&(ns.clone(), name.clone())).cloned().unwrap_or_default();
        let (endpoints, ready) = endpoints_of(&slices);
        let mut descriptors = String::new();
        let protocol = match ms.spec.protocol {
            Protocol::Http => v1::Protocol::Http,
            Protocol::Grpc => {
                if let Some(key) = crate::discovery::key_of(ms) {
                    if let Some(d) = discovered.get(&key) {
                        used.insert(key.clone(), d.clone());
                        descriptors = key;
                    } else if let Some(address) = ready.first() {
                        wanted
                            .entry(key.clone())
                            .or_insert_with(|| Wanted {
                                key,
                                address: address.clone(),
                                services: Vec::new(),
                            })
                            .services
                            .push(ObjectRef::from_obj(ms.as_ref()));
                    }
                }
                v1::Protocol::Grpc
            }
        };
        out_services.push(v1::Service {
            tenant: ns,
            name,
            protocol: protocol as i32,
            endpoints,
            descriptors,
            status: Some(status_of(ms)),
        });
    }
    Built {
        snapshot: v1::Snapshot {
            version: 0,
            source: String::new(),
            built_unix_nanos: 0,
            tenants: tenant_list,
            services: out_services,
            descriptors: used
                .into_iter()
                .map(|(key, d)| v1::Descriptors {
                    key,
                    file_descriptor_set: d.file_descriptor_set.clone(),
                    services: d.services.clone(),
                })
                .collect(),
        },
        wanted: wanted.into_values().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml<T: serde::de::DeserializeOwned>(s: &str) -> Arc<T> {
        Arc::new(serde_yaml::from_str(s).unwrap())
    }

    fn tenant(name: &str, hosts: &str) -> Arc<Namespace> {
        yaml(&format!(
            "apiVersion: microplane.dev/v1alpha1\nkind: Namespace\nmetadata: {{name: {name}}}\nspec: {{hosts: [{hosts}]}}"
        ))
    }

    fn ms(ns: &str, name: &str, extra: &str) -> Arc<MicroService> {
        yaml(&format!(
            "apiVersion: microplane.dev/v1alpha1\nkind: MicroService\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{image: 'localhost/microplane/{name}:dev'{extra}}}"
        ))
    }

    fn slice(ns: &str, svc: &str, name: &str, eps: &str) -> Arc<EndpointSlice> {
        yaml(&format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\naddressType: IPv4\nmetadata: {{name: {name}, namespace: {ns}, labels: {{kubernetes.io/service-name: {svc}}}}}\nports: [{{name: grpc, port: 8080}}]\nendpoints: [{eps}]"
        ))
    }

    fn discovered() -> Arc<Discovered> {
        Arc::new(Discovered {
            file_descriptor_set: vec![1, 2, 3],
            services: vec!["helloworld.Helloworld".into()],
            endpoints: vec!["Helloworld.Call".into()],
        })
    }

    fn with_status(status: &str) -> MicroService {
        serde_yaml::from_str(&format!(
            "apiVersion: microplane.dev/v1alpha1\nkind: MicroService\nmetadata: {{name: hw, namespace: micro}}\nspec: {{image: x}}\nstatus: {status}"
        ))
        .unwrap()
    }

    fn cond(t: &str, status: &str, reason: &str, message: &str) -> String {
        format!(
            "{{type: {t}, status: '{status}', reason: {reason}, message: '{message}', lastTransitionTime: '2026-01-01T00:00:00Z'}}"
        )
    }

    #[test]
    fn the_status_summary_says_what_the_status_says() {
        // No status yet: Pending, nothing else.
        let none = status_of(&with_status("{}"));
        assert_eq!((none.phase.as_str(), none.ready, none.build), ("Pending", false, None));

        let running = status_of(&with_status(&format!(
            "{{phase: Running, commit: c0ffee, image: 'r/micro/hw@sha256:1', replicas: 2, readyReplicas: 2, url: 'http://gw/hw', \
             builds: [{{commit: c0ffee, image: 'r/micro/hw@sha256:1', build: hw-build-1}}, {{commit: old, image: o, build: hw-build-0}}], \
             conditions: [{}, {}]}}",
            cond("Ready", "True", "Ready", "running"),
            cond("BuildSucceeded", "True", "Built", "r/micro/hw@sha256:1"),
        )));
        assert_eq!(running.phase, "Running");
        assert!(running.ready);
        assert_eq!((running.replicas, running.ready_replicas), (2, 2));
        assert_eq!(running.url, "http://gw/hw");
        let build = running.build.unwrap();
        assert_eq!(
            (build.state.as_str(), build.job.as_str(), build.commit.as_str()),
            ("Succeeded", "hw-build-1", "c0ffee")
        );

        let building = status_of(&with_status(&format!(
            "{{phase: Building, conditions: [{}, {}]}}",
            cond("Ready", "False", "Building", "building commit 0123 (Job hw-build-2)"),
            cond(
                "BuildSucceeded",
                "False",
                "Building",
                "building commit 0123 (Job hw-build-2)"
            ),
        )));
        assert_eq!(building.reason, "Building");
        let build = building.build.unwrap();
        assert_eq!((build.state.as_str(), build.job.as_str()), ("Running", "hw-build-2"));

        // A failed build's words, cut to a bounded size.
        let long = "e".repeat(5000);
        let failed = status_of(&with_status(&format!(
            "{{phase: Failed, conditions: [{}, {}]}}",
            cond("Ready", "False", "BuildFailed", &long),
            cond("BuildSucceeded", "False", "BuildFailed", &long),
        )));
        let build = failed.build.unwrap();
        assert_eq!(build.state, "Failed");
        assert!(build.message.len() <= MAX_MESSAGE_BYTES + 3 && build.message.ends_with('…'));
        assert!(failed.message.len() <= MAX_MESSAGE_BYTES + 3);

        // Still resolving: no build to show.
        let resolving = status_of(&with_status(&format!(
            "{{phase: Resolving, conditions: [{}]}}",
            cond(
                "BuildSucceeded",
                "False",
                "Resolving",
                "waiting for the source to resolve"
            ),
        )));
        assert_eq!(resolving.build, None);
    }

    #[test]
    fn routes_exposed_services_of_tenants_with_ready_endpoints() {
        let tenants = [tenant("micro", "api.example.com"), tenant("acme", "")];
        let services = [
            ms("micro", "helloworld", ""),
            ms("micro", "hidden", ", expose: false"),
            ms("micro", "web", ", protocol: Http"),
            ms("nottenant", "x", ""),
        ];
        let slices = [
            slice(
                "micro",
                "helloworld",
                "hw-1",
                "{addresses: [10.0.0.2]}, {addresses: [10.0.0.1], conditions: {ready: true}}, {addresses: [10.0.0.3], conditions: {ready: false}}, {addresses: [10.0.0.4], conditions: {ready: false, serving: true, terminating: true}}",
            ),
            slice("micro", "helloworld", "hw-2", "{addresses: [10.0.0.1]}"),
            slice("micro", "web", "web-1", "{addresses: [10.0.1.1]}"),
        ];
        let b = build(Inputs {
            tenants: &tenants,
            services: &services,
            slices: &slices,
            ..Default::default()
        });
        let names: Vec<_> = b.snapshot.tenants.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["acme", "micro"]);
        assert_eq!(b.snapshot.tenants[1].hosts, ["api.example.com"]);
        let svcs: Vec<_> = b
            .snapshot
            .services
            .iter()
            .map(|s| (s.tenant.as_str(), s.name.as_str()))
            .collect();
        assert_eq!(svcs, [("micro", "helloworld"), ("micro", "web")]);
        let hw = &b.snapshot.services[0];
        let eps: Vec<_> = hw
            .endpoints
            .iter()
            .map(|e| (e.address.as_str(), e.terminating))
            .collect();
        assert_eq!(
            eps,
            [
                ("10.0.0.1:8080", false),
                ("10.0.0.2:8080", false),
                ("10.0.0.4:8080", true)
            ]
        );
        assert_eq!(hw.descriptors, "");
        assert_eq!(b.snapshot.services[1].protocol, v1::Protocol::Http as i32);
        // The gRPC service without descriptors asks for a discovery at a ready endpoint.
        assert_eq!(b.wanted.len(), 1);
        assert_eq!(b.wanted[0].key, "image:localhost/microplane/helloworld:dev");
        assert_eq!(b.wanted[0].address, "10.0.0.1:8080");
        assert_eq!(b.wanted[0].services, [ObjectRef::new("helloworld").within("micro")]);
    }

    #[test]
    fn discovered_descriptors_are_shipped_once_per_key() {
        let tenants = [tenant("micro", "")];
        let services = [ms("micro", "helloworld", ""), ms("micro", "helloworld", "")];
        let mut found = HashMap::new();
        found.insert("image:localhost/microplane/helloworld:dev".to_string(), discovered());
        let b = build(Inputs {
            tenants: &tenants,
            services: &services,
            discovered: Some(&found),
            ..Default::default()
        });
        assert!(b.wanted.is_empty());
        assert_eq!(b.snapshot.descriptors.len(), 1);
        assert!(b.snapshot.services.iter().all(|s| s.descriptors.starts_with("image:")));
    }

    #[test]
    fn nothing_is_wanted_without_a_ready_endpoint() {
        let b = build(Inputs {
            tenants: &[tenant("micro", "")],
            services: &[ms("micro", "helloworld", "")],
            ..Default::default()
        });
        assert!(b.wanted.is_empty());
        assert_eq!(b.snapshot.services.len(), 1);
        assert!(b.snapshot.services[0].endpoints.is_empty());
    }

    fn rule(ns: &str, name: &str, created: &str, priority: i32, access: &str) -> Arc<microplane_crds::AuthRule> {
        yaml(&format!(
            "apiVersion: microplane.dev/v1alpha1\nkind: AuthRule\nmetadata: {{name: {name}, namespace: {ns}, creationTimestamp: '{created}'}}\nspec: {{scope: '*', access: {access}, priority: {priority}, resource: {{name: '*', endpoint: '*'}}}}"
        ))
    }

    #[test]
    fn tenants_carry_issuer_keys_rules_accounts_and_ttl() {
        use k8s_openapi::api::core::v1::Secret;
        let t: Arc<Namespace> = yaml(
            "apiVersion: microplane.dev/v1alpha1\nkind: Namespace\nmetadata: {name: acme}\nspec: {auth: {tokenTTL: 1h30m, loginUrl: 'https://login.example/in?app=1', issuers: [{issuer: 'https://idp.example', jwksUri: 'https://idp.example/jwks', algorithms: [ES256]}]}}",
        );
        let key = crate::issuer::generate(5).unwrap();
        let owner = Default::default();
        let keys = [Arc::new(
            crate::issuer::secret("acme", std::slice::from_ref(&key), owner).unwrap(),
        )];
        let mut account: Secret = serde_yaml::from_str(
            "metadata: {name: alice, namespace: acme}\ntype: microplane.dev/account\nstringData: {}\ndata: {secret: Y29ycmVjdC1ob3JzZS1iYXR0ZXJ5, scopes: YWRtaW4gcmVhZA==}",
        )
        .unwrap();
        hash_account(&mut account);
        assert!(
            !account.data.as_ref().unwrap().contains_key("secret"),
            "the secret itself is dropped"
        );
        let accounts = [Arc::new(account)];
        let rules = [
            rule("acme", "b", "2026-01-02T00:00:00Z", 0, "Granted"),
            rule("acme", "a", "2026-01-01T00:00:00Z", 0, "Denied"),
            rule("other", "c", "2026-01-01T00:00:00Z", 0, "Granted"),
        ];
        let b = build(Inputs {
            tenants: &[t],
            rules: &rules,
            keys: &keys,
            accounts: &accounts,
            issuer_base: Some("http://localhost:8080"),
            ..Default::default()
        });
        let t = &b.snapshot.tenants[0];
        assert_eq!(t.issuer, "http://localhost:8080/acme");
        assert_eq!(t.token_ttl_seconds, 5400);
        assert_eq!(t.login_url, "https://login.example/in?app=1");
        assert_eq!(t.signing_keys.len(), 1);
        assert_eq!(t.signing_keys[0].kid, key.kid);
        let ids: Vec<_> = t.rules.iter().map(|r| (r.id.as_str(), r.denied)).collect();
        assert_eq!(
            ids,
            [("a", true), ("b", false)],
            "only this tenant's rules, oldest first"
        );
        assert_eq!(t.accounts.len(), 1);
        assert_eq!(t.accounts[0].id, "alice");
        assert_eq!(t.accounts[0].r#type, "user");
        assert_eq!(t.accounts[0].scopes, ["admin", "read"]);
        let a = &t.accounts[0];
        assert_eq!(a.salt.len(), 16);
        assert_eq!(a.iterations, SECRET_ITERATIONS);
        assert_eq!(a.secret_pbkdf2, hash_secret(b"correct-horse-battery", &a.salt));
        assert_eq!(a.secret_version.len(), 8);
        assert_eq!(t.external_issuers.len(), 1);
        assert_eq!(t.external_issuers[0].algorithms, ["ES256"]);
    }

    #[test]
    fn a_host_two_tenants_claim_goes_to_the_older_one_and_the_snapshot_still_builds() {
        let at = |name: &str, created: &str| {
            yaml::<Namespace>(&format!(
                "apiVersion: microplane.dev/v1alpha1\nkind: Namespace\nmetadata: {{name: {name}, creationTimestamp: '{created}'}}\nspec: {{hosts: [api.shared.example, {name}.example]}}"
            ))
        };
        // `zeta` is older than `alpha`: it keeps the shared host, whatever the names' order.
        let tenants = [at("alpha", "2026-02-01T00:00:00Z"), at("zeta", "2026-01-01T00:00:00Z")];
        let owners = host_owners(tenants.iter().map(AsRef::as_ref));
        assert_eq!(owners["api.shared.example"], "zeta");
        assert_eq!(owners["alpha.example"], "alpha");
        let b = build(Inputs {
            tenants: &tenants,
            ..Inputs::default()
        });
        let hosts = |n: &str| {
            b.snapshot
                .tenants
                .iter()
                .find(|t| t.name == n)
                .map(|t| t.hosts.clone())
                .unwrap()
        };
        assert_eq!(hosts("zeta"), ["api.shared.example", "zeta.example"]);
        assert_eq!(hosts("alpha"), ["alpha.example"]);
    }

    /// Issue 20, item 5: salted and slow; a short secret never signs in; hash fields a user writes
    /// are not taken.
    #[test]
    fn account_secrets_are_salted_slow_hashes_and_short_ones_are_refused() {
        use k8s_openapi::api::core::v1::Secret;
        let account = |name: &str, uid: &str, data: &str| {
            let mut s: Secret = serde_yaml::from_str(&format!(
                "metadata: {{name: {name}, namespace: acme, uid: {uid}}}\ntype: microplane.dev/account\ndata: {data}"
            ))
            .unwrap();
            hash_account(&mut s);
            s
        };
        // One secret, two accounts: two hashes.
        let same = "{secret: Y29ycmVjdC1ob3JzZS1iYXR0ZXJ5}";
        let (a, b) = (account("a", "u1", same), account("b", "u2", same));
        let hash = |s: &Secret| s.data.as_ref().unwrap()[SECRET_HASH].0.clone();
        assert_ne!(hash(&a), hash(&b));
        // The same Secret again: the same hash (no churn on every event).
        assert_eq!(hash(&account("a", "u1", same)), hash(&a));
        // Too short: no hash at all, and the tenant can name it.
        let short = account("weak", "u3", "{secret: c2VjcmV0}");
        assert!(!short.data.as_ref().unwrap().contains_key(SECRET_HASH));
        assert!(short.data.as_ref().unwrap().contains_key(SECRET_TOO_SHORT));
        // A hash the user wrote is dropped.
        let forged = account("f", "u4", "{secret-pbkdf2: AAAA, secret-salt: AAAA}");
        assert!(forged.data.as_ref().unwrap().is_empty(), "{forged:?}");
    }

    #[test]
    fn durations() {
        assert_eq!(ttl_seconds("15m"), Some(900));
        assert_eq!(ttl_seconds("1h30m"), Some(5400));
        assert_eq!(ttl_seconds("90s"), Some(90));
        assert_eq!(ttl_seconds("15"), None);
        assert_eq!(ttl_seconds("0s"), None);
        assert_eq!(ttl_seconds("5d"), None);
    }
}
