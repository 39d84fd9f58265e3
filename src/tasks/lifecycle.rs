//! How a task moves: submitted (typed, tiered, routed), claimed, worked,
//! completed or cancelled, and what each agent may do to it. This is the part
//! of `tasks/` that talks to the store; the decisions it applies (detection,
//! capabilities, routing) are the pure modules beside it.
//!
//! Who may do what: any agent of a tenant may submit and read its tasks; an
//! agent must register before it claims; only the holder of a claim that has
//! not lapsed may update or complete a task; only the submitter may cancel.
//! Lapsed leases are swept back to the queue whenever the queue is read, so
//! no background task is needed and a restarted server finds them too.

use std::sync::{Arc, OnceLock};

use super::detect::{Detection, detect_task_type, infer_risk_tier};
use super::gates::{GateResult, Judgement, Verdict};
use super::judge::Arbitration;
use super::registry::{MAX_CONCURRENT, check_agent_name};
use super::routing::{RoutingParams, route};
use super::{
    AgentRecord, Capabilities, PerformanceRecord, RequiredCapabilities, RoutingRecord, TaskError,
    TaskErrorKind, TaskEvent, TaskRecord, TaskState, TaskType, display_id, rfc3339_ms,
};
use crate::overrides::Caller;
use crate::policy::file::TaskSettings;
use crate::policy::spec::{Tiers, Violation, validate_spec};
use crate::store::Store;
use crate::store::tasks::{
    AgentRegistration, Claim, NewTask, TaskCancel, TaskJudgement, TaskProgress, TaskReview,
};

pub const MAX_TITLE_CHARS: usize = 200;
pub const MAX_DESCRIPTION_CHARS: usize = 20_000;
pub const MAX_NOTE_CHARS: usize = 2_000;
pub const MAX_SUMMARY_CHARS: usize = 10_000;
pub const DEFAULT_PRIORITY: u8 = 3;
/// Queued tasks read per page when looking for one the agent can take.
const QUEUE_PAGE: i64 = 100;

const MINUTE_MS: i64 = 60_000;

/// One task call: who makes it, against which store and settings, and when.
pub struct TaskCall<'a> {
    pub store: &'a dyn Store,
    pub settings: &'a TaskSettings,
    pub caller: &'a Caller,
    /// Unix milliseconds.
    pub now: i64,
}

/// Renews a claim until dropped ([`TaskCall::keep_lease`]).
pub struct LeaseKeeper(tokio::task::JoinHandle<()>);

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A task as submitted by an agent.
#[derive(Debug, Clone, Default)]
pub struct Submission {
    pub title: String,
    pub description: String,
    /// The working spec's YAML or JSON text.
    pub spec: Option<String>,
    pub task_type: Option<TaskType>,
    pub priority: Option<u8>,
    pub required: Option<RequiredCapabilities>,
}

/// What task_submit did.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub task: TaskRecord,
    pub routing: RoutingRecord,
    /// `None` when the submitter named the type.
    pub detection: Option<Detection>,
    /// The spec's warnings (errors refuse the submission).
    pub spec_warnings: Vec<Violation>,
}

/// How task_next found the task it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextHow {
    /// Routing had assigned it to the caller; now claimed.
    Assigned,
    /// Claimed from the queue.
    Queue,
    /// The caller is at its limit; this is the oldest task it holds.
    AlreadyHeld,
    /// Nothing to do.
    Nothing,
}

#[derive(Debug, Clone)]
pub struct Next {
    pub task: Option<TaskRecord>,
    pub how: NextHow,
    /// Every task the caller holds after the call.
    pub held: Vec<TaskRecord>,
    pub agent: AgentRecord,
}

/// A registered agent and its record.
#[derive(Debug, Clone)]
pub struct Registered {
    pub agent: AgentRecord,
    pub performance: Vec<PerformanceRecord>,
}

/// A task and its history.
#[derive(Debug, Clone)]
pub struct Status {
    pub task: TaskRecord,
    pub events: Vec<TaskEvent>,
    pub routing: Vec<RoutingRecord>,
}

fn invalid(message: impl Into<String>, advice: impl Into<String>) -> TaskError {
    TaskError::new(TaskErrorKind::Invalid, "TASK-001", message, advice)
}

