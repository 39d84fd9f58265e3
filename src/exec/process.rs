//! The server's side of a sandboxed command: start the helper
//! (`/proc/self/exe __sandbox`, so the very binary that is running, even if
//! the file on disk was replaced), hand it the plan, read the command's
//! stdout and stderr into bounded captures, and wait for the end, the
//! deadline or a cancellation, whichever comes first.
//!
//! Stopping a command: SIGTERM to the helper, which forwards it to every
//! process of the command's PID namespace; after the grace period, SIGKILL
//! to the helper, whose death kills the namespace's init (parent-death
//! signal), whose death kills everything left in the namespace. A root
//! server also kills whatever is still in the command's pids cgroup. The
//! call never waits for a stray process holding a pipe open: after the
//! helper is gone, the pipes get a short time to drain, then are dropped.

use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::task::JoinHandle;

use super::cgroup::PidsCgroup;
use super::output::{Capture, CapturedText};
use super::plan::{Report, SandboxPlan};
use super::sandbox::HELPER_ARG;

/// The running binary, whatever happened to its file since.
const SELF_EXE: &str = "/proc/self/exe";
/// How long the pipes may take to reach end-of-file once the helper is gone.
const DRAIN_TIME: Duration = Duration::from_millis(500);
/// Read size of the output pumps.
const READ_CHUNK: usize = 64 * 1024;

/// Sandboxed commands (and terminal shells) running now, for `/metrics`.
static RUNNING: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// How many sandboxed commands (terminal shells included) are running.
pub fn running_commands() -> i64 {
    RUNNING.load(std::sync::atomic::Ordering::Relaxed).max(0)
}

/// Counts one command in [`running_commands`] while it lives.
struct RunningGuard(());

impl RunningGuard {
    fn start() -> Self {
        RUNNING.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(())
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A network namespace with no interface up, for a root server's commands
/// to share: creating one per command costs about 0.4 ms (and as much again
/// to tear it down), joining one costs a `setns`. A thread of its own moves
/// into a new namespace (this affects that thread only), opens it and
/// exits; the descriptor keeps the namespace alive. Commands cannot reach
/// each other through it: its loopback is down, inet sockets are refused by
/// seccomp, and Landlock scopes abstract Unix sockets to each command.
pub fn empty_network_namespace() -> std::io::Result<OwnedFd> {
    std::thread::spawn(|| {
        // SAFETY: a network namespace change affects this thread only, which
        // does nothing else and exits; no other thread's view changes.
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET)? };
        let fd = rustix::fs::open(
            "/proc/thread-self/ns/net",
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        Ok(fd)
    })
    .join()
    .map_err(|_| std::io::Error::other("the namespace thread panicked"))?
}

/// Both streams of a command, shared with the pumps that fill them.
#[derive(Debug)]
pub struct Streams {
    pub stdout: Capture,
    pub stderr: Capture,
}

impl Streams {
    pub fn total(&self) -> u64 {
        self.stdout.total() + self.stderr.total()
    }
}

pub type SharedStreams = Arc<Mutex<Streams>>;

/// What to undo after the command: its cgroup and its private directory.
#[derive(Debug, Default)]
pub struct Cleanup {
    pub cgroup: Option<PidsCgroup>,
    pub private_dir: Option<tempfile::TempDir>,
    /// Where the private directory is removed after the reply (the server
    /// waits for the tracker at shutdown); without one, before it.
    pub tracker: Option<tokio_util::task::TaskTracker>,
}

impl Cleanup {
    pub async fn run(self) {
        // The cgroup first: in a sandbox without a PID namespace, it is what
        // kills a process that escaped.
        if let Some(cgroup) = self.cgroup {
            cgroup.remove().await;
        }
        if let Some(dir) = self.private_dir {
            let remove = move || {
                let path: PathBuf = dir.path().to_path_buf();
                if dir.close().is_err() {
                    tracing::warn!(dir = %path.display(), "could not remove a command's private directory");
                }
            };
            match self.tracker {
                Some(tracker) => drop(tracker.spawn_blocking(remove)),
                None => {
                    let _ = tokio::task::spawn_blocking(remove).await;
                }
            }
        }
    }
}

/// Why a command did not run (or its end is unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A sandbox layer is missing and the policy is strict.
    LayerMissing { layer: String, detail: String },
    /// The sandbox could not be set up.
    Setup { step: String, detail: String },
    /// The program could not be executed.
    Exec {
        errno: i32,
        program: String,
        detail: String,
    },
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub exit_code: Option<i32>,
    /// The signal that ended it.
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub cancelled: bool,
    /// The server had to SIGKILL it (it outlived SIGTERM and the grace period).
    pub killed: bool,
    pub duration: Duration,
    pub failure: Option<Failure>,
    /// Layers missing in best-effort mode.
    pub missing_layers: Vec<String>,
}

