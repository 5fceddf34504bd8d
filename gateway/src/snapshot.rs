//! The immutable routing snapshot every request reads, built from one `microplane.sync.v1.Snapshot`.
//!
//! Building validates everything (descriptor sets decode, names are unique), so a bad snapshot is
//! refused whole and the gateway keeps serving the previous one.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use microplane_wire::sync::v1;
use prost_reflect::{DescriptorPool, MethodDescriptor};

use crate::upstream::{EndpointSet, Upstreams};

/// A tenant's CORS policy; `None` on the tenant means Micro's permissive defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Cors {
    /// Origins allowed (`*` allows any).
    pub allowed_origins: Vec<String>,
    /// Request headers allowed in addition to the defaults.
    pub allowed_headers: Vec<String>,
    /// Methods allowed (empty: the defaults).
    pub allowed_methods: Vec<String>,
    /// Whether credentials are allowed.
    pub allow_credentials: bool,
}

/// How a service is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// HTTP/JSON transcoded to gRPC.
    Grpc,
    /// Proxied as HTTP.
    Http,
}

/// One exposed service of a tenant.
#[derive(Debug)]
pub(crate) struct Route {
    /// Tenant name.
    pub tenant: String,
    /// MicroService name.
    pub service: String,
    /// How it is reached.
    pub protocol: Protocol,
    /// Where.
    pub endpoints: EndpointSet,
    /// `Svc.Method` → method, for `Grpc` services whose descriptors are known.
    pub methods: Option<HashMap<String, MethodDescriptor>>,
    /// Handles on this route's request metrics.
    pub metrics: crate::metrics::RouteMetrics,
    /// The MicroService's status, as the operator summarised it (the explorer shows it to the
    /// tenant's own accounts).
    pub status: Option<v1::ServiceStatus>,
}

/// A tenant with its routes.
#[derive(Debug)]
pub(crate) struct Tenant {
    /// Name.
    pub name: String,
    /// CORS override.
    pub cors: Option<Cors>,
    /// Routes by service name.
    pub routes: HashMap<String, Arc<Route>>,
}

/// Everything the data path reads.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// Version from the operator.
    pub version: u64,
    /// The operator process that built it.
    pub source: String,
    /// Tenants by name.
    pub tenants: HashMap<String, Arc<Tenant>>,
    /// Host → tenant name.
    pub hosts: HashMap<String, String>,
}

/// Why a snapshot was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SnapshotError {
    /// A descriptor set does not decode into a consistent pool.
    #[error("descriptor set {key}: {reason}")]
    Descriptors {
        /// Its key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A service refers to a descriptor set the snapshot does not carry.
    #[error("service {tenant}/{service} refers to missing descriptor set {key}")]
    MissingDescriptors {
        /// Tenant.
        tenant: String,
        /// Service.
        service: String,
        /// The key.
        key: String,
    },
    /// Two tenants claim the same host.
    #[error("host {host} is claimed by tenants {a} and {b}")]
    HostConflict {
        /// The host.
        host: String,
        /// One tenant.
        a: String,
        /// The other.
        b: String,
    },
}

/// `Svc.Method` → method for a backend serving `pool`: every method name a non-infrastructure
/// service offers, resolved by [`crate::transcode::find_method`] (the package equal to the Micro
/// service name first, docs/gateway.md). Built once per snapshot, so a request does one map lookup.
pub(crate) fn method_table(pool: &DescriptorPool, micro_service: &str) -> HashMap<String, MethodDescriptor> {
    let mut table = HashMap::new();
    for svc in pool.services() {
        for m in svc.methods() {
            let key = format!("{}.{}", svc.name(), m.name());
            if table.contains_key(&key) {
                continue;
            }
            if let Some(found) = crate::transcode::find_method(pool, svc.name(), m.name(), micro_service) {
                table.insert(key, found);
            }
        }
    }
    table
}

