//! The bench's HTTP/1.1 client for checks and polling (hyper, one keep-alive connection).

use std::net::SocketAddr;

use anyhow::Result;
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One HTTP/1.1 keep-alive connection.
pub struct H1 {
    send: http1::SendRequest<Full<Bytes>>,
    host: String,
}

impl H1 {
    pub async fn connect(addr: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (send, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self {
            send,
            host: addr.to_string(),
        })
    }

    async fn request(
        &mut self,
        method: Method,
        path: &str,
        json: Option<&'static str>,
        headers: &[(String, String)],
    ) -> Result<(StatusCode, Bytes)> {
        self.send.ready().await?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.host);
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let body = match json {
            Some(b) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from_static(b.as_bytes()))
            }
            None => Full::new(Bytes::new()),
        };
        let resp = self.send.send_request(req.body(body)?).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    pub async fn get(&mut self, path: &str) -> Result<(StatusCode, Bytes)> {
        self.request(Method::GET, path, None, &[]).await
    }

    pub async fn post_json(&mut self, path: &str, body: &'static str) -> Result<(StatusCode, Bytes)> {
        self.request(Method::POST, path, Some(body), &[]).await
    }

    /// `GET path` with `headers`, on a new connection when this one has been closed.
    pub async fn get_with(
        &mut self,
        addr: SocketAddr,
        path: &str,
        headers: &[(String, String)],
    ) -> Result<(StatusCode, Bytes)> {
        match self.request(Method::GET, path, None, headers).await {
            Ok(r) => Ok(r),
            Err(_) => {
                *self = Self::connect(addr).await?;
                self.request(Method::GET, path, None, headers).await
            }
        }
    }

    /// `GET path`, on a new connection when this one has been closed.
    pub async fn get_reconnecting(&mut self, addr: SocketAddr, path: &str) -> Result<(StatusCode, Bytes)> {
        match self.get(path).await {
            Ok(r) => Ok(r),
            Err(_) => {
                *self = Self::connect(addr).await?;
                self.get(path).await
            }
        }
    }
}
