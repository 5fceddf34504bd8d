//! Request decoding for `Grpc` services (docs/gateway.md, "Request and response mapping"): which
//! part of the HTTP request becomes the request message, and the message built from it.
//!
//! The decision is the pure [`source`] (method, content type, whether the body is blank or starts
//! like a JSON object, whether there is a query); [`request_message`] reads the body within the
//! size limit and builds the message from the chosen source.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap};
use http::{Method, Request};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::GatewayError;
use crate::transcode;

/// Where the request message comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// The query parameters.
    Query,
    /// The body, as JSON.
    Json,
    /// The body, as form fields.
    Form,
}

/// Whether requests of `method` carry the message in their body: `GET`/`HEAD` do not (the query
/// does), `POST`/`PUT`/`PATCH`/`DELETE` do; any other method is refused (405).
pub(crate) fn has_body(method: &Method) -> Result<bool, GatewayError> {
    match *method {
        Method::GET | Method::HEAD => Ok(false),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE => Ok(true),
        ref m => Err(GatewayError::method_not_allowed(format!("method {m} is not served"))),
    }
}

/// The media type of the `Content-Type` header, lower-cased and without parameters (`""` without
/// one).
pub(crate) fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Where the message of a request with a body comes from, given its media type (see [`media_type`]),
/// its body and whether it has a query:
///
/// - a blank body with a query: the query;
/// - `application/json`, `application/grpc+json`, `text/json` or none: JSON;
/// - `application/x-www-form-urlencoded`: the form, unless the body's first non-blank byte is `{`
///   (`curl -d '{"name":"John"}'` labels JSON as a form): then JSON;
/// - anything else: 415.
pub(crate) fn source(media_type: &str, body: &[u8], has_query: bool) -> Result<Source, GatewayError> {
    if has_query && body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Source::Query);
    }
    let looks_json = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    match media_type {
        "application/x-www-form-urlencoded" if looks_json => Ok(Source::Json),
        "" | "application/json" | "application/grpc+json" | "text/json" => Ok(Source::Json),
        "application/x-www-form-urlencoded" => Ok(Source::Form),
        other => Err(GatewayError::unsupported_media_type(format!(
            "content type {other} is not served; send application/json or a form"
        ))),
    }
}

/// The memory all request bodies being read may take together: each body takes its bytes from it
/// as they arrive and gives them back when its request is done. A body that finds it spent is
/// refused at once with 503 (a slow sender never makes others wait): per-request limits alone let
/// a client with many connections, or 100 HTTP/2 streams on each, hold `max_body_bytes` on every one
/// of them (issue 20, `make bench-gateway` part (g)).
///
/// An eighth of it is kept for small bodies (a `Content-Length` of at most [`SMALL_BODY`]), which
/// take from it first: clients sending large bodies, however many, cannot starve ordinary calls.
#[derive(Debug)]
pub(crate) struct BodyBudget {
    /// Bytes any body may take.
    shared: Arc<Semaphore>,
    /// Bytes only small bodies may take.
    small: Arc<Semaphore>,
    total: usize,
}

/// The largest body that counts as small for [`BodyBudget`]'s reserve: 64 KiB.
pub(crate) const SMALL_BODY: usize = 64 << 10;

/// Bytes a request holds of the [`BodyBudget`]; given back when dropped.
#[derive(Debug, Default)]
pub(crate) struct Held {
    shared: Option<OwnedSemaphorePermit>,
    small: Option<OwnedSemaphorePermit>,
}

impl BodyBudget {
    /// A budget of `total` bytes.
    pub(crate) fn new(total: usize) -> Self {
        let total = total.clamp(8, Semaphore::MAX_PERMITS);
        let small = total / 8;
        Self {
            shared: Arc::new(Semaphore::new(total - small)),
            small: Arc::new(Semaphore::new(small)),
            total,
        }
    }

    /// Takes `n` more bytes for `held` (`small`: for a body declared small, from the reserve
    /// first), or refuses (503) when the budget has not that many left.
    fn take(&self, held: &mut Held, n: usize, small: bool) -> Result<(), GatewayError> {
        let refused = || {
            GatewayError::unavailable(format!(
                "the gateway is holding {} MiB of request bodies, its limit: try again shortly",
                self.total >> 20
            ))
        };
        let n = u32::try_from(n).map_err(|_| refused())?;
        let reserved = small
            .then(|| self.small.clone().try_acquire_many_owned(n).ok())
            .flatten();
        let (slot, permit) = match reserved {
            Some(p) => (&mut held.small, p),
            None => (
                &mut held.shared,
                self.shared.clone().try_acquire_many_owned(n).map_err(|_| refused())?,
            ),
        };
        match slot {
            Some(h) => h.merge(permit),
            None => *slot = Some(permit),
        }
        Ok(())
    }

    /// Bytes free now, for any body and for small ones.
    #[cfg(test)]
    fn available(&self) -> (usize, usize) {
        (self.shared.available_permits(), self.small.available_permits())
    }
}

