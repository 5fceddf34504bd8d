//! The Microplane edge gateway (docs/gateway.md, docs/gateway.md#errors).
//!
//! A request goes through documented phases ([`server::Gateway::handle`]) with one per-request
//! context:
//!
//! 1. [`resolve`]: the tenant (`Micro-Namespace` header, a tenant's host, the default) and the route:
//!    an `Http` service owns every path under its name, otherwise Micro's path resolver gives
//!    (service, endpoint);
//! 2. [`auth`]: client-sent identity is removed (token verification and AuthRules are the auth work);
//! 3. [`transcode`] for `Grpc` services (JSON/query/form → protobuf → gRPC → JSON) over an endpoint
//!    chosen by [`balance`], or [`proxy`] for `Http` services;
//! 4. respond: errors in the JSON of docs/gateway.md#errors ([`error`]), [`cors`] headers, metrics and access log.
//!
//! Everything a request reads comes from an immutable routing [`snapshot`] swapped atomically by
//! the [`sync`] client; nothing on the request path calls Kubernetes.

pub mod admin;
pub mod auth;
pub mod balance;
pub mod cors;
pub mod error;
pub mod grpc;
pub mod health;
pub mod metrics;
pub mod proxy;
pub mod resolve;
pub mod server;
pub mod snapshot;
pub mod sync;
pub mod transcode;
