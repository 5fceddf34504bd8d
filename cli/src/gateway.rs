//! Talking to the gateway: the tenant's OpenAPI document (docs/explorer.md), calls, streams, and
//! the token endpoint with tokens kept per gateway and tenant.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Failure;

/// Where and as whom to call.
pub struct Target {
    /// The gateway's base URL, e.g. `http://localhost:8080`.
    pub url: String,
    /// The tenant named with `Micro-Namespace`, when given (else the gateway resolves it by host).
    pub tenant: Option<String>,
    http: reqwest::Client,
    /// The access token once [`Target::token`] has looked (a command may make several requests).
    token: std::sync::Mutex<Option<Option<String>>>,
}

/// A stored login.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
struct Stored {
    access_token: String,
    refresh_token: String,
    expires_at: u64,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `$MICROPLANE_CONFIG_DIR`, else `$XDG_CONFIG_HOME/microplane`, else `~/.config/microplane`.
fn config_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MICROPLANE_CONFIG_DIR") {
        return d.into();
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("microplane")
}

impl Target {
    /// A target at `url`, naming `tenant` when given.
    pub fn new(url: &str, tenant: Option<String>) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(300))
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()?;
        Ok(Self {
            url: url.trim_end_matches('/').to_string(),
            tenant,
            http,
            token: std::sync::Mutex::new(None),
        })
    }

    fn key(&self) -> String {
        format!("{}|{}", self.url, self.tenant.as_deref().unwrap_or(""))
    }

    fn store_path() -> PathBuf {
        config_dir().join("tokens.json")
    }

    fn load_all() -> std::collections::BTreeMap<String, Stored> {
        std::fs::read(Self::store_path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save(&self, stored: Option<Stored>) -> Result<()> {
        let mut all = Self::load_all();
        match stored {
            Some(s) => all.insert(self.key(), s),
            None => all.remove(&self.key()),
        };
        let dir = config_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = Self::store_path();
        let tmp = path.with_extension("tmp");
        {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
            f.write_all(&serde_json::to_vec_pretty(&all)?)?;
        }
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{path}", self.url));
        if let Some(t) = &self.tenant {
            r = r.header("Micro-Namespace", t);
        }
        r
    }

    /// The access token of the stored login, refreshed when it expires within a minute; looked up
    /// once per command.
    async fn token(&self) -> Result<Option<String>> {
        if let Some(known) = self.token.lock().ok().and_then(|t| t.clone()) {
            return Ok(known);
        }
        let token = self.stored_token().await?;
        if let Ok(mut t) = self.token.lock() {
            *t = Some(token.clone());
        }
        Ok(token)
    }

    async fn stored_token(&self) -> Result<Option<String>> {
        let Some(stored) = Self::load_all().remove(&self.key()) else {
            return Ok(None);
        };
        if stored.expires_at > now() + 60 {
            return Ok(Some(stored.access_token));
        }
        let resp = self
            .token_request(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", &stored.refresh_token),
            ])
            .await;
        match resp {
            Ok(s) => {
                let token = s.access_token.clone();
                self.save(Some(s))?;
                Ok(Some(token))
            }
            Err(_) => {
                self.save(None)?;
                bail!(Failure::Refused(
                    "the stored login has expired: run `microplane login` again".into()
                ))
            }
        }
    }

    /// `req` with the stored login's token, if there is one.
    async fn signed(&self, req: reqwest::RequestBuilder) -> Result<reqwest::RequestBuilder> {
        Ok(match self.token().await? {
            Some(t) => req.bearer_auth(t),
            None => req,
        })
    }

    /// Sends `req`; a refusal becomes the [`Failure`] its status and the gateway's error body say.
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the gateway at {}", self.url))?;
        let status = resp.status();
        if !status.is_success() {
            let body = json(resp).await.unwrap_or(Value::Null);
            bail!(Failure::from_error(status.as_u16(), &body));
        }
        Ok(resp)
    }

    async fn token_request(&self, form: &[(&str, &str)]) -> Result<Stored> {
        let path = match &self.tenant {
            Some(t) => format!("/{t}/.well-known/token"),
            None => "/.well-known/token".to_string(),
        };
        let resp = self.send(self.request(reqwest::Method::POST, &path).form(form)).await?;
        let body = json(resp).await?;
        let field = |k: &str| body[k].as_str().unwrap_or_default().to_string();
        Ok(Stored {
            access_token: field("access_token"),
            refresh_token: field("refresh_token"),
            expires_at: now() + body["expires_in"].as_u64().unwrap_or(0),
        })
    }

    /// Whether a login is stored for this gateway and tenant.
    pub fn signed_in(&self) -> bool {
        Self::load_all().contains_key(&self.key())
    }

    /// Signs in with an account's id and secret; the tokens are kept for this gateway and tenant.
    pub async fn login(&self, id: &str, secret: &str) -> Result<()> {
        let stored = self
            .token_request(&[
                ("grant_type", "client_credentials"),
                ("client_id", id),
                ("client_secret", secret),
            ])
            .await?;
        self.save(Some(stored))
    }

    /// Forgets the login.
    pub fn logout(&self) -> Result<()> {
        self.save(None)
    }

    /// The tenant's OpenAPI document, as this caller sees it.
    pub async fn document(&self) -> Result<Value> {
        let req = self.request(reqwest::Method::GET, "/.well-known/openapi.json");
        let resp = self.send(self.signed(req).await?).await?;
        json(resp).await
    }

    /// `POST path` with `body`; prints the answer (each message of a stream as it arrives).
    pub async fn call(&self, path: &str, body: &Value, pretty: bool) -> Result<()> {
        let req = self
            .request(reqwest::Method::POST, path)
            .header("Content-Type", "application/json")
            .body(body.to_string());
        let mut resp = self.send(self.signed(req).await?).await?;
        let ndjson = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("application/x-ndjson"));
        let mut out = std::io::stdout().lock();
        if ndjson {
            let mut pending = Vec::new();
            while let Some(chunk) = resp.chunk().await? {
                pending.extend_from_slice(&chunk);
                while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    print_json(&mut out, &line, pretty)?;
                }
            }
            if !pending.iter().all(u8::is_ascii_whitespace) {
                print_json(&mut out, &pending, pretty)?;
            }
        } else {
            print_json(&mut out, &resp.bytes().await?, pretty)?;
        }
        Ok(())
    }
}

/// The body of `resp` as JSON.
async fn json(resp: reqwest::Response) -> Result<Value> {
    let bytes = resp.bytes().await.context("reading the gateway's answer")?;
    serde_json::from_slice(&bytes).context("the gateway's answer is not JSON")
}

fn print_json(out: &mut impl std::io::Write, bytes: &[u8], pretty: bool) -> Result<()> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) if pretty => writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?,
        Ok(v) => writeln!(out, "{v}")?,
        Err(_) => writeln!(out, "{}", String::from_utf8_lossy(bytes).trim_end())?,
    }
    out.flush()?;
    Ok(())
}
