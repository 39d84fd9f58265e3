//! arbiter: a governed MCP server. The binary is `src/main.rs`; the modules are
//! public so integration tests and tools can reach the same code paths.
//! See DESIGN.md for what each module owns and must not do.

pub mod cli;
pub mod exec;
pub mod memory;
pub mod overrides;
pub mod policy;
pub mod server;
pub mod store;
pub mod tasks;
pub mod tools;
