//! Image references and digests, as a registry client reads them: what `BUILD_IMAGE` names, the
//! reference a build pushes to, and the manifest digest it reports.

use std::fmt;
use std::str::FromStr;

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

/// A repository name's registry host, if it names one, and its path. Like a registry client: the
/// first component is a host when more components follow and it has a `.` or a `:` or is
/// `localhost`.
fn split_host(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => (Some(first), path),
        _ => (None, name),
    }
}

impl Reference {
    /// The registry host (`host[:port]`) the name starts with, if any.
    pub fn registry(&self) -> Option<&str> {
        split_host(&self.name).0
    }

    /// The repository path in its registry (the name without the host).
    pub fn path(&self) -> &str {
        split_host(&self.name).1
    }

    /// The same repository path, tag and digest in the registry at `registry` (`host[:port]`),
    /// whichever registry the name gave, if any: a registry is reached at another address from
    /// where the build runs than from where the image is pulled.
    pub fn on_registry(&self, registry: &str) -> Result<Self, String> {
        if !valid_host(registry) {
            return Err(format!("{registry:?} is not a registry address (host[:port])"));
        }
        Ok(Self {
            name: format!("{registry}/{}", self.path()),
            tag: self.tag.clone(),
            digest: self.digest.clone(),
        })
    }
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
        let (host, path) = split_host(name);
        let host_ok = host.is_none_or(valid_host);
        if !host_ok || !path.split('/').all(valid_component) || name.len() > 255 {
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
    fn moves_references_to_another_registry_address() {
        let r: Reference = "localhost:5000/micro/hello-git:0a1b".parse().unwrap();
        assert_eq!((r.registry(), r.path()), (Some("localhost:5000"), "micro/hello-git"));
        let pushed = r.on_registry("10.199.12.2:5000").unwrap();
        assert_eq!(pushed.to_string(), "10.199.12.2:5000/micro/hello-git:0a1b");
        assert_eq!(pushed.registry(), Some("10.199.12.2:5000"));
        // Hosts without a port, `localhost` alone, and names without a host.
        let r: Reference = "registry.local/t/s:1".parse().unwrap();
        assert_eq!(
            r.on_registry("127.0.0.1:5000").unwrap().to_string(),
            "127.0.0.1:5000/t/s:1"
        );
        let r: Reference = "localhost/t/s:1".parse().unwrap();
        assert_eq!(r.on_registry("h:1").unwrap().to_string(), "h:1/t/s:1");
        let r: Reference = "micro/hello:1".parse().unwrap();
        assert_eq!((r.registry(), r.path()), (None, "micro/hello"));
        assert_eq!(
            r.on_registry("10.0.0.1:5000").unwrap().to_string(),
            "10.0.0.1:5000/micro/hello:1"
        );
        let r: Reference = format!("host:80/a/b@sha256:{HEX}").parse().unwrap();
        assert_eq!(
            r.on_registry("h:2").unwrap().to_string(),
            format!("h:2/a/b@sha256:{HEX}")
        );
        for bad in ["", "h:", "h:port", "-h:5000", "h/x", "h:123456"] {
            assert!(r.on_registry(bad).is_err(), "{bad:?} accepted");
        }
    }
}
