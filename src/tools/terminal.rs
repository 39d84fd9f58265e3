//! `run_terminal_cmd` and `terminal_get_status`: commands in the sandbox.
//!
//! The command string is judged by the policy as the agent wrote it
//! (`Action::RunCommand`: shell syntax, wrappers, command rules), then split
//! into an argv by the same analysis and run without a shell, in a sandbox
//! built from the policy's `sandbox:` section (`exec::plan`, layers in
//! `src/exec/README.md`). The reply has the exit code or signal, whether it
//! timed out, how long it took, and both streams, each capped (head and
//! tail kept) and stripped of terminal control sequences.
//!
//! A command that could not run (not found, not executable, a sandbox layer
//! missing in strict mode) or did not end by itself (killed by a signal,
//! timed out, cancelled) is a tool error with a rule id; a command that ran
//! and exited non-zero is not: its exit code is the answer.

use std::path::PathBuf;
use std::time::Duration;

use rmcp::schemars::{self, JsonSchema};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Outcome, ToolError, Toolbox, note_error, note_failure};
use crate::exec::cgroup::{self, PidsCgroup};
use crate::exec::jobs::{JobStatus, JobTable};
use crate::exec::output::CapturedText;
use crate::exec::plan::{HostFacts, PlanInputs, build_plan};
use crate::exec::process::{self, Cleanup, Ended, Failure, Spawned, signal_name};
use crate::policy::Action;
use crate::policy::command::{CommandLine, analyze};
use crate::policy::sandbox::{PidsMechanism, SandboxMode};

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RunTerminalCmdInput {
    /// The command: a program and its arguments, split into words like a POSIX shell does (quotes and backslashes group words) and run WITHOUT a shell. Pipes, `;`, `&&`, redirections, `$VAR`, `$(...)` and globs are refused unless the policy allows shell syntax. Leading `NAME=value` words set environment variables. The program is looked up in the sandbox PATH.
    pub command: String,
    /// Run in the background: the reply carries a `job_id` at once; read the job's state and output with terminal_get_status. Default: false.
    #[serde(default)]
    pub is_background: Option<bool>,
    /// Why the command is run; kept in the audit trail.
    #[serde(default)]
    pub explanation: Option<String>,
    /// Time limit in milliseconds; then the command and everything it started are killed. Default 60000 (background jobs: the maximum); at most the policy's maximum (300000 by default).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Working directory, relative to the workspace root. Default: the root.
    #[serde(default)]
    pub cwd: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct TerminalGetStatusInput {
    /// The `job_id` run_terminal_cmd returned for a background command.
    #[serde(default)]
    pub job_id: Option<String>,
    /// Or the `session_id` terminal_create_session returned: the session's state, and how much output is unread (read it with terminal_read_output).
    #[serde(default)]
    pub session_id: Option<String>,
}

/// A command's result (or, for a background job, its state so far).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CommandOutput {
    /// The background job's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// The terminal session's id (terminal_get_status with a session_id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// `running`, `exited` (see exit_code), `signaled` (see signal), `timed_out`, `cancelled`, or `failed` (it could not run; see error).
    pub state: String,
    /// Exit code, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that ended it (`SIGKILL`, ...).
    pub signal: Option<String>,
    pub timed_out: bool,
    /// Run time in milliseconds (so far, for a running job).
    pub duration_ms: u64,
    /// Standard output (for a job: since the last terminal_get_status), control sequences stripped.
    pub stdout: String,
    pub stderr: String,
    /// Bytes the stream carried (for a job: since the last call).
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    /// True when the middle of the stream was left out (its first and last parts are kept).
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// Working directory, relative to the workspace root (`.` is the root).
    pub cwd: String,
    /// Whether the command had network access.
    pub network: bool,
    /// The time limit applied, in milliseconds.
    pub timeout_ms: u64,
    /// Why a background job could not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Sandbox layers that were missing (only in the policy's best-effort mode).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sandbox_missing: Vec<String>,
}

