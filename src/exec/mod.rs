//! The executor: the only module that touches the filesystem on a caller's
//! behalf. It confines paths to the workspace, writes atomically and serializes
//! edits of one file. It never decides policy; callers ask `policy` first.

pub mod atomic;
pub mod file_locks;
pub mod tree;
pub mod walk;
pub mod workspace;

pub use atomic::{WriteReport, write_atomically};
pub use file_locks::FileLocks;
pub use workspace::{
    ConfineError, EntryKind, EntryMeta, EntryTarget, ExistingFile, OpenedFile, WorkspaceRoot,
    WriteTarget,
};
