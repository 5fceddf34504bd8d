//! The helloworld service as a repository of its own: [`helloworld_source`] copies the service and
//! its SDK and writes a workspace manifest of what the two inherit from this workspace's manifest,
//! read and written with `toml_edit` (formatting and comments of the copied tables are kept).

use std::path::Path;

use toml_edit::{Array, DocumentMut, Item, Table, TableLike, Value};

use super::{Error, Result, io};

/// The first lines of the written manifest.
const HEADER: &str = "# A workspace of the helloworld service and its SDK, written by microplane-e2e's\n\
                      # `helloworld_source` from the Microplane workspace manifest.\n";

/// The tables a manifest declares dependencies in, at the top level and under `[target.<cfg>]`.
const DEPENDENCY_TABLES: [&str; 3] = ["dependencies", "dev-dependencies", "build-dependencies"];

/// Writes into `dir` a repository tree that builds this workspace's helloworld service on its own,
/// offline: `services/sdk`, `services/helloworld` and the crates the SDK builds on (`wire`,
/// `runtime`) as they are here, a root `Cargo.toml` declaring a workspace of those with the
/// `[workspace.package]`, `[workspace.lints]` and profiles of the real root manifest and the
/// `[workspace.dependencies]` entries they inherit, and the real `Cargo.lock`.
/// `cargo build --offline -p helloworld` works in a clone of it.
pub fn helloworld_source(dir: &Path) -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let members = ["wire", "runtime", "services/sdk", "services/helloworld"];
    let read = |p: &Path| std::fs::read_to_string(p).map_err(io(p.display()));
    let workspace = read(&root.join("Cargo.toml"))?;
    let mut manifests = Vec::new();
    for m in members {
        copy_dir(&root.join(m), &dir.join(m))?;
        manifests.push(read(&root.join(m).join("Cargo.toml"))?);
    }
    let manifest = workspace_manifest(&workspace, &manifests, &members)?;
    std::fs::write(dir.join("Cargo.toml"), manifest).map_err(io("Cargo.toml"))?;
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).map_err(io("Cargo.lock"))?;
    std::fs::write(dir.join(".gitignore"), "/target\n").map_err(io(".gitignore"))?;
    Ok(())
}

/// Copies a source directory, leaving out build output (`target/`).
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(io(to.display()))?;
    for entry in std::fs::read_dir(from).map_err(io(from.display()))? {
        let entry = entry.map_err(io(from.display()))?;
        let kind = entry.file_type().map_err(io(entry.path().display()))?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            if entry.file_name() != "target" {
                copy_dir(&entry.path(), &target)?;
            }
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target).map_err(io(entry.path().display()))?;
        }
    }
    Ok(())
}

/// Parses a Cargo manifest; `what` names it in the error.
fn parse(text: &str, what: &str) -> Result<DocumentMut> {
    text.parse()
        .map_err(|e| Error::Invalid(format!("{what} is not valid TOML: {e}")))
}

/// The dependency names a member manifest inherits from `[workspace.dependencies]` (`name = {
/// workspace = true }`, `name.workspace = true` or a `[dependencies.name]` table with `workspace =
/// true`), in every dependency table, the `[target.<cfg>.…]` ones included.
fn inherited_dependencies(manifest: &DocumentMut) -> Vec<String> {
    fn in_table(t: &dyn TableLike) -> Vec<&dyn TableLike> {
        DEPENDENCY_TABLES
            .iter()
            .filter_map(|name| t.get(name)?.as_table_like())
            .collect()
    }
    let mut tables = in_table(manifest.as_table());
    if let Some(targets) = manifest.get("target").and_then(Item::as_table_like) {
        for (_, target) in targets.iter() {
            if let Some(target) = target.as_table_like() {
                tables.extend(in_table(target));
            }
        }
    }
    let mut out = Vec::new();
    for deps in tables {
        for (name, dep) in deps.iter() {
            let inherits = dep
                .as_table_like()
                .and_then(|d| d.get("workspace"))
                .and_then(Item::as_bool)
                .unwrap_or(false);
            if inherits && !out.iter().any(|o| o == name) {
                out.push(name.to_string());
            }
        }
    }
    out
}

