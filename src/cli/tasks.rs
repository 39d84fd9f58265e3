//! `arbiter agents`, `arbiter task show|review|export ID`, and `arbiter task
//! approve|reject ID`: the task store from the command line, for the
//! operator (every tenant). Approving and rejecting is a person's sign-off on
//! a task in `needs_review` (a risk tier 1 task whose gates passed, or one
//! the model judges could not settle); no agent can do it. `review` shows
//! the verdicts and the whole judge exchange first; `export` is the task's
//! provenance as one JSON document.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{Value, json};

use crate::store::Store;
use crate::store::audit::AuditRecord;
use crate::store::journal::index_journal;
use crate::tasks::{PerformanceRecord, TaskRecord, TaskState, now_ms, parse_id, rfc3339_ms};
use crate::tools::tasks::{EventView, JudgeUsage, PerformanceView, VerdictView};

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Print one task as JSON: the task, its spec, its history, its
    /// routing decisions with every candidate's score, and its verdicts
    /// with the judges' answers.
    Show {
        /// The task id (`T-12` or `12`).
        id: String,
    },
    /// Show a task's verdicts and the whole judge exchange (requests, raw
    /// answers, parsed verdicts, tokens, cost, durations), then approve or
    /// reject it if it waits in `needs_review`: with --approve or --reject,
    /// or by answering the prompt on a terminal.
    Review {
        id: String,
        /// Approve it (as `arbiter task approve`).
        #[arg(long, conflicts_with = "reject")]
        approve: bool,
        /// Reject it (as `arbiter task reject`).
        #[arg(long)]
        reject: bool,
        /// Why, kept in the task's history and its verdict.
        #[arg(long)]
        note: Option<String>,
        /// Print the exchange as JSON (no prompt).
        #[arg(long)]
        json: bool,
    },
    /// The task's provenance: spec, agents, events, routing, gate output,
    /// judge exchanges, verdicts, and the audit records of calls that named
    /// the task, with their chain hashes.
    Export {
        id: String,
        /// One JSON document (the only format; the flag says so).
        #[arg(long)]
        json: bool,
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

fn id_of(text: &str) -> Result<i64, ExitCode> {
    parse_id(text).ok_or_else(|| {
        eprintln!("arbiter: `{text}` is not a task id (T-12 or 12)");
        ExitCode::from(2)
    })
}

pub async fn task(setup: &super::Setup, command: TaskCommand) -> anyhow::Result<ExitCode> {
    let (id, approve, note) = match command {
        TaskCommand::Show { id } => return show(setup, id).await,
        TaskCommand::Export { id, .. } => return export(setup, id).await,
        TaskCommand::Review {
            id,
            approve,
            reject,
            note,
            json,
        } => {
            let decision = match (approve, reject) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            };
            return review(setup, id, decision, note, json).await;
        }
        TaskCommand::Approve { id, note } => (id, true, note),
        TaskCommand::Reject { id, note } => (id, false, note),
    };
    let n = match id_of(&id) {
        Ok(n) => n,
        Err(code) => return Ok(code),
    };
    let store = open(setup).await?;
    decide(&*store, n, approve, note.as_deref()).await
}

