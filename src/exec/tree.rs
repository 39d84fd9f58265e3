//! Directory entries beneath the workspace root: listing a directory to a
//! depth, collecting a subtree, removing an entry and moving one. Every step
//! works on directory descriptors opened beneath the root with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` (or on a parent descriptor and a
//! name), never on path strings, so no symlink is ever followed out of the
//! root and a symlink inside is listed, removed or moved as a link.
//!
//! What may be shown, removed or moved is not decided here: callers pass the
//! policy's answer in as a closure, or check the collected entries first.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, RenameFlags, ResolveFlags};
use rustix::io::Errno;

use super::atomic::create_dirs_beneath;
use super::workspace::{EntryKind, EntryMeta, EntryTarget, WorkspaceRoot};

/// One entry of a listing.
#[derive(Debug, Clone)]
pub struct ListedEntry {
    /// Workspace-relative path.
    pub rel_path: String,
    /// 1 for the listed directory's own entries, 2 for theirs, ...
    pub depth: u32,
    pub meta: EntryMeta,
}

/// What a listing does with an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visit {
    /// Leave it out (and do not look inside).
    Hide,
    /// Show it; do not look inside.
    Show,
    /// Show it and, for a directory within the depth, list what it holds.
    ShowAndDescend,
}

/// Why a subtree could not be collected.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("it holds more than {0} entries")]
    TooManyEntries(usize),
    #[error("`{0}` has a name that is not UTF-8, which the policy cannot judge")]
    NotUtf8(String),
    #[error("`{path}`: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// The entries of one directory, sorted by name, each with its metadata
