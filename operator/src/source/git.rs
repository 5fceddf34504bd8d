//! Resolving a git source to a commit with git2, and inspecting the tree at its path. Everything
//! here blocks: callers run it on a blocking thread with a deadline (`Limits`).
//!
//! Repositories are fetched into bare repositories of an on-disk cache, one per tenant and URL; a
//! commit that is already there is not fetched again. The partition is what keeps the cache from
//! answering for another tenant: a commit pinned by URL is answered without the network, so a shared
//! cache would tell tenant B, without credentials, whether a commit or a path exists in tenant A's
//! private repository (docs/security.md).

use std::cell::Cell;
use std::path::Path;
use std::time::Instant;

use git2::{AutotagOption, CertificateCheckStatus, Cred, CredentialType, Direction, ErrorClass, ErrorCode};
use git2::{FetchOptions, Oid, RemoteCallbacks, Repository};
use microplane_crds::BuildStrategy;

use super::strategy::{self, Strategy};
use microplane_crds::Reason;

/// Why a source cannot be resolved. `reason` is the condition reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceError {
    /// CamelCase reason for the `SourceReady` and `Ready` conditions.
    pub reason: Reason,
    /// What a user can act on (never a secret).
    pub message: String,
}

impl SourceError {
    /// An error with a reason and message.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

/// The revision asked for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Revision {
    /// The remote's default branch (its `HEAD`).
    Default,
    /// A branch.
    Branch(String),
    /// A tag.
    Tag(String),
    /// A commit, 7 to 40 hex digits.
    Commit(String),
}

impl Revision {
    /// Whether the revision can move (a branch, or the default branch): `pollInterval` follows it.
    pub fn moves(&self) -> bool {
        matches!(self, Self::Default | Self::Branch(_))
    }
}

impl std::fmt::Display for Revision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Default => f.write_str("the default branch"),
            Self::Branch(b) => write!(f, "branch {b}"),
            Self::Tag(t) => write!(f, "tag {t}"),
            Self::Commit(c) => write!(f, "commit {c}"),
        }
    }
}

/// What to resolve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Repository URL as written in the spec.
    pub url: String,
    /// Revision.
    pub revision: Revision,
    /// Cleaned path inside the repository (`""` = root).
    pub path: String,
    /// Build strategy asked for.
    pub strategy: BuildStrategy,
    /// Cleaned Dockerfile location relative to the path.
    pub dockerfile: String,
}

/// A resolved source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// Full commit id (40 hex digits).
    pub commit: String,
    /// The strategy chosen from the tree.
    pub strategy: Strategy,
}

/// Credentials from the source's Secret. `Debug` never shows values.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    /// None: public repositories.
    #[default]
    None,
    /// A token (HTTPS, sent as the password of user `x-access-token`).
    Token(String),
    /// HTTPS basic authentication.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// An ssh key and the pinned host keys.
    Ssh {
        /// PEM/OpenSSH private key.
        private_key: String,
        /// `known_hosts` lines, if given.
        known_hosts: Option<String>,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "None",
            Self::Token(_) => "Token(<redacted>)",
            Self::Basic { .. } => "Basic(<redacted>)",
            Self::Ssh { .. } => "Ssh(<redacted>)",
        })
    }
}

impl Credentials {
    /// Reads a Secret's data: `token`, or `username` + `password`, or `ssh-privatekey` (+ `known_hosts`).
    pub fn from_secret_data(
        data: &std::collections::BTreeMap<String, k8s_openapi::ByteString>,
    ) -> Result<Self, SourceError> {
        let text = |k: &str| -> Result<Option<String>, SourceError> {
            data.get(k)
                .map(|v| {
                    String::from_utf8(v.0.clone()).map_err(|_| {
                        SourceError::new(Reason::SecretInvalid, format!("key {k} of the Secret is not UTF-8"))
                    })
                })
                .transpose()
        };
        if let Some(key) = text("ssh-privatekey")? {
            return Ok(Self::Ssh {
                private_key: key,
                known_hosts: text("known_hosts")?,
            });
        }
        if let Some(token) = text("token")? {
            return Ok(Self::Token(token.trim().to_string()));
        }
        match (text("username")?, text("password")?) {
            (Some(username), Some(password)) => Ok(Self::Basic { username, password }),
            _ => Err(SourceError::new(
                Reason::SecretInvalid,
                "the Secret must hold `token`, or `username` and `password`, or `ssh-privatekey` and `known_hosts`",
            )),
        }
    }
}

