//! [`TaskStore`] on PostgreSQL. Every request is one transaction with the
//! tenant set first (see `postgres.rs`). A claim is an UPDATE whose WHERE
//! names the state it claims from: under READ COMMITTED a second claimer
//! waits for the first and then finds the row no longer matches, so a zero
//! row count means another agent won. Claiming "the next assigned task" picks
//! it with `FOR UPDATE SKIP LOCKED`, so concurrent claimers do not queue on
//! one row. Creating a task (routing reads every agent's load) and requeueing
//! lapsed tasks take a per-tenant advisory lock, as SQLite's write lock
//! serializes them there.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row, Transaction};

use super::postgres::rows;
use super::tasks::{
    AgentRegistration, AgentStatus, Claim, NewTask, Outcome, Requeued, Router, TaskCancel,
    TaskCompletion, TaskJudgement, TaskProgress, TaskReview, TaskStore, log_requeued,
};
use super::{PgStore, StoreError};
use crate::tasks::gates::{GateResult, Verdict, VerdictRecord};
use crate::tasks::judge::{Arbitration, ArbitrationRecord, Exchange, JudgeCall, Vote};
use crate::tasks::routing::{
    AgentSnapshot, RoutingInput, RoutingStrategy, parse_stored_candidates, stored_candidates,
};
use crate::tasks::{
    AgentRecord, CandidateScore, Capabilities, PerformanceRecord, RequiredCapabilities,
    RouteChoice, RoutingRecord, TaskEvent, TaskRecord, TaskState, TaskType, TypeStats,
};

/// Every task column, in [`task_from_row`]'s order.
macro_rules! task_columns {
    () => {
        "id, tenant, title, description, spec, spec_id, task_type, type_confidence, type_source, \
         risk_tier, tier_reason, priority, required, state, assigned_agent, holder, \
         lease_expires_at, progress, attempts, submitted_by, summary, created_at, updated_at, \
         claimed_at, completed_at"
    };
}

/// Every agent column, and its active count (`a` is the agent's row).
macro_rules! agent_columns {
    () => {
        "a.tenant, a.name, a.task_types, a.languages, a.tools, a.max_concurrent_tasks, \
         a.registered_at, a.last_seen_at, a.declared_at, \
         (SELECT COUNT(*) FROM tasks t WHERE t.tenant = a.tenant AND t.state = 'claimed' AND t.holder = a.name) \
         + (SELECT COUNT(*) FROM tasks t WHERE t.tenant = a.tenant AND t.state = 'assigned' AND t.assigned_agent = a.name) \
         AS active"
    };
}

/// Not an agent dropped from the policy before it ever called (kept, hidden).
macro_rules! visible {
    () => {
        "(a.declared_at IS NOT NULL OR a.last_seen_at > 0)"
    };
}

fn decode(message: String) -> sqlx::Error {
    sqlx::Error::Decode(message.into())
}

fn json_column<T: serde::de::DeserializeOwned>(
    row: &PgRow,
    column: &str,
) -> Result<T, sqlx::Error> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| decode(format!("{column}: {e}")))
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Database(e.to_string()))
}

fn task_type_column(row: &PgRow, column: &str) -> Result<TaskType, sqlx::Error> {
    let text: String = row.try_get(column)?;
    TaskType::parse(&text).ok_or_else(|| decode(format!("unknown task type {text:?}")))
}

fn task_from_row(row: &PgRow) -> Result<TaskRecord, sqlx::Error> {
    let state: String = row.try_get("state")?;
    Ok(TaskRecord {
        id: row.try_get("id")?,
        tenant: row.try_get("tenant")?,
        title: row.try_get("title")?,
        description: row.try_get("description")?,
        spec: row.try_get("spec")?,
        spec_id: row.try_get("spec_id")?,
        task_type: task_type_column(row, "task_type")?,
        type_confidence: row.try_get("type_confidence")?,
        type_source: row.try_get("type_source")?,
        risk_tier: row.try_get::<i64, _>("risk_tier")?.clamp(1, 3) as u8,
        tier_reason: row.try_get("tier_reason")?,
        priority: row.try_get::<i64, _>("priority")?.clamp(1, 5) as u8,
        required: json_column::<RequiredCapabilities>(row, "required")?,
        state: TaskState::parse(&state)
            .ok_or_else(|| decode(format!("unknown task state {state:?}")))?,
        assigned_agent: row.try_get("assigned_agent")?,
        holder: row.try_get("holder")?,
        lease_expires_at: row.try_get("lease_expires_at")?,
        progress: row.try_get::<i64, _>("progress")?.clamp(0, 100) as u8,
        attempts: row.try_get::<i64, _>("attempts")?.max(0) as u32,
        submitted_by: row.try_get("submitted_by")?,
        summary: row.try_get("summary")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        claimed_at: row.try_get("claimed_at")?,
        completed_at: row.try_get("completed_at")?,
    })
}

