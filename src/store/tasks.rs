//! What the store keeps for tasks: the tasks, their events and routing
//! decisions, the agents and their records. [`TaskStore`] is part of
//! [`super::Store`]; every change that must hold together (a task and its
//! routing decision, a claim and its event, a completion and the agent's
//! record) is one transaction, and a claim succeeds only if the task is still
//! claimable when the write lock is held.

use async_trait::async_trait;

use super::StoreError;
use crate::tasks::gates::{GateResult, Verdict, VerdictRecord};
use crate::tasks::judge::{Arbitration, ArbitrationRecord};
use crate::tasks::routing::RoutingInput;
use crate::tasks::{
    AgentRecord, Capabilities, PerformanceRecord, RequiredCapabilities, RouteChoice, RoutingRecord,
    TaskEvent, TaskRecord, TaskState, TaskType,
};

/// Decides who gets a new task; the store runs it inside the transaction
/// that inserts the task, so the loads and the round-robin turn it sees are
/// the ones the insert commits against.
pub type Router<'a> = dyn Fn(&RoutingInput<'_>) -> RouteChoice + Send + Sync + 'a;

#[async_trait]
pub trait TaskStore: Send + Sync {
    /// Create or replace an agent's registration (keeping when it first
    /// registered); it counts as seen now.
    async fn agent_register(&self, reg: &AgentRegistration<'_>) -> Result<AgentRecord, StoreError>;
    /// Make the tenant's agents declared in its policy (`tasks.agents`, loaded
    /// at `now`) exactly `agents`: each is created or updated (capabilities,
    /// capacity; a new one has never been seen) and counts as declared at
    /// `now`. An agent declared before and no longer is hidden if it never
    /// called (not listed, routed to or seen until it registers or is
    /// declared again), else kept as an agent known from agent_register.
    async fn agents_declare(
        &self,
        tenant: &str,
        agents: &[AgentRegistration<'_>],
        now: i64,
    ) -> Result<(), StoreError>;
    /// Mark an agent seen at `now`; `None` when it is not registered.
    async fn agent_seen(
        &self,
        tenant: &str,
        name: &str,
        now: i64,
    ) -> Result<Option<AgentRecord>, StoreError>;
    /// Agents with their active task counts: of a tenant, or all (the CLI).
    async fn agent_list(&self, tenant: Option<&str>) -> Result<Vec<AgentStatus>, StoreError>;
    /// Records per agent and type, of a tenant (or all) and an agent (or all).
    async fn performance_list(
        &self,
        tenant: Option<&str>,
        agent: Option<&str>,
    ) -> Result<Vec<PerformanceRecord>, StoreError>;

    /// Store a new task, route it with `router`, and store the decision.
    /// Lapsed leases of the tenant go back to the queue first (logged with
    /// [`log_requeued`]), so routing sees the loads they leave.
    async fn task_create(
        &self,
        new: &NewTask<'_>,
        router: &Router<'_>,
    ) -> Result<(TaskRecord, RoutingRecord), StoreError>;
    /// One task; `tenant` None: any tenant (the operator's CLI).
    async fn task_get(
        &self,
        tenant: Option<&str>,
        id: i64,
    ) -> Result<Option<TaskRecord>, StoreError>;
    /// Tasks, newest first: of a tenant (or all), in a state (or any).
    async fn task_list(
        &self,
        tenant: Option<&str>,
        state: Option<TaskState>,
        limit: i64,
    ) -> Result<Vec<TaskRecord>, StoreError>;
    /// A task's history, oldest first.
    async fn task_events(&self, id: i64) -> Result<Vec<TaskEvent>, StoreError>;
    /// Add an event of `kind` with `note` (by `agent`, at `at`) to task `id`'s
    /// history if `agent` holds it in `tenant` (a file it changed under the
    /// task); `false` when it does not.
    async fn task_note(
        &self,
        tenant: &str,
        id: i64,
        agent: &str,
        at: i64,
        kind: &str,
        note: &str,
    ) -> Result<bool, StoreError>;
    /// A task's routing decisions, oldest first.
    async fn task_routing(&self, id: i64) -> Result<Vec<RoutingRecord>, StoreError>;
    /// Send every task of the tenant whose lease lapsed by `now` back to the
    /// queue; a lapsed claim counts as a failure of its holder.
    async fn task_requeue_lapsed(
        &self,
        tenant: &str,
        now: i64,
    ) -> Result<Vec<Requeued>, StoreError>;
    /// The tasks an agent holds (state claimed), oldest claim first.
    async fn task_held(&self, tenant: &str, agent: &str) -> Result<Vec<TaskRecord>, StoreError>;
    /// Claim the most urgent task assigned to the agent, if any.
    async fn task_claim_assigned(
        &self,
        claim: &Claim<'_>,
    ) -> Result<Option<TaskRecord>, StoreError>;
    /// Queued tasks, most urgent and oldest first: `limit` of them after the first `offset`.
    async fn task_queued(
        &self,
        tenant: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<TaskRecord>, StoreError>;
    /// Claim queued task `id`; `None` when it is no longer queued (another
    /// agent won it).
    async fn task_claim_queued(
        &self,
        claim: &Claim<'_>,
        id: i64,
    ) -> Result<Option<TaskRecord>, StoreError>;
    /// Record progress and renew the claim; `None` unless the agent holds the
    /// task with a claim that has not lapsed.
    async fn task_progress(&self, p: &TaskProgress<'_>) -> Result<Option<TaskRecord>, StoreError>;
    /// Complete a task the agent holds and count the success; `None` unless
    /// it holds it with a claim that has not lapsed.
    async fn task_complete(
        &self,
        c: &TaskCompletion<'_>,
    ) -> Result<Option<(TaskRecord, PerformanceRecord)>, StoreError>;
    /// Record the quality gates' verdict on a task the agent holds (a claim
    /// that had not lapsed at `j.now`), and move it: `fail` keeps it claimed
    /// (lease renewed) and counts a failure, unless `needs_review`: then
    /// (whatever the verdict) it waits for a person (counted when the person
    /// decides); otherwise completed, counted as a success. The judges'
    /// arbitration, if any, is stored with the verdict. `None` unless the
    /// agent holds it.
    async fn task_judge(
        &self,
        j: &TaskJudgement<'_>,
    ) -> Result<Option<(TaskRecord, Option<PerformanceRecord>)>, StoreError>;
    /// Every verdict on a task with its gates, oldest first.
    async fn task_verdicts(&self, id: i64) -> Result<Vec<VerdictRecord>, StoreError>;
    /// Every judges' arbitration on a task with each call made, oldest first.
    async fn task_arbitrations(&self, id: i64) -> Result<Vec<ArbitrationRecord>, StoreError>;
    /// A person's decision on a task in `needs_review` (any tenant: the
    /// operator's CLI): approved → completed, a success of its holder;
    /// rejected → back to the queue, a failure. `None` unless it is in
    /// `needs_review`.
    async fn task_review(
        &self,
        r: &TaskReview<'_>,
    ) -> Result<Option<(TaskRecord, Option<PerformanceRecord>)>, StoreError>;
    /// Cancel a task that has not ended, if `actor` submitted it; `None` otherwise.
    async fn task_cancel(&self, c: &TaskCancel<'_>) -> Result<Option<TaskRecord>, StoreError>;
}

/// One outcome counted in an agent's record.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub success: bool,
    /// From claim to the outcome (counted for successes only).
    pub duration_ms: i64,
    /// The verdict's score (0 to 100); `None` for a lapsed claim.
    pub score: Option<f64>,
}

/// An agent's registration.
#[derive(Debug, Clone)]
pub struct AgentRegistration<'a> {
    pub tenant: &'a str,
    pub name: &'a str,
    pub capabilities: &'a Capabilities,
    pub max_concurrent_tasks: u32,
    pub now: i64,
}

/// An agent and the tasks assigned to it or held by it.
#[derive(Debug, Clone)]
pub struct AgentStatus {
    pub agent: AgentRecord,
    pub active: u32,
}

/// A task as submitted, with its type and tier decided.
#[derive(Debug, Clone)]
pub struct NewTask<'a> {
    pub tenant: &'a str,
    pub title: &'a str,
    pub description: &'a str,
    pub spec: Option<&'a str>,
    pub spec_id: Option<&'a str>,
    pub task_type: TaskType,
    pub type_confidence: f64,
    /// `given` or `detected`.
    pub type_source: &'a str,
    pub risk_tier: u8,
    pub tier_reason: &'a str,
    pub priority: u8,
    pub required: &'a RequiredCapabilities,
    pub submitted_by: &'a str,
    pub now: i64,
    /// When an assignment lapses if its agent has not claimed the task.
    pub assignment_ends: i64,
}

/// Log tasks sent back to the queue (a lapse is worth a warning: an agent
/// went quiet).
pub fn log_requeued(requeued: &[Requeued]) {
    for r in requeued {
        tracing::warn!(
            task = %crate::tasks::display_id(r.task_id),
            agent = r.agent.as_deref().unwrap_or("-"),
            kind = r.kind,
            "lease lapsed; task back in the queue"
        );
    }
}

/// A task sent back to the queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Requeued {
    pub task_id: i64,
    /// The holder (lapsed claim) or assignee (lapsed assignment).
    pub agent: Option<String>,
    /// `lease_expired` or `assignment_expired`.
    pub kind: &'static str,
}

/// An agent claiming a task.
#[derive(Debug, Clone)]
pub struct Claim<'a> {
    pub tenant: &'a str,
    pub agent: &'a str,
    pub now: i64,
    pub lease_ends: i64,
}