/// Bounds of one resolution.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest pack a fetch may receive.
    pub max_bytes: u64,
    /// When the resolution gives up.
    pub deadline: Instant,
}

/// How a URL is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// `https://`.
    Https,
    /// `http://` (tests and dev only).
    Http,
    /// `ssh://` or scp-like `git@host:path`, with the host and port known_hosts entries use.
    Ssh {
        /// Host name.
        host: String,
        /// Port, when not 22.
        port: Option<u16>,
    },
    /// `file://` (tests only).
    File,
}

/// Classifies a URL; `allow_insecure` admits `http://` and `file://`.
pub fn transport(url: &str, allow_insecure: bool) -> Result<Transport, SourceError> {
    let insecure = |scheme: &str| {
        SourceError::new(
            Reason::InsecureSourceRefused,
            format!(
                "{scheme} URLs are refused: use https:// or ssh:// (the operator admits {scheme} only with --allow-insecure-git-urls, for tests)"
            ),
        )
    };
    if url.starts_with("https://") {
        Ok(Transport::Https)
    } else if url.starts_with("http://") {
        allow_insecure
            .then_some(Transport::Http)
            .ok_or_else(|| insecure("http://"))
    } else if url.starts_with("file://") {
        allow_insecure
            .then_some(Transport::File)
            .ok_or_else(|| insecure("file://"))
    } else if let Some(rest) = url.strip_prefix("ssh://") {
        let authority = rest.split('/').next().unwrap_or_default();
        let host_port = authority.rsplit('@').next().unwrap_or_default();
        let (host, port) = match host_port.strip_prefix('[') {
            Some(rest) => {
                let (h, after) = rest
                    .split_once(']')
                    .ok_or_else(|| SourceError::new(Reason::InvalidSource, format!("invalid host in {url}")))?;
                (h, after.strip_prefix(':'))
            }
            None => match host_port.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (host_port, None),
            },
        };
        let port = port
            .map(|p| p.parse::<u16>())
            .transpose()
            .map_err(|_| SourceError::new(Reason::InvalidSource, format!("invalid port in {url}")))?;
        let host = host.to_string();
        Ok(Transport::Ssh {
            host,
            port: port.filter(|p| *p != 22),
        })
    } else if let Some((user_host, _)) = url.split_once(':')
        && user_host.contains('@')
        && !user_host.contains('/')
    {
        let host = user_host.rsplit('@').next().unwrap_or_default().to_string();
        Ok(Transport::Ssh { host, port: None })
    } else {
        Err(SourceError::new(
            Reason::InvalidSource,
            format!("unsupported git URL {url}: use https://, ssh:// or git@host:path"),
        ))
    }
}

/// Whether `key` (the raw host key the server offered) is pinned for `host` in `known_hosts`.
/// Plain host patterns (`host`, `[host]:port`, comma lists) and hashed entries (`|1|salt|hash`) are
/// understood; `@revoked` lines refuse the key, other markers are ignored.
pub fn host_key_pinned(known_hosts: &str, host: &str, port: Option<u16>, key: &[u8]) -> bool {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let name = match port {
        Some(p) => format!("[{host}]:{p}"),
        None => host.to_string(),
    };
    let mut pinned = false;
    for line in known_hosts.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let mut first = fields.next().unwrap_or_default();
        let revoked = first == "@revoked";
        if first.starts_with('@') {
            if !revoked {
                continue;
            }
            first = fields.next().unwrap_or_default();
        }
        let (Some(_key_type), Some(blob)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Ok(blob) = b64.decode(blob) else { continue };
        let host_matches = first.split(',').any(|pattern| {
            if let Some(hashed) = pattern.strip_prefix("|1|") {
                let Some((salt, hash)) = hashed.split_once('|') else {
                    return false;
                };
                let (Ok(salt), Ok(hash)) = (b64.decode(salt), b64.decode(hash)) else {
                    return false;
                };
                let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &salt);
                aws_lc_rs::hmac::verify(&k, name.as_bytes(), &hash).is_ok()
            } else {
                pattern == name
            }
        });
        if host_matches && blob == key {
            if revoked {
                return false;
            }
            pinned = true;
        }
    }
    pinned
}

