//! Tool families, one file each. Every tool has the same shape: a typed input
//! (its doc comments become the JSON schema), an [`Action`] put to the policy,
//! the executor only if the policy allows, and a typed output (so clients get
//! `outputSchema` and `structuredContent`).
//!
//! Tools report what the policy decided through [`call_note`], which the server
//! reads back for the audit record; they never write audit records themselves.

pub mod caws;
pub mod check;
pub mod command_changes;
pub mod delete_move;
pub mod edit;
pub mod files;
pub mod find;
pub mod overrides;
pub mod sessions;
pub mod spec_gate;
pub mod tasks;
pub mod terminal;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use std::cell::RefCell;

use crate::exec::{ConfineError, FileLocks, WorkspaceRoot};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::overrides::{Caller, Waiver};
use crate::policy::{Action, Decision, Policy, Verdict, Waivability};
use crate::store::LazyStore;
use spec_gate::SpecCache;

/// Everything the tools need, shared by every session of a server.
#[derive(Debug)]
pub struct Toolbox {
    pub root: WorkspaceRoot,
    /// The policy in force; swapped whole when its file changes.
    pub policy: Arc<ArcSwap<Policy>>,
    pub locks: FileLocks,
    pub limits: Limits,
    /// The workspace's store (change-budget totals; shared with the audit indexer).
    pub store: Arc<LazyStore>,
    /// The active CAWS working spec, re-read when its file changes.
    pub spec: SpecCache,
    /// Cancelled when the server shuts down: running commands and background
    /// jobs are stopped (and recorded) instead of being abandoned.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Tool calls still running in any session of this workspace, and
    /// background jobs: a stopping server waits for them, so that every
    /// effect it started gets its audit record and its reply.
    pub calls: tokio_util::task::TaskTracker,
    /// Sandbox helpers started ahead of commands.
    pub helpers: Arc<crate::exec::process::HelperPool>,
    /// A root server's empty network namespace, shared by offline commands
    /// (made on first use; `None` inside when it could not be made).
    pub offline_netns: std::sync::OnceLock<Option<std::os::fd::OwnedFd>>,
    /// Whether CAWS waiver files are honoured: only when the workspace used
    /// CAWS (had `.caws/`) when the server started, so a `.caws/` that a
    /// command creates later grants nothing.
    pub caws_waivers: bool,
    /// Which policy's declared agents (`tasks.agents`) are in the store.
    pub declared_agents: crate::tasks::declared::DeclaredAgents,
}

/// Bounds on what one reply may carry.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub read_max_lines: u64,
    pub read_max_bytes: usize,
    /// Largest file `file_search_replace` will load.
    pub edit_max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            read_max_lines: 2000,
            read_max_bytes: 256 * 1024,
            edit_max_bytes: 64 * 1024 * 1024,
        }
    }
}

impl Toolbox {
    pub fn new(root: WorkspaceRoot, policy: Policy, store: Arc<LazyStore>) -> Self {
        let root_path = root.path().to_path_buf();
        Self {
            store,
            spec: SpecCache::default(),
            root,
            policy: Arc::new(ArcSwap::from_pointee(policy)),
            locks: FileLocks::default(),
            limits: Limits::default(),
            shutdown: tokio_util::sync::CancellationToken::new(),
            calls: tokio_util::task::TaskTracker::new(),
            helpers: crate::exec::process::HelperPool::new(1),
            offline_netns: std::sync::OnceLock::new(),
            caws_waivers: crate::overrides::caws::prepare_dir(root_path.as_path()),
            declared_agents: Default::default(),
        }
    }

