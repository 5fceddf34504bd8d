//! An endpoint `Svc.Method` → the gRPC method.

use prost_reflect::{DescriptorPool, MethodDescriptor};

/// Finds the gRPC method for the endpoint `service_simple.method` (docs/gateway.md).
///
/// The candidates are the services of `pool` whose simple name (without package) is
/// `service_simple` and that have a method named exactly `method` (case-sensitive, as in the proto;
/// the path resolver has already camel-cased it). gRPC's own services (`grpc.health.v1.*`,
/// `grpc.reflection.*`) are never candidates. Among the candidates, the one whose package equals
/// `prefer_package` (the Micro service name, compared exactly) wins; if there is none, the one with
/// the lexicographically smallest full name, so the choice does not depend on the order in which
/// descriptors were loaded.
pub fn find_method(
    pool: &DescriptorPool,
    service_simple: &str,
    method: &str,
    prefer_package: &str,
) -> Option<MethodDescriptor> {
    let mut best: Option<MethodDescriptor> = None;
    for service in pool.services() {
        let package = service.package_name();
        if service.name() != service_simple
            || package == "grpc.health.v1"
            || package == "grpc.reflection"
            || package.starts_with("grpc.reflection.")
        {
            continue;
        }
        let Some(found) = service.methods().find(|candidate| candidate.name() == method) else {
            continue;
        };
        if package == prefer_package {
            return Some(found);
        }
        if best
            .as_ref()
            .is_none_or(|best| service.full_name() < best.parent_service().full_name())
        {
            best = Some(found);
        }
    }
    best
}
