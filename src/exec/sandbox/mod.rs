//! The sandbox helper: `arbiter __sandbox`, the process the server starts for
//! each command. It runs in a fresh, single-threaded process (the server is
//! multi-threaded, and forking there is unsafe and makes `spawn` wait for
//! the whole sandbox), receives its [`SandboxPlan`] as JSON on its stdin (a
//! Unix socket), and sends [`Report`]s back on the same socket.
//!
//! Three processes:
//!
//! 1. **helper** (this process, in the server's namespaces): joins the pids
//!    cgroup (root), creates the namespaces, forks the init, forwards
//!    SIGTERM to it, and exits with its status.
//! 2. **init**, PID 1 of the new PID namespace: sets up the mounts, forks the
//!    command, reaps every orphan, forwards SIGTERM to every process of the
//!    namespace, reports how the command ended and exits with it. When it
//!    exits, the kernel kills whatever is left in the namespace (background
//!    and `setsid` children included), so nothing outlives the call.
//! 3. **command**: a new session (no terminal, stdin `/dev/null`; with
//!    `plan.tty`, the session's terminal as stdin and controlling terminal), rlimits,
//!    no capabilities, `no_new_privs`, Landlock, seccomp, then `execve`
//!    (looking `argv[0]` up in the sandbox `PATH`). The status socket is
//!    close-on-exec: a report from it means the exec failed.
//!
//! A layer that cannot be set up is reported as missing; in strict mode the
//! helper then stops before the command runs. Why each layer, and what it
//! stops: `src/exec/README.md`.

mod landlock;
mod mounts;
mod seccomp;
mod sys;

use std::ffi::CString;
use std::os::fd::RawFd;
use std::path::PathBuf;

use super::plan::{Namespaces, Report, RlimitKind, SandboxPlan};
use sys::Forked;

pub use landlock::kernel_abi as landlock_abi;

/// The hidden subcommand that runs the helper.
pub const HELPER_ARG: &str = "__sandbox";
/// Exit code of the helper when it stopped before running the command.
pub const EXIT_SETUP: i32 = 125;

/// Where the status socket lives in the helper's processes.
const REPORT_FD: RawFd = 3;
/// Largest plan accepted (the command line and environment are in it).
const MAX_PLAN_BYTES: usize = 16 * 1024 * 1024;

/// Entry point of `arbiter __sandbox`; never returns.
pub fn main() -> ! {
    sys::exit(helper())
}

struct Reporter;

impl Reporter {
    fn send(&self, report: &Report) {
        let mut line = serde_json::to_vec(report).unwrap_or_default();
        line.push(b'\n');
        let _ = sys::write_all(REPORT_FD, &line);
    }

    fn setup_failed(&self, step: &str, detail: impl Into<String>) -> ! {
        self.send(&Report::SetupFailed {
            step: step.to_string(),
            detail: detail.into(),
        });
        sys::exit(EXIT_SETUP)
    }
}

/// Applies the strict / best-effort rule to each layer.
struct Layers {
    strict: bool,
}

impl Layers {
    /// `Ok` → true. A missing layer is reported; in strict mode the process stops.
    fn check(&self, layer: &str, result: Result<(), String>) -> bool {
        match result {
            Ok(()) => true,
            Err(detail) => {
                Reporter.send(&Report::LayerMissing {
                    layer: layer.to_string(),
                    detail,
                });
                if self.strict {
                    sys::exit(EXIT_SETUP);
                }
                false
            }
        }
    }
}

fn helper() -> i32 {
    // fd 0 is the status socket: the plan comes in on it, reports go out on it.
    if sys::dup2(0, REPORT_FD).is_err() || sys::set_cloexec(REPORT_FD).is_err() {
        return EXIT_SETUP;
    }
    let plan: SandboxPlan = match sys::read_to_end(REPORT_FD, MAX_PLAN_BYTES)
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
    {
        Ok(plan) => plan,
        Err(e) => Reporter.setup_failed("plan", format!("cannot read the sandbox plan: {e}")),
    };
    if plan.tty {
        // An interactive session: stdin is the terminal on stdout.
        if let Err(e) = sys::dup2(1, 0) {
            Reporter.setup_failed("stdin", format!("cannot use the terminal as stdin: {e}"));
        }
    } else {
        match sys::open_dev_null() {
            Ok(null) => {
                let _ = sys::dup2(null, 0);
                sys::close(null);
            }
            Err(e) => Reporter.setup_failed("stdin", format!("cannot open /dev/null: {e}")),
        }
    }
    sys::close_from(REPORT_FD + 1);
    // Die with the server; and if it is already gone, do nothing.
    if sys::set_parent_death_signal().is_err() || sys::getppid() as u32 != plan.server_pid {
        return EXIT_SETUP;
    }
    let layers = Layers {
        strict: plan.strict,
    };
    if let Some(cgroup) = &plan.cgroup {
        layers.check("cgroup_pids", join_cgroup(cgroup));
    }
    let ns = unshare(&plan.namespaces, plan.join_net.as_deref(), &layers);

    let events = sys::event_signals();
    sys::block_signals(&events);
    let (life_read, life_write) = match sys::pipe() {
        Ok(p) => p,
        Err(e) => Reporter.setup_failed("pipe", e.to_string()),
    };
    match sys::fork() {
        Ok(Forked::Child) => {
            sys::close(life_write);
            init(&plan, ns, life_read, &layers)
        }
        Ok(Forked::Parent(init_pid)) => {
            sys::close(life_read);
            supervise(init_pid, &events)
        }
        Err(e) => Reporter.setup_failed("fork", e.to_string()),
    }
}

