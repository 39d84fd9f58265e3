//! Interactive terminal sessions: a shell on a PTY, inside the same sandbox
//! as `run_terminal_cmd` (`src/exec/README.md`, *Sessions*).
//!
//! The server opens the PTY pair; the slave becomes the sandbox helper's
//! stdout and stderr (and, in the command, its stdin and controlling
//! terminal); the server keeps the master, read by a thread of its own into
//! a bounded buffer. The shell's argv is judged by the policy at creation,
//! each `terminal_execute_command` string before it is typed, and each
//! complete line of `terminal_send_input` (with whatever was typed before it
//! on the same line) before it is sent.
//!
//! Sessions belong to the MCP session that created them: ids are random and
//! looked up in that session's table only. At most [`MAX_SESSIONS_TOTAL`]
//! exist in the server and `max_sessions` per client; a session unused for
//! `session_idle_ms` is closed; all are stopped when the client's session
//! ends or the server shuts down.

use std::collections::{HashMap, VecDeque};
use std::io::{Read as _, Write as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::schemars::{self, JsonSchema};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Outcome, ToolError, Toolbox, note_error, note_failure};
use crate::exec::output::Capture;
use crate::exec::process::{Ended, signal_name};
use crate::policy::Action;
use crate::policy::command::analyze;

/// Sessions in the whole server, all clients together.
pub const MAX_SESSIONS_TOTAL: usize = 50;
/// Raw output held per session until it is read (the oldest is dropped beyond).
const BUFFER_MAX: usize = 1024 * 1024;
/// Text returned by one call (first and last halves kept).
const REPLY_MAX: usize = 256 * 1024;
/// Byte that starts and ends the end-of-command marker.
const MARK: u8 = 0x1e;
const MARK_TAG: &[u8] = b"ARB";
/// How long terminal_create_session waits for the shell's first output.
const SHELL_READY_MAX: Duration = Duration::from_secs(2);

