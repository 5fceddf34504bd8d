//! Desired children of a MicroService: pure functions from the object (and the Configs it lists)
//! to a Deployment, Service, PodDisruptionBudget and HorizontalPodAutoscaler.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget,
    ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapProjection, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, GRPCAction, KeyToPath,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ProjectedVolumeSource, ResourceRequirements, SeccompProfile,
    SecretProjection, SecurityContext, Service, ServicePort, ServiceSpec, TCPSocketAction, Volume, VolumeMount,
    VolumeProjection,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use microplane_crds::{MicroService, Protocol};

use crate::labels::{SERVICE_LABEL, label_value};
use crate::{Error, Result};

/// Pod-template annotation carrying the hash of `Restart`-mode Configs: a change rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "microplane.dev/config-hash";
/// Where Config documents are mounted: `<dir>/<config>/config.json` and `secrets.json`.
pub const CONFIG_DIR: &str = "/etc/microplane/config";
/// Name of the service container.
pub const CONTAINER: &str = "service";
/// Environment variables the platform sets; user `env` entries with these names are ignored.
pub const PLATFORM_ENV: [&str; 5] = [
    "MICRO_SERVICE_NAME",
    "MICRO_SERVICE_VERSION",
    "MICRO_NAMESPACE",
    "MICRO_SERVICE_ADDRESS",
    "MICRO_CONFIG_DIR",
];
/// UID/GID the service runs as when the image does not say.
const RUN_AS: i64 = 65532;

/// A Config listed by a MicroService, as the MicroService needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedConfig {
    /// Name of the Config (and of its ConfigMap and Secret, see `controller::config`).
    pub name: String,
    /// `rollout: Restart`: its content hash goes into the pod template.
    pub restart: bool,
    /// Its `status.hash`, once the Config controller has delivered it.
    pub hash: Option<String>,
}

/// Everything a MicroService in image mode wants to exist.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    /// The Deployment.
    pub deployment: Deployment,
    /// The Service.
    pub service: Service,
    /// A PodDisruptionBudget when more than one replica runs.
    pub pdb: Option<PodDisruptionBudget>,
    /// An HPA when `autoscaling` is set.
    pub hpa: Option<HorizontalPodAutoscaler>,
}

/// The version a MicroService runs: the image tag (or digest prefix), `latest` when untagged.
pub fn image_version(image: &str) -> String {
    if let Some((_, digest)) = image.split_once('@') {
        let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
        return hex.chars().take(12).collect();
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    last.split_once(':')
        .map_or_else(|| "latest".to_string(), |(_, tag)| tag.to_string())
}

/// The selector of a MicroService's pods.
pub fn selector(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(SERVICE_LABEL.to_string(), name.to_string())])
}

/// The labels of every child.
pub fn labels(name: &str, version: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), name.into()),
        ("app.kubernetes.io/instance".into(), name.into()),
        ("app.kubernetes.io/version".into(), label_value(version)),
        ("app.kubernetes.io/component".into(), "microservice".into()),
        ("app.kubernetes.io/part-of".into(), "microplane".into()),
        ("app.kubernetes.io/managed-by".into(), "microplane-operator".into()),
        (SERVICE_LABEL.into(), name.into()),
    ])
}

fn owner(ms: &MicroService) -> Result<OwnerReference> {
    ms.controller_owner_ref(&())
        .ok_or(Error::Malformed("MicroService without a uid"))
}

fn meta(ms: &MicroService, name: &str, namespace: &str, version: &str) -> Result<ObjectMeta> {
    Ok(ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        labels: Some(labels(name, version)),
        owner_references: Some(vec![owner(ms)?]),
        ..ObjectMeta::default()
    })
}

/// Default compute resources when the MicroService gives none: small requests so the scheduler and
/// quotas can count it, and a memory limit so one service cannot starve a node.
pub fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".into(), Quantity("50m".into())),
            ("memory".into(), Quantity("64Mi".into())),
        ])),
        limits: Some(BTreeMap::from([("memory".into(), Quantity("256Mi".into()))])),
        ..ResourceRequirements::default()
    }
}

