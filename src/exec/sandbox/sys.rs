//! Thin wrappers over the system calls the sandbox helper needs, each
//! returning the OS error as a value. Only the helper process uses them; it
//! is single-threaded, so `fork` here is an ordinary fork.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::path::Path;

pub type SysResult<T> = Result<T, io::Error>;

fn check(rc: libc::c_int) -> SysResult<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

pub fn cstring(p: &Path) -> SysResult<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

pub fn write_all(fd: RawFd, mut data: &[u8]) -> SysResult<()> {
    while !data.is_empty() {
        // SAFETY: `data` is a valid buffer of `data.len()` bytes.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        data = &data[n as usize..];
    }
    Ok(())
}

/// Read until end of file.
pub fn read_to_end(fd: RawFd, limit: usize) -> SysResult<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        // SAFETY: `buf` is a valid writable buffer.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n as usize]);
        if out.len() > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "input too large",
            ));
        }
    }
}

pub fn dup2(from: RawFd, to: RawFd) -> SysResult<()> {
    // SAFETY: plain syscall on descriptors.
    check(unsafe { libc::dup2(from, to) }).map(drop)
}

pub fn set_cloexec(fd: RawFd) -> SysResult<()> {
    // SAFETY: plain syscall on a descriptor.
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) }).map(drop)
}

pub fn close(fd: RawFd) {
    // SAFETY: closing a descriptor this process owns.
    unsafe { libc::close(fd) };
}

/// Close every descriptor from `first` up.
pub fn close_from(first: RawFd) {
    // SAFETY: close_range on descriptors this process owns; nothing refers to them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            0,
        )
    };
    if rc != 0 {
        for fd in first..1024 {
            close(fd);
        }
    }
}

pub fn open_dev_null() -> SysResult<RawFd> {
    // SAFETY: a constant NUL-terminated path.
    check(unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) })
}

pub fn pipe() -> SysResult<(RawFd, RawFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    Ok((fds[0], fds[1]))
}

/// True when every writer of the pipe `read_end` is gone.
pub fn writers_gone(read_end: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd: read_end,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let rc = unsafe { libc::poll(&mut p, 1, 0) };
    rc > 0 && (p.revents & libc::POLLHUP) != 0
}

pub enum Forked {
    Child,
    Parent(libc::pid_t),
}

pub fn fork() -> SysResult<Forked> {
    // SAFETY: the helper is single-threaded, so the child may do anything.
    match check(unsafe { libc::fork() })? {
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

pub fn set_parent_death_signal() -> SysResult<()> {
    // SAFETY: plain prctl.
    check(unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    })
    .map(drop)
}

pub fn set_no_new_privs() -> SysResult<()> {
    // SAFETY: plain prctl.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }).map(drop)
}

pub fn unshare(flags: libc::c_int) -> SysResult<()> {
    // SAFETY: single-threaded process; the flags are plain bits.
    check(unsafe { libc::unshare(flags) }).map(drop)
}

/// Move into the network namespace behind `path` (a namespace file).
pub fn join_network_namespace(path: &Path) -> SysResult<()> {
    let c = cstring(path)?;
    // SAFETY: a valid C string.
    let fd = check(unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) })?;
    // SAFETY: a namespace descriptor we own.
    let rc = unsafe { libc::setns(fd, libc::CLONE_NEWNET) };
    let result = if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    };
    close(fd);
    result
}

pub fn kill(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: plain syscall.
    unsafe { libc::kill(pid, sig) };
}

/// `waitpid`; `None` when nothing (more) has changed state.
pub fn wait_nohang(pid: libc::pid_t) -> Option<(libc::pid_t, libc::c_int)> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return (rc > 0).then_some((rc, status));
    }
}

