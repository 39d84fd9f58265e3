//! The MCP face of arbiter: tool registration (rmcp's `#[tool_router]`), the
//! stdio transport, and the one place every `tools/call` passes through on its
//! way in and out, so that each call is checked for well-formed arguments and
//! leaves exactly one audit record, committed before the reply goes out.
//!
//! This module holds no file or process logic: the tools do that through the
//! policy and the executor.

pub mod admin;
pub mod auth;
pub mod backpressure;
pub mod conn;
pub mod console;
pub mod direct;
pub mod http;
pub mod http_direct;
pub mod json_out;
pub mod metrics;
pub mod origin;
pub mod rate;
pub mod replies;
pub mod sse;
pub mod stdio;
pub mod tenants;

use std::sync::Arc;
use std::time::Instant;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::{ToolCallContext, schema_for_output};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ServerCapabilities, ServerConfig,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{ErrorData, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio_util::task::TaskTracker;

use crate::exec::jobs::JobTable;
use crate::store::AuditChain;
use crate::store::audit::{AuditEntry, arguments_sha256, redact_arguments};
use crate::tools::caws::{ArbiterValidateInput, ArbiterValidateOutput};
use crate::tools::delete_move::{DeleteFileInput, DeleteFileOutput, MoveFileInput, MoveFileOutput};
use crate::tools::files::{
    FileReadInput, FileReadOutput, FileSearchReplaceInput, FileSearchReplaceOutput, FileWriteInput,
    FileWriteOutput,
};
use crate::tools::find::{
    FileSearchInput, FileSearchOutput, GrepSearchInput, GrepSearchOutput, ListDirInput,
    ListDirOutput,
};
use crate::tools::overrides::{OverrideOutput, OverrideRequestInput, OverrideStatusInput};
use crate::tools::sessions::{
    CreateSessionInput, ExecuteCommandInput, ResizeSessionInput, SendInputInput, SessionIdInput,
    SessionOutput, SessionTable,
};
use crate::tools::tasks::{
    AgentRegisterInput, AgentRegisterOutput, TaskCompleteInput, TaskCompleteOutput, TaskIdInput,
    TaskListInput, TaskListOutput, TaskNextInput, TaskNextOutput, TaskOutput, TaskStatusOutput,
    TaskSubmitInput, TaskSubmitOutput, TaskUpdateInput,
};
use crate::tools::terminal::{
    CommandError, CommandOutput, CommandSession, ProgressFn, RunTerminalCmdInput,
    TerminalGetStatusInput,
};
use crate::tools::{
    Outcome, ToolError, Toolbox, check_arguments, parse_arguments, with_call_note, with_caller,
};
use direct::DirectReply;

/// One MCP session's server. Sessions share the toolbox and the audit chain.
#[derive(Clone)]
pub struct ArbiterServer {
    inner: Arc<SessionState>,
}

struct SessionState {
    toolbox: Arc<Toolbox>,
    audit: AuditChain,
    session_id: String,
    tool_router: ToolRouter<ArbiterServer>,
    /// This session's background commands; they end with it.
    jobs: JobTable,
    /// This session's interactive terminal sessions; they end with it.
    sessions: SessionTable,
    /// Who the session acts for when its transport says so (an HTTP token);
    /// `None`: tenant `default`, under the name the client gives.
    identity: Option<auth::SessionIdentity>,
    /// Counts this session in `arbiter_mcp_sessions_active` while it lives.
    _live: metrics::LiveSession,
    /// The streamable HTTP endpoint's direct lane, which this session joins
    /// once initialized (`http_direct.rs`); `None` on other transports.
    http_lane: Option<Arc<http_direct::DirectSessions>>,
}

/// A session's server that does not keep the session alive: the HTTP lane's
/// hold on it, which rmcp's ending of the session (and so the end of its
/// background commands and terminals) must not wait for.
pub(crate) struct WeakArbiterServer(std::sync::Weak<SessionState>);

impl WeakArbiterServer {
    pub(crate) fn upgrade(&self) -> Option<ArbiterServer> {
        self.0.upgrade().map(|inner| ArbiterServer { inner })
    }

    pub(crate) fn is_alive(&self) -> bool {
        self.0.strong_count() > 0
    }
}

/// A successful tool result: readable text for the model, the typed object as
/// `structuredContent` for clients that use the output schema.
fn tool_success<T: Serialize>(text: String, output: &T) -> CallToolResult {
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = Some(serde_json::to_value(output).unwrap_or(Value::Null));
    result
}

/// A tool's result as the client sees it: its rendering and typed object, or the refusal.
fn reply<T: Serialize>(
    result: Result<T, ToolError>,
    render: impl FnOnce(&T) -> String,
) -> CallToolResult {
    match result {
        Ok(out) => tool_success(render(&out), &out),
        Err(e) => tool_failure(&e),
    }
}

/// A read's result: its rendering, and the output as structured content.
fn read_result(mut out: FileReadOutput) -> CallToolResult {
    let text = out.render();
    // The content moves into the structured copy instead of being copied a
    // second time (a read's largest string).
    let content = std::mem::take(&mut out.content);
    let mut result = tool_success(text, &out);
    if let Some(Value::Object(fields)) = &mut result.structured_content {
        fields.insert("content".into(), Value::String(content));
    }
    result
}

fn tool_failure(error: &ToolError) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(error.render())])
}

