//! Tasks: work that comes in with a title, a description and optionally a
//! CAWS working spec, goes to the agent most likely to do it well, and is
//! tracked until it ends.
//!
//! The rules live here as plain functions over plain data, so they can be
//! tested without a server: what type a task is ([`detect`]), which agents
//! may take it ([`registry`]), which of them gets it ([`routing`]), and how a
//! task moves from `queued` to `completed` ([`lifecycle`], the only part that
//! talks to the store). Every state lives in the store, so a restarted server,
//! or several servers on one workspace, see the same queue; a claim is one
//! conditional UPDATE, so a task is claimed exactly once however many agents
//! race for it.
//!
//! States: `queued` (any capable agent may claim it) → `assigned` (routed to
//! one agent, which has `lease_minutes` to pick it up) → `claimed` (held by
//! an agent; the lease is renewed by task_update) → `completed` or
//! `cancelled`. A lapsed lease sends the task back to `queued`.
//! `task_complete` runs the tier's quality gates ([`gates`]): `fail` leaves
//! the task claimed by its holder (fix and complete again); `pass` or
//! `conditional` completes it, except at tier 1, where it waits in
//! `needs_review` for a person. With model judges configured ([`judge`]),
//! a gates' pass or conditional is put to them too, and the combined vote
//! decides; a close vote or a judge without a valid answer also waits in
//! `needs_review`.

pub mod attribution;
pub mod changes;
pub mod declared;
pub mod detect;
pub mod gates;
pub mod judge;
pub mod judge_client;
pub mod lifecycle;
pub mod registry;
pub mod routing;

use rmcp::schemars::{self, JsonSchema};
use serde::{Deserialize, Serialize};

pub use registry::{AgentRecord, Capabilities, RequiredCapabilities};
pub use routing::{CandidateScore, RouteChoice};

/// What kind of work a task is. Routing keeps each agent's record per type.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TaskType {
    Feature,
    Bugfix,
    Refactor,
    Test,
    Docs,
    Research,
    Ops,
}

impl TaskType {
    /// Every type, in the order ties are broken in.
    pub const ALL: [TaskType; 7] = [
        TaskType::Feature,
        TaskType::Bugfix,
        TaskType::Refactor,
        TaskType::Test,
        TaskType::Docs,
        TaskType::Research,
        TaskType::Ops,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskType::Feature => "feature",
            TaskType::Bugfix => "bugfix",
            TaskType::Refactor => "refactor",
            TaskType::Test => "test",
            TaskType::Docs => "docs",
            TaskType::Research => "research",
            TaskType::Ops => "ops",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == text)
    }
}

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for any capable agent to claim it.
    Queued,
    /// Routed to one agent, waiting for it to claim it (task_next).
    Assigned,
    /// Held by an agent working on it.
    Claimed,
    /// Waiting for a person's sign-off (`arbiter task review|approve|reject
    /// ID`): a tier 1 task whose gates passed, or one the judges could not
    /// settle.
    NeedsReview,
    /// Done: the quality gates passed it (`pass` or `conditional`), and for
    /// tier 1 a person approved it.
    Completed,
    Cancelled,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Assigned => "assigned",
            TaskState::Claimed => "claimed",
            TaskState::NeedsReview => "needs_review",
            TaskState::Completed => "completed",
            TaskState::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "queued" => TaskState::Queued,
            "assigned" => TaskState::Assigned,
            "claimed" => TaskState::Claimed,
            "needs_review" => TaskState::NeedsReview,
            "completed" => TaskState::Completed,
            "cancelled" => TaskState::Cancelled,
            _ => return None,
        })
    }

    /// No further change is possible.
    pub fn is_final(self) -> bool {
        matches!(self, TaskState::Completed | TaskState::Cancelled)
    }
}

/// A task as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    pub id: i64,
    pub tenant: String,
    pub title: String,
    pub description: String,
    /// The working spec's text, as submitted (a path was read into text).
    pub spec: Option<String>,
    pub spec_id: Option<String>,
    pub task_type: TaskType,
    /// 1.0 when the submitter named the type.
    pub type_confidence: f64,
    /// `given` or `detected`.
    pub type_source: String,
    pub risk_tier: u8,
    /// Why this tier: `spec` or the inference's reason.
    pub tier_reason: String,
    /// 1 (low) to 5 (urgent).
    pub priority: u8,
    pub required: RequiredCapabilities,
    pub state: TaskState,
    /// The agent routing chose (kept after it claims or completes).
    pub assigned_agent: Option<String>,
    /// The agent that holds (state claimed) or completed the task.
    pub holder: Option<String>,
    /// Assigned: when the assignee's time to claim ends; claimed: when the claim ends.
    pub lease_expires_at: Option<i64>,
    /// Percent, as the holder last reported.
    pub progress: u8,
    /// How many times it has been claimed.
    pub attempts: u32,
    pub submitted_by: String,
    pub summary: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub claimed_at: Option<i64>,
    pub completed_at: Option<i64>,
}

