//! The `litefleet` command: parse arguments, set up logging, dispatch.

use std::process::ExitCode;

fn main() -> ExitCode {
    litefleet::cli::main()
}
