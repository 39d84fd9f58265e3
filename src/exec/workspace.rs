//! Workspace confinement: every path a tool names is resolved beneath one root
//! directory by the kernel (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`),
//! never by comparing strings.
//!
//! The check and the use are one operation: resolution yields an open file
//! descriptor, and reads and writes go through that descriptor (or through the
//! descriptor of the directory that holds the file), so a symlink swapped in after
//! the check cannot redirect the use. The path a caller sees in results, and the
//! path the policy judges, is the *real* path of the opened object (read back from
//! the kernel), so `link -> .env` is judged as `.env`.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Name of the server's own state directory inside the workspace.
pub const STATE_DIR: &str = ".arbiter";
/// Longest path (in bytes) a caller may name.
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest single path component (in bytes) a caller may name.
pub const MAX_COMPONENT_BYTES: usize = 255;

/// Why a path was refused. Each kind maps to a stable rule id.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ConfineError {
    #[error("the path is empty")]
    Empty,
    #[error("the path contains a NUL byte")]
    NulByte,
    #[error("the path is {0} bytes long; the limit is {MAX_PATH_BYTES}")]
    TooLong(usize),
    #[error("a path component is {0} bytes long; the limit is {MAX_COMPONENT_BYTES}")]
    ComponentTooLong(usize),
    #[error("`{0}` resolves outside the workspace root")]
    OutsideRoot(String),
    #[error("`{0}` is inside the server's own state directory `.arbiter/`")]
    StateDir(String),
    #[error("`{0}` is part of a symlink loop (or a chain of too many symlinks)")]
    SymlinkLoop(String),
    #[error("`{0}` does not exist")]
    NotFound(String),
    #[error("a component of `{0}` is not a directory")]
    NotADirectory(String),
    #[error("`{0}` is a directory")]
    IsDirectory(String),
    #[error("`{path}` is a {kind}, not a regular file")]
    NotRegular { path: String, kind: &'static str },
    #[error("`{0}` is not accessible: permission denied")]
    PermissionDenied(String),
    #[error("`{path}`: {message}")]
    Io { path: String, message: String },
    #[error("`{0}` names the workspace root itself, not an entry inside it")]
    NoEntryName(String),
}

impl ConfineError {
    /// The rule id shown to callers and written to the audit record.
    pub fn rule_id(&self) -> &'static str {
        match self {
            Self::OutsideRoot(_) => "CONFINE-001",
            Self::StateDir(_) => "CONFINE-002",
            Self::Empty
            | Self::NulByte
            | Self::TooLong(_)
            | Self::ComponentTooLong(_)
            | Self::NoEntryName(_) => "CONFINE-003",
            Self::SymlinkLoop(_) => "CONFINE-004",
            Self::NotFound(_) | Self::NotADirectory(_) => "FILE-001",
            Self::IsDirectory(_) | Self::NotRegular { .. } => "FILE-002",
            Self::PermissionDenied(_) | Self::Io { .. } => "FILE-003",
        }
    }

    /// True when the path was refused by confinement (as opposed to not existing).
    pub fn is_refusal(&self) -> bool {
        self.rule_id().starts_with("CONFINE")
    }

    /// What the caller can do about it.
    pub fn advice(&self) -> &'static str {
        match self {
            Self::OutsideRoot(_) => {
                "use a path inside the workspace (relative to its root); `..` and symlinks that leave the root are refused"
            }
            Self::StateDir(_) => {
                "the server's state (audit log, database) is not reachable through tools; use `arbiter audit tail` from a shell"
            }
            Self::Empty | Self::NulByte | Self::TooLong(_) | Self::ComponentTooLong(_) => {
                "send a valid relative path"
            }
            Self::NoEntryName(_) => "name a file or directory inside the workspace",
            Self::SymlinkLoop(_) => "fix or remove the looping symlink",
            Self::NotFound(_) => {
                "check the path (list the directory first), or create it with file_write"
            }
            Self::NotADirectory(_) => "check the path: one of its parents is a file",
            Self::IsDirectory(_) => "name a file inside the directory instead",
            Self::NotRegular { .. } => "only regular files can be read or written",
            Self::PermissionDenied(_) | Self::Io { .. } => "check the file's permissions",
        }
    }
}