/// Probes fitting the protocol: the gRPC health service for `Grpc` (the SDK serves it), a TCP
/// connect for `Http` (no health path is part of the contract). Readiness every second: the
/// kubelet probes once as the container starts (usually before the server listens), so the period
/// is how long a new pod waits for traffic; a second is what a push-to-API platform can afford per
/// pod, and takes a failing pod out of rotation within 3 s. Liveness is slower and more patient.
fn probes(protocol: Protocol, port: i32) -> (Probe, Probe) {
    let base = |period: i32, failure: i32| match protocol {
        Protocol::Grpc => Probe {
            grpc: Some(GRPCAction {
                port,
                service: None,
                mode: None,
            }),
            period_seconds: Some(period),
            failure_threshold: Some(failure),
            timeout_seconds: Some(period.min(2)),
            ..Probe::default()
        },
        Protocol::Http => Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(port),
                host: None,
            }),
            period_seconds: Some(period),
            failure_threshold: Some(failure),
            timeout_seconds: Some(period.min(2)),
            ..Probe::default()
        },
    };
    (base(1, 3), base(10, 3))
}

fn port_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Grpc => "grpc",
        Protocol::Http => "http",
    }
}

/// The desired children of a MicroService with `spec.image`, given the Configs it lists (in
/// `spec.config` order, all present).
pub fn desired(ms: &MicroService, configs: &[ListedConfig]) -> Result<Desired> {
    let image = ms
        .spec
        .image
        .clone()
        .ok_or(Error::Malformed("MicroService without spec.image"))?;
    let version = image_version(&image);
    desired_running(ms, &image, &version, configs)
}

