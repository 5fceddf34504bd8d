//! Descriptor discovery through gRPC server reflection (`grpc.reflection.v1`): the services a backend
//! serves, their files and every file they depend on, as one `FileDescriptorSet`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use prost::Message;
use prost_types::{FileDescriptorProto, FileDescriptorSet};
use tokio::sync::mpsc;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

/// What a backend serves.
#[derive(Clone, Debug, PartialEq)]
pub struct Discovered {
    /// The encoded `FileDescriptorSet`.
    pub file_descriptor_set: Vec<u8>,
    /// Full names of the services, other than health and reflection.
    pub services: Vec<String>,
    /// Micro endpoints, `Svc.Method`, sorted.
    pub endpoints: Vec<String>,
}

/// Why discovery failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReflectionError {
    /// The backend could not be reached or the stream broke.
    #[error("reflection call to {0} failed: {1}")]
    Call(String, String),
    /// It answered with an error or something unexpected.
    #[error("reflection at {0}: {1}")]
    Protocol(String, String),
    /// The files do not form a consistent set.
    #[error("descriptors from {0} are inconsistent: {1}")]
    Invalid(String, String),
    /// No answer in time.
    #[error("reflection at {0} did not answer within {1:?}")]
    Timeout(String, Duration),
}

impl ReflectionError {
    /// What failed, without the pod's address: the text of a MicroService's `Routed` condition.
    /// Descriptors are shared by every MicroService running the same image, and the pod asked may
    /// be another one's (another tenant's, even), whose address is not this MicroService's to see;
    /// and an address that changes with each attempt would rewrite every such status on each
    /// retry. The operator's log has the address.
    pub fn summary(&self) -> String {
        match self {
            Self::Call(_, e) => format!("calling a ready pod failed: {e}"),
            Self::Protocol(_, e) => format!("a ready pod answered: {e}"),
            Self::Invalid(_, e) => format!("the descriptors are inconsistent: {e}"),
            Self::Timeout(_, t) => format!("a ready pod did not answer within {t:?}"),
        }
    }
}

/// Services every SDK server carries that are never routed.
pub fn infrastructure(service: &str) -> bool {
    service.starts_with("grpc.reflection.") || service.starts_with("grpc.health.")
}

/// Asks the backend at `address` (`ip:port`) for its services and descriptors.
pub async fn discover(address: &str, timeout: Duration) -> Result<Discovered, ReflectionError> {
    match tokio::time::timeout(timeout, discover_inner(address)).await {
        Ok(r) => r,
        Err(_) => Err(ReflectionError::Timeout(address.to_string(), timeout)),
    }
}

async fn discover_inner(address: &str) -> Result<Discovered, ReflectionError> {
    let call = |e: &dyn std::fmt::Display| ReflectionError::Call(address.to_string(), e.to_string());
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| call(&e))?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| call(&e))?;
    let mut client = ServerReflectionClient::new(channel).max_decoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel::<ServerReflectionRequest>(4);
    let mut responses = client
        .server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|e| call(&e))?
        .into_inner();
    let mut ask = async |req: MessageRequest| -> Result<ServerReflectionResponse, ReflectionError> {
        tx.send(ServerReflectionRequest {
            host: String::new(),
            message_request: Some(req),
        })
        .await
        .map_err(|e| call(&e))?;
        responses
            .message()
            .await
            .map_err(|e| call(&e))?
            .ok_or_else(|| ReflectionError::Protocol(address.to_string(), "stream ended early".into()))
    };

    let listed = ask(MessageRequest::ListServices(String::new())).await?;
    let services: Vec<String> = match listed.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => l
            .service
            .into_iter()
            .map(|s| s.name)
            .filter(|n| !infrastructure(n))
            .collect(),
        other => return Err(protocol(address, other)),
    };
    let mut files: BTreeMap<String, FileDescriptorProto> = BTreeMap::new();
    for svc in &services {
        let r = ask(MessageRequest::FileContainingSymbol(svc.clone())).await?;
        add_files(address, r, &mut files)?;
    }
    // Dependencies the answers did not carry (servers usually send them all).
    let mut missing: BTreeSet<String> = missing_deps(&files);
    let mut rounds = 0;
    while let Some(name) = missing.pop_first() {
        rounds += 1;
        if rounds > 512 {
            return Err(ReflectionError::Invalid(address.to_string(), "too many files".into()));
        }
        let r = ask(MessageRequest::FileByFilename(name)).await?;
        add_files(address, r, &mut files)?;
        missing = missing_deps(&files);
    }
    assemble(address, services, files)
}

fn protocol(address: &str, got: Option<MessageResponse>) -> ReflectionError {
    let what = match got {
        Some(MessageResponse::ErrorResponse(e)) => format!("error {}: {}", e.error_code, e.error_message),
        Some(_) => "unexpected response".to_string(),
        None => "empty response".to_string(),
    };
    ReflectionError::Protocol(address.to_string(), what)
}