/// Builds the request message of type `input`: `GET`/`HEAD` from the query, others from the body
/// (JSON, or a form; see [`source`]), read up to `max_body_bytes` (→ 413) within `budget` (→ 503).
/// The body's bytes stay taken from the budget until the returned [`Held`] is dropped: keep it for
/// as long as the request's message (and what is encoded from it) lives.
pub(crate) async fn request_message(
    req: Request<Incoming>,
    input: &MessageDescriptor,
    max_body_bytes: usize,
    budget: &BodyBudget,
) -> Result<(DynamicMessage, Held), GatewayError> {
    let query = req.uri().query().unwrap_or("").to_string();
    if !has_body(req.method())? {
        return Ok((message(input, Source::Query, &[], &query)?, Held::default()));
    }
    let media_type = media_type(req.headers());
    let (body, held) = read_body(req, max_body_bytes, budget).await?;
    let source = source(&media_type, &body, !query.is_empty())?;
    Ok((message(input, source, &body, &query)?, held))
}

/// Bytes of JSON body per value the gateway accepts at most: a body of many tiny values (`[0,0,…]`)
/// becomes many times its size as a message (tens of bytes per value), so 4 MiB of them would cost
/// more than 100 MiB; at one value per 16 bytes the message stays within a few times the body.
const JSON_BYTES_PER_VALUE: usize = 16;

/// Values in a JSON text, counted without parsing: one, plus every `,`, `[` and `{` outside strings.
/// An upper bound of the values a message decoded from it holds.
pub(crate) fn json_values(body: &[u8]) -> usize {
    let (mut n, mut in_string, mut escaped) = (1usize, false, false);
    for &b in body {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b',' | b'[' | b'{' => n += 1,
                _ => {}
            }
        }
    }
    n
}

/// The message of type `input` from `source`.
fn message(
    input: &MessageDescriptor,
    source: Source,
    body: &[u8],
    query: &str,
) -> Result<DynamicMessage, GatewayError> {
    if source == Source::Json {
        let most = (body.len() / JSON_BYTES_PER_VALUE).max(4096);
        let values = json_values(body);
        if values > most {
            return Err(GatewayError::payload_too_large(format!(
                "the JSON body holds {values} values; a body of {} bytes may hold {most}",
                body.len()
            )));
        }
    }
    match source {
        Source::Query => transcode::request_from_params(input, form_urlencoded::parse(query.as_bytes())),
        Source::Json => transcode::request_from_json(input, body),
        Source::Form => transcode::request_from_params(input, form_urlencoded::parse(body)),
    }
    .map_err(GatewayError::from)
}

/// The whole body, refused (413) when `Content-Length` or the body itself is over `limit`, and
/// (503) when `budget` cannot hold it.
async fn read_body<B>(req: Request<B>, limit: usize, budget: &BodyBudget) -> Result<(Bytes, Held), GatewayError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let too_large = || GatewayError::payload_too_large(format!("request body is larger than {limit} bytes"));
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large());
    }
    let mut held = Held::default();
    let mut buf = BytesMut::new();
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| GatewayError::bad_request(format!("reading the request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len() + data.len() > limit {
            return Err(too_large());
        }
        budget.take(&mut held, data.len(), declared.is_some_and(|len| len <= SMALL_BODY))?;
        buf.extend_from_slice(&data);
    }
    Ok((buf.freeze(), held))
}

#[cfg(test)]
mod tests {
    use http::{HeaderValue, StatusCode};

    use super::*;

    /// Issue 20, item 4 (`make bench-gateway` (g) found it): slow bodies on 100 HTTP/2 streams per
    /// connection each held up to `max_body_bytes`, with nothing bounding the sum. Bodies now take
    /// their bytes from one gateway-wide budget, refused at once (503) when it is spent, and give
    /// them back when their request is done.
    #[tokio::test]
    async fn bodies_share_one_budget_and_give_it_back() {
        // 80 bytes: 70 for any body, 10 kept for small ones.
        let budget = BodyBudget::new(80);
        let req = |body: &'static [u8], declared: bool| {
            let mut r = Request::post("/x");
            if declared {
                r = r.header(header::CONTENT_LENGTH, body.len());
            }
            r.body(http_body_util::Full::new(Bytes::from_static(body))).unwrap()
        };
        let big = &[b'x'; 60][..];
        let (body, first) = read_body(req(big, false), 100, &budget).await.unwrap();
        assert_eq!(body.len(), 60);
        assert_eq!(budget.available(), (10, 10));
        let refused = read_body(req(big, true), 100, &budget).await.unwrap_err();
        assert_eq!(refused.code, StatusCode::SERVICE_UNAVAILABLE, "{refused:?}");
        assert_eq!(budget.available(), (10, 10), "a refused body holds nothing");
        // A small body still gets in: from the reserve, then from what is shared.
        let (_, small) = read_body(req(b"0123456789", true), 100, &budget).await.unwrap();
        assert_eq!(budget.available(), (10, 0));
        let (_, small2) = read_body(req(b"0123456789", true), 100, &budget).await.unwrap();
        assert_eq!(budget.available(), (0, 0));
        assert_eq!(
            read_body(req(b"0", true), 100, &budget).await.unwrap_err().code,
            StatusCode::SERVICE_UNAVAILABLE
        );
        drop((first, small, small2));
        assert_eq!(budget.available(), (70, 10), "given back when the request is done");
        // The per-request limit still answers 413 first.
        let over = read_body(req(b"123456789012", false), 8, &budget).await.unwrap_err();
        assert_eq!(over.code, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(budget.available(), (70, 10));
    }