/// The root every tool path is confined to, held open as a directory descriptor.
#[derive(Debug)]
pub struct WorkspaceRoot {
    dir: OwnedFd,
    /// Canonical absolute path of the root (symlinks resolved).
    canonical: PathBuf,
    /// The path as the operator gave it (absolute), so absolute tool paths spelled
    /// through a symlinked root are understood too.
    given: PathBuf,
}

/// Metadata of a file that already exists, captured from its open descriptor.
#[derive(Debug, Clone, Copy)]
pub struct ExistingFile {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u64,
    pub size: u64,
}

/// A regular file opened for reading, with its real workspace-relative path.
#[derive(Debug)]
pub struct OpenedFile {
    pub file: File,
    pub rel_path: String,
    pub meta: ExistingFile,
}

/// What kind of object a directory entry is, the entry itself (a symlink is
/// a symlink, not what it points to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    /// FIFO, socket or device.
    Other,
}

impl EntryKind {
    pub fn from_mode(st_mode: u32) -> Self {
        use rustix::fs::FileType;
        match FileType::from_raw_mode(st_mode) {
            FileType::RegularFile => Self::File,
            FileType::Directory => Self::Dir,
            FileType::Symlink => Self::Symlink,
            _ => Self::Other,
        }
    }
}

/// An entry's metadata, from `fstatat` without following a final symlink.
#[derive(Debug, Clone, Copy)]
pub struct EntryMeta {
    pub kind: EntryKind,
    pub nlink: u64,
    pub size: u64,
    /// Modification time, seconds and nanoseconds since the epoch.
    pub mtime: (i64, u32),
}

impl EntryMeta {
    pub fn from_stat(stat: &rustix::fs::Stat) -> Self {
        Self {
            kind: EntryKind::from_mode(stat.st_mode),
            nlink: stat.st_nlink,
            size: stat.st_size.max(0) as u64,
            mtime: (stat.st_mtime, stat.st_mtime_nsec as u32),
        }
    }
}

/// A directory entry a caller named, located without following its final
/// component: the directory that holds it (opened beneath the root), its
/// name there, and what is there now, if anything. Deletes and moves work on
/// `(dir, name)`, so a symlink is removed or moved as a link and never followed.
#[derive(Debug)]
pub struct EntryTarget {
    /// The parent directory; when `missing_dirs` is not empty, the deepest
    /// ancestor that exists.
    pub dir: OwnedFd,
    /// Directories to create beneath `dir` before the entry can exist.
    pub missing_dirs: Vec<String>,
    pub name: String,
    /// Real workspace-relative path of the entry (its parent's symlinks resolved).
    pub rel_path: String,
    pub existing: Option<EntryMeta>,
}

/// Where a write will land: an open directory, the name inside it, and any
/// directories that must be created first. Nothing has been modified yet.
#[derive(Debug)]
pub struct WriteTarget {
    /// The deepest directory that exists (the parent itself when `missing_dirs` is empty).
    pub dir: OwnedFd,
    /// Directories to create beneath `dir`, in order.
    pub missing_dirs: Vec<String>,
    /// File name inside the final directory.
    pub name: String,
    /// Real workspace-relative path of the file.
    pub rel_path: String,
    /// The file being replaced, if any.
    pub existing: Option<ExistingFile>,
}