/// The desired children of a MicroService running `image` as `version` (`spec.image` and its tag,
/// or in source mode the built image and its commit).
pub fn desired_running(ms: &MicroService, image: &str, version: &str, configs: &[ListedConfig]) -> Result<Desired> {
    let image = image.to_string();
    let name = ms
        .meta()
        .name
        .clone()
        .ok_or(Error::Malformed("MicroService without a name"))?;
    let namespace = ms
        .meta()
        .namespace
        .clone()
        .ok_or(Error::Malformed("MicroService without a namespace"))?;
    let spec = &ms.spec;

    let mut env = vec![
        env_var("MICRO_SERVICE_NAME", &name),
        env_var("MICRO_SERVICE_VERSION", version),
        env_var("MICRO_NAMESPACE", &namespace),
        env_var("MICRO_SERVICE_ADDRESS", &format!(":{}", spec.port)),
    ];
    let mut mounts = vec![VolumeMount {
        name: "tmp".into(),
        mount_path: "/tmp".into(),
        ..VolumeMount::default()
    }];
    let mut volumes = vec![Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity("64Mi".into())),
            ..Default::default()
        }),
        ..Volume::default()
    }];
    if !configs.is_empty() {
        env.push(env_var("MICRO_CONFIG_DIR", CONFIG_DIR));
        // One projected volume (no subPath) so the kubelet updates the files in place: `Live` rollout.
        let sources = configs
            .iter()
            .flat_map(|c| {
                let object = crate::controller::config::child_name(&c.name);
                [
                    VolumeProjection {
                        config_map: Some(ConfigMapProjection {
                            name: object.clone(),
                            items: Some(vec![KeyToPath {
                                key: crate::controller::config::DOCUMENT_KEY.into(),
                                path: format!("{}/config.json", c.name),
                                mode: None,
                                user: None,
                            }]),
                            optional: Some(false),
                        }),
                        ..VolumeProjection::default()
                    },
                    VolumeProjection {
                        secret: Some(SecretProjection {
                            name: object,
                            items: Some(vec![KeyToPath {
                                key: crate::controller::config::SECRETS_KEY.into(),
                                path: format!("{}/secrets.json", c.name),
                                mode: None,
                                user: None,
                            }]),
                            optional: Some(false),
                        }),
                        ..VolumeProjection::default()
                    },
                ]
            })
            .collect();
        volumes.push(Volume {
            name: "config".into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(sources),
                default_mode: Some(0o440),
                default_user: None,
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    env.extend(
        spec.env
            .iter()
            .filter(|e| !PLATFORM_ENV.contains(&e.name.as_str()))
            .cloned(),
    );

    let restart_hashes: Vec<String> = configs
        .iter()
        .filter(|c| c.restart)
        .map(|c| format!("{}={}", c.name, c.hash.as_deref().unwrap_or("")))
        .collect();
    let template_annotations = (!restart_hashes.is_empty())
        .then(|| BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_string(), restart_hashes.join(","))]));

    let (readiness, liveness) = probes(spec.protocol, spec.port);
    let container = Container {
        name: CONTAINER.into(),
        image: Some(image),
        ports: Some(vec![ContainerPort {
            name: Some(port_name(spec.protocol).into()),
            container_port: spec.port,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        env: Some(env),
        resources: Some(spec.resources.clone().unwrap_or_else(default_resources)),
        readiness_probe: Some(readiness),
        liveness_probe: Some(liveness),
        volume_mounts: Some(mounts),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            seccomp_profile: Some(runtime_default()),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };

    let autoscaled = spec.autoscaling.is_some();
    let deployment = Deployment {
        metadata: meta(ms, &name, &namespace, version)?,
        spec: DeploymentSpec {
            // With autoscaling the HPA owns the replica count; leaving it out of the apply keeps the
            // operator from fighting it.
            replicas: (!autoscaled).then_some(spec.replicas),
            selector: LabelSelector {
                match_labels: Some(selector(&name)),
                match_expressions: None,
            },
            revision_history_limit: Some(5),
            progress_deadline_seconds: Some(300),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::String("25%".into())),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&name, version)),
                    annotations: template_annotations,
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(volumes),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    termination_grace_period_seconds: Some(30),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS),
                        run_as_group: Some(RUN_AS),
                        fs_group: Some(RUN_AS),
                        seccomp_profile: Some(runtime_default()),
                        ..PodSecurityContext::default()
                    }),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        status: None,
    };

    let service = Service {
        metadata: meta(ms, &name, &namespace, version)?,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector(&name)),
            ports: Some(vec![ServicePort {
                name: Some(port_name(spec.protocol).into()),
                port: spec.port,
                target_port: Some(IntOrString::String(port_name(spec.protocol).into())),
                protocol: Some("TCP".into()),
                app_protocol: Some(
                    match spec.protocol {
                        Protocol::Grpc => "kubernetes.io/h2c",
                        Protocol::Http => "http",
                    }
                    .into(),
                ),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    };

    let min_replicas = spec
        .autoscaling
        .as_ref()
        .map_or(spec.replicas, |a| a.min_replicas.unwrap_or(1));
    // A budget only makes sense when a voluntary eviction can leave another pod serving.
    let pdb = (min_replicas > 1)
        .then(|| -> Result<PodDisruptionBudget> {
            Ok(PodDisruptionBudget {
                metadata: meta(ms, &name, &namespace, version)?,
                spec: Some(PodDisruptionBudgetSpec {
                    max_unavailable: Some(IntOrString::Int(1)),
                    selector: Some(LabelSelector {
                        match_labels: Some(selector(&name)),
                        match_expressions: None,
                    }),
                    ..PodDisruptionBudgetSpec::default()
                }),
                status: None,
            })
        })
        .transpose()?;

    let hpa = spec
        .autoscaling
        .as_ref()
        .map(|a| -> Result<HorizontalPodAutoscaler> {
            Ok(HorizontalPodAutoscaler {
                metadata: meta(ms, &name, &namespace, version)?,
                spec: HorizontalPodAutoscalerSpec {
                    scale_target_ref: CrossVersionObjectReference {
                        api_version: Some("apps/v1".into()),
                        kind: "Deployment".into(),
                        name: name.clone(),
                    },
                    min_replicas: Some(a.min_replicas.unwrap_or(1)),
                    max_replicas: a.max_replicas,
                    metrics: Some(vec![MetricSpec {
                        type_: "Resource".into(),
                        resource: Some(ResourceMetricSource {
                            name: "cpu".into(),
                            target: MetricTarget {
                                type_: "Utilization".into(),
                                average_utilization: Some(a.target_cpu_utilization_percentage.unwrap_or(80)),
                                ..MetricTarget::default()
                            },
                        }),
                        ..MetricSpec::default()
                    }]),
                    behavior: None,
                },
                status: None,
            })
        })
        .transpose()?;

    Ok(Desired {
        deployment,
        service,
        pdb,
        hpa,
    })
}

fn env_var(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    }
}
