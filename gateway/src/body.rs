//! The body types of the data path: every response the gateway writes, and every request it sends
//! to an `Http` backend, has a [`BoxBody`].

use bytes::Bytes;
use http_body_util::BodyExt;

/// Boxed errors of response bodies.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every response.
pub(crate) type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// An empty body.
pub(crate) fn empty_body() -> BoxBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body from bytes.
pub(crate) fn full(b: impl Into<Bytes>) -> BoxBody {
    http_body_util::Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}