#[derive(Debug, Clone)]
pub struct TaskProgress<'a> {
    pub tenant: &'a str,
    pub id: i64,
    pub agent: &'a str,
    pub progress: Option<u8>,
    pub note: Option<&'a str>,
    pub now: i64,
    pub lease_ends: i64,
}

#[derive(Debug, Clone)]
pub struct TaskCompletion<'a> {
    pub tenant: &'a str,
    pub id: i64,
    pub agent: &'a str,
    pub summary: &'a str,
    pub now: i64,
}

#[derive(Debug, Clone)]
pub struct TaskCancel<'a> {
    pub tenant: &'a str,
    pub id: i64,
    pub actor: &'a str,
    pub now: i64,
}

/// The gates' verdict on a completion.
#[derive(Debug, Clone)]
pub struct TaskJudgement<'a> {
    pub tenant: &'a str,
    pub id: i64,
    pub agent: &'a str,
    pub summary: &'a str,
    /// When task_complete was called: the claim must not have lapsed by then
    /// (gates take time; the agent is not blamed for it).
    pub now: i64,
    /// When the gates finished.
    pub decided_at: i64,
    /// The renewed claim's end, for a `fail` (the holder fixes and retries).
    pub lease_ends: i64,
    pub risk_tier: u8,
    pub verdict: Verdict,
    /// A person must sign off: a tier that asks for it, or the judges.
    pub needs_review: bool,
    pub score: f64,
    pub coverage: Option<f64>,
    pub mutation: Option<f64>,
    pub reasons: &'a [String],
    pub gates: &'a [GateResult],
    /// What the model judges said and how it was combined.
    pub arbitration: Option<&'a Arbitration>,
}

/// A person approving or rejecting a task in `needs_review`.
#[derive(Debug, Clone)]
pub struct TaskReview<'a> {
    pub id: i64,
    pub approve: bool,
    pub by: &'a str,
    pub note: Option<&'a str>,
    pub now: i64,
}
