//! The workspace's crates import their modules without cycles (docs/architecture.md), and the check
//! finds the cycles it exists for.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;

use microplane_modcheck::{Crate, render};

fn cycles_of(src: &Path) -> Vec<String> {
    let krate = Crate::read(src).unwrap_or_else(|e| panic!("{e}"));
    assert!(krate.uses.len() > 1 || !src.join("lib.rs").exists() || krate.uses.contains_key(&vec![]));
    krate.cycles().iter().map(|c| render(c)).collect()
}

#[test]
fn the_workspace_crates_have_no_module_cycles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let crates = [
        "crds",
        "operator",
        "gateway",
        "wire",
        "runtime",
        "e2e",
        "e2e/nodeagent",
        "services/sdk",
        "services/helloworld",
        "tools/modcheck",
    ];
    let mut found = Vec::new();
    for c in crates {
        let src = root.join(c).join("src");
        assert!(src.is_dir(), "{} is not a crate's src", src.display());
        for cycle in cycles_of(&src) {
            found.push(format!("{c}: {cycle}"));
        }
    }
    assert!(
        found.is_empty(),
        "modules that import each other in a circle (split out what they share; docs/architecture.md):\n{}",
        found.join("\n")
    );
}

fn write(dir: &Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

#[test]
fn finds_a_cycle_through_use_trees_code_paths_and_super() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            ("lib.rs", "mod a; mod b; mod c; mod d;"),
            // a → b through a grouped use, b → c through a path in code, c → a through super.
            ("a.rs", "use crate::{b::Thing, d};\npub fn f() {}"),
            ("b.rs", "pub struct Thing;\nfn g() { crate::c::h(); }"),
            ("c.rs", "pub fn h() { super::a::f(); }"),
            // d is used by a and uses nothing: not in the cycle.
            ("d.rs", "pub fn i() {}"),
        ],
    );
    assert_eq!(cycles_of(dir.path()), vec!["a ↔ b ↔ c".to_string()]);
}

#[test]
fn nested_siblings_count_parents_and_test_code_do_not() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            ("lib.rs", "pub mod p; pub mod q;"),
            // p/mod.rs uses its child, the child uses its parent: one concept, no cycle.
            ("p/mod.rs", "mod x; mod y; pub use self::x::X; pub struct P;"),
            // x ↔ y inside p is a cycle, reported as p::x ↔ p::y.
            ("p/x.rs", "pub struct X(super::P, super::y::Y);"),
            ("p/y.rs", "pub struct Y;\nfn f() -> Option<super::x::X> { None }"),
            // q uses p; p uses q only in test code: no cycle.
            ("q.rs", "use crate::p::P;\n#[cfg(test)]\nmod tests { use crate::p::P; }"),
        ],
    );
    write(
        dir.path(),
        &[(
            "p/mod.rs",
            "mod x; mod y; pub use self::x::X; pub struct P;\n#[cfg(test)]\nfn t() { crate::q::f(); }",
        )],
    );
    assert_eq!(cycles_of(dir.path()), vec!["p::x ↔ p::y".to_string()]);
}

#[test]
fn a_file_that_is_not_rust_is_named() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &[("lib.rs", "mod a;"), ("a.rs", "fn (")]);
    let err = Crate::read(dir.path()).unwrap_err().to_string();
    assert!(err.contains("a.rs:1:"), "{err}");
}
