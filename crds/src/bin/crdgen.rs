//! Writes the CRD manifests generated from the types: `crdgen [--check] [repo-root]`.
use std::path::PathBuf;
use std::process::ExitCode;

use microplane_crds::generate::{CRD_DIRS, crd_files};

fn main() -> ExitCode {
    let mut check = false;
    let mut root = PathBuf::from(".");
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" => check = true,
            _ => root = PathBuf::from(arg),
        }
    }
    let files = match crd_files() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("crdgen: cannot render CRDs: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stale = 0;
    for dir in CRD_DIRS {
        let dir = root.join(dir);
        for (name, yaml) in &files {
            let path = dir.join(name);
            let current = std::fs::read_to_string(&path).unwrap_or_default();
            if current == *yaml {
                continue;
            }
            if check {
                eprintln!("crdgen: {} is out of date", path.display());
                stale += 1;
            } else if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, yaml)) {
                eprintln!("crdgen: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            } else {
                println!("wrote {}", path.display());
            }
        }
    }
    if stale > 0 {
        eprintln!("crdgen: run `make generate` and commit the result");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
