//! The task tools: `task_submit`, `agent_register`, `task_next`,
//! `task_update`, `task_complete`, `task_cancel`, `task_status`,
//! `task_list`. Each turns its typed input into a call of
//! [`crate::tasks::lifecycle`] for the caller's tenant and identity, and its
//! result into a typed output with a rendering for the model. The rules
//! themselves (who may do what, routing, detection) live in `tasks/`.
//!
//! `task_complete` runs the quality gates of the task's risk tier (policy
//! `tasks.gates`) one after another, each through `run_terminal_cmd`'s own
//! path (policy check, sandbox, timeout), and stores the verdict
//! ([`crate::tasks::gates`] does the arithmetic). With model judges in the
//! policy (`tasks.judge`), a verdict that is not `fail` is then put to them
//! ([`crate::tasks::judge_client`]) and the vote decides.

use std::sync::Arc;

use rmcp::schemars::{self, JsonSchema};
use serde::{Deserialize, Serialize};

use super::terminal::{CommandSession, RunTerminalCmdInput};
use super::{Outcome, ToolError, Toolbox, current_caller, note_detail, note_error, with_call_note};
use crate::overrides::Caller;
use crate::policy::file::JudgeSettings;
use crate::policy::file::{GateSpec, TaskSettings};
use crate::policy::spec::Violation;
use crate::policy::spec::{Tiers, validate_spec};
use crate::store::Store;
use crate::tasks::gates::{
    self, GateMark, GateResult, Judgement, Measure, Verdict, VerdictRecord, tail,
};
use crate::tasks::judge::{self, Arbitration, ArbitrationRecord, Brief};
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
    /// Only tasks in this state: queued, assigned, claimed, needs_review, completed or cancelled.
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
    /// queued, assigned, claimed, needs_review, completed or cancelled.
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

