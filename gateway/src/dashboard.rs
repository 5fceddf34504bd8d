//! The web dashboard's files (docs/dashboard.md), served at `/.dashboard/` from a directory read
//! once at start (`--dashboard-dir`): a static app that calls the gateway's own API, so it needs no
//! CORS and no server of its own.
//!
//! The path cannot be a service's (service names are DNS labels, never starting with a dot). Files
//! are looked up by exact relative path in a table built at start, so no request path reaches
//! the file system. Every answer carries a Content-Security-Policy that allows only the
//! dashboard's own files and calls to this origin.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use sha2::{Digest, Sha256};

use crate::body::{BoxBody, full};
use crate::error::GatewayError;

/// Where the dashboard is served.
pub const PREFIX: &str = "/.dashboard";

/// The most the directory may hold: the built app is a few hundred KiB.
const MAX_TOTAL_BYTES: u64 = 32 << 20;

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

#[derive(Debug)]
struct File {
    body: Bytes,
    content_type: &'static str,
    etag: HeaderValue,
}

/// The dashboard's files, by path relative to its directory (`index.html`, `assets/…`).
#[derive(Debug, Default)]
pub struct Dashboard {
    files: HashMap<String, File>,
}

/// Why the directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Reading failed.
    #[error("reading {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// No `index.html`: not a built dashboard.
    #[error("{0} holds no index.html: build the dashboard (make dashboard) or leave --dashboard-dir unset")]
    NoIndex(String),
    /// More than [`MAX_TOTAL_BYTES`].
    #[error("{0} holds more than {MAX_TOTAL_BYTES} bytes: is it the dashboard's dist directory?")]
    TooLarge(String),
}

impl Dashboard {
    /// Reads every file under `dir`.
    pub fn load(dir: &Path) -> Result<Self, LoadError> {
        let mut files = HashMap::new();
        let mut total = 0u64;
        let mut pending = vec![dir.to_path_buf()];
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| LoadError::Io { path, source }
        };
        while let Some(d) = pending.pop() {
            for entry in std::fs::read_dir(&d).map_err(io(&d))? {
                let entry = entry.map_err(io(&d))?;
                let path = entry.path();
                let kind = entry.file_type().map_err(io(&path))?;
                if kind.is_dir() {
                    pending.push(path);
                    continue;
                }
                if !kind.is_file() {
                    continue;
                }
                let body = std::fs::read(&path).map_err(io(&path))?;
                total += body.len() as u64;
                if total > MAX_TOTAL_BYTES {
                    return Err(LoadError::TooLarge(dir.display().to_string()));
                }
                let Ok(relative) = path.strip_prefix(dir) else {
                    continue;
                };
                let key = relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                let digest = Sha256::digest(&body);
                let etag = format!("\"{}\"", URL_SAFE_NO_PAD.encode(&digest[..12]));
                files.insert(
                    key.clone(),
                    File {
                        content_type: content_type(&key),
                        etag: HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"0\"")),
                        body: Bytes::from(body),
                    },
                );
            }
        }
        if !files.contains_key("index.html") {
            return Err(LoadError::NoIndex(dir.display().to_string()));
        }
        Ok(Self { files })
    }

    /// The answer for a request under [`PREFIX`], or `None` when the path is not the dashboard's.
    pub(crate) fn serve<B>(&self, req: &Request<B>) -> Option<Result<Response<BoxBody>, GatewayError>> {
        let path = req.uri().path();
        let rest = path.strip_prefix(PREFIX)?;
        if rest.is_empty() {
            // `/.dashboard` → `/.dashboard/`, so the app's relative URLs resolve under it.
            return Some(Ok(with_security_headers(
                Response::builder()
                    .status(StatusCode::PERMANENT_REDIRECT)
                    .header(header::LOCATION, format!("{PREFIX}/"))
                    .body(full(Bytes::new())),
            )));
        }
        let rest = rest.strip_prefix('/')?;
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Some(Err(GatewayError::method_not_allowed(format!(
                "{} is not allowed on the dashboard: use GET",
                req.method()
            ))));
        }
        let key = if rest.is_empty() { "index.html" } else { rest };
        let Some(file) = self.files.get(key) else {
            return Some(Err(GatewayError::not_found(format!("no dashboard file {path}"))));
        };
        let fresh = req.headers().get(header::IF_NONE_MATCH).is_some_and(|tags| {
            tags.as_bytes()
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii() == file.etag.as_bytes())
        });
        // Vite names assets by their content: they never change under one name.
        let cache = if key.starts_with("assets/") {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        };
        let builder = Response::builder()
            .header(header::ETAG, file.etag.clone())
            .header(header::CACHE_CONTROL, cache);
        let response = if fresh {
            builder.status(StatusCode::NOT_MODIFIED).body(full(Bytes::new()))
        } else {
            let body = if req.method() == Method::HEAD {
                Bytes::new()
            } else {
                file.body.clone()
            };
            builder
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, file.content_type)
                .header(header::CONTENT_LENGTH, file.body.len())
                .body(full(body))
        };
        Some(Ok(with_security_headers(response)))
    }
}