/// A command whose helper is running.
pub struct Spawned {
    child: tokio::process::Child,
    streams: SharedStreams,
    pumps: Vec<JoinHandle<()>>,
    reports: JoinHandle<Vec<Report>>,
    strict: bool,
    cleanup: Cleanup,
    started: Instant,
    _running: RunningGuard,
}

impl std::fmt::Debug for Spawned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spawned")
            .field("pid", &self.child.id())
            .finish()
    }
}

/// A helper started ahead of time, blocked reading its plan: starting one
/// (spawn, exec, runtime start-up) is the largest fixed cost of a command,
/// so the server keeps one ready and starts the next while a command runs.
/// It is an ordinary child of the server, supervised like any other.
#[derive(Debug)]
struct Waiting {
    child: tokio::process::Child,
    socket: std::os::unix::net::UnixStream,
}

fn start_helper() -> std::io::Result<Waiting> {
    start_helper_with(None)
}

/// A helper whose stdout and stderr are `terminal` (a PTY slave) instead of
/// pipes. The caller's copy of the slave is closed when this returns, so the
/// master sees end-of-file (EIO) once the sandbox is gone.
fn start_helper_with(terminal: Option<OwnedFd>) -> std::io::Result<Waiting> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    let mut command = std::process::Command::new(SELF_EXE);
    command
        .arg0("arbiter-sandbox")
        .arg(HELPER_ARG)
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .process_group(0);
    match terminal {
        Some(slave) => {
            let copy = slave.try_clone()?;
            command.stdout(Stdio::from(slave)).stderr(Stdio::from(copy));
        }
        None => {
            command.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
    }
    let mut command = tokio::process::Command::from(command);
    command.kill_on_drop(true);
    let child = command.spawn()?;
    drop(command);
    Ok(Waiting {
        child,
        socket: ours,
    })
}

/// Helpers kept ready (see [`Waiting`]).
#[derive(Debug)]
pub struct HelperPool {
    ready: Mutex<Vec<Waiting>>,
    keep: usize,
    refilling: std::sync::atomic::AtomicBool,
}