    #[test]
    fn json_values_are_counted_outside_strings() {
        assert_eq!(json_values(b"{}"), 2);
        assert_eq!(json_values(br#"{"a":1,"b":[1,2,3]}"#), 6);
        assert_eq!(
            json_values(br#"{"s":"a,b,[c],{d}\",e"}"#),
            2,
            "commas in strings, an escaped quote"
        );
        assert_eq!(json_values(&b"[0,".repeat(1000)), 2001);
    }

    /// Issue 20, item 4: a body of many tiny values is refused before it becomes a message many
    /// times its size; ordinary bodies, even large ones, pass.
    #[test]
    fn bodies_of_many_tiny_values_are_refused() {
        let pool = prost_reflect::DescriptorPool::global();
        let desc = pool.get_message_by_name("google.protobuf.ListValue").unwrap();
        // A ListValue's JSON is an array.
        let mut tiny = b"[".to_vec();
        tiny.extend(b"0,".repeat(500_000));
        tiny.extend(b"0]");
        let err = message(&desc, Source::Json, &tiny, "").unwrap_err();
        assert_eq!(err.code, StatusCode::PAYLOAD_TOO_LARGE, "{err}");
        assert!(err.to_string().contains("500002 values"), "{err}");
        let words: Vec<String> = (0..20_000).map(|i| format!("\"word number {i}\"")).collect();
        let fine = format!("[{}]", words.join(","));
        assert!(message(&desc, Source::Json, fine.as_bytes(), "").is_ok());
    }

    #[test]
    fn get_and_head_read_the_query_and_unknown_methods_are_refused() {
        assert!(!has_body(&Method::GET).unwrap());
        assert!(!has_body(&Method::HEAD).unwrap());
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(has_body(&m).unwrap(), "{m}");
        }
        for m in [Method::OPTIONS, Method::TRACE, Method::CONNECT] {
            assert_eq!(has_body(&m).unwrap_err().code, StatusCode::METHOD_NOT_ALLOWED, "{m}");
        }
    }

    #[test]
    fn media_types_lose_parameters_and_case() {
        let mut h = HeaderMap::new();
        assert_eq!(media_type(&h), "");
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(" Application/JSON ; charset=utf-8"),
        );
        assert_eq!(media_type(&h), "application/json");
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        assert_eq!(media_type(&h), "application/x-www-form-urlencoded");
    }

    #[test]
    fn json_types_and_no_type_are_json() {
        for ct in ["", "application/json", "application/grpc+json", "text/json"] {
            assert_eq!(source(ct, br#"{"name":"John"}"#, false).unwrap(), Source::Json, "{ct}");
            assert_eq!(source(ct, b"", false).unwrap(), Source::Json, "{ct}: the empty message");
            assert_eq!(
                source(ct, b"[1]", false).unwrap(),
                Source::Json,
                "{ct}: refused later, as JSON"
            );
        }
    }

    #[test]
    fn a_form_is_a_form_unless_it_is_a_json_object() {
        let form = "application/x-www-form-urlencoded";
        assert_eq!(source(form, b"name=John", false).unwrap(), Source::Form);
        assert_eq!(source(form, b"", false).unwrap(), Source::Form);
        assert_eq!(source(form, br#"{"name":"John"}"#, false).unwrap(), Source::Json);
        assert_eq!(
            source(form, b" \n\t{\"name\":1}", false).unwrap(),
            Source::Json,
            "after blanks"
        );
        assert_eq!(
            source(form, b"[1]", false).unwrap(),
            Source::Form,
            "only an object is JSON"
        );
    }

    #[test]
    fn a_blank_body_with_a_query_reads_the_query() {
        for ct in [
            "",
            "application/json",
            "application/x-www-form-urlencoded",
            "text/plain",
        ] {
            assert_eq!(source(ct, b"", true).unwrap(), Source::Query, "{ct}");
            assert_eq!(source(ct, b" \r\n", true).unwrap(), Source::Query, "{ct}");
        }
        assert_eq!(
            source("", b"{}", true).unwrap(),
            Source::Json,
            "a body wins over the query"
        );
    }

    #[test]
    fn other_content_types_are_refused() {
        for ct in [
            "text/plain",
            "application/xml",
            "multipart/form-data",
            "application/grpc",
        ] {
            let e = source(ct, b"{}", false).unwrap_err();
            assert_eq!(e.code, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct}");
            assert!(e.detail.contains(ct), "{}", e.detail);
        }
    }
}
