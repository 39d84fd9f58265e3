//! What each console page shows, read from the tenant's store. Pages only
//! render these; nothing here writes.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::super::tenants::TenantRuntime;
use crate::overrides::{OverrideRecord, OverrideState, now_unix, rfc3339};
use crate::store::audit::{VerifyReport, verify_chain};
use crate::store::{AuditRecord, Store};
use crate::tasks::gates::VerdictRecord;
use crate::tasks::{TaskRecord, TaskState};

/// Audit records per page.
pub const PAGE_SIZE: usize = 50;
/// Requests read for the overrides page.
const OVERRIDES_READ: i64 = 500;
/// Decided requests shown under the pending ones.
const RECENT_SHOWN: usize = 20;
/// How far back in the trail to look for the call a request is about.
const REFUSALS_READ: i64 = 5000;
/// Tasks on the board.
const TASKS_READ: i64 = 500;

async fn store_of(runtime: &TenantRuntime) -> Result<std::sync::Arc<dyn Store>, String> {
    runtime
        .toolbox
        .store
        .get()
        .await
        .map_err(|e| format!("the store cannot be opened: {e}"))
}

fn read_failed(e: impl std::fmt::Display) -> String {
    format!("the store cannot be read: {e}; retry once the operator fixed it")
}

/// A pending request and the refused call it is about, when the trail has it.
pub struct Pending {
    pub record: OverrideRecord,
    pub refused_call: Option<AuditRecord>,
}

pub struct OverridesView {
    pub pending: Vec<Pending>,
    pub recent: Vec<OverrideRecord>,
    pub now: i64,
    pub default_minutes: u64,
    pub max_minutes: u64,
}

pub async fn overrides(runtime: &TenantRuntime) -> Result<OverridesView, String> {
    let store = store_of(runtime).await?;
    // Records are committed to the journal first: bring the store up to date.
    runtime.audit.flush_index().await.map_err(read_failed)?;
    let now = now_unix();
    let records = store
        .override_list(Some(&runtime.name), None, OVERRIDES_READ)
        .await
        .map_err(read_failed)?;
    let (pending, decided): (Vec<_>, Vec<_>) = records
        .into_iter()
        .partition(|r| r.state_at(now) == OverrideState::Pending);
    let trail = if pending.is_empty() {
        Vec::new()
    } else {
        store
            .audit_tail(&runtime.name, REFUSALS_READ)
            .await
            .map_err(read_failed)?
    };
    let pending = pending
        .into_iter()
        .map(|record| Pending {
            refused_call: refused_call(&trail, &record),
            record,
        })
        .collect();
    let settings = runtime.toolbox.policy.load().override_settings().clone();
    Ok(OverridesView {
        pending,
        recent: decided.into_iter().take(RECENT_SHOWN).collect(),
        now,
        default_minutes: settings.default_minutes,
        max_minutes: settings.max_minutes,
    })
}

/// The last call refused under the request's rule for the same agent before
/// it asked, preferring its own MCP session.
fn refused_call(trail: &[AuditRecord], record: &OverrideRecord) -> Option<AuditRecord> {
    let asked_at = rfc3339(record.created_at);
    let candidates: Vec<&AuditRecord> = trail
        .iter()
        .filter(|r| {
            r.client_name == record.agent
                && r.outcome == "refused"
                && r.tool != "override_request"
                && r.rule_ids.split(',').any(|id| id.trim() == record.rule_id)
                // Same-second records sort before: `.` < `Z`.
                && r.ts.as_str() <= asked_at.as_str()
        })
        .collect();
    candidates
        .iter()
        .rev()
        .find(|r| r.session_id == record.session_id)
        .or_else(|| candidates.last())
        .map(|r| (*r).clone())
}

/// The audit page's filter, as its form submits it.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
pub struct AuditFilter {
    /// For an operator's session: the tenant whose trail is shown (each
    /// tenant has a chain of its own). Empty otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tenant: String,
    #[serde(default)]
    pub agent: String,
    #[serde(default)]
    pub tool: String,
    #[serde(default)]
    pub decision: String,
    #[serde(default)]
    pub outcome: String,
    /// UTC, `YYYY-MM-DD[THH:MM[:SS]]`; inclusive at its precision.
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    #[serde(default)]
    pub page: Option<usize>,
}

impl AuditFilter {
    pub fn check(&self) -> Result<(), String> {
        for (name, t) in [("from", &self.from), ("to", &self.to)] {
            let ok = t.len() <= 25
                && t.chars()
                    .all(|c| c.is_ascii_digit() || matches!(c, '-' | ':' | 'T' | '.'));
            if !ok {
                return Err(format!(
                    "`{name}` must be a UTC time as YYYY-MM-DD or YYYY-MM-DDTHH:MM, not `{t}`"
                ));
            }
        }
        Ok(())
    }