impl HelperPool {
    /// Keep `keep` helpers ready once the first command has run (0: start each on demand).
    pub fn new(keep: usize) -> Arc<Self> {
        Arc::new(Self {
            ready: Mutex::new(Vec::new()),
            keep,
            refilling: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn take(self: &Arc<Self>) -> std::io::Result<Waiting> {
        let mut found = None;
        {
            let mut ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
            while let Some(mut w) = ready.pop() {
                // One that died while waiting (killed from outside) is no use.
                if matches!(w.child.try_wait(), Ok(None)) {
                    found = Some(w);
                    break;
                }
            }
        }
        match found {
            Some(w) => Ok(w),
            None => start_helper(),
        }
    }

    /// Start helpers in the background until `keep` are ready.
    fn refill(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        if self.keep == 0 || self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool = self.clone();
        tokio::spawn(async move {
            loop {
                let missing = pool
                    .keep
                    .saturating_sub(pool.ready.lock().map(|r| r.len()).unwrap_or(0));
                if missing == 0 {
                    break;
                }
                match start_helper() {
                    Ok(w) => pool.ready.lock().unwrap_or_else(|p| p.into_inner()).push(w),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not start a sandbox helper ahead of time");
                        break;
                    }
                }
            }
            pool.refilling.store(false, Ordering::Release);
        });
    }
}

/// Run `plan` in a helper. On error the cleanup has been done.
pub async fn spawn(
    pool: &Arc<HelperPool>,
    plan: &SandboxPlan,
    output_cap: usize,
    cleanup: Cleanup,
) -> Result<Spawned, (std::io::Error, Cleanup)> {
    spawn_in(pool, plan, output_cap, cleanup, None).await
}

/// Run `plan` (with `tty: true`) in a fresh helper whose stdout and stderr
/// are `slave`; the command's output is read from the PTY's master side by
/// the caller, so the returned streams stay empty.
pub async fn spawn_on_terminal(
    pool: &Arc<HelperPool>,
    plan: &SandboxPlan,
    slave: OwnedFd,
    cleanup: Cleanup,
) -> Result<Spawned, (std::io::Error, Cleanup)> {
    spawn_in(pool, plan, 0, cleanup, Some(slave)).await
}

async fn spawn_in(
    pool: &Arc<HelperPool>,
    plan: &SandboxPlan,
    output_cap: usize,
    cleanup: Cleanup,
    terminal: Option<OwnedFd>,
) -> Result<Spawned, (std::io::Error, Cleanup)> {
    let started = Instant::now();
    let is_terminal = terminal.is_some();
    let taken = match terminal {
        Some(slave) => start_helper_with(Some(slave)),
        None => pool.take(),
    };
    let Waiting { mut child, socket } = match taken {
        Ok(w) => w,
        Err(e) => return Err((e, cleanup)),
    };
    let streams = Arc::new(Mutex::new(Streams {
        stdout: Capture::new(output_cap),
        stderr: Capture::new(output_cap),
    }));
    let mut pumps = Vec::with_capacity(2);
    if let Some(out) = child.stdout.take() {
        pumps.push(tokio::spawn(pump(out, streams.clone(), false)));
    }
    if let Some(err) = child.stderr.take() {
        pumps.push(tokio::spawn(pump(err, streams.clone(), true)));
    }
    let plan_json = serde_json::to_vec(plan).unwrap_or_default();
    let sent = async {
        socket.set_nonblocking(true)?;
        let mut socket = tokio::net::UnixStream::from_std(socket)?;
        socket.write_all(&plan_json).await?;
        socket.shutdown().await?;
        Ok::<_, std::io::Error>(socket)
    }
    .await;
    let reports = match sent {
        Ok(socket) => tokio::spawn(read_reports(socket)),
        // The helper is gone already; its end says why.
        Err(_) => tokio::spawn(async { Vec::new() }),
    };
    // Start the next helper while this command runs (not before its plan
    // went out: starting one holds the runtime's thread for a while).
    if !is_terminal {
        pool.refill();
    }
    Ok(Spawned {
        child,
        streams,
        pumps,
        reports,
        strict: plan.strict,
        cleanup,
        started,
        _running: RunningGuard::start(),
    })
}

async fn pump(mut pipe: impl AsyncRead + Unpin, streams: SharedStreams, stderr: bool) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut s = streams.lock().unwrap_or_else(|p| p.into_inner());
                if stderr {
                    s.stderr.push(&buf[..n]);
                } else {
                    s.stdout.push(&buf[..n]);
                }
            }
        }
    }
}

async fn read_reports(socket: tokio::net::UnixStream) -> Vec<Report> {
    let mut lines = BufReader::new(socket).lines();
    let mut reports = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Ok(report) = serde_json::from_str(&line) {
            reports.push(report);
        }
    }
    reports
}

enum Stop {
    Ended,
    TimedOut,
    Cancelled,
}

