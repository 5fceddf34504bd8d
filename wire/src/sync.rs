//! The operator → gateway routing sync protocol (docs/gateway.md): generated messages and the tonic
//! client and server of `microplane.sync.v1.RoutingSync`.

/// `microplane.sync.v1`.
#[allow(missing_docs, clippy::doc_markdown)]
pub mod v1 {
    tonic::include_proto!("microplane.sync.v1");
}

/// Metadata key carrying the shared sync token (`Bearer <token>`).
pub const AUTHORIZATION: &str = "authorization";