/// What the callbacks saw, to tell errors apart after libgit2 gives up.
#[derive(Default)]
struct Seen {
    auth_refused: Cell<bool>,
    auth_missing: Cell<bool>,
    host_key_refused: Cell<bool>,
    too_large: Cell<bool>,
    timed_out: Cell<bool>,
}

fn callbacks<'a>(
    creds: &'a Credentials,
    transport: &'a Transport,
    limits: Limits,
    seen: &'a Seen,
) -> RemoteCallbacks<'a> {
    let mut cb = RemoteCallbacks::new();
    // Each connection asks for credentials again; once per connection is enough (libgit2 asks
    // again after a refusal, forever).
    let mut attempts = 0u32;
    cb.credentials(move |_url, username, allowed| {
        if allowed.contains(CredentialType::USERNAME) && matches!(creds, Credentials::Ssh { .. }) {
            return Cred::username(username.unwrap_or("git"));
        }
        attempts += 1;
        if attempts > 1 {
            seen.auth_refused.set(true);
            return Err(git2::Error::from_str("credentials refused"));
        }
        match creds {
            Credentials::Token(t) if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) => {
                Cred::userpass_plaintext("x-access-token", t)
            }
            Credentials::Basic { username, password } if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) => {
                Cred::userpass_plaintext(username, password)
            }
            Credentials::Ssh { private_key, .. } if allowed.contains(CredentialType::SSH_KEY) => {
                Cred::ssh_key_from_memory(username.unwrap_or("git"), None, private_key, None)
            }
            _ => {
                seen.auth_missing.set(true);
                Err(git2::Error::from_str("no usable credentials"))
            }
        }
    });
    cb.certificate_check(move |cert, _host| match transport {
        Transport::Ssh { host, port } => {
            let known = match creds {
                Credentials::Ssh {
                    known_hosts: Some(k), ..
                } => k.as_str(),
                _ => "",
            };
            let key = cert.as_hostkey().and_then(|h| h.hostkey());
            if key.is_some_and(|key| host_key_pinned(known, host, *port, key)) {
                Ok(CertificateCheckStatus::CertificateOk)
            } else {
                seen.host_key_refused.set(true);
                Err(git2::Error::from_str("host key not pinned"))
            }
        }
        // TLS: libgit2's own verification against the system roots.
        _ => Ok(CertificateCheckStatus::CertificatePassthrough),
    });
    cb.transfer_progress(move |p| {
        if p.received_bytes() as u64 > limits.max_bytes {
            seen.too_large.set(true);
            return false;
        }
        if Instant::now() > limits.deadline {
            seen.timed_out.set(true);
            return false;
        }
        true
    });
    cb
}

fn classify(e: &git2::Error, seen: &Seen, req: &Request, limits: &Limits) -> SourceError {
    if seen.too_large.get() {
        return SourceError::new(
            Reason::RepositoryTooLarge,
            format!(
                "{} is larger than the limit of {} MiB",
                req.url,
                limits.max_bytes / (1024 * 1024)
            ),
        );
    }
    if seen.timed_out.get() || Instant::now() > limits.deadline {
        return SourceError::new(Reason::SourceTimeout, format!("fetching {} took too long", req.url));
    }
    if seen.host_key_refused.get() {
        return SourceError::new(
            Reason::HostKeyMismatch,
            format!("the host key of {} is not in the Secret's known_hosts", req.url),
        );
    }
    if seen.auth_missing.get() {
        return SourceError::new(
            Reason::AuthenticationFailed,
            format!(
                "{} needs credentials: set source.git.secretRef to a Secret with `token`, `username`/`password` or an ssh key",
                req.url
            ),
        );
    }
    if seen.auth_refused.get() || e.code() == ErrorCode::Auth {
        return SourceError::new(
            Reason::AuthenticationFailed,
            format!("{} refused the credentials of the Secret", req.url),
        );
    }
    let detail = e.message().trim().to_string();
    match e.class() {
        ErrorClass::Net | ErrorClass::Http | ErrorClass::Ssl | ErrorClass::Ssh | ErrorClass::Os => {
            SourceError::new(Reason::SourceUnreachable, format!("cannot fetch {}: {detail}", req.url))
        }
        _ => SourceError::new(
            Reason::SourceUnreachable,
            format!("git error for {}: {detail}", req.url),
        ),
    }
}