fn agent_from_row(row: &PgRow) -> Result<AgentRecord, sqlx::Error> {
    Ok(AgentRecord {
        tenant: row.try_get("tenant")?,
        name: row.try_get("name")?,
        capabilities: Capabilities {
            task_types: json_column(row, "task_types")?,
            languages: json_column(row, "languages")?,
            tools: json_column(row, "tools")?,
        },
        max_concurrent_tasks: row.try_get::<i64, _>("max_concurrent_tasks")?.max(1) as u32,
        registered_at: row.try_get("registered_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        declared_at: row.try_get("declared_at")?,
    })
}

fn stats_from_row(row: &PgRow, prefix: &str) -> Result<TypeStats, sqlx::Error> {
    let count = |name: &str| -> Result<u32, sqlx::Error> {
        Ok(row
            .try_get::<i64, _>(format!("{prefix}{name}").as_str())?
            .max(0) as u32)
    };
    Ok(TypeStats {
        attempts: count("attempts")?,
        successes: count("successes")?,
        failures: count("failures")?,
        duration_ms: row.try_get(format!("{prefix}duration_ms").as_str())?,
        scored: count("scored")?,
        score_sum: row.try_get(format!("{prefix}score_sum").as_str())?,
    })
}

fn performance_from_row(row: &PgRow) -> Result<PerformanceRecord, sqlx::Error> {
    Ok(PerformanceRecord {
        tenant: row.try_get("tenant")?,
        agent: row.try_get("agent")?,
        task_type: task_type_column(row, "task_type")?,
        stats: stats_from_row(row, "")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Finish a claim: the row the claiming UPDATE returned (none: someone else
/// won), its `claimed` event, and the commit.
async fn record_claim(
    mut tx: Transaction<'static, Postgres>,
    row: Option<PgRow>,
    claim: &Claim<'_>,
    how: &str,
) -> Result<Option<TaskRecord>, StoreError> {
    let Some(row) = row else {
        return Ok(None);
    };
    let task = task_from_row(&row)?;
    add_event(
        &mut tx,
        task.id,
        claim.now,
        "claimed",
        claim.agent,
        None,
        Some(how),
    )
    .await?;
    tx.commit().await?;
    Ok(Some(task))
}

/// Add an event to a task's history.
async fn add_event(
    tx: &mut Transaction<'static, Postgres>,
    task_id: i64,
    at: i64,
    kind: &str,
    actor: &str,
    progress: Option<u8>,
    note: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO task_events (tenant, task_id, at, kind, actor, progress, note) \
         SELECT tenant, id, $2, $3, $4, $5, $6 FROM tasks WHERE id = $1",
    )
    .bind(task_id)
    .bind(at)
    .bind(kind)
    .bind(actor)
    .bind(progress.map(i64::from))
    .bind(note)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Count one outcome in an agent's record for a type.
async fn count_outcome(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &str,
    agent: &str,
    task_type: &str,
    o: Outcome,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO agent_performance (tenant, agent, task_type, attempts, successes, failures, duration_ms, \
         scored, score_sum, updated_at) VALUES ($1, $2, $3, 1, $4, $5, $6, $8, $9, $7) \
         ON CONFLICT (tenant, agent, task_type) DO UPDATE SET attempts = agent_performance.attempts + 1, \
         successes = agent_performance.successes + excluded.successes, \
         failures = agent_performance.failures + excluded.failures, \
         duration_ms = agent_performance.duration_ms + excluded.duration_ms, \
         scored = agent_performance.scored + excluded.scored, \
         score_sum = agent_performance.score_sum + excluded.score_sum, \
         updated_at = excluded.updated_at",
    )
    .bind(tenant)
    .bind(agent)
    .bind(task_type)
    .bind(i64::from(o.success))
    .bind(i64::from(!o.success))
    .bind(if o.success { o.duration_ms.max(0) } else { 0 })
    .bind(now)
    .bind(i64::from(o.score.is_some()))
    .bind(o.score.unwrap_or(0.0))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// An agent's record on a type, inside a transaction.
async fn performance_of(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &str,
    agent: &str,
    task_type: &str,
) -> Result<PerformanceRecord, StoreError> {
    let row = sqlx::query(
        "SELECT tenant, agent, task_type, attempts, successes, failures, duration_ms, scored, score_sum, updated_at \
         FROM agent_performance WHERE tenant = $1 AND agent = $2 AND task_type = $3",
    )
    .bind(tenant)
    .bind(agent)
    .bind(task_type)
    .fetch_one(&mut **tx)
    .await?;
    Ok(performance_from_row(&row)?)
}

/// Store a verdict and its gates.
async fn add_verdict(
    tx: &mut Transaction<'static, Postgres>,
    task_id: i64,
    j: &TaskJudgement<'_>,
) -> Result<(), StoreError> {
    let verdict_id: i64 = sqlx::query_scalar(
        "INSERT INTO task_verdicts (task_id, tenant, agent, risk_tier, verdict, score, coverage, \
         mutation, reasons, decided_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
    )
    .bind(task_id)
    .bind(j.tenant)
    .bind(j.agent)
    .bind(i64::from(j.risk_tier))
    .bind(j.verdict.as_str())
    .bind(j.score)
    .bind(j.coverage)
    .bind(j.mutation)
    .bind(to_json(&j.reasons)?)
    .bind(j.decided_at)
    .fetch_one(&mut **tx)
    .await?;
    for (ord, g) in j.gates.iter().enumerate() {
        // The refusing policy rule is kept with the gate's own rule id:
        // `GATE-002:CMD-100`.
        let rule = match (&g.rule_id, &g.policy_rule) {
            (Some(r), Some(p)) => Some(format!("{r}:{p}")),
            (r, _) => r.clone(),
        };
        sqlx::query(
            "INSERT INTO task_gate_results (tenant, verdict_id, ord, name, command, passed, \
             rule_id, exit_code, duration_ms, measured, detail, output_tail) \
             VALUES ($12, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(verdict_id)
        .bind(ord as i64)
        .bind(&g.name)
        .bind(&g.command)
        .bind(g.passed)
        .bind(rule)
        .bind(g.exit_code)
        .bind(g.duration_ms)
        .bind(g.measured)
        .bind(&g.detail)
        .bind(&g.output_tail)
        .bind(j.tenant)
        .execute(&mut **tx)
        .await?;
    }
    if let Some(a) = j.arbitration {
        add_arbitration(tx, j.tenant, task_id, verdict_id, j.decided_at, a).await?;
    }
    Ok(())
}

/// Store the judges' arbitration of a verdict and every call they took.
async fn add_arbitration(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &str,
    task_id: i64,
    verdict_id: i64,
    decided_at: i64,
    a: &Arbitration,
) -> Result<(), StoreError> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO task_arbitrations (tenant, verdict_id, task_id, gates_verdict, verdict, \
         confidence, needs_review, reasons, votes, decided_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
    )
    .bind(tenant)
    .bind(verdict_id)
    .bind(task_id)
    .bind(a.gates_verdict.as_str())
    .bind(a.verdict.as_str())
    .bind(a.confidence)
    .bind(a.needs_review)
    .bind(to_json(&a.reasons)?)
    .bind(to_json(&a.votes)?)
    .bind(decided_at)
    .fetch_one(&mut **tx)
    .await?;
    // Collected first: an iterator of closures held across the awaits below
    // would not be `Send`.
    let mut calls: Vec<(&Exchange, &JudgeCall)> = Vec::new();
    for e in &a.exchanges {
        for c in &e.calls {
            calls.push((e, c));
        }
    }
    for (ord, (e, c)) in calls.into_iter().enumerate() {
        let answer = c.answer.as_ref().map(to_json).transpose()?;
        sqlx::query(
            "INSERT INTO task_judge_calls (tenant, arbitration_id, ord, task_id, judge, api, url, \
             model, attempt, started_at, duration_ms, request, http_status, raw_answer, answer, \
             rule_id, error, prompt_tokens, completion_tokens, cost) VALUES ($1, $2, $3, $4, $5, \
             $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)",
        )
        .bind(tenant)
        .bind(id)
        .bind(ord as i64)
        .bind(task_id)
        .bind(&e.judge)
        .bind(&e.api)
        .bind(&e.url)
        .bind(&e.model)
        .bind(i64::from(c.attempt))
        .bind(c.started_at)
        .bind(c.duration_ms)
        .bind(&c.request)
        .bind(c.http_status.map(i64::from))
        .bind(&c.raw_answer)
        .bind(answer)
        .bind(&c.rule_id)
        .bind(&c.error)
        .bind(c.prompt_tokens.map(|n| n as i64))
        .bind(c.completion_tokens.map(|n| n as i64))
        .bind(c.cost)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

fn verdict_column(row: &PgRow, column: &str) -> Result<Verdict, sqlx::Error> {
    let text: String = row.try_get(column)?;
    Verdict::parse(&text).ok_or_else(|| decode(format!("{column}: unknown `{text}`")))
}

fn arbitration_from_row(row: &PgRow) -> Result<ArbitrationRecord, sqlx::Error> {
    Ok(ArbitrationRecord {
        id: row.try_get("id")?,
        verdict_id: row.try_get("verdict_id")?,
        task_id: row.try_get("task_id")?,
        decided_at: row.try_get("decided_at")?,
        arbitration: Arbitration {
            gates_verdict: verdict_column(row, "gates_verdict")?,
            verdict: verdict_column(row, "verdict")?,
            confidence: row.try_get("confidence")?,
            needs_review: row.try_get("needs_review")?,
            reasons: json_column(row, "reasons")?,
            votes: json_column::<Vec<Vote>>(row, "votes")?,
            exchanges: Vec::new(),
        },
    })
}

/// A call row, with its judge's (name, api, url, model).
fn call_from_row(row: &PgRow) -> Result<([String; 4], JudgeCall), sqlx::Error> {
    let answer: Option<String> = row.try_get("answer")?;
    let answer = answer
        .map(|text| serde_json::from_str(&text).map_err(|e| decode(format!("answer: {e}"))))
        .transpose()?;
    let judge = [
        row.try_get("judge")?,
        row.try_get("api")?,
        row.try_get("url")?,
        row.try_get("model")?,
    ];
    Ok((
        judge,
        JudgeCall {
            attempt: row.try_get::<i64, _>("attempt")? as u32,
            started_at: row.try_get("started_at")?,
            duration_ms: row.try_get("duration_ms")?,
            request: row.try_get("request")?,
            http_status: row
                .try_get::<Option<i64>, _>("http_status")?
                .map(|s| s as u16),
            raw_answer: row.try_get("raw_answer")?,
            answer,
            rule_id: row.try_get("rule_id")?,
            error: row.try_get("error")?,
            prompt_tokens: row
                .try_get::<Option<i64>, _>("prompt_tokens")?
                .map(|n| n as u64),
            completion_tokens: row
                .try_get::<Option<i64>, _>("completion_tokens")?
                .map(|n| n as u64),
            cost: row.try_get("cost")?,
        },
    ))
}

fn gate_from_row(row: &PgRow) -> Result<GateResult, sqlx::Error> {
    let rule: Option<String> = row.try_get("rule_id")?;
    let (rule_id, policy_rule) = match rule {
        Some(r) => match r.split_once(':') {
            Some((g, p)) => (Some(g.to_string()), Some(p.to_string())),
            None => (Some(r), None),
        },
        None => (None, None),
    };
    Ok(GateResult {
        name: row.try_get("name")?,
        command: row.try_get("command")?,
        passed: row.try_get("passed")?,
        rule_id,
        policy_rule,
        exit_code: row.try_get("exit_code")?,
        duration_ms: row.try_get("duration_ms")?,
        measured: row.try_get("measured")?,
        detail: row.try_get("detail")?,
        output_tail: row.try_get("output_tail")?,
    })
}

fn verdict_from_row(row: &PgRow) -> Result<VerdictRecord, sqlx::Error> {
    let verdict: String = row.try_get("verdict")?;
    Ok(VerdictRecord {
        id: row.try_get("id")?,
        task_id: row.try_get("task_id")?,
        agent: row.try_get("agent")?,
        risk_tier: row.try_get::<i64, _>("risk_tier")? as u8,
        verdict: Verdict::parse(&verdict)
            .ok_or_else(|| decode(format!("verdict: unknown `{verdict}`")))?,
        score: row.try_get("score")?,
        coverage: row.try_get("coverage")?,
        mutation: row.try_get("mutation")?,
        reasons: json_column(row, "reasons")?,
        decided_at: row.try_get("decided_at")?,
        review: row.try_get("review")?,
        reviewed_by: row.try_get("reviewed_by")?,
        review_note: row.try_get("review_note")?,
        reviewed_at: row.try_get("reviewed_at")?,
        gates: Vec::new(),
    })
}

impl PgStore {
    /// A request's transaction holding the tenant's task-queue lock: what
    /// routing reads (every agent's load, the round-robin turn) stays true
    /// until commit, as under SQLite's write lock.
    async fn queue_locked(
        &self,
        tenant: &str,
    ) -> Result<Transaction<'static, Postgres>, StoreError> {
        let mut tx = self.begin(Some(tenant)).await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('arbiter.tasks:' || $1, 0))")
            .bind(tenant)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// What routing needs, read inside the creating transaction.
    async fn routing_snapshot(
        tx: &mut Transaction<'static, Postgres>,
        tenant: &str,
        task_type: TaskType,
    ) -> Result<(Vec<AgentSnapshot>, Option<String>), StoreError> {
        let agent_rows = sqlx::query(concat!(
            "SELECT ",
            agent_columns!(),
            ", COALESCE(p.attempts, 0) AS p_attempts, COALESCE(p.successes, 0) AS p_successes, \
             COALESCE(p.failures, 0) AS p_failures, COALESCE(p.duration_ms, 0) AS p_duration_ms, \
             COALESCE(p.scored, 0) AS p_scored, COALESCE(p.score_sum, 0.0) AS p_score_sum \
             FROM agents a LEFT JOIN agent_performance p \
             ON p.tenant = a.tenant AND p.agent = a.name AND p.task_type = $2 \
             WHERE a.tenant = $1 AND ",
            visible!(),
            " ORDER BY a.name"
        ))
        .bind(tenant)
        .bind(task_type.as_str())
        .fetch_all(&mut **tx)
        .await?;
        let agents = agent_rows
            .iter()
            .map(|row| {
                Ok(AgentSnapshot {
                    agent: agent_from_row(row)?,
                    active: row.try_get::<i64, _>("active")?.max(0) as u32,
                    stats: stats_from_row(row, "p_")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let last_round_robin: Option<String> = sqlx::query_scalar(
            "SELECT chosen_agent FROM routing_decisions WHERE tenant = $1 AND strategy = 'round_robin' \
             AND chosen_agent IS NOT NULL ORDER BY id DESC LIMIT 1",
        )
        .bind(tenant)
        .fetch_optional(&mut **tx)
        .await?;
        Ok((agents, last_round_robin))
    }

    async fn store_decision(
        tx: &mut Transaction<'static, Postgres>,
        tenant: &str,
        task_id: i64,
        choice: &RouteChoice,
        now: i64,
    ) -> Result<i64, StoreError> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO routing_decisions (tenant, task_id, strategy, seed, chosen_agent, rationale, decided_at, candidates) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(tenant)
        .bind(task_id)
        .bind(choice.strategy.as_str())
        .bind(choice.seed as i64)
        .bind(choice.chosen.as_deref())
        .bind(&choice.rationale)
        .bind(now)
        .bind(stored_candidates(&choice.candidates))
        .fetch_one(&mut **tx)
        .await?;
        Ok(id)
    }

    async fn task_by_id(
        tx: &mut Transaction<'static, Postgres>,
        id: i64,
    ) -> Result<Option<TaskRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
        Ok(row.as_ref().map(task_from_row).transpose()?)
    }
}

#[async_trait]
impl TaskStore for PgStore {
    async fn agent_register(&self, reg: &AgentRegistration<'_>) -> Result<AgentRecord, StoreError> {
        let mut tx = self.begin(Some(reg.tenant)).await?;
        let row = sqlx::query(
            "INSERT INTO agents (tenant, name, task_types, languages, tools, max_concurrent_tasks, registered_at, last_seen_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
             ON CONFLICT (tenant, name) DO UPDATE SET task_types = excluded.task_types, \
             languages = excluded.languages, tools = excluded.tools, \
             max_concurrent_tasks = excluded.max_concurrent_tasks, last_seen_at = excluded.last_seen_at \
             RETURNING tenant, name, task_types, languages, tools, max_concurrent_tasks, registered_at, last_seen_at, declared_at",
        )
        .bind(reg.tenant)
        .bind(reg.name)
        .bind(to_json(&reg.capabilities.task_types)?)
        .bind(to_json(&reg.capabilities.languages)?)
        .bind(to_json(&reg.capabilities.tools)?)
        .bind(i64::from(reg.max_concurrent_tasks))
        .bind(reg.now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(agent_from_row(&row)?)
    }

    async fn agents_declare(
        &self,
        tenant: &str,
        agents: &[AgentRegistration<'_>],
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin(Some(tenant)).await?;
        let before: Vec<(String, i64)> = sqlx::query_as(
            "SELECT name, last_seen_at FROM agents WHERE tenant = $1 AND declared_at IS NOT NULL",
        )
        .bind(tenant)
        .fetch_all(&mut *tx)
        .await?;
        for reg in agents {
            sqlx::query(
                "INSERT INTO agents (tenant, name, task_types, languages, tools, max_concurrent_tasks, \
                 registered_at, last_seen_at, declared_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $7) \
                 ON CONFLICT (tenant, name) DO UPDATE SET task_types = excluded.task_types, \
                 languages = excluded.languages, tools = excluded.tools, \
                 max_concurrent_tasks = excluded.max_concurrent_tasks, declared_at = excluded.declared_at",
            )
            .bind(tenant)
            .bind(reg.name)
            .bind(to_json(&reg.capabilities.task_types)?)
            .bind(to_json(&reg.capabilities.languages)?)
            .bind(to_json(&reg.capabilities.tools)?)
            .bind(i64::from(reg.max_concurrent_tasks))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        // Dropped from the policy: a plain registered agent now; one that
        // never called is hidden (see the migration), not deleted.
        for (name, _) in before {
            if agents.iter().any(|a| a.name == name) {
                continue;
            }
            sqlx::query("UPDATE agents SET declared_at = NULL WHERE tenant = $1 AND name = $2")
                .bind(tenant)
                .bind(&name)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn agent_seen(
        &self,
        tenant: &str,
        name: &str,
        now: i64,
    ) -> Result<Option<AgentRecord>, StoreError> {
        let mut tx = self.begin(Some(tenant)).await?;
        let row = sqlx::query(
            "UPDATE agents SET last_seen_at = GREATEST(last_seen_at, $1) WHERE tenant = $2 AND name = $3 \
             AND (declared_at IS NOT NULL OR last_seen_at > 0) \
             RETURNING tenant, name, task_types, languages, tools, max_concurrent_tasks, registered_at, last_seen_at, declared_at",
        )
        .bind(now)
        .bind(tenant)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row.as_ref().map(agent_from_row).transpose()?)
    }

    async fn agent_list(&self, tenant: Option<&str>) -> Result<Vec<AgentStatus>, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let found = sqlx::query(concat!(
            "SELECT ",
            agent_columns!(),
            " FROM agents a WHERE ($1::TEXT IS NULL OR a.tenant = $1) AND ",
            visible!(),
            " ORDER BY a.tenant, a.name"
        ))
        .bind(tenant)
        .fetch_all(&mut *tx)
        .await?;
        rows(&found, |row| {
            Ok(AgentStatus {
                agent: agent_from_row(row)?,
                active: row.try_get::<i64, _>("active")?.max(0) as u32,
            })
        })
    }

    async fn performance_list(
        &self,
        tenant: Option<&str>,
        agent: Option<&str>,
    ) -> Result<Vec<PerformanceRecord>, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let found = sqlx::query(
            "SELECT tenant, agent, task_type, attempts, successes, failures, duration_ms, scored, score_sum, updated_at \
             FROM agent_performance WHERE ($1::TEXT IS NULL OR tenant = $1) AND ($2::TEXT IS NULL OR agent = $2) \
             ORDER BY tenant, agent, task_type",
        )
        .bind(tenant)
        .bind(agent)
        .fetch_all(&mut *tx)
        .await?;
        rows(&found, performance_from_row)
    }

    async fn task_create(
        &self,
        new: &NewTask<'_>,
        router: &Router<'_>,
    ) -> Result<(TaskRecord, RoutingRecord), StoreError> {
        log_requeued(&self.task_requeue_lapsed(new.tenant, new.now).await?);
        let mut tx = self.queue_locked(new.tenant).await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO tasks (tenant, title, description, spec, spec_id, task_type, type_confidence, \
             type_source, risk_tier, tier_reason, priority, required, state, submitted_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'queued', $13, $14, $14) RETURNING id",
        )
        .bind(new.tenant)
        .bind(new.title)
        .bind(new.description)
        .bind(new.spec)
        .bind(new.spec_id)
        .bind(new.task_type.as_str())
        .bind(new.type_confidence)
        .bind(new.type_source)
        .bind(i64::from(new.risk_tier))
        .bind(new.tier_reason)
        .bind(i64::from(new.priority))
        .bind(to_json(new.required)?)
        .bind(new.submitted_by)
        .bind(new.now)
        .fetch_one(&mut *tx)
        .await?;
        add_event(
            &mut tx,
            id,
            new.now,
            "submitted",
            new.submitted_by,
            None,
            None,
        )
        .await?;

        let (agents, last_round_robin) =
            Self::routing_snapshot(&mut tx, new.tenant, new.task_type).await?;
        let choice = router(&RoutingInput {
            task_id: id,
            task_type: new.task_type,
            required: new.required,
            agents,
            last_round_robin,
        });
        let decision_id = Self::store_decision(&mut tx, new.tenant, id, &choice, new.now).await?;
        match &choice.chosen {
            Some(agent) => {
                sqlx::query(
                    "UPDATE tasks SET state = 'assigned', assigned_agent = $1, lease_expires_at = $2 WHERE id = $3",
                )
                .bind(agent)
                .bind(new.assignment_ends)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                add_event(
                    &mut tx,
                    id,
                    new.now,
                    "assigned",
                    "arbiter",
                    None,
                    Some(&format!("to {agent}: {}", choice.rationale)),
                )
                .await?;
            }
            None => {
                add_event(
                    &mut tx,
                    id,
                    new.now,
                    "queued",
                    "arbiter",
                    None,
                    Some(&choice.rationale),
                )
                .await?;
            }
        }
        let task = Self::task_by_id(&mut tx, id)
            .await?
            .ok_or_else(|| StoreError::Database(format!("task {id} vanished after insert")))?;
        tx.commit().await?;
        Ok((
            task,
            RoutingRecord {
                id: decision_id,
                task_id: id,
                decided_at: new.now,
                choice,
            },
        ))
    }

    async fn task_get(
        &self,
        tenant: Option<&str>,
        id: i64,
    ) -> Result<Option<TaskRecord>, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let task = Self::task_by_id(&mut tx, id).await?;
        tx.commit().await?;
        Ok(task.filter(|t| tenant.is_none_or(|tenant| tenant == t.tenant)))
    }

    async fn task_list(
        &self,
        tenant: Option<&str>,
        state: Option<TaskState>,
        limit: i64,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let found = sqlx::query(concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE ($1::TEXT IS NULL OR tenant = $1) AND ($2::TEXT IS NULL OR state = $2) \
             ORDER BY id DESC LIMIT $3"
        ))
        .bind(tenant)
        .bind(state.map(TaskState::as_str))
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        rows(&found, task_from_row)
    }

    async fn task_events(&self, id: i64) -> Result<Vec<TaskEvent>, StoreError> {
        let mut tx = self.begin(None).await?;
        let found = sqlx::query(
            "SELECT at, kind, actor, progress, note FROM task_events WHERE task_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        rows(&found, |row| {
            Ok(TaskEvent {
                at: row.try_get("at")?,
                kind: row.try_get("kind")?,
                actor: row.try_get("actor")?,
                progress: row
                    .try_get::<Option<i64>, _>("progress")?
                    .map(|p| p.clamp(0, 100) as u8),
                note: row.try_get("note")?,
            })
        })
    }

    async fn task_note(
        &self,
        tenant: &str,
        id: i64,
        agent: &str,
        at: i64,
        kind: &str,
        note: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin(Some(tenant)).await?;
        let done = sqlx::query(
            "INSERT INTO task_events (tenant, task_id, at, kind, actor, progress, note) \
             SELECT tenant, id, $2, $3, $4, NULL, $5 FROM tasks \
             WHERE id = $1 AND tenant = $6 AND holder = $4 AND state = 'claimed'",
        )
        .bind(id)
        .bind(at)
        .bind(kind)
        .bind(agent)
        .bind(note)
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn task_routing(&self, id: i64) -> Result<Vec<RoutingRecord>, StoreError> {
        let mut tx = self.begin(None).await?;
        let decisions = sqlx::query(
            "SELECT id, task_id, strategy, seed, chosen_agent, rationale, decided_at, candidates \
             FROM routing_decisions WHERE task_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        let mut records = Vec::with_capacity(decisions.len());
        for row in &decisions {
            let decision_id: i64 = row.try_get("id")?;
            let strategy: String = row.try_get("strategy")?;
            // Older decisions kept a row per candidate.
            let candidates: Vec<CandidateScore> = match row
                .try_get::<Option<String>, _>("candidates")?
            {
                Some(text) => parse_stored_candidates(&text).map_err(|e| {
                    StoreError::Database(format!("decision {decision_id}'s candidates: {e}"))
                })?,
                None => {
                    let scores = sqlx::query(
                        "SELECT agent, eligible, score, detail FROM routing_scores WHERE decision_id = $1 ORDER BY rank",
                    )
                    .bind(decision_id)
                    .fetch_all(&mut *tx)
                    .await?;
                    rows(&scores, |s| {
                        Ok(CandidateScore {
                            agent: s.try_get("agent")?,
                            eligible: s.try_get("eligible")?,
                            score: s.try_get("score")?,
                            detail: s.try_get("detail")?,
                        })
                    })?
                }
            };
            records.push(RoutingRecord {
                id: decision_id,
                task_id: row.try_get("task_id")?,
                decided_at: row.try_get("decided_at")?,
                choice: RouteChoice {
                    strategy: RoutingStrategy::parse(&strategy).ok_or_else(|| {
                        StoreError::Database(format!("unknown routing strategy {strategy:?}"))
                    })?,
                    seed: row.try_get::<i64, _>("seed")? as u64,
                    chosen: row.try_get("chosen_agent")?,
                    rationale: row.try_get("rationale")?,
                    candidates,
                },
            });
        }
        Ok(records)
    }

    async fn task_requeue_lapsed(
        &self,
        tenant: &str,
        now: i64,
    ) -> Result<Vec<Requeued>, StoreError> {
        // Most calls find nothing: look before taking the lock.
        let mut tx = self.begin(Some(tenant)).await?;
        let lapsed: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM tasks WHERE tenant = $1 AND lease_expires_at <= $2 \
             AND state IN ('assigned', 'claimed')",
        )
        .bind(tenant)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        if lapsed == 0 {
            return Ok(Vec::new());
        }
        let mut tx = self.queue_locked(tenant).await?;
        // The rows are locked: a claim, progress or completion racing this
        // waits, then finds the task no longer claimed.
        let found = sqlx::query(
            "SELECT id, state, holder, assigned_agent, task_type FROM tasks \
             WHERE tenant = $1 AND lease_expires_at <= $2 AND state IN ('assigned', 'claimed') \
             ORDER BY id FOR UPDATE",
        )
        .bind(tenant)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let mut requeued = Vec::with_capacity(found.len());
        for row in &found {
            let id: i64 = row.try_get("id")?;
            let state: String = row.try_get("state")?;
            let task_type: String = row.try_get("task_type")?;
            sqlx::query(
                "UPDATE tasks SET state = 'queued', holder = NULL, assigned_agent = NULL, \
                 lease_expires_at = NULL, progress = 0, updated_at = $1 WHERE id = $2",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            let (kind, agent, note) = if state == "claimed" {
                let holder: Option<String> = row.try_get("holder")?;
                if let Some(holder) = &holder {
                    count_outcome(
                        &mut tx,
                        tenant,
                        holder,
                        &task_type,
                        Outcome {
                            success: false,
                            duration_ms: 0,
                            score: None,
                        },
                        now,
                    )
                    .await?;
                }
                let who = holder.as_deref().unwrap_or("its holder");
                let note = format!(
                    "{who}'s claim lapsed without task_update or task_complete; back in the queue"
                );
                ("lease_expired", holder, note)
            } else {
                let assignee: Option<String> = row.try_get("assigned_agent")?;
                let who = assignee.as_deref().unwrap_or("its agent");
                let note = format!("{who} did not claim it in time; back in the queue");
                ("assignment_expired", assignee, note)
            };
            add_event(&mut tx, id, now, kind, "arbiter", None, Some(&note)).await?;
            requeued.push(Requeued {
                task_id: id,
                agent,
                kind,
            });
        }
        tx.commit().await?;
        Ok(requeued)
    }

    async fn task_held(&self, tenant: &str, agent: &str) -> Result<Vec<TaskRecord>, StoreError> {
        let mut tx = self.begin(Some(tenant)).await?;
        let found = sqlx::query(concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE tenant = $1 AND holder = $2 AND state = 'claimed' ORDER BY claimed_at, id"
        ))
        .bind(tenant)
        .bind(agent)
        .fetch_all(&mut *tx)
        .await?;
        rows(&found, task_from_row)
    }

    async fn task_claim_assigned(
        &self,
        claim: &Claim<'_>,
    ) -> Result<Option<TaskRecord>, StoreError> {
        let mut tx = self.begin(Some(claim.tenant)).await?;
        let row = sqlx::query(concat!(
            "UPDATE tasks SET state = 'claimed', holder = $2, lease_expires_at = $4, claimed_at = $3, \
             updated_at = $3, attempts = attempts + 1, progress = 0 \
             WHERE id = (SELECT id FROM tasks WHERE tenant = $1 AND state = 'assigned' AND assigned_agent = $2 \
             ORDER BY priority DESC, id LIMIT 1 FOR UPDATE SKIP LOCKED) AND state = 'assigned' RETURNING ",
            task_columns!()
        ))
        .bind(claim.tenant)
        .bind(claim.agent)
        .bind(claim.now)
        .bind(claim.lease_ends)
        .fetch_optional(&mut *tx)
        .await?;
        record_claim(tx, row, claim, "assigned by routing").await
    }

    async fn task_queued(
        &self,
        tenant: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        let mut tx = self.begin(Some(tenant)).await?;
        let found = sqlx::query(concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE tenant = $1 AND state = 'queued' ORDER BY priority DESC, id LIMIT $2 OFFSET $3"
        ))
        .bind(tenant)
        .bind(limit)
        .bind(offset)
        .fetch_all(&mut *tx)
        .await?;
        rows(&found, task_from_row)
    }

    async fn task_claim_queued(
        &self,
        claim: &Claim<'_>,
        id: i64,
    ) -> Result<Option<TaskRecord>, StoreError> {
        let mut tx = self.begin(Some(claim.tenant)).await?;
        let row = sqlx::query(concat!(
            "UPDATE tasks SET state = 'claimed', holder = $3, lease_expires_at = $5, claimed_at = $4, \
             updated_at = $4, attempts = attempts + 1, progress = 0 \
             WHERE id = $1 AND tenant = $2 AND state = 'queued' RETURNING ",
            task_columns!()
        ))
        .bind(id)
        .bind(claim.tenant)
        .bind(claim.agent)
        .bind(claim.now)
        .bind(claim.lease_ends)
        .fetch_optional(&mut *tx)
        .await?;
        record_claim(tx, row, claim, "from the queue").await
    }

    async fn task_progress(&self, p: &TaskProgress<'_>) -> Result<Option<TaskRecord>, StoreError> {
        let mut tx = self.begin(Some(p.tenant)).await?;
        let row = sqlx::query(concat!(
            "UPDATE tasks SET progress = COALESCE($1, progress), lease_expires_at = $2, updated_at = $3 \
             WHERE id = $4 AND tenant = $5 AND state = 'claimed' AND holder = $6 AND lease_expires_at > $3 \
             RETURNING ",
            task_columns!()
        ))
        .bind(p.progress.map(i64::from))
        .bind(p.lease_ends)
        .bind(p.now)
        .bind(p.id)
        .bind(p.tenant)
        .bind(p.agent)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let task = task_from_row(&row)?;
        add_event(
            &mut tx, task.id, p.now, "progress", p.agent, p.progress, p.note,
        )
        .await?;
        tx.commit().await?;
        Ok(Some(task))
    }

    async fn task_complete(
        &self,
        c: &TaskCompletion<'_>,
    ) -> Result<Option<(TaskRecord, PerformanceRecord)>, StoreError> {
        let mut tx = self.begin(Some(c.tenant)).await?;
        let row = sqlx::query(concat!(
            "UPDATE tasks SET state = 'completed', summary = $1, progress = 100, completed_at = $2, \
             updated_at = $2, lease_expires_at = NULL \
             WHERE id = $3 AND tenant = $4 AND state = 'claimed' AND holder = $5 AND lease_expires_at > $2 \
             RETURNING ",
            task_columns!()
        ))
        .bind(c.summary)
        .bind(c.now)
        .bind(c.id)
        .bind(c.tenant)
        .bind(c.agent)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let task = task_from_row(&row)?;
        let duration = c.now - task.claimed_at.unwrap_or(c.now);
        count_outcome(
            &mut tx,
            c.tenant,
            c.agent,
            task.task_type.as_str(),
            Outcome {
                success: true,
                duration_ms: duration,
                score: None,
            },
            c.now,
        )
        .await?;
        add_event(
            &mut tx,
            task.id,
            c.now,
            "completed",
            c.agent,
            Some(100),
            Some(c.summary),
        )
        .await?;
        let perf = sqlx::query(
            "SELECT tenant, agent, task_type, attempts, successes, failures, duration_ms, scored, score_sum, updated_at \
             FROM agent_performance WHERE tenant = $1 AND agent = $2 AND task_type = $3",
        )
        .bind(c.tenant)
        .bind(c.agent)
        .bind(task.task_type.as_str())
        .fetch_one(&mut *tx)
        .await?;
        let perf = performance_from_row(&perf)?;
        tx.commit().await?;
        Ok(Some((task, perf)))
    }

    async fn task_judge(
        &self,
        j: &TaskJudgement<'_>,
    ) -> Result<Option<(TaskRecord, Option<PerformanceRecord>)>, StoreError> {
        let mut tx = self.begin(Some(j.tenant)).await?;
        // Which way the task goes; the WHERE is the same: the agent still
        // holds it with the claim it had when it called task_complete.
        macro_rules! judged {
            ($set:literal) => {
                concat!(
                    "UPDATE tasks SET ",
                    $set,
                    ", summary = $1, updated_at = $2 \
                     WHERE id = $3 AND tenant = $4 AND state = 'claimed' AND holder = $6 \
                     AND lease_expires_at > $7 RETURNING ",
                    task_columns!()
                )
            };
        }
        let (sql, kind) = match (j.verdict, j.needs_review) {
            (Verdict::Fail, _) => (judged!("lease_expires_at = $5"), "gates_failed"),
            (_, true) => (
                judged!("state = 'needs_review', progress = 100, lease_expires_at = NULL"),
                "needs_review",
            ),
            (_, false) => (
                judged!(
                    "state = 'completed', progress = 100, completed_at = $2, lease_expires_at = NULL"
                ),
                "completed",
            ),
        };
        let row = sqlx::query(sql)
            .bind(j.summary)
            .bind(j.decided_at)
            .bind(j.id)
            .bind(j.tenant)
            .bind(j.lease_ends)
            .bind(j.agent)
            .bind(j.now)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let task = task_from_row(&row)?;
        add_verdict(&mut tx, task.id, j).await?;
        let note = match kind {
            "gates_failed" => format!(
                "verdict fail, score {:.2}: {}",
                j.score,
                j.reasons.join("; ")
            ),
            _ => j.summary.to_string(),
        };
        let progress = (kind != "gates_failed").then_some(100);
        add_event(
            &mut tx,
            task.id,
            j.decided_at,
            kind,
            j.agent,
            progress,
            Some(&note),
        )
        .await?;
        let perf = if kind == "needs_review" {
            None
        } else {
            let success = kind == "completed";
            let duration = j.decided_at - task.claimed_at.unwrap_or(j.decided_at);
            let ty = task.task_type.as_str();
            count_outcome(
                &mut tx,
                j.tenant,
                j.agent,
                ty,
                Outcome {
                    success,
                    duration_ms: duration,
                    score: Some(j.score),
                },
                j.decided_at,
            )
            .await?;
            Some(performance_of(&mut tx, j.tenant, j.agent, ty).await?)
        };
        tx.commit().await?;
        Ok(Some((task, perf)))
    }

    async fn task_verdicts(&self, id: i64) -> Result<Vec<VerdictRecord>, StoreError> {
        let mut tx = self.begin(None).await?;
        let mut verdicts = rows(
            &sqlx::query("SELECT * FROM task_verdicts WHERE task_id = $1 ORDER BY id")
                .bind(id)
                .fetch_all(&mut *tx)
                .await?,
            verdict_from_row,
        )?;
        for v in &mut verdicts {
            v.gates = rows(
                &sqlx::query("SELECT * FROM task_gate_results WHERE verdict_id = $1 ORDER BY ord")
                    .bind(v.id)
                    .fetch_all(&mut *tx)
                    .await?,
                gate_from_row,
            )?;
        }
        Ok(verdicts)
    }

    async fn task_arbitrations(&self, id: i64) -> Result<Vec<ArbitrationRecord>, StoreError> {
        let mut tx = self.begin(None).await?;
        let mut found = rows(
            &sqlx::query("SELECT * FROM task_arbitrations WHERE task_id = $1 ORDER BY id")
                .bind(id)
                .fetch_all(&mut *tx)
                .await?,
            arbitration_from_row,
        )?;
        for a in &mut found {
            let calls = rows(
                &sqlx::query(
                    "SELECT * FROM task_judge_calls WHERE arbitration_id = $1 ORDER BY ord",
                )
                .bind(a.id)
                .fetch_all(&mut *tx)
                .await?,
                call_from_row,
            )?;
            a.arbitration.exchanges = super::sqlite_tasks::exchanges_of(calls);
        }
        Ok(found)
    }

    async fn task_review(
        &self,
        r: &TaskReview<'_>,
    ) -> Result<Option<(TaskRecord, Option<PerformanceRecord>)>, StoreError> {
        let mut tx = self.begin(None).await?;
        // Rejected work goes back to the queue for any capable agent; the
        // holder is kept in the event and the verdict, not on the task.
        let sql = if r.approve {
            concat!(
                "UPDATE tasks SET state = 'completed', completed_at = $1, updated_at = $1 \
                 WHERE id = $2 AND state = 'needs_review' RETURNING ",
                task_columns!()
            )
        } else {
            concat!(
                "UPDATE tasks SET state = 'queued', assigned_agent = NULL, progress = 0, updated_at = $1 \
                 WHERE id = $2 AND state = 'needs_review' RETURNING ",
                task_columns!()
            )
        };
        let row = sqlx::query(sql)
            .bind(r.now)
            .bind(r.id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut task = task_from_row(&row)?;
        let review = if r.approve { "approved" } else { "rejected" };
        // The reviewed verdict's score counts in the holder's record.
        let verdict_score: Option<f64> = sqlx::query_scalar(
            "UPDATE task_verdicts SET review = $1, reviewed_by = $2, review_note = $3, reviewed_at = $4 \
             WHERE id = (SELECT MAX(id) FROM task_verdicts WHERE task_id = $5) RETURNING score",
        )
        .bind(review)
        .bind(r.by)
        .bind(r.note)
        .bind(r.now)
        .bind(r.id)
        .fetch_optional(&mut *tx)
        .await?;
        add_event(&mut tx, task.id, r.now, review, r.by, None, r.note).await?;
        let perf = match task.holder.clone() {
            Some(holder) => {
                let duration = r.now - task.claimed_at.unwrap_or(r.now);
                let ty = task.task_type.as_str();
                count_outcome(
                    &mut tx,
                    &task.tenant,
                    &holder,
                    ty,
                    Outcome {
                        success: r.approve,
                        duration_ms: duration,
                        score: verdict_score,
                    },
                    r.now,
                )
                .await?;
                Some(performance_of(&mut tx, &task.tenant, &holder, ty).await?)
            }
            None => None,
        };
        if !r.approve {
            sqlx::query("UPDATE tasks SET holder = NULL WHERE id = $1")
                .bind(task.id)
                .execute(&mut *tx)
                .await?;
            task.holder = None;
            task.assigned_agent = None;
        }
        tx.commit().await?;
        Ok(Some((task, perf)))
    }

    async fn task_cancel(&self, c: &TaskCancel<'_>) -> Result<Option<TaskRecord>, StoreError> {
        let mut tx = self.begin(Some(c.tenant)).await?;
        let row = sqlx::query(concat!(
            "UPDATE tasks SET state = 'cancelled', lease_expires_at = NULL, updated_at = $1, completed_at = $1 \
             WHERE id = $2 AND tenant = $3 AND submitted_by = $4 \
             AND state IN ('queued', 'assigned', 'claimed') RETURNING ",
            task_columns!()
        ))
        .bind(c.now)
        .bind(c.id)
        .bind(c.tenant)
        .bind(c.actor)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let task = task_from_row(&row)?;
        add_event(&mut tx, task.id, c.now, "cancelled", c.actor, None, None).await?;
        tx.commit().await?;
        Ok(Some(task))
    }
}
