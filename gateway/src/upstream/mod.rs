//! Connections to backends, per endpoint: where a request goes (phase 4's "where to").
//!
//! Every endpoint (`ip:port`, from the EndpointSlices in the snapshot) gets one [`Upstream`] that
//! outlives snapshots, so its pooled connections and its counters survive a routing change.
//! Balancing across pod endpoints, never the Service's ClusterIP, keeps one long-lived HTTP/2
//! connection from pinning all traffic to one pod.
//!
//! - `balance.rs`: the endpoints, a service's [`EndpointSet`] and its balancer (power of two
//!   choices, ejection);
//! - `h1.rs`: an endpoint's pool of kept-alive HTTP/1.1 connections (`Http` services);
//! - `h2.rs`: an endpoint's HTTP/2 connection under tonic (`Grpc` services), and [`NotSent`], the
//!   typed signal that a call never reached the backend.

mod balance;
mod h1;
mod h2;

pub(crate) use balance::{EndpointSet, Picked, Upstream, Upstreams};
pub(crate) use h1::PooledBody;
#[cfg(test)]
pub(crate) use h2::NotSent;
pub(crate) use h2::never_sent;