impl CommandOutput {
    /// The text an agent reads: how it ended, then each non-empty stream.
    pub fn render(&self) -> String {
        let secs = self.duration_ms as f64 / 1000.0;
        let mut text = match self.state.as_str() {
            "running" if self.session_id.is_some() => format!(
                "Session {} is running; {} bytes of output unread (terminal_read_output); last used {secs:.1} s ago.",
                self.session_id.as_deref().unwrap_or("?"),
                self.stdout_bytes
            ),
            "closed" | "expired" => format!(
                "Session {} has ended ({}).",
                self.session_id.as_deref().unwrap_or("?"),
                self.state
            ),
            "running" => format!(
                "Job {} is running ({secs:.1} s so far); call terminal_get_status with job_id `{}` for more output.",
                self.job_id.as_deref().unwrap_or("?"),
                self.job_id.as_deref().unwrap_or("?")
            ),
            "exited" => format!(
                "Exit code {} after {secs:.2} s.",
                self.exit_code.unwrap_or(-1)
            ),
            "timed_out" => format!(
                "Timed out after {secs:.1} s and killed ({}).",
                self.signal.as_deref().unwrap_or("SIGKILL")
            ),
            "cancelled" => format!("Cancelled after {secs:.1} s and killed."),
            "failed" => format!(
                "Could not run: {}",
                self.error.as_deref().unwrap_or("unknown error")
            ),
            _ => format!(
                "Killed by {} after {secs:.2} s.",
                self.signal.as_deref().unwrap_or("a signal")
            ),
        };
        if let Some(id) = self.job_id.as_deref().filter(|_| self.state != "running") {
            text = format!("Job {id}: {text}");
        }
        if !self.sandbox_missing.is_empty() {
            text.push_str(&format!(
                "\n[sandbox layers missing: {}]",
                self.sandbox_missing.join("; ")
            ));
        }
        let mut stream = |name: &str, body: &str, bytes: u64| {
            if !body.is_empty() {
                text.push_str(&format!("\n--- {name} ({bytes} bytes) ---\n{body}"));
                if !body.ends_with('\n') {
                    text.push('\n');
                }
            }
        };
        stream("stdout", &self.stdout, self.stdout_bytes);
        stream("stderr", &self.stderr, self.stderr_bytes);
        if self.stdout.is_empty() && self.stderr.is_empty() && self.state != "failed" {
            text.push_str(if self.state == "running" {
                "\n(no new output)"
            } else {
                "\n(no output)"
            });
        }
        text
    }

    fn set_streams(&mut self, stdout: CapturedText, stderr: CapturedText) {
        self.stdout = stdout.text;
        self.stdout_bytes = stdout.bytes;
        self.stdout_truncated = stdout.truncated;
        self.stderr = stderr.text;
        self.stderr_bytes = stderr.bytes;
        self.stderr_truncated = stderr.truncated;
    }
}

/// A refused or failed command; `output` when it ran (timed out, killed, ...).
#[derive(Debug)]
pub struct CommandError {
    pub error: ToolError,
    pub output: Option<Box<CommandOutput>>,
}

impl From<ToolError> for CommandError {
    fn from(error: ToolError) -> Self {
        Self {
            error,
            output: None,
        }
    }
}

impl CommandError {
    /// The text an agent reads: the error, then what the command printed.
    pub fn render(&self) -> String {
        match &self.output {
            Some(out) => format!("{}\n{}", self.error.render(), out.render()),
            None => self.error.render(),
        }
    }
}

/// What a call needs from its session: the session's jobs, the tracker the
/// server waits on at shutdown, and the call's cancellation.
pub struct CommandSession<'a> {
    pub jobs: &'a JobTable,
    pub tracker: &'a TaskTracker,
    pub cancel: CancellationToken,
}

/// Called about once a second while a foreground command runs, with the
/// bytes of output so far and the time since it started.
pub type ProgressFn = Box<dyn FnMut(u64, Duration) + Send>;

