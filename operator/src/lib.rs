//! The Microplane operator: kube-runtime controllers for MicroService, Namespace (tenant), Config and
//! AuthRule, an admin server (health, readiness, metrics) and leader election on a Lease.
//!
//! Each controller follows `dereference → validate → build → apply → update_status`; the build and
//! status steps are pure functions (`controller::*::build`, `controller::microservice::status`).
//!
//! Items are `pub(crate)` unless the binary, the tests or the e2e crate use them
//! (`unreachable_pub` says so).

#![warn(unreachable_pub)]

pub mod admin;
pub mod conditions;
pub mod context;
pub mod controller;
pub mod discovery;
mod error;
pub mod issuer;
pub mod labels;
pub mod leader;
pub mod metrics;
pub mod publish;
pub(crate) mod snapshot;
pub mod source;

pub use error::{Error, Result};
