//! The mount layer, in the helper's new mount namespace: the command's view
//! of the filesystem differs from the server's only by what is added here,
//! and nothing done here is seen outside (the root is made a slave first).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use super::sys::{SysResult, cstring};
use crate::exec::plan::Mount;

fn mount_raw(
    source: Option<&CString>,
    target: &CString,
    fstype: Option<&std::ffi::CStr>,
    flags: libc::c_ulong,
    data: Option<&CString>,
) -> SysResult<()> {
    let ptr = |c: Option<&CString>| c.map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: valid C strings or null, as mount(2) accepts.
    let rc = unsafe {
        libc::mount(
            ptr(source),
            target.as_ptr(),
            fstype.map_or(std::ptr::null(), |c| c.as_ptr()),
            flags,
            data.map_or(std::ptr::null(), |c| c.as_ptr().cast()),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Mount events stay in this namespace: make every mount a slave of the host's.
pub fn make_root_slave() -> SysResult<()> {
    mount_raw(
        None,
        &CString::from(c"/"),
        None,
        libc::MS_REC | libc::MS_SLAVE,
        None,
    )
}

/// Carry out one mount of the plan.
pub fn apply(m: &Mount) -> Result<(), String> {
    let path = m.path();
    let target = cstring(path).map_err(|e| e.to_string())?;
    let fail = |what: &str, e: io::Error| format!("{what} {}: {e}", path.display());
    if !matches!(m, Mount::Proc) {
        // The plan was made from the real paths; refuse one swapped for a symlink since.
        match path.symlink_metadata() {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(format!("{} is now a symlink; not mounted", path.display()));
            }
            Ok(_) => {}
            Err(e) => return Err(fail("cannot find", e)),
        }
    }
    match m {
        Mount::Proc => mount_raw(
            Some(&CString::from(c"proc")),
            &target,
            Some(c"proc"),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            None,
        )
        .map_err(|e| fail("mounting a fresh proc on", e)),
        Mount::Tmpfs { options, .. } => mount_raw(
            Some(&CString::from(c"tmpfs")),
            &target,
            Some(c"tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV,
            Some(&CString::new(options.as_str()).map_err(|e| e.to_string())?),
        )
        .map_err(|e| fail("mounting a private tmpfs on", e)),
        Mount::Hide {
            dir: true, reveal, ..
        } => hide_dir(&target, reveal).map_err(|e| fail("hiding", e)),
        Mount::Hide { dir: false, .. } => {
            bind(&CString::from(c"/dev/null"), &target).map_err(|e| fail("hiding", e))?;
            remount_read_only(path, &target).map_err(|e| fail("hiding", e))
        }
        Mount::Pin { .. } => bind(&target, &target).map_err(|e| fail("pinning", e)),
        Mount::ReadOnly { .. } => {
            bind(&target, &target).map_err(|e| fail("binding", e))?;
            remount_read_only(path, &target).map_err(|e| fail("making read-only", e))
        }
    }
}

fn bind(source: &CString, target: &CString) -> SysResult<()> {
    mount_raw(Some(source), target, None, libc::MS_BIND, None)
}

/// Remount a bind mount read-only. The flags the mount already has must be
/// kept: in a user namespace the kernel refuses to clear locked ones.
fn remount_read_only(path: &Path, target: &CString) -> SysResult<()> {
    // SAFETY: zeroed statvfs is a valid out value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let c = cstring(path)?;
    // SAFETY: valid path and out pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY;
    for (st_flag, ms_flag) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if st.f_flag & st_flag != 0 {
            flags |= ms_flag;
        }
    }
    mount_raw(None, target, None, flags, None)
}

/// An empty read-only tmpfs over `path`, with `reveal` files bound back at
/// their own paths (opened before they disappear under the tmpfs).
fn hide_dir(target: &CString, reveal: &[std::path::PathBuf]) -> SysResult<()> {
    let kept: Vec<(OwnedFd, &std::path::PathBuf)> = reveal
        .iter()
        .filter_map(|r| {
            rustix::fs::open(
                r.as_path(),
                rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .ok()
            .map(|fd| (fd, r))
        })
        .collect();
    mount_raw(
        Some(&CString::from(c"tmpfs")),
        target,
        Some(c"tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some(&CString::from(c"size=64k,mode=755")),
    )?;
    for (fd, file) in &kept {
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::File::create(file)?;
        let source = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
        let file_c = cstring(file)?;
        bind(&source, &file_c)?;
        remount_read_only(file, &file_c)?;
    }
    mount_raw(
        None,
        target,
        None,
        libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some(&CString::from(c"size=64k,mode=755")),
    )
}