impl Snapshot {
    /// Builds the routing snapshot, reusing `upstreams` across snapshots. What is wrong in one
    /// tenant's part stays in that part and is returned beside the snapshot: a descriptor set that
    /// does not decode leaves the services using it undiscovered (503), a host claimed twice stays
    /// with the tenant that comes first. One tenant never stops the others' routes (issue 20).
    pub(crate) fn build(msg: &v1::Snapshot, upstreams: &Upstreams) -> (Self, Vec<SnapshotError>) {
        let mut problems = Vec::new();
        let mut pools: HashMap<&str, DescriptorPool> = HashMap::new();
        for d in &msg.descriptors {
            match DescriptorPool::decode(d.file_descriptor_set.as_slice()) {
                Ok(pool) => {
                    pools.insert(d.key.as_str(), pool);
                }
                Err(e) => problems.push(SnapshotError::Descriptors {
                    key: d.key.clone(),
                    reason: e.to_string(),
                }),
            }
        }

        let mut hosts: HashMap<String, String> = HashMap::new();
        let mut tenant_routes: HashMap<&str, HashMap<String, Arc<Route>>> = HashMap::new();
        for t in &msg.tenants {
            tenant_routes.insert(t.name.as_str(), HashMap::new());
            for h in &t.hosts {
                let h = h.trim_end_matches('.').to_ascii_lowercase();
                match hosts.get(&h) {
                    Some(other) if *other != t.name => problems.push(SnapshotError::HostConflict {
                        host: h,
                        a: other.clone(),
                        b: t.name.clone(),
                    }),
                    Some(_) => {}
                    None => {
                        hosts.insert(h, t.name.clone());
                    }
                }
            }
        }

        let mut live = HashSet::new();
        for s in &msg.services {
            // Services of tenants the snapshot does not carry are not served.
            let Some(routes) = tenant_routes.get_mut(s.tenant.as_str()) else {
                continue;
            };
            let protocol = match v1::Protocol::try_from(s.protocol) {
                Ok(v1::Protocol::Http) => Protocol::Http,
                _ => Protocol::Grpc,
            };
            let methods = if protocol == Protocol::Grpc && !s.descriptors.is_empty() {
                match pools.get(s.descriptors.as_str()) {
                    Some(pool) => Some(method_table(pool, &s.name)),
                    None => {
                        // Undecodable sets are reported above; a set that is not there at all here.
                        if !msg.descriptors.iter().any(|d| d.key == s.descriptors) {
                            problems.push(SnapshotError::MissingDescriptors {
                                tenant: s.tenant.clone(),
                                service: s.name.clone(),
                                key: s.descriptors.clone(),
                            });
                        }
                        None
                    }
                }
            } else {
                None
            };
            let mut ready = Vec::new();
            let mut terminating = Vec::new();
            for e in &s.endpoints {
                live.insert(e.address.clone());
                let up = upstreams.get(&e.address);
                if e.terminating {
                    terminating.push(up);
                } else {
                    ready.push(up);
                }
            }
            routes.insert(
                s.name.clone(),
                Arc::new(Route {
                    tenant: s.tenant.clone(),
                    service: s.name.clone(),
                    protocol,
                    endpoints: EndpointSet::new(ready, terminating),
                    methods,
                    metrics: crate::metrics::RouteMetrics::default(),
                    status: s.status.clone(),
                }),
            );
        }
        upstreams.retain(&live);

        let tenants = msg
            .tenants
            .iter()
            .map(|t| {
                let routes = tenant_routes.remove(t.name.as_str()).unwrap_or_default();
                let cors = t.cors.as_ref().map(|c| Cors {
                    allowed_origins: c.allowed_origins.clone(),
                    allowed_headers: c.allowed_headers.clone(),
                    allowed_methods: c.allowed_methods.clone(),
                    allow_credentials: c.allow_credentials,
                });
                (
                    t.name.clone(),
                    Arc::new(Tenant {
                        name: t.name.clone(),
                        cors,
                        routes,
                    }),
                )
            })
            .collect();
        let snapshot = Self {
            version: msg.version,
            source: msg.source.clone(),
            tenants,
            hosts,
        };
        (snapshot, problems)
    }

