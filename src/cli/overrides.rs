//! `arbiter override list|show|approve|deny|revoke`: a person decides on the
//! requests agents made with `override_request`. This runs outside every
//! agent's reach: no MCP tool approves, and sandboxed commands cannot see the
//! store (`.arbiter/` is hidden from them). Every decision is stored with an
//! event and appended to the audit chain.

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use serde_json::json;

use crate::overrides::{
    self, OverrideRecord, OverrideState, approval_minutes, display_id, now_unix, parse_id, rfc3339,
};
use crate::store::audit::{AuditEntry, arguments_sha256, redact_arguments};
use crate::store::{AuditChain, OverrideDecision, Store};

#[derive(Debug, Subcommand)]
pub enum OverrideCommand {
    /// List requests, newest first (default: pending ones).
    List {
        /// pending, approved, denied, expired, revoked or all.
        #[arg(long, default_value = "pending")]
        state: String,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Show one request in full.
    Show { id: String },
    /// Approve a pending request: the rule is waived for that agent and scope.
    Approve {
        id: String,
        /// Why, for the record (the agent sees it).
        #[arg(long)]
        note: Option<String>,
        /// How long the approval lasts (default: what the agent asked for, else
        /// the policy's default of 24 hours; never beyond overrides.max_minutes).
        #[arg(long)]
        minutes: Option<u64>,
    },
    /// Deny a pending request.
    Deny {
        id: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// End an approval before it expires.
    Revoke {
        id: String,
        #[arg(long)]
        note: Option<String>,
    },
}

/// Who is deciding: the local user.
fn actor() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid {}", rustix::process::getuid().as_raw()));
    format!("cli:{user}")
}

pub async fn run(setup: &super::Setup, command: OverrideCommand) -> anyhow::Result<ExitCode> {
    let (toolbox, audit) = super::open_workspace(setup)?;
    let store = toolbox
        .store
        .get()
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the store: {e}"))?;
    let policy = toolbox.policy.load();
    let now = now_unix();
    match command {
        OverrideCommand::List { state, json } => {
            let stored = match state.as_str() {
                "all" => None,
                // Expired requests are stored as approved.
                "expired" => Some("approved"),
                s if OverrideState::parse(s).is_some() => Some(s),
                other => {
                    eprintln!(
                        "arbiter override list: unknown state `{other}` (pending, approved, denied, expired, revoked, all)"
                    );
                    return Ok(ExitCode::from(2));
                }
            };
            let records = store.override_list(None, stored, 1000).await?;
            let wanted =
                |r: &&OverrideRecord| state == "all" || r.state_at(now).as_str() == state.as_str();
            let shown: Vec<&OverrideRecord> = records.iter().filter(wanted).collect();
            if json {
                for r in &shown {
                    println!("{}", serde_json::to_string(&view(r, now))?);
                }
            } else {
                if shown.is_empty() {
                    println!("no {state} override requests");
                }
                for r in shown {
                    println!("{}", line(r, now));
                }
                print_caws_waivers(&toolbox, now);
            }
            Ok(ExitCode::SUCCESS)
        }
        OverrideCommand::Show { id } => {
            let record = find(store.as_ref(), &id).await?;
            println!("{}", serde_json::to_string_pretty(&view(&record, now))?);
            Ok(ExitCode::SUCCESS)
        }
        OverrideCommand::Approve { id, note, minutes } => {
            let record = find(store.as_ref(), &id).await?;
            let minutes = match approval_minutes(
                minutes,
                record.requested_minutes,
                policy.override_settings(),
            ) {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("arbiter override approve: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            if let crate::policy::Waivability::Never(why) = policy.waivability(&record.rule_id) {
                eprintln!(
                    "arbiter override approve: {} cannot be waived under the policy in force: {why}",
                    record.rule_id
                );
                return Ok(ExitCode::from(1));
            }
            let expires_at = now + (minutes as i64) * 60;
            decide(
                store.as_ref(),
                &audit,
                toolbox.root.path(),
                &toolbox.store,
                &record,
                &["pending"],
                "approved",
                note.as_deref(),
                Some(expires_at),
                now,
            )
            .await
        }
        OverrideCommand::Deny { id, note } => {
            let record = find(store.as_ref(), &id).await?;
            decide(
                store.as_ref(),
                &audit,
                toolbox.root.path(),
                &toolbox.store,
                &record,
                &["pending"],
                "denied",
                note.as_deref(),
                None,
                now,
            )
            .await
        }
        OverrideCommand::Revoke { id, note } => {
            let record = find(store.as_ref(), &id).await?;
            decide(
                store.as_ref(),
                &audit,
                toolbox.root.path(),
                &toolbox.store,
                &record,
                &["approved"],
                "revoked",
                note.as_deref(),
                None,
                now,
            )
            .await
        }
    }
}

async fn find(store: &dyn Store, id: &str) -> anyhow::Result<OverrideRecord> {
    let n = parse_id(id).with_context(|| format!("`{id}` is not an override id (OVR-12)"))?;
    store
        .override_get(None, n)
        .await?
        .with_context(|| format!("there is no override {}", display_id(n)))
}

#[allow(clippy::too_many_arguments)]
async fn decide(
    store: &dyn Store,
    audit: &AuditChain,
    store_root: &std::path::Path,
    lazy: &std::sync::Arc<crate::store::LazyStore>,
    record: &OverrideRecord,
    from: &[&str],
    to: &str,
    note: Option<&str>,
    expires_at: Option<i64>,
    now: i64,
) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let actor = actor();
    // The decision joins the chain of the tenant that asked.
    let tenant_audit;
    let audit = if record.tenant == audit.tenant() {
        audit
    } else {
        let journal = super::tenant_journal_path(store_root, &record.tenant);
        tenant_audit = AuditChain::open(record.tenant.clone(), &journal, lazy.clone())?;
        &tenant_audit
    };
    let changed = store
        .override_decide(&OverrideDecision {
            id: record.id,
            from,
            to,
            actor: &actor,
            note,
            expires_at,
            now,
        })
        .await?;
    let id = record.display_id();
    let (outcome, detail, code) = match &changed {
        Some(r) => {
            let until = r
                .expires_at
                .filter(|_| to == "approved")
                .map(|e| format!(" until {}", rfc3339(e)))
                .unwrap_or_default();
            let text = format!(
                "{id} {to} by {actor}{until}: {} for agent {} (scope: {})",
                r.rule_id,
                r.agent,
                r.scope.describe()
            );
            ("ok", text, ExitCode::SUCCESS)
        }
        None => {
            let state = record.state_at(now).as_str();
            (
                "failed",
                format!(
                    "{id} is {state}; only a request that is {} can be {to}",
                    from.join(" or ")
                ),
                ExitCode::from(1),
            )
        }
    };
    let mut args = serde_json::Map::new();
    args.insert("override_id".into(), json!(id));
    if let Some(note) = note {
        args.insert("note".into(), json!(note));
    }
    if let Some(e) = expires_at {
        args.insert("expires_at".into(), json!(rfc3339(e)));
    }
    let verb = match to {
        "approved" => "approve",
        "denied" => "deny",
        _ => "revoke",
    };
    audit
        .append(AuditEntry {
            ts: rfc3339(now),
            session_id: format!("cli-{}", std::process::id()),
            client_name: actor.clone(),
            tool: format!("arbiter override {verb}"),
            args_sha256: arguments_sha256(&args),
            args_redacted: redact_arguments(&args),
            decision: "none".into(),
            rule_ids: record.rule_id.clone(),
            outcome: outcome.into(),
            detail: detail.clone(),
            duration_us: started.elapsed().as_micros() as i64,
            waiver_ids: if changed.is_some() {
                id.clone()
            } else {
                String::new()
            },
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if changed.is_some() {
        println!("{detail}");
    } else {
        eprintln!("arbiter override {verb}: {detail}");
    }
    Ok(code)
}

/// The workspace's CAWS waiver files, and whether each lifts anything now.
fn print_caws_waivers(toolbox: &crate::tools::Toolbox, now: i64) {
    if !toolbox.caws_waivers {
        return;
    }
    let (waivers, problems) = overrides::caws::read_dir(&toolbox.root);
    if waivers.is_empty() && problems.is_empty() {
        return;
    }
    println!("CAWS waiver files ({}):", overrides::caws::WAIVER_DIR);
    for w in waivers {
        let standing = if w.in_force(now) {
            "in force"
        } else if w.approvers.is_empty() {
            "not honoured: no approvers"
        } else if w.expires_at <= now {
            "expired"
        } else {
            "not honoured: status is not active"
        };
        let delta = w
            .delta
            .map(|d| format!(" budget +{} files +{} lines", d.max_files, d.max_loc))
            .unwrap_or_default();
        println!(
            "{:<8} {standing:<34} rules={} until {}{delta}  {}",
            w.id,
            if w.rule_ids.is_empty() {
                "(none arbiter knows)".to_string()
            } else {
                w.rule_ids.join(",")
            },
            rfc3339(w.expires_at),
            overrides::one_line(&w.title, 80)
        );
    }
    for (file, problem) in problems {
        println!("{file:<8} ignored: {problem}");
    }
}

fn view(r: &OverrideRecord, now: i64) -> serde_json::Value {
    json!({
        "override_id": r.display_id(),
        "state": r.state_at(now).as_str(),
        "tenant": r.tenant,
        "agent": r.agent,
        "session_id": r.session_id,
        "rule_id": r.rule_id,
        "reason": r.reason,
        "scope": r.scope,
        "requested_minutes": r.requested_minutes,
        "requested_at": rfc3339(r.created_at),
        "decided_at": r.decided_at.map(rfc3339),
        "decided_by": r.decided_by,
        "note": r.note,
        "expires_at": r.expires_at.map(rfc3339),
    })
}

fn line(r: &OverrideRecord, now: i64) -> String {
    let state = r.state_at(now);
    let until = match (state, r.expires_at) {
        (OverrideState::Approved | OverrideState::Expired, Some(e)) => {
            format!(" until {}", rfc3339(e))
        }
        _ => String::new(),
    };
    format!(
        "{:<8} {:<9} {:<12} agent={} requested={} scope: {}{until}\n         reason: {}",
        r.display_id(),
        state.as_str(),
        r.rule_id,
        r.agent,
        rfc3339(r.created_at),
        r.scope.describe(),
        overrides::one_line(&r.reason, 200),
    )
}
