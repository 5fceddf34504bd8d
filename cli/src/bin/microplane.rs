//! `microplane` (docs/cli.md).

fn main() -> std::process::ExitCode {
    microplane_cli::main()
}