/// Candidates a task_submit reply shows; the rest are counted (task_status
/// and `arbiter task show` list every one).
const REPLY_CANDIDATES: usize = 5;

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
    /// task_submit shows the first few; task_status shows every one.
    pub candidates: Vec<CandidateScore>,
    /// Every candidate weighed: capable and available ones, and excluded ones.
    pub eligible_count: usize,
    pub excluded_count: usize,
    /// Candidates not listed here (task_status lists them).
    #[serde(skip_serializing_if = "is_zero")]
    pub candidates_omitted: usize,
    pub decided_at: String,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl RoutingView {
    /// `limit`: at most this many candidates, best first.
    fn new(r: &RoutingRecord, limit: Option<usize>) -> Self {
        let all = &r.choice.candidates;
        let shown = limit.unwrap_or(all.len()).min(all.len());
        let eligible_count = all.iter().filter(|c| c.eligible).count();
        Self {
            strategy: r.choice.strategy.as_str().to_string(),
            seed: r.choice.seed,
            chosen: r.choice.chosen.clone(),
            rationale: r.choice.rationale.clone(),
            candidates: all[..shown].to_vec(),
            eligible_count,
            excluded_count: all.len() - eligible_count,
            candidates_omitted: all.len() - shown,
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
        if self.candidates_omitted > 0 {
            text.push_str(&format!(
                "\n… and {} more candidate(s) (task_status lists every one)",
                self.candidates_omitted
            ));
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
    /// Outcomes that carried a verdict (gates and judges).
    pub scored: u32,
    /// Mean verdict score, 0 to 100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_score: Option<f64>,
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
            scored: p.stats.scored,
            mean_score: p.stats.mean_score().map(|m| (m * 100.0).round() / 100.0),
        }
    }

    pub fn render(&self) -> String {
        let score = self
            .mean_score
            .map(|m| format!(", mean verdict score {m:.1}"))
            .unwrap_or_default();
        format!(
            "{} on {}: {}/{} succeeded{score}",
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

/// The quality gates' verdict on one task_complete.
#[derive(Debug, Serialize, JsonSchema)]
pub struct VerdictView {
    /// `pass`, `conditional` or `fail`.
    pub verdict: Verdict,
    /// 0 to 100: 0.4 x gates passed + 0.3 x coverage + 0.3 x mutation (each against the tier's minimum, capped at 1).
    pub score: f64,
    pub risk_tier: u8,
    /// The lowest coverage and mutation read, in percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage_percent: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mutation_percent: Option<f64>,
    /// What shaped the verdict.
    pub reasons: Vec<String>,
    pub gates: Vec<GateResult>,
    pub agent: String,
    pub decided_at: String,
    /// `approved` or `rejected` by a person (risk tier 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub review: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reviewed_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub review_note: Option<String>,
    /// The model judges' answers and how they were combined with the gates
    /// (absent when no judge was asked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judges: Option<Arbitration>,
}

fn percent(fraction: Option<f64>) -> Option<f64> {
    fraction.map(|f| (f * 10_000.0).round() / 100.0)
}

impl VerdictView {
    pub fn new(v: &VerdictRecord) -> Self {
        Self {
            verdict: v.verdict,
            score: v.score,
            risk_tier: v.risk_tier,
            coverage_percent: percent(v.coverage),
            mutation_percent: percent(v.mutation),
            reasons: v.reasons.clone(),
            gates: v.gates.clone(),
            agent: v.agent.clone(),
            decided_at: rfc3339_ms(v.decided_at),
            review: v.review.clone(),
            reviewed_by: v.reviewed_by.clone(),
            review_note: v.review_note.clone(),
            judges: None,
        }
    }

    /// With the judges' arbitration of this verdict; the request bodies
    /// (the whole prompt, again per try) only when `with_requests`.
    pub fn with_judges(mut self, arbitration: Option<Arbitration>, with_requests: bool) -> Self {
        self.judges = arbitration.map(|mut a| {
            if !with_requests {
                for call in a.exchanges.iter_mut().flat_map(|e| e.calls.iter_mut()) {
                    call.request = None;
                }
            }
            a
        });
        self
    }

    /// Each verdict with its arbitration, if any.
    pub fn all(
        verdicts: &[VerdictRecord],
        arbitrations: &[ArbitrationRecord],
        with_requests: bool,
    ) -> Vec<Self> {
        verdicts
            .iter()
            .map(|v| {
                let a = arbitrations
                    .iter()
                    .find(|a| a.verdict_id == v.id)
                    .map(|a| a.arbitration.clone());
                Self::new(v).with_judges(a, with_requests)
            })
            .collect()
    }

    pub fn render(&self) -> String {
        let mut text = format!(
            "Verdict: {} (score {:.2}, tier {}): {}.",
            self.verdict.as_str(),
            self.score,
            self.risk_tier,
            self.reasons.join("; ")
        );
        if let Some(review) = &self.review {
            text.push_str(&format!(
                " Review: {review} by {}{}.",
                self.reviewed_by.as_deref().unwrap_or("?"),
                self.review_note
                    .as_deref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            ));
        }
        for g in &self.gates {
            text.push_str(&format!(
                "\n- {} [{}{}] `{}`: {} ({} ms)",
                g.name,
                if g.passed { "passed" } else { "failed" },
                g.rule_id
                    .as_deref()
                    .map(|r| format!(", {r}"))
                    .unwrap_or_default(),
                g.command,
                g.detail,
                g.duration_ms
            ));
            if !g.passed && !g.output_tail.trim().is_empty() {
                text.push_str(&format!("\n  output (end): {}", g.output_tail.trim()));
            }
        }
        if let Some(a) = &self.judges {
            for e in &a.exchanges {
                let (p, c) = e.tokens();
                let said = match (&e.answer, &e.rule_id) {
                    (Some(x), _) => format!(
                        "{} (score {:.0}, confidence {:.2})",
                        x.verdict.as_str(),
                        x.score,
                        x.confidence
                    ),
                    (None, rule) => format!(
                        "no valid answer [{}]: {}",
                        rule.as_deref().unwrap_or("-"),
                        e.error.as_deref().unwrap_or("")
                    ),
                };
                text.push_str(&format!(
                    "\n- judge {} ({} {}): {said}; {} call(s), {p}+{c} tokens, cost {:.6}",
                    e.judge,
                    e.api,
                    e.model,
                    e.calls.len(),
                    e.cost()
                ));
            }
        }
        text
    }
}

/// Tokens and cost of every judge call on a task.
#[derive(Debug, Default, Serialize, JsonSchema)]
pub struct JudgeUsage {
    pub calls: u32,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// At the judges' per-1k-token prices.
    pub cost: f64,
}

impl JudgeUsage {
    pub fn of(arbitrations: &[ArbitrationRecord]) -> Option<Self> {
        if arbitrations.is_empty() {
            return None;
        }
        let mut u = JudgeUsage::default();
        for a in arbitrations {
            let (p, c, cost) = a.arbitration.usage();
            u.prompt_tokens += p;
            u.completion_tokens += c;
            u.cost += cost;
            u.calls += a
                .arbitration
                .exchanges
                .iter()
                .map(|e| e.calls.len() as u32)
                .sum::<u32>();
        }
        u.cost = (u.cost * 1e6).round() / 1e6;
        Some(u)
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TaskCompleteOutput {
    /// The task after the verdict: `completed` (pass or conditional), `needs_review` (risk tier 1: a person signs off), or still `claimed` by you (fail: fix it and call task_complete again).
    pub task: TaskView,
    pub verdict: VerdictView,
    /// Your record on this task type with this outcome counted (absent while a person reviews it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub performance: Option<PerformanceView>,
    pub next: String,
}

impl TaskCompleteOutput {
    pub fn render(&self) -> String {
        let mut text = format!("{}\n{}", self.task.line(), self.verdict.render());
        if let Some(p) = &self.performance {
            text.push_str(&format!("\n{}.", p.render()));
        }
        text.push_str(&format!("\nNext: {}.", self.next));
        text
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
    /// Every quality-gate verdict (one per task_complete), oldest first.
    pub verdicts: Vec<VerdictView>,
    /// Tokens and cost of the model judges on this task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judge_usage: Option<JudgeUsage>,
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
        for v in &self.verdicts {
            text.push('\n');
            text.push_str(&v.render());
        }
        if let Some(u) = &self.judge_usage {
            text.push_str(&format!(
                "\nJudges: {} call(s), {} prompt + {} completion tokens, cost {:.6}.",
                u.calls, u.prompt_tokens, u.completion_tokens, u.cost
            ));
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

/// Put a task whose gates did not fail to every judge at once, and combine
/// their answers with the gates' verdict.
async fn consult_judges(
    task: &TaskRecord,
    summary: &str,
    judgement: &Judgement,
    gates: &[GateResult],
    changes: Option<&str>,
    settings: &JudgeSettings,
    tiers: &Tiers,
) -> Arbitration {
    let acceptance = task
        .spec
        .as_deref()
        .and_then(|text| validate_spec(text, tiers).spec)
        .map(|spec| spec.acceptance)
        .unwrap_or_default();
    let (system, user) = judge::prompt(
        settings.rubric.as_deref(),
        &Brief {
            task,
            summary,
            acceptance: &acceptance,
            judgement,
            gates,
            changes,
        },
    );
    let asks = settings
        .judges
        .iter()
        .map(|spec| crate::tasks::judge_client::ask(spec, settings, &system, &user));
    let exchanges = futures::future::join_all(asks).await;
    judge::combine(
        judgement.verdict,
        settings.gates_weight,
        exchanges,
        settings.min_confidence,
    )
}

/// Called as each gate starts and ends: (step, of steps, what happened).
/// Steps go 1, 2, ... up to `2 x gates`, so each notification's progress
/// is larger than the last, as MCP asks.
pub type GateProgressFn = Box<dyn FnMut(u32, u32, String) + Send>;

fn store_failed(e: impl std::fmt::Display) -> TaskError {
    TaskError::new(
        TaskErrorKind::Failed,
        "TASK-007",
        format!("the task store cannot be used: {e}"),
        "nothing was changed; the operator must fix the store (`arbiter doctor` says what is wrong)",
    )
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
                "nothing was changed; the operator must fix the store (`arbiter doctor` says what is wrong)",
            )
        })?;
        let caller = current_caller();
        let policy = self.policy.load_full();
        if let Err(e) = self
            .declared_agents
            .apply(&*store, &caller.tenant, &policy, now_ms())
            .await
        {
            // The call goes on: routing sees the registry as it is.
            tracing::warn!(error = %e, "cannot register the agents declared in the policy");
        }
        Ok(TaskContext {
            store,
            settings: policy.task_settings().clone(),
            caller,
        })
    }

    /// Keep the agents declared in the policy in the store: at start and
    /// after each reload (a reload swaps the policy; this notices the new
    /// one). Runs until the process ends.
    pub async fn follow_declared_agents(self: Arc<Self>, tenant: String) {
        loop {
            let policy = self.policy.load_full();
            if self.declared_agents.worth_applying(&policy).await {
                match self.store.get().await {
                    Ok(store) => {
                        if let Err(e) = self
                            .declared_agents
                            .apply(&*store, &tenant, &policy, now_ms())
                            .await
                        {
                            tracing::warn!(error = %e, "cannot register the agents declared in the policy; retrying");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot open the store to register the agents declared in the policy");
                    }
                }
            }
            tokio::time::sleep(crate::policy::file::WATCH_INTERVAL).await;
        }
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
                routing: RoutingView::new(&submitted.routing, Some(REPLY_CANDIDATES)),
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
        session: CommandSession<'_>,
        mut progress: Option<GateProgressFn>,
    ) -> Result<TaskCompleteOutput, ToolError> {
        let id = task_id(&input.task_id).inspect_err(note_error)?;
        let cx = self.task_context().await.inspect_err(note_error)?;
        let call = cx.call();
        let summary = call
            .check_summary(&input.summary)
            .map_err(tool_error)
            .inspect_err(note_error)?;
        let task = call
            .held_by_me(id, "complete")
            .await
            .map_err(tool_error)
            .inspect_err(note_error)?;
        let policy = self.policy.load();
        let specs = cx.settings.gates_for(task.risk_tier).to_vec();
        let has_judges = !cx.settings.judge.judges.is_empty();
        // Gates and judges can outlast what is left of the claim.
        let _lease = if specs.is_empty() && !has_judges {
            None
        } else {
            Some(call.keep_lease(cx.store.clone(), id).await)
        };
        let total = specs.len() as u32;
        let mut results = Vec::with_capacity(specs.len());
        let mut marks = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            let i = i as u32;
            if let Some(p) = progress.as_mut() {
                p(
                    2 * i + 1,
                    2 * total,
                    format!(
                        "gate {}/{total} `{}` started: {}",
                        i + 1,
                        spec.name,
                        spec.command
                    ),
                );
            }
            let (result, mark) = self.run_gate(spec, &task, &session).await;
            if let Some(p) = progress.as_mut() {
                p(
                    2 * i + 2,
                    2 * total,
                    format!(
                        "gate {}/{total} `{}` {}: {}",
                        i + 1,
                        spec.name,
                        if result.passed { "passed" } else { "failed" },
                        result.detail
                    ),
                );
            }
            results.push(result);
            marks.push(mark);
        }
        let tier = policy.tiers().get(task.risk_tier);
        let (min_coverage, min_mutation, human_review) = tier
            .map(|t| (t.min_coverage, t.min_mutation, t.human_review))
            .unwrap_or((0.0, 0.0, false));
        let mut judgement: Judgement = gates::judge(&marks, min_coverage, min_mutation);
        // The judges are asked only about work the gates did not fail: a
        // failed gate is a fact no model can talk away.
        let judging = &cx.settings.judge;
        let arbitration = if judging.judges.is_empty() || judgement.verdict == Verdict::Fail {
            None
        } else {
            if let Some(p) = progress.as_mut() {
                p(
                    2 * total + 1,
                    2 * total + 2,
                    format!("asking {} judge(s)", judging.judges.len()),
                );
            }
            let changes = self.changes_under(&cx, &task).await;
            let a = consult_judges(
                &task,
                summary,
                &judgement,
                &results,
                changes.as_deref(),
                judging,
                policy.tiers(),
            )
            .await;
            if let Some(p) = progress.as_mut() {
                p(
                    2 * total + 2,
                    2 * total + 2,
                    format!(
                        "judges: {} with {:.0}% of the vote{}",
                        a.verdict.as_str(),
                        a.confidence * 100.0,
                        if a.needs_review {
                            "; a person must review"
                        } else {
                            ""
                        }
                    ),
                );
            }
            judgement.verdict = a.verdict;
            judgement.reasons.extend(a.reasons.iter().cloned());
            Some(a)
        };
        let (done, perf) = call
            .judge(
                &task,
                summary,
                &judgement,
                &results,
                human_review,
                arbitration.as_ref(),
            )
            .await
            .map_err(tool_error)
            .inspect_err(note_error)?;
        note_detail(format!(
            "verdict {} (score {:.2}) on {}: {}{}",
            judgement.verdict.as_str(),
            judgement.score,
            done.display_id(),
            results
                .iter()
                .map(|r| format!(
                    "{} {}{}",
                    r.name,
                    if r.passed { "passed" } else { "failed" },
                    r.rule_id
                        .as_deref()
                        .map(|id| format!(" [{id}]"))
                        .unwrap_or_default()
                ))
                .collect::<Vec<_>>()
                .join(", "),
            arbitration
                .as_ref()
                .map(|a| format!(
                    "; judges {} ({:.0}%){}",
                    a.exchanges
                        .iter()
                        .map(|e| format!(
                            "{} {}",
                            e.judge,
                            e.answer
                                .as_ref()
                                .map(|x| x.verdict.as_str())
                                .or(e.rule_id.as_deref())
                                .unwrap_or("-")
                        ))
                        .collect::<Vec<_>>()
                        .join(", "),
                    a.confidence * 100.0,
                    if a.needs_review { ", needs review" } else { "" }
                ))
                .unwrap_or_default()
        ));
        let next = match done.state {
            TaskState::NeedsReview if arbitration.as_ref().is_some_and(|a| a.needs_review) => {
                format!(
                    "the judges could not settle {}: it waits for a person (`arbiter task review {}`); call task_next for other work",
                    done.display_id(),
                    done.display_id()
                )
            }
            TaskState::NeedsReview => format!(
                "{} waits for a person's sign-off (risk tier 1: `arbiter task approve {}`); call task_next for other work",
                done.display_id(),
                done.display_id()
            ),
            TaskState::Claimed => format!(
                "you still hold {}: fix what the verdict shows and call task_complete again (your claim was renewed for {} minutes)",
                done.display_id(),
                cx.settings.lease_minutes
            ),
            _ => "call task_next for more work".to_string(),
        };
        let verdict = VerdictRecord {
            id: 0,
            task_id: done.id,
            agent: cx.caller.agent.clone(),
            risk_tier: done.risk_tier,
            verdict: judgement.verdict,
            score: judgement.score,
            coverage: judgement.coverage,
            mutation: judgement.mutation,
            reasons: judgement.reasons.clone(),
            decided_at: done.updated_at,
            review: None,
            reviewed_by: None,
            review_note: None,
            reviewed_at: None,
            gates: results,
        };
        Ok(TaskCompleteOutput {
            task: TaskView::new(&done, false),
            verdict: VerdictView::new(&verdict).with_judges(arbitration, false),
            performance: perf.as_ref().map(PerformanceView::new),
            next,
        })
    }

    /// What the task's holder did under it, from the audit records
    /// attributed to the task (the journal is indexed first: the newest
    /// calls may not be in the store yet): one line per file or terminal
    /// call, with its redacted arguments and outcome. `None` when nothing is
    /// known.
    async fn changes_under(&self, cx: &TaskContext, task: &TaskRecord) -> Option<String> {
        const MAX_LINES: usize = 100;
        let tenant = &cx.caller.tenant;
        let journal = self
            .root
            .path()
            .join(crate::exec::workspace::STATE_DIR)
            .join(crate::server::tenants::journal_file_name(tenant));
        if let Err(e) = crate::store::journal::index_journal(&*cx.store, tenant, &journal).await {
            tracing::warn!(error = %e, "cannot index the audit journal; the judge sees the calls indexed so far");
        }
        let records = match cx.store.audit_for_task(tenant, task.id).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the task's audit records");
                return None;
            }
        };
        let lines: Vec<String> = records
            .iter()
            .filter(|r| !r.tool.starts_with("task_"))
            .map(|r| format!("- {} {} → {}", r.tool, r.args_redacted, r.outcome))
            .collect();
        // The files written or edited under the task, with their diffs.
        let changed = match cx.store.task_events(task.id).await {
            Ok(events) => {
                crate::tasks::changes::describe(&crate::tasks::changes::from_events(&events))
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the task's changes");
                None
            }
        };
        if lines.is_empty() && changed.is_none() {
            return None;
        }
        let mut text = String::from("Calls made under the task:\n");
        text.push_str(
            &lines
                .iter()
                .take(MAX_LINES)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n"),
        );
        if lines.len() > MAX_LINES {
            text.push_str(&format!("\n… and {} more call(s)", lines.len() - MAX_LINES));
        }
        if let Some(changed) = changed {
            text = format!("{changed}\n{text}");
        }
        Some(text)
    }

    /// Run one gate through run_terminal_cmd's path (policy, sandbox,
    /// timeout) and read its result. Its own refusals and failures are kept
    /// out of task_complete's audit note (`with_call_note`): they are the
    /// gate's result, not task_complete's.
    async fn run_gate(
        &self,
        spec: &GateSpec,
        task: &TaskRecord,
        session: &CommandSession<'_>,
    ) -> (GateResult, GateMark) {
        let measure = match (&spec.coverage_pattern, &spec.mutation_pattern) {
            (Some(p), _) => Some((Measure::Coverage, p.value.as_str())),
            (None, Some(p)) => Some((Measure::Mutation, p.value.as_str())),
            (None, None) => None,
        };
        let started = std::time::Instant::now();
        let input = RunTerminalCmdInput {
            command: spec.command.clone(),
            is_background: Some(false),
            explanation: Some(format!(
                "quality gate `{}` of {}",
                spec.name,
                task.display_id()
            )),
            timeout_ms: spec.timeout_ms,
            cwd: None,
        };
        let sub = CommandSession {
            jobs: session.jobs,
            tracker: session.tracker,
            cancel: session.cancel.clone(),
        };
        let (ran, _) = with_call_note(self.run_terminal_cmd(input, sub, None)).await;
        let mut result = GateResult {
            name: spec.name.clone(),
            command: spec.command.clone(),
            passed: false,
            rule_id: None,
            policy_rule: None,
            exit_code: None,
            duration_ms: started.elapsed().as_millis() as i64,
            measured: None,
            detail: String::new(),
            output_tail: String::new(),
        };
        let fail = |r: &mut GateResult, rule: &str, detail: String| {
            r.rule_id = Some(rule.to_string());
            r.detail = detail;
        };
        match ran {
            Ok(out) => {
                result.exit_code = out.exit_code;
                result.duration_ms = out.duration_ms as i64;
                let printed = format!("{}{}", out.stdout, out.stderr);
                result.output_tail = tail(&printed);
                match (out.exit_code, measure) {
                    (Some(0), None) => {
                        result.passed = true;
                        result.detail = "exited 0".into();
                    }
                    (Some(0), Some((which, pattern))) => {
                        let read = gates::check_pattern(pattern)
                            .ok()
                            .and_then(|re| gates::read_percentage(&re, &printed));
                        match read {
                            Some(v) => {
                                result.passed = true;
                                result.measured = Some(v);
                                result.detail = format!(
                                    "exited 0; {} {:.1}%",
                                    if which == Measure::Coverage {
                                        "coverage"
                                    } else {
                                        "mutation score"
                                    },
                                    v * 100.0
                                );
                            }
                            None => fail(
                                &mut result,
                                "GATE-004",
                                format!("exited 0 but printed no percentage matching `{pattern}`"),
                            ),
                        }
                    }
                    (code, _) => fail(
                        &mut result,
                        "GATE-001",
                        format!("exited with code {}", code.unwrap_or(-1)),
                    ),
                }
            }
            Err(e) => match e.output {
                Some(out) => {
                    result.exit_code = out.exit_code;
                    result.duration_ms = out.duration_ms as i64;
                    result.output_tail = tail(&format!("{}{}", out.stdout, out.stderr));
                    if out.timed_out {
                        fail(
                            &mut result,
                            "GATE-003",
                            format!("timed out after {} ms and was killed", out.timeout_ms),
                        );
                    } else {
                        fail(
                            &mut result,
                            "GATE-001",
                            format!("did not exit by itself: {}", e.error.message),
                        );
                    }
                }
                None if e.error.outcome == Outcome::Refused => {
                    result.policy_rule = Some(e.error.rule_id.clone());
                    fail(
                        &mut result,
                        "GATE-002",
                        format!(
                            "refused by the policy [{}]: {}",
                            e.error.rule_id, e.error.message
                        ),
                    );
                }
                None => fail(
                    &mut result,
                    "GATE-003",
                    format!("could not run [{}]: {}", e.error.rule_id, e.error.message),
                ),
            },
        }
        let mark = GateMark {
            passed: result.passed,
            measures: measure.map(|(which, _)| which),
            measured: result.measured,
        };
        (result, mark)
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
            let verdicts = cx
                .store
                .task_verdicts(id)
                .await
                .map_err(|e| tool_error(store_failed(e)))?;
            let arbitrations = cx
                .store
                .task_arbitrations(id)
                .await
                .map_err(|e| tool_error(store_failed(e)))?;
            Ok(TaskStatusOutput {
                task: TaskView::new(&status.task, true),
                events: status.events.iter().map(EventView::new).collect(),
                routing: status
                    .routing
                    .iter()
                    .map(|r| RoutingView::new(r, None))
                    .collect(),
                verdicts: VerdictView::all(&verdicts, &arbitrations, false),
                judge_usage: JudgeUsage::of(&arbitrations),
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