/// The root manifest of a workspace of the member directories `paths`, whose manifests are
/// `members`, taking from the real root manifest `workspace` what the members inherit (see
/// [`helloworld_source`]): its resolver, `[workspace.package]`, `[workspace.lints]`, every profile
/// and the `[workspace.dependencies]` entries the members use.
fn workspace_manifest(workspace: &str, members: &[String], paths: &[&str]) -> Result<String> {
    let root = parse(workspace, "the workspace manifest")?;
    let mut wanted: Vec<String> = Vec::new();
    for m in members {
        for d in inherited_dependencies(&parse(m, "a member manifest")?) {
            if !wanted.contains(&d) {
                wanted.push(d);
            }
        }
    }
    let real = root.get("workspace").and_then(Item::as_table_like);
    let copied = |key: &str| real.and_then(|w| w.get(key)).cloned();

    let mut ws = Table::new();
    ws.decor_mut().set_prefix(HEADER);
    ws.insert("resolver", copied("resolver").unwrap_or_else(|| toml_edit::value("3")));
    ws.insert("members", toml_edit::value(paths.iter().copied().collect::<Array>()));
    for key in ["package", "lints"] {
        if let Some(item) = copied(key) {
            ws.insert(key, item);
        }
    }
    if let Some(mut deps) = copied("dependencies") {
        let missing: Vec<&String> = wanted.iter().filter(|w| deps.get(w.as_str()).is_none()).collect();
        if !missing.is_empty() {
            return Err(no_entries(&missing));
        }
        let keep = |name: &str| wanted.iter().any(|w| w == name);
        match &mut deps {
            Item::Table(t) => t.retain(|name, _| keep(name)),
            Item::Value(Value::InlineTable(t)) => t.retain(|name, _| keep(name)),
            _ => {}
        }
        ws.insert("dependencies", deps);
    } else if !wanted.is_empty() {
        return Err(no_entries(&wanted.iter().collect::<Vec<_>>()));
    }

    let mut out = DocumentMut::new();
    out.insert("workspace", Item::Table(ws));
    if let Some(profiles) = root.get("profile") {
        out.insert("profile", profiles.clone());
    }
    Ok(out.to_string())
}