/// A command that could not run or did not end by itself: the error, and
/// what it printed (also as `structuredContent`) when it ran.
fn command_failure(e: &CommandError) -> CallToolResult {
    let mut result = CallToolResult::error(vec![ContentBlock::text(e.render())]);
    if let Some(out) = &e.output {
        result.structured_content = serde_json::to_value(out).ok();
    }
    result
}

/// Progress notifications for a request that asked for them (it carried a
/// progress token): bytes of output so far, and the time.
fn command_progress(ctx: &RequestContext<RoleServer>) -> Option<ProgressFn> {
    let (token, send) = progress_sender(ctx)?;
    Some(Box::new(move |bytes: u64, elapsed: std::time::Duration| {
        let mut param = rmcp::model::ProgressNotificationParam::new(token.clone(), bytes as f64);
        param.message = Some(format!(
            "{bytes} bytes of output after {:.0} s",
            elapsed.as_secs_f64()
        ));
        let _ = send.send(param);
    }))
}

/// Progress notifications for task_complete's gates, when the request
/// carried a progress token: one as each gate starts and one as it ends.
fn gate_progress(ctx: &RequestContext<RoleServer>) -> Option<crate::tools::tasks::GateProgressFn> {
    let (token, send) = progress_sender(ctx)?;
    Some(Box::new(move |step: u32, total: u32, message: String| {
        let mut param = rmcp::model::ProgressNotificationParam::new(token.clone(), f64::from(step));
        param.total = Some(f64::from(total));
        param.message = Some(message);
        let _ = send.send(param);
    }))
}

/// The request's progress token and a sender whose notifications reach the
/// client in the order they were made (MCP wants progress to increase; a
/// task per notification let them overtake each other). The forwarding task
/// ends when the sender is dropped with the call.
fn progress_sender(
    ctx: &RequestContext<RoleServer>,
) -> Option<(
    rmcp::model::ProgressToken,
    tokio::sync::mpsc::UnboundedSender<rmcp::model::ProgressNotificationParam>,
)> {
    let token = ctx.meta.get_progress_token()?;
    let peer = ctx.peer.clone();
    let (send, mut receive) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(param) = receive.recv().await {
            let _ = peer.notify_progress(param).await;
        }
    });
    Some((token, send))
}

fn json_text<T: Serialize>(output: &T) -> String {
    serde_json::to_string_pretty(output).unwrap_or_default()
}

#[tool_router]
impl ArbiterServer {
    pub fn new(toolbox: Arc<Toolbox>, audit: AuditChain) -> Self {
        let jobs = JobTable::new(toolbox.shutdown.child_token());
        Self {
            inner: Arc::new(SessionState {
                jobs,
                sessions: SessionTable::new(toolbox.shutdown.child_token()),
                toolbox,
                audit,
                session_id: uuid::Uuid::new_v4().simple().to_string(),
                tool_router: Self::tool_router(),
                identity: None,
                _live: metrics::LiveSession::start(),
                http_lane: None,
            }),
        }
    }

    /// The calls still running. A server that is shutting down waits for them,
    /// so that every effect it started gets its audit record.
    pub fn in_flight(&self) -> TaskTracker {
        self.inner.toolbox.calls.clone()
    }

