//! The `shoal` binary: the command line of the `shoal_cli` library, and its exit status.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(shoal_cli::main_from(std::env::args_os()))
}
