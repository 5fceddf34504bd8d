//! Readiness and liveness probes, run for real against the pod's address: gRPC health, TCP connect,
//! HTTP GET. `exec` probes cannot run here and count as failures, with a log line.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::Probe;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Resolves a probe port (number, or the name of a container port).
fn port(p: &IntOrString, ports: &[(String, i32)]) -> Option<u16> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => ports
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, p)| u16::try_from(*p).ok()),
    }
}

/// Runs a probe once; true when it passed.
pub async fn check(probe: &Probe, ip: Ipv4Addr, ports: &[(String, i32)]) -> bool {
    let timeout = Duration::from_secs(u64::try_from(probe.timeout_seconds.unwrap_or(1).max(1)).unwrap_or(1));
    let attempt = async {
        if let Some(g) = &probe.grpc {
            let port = u16::try_from(g.port).ok()?;
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{ip}:{port}"))
                .ok()?
                .connect()
                .await
                .ok()?;
            let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
            let req = tonic_health::pb::HealthCheckRequest {
                service: g.service.clone().unwrap_or_default(),
            };
            let status = client.check(req).await.ok()?.into_inner().status;
            return Some(status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
        }
        if let Some(t) = &probe.tcp_socket {
            let port = port(&t.port, ports)?;
            return Some(TcpStream::connect(SocketAddr::from((ip, port))).await.is_ok());
        }
        if let Some(h) = &probe.http_get {
            let port = port(&h.port, ports)?;
            let mut s = TcpStream::connect(SocketAddr::from((ip, port))).await.ok()?;
            let path = h.path.as_deref().unwrap_or("/");
            s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {ip}:{port}\r\n\r\n").as_bytes())
                .await
                .ok()?;
            let mut head = [0u8; 16];
            let n = s.read(&mut head).await.ok()?;
            let code: u16 = std::str::from_utf8(&head[..n])
                .ok()?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            return Some((200..400).contains(&code));
        }
        tracing::warn!("exec probes cannot run on the dev node agent; counted as failing");
        Some(false)
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}
