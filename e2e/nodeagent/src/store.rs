//! The node's image store: executables built on this node, content-addressed.
//!
//! A build registers its executable as the blob `<root>/blobs/sha256/<hex>` (hex = the sha256 of
//! the file, as in an OCI layout) and its tagged reference as the file
//! `<root>/repositories/<name>/_tags/<tag>` holding the digest (the layout of a registry's storage;
//! `_tags` cannot clash with a name component, which starts with a letter or digit). Pods then run
//! `<name>@sha256:<hex>` or `<name>:<tag>` from here (see [`crate::images`]).

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A sha256 content digest, written `sha256:<64 lowercase hex>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest(String);

impl Digest {
    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

impl FromStr for Digest {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| format!("{s:?} is not a sha256 digest"))?;
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(Self(hex.to_string()))
        } else {
            Err(format!("{s:?} is not sha256: and 64 lowercase hex digits"))
        }
    }
}

/// An image reference: `<name>[:<tag>][@sha256:<hex>]`, the name being an optional registry host
/// (`host[:port]`) and lowercase path components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The repository name, e.g. `registry.local:5000/tenant/service`.
    pub name: String,
    /// The tag, if any.
    pub tag: Option<String>,
    /// The digest, if any.
    pub digest: Option<Digest>,
}

fn valid_component(c: &str) -> bool {
    // Lowercase letters and digits, separated by `.`, `_` or `-`: never `.` or `..` on its own.
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = c.as_bytes();
    b.first().is_some_and(alnum)
        && b.last().is_some_and(alnum)
        && b.iter().all(|b| alnum(b) || matches!(b, b'.' | b'_' | b'-'))
        && !c.contains("..")
}

fn valid_host(h: &str) -> bool {
    let (host, port) = match h.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (h, None),
    };
    let host_ok = host.split('.').all(|label| {
        !label.is_empty()
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    });
    host_ok && port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && !t.starts_with(['.', '-'])
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl FromStr for Reference {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => (rest, Some(d.parse::<Digest>()?)),
            None => (s, None),
        };
        // A tag follows the last `:` after the last `/` (an earlier `:` is a registry port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        let mut parts = name.split('/');
        let first = parts.next().unwrap_or_default();
        let components: Vec<&str> = parts.collect();
        // Like a registry client: the first component is a host when it has a `.` or `:` or is
        // `localhost` and more components follow.
        let first_ok = if !components.is_empty() && (first.contains(['.', ':']) || first == "localhost") {
            valid_host(first)
        } else {
            valid_component(first)
        };
        if !first_ok || !components.iter().all(|c| valid_component(c)) || name.len() > 255 {
            return Err(format!("{s:?} is not a valid image name"));
        }
        if let Some(t) = tag.filter(|t| !valid_tag(t)) {
            return Err(format!("{s:?}: {t:?} is not a valid tag"));
        }
        Ok(Self {
            name: name.to_string(),
            tag: tag.map(str::to_string),
            digest,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// The store under a root directory (`<agent state>/images`).
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

fn err(path: &Path) -> impl FnOnce(std::io::Error) -> String + '_ {
    move |e| format!("{}: {e}", path.display())
}

impl ImageStore {
    /// A store under `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The path of a blob (which may not exist).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join("sha256").join(digest.hex())
    }

    /// The blob of a digest, when the store has it.
    pub fn blob(&self, digest: &Digest) -> Option<PathBuf> {
        let path = self.blob_path(digest);
        path.is_file().then_some(path)
    }

    fn tag_path(&self, name: &str, tag: &str) -> PathBuf {
        self.root.join("repositories").join(name).join("_tags").join(tag)
    }

    /// Adds an executable as a blob (read-only, executable by anyone); its digest. Blocking.
    pub fn add_executable(&self, file: &Path) -> Result<Digest, String> {
        let blobs = self.root.join("blobs").join("sha256");
        std::fs::create_dir_all(&blobs).map_err(err(&blobs))?;
        // Hash while copying into a temporary file beside the blobs, then rename it into place, so
        // a blob is always complete.
        let mut tmp = tempfile::NamedTempFile::new_in(&blobs).map_err(err(&blobs))?;
        let mut src = std::fs::File::open(file).map_err(err(file))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = src.read(&mut buf).map_err(err(file))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            tmp.write_all(&buf[..n]).map_err(err(tmp.path()))?;
        }
        let hex: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        let digest = Digest(hex);
        let target = self.blob_path(&digest);
        // Closed before it is renamed: an executable still open for writing cannot be run.
        let tmp = tmp.into_temp_path();
        if !target.is_file() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o555)).map_err(err(&tmp))?;
            tmp.persist(&target)
                .map_err(|e| format!("{}: {}", target.display(), e.error))?;
        }
        Ok(digest)
    }

    /// Records that the tagged `reference` names `digest` (replacing an older record). Blocking.
    pub fn tag(&self, reference: &Reference, digest: &Digest) -> Result<(), String> {
        let tag = reference
            .tag
            .as_deref()
            .ok_or_else(|| format!("{reference} has no tag to record"))?;
        if self.blob(digest).is_none() {
            return Err(format!("{digest} is not in the image store"));
        }
        let path = self.tag_path(&reference.name, tag);
        let dir = path.parent().ok_or_else(|| format!("{}: no parent", path.display()))?;
        std::fs::create_dir_all(dir).map_err(err(dir))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err(dir))?;
        writeln!(tmp, "{digest}").map_err(err(tmp.path()))?;
        tmp.persist(&path)
            .map_err(|e| format!("{}: {}", path.display(), e.error))?;
        Ok(())
    }

    /// The digest a tagged reference was recorded with, if any.
    pub fn lookup(&self, reference: &Reference) -> Option<Digest> {
        let tag = reference.tag.as_deref()?;
        std::fs::read_to_string(self.tag_path(&reference.name, tag))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_references() {
        let r: Reference = "registry.local:5000/micro/hello:0a1b".parse().unwrap();
        assert_eq!(r.name, "registry.local:5000/micro/hello");
        assert_eq!(r.tag.as_deref(), Some("0a1b"));
        assert_eq!(r.digest, None);
        let r: Reference = format!("localhost/micro/hello@sha256:{HEX}").parse().unwrap();
        assert_eq!((r.name.as_str(), r.tag.as_deref()), ("localhost/micro/hello", None));
        assert_eq!(r.digest.unwrap().to_string(), format!("sha256:{HEX}"));
        let r: Reference = format!("host:80/a/b:t@sha256:{HEX}").parse().unwrap();
        assert_eq!(r.to_string(), format!("host:80/a/b:t@sha256:{HEX}"));
        assert!("helloworld".parse::<Reference>().is_ok());
        for bad in [
            "",
            "UPPER/x:1",
            "a//b",
            "a/../b:1",
            "../x",
            "a/.b",
            "a/b:",
            "a/b:-x",
            "a/b@sha256:abc",
            "a/b@md5:abc",
            "a/b:t/c",
            "a b",
            "-host.x/a:1",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad:?} parsed");
        }
        assert!(format!("sha256:{}", HEX.to_uppercase()).parse::<Digest>().is_err());
    }

    #[test]
    fn stores_blobs_by_content_and_tags() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::new(dir.path().join("images"));
        let exe = dir.path().join("exe");
        std::fs::write(&exe, b"#!/bin/sh\necho hi\n").unwrap();
        let d = store.add_executable(&exe).unwrap();
        // sha256 of the bytes above.
        assert_eq!(d.hex().len(), 64);
        let blob = store.blob(&d).unwrap();
        assert_eq!(std::fs::read(&blob).unwrap(), b"#!/bin/sh\necho hi\n");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&blob).unwrap().permissions().mode() & 0o777, 0o555);
        assert_eq!(store.add_executable(&exe).unwrap(), d, "adding again is idempotent");

        let r: Reference = "localhost:5000/micro/hello:abc".parse().unwrap();
        assert_eq!(store.lookup(&r), None);
        store.tag(&r, &d).unwrap();
        assert_eq!(store.lookup(&r), Some(d.clone()));
        let other: Reference = "localhost:5000/micro/hello:def".parse().unwrap();
        assert_eq!(store.lookup(&other), None);
        let untagged: Reference = "localhost:5000/micro/hello".parse().unwrap();
        assert!(store.tag(&untagged, &d).is_err());
        let unknown = Digest(HEX.into());
        assert!(store.tag(&other, &unknown).is_err(), "a tag needs its blob");
    }
}