/// (symlinks not followed). Names that are not UTF-8 are counted, not returned.
pub fn read_entries(dir: BorrowedFd<'_>) -> std::io::Result<(Vec<(String, EntryMeta)>, usize)> {
    let mut entries = Vec::new();
    let mut not_utf8 = 0;
    for entry in Dir::read_from(dir)? {
        let entry = entry?;
        let raw = entry.file_name().to_bytes();
        if raw == b"." || raw == b".." {
            continue;
        }
        let Ok(name) = std::str::from_utf8(raw) else {
            not_utf8 += 1;
            continue;
        };
        match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => entries.push((name.to_string(), EntryMeta::from_stat(&stat))),
            // Gone since the directory was read.
            Err(Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((entries, not_utf8))
}

fn join(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_string()
    } else {
        format!("{base}/{name}")
    }
}

/// List `dir` (whose workspace path is `base`) breadth first, down to
/// `max_depth` levels, at most `max_entries` entries. Returns the entries and
/// whether the listing stopped at the bound. `visit` decides, per entry,
/// whether it is shown and whether a directory is entered. Subdirectories
/// that cannot be opened are listed but not entered.
pub fn list_tree(
    root: &WorkspaceRoot,
    dir: OwnedFd,
    base: &str,
    max_depth: u32,
    max_entries: usize,
    mut visit: impl FnMut(&str, &EntryMeta) -> Visit,
) -> std::io::Result<(Vec<ListedEntry>, bool)> {
    let mut out = Vec::new();
    let mut queue = std::collections::VecDeque::new();
    queue.push_back((Some(dir), base.to_string(), 1u32));
    while let Some((fd, rel, depth)) = queue.pop_front() {
        let fd = match fd {
            Some(fd) => fd,
            None => match root.open_walked_dir(&rel) {
                Ok(fd) => fd,
                Err(_) => continue,
            },
        };
        let entries = match read_entries(fd.as_fd()) {
            Ok((entries, _)) => entries,
            Err(e) if depth == 1 => return Err(e),
            Err(_) => continue,
        };
        drop(fd);
        for (name, meta) in entries {
            let path = join(&rel, &name);
            let decision = visit(&path, &meta);
            if decision == Visit::Hide {
                continue;
            }
            if out.len() == max_entries {
                return Ok((out, true));
            }
            if decision == Visit::ShowAndDescend && meta.kind == EntryKind::Dir && depth < max_depth
            {
                queue.push_back((None, path.clone(), depth + 1));
            }
            out.push(ListedEntry {
                rel_path: path,
                depth,
                meta,
            });
        }
    }
    Ok((out, false))
}

/// Every entry beneath the directory at workspace path `rel` (depth first,
/// parents before children), at most `max_entries`.
pub fn collect_subtree(
    root: &WorkspaceRoot,
    rel: &str,
    max_entries: usize,
) -> Result<Vec<(String, EntryMeta)>, TreeError> {
    let mut out = Vec::new();
    let mut stack = vec![rel.to_string()];
    while let Some(dir_rel) = stack.pop() {
        let io = |source: std::io::Error| TreeError::Io {
            path: dir_rel.clone(),
            source,
        };
        let fd = root.open_walked_dir(&dir_rel).map_err(io)?;
        let (entries, not_utf8) = read_entries(fd.as_fd()).map_err(io)?;
        if not_utf8 > 0 {
            return Err(TreeError::NotUtf8(dir_rel));
        }
        for (name, meta) in entries {
            if out.len() == max_entries {
                return Err(TreeError::TooManyEntries(max_entries));
            }
            let path = join(&dir_rel, &name);
            if meta.kind == EntryKind::Dir {
                stack.push(path.clone());
            }
            out.push((path, meta));
        }
    }
    Ok(out)
}

/// Remove the entry: a file, symlink or special file is unlinked; a directory
/// is removed with everything in it, depth first, each level opened beneath
/// its parent without following symlinks. The parent is fsynced. Returns the
/// number of entries removed (the entry itself included).
///
/// A directory removal is not atomic: if it fails part way, what was removed
/// stays removed and the error says so.
pub fn remove_entry(target: &EntryTarget) -> std::io::Result<u64> {
    let dir = target.dir.as_fd();
    let removed = match target.existing.map(|m| m.kind) {
        Some(EntryKind::Dir) => remove_dir_all_at(dir, Path::new(&target.name))?,
        _ => {
            rustix::fs::unlinkat(dir, target.name.as_str(), AtFlags::empty())?;
            1
        }
    };
    rustix::fs::fsync(dir)?;
    Ok(removed)
}

fn remove_dir_all_at(parent: BorrowedFd<'_>, name: &Path) -> std::io::Result<u64> {
    let fd = open_child_dir(parent, name)?;
    let mut removed = 0;
    for entry in Dir::read_from(&fd)? {
        let entry = entry?;
        let raw = entry.file_name();
        if raw.to_bytes() == b"." || raw.to_bytes() == b".." {
            continue;
        }
        let is_dir = match entry.file_type() {
            FileType::Directory => true,
            FileType::Unknown => {
                let stat = rustix::fs::statat(&fd, raw, AtFlags::SYMLINK_NOFOLLOW)?;
                EntryKind::from_mode(stat.st_mode) == EntryKind::Dir
            }
            _ => false,
        };
        if is_dir {
            let child = std::ffi::OsStr::from_bytes(raw.to_bytes());
            removed += remove_dir_all_at(fd.as_fd(), Path::new(child))?;
        } else {
            rustix::fs::unlinkat(&fd, raw, AtFlags::empty())?;
            removed += 1;
        }
    }
    drop(fd);
    rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)?;
    Ok(removed + 1)
}

/// Open the directory `name` inside `parent`, refusing a symlink.
fn open_child_dir(parent: BorrowedFd<'_>, name: &Path) -> std::io::Result<OwnedFd> {
    Ok(rustix::fs::openat2(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
    )?)
}

/// What a completed move did.
#[derive(Debug, Clone, Copy)]
pub struct MoveReport {
    pub dirs_created: usize,
}