fn join_cgroup(dir: &std::path::Path) -> Result<(), String> {
    std::fs::write(dir.join("cgroup.procs"), sys::getpid().to_string())
        .map_err(|e| format!("cannot join {}: {e}", dir.display()))
}

/// Create the namespaces of the plan (or join the server's empty network
/// namespace); those that fail are missing layers.
fn unshare(want: &Namespaces, join_net: Option<&std::path::Path>, layers: &Layers) -> Namespaces {
    let (uid, gid) = (sys::getuid(), sys::getgid());
    let joined = want.net && join_net.is_some_and(|p| sys::join_network_namespace(p).is_ok());
    let wanted = [
        (want.user, libc::CLONE_NEWUSER, "user_namespace"),
        (want.pid, libc::CLONE_NEWPID, "pid_namespace"),
        (want.net && !joined, libc::CLONE_NEWNET, "network_namespace"),
        (want.mount, libc::CLONE_NEWNS, "mount_namespace"),
    ];
    let all = wanted
        .iter()
        .filter(|(w, _, _)| *w)
        .fold(0, |flags, (_, f, _)| flags | f);
    let mut got = Namespaces {
        user: false,
        pid: false,
        net: false,
        mount: false,
    };
    let mut set = |flag: libc::c_int, ok: bool| match flag {
        libc::CLONE_NEWUSER => got.user = ok,
        libc::CLONE_NEWPID => got.pid = ok,
        libc::CLONE_NEWNET => got.net = ok,
        _ => got.mount = ok,
    };
    if all != 0 && sys::unshare(all).is_ok() {
        for (w, flag, _) in wanted {
            set(flag, w);
        }
    } else {
        // One at a time (the user namespace first: the others may need it),
        // to know which one is missing.
        for (w, flag, name) in wanted {
            if w {
                let ok = layers.check(name, sys::unshare(flag).map_err(|e| e.to_string()));
                set(flag, ok);
            }
        }
    }
    got.net |= joined;
    if got.user {
        let maps = sys::write_file("/proc/self/setgroups", "deny")
            .and_then(|()| sys::write_file("/proc/self/uid_map", &format!("{uid} {uid} 1\n")))
            .and_then(|()| sys::write_file("/proc/self/gid_map", &format!("{gid} {gid} 1\n")));
        layers.check(
            "user_namespace",
            maps.map_err(|e| format!("cannot map the user and group ids: {e}")),
        );
    }
    got
}

/// The helper's own loop: forward termination to the init, exit with its status.
fn supervise(init_pid: libc::pid_t, events: &libc::sigset_t) -> i32 {
    loop {
        match sys::wait_signal(events) {
            libc::SIGCHLD => {
                if let Some((_, status)) = sys::wait_nohang(init_pid) {
                    return exit_code(status);
                }
            }
            _ => sys::kill(init_pid, libc::SIGTERM),
        }
    }
}

fn exit_code(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    }
}

/// PID 1 of the new namespace (or a plain supervisor when there is none).
fn init(plan: &SandboxPlan, ns: Namespaces, life: RawFd, layers: &Layers) -> ! {
    let events = sys::event_signals();
    if sys::set_parent_death_signal().is_err() || sys::writers_gone(life) {
        sys::exit(EXIT_SETUP);
    }
    sys::handle_event_signals();
    if ns.mount {
        layers.check(
            "mounts",
            mounts::make_root_slave().map_err(|e| format!("cannot make / a slave mount: {e}")),
        );
        for m in &plan.mounts {
            if matches!(m, super::plan::Mount::Proc) && !ns.pid {
                continue; // a fresh proc only helps with a fresh PID namespace
            }
            layers.check(&format!("mount:{}", m.path().display()), mounts::apply(m));
        }
    }
    if let Some(max) = plan.pid_max {
        // Only in a PID namespace of our own: elsewhere (or on a kernel
        // before 6.14) this file is the whole machine's limit.
        let set = if sys::getpid() == 1 {
            sys::write_file("/proc/sys/kernel/pid_max", &max.to_string())
                .map_err(|e| format!("cannot set pid_max in the PID namespace: {e}"))
        } else {
            Err("there is no PID namespace to limit".to_string())
        };
        layers.check("pid_max", set);
    }
    // Compiled here, once, rather than in the command's process.
    let filters = seccomp::build(&plan.seccomp);
    let command_pid = match sys::fork() {
        Ok(Forked::Child) => {
            sys::close(life);
            command(plan, filters, layers)
        }
        Ok(Forked::Parent(pid)) => pid,
        Err(e) => Reporter.setup_failed("fork", e.to_string()),
    };
    let own_namespace = sys::getpid() == 1;
    loop {
        match sys::wait_signal(&events) {
            libc::SIGCHLD => {
                // Reap every child: orphans of the namespace land here too.
                while let Some((pid, status)) = sys::wait_nohang(-1) {
                    if pid == command_pid {
                        let report = if libc::WIFEXITED(status) {
                            Report::Exited {
                                code: libc::WEXITSTATUS(status),
                            }
                        } else {
                            Report::Signaled {
                                signal: libc::WTERMSIG(status),
                            }
                        };
                        Reporter.send(&report);
                        // Everything else in the namespace dies with this process.
                        sys::exit(exit_code(status));
                    }
                }
            }
            _ => {
                if own_namespace {
                    // Every process of the namespace but this one.
                    sys::kill(-1, libc::SIGTERM);
                } else {
                    sys::kill(-command_pid, libc::SIGTERM);
                    sys::kill(command_pid, libc::SIGTERM);
                }
            }
        }
    }
}

