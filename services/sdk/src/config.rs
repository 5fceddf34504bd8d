//! The service's view of the `Config` objects delivered to its pod (docs/api.md).
//!
//! The operator mounts each Config listed by the MicroService at
//! `$MICRO_CONFIG_DIR/<config>/config.json` (the document) and `secrets.json` (only the secret values,
//! at their paths). Per Config, the secrets are deep-merged over the document; the Configs are then
//! deep-merged in name order into one document, which [`Config::get`] reads with dot-separated paths
//! (`helloworld.greeting`), the way Micro's config service did.
//!
//! With `rollout: Live` the kubelet swaps the files in place (a `..data` symlink swap), so
//! [`Config::watch`] re-reads them every interval and publishes a new immutable [`Snapshot`] when
//! the content changed; a file that does not parse keeps the last good snapshot. Handlers read the
//! current snapshot per request, or [`Config::subscribe`] to be told of changes.
//!
//! Values can be secret: neither [`Snapshot`] nor [`Config`] prints values in `Debug`, and errors
//! name paths, never values.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tokio::sync::watch;

/// File name of a Config's document.
pub const DOCUMENT_FILE: &str = "config.json";
/// File name of a Config's secret values.
pub const SECRETS_FILE: &str = "secrets.json";
/// How often [`Config::watch`] re-reads the files when the service does not say otherwise.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How long one re-read may take before it counts as failed.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the configuration could not be read, or a value not be converted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A directory or file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
    /// A file is not JSON. The message carries the position, never the content.
    #[error("{path} is not valid JSON (line {line}, column {column})")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where the parser stopped.
        line: usize,
        /// Where the parser stopped.
        column: usize,
    },
    /// The value at a path does not convert to the requested type (the value is not shown: it may
    /// be a secret).
    #[error("config value at {path:?} is not a {expected}")]
    Type {
        /// The dot-separated path.
        path: String,
        /// The requested Rust type.
        expected: &'static str,
    },
    /// Reading the files took too long or the reading task failed.
    #[error("reading the configuration did not finish: {0}")]
    Stalled(String),
}

/// One immutable version of the configuration.
#[derive(Clone, PartialEq)]
pub struct Snapshot {
    configs: BTreeMap<String, Value>,
    document: Value,
}

impl Snapshot {
    /// Builds a snapshot from each Config's document (secrets already merged), merging them in name
    /// order into one document.
    pub fn from_configs(configs: BTreeMap<String, Value>) -> Self {
        let mut document = Value::Object(Map::new());
        for value in configs.values() {
            merge(&mut document, value.clone());
        }
        Self { configs, document }
    }

    /// The merged document of every Config.
    pub fn document(&self) -> &Value {
        &self.document
    }

    /// The value at a dot-separated `path` of the merged document (`""` is the whole document).
    /// Path segments name object keys, or index arrays when numeric.
    pub fn get(&self, path: &str) -> Option<&Value> {
        lookup(&self.document, path)
    }

    /// The value at `path` in the Config named `config` only.
    pub fn get_in(&self, config: &str, path: &str) -> Option<&Value> {
        lookup(self.configs.get(config)?, path)
    }

    /// The names of the Configs in this snapshot, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.configs.keys().map(String::as_str)
    }
}

impl Default for Snapshot {
    /// No Configs: the document is an empty object.
    fn default() -> Self {
        Self::from_configs(BTreeMap::new())
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values may be secrets: show which Configs are present, never their content.
        f.debug_struct("Snapshot")
            .field("configs", &self.configs.keys())
            .finish_non_exhaustive()
    }
}

/// A handle on the current configuration, cheap to clone and share with handlers.
#[derive(Clone)]
pub struct Config {
    dir: Option<PathBuf>,
    tx: Arc<watch::Sender<Arc<Snapshot>>>,
}