fn no_entries(missing: &[&String]) -> Error {
    Error::Invalid(format!(
        "the workspace manifest has no [workspace.dependencies] entry for {missing:?}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The written manifest, parsed back.
    fn written(root: &str, members: &[&str]) -> DocumentMut {
        let members: Vec<String> = members.iter().map(|m| m.to_string()).collect();
        let out = workspace_manifest(root, &members, &["services/x", "services/y"]).unwrap();
        assert!(out.starts_with(HEADER), "{out}");
        out.parse().unwrap()
    }

    /// The keys of a table of `doc` at `path`.
    fn keys(doc: &DocumentMut, path: &[&str]) -> Vec<String> {
        let mut item = doc.as_item();
        for p in path {
            item = &item[p];
        }
        item.as_table_like()
            .map(|t| t.iter().map(|(k, _)| k.to_string()).collect())
            .unwrap_or_default()
    }

    const ROOT: &str = r#"
[workspace]
resolver = "3" # the 2024 resolver
members = ["a", "b"]

[workspace.package]
version = "0.1.0"
edition = "2024"

[workspace.dependencies]
serde = { version = "1", features = ["derive"] }
unused = "1"
tokio = { version = "1", features = [
  "macros", # a comment with a ] in it
] }
sdk = { path = "services/sdk" }
"quoted" = "2"
text = { version = "1", registry = """multi
line""" }

[workspace.dependencies.tables]
version = "3"
features = ["a"]

[workspace.dependencies.untouched]
version = "4"

[workspace.lints.rust]
unsafe_code = "forbid"

[workspace.lints.clippy]
unwrap_used = "warn"

# Comments on a profile.
[profile.dev]
debug = "line-tables-only"

[profile.image]
inherits = "dev"
"#;

    #[test]
    fn writes_a_workspace_manifest_of_what_the_members_inherit() {
        let member = r#"
[package]
name = "x"
version.workspace = true

[dependencies]
serde = { workspace = true }
sdk.workspace = true
local = { path = "../local" }
"quoted" = { workspace = true, features = ["q"] }
off = { workspace = false, version = "1" }

[build-dependencies.tokio]
workspace = true
features = ["rt"]

[target.'cfg(unix)'.dev-dependencies]
tables = { workspace = true }
"#;
        let other = "[dependencies]\nserde.workspace = true\ntext.workspace = true\n";
        let doc = written(ROOT, &[member, other]);
        assert_eq!(doc["workspace"]["resolver"].as_str(), Some("3"));
        let members: Vec<&str> = doc["workspace"]["members"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert_eq!(members, ["services/x", "services/y"]);
        assert_eq!(keys(&doc, &["workspace", "package"]), ["version", "edition"]);
        assert_eq!(
            keys(&doc, &["workspace", "dependencies"]),
            ["serde", "tokio", "sdk", "quoted", "text", "tables"]
        );
        assert_eq!(keys(&doc, &["workspace", "lints"]), ["rust", "clippy"]);
        assert_eq!(keys(&doc, &["profile"]), ["dev", "image"]);
        assert_eq!(
            doc["workspace"]["dependencies"]["text"]["registry"].as_str(),
            Some("multi\nline")
        );
        assert_eq!(
            doc["workspace"]["dependencies"]["tables"]["version"].as_str(),
            Some("3")
        );
        assert_eq!(doc["profile"]["image"]["inherits"].as_str(), Some("dev"));
        assert_eq!(doc.get("package").map(|_| ()), None);

        // The copied entries keep their text, comments in arrays included, and the root's order.
        let out = doc.to_string();
        assert!(
            out.contains("[workspace]\nresolver = \"3\" # the 2024 resolver\n"),
            "{out}"
        );
        assert!(out.contains("members = [\"services/x\", \"services/y\"]\n"), "{out}");
        assert!(
            out.contains("serde = { version = \"1\", features = [\"derive\"] }\n"),
            "{out}"
        );
        assert!(out.contains("\"macros\", # a comment with a ] in it\n] }"), "{out}");
        assert!(
            out.contains("\n[workspace.dependencies.tables]\nversion = \"3\"\n"),
            "{out}"
        );
        assert!(
            out.contains("[workspace.lints.rust]\nunsafe_code = \"forbid\"\n"),
            "{out}"
        );
        assert!(out.contains("# Comments on a profile.\n[profile.dev]\n"), "{out}");
        let order = [
            "[workspace]",
            "[workspace.package]",
            "[workspace.dependencies]",
            "[workspace.lints.rust]",
        ];
        let at: Vec<usize> = order.iter().map(|h| out.find(&format!("{h}\n")).unwrap()).collect();
        assert!(at.is_sorted(), "{out}");
        assert!(out.find("[profile.dev]").unwrap() > at[3], "{out}");
        for gone in ["unused", "untouched", "off", "local", "[package]", "[\"a\", \"b\"]"] {
            assert!(!out.contains(gone), "{gone} in {out}");
        }
    }

    #[test]
    fn keeps_defaults_and_refuses_what_it_cannot_write() {
        // No resolver, no dependencies to inherit: resolver 3 and the rest as found.
        let doc = written(
            "[workspace]\nmembers = []\n\n[workspace.dependencies]\nx = \"1\"\n",
            &[""],
        );
        assert_eq!(doc["workspace"]["resolver"].as_str(), Some("3"));
        assert!(keys(&doc, &["workspace", "dependencies"]).is_empty());
        assert!(doc.get("profile").is_none());

        let member = "[dependencies]\nnope = { workspace = true }\nserde.workspace = true\n";
        let missing = workspace_manifest(ROOT, &[member.into()], &["x"]).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "the workspace manifest has no [workspace.dependencies] entry for [\"nope\"]"
        );
        let none = workspace_manifest("[workspace]\n", &[member.into()], &["x"]).unwrap_err();
        assert!(none.to_string().contains("[\"nope\", \"serde\"]"), "{none}");
        // Not TOML: an unclosed array, a key without a value.
        assert!(workspace_manifest("a = [1,\n2", &[], &["x"]).is_err());
        let bad = workspace_manifest(ROOT, &["[package]\nname = \n".into()], &["x"]).unwrap_err();
        assert!(
            bad.to_string().starts_with("a member manifest is not valid TOML"),
            "{bad}"
        );
    }

    #[test]
    fn the_real_members_inherit_what_the_real_workspace_declares() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
        let members = [read("services/sdk/Cargo.toml"), read("services/helloworld/Cargo.toml")];
        let out = workspace_manifest(&read("Cargo.toml"), &members, &["services/sdk", "services/helloworld"]).unwrap();
        let doc: DocumentMut = out.parse().unwrap();
        let mut wanted: Vec<String> = members
            .iter()
            .flat_map(|m| inherited_dependencies(&m.parse().unwrap()))
            .collect();
        wanted.sort();
        wanted.dedup();
        let mut declared = keys(&doc, &["workspace", "dependencies"]);
        declared.sort();
        assert_eq!(declared, wanted);
        assert!(!wanted.is_empty());
    }

    #[tokio::test]
    async fn helloworld_source_resolves_offline() {
        let dir = tempfile::tempdir().unwrap();
        helloworld_source(dir.path()).unwrap();
        assert!(dir.path().join("services/helloworld/proto/helloworld.proto").is_file());
        // Resolving the graph offline from the lock file is what a build needs first. Only for the
        // platform that builds: without the filter cargo wants every platform's packages (r-efi,
        // windows-*), which no build on this machine ever downloaded (issue 14).
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = tokio::process::Command::new(cargo)
            .args([
                "metadata",
                "--offline",
                "--filter-platform=host-tuple",
                "--format-version=1",
            ])
            .current_dir(dir.path())
            .env_remove("CARGO_TARGET_DIR")
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let members = meta["workspace_members"].as_array().unwrap();
        assert_eq!(members.len(), 4, "{members:?}");
    }
}
