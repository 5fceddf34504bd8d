//! Which image runs as which executable: an image built on this node (by digest, or by the tag its
//! build registered; see [`crate::store`]), else `localhost/microplane/<name>:<tag>` as the
//! workspace binary `<name>` (built with `cargo build -p <name>`). Nothing else can run on this node.

use std::path::{Path, PathBuf};

use crate::store::{ImageStore, Reference};

/// Registry prefix of images this node can run.
pub const PREFIX: &str = "localhost/microplane/";

/// Why an image cannot run here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// Not a `localhost/microplane/…` image.
    #[error(
        "image {0} cannot run on this node: only images built here (by digest or tag) and localhost/microplane/<name>:<tag> (a workspace binary) can"
    )]
    Foreign(String),
    /// A digest this node has not built.
    #[error(
        "image {0} cannot run on this node: its digest is not in the node's image store (no build here produced it)"
    )]
    NotInStore(String),
    /// The name is not a plain crate name.
    #[error("image {0} does not name a workspace binary")]
    BadName(String),
    /// No such binary was built.
    #[error("binary {0} is not built (cargo build -p {1})")]
    NotBuilt(String, String),
}

/// The binary name of an image.
pub fn binary_name(image: &str) -> Result<String, ImageError> {
    let rest = image
        .strip_prefix(PREFIX)
        .ok_or_else(|| ImageError::Foreign(image.into()))?;
    let name = rest.split(['@', ':']).next().unwrap_or_default();
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if valid {
        Ok(name.to_string())
    } else {
        Err(ImageError::BadName(image.into()))
    }
}

/// The path of the executable an image runs: a blob of `store` when the image names its digest, or
/// a tag a build registered; otherwise a workspace binary, which must exist in `bin_dir`.
pub fn resolve(image: &str, bin_dir: &Path, store: &ImageStore) -> Result<PathBuf, ImageError> {
    if let Ok(reference) = image.parse::<Reference>() {
        let digest = reference.digest.clone().or_else(|| store.lookup(&reference));
        if let Some(blob) = digest.as_ref().and_then(|d| store.blob(d)) {
            return Ok(blob);
        }
        if reference.digest.is_some() && !image.starts_with(PREFIX) {
            return Err(ImageError::NotInStore(image.into()));
        }
    }
    let name = binary_name(image)?;
    let path = bin_dir.join(&name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(ImageError::NotBuilt(path.display().to_string(), name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_workspace_images_only() {
        assert_eq!(
            binary_name("localhost/microplane/helloworld:latest").unwrap(),
            "helloworld"
        );
        assert_eq!(
            binary_name("localhost/microplane/helloworld@sha256:abc").unwrap(),
            "helloworld"
        );
        assert_eq!(binary_name("localhost/microplane/helloworld").unwrap(), "helloworld");
        assert!(matches!(binary_name("nginx:1"), Err(ImageError::Foreign(_))));
        assert!(matches!(
            binary_name("localhost/microplane/../../bin/sh"),
            Err(ImageError::BadName(_))
        ));
        assert!(matches!(
            binary_name("localhost/microplane/a/b"),
            Err(ImageError::BadName(_))
        ));
        assert!(matches!(
            binary_name("localhost/microplane/:1"),
            Err(ImageError::BadName(_))
        ));
    }

    #[test]
    fn resolves_built_images_by_digest_and_tag() {
        let dir = tempfile::tempdir().unwrap();
        let bin_dir = dir.path().join("bin");
        std::fs::create_dir_all(&bin_dir).unwrap();
        std::fs::write(bin_dir.join("helloworld"), b"workspace").unwrap();
        let store = ImageStore::new(dir.path().join("images"));
        let exe = dir.path().join("built");
        std::fs::write(&exe, b"built from git").unwrap();
        let digest = store.add_executable(&exe).unwrap();
        let tagged: Reference = "registry.local/micro/hello:0123abcd".parse().unwrap();
        store.tag(&tagged, &digest).unwrap();
        let blob = store.blob(&digest).unwrap();

        let pinned = format!("registry.local/micro/hello@{digest}");
        assert_eq!(resolve(&pinned, &bin_dir, &store).unwrap(), blob);
        assert_eq!(
            resolve("registry.local/micro/hello:0123abcd", &bin_dir, &store).unwrap(),
            blob
        );
        // Tag and digest together: the digest decides.
        let both = format!("registry.local/micro/hello:other@{digest}");
        assert_eq!(resolve(&both, &bin_dir, &store).unwrap(), blob);

        let unknown = format!("registry.local/micro/hello@sha256:{}", "0".repeat(64));
        assert_eq!(
            resolve(&unknown, &bin_dir, &store),
            Err(ImageError::NotInStore(unknown.clone()))
        );
        assert!(matches!(
            resolve("registry.local/micro/hello:unbuilt", &bin_dir, &store),
            Err(ImageError::Foreign(_))
        ));
        assert!(matches!(
            resolve("nginx:1", &bin_dir, &store),
            Err(ImageError::Foreign(_))
        ));
        // Workspace binaries as before, also with a digest this node never stored.
        let workspace = bin_dir.join("helloworld");
        assert_eq!(
            resolve("localhost/microplane/helloworld:1", &bin_dir, &store).unwrap(),
            workspace
        );
        let ws_pinned = format!("localhost/microplane/helloworld@sha256:{}", "1".repeat(64));
        assert_eq!(resolve(&ws_pinned, &bin_dir, &store).unwrap(), workspace);
        assert!(matches!(
            resolve("localhost/microplane/other:1", &bin_dir, &store),
            Err(ImageError::NotBuilt(..))
        ));
    }
}