fn reject(e: impl Into<ToolError>) -> ToolError {
    let e = e.into();
    note_error(&e);
    e
}

/// A failure after the policy said yes.
fn fail(e: ToolError) -> ToolError {
    note_failure(&e);
    e
}

fn sandbox_refused(layer: &str, detail: &str) -> ToolError {
    ToolError {
        outcome: Outcome::Refused,
        rule_id: "SANDBOX-001".to_string(),
        message: format!(
            "commands do not run without every sandbox layer, and `{layer}` is not available on this machine ({detail})"
        ),
        advice: "ask the operator to make the layer available, or to set `sandbox: {mode: best_effort}` in the policy".to_string(),
    }
}

fn sandbox_failed(step: &str, detail: &str) -> ToolError {
    ToolError::failed(
        "SANDBOX-002",
        format!("the sandbox could not be set up ({step}): {detail}"),
        "retry; if it keeps failing, the server's log (stderr) says more",
    )
}

impl Toolbox {
    /// Resolve a working directory beneath the root: (absolute path, relative path).
    pub(crate) fn command_cwd(&self, cwd: Option<&str>) -> Result<(PathBuf, String), ToolError> {
        let (_, rel) = self.root.open_dir(cwd.unwrap_or("."))?;
        let abs = if rel.is_empty() {
            self.root.path().to_path_buf()
        } else {
            self.root.path().join(&rel)
        };
        Ok((abs, if rel.is_empty() { ".".to_string() } else { rel }))
    }

    pub async fn run_terminal_cmd(
        &self,
        input: RunTerminalCmdInput,
        session: CommandSession<'_>,
        mut progress: Option<ProgressFn>,
    ) -> Result<CommandOutput, CommandError> {
        let (cwd, cwd_rel) = self.command_cwd(input.cwd.as_deref()).map_err(reject)?;
        self.enforce(&[Action::RunCommand {
            command: &input.command,
        }])
        .await
        .inspect_err(note_error)?;
        let policy = self.policy.load();
        let line = analyze(&input.command, &policy.shell_options()).map_err(|refusal| {
            reject(ToolError {
                outcome: Outcome::Refused,
                rule_id: refusal.rule_id().to_string(),
                message: refusal.to_string(),
                advice: refusal.advice().to_string(),
            })
        })?;
        let settings = policy.sandbox();
        let limits = settings.limits().clone();
        let network = settings.network_allowed(&line);
        let background = input.is_background.unwrap_or(false);
        let timeout_ms = input
            .timeout_ms
            .unwrap_or(if background {
                limits.max_timeout_ms
            } else {
                limits.timeout_ms
            })
            .clamp(1, limits.max_timeout_ms);
        if background && session.jobs.running() >= limits.max_background_jobs {
            return Err(fail(ToolError::failed(
                "JOB-002",
                format!(
                    "this session already has {} background jobs running",
                    limits.max_background_jobs
                ),
                "wait for one to finish (terminal_get_status), or run the command in the foreground",
            ))
            .into());
        }
        // A foreground command of an agent holding a task with a scoped
        // spec: what it changes is judged once it ends (command_changes).
        let watched = if background {
            None
        } else {
            self.watch_command().await
        };
        let (spawned, missing) = self
            .spawn_sandboxed(
                &line,
                network,
                &cwd,
                limits.output_max_bytes,
                session.tracker,
                None,
            )
            .await?;
        let timeout = Duration::from_millis(timeout_ms);
        let grace = Duration::from_millis(limits.kill_grace_ms);
        let mut out = CommandOutput {
            job_id: None,
            session_id: None,
            state: "running".to_string(),
            exit_code: None,
            signal: None,
            timed_out: false,
            duration_ms: 0,
            stdout: String::new(),
            stderr: String::new(),
            stdout_bytes: 0,
            stderr_bytes: 0,
            stdout_truncated: false,
            stderr_truncated: false,
            cwd: cwd_rel.clone(),
            network,
            timeout_ms,
            error: None,
            sandbox_missing: missing,
        };
        if background {
            let job = session.jobs.start(
                spawned,
                input.command.clone(),
                cwd_rel,
                network,
                timeout,
                grace,
                session.tracker,
            );
            out.job_id = Some(job.id.clone());
            return Ok(out);
        }
        let streams = spawned.streams();
        let deadline = tokio::time::Instant::from_std(spawned.started()) + timeout;
        let shutdown = self.shutdown.clone();
        let cancel = async move {
            tokio::select! {
                _ = session.cancel.cancelled() => {}
                _ = shutdown.cancelled() => {}
            }
        };
        let mut no_progress = |_: u64, _: Duration| {};
        let progress: &mut (dyn FnMut(u64, Duration) + Send) = match progress.as_mut() {
            Some(p) => p.as_mut(),
            None => &mut no_progress,
        };
        let ended = spawned.wait(deadline, grace, cancel, progress).await;
        let (stdout, stderr) = process::take_streams(&streams);
        out.set_streams(stdout, stderr);
        apply_end(&mut out, &ended);
        if let Some(watched) = watched
            && let Err(error) = self.settle_command("run_terminal_cmd", watched).await
        {
            note_failure(&error);
            return Err(CommandError {
                error,
                output: Some(Box::new(out)),
            });
        }
        match end_error(&ended, &input.command, timeout_ms, limits.kill_grace_ms) {
            None => Ok(out),
            Some(error) => {
                note_failure(&error);
                let output = (out.state != "failed").then(|| Box::new(out));
                Err(CommandError { error, output })
            }
        }
    }