    #[tool(
        name = "file_read",
        description = "Read a text file in the workspace. Returns lines prefixed with their 1-based line numbers, at most 2000 lines or 256 KiB per call; when `truncated` is true, call again with `offset` = `next_offset`. Binary files, directories, FIFOs and devices are refused.",
        annotations(title = "Read file", read_only_hint = true, open_world_hint = false),
        output_schema = schema_for_output::<FileReadOutput>()
    )]
    async fn file_read(&self, Parameters(input): Parameters<FileReadInput>) -> CallToolResult {
        match self.inner.toolbox.file_read(input).await {
            Ok(out) => read_result(out),
            Err(e) => tool_failure(&e),
        }
    }

    #[tool(
        name = "file_write",
        description = "Create or replace a file in the workspace with the given contents, atomically (the file is either entirely old or entirely new, even after a crash). Keeps the mode of a file it replaces and creates missing parent directories.",
        annotations(
            title = "Write file",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        ),
        output_schema = schema_for_output::<FileWriteOutput>()
    )]
    async fn file_write(&self, Parameters(input): Parameters<FileWriteInput>) -> CallToolResult {
        match self.inner.toolbox.file_write(input).await {
            Ok(out) => tool_success(json_text(&out), &out),
            Err(e) => tool_failure(&e),
        }
    }

    #[tool(
        name = "file_search_replace",
        description = "Edit a file by replacing an exact string. `old_string` must match exactly one place (whitespace included) unless `replace_all` is true; on no match the error points at the closest line, on several it lists their line numbers. `new_string` is literal. Keeps the file's line endings, byte-order mark and final newline. Returns the replacement count and a unified diff.",
        annotations(
            title = "Search and replace in file",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = false
        ),
        output_schema = schema_for_output::<FileSearchReplaceOutput>()
    )]
    async fn file_search_replace(
        &self,
        Parameters(input): Parameters<FileSearchReplaceInput>,
    ) -> CallToolResult {
        match self.inner.toolbox.file_search_replace(input).await {
            Ok(out) => {
                let text = format!(
                    "Replaced {} occurrence(s) in {}.\n{}",
                    out.replacements, out.path, out.diff
                );
                tool_success(text, &out)
            }
            Err(e) => tool_failure(&e),
        }
    }

    #[tool(
        name = "list_dir",
        description = "List a directory of the workspace: each entry's path (relative to the workspace root), type (file, dir, symlink), size and modification time; a symlink shows where it leads when that is inside the workspace. `depth` lists subdirectories too (breadth first). At most 1000 entries (`truncated` says when there are more). Entries the policy does not let you read (secrets such as `.env`) and the server's `.arbiter/` directory are omitted without notice.",
        annotations(title = "List directory", read_only_hint = true, open_world_hint = false),
        output_schema = schema_for_output::<ListDirOutput>()
    )]
    async fn list_dir(&self, Parameters(input): Parameters<ListDirInput>) -> CallToolResult {
        reply(self.inner.toolbox.list_dir(input).await, |out| out.render())
    }

    #[tool(
        name = "grep_search",
        description = "Search file contents in the workspace with ripgrep's engine: a regular expression (Rust/ripgrep syntax) or, with `fixed_string`, literal text, line by line. Honours .gitignore and .ignore, skips binary files and the `.git`, `target`, `node_modules` directories; `include_pattern` / `exclude_pattern` are globs (`*.rs`, `src/**/*.ts`). Returns file, line number and line (with `context_lines` around it), at most `max_results` (default 50, at most 500) matches; `truncated` says when there may be more. Files the policy does not let you read (secrets such as `.env`) are never searched, and their matches never shown.",
        annotations(title = "Search file contents", read_only_hint = true, open_world_hint = false),
        output_schema = schema_for_output::<GrepSearchOutput>()
    )]
    async fn grep_search(&self, Parameters(input): Parameters<GrepSearchInput>) -> CallToolResult {
        reply(self.inner.toolbox.grep_search(input).await, |out| {
            out.render()
        })
    }

    #[tool(
        name = "file_search",
        description = "Find files by fuzzy matching their path (`srvmod` finds `src/server/mod.rs`; fzf syntax such as `'exact`, `^prefix`, `.rs$` works). Walks the workspace like grep_search (honours .gitignore; skips `.git`, `target`, `node_modules`). Returns the best matches first, at most `max_results` (default 20, at most 200). Files the policy does not let you read are omitted.",
        annotations(title = "Find files by name", read_only_hint = true, open_world_hint = false),
        output_schema = schema_for_output::<FileSearchOutput>()
    )]
    async fn file_search(&self, Parameters(input): Parameters<FileSearchInput>) -> CallToolResult {
        reply(self.inner.toolbox.file_search(input).await, |out| {
            out.render()
        })
    }

    #[tool(
        name = "delete_file",
        description = "Delete a file in the workspace. A symlink is removed itself, never what it points to. Deleting a directory (with everything in it) is refused unless the policy allows it (DELETE-001); paths the policy protects from writes (such as `.git/`) cannot be deleted. Counts against the active working spec's change budget (the lines removed).",
        annotations(
            title = "Delete file",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = false
        ),
        output_schema = schema_for_output::<DeleteFileOutput>()
    )]
    async fn delete_file(&self, Parameters(input): Parameters<DeleteFileInput>) -> CallToolResult {
        reply(self.inner.toolbox.delete_file(input).await, |out| {
            out.render()
        })
    }

    #[tool(
        name = "move_file",
        description = "Move or rename a file within the workspace, atomically. Fails without changing anything when `destination` exists, unless `overwrite` is true (MOVE-001). Missing parent directories of the destination are created. A symlink is moved as a link. Both paths are judged like writes (the source as a delete); moving a directory needs the policy to allow directory deletes (DELETE-001). Counts both paths against the active working spec's change budget.",
        annotations(
            title = "Move file",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = false
        ),
        output_schema = schema_for_output::<MoveFileOutput>()
    )]
    async fn move_file(&self, Parameters(input): Parameters<MoveFileInput>) -> CallToolResult {
        reply(self.inner.toolbox.move_file(input).await, |out| {
            out.render()
        })
    }

    #[tool(
        name = "arbiter_validate",
        description = "Validate a CAWS working spec (the `.caws/working-spec.yaml` format) given as YAML or JSON text or as a workspace path. Returns every problem with its CAWS rule id (SCOPE-001, BUDGET-001, ACCEPTANCE-001, ...), the field path in the document and a suggested fix, plus the change budget writes will be held to.",
        annotations(title = "Validate working spec", read_only_hint = true, open_world_hint = false),
        output_schema = schema_for_output::<ArbiterValidateOutput>()
    )]
    async fn arbiter_validate(
        &self,
        Parameters(input): Parameters<ArbiterValidateInput>,
    ) -> CallToolResult {
        match self.inner.toolbox.arbiter_validate(input).await {
            Ok(out) => tool_success(out.render(), &out),
            Err(e) => {
                crate::tools::note_error(&e);
                tool_failure(&e)
            }
        }
    }
    #[tool(
        name = "run_terminal_cmd",
        description = "Run a command in the workspace, in a sandbox: it can write only inside the workspace and a private temporary directory ($HOME and $TMPDIR), has no network unless the policy gives it, sees none of the server's environment or state, and is killed with everything it started at its timeout (default 60 s). The command is split into words like a shell does but runs WITHOUT a shell: no pipes, redirections, `;`, `&&`, `$VAR` or globs (write them into `sh -c '...'` only where the policy allows shell syntax). Returns the exit code (a non-zero exit is not an error), stdout and stderr (each capped, keeping the first and last parts). With is_background: true, returns a job_id at once; follow it with terminal_get_status.",
        annotations(
            title = "Run command",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = false
        ),
        output_schema = schema_for_output::<CommandOutput>()
    )]
    async fn run_terminal_cmd(
        &self,
        Parameters(input): Parameters<RunTerminalCmdInput>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let session = CommandSession {
            jobs: &self.inner.jobs,
            tracker: &self.inner.toolbox.calls,
            cancel: ctx.ct.clone(),
        };
        let progress = command_progress(&ctx);
        match self
            .inner
            .toolbox
            .run_terminal_cmd(input, session, progress)
            .await
        {
            Ok(out) => tool_success(out.render(), &out),
            Err(e) => command_failure(&e),
        }
    }

    #[tool(
        name = "terminal_get_status",
        description = "With job_id: state of a background command started by run_terminal_cmd with is_background: true in this session: running or how it ended (exit code, signal, timed out), and the output it printed since the previous terminal_get_status call. With session_id: state of a terminal session (running, exited, closed, expired) and how many bytes of output are unread.",
        annotations(title = "Background command status", read_only_hint = true, open_world_hint = false),
        output_schema = schema_for_output::<CommandOutput>()
    )]
    async fn terminal_get_status(
        &self,
        Parameters(input): Parameters<TerminalGetStatusInput>,
    ) -> CallToolResult {
        match self
            .inner
            .toolbox
            .terminal_get_status(input, &self.inner.jobs, &self.inner.sessions)
        {
            Ok(out) => tool_success(out.render(), &out),
            Err(e) => tool_failure(&e),
        }
    }

    #[tool(
        name = "terminal_create_session",
        description = "Start an interactive shell (default /bin/sh) on a terminal, in the same sandbox as run_terminal_cmd (writes only inside the workspace, no network unless the policy gives it). The shell is judged by the policy like a command. Returns a session_id for terminal_execute_command, terminal_send_input, terminal_read_output, terminal_resize_session, terminal_get_status and terminal_close_session. Sessions belong to this MCP session, end when closed, after the policy's idle time (15 min by default), or with the MCP session.",
        annotations(title = "Create terminal session", read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = false),
        output_schema = schema_for_output::<SessionOutput>()
    )]
    async fn terminal_create_session(
        &self,
        Parameters(input): Parameters<CreateSessionInput>,
    ) -> CallToolResult {
        let inner = &self.inner;
        match inner
            .toolbox
            .terminal_create_session(input, &inner.sessions, &inner.toolbox.calls)
            .await
        {
            Ok(out) => tool_success(out.render(), &out),
            Err(e) => tool_failure(&e),
        }
    }

    #[tool(
        name = "terminal_execute_command",
        description = "Run one command line in a terminal session's shell and wait (timeout_ms, 1000 to 300000) for it to finish: returns its output (control sequences stripped, capped) and exit status. The command is judged by the policy exactly like run_terminal_cmd's before it is typed. State such as the working directory (cd) and shell variables persists between calls. On timeout the command keeps running.",
        annotations(title = "Run command in session", read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = false),
        output_schema = schema_for_output::<SessionOutput>()
    )]
    async fn terminal_execute_command(
        &self,
        Parameters(input): Parameters<ExecuteCommandInput>,
    ) -> CallToolResult {
        reply(
            self.inner
                .toolbox
                .terminal_execute_command(input, &self.inner.sessions)
                .await,
            |out| out.render(),
        )
    }

    #[tool(
        name = "terminal_send_input",
        description = "Type text into a terminal session (answers to a prompt, input to a running program). Every complete line is judged by the policy as a command. A control character must be sent alone (\"\\u0003\" interrupts, \"\\u0004\" ends input). Read what follows with terminal_read_output.",
        annotations(title = "Send input to session", read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = false),
        output_schema = schema_for_output::<SessionOutput>()
    )]
    async fn terminal_send_input(
        &self,
        Parameters(input): Parameters<SendInputInput>,
    ) -> CallToolResult {
        reply(
            self.inner
                .toolbox
                .terminal_send_input(input, &self.inner.sessions)
                .await,
            |out| out.render(),
        )
    }

    #[tool(
        name = "terminal_read_output",
        description = "The output a terminal session printed since it was last read (control sequences stripped, capped), and its state.",
        annotations(title = "Read session output", read_only_hint = true, open_world_hint = false),
        output_schema = schema_for_output::<SessionOutput>()
    )]
    async fn terminal_read_output(
        &self,
        Parameters(input): Parameters<SessionIdInput>,
    ) -> CallToolResult {
        reply(
            self.inner
                .toolbox
                .terminal_read_output(input, &self.inner.sessions)
                .await,
            |out| out.render(),
        )
    }

    #[tool(
        name = "terminal_resize_session",
        description = "Give a terminal session a new size (cols, rows: 1 to 1000 each); the programs in its foreground get SIGWINCH and full-screen ones redraw. Returns the session's state.",
        annotations(title = "Resize terminal session", read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = false),
        output_schema = schema_for_output::<SessionOutput>()
    )]
    async fn terminal_resize_session(
        &self,
        Parameters(input): Parameters<ResizeSessionInput>,
    ) -> CallToolResult {
        reply(
            self.inner
                .toolbox
                .terminal_resize_session(input, &self.inner.sessions)
                .await,
            |out| out.render(),
        )
    }

    #[tool(
        name = "terminal_close_session",
        description = "Close a terminal session: the terminal is hung up (SIGHUP), then its shell and every process it started are stopped (SIGTERM, then SIGKILL). Returns the output not yet read.",
        annotations(title = "Close terminal session", read_only_hint = false, destructive_hint = true, idempotent_hint = true, open_world_hint = false),
        output_schema = schema_for_output::<SessionOutput>()
    )]
    async fn terminal_close_session(
        &self,
        Parameters(input): Parameters<SessionIdInput>,
    ) -> CallToolResult {
        reply(
            self.inner
                .toolbox
                .terminal_close_session(input, &self.inner.sessions)
                .await,
            |out| out.render(),
        )
    }

    #[tool(
        name = "override_request",
        description = "Ask a person for an exception to one policy rule, after a refusal named it. Give the rule_id from the refusal, a reason a person can judge, and a scope that is as narrow as the work needs (paths or globs, a command prefix, or a task id). Returns the request id (state pending) and how a person approves it; you cannot approve it yourself. Follow it with override_status; once approved, retry the refused call. At most 5 requests per hour by default, and a rule denied 3 times cannot be asked for again until a cool-down ends.",
        annotations(title = "Request an override", read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = false),
        output_schema = schema_for_output::<OverrideOutput>()
    )]
    async fn override_request(
        &self,
        Parameters(input): Parameters<OverrideRequestInput>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        reply(
            self.inner
                .toolbox
                .override_request(input, Some(ctx.peer.clone()))
                .await,
            |out| out.render(),
        )
    }

    #[tool(
        name = "override_status",
        description = "Where an override request stands: pending, approved (until when), denied, expired or revoked, with the decider's note.",
        annotations(title = "Override status", read_only_hint = true, open_world_hint = false),
        output_schema = schema_for_output::<OverrideOutput>()
    )]
    async fn override_status(
        &self,
        Parameters(input): Parameters<OverrideStatusInput>,
    ) -> CallToolResult {
        reply(self.inner.toolbox.override_status(input).await, |out| {
            out.render()
        })
    }

    #[tool(
        name = "task_submit",
        description = "Submit a task for an agent to do: a title, a description, and optionally a CAWS working spec (YAML/JSON text or a workspace path; validated, errors refuse the task), a task_type (detected from the words when left out: feature, bugfix, refactor, test, docs, research, ops, with a confidence), a priority (1-5) and required_capabilities (languages, tools). Sets the risk tier (from the spec, else inferred), stores the task and routes it to a capable, recently seen agent by the policy's strategy (UCB1 on past results by default). Returns the task id, type and confidence, tier, the assigned agent or `queued`, and the rationale with every candidate's score.",
        annotations(title = "Submit a task", read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = false),
        output_schema = schema_for_output::<TaskSubmitOutput>()
    )]
    async fn task_submit(&self, Parameters(input): Parameters<TaskSubmitInput>) -> CallToolResult {
        reply(self.inner.toolbox.task_submit(input).await, |out| {
            out.render()
        })
    }

    #[tool(
        name = "agent_register",
        description = "Register yourself (your connection's identity) as an agent that takes tasks: the task types you take, the languages and tools you work with, and how many tasks you hold at once. Registering again replaces your capabilities and keeps your record. Tasks are routed only to agents seen (agent_register, task_next, task_update, task_complete) within the policy's agent timeout (10 minutes by default).",
        annotations(title = "Register as an agent", read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = false),
        output_schema = schema_for_output::<AgentRegisterOutput>()
    )]
    async fn agent_register(
        &self,
        Parameters(input): Parameters<AgentRegisterInput>,
    ) -> CallToolResult {
        reply(self.inner.toolbox.agent_register(input).await, |out| {
            out.render()
        })
    }

    #[tool(
        name = "task_next",
        description = "Get your next task and claim it: one routed to you, else the most urgent queued task you are capable of (each task is claimed by exactly one agent). Returns it with its description and spec; when you already hold as many tasks as you registered for, returns the oldest one you hold instead. Your claim lasts the policy's lease (30 minutes by default) and is renewed by task_update; a lapsed claim goes back to the queue and counts against your record. Requires agent_register first.",
        annotations(title = "Claim the next task", read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = false),
        output_schema = schema_for_output::<TaskNextOutput>()
    )]
    async fn task_next(&self, Parameters(input): Parameters<TaskNextInput>) -> CallToolResult {
        reply(self.inner.toolbox.task_next(input).await, |out| {
            out.render()
        })
    }

    #[tool(
        name = "task_update",
        description = "Report progress (percent) and a note on a task you hold; renews your claim. Only the agent holding a task may update it.",
        annotations(title = "Update a task", read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = false),
        output_schema = schema_for_output::<TaskOutput>()
    )]
    async fn task_update(&self, Parameters(input): Parameters<TaskUpdateInput>) -> CallToolResult {
        reply(self.inner.toolbox.task_update(input).await, |out| {
            out.render()
        })
    }

    #[tool(
        name = "task_complete",
        description = "Report a task you hold as done, with a summary of what you did and how you checked it. The quality gates the policy names for the task's risk tier (tests, lint, coverage, mutation) then run in the sandbox, one after another (progress notifications if you send a progress token), and the reply is the verdict: `pass`, `conditional` or `fail` with a score out of 100 and each gate's exit code, time and output. pass/conditional: the task is completed (risk tier 1: it waits for a person's sign-off, `needs_review`); fail: you still hold it, fix what failed and call task_complete again. The outcome counts on your record for the task's type, which routing uses.",
        annotations(title = "Complete a task", read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = false),
        output_schema = schema_for_output::<TaskCompleteOutput>()
    )]
    async fn task_complete(
        &self,
        Parameters(input): Parameters<TaskCompleteInput>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let session = CommandSession {
            jobs: &self.inner.jobs,
            tracker: &self.inner.toolbox.calls,
            cancel: ctx.ct.clone(),
        };
        let progress = gate_progress(&ctx);
        reply(
            self.inner
                .toolbox
                .task_complete(input, session, progress)
                .await,
            |out| out.render(),
        )
    }

    #[tool(
        name = "task_cancel",
        description = "Cancel a task you submitted that has not ended (queued, assigned or claimed). Its holder can no longer update or complete it.",
        annotations(title = "Cancel a task", read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = false),
        output_schema = schema_for_output::<TaskOutput>()
    )]
    async fn task_cancel(&self, Parameters(input): Parameters<TaskIdInput>) -> CallToolResult {
        reply(self.inner.toolbox.task_cancel(input).await, |out| {
            out.render()
        })
    }

    #[tool(
        name = "task_status",
        description = "A task of your tenant in full: state, holder, progress, summary, spec, every change in its history, every routing decision with each candidate's score, and every quality-gate verdict with each gate's result.",
        annotations(title = "Task status", read_only_hint = true, open_world_hint = false),
        output_schema = schema_for_output::<TaskStatusOutput>()
    )]
    async fn task_status(&self, Parameters(input): Parameters<TaskIdInput>) -> CallToolResult {
        reply(self.inner.toolbox.task_status(input).await, |out| {
            out.render()
        })
    }

    #[tool(
        name = "task_list",
        description = "Your tenant's tasks, newest first, optionally only those in one state (queued, assigned, claimed, needs_review, completed, cancelled); at most `limit` (default 100, at most 1000), with `truncated` when there are more.",
        annotations(title = "List tasks", read_only_hint = true, open_world_hint = false),
        output_schema = schema_for_output::<TaskListOutput>()
    )]
    async fn task_list(&self, Parameters(input): Parameters<TaskListInput>) -> CallToolResult {
        reply(self.inner.toolbox.task_list(input).await, |out| {
            out.render()
        })
    }
}