static OPEN_SESSIONS: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CreateSessionInput {
    /// Working directory, relative to the workspace root. Default: the root.
    #[serde(default)]
    pub cwd: Option<String>,
    /// The shell and its arguments, judged by the policy like a command. Default: `/bin/sh`.
    #[serde(default)]
    pub shell: Option<String>,
    /// Terminal width. Default 120.
    #[serde(default)]
    pub cols: Option<u16>,
    /// Terminal height. Default 40.
    #[serde(default)]
    pub rows: Option<u16>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ExecuteCommandInput {
    /// The session_id terminal_create_session returned.
    pub session_id: String,
    /// One command line, judged by the policy exactly like run_terminal_cmd's command, then typed into the shell.
    pub command: String,
    /// How long to wait for the command to finish, 1000 to 300000 ms. On timeout the command keeps running; read more with terminal_read_output, interrupt it with terminal_send_input data "\u0003".
    pub timeout_ms: u64,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SendInputInput {
    pub session_id: String,
    /// Text typed into the terminal. Every complete line (ending in a newline) is judged by the policy as a command. Control characters are accepted only alone (one per call: "\u0003" for ^C, "\u0004" for ^D).
    pub data: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SessionIdInput {
    pub session_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ResizeSessionInput {
    /// The session_id terminal_create_session returned.
    pub session_id: String,
    /// New terminal width, 1 to 1000 columns.
    pub cols: u16,
    /// New terminal height, 1 to 1000 rows.
    pub rows: u16,
}

/// The largest terminal side accepted, in columns or rows.
const MAX_TERMINAL_SIDE: u16 = 1000;

/// A terminal size within 1 to [`MAX_TERMINAL_SIDE`] each way, or SESSION-006.
fn check_size(cols: u16, rows: u16) -> Result<(), ToolError> {
    let fits = |n: u16| (1..=MAX_TERMINAL_SIDE).contains(&n);
    if fits(cols) && fits(rows) {
        return Ok(());
    }
    Err(reject(ToolError {
        outcome: Outcome::Invalid,
        rule_id: "SESSION-006".to_string(),
        message: format!(
            "a terminal of {cols} columns by {rows} rows is not possible: each side must be 1 to {MAX_TERMINAL_SIDE}"
        ),
        advice: "give cols and rows in that range (120 by 40 is the default)".to_string(),
    }))
}

/// A session and, for the calls that read, its output.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SessionOutput {
    pub session_id: String,
    /// `running` (the shell is alive), `exited`, `signaled`, `closed` or `expired`.
    pub state: String,
    /// Exit status of the command (terminal_execute_command), or of the shell once it ended.
    pub exit_code: Option<i32>,
    /// The signal that ended the shell.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// terminal_execute_command: the command did not finish within timeout_ms (it still runs).
    pub timed_out: bool,
    /// Output since the previous read, control sequences stripped.
    pub output: String,
    pub output_bytes: u64,
    /// True when output was left out (the middle of a long reply, or the oldest unread output).
    pub truncated: bool,
    /// The shell's working directory at start, relative to the workspace root.
    pub cwd: String,
    pub shell: String,
    /// Process id of the session's sandbox helper (in the server's PID namespace).
    pub pid: Option<u32>,
    /// Milliseconds the call took, or since the session was last used (status).
    pub duration_ms: u64,
}

impl SessionOutput {
    pub fn render(&self) -> String {
        let mut text = match (self.state.as_str(), self.timed_out) {
            (_, true) => format!(
                "Session {}: the command is still running after {} ms; read more with terminal_read_output, or interrupt it with terminal_send_input data \"\\u0003\".",
                self.session_id, self.duration_ms
            ),
            ("running", _) => match self.exit_code {
                Some(code) => format!("Session {}: exit code {code}.", self.session_id),
                None => format!("Session {} is running ({}).", self.session_id, self.shell),
            },
            (state, _) => format!(
                "Session {} has ended ({state}{}).",
                self.session_id,
                match (self.exit_code, &self.signal) {
                    (_, Some(s)) => format!(", {s}"),
                    (Some(c), None) => format!(", exit code {c}"),
                    _ => String::new(),
                }
            ),
        };
        if self.output.is_empty() {
            text.push_str("\n(no output)");
        } else {
            text.push_str(&format!(
                "\n--- output ({} bytes) ---\n{}",
                self.output_bytes, self.output
            ));
        }
        text
    }
}

/// Raw terminal output not yet handed out.
#[derive(Debug, Default)]
struct Pending {
    bytes: Vec<u8>,
    dropped: u64,
}

#[derive(Debug)]
pub struct TerminalSession {
    id: String,
    shell: String,
    cwd: String,
    pid: Option<u32>,
    master: Mutex<std::fs::File>,
    pending: Arc<Mutex<Pending>>,
    ended: Mutex<Option<(Ended, &'static str)>>,
    cancel: CancellationToken,
    /// Why it is being stopped (`closed`, `expired`), set before `cancel`.
    stop_reason: Mutex<&'static str>,
    last_used: Mutex<Instant>,
    /// The current, not yet complete, line typed with send_input.
    typed: Mutex<String>,
    /// One command at a time.
    busy: tokio::sync::Mutex<()>,
}

impl TerminalSession {
    fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn end(&self) -> Option<(Ended, &'static str)> {
        self.ended.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn write(&self, data: &[u8]) -> std::io::Result<()> {
        let mut m = self.master.lock().unwrap_or_else(|p| p.into_inner());
        m.write_all(data)?;
        m.flush()
    }

    /// Set the terminal's size; the kernel signals the foreground programs
    /// (SIGWINCH) so full-screen ones redraw.
    fn resize(&self, cols: u16, rows: u16) -> std::io::Result<()> {
        let master = self.master.lock().unwrap_or_else(|p| p.into_inner());
        let size = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ on our own PTY master, reading one winsize.
        if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn stop(&self, reason: &'static str) {
        *self.stop_reason.lock().unwrap_or_else(|p| p.into_inner()) = reason;
        // Hang up first, as a terminal closing would: an interactive shell
        // ignores SIGTERM (the sandbox's stop) but ends on SIGHUP, so the
        // session ends now instead of after the kill grace period. The
        // terminal names its session leader (the shell) and foreground group
        // in our PID namespace; TIOCSIG cannot send SIGHUP.
        let master = self.master.lock().unwrap_or_else(|p| p.into_inner());
        let fd = master.as_raw_fd();
        let (mut sid, mut pgrp): (libc::pid_t, libc::pid_t) = (0, 0);
        // SAFETY: two ioctls on our own PTY master that fill one pid_t each.
        unsafe {
            if libc::ioctl(fd, libc::TIOCGPGRP, &mut pgrp) == 0 && pgrp > 1 {
                libc::kill(-pgrp, libc::SIGHUP);
            }
            if libc::ioctl(fd, libc::TIOCGSID, &mut sid) == 0 && sid > 1 && sid != pgrp {
                libc::kill(sid, libc::SIGHUP);
            }
        }
        drop(master);
        self.cancel.cancel();
    }
}

/// The terminal sessions of one MCP session (client).
#[derive(Debug)]
pub struct SessionTable {
    /// Running sessions, and sessions whose shell exited by itself (kept so
    /// their last output and status can be read; see [`KEEP_EXITED`]).
    sessions: Arc<Mutex<HashMap<String, Arc<TerminalSession>>>>,
    /// Sessions closed or expired, newest last: a later call is told so,
    /// not that the id is unknown.
    gone: Arc<Mutex<VecDeque<SessionOutput>>>,
    cancel: CancellationToken,
}

/// Sessions whose shell exited that are kept for reading; the oldest go first.
const KEEP_EXITED: usize = 16;
/// Ids of closed or expired sessions remembered.
const KEEP_GONE: usize = 64;

impl SessionTable {
    /// `cancel` ends every session (pass a child of the server's shutdown token).
    pub fn new(cancel: CancellationToken) -> Self {
        Self {
            sessions: Arc::new(Mutex::new(HashMap::new())),
            gone: Arc::new(Mutex::new(VecDeque::new())),
            cancel,
        }
    }

    /// The session, or why there is none.
    fn get(&self, id: &str) -> Result<Arc<TerminalSession>, ToolError> {
        if let Some(s) = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
        {
            return Ok(s.clone());
        }
        Err(match self.gone(id) {
            Some(last) => reject(ToolError::failed(
                "SESSION-001",
                format!("the terminal session `{id}` was {}", last.state),
                "start a new one with terminal_create_session",
            )),
            None => no_session(id),
        })
    }

    /// The last state of a session that is no longer kept (closed, expired).
    fn gone(&self, id: &str) -> Option<SessionOutput> {
        let gone = self.gone.lock().unwrap_or_else(|p| p.into_inner());
        gone.iter().rev().find(|g| g.session_id == id).cloned()
    }

    /// Sessions whose shell is still running (what the caps count).
    fn running(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|s| s.end().is_none())
            .count()
    }
}

/// Forget a session that ended: closed or expired ones leave only their id
/// and how they ended; one whose shell exited stays readable, within
/// [`KEEP_EXITED`].
fn retire(
    sessions: &Mutex<HashMap<String, Arc<TerminalSession>>>,
    gone: &Mutex<VecDeque<SessionOutput>>,
    session: &TerminalSession,
    how: &'static str,
) {
    let id = session.id.as_str();
    let mut sessions = sessions.lock().unwrap_or_else(|p| p.into_inner());
    if how.is_empty() {
        let mut exited: Vec<(Instant, String)> = sessions
            .values()
            .filter(|s| s.end().is_some())
            .map(|s| {
                (
                    *s.last_used.lock().unwrap_or_else(|p| p.into_inner()),
                    s.id.clone(),
                )
            })
            .collect();
        if exited.len() > KEEP_EXITED {
            exited.sort();
            for (_, old) in exited.iter().take(exited.len() - KEEP_EXITED) {
                sessions.remove(old);
            }
        }
        return;
    }
    sessions.remove(id);
    let mut gone = gone.lock().unwrap_or_else(|p| p.into_inner());
    if gone.iter().any(|g| g.session_id == id) {
        return;
    }
    let mut last = session_output(session, how);
    if let Some((ended, _)) = session.end() {
        apply_end(&mut last, &ended, how);
    }
    gone.push_back(last);
    while gone.len() > KEEP_GONE {
        gone.pop_front();
    }
}

impl Drop for SessionTable {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn reject(e: ToolError) -> ToolError {
    note_error(&e);
    e
}

fn fail(e: ToolError) -> ToolError {
    note_failure(&e);
    e
}

fn no_session(id: &str) -> ToolError {
    reject(ToolError::failed(
        "SESSION-001",
        format!("this MCP session has no terminal session `{id}`"),
        "use a session_id terminal_create_session returned in this MCP session; sessions end when closed, when idle too long, and with their MCP session",
    ))
}

/// Refuse control characters mixed with text: line editing (erase, kill,
/// readline keys) could otherwise assemble a line the policy never saw.
fn check_controls(data: &str) -> Result<(), ToolError> {
    let is_control = |c: char| c.is_control() && c != '\n' && c != '\r' && c != '\t';
    if data.chars().any(is_control) && data.chars().count() > 1 {
        return Err(reject(ToolError {
            outcome: Outcome::Refused,
            rule_id: "SESSION-003".to_string(),
            message: "input that mixes control characters with text is refused (line editing could assemble a command the policy never judged)".to_string(),
            advice: "send a control character alone (\"\\u0003\" for ^C), and text without control characters".to_string(),
        }));
    }
    Ok(())
}

/// Take the pending output, without the end-of-command markers, rendered for a reply.
fn take_pending(pending: &Mutex<Pending>, upto: Option<usize>) -> (String, u64, bool) {
    let mut p = pending.lock().unwrap_or_else(|p| p.into_inner());
    let n = upto.unwrap_or(p.bytes.len()).min(p.bytes.len());
    let raw: Vec<u8> = p.bytes.drain(..n).collect();
    let dropped = std::mem::take(&mut p.dropped);
    drop(p);
    let raw = remove_markers(&raw);
    let mut capture = Capture::new(REPLY_MAX);
    capture.push(&raw);
    let text = capture.take();
    (
        text.text,
        text.bytes + dropped,
        text.truncated || dropped > 0,
    )
}

/// Remove every `\x1eARB<hex>:<status>\x1e` (and the newline after it).
fn remove_markers(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == MARK
            && let Some((_, _, len)) = parse_marker(&raw[i..])
        {
            i += len;
            continue;
        }
        out.push(raw[i]);
        i += 1;
    }
    out
}

/// A marker at the start of `b`: (nonce, status, length with the line end).
fn parse_marker(b: &[u8]) -> Option<(&[u8], i32, usize)> {
    let rest = b.strip_prefix(&[MARK])?.strip_prefix(MARK_TAG)?;
    let colon = rest.iter().position(|&c| c == b':')?;
    let nonce = &rest[..colon];
    if nonce.is_empty() || !nonce.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let after = &rest[colon + 1..];
    let end = after.iter().position(|&c| c == MARK)?;
    let status: i32 = std::str::from_utf8(&after[..end]).ok()?.parse().ok()?;
    let mut len = 1 + MARK_TAG.len() + colon + 1 + end + 1;
    if b[len..].starts_with(b"\r\n") {
        len += 2;
    } else if b[len..].starts_with(b"\n") {
        len += 1;
    }
    Some((nonce, status, len))
}

/// Where the marker with `nonce` starts in `b`, its status and length.
fn find_marker(b: &[u8], nonce: &[u8]) -> Option<(usize, i32, usize)> {
    let mut from = 0;
    while let Some(pos) = b[from..].iter().position(|&c| c == MARK) {
        let at = from + pos;
        if let Some((n, status, len)) = parse_marker(&b[at..])
            && n == nonce
        {
            return Some((at, status, len));
        }
        from = at + 1;
    }
    None
}

/// Open a PTY pair: (master, slave), with echo and output post-processing
/// off (the model reads what commands print, not what was typed, and `\n`).
fn open_pty(cols: u16, rows: u16) -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut master: libc::c_int = -1;
    let mut slave: libc::c_int = -1;
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: valid out-pointers; a null name and termios are allowed.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: openpty returned two new descriptors we now own.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    for fd in [&master, &slave] {
        // SAFETY: plain fcntl on a descriptor we own.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    // SAFETY: termios is plain data; tcgetattr fills it.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor and pointer.
    if unsafe { libc::tcgetattr(slave.as_raw_fd(), &mut t) } == 0 {
        t.c_lflag &= !(libc::ECHO | libc::ECHONL);
        t.c_oflag &= !libc::ONLCR;
        // SAFETY: valid descriptor and pointer.
        unsafe { libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &t) };
    }
    Ok((master, slave))
}

fn session_output(s: &TerminalSession, state: &str) -> SessionOutput {
    SessionOutput {
        session_id: s.id.clone(),
        state: state.to_string(),
        exit_code: None,
        signal: None,
        timed_out: false,
        output: String::new(),
        output_bytes: 0,
        truncated: false,
        cwd: s.cwd.clone(),
        shell: s.shell.clone(),
        pid: s.pid,
        duration_ms: 0,
    }
}

fn apply_end(out: &mut SessionOutput, ended: &Ended, reason: &str) {
    out.state = if !reason.is_empty() {
        reason.to_string()
    } else if ended.signal.is_some() {
        "signaled".to_string()
    } else {
        "exited".to_string()
    };
    out.exit_code = ended.exit_code;
    out.signal = ended.signal.map(signal_name);
}

impl Toolbox {
    pub async fn terminal_create_session(
        &self,
        input: CreateSessionInput,
        table: &SessionTable,
        tracker: &TaskTracker,
    ) -> Result<SessionOutput, ToolError> {
        let (cols, rows) = (input.cols.unwrap_or(120), input.rows.unwrap_or(40));
        check_size(cols, rows)?;
        let (cwd, cwd_rel) = self.command_cwd(input.cwd.as_deref()).map_err(reject)?;
        let shell = input.shell.unwrap_or_else(|| "/bin/sh".to_string());
        self.enforce(&[Action::RunCommand { command: &shell }])
            .await
            .inspect_err(note_error)?;
        let policy = self.policy.load();
        let line = analyze(&shell, &policy.shell_options()).map_err(|refusal| {
            reject(ToolError {
                outcome: Outcome::Refused,
                rule_id: refusal.rule_id().to_string(),
                message: refusal.to_string(),
                advice: refusal.advice().to_string(),
            })
        })?;
        let settings = policy.sandbox();
        let limits = settings.limits().clone();
        if table.running() >= limits.max_sessions {
            return Err(fail(ToolError::failed(
                "SESSION-002",
                format!(
                    "this MCP session already has {} terminal sessions open (the policy's max_sessions)",
                    limits.max_sessions
                ),
                "close one with terminal_close_session first",
            )));
        }
        if OPEN_SESSIONS.fetch_add(1, Ordering::AcqRel) >= MAX_SESSIONS_TOTAL {
            OPEN_SESSIONS.fetch_sub(1, Ordering::AcqRel);
            return Err(fail(ToolError::failed(
                "SESSION-002",
                format!("the server already has {MAX_SESSIONS_TOTAL} terminal sessions open"),
                "close a session, or wait for idle ones to expire",
            )));
        }
        let slot = scopeguard_slot();
        let (master, slave) = open_pty(cols, rows).map_err(|e| {
            fail(ToolError::failed(
                "SANDBOX-002",
                format!("cannot open a terminal: {e}"),
                "retry; the server's log says more",
            ))
        })?;
        let network = settings.network_allowed(&line);
        let (spawned, _missing) = self
            .spawn_sandboxed(&line, network, &cwd, 0, tracker, Some(slave))
            .await?;
        let reader = std::fs::File::from(master.try_clone().map_err(|e| {
            fail(ToolError::failed(
                "SANDBOX-002",
                format!("cannot read the terminal: {e}"),
                "retry",
            ))
        })?);
        let pending = Arc::new(Mutex::new(Pending::default()));
        let id = format!("term-{}", uuid::Uuid::new_v4().simple());
        let session = Arc::new(TerminalSession {
            id: id.clone(),
            shell: shell.clone(),
            cwd: cwd_rel,
            pid: spawned.pid(),
            master: Mutex::new(std::fs::File::from(master)),
            pending: pending.clone(),
            ended: Mutex::new(None),
            cancel: table.cancel.child_token(),
            stop_reason: Mutex::new(""),
            last_used: Mutex::new(Instant::now()),
            typed: Mutex::new(String::new()),
            busy: tokio::sync::Mutex::new(()),
        });
        std::thread::Builder::new()
            .name("arbiter-pty".to_string())
            .spawn(move || read_terminal(reader, &pending))
            .map_err(|e| {
                fail(ToolError::failed(
                    "SANDBOX-002",
                    format!("cannot start the terminal reader: {e}"),
                    "retry",
                ))
            })?;
        table
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), session.clone());
        let idle = Duration::from_millis(limits.session_idle_ms.max(1));
        let grace = Duration::from_millis(limits.kill_grace_ms);
        let sessions = table.sessions.clone();
        let gone = table.gone.clone();
        let s = session.clone();
        slot.disarm();
        tracker.spawn(async move {
            let _slot = SessionSlot { armed: true };
            let watch = s.clone();
            let stop = async move {
                loop {
                    let due = *watch.last_used.lock().unwrap_or_else(|p| p.into_inner()) + idle;
                    tokio::select! {
                        _ = watch.cancel.cancelled() => return,
                        _ = tokio::time::sleep_until(due.into()) => {}
                    }
                    let last = *watch.last_used.lock().unwrap_or_else(|p| p.into_inner());
                    if last.elapsed() >= idle {
                        *watch.stop_reason.lock().unwrap_or_else(|p| p.into_inner()) = "expired";
                        return;
                    }
                }
            };
            // A session has no time limit of its own: it ends when closed,
            // idle, with its MCP session, or when the shell exits.
            let far = tokio::time::Instant::now() + Duration::from_secs(10 * 365 * 24 * 3600);
            let ended = spawned.wait(far, grace, stop, &mut |_, _| {}).await;
            let reason = *s.stop_reason.lock().unwrap_or_else(|p| p.into_inner());
            *s.ended.lock().unwrap_or_else(|p| p.into_inner()) = Some((ended, reason));
            retire(&sessions, &gone, &s, reason);
        });
        // A ^C typed before the shell has installed its SIGINT handler kills
        // it (seen in CI): return once a process of the session other than
        // the sandbox helpers handles or ignores SIGINT, once the shell has
        // ended, or after a short wait (a program that never handles it).
        let started = Instant::now();
        while session.end().is_none()
            && started.elapsed() < SHELL_READY_MAX
            && !spawned_pid_handles_sigint(session.pid)
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(session_output(&session, "running"))
    }

    pub async fn terminal_execute_command(
        &self,
        input: ExecuteCommandInput,
        table: &SessionTable,
    ) -> Result<SessionOutput, ToolError> {
        let session = table.get(&input.session_id)?;
        if !(1_000..=300_000).contains(&input.timeout_ms) {
            return Err(reject(ToolError {
                outcome: Outcome::Invalid,
                rule_id: "SESSION-004".to_string(),
                message: format!(
                    "timeout_ms must be 1000 to 300000, not {}",
                    input.timeout_ms
                ),
                advice: "give a timeout_ms in that range".to_string(),
            }));
        }
        check_controls(&input.command)?;
        if input.command.contains(['\n', '\r']) {
            return Err(reject(ToolError {
                outcome: Outcome::Refused,
                rule_id: "SESSION-003".to_string(),
                message: "a command for terminal_execute_command is one line".to_string(),
                advice: "run the lines one call at a time".to_string(),
            }));
        }
        self.enforce(&[Action::RunCommand {
            command: &input.command,
        }])
        .await
        .inspect_err(note_error)?;
        // Text typed with send_input and not yet ended by a newline is still
        // in the terminal's line: the shell will read it in front of this command.
        let typed_before = session
            .typed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if !typed_before.is_empty() {
            let joined = format!("{typed_before}{}", input.command);
            self.enforce(&[Action::RunCommand { command: &joined }])
                .await
                .inspect_err(note_error)?;
        }
        let _busy = session.busy.lock().await;
        session.touch();
        // As for run_terminal_cmd: a task holder's command is judged by
        // what it changed (command_changes).
        let watched = self.watch_command().await;
        let started = Instant::now();
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let typed = format!(
            "{}\nprintf '\\036{}{}:%d\\036\\n' \"$?\"\n",
            input.command,
            String::from_utf8_lossy(MARK_TAG),
            nonce
        );
        session
            .typed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        if session.end().is_none() {
            session.write(typed.as_bytes()).map_err(|e| {
                fail(ToolError::failed(
                    "SESSION-005",
                    format!("cannot write to the terminal: {e}"),
                    "the shell may have exited; check terminal_get_status",
                ))
            })?;
        }
        let deadline = started + Duration::from_millis(input.timeout_ms);
        let mut out = session_output(&session, "running");
        loop {
            let found = {
                let p = session.pending.lock().unwrap_or_else(|p| p.into_inner());
                find_marker(&p.bytes, nonce.as_bytes())
            };
            if let Some((at, status, len)) = found {
                let (text, bytes, truncated) = take_pending(&session.pending, Some(at));
                session
                    .pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .bytes
                    .drain(..len);
                out.output = text;
                out.output_bytes = bytes;
                out.truncated = truncated;
                out.exit_code = Some(status);
                break;
            }
            if let Some((ended, reason)) = session.end() {
                // Give the reader a moment to collect the last output.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let (text, bytes, truncated) = take_pending(&session.pending, None);
                (out.output, out.output_bytes, out.truncated) = (text, bytes, truncated);
                apply_end(&mut out, &ended, reason);
                break;
            }
            if Instant::now() >= deadline {
                let (text, bytes, truncated) = take_pending(&session.pending, None);
                (out.output, out.output_bytes, out.truncated) = (text, bytes, truncated);
                out.timed_out = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        out.duration_ms = started.elapsed().as_millis() as u64;
        session.touch();
        if let Some(watched) = watched
            && let Err(mut error) = self
                .settle_command("terminal_execute_command", watched)
                .await
        {
            // The error has no room for the output: its end goes in the message.
            let tail: String = {
                let chars: Vec<char> = out.output.chars().collect();
                chars[chars.len().saturating_sub(2000)..].iter().collect()
            };
            error.message = format!(
                "{} (exit status {}; the end of its output follows)\n{tail}",
                error.message,
                out.exit_code
                    .map_or("unknown".to_string(), |c| c.to_string())
            );
            note_error(&error);
            return Err(error);
        }
        Ok(out)
    }

    pub async fn terminal_send_input(
        &self,
        input: SendInputInput,
        table: &SessionTable,
    ) -> Result<SessionOutput, ToolError> {
        let session = table.get(&input.session_id)?;
        check_controls(&input.data)?;
        // Judge every line this input completes, with what was typed before
        // it on the same line.
        let mut typed = session
            .typed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut lines = Vec::new();
        for c in input.data.chars() {
            if c == '\u{3}' || c == '\u{15}' {
                // ^C and ^U discard the line (the terminal's and readline's).
                typed.clear();
            } else if c == '\n' || c == '\r' {
                lines.push(std::mem::take(&mut typed));
            } else if !c.is_control() || c == '\t' {
                typed.push(c);
            }
        }
        for line in lines.iter().filter(|l| !l.trim().is_empty()) {
            self.enforce(&[Action::RunCommand { command: line }])
                .await
                .inspect_err(note_error)?;
        }
        *session.typed.lock().unwrap_or_else(|p| p.into_inner()) = typed;
        session.touch();
        if let Some((ended, reason)) = session.end() {
            let mut out = session_output(&session, "exited");
            apply_end(&mut out, &ended, reason);
            return Ok(out);
        }
        session.write(input.data.as_bytes()).map_err(|e| {
            fail(ToolError::failed(
                "SESSION-005",
                format!("cannot write to the terminal: {e}"),
                "the shell may have exited; check terminal_get_status",
            ))
        })?;
        let mut out = session_output(&session, "running");
        out.output_bytes = input.data.len() as u64;
        Ok(out)
    }

    pub async fn terminal_read_output(
        &self,
        input: SessionIdInput,
        table: &SessionTable,
    ) -> Result<SessionOutput, ToolError> {
        let session = table.get(&input.session_id)?;
        session.touch();
        // Output that is on its way (a prompt, a command's last line).
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut out = session_output(&session, "running");
        if let Some((ended, reason)) = session.end() {
            apply_end(&mut out, &ended, reason);
        }
        (out.output, out.output_bytes, out.truncated) = take_pending(&session.pending, None);
        Ok(out)
    }

    /// `terminal_resize_session`: a new size for the session's terminal.
    pub async fn terminal_resize_session(
        &self,
        input: ResizeSessionInput,
        table: &SessionTable,
    ) -> Result<SessionOutput, ToolError> {
        let session = table.get(&input.session_id)?;
        check_size(input.cols, input.rows)?;
        if session.end().is_none() {
            session.resize(input.cols, input.rows).map_err(|e| {
                fail(ToolError::failed(
                    "SESSION-005",
                    format!("cannot resize the terminal: {e}"),
                    "the shell may have exited; check terminal_get_status",
                ))
            })?;
        }
        session.touch();
        Ok(session_output(&session, "running"))
    }

    pub async fn terminal_close_session(
        &self,
        input: SessionIdInput,
        table: &SessionTable,
    ) -> Result<SessionOutput, ToolError> {
        let session = table.get(&input.session_id)?;
        session.stop("closed");
        // The session's task stops the sandbox (SIGTERM, then SIGKILL after
        // the grace period) and records the end.
        let limit = Instant::now() + Duration::from_secs(30);
        while session.end().is_none() && Instant::now() < limit {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut out = session_output(&session, "closed");
        if let Some((ended, _)) = session.end() {
            apply_end(&mut out, &ended, "closed");
        }
        (out.output, out.output_bytes, out.truncated) = take_pending(&session.pending, None);
        retire(&table.sessions, &table.gone, &session, "closed");
        Ok(out)
    }

    /// `terminal_get_status` for a session: its state and unread output size.
    pub fn terminal_session_status(
        &self,
        session_id: &str,
        table: &SessionTable,
    ) -> Result<SessionOutput, ToolError> {
        if let Some(last) = table.gone(session_id) {
            return Ok(last);
        }
        let session = table.get(session_id)?;
        let mut out = session_output(&session, "running");
        if let Some((ended, reason)) = session.end() {
            apply_end(&mut out, &ended, reason);
        }
        out.output_bytes = session
            .pending
            .lock()
            .map(|p| p.bytes.len() as u64)
            .unwrap_or(0);
        out.duration_ms = session
            .last_used
            .lock()
            .map(|l| l.elapsed().as_millis() as u64)
            .unwrap_or(0);
        Ok(out)
    }
}

/// One of the server's [`MAX_SESSIONS_TOTAL`] slots: given back when dropped armed.
struct SessionSlot {
    armed: bool,
}

impl SessionSlot {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        if self.armed {
            OPEN_SESSIONS.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn scopeguard_slot() -> SessionSlot {
    SessionSlot { armed: true }
}

/// The terminal's reader: master to the pending buffer, until the last
/// holder of the slave is gone (EIO).
/// Whether a process under `pid` (the helper) that is no longer the helper
/// itself, i.e. the session's program after exec, catches or ignores SIGINT.
fn spawned_pid_handles_sigint(pid: Option<u32>) -> bool {
    let Some(pid) = pid else { return true };
    let own = std::fs::read_link("/proc/self/exe").ok();
    let mut todo = vec![pid];
    let mut seen = 0;
    while let Some(p) = todo.pop() {
        seen += 1;
        if seen > 64 {
            break;
        }
        let helper = own.is_some() && std::fs::read_link(format!("/proc/{p}/exe")).ok() == own;
        if !helper && handles_sigint(p) {
            return true;
        }
        if let Ok(children) = std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")) {
            todo.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    false
}

fn handles_sigint(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let mask = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    let sigint = 1u64 << (libc::SIGINT - 1);
    (mask("SigCgt:") | mask("SigIgn:")) & sigint != 0
}

fn read_terminal(mut master: std::fs::File, pending: &Mutex<Pending>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match master.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                let mut p = pending.lock().unwrap_or_else(|p| p.into_inner());
                p.bytes.extend_from_slice(&buf[..n]);
                if p.bytes.len() > BUFFER_MAX {
                    let excess = p.bytes.len() - BUFFER_MAX;
                    p.bytes.drain(..excess);
                    p.dropped += excess as u64;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_found_and_removed() {
        let raw = b"hello\n\x1eARBab12:3\x1e\r\nrest";
        assert_eq!(find_marker(raw, b"ab12"), Some((6, 3, 13)));
        assert_eq!(find_marker(raw, b"cd"), None);
        assert_eq!(remove_markers(raw), b"hello\nrest");
        // The typed text (echo) is not a marker.
        assert_eq!(find_marker(b"printf '\\036ARBab12:%d'", b"ab12"), None);
    }

    #[test]
    fn control_characters_only_alone() {
        assert!(check_controls("\u{3}").is_ok());
        assert!(check_controls("ls -la\n").is_ok());
        assert!(check_controls("sudx\u{7f}o id\n").is_err());
    }
}
