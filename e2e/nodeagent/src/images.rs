//! Which image runs as which binary: `localhost/microplane/<name>:<tag>` is the workspace binary
//! `<name>` (built with `cargo build -p <name>`). Nothing else can run on this node.

use std::path::{Path, PathBuf};

/// Registry prefix of images this node can run.
pub const PREFIX: &str = "localhost/microplane/";

/// Why an image cannot run here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// Not a `localhost/microplane/…` image.
    #[error(
        "image {0} cannot run on this node: only localhost/microplane/<name>:<tag> images map to workspace binaries"
    )]
    Foreign(String),
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

/// The path of the binary an image runs, which must exist in `bin_dir`.
pub fn resolve(image: &str, bin_dir: &Path) -> Result<PathBuf, ImageError> {
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
}
