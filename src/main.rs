//! `arbiter`: a governed MCP server. See README.md.

fn main() -> std::process::ExitCode {
    arbiter::cli::main()
}