impl TaskRecord {
    pub fn display_id(&self) -> String {
        display_id(self.id)
    }
}

/// One step in a task's history.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct TaskEvent {
    /// Unix milliseconds.
    pub at: i64,
    /// `submitted`, `assigned`, `queued`, `claimed`, `progress`, `lease_expired`,
    /// `assignment_expired`, `completed`, `cancelled`.
    pub kind: String,
    /// The agent, or `arbiter` for what the server did by itself.
    pub actor: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A stored routing decision, with every candidate's score.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutingRecord {
    pub id: i64,
    pub task_id: i64,
    pub decided_at: i64,
    pub choice: RouteChoice,
}

/// How an agent has done on one task type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, JsonSchema)]
pub struct TypeStats {
    /// Outcomes recorded: completions plus abandoned claims.
    pub attempts: u32,
    pub successes: u32,
    /// Claims that lapsed without completion.
    pub failures: u32,
    /// Total time from claim to completion over the successes, in milliseconds.
    pub duration_ms: i64,
    /// Outcomes that carried a verdict score (lapsed claims carry none).
    pub scored: u32,
    /// Their verdict scores (0 to 100) summed.
    pub score_sum: f64,
}

impl TypeStats {
    /// Successes over attempts; `None` without any attempt.
    pub fn success_rate(&self) -> Option<f64> {
        (self.attempts > 0).then(|| f64::from(self.successes) / f64::from(self.attempts))
    }

    /// Mean verdict score (0 to 100); `None` without any scored outcome.
    pub fn mean_score(&self) -> Option<f64> {
        (self.scored > 0).then(|| self.score_sum / f64::from(self.scored))
    }

    /// Mean time from claim to completion; `None` without any success.
    pub fn mean_duration_ms(&self) -> Option<f64> {
        (self.successes > 0).then(|| self.duration_ms as f64 / f64::from(self.successes))
    }
}

/// One agent's record on one task type.
#[derive(Debug, Clone, PartialEq)]
pub struct PerformanceRecord {
    pub tenant: String,
    pub agent: String,
    pub task_type: TaskType,
    pub stats: TypeStats,
    pub updated_at: i64,
}

/// Why a task call was refused or failed: the rule, what happened, what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[{rule_id}] {message}")]
pub struct TaskError {
    pub kind: TaskErrorKind,
    pub rule_id: &'static str,
    pub message: String,
    pub advice: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskErrorKind {
    /// The request itself is wrong (a field out of range, an unknown id format).
    Invalid,
    /// The request is well-formed but not allowed (not your task, wrong state).
    Refused,
    /// It could not be done (the store failed, the task does not exist).
    Failed,
}

impl TaskError {
    pub fn new(
        kind: TaskErrorKind,
        rule_id: &'static str,
        message: impl Into<String>,
        advice: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            rule_id,
            message: message.into(),
            advice: advice.into(),
        }
    }
}

/// `T-12` for task 12.
pub fn display_id(id: i64) -> String {
    format!("T-{id}")
}

/// `T-12`, `t-12` or `12`.
pub fn parse_id(text: &str) -> Option<i64> {
    let text = text.trim();
    let digits = text
        .strip_prefix("T-")
        .or_else(|| text.strip_prefix("t-"))
        .unwrap_or(text);
    digits.parse::<i64>().ok().filter(|&n| n > 0)
}

/// Now, in unix milliseconds.
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Unix milliseconds as RFC 3339 (UTC), to the millisecond.
pub fn rfc3339_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_read_back_in_each_spelling() {
        assert_eq!(display_id(12), "T-12");
        assert_eq!(parse_id("T-12"), Some(12));
        assert_eq!(parse_id("t-12"), Some(12));
        assert_eq!(parse_id(" 12 "), Some(12));
        assert_eq!(parse_id("T-0"), None);
        assert_eq!(parse_id("OVR-12"), None);
        assert_eq!(parse_id("T-x"), None);
    }

    #[test]
    fn types_and_states_round_trip_their_names() {
        for t in TaskType::ALL {
            assert_eq!(TaskType::parse(t.as_str()), Some(t));
        }
        for s in [
            "queued",
            "assigned",
            "claimed",
            "needs_review",
            "completed",
            "cancelled",
        ] {
            assert_eq!(TaskState::parse(s).unwrap().as_str(), s);
        }
    }

    #[test]
    fn stats_without_attempts_have_no_rate() {
        let none = TypeStats::default();
        assert_eq!(none.success_rate(), None);
        assert_eq!(none.mean_duration_ms(), None);
        let some = TypeStats {
            attempts: 4,
            successes: 3,
            failures: 1,
            duration_ms: 3000,
            scored: 2,
            score_sum: 150.0,
        };
        assert_eq!(some.success_rate(), Some(0.75));
        assert_eq!(some.mean_score(), Some(75.0));
        assert_eq!(none.mean_score(), None);
        assert_eq!(some.mean_duration_ms(), Some(1000.0));
    }

    #[test]
    fn times_print_with_milliseconds() {
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