#[tool_handler(router = self.inner.tool_router)]
impl ServerHandler for ArbiterServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("arbiter", env!("CARGO_PKG_VERSION")))
            .with_instructions(format!(
                "arbiter gives governed access to the workspace {}. Paths are relative to that root; \
                 nothing outside it is reachable. Every call is checked by policy and recorded in a \
                 hash-chained audit log. A refused call says which rule refused it and what to do next.",
                self.inner.toolbox.root.path().display()
            ))
    }

    /// Over streamable HTTP, the session joins its endpoint's direct lane:
    /// `notifications/initialized` is the first request that names the
    /// session id rmcp gave it.
    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        let Some(lane) = &self.inner.http_lane else {
            return;
        };
        let session_id = context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.headers.get(http::SESSION_HEADER))
            .and_then(|id| id.to_str().ok());
        let peer = context.peer.peer_info();
        let direct = peer.as_deref().and_then(direct::DirectSession::for_peer);
        if let (Some(id), Some(peer), Some(direct)) = (session_id, peer, direct) {
            lane.register(
                id,
                WeakArbiterServer(Arc::downgrade(&self.inner)),
                direct,
                peer.protocol_version.to_string(),
            );
        }
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        // The call runs in its own task, to the end of its audit record, even if
        // the client cancels or disconnects: an effect without its record would
        // be a hole in the trail.
        let this = self.clone();
        self.inner
            .toolbox
            .calls
            .spawn(async move { this.call_tool_audited(request, context).await })
            .await
            .unwrap_or_else(|e| {
                Err(ErrorData::internal_error(
                    format!("the tool call task failed: {e}"),
                    None,
                ))
            })
    }
}