    /// Everything between the policy's yes and a running helper: facts,
    /// private directory, cgroup, plan, spawn. Returns the missing layers
    /// already known (best-effort mode).
    pub(crate) async fn spawn_sandboxed(
        &self,
        line: &CommandLine,
        network: bool,
        cwd: &std::path::Path,
        output_cap: usize,
        tracker: &TaskTracker,
        terminal: Option<std::os::fd::OwnedFd>,
    ) -> Result<(Spawned, Vec<String>), ToolError> {
        let policy = self.policy.load();
        let settings = policy.sandbox();
        let strict = settings.mode() == SandboxMode::Strict;
        let mut facts = HostFacts::gather(self.root.path(), settings);
        if facts.is_root {
            facts.offline_netns = self.offline_netns_path();
        }
        let mut missing = Vec::new();
        let private_dir = tempfile::Builder::new()
            .prefix("arbiter-run-")
            .tempdir()
            .and_then(|d| {
                std::fs::create_dir(d.path().join("home"))?;
                std::fs::create_dir(d.path().join("tmp"))?;
                Ok(d)
            })
            .map_err(|e| fail(sandbox_failed("private directory", &e.to_string())))?;
        let mut cgroup = None;
        let limits = settings.limits();
        let cgroup_wanted = match limits.pids_mechanism {
            _ if limits.pids_max == 0 => false,
            PidsMechanism::Auto => !facts.pid_max_per_namespace,
            PidsMechanism::Cgroup => true,
            PidsMechanism::PidNamespace => {
                if facts.is_root && !facts.pid_max_per_namespace {
                    let detail = "this kernel keeps no pid_max per PID namespace (Linux 6.14+)";
                    if strict {
                        return Err(fail(sandbox_refused("pid_max", detail)));
                    }
                    missing.push(format!("pid_max: {detail}"));
                }
                false
            }
        };
        if facts.is_root && cgroup_wanted {
            let made = match cgroup::hierarchy() {
                Some(h) => PidsCgroup::create(&h, settings.limits().pids_max)
                    .map_err(|e| format!("cannot create a pids cgroup under {}: {e}", h.display())),
                None => Err("no pids cgroup hierarchy is mounted".to_string()),
            };
            match made {
                Ok(c) => cgroup = Some(c),
                Err(detail) if strict => {
                    return Err(fail(sandbox_refused("cgroup_pids", &detail)));
                }
                Err(detail) => missing.push(format!("cgroup_pids: {detail}")),
            }
        }
        let mut plan = build_plan(&PlanInputs {
            line,
            settings,
            network,
            workspace: self.root.path(),
            cwd,
            private_dir: private_dir.path(),
            cgroup: cgroup.as_ref().map(|c| c.path()),
            facts: &facts,
        });
        let cleanup = Cleanup {
            cgroup,
            private_dir: Some(private_dir),
            tracker: Some(tracker.clone()),
        };
        let spawned = match terminal {
            Some(slave) => {
                plan.tty = true;
                // No prompt: output read back is the commands' own.
                plan.env.retain(|(k, _)| k != "PS1" && k != "PS2");
                plan.env.push(("PS1".to_string(), String::new()));
                plan.env.push(("PS2".to_string(), String::new()));
                process::spawn_on_terminal(&self.helpers, &plan, slave, cleanup).await
            }
            None => process::spawn(&self.helpers, &plan, output_cap, cleanup).await,
        };
        match spawned {
            Ok(spawned) => Ok((spawned, missing)),
            Err((e, cleanup)) => {
                cleanup.run().await;
                Err(fail(sandbox_failed("starting the helper", &e.to_string())))
            }
        }
    }