    /// Number of routes over all tenants.
    pub(crate) fn route_count(&self) -> usize {
        self.tenants.values().map(|t| t.routes.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn pool_bytes() -> Vec<u8> {
        let dir = tempdir();
        std::fs::write(
            dir.join("a.proto"),
            r#"syntax = "proto3";
package helloworld;
service Helloworld { rpc Call(Req) returns (Res); }
message Req { string name = 1; }
message Res { string message = 1; }
"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("b.proto"),
            r#"syntax = "proto3";
package aaa;
service Helloworld { rpc Other(R) returns (R); }
service Extra { rpc Go(R) returns (R); }
message R {}
"#,
        )
        .unwrap();
        let fds = protox::compile(["a.proto", "b.proto"], [dir.as_path()]).unwrap();
        fds.encode_to_vec()
    }

    fn tempdir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("mp-snap-{}-{}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn msg(fds: Vec<u8>) -> v1::Snapshot {
        v1::Snapshot {
            version: 7,
            source: "op-1".into(),
            built_unix_nanos: 1,
            tenants: vec![
                v1::Tenant {
                    name: "micro".into(),
                    hosts: vec!["Api.Example.com".into()],
                    cors: None,
                    ..Default::default()
                },
                v1::Tenant {
                    name: "acme".into(),
                    hosts: vec![],
                    cors: Some(v1::Cors {
                        allowed_origins: vec!["https://acme.dev".into()],
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ],
            services: vec![
                v1::Service {
                    tenant: "micro".into(),
                    name: "helloworld".into(),
                    protocol: v1::Protocol::Grpc as i32,
                    endpoints: vec![
                        v1::Endpoint {
                            address: "10.0.0.1:8080".into(),
                            terminating: false,
                        },
                        v1::Endpoint {
                            address: "10.0.0.2:8080".into(),
                            terminating: true,
                        },
                    ],
                    descriptors: "img".into(),
                    status: None,
                },
                v1::Service {
                    tenant: "micro".into(),
                    name: "web".into(),
                    protocol: v1::Protocol::Http as i32,
                    endpoints: vec![],
                    descriptors: String::new(),
                    status: None,
                },
                v1::Service {
                    tenant: "ghost".into(),
                    name: "x".into(),
                    protocol: 0,
                    endpoints: vec![],
                    descriptors: String::new(),
                    status: None,
                },
            ],
            descriptors: vec![v1::Descriptors {
                key: "img".into(),
                file_descriptor_set: fds,
                services: vec![],
            }],
        }
    }

    #[test]
    fn builds_routes_hosts_and_methods() {
        let ups = Upstreams::default();
        let (s, problems) = Snapshot::build(&msg(pool_bytes()), &ups);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(s.version, 7);
        assert_eq!(s.hosts.get("api.example.com").map(String::as_str), Some("micro"));
        assert_eq!(s.route_count(), 2, "services of unknown tenants are dropped");
        let hw = &s.tenants["micro"].routes["helloworld"];
        assert_eq!(hw.protocol, Protocol::Grpc);
        assert_eq!(hw.endpoints.len(), 1);
        let methods = hw.methods.as_ref().unwrap();
        // The package equal to the service name wins for `Helloworld.Call`; a method only another
        // package's `Helloworld` has is still found.
        assert_eq!(methods["Helloworld.Call"].full_name(), "helloworld.Helloworld.Call");
        assert_eq!(methods["Helloworld.Other"].full_name(), "aaa.Helloworld.Other");
        assert_eq!(methods["Extra.Go"].full_name(), "aaa.Extra.Go");
        assert_eq!(s.tenants["micro"].routes["web"].protocol, Protocol::Http);
        assert!(s.tenants["micro"].routes["web"].methods.is_none());
        assert!(s.tenants["acme"].cors.is_some());
        assert_eq!(ups.len(), 2);
    }

    #[test]
    fn without_the_preferred_package_the_first_full_name_wins() {
        let pool = DescriptorPool::decode(pool_bytes().as_slice()).unwrap();
        let t = method_table(&pool, "other");
        assert_eq!(t["Helloworld.Other"].full_name(), "aaa.Helloworld.Other");
        assert_eq!(t["Helloworld.Call"].full_name(), "helloworld.Helloworld.Call");
        assert_eq!(t.len(), 3);
    }

    /// Issue 20, item 1: what is wrong in one tenant's part is reported and confined to it; the
    /// other tenants' routes are built as usual.
    #[test]
    fn a_broken_part_is_reported_and_stays_in_its_tenant() {
        let ups = Upstreams::default();
        let mut m = msg(b"\xff\xff garbage".to_vec());
        let (s, problems) = Snapshot::build(&m, &ups);
        assert!(
            matches!(problems[..], [SnapshotError::Descriptors { .. }]),
            "{problems:?}"
        );
        assert!(
            s.tenants["micro"].routes["helloworld"].methods.is_none(),
            "undiscovered: 503"
        );
        assert!(s.tenants["micro"].routes.contains_key("web"));

        m = msg(pool_bytes());
        m.services[0].descriptors = "missing".into();
        let (s, problems) = Snapshot::build(&m, &ups);
        assert!(
            matches!(problems[..], [SnapshotError::MissingDescriptors { .. }]),
            "{problems:?}"
        );
        assert!(s.tenants["micro"].routes.contains_key("web"));

        m = msg(pool_bytes());
        m.tenants[1].hosts = vec!["api.example.com".into()];
        let (s, problems) = Snapshot::build(&m, &ups);
        assert!(
            matches!(problems[..], [SnapshotError::HostConflict { .. }]),
            "{problems:?}"
        );
        assert_eq!(s.hosts["api.example.com"], "micro", "the first claim keeps the host");
        assert!(s.tenants["micro"].routes["helloworld"].methods.is_some());
    }
}