/// A person's decision, as `approve`, `reject` and `review` take it.
async fn decide(
    store: &dyn Store,
    n: i64,
    approve: bool,
    note: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let by = super::overrides::actor();
    match crate::tasks::lifecycle::review(store, n, approve, &by, note).await {
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

/// The task as the CLI shows it, with everything stored about it.
async fn task_json(
    store: &dyn Store,
    t: &TaskRecord,
    with_requests: bool,
) -> anyhow::Result<Value> {
    let n = t.id;
    let events = store.task_events(n).await?;
    let routing = store.task_routing(n).await?;
    let verdicts = store.task_verdicts(n).await?;
    let arbitrations = store.task_arbitrations(n).await?;
    Ok(json!({
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
        // Files written or edited under the task, lines summed (each diff is
        // in its `changed` event).
        "files_changed": crate::tasks::changes::totals(&crate::tasks::changes::from_events(&events)),
        "routing": routing.iter().map(|r| json!({
            "decided_at": rfc3339_ms(r.decided_at),
            "strategy": r.choice.strategy,
            "seed": r.choice.seed,
            "chosen": r.choice.chosen,
            "rationale": r.choice.rationale,
            "candidates": r.choice.candidates,
        })).collect::<Vec<_>>(),
        "verdicts": VerdictView::all(&verdicts, &arbitrations, with_requests),
        "judge_usage": JudgeUsage::of(&arbitrations),
    }))
}

async fn find(store: &dyn Store, id: &str) -> anyhow::Result<Result<TaskRecord, ExitCode>> {
    let n = match id_of(id) {
        Ok(n) => n,
        Err(code) => return Ok(Err(code)),
    };
    Ok(match store.task_get(None, n).await? {
        Some(t) => Ok(t),
        None => {
            eprintln!("arbiter: there is no task {id}");
            Err(ExitCode::from(1))
        }
    })
}

async fn show(setup: &super::Setup, id: String) -> anyhow::Result<ExitCode> {
    let store = open(setup).await?;
    let t = match find(&*store, &id).await? {
        Ok(t) => t,
        Err(code) => return Ok(code),
    };
    let out = task_json(&*store, &t, false).await?;
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

/// The verdicts and judge exchange of a task, for a person to read.
fn render_review(t: &TaskRecord, views: &[VerdictView], usage: Option<&JudgeUsage>) -> String {
    let mut text = format!(
        "{} [{}] {} ({}, risk tier {}), by {}\nSummary: {}\n",
        t.display_id(),
        t.state.as_str(),
        t.title,
        t.task_type.as_str(),
        t.risk_tier,
        t.holder.as_deref().unwrap_or("-"),
        t.summary.as_deref().unwrap_or("-")
    );
    for (i, v) in views.iter().enumerate() {
        text.push_str(&format!(
            "\n#{} {} at {}\n{}\n",
            i + 1,
            v.agent,
            v.decided_at,
            v.render()
        ));
        let Some(a) = &v.judges else { continue };
        text.push_str(&format!(
            "Arbitration: gates {}, vote {} with {:.0}%{}\n",
            a.gates_verdict.as_str(),
            a.verdict.as_str(),
            a.confidence * 100.0,
            if a.needs_review { ", needs review" } else { "" }
        ));
        for e in &a.exchanges {
            text.push_str(&format!(
                "  judge {} ({} {} at {})\n",
                e.judge, e.api, e.model, e.url
            ));
            for c in &e.calls {
                text.push_str(&format!(
                    "    try {} at {} ({} ms): {}{}; tokens {}+{}, cost {:.6}\n",
                    c.attempt,
                    rfc3339_ms(c.started_at),
                    c.duration_ms,
                    match (&c.answer, &c.rule_id) {
                        (Some(x), _) => format!(
                            "{} score {:.0} confidence {:.2}: {}",
                            x.verdict.as_str(),
                            x.score,
                            x.confidence,
                            x.reasons.join("; ")
                        ),
                        (None, r) => format!(
                            "[{}] {}",
                            r.as_deref().unwrap_or("-"),
                            c.error.as_deref().unwrap_or("")
                        ),
                    },
                    c.http_status
                        .map(|s| format!(" (HTTP {s})"))
                        .unwrap_or_default(),
                    c.prompt_tokens.unwrap_or(0),
                    c.completion_tokens.unwrap_or(0),
                    c.cost
                ));
                if let Some(raw) = &c.raw_answer {
                    text.push_str(&format!("      raw answer: {}\n", raw.trim()));
                }
            }
        }
    }
    if let Some(u) = usage {
        text.push_str(&format!(
            "\nJudges in all: {} call(s), {} prompt + {} completion tokens, cost {:.6}\n",
            u.calls, u.prompt_tokens, u.completion_tokens, u.cost
        ));
    }
    text
}

async fn review(
    setup: &super::Setup,
    id: String,
    decision: Option<bool>,
    note: Option<String>,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let store = open(setup).await?;
    let t = match find(&*store, &id).await? {
        Ok(t) => t,
        Err(code) => return Ok(code),
    };
    let verdicts = store.task_verdicts(t.id).await?;
    let arbitrations = store.task_arbitrations(t.id).await?;
    let views = VerdictView::all(&verdicts, &arbitrations, true);
    let usage = JudgeUsage::of(&arbitrations);
    if as_json {
        let out = json!({
            "task_id": t.display_id(),
            "state": t.state,
            "summary": t.summary,
            "verdicts": views,
            "judge_usage": usage,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", render_review(&t, &views, usage.as_ref()));
    }
    let decision = match decision {
        Some(d) => Some(d),
        None if !as_json && t.state == TaskState::NeedsReview && std::io::stdin().is_terminal() => {
            eprint!(
                "\nApprove {} (a), reject it (r), or leave it (anything else)? ",
                t.display_id()
            );
            let mut answer = String::new();
            std::io::stdin().read_line(&mut answer)?;
            match answer.trim() {
                "a" | "approve" => Some(true),
                "r" | "reject" => Some(false),
                _ => None,
            }
        }
        None => {
            if !as_json && t.state == TaskState::NeedsReview {
                println!(
                    "\n{} waits for review: `arbiter task review {} --approve|--reject [--note TEXT]`.",
                    t.display_id(),
                    t.display_id()
                );
            }
            None
        }
    };
    match decision {
        Some(approve) => decide(&*store, t.id, approve, note.as_deref()).await,
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Whether an audit record belongs to task `display` (`T-12`): a task tool
/// called with that `task_id`.
fn names_task(r: &AuditRecord, display: &str) -> bool {
    if !r.tool.starts_with("task_") {
        return false;
    }
    serde_json::from_str::<Value>(&r.args_redacted)
        .ok()
        .and_then(|args| args.get("task_id").and_then(Value::as_str).map(parse_id))
        .flatten()
        .is_some_and(|n| Some(n) == parse_id(display))
}

async fn export(setup: &super::Setup, id: String) -> anyhow::Result<ExitCode> {
    let store = open(setup).await?;
    let t = match find(&*store, &id).await? {
        Ok(t) => t,
        Err(code) => return Ok(code),
    };
    let mut out = task_json(&*store, &t, true).await?;
    // The task's tenant's chain, brought up to date from its journal first.
    let root = std::fs::canonicalize(&setup.workspace)?;
    let journal = super::tenant_journal_path(&root, &t.tenant);
    if journal.exists() {
        index_journal(&*store, &t.tenant, &journal).await?;
    }
    let display = t.display_id();
    // Calls made under the task (linked when indexed), and the task tool
    // calls that named it.
    let mut records = store.audit_for_task(&t.tenant, t.id).await?;
    let mut after = 0;
    loop {
        let page = store.audit_page(&t.tenant, after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        records.extend(page.into_iter().filter(|r| names_task(r, &display)));
    }
    records.sort_by_key(|r| r.seq);
    records.dedup_by_key(|r| r.seq);
    let head = store.audit_head(&t.tenant).await?;
    out["provenance"] = json!({
        "exported_at": rfc3339_ms(now_ms()),
        "agents": {
            "submitted_by": t.submitted_by,
            "assigned_to": t.assigned_agent,
            "holder": t.holder,
        },
        "audit": {
            "tenant": t.tenant,
            "attributed_by": "file and terminal calls made while the agent held this task (the record's task_ids), and task tool calls that named it (task_id); each record carries its seq, prev_hash and hash in the tenant's chain (`arbiter audit verify`)",
            "chain_head": head.map(|h| json!({"seq": h.seq, "hash": h.hash})),
            "records": records,
        },
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
                "last_seen_at": (a.last_seen_at > 0).then(|| rfc3339_ms(a.last_seen_at)),
                "declared_in_policy_at": a.declared_at.map(rfc3339_ms),
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
        println!(
            "No agents have registered (agents call agent_register, or the policy declares them in tasks.agents)."
        );
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
        "SCORE".to_string(),
    ]];
    for status in &agents {
        let a = &status.agent;
        let head = [
            a.name.clone(),
            a.tenant.clone(),
            match (a.last_seen_at, a.declared_at) {
                (0, Some(_)) => "never (declared)".to_string(),
                (seen, Some(_)) => format!("{} ago (declared)", short_duration(now - seen)),
                (seen, None) => format!("{} ago", short_duration(now - seen)),
            },
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
                s.mean_score()
                    .map(|m| format!("{m:.1} ({})", s.scored))
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
    }
    let widths: Vec<usize> = (0..9)
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