/// The command's process: the per-process layers, then exec.
fn command(
    plan: &SandboxPlan,
    filters: Result<Vec<seccompiler::BpfProgram>, String>,
    layers: &Layers,
) -> ! {
    sys::reset_signals();
    if let Err(e) = sys::setsid() {
        Reporter.setup_failed("setsid", e.to_string());
    }
    if plan.tty {
        // The session's terminal becomes the controlling terminal of the new
        // session, so job control and ^C work in the shell.
        if let Err(e) = sys::set_controlling_terminal(0) {
            Reporter.setup_failed("terminal", e.to_string());
        }
    }
    if let Err(e) = sys::chdir(&plan.cwd) {
        Reporter.setup_failed("cwd", format!("cannot enter {}: {e}", plan.cwd.display()));
    }
    let rlimits = plan.rlimits.iter().try_for_each(|r| {
        let resource = match r.kind {
            RlimitKind::AddressSpace => libc::RLIMIT_AS,
            RlimitKind::FileSize => libc::RLIMIT_FSIZE,
            RlimitKind::Cpu => libc::RLIMIT_CPU,
            RlimitKind::OpenFiles => libc::RLIMIT_NOFILE,
            RlimitKind::Core => libc::RLIMIT_CORE,
            RlimitKind::Processes => libc::RLIMIT_NPROC,
        };
        sys::set_rlimit(resource, r.value).map_err(|e| format!("{:?}: {e}", r.kind))
    });
    layers.check("rlimits", rlimits);
    layers.check(
        "capabilities",
        sys::drop_capabilities().map_err(|e| format!("cannot drop capabilities: {e}")),
    );
    layers.check(
        "no_new_privs",
        sys::set_no_new_privs().map_err(|e| e.to_string()),
    );
    layers.check("landlock", landlock::restrict(&plan.landlock));
    layers.check("seccomp", filters.and_then(|f| seccomp::apply(&f)));
    exec(plan)
}

/// `execve` the command, looking `argv[0]` up like a shell would; on failure,
/// report why and exit 127 (not found) or 126 (found, not runnable).
fn exec(plan: &SandboxPlan) -> ! {
    let to_c = |s: &str| CString::new(s).unwrap_or_default();
    let argv: Vec<CString> = plan.argv.iter().map(|a| to_c(a)).collect();
    let envp: Vec<CString> = plan
        .env
        .iter()
        .map(|(k, v)| to_c(&format!("{k}={v}")))
        .collect();
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());

    let program = plan.argv.first().cloned().unwrap_or_default();
    let candidates: Vec<PathBuf> = if program.contains('/') {
        vec![PathBuf::from(&program)]
    } else {
        plan.search_path.iter().map(|d| d.join(&program)).collect()
    };
    let mut denied: Option<(PathBuf, std::io::Error)> = None;
    let mut last: Option<std::io::Error> = None;
    for candidate in &candidates {
        let Ok(path) = sys::cstring(candidate) else {
            continue;
        };
        // SAFETY: NUL-terminated arrays of valid C strings.
        unsafe { libc::execve(path.as_ptr(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr()) };
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR) => last = Some(e),
            Some(libc::EACCES) => {
                if denied.is_none() {
                    denied = Some((candidate.clone(), e));
                }
            }
            _ => {
                denied = Some((candidate.clone(), e));
                break;
            }
        }
    }
    let (errno, detail, code) = match denied {
        Some((path, e)) => (
            e.raw_os_error().unwrap_or(0),
            format!("{}: {e}", path.display()),
            126,
        ),
        None => (
            last.and_then(|e| e.raw_os_error()).unwrap_or(libc::ENOENT),
            if program.contains('/') {
                format!("{program}: no such file")
            } else {
                format!(
                    "`{program}` is not in the sandbox PATH ({})",
                    plan.search_path
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(":")
                )
            },
            127,
        ),
    };
    Reporter.send(&Report::ExecFailed {
        errno,
        program,
        detail,
    });
    sys::exit(code)
}