fn with_security_headers(response: http::Result<Response<BoxBody>>) -> Response<BoxBody> {
    let mut response = response.unwrap_or_else(|_| {
        let mut r = Response::new(full(Bytes::new()));
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    });
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// The content types a built Vite app holds; anything else is served as bytes.
fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("index.html"), "<!doctype html><title>x</title>").unwrap();
        std::fs::create_dir(d.path().join("assets")).unwrap();
        std::fs::write(d.path().join("assets/app-1a2b.js"), "console.log(1)").unwrap();
        d
    }

    fn get(path: &str) -> Request<()> {
        Request::get(path).body(()).unwrap()
    }

    async fn body(r: Response<BoxBody>) -> String {
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn serves_the_built_files_with_their_types_caching_and_policy() {
        let d = dir();
        let dash = Dashboard::load(d.path()).unwrap();
        let index = dash.serve(&get("/.dashboard/")).unwrap().unwrap();
        assert_eq!(index.status(), StatusCode::OK);
        assert_eq!(index.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(index.headers()[header::CACHE_CONTROL], "no-cache");
        assert!(
            index.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("default-src 'self'")
        );
        assert_eq!(index.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let etag = index.headers()[header::ETAG].clone();
        assert!(body(index).await.contains("<title>x</title>"));

        let js = dash.serve(&get("/.dashboard/assets/app-1a2b.js")).unwrap().unwrap();
        assert_eq!(js.headers()[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
        assert!(
            js.headers()[header::CACHE_CONTROL]
                .to_str()
                .unwrap()
                .contains("immutable")
        );

        // A client holding the file gets 304.
        let again = Request::get("/.dashboard/index.html")
            .header(header::IF_NONE_MATCH, etag)
            .body(())
            .unwrap();
        assert_eq!(dash.serve(&again).unwrap().unwrap().status(), StatusCode::NOT_MODIFIED);

        let redirect = dash.serve(&get("/.dashboard")).unwrap().unwrap();
        assert_eq!(redirect.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(redirect.headers()[header::LOCATION], "/.dashboard/");
    }

    #[tokio::test]
    async fn only_the_loaded_files_are_reachable() {
        let d = dir();
        std::fs::write(d.path().parent().unwrap().join("secret.txt"), "no").ok();
        let dash = Dashboard::load(d.path()).unwrap();
        for path in [
            "/.dashboard/../secret.txt",
            "/.dashboard/assets/../../secret.txt",
            "/.dashboard/%2e%2e/secret.txt",
            "/.dashboard/nosuch.js",
            "/.dashboard//index.html",
        ] {
            let e = dash.serve(&get(path)).unwrap().unwrap_err();
            assert_eq!(e.code, StatusCode::NOT_FOUND, "{path}");
        }
        // Not the dashboard's: routed as any other path.
        assert!(dash.serve(&get("/.dashboardx/index.html")).is_none());
        assert!(dash.serve(&get("/helloworld/call")).is_none());
        let post = Request::post("/.dashboard/").body(()).unwrap();
        assert_eq!(
            dash.serve(&post).unwrap().unwrap_err().code,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[test]
    fn a_directory_without_index_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let e = Dashboard::load(d.path()).unwrap_err();
        assert!(e.to_string().contains("no index.html"), "{e}");
        assert!(Dashboard::load(&d.path().join("missing")).is_err());
    }
}