impl ArbiterServer {
    /// A server whose calls act for `identity` (an HTTP session's token):
    /// overrides, waivers and audit records name its tenant and agent.
    pub fn acting_for(
        toolbox: Arc<Toolbox>,
        audit: AuditChain,
        identity: auth::SessionIdentity,
    ) -> Self {
        let mut server = Self::new(toolbox, audit);
        Arc::get_mut(&mut server.inner)
            .expect("a new server is not shared yet")
            .identity = Some(identity);
        server
    }

    /// A server whose session joins `lane` once the client is initialized.
    pub fn with_http_lane(mut self, lane: Arc<http_direct::DirectSessions>) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("a new server is not shared yet")
            .http_lane = Some(lane);
        self
    }

    /// Whether `tool` says it changes nothing (its `readOnlyHint`).
    fn is_read_only(&self, tool: &str) -> bool {
        self.inner
            .tool_router
            .get(tool)
            .and_then(|t| t.annotations.as_ref())
            .and_then(|a| a.read_only_hint)
            .unwrap_or(false)
    }

    /// The name the client gave itself at `initialize`, for a session without a token.
    fn peer_name(context: &RequestContext<RoleServer>) -> String {
        context
            .peer
            .peer_info()
            .map(|info| info.client_info.name.clone())
            .unwrap_or_else(|| "unknown".to_string())
    }

    /// Check the arguments, run the tool, and commit the audit record before the reply.
    async fn call_tool_audited(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let started = Instant::now();
        let tool = request.name.to_string();
        let args = request.arguments.clone().unwrap_or_default();
        let peer_name = Self::peer_name(&context);
        let checked = match check_arguments(&tool, &args) {
            None => Err(CheckError::UnknownTool),
            Some(Err(e)) => Err(CheckError::Invalid(e)),
            Some(Ok(())) => {
                let call = self
                    .inner
                    .tool_router
                    .call(ToolCallContext::new(self, request, context));
                Ok(Box::pin(call) as ToolRun<'_>)
            }
        };
        self.audited(started, &tool, &args, peer_name, checked, None)
            .await
    }

    /// A `tools/call` of a tool that needs nothing from rmcp's request context
    /// (no progress, no cancellation, no requests to the client), run without
    /// rmcp's dispatch: the same checks, policy, tool and audit record as
    /// [`Self::call_tool_audited`], for transports that answer such calls
    /// themselves (`direct.rs`). `None`: not such a tool; let rmcp have it.
    ///
    /// With `deferred`, the call's audit record is not committed but added
    /// there, and the caller must commit it ([`Self::commit_records`]) before
    /// the reply leaves: a burst of calls then costs one journal write.
    pub(crate) async fn call_direct(
        &self,
        tool: &str,
        args: Map<String, Value>,
        peer_name: String,
        deferred: Option<&mut Vec<AuditEntry>>,
    ) -> Option<Result<DirectReply, ErrorData>> {
        let started = Instant::now();
        let args = Value::Object(args);
        let checked = self.direct_run(tool, &args)?;
        let Value::Object(args) = &args else {
            unreachable!("built as an object above")
        };
        Some(
            self.audited(started, tool, args, peer_name, checked, deferred)
                .await,
        )
    }

    /// The tools [`Self::call_direct`] runs: their `#[tool]` methods, with the
    /// input parsed once.
    fn direct_run<'a>(
        &'a self,
        tool: &str,
        args: &Value,
    ) -> Option<Result<ToolRun<'a, DirectReply>, CheckError>> {
        fn run<'a, T, F, R>(
            args: &Value,
            call: impl FnOnce(T) -> F,
        ) -> Result<ToolRun<'a, DirectReply>, CheckError>
        where
            T: serde::de::DeserializeOwned,
            F: Future<Output = R> + Send + 'a,
            R: Into<DirectReply>,
        {
            let input = parse_arguments::<T>(args).map_err(CheckError::Invalid)?;
            let call = call(input);
            Ok(Box::pin(async move { Ok(call.await.into()) }))
        }
        Some(match tool {
            "file_read" => run(args, |i| self.file_read_direct(i)),
            "file_write" => run(args, |i| self.file_write(Parameters(i))),
            "file_search_replace" => run(args, |i| self.file_search_replace(Parameters(i))),
            "list_dir" => run(args, |i| self.list_dir(Parameters(i))),
            "grep_search" => run(args, |i| self.grep_search(Parameters(i))),
            "file_search" => run(args, |i| self.file_search(Parameters(i))),
            "delete_file" => run(args, |i| self.delete_file(Parameters(i))),
            "move_file" => run(args, |i| self.move_file(Parameters(i))),
            _ => return None,
        })
    }

    /// `file_read` for the direct lane: a success's lines are escaped as
    /// they are numbered, and written into the reply as the same JSON as
    /// [`Self::file_read`]'s result (`direct::write_read_result`).
    async fn file_read_direct(&self, input: FileReadInput) -> DirectReply {
        match self
            .inner
            .toolbox
            .file_read_into(input, json_out::JsonStringBody::default())
            .await
        {
            Ok((out, content)) => DirectReply::Read(out, content),
            Err(e) => tool_failure(&e).into(),
        }
    }

    /// The one way a checked call is run and put on record: refused before it
    /// runs when it would change something that could not be recorded; run
    /// with its caller and a fresh call note; its record committed before
    /// the reply is returned.
    async fn audited<R: ToolReply>(
        &self,
        started: Instant,
        tool: &str,
        args: &Map<String, Value>,
        peer_name: String,
        checked: Result<ToolRun<'_, R>, CheckError>,
        deferred: Option<&mut Vec<AuditEntry>>,
    ) -> Result<R, ErrorData> {
        let ts = now_rfc3339();
        // A token's identity outranks the name a client gives itself.
        let (tenant, client_name) = match &self.inner.identity {
            Some(id) => (id.tenant.clone(), id.agent.clone()),
            None => (crate::store::DEFAULT_TENANT.to_string(), peer_name),
        };

        let (response, note) = match checked {
            Err(CheckError::UnknownTool) => {
                let known: Vec<String> = self
                    .inner
                    .tool_router
                    .list_all()
                    .into_iter()
                    .map(|t| t.name.to_string())
                    .collect();
                let message = format!(
                    "unknown tool `{tool}`; this server has: {}",
                    known.join(", ")
                );
                (
                    Err(ErrorData::invalid_params(
                        message,
                        Some(json!({ "tool": tool })),
                    )),
                    None,
                )
            }
            Err(CheckError::Invalid(e)) => {
                let message = format!(
                    "invalid arguments for `{tool}`: field `{}`: {}",
                    e.field, e.message
                );
                let data = json!({ "tool": tool, "field": e.field });
                (Err(ErrorData::invalid_params(message, Some(data))), None)
            }
            Ok(call) => {
                if !self.is_read_only(tool)
                    && let Err(e) = self.inner.audit.ready().await
                {
                    // Its record could not be committed: do not make the change.
                    tracing::error!(tool = %tool, error = %e, "audit chain not ready; call refused before it ran");
                    return Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                        "Failed [AUDIT-001]: {e}. Nothing was changed: the call did not run, since \
                         its audit record could not be committed. Next: retry once the store \
                         answers (see /readyz, `arbiter doctor`)."
                    ))])
                    .into());
                }
                let caller = crate::overrides::Caller {
                    tenant,
                    agent: client_name.clone(),
                    session_id: self.inner.session_id.clone(),
                    task_id: None,
                };
                let (response, note) = with_caller(caller, with_call_note(call)).await;
                (response, Some(note))
            }
        };
        let (outcome, detail) = match (&response, &note) {
            (Err(e), _) => (Outcome::Invalid, e.message.to_string()),
            (Ok(_), Some(note)) if note.outcome.is_some() => {
                (note.outcome.unwrap_or(Outcome::Failed), note.detail.clone())
            }
            (Ok(r), _) if r.is_error() => (Outcome::Failed, String::new()),
            (Ok(_), note) => (
                Outcome::Ok,
                note.as_ref().map(|n| n.detail.clone()).unwrap_or_default(),
            ),
        };
        let entry = AuditEntry {
            ts,
            session_id: self.inner.session_id.clone(),
            client_name,
            tool: tool.to_string(),
            args_sha256: arguments_sha256(args),
            args_redacted: redact_arguments(args),
            decision: note
                .as_ref()
                .and_then(|n| n.verdict)
                .map_or("none", |v| v.as_str())
                .to_string(),
            rule_ids: note
                .as_ref()
                .map(|n| n.rule_ids.clone())
                .unwrap_or_default(),
            outcome: outcome.as_str().to_string(),
            detail,
            duration_us: started.elapsed().as_micros() as i64,
            waiver_ids: note
                .as_ref()
                .map(|n| n.waiver_ids.clone())
                .unwrap_or_default(),
            task_ids: note
                .as_ref()
                .map(|n| n.task_ids.clone())
                .unwrap_or_default(),
        };
        tracing::debug!(tool = %tool, outcome = outcome.as_str(), rules = %entry.rule_ids, us = entry.duration_us, "tools/call");
        // A name the server does not have is not a label: clients choose it.
        let known = self.inner.tool_router.get(tool).is_some();
        metrics::record_call(
            if known { tool } else { "unknown" },
            &entry.decision,
            outcome.as_str(),
            started.elapsed(),
        );
        if let Some(deferred) = deferred {
            // The caller commits it, before it sends the reply.
            deferred.push(entry);
            return response;
        }
        if let Err(e) = self.inner.audit.append(entry).await {
            tracing::error!(tool = %tool, error = %e, "audit commit failed; reporting the call as failed");
            let changed = outcome == Outcome::Ok && !self.is_read_only(tool);
            return Ok(audit_failure(&e, changed).into());
        }
        response
    }

    /// Commit the records of calls run with a deferred record
    /// ([`Self::call_direct`]), in one write where the chain allows.
    pub(crate) async fn commit_records(
        &self,
        records: Vec<AuditEntry>,
    ) -> Result<(), crate::store::audit::AuditError> {
        let count = records.len();
        self.inner.audit.append_all(records).await.map(drop).inspect_err(|e| {
            tracing::error!(calls = count, error = %e, "audit commit failed; reporting the calls as failed");
        })
    }
}