fn add_files(
    address: &str,
    r: ServerReflectionResponse,
    files: &mut BTreeMap<String, FileDescriptorProto>,
) -> Result<(), ReflectionError> {
    match r.message_response {
        Some(MessageResponse::FileDescriptorResponse(f)) => {
            for raw in f.file_descriptor_proto {
                let fd = FileDescriptorProto::decode(raw.as_slice())
                    .map_err(|e| ReflectionError::Invalid(address.to_string(), e.to_string()))?;
                files.insert(fd.name().to_string(), fd);
            }
            Ok(())
        }
        other => Err(protocol(address, other)),
    }
}

fn missing_deps(files: &BTreeMap<String, FileDescriptorProto>) -> BTreeSet<String> {
    files
        .values()
        .flat_map(|f| f.dependency.iter())
        .filter(|d| !files.contains_key(*d))
        .cloned()
        .collect()
}

/// Orders the files dependencies first, checks that they form a consistent pool, and lists the
/// Micro endpoints. Pure, for tests.
pub fn assemble(
    address: &str,
    mut services: Vec<String>,
    files: BTreeMap<String, FileDescriptorProto>,
) -> Result<Discovered, ReflectionError> {
    let mut ordered: Vec<FileDescriptorProto> = Vec::with_capacity(files.len());
    let mut done: BTreeSet<String> = BTreeSet::new();
    fn visit(
        name: &str,
        files: &BTreeMap<String, FileDescriptorProto>,
        done: &mut BTreeSet<String>,
        out: &mut Vec<FileDescriptorProto>,
        depth: usize,
    ) {
        if depth > 256 || done.contains(name) {
            return;
        }
        let Some(f) = files.get(name) else { return };
        done.insert(name.to_string());
        for d in &f.dependency {
            visit(d, files, done, out, depth + 1);
        }
        out.push(f.clone());
    }
    for name in files.keys() {
        visit(name, &files, &mut done, &mut ordered, 0);
    }
    let set = FileDescriptorSet { file: ordered };
    let bytes = set.encode_to_vec();
    let pool = prost_reflect::DescriptorPool::decode(bytes.as_slice())
        .map_err(|e| ReflectionError::Invalid(address.to_string(), e.to_string()))?;
    services.sort();
    services.dedup();
    let mut endpoints = Vec::new();
    for svc in &services {
        let desc = pool.get_service_by_name(svc).ok_or_else(|| {
            ReflectionError::Invalid(
                address.to_string(),
                format!("service {svc} is listed but not described"),
            )
        })?;
        endpoints.extend(desc.methods().map(|m| format!("{}.{}", desc.name(), m.name())));
    }
    endpoints.sort();
    endpoints.dedup();
    Ok(Discovered {
        file_descriptor_set: bytes,
        services,
        endpoints,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::{MethodDescriptorProto, ServiceDescriptorProto};

    fn file(name: &str, package: &str, deps: &[&str], services: &[(&str, &[&str])]) -> FileDescriptorProto {
        FileDescriptorProto {
            name: Some(name.into()),
            package: Some(package.into()),
            dependency: deps.iter().map(|d| d.to_string()).collect(),
            message_type: vec![prost_types::DescriptorProto {
                name: Some("M".into()),
                ..Default::default()
            }],
            service: services
                .iter()
                .map(|(s, methods)| ServiceDescriptorProto {
                    name: Some(s.to_string()),
                    method: methods
                        .iter()
                        .map(|m| MethodDescriptorProto {
                            name: Some(m.to_string()),
                            input_type: Some(format!(".{package}.M")),
                            output_type: Some(format!(".{package}.M")),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
            syntax: Some("proto3".into()),
            ..Default::default()
        }
    }

    #[test]
    fn assembles_dependencies_first_and_lists_endpoints() {
        let mut files = BTreeMap::new();
        // "a.proto" sorts before its dependency "z.proto": the set must still list z first.
        files.insert(
            "a.proto".into(),
            file(
                "a.proto",
                "helloworld",
                &["z.proto"],
                &[("Helloworld", &["Stream", "Call"])],
            ),
        );
        files.insert("z.proto".into(), file("z.proto", "common", &[], &[]));
        let d = assemble("x", vec!["helloworld.Helloworld".into()], files).unwrap();
        assert_eq!(d.endpoints, vec!["Helloworld.Call", "Helloworld.Stream"]);
        let set = FileDescriptorSet::decode(d.file_descriptor_set.as_slice()).unwrap();
        let names: Vec<_> = set.file.iter().map(|f| f.name().to_string()).collect();
        assert_eq!(names, vec!["z.proto", "a.proto"]);
    }

    #[test]
    fn refuses_inconsistent_sets() {
        let mut files = BTreeMap::new();
        files.insert(
            "a.proto".into(),
            file("a.proto", "p", &["gone.proto"], &[("S", &["M"])]),
        );
        assert!(matches!(
            assemble("x", vec!["p.S".into()], files.clone()),
            Err(ReflectionError::Invalid(..))
        ));
        files.insert("gone.proto".into(), file("gone.proto", "q", &[], &[]));
        assert!(matches!(
            assemble("x", vec!["p.Missing".into()], files),
            Err(ReflectionError::Invalid(..))
        ));
    }

    #[test]
    fn infrastructure_services_are_not_endpoints() {
        assert!(infrastructure("grpc.reflection.v1.ServerReflection"));
        assert!(infrastructure("grpc.health.v1.Health"));
        assert!(!infrastructure("helloworld.Helloworld"));
    }
}