impl WorkspaceRoot {
    /// Open `path` as the workspace root.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let given = std::path::absolute(path)?;
        let canonical = std::fs::canonicalize(&given)?;
        let dir = rustix::fs::open(
            &canonical,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self {
            dir,
            canonical,
            given,
        })
    }

    /// Another handle on the same root (a duplicated descriptor), for work
    /// that runs on a blocking thread.
    pub fn try_clone(&self) -> std::io::Result<Self> {
        Ok(Self {
            dir: rustix::io::fcntl_dupfd_cloexec(&self.dir, 0)?,
            canonical: self.canonical.clone(),
            given: self.given.clone(),
        })
    }

    /// Canonical absolute path of the root.
    pub fn path(&self) -> &Path {
        &self.canonical
    }

    /// Open an existing regular file for reading.
    ///
    /// FIFOs are opened non-blocking (so they cannot hang the server) and refused
    /// after `fstat`, as are devices, sockets and directories.
    pub fn open_for_read(&self, user_path: &str) -> Result<OpenedFile, ConfineError> {
        let rel = self.relativize(user_path)?;
        let (fd, rel_path) = self.open_resolved(
            &rel,
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
            user_path,
        )?;
        let stat = rustix::fs::fstat(&fd).map_err(|e| io_error(user_path, e))?;
        check_file_type(stat.st_mode, &rel_path)?;
        // O_NONBLOCK stays set: only regular files get past the check, and
        // they ignore it (clearing it cost two syscalls a read).
        Ok(OpenedFile {
            file: File::from(fd),
            rel_path,
            meta: existing_from_stat(&stat),
        })
    }

    /// Work out where a write to `user_path` would land without changing anything.
    ///
    /// An existing file is resolved through symlinks that stay inside the root, so
    /// writing through such a symlink replaces its target; missing parent
    /// directories are listed for the executor to create.
    pub fn prepare_write(&self, user_path: &str) -> Result<WriteTarget, ConfineError> {
        let rel = self.relativize(user_path)?;
        if user_path.ends_with('/') || rel == Path::new(".") {
            return Err(ConfineError::IsDirectory(user_path.to_string()));
        }
        match self.open_resolved(&rel, OFlags::PATH | OFlags::CLOEXEC, user_path) {
            Ok((fd, rel_path)) => {
                let stat = rustix::fs::fstat(&fd).map_err(|e| io_error(user_path, e))?;
                check_file_type(stat.st_mode, &rel_path)?;
                let (parent, name) = split_parent(&rel_path);
                let dir = self.open_dir_beneath(Path::new(parent), user_path)?;
                Ok(WriteTarget {
                    dir,
                    missing_dirs: Vec::new(),
                    name: name.to_string(),
                    rel_path,
                    existing: Some(existing_from_stat(&stat)),
                })
            }
            Err(ConfineError::NotFound(_)) => self.prepare_create(&rel, user_path),
            Err(e) => Err(e),
        }
    }

    /// Locate the entry `user_path` names without following its last
    /// component: a symlink there is reported (and later removed or moved) as
    /// a symlink. The parents are resolved beneath the root like any path.
    /// Missing parents are listed in `missing_dirs`, not created.
    pub fn locate_entry(&self, user_path: &str) -> Result<EntryTarget, ConfineError> {
        let rel = self.relativize(user_path)?;
        let Some(Component::Normal(name)) = rel.components().next_back() else {
            return Err(ConfineError::NoEntryName(user_path.to_string()));
        };
        let name = lossless(name, user_path)?;
        let parent = rel.parent().filter(|p| !p.as_os_str().is_empty());
        let parent = parent.unwrap_or(Path::new("."));
        let (dir, base) = match self.open_resolved(
            parent,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            user_path,
        ) {
            Ok(opened) => opened,
            Err(ConfineError::NotFound(_)) => {
                let target = self.prepare_create(&rel, user_path)?;
                return Ok(EntryTarget {
                    dir: target.dir,
                    missing_dirs: target.missing_dirs,
                    name: target.name,
                    rel_path: target.rel_path,
                    existing: None,
                });
            }
            Err(e) => return Err(e),
        };
        let rel_path = if base.is_empty() {
            name.clone()
        } else {
            format!("{base}/{name}")
        };
        if is_state_path(&rel_path) {
            return Err(ConfineError::StateDir(rel_path));
        }
        let existing =
            match rustix::fs::statat(&dir, name.as_str(), rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => Some(EntryMeta::from_stat(&stat)),
                Err(Errno::NOENT) => None,
                Err(e) => return Err(map_errno(e, user_path)),
            };
        Ok(EntryTarget {
            dir,
            missing_dirs: Vec::new(),
            name,
            rel_path,
            existing,
        })
    }

    /// Open a directory for listing, following symlinks that stay inside the
    /// root; returns it with its real workspace-relative path (`""` for the root).
    pub fn open_dir(&self, user_path: &str) -> Result<(OwnedFd, String), ConfineError> {
        let user_path = if user_path.is_empty() { "." } else { user_path };
        let rel = self.relativize(user_path)?;
        match self.open_resolved(
            &rel,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            user_path,
        ) {
            // The last component exists but is not a directory.
            Err(ConfineError::NotADirectory(p)) if self.open_for_read(user_path).is_ok() => {
                Err(ConfineError::NotRegular {
                    path: p,
                    kind: "file",
                })
            }
            other => other,
        }
    }

    /// Where the symlink at workspace path `rel` leads, when it stays inside
    /// the root: the target's real path and kind. Outside, dangling, looping or
    /// into the state directory is an error saying which.
    pub fn resolve_inside(&self, rel: &str) -> Result<(String, EntryKind), ConfineError> {
        let (fd, real) = self.open_resolved(Path::new(rel), OFlags::PATH | OFlags::CLOEXEC, rel)?;
        let stat = rustix::fs::fstat(&fd).map_err(|e| io_error(rel, e))?;
        Ok((real, EntryKind::from_mode(stat.st_mode)))
    }

    /// Open a file a walk found, by its workspace-relative path, beneath the
    /// root and through no symlink at all (a walk never follows links, and a
    /// component swapped for a symlink after the walk saw it is refused).
    /// Non-blocking, so a file swapped for a FIFO cannot hang the reader.
    pub fn open_walked_file(&self, rel: &str) -> std::io::Result<File> {
        let fd = self
            .open_with(
                Path::new(rel),
                OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
            )
            .map_err(std::io::Error::from)?;
        Ok(File::from(fd))
    }

    /// Open a directory a walk found (workspace-relative, `""` for the root)
    /// beneath the root and through no symlink.
    pub fn open_walked_dir(&self, rel: &str) -> std::io::Result<OwnedFd> {
        let rel = if rel.is_empty() { "." } else { rel };
        self.open_with(
            Path::new(rel),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
        )
        .map_err(std::io::Error::from)
    }

    /// The target does not exist: find the deepest existing ancestor directory.
    fn prepare_create(&self, rel: &Path, user_path: &str) -> Result<WriteTarget, ConfineError> {
        let parts: Vec<&OsStr> = rel
            .components()
            .filter_map(|c| match c {
                Component::Normal(s) => Some(Ok(s)),
                Component::CurDir => None,
                _ => Some(Err(())),
            })
            .collect::<Result<_, _>>()
            .map_err(|()| ConfineError::OutsideRoot(user_path.to_string()))?;
        let Some((name, dirs)) = parts.split_last() else {
            return Err(ConfineError::IsDirectory(user_path.to_string()));
        };
        // Walk up until a prefix opens as a directory.
        for existing in (0..=dirs.len()).rev() {
            let prefix: PathBuf = dirs[..existing].iter().collect();
            let prefix = if existing == 0 {
                PathBuf::from(".")
            } else {
                prefix
            };
            match self.open_resolved(
                &prefix,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                user_path,
            ) {
                Ok((dir, base)) => {
                    let missing_dirs: Vec<String> = dirs[existing..]
                        .iter()
                        .map(|s| lossless(s, user_path))
                        .collect::<Result<_, _>>()?;
                    let name = lossless(name, user_path)?;
                    let mut rel_path = base;
                    for part in missing_dirs.iter().chain(std::iter::once(&name)) {
                        if !rel_path.is_empty() {
                            rel_path.push('/');
                        }
                        rel_path.push_str(part);
                    }
                    if is_state_path(&rel_path) {
                        return Err(ConfineError::StateDir(rel_path));
                    }
                    return Ok(WriteTarget {
                        dir,
                        missing_dirs,
                        name,
                        rel_path,
                        existing: None,
                    });
                }
                Err(ConfineError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ConfineError::NotFound(user_path.to_string()))
    }

    /// Validate a caller's path and make it relative to the root.
    fn relativize(&self, user_path: &str) -> Result<PathBuf, ConfineError> {
        if user_path.is_empty() {
            return Err(ConfineError::Empty);
        }
        if user_path.contains('\0') {
            return Err(ConfineError::NulByte);
        }
        if user_path.len() > MAX_PATH_BYTES {
            return Err(ConfineError::TooLong(user_path.len()));
        }
        if let Some(long) = user_path
            .split('/')
            .map(str::len)
            .find(|&n| n > MAX_COMPONENT_BYTES)
        {
            return Err(ConfineError::ComponentTooLong(long));
        }
        let path = Path::new(user_path);
        if !path.is_absolute() {
            return Ok(path.to_path_buf());
        }
        // Component-wise prefix (so `/ws_evil` is not under `/ws`); the kernel still
        // resolves what remains beneath the root descriptor.
        let rest = path
            .strip_prefix(&self.canonical)
            .or_else(|_| path.strip_prefix(&self.given))
            .map_err(|_| ConfineError::OutsideRoot(user_path.to_string()))?;
        if rest.as_os_str().is_empty() {
            Ok(PathBuf::from("."))
        } else {
            Ok(rest.to_path_buf())
        }
    }

    /// Open `rel` beneath the root and return its real workspace-relative path,
    /// refusing the state directory.
    ///
    /// Most paths have no symlink in them: opening with `RESOLVE_NO_SYMLINKS`
    /// proves that, and then the lexical path is the real one, which saves a
    /// `/proc` lookup on the hot path. Otherwise the kernel resolves the links
    /// (never out of the root) and reports where the descriptor really is.
    fn open_resolved(
        &self,
        rel: &Path,
        flags: OFlags,
        user_path: &str,
    ) -> Result<(OwnedFd, String), ConfineError> {
        let lexical = lexical_rel_path(rel);
        if let Some(lexical) = &lexical {
            match self.open_with(
                rel,
                flags,
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
            ) {
                Ok(fd) => {
                    if is_state_path(lexical) {
                        return Err(ConfineError::StateDir(lexical.clone()));
                    }
                    return Ok((fd, lexical.clone()));
                }
                // A symlink on the way (or a loop): resolve it the slow way below.
                Err(Errno::LOOP) => {}
                Err(e) => return Err(map_errno(e, user_path)),
            }
        }
        let fd = self.open_beneath(rel, flags, user_path)?;
        let real = self.real_rel_path(&fd, user_path)?;
        Ok((fd, real))
    }

    fn open_with(
        &self,
        rel: &Path,
        flags: OFlags,
        resolve: ResolveFlags,
    ) -> Result<OwnedFd, Errno> {
        // The kernel returns EAGAIN when a concurrent rename makes a `..` walk racy.
        for _ in 0..8 {
            match rustix::fs::openat2(self.dir.as_fd(), rel, flags, Mode::empty(), resolve) {
                Err(Errno::AGAIN) | Err(Errno::INTR) => continue,
                other => return other,
            }
        }
        Err(Errno::AGAIN)
    }

    fn open_beneath(
        &self,
        rel: &Path,
        flags: OFlags,
        user_path: &str,
    ) -> Result<OwnedFd, ConfineError> {
        self.open_with(
            rel,
            flags,
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(|e| map_errno(e, user_path))
    }

    fn open_dir_beneath(&self, rel: &Path, user_path: &str) -> Result<OwnedFd, ConfineError> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        self.open_beneath(
            rel,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            user_path,
        )
    }

    /// The real path of an open descriptor, relative to the root, refusing the
    /// state directory. The kernel tracks this path, so symlinks are already resolved.
    fn real_rel_path(&self, fd: &OwnedFd, user_path: &str) -> Result<String, ConfineError> {
        let link = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(fd));
        let real = std::fs::read_link(&link).map_err(|e| ConfineError::Io {
            path: user_path.to_string(),
            message: format!("cannot read back the opened path: {e}"),
        })?;
        let rel = real
            .strip_prefix(&self.canonical)
            .map_err(|_| ConfineError::OutsideRoot(user_path.to_string()))?;
        let rel = rel.to_str().ok_or_else(|| ConfineError::Io {
            path: user_path.to_string(),
            message: "the path is not valid UTF-8".to_string(),
        })?;
        if is_state_path(rel) {
            return Err(ConfineError::StateDir(rel.to_string()));
        }
        Ok(rel.to_string())
    }
}

