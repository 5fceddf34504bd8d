//! The Microplane edge gateway (docs/gateway.md, docs/gateway.md#errors).
//!
//! A request goes through the documented phases ([`phases`], [`state::Gateway::handle`]) with one
//! per-request context:
//!
//! 1. tenant ([`resolve`], [`auth`]): the caller's token is verified and the tenant chosen
//!    (`Micro-Namespace` header, a tenant's host, the issuer of the token, the default);
//! 2. route ([`resolve`]): an `Http` service owns every path under its name, otherwise Micro's
//!    path resolver gives (service, endpoint);
//! 3. auth ([`auth`]): the tenant's rules decide; identity headers are set by the gateway alone;
//! 4. transcode for `Grpc` services: the request message ([`decode`], [`transcode`]), the call with
//!    its retry policy ([`call`]) over an endpoint chosen in [`upstream`], the answer as JSON or a
//!    stream ([`stream`]); or [`proxy`] for `Http` services;
//! 5. respond: errors in the JSON of docs/gateway.md#errors ([`error`], [`response`]), [`cors`]
//!    headers, metrics and access log.
//!
//! Everything a request reads comes from the [`routing`] state: an immutable routing [`snapshot`]
//! swapped atomically by the [`sync`] client; nothing on the request path calls Kubernetes. The
//! [`server`] accepts connections and drains them on shutdown.

#![warn(unreachable_pub)]

pub mod auth;
pub(crate) mod body;
pub(crate) mod call;
pub(crate) mod cors;
pub mod dashboard;
pub(crate) mod decode;
pub mod error;
pub mod health;
pub mod metrics;
pub(crate) mod openapi;
pub(crate) mod peer;
pub(crate) mod phases;
pub(crate) mod proxy;
pub mod resolve;
pub(crate) mod response;
pub(crate) mod routing;
pub mod server;
pub(crate) mod snapshot;
pub mod state;
pub(crate) mod stream;
pub mod sync;
pub mod transcode;
pub(crate) mod upstream;
