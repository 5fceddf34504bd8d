//! The dev/e2e node agent: a Node whose pods are processes of this workspace's binaries.
//!
//! Without a container runtime on these machines, this agent plays the kubelet for the local
//! environment: it registers a Node and keeps its Lease, runs each pod bound to it as a process
//! (`localhost/microplane/<name>:<tag>` → `target/debug/<name>`) inside the environment's network
//! namespace with the pod's own address, runs readiness and liveness probes for real, restarts by
//! `restartPolicy`, reports phase, conditions, container states and restart counts, and stops the
//! process when the pod is deleted. Pods of the operator's build Jobs it performs itself: it clones
//! the commit and builds it with cargo or go into a content-addressed image store, from which the
//! Deployment's pods then run (see [`build`]). Everything else — scheduling, EndpointSlices, the operator —
//! is the real Kubernetes path. See docs/development.md.

pub mod build;
pub mod images;
pub mod net;
pub mod node;
pub mod pods;
pub mod probes;
pub mod store;
pub mod volumes;