/// The path as `a/b/c` when it is plain names (and `.`), so that, with no
/// symlink on the way, it is also the real path; `None` when it has `..` or
/// is not UTF-8.
fn lexical_rel_path(rel: &Path) -> Option<String> {
    let mut out = String::with_capacity(rel.as_os_str().len());
    for component in rel.components() {
        match component {
            Component::CurDir => {}
            Component::Normal(name) => {
                if !out.is_empty() {
                    out.push('/');
                }
                out.push_str(name.to_str()?);
            }
            _ => return None,
        }
    }
    Some(out)
}

/// True when a workspace-relative path is the state directory or inside it.
pub fn is_state_path(rel: &str) -> bool {
    rel.split('/').next() == Some(STATE_DIR)
}

fn split_parent(rel: &str) -> (&str, &str) {
    match rel.rfind('/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => ("", rel),
    }
}

fn lossless(s: &OsStr, user_path: &str) -> Result<String, ConfineError> {
    std::str::from_utf8(s.as_bytes())
        .map(str::to_string)
        .map_err(|_| ConfineError::Io {
            path: user_path.to_string(),
            message: "the path is not valid UTF-8".to_string(),
        })
}

fn existing_from_stat(stat: &rustix::fs::Stat) -> ExistingFile {
    ExistingFile {
        mode: stat.st_mode & 0o7777,
        uid: stat.st_uid,
        gid: stat.st_gid,
        nlink: stat.st_nlink,
        size: stat.st_size as u64,
    }
}