    /// Ask the policy about `actions`; the strictest verdict wins, after
    /// lifting what an active waiver covers. The decision is noted for the
    /// audit record, and a refusal becomes a [`ToolError`].
    pub async fn enforce(&self, actions: &[Action<'_>]) -> Result<Decision, ToolError> {
        let policy = self.policy.load();
        let mut judged: Vec<(Action<'_>, Decision)> =
            actions.iter().map(|a| (*a, policy.evaluate(a))).collect();
        self.lift_waived(&policy, &mut judged).await;
        self.note_held_tasks().await;
        let mut decision = Decision::allow();
        for (_, d) in judged {
            decision.merge(d);
        }
        self.settle(&policy, decision, actions[0].subject())
    }

    /// Note `decision` for the audit record and turn a refusal into an error.
    pub(crate) fn settle(
        &self,
        policy: &Policy,
        decision: Decision,
        subject: &str,
    ) -> Result<Decision, ToolError> {
        note_decision(&decision);
        if decision.is_allowed() {
            return Ok(decision);
        }
        let waivable = decision
            .deciding_rules()
            .all(|r| policy.waivability(&r.id) == Waivability::Waivable);
        Err(ToolError::from_decision(&decision, subject, waivable))
    }

    /// Note, for the audit record, the tasks the caller holds (claims not
    /// lapsed): its file and terminal calls are made under them. Only agents
    /// this process saw claim a task are looked up.
    async fn note_held_tasks(&self) {
        let caller = current_caller();
        if !crate::tasks::attribution::may_hold(&caller.tenant, &caller.agent) {
            return;
        }
        let Ok(store) = self.store.get().await else {
            return;
        };
        let now = crate::tasks::now_ms();
        match store.task_held(&caller.tenant, &caller.agent).await {
            Ok(held) => {
                let ids: Vec<String> = held
                    .iter()
                    .filter(|t| t.lease_expires_at.is_some_and(|end| end > now))
                    .map(|t| t.display_id())
                    .collect();
                if ids.is_empty() {
                    crate::tasks::attribution::released(&caller.tenant, &caller.agent);
                    return;
                }
                let _ = CALL_NOTE.try_with(|n| n.borrow_mut().task_ids = ids.join(","));
            }
            Err(e) => {
                tracing::warn!(agent = %caller.agent, error = %e, "cannot tell which tasks the caller holds; the call is not attributed")
            }
        }
    }

    /// Lift, from each action's decision, the rules an active waiver for the
    /// current caller covers. Waivers are looked up only when a rule that may
    /// be waived refused something, so allowed calls cost nothing here.
    pub(crate) async fn lift_waived(&self, policy: &Policy, judged: &mut [(Action<'_>, Decision)]) {
        let waivable_refusal = judged.iter().any(|(_, d)| {
            d.deciding_rules()
                .any(|r| policy.waivability(&r.id) == Waivability::Waivable)
        });
        if !waivable_refusal {
            return;
        }
        let caller = current_caller();
        let now = crate::overrides::now_unix();
        let waivers: Vec<Waiver> = self
            .active_waivers(&caller, now)
            .await
            .into_iter()
            // A rule marked never_waivable after the approval stays refused.
            .filter(|w| policy.waivability(&w.rule_id) == Waivability::Waivable)
            .collect();
        if waivers.is_empty() {
            return;
        }
        for (action, decision) in judged.iter_mut() {
            crate::overrides::apply(decision, action, &waivers, &caller, now);
        }
    }

    /// Waivers in force for `caller`: approved overrides from the store and
    /// the workspace's CAWS waiver files. A store that cannot be read grants
    /// nothing (the refusal stands) and is logged.
    pub(crate) async fn active_waivers(&self, caller: &Caller, now: i64) -> Vec<Waiver> {
        let mut waivers = Vec::new();
        match self.store.get().await {
            Ok(store) => match store
                .override_active(&caller.tenant, &caller.agent, now)
                .await
            {
                Ok(records) => waivers.extend(records.iter().filter_map(|r| r.waiver_at(now))),
                Err(e) => tracing::error!(error = %e, "cannot read overrides; no waiver applies"),
            },
            Err(e) => tracing::error!(error = %e, "cannot open the store; no waiver applies"),
        }
        let (caws, problems) = if self.caws_waivers {
            crate::overrides::caws::read_dir(&self.root)
        } else {
            Default::default()
        };
        for (file, problem) in problems {
            tracing::warn!(file = %file, problem = %problem, "CAWS waiver file ignored");
        }
        for w in caws {
            // A waiver with a budget delta raises the budget (see the spec
            // gate) instead of lifting BUDGET-001 outright.
            for waiver in w.waivers_at(now) {
                if !(w.delta.is_some() && waiver.rule_id == "BUDGET-001") {
                    waivers.push(waiver);
                }
            }
        }
        waivers
    }
}

tokio::task_local! {
    static CALLER: Caller;
}

/// Run `f` as a call made by `caller`.
pub async fn with_caller<F: Future>(caller: Caller, f: F) -> F::Output {
    CALLER.scope(caller, f).await
}

/// Who the current call is from. Outside a server call (the CLI's
/// `arbiter call`, `policy check`) it is the local operator.
pub fn current_caller() -> Caller {
    CALLER.try_with(Caller::clone).unwrap_or_else(|_| Caller {
        tenant: crate::store::DEFAULT_TENANT.to_string(),
        agent: "cli".to_string(),
        session_id: "cli".to_string(),
        task_id: None,
    })
}

/// How a call ended, as the audit record names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// A rule or confinement refused the call.
    Refused,
    /// The call was allowed but could not be done (missing file, I/O error, no match).
    Failed,
    /// The request itself was malformed (unknown tool, bad arguments).
    Invalid,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
            Outcome::Invalid => "invalid",
        }
    }
}

/// A refused or failed call, worded for the agent that made it: what happened,
/// the rule, and what to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolError {
    pub outcome: Outcome,
    pub rule_id: String,
    pub message: String,
    pub advice: String,
}