    fn matches(&self, r: &AuditRecord) -> bool {
        let is = |want: &str, have: &str| want.is_empty() || want == have;
        is(&self.agent, &r.client_name)
            && is(&self.tool, &r.tool)
            && is(&self.decision, &r.decision)
            && is(&self.outcome, &r.outcome)
            // RFC 3339 in UTC sorts as text; compare at the filter's precision.
            && (self.from.is_empty() || r.ts.as_str() >= self.from.as_str())
            && (self.to.is_empty() || prefix(&r.ts, self.to.len()) <= self.to.as_str())
    }

    /// The query string of this filter at another page.
    pub fn at_page(&self, page: usize) -> String {
        let mut f = self.clone();
        f.page = Some(page);
        serde_urlencoded::to_string(&f).unwrap_or_default()
    }
}

fn prefix(s: &str, n: usize) -> &str {
    s.get(..n).unwrap_or(s)
}

pub struct AuditView {
    pub verify: VerifyReport,
    pub matching: usize,
    pub page: usize,
    pub pages: usize,
    /// Newest first.
    pub records: Vec<AuditRecord>,
    pub agents: BTreeSet<String>,
    pub tools: BTreeSet<String>,
    pub decisions: BTreeSet<String>,
    pub outcomes: BTreeSet<String>,
}

pub async fn audit(runtime: &TenantRuntime, filter: &AuditFilter) -> Result<AuditView, String> {
    let store = store_of(runtime).await?;
    runtime.audit.flush_index().await.map_err(read_failed)?;
    // The same walk as `arbiter audit verify`.
    let verify = verify_chain(store.as_ref(), &runtime.name, &mut |_| {})
        .await
        .map_err(read_failed)?;
    // Then one pass for the filter: keep only the matching seqs, so a long
    // chain costs memory for its matches, not its records.
    let (mut agents, mut tools, mut decisions, mut outcomes) = Default::default();
    let mut matching: Vec<i64> = Vec::new();
    let mut after = 0;
    loop {
        let page = store
            .audit_page(&runtime.name, after, 1000)
            .await
            .map_err(read_failed)?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for r in &page {
            insert(&mut agents, &r.client_name);
            insert(&mut tools, &r.tool);
            insert(&mut decisions, &r.decision);
            insert(&mut outcomes, &r.outcome);
            if filter.matches(r) {
                matching.push(r.seq);
            }
        }
    }
    let pages = matching.len().div_ceil(PAGE_SIZE).max(1);
    let page = filter.page.unwrap_or(1).clamp(1, pages);
    let mut records = Vec::new();
    for &seq in matching
        .iter()
        .rev()
        .skip((page - 1) * PAGE_SIZE)
        .take(PAGE_SIZE)
    {
        let one = store
            .audit_page(&runtime.name, seq - 1, 1)
            .await
            .map_err(read_failed)?;
        records.extend(one.into_iter().filter(|r| r.seq == seq));
    }
    Ok(AuditView {
        verify,
        matching: matching.len(),
        page,
        pages,
        records,
        agents,
        tools,
        decisions,
        outcomes,
    })
}

fn insert(set: &mut BTreeSet<String>, value: &str) {
    if !set.contains(value) {
        set.insert(value.to_string());
    }
}

/// A task and the gates' latest verdict on it.
pub struct TaskItem {
    pub task: TaskRecord,
    pub verdict: Option<VerdictRecord>,
}

pub struct TasksView {
    /// Columns in the order work moves: (title, state, tasks).
    pub columns: Vec<(&'static str, TaskState, Vec<TaskItem>)>,
}

pub async fn tasks(runtime: &TenantRuntime) -> Result<TasksView, String> {
    let store = store_of(runtime).await?;
    let all = store
        .task_list(Some(&runtime.name), None, TASKS_READ)
        .await
        .map_err(read_failed)?;
    let mut columns: Vec<(&'static str, TaskState, Vec<TaskItem>)> = vec![
        ("Queued", TaskState::Queued, Vec::new()),
        ("Assigned", TaskState::Assigned, Vec::new()),
        ("Running", TaskState::Claimed, Vec::new()),
        ("Needs review", TaskState::NeedsReview, Vec::new()),
        ("Done", TaskState::Completed, Vec::new()),
        ("Cancelled", TaskState::Cancelled, Vec::new()),
    ];
    for task in all {
        // Only a task that was worked on can have a verdict.
        let verdict = if task.attempts > 0 {
            store
                .task_verdicts(task.id)
                .await
                .map_err(read_failed)?
                .pop()
        } else {
            None
        };
        if let Some(column) = columns.iter_mut().find(|c| c.1 == task.state) {
            column.2.push(TaskItem { task, verdict });
        }
    }
    Ok(TasksView { columns })
}