fn agent_invalid(message: impl Into<String>, advice: impl Into<String>) -> TaskError {
    TaskError::new(TaskErrorKind::Invalid, "AGENT-002", message, advice)
}

fn store_failed(e: impl std::fmt::Display) -> TaskError {
    TaskError::new(
        TaskErrorKind::Failed,
        "TASK-007",
        format!("the task store cannot be used: {e}"),
        "nothing was changed; the operator must fix the store (`arbiter doctor` says what is wrong)",
    )
}

fn no_such_task(id: i64) -> TaskError {
    TaskError::new(
        TaskErrorKind::Failed,
        "TASK-003",
        format!("there is no task {}", display_id(id)),
        "give an id that task_submit or task_next returned; task_list shows this tenant's tasks",
    )
}

/// The seed of this process's draws when the policy sets none.
fn process_seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair().0)
}

fn check_length(field: &str, text: &str, max: usize) -> Result<(), TaskError> {
    let chars = text.chars().count();
    if chars > max {
        return Err(invalid(
            format!("{field} is {chars} characters; at most {max}"),
            format!("shorten the {field}"),
        ));
    }
    Ok(())
}

impl TaskCall<'_> {
    fn lease_ms(&self) -> i64 {
        self.settings.lease_minutes as i64 * MINUTE_MS
    }

    /// Validate, type, tier, store and route a new task.
    pub async fn submit(&self, s: Submission, tiers: &Tiers) -> Result<Submitted, TaskError> {
        let title = s.title.trim();
        if title.is_empty() {
            return Err(invalid("the title is empty", "give the task a short title"));
        }
        check_length("title", title, MAX_TITLE_CHARS)?;
        check_length("description", &s.description, MAX_DESCRIPTION_CHARS)?;
        let priority = s.priority.unwrap_or(DEFAULT_PRIORITY);
        if !(1..=5).contains(&priority) {
            return Err(invalid(
                format!("priority must be 1 (low) to 5 (urgent), not {priority}"),
                "give a priority from 1 to 5, or leave it out for 3",
            ));
        }
        let required = s
            .required
            .unwrap_or_default()
            .normalized()
            .map_err(|e| invalid(format!("required_capabilities: {e}"), "fix that entry"))?;

        let report = s.spec.as_deref().map(|text| validate_spec(text, tiers));
        if let Some(report) = &report
            && !report.is_valid()
        {
            let problems: Vec<String> = report
                .violations
                .iter()
                .filter(|v| v.is_error())
                .map(|v| v.to_string())
                .collect();
            return Err(TaskError::new(
                TaskErrorKind::Invalid,
                "TASK-002",
                format!(
                    "the working spec has {} error(s): {}",
                    problems.len(),
                    problems.join("; ")
                ),
                "fix the spec (arbiter_validate lists every problem with its fix) and submit again, or submit without a spec",
            ));
        }
        let spec = report.as_ref().and_then(|r| r.spec.as_ref());
        let (detection, task_type, confidence, type_source) = match s.task_type {
            Some(given) => (None, given, 1.0, "given"),
            None => {
                let d = detect_task_type(title, &s.description, spec);
                let (task_type, confidence) = (d.task_type, d.confidence);
                (Some(d), task_type, confidence, "detected")
            }
        };
        let (risk_tier, tier_reason) = match spec {
            Some(spec) => (spec.risk_tier, format!("the spec {} sets it", spec.id)),
            None => infer_risk_tier(task_type, title, &s.description),
        };

        let caller = self.caller;
        let params = RoutingParams {
            strategy: self.settings.strategy,
            exploration: self.settings.ucb1_exploration,
            score_weight: self.settings.ucb1_score_weight,
            seed: self.settings.seed.unwrap_or_else(process_seed),
            agent_timeout_ms: self.settings.agent_timeout_minutes as i64 * MINUTE_MS,
            now: self.now,
        };
        let router = move |input: &super::routing::RoutingInput<'_>| route(input, &params);
        let (task, routing) = self
            .store
            .task_create(
                &NewTask {
                    tenant: &caller.tenant,
                    title,
                    description: &s.description,
                    spec: s.spec.as_deref(),
                    spec_id: spec.map(|spec| spec.id.as_str()),
                    task_type,
                    type_confidence: confidence,
                    type_source,
                    risk_tier,
                    tier_reason: &tier_reason,
                    priority,
                    required: &required,
                    submitted_by: &caller.agent,
                    now: self.now,
                    assignment_ends: self.now + self.lease_ms(),
                },
                &router,
            )
            .await
            .map_err(store_failed)?;
        tracing::info!(
            task = %task.display_id(),
            task_type = task_type.as_str(),
            tier = risk_tier,
            assigned = task.assigned_agent.as_deref().unwrap_or("queued"),
            by = %caller.agent,
            "task submitted"
        );
        Ok(Submitted {
            task,
            routing,
            detection,
            spec_warnings: report.map(|r| r.violations).unwrap_or_default(),
        })
    }

    /// Register (or re-register) the caller as an agent.
    pub async fn register(
        &self,
        name: Option<&str>,
        capabilities: &Capabilities,
        max_concurrent_tasks: u32,
    ) -> Result<Registered, TaskError> {
        let me = &self.caller.agent;
        if let Some(name) = name
            && name != me
        {
            return Err(TaskError::new(
                TaskErrorKind::Refused,
                "AGENT-003",
                format!(
                    "you are connected as `{me}`; an agent registers only itself, not `{name}`"
                ),
                format!(
                    "leave name out (or give `{me}`), or connect with the client name `{name}`"
                ),
            ));
        }
        check_agent_name(me).map_err(|e| {
            agent_invalid(
                e,
                "connect with a client name (MCP clientInfo.name) that is a short label",
            )
        })?;
        let capabilities = capabilities.normalized().map_err(|e| {
            agent_invalid(
                format!("capabilities: {e}"),
                "fix that entry and register again",
            )
        })?;
        if !(1..=MAX_CONCURRENT).contains(&max_concurrent_tasks) {
            return Err(agent_invalid(
                format!(
                    "max_concurrent_tasks must be 1 to {MAX_CONCURRENT}, not {max_concurrent_tasks}"
                ),
                "give how many tasks you work on at once",
            ));
        }
        let agent = self
            .store
            .agent_register(&AgentRegistration {
                tenant: &self.caller.tenant,
                name: me,
                capabilities: &capabilities,
                max_concurrent_tasks,
                now: self.now,
            })
            .await
            .map_err(store_failed)?;
        let performance = self
            .store
            .performance_list(Some(&self.caller.tenant), Some(me))
            .await
            .map_err(store_failed)?;
        tracing::info!(agent = %me, types = ?capabilities.task_types, "agent registered");
        Ok(Registered { agent, performance })
    }

    /// The caller as a registered agent, marked seen now.
    async fn seen_agent(&self) -> Result<AgentRecord, TaskError> {
        self.store
            .agent_seen(&self.caller.tenant, &self.caller.agent, self.now)
            .await
            .map_err(store_failed)?
            .ok_or_else(|| {
                TaskError::new(
                    TaskErrorKind::Refused,
                    "AGENT-001",
                    format!("`{}` is not a registered agent", self.caller.agent),
                    "call agent_register with the task types, languages and tools you work with, then task_next",
                )
            })
    }

    /// Mark the caller seen, for a call that goes on either way (a holder is
    /// registered; if it is not, the call itself says what is wrong).
    async fn mark_seen(&self) {
        if let Err(e) = self
            .store
            .agent_seen(&self.caller.tenant, &self.caller.agent, self.now)
            .await
        {
            tracing::warn!(agent = %self.caller.agent, error = %e, "cannot record that the agent was seen");
        }
    }

    /// Send lapsed leases back to the queue.
    async fn requeue_lapsed(&self) -> Result<(), TaskError> {
        let requeued = self
            .store
            .task_requeue_lapsed(&self.caller.tenant, self.now)
            .await
            .map_err(store_failed)?;
        crate::store::tasks::log_requeued(&requeued);
        Ok(())
    }

    /// The next task for the caller: one routed to it, else the most urgent
    /// queued task it is capable of. Claims it.
    pub async fn next(&self) -> Result<Next, TaskError> {
        let agent = self.seen_agent().await?;
        self.requeue_lapsed().await?;
        let tenant = &self.caller.tenant;
        let held = self
            .store
            .task_held(tenant, &agent.name)
            .await
            .map_err(store_failed)?;
        if held.len() >= agent.max_concurrent_tasks as usize {
            super::attribution::claimed(tenant, &agent.name);
            return Ok(Next {
                task: held.first().cloned(),
                how: NextHow::AlreadyHeld,
                held,
                agent,
            });
        }
        let claim = Claim {
            tenant,
            agent: &agent.name,
            now: self.now,
            lease_ends: self.now + self.lease_ms(),
        };
        let mut claimed = self
            .store
            .task_claim_assigned(&claim)
            .await
            .map_err(store_failed)?
            .map(|t| (t, NextHow::Assigned));
        if claimed.is_none() {
            claimed = self
                .claim_from_queue(&agent, &claim)
                .await?
                .map(|t| (t, NextHow::Queue));
        }
        let Some((task, how)) = claimed else {
            return Ok(Next {
                task: None,
                how: NextHow::Nothing,
                held,
                agent,
            });
        };
        tracing::info!(task = %task.display_id(), agent = %agent.name, "task claimed");
        super::attribution::claimed(tenant, &agent.name);
        let mut held = held;
        held.push(task.clone());
        Ok(Next {
            task: Some(task),
            how,
            held,
            agent,
        })
    }

    /// Claim the first queued task the agent can do. Another agent may win a
    /// task between reading the queue and claiming it; the claim then finds
    /// it gone and the next one is tried.
    async fn claim_from_queue(
        &self,
        agent: &AgentRecord,
        claim: &Claim<'_>,
    ) -> Result<Option<TaskRecord>, TaskError> {
        let mut offset = 0;
        loop {
            let page = self
                .store
                .task_queued(claim.tenant, QUEUE_PAGE, offset)
                .await
                .map_err(store_failed)?;
            for task in &page {
                if agent
                    .capabilities
                    .gap(task.task_type, &task.required)
                    .is_some()
                {
                    continue;
                }
                if let Some(won) = self
                    .store
                    .task_claim_queued(claim, task.id)
                    .await
                    .map_err(store_failed)?
                {
                    return Ok(Some(won));
                }
            }
            if (page.len() as i64) < QUEUE_PAGE {
                return Ok(None);
            }
            offset += QUEUE_PAGE;
        }
    }

    /// Record progress on a task the caller holds, renewing its claim.
    pub async fn update(
        &self,
        id: i64,
        progress: Option<u8>,
        note: Option<&str>,
    ) -> Result<TaskRecord, TaskError> {
        if let Some(p) = progress
            && p > 100
        {
            return Err(invalid(
                format!("progress is a percentage, 0 to 100, not {p}"),
                "give the percentage done",
            ));
        }
        let note = note.map(str::trim).filter(|n| !n.is_empty());
        if let Some(note) = note {
            check_length("note", note, MAX_NOTE_CHARS)?;
        }
        self.mark_seen().await;
        let updated = self
            .store
            .task_progress(&TaskProgress {
                tenant: &self.caller.tenant,
                id,
                agent: &self.caller.agent,
                progress,
                note,
                now: self.now,
                lease_ends: self.now + self.lease_ms(),
            })
            .await
            .map_err(store_failed)?;
        match updated {
            Some(task) => {
                super::attribution::claimed(&self.caller.tenant, &self.caller.agent);
                Ok(task)
            }
            None => Err(self.why_not_held(id, "update").await),
        }
    }

    /// Keep the caller's claim on task `id` alive while `task_complete`'s
    /// gates and judges run, however long they take: it is renewed now and
    /// then every half lease, with a `progress` event saying why, until the
    /// returned guard is dropped. Without it a claim near its end could
    /// lapse mid-gates, be requeued by another call, and the verdict be lost.
    pub async fn keep_lease(&self, store: Arc<dyn Store>, id: i64) -> LeaseKeeper {
        let every = std::time::Duration::from_millis((self.lease_ms() / 2).max(1) as u64);
        self.keep_lease_every(store, id, every).await
    }

    async fn keep_lease_every(
        &self,
        store: Arc<dyn Store>,
        id: i64,
        every: std::time::Duration,
    ) -> LeaseKeeper {
        let lease_ms = self.lease_ms();
        let (tenant, agent) = (self.caller.tenant.clone(), self.caller.agent.clone());
        let renew = move || {
            let (store, tenant, agent) = (store.clone(), tenant.clone(), agent.clone());
            async move {
                let now = super::now_ms();
                let renewed = store
                    .task_progress(&TaskProgress {
                        tenant: &tenant,
                        id,
                        agent: &agent,
                        progress: None,
                        note: Some("quality gates running: claim renewed"),
                        now,
                        lease_ends: now + lease_ms,
                    })
                    .await;
                if let Err(e) = renewed {
                    tracing::warn!(task = %display_id(id), error = %e, "cannot renew the claim while the gates run");
                }
            }
        };
        renew().await;
        let handle = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                renew().await;
            }
        });
        LeaseKeeper(handle)
    }

    /// The summary task_complete was given, trimmed, or why it is refused.
    pub fn check_summary<'s>(&self, summary: &'s str) -> Result<&'s str, TaskError> {
        let summary = summary.trim();
        if summary.is_empty() {
            return Err(invalid(
                "the summary is empty",
                "say what you did and how it was checked",
            ));
        }
        check_length("summary", summary, MAX_SUMMARY_CHARS)?;
        Ok(summary)
    }

    /// The task `id` if the caller holds it with a claim that has not
    /// lapsed: checked before the gates run, so nobody else's call runs them.
    pub async fn held_by_me(&self, id: i64, verb: &str) -> Result<TaskRecord, TaskError> {
        self.mark_seen().await;
        let task = self
            .store
            .task_get(Some(&self.caller.tenant), id)
            .await
            .map_err(store_failed)?;
        match task {
            Some(t)
                if t.state == TaskState::Claimed
                    && t.holder.as_deref() == Some(self.caller.agent.as_str())
                    && t.lease_expires_at.is_some_and(|end| end > self.now) =>
            {
                Ok(t)
            }
            _ => Err(self.why_not_held(id, verb).await),
        }
    }

    /// Record the verdict on a task the caller held when it called
    /// task_complete (`self.now`), and move the task accordingly (see
    /// [`crate::store::tasks::TaskStore::task_judge`]). `judgement` is the
    /// final one (the judges' vote, when they were asked); a person signs
    /// off when the tier asks for it (`human_review`, unless the verdict is
    /// `fail`) or the judges could not settle it (whatever the verdict).
    pub async fn judge(
        &self,
        task: &TaskRecord,
        summary: &str,
        judgement: &Judgement,
        gates: &[GateResult],
        human_review: bool,
        arbitration: Option<&Arbitration>,
    ) -> Result<(TaskRecord, Option<PerformanceRecord>), TaskError> {
        let needs_review = (human_review && judgement.verdict != Verdict::Fail)
            || arbitration.is_some_and(|a| a.needs_review);
        let decided_at = super::now_ms().max(self.now);
        let done = self
            .store
            .task_judge(&TaskJudgement {
                tenant: &self.caller.tenant,
                id: task.id,
                agent: &self.caller.agent,
                summary,
                now: self.now,
                decided_at,
                lease_ends: decided_at + self.lease_ms(),
                risk_tier: task.risk_tier,
                verdict: judgement.verdict,
                needs_review,
                score: judgement.score,
                coverage: judgement.coverage,
                mutation: judgement.mutation,
                reasons: &judgement.reasons,
                gates,
                arbitration,
            })
            .await
            .map_err(store_failed)?;
        match done {
            Some((task, perf)) => {
                tracing::info!(
                    task = %task.display_id(),
                    agent = %self.caller.agent,
                    verdict = judgement.verdict.as_str(),
                    score = judgement.score,
                    state = task.state.as_str(),
                    "task judged"
                );
                Ok((task, perf))
            }
            None => Err(self.why_not_held(task.id, "complete").await),
        }
    }

    /// Why the caller could not `verb` task `id`: it does not exist, someone
    /// else holds it, the caller's claim lapsed, or it has ended.
    async fn why_not_held(&self, id: i64, verb: &str) -> TaskError {
        let task = match self.store.task_get(Some(&self.caller.tenant), id).await {
            Ok(Some(task)) => task,
            Ok(None) => return no_such_task(id),
            Err(e) => return store_failed(e),
        };
        let me = &self.caller.agent;
        let shown = task.display_id();
        match task.state {
            TaskState::Claimed if task.holder.as_deref() == Some(me.as_str()) => {
                // Sweep it now, so the queue shows it.
                let _ = self.requeue_lapsed().await;
                TaskError::new(
                    TaskErrorKind::Refused,
                    "TASK-005",
                    format!(
                        "your claim on {shown} lapsed at {} (no task_update for {} minutes); it went back to the queue",
                        task.lease_expires_at.map(rfc3339_ms).unwrap_or_default(),
                        self.settings.lease_minutes
                    ),
                    "call task_next to claim work again, and call task_update more often than the lease while you work",
                )
            }
            TaskState::Claimed => TaskError::new(
                TaskErrorKind::Refused,
                "TASK-004",
                format!(
                    "{shown} is held by {}, not by you ({me}); only its holder may {verb} it",
                    task.holder.as_deref().unwrap_or("another agent")
                ),
                "work on the tasks task_next gives you",
            ),
            TaskState::Assigned if task.assigned_agent.as_deref() == Some(me.as_str()) => {
                TaskError::new(
                    TaskErrorKind::Refused,
                    "TASK-004",
                    format!(
                        "{shown} is assigned to you but not claimed yet; only its holder may {verb} it"
                    ),
                    "claim it with task_next first",
                )
            }
            TaskState::Queued | TaskState::Assigned => TaskError::new(
                TaskErrorKind::Refused,
                "TASK-004",
                format!(
                    "{shown} is {}{}, not held by you ({me}); only its holder may {verb} it",
                    task.state.as_str(),
                    task.assigned_agent
                        .as_deref()
                        .map(|a| format!(" to {a}"))
                        .unwrap_or_default()
                ),
                "claim work with task_next first",
            ),
            TaskState::NeedsReview => TaskError::new(
                TaskErrorKind::Refused,
                "GATE-005",
                format!(
                    "{shown} waits for a person's review (risk tier 1, or the judges could not settle it)"
                ),
                "nothing more to do on it; a person runs `arbiter task review` (or `approve`/`reject`); call task_next for other work",
            ),
            TaskState::Completed | TaskState::Cancelled => TaskError::new(
                TaskErrorKind::Refused,
                "TASK-005",
                format!("{shown} is already {}", task.state.as_str()),
                "nothing more can be done on it; call task_next for other work",
            ),
        }
    }

    /// Cancel a task the caller submitted.
    pub async fn cancel(&self, id: i64) -> Result<TaskRecord, TaskError> {
        let cancelled = self
            .store
            .task_cancel(&TaskCancel {
                tenant: &self.caller.tenant,
                id,
                actor: &self.caller.agent,
                now: self.now,
            })
            .await
            .map_err(store_failed)?;
        if let Some(task) = cancelled {
            tracing::info!(task = %task.display_id(), by = %self.caller.agent, "task cancelled");
            return Ok(task);
        }
        let task = self
            .store
            .task_get(Some(&self.caller.tenant), id)
            .await
            .map_err(store_failed)?
            .ok_or_else(|| no_such_task(id))?;
        Err(if task.state == TaskState::NeedsReview {
            // The work is done and judged; only the reviewer decides now.
            TaskError::new(
                TaskErrorKind::Refused,
                "GATE-005",
                format!("{} waits for a person's review", task.display_id()),
                "a person runs `arbiter task reject ID` to turn it down",
            )
        } else if task.state.is_final() {
            TaskError::new(
                TaskErrorKind::Refused,
                "TASK-005",
                format!("{} is already {}", task.display_id(), task.state.as_str()),
                "nothing to cancel",
            )
        } else {
            TaskError::new(
                TaskErrorKind::Refused,
                "TASK-006",
                format!(
                    "only the agent that submitted {} ({}) may cancel it, not {}",
                    task.display_id(),
                    task.submitted_by,
                    self.caller.agent
                ),
                "ask its submitter to cancel it",
            )
        })
    }

    /// A task of the caller's tenant, with its history and routing decisions.
    pub async fn status(&self, id: i64) -> Result<Status, TaskError> {
        self.requeue_lapsed().await?;
        let task = self
            .store
            .task_get(Some(&self.caller.tenant), id)
            .await
            .map_err(store_failed)?
            .ok_or_else(|| no_such_task(id))?;
        let events = self.store.task_events(id).await.map_err(store_failed)?;
        let routing = self.store.task_routing(id).await.map_err(store_failed)?;
        Ok(Status {
            task,
            events,
            routing,
        })
    }

    /// The tenant's tasks, newest first; `true` when there are more than `limit`.
    pub async fn list(
        &self,
        state: Option<TaskState>,
        limit: u32,
    ) -> Result<(Vec<TaskRecord>, bool), TaskError> {
        self.requeue_lapsed().await?;
        let mut tasks = self
            .store
            .task_list(Some(&self.caller.tenant), state, i64::from(limit) + 1)
            .await
            .map_err(store_failed)?;
        let truncated = tasks.len() > limit as usize;
        tasks.truncate(limit as usize);
        Ok((tasks, truncated))
    }
}

