//! Writes the CRD manifests generated from the types: `crdgen [--check] [repo-root]`.
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut check = false;
    let mut root = PathBuf::from(".");
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" => check = true,
            _ => root = PathBuf::from(arg),
        }
    }
    match microplane_crds::generate::sync(&root, !check) {
        Ok(differing) if check && !differing.is_empty() => {
            for path in differing {
                eprintln!("crdgen: {} is out of date", path.display());
            }
            eprintln!("crdgen: run `make generate` and commit the result");
            ExitCode::FAILURE
        }
        Ok(differing) => {
            for path in differing {
                println!("updated {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crdgen: {e}");
            ExitCode::FAILURE
        }
    }
}
