//! The routing snapshot the gateways follow, computed from the caches: a pure function.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use microplane_crds::{MicroService, Namespace, Protocol};
use microplane_sync::v1;

use super::reflection::Discovered;

/// Label the EndpointSlice controller puts on every slice of a Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Descriptors are cached per image (or per commit for source builds): one discovery serves every
/// MicroService running the same build.
pub fn discovery_key(ms: &MicroService) -> Option<String> {
    let status = ms.status.as_ref();
    if ms.spec.source.is_some() {
        return status.and_then(|s| s.commit.clone()).map(|c| format!("commit:{c}"));
    }
    ms.spec.image.clone().map(|i| format!("image:{i}"))
}

/// A discovery the snapshot needs: the key, an endpoint to ask, and who waits for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    /// The cache key.
    pub key: String,
    /// A ready endpoint, `ip:port`.
    pub address: String,
    /// MicroServices using this key.
    pub services: Vec<ObjectRef<MicroService>>,
}

/// The snapshot (version and build time left at 0) and the discoveries it misses.
#[derive(Debug, Default)]
pub struct Built {
    /// The content.
    pub snapshot: v1::Snapshot,
    /// Discoveries to start.
    pub wanted: Vec<Wanted>,
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

/// Builds the snapshot: every tenant with a Namespace object, every exposed MicroService of those
/// tenants with its ready endpoints, and the descriptors discovered for their images.
pub fn build(
    tenants: &[Arc<Namespace>],
    services: &[Arc<MicroService>],
    slices: &[Arc<EndpointSlice>],
    discovered: &HashMap<String, Arc<Discovered>>,
) -> Built {
    let mut tenant_list: Vec<v1::Tenant> = tenants
        .iter()
        .filter(|t| t.meta().deletion_timestamp.is_none())
        .map(|t| v1::Tenant {
            name: t.name_any(),
            hosts: t.spec.hosts.clone(),
            cors: t.spec.cors.as_ref().map(|c| v1::Cors {
                allowed_origins: c.allowed_origins.clone(),
                allowed_headers: c.allowed_headers.clone(),
                allowed_methods: c.allowed_methods.clone(),
                allow_credentials: c.allow_credentials,
            }),
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
                if let Some(key) = discovery_key(ms) {
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
        let b = build(&tenants, &services, &slices, &HashMap::new());
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
        let b = build(&tenants, &services, &[], &found);
        assert!(b.wanted.is_empty());
        assert_eq!(b.snapshot.descriptors.len(), 1);
        assert!(b.snapshot.services.iter().all(|s| s.descriptors.starts_with("image:")));
    }

    #[test]
    fn nothing_is_wanted_without_a_ready_endpoint() {
        let b = build(
            &[tenant("micro", "")],
            &[ms("micro", "helloworld", "")],
            &[],
            &HashMap::new(),
        );
        assert!(b.wanted.is_empty());
        assert_eq!(b.snapshot.services.len(), 1);
        assert!(b.snapshot.services[0].endpoints.is_empty());
    }
}