/// Rename `source` to `destination` with `renameat2` on their parent
/// descriptors, creating the destination's missing parents first. Without
/// `overwrite` the kernel refuses an existing destination (`RENAME_NOREPLACE`,
/// so there is no window between a check and the rename); with it, an existing
/// destination is replaced atomically. Both parents are fsynced.
pub fn move_entry(
    source: &EntryTarget,
    destination: &EntryTarget,
    overwrite: bool,
) -> std::io::Result<MoveReport> {
    let (created_dir, dirs_created) =
        create_dirs_beneath(destination.dir.as_fd(), &destination.missing_dirs)?;
    let dst_dir = created_dir
        .as_ref()
        .map(|d| d.as_fd())
        .unwrap_or(destination.dir.as_fd());
    let flags = if overwrite {
        RenameFlags::empty()
    } else {
        RenameFlags::NOREPLACE
    };
    rustix::fs::renameat_with(
        source.dir.as_fd(),
        source.name.as_str(),
        dst_dir,
        destination.name.as_str(),
        flags,
    )?;
    rustix::fs::fsync(dst_dir)?;
    rustix::fs::fsync(source.dir.as_fd())?;
    Ok(MoveReport { dirs_created })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn setup() -> (tempfile::TempDir, WorkspaceRoot) {
        let base = tempfile::tempdir().unwrap();
        let ws = base.path().join("ws");
        std::fs::create_dir_all(ws.join("d/e")).unwrap();
        std::fs::write(ws.join("d/a.txt"), "a").unwrap();
        std::fs::write(ws.join("d/e/b.txt"), "b").unwrap();
        std::fs::write(base.path().join("outside.txt"), "o").unwrap();
        let root = WorkspaceRoot::open(&ws).unwrap();
        (base, root)
    }

    #[test]
    fn listing_is_breadth_first_and_bounded() {
        let (_b, root) = setup();
        let (dir, base) = root.open_dir(".").unwrap();
        let (all, truncated) =
            list_tree(&root, dir, &base, 5, 100, |_, _| Visit::ShowAndDescend).unwrap();
        let paths: Vec<_> = all.iter().map(|e| e.rel_path.as_str()).collect();
        assert_eq!(paths, ["d", "d/a.txt", "d/e", "d/e/b.txt"]);
        assert!(!truncated);
        let (dir, base) = root.open_dir(".").unwrap();
        let (two, truncated) =
            list_tree(&root, dir, &base, 5, 2, |_, _| Visit::ShowAndDescend).unwrap();
        assert_eq!(two.len(), 2);
        assert!(truncated);
    }

    #[test]
    fn removing_a_directory_removes_its_tree_but_not_a_link_target() {
        let (b, root) = setup();
        symlink(b.path().join("outside.txt"), root.path().join("d/e/out")).unwrap();
        symlink(b.path(), root.path().join("d/dirlink")).unwrap();
        let target = root.locate_entry("d").unwrap();
        assert_eq!(target.existing.unwrap().kind, EntryKind::Dir);
        let collected = collect_subtree(&root, "d", 100).unwrap();
        assert_eq!(collected.len(), 5, "{collected:?}");
        assert_eq!(remove_entry(&target).unwrap(), 6);
        assert!(!root.path().join("d").exists());
        assert_eq!(
            std::fs::read_to_string(b.path().join("outside.txt")).unwrap(),
            "o"
        );
    }

    #[test]
    fn collecting_stops_at_the_bound() {
        let (_b, root) = setup();
        assert!(matches!(
            collect_subtree(&root, "d", 2),
            Err(TreeError::TooManyEntries(2))
        ));
    }

    #[test]
    fn a_move_without_overwrite_never_replaces() {
        let (_b, root) = setup();
        let src = root.locate_entry("d/a.txt").unwrap();
        let dst = root.locate_entry("d/e/b.txt").unwrap();
        let err = move_entry(&src, &dst, false).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc_eexist()));
        assert_eq!(
            std::fs::read_to_string(root.path().join("d/e/b.txt")).unwrap(),
            "b"
        );
        move_entry(&src, &dst, true).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.path().join("d/e/b.txt")).unwrap(),
            "a"
        );
        assert!(!root.path().join("d/a.txt").exists());
    }

    #[test]
    fn a_move_creates_missing_parents_and_moves_a_symlink_as_a_link() {
        let (b, root) = setup();
        symlink(b.path().join("outside.txt"), root.path().join("out")).unwrap();
        let src = root.locate_entry("out").unwrap();
        assert_eq!(src.existing.unwrap().kind, EntryKind::Symlink);
        let dst = root.locate_entry("new/dir/out").unwrap();
        assert_eq!(dst.missing_dirs, ["new", "dir"]);
        let report = move_entry(&src, &dst, false).unwrap();
        assert_eq!(report.dirs_created, 2);
        let moved = root.path().join("new/dir/out");
        assert!(
            std::fs::symlink_metadata(&moved)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            std::fs::read_to_string(b.path().join("outside.txt")).unwrap(),
            "o"
        );
    }

    fn libc_eexist() -> i32 {
        Errno::EXIST.raw_os_error()
    }
}