    /// `/proc/<server>/fd/<n>` of the shared empty network namespace (root).
    fn offline_netns_path(&self) -> Option<PathBuf> {
        use std::os::fd::AsRawFd;
        let fd = self.offline_netns.get_or_init(|| {
            process::empty_network_namespace()
                .inspect_err(|e| tracing::warn!(error = %e, "no shared network namespace; each command creates its own"))
                .ok()
        });
        fd.as_ref().map(|fd| {
            PathBuf::from(format!(
                "/proc/{}/fd/{}",
                std::process::id(),
                fd.as_raw_fd()
            ))
        })
    }

    /// `terminal_get_status`: a background job's state and new output.
    pub fn terminal_get_status(
        &self,
        input: TerminalGetStatusInput,
        jobs: &JobTable,
        sessions: &super::sessions::SessionTable,
    ) -> Result<CommandOutput, ToolError> {
        let job_id = match (input.job_id, input.session_id) {
            (Some(job_id), None) => job_id,
            (None, Some(session_id)) => {
                let s = self.terminal_session_status(&session_id, sessions)?;
                return Ok(CommandOutput {
                    job_id: None,
                    session_id: Some(s.session_id),
                    state: s.state,
                    exit_code: s.exit_code,
                    signal: s.signal,
                    timed_out: false,
                    duration_ms: s.duration_ms,
                    stdout: String::new(),
                    stderr: String::new(),
                    stdout_bytes: s.output_bytes,
                    stderr_bytes: 0,
                    stdout_truncated: false,
                    stderr_truncated: false,
                    cwd: s.cwd,
                    network: false,
                    timeout_ms: 0,
                    error: None,
                    sandbox_missing: Vec::new(),
                });
            }
            _ => {
                return Err(reject(ToolError {
                    outcome: Outcome::Invalid,
                    rule_id: "JOB-001".to_string(),
                    message: "give exactly one of job_id and session_id".to_string(),
                    advice: "job_id for a background command, session_id for a terminal session"
                        .to_string(),
                }));
            }
        };
        let Some(status) = jobs.status(&job_id) else {
            return Err(reject(ToolError::failed(
                "JOB-001",
                format!("this session has no job `{job_id}`"),
                "use the job_id run_terminal_cmd returned in this session; jobs end with their session",
            )));
        };
        Ok(job_output(status))
    }
}

