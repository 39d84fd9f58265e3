//! `arbiter tenant add|list`: the tenants an HTTP server serves besides
//! `default` (the served workspace). Each has its own workspace, and so its
//! own files, store, audit journal and overrides; workspaces may not overlap,
//! or one tenant could reach the other's files.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::overrides::{now_unix, rfc3339};
use crate::server::tenants::{canonical_workspace, check_tenant_name, workspaces_overlap};
use crate::store::{DEFAULT_TENANT, TenantRecord};

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Register a tenant. (`--workspace` before the subcommand names the
    /// served workspace, whose store keeps the list.)
    Add {
        /// Lower-case letters, digits, `-` and `_`.
        name: String,
        /// The tenant's workspace: every path its sessions use is confined to it.
        #[arg(long, value_name = "DIR")]
        tenant_workspace: PathBuf,
        /// The tenant's policy file. Default: <tenant workspace>/.arbiter/policy.yaml
        /// if it exists, else the built-in default.
        #[arg(long, value_name = "FILE")]
        tenant_policy: Option<PathBuf>,
    },
    /// List tenants: `default` (the served workspace) and those added.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(setup: &super::Setup, command: TenantCommand) -> anyhow::Result<ExitCode> {
    let served = canonical_workspace(&setup.workspace)?;
    let store = super::open_store(&served).await?;
    match command {
        TenantCommand::Add {
            name,
            tenant_workspace,
            tenant_policy,
        } => {
            let usage = |message: String| {
                eprintln!("arbiter tenant add: {message}");
                Ok(ExitCode::from(2))
            };
            if name == DEFAULT_TENANT {
                return usage("`default` is the served workspace itself; pick another name".into());
            }
            if let Err(e) = check_tenant_name(&name) {
                return usage(e);
            }
            let workspace = canonical_workspace(&tenant_workspace)?;
            let mut taken = vec![(DEFAULT_TENANT.to_string(), served.clone())];
            for t in store.tenant_list().await? {
                if t.name == name {
                    return usage(format!("tenant `{name}` exists already ({})", t.workspace));
                }
                taken.push((t.name, PathBuf::from(t.workspace)));
            }
            if let Some((other, dir)) = taken
                .iter()
                .find(|(_, d)| workspaces_overlap(d, &workspace))
            {
                return usage(format!(
                    "the workspace {} overlaps tenant `{other}`'s {}: one could reach the \
                     other's files. Give each tenant a directory of its own, outside the others.",
                    workspace.display(),
                    dir.display()
                ));
            }
            if let Some(system) = crate::exec::plan::SYSTEM_READ_PATHS
                .iter()
                .find(|p| workspace.starts_with(p))
            {
                return usage(format!(
                    "the workspace {} is under {system}, which every sandboxed command may \
                     read: other tenants' commands could read its files. Put it elsewhere \
                     (e.g. under /srv or /home).",
                    workspace.display()
                ));
            }
            let policy = match &tenant_policy {
                Some(p) => Some(std::fs::canonicalize(p).map_err(|e| {
                    anyhow::anyhow!("cannot open the policy file {}: {e}", p.display())
                })?),
                None => None,
            };
            // The server would refuse to open the tenant on a bad policy: refuse it now.
            let tenant_setup = super::Setup {
                workspace: workspace.clone(),
                policy: policy.clone(),
            };
            tenant_setup.load_policy()?;
            let record = TenantRecord {
                name,
                workspace: workspace.display().to_string(),
                policy: policy.map(|p| p.display().to_string()),
                created_at: now_unix(),
            };
            store.tenant_add(&record).await?;
            println!(
                "tenant `{}` added: workspace {}, policy {}. Make a token for it with \
                 `arbiter token create --tenant {} --agent NAME`.",
                record.name,
                record.workspace,
                policy_label(&record),
                record.name
            );
            Ok(ExitCode::SUCCESS)
        }
        TenantCommand::List { json } => {
            let default = TenantRecord {
                name: DEFAULT_TENANT.to_string(),
                workspace: served.display().to_string(),
                policy: setup.policy_path().map(|p| p.display().to_string()),
                created_at: 0,
            };
            let all: Vec<TenantRecord> = std::iter::once(default)
                .chain(store.tenant_list().await?)
                .collect();
            for t in &all {
                if json {
                    println!("{}", serde_json::to_string(t)?);
                } else {
                    let created = if t.created_at == 0 {
                        "(served workspace)".to_string()
                    } else {
                        rfc3339(t.created_at)
                    };
                    println!(
                        "{:<16} {:<20} {}  policy: {}",
                        t.name,
                        created,
                        t.workspace,
                        policy_label(t)
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn policy_label(t: &TenantRecord) -> &str {
    t.policy
        .as_deref()
        .unwrap_or("the workspace's .arbiter/policy.yaml, else built-in")
}
