//! The task tools: `task_submit`, `agent_register`, `task_next`,
//! `task_update`, `task_complete`, `task_cancel`, `task_status`,
//! `task_list`. Each turns its typed input into a call of
//! [`crate::tasks::lifecycle`] for the caller's tenant and identity, and its
//! result into a typed output with a rendering for the model. The rules
//! themselves (who may do what, routing, detection) live in `tasks/`.
//!
//! Not yet here: quality gates and a model judge on completion, so
//! `completed` means the agent reported the work done, nothing more.

use std::sync::Arc;

use rmcp::schemars::{self, JsonSchema};
use serde::{Deserialize, Serialize};

use super::{Outcome, ToolError, Toolbox, current_caller, note_error};
use crate::overrides::Caller;
use crate::policy::file::TaskSettings;
use crate::policy::spec::Violation;
use crate::store::Store;
use crate::tasks::lifecycle::{NextHow, Submission, TaskCall};
use crate::tasks::{
    CandidateScore, Capabilities, PerformanceRecord, RequiredCapabilities, RoutingRecord,
    TaskError, TaskErrorKind, TaskEvent, TaskRecord, TaskState, TaskType, display_id, now_ms,
    parse_id, rfc3339_ms,
};

/// Most tasks task_list returns by default, and at most.
const DEFAULT_LIST: u32 = 100;
const MAX_LIST: u32 = 1000;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskSubmitInput {
    /// A short title: what is to be done (`Fix crash when the config is empty`).
    pub title: String,
    /// What the work is, in enough detail for another agent to do it.
    pub description: String,
    /// A CAWS working spec: its YAML or JSON text, or the workspace path of a spec file. It is validated (errors refuse the task), sets the risk tier, and its mode helps detect the type.
    #[serde(default)]
    pub spec: Option<String>,
    /// feature, bugfix, refactor, test, docs, research or ops. Detected from the title, description and spec when left out.
    #[serde(default)]
    pub task_type: Option<TaskType>,
    /// 1 (low) to 5 (urgent); default 3. More urgent tasks are claimed first.
    #[serde(default)]
    pub priority: Option<u8>,
    /// What the agent must have besides taking the task's type: `languages` and `tools` (every one listed).
    #[serde(default)]
    pub required_capabilities: Option<RequiredCapabilities>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentRegisterInput {
    /// Your agent name; it must be the identity you are connected as (the MCP client name). Leave it out to use that identity.
    #[serde(default)]
    pub name: Option<String>,
    /// What you can do: `task_types` you take, `languages` and `tools` you work with.
    pub capabilities: Capabilities,
    /// How many tasks you work on at once (1 to 100; default 1).
    #[serde(default = "one")]
    pub max_concurrent_tasks: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskNextInput {}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskUpdateInput {
    /// The task id (`T-12`).
    pub task_id: String,
    /// Percent done, 0 to 100.
    #[serde(default)]
    pub progress: Option<u8>,
    /// What happened since the last update (kept in the task's history).
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskCompleteInput {
    /// The task id (`T-12`).
    pub task_id: String,
    /// What you did and how you checked it.
    pub summary: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskIdInput {
    /// The task id (`T-12`).
    pub task_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskListInput {
    /// Only tasks in this state: queued, assigned, claimed, completed or cancelled.
    #[serde(default)]
    pub state: Option<TaskState>,
    /// At most this many, newest first (default 100, at most 1000).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// A task as the tools show it. Times are RFC 3339, UTC.
#[derive(Debug, Serialize, JsonSchema)]
pub struct TaskView {
    pub task_id: String,
    pub title: String,
    pub description: String,
    pub task_type: TaskType,
    /// 1.0 when the submitter named the type.
    pub type_confidence: f64,
    pub risk_tier: u8,
    pub tier_reason: String,
    pub priority: u8,
    /// queued, assigned, claimed, completed or cancelled.
    pub state: TaskState,
    /// The agent routing chose.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assigned_to: Option<String>,
    /// The agent that holds it (claimed) or completed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    pub progress: u8,
    /// How many times it has been claimed.
    pub attempts: u32,
    /// Assigned: when the assignment lapses; claimed: when the claim lapses without a task_update.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<String>,
    pub submitted_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec_id: Option<String>,
    /// The working spec's text (task_next and task_status).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<String>,
    #[serde(skip_serializing_if = "RequiredCapabilities::is_empty")]
    pub required_capabilities: RequiredCapabilities,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claimed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
}

impl TaskView {
    fn new(t: &TaskRecord, with_spec: bool) -> Self {
        Self {
            task_id: t.display_id(),
            title: t.title.clone(),
            description: t.description.clone(),
            task_type: t.task_type,
            type_confidence: t.type_confidence,
            risk_tier: t.risk_tier,
            tier_reason: t.tier_reason.clone(),
            priority: t.priority,
            state: t.state,
            assigned_to: t.assigned_agent.clone(),
            holder: t.holder.clone(),
            progress: t.progress,
            attempts: t.attempts,
            lease_expires_at: t.lease_expires_at.map(rfc3339_ms),
            submitted_by: t.submitted_by.clone(),
            spec_id: t.spec_id.clone(),
            spec: t.spec.clone().filter(|_| with_spec),
            required_capabilities: t.required.clone(),
            summary: t.summary.clone(),
            created_at: rfc3339_ms(t.created_at),
            updated_at: rfc3339_ms(t.updated_at),
            claimed_at: t.claimed_at.map(rfc3339_ms),
            completed_at: t.completed_at.map(rfc3339_ms),
        }
    }

    fn line(&self) -> String {
        let who = match (&self.holder, &self.assigned_to) {
            (Some(h), _) => format!(", {h}"),
            (None, Some(a)) => format!(", for {a}"),
            _ => String::new(),
        };
        format!(
            "{} [{}{who}] {} ({}, tier {}, priority {}, {}%)",
            self.task_id,
            self.state.as_str(),
            self.title,
            self.task_type.as_str(),
            self.risk_tier,
            self.priority,
            self.progress
        )
    }
}

/// A routing decision as the tools show it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RoutingView {
    /// ucb1, least_loaded or round_robin.
    pub strategy: String,
    /// The seed of the draw that breaks ties.
    pub seed: u64,
    /// The agent chosen; absent when the task was queued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chosen: Option<String>,
    pub rationale: String,
    /// Eligible candidates best first (with scores), then excluded ones (with why).
    pub candidates: Vec<CandidateScore>,
    pub decided_at: String,
}

impl RoutingView {
    fn new(r: &RoutingRecord) -> Self {
        Self {
            strategy: r.choice.strategy.as_str().to_string(),
            seed: r.choice.seed,
            chosen: r.choice.chosen.clone(),
            rationale: r.choice.rationale.clone(),
            candidates: r.choice.candidates.clone(),
            decided_at: rfc3339_ms(r.decided_at),
        }
    }

    fn render(&self) -> String {
        let mut text = format!("Routing ({}): {}.", self.strategy, self.rationale);
        for c in &self.candidates {
            match c.score {
                Some(score) => {
                    text.push_str(&format!("\n- {}: {score:.3} ({})", c.agent, c.detail))
                }
                None => text.push_str(&format!("\n- {}: {}", c.agent, c.detail)),
            }
        }
        text
    }
}

/// An agent's record on one task type.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PerformanceView {
    pub agent: String,
    pub task_type: TaskType,
    /// Completions plus lapsed claims.
    pub attempts: u32,
    pub successes: u32,
    pub failures: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<f64>,
    /// Mean time from claim to completion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_duration_ms: Option<f64>,
}

impl PerformanceView {
    pub fn new(p: &PerformanceRecord) -> Self {
        Self {
            agent: p.agent.clone(),
            task_type: p.task_type,
            attempts: p.stats.attempts,
            successes: p.stats.successes,
            failures: p.stats.failures,
            success_rate: p.stats.success_rate(),
            mean_duration_ms: p.stats.mean_duration_ms(),
        }
    }

    fn render(&self) -> String {
        format!(
            "{} on {}: {}/{} succeeded",
            self.agent,
            self.task_type.as_str(),
            self.successes,
            self.attempts
        )
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TaskSubmitOutput {
    pub task_id: String,
    pub task_type: TaskType,
    /// 0 (a guess) to 1; 1.0 when you named the type.
    pub type_confidence: f64,
    /// `given` or `detected`.
    pub type_source: String,
    /// The words that decided the detected type.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub type_signals: Vec<String>,
    pub risk_tier: u8,
    pub tier_reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec_id: Option<String>,
    /// The spec's warnings (its errors would have refused the task).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub spec_warnings: Vec<Violation>,
    /// `assigned` or `queued`.
    pub state: TaskState,
    /// The agent it was routed to, or `queued`.
    pub assigned_to: String,
    pub routing: RoutingView,
    pub next: String,
}

impl TaskSubmitOutput {
    pub fn render(&self) -> String {
        let mut text = format!(
            "{}: {} ({}, confidence {:.2}), risk tier {} ({}); {}.",
            self.task_id,
            self.task_type.as_str(),
            self.type_source,
            self.type_confidence,
            self.risk_tier,
            self.tier_reason,
            if self.assigned_to == "queued" {
                "queued".to_string()
            } else {
                format!("assigned to {}", self.assigned_to)
            }
        );
        if !self.type_signals.is_empty() {
            text.push_str(&format!(" Type from: {}.", self.type_signals.join(", ")));
        }
        for w in &self.spec_warnings {
            text.push_str(&format!("\nSpec warning: {w}"));
        }
        text.push('\n');
        text.push_str(&self.routing.render());
        text.push_str(&format!("\nNext: {}.", self.next));
        text
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct AgentRegisterOutput {
    pub agent: String,
    pub capabilities: Capabilities,
    pub max_concurrent_tasks: u32,
    pub registered_at: String,
    pub last_seen_at: String,
    /// Your record so far, per task type.
    pub performance: Vec<PerformanceView>,
    pub next: String,
}

impl AgentRegisterOutput {
    pub fn render(&self) -> String {
        let c = &self.capabilities;
        let types: Vec<&str> = c.task_types.iter().map(|t| t.as_str()).collect();
        let mut text = format!(
            "Registered {}: task types {}; languages {}; tools {}; up to {} task(s) at once.",
            self.agent,
            types.join(", "),
            list_or_none(&c.languages),
            list_or_none(&c.tools),
            self.max_concurrent_tasks
        );
        for p in &self.performance {
            text.push_str(&format!(" {}.", p.render()));
        }
        text.push_str(&format!(" Next: {}.", self.next));
        text
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TaskNextOutput {
    /// The task to work on now; absent when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskView>,
    /// `claimed_assigned` (routed to you), `claimed_from_queue`, `already_held` (you are at your limit; this is a task you hold) or `none`.
    pub outcome: String,
    /// Every task you hold now.
    pub held: Vec<String>,
    pub next: String,
}

impl TaskNextOutput {
    pub fn render(&self) -> String {
        let mut text = match &self.task {
            Some(t) => {
                let mut text = format!("{} ({}):\n{}", self.outcome, t.line(), t.description);
                if let Some(spec) = &t.spec {
                    text.push_str(&format!(
                        "\nWorking spec {}:\n{spec}",
                        t.spec_id.as_deref().unwrap_or("")
                    ));
                }
                text
            }
            None => "No task for you now.".to_string(),
        };
        text.push_str(&format!("\nNext: {}.", self.next));
        text
    }
}

/// A task after a change, and what to do next.
#[derive(Debug, Serialize, JsonSchema)]
pub struct TaskOutput {
    pub task: TaskView,
    pub next: String,
}

impl TaskOutput {
    pub fn render(&self) -> String {
        format!("{}\nNext: {}.", self.task.line(), self.next)
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TaskCompleteOutput {
    /// The task, now `completed` (reported done by you; no quality gate has judged it).
    pub task: TaskView,
    /// Your record on this task type, with this completion counted.
    pub performance: PerformanceView,
    pub next: String,
}

impl TaskCompleteOutput {
    pub fn render(&self) -> String {
        format!(
            "{}\n{}.\nNext: {}.",
            self.task.line(),
            self.performance.render(),
            self.next
        )
    }
}

/// One step of a task's history.
#[derive(Debug, Serialize, JsonSchema)]
pub struct EventView {
    pub at: String,
    pub kind: String,
    pub actor: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl EventView {
    pub fn new(e: &TaskEvent) -> Self {
        Self {
            at: rfc3339_ms(e.at),
            kind: e.kind.clone(),
            actor: e.actor.clone(),
            progress: e.progress,
            note: e.note.clone(),
        }
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TaskStatusOutput {
    pub task: TaskView,
    /// Every change, oldest first.
    pub events: Vec<EventView>,
    /// Every routing decision, with each candidate's score.
    pub routing: Vec<RoutingView>,
}

impl TaskStatusOutput {
    pub fn render(&self) -> String {
        let mut text = self.task.line();
        if let Some(summary) = &self.task.summary {
            text.push_str(&format!("\nSummary: {summary}"));
        }
        for e in &self.events {
            text.push_str(&format!("\n{} {} by {}", e.at, e.kind, e.actor));
            if let Some(p) = e.progress {
                text.push_str(&format!(" ({p}%)"));
            }
            if let Some(note) = &e.note {
                text.push_str(&format!(": {note}"));
            }
        }
        for r in &self.routing {
            text.push('\n');
            text.push_str(&r.render());
        }
        text
    }
}

/// A task in a list.
#[derive(Debug, Serialize, JsonSchema)]
pub struct TaskListEntry {
    pub task_id: String,
    pub title: String,
    pub task_type: TaskType,
    pub risk_tier: u8,
    pub priority: u8,
    pub state: TaskState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assigned_to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    pub progress: u8,
    pub updated_at: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TaskListOutput {
    /// Newest first.
    pub tasks: Vec<TaskListEntry>,
    /// More tasks match than were returned.
    pub truncated: bool,
}

impl TaskListOutput {
    pub fn render(&self) -> String {
        if self.tasks.is_empty() {
            return "No tasks.".to_string();
        }
        let mut lines: Vec<String> = self
            .tasks
            .iter()
            .map(|t| {
                let who = t.holder.as_ref().or(t.assigned_to.as_ref());
                format!(
                    "{} [{}{}] {} ({}, tier {}, priority {}, {}%)",
                    t.task_id,
                    t.state.as_str(),
                    who.map(|w| format!(", {w}")).unwrap_or_default(),
                    t.title,
                    t.task_type.as_str(),
                    t.risk_tier,
                    t.priority,
                    t.progress
                )
            })
            .collect();
        if self.truncated {
            lines.push("(more tasks match; raise limit or filter by state)".to_string());
        }
        lines.join("\n")
    }
}

fn tool_error(e: TaskError) -> ToolError {
    ToolError {
        outcome: match e.kind {
            TaskErrorKind::Invalid => Outcome::Invalid,
            TaskErrorKind::Refused => Outcome::Refused,
            TaskErrorKind::Failed => Outcome::Failed,
        },
        rule_id: e.rule_id.to_string(),
        message: e.message,
        advice: e.advice,
    }
}

fn task_id(text: &str) -> Result<i64, ToolError> {
    parse_id(text).ok_or_else(|| ToolError {
        outcome: Outcome::Invalid,
        rule_id: "TASK-001".into(),
        message: format!("`{text}` is not a task id"),
        advice: "give the id task_submit or task_next returned, such as T-12".into(),
    })
}

/// What every task call needs: the store, the policy's task settings, the caller.
struct TaskContext {
    store: Arc<dyn Store>,
    settings: TaskSettings,
    caller: Caller,
}

impl TaskContext {
    fn call(&self) -> TaskCall<'_> {
        TaskCall {
            store: &*self.store,
            settings: &self.settings,
            caller: &self.caller,
            now: now_ms(),
        }
    }

    fn lease_advice(&self) -> String {
        format!(
            "report with task_update at least every {} minutes (that renews your claim) and finish with task_complete",
            self.settings.lease_minutes
        )
    }
}

impl Toolbox {
    async fn task_context(&self) -> Result<TaskContext, ToolError> {
        let store = self.store.get().await.map_err(|e| {
            ToolError::failed(
                "TASK-007",
                format!("the task store cannot be opened: {e}"),
                "nothing was changed; the operator must fix the store (.arbiter/arbiter.db)",
            )
        })?;
        Ok(TaskContext {
            store,
            settings: self.policy.load().task_settings().clone(),
            caller: current_caller(),
        })
    }

    pub async fn task_submit(&self, input: TaskSubmitInput) -> Result<TaskSubmitOutput, ToolError> {
        async {
            let spec = match input.spec {
                Some(spec) => Some(self.read_spec(spec).await?.0),
                None => None,
            };
            let cx = self.task_context().await?;
            let tiers = self.policy.load().tiers().clone();
            let submitted = cx
                .call()
                .submit(
                    Submission {
                        title: input.title,
                        description: input.description,
                        spec,
                        task_type: input.task_type,
                        priority: input.priority,
                        required: input.required_capabilities,
                    },
                    &tiers,
                )
                .await
                .map_err(tool_error)?;
            let task = &submitted.task;
            let next = match &task.assigned_agent {
                Some(agent) => format!(
                    "{agent} claims it with task_next; follow it with task_status {}",
                    task.display_id()
                ),
                None => format!(
                    "the first capable agent to call task_next claims it; follow it with task_status {}",
                    task.display_id()
                ),
            };
            Ok(TaskSubmitOutput {
                task_id: task.display_id(),
                task_type: task.task_type,
                type_confidence: task.type_confidence,
                type_source: task.type_source.clone(),
                type_signals: submitted.detection.map(|d| d.signals).unwrap_or_default(),
                risk_tier: task.risk_tier,
                tier_reason: task.tier_reason.clone(),
                spec_id: task.spec_id.clone(),
                spec_warnings: submitted.spec_warnings,
                state: task.state,
                assigned_to: task
                    .assigned_agent
                    .clone()
                    .unwrap_or_else(|| "queued".to_string()),
                routing: RoutingView::new(&submitted.routing),
                next,
            })
        }
        .await
        .inspect_err(note_error)
    }

    pub async fn agent_register(
        &self,
        input: AgentRegisterInput,
    ) -> Result<AgentRegisterOutput, ToolError> {
        async {
            let cx = self.task_context().await?;
            let registered = cx
                .call()
                .register(
                    input.name.as_deref(),
                    &input.capabilities,
                    input.max_concurrent_tasks,
                )
                .await
                .map_err(tool_error)?;
            let a = &registered.agent;
            Ok(AgentRegisterOutput {
                agent: a.name.clone(),
                capabilities: a.capabilities.clone(),
                max_concurrent_tasks: a.max_concurrent_tasks,
                registered_at: rfc3339_ms(a.registered_at),
                last_seen_at: rfc3339_ms(a.last_seen_at),
                performance: registered
                    .performance
                    .iter()
                    .map(PerformanceView::new)
                    .collect(),
                next: format!(
                    "call task_next for work; tasks are routed to you while you call the task tools at least every {} minutes",
                    cx.settings.agent_timeout_minutes
                ),
            })
        }
        .await
        .inspect_err(note_error)
    }

    pub async fn task_next(&self, _input: TaskNextInput) -> Result<TaskNextOutput, ToolError> {
        async {
            let cx = self.task_context().await?;
            let found = cx.call().next().await.map_err(tool_error)?;
            let (outcome, next) = match found.how {
                NextHow::Assigned => ("claimed_assigned", cx.lease_advice()),
                NextHow::Queue => ("claimed_from_queue", cx.lease_advice()),
                NextHow::AlreadyHeld => (
                    "already_held",
                    format!(
                        "you hold {} task(s), your limit (max_concurrent_tasks); finish one with task_complete before asking for more",
                        found.held.len()
                    ),
                ),
                NextHow::Nothing => (
                    "none",
                    "nothing is waiting that you can take; call task_next again later".to_string(),
                ),
            };
            Ok(TaskNextOutput {
                task: found.task.as_ref().map(|t| TaskView::new(t, true)),
                outcome: outcome.to_string(),
                held: found.held.iter().map(TaskRecord::display_id).collect(),
                next,
            })
        }
        .await
        .inspect_err(note_error)
    }

    pub async fn task_update(&self, input: TaskUpdateInput) -> Result<TaskOutput, ToolError> {
        async {
            let id = task_id(&input.task_id)?;
            let cx = self.task_context().await?;
            let task = cx
                .call()
                .update(id, input.progress, input.note.as_deref())
                .await
                .map_err(tool_error)?;
            Ok(TaskOutput {
                task: TaskView::new(&task, false),
                next: format!(
                    "keep going; call task_update again within {} minutes, and task_complete when done",
                    cx.settings.lease_minutes
                ),
            })
        }
        .await
        .inspect_err(note_error)
    }

    pub async fn task_complete(
        &self,
        input: TaskCompleteInput,
    ) -> Result<TaskCompleteOutput, ToolError> {
        async {
            let id = task_id(&input.task_id)?;
            let cx = self.task_context().await?;
            let (task, perf) = cx
                .call()
                .complete(id, &input.summary)
                .await
                .map_err(tool_error)?;
            Ok(TaskCompleteOutput {
                task: TaskView::new(&task, false),
                performance: PerformanceView::new(&perf),
                next: "call task_next for more work".to_string(),
            })
        }
        .await
        .inspect_err(note_error)
    }

    pub async fn task_cancel(&self, input: TaskIdInput) -> Result<TaskOutput, ToolError> {
        async {
            let id = task_id(&input.task_id)?;
            let cx = self.task_context().await?;
            let task = cx.call().cancel(id).await.map_err(tool_error)?;
            Ok(TaskOutput {
                task: TaskView::new(&task, false),
                next: format!(
                    "{} is cancelled; no agent will claim it and its holder can no longer update or complete it",
                    display_id(id)
                ),
            })
        }
        .await
        .inspect_err(note_error)
    }

    pub async fn task_status(&self, input: TaskIdInput) -> Result<TaskStatusOutput, ToolError> {
        async {
            let id = task_id(&input.task_id)?;
            let cx = self.task_context().await?;
            let status = cx.call().status(id).await.map_err(tool_error)?;
            Ok(TaskStatusOutput {
                task: TaskView::new(&status.task, true),
                events: status.events.iter().map(EventView::new).collect(),
                routing: status.routing.iter().map(RoutingView::new).collect(),
            })
        }
        .await
        .inspect_err(note_error)
    }

    pub async fn task_list(&self, input: TaskListInput) -> Result<TaskListOutput, ToolError> {
        async {
            let limit = input.limit.unwrap_or(DEFAULT_LIST);
            if !(1..=MAX_LIST).contains(&limit) {
                return Err(ToolError {
                    outcome: Outcome::Invalid,
                    rule_id: "TASK-001".into(),
                    message: format!("limit must be 1 to {MAX_LIST}, not {limit}"),
                    advice: "give a smaller limit, or filter by state".into(),
                });
            }
            let cx = self.task_context().await?;
            let (tasks, truncated) = cx
                .call()
                .list(input.state, limit)
                .await
                .map_err(tool_error)?;
            Ok(TaskListOutput {
                tasks: tasks
                    .iter()
                    .map(|t| TaskListEntry {
                        task_id: t.display_id(),
                        title: t.title.clone(),
                        task_type: t.task_type,
                        risk_tier: t.risk_tier,
                        priority: t.priority,
                        state: t.state,
                        assigned_to: t.assigned_agent.clone(),
                        holder: t.holder.clone(),
                        progress: t.progress,
                        updated_at: rfc3339_ms(t.updated_at),
                    })
                    .collect(),
                truncated,
            })
        }
        .await
        .inspect_err(note_error)
    }
}
