//! What Microplane's parts say to each other, in one place so the gateway and the services cannot
//! drift apart:
//!
//! - [`sync`]: the operator → gateway routing sync protocol (docs/gateway.md), generated messages and
//!   the tonic client and server of `microplane.sync.v1.RoutingSync`;
//! - [`error`]: the Micro error JSON (`{"id","code","detail","status"}`, docs/gateway.md#errors) and
//!   the table between HTTP codes and gRPC codes;
//! - [`headers`]: the headers (and gRPC metadata keys) carrying the caller the gateway verified
//!   (docs/auth.md).

pub mod error;
pub mod headers;
pub mod sync;
