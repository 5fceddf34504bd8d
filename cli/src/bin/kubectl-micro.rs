//! `kubectl micro`: the same program as `microplane`, as a kubectl plugin (docs/cli.md).

fn main() -> std::process::ExitCode {
    microplane_cli::main()
}
