//! The generator's clients of `Helloworld.Call`: JSON over HTTP/1.1 through the gateway, gRPC over
//! h2c straight to helloworld.

use std::net::SocketAddr;

use anyhow::{Result, anyhow, ensure};
use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri, header};
use prost::Message as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::params::{BACKEND_BODY, GREETING, JSON_REQUEST};

/// Where the generator sends `Helloworld.Call`.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// Through the gateway: `POST /helloworld/call` with JSON over HTTP/1.1.
    Gateway(SocketAddr),
    /// The same request proxied, not transcoded: `POST /web/` with the same JSON through the gateway
    /// to the HTTP backend (which answers it without reading it).
    Proxied(SocketAddr),
    /// Straight to helloworld: gRPC over h2c, all workers multiplexed on one connection like the
    /// gateway's own channel to it (so helloworld serves the same kind of connection either way).
    Direct(SocketAddr),
}

/// `helloworld.CallRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct CallRequest {
    #[prost(string, tag = "1")]
    name: String,
}

/// `helloworld.CallResponse`.
#[derive(Clone, PartialEq, prost::Message)]
struct CallResponse {
    #[prost(string, tag = "1")]
    message: String,
}

/// One generator connection. The generator shares its CPU with helloworld, so its clients are as
/// light as the protocols allow: no task, channel or buffer of a general-purpose client per call.
pub enum Client {
    /// HTTP/1.1 on the socket itself: the request written whole, the response parsed in place.
    Json {
        stream: TcpStream,
        request: Bytes,
        buf: bytes::BytesMut,
        /// What the answer's body holds.
        expect: &'static str,
    },
    /// gRPC with the `h2` crate directly (hyper's client spawns a task per request with a body).
    Grpc {
        send: h2::client::SendRequest<Bytes>,
        uri: Uri,
        frame: Bytes,
    },
}

impl Client {
    /// The clients of `n` workers: a connection each through the gateway, one shared h2c connection
    /// straight to helloworld.
    pub async fn workers(target: &Target, n: usize) -> Result<Vec<Self>> {
        let mut clients = Vec::with_capacity(n);
        match target {
            Target::Gateway(_) | Target::Proxied(_) => {
                for _ in 0..n {
                    clients.push(Self::connect(target).await?);
                }
            }
            Target::Direct(_) => {
                if let Self::Grpc { send, uri, frame } = Self::connect(target).await? {
                    for _ in 0..n {
                        clients.push(Self::Grpc {
                            send: send.clone(),
                            uri: uri.clone(),
                            frame: frame.clone(),
                        });
                    }
                }
            }
        }
        Ok(clients)
    }

    pub async fn connect(target: &Target) -> Result<Self> {
        match *target {
            Target::Gateway(addr) | Target::Proxied(addr) => {
                let stream = TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                let (path, expect) = match *target {
                    Target::Proxied(_) => ("/web/", BACKEND_BODY),
                    _ => ("/helloworld/call", GREETING),
                };
                let request = format!(
                    "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\n\r\n{JSON_REQUEST}",
                    JSON_REQUEST.len()
                );
                Ok(Self::Json {
                    stream,
                    request: Bytes::from(request),
                    buf: bytes::BytesMut::with_capacity(4096),
                    expect,
                })
            }
            Target::Direct(addr) => {
                let stream = TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                let (send, conn) = h2::client::handshake(stream).await?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                let msg = CallRequest { name: "John".into() };
                let mut frame = Vec::with_capacity(5 + msg.encoded_len());
                frame.push(0);
                frame.extend_from_slice(&u32::try_from(msg.encoded_len())?.to_be_bytes());
                msg.encode(&mut frame)?;
                Ok(Self::Grpc {
                    send,
                    uri: format!("http://{addr}/helloworld.Helloworld/Call").parse()?,
                    frame: Bytes::from(frame),
                })
            }
        }
    }

    /// One `Helloworld.Call`, checked to answer "Hello John".
    pub async fn call(&mut self) -> Result<()> {
        match self {
            Self::Json {
                stream,
                request,
                buf,
                expect,
            } => {
                stream.write_all(request).await?;
                buf.clear();
                loop {
                    if let Some((status, body)) = parse_response(buf)? {
                        ensure!(
                            status == 200 && body.windows(expect.len()).any(|w| w == expect.as_bytes()),
                            "gateway answered {status} {:?}",
                            String::from_utf8_lossy(body)
                        );
                        return Ok(());
                    }
                    ensure!(stream.read_buf(buf).await? > 0, "the gateway closed the connection");
                }
            }
            Self::Grpc { send, uri, frame } => {
                let mut send = send.clone().ready().await?;
                let req = Request::builder()
                    .method(Method::POST)
                    .uri(uri.clone())
                    .header(header::CONTENT_TYPE, "application/grpc")
                    .header(header::TE, "trailers")
                    .body(())?;
                let (response, mut body_out) = send.send_request(req, false)?;
                body_out.send_data(frame.clone(), true)?;
                let resp = response.await?;
                ensure!(resp.status() == StatusCode::OK, "helloworld answered {}", resp.status());
                // A trailers-only answer carries grpc-status in the headers.
                let (parts, mut body) = resp.into_parts();
                let mut data = bytes::BytesMut::new();
                while let Some(chunk) = body.data().await {
                    let chunk = chunk?;
                    let _ = body.flow_control().release_capacity(chunk.len());
                    data.extend_from_slice(&chunk);
                }
                let trailers = body.trailers().await?;
                let grpc_status = trailers
                    .as_ref()
                    .and_then(|t| t.get("grpc-status"))
                    .or_else(|| parts.headers.get("grpc-status"));
                ensure!(
                    grpc_status.is_some_and(|s| s == "0"),
                    "helloworld answered grpc-status {grpc_status:?}"
                );
                ensure!(data.len() >= 5 && data[0] == 0, "malformed gRPC message");
                let msg = CallResponse::decode(&data[5..])?;
                ensure!(msg.message == GREETING, "helloworld answered {:?}", msg.message);
                Ok(())
            }
        }
    }
}

/// The status and body of a complete HTTP/1.1 response with `Content-Length` at the start of
/// `buf`, or `None` while more is to come.
fn parse_response(buf: &[u8]) -> Result<Option<(u16, &[u8])>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head) = resp.parse(buf)? else {
        return Ok(None);
    };
    let len = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
        .ok_or_else(|| anyhow!("the gateway answered without Content-Length"))?;
    let status = resp.code.unwrap_or(0);
    Ok(buf.get(head..head + len).map(|body| (status, body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_complete_http1_responses_only() {
        let full = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        assert_eq!(parse_response(full).unwrap(), Some((200, &b"hello"[..])));
        assert_eq!(parse_response(&full[..full.len() - 1]).unwrap(), None);
        assert_eq!(parse_response(&full[..20]).unwrap(), None);
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        assert!(parse_response(chunked).is_err());
    }
}