impl Spawned {
    pub fn streams(&self) -> SharedStreams {
        self.streams.clone()
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    /// The helper's process id (in the server's PID namespace).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Wait for the command to end; stop it at `deadline` or when `cancel`
    /// completes. `progress` is called about once a second with the bytes of
    /// output so far. Everything the command started is gone when this returns.
    pub async fn wait(
        mut self,
        deadline: tokio::time::Instant,
        grace: Duration,
        cancel: impl Future<Output = ()>,
        progress: &mut (dyn FnMut(u64, Duration) + Send),
    ) -> Ended {
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + Duration::from_secs(1),
            Duration::from_secs(1),
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(cancel);
        let stop = loop {
            tokio::select! {
                _ = self.child.wait() => break Stop::Ended,
                _ = tokio::time::sleep_until(deadline) => break Stop::TimedOut,
                _ = &mut cancel => break Stop::Cancelled,
                _ = tick.tick() => {
                    let total = self.streams.lock().map(|s| s.total()).unwrap_or(0);
                    progress(total, self.started.elapsed());
                }
            }
        };
        let killed = match stop {
            Stop::Ended => false,
            Stop::TimedOut | Stop::Cancelled => self.terminate(grace).await,
        };
        let duration = self.started.elapsed();
        // The helper is gone: the reports are complete, and the pipes close
        // unless a process escaped the namespace (then stop reading).
        let reports = match tokio::time::timeout(DRAIN_TIME, &mut self.reports).await {
            Ok(Ok(reports)) => reports,
            _ => {
                self.reports.abort();
                Vec::new()
            }
        };
        let drain_until = tokio::time::Instant::now() + DRAIN_TIME;
        for pump in &mut self.pumps {
            if tokio::time::timeout_at(drain_until, &mut *pump)
                .await
                .is_err()
            {
                pump.abort();
            }
        }
        self.cleanup.run().await;

        let mut ended = Ended {
            exit_code: None,
            signal: None,
            timed_out: matches!(stop, Stop::TimedOut),
            cancelled: matches!(stop, Stop::Cancelled),
            killed,
            duration,
            failure: None,
            missing_layers: Vec::new(),
        };
        for report in reports {
            match report {
                Report::LayerMissing { layer, detail } => {
                    if self.strict {
                        ended
                            .failure
                            .get_or_insert(Failure::LayerMissing { layer, detail });
                    } else {
                        ended.missing_layers.push(format!("{layer}: {detail}"));
                    }
                }
                Report::SetupFailed { step, detail } => {
                    ended.failure.get_or_insert(Failure::Setup { step, detail });
                }
                Report::ExecFailed {
                    errno,
                    program,
                    detail,
                } => {
                    ended.failure.get_or_insert(Failure::Exec {
                        errno,
                        program,
                        detail,
                    });
                }
                Report::Exited { code } => ended.exit_code = Some(code),
                Report::Signaled { signal } => ended.signal = Some(signal),
            }
        }
        if ended.exit_code.is_none() && ended.signal.is_none() && ended.failure.is_none() {
            if killed {
                ended.signal = Some(libc::SIGKILL);
            } else if ended.timed_out || ended.cancelled {
                ended.signal = Some(libc::SIGTERM);
            } else {
                let status = self.child.try_wait().ok().flatten();
                ended.failure = Some(Failure::Setup {
                    step: "helper".to_string(),
                    detail: format!(
                        "the sandbox helper ended ({}) without saying how the command ended",
                        status.map_or("unknown status".to_string(), |s| s.to_string())
                    ),
                });
            }
        }
        ended
    }

    /// SIGTERM (forwarded to every process of the command), then SIGKILL
    /// after `grace`. Returns true when SIGKILL was needed.
    async fn terminate(&mut self, grace: Duration) -> bool {
        if let Some(pid) = self.child.id() {
            // SAFETY: plain syscall; the helper is our child and not yet reaped.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
        if tokio::time::timeout(grace, self.child.wait()).await.is_ok() {
            return false;
        }
        let _ = self.child.kill().await;
        true
    }
}

/// The end of one stream, decoded and stripped.
pub fn take_streams(streams: &SharedStreams) -> (CapturedText, CapturedText) {
    let mut s = streams.lock().unwrap_or_else(|p| p.into_inner());
    (s.stdout.take(), s.stderr.take())
}

/// Signal number to name (`9` -> `SIGKILL`).
pub fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => return format!("signal {signal}"),
    };
    name.to_string()
}
