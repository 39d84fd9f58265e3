//! `arbiter override list|show|approve|deny|revoke`: a person decides on the
//! requests agents made with `override_request`. This runs outside every
//! agent's reach: no MCP tool approves, and sandboxed commands cannot see the
//! store (`.arbiter/` is hidden from them). Every decision is stored with an
//! event and appended to the audit chain.

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use crate::overrides::decide::{DecideError, Decision, Verdict, decide};
use crate::overrides::{
    self, OverrideRecord, OverrideState, display_id, now_unix, parse_id, rfc3339,
};
use crate::store::{AuditChain, Store};

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
pub(crate) fn actor() -> String {
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
                    println!("{}", serde_json::to_string(&r.view(now))?);
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
            println!("{}", serde_json::to_string_pretty(&record.view(now))?);
            Ok(ExitCode::SUCCESS)
        }
        OverrideCommand::Approve { id, note, minutes } => {
            let verdict = Verdict::Approve { minutes };
            decide_cli(&toolbox, &audit, store.as_ref(), &id, verdict, note, now).await
        }
        OverrideCommand::Deny { id, note } => {
            decide_cli(
                &toolbox,
                &audit,
                store.as_ref(),
                &id,
                Verdict::Deny,
                note,
                now,
            )
            .await
        }
        OverrideCommand::Revoke { id, note } => {
            decide_cli(
                &toolbox,
                &audit,
                store.as_ref(),
                &id,
                Verdict::Revoke,
                note,
                now,
            )
            .await
        }
    }
}

/// Decide from the command line; the record joins the chain of the tenant
/// that asked. Exit 0 done, 1 not in a state for it, 2 not allowed.
async fn decide_cli(
    toolbox: &crate::tools::Toolbox,
    audit: &AuditChain,
    store: &dyn Store,
    id: &str,
    verdict: Verdict,
    note: Option<String>,
    now: i64,
) -> anyhow::Result<ExitCode> {
    let record = find(store, id).await?;
    let tenant_audit;
    let audit = if record.tenant == audit.tenant() {
        audit
    } else {
        tenant_audit =
            super::open_chain(toolbox.root.path(), &record.tenant, toolbox.store.clone())?;
        &tenant_audit
    };
    let policy = toolbox.policy.load();
    let verb = verdict.verb();
    let actor = actor();
    let decision = Decision {
        verdict,
        actor: &actor,
        note: note.as_deref(),
        now,
    };
    match decide(store, audit, &policy, &record, decision).await {
        Ok((_, said)) => {
            println!("{said}");
            Ok(ExitCode::SUCCESS)
        }
        Err(DecideError::WrongState(said)) => {
            eprintln!("arbiter override {verb}: {said}");
            Ok(ExitCode::from(1))
        }
        Err(DecideError::NotAllowed(said)) => {
            eprintln!("arbiter override {verb}: {said}");
            Ok(ExitCode::from(2))
        }
        Err(e @ DecideError::Store(_)) => Err(e.into()),
    }
}

async fn find(store: &dyn Store, id: &str) -> anyhow::Result<OverrideRecord> {
    let n = parse_id(id).with_context(|| format!("`{id}` is not an override id (OVR-12)"))?;
    store
        .override_get(None, n)
        .await?
        .with_context(|| format!("there is no override {}", display_id(n)))
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
