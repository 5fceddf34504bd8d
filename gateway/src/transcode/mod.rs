//! HTTP/JSON ↔ protobuf for `Grpc` services (docs/gateway.md), one concept per file:
//!
//! The gateway knows a backend's messages only through descriptors (from gRPC server reflection),
//! so everything here works on [`prost_reflect::DynamicMessage`]:
//!
//! - [`find_method`] maps an endpoint `Svc.Method` to a gRPC method;
//! - [`request_from_json`] (a JSON body) and [`request_from_params`] (query parameters, form fields)
//!   build the request message;
//! - [`DynamicCodec`] carries dynamic messages over tonic;
//! - [`response_to_json`] writes the response message as JSON.
//!
//! Request errors are [`TranscodeError`]s that name the field, and become 400s ([`GatewayError`]).
//!
//! | file | |
//! |---|---|
//! | `method.rs` | endpoint → gRPC method |
//! | `json.rs` | JSON body → request message |
//! | `params.rs` | query parameters / form fields → request message |
//! | `diagnose.rs` | which field a refused JSON value belongs to (error path only) |
//! | `response.rs` | response message → JSON |
//! | `codec.rs` | the tonic codec for dynamic messages |
//! | `error.rs` | [`TranscodeError`] |

mod codec;
mod diagnose;
mod error;
mod json;
mod method;
mod params;
mod response;

use prost_reflect::DeserializeOptions;

pub use codec::{BytesEncoder, DynamicCodec, DynamicDecoder, DynamicEncoder, EncodedRequestCodec};
pub use error::TranscodeError;
pub use json::request_from_json;
pub use method::find_method;
pub use params::{MAX_PARAM_DEPTH, request_from_params};
pub use response::response_to_json;

/// Deserialization per the proto3 JSON mapping, unknown fields (and unknown enum names) refused.
const DESERIALIZE: DeserializeOptions = DeserializeOptions::new().deny_unknown_fields(true);
