//! Git sources for the suites, over loopback and without a cluster.
//!
//! [`GitServer`] serves bare repositories at `http://<host>:<port>/<name>.git` by running
//! `git http-backend` as a CGI program for each request (the smart HTTP protocol a real forge
//! speaks), optionally behind HTTP basic auth. The repository helpers write commits straight into a
//! bare repository with the git CLI and a fixed identity ([`AUTHOR_NAME`], [`AUTHOR_EMAIL`]), so a
//! test "pushes" by committing and clients see the new head on their next fetch.
//! [`helloworld_source`] (module `manifest`) writes a self-contained, offline-buildable copy of
//! this workspace's helloworld service to commit.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::task::{JoinHandle, JoinSet};

mod manifest;

pub use manifest::helloworld_source;

/// Author and committer name of every commit the helpers write.
pub const AUTHOR_NAME: &str = "Microplane E2E";
/// Author and committer e-mail of every commit the helpers write.
pub const AUTHOR_EMAIL: &str = "e2e@microplane.invalid";
/// The challenge of a server that wants credentials.
const CHALLENGE: &str = "Basic realm=\"microplane-e2e\"";
/// Largest request body the server accepts (a push of a test repository is far smaller).
const MAX_BODY: usize = 64 << 20;
/// How long one `git http-backend` run may take.
const CGI_TIMEOUT: Duration = Duration::from_secs(120);

/// Errors of the git server and helpers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or socket operation failed.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// A git command failed.
    #[error("git {args}: {detail}")]
    Git {
        /// The arguments of the command.
        args: String,
        /// Its exit status and standard error.
        detail: String,
    },
    /// An argument or a file did not have the expected shape.
    #[error("{0}")]
    Invalid(String),
}

/// Result of the git helpers.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::Io(what.to_string(), e)
}

/// A git command with the helpers' fixed identity, no user or system configuration and no
/// prompts. `GIT_DIR`-style variables a calling hook may have set are removed.
fn git_command(git_dir: Option<&Path>) -> Command {
    let mut cmd = Command::new("git");
    for var in [
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_PREFIX",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", AUTHOR_NAME)
        .env("GIT_AUTHOR_EMAIL", AUTHOR_EMAIL)
        .env("GIT_COMMITTER_NAME", AUTHOR_NAME)
        .env("GIT_COMMITTER_EMAIL", AUTHOR_EMAIL)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(dir) = git_dir {
        cmd.env("GIT_DIR", dir);
    }
    cmd
}

/// Runs git with `args` (in the bare repository `git_dir` when given, with extra `env`, feeding
/// `stdin`); its trimmed standard output.
async fn git(git_dir: Option<&Path>, args: &[&str], env: &[(&str, &Path)], stdin: Option<&[u8]>) -> Result<String> {
    let mut cmd = git_command(git_dir);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().map_err(io(format!("git {}", args.join(" "))))?;
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(bytes).await.map_err(io("git stdin"))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(io(format!("git {}", args.join(" "))))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(Error::Git {
            args: args.join(" "),
            detail: format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
        })
    }
}

/// Creates an empty bare repository at `path` whose default branch is `main`.
pub async fn init_bare(path: &Path) -> Result<()> {
    let path_str = path
        .to_str()
        .ok_or_else(|| Error::Invalid(format!("{}: not UTF-8", path.display())))?;
    git(
        None,
        &["init", "--quiet", "--bare", "--initial-branch=main", path_str],
        &[],
        None,
    )
    .await?;
    Ok(())
}

/// Accepts the plain branch and tag names tests use (a subset of what git allows).
fn check_ref_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('-')
        && name
            .split('/')
            .all(|c| !c.is_empty() && !c.starts_with('.') && !c.ends_with(".lock"))
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        && !name.contains("..");
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{name:?} is not a branch or tag name the helpers accept"
        )))
    }
}