impl ToolError {
    pub fn failed(rule_id: &str, message: impl Into<String>, advice: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Failed,
            rule_id: rule_id.to_string(),
            message: message.into(),
            advice: advice.into(),
        }
    }

    /// A refusal by the policy. `waivable`: every deciding rule may be waived,
    /// so the advice may point at override_request.
    pub fn from_decision(decision: &Decision, subject: &str, waivable: bool) -> Self {
        let rules: Vec<_> = decision.deciding_rules().collect();
        let ids: Vec<&str> = rules.iter().map(|r| &*r.id).collect();
        let why: Vec<String> = rules
            .iter()
            .map(|r| format!("{}: {}", r.id, r.justification))
            .collect();
        let advice = rules
            .first()
            .map(|r| &*r.advice)
            .unwrap_or("change the request");
        let verb = match decision.verdict {
            Verdict::NeedsOverride => "needs an override",
            _ => "is denied",
        };
        Self {
            outcome: Outcome::Refused,
            rule_id: ids.join(","),
            message: format!("`{subject}` {verb} by policy ({})", why.join("; ")),
            advice: if advice.contains("override_request") || !waivable {
                advice.to_string()
            } else {
                format!(
                    "{advice}; to ask a person for an exception, call override_request with rule_id {}",
                    ids[0]
                )
            },
        }
    }

    /// The text an agent reads.
    pub fn render(&self) -> String {
        let head = match self.outcome {
            Outcome::Refused => "Refused",
            Outcome::Invalid => "Invalid request",
            Outcome::Ok | Outcome::Failed => "Failed",
        };
        format!(
            "{head} [{}]: {}. Next: {}.",
            self.rule_id, self.message, self.advice
        )
    }
}

impl From<ConfineError> for ToolError {
    fn from(e: ConfineError) -> Self {
        Self {
            outcome: if e.is_refusal() {
                Outcome::Refused
            } else {
                Outcome::Failed
            },
            rule_id: e.rule_id().to_string(),
            message: e.to_string(),
            advice: e.advice().to_string(),
        }
    }
}

/// The tasks the current call is made under (noted by `note_held_tasks`).
pub(crate) fn noted_task_ids() -> Vec<i64> {
    CALL_NOTE
        .try_with(|n| {
            n.borrow()
                .task_ids
                .split(',')
                .filter_map(crate::tasks::parse_id)
                .collect()
        })
        .unwrap_or_default()
}

/// What a call decided, read back by the server for the audit record.
#[derive(Debug, Clone, Default)]
pub struct CallNote {
    pub verdict: Option<Verdict>,
    pub rule_ids: String,
    /// Waivers that lifted a rule for the call.
    pub waiver_ids: String,
    /// The tasks the caller held when it made the call (`T-12,T-13`).
    pub task_ids: String,
    /// Set when the call was refused or failed.
    pub outcome: Option<Outcome>,
    pub detail: String,
}

tokio::task_local! {
    static CALL_NOTE: RefCell<CallNote>;
}

/// Run `f` with a fresh note, returning its output and what it noted.
pub async fn with_call_note<F: Future>(f: F) -> (F::Output, CallNote) {
    CALL_NOTE
        .scope(RefCell::new(CallNote::default()), async {
            let out = f.await;
            let note = CALL_NOTE.with(|n| n.take());
            (out, note)
        })
        .await
}

fn note_decision(decision: &Decision) {
    let _ = CALL_NOTE.try_with(|n| {
        let mut n = n.borrow_mut();
        n.verdict = Some(decision.verdict);
        n.rule_ids = decision.rule_ids();
        n.waiver_ids = decision.waiver_ids();
    });
}