/// The answer to a call whose audit record could not be committed.
pub(crate) fn audit_failure(
    error: &crate::store::audit::AuditError,
    changed: bool,
) -> CallToolResult {
    let effect = if changed {
        "The change itself was made, but it is not on record"
    } else {
        "Nothing was changed"
    };
    CallToolResult::error(vec![ContentBlock::text(format!(
        "Failed [AUDIT-001]: {error}. {effect}. Next: the operator must fix the audit store (`arbiter doctor` says what is wrong); retrying will fail until then."
    ))])
}

/// A tool call ready to run.
type ToolRun<'a, R = CallToolResponse> =
    std::pin::Pin<Box<dyn Future<Output = Result<R, ErrorData>> + Send + 'a>>;

/// A tool's answer as [`ArbiterServer::audited`] passes it on: rmcp's
/// response, or the direct lane's [`DirectReply`].
trait ToolReply: From<CallToolResult> {
    /// A result flagged `isError`.
    fn is_error(&self) -> bool;
}

impl ToolReply for CallToolResponse {
    fn is_error(&self) -> bool {
        matches!(self, CallToolResponse::Complete(r) if r.is_error == Some(true))
    }
}

impl ToolReply for DirectReply {
    fn is_error(&self) -> bool {
        match self {
            DirectReply::Response(response) => response.is_error(),
            DirectReply::Read(..) => false,
        }
    }
}

/// Why a `tools/call` was not run.
enum CheckError {
    UnknownTool,
    Invalid(crate::tools::ArgumentError),
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
