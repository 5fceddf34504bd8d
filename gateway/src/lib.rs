//! The Microplane edge gateway (SPEC §6, §7).
//!
//! A request goes through documented phases, each a module, with one per-request context:
//!
//! 1. [`resolve`]: tenant (header, host, default) and path → (service, endpoint);
//! 2. auth (filled by the auth work; today every route is open);
//! 3. [`transcode`] for `Grpc` services (JSON/query/form → protobuf → gRPC → JSON), or [`proxy`]
//!    for `Http` services;
//! 4. respond, with errors in the JSON of SPEC §7 ([`error`]).
//!
//! Everything a request reads comes from an immutable routing [`snapshot`] swapped atomically by
//! the [`sync`] client; nothing on the request path calls Kubernetes.

pub mod error;
pub mod transcode;
