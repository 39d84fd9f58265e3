//! Atomic file replacement: the new contents go to a temporary file in the same
//! directory, which is fsynced, given the old file's mode and owner, renamed over
//! the target and followed by an fsync of the directory. A reader (or a crash)
//! sees either the old file or the new one, never a mix; an acknowledged write
//! survives a crash of the machine.
//!
//! Every step works on directory descriptors from [`WorkspaceRoot::prepare_write`],
//! so no path is looked up twice. `renameat` never follows the final component,
//! so a symlink swapped in at the last moment is replaced, not written through.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::workspace::{ExistingFile, WriteTarget};

/// Marker in the names of temporary files, so tools can recognise (and skip) them.
pub const TEMP_MARKER: &str = ".arbiter-tmp-";

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// What a completed write did.
#[derive(Debug, Clone)]
pub struct WriteReport {
    pub bytes_written: u64,
    pub created: bool,
    pub dirs_created: usize,
}

/// Replace (or create) the target's file with `contents`, atomically and durably.
pub fn write_atomically(target: &WriteTarget, contents: &[u8]) -> std::io::Result<WriteReport> {
    let (dir, dirs_created) = create_dirs_beneath(target.dir.as_fd(), &target.missing_dirs)?;
    let dir = dir
        .as_ref()
        .map(|d| d.as_fd())
        .unwrap_or(target.dir.as_fd());
    let temp_name = temp_name_for(&target.name);
    let fd = rustix::fs::openat(
        dir,
        temp_name.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        // New files get 0666 minus the umask, like any editor would create them.
        Mode::from_raw_mode(0o666),
    )?;
    let result = fill_and_rename(dir, fd, &temp_name, target, contents);
    if result.is_err() {
        let _ = rustix::fs::unlinkat(dir, temp_name.as_str(), AtFlags::empty());
    }
    result?;
    Ok(WriteReport {
        bytes_written: contents.len() as u64,
        created: target.existing.is_none(),
        dirs_created,
    })
}

fn fill_and_rename(
    dir: std::os::fd::BorrowedFd<'_>,
    fd: OwnedFd,
    temp_name: &str,
    target: &WriteTarget,
    contents: &[u8],
) -> std::io::Result<()> {
    let mut file = std::fs::File::from(fd);
    file.write_all(contents)?;
    if let Some(existing) = &target.existing {
        keep_mode_and_owner(&file, existing)?;
    }
    file.sync_all()?;
    drop(file);
    rustix::fs::renameat(dir, temp_name, dir, target.name.as_str())?;
    rustix::fs::fsync(dir)?;
    Ok(())
}

/// Give the new file the replaced file's permission bits (including the
/// executable bit) and, where we are allowed to, its owner.
fn keep_mode_and_owner(file: &std::fs::File, existing: &ExistingFile) -> std::io::Result<()> {
    let current = rustix::fs::fstat(file)?;
    if current.st_uid != existing.uid || current.st_gid != existing.gid {
        match rustix::fs::fchown(
            file,
            Some(rustix::fs::Uid::from_raw(existing.uid)),
            Some(rustix::fs::Gid::from_raw(existing.gid)),
        ) {
            Ok(()) | Err(Errno::PERM) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // fchmod after fchown: changing the owner clears set-id bits.
    rustix::fs::fchmod(file, Mode::from_raw_mode(existing.mode))?;
    Ok(())
}

/// Create the directories `names` (each inside the previous one) beneath
/// `base`, each opened without following symlinks, and fsync each parent so
/// the new entries last. Returns the innermost directory (none when `names`
/// is empty) and how many were created.
pub(crate) fn create_dirs_beneath(
    base: std::os::fd::BorrowedFd<'_>,
    names: &[String],
) -> std::io::Result<(Option<OwnedFd>, usize)> {
    let mut current: Option<OwnedFd> = None;
    let mut created = 0;
    for name in names {
        let parent = current.as_ref().map(|d| d.as_fd()).unwrap_or(base);
        match rustix::fs::mkdirat(parent, name.as_str(), Mode::from_raw_mode(0o777)) {
            Ok(()) => {
                created += 1;
                rustix::fs::fsync(parent)?;
            }
            Err(Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        let next = rustix::fs::openat2(
            parent,
            name.as_str(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
        )?;
        current = Some(next);
    }
    Ok((current, created))
}

fn temp_name_for(name: &str) -> String {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let suffix = format!("{TEMP_MARKER}{}-{n}", std::process::id());
    // Keep the whole name within the 255-byte component limit.
    let mut keep = name.len().min(255 - suffix.len() - 1);
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    format!(".{}{suffix}", &name[..keep])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::workspace::WorkspaceRoot;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn write_creates_parents_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let root = WorkspaceRoot::open(dir.path()).unwrap();
        let t = root.prepare_write("a/b/c.txt").unwrap();
        let r = write_atomically(&t, b"hello").unwrap();
        assert!(r.created);
        assert_eq!(r.dirs_created, 2);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a/b/c.txt")).unwrap(),
            "hello"
        );
        let t = root.prepare_write("a/b/c.txt").unwrap();
        let r = write_atomically(&t, b"bye").unwrap();
        assert!(!r.created);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a/b/c.txt")).unwrap(),
            "bye"
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    }

    #[test]
    fn replacing_keeps_the_executable_bit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.sh");
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o751)).unwrap();
        let root = WorkspaceRoot::open(dir.path()).unwrap();
        write_atomically(
            &root.prepare_write("run.sh").unwrap(),
            b"#!/bin/sh\necho hi\n",
        )
        .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o751);
    }

    #[test]
    fn writing_through_an_inside_symlink_replaces_the_target_and_keeps_the_link() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("real.txt"), "old").unwrap();
        std::os::unix::fs::symlink("real.txt", dir.path().join("link.txt")).unwrap();
        let root = WorkspaceRoot::open(dir.path()).unwrap();
        write_atomically(&root.prepare_write("link.txt").unwrap(), b"new").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("real.txt")).unwrap(),
            "new"
        );
        assert!(
            std::fs::symlink_metadata(dir.path().join("link.txt"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    #[test]
    fn temp_names_fit_the_component_limit() {
        let long = "é".repeat(127);
        assert!(temp_name_for(&long).len() <= 255);
        assert!(temp_name_for("x").contains(TEMP_MARKER));
    }
}