impl Config {
    /// A configuration with nothing in it (no `MICRO_CONFIG_DIR`).
    pub fn empty() -> Self {
        Self::from_snapshot(None, Snapshot::default())
    }

    /// A fixed configuration holding one Config named `default` with `document`: for tests.
    pub fn from_value(document: Value) -> Self {
        Self::from_snapshot(
            None,
            Snapshot::from_configs(BTreeMap::from([("default".to_string(), document)])),
        )
    }

    /// Reads every Config under `dir` once. A missing `dir` gives an empty configuration (the
    /// platform mounts it before the container starts, so it only happens outside a pod); an
    /// unreadable or invalid file is an error.
    pub fn load(dir: impl Into<PathBuf>) -> Result<Self, ConfigError> {
        let dir = dir.into();
        let snapshot = read_dir(&dir)?;
        Ok(Self::from_snapshot(Some(dir), snapshot))
    }

    fn from_snapshot(dir: Option<PathBuf>, snapshot: Snapshot) -> Self {
        let (tx, _) = watch::channel(Arc::new(snapshot));
        Self { dir, tx: Arc::new(tx) }
    }

    /// The directory the configuration is read from, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The current snapshot. Hold it for the length of a request to read consistent values.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.tx.borrow().clone()
    }

    /// The current value at a dot-separated path of the merged document.
    pub fn get(&self, path: &str) -> Option<Value> {
        self.tx.borrow().get(path).cloned()
    }

    /// The current value at `path`, converted to `T`; `Ok(None)` when the path is absent or null.
    pub fn get_as<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>, ConfigError> {
        match self.get(path) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => serde_json::from_value(value).map(Some).map_err(|_| ConfigError::Type {
                path: path.to_string(),
                expected: std::any::type_name::<T>(),
            }),
        }
    }

    /// A receiver that sees every new snapshot (`changed().await`), starting from the current one.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }

    /// Re-reads the files and publishes a new snapshot if the content changed. Returns whether it
    /// did. On error the current snapshot stays. A configuration without a directory never changes.
    pub async fn reload(&self) -> Result<bool, ConfigError> {
        let Some(dir) = self.dir.clone() else {
            return Ok(false);
        };
        let read = tokio::task::spawn_blocking(move || read_dir(&dir));
        let snapshot = match tokio::time::timeout(READ_TIMEOUT, read).await {
            Ok(Ok(result)) => result?,
            Ok(Err(join)) => return Err(ConfigError::Stalled(join.to_string())),
            Err(_) => return Err(ConfigError::Stalled(format!("no result after {READ_TIMEOUT:?}"))),
        };
        Ok(self.tx.send_if_modified(|current| {
            if **current == snapshot {
                return false;
            }
            *current = Arc::new(snapshot);
            true
        }))
    }

    /// Re-reads the files every `interval` until the returned future is dropped (the
    /// [`Service`](crate::Service) runs it while it serves). Problems are logged once each, by path
    /// and position only; the last good snapshot stays in force.
    pub async fn watch(self, interval: Duration) {
        if self.dir.is_none() {
            return;
        }
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await; // the first tick is immediate: the snapshot was just loaded
        let mut last_problem: Option<String> = None;
        loop {
            ticker.tick().await;
            match self.reload().await {
                Ok(changed) => {
                    if changed {
                        let names: Vec<String> = self.snapshot().names().map(str::to_string).collect();
                        tracing::info!(configs = ?names, "configuration changed");
                    }
                    if last_problem.take().is_some() {
                        tracing::info!("configuration readable again");
                    }
                }
                Err(err) => {
                    let problem = err.to_string();
                    if last_problem.as_deref() != Some(problem.as_str()) {
                        tracing::warn!(error = %problem, "keeping the last good configuration");
                        last_problem = Some(problem);
                    }
                }
            }
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("dir", &self.dir)
            .field("snapshot", &*self.tx.borrow())
            .finish()
    }
}

