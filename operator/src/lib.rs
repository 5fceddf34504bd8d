//! The Microplane operator: kube-runtime controllers for MicroService, Namespace (tenant), Config and
//! AuthRule, an admin server (health, readiness, metrics) and leader election on a Lease.
//!
//! Each controller follows `dereference → validate → build → apply → update_status`; the build and
//! status steps are pure functions (`controller::*::build`, `controller::microservice::status`).

pub mod admin;
pub mod conditions;
pub mod context;
pub mod controller;
mod error;
pub mod leader;
pub mod metrics;
pub mod source;
pub mod sync;

pub use error::{Error, Result};