/// Note the rule of a refusal or failure that happened before (or instead of) a policy decision.
pub fn note_error(err: &ToolError) {
    let _ = CALL_NOTE.try_with(|n| {
        let mut n = n.borrow_mut();
        if n.rule_ids.is_empty() {
            n.rule_ids = err.rule_id.clone();
        }
        n.outcome = Some(err.outcome);
        n.detail = err.render();
    });
}

/// Note what a successful call did that the record should say (e.g. an
/// override decided at the client).
pub fn note_detail(detail: String) {
    let _ = CALL_NOTE.try_with(|n| n.borrow_mut().detail = detail);
}

/// Note a failure that came after the policy allowed the call (a command
/// that could not run, timed out, ...): its rule joins the matched rules.
pub fn note_failure(err: &ToolError) {
    let _ = CALL_NOTE.try_with(|n| {
        let mut n = n.borrow_mut();
        if !n.rule_ids.split(',').any(|r| r == err.rule_id) {
            if !n.rule_ids.is_empty() {
                n.rule_ids.push(',');
            }
            n.rule_ids.push_str(&err.rule_id);
        }
        n.outcome = Some(err.outcome);
        n.detail = err.render();
    });
}

/// A malformed argument, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgumentError {
    pub field: String,
    pub message: String,
}

/// A tool's input from a call's arguments (a JSON object), or the field at fault.
pub fn parse_arguments<T: DeserializeOwned>(args: &Value) -> Result<T, ArgumentError> {
    serde_path_to_error::deserialize::<_, T>(args).map_err(|e| {
        let field = e.path().to_string();
        let message = e.into_inner().to_string();
        // serde names a missing field in its message, at the parent's path.
        let field = match (field.as_str(), message.strip_prefix("missing field `")) {
            (".", Some(rest)) => rest.trim_end_matches('`').to_string(),
            _ => field,
        };
        ArgumentError { field, message }
    })
}

/// Check a call's arguments against the tool's input type, so a malformed
/// request is answered with the field at fault before anything runs.
/// Returns `None` for an unknown tool.
pub fn check_arguments(tool: &str, args: &Map<String, Value>) -> Option<Result<(), ArgumentError>> {
    fn check<T: DeserializeOwned>(args: &Map<String, Value>) -> Result<(), ArgumentError> {
        parse_arguments::<T>(&Value::Object(args.clone())).map(drop)
    }
    Some(match tool {
        "file_read" => check::<files::FileReadInput>(args),
        "file_write" => check::<files::FileWriteInput>(args),
        "file_search_replace" => check::<files::FileSearchReplaceInput>(args),
        "arbiter_validate" => check::<caws::ArbiterValidateInput>(args),
        "list_dir" => check::<find::ListDirInput>(args),
        "grep_search" => check::<find::GrepSearchInput>(args),
        "file_search" => check::<find::FileSearchInput>(args),
        "delete_file" => check::<delete_move::DeleteFileInput>(args),
        "move_file" => check::<delete_move::MoveFileInput>(args),
        "run_terminal_cmd" => check::<terminal::RunTerminalCmdInput>(args),
        "terminal_get_status" => check::<terminal::TerminalGetStatusInput>(args),
        "terminal_create_session" => check::<sessions::CreateSessionInput>(args),
        "terminal_execute_command" => check::<sessions::ExecuteCommandInput>(args),
        "terminal_send_input" => check::<sessions::SendInputInput>(args),
        "terminal_resize_session" => check::<sessions::ResizeSessionInput>(args),
        "override_request" => check::<overrides::OverrideRequestInput>(args),
        "override_status" => check::<overrides::OverrideStatusInput>(args),
        "task_submit" => check::<tasks::TaskSubmitInput>(args),
        "agent_register" => check::<tasks::AgentRegisterInput>(args),
        "task_next" => check::<tasks::TaskNextInput>(args),
        "task_update" => check::<tasks::TaskUpdateInput>(args),
        "task_complete" => check::<tasks::TaskCompleteInput>(args),
        "task_cancel" | "task_status" => check::<tasks::TaskIdInput>(args),
        "task_list" => check::<tasks::TaskListInput>(args),
        "terminal_read_output" | "terminal_close_session" => {
            check::<sessions::SessionIdInput>(args)
        }
        _ => return None,
    })
}
