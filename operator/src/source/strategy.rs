//! Which build a source gets, from the names at its `path`: pure functions.

use microplane_crds::BuildStrategy;

/// A concrete build strategy (never `Auto`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Build with a Dockerfile.
    Dockerfile,
    /// `cargo build` of the crate at the path.
    Rust,
    /// `go build` of the module at the path.
    Go,
}

impl Strategy {
    /// The spelling used in the CRD, the build Job's environment and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dockerfile => "Dockerfile",
            Self::Rust => "Rust",
            Self::Go => "Go",
        }
    }
}

/// The default Dockerfile name.
pub const DEFAULT_DOCKERFILE: &str = "Dockerfile";

/// Why nothing can be built at the path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NothingToBuild(pub String);

/// Chooses the strategy: an explicit one needs its marker file (`Dockerfile` or the configured one,
/// `Cargo.toml`, `go.mod`); `Auto` prefers a Dockerfile, then `Cargo.toml`, then `go.mod`.
/// `has(path)` says whether a file exists, relative to the source path.
pub fn choose(
    wanted: BuildStrategy,
    dockerfile: Option<&str>,
    has: impl Fn(&str) -> bool,
) -> Result<Strategy, NothingToBuild> {
    let dockerfile = dockerfile.unwrap_or(DEFAULT_DOCKERFILE);
    let found = |s: Strategy| match s {
        Strategy::Dockerfile => has(dockerfile),
        Strategy::Rust => has("Cargo.toml"),
        Strategy::Go => has("go.mod"),
    };
    let marker = |s: Strategy| match s {
        Strategy::Dockerfile => dockerfile.to_string(),
        Strategy::Rust => "Cargo.toml".to_string(),
        Strategy::Go => "go.mod".to_string(),
    };
    let explicit = match wanted {
        BuildStrategy::Auto => None,
        BuildStrategy::Dockerfile => Some(Strategy::Dockerfile),
        BuildStrategy::Rust => Some(Strategy::Rust),
        BuildStrategy::Go => Some(Strategy::Go),
    };
    match explicit {
        Some(s) if found(s) => Ok(s),
        Some(s) => Err(NothingToBuild(format!(
            "strategy {} needs {}, which is not there",
            s.as_str(),
            marker(s)
        ))),
        None => [Strategy::Dockerfile, Strategy::Rust, Strategy::Go]
            .into_iter()
            .find(|s| found(*s))
            .ok_or_else(|| {
                NothingToBuild(format!(
                    "nothing to build: looked for {}, Cargo.toml and go.mod",
                    marker(Strategy::Dockerfile)
                ))
            }),
    }
}

/// A source path as the repository tree knows it: `""` for the root, else `a/b` with no `.`, `..`,
/// empty or absolute parts. `None` when the path would leave the repository.
pub fn clean_path(path: Option<&str>) -> Option<String> {
    let path = path.unwrap_or("");
    if path.starts_with('/') || path.contains('\\') || path.contains('\0') {
        return None;
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// A Dockerfile location relative to the source path, cleaned the same way; it must name a file.
pub fn clean_dockerfile(dockerfile: Option<&str>) -> Option<String> {
    let cleaned = clean_path(Some(dockerfile.unwrap_or(DEFAULT_DOCKERFILE)))?;
    (!cleaned.is_empty()).then_some(cleaned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(names: &'static [&'static str]) -> impl Fn(&str) -> bool {
        move |n| names.contains(&n)
    }

    #[test]
    fn auto_prefers_dockerfile_then_cargo_then_go() {
        let auto = BuildStrategy::Auto;
        assert_eq!(
            choose(auto, None, files(&["Dockerfile", "Cargo.toml", "go.mod"])),
            Ok(Strategy::Dockerfile)
        );
        assert_eq!(choose(auto, None, files(&["Cargo.toml", "go.mod"])), Ok(Strategy::Rust));
        assert_eq!(choose(auto, None, files(&["go.mod", "main.go"])), Ok(Strategy::Go));
        assert_eq!(
            choose(auto, Some("build/Containerfile"), files(&["build/Containerfile"])),
            Ok(Strategy::Dockerfile)
        );
    }

    #[test]
    fn nothing_buildable_names_what_was_looked_for() {
        let err = choose(BuildStrategy::Auto, None, files(&["README.md"])).unwrap_err();
        assert_eq!(err.0, "nothing to build: looked for Dockerfile, Cargo.toml and go.mod");
        let err = choose(BuildStrategy::Rust, None, files(&["go.mod"])).unwrap_err();
        assert_eq!(err.0, "strategy Rust needs Cargo.toml, which is not there");
        let err = choose(BuildStrategy::Dockerfile, Some("ci/Dockerfile"), files(&["Dockerfile"])).unwrap_err();
        assert_eq!(err.0, "strategy Dockerfile needs ci/Dockerfile, which is not there");
    }

    #[test]
    fn explicit_strategy_with_its_marker() {
        assert_eq!(
            choose(BuildStrategy::Go, None, files(&["Dockerfile", "go.mod"])),
            Ok(Strategy::Go)
        );
    }

    #[test]
    fn paths_stay_inside_the_repository() {
        assert_eq!(clean_path(None).as_deref(), Some(""));
        assert_eq!(clean_path(Some("")).as_deref(), Some(""));
        assert_eq!(clean_path(Some(".")).as_deref(), Some(""));
        assert_eq!(
            clean_path(Some("./services//helloworld/")).as_deref(),
            Some("services/helloworld")
        );
        assert_eq!(clean_path(Some("../x")), None);
        assert_eq!(clean_path(Some("a/../../x")), None);
        assert_eq!(clean_path(Some("a/..")), None);
        assert_eq!(clean_path(Some("/etc")), None);
        assert_eq!(clean_path(Some("a\\..\\b")), None);
        assert_eq!(clean_dockerfile(None).as_deref(), Some("Dockerfile"));
        assert_eq!(clean_dockerfile(Some("./")), None);
        assert_eq!(clean_dockerfile(Some("../Dockerfile")), None);
    }
}
