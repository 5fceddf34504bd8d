//! Server-streaming rpcs over HTTP: newline-delimited JSON, or server-sent events for clients that
//! accept `text/event-stream` (docs/gateway.md).

use bytes::Bytes;
use http::Response;
use http::header::{self, HeaderMap, HeaderValue};
use http_body_util::BodyExt;
use prost_reflect::DynamicMessage;

use crate::body::{BoxBody, BoxError};
use crate::error::GatewayError;
use crate::transcode;

/// Whether the client asks for server-sent events.
pub(crate) fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}

/// One streamed item: `data: <json>\n\n` for server-sent events, `<json>\n` otherwise.
fn frame(json: &[u8], sse: bool) -> Bytes {
    if sse {
        let mut b = Vec::with_capacity(json.len() + 8);
        b.extend_from_slice(b"data: ");
        b.extend_from_slice(json);
        b.extend_from_slice(b"\n\n");
        Bytes::from(b)
    } else {
        let mut b = Vec::with_capacity(json.len() + 1);
        b.extend_from_slice(json);
        b.push(b'\n');
        Bytes::from(b)
    }
}

/// A server-streaming rpc as newline-delimited JSON (`application/x-ndjson`), or as server-sent
/// events when the client accepts `text/event-stream`. An error after the first message ends the
/// stream with one more item: the docs/gateway.md#errors error object.
pub(crate) fn stream_response(stream: tonic::Streaming<DynamicMessage>, sse: bool) -> Response<BoxBody> {
    use futures::StreamExt;
    let body = stream
        .scan(false, move |done, item| {
            if *done {
                return futures::future::ready(None);
            }
            let out = match item {
                Ok(msg) => match transcode::response_to_json(&msg) {
                    Ok(json) => frame(&json, sse),
                    Err(e) => {
                        *done = true;
                        frame(&GatewayError::from(e).body(), sse)
                    }
                },
                Err(status) => {
                    *done = true;
                    frame(&GatewayError::from_grpc_status(&status).body(), sse)
                }
            };
            futures::future::ready(Some(Ok::<_, BoxError>(hyper::body::Frame::data(out))))
        })
        .boxed();
    let mut r = Response::new(http_body_util::StreamBody::new(body).boxed_unsync());
    let ct = if sse {
        "text/event-stream"
    } else {
        "application/x-ndjson"
    };
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_stream_negotiation() {
        let mut h = HeaderMap::new();
        assert!(!accepts_event_stream(&h));
        h.insert(header::ACCEPT, HeaderValue::from_static("text/event-stream"));
        assert!(accepts_event_stream(&h));
    }

    #[test]
    fn items_are_lines_or_events() {
        assert_eq!(frame(br#"{"a":1}"#, false), Bytes::from_static(b"{\"a\":1}\n"));
        assert_eq!(frame(br#"{"a":1}"#, true), Bytes::from_static(b"data: {\"a\":1}\n\n"));
        assert_eq!(frame(b"", false), Bytes::from_static(b"\n"));
    }
}
