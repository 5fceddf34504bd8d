//! Finds import cycles between the modules of a Rust crate.
//!
//! Every module (a file, or an inline `mod x { … }`) is a node; a path that names another module's
//! item (`crate::a::b::Item`, `super::x`, `self::y`, in `use` trees and in code) is an edge from the
//! module that writes it to the module that defines the item. Edges are compared at the level where
//! the two modules part: `crate::a::x` using `crate::b::y` is an edge `a → b`, `a::x` using `a::y`
//! an edge `x → y` inside `a`. A module using its own parent or child is not an edge (a parent's
//! `mod.rs` and its submodules are one concept). Test code (`#[cfg(test)]`) is skipped. A cycle is
//! a strongly connected set of sibling modules: every one of them reaches every other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use petgraph::algo::tarjan_scc;
use petgraph::graphmap::DiGraphMap;
use syn::visit::Visit;

/// A module path from the crate root (`["gateway", "server"]`; empty for the root).
pub type ModPath = Vec<String>;

/// Why a crate could not be read.
#[derive(Debug)]
pub enum Error {
    /// A file could not be read.
    Read(PathBuf, std::io::Error),
    /// A file is not valid Rust.
    Parse(PathBuf, syn::Error),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Read(p, e) => write!(f, "{}: {e}", p.display()),
            Self::Parse(p, e) => {
                let at = e.span().start();
                write!(f, "{}:{}:{}: {e}", p.display(), at.line, at.column + 1)
            }
        }
    }
}

impl std::error::Error for Error {}

/// The modules of a crate and the modules each one names.
#[derive(Debug, Default)]
pub struct Crate {
    /// Module → the modules (paths as written, resolved to `crate::…`) its non-test code names.
    pub uses: BTreeMap<ModPath, BTreeSet<ModPath>>,
}

impl Crate {
    /// Reads every `.rs` file under `src` (a crate's `src/`). `lib.rs`/`main.rs` are the root,
    /// `src/bin/*` are separate crates and left out.
    pub fn read(src: &Path) -> Result<Self, Error> {
        let mut krate = Self::default();
        for entry in walkdir::WalkDir::new(src).sort_by_file_name() {
            let Ok(entry) = entry else { continue };
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap_or(path);
            if rel.starts_with("bin") {
                continue;
            }
            let Some(module) = file_module(rel) else { continue };
            let text = std::fs::read_to_string(path).map_err(|e| Error::Read(path.to_path_buf(), e))?;
            let file = syn::parse_file(&text).map_err(|e| Error::Parse(path.to_path_buf(), e))?;
            let mut v = Collector {
                krate: &mut krate,
                module,
            };
            v.items(&file.items);
        }
        Ok(krate)
    }

    /// The import cycles: each a sorted set of sibling modules that all reach each other, sorted.
    pub fn cycles(&self) -> Vec<Vec<ModPath>> {
        let modules: BTreeSet<&ModPath> = self.uses.keys().collect();
        let mut graph: DiGraphMap<usize, ()> = DiGraphMap::new();
        let mut ids: BTreeMap<ModPath, usize> = BTreeMap::new();
        let mut names: Vec<ModPath> = Vec::new();
        let mut id = |m: ModPath, names: &mut Vec<ModPath>| {
            *ids.entry(m.clone()).or_insert_with(|| {
                names.push(m);
                names.len() - 1
            })
        };
        for (from, targets) in &self.uses {
            for target in targets {
                // The module that defines what `target` names: its longest prefix that is a module.
                let Some(to) = (0..=target.len())
                    .rev()
                    .map(|n| &target[..n])
                    .find(|p| modules.contains(&p.to_vec()))
                else {
                    continue;
                };
                let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
                if common == from.len() || common == to.len() {
                    continue; // itself, an ancestor or a descendant
                }
                let a = id(from[..=common].to_vec(), &mut names);
                let b = id(to[..=common].to_vec(), &mut names);
                graph.add_edge(a, b, ());
            }
        }
        let mut cycles: Vec<Vec<ModPath>> = tarjan_scc(&graph)
            .into_iter()
            .filter(|c| c.len() > 1)
            .map(|c| {
                let mut c: Vec<ModPath> = c.into_iter().map(|i| names[i].clone()).collect();
                c.sort();
                c
            })
            .collect();
        cycles.sort();
        cycles
    }
}

