//! `arbiter audit verify` and `arbiter audit tail`.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

use crate::store::DEFAULT_TENANT;
use crate::store::audit::verify_chain;
use crate::store::journal::index_journal;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the hash chain; exit 1 naming the first record that does not verify.
    Verify {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Whose chain: `default` (local calls, stdio and tenant `default`) or
        /// an HTTP tenant whose workspace this is.
        #[arg(long, default_value = DEFAULT_TENANT)]
        tenant: String,
    },
    /// Show the newest records.
    Tail {
        /// How many records.
        #[arg(short = 'n', long = "lines", default_value_t = 20)]
        n: i64,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Whose chain (see `audit verify --tenant`).
        #[arg(long, default_value = DEFAULT_TENANT)]
        tenant: String,
    },
}

pub async fn run(workspace: &Path, command: AuditCommand) -> anyhow::Result<ExitCode> {
    let root = std::fs::canonicalize(workspace)?;
    let tenant = match &command {
        AuditCommand::Verify { tenant, .. } | AuditCommand::Tail { tenant, .. } => tenant.clone(),
    };
    crate::server::tenants::check_tenant_name(&tenant).map_err(anyhow::Error::msg)?;
    let store = super::open_store(&root).await?;
    // Records are committed to the journal first; bring the store up to date.
    let journal = super::tenant_journal_path(&root, &tenant);
    index_journal(store.as_ref(), &tenant, &journal).await?;
    match command {
        AuditCommand::Verify { json, .. } => {
            let total = store
                .audit_head(&tenant)
                .await?
                .map_or(0, |h| h.seq.max(0) as u64);
            let mut bar = super::progress::Progress::new("verifying the audit chain", total);
            let report = verify_chain(store.as_ref(), &tenant, &mut |n| bar.set(n)).await?;
            drop(bar);
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else if let Some(bad) = &report.first_bad {
                println!(
                    "audit chain BROKEN at seq {}: {} ({} records verified before it)",
                    bad.seq, bad.reason, report.records
                );
            } else {
                println!(
                    "audit chain OK: {} records, head seq {} hash {}",
                    report.records, report.head_seq, report.head_hash
                );
            }
            Ok(if report.first_bad.is_some() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        AuditCommand::Tail { n, json, .. } => {
            for r in store.audit_tail(&tenant, n.max(0)).await? {
                if json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    let rules = if r.rule_ids.is_empty() {
                        "-"
                    } else {
                        &r.rule_ids
                    };
                    let mut waived = if r.waiver_ids.is_empty() {
                        String::new()
                    } else {
                        format!(" waived-by:{}", r.waiver_ids)
                    };
                    if !r.task_ids.is_empty() {
                        waived.push_str(&format!(" task:{}", r.task_ids));
                    }
                    println!(
                        "{:>6} {} {:<20} {:<8} {:<14} {:<24} {} {}{waived}",
                        r.seq,
                        r.ts,
                        r.tool,
                        r.outcome,
                        r.decision,
                        rules,
                        r.client_name,
                        r.args_redacted
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
