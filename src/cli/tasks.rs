//! `arbiter agents`, `arbiter task show ID`, and `arbiter task approve|reject
//! ID`: the task store from the command line, for the operator (every
//! tenant). Approving and rejecting is a person's sign-off on a risk tier 1
//! task whose quality gates passed (state `needs_review`); no agent can do it.

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::json;

use crate::store::Store;
use crate::tasks::{PerformanceRecord, now_ms, parse_id, rfc3339_ms};
use crate::tools::tasks::{EventView, PerformanceView, VerdictView};

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Print one task as JSON: the task, its spec, its history and its
    /// routing decisions with every candidate's score.
    Show {
        /// The task id (`T-12` or `12`).
        id: String,
    },
    /// Sign off a task waiting in `needs_review`: it becomes `completed`
    /// and counts as a success for the agent that did it.
    Approve {
        id: String,
        /// Why, kept in the task's history and its verdict.
        #[arg(long)]
        note: Option<String>,
    },
    /// Turn down a task waiting in `needs_review`: it goes back to the
    /// queue and counts as a failure for the agent that did it.
    Reject {
        id: String,
        #[arg(long)]
        note: Option<String>,
    },
}

async fn open(setup: &super::Setup) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    let toolbox = super::open_toolbox(setup)?;
    toolbox
        .store
        .get()
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the store: {e}"))
}