/// The commit `branch` points at in `repo`, or none when the branch does not exist.
async fn try_head(repo: &Path, branch: &str) -> Result<Option<String>> {
    check_ref_name(branch)?;
    let reference = format!("refs/heads/{branch}^{{commit}}");
    match git(Some(repo), &["rev-parse", "--verify", "--quiet", &reference], &[], None).await {
        Ok(sha) => Ok(Some(sha)),
        Err(Error::Git { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The full sha of the commit `branch` points at in the bare repository `repo`.
pub async fn branch_head(repo: &Path, branch: &str) -> Result<String> {
    try_head(repo, branch)
        .await?
        .ok_or_else(|| Error::Invalid(format!("{}: no branch {branch}", repo.display())))
}

/// Writes a commit of the tree in the index file `index` on top of `branch` (its parent is the
/// branch's current head, if any) and moves the branch to it; the new commit's sha.
async fn commit_index(repo: &Path, branch: &str, index: &Path, message: &str) -> Result<String> {
    let env = [("GIT_INDEX_FILE", index)];
    let tree = git(Some(repo), &["write-tree"], &env, None).await?;
    let parent = try_head(repo, branch).await?;
    let mut args = vec!["commit-tree", tree.as_str(), "-m", message];
    if let Some(p) = &parent {
        args.extend(["-p", p.as_str()]);
    }
    let sha = git(Some(repo), &args, &[], None).await?;
    let reference = format!("refs/heads/{branch}");
    // The old value makes the update fail rather than lose a concurrent commit.
    let old = parent.unwrap_or_else(|| "0".repeat(40));
    git(Some(repo), &["update-ref", &reference, &sha, &old], &[], None).await?;
    Ok(sha)
}

/// Commits the whole directory `tree` (respecting its `.gitignore` files) as the new content of
/// `branch` in the bare repository `repo`; the commit's sha. The branch is created when missing.
pub async fn commit_tree(repo: &Path, branch: &str, tree: &Path, message: &str) -> Result<String> {
    check_ref_name(branch)?;
    let scratch = tempfile::tempdir().map_err(io("temporary index"))?;
    let index = scratch.path().join("index");
    let env = [("GIT_INDEX_FILE", index.as_path()), ("GIT_WORK_TREE", tree)];
    git(Some(repo), &["add", "--all", "."], &env, None).await?;
    commit_index(repo, branch, &index, message).await
}

/// Commits `contents` as the file `file` (a relative path; created or replaced) on top of `branch`
/// of the bare repository `repo`, keeping every other file; the commit's sha.
pub async fn commit_file(repo: &Path, branch: &str, file: &str, contents: &[u8], message: &str) -> Result<String> {
    check_ref_name(branch)?;
    let relative = Path::new(file);
    if file.is_empty()
        || relative.is_absolute()
        || relative
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(Error::Invalid(format!("{file:?} is not a relative file path")));
    }
    let scratch = tempfile::tempdir().map_err(io("temporary index"))?;
    let index = scratch.path().join("index");
    let env = [("GIT_INDEX_FILE", index.as_path())];
    if let Some(head) = try_head(repo, branch).await? {
        git(Some(repo), &["read-tree", &head], &env, None).await?;
    }
    let blob = git(Some(repo), &["hash-object", "-w", "--stdin"], &[], Some(contents)).await?;
    let cacheinfo = format!("100644,{blob},{file}");
    git(
        Some(repo),
        &["update-index", "--add", "--cacheinfo", &cacheinfo],
        &env,
        None,
    )
    .await?;
    commit_index(repo, branch, &index, message).await
}

/// Creates the tag `tag` on the revision `rev` (a sha or a branch) of the bare repository `repo`:
/// annotated with `message` when one is given, lightweight otherwise.
pub async fn create_tag(repo: &Path, tag: &str, rev: &str, message: Option<&str>) -> Result<()> {
    check_ref_name(tag)?;
    match message {
        Some(m) => git(Some(repo), &["tag", "--annotate", "--message", m, tag, rev], &[], None).await?,
        None => git(Some(repo), &["tag", tag, rev], &[], None).await?,
    };
    Ok(())
}

/// Credentials the server demands when started with [`GitServer::start_with_basic_auth`].
struct BasicAuth {
    username: String,
    /// The whole expected `Authorization` header value.
    expected: String,
}

struct State {
    root: PathBuf,
    auth: Option<BasicAuth>,
    requests: AtomicU64,
    /// When each request arrived, and its path (the backoff checks read the times of one repository's).
    log: std::sync::Mutex<Vec<(std::time::Instant, String)>>,
}

/// A smart-HTTP git server on the host address pods reach ([`crate::host_ip`]) serving the bare repositories under a temporary root
/// (see the module docs). Stops when dropped or on [`GitServer::stop`].
pub struct GitServer {
    addr: SocketAddr,
    state: Arc<State>,
    task: Option<JoinHandle<()>>,
    // Dropped after the task is aborted (declaration order), so no request sees a missing root.
    _root: Option<tempfile::TempDir>,
}

impl GitServer {
    /// Starts a server that lets anyone read.
    pub async fn start() -> Result<Self> {
        Self::start_inner(None).await
    }

    /// Starts a server that answers only requests with these basic-auth credentials; others get
    /// `401` with `WWW-Authenticate: Basic realm="microplane-e2e"`.
    pub async fn start_with_basic_auth(username: &str, password: &str) -> Result<Self> {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        Self::start_inner(Some(BasicAuth {
            username: username.to_string(),
            expected: format!("Basic {token}"),
        }))
        .await
    }

    async fn start_inner(auth: Option<BasicAuth>) -> Result<Self> {
        let root = tempfile::tempdir().map_err(io("git server root"))?;
        let mut server = Self::serve_root(root.path(), SocketAddr::from((crate::host_ip(), 0)), auth).await?;
        server._root = Some(root);
        Ok(server)
    }

    /// Serves the repositories under an existing `root` (`<root>/<name>.git`, bare repositories or
    /// symlinks to a clone's `.git`) to anyone, at `listen` (`make up` serves the working copy so
    /// the operator's pod can build it).
    pub async fn serve_dir(root: &Path, listen: SocketAddr) -> Result<Self> {
        Self::serve_root(root, listen, None).await
    }

    async fn serve_root(root: &Path, listen: SocketAddr, auth: Option<BasicAuth>) -> Result<Self> {
        let listener = TcpListener::bind(listen).await.map_err(io("git server listener"))?;
        let addr = listener.local_addr().map_err(io("git server address"))?;
        let state = Arc::new(State {
            root: root.to_path_buf(),
            auth,
            requests: AtomicU64::new(0),
            log: std::sync::Mutex::default(),
        });
        let task = tokio::spawn(serve(listener, state.clone()));
        Ok(Self {
            addr,
            state,
            task: Some(task),
            _root: None,
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The directory holding the served bare repositories.
    pub fn root(&self) -> &Path {
        &self.state.root
    }

    /// The clone URL of the repository `name`: `http://<host>:<port>/<name>.git`.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}.git", self.addr)
    }

    /// The clone URL with credentials in it (`http://user:password@<host>:<port>/<name>.git`).
    pub fn url_with_credentials(&self, name: &str, username: &str, password: &str) -> String {
        format!("http://{username}:{password}@{}/{name}.git", self.addr)
    }

    /// Creates the empty bare repository `name` (letters, digits, `-`, `_`, `.`) served at
    /// [`GitServer::url`]; its path.
    pub async fn create_repo(&self, name: &str) -> Result<PathBuf> {
        let valid = !name.is_empty()
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(Error::Invalid(format!(
                "{name:?} is not a repository name the server accepts"
            )));
        }
        let path = self.state.root.join(format!("{name}.git"));
        init_bare(&path).await?;
        Ok(path)
    }

    /// How many HTTP requests the server has answered or refused so far.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// When the clients' attempts on the repository `name` began, oldest first: one entry per run of
    /// requests for it (a clone or ls-remote makes several within a second; a request more than a
    /// second after the previous one starts a new attempt).
    pub fn attempts(&self, name: &str) -> Vec<std::time::Instant> {
        let prefix = format!("/{name}.git/");
        let log = self.state.log.lock().map(|l| l.clone()).unwrap_or_default();
        let mut starts: Vec<std::time::Instant> = Vec::new();
        let mut last: Option<std::time::Instant> = None;
        for (at, _) in log.iter().filter(|(_, p)| p.starts_with(&prefix)) {
            if last.is_none_or(|l| at.duration_since(l) > Duration::from_secs(1)) {
                starts.push(*at);
            }
            last = Some(*at);
        }
        starts
    }

    /// Stops accepting and closes every open connection.
    pub fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Accepts connections until aborted; aborting drops the `JoinSet`, which ends every connection.
async fn serve(listener: TcpListener, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let state = state.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(req, &state).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

async fn handle(req: Request<Incoming>, state: &State) -> Response<Full<Bytes>> {
    state.requests.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut log) = state.log.lock() {
        log.push((std::time::Instant::now(), req.uri().path().to_string()));
    }
    let mut remote_user = None;
    if let Some(auth) = &state.auth {
        let given = req.headers().get(header::AUTHORIZATION).map(HeaderValue::as_bytes);
        if given != Some(auth.expected.as_bytes()) {
            let mut resp = plain(StatusCode::UNAUTHORIZED, "authentication required");
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(CHALLENGE));
            return resp;
        }
        remote_user = Some(auth.username.clone());
    }
    let path = req.uri().path().to_string();
    // git http-backend checks paths itself; refuse traversal before it runs at all.
    if !path.starts_with('/') || path.split('/').any(|s| s == ".." || s == ".") || path.contains('%') {
        return plain(StatusCode::NOT_FOUND, "no such repository");
    }
    let query = req.uri().query().unwrap_or_default().to_string();
    let method = req.method().to_string();
    let header_str = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header_str("content-type");
    let encoding = header_str("content-encoding");
    let protocol = header_str("git-protocol");
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return plain(StatusCode::PAYLOAD_TOO_LARGE, &format!("request body: {e}")),
    };
    let mut cmd = Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", &state.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", &path)
        .env("QUERY_STRING", &query)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("CONTENT_LENGTH", body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (var, value) in [
        ("CONTENT_TYPE", content_type),
        ("HTTP_CONTENT_ENCODING", encoding),
        ("GIT_PROTOCOL", protocol),
        ("REMOTE_USER", remote_user),
    ] {
        if let Some(v) = value {
            cmd.env(var, v);
        }
    }
    let run = async {
        let mut child = cmd.spawn()?;
        let stdin = child.stdin.take();
        // Feed the body while the output is read, so neither pipe fills up and blocks the other.
        let feed = async move {
            if let Some(mut pipe) = stdin {
                let _ = pipe.write_all(&body).await;
            }
        };
        let (_, out) = tokio::join!(feed, child.wait_with_output());
        out
    };
    match tokio::time::timeout(CGI_TIMEOUT, run).await {
        Ok(Ok(out)) => match cgi_response(&out.stdout) {
            Some(resp) => resp,
            None => plain(
                StatusCode::BAD_GATEWAY,
                &format!(
                    "git http-backend ({}) gave no CGI response: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ),
        },
        Ok(Err(e)) => plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("git http-backend: {e}")),
        Err(_) => plain(StatusCode::GATEWAY_TIMEOUT, "git http-backend timed out"),
    }
}

/// Turns a CGI program's output (headers, a blank line, the body) into a response; `Status:` sets
/// the status code (200 without one).
fn cgi_response(out: &[u8]) -> Option<Response<Full<Bytes>>> {
    let (head, body) = split_head(out)?;
    let head = std::str::from_utf8(head).ok()?;
    let mut resp = Response::new(Full::new(Bytes::copy_from_slice(body)));
    for line in head.lines() {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next()?.parse::<u16>().ok()?;
            *resp.status_mut() = StatusCode::from_u16(code).ok()?;
        } else {
            let name = header::HeaderName::from_bytes(name.trim().as_bytes()).ok()?;
            resp.headers_mut().append(name, HeaderValue::from_str(value).ok()?);
        }
    }
    Some(resp)
}

/// Splits at the first blank line (`\r\n\r\n` or `\n\n`).
fn split_head(out: &[u8]) -> Option<(&[u8], &[u8])> {
    let crlf = out.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, i + 4));
    let lf = out.windows(2).position(|w| w == b"\n\n").map(|i| (i, i + 2));
    let (end, start) = match (crlf, lf) {
        (Some(a), Some(b)) => {
            if a.0 < b.0 {
                a
            } else {
                b
            }
        }
        (a, b) => a.or(b)?,
    };
    Some((&out[..end], &out[start..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs git outside any repository (clients of the server).
    async fn client(args: &[&str]) -> Result<String> {
        git(None, args, &[], None).await
    }

    async fn served_repo(server: &GitServer) -> (PathBuf, String) {
        let repo = server.create_repo("demo").await.unwrap();
        let sha = commit_file(&repo, "main", "README.md", b"hello\n", "first")
            .await
            .unwrap();
        (repo, sha)
    }

    /// The status line and headers of a plain GET.
    async fn raw_get(addr: SocketAddr, path: &str, authorization: Option<&str>) -> String {
        use tokio::io::AsyncReadExt;
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let auth = authorization
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await.unwrap();
        let text = String::from_utf8_lossy(&out).to_string();
        text.split("\r\n\r\n").next().unwrap().to_string()
    }

    #[tokio::test]
    async fn clones_over_http_and_sees_new_commits() {
        let server = GitServer::start().await.unwrap();
        let (repo, first) = served_repo(&server).await;
        let work = tempfile::tempdir().unwrap();
        let dest = work.path().join("clone");
        let dest_str = dest.to_str().unwrap();
        client(&["clone", "--quiet", &server.url("demo"), dest_str])
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(dest.join("README.md")).unwrap(), "hello\n");
        assert_eq!(client(&["-C", dest_str, "rev-parse", "HEAD"]).await.unwrap(), first);
        assert!(
            server.requests() >= 2,
            "discovery and upload-pack went through the server"
        );

        // "Push": commit into the bare repository, then fetch the new head.
        let second = commit_file(&repo, "main", "src/lib.rs", b"// two\n", "second")
            .await
            .unwrap();
        assert_ne!(first, second);
        assert_eq!(branch_head(&repo, "main").await.unwrap(), second);
        client(&["-C", dest_str, "pull", "--quiet", "--ff-only"]).await.unwrap();
        assert_eq!(client(&["-C", dest_str, "rev-parse", "HEAD"]).await.unwrap(), second);
        assert_eq!(std::fs::read_to_string(dest.join("README.md")).unwrap(), "hello\n");
        assert!(dest.join("src/lib.rs").is_file());

        // Tags, lightweight and annotated, are served too.
        create_tag(&repo, "v1", &first, None).await.unwrap();
        create_tag(&repo, "v2", "main", Some("release two")).await.unwrap();
        let remote = client(&["ls-remote", "--tags", &server.url("demo")]).await.unwrap();
        assert!(remote.contains(&format!("{first}\trefs/tags/v1")), "{remote}");
        assert!(remote.contains(&format!("{second}\trefs/tags/v2^{{}}")), "{remote}");
        // A commit reachable from a branch can be fetched by its sha (protocol v2).
        client(&["-C", dest_str, "fetch", "--quiet", "--depth=1", "origin", &first])
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn basic_auth_lets_only_the_right_credentials_in() {
        let server = GitServer::start_with_basic_auth("alice", "s3cret").await.unwrap();
        let (_, sha) = served_repo(&server).await;
        // Without credentials: a 401 with a basic-auth challenge, which makes git ask for a user.
        let head = raw_get(server.addr(), "/demo.git/info/refs?service=git-upload-pack", None).await;
        assert!(head.starts_with("HTTP/1.1 401"), "{head}");
        assert!(
            head.contains("www-authenticate: Basic realm=\"microplane-e2e\""),
            "{head}"
        );
        let without = client(&["ls-remote", &server.url("demo")]).await.unwrap_err();
        assert!(without.to_string().contains("could not read Username"), "{without}");
        let wrong = raw_get(server.addr(), "/demo.git/info/refs", Some("Basic YWxpY2U6bm9wZQ==")).await;
        assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
        let wrong = client(&["ls-remote", &server.url_with_credentials("demo", "alice", "nope")])
            .await
            .unwrap_err();
        assert!(wrong.to_string().contains("Authentication failed"), "{wrong}");
        let heads = client(&["ls-remote", &server.url_with_credentials("demo", "alice", "s3cret")])
            .await
            .unwrap();
        assert!(heads.contains(&format!("{sha}\trefs/heads/main")), "{heads}");
        let work = tempfile::tempdir().unwrap();
        let dest = work.path().join("clone");
        let url = server.url_with_credentials("demo", "alice", "s3cret");
        client(&["clone", "--quiet", &url, dest.to_str().unwrap()])
            .await
            .unwrap();
        assert!(dest.join("README.md").is_file());
    }

    #[tokio::test]
    async fn refuses_unknown_repositories_and_stops() {
        let mut server = GitServer::start().await.unwrap();
        served_repo(&server).await;
        let missing = client(&["ls-remote", &server.url("nope")]).await.unwrap_err();
        assert!(
            missing.to_string().contains("not found") || missing.to_string().contains("404"),
            "{missing}"
        );
        assert!(server.create_repo("../escape").await.is_err());
        let before = server.requests();
        let url = server.url("demo");
        server.stop();
        // The listener is closed once the accept task has been dropped.
        let refused = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if tokio::net::TcpStream::connect(server.addr()).await.is_err() {
                    break;
                }
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(refused.is_ok(), "the server still accepts connections after stop()");
        assert!(client(&["ls-remote", &url]).await.is_err());
        assert_eq!(server.requests(), before);
    }

    #[test]
    fn parses_cgi_output() {
        let resp = cgi_response(b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnope").unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/plain");
        let resp = cgi_response(b"Content-Type: application/x-git\nExpires: never\n\n\x00\x01").unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["expires"], "never");
        assert!(cgi_response(b"no blank line").is_none());
        assert!(cgi_response(b"Status: abc\n\n").is_none());
        assert!(cgi_response(b"Bad Header Line\n\nbody").is_none());
    }
}