fn job_output(status: JobStatus) -> CommandOutput {
    let JobStatus {
        job,
        ended,
        stdout,
        stderr,
        elapsed,
    } = status;
    let mut out = CommandOutput {
        job_id: Some(job.id.clone()),
        session_id: None,
        state: "running".to_string(),
        exit_code: None,
        signal: None,
        timed_out: false,
        duration_ms: elapsed.as_millis() as u64,
        stdout: String::new(),
        stderr: String::new(),
        stdout_bytes: 0,
        stderr_bytes: 0,
        stdout_truncated: false,
        stderr_truncated: false,
        cwd: job.cwd.clone(),
        network: job.network,
        timeout_ms: job.timeout.as_millis() as u64,
        error: None,
        sandbox_missing: Vec::new(),
    };
    out.set_streams(stdout, stderr);
    if let Some(ended) = ended {
        apply_end(&mut out, &ended);
        if let Some(error) = end_error(&ended, &job.command, out.timeout_ms, 0)
            && out.state == "failed"
        {
            out.error = Some(error.render());
        }
    }
    out
}

/// Fill in how the command ended.
fn apply_end(out: &mut CommandOutput, ended: &Ended) {
    out.duration_ms = ended.duration.as_millis() as u64;
    out.exit_code = ended.exit_code.filter(|_| ended.signal.is_none());
    out.signal = ended.signal.map(signal_name);
    out.timed_out = ended.timed_out;
    out.sandbox_missing
        .extend(ended.missing_layers.iter().cloned());
    out.state = if ended.failure.is_some() {
        "failed"
    } else if ended.timed_out {
        "timed_out"
    } else if ended.cancelled {
        "cancelled"
    } else if ended.signal.is_some() {
        "signaled"
    } else {
        "exited"
    }
    .to_string();
    if let Some(f) = &ended.failure {
        out.error = Some(failure_error(f).render());
    }
}

fn failure_error(f: &Failure) -> ToolError {
    match f {
        Failure::LayerMissing { layer, detail } => sandbox_refused(layer, detail),
        Failure::Setup { step, detail } => sandbox_failed(step, detail),
        Failure::Exec {
            errno,
            program,
            detail,
        } if *errno == libc::ENOENT || *errno == libc::ENOTDIR => ToolError::failed(
            "EXEC-001",
            format!("command not found: {detail}"),
            format!(
                "check the spelling of `{program}`, or name it by its path (relative to the working directory)"
            ),
        ),
        Failure::Exec { detail, .. } => ToolError::failed(
            "EXEC-002",
            format!("the program cannot be executed: {detail}"),
            "a script needs a `#!` line and the executable bit; programs outside the workspace, the system directories and the policy's read_paths cannot be run",
        ),
    }
}

