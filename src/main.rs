//! `arbiter`: a governed MCP server. See README.md.

fn main() -> std::process::ExitCode {
    // The sandbox helper the server starts for each command: decided before
    // anything else runs (no argument parsing, no logging, no threads).
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(arbiter::exec::sandbox::HELPER_ARG))
    {
        arbiter::exec::sandbox::main();
    }
    arbiter::cli::main()
}
