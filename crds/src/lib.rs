//! The `microplane.dev/v1alpha1` API.
//!
//! Four kinds describe what a tenant wants (see `docs/api.md`):
//! [`MicroService`], [`Namespace`] (a tenant), [`Config`] and [`AuthRule`]. Validation that can be
//! decided from one object lives in the schema (types, ranges, enums) and in CEL rules, so bad
//! objects are rejected at apply time with a message a user can act on.
//!
//! This crate re-exports the pinned `kube`, `k8s-openapi` and `schemars` so every crate of the
//! workspace agrees on them.

pub use k8s_openapi;
pub use kube;
pub use schemars;

mod authrule;
mod conditions;
mod config;
mod duration;
pub mod generate;
mod microservice;
mod namespace;

pub use authrule::*;
pub use conditions::*;
pub use config::*;
pub use duration::{Duration, DurationError};
pub use microservice::*;
pub use namespace::*;

/// The API group of every Microplane kind.
pub const GROUP: &str = "microplane.dev";
/// The API version served and stored.
pub const VERSION: &str = "v1alpha1";