/// Deep-merges `overlay` into `base`: objects merge key by key, anything else replaces.
pub fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, overlay) => *base = overlay,
    }
}

/// The value at a dot-separated `path` of `value` (`""` is `value` itself).
pub fn lookup<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    if path.is_empty() {
        return Some(value);
    }
    path.split('.').try_fold(value, |node, segment| match node {
        Value::Object(map) => map.get(segment),
        Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// Reads every Config directory under `dir`. Entries starting with `.` are the kubelet's
/// (`..data`, `..<timestamp>`) and are skipped.
fn read_dir(dir: &Path) -> Result<Snapshot, ConfigError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Snapshot::default()),
        Err(source) => {
            return Err(ConfigError::Read {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut configs = BTreeMap::new();
    for entry in entries {
        let entry = entry.map_err(|source| ConfigError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // `is_dir` follows symlinks: the kubelet's `<config> -> ..data/<config>`.
        if name.starts_with('.') || !entry.path().is_dir() {
            continue;
        }
        let mut document = read_json(&entry.path().join(DOCUMENT_FILE))?;
        if let Some(secrets) = read_json(&entry.path().join(SECRETS_FILE))? {
            merge(document.get_or_insert_with(|| Value::Object(Map::new())), secrets);
        }
        configs.insert(name, document.unwrap_or_else(|| Value::Object(Map::new())));
    }
    Ok(Snapshot::from_configs(configs))
}

/// The JSON in `path`, `None` when the file does not exist or is empty.
fn read_json(path: &Path) -> Result<Option<Value>, ConfigError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|err| ConfigError::Parse {
            path: path.to_path_buf(),
            line: err.line(),
            column: err.column(),
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use serde_json::json;

    use super::*;

    fn write(dir: &Path, config: &str, file: &str, content: &str) {
        std::fs::create_dir_all(dir.join(config)).unwrap();
        std::fs::write(dir.join(config).join(file), content).unwrap();
    }

    #[test]
    fn merges_objects_deeply_and_replaces_the_rest() {
        let mut base = json!({"a": {"b": 1, "c": [1, 2]}, "d": "x"});
        merge(&mut base, json!({"a": {"c": [3], "e": true}, "d": {"f": null}}));
        assert_eq!(base, json!({"a": {"b": 1, "c": [3], "e": true}, "d": {"f": null}}));
    }

    #[test]
    fn looks_up_dot_paths() {
        let doc = json!({"helloworld": {"greeting": "Hi", "list": [{"x": 1}]}, "a.b": 2});
        assert_eq!(lookup(&doc, "helloworld.greeting"), Some(&json!("Hi")));
        assert_eq!(lookup(&doc, "helloworld.list.0.x"), Some(&json!(1)));
        assert_eq!(lookup(&doc, ""), Some(&doc));
        for missing in [
            "nope",
            "helloworld.greeting.more",
            "helloworld.list.1",
            "helloworld.list.x",
            "a.b",
            ".",
        ] {
            assert_eq!(lookup(&doc, missing), None, "{missing}");
        }
    }

    #[test]
    fn loads_documents_with_secrets_merged_and_configs_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "b-greeter",
            DOCUMENT_FILE,
            r#"{"helloworld": {"greeting": "Hi", "n": 1}}"#,
        );
        write(
            dir.path(),
            "b-greeter",
            SECRETS_FILE,
            r#"{"helloworld": {"token": "s3cret"}}"#,
        );
        write(
            dir.path(),
            "a-base",
            DOCUMENT_FILE,
            r#"{"helloworld": {"greeting": "Hello", "m": 2}}"#,
        );
        write(
            dir.path(),
            "only-secrets",
            SECRETS_FILE,
            r#"{"db": {"password": "pw"}}"#,
        );
        std::fs::create_dir_all(dir.path().join("..2026_01_01_00_00_00.000")).unwrap();
        std::fs::write(dir.path().join("stray-file"), "ignored").unwrap();

        let config = Config::load(dir.path()).unwrap();
        assert_eq!(config.get("helloworld.greeting"), Some(json!("Hi")), "later names win");
        assert_eq!(config.get("helloworld.m"), Some(json!(2)));
        assert_eq!(config.get("helloworld.token"), Some(json!("s3cret")));
        assert_eq!(config.get("db.password"), Some(json!("pw")));
        assert_eq!(config.get_as::<u32>("helloworld.n").unwrap(), Some(1));
        assert_eq!(config.get_as::<u32>("helloworld.absent").unwrap(), None);
        let snapshot = config.snapshot();
        assert_eq!(
            snapshot.names().collect::<Vec<_>>(),
            ["a-base", "b-greeter", "only-secrets"]
        );
        assert_eq!(snapshot.get_in("a-base", "helloworld.greeting"), Some(&json!("Hello")));
        assert_eq!(snapshot.get_in("nope", ""), None);
    }

    #[test]
    fn never_shows_values() {
        let config = Config::from_value(json!({"db": {"password": "s3cret"}}));
        assert!(!format!("{config:?}").contains("s3cret"));
        let err = config.get_as::<u32>("db.password").unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
        assert!(err.to_string().contains("db.password"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "c", SECRETS_FILE, r#"{"password": "s3cret" oops}"#);
        let err = Config::load(dir.path()).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { line: 1, .. }), "{err:?}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn missing_or_empty_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::load(dir.path().join("absent")).unwrap();
        assert_eq!(config.get(""), Some(json!({})));
        write(dir.path(), "c", DOCUMENT_FILE, "\n");
        let config = Config::load(dir.path()).unwrap();
        assert_eq!(config.snapshot().get_in("c", ""), Some(&json!({})));
        assert_eq!(Config::empty().get("a"), None);
    }

    #[tokio::test]
    async fn reload_publishes_changes_and_keeps_the_last_good_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "c", DOCUMENT_FILE, r#"{"k": 1}"#);
        let config = Config::load(dir.path()).unwrap();
        let mut rx = config.subscribe();
        assert!(!config.reload().await.unwrap(), "nothing changed");
        assert!(!rx.has_changed().unwrap());

        write(dir.path(), "c", DOCUMENT_FILE, r#"{"k": 2}"#);
        assert!(config.reload().await.unwrap());
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().get("k"), Some(&json!(2)));

        write(dir.path(), "c", DOCUMENT_FILE, r#"{"k": "#);
        assert!(config.reload().await.is_err());
        assert_eq!(config.get("k"), Some(json!(2)), "the last good value stays");
        assert!(!rx.has_changed().unwrap());
        assert!(!Config::empty().reload().await.unwrap());
    }

    /// The kubelet's atomic writer: `<config>` links to `..data/<config>`, and `..data` links to a
    /// timestamped directory that is swapped on update.
    #[cfg(unix)]
    #[tokio::test]
    async fn watch_follows_symlink_swaps() {
        use std::os::unix::fs::symlink;

        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(
            &root.join("..v1"),
            "greeter",
            DOCUMENT_FILE,
            r#"{"helloworld": {"greeting": "Hi"}}"#,
        );
        symlink("..v1", root.join("..data")).unwrap();
        symlink("..data/greeter", root.join("greeter")).unwrap();
        let config = Config::load(root).unwrap();
        assert_eq!(config.get("helloworld.greeting"), Some(json!("Hi")));

        let mut rx = config.subscribe();
        let watcher = tokio::spawn(config.clone().watch(Duration::from_millis(20)));
        write(
            &root.join("..v2"),
            "greeter",
            DOCUMENT_FILE,
            r#"{"helloworld": {"greeting": "Howdy"}}"#,
        );
        symlink("..v2", root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();

        tokio::time::timeout(Duration::from_secs(10), rx.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(config.get("helloworld.greeting"), Some(json!("Howdy")));
        watcher.abort();
    }
}