/// A person's decision on a task waiting in `needs_review` (the operator's
/// CLI: any tenant). Approved: completed, a success on its holder's record;
/// rejected: back to the queue, a failure.
pub async fn review(
    store: &dyn Store,
    id: i64,
    approve: bool,
    by: &str,
    note: Option<&str>,
) -> Result<(TaskRecord, Option<PerformanceRecord>), TaskError> {
    let note = note.map(str::trim).filter(|n| !n.is_empty());
    if let Some(note) = note {
        check_length("note", note, MAX_NOTE_CHARS)?;
    }
    let done = store
        .task_review(&TaskReview {
            id,
            approve,
            by,
            note,
            now: super::now_ms(),
        })
        .await
        .map_err(store_failed)?;
    if let Some(done) = done {
        tracing::info!(task = %done.0.display_id(), by, approve, "task reviewed");
        return Ok(done);
    }
    let task = store
        .task_get(None, id)
        .await
        .map_err(store_failed)?
        .ok_or_else(|| no_such_task(id))?;
    Err(TaskError::new(
        TaskErrorKind::Refused,
        "GATE-005",
        format!(
            "{} is {}, not waiting for review; only a task in needs_review is (risk tier 1 after its gates, or one the judges could not settle)",
            task.display_id(),
            task.state.as_str()
        ),
        "`arbiter task show ID` shows its state and verdicts",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testdb::TestDb;

    /// Renewed at once, then every interval while the keeper lives (50 ms
    /// here instead of half the lease), and no more once it is dropped.
    #[tokio::test]
    async fn a_kept_lease_is_renewed_until_the_keeper_is_dropped() {
        let db = TestDb::sqlite();
        let store = db.store().await;
        let settings = TaskSettings::default();
        let caller = Caller {
            tenant: "default".into(),
            agent: "worker".into(),
            session_id: "s".into(),
            task_id: None,
        };
        let call = TaskCall {
            store: &*store,
            settings: &settings,
            caller: &caller,
            now: super::super::now_ms(),
        };
        let capabilities = Capabilities {
            task_types: vec![TaskType::Test],
            ..Capabilities::default()
        };
        call.register(None, &capabilities, 1).await.unwrap();
        let submitted = call
            .submit(
                Submission {
                    title: "write the tests".into(),
                    task_type: Some(TaskType::Test),
                    ..Submission::default()
                },
                &crate::policy::spec::Tiers::default(),
            )
            .await
            .unwrap();
        let id = submitted.task.id;
        call.next().await.unwrap();
        let renewals = || async {
            store
                .task_events(id)
                .await
                .unwrap()
                .iter()
                .filter(|e| e.note.as_deref() == Some("quality gates running: claim renewed"))
                .count()
        };
        let lease_of = || async {
            store
                .task_get(None, id)
                .await
                .unwrap()
                .unwrap()
                .lease_expires_at
                .unwrap()
        };
        let first_lease = lease_of().await;

        let every = std::time::Duration::from_millis(50);
        let keeper = call.keep_lease_every(store.clone(), id, every).await;
        assert_eq!(renewals().await, 1, "renewed at once");
        tokio::time::sleep(every * 8).await;
        assert!(renewals().await >= 3, "renewed again and again");
        assert!(lease_of().await > first_lease, "the claim runs longer");
        drop(keeper);
        tokio::time::sleep(every * 2).await;
        let kept = renewals().await;
        tokio::time::sleep(every * 6).await;
        assert_eq!(
            renewals().await,
            kept,
            "no renewal after the keeper is dropped"
        );
    }
}