fn check_file_type(st_mode: u32, rel: &str) -> Result<(), ConfineError> {
    use rustix::fs::FileType;
    let kind = match FileType::from_raw_mode(st_mode) {
        FileType::RegularFile => return Ok(()),
        FileType::Directory => return Err(ConfineError::IsDirectory(rel.to_string())),
        FileType::Fifo => "FIFO (named pipe)",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Symlink => "symlink",
        FileType::Unknown => "special file",
    };
    Err(ConfineError::NotRegular {
        path: rel.to_string(),
        kind,
    })
}

fn map_errno(e: Errno, user_path: &str) -> ConfineError {
    let p = user_path.to_string();
    match e {
        Errno::XDEV => ConfineError::OutsideRoot(p),
        Errno::LOOP => ConfineError::SymlinkLoop(p),
        Errno::NOENT => ConfineError::NotFound(p),
        Errno::NOTDIR => ConfineError::NotADirectory(p),
        Errno::ACCESS | Errno::PERM => ConfineError::PermissionDenied(p),
        Errno::NAMETOOLONG => ConfineError::TooLong(user_path.len()),
        Errno::ISDIR => ConfineError::IsDirectory(p),
        other => io_error(user_path, other),
    }
}

fn io_error(user_path: &str, e: Errno) -> ConfineError {
    ConfineError::Io {
        path: user_path.to_string(),
        message: std::io::Error::from(e).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn setup() -> (tempfile::TempDir, WorkspaceRoot) {
        let base = tempfile::tempdir().unwrap();
        let ws = base.path().join("ws");
        std::fs::create_dir_all(ws.join("sub")).unwrap();
        std::fs::write(ws.join("a.txt"), "a").unwrap();
        std::fs::write(ws.join("sub/b.txt"), "b").unwrap();
        std::fs::create_dir_all(base.path().join("ws_evil")).unwrap();
        std::fs::write(base.path().join("ws_evil/secret"), "s").unwrap();
        std::fs::write(base.path().join("outside.txt"), "o").unwrap();
        let root = WorkspaceRoot::open(&ws).unwrap();
        (base, root)
    }

    #[test]
    fn relative_and_absolute_inside_paths_open() {
        let (_b, root) = setup();
        assert_eq!(root.open_for_read("a.txt").unwrap().rel_path, "a.txt");
        let abs = root.path().join("sub/b.txt");
        assert_eq!(
            root.open_for_read(abs.to_str().unwrap()).unwrap().rel_path,
            "sub/b.txt"
        );
        assert_eq!(
            root.open_for_read("sub/../a.txt").unwrap().rel_path,
            "a.txt"
        );
    }

    #[test]
    fn open_dir_resolves_working_directories_beneath_the_root() {
        let (b, root) = setup();
        assert_eq!(root.open_dir(".").unwrap().1, "");
        assert_eq!(root.open_dir("sub").unwrap().1, "sub");
        assert_eq!(root.open_dir("sub/").unwrap().1, "sub");
        assert_eq!(root.open_dir("..").unwrap_err().rule_id(), "CONFINE-001");
        assert_eq!(root.open_dir("a.txt").unwrap_err().rule_id(), "FILE-002");
        assert_eq!(root.open_dir("nope").unwrap_err().rule_id(), "FILE-001");
        symlink(b.path(), root.path().join("up")).unwrap();
        assert_eq!(root.open_dir("up").unwrap_err().rule_id(), "CONFINE-001");
        std::fs::create_dir(root.path().join(".arbiter")).unwrap();
        assert_eq!(
            root.open_dir(".arbiter").unwrap_err().rule_id(),
            "CONFINE-002"
        );
    }

    #[test]
    fn dotdot_escape_is_refused() {
        let (_b, root) = setup();
        assert_eq!(
            root.open_for_read("../outside.txt").unwrap_err().rule_id(),
            "CONFINE-001"
        );
        assert_eq!(
            root.prepare_write("sub/../../x").unwrap_err().rule_id(),
            "CONFINE-001"
        );
    }

    #[test]
    fn sibling_with_shared_prefix_is_refused() {
        let (b, root) = setup();
        let evil = b.path().join("ws_evil/secret");
        let err = root.open_for_read(evil.to_str().unwrap()).unwrap_err();
        assert_eq!(err.rule_id(), "CONFINE-001");
    }

    #[test]
    fn symlink_out_is_refused_for_read_and_write() {
        let (b, root) = setup();
        symlink(b.path().join("outside.txt"), root.path().join("out")).unwrap();
        symlink("../outside.txt", root.path().join("rel_out")).unwrap();
        symlink(b.path(), root.path().join("dir_out")).unwrap();
        for p in ["out", "rel_out", "dir_out/outside.txt"] {
            assert_eq!(
                root.open_for_read(p).unwrap_err().rule_id(),
                "CONFINE-001",
                "{p}"
            );
            assert_eq!(
                root.prepare_write(p).unwrap_err().rule_id(),
                "CONFINE-001",
                "{p}"
            );
        }
        assert_eq!(
            root.prepare_write("dir_out/new.txt").unwrap_err().rule_id(),
            "CONFINE-001"
        );
    }

    #[test]
    fn spelled_paths_report_their_real_path() {
        let (_b, root) = setup();
        symlink("sub", root.path().join("dirlink")).unwrap();
        for (given, real) in [
            ("./sub/./b.txt", "sub/b.txt"),
            ("sub//b.txt", "sub/b.txt"),
            ("sub/../sub/b.txt", "sub/b.txt"),
            ("dirlink/b.txt", "sub/b.txt"),
            ("dirlink/../a.txt", "a.txt"),
        ] {
            assert_eq!(root.open_for_read(given).unwrap().rel_path, real, "{given}");
            assert_eq!(root.prepare_write(given).unwrap().rel_path, real, "{given}");
        }
        let new = root.prepare_write("dirlink/new/c.txt").unwrap();
        assert_eq!(new.rel_path, "sub/new/c.txt");
        assert_eq!(new.missing_dirs, ["new"]);
    }

    #[test]
    fn symlink_inside_resolves_to_its_target() {
        let (_b, root) = setup();
        symlink("sub/b.txt", root.path().join("link")).unwrap();
        assert_eq!(root.open_for_read("link").unwrap().rel_path, "sub/b.txt");
        let t = root.prepare_write("link").unwrap();
        assert_eq!(t.rel_path, "sub/b.txt");
        assert_eq!(t.name, "b.txt");
    }

    #[test]
    fn symlink_loop_is_a_clear_error() {
        let (_b, root) = setup();
        symlink("loop2", root.path().join("loop1")).unwrap();
        symlink("loop1", root.path().join("loop2")).unwrap();
        assert_eq!(
            root.open_for_read("loop1").unwrap_err().rule_id(),
            "CONFINE-004"
        );
    }

    #[test]
    fn state_dir_is_unreachable_even_through_a_symlink() {
        let (_b, root) = setup();
        std::fs::create_dir_all(root.path().join(".arbiter")).unwrap();
        std::fs::write(root.path().join(".arbiter/arbiter.db"), "db").unwrap();
        symlink(".arbiter", root.path().join("state")).unwrap();
        assert_eq!(
            root.open_for_read(".arbiter/arbiter.db")
                .unwrap_err()
                .rule_id(),
            "CONFINE-002"
        );
        assert_eq!(
            root.open_for_read("state/arbiter.db")
                .unwrap_err()
                .rule_id(),
            "CONFINE-002"
        );
        assert_eq!(
            root.prepare_write("state/new").unwrap_err().rule_id(),
            "CONFINE-002"
        );
        assert_eq!(
            root.prepare_write("./.arbiter/x").unwrap_err().rule_id(),
            "CONFINE-002"
        );
    }

    #[test]
    fn bad_path_strings_are_refused() {
        let (_b, root) = setup();
        assert_eq!(root.open_for_read("").unwrap_err(), ConfineError::Empty);
        assert_eq!(
            root.open_for_read("a\0b").unwrap_err(),
            ConfineError::NulByte
        );
        let long = "a/".repeat(3000);
        assert!(matches!(
            root.open_for_read(&long).unwrap_err(),
            ConfineError::TooLong(_)
        ));
        let comp = "x".repeat(300);
        assert!(matches!(
            root.open_for_read(&comp).unwrap_err(),
            ConfineError::ComponentTooLong(300)
        ));
    }

    #[test]
    fn tilde_is_a_literal_name() {
        let (_b, root) = setup();
        let t = root.prepare_write("~/notes.txt").unwrap();
        assert_eq!(t.rel_path, "~/notes.txt");
        assert_eq!(t.missing_dirs, vec!["~".to_string()]);
    }

    #[test]
    fn missing_parents_are_listed_not_created() {
        let (_b, root) = setup();
        let t = root.prepare_write("sub/x/y/z.txt").unwrap();
        assert_eq!(t.missing_dirs, vec!["x".to_string(), "y".to_string()]);
        assert_eq!(t.rel_path, "sub/x/y/z.txt");
        assert!(!root.path().join("sub/x").exists());
    }

    #[test]
    fn fifo_and_directory_are_refused_without_blocking() {
        let (_b, root) = setup();
        let fifo = root.path().join("pipe");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        assert_eq!(
            root.open_for_read("pipe").unwrap_err().rule_id(),
            "FILE-002"
        );
        assert_eq!(
            root.prepare_write("pipe").unwrap_err().rule_id(),
            "FILE-002"
        );
        assert_eq!(root.open_for_read("sub").unwrap_err().rule_id(), "FILE-002");
        assert!(matches!(
            root.open_for_read("/dev/null").unwrap_err(),
            ConfineError::OutsideRoot(_)
        ));
    }
}