/// The bare repository caching `url` for `tenant` inside `cache_dir`: every tenant has its own
/// copy, so that nothing one tenant fetched with its credentials answers another.
pub fn cache_path(cache_dir: &Path, tenant: &str, url: &str) -> std::path::PathBuf {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    // Length-prefixed: no (tenant, url) pair can be spelled as another.
    h.update((tenant.len() as u64).to_be_bytes());
    h.update(tenant.as_bytes());
    h.update(url.as_bytes());
    let digest = h.finalize();
    let name: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    cache_dir.join(format!("{name}.git"))
}

fn open_cache(path: &Path) -> Result<Repository, SourceError> {
    let repo = match Repository::open_bare(path) {
        Ok(r) => r,
        Err(_) => {
            // A half-written directory from a crash is replaced.
            let _ = std::fs::remove_dir_all(path);
            Repository::init_bare(path).map_err(|e| {
                SourceError::new(
                    Reason::SourceCacheError,
                    format!("cannot create the git cache: {}", e.message()),
                )
            })?
        }
    };
    // Mark use for the cache's least-recently-used pruning.
    let _ = std::fs::write(path.join("microplane-used"), b"");
    Ok(repo)
}

/// Resolves `req` to a commit and a strategy with the bare repository at `repo` (its
/// [`cache_path`]; created when missing). Blocks; honours `limits`.
pub fn resolve(
    repo: &Path,
    req: &Request,
    creds: &Credentials,
    transport: &Transport,
    limits: Limits,
) -> Result<Resolved, SourceError> {
    if let (Transport::Ssh { .. }, false) = (
        transport,
        matches!(creds, Credentials::Ssh { known_hosts: Some(k), .. } if !k.trim().is_empty()),
    ) {
        return Err(SourceError::new(
            Reason::HostKeyNotPinned,
            "ssh sources need a Secret with `ssh-privatekey` and `known_hosts`: unknown host keys are refused",
        ));
    }
    let repo = open_cache(repo)?;
    let seen = Seen::default();
    let commit = find_commit(&repo, req, creds, transport, limits, &seen)?;
    let strategy = inspect(&repo, commit, req)?;
    Ok(Resolved {
        commit: commit.to_string(),
        strategy,
    })
}

