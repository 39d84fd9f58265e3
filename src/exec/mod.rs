//! The executor: the only module that touches the filesystem or runs a
//! process on a caller's behalf. It confines paths to the workspace, writes
//! atomically, serializes edits of one file, and runs commands in a sandbox
//! (`sandbox` is the helper process, `plan` what it sets up, `process` the
//! server's side of a running command, `jobs` background commands; the
//! layers are described in `src/exec/README.md`). It never decides policy;
//! callers ask `policy` first.

pub mod atomic;
pub mod blocking;
pub mod cgroup;
pub mod file_locks;
pub mod jobs;
pub mod output;
pub mod plan;
pub mod process;
pub mod sandbox;
pub mod tree;
pub mod walk;
pub mod workspace;

pub use atomic::{WriteReport, write_atomically};
pub use blocking::run_blocking;
pub use file_locks::FileLocks;
pub use workspace::{
    ConfineError, EntryKind, EntryMeta, EntryTarget, ExistingFile, OpenedFile, WorkspaceRoot,
    WriteTarget,
};