/// The tool error for a command that did not end by itself, if so.
fn end_error(ended: &Ended, command: &str, timeout_ms: u64, grace_ms: u64) -> Option<ToolError> {
    if let Some(f) = &ended.failure {
        return Some(failure_error(f));
    }
    let how = match ended.signal {
        Some(libc::SIGKILL) if ended.killed => format!("SIGTERM, then SIGKILL after {grace_ms} ms"),
        Some(s) => signal_name(s),
        None => "it exited".to_string(),
    };
    if ended.timed_out {
        return Some(ToolError::failed(
            "EXEC-004",
            format!(
                "`{command}` timed out after {:.1} s; it and every process it started were stopped ({how})",
                timeout_ms as f64 / 1000.0
            ),
            "give it more time with timeout_ms (up to the policy's maximum), or run it with is_background: true",
        ));
    }
    if ended.cancelled {
        return Some(ToolError {
            outcome: Outcome::Failed,
            rule_id: "EXEC-005".to_string(),
            message: format!(
                "`{command}` was cancelled; it and every process it started were stopped ({how})"
            ),
            advice: "run it again if it is still needed".to_string(),
        });
    }
    let signal = ended.signal?;
    let why = match signal {
        libc::SIGKILL => " (out of memory, or a limit such as the address space)",
        libc::SIGXCPU => " (it used up its CPU time limit)",
        libc::SIGXFSZ => " (it wrote a file larger than the policy allows)",
        libc::SIGSYS => " (a system call the sandbox forbids)",
        _ => "",
    };
    Some(ToolError::failed(
        "EXEC-003",
        format!("`{command}` was killed by {}{why}", signal_name(signal)),
        "read its output above; fix the cause and run it again",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended() -> Ended {
        Ended {
            exit_code: Some(0),
            signal: None,
            timed_out: false,
            cancelled: false,
            killed: false,
            duration: Duration::from_millis(1500),
            failure: None,
            missing_layers: vec![],
        }
    }

    fn output() -> CommandOutput {
        CommandOutput {
            job_id: None,
            session_id: None,
            state: "running".into(),
            exit_code: None,
            signal: None,
            timed_out: false,
            duration_ms: 0,
            stdout: "hello\n".into(),
            stderr: String::new(),
            stdout_bytes: 6,
            stderr_bytes: 0,
            stdout_truncated: false,
            stderr_truncated: false,
            cwd: ".".into(),
            network: false,
            timeout_ms: 60_000,
            error: None,
            sandbox_missing: vec![],
        }
    }

    #[test]
    fn a_nonzero_exit_is_an_answer_not_an_error() {
        let e = Ended {
            exit_code: Some(3),
            ..ended()
        };
        assert!(end_error(&e, "false", 1000, 1000).is_none());
        let mut out = output();
        apply_end(&mut out, &e);
        assert_eq!((out.state.as_str(), out.exit_code), ("exited", Some(3)));
        assert!(out.render().starts_with("Exit code 3 after 1.50 s."));
        assert!(out.render().contains("--- stdout (6 bytes) ---\nhello\n"));
    }

    #[test]
    fn timeouts_signals_and_missing_programs_have_rule_ids() {
        let timed_out = Ended {
            exit_code: None,
            signal: Some(libc::SIGKILL),
            timed_out: true,
            killed: true,
            ..ended()
        };
        let e = end_error(&timed_out, "sleep 9", 1000, 1000).unwrap();
        assert_eq!(e.rule_id, "EXEC-004");
        assert!(
            e.message.contains("SIGTERM, then SIGKILL after 1000 ms"),
            "{}",
            e.message
        );
        let segv = Ended {
            exit_code: None,
            signal: Some(libc::SIGSEGV),
            ..ended()
        };
        assert_eq!(end_error(&segv, "x", 1, 1).unwrap().rule_id, "EXEC-003");
        let missing = Ended {
            failure: Some(Failure::Exec {
                errno: libc::ENOENT,
                program: "nope".into(),
                detail: "`nope` is not in the sandbox PATH".into(),
            }),
            ..ended()
        };
        assert_eq!(
            end_error(&missing, "nope", 1, 1).unwrap().rule_id,
            "EXEC-001"
        );
        let denied = Ended {
            failure: Some(Failure::Exec {
                errno: libc::EACCES,
                program: "./x".into(),
                detail: "./x: Permission denied".into(),
            }),
            ..ended()
        };
        assert_eq!(end_error(&denied, "./x", 1, 1).unwrap().rule_id, "EXEC-002");
        let layer = Ended {
            failure: Some(Failure::LayerMissing {
                layer: "landlock".into(),
                detail: "not in this kernel".into(),
            }),
            ..ended()
        };
        let e = end_error(&layer, "x", 1, 1).unwrap();
        assert_eq!(
            (e.rule_id.as_str(), e.outcome),
            ("SANDBOX-001", Outcome::Refused)
        );
        assert!(e.advice.contains("best_effort"));
    }

    #[test]
    fn a_running_job_says_how_to_follow_it() {
        let mut out = output();
        out.job_id = Some("job-1".into());
        out.stdout.clear();
        let text = out.render();
        assert!(text.contains("terminal_get_status"), "{text}");
        assert!(text.ends_with("(no new output)"), "{text}");
    }
}