pub async fn task(setup: &super::Setup, command: TaskCommand) -> anyhow::Result<ExitCode> {
    let (id, approve, note) = match command {
        TaskCommand::Show { id } => return show(setup, id).await,
        TaskCommand::Approve { id, note } => (id, true, note),
        TaskCommand::Reject { id, note } => (id, false, note),
    };
    let Some(n) = parse_id(&id) else {
        eprintln!("arbiter: `{id}` is not a task id (T-12 or 12)");
        return Ok(ExitCode::from(2));
    };
    let store = open(setup).await?;
    let by = super::overrides::actor();
    match crate::tasks::lifecycle::review(&*store, n, approve, &by, note.as_deref()).await {
        Ok((task, perf)) => {
            println!(
                "{} {} by {by}: now {}{}.",
                task.display_id(),
                if approve { "approved" } else { "rejected" },
                task.state.as_str(),
                perf.map(|p| format!("; {}", PerformanceView::new(&p).render()))
                    .unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("arbiter: {e}\n{}", e.advice);
            Ok(ExitCode::from(1))
        }
    }
}

async fn show(setup: &super::Setup, id: String) -> anyhow::Result<ExitCode> {
    let Some(n) = parse_id(&id) else {
        eprintln!("arbiter: `{id}` is not a task id (T-12 or 12)");
        return Ok(ExitCode::from(2));
    };
    let store = open(setup).await?;
    let Some(t) = store.task_get(None, n).await? else {
        eprintln!("arbiter: there is no task {id}");
        return Ok(ExitCode::from(1));
    };
    let events = store.task_events(n).await?;
    let routing = store.task_routing(n).await?;
    let verdicts = store.task_verdicts(n).await?;
    let out = json!({
        "task_id": t.display_id(),
        "tenant": t.tenant,
        "title": t.title,
        "description": t.description,
        "task_type": t.task_type,
        "type_confidence": t.type_confidence,
        "type_source": t.type_source,
        "risk_tier": t.risk_tier,
        "tier_reason": t.tier_reason,
        "priority": t.priority,
        "required_capabilities": t.required,
        "state": t.state,
        "assigned_to": t.assigned_agent,
        "holder": t.holder,
        "progress": t.progress,
        "attempts": t.attempts,
        "lease_expires_at": t.lease_expires_at.map(rfc3339_ms),
        "submitted_by": t.submitted_by,
        "summary": t.summary,
        "spec_id": t.spec_id,
        "spec": t.spec,
        "created_at": rfc3339_ms(t.created_at),
        "updated_at": rfc3339_ms(t.updated_at),
        "claimed_at": t.claimed_at.map(rfc3339_ms),
        "completed_at": t.completed_at.map(rfc3339_ms),
        "events": events.iter().map(EventView::new).collect::<Vec<_>>(),
        "routing": routing.iter().map(|r| json!({
            "decided_at": rfc3339_ms(r.decided_at),
            "strategy": r.choice.strategy,
            "seed": r.choice.seed,
            "chosen": r.choice.chosen,
            "rationale": r.choice.rationale,
            "candidates": r.choice.candidates,
        })).collect::<Vec<_>>(),
        "verdicts": verdicts.iter().map(VerdictView::new).collect::<Vec<_>>(),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

/// `arbiter agents`: one row per agent and task type it has a record on.
pub async fn agents(setup: &super::Setup, as_json: bool) -> anyhow::Result<ExitCode> {
    let store = open(setup).await?;
    let agents = store.agent_list(None).await?;
    let performance = store.performance_list(None, None).await?;
    let record_of = |tenant: &str, name: &str| -> Vec<&PerformanceRecord> {
        performance
            .iter()
            .filter(|p| p.tenant == tenant && p.agent == name)
            .collect()
    };
    if as_json {
        for status in &agents {
            let a = &status.agent;
            let line = json!({
                "tenant": a.tenant,
                "agent": a.name,
                "capabilities": a.capabilities,
                "max_concurrent_tasks": a.max_concurrent_tasks,
                "active_tasks": status.active,
                "registered_at": rfc3339_ms(a.registered_at),
                "last_seen_at": rfc3339_ms(a.last_seen_at),
                "performance": record_of(&a.tenant, &a.name)
                    .into_iter()
                    .map(PerformanceView::new)
                    .collect::<Vec<_>>(),
            });
            println!("{line}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if agents.is_empty() {
        println!("No agents have registered (agents call agent_register).");
        return Ok(ExitCode::SUCCESS);
    }
    let now = now_ms();
    let mut rows = vec![[
        "AGENT".to_string(),
        "TENANT".to_string(),
        "SEEN".to_string(),
        "ACTIVE".to_string(),
        "TYPE".to_string(),
        "TASKS".to_string(),
        "SUCCESS".to_string(),
        "MEAN".to_string(),
    ]];
    for status in &agents {
        let a = &status.agent;
        let head = [
            a.name.clone(),
            a.tenant.clone(),
            format!("{} ago", short_duration(now - a.last_seen_at)),
            format!("{}/{}", status.active, a.max_concurrent_tasks),
        ];
        let records = record_of(&a.tenant, &a.name);
        if records.is_empty() {
            let [name, tenant, seen, active] = head;
            rows.push([
                name,
                tenant,
                seen,
                active,
                "-".into(),
                "0".into(),
                "-".into(),
                "-".into(),
            ]);
            continue;
        }
        for (i, p) in records.into_iter().enumerate() {
            let [name, tenant, seen, active] = if i == 0 {
                head.clone()
            } else {
                Default::default()
            };
            let s = p.stats;
            rows.push([
                name,
                tenant,
                seen,
                active,
                p.task_type.as_str().to_string(),
                s.attempts.to_string(),
                s.success_rate()
                    .map(|r| format!("{:.0}% ({}/{})", r * 100.0, s.successes, s.attempts))
                    .unwrap_or_else(|| "-".into()),
                s.mean_duration_ms()
                    .map(|ms| short_duration(ms as i64))
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
    }
    let widths: Vec<usize> = (0..8)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
    Ok(ExitCode::SUCCESS)
}

/// `950ms`, `12.5s`, `3m`, `2h`, `4d`.
fn short_duration(ms: i64) -> String {
    let ms = ms.max(0);
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m", ms / 60_000),
        3_600_000..86_400_000 => format!("{}h", ms / 3_600_000),
        _ => format!("{}d", ms / 86_400_000),
    }
}

#[cfg(test)]
mod tests {
    use super::short_duration;

    #[test]
    fn durations_are_short_and_readable() {
        assert_eq!(short_duration(950), "950ms");
        assert_eq!(short_duration(12_500), "12.5s");
        assert_eq!(short_duration(180_000), "3m");
        assert_eq!(short_duration(7_200_000), "2h");
        assert_eq!(short_duration(-5), "0ms");
    }
}