fn find_commit(
    repo: &Repository,
    req: &Request,
    creds: &Credentials,
    transport: &Transport,
    limits: Limits,
    seen: &Seen,
) -> Result<Oid, SourceError> {
    let mut remote = repo.remote_anonymous(&req.url).map_err(|e| {
        SourceError::new(
            Reason::InvalidSource,
            format!("invalid git URL {}: {}", req.url, e.message()),
        )
    })?;
    let fail = |e: git2::Error| classify(&e, seen, req, &limits);
    let not_found = || {
        SourceError::new(
            Reason::RevisionNotFound,
            format!("{} not found in {}", req.revision, req.url),
        )
    };

    let fetch = |remote: &mut git2::Remote<'_>, specs: &[String]| -> Result<(), SourceError> {
        let mut opts = FetchOptions::new();
        opts.remote_callbacks(callbacks(creds, transport, limits, seen))
            .download_tags(AutotagOption::None);
        remote.fetch(specs, Some(&mut opts), None).map_err(fail)
    };

    // A full commit id already in the cache needs no network at all.
    if let Revision::Commit(c) = &req.revision
        && let Ok(commit) = repo.find_commit_by_prefix(c)
    {
        return Ok(commit.id());
    }
    let (wanted_ref, advertised) = {
        let conn = remote
            .connect_auth(Direction::Fetch, Some(callbacks(creds, transport, limits, seen)), None)
            .map_err(fail)?;
        let heads: Vec<(String, Oid)> = conn
            .list()
            .map_err(fail)?
            .iter()
            .map(|h| (h.name().to_string(), h.oid()))
            .collect();
        let wanted = match &req.revision {
            Revision::Default => Some(
                conn.default_branch()
                    .ok()
                    .and_then(|b| b.as_str().map(str::to_owned))
                    .ok_or_else(|| {
                        SourceError::new(Reason::RevisionNotFound, format!("{} has no default branch", req.url))
                    })?,
            ),
            Revision::Branch(b) => Some(format!("refs/heads/{b}")),
            Revision::Tag(t) => Some(format!("refs/tags/{t}")),
            Revision::Commit(_) => None,
        };
        (wanted, heads)
    };
    match (&req.revision, wanted_ref) {
        (Revision::Commit(c), _) => {
            let c = c.to_ascii_lowercase();
            fetch(
                &mut remote,
                &[
                    "+refs/heads/*:refs/remotes/origin/*".to_string(),
                    "+refs/tags/*:refs/tags/*".to_string(),
                ],
            )?;
            if advertised.is_empty() {
                return Err(not_found());
            }
            repo.find_commit_by_prefix(&c).map(|c| c.id()).map_err(|_| not_found())
        }
        (_, Some(name)) => {
            let oid = advertised
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, o)| *o)
                .ok_or_else(not_found)?;
            if repo.find_commit(oid).is_err() {
                fetch(&mut remote, &[format!("+{name}:{name}")])?;
            }
            // An annotated tag names a tag object: peel it to its commit.
            repo.find_object(oid, None)
                .and_then(|o| o.peel_to_commit())
                .map(|c| c.id())
                .map_err(|_| not_found())
        }
        (_, None) => Err(not_found()),
    }
}

/// Finds the path in the commit's tree and chooses the strategy.
fn inspect(repo: &Repository, commit: Oid, req: &Request) -> Result<Strategy, SourceError> {
    let short = &commit.to_string()[..12];
    let tree = repo.find_commit(commit).and_then(|c| c.tree()).map_err(|e| {
        SourceError::new(
            Reason::SourceCacheError,
            format!("cannot read commit {short}: {}", e.message()),
        )
    })?;
    let dir = if req.path.is_empty() {
        tree
    } else {
        let entry = tree.get_path(Path::new(&req.path)).map_err(|_| {
            SourceError::new(
                Reason::PathNotFound,
                format!("path {} does not exist at commit {short}", req.path),
            )
        })?;
        if entry.kind() != Some(git2::ObjectType::Tree) {
            let what = if entry.filemode() == 0o120000 {
                "a symbolic link"
            } else {
                "not a directory"
            };
            return Err(SourceError::new(
                Reason::PathNotFound,
                format!("path {} is {what} at commit {short}", req.path),
            ));
        }
        entry
            .to_object(repo)
            .and_then(|o| o.peel_to_tree())
            .map_err(|e| SourceError::new(Reason::SourceCacheError, e.message().to_string()))?
    };
    // A regular file (never a link, which could point outside the source).
    let has = |name: &str| {
        dir.get_path(Path::new(name))
            .is_ok_and(|e| e.kind() == Some(git2::ObjectType::Blob) && e.filemode() != 0o120000)
    };
    strategy::choose(req.strategy, Some(&req.dockerfile), has).map_err(|e| {
        let at = if req.path.is_empty() {
            "the repository root".to_string()
        } else {
            req.path.clone()
        };
        SourceError::new(Reason::NothingToBuild, format!("{} in {at} at commit {short}", e.0))
    })
}

/// Total size of a directory tree in bytes.
pub fn dir_size(path: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&p) else { continue };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}
