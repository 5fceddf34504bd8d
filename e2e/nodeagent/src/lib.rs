//! The dev/e2e build node: a Node that performs the operator's build pods itself and nothing else.
//!
//! Every other pod of the local environment runs as a container on its real node (kubelet,
//! containerd, runc; `e2e/scripts/node-up.sh`). The operator's builds cannot yet: their builder
//! image (rootless BuildKit) is the BuildKit build issue, still open. Until then this agent
//! registers a second Node, `microplane-builder`, labelled and tainted `microplane.dev/builder=dev`
//! so that only build pods (which the operator gives that node selector and toleration) land on it,
//! keeps its Lease and Ready condition fresh, and performs each build pod as its containers would:
//! it clones the commit, builds a static executable with cargo or go, packages it as an OCI image
//! and pushes it to the in-cluster registry, reporting the manifest digest as the build container's
//! termination message (see [`build`]). The operator then rolls out
//! `localhost:5000/<tenant>/<service>@<digest>`, which the real node pulls and runs. A pod that is
//! not a build is refused (phase Failed, reason `NotABuildPod`). See docs/development.md.
//!
//! When the builder image exists, build pods run on the real node and this crate goes.

pub mod build;
pub mod node;
pub mod pods;