/// The module a file under `src/` defines: `lib.rs` → root, `a.rs` and `a/mod.rs` → `a`.
fn file_module(rel: &Path) -> Option<ModPath> {
    let mut parts: Vec<String> = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
    let file = parts.pop()?;
    let stem = file.strip_suffix(".rs")?;
    match stem {
        "lib" | "main" if parts.is_empty() => {}
        "mod" => {}
        _ => parts.push(stem.to_string()),
    }
    Some(parts)
}

fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs
        .iter()
        .any(|a| a.path().is_ident("cfg") && a.parse_args::<syn::Meta>().is_ok_and(|m| m.path().is_ident("test")))
}

struct Collector<'a> {
    krate: &'a mut Crate,
    module: ModPath,
}

impl Collector<'_> {
    fn items(&mut self, items: &[syn::Item]) {
        self.krate.uses.entry(self.module.clone()).or_default();
        for item in items {
            match item {
                syn::Item::Mod(m) if is_test(&m.attrs) => {}
                syn::Item::Mod(m) => {
                    if let Some((_, inner)) = &m.content {
                        let mut child = Collector {
                            krate: &mut *self.krate,
                            module: [self.module.clone(), vec![m.ident.to_string()]].concat(),
                        };
                        child.items(inner);
                    }
                }
                syn::Item::Fn(f) if is_test(&f.attrs) => {}
                syn::Item::Impl(i) if is_test(&i.attrs) => {}
                syn::Item::Use(u) if is_test(&u.attrs) => {}
                other => self.visit_item(other),
            }
        }
    }

    /// Records `segments` (a path as written) if it leaves this module through `crate`, `super` or
    /// `self`.
    fn record(&mut self, segments: &[String]) {
        let Some(first) = segments.first() else { return };
        let mut base = match first.as_str() {
            "crate" => Vec::new(),
            "self" => self.module.clone(),
            "super" => {
                let mut m = self.module.clone();
                m.pop();
                m
            }
            _ => return,
        };
        let mut rest = &segments[1..];
        if first == "super" {
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
        }
        base.extend(rest.iter().cloned());
        self.krate.uses.entry(self.module.clone()).or_default().insert(base);
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let mut full = prefix.clone();
                if n.ident != "self" {
                    full.push(n.ident.to_string());
                }
                self.record(&full);
            }
            syn::UseTree::Rename(r) => {
                let mut full = prefix.clone();
                if r.ident != "self" {
                    full.push(r.ident.to_string());
                }
                self.record(&full);
            }
            syn::UseTree::Glob(_) => self.record(prefix),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Collector<'_> {
    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &u.tree);
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        // Inline modules nested in other items are rare; treat them as part of this module.
        if !is_test(&m.attrs) {
            syn::visit::visit_item_mod(self, m);
        }
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        if !is_test(&f.attrs) {
            syn::visit::visit_item_fn(self, f);
        }
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if !is_test(&f.attrs) {
            syn::visit::visit_impl_item_fn(self, f);
        }
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segments: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        self.record(&segments);
        syn::visit::visit_path(self, p);
    }

    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {
        // `pub(in crate::x)` and `pub(super)` say who may see an item, not what it uses.
    }
}

/// Renders a cycle as `a ↔ b ↔ c` (module paths joined with `::`).
pub fn render(cycle: &[ModPath]) -> String {
    cycle
        .iter()
        .map(|m| {
            if m.is_empty() {
                "crate".to_string()
            } else {
                m.join("::")
            }
        })
        .collect::<Vec<_>>()
        .join(" ↔ ")
}