/// The signals the helper's processes take as events rather than actions.
pub fn event_signals() -> libc::sigset_t {
    // SAFETY: sigset functions on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [
            libc::SIGCHLD,
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
            libc::SIGQUIT,
        ] {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

pub fn block_signals(set: &libc::sigset_t) {
    // SAFETY: a valid set.
    unsafe { libc::sigprocmask(libc::SIG_BLOCK, set, std::ptr::null_mut()) };
}

extern "C" fn ignore_signal(_: libc::c_int) {}

/// Give the event signals a handler: PID 1 of a namespace never receives a
/// signal whose action is the default, even when blocked and waited for.
pub fn handle_event_signals() {
    for sig in [
        libc::SIGCHLD,
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGQUIT,
    ] {
        // SAFETY: installing a handler that does nothing.
        unsafe { libc::signal(sig, ignore_signal as *const () as libc::sighandler_t) };
    }
}

/// Wait for one of the blocked signals in `set`.
pub fn wait_signal(set: &libc::sigset_t) -> libc::c_int {
    loop {
        // SAFETY: a valid set; the info pointer may be null.
        let sig = unsafe { libc::sigwaitinfo(set, std::ptr::null_mut()) };
        if sig > 0 {
            return sig;
        }
    }
}

/// Unblock every signal and put every action back to its default, so the
/// command starts as if from a fresh shell (the Rust runtime ignores SIGPIPE,
/// and ignored signals survive exec).
pub fn reset_signals() {
    // SAFETY: signal state of this process only.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        for sig in 1..libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
    }
}

pub fn setsid() -> SysResult<()> {
    // SAFETY: plain syscall.
    check(unsafe { libc::setsid() }).map(drop)
}

/// `TIOCSCTTY`: make `fd` (a terminal) the controlling terminal of this session.
pub fn set_controlling_terminal(fd: RawFd) -> SysResult<()> {
    // SAFETY: plain ioctl on a descriptor we own; the argument is an int.
    check(unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) }).map(drop)
}

pub fn chdir(path: &Path) -> SysResult<()> {
    let c = cstring(path)?;
    // SAFETY: a valid C string.
    check(unsafe { libc::chdir(c.as_ptr()) }).map(drop)
}

pub fn getpid() -> libc::pid_t {
    // SAFETY: plain syscall.
    unsafe { libc::getpid() }
}

pub fn getppid() -> libc::pid_t {
    // SAFETY: plain syscall.
    unsafe { libc::getppid() }
}

pub fn getuid() -> u32 {
    // SAFETY: plain syscall.
    unsafe { libc::getuid() }
}

pub fn getgid() -> u32 {
    // SAFETY: plain syscall.
    unsafe { libc::getgid() }
}

pub fn exit(code: i32) -> ! {
    // SAFETY: ends the process without running destructors of a forked copy.
    unsafe { libc::_exit(code) }
}

/// Set a resource limit, never above the current hard limit.
pub fn set_rlimit(resource: libc::__rlimit_resource_t, value: u64) -> SysResult<()> {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out pointer.
    check(unsafe { libc::getrlimit(resource, &mut cur) })?;
    let value = value.min(cur.rlim_max);
    let new = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: valid pointer.
    check(unsafe { libc::setrlimit(resource, &new) }).map(drop)
}

const SECBIT_NOROOT: libc::c_ulong = 1 << 0;
const SECBIT_NOROOT_LOCKED: libc::c_ulong = 1 << 1;
const SECBIT_NO_SETUID_FIXUP: libc::c_ulong = 1 << 2;
const SECBIT_NO_SETUID_FIXUP_LOCKED: libc::c_ulong = 1 << 3;
const SECBIT_KEEP_CAPS_LOCKED: libc::c_ulong = 1 << 5;
const SECBIT_NO_CAP_AMBIENT_RAISE: libc::c_ulong = 1 << 6;
const SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED: libc::c_ulong = 1 << 7;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Give up every capability for good: empty the bounding set (so that
/// executing anything, even as uid 0, grants none back), lock root's special
/// treatment off, clear the ambient set, then the process's own sets.
pub fn drop_capabilities() -> SysResult<()> {
    for cap in 0..64 {
        // SAFETY: plain prctl.
        let present = unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong, 0, 0, 0) };
        if present < 0 {
            break; // past the last capability this kernel knows
        }
        if present == 1 {
            // SAFETY: plain prctl.
            check(unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) })?;
        }
    }
    let bits = SECBIT_NOROOT
        | SECBIT_NOROOT_LOCKED
        | SECBIT_NO_SETUID_FIXUP
        | SECBIT_NO_SETUID_FIXUP_LOCKED
        | SECBIT_KEEP_CAPS_LOCKED
        | SECBIT_NO_CAP_AMBIENT_RAISE
        | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
    // SAFETY: plain prctl.
    check(unsafe { libc::prctl(libc::PR_SET_SECUREBITS, bits, 0, 0, 0) })?;
    // SAFETY: plain prctl.
    check(unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    })?;
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: header and two data records, as capset(2) version 3 expects.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn write_file(path: &str, contents: &str) -> SysResult<()> {
    std::fs::write(path, contents)
}
