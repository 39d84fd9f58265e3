//! `arbiter doctor`: check the policy, the store, the command sandbox and the
//! disk of this machine and workspace, and say how to fix what fails. The
//! sandbox is checked by running a real command through it, the way a tool
//! call would, so what it reports is what commands get.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::exec::jobs::JobTable;
use crate::tools::terminal::{CommandSession, RunTerminalCmdInput};

/// Free space below which the workspace's disk is reported.
const LOW_DISK_BYTES: u64 = 1 << 30;

struct Report {
    failures: usize,
}

impl Report {
    fn ok(&self, what: &str, detail: impl std::fmt::Display) {
        println!("ok    {what}: {detail}");
    }

    fn fail(&mut self, what: &str, detail: impl std::fmt::Display, fix: &str) {
        self.failures += 1;
        println!("FAIL  {what}: {detail}\n      fix: {fix}");
    }
}

/// The role the server connects as (`--db`): row-level security holds only
/// for a role that is not a superuser, has no BYPASSRLS and does not own the
/// tables; the server refuses to start on any other.
async fn check_application_role(report: &mut Report, url: &str) {
    let checked = match crate::store::PgStore::connect(url).await {
        Ok(store) => {
            let checked = store.check_application_role().await;
            store.pool().close().await;
            checked
        }
        Err(e) => Err(e),
    };
    match checked {
        Ok(()) => report.ok(
            "database role",
            "not a superuser, no BYPASSRLS, not the tables' owner: row-level security holds for it",
        ),
        Err(e) => report.fail(
            "database role",
            e,
            "give --db the application role's URL (tools/pg/setup.sh makes `arbiter_app`) and \
             keep the owner's for --db-owner (README, PostgreSQL)",
        ),
    }
}

pub async fn run(setup: &super::Setup) -> anyhow::Result<ExitCode> {
    let mut report = Report { failures: 0 };

    let policy = match setup.load_policy() {
        Ok(policy) if !policy.check_examples().is_empty() => {
            let failures: Vec<String> = policy
                .check_examples()
                .iter()
                .map(|e| e.to_string())
                .collect();
            report.fail(
                "policy",
                failures.join("; "),
                "correct the rules or their examples (`arbiter policy test` lists them)",
            );
            Some(policy)
        }
        Ok(policy) => {
            report.ok(
                "policy",
                format!(
                    "{} ({} rules, {} examples pass, sandbox mode {})",
                    policy.source(),
                    policy.rule_count(),
                    policy.example_count(),
                    sandbox_mode_name(&policy)
                ),
            );
            Some(policy)
        }
        Err(e) => {
            report.fail(
                "policy",
                format!("{e:#}"),
                "correct the file at the place shown (`arbiter policy test FILE` lists every problem)",
            );
            None
        }
    };

    let root = std::path::absolute(&setup.workspace)?;
    let described = super::store_description(&root);
    let postgres = super::uses_postgres();
    let failures_before = report.failures;
    match super::open_store(&root).await {
        Ok(store) => match store.audit_head(crate::store::DEFAULT_TENANT).await {
            Ok(head) => report.ok(
                "store",
                format!(
                    "{described} ({} audit records indexed)",
                    head.map_or(0, |h| h.seq)
                ),
            ),
            Err(e) => report.fail(
                "store",
                format!("{described}: {e}"),
                if postgres {
                    "check that the database is up and migrated (`arbiter db migrate`)"
                } else {
                    "move .arbiter/arbiter.db aside; the audit journal re-indexes it"
                },
            ),
        },
        Err(e) => report.fail(
            "store",
            format!("{described}: {e}"),
            if postgres {
                "check the URL, that the server is up and the role may connect (README, PostgreSQL)"
            } else {
                "check that the workspace is writable and .arbiter/ is not a file"
            },
        ),
    }

    // (A database the store check failed on says nothing about roles yet.)
    if let Some(url) = super::Database::get()
        .url
        .as_deref()
        .filter(|u| crate::store::PgStore::is_url(u) && report.failures == failures_before)
    {
        check_application_role(&mut report, url).await;
    }

    match probe_sandbox().await {
        Ok(missing) if missing.is_empty() => report.ok(
            "sandbox",
            "every layer is in force (PID, mount and network namespaces, Landlock, seccomp, no capabilities, rlimits, process limit)",
        ),
        Ok(missing) => {
            let strict = policy.as_ref().is_some_and(|p| sandbox_mode_name(p) == "strict");
            let detail = format!("missing: {}", missing.join("; "));
            if strict {
                report.fail(
                    "sandbox",
                    detail,
                    "commands will be refused (SANDBOX-001): enable the layer in the kernel, or set `sandbox: {mode: best_effort}` in the policy",
                );
            } else {
                report.ok("sandbox", format!("{detail} (best_effort: commands run without them)"));
            }
        }
        Err(e) => report.fail(
            "sandbox",
            e,
            "run `ARBITER_LOG=debug arbiter doctor` and read the sandbox helper's error",
        ),
    }

    match rustix::fs::statvfs(&setup.workspace) {
        Ok(st) => {
            let free = st.f_bavail.saturating_mul(st.f_frsize);
            let detail = format!("{} MiB free on the workspace's file system", free >> 20);
            if free < LOW_DISK_BYTES {
                report.fail(
                    "disk",
                    detail,
                    "free space: atomic writes need room for a second copy of each file",
                );
            } else {
                report.ok("disk", detail);
            }
        }
        Err(e) => report.fail("disk", e, "check that the workspace exists"),
    }

    check_clients(&mut report, &root);

    if report.failures == 0 {
        println!("all checks passed");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{} check(s) failed", report.failures);
        Ok(ExitCode::from(1))
    }
}

/// Client configurations that may start arbiter: the workspace's own (Claude
/// Code, Cursor, VS Code) and the user's Claude Desktop file.
fn client_configs(root: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = [".mcp.json", ".cursor/mcp.json", ".vscode/mcp.json"]
        .iter()
        .map(|p| root.join(p))
        .collect();
    if let Some(home) = std::env::var_os("HOME") {
        let home = PathBuf::from(home);
        paths.push(home.join(".config/Claude/claude_desktop_config.json"));
        paths.push(home.join("Library/Application Support/Claude/claude_desktop_config.json"));
    }
    paths.into_iter().filter(|p| p.is_file()).collect()
}

/// Where `command` leads: itself when it has a slash, else the first match on `PATH`.
fn resolve_command(command: &str, path_var: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if command.contains('/') {
        let p = PathBuf::from(command);
        return runnable(&p).then_some(p);
    }
    std::env::split_paths(path_var?)
        .map(|dir| dir.join(command))
        .find(|p| runnable(p))
}

/// The `command` of every server entry (`mcpServers` or VS Code's `servers`)
/// that runs arbiter, by entry name.
fn arbiter_commands(config: &serde_json::Value) -> Vec<(String, String)> {
    let servers = config
        .get("mcpServers")
        .or_else(|| config.get("servers"))
        .and_then(serde_json::Value::as_object);
    servers
        .into_iter()
        .flatten()
        .filter_map(|(name, entry)| {
            let command = entry.get("command")?.as_str()?;
            let runs_arbiter = Path::new(command)
                .file_name()
                .is_some_and(|f| f == "arbiter")
                || name.contains("arbiter");
            runs_arbiter.then(|| (name.clone(), command.to_string()))
        })
        .collect()
}

/// Whether the clients configured here can start this binary.
fn check_clients(report: &mut Report, root: &Path) {
    let path_var = std::env::var_os("PATH");
    match resolve_command("arbiter", path_var.as_deref()) {
        Some(found) => report.ok("clients", format!("`arbiter` on PATH is {}", found.display())),
        None => report.ok(
            "clients",
            "`arbiter` is not on PATH: client configurations must name the binary by its absolute path (`arbiter init` prints them so)",
        ),
    }
    for config in client_configs(root) {
        let parsed = std::fs::read_to_string(&config)
            .map_err(|e| e.to_string())
            .and_then(|text| {
                serde_json::from_str::<serde_json::Value>(&text).map_err(|e| e.to_string())
            });
        let parsed = match parsed {
            Ok(parsed) => parsed,
            Err(e) => {
                report.fail(
                    "clients",
                    format!("{}: {e}", config.display()),
                    "fix the JSON (`arbiter init` prints a working entry)",
                );
                continue;
            }
        };
        for (name, command) in arbiter_commands(&parsed) {
            match resolve_command(&command, path_var.as_deref()) {
                Some(found) => report.ok(
                    "clients",
                    format!("{} `{name}` starts {}", config.display(), found.display()),
                ),
                None => report.fail(
                    "clients",
                    format!(
                        "{} `{name}` names `{command}`, which is not a runnable file{}",
                        config.display(),
                        if command.contains('/') { "" } else { " on PATH" }
                    ),
                    "put the binary's absolute path in `command` (`arbiter init` prints it), or install arbiter on PATH",
                ),
            }
        }
    }
}

fn sandbox_mode_name(policy: &crate::policy::Policy) -> &'static str {
    match policy.sandbox().mode() {
        crate::policy::sandbox::SandboxMode::Strict => "strict",
        crate::policy::sandbox::SandboxMode::BestEffort => "best_effort",
    }
}

/// Run `true` in the sandbox in a scratch workspace, in best-effort mode, and
/// return the layers that were missing.
async fn probe_sandbox() -> anyhow::Result<Vec<String>> {
    let scratch = tempfile::Builder::new()
        .prefix("arbiter-doctor-")
        .tempdir()?;
    let workspace = scratch.path().join("ws");
    std::fs::create_dir(&workspace)?;
    let policy = scratch.path().join("policy.yaml");
    std::fs::write(&policy, "version: 1\nsandbox:\n  mode: best_effort\n")?;
    let setup = super::Setup {
        workspace,
        policy: Some(policy),
    };
    let toolbox = super::open_toolbox(&setup)?;
    let jobs = JobTable::new(CancellationToken::new());
    let tracker = TaskTracker::new();
    let session = CommandSession {
        jobs: &jobs,
        tracker: &tracker,
        cancel: CancellationToken::new(),
    };
    let input = RunTerminalCmdInput {
        command: "true".to_string(),
        is_background: None,
        explanation: None,
        timeout_ms: Some(10_000),
        cwd: None,
    };
    let output = toolbox
        .run_terminal_cmd(input, session, None)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.error.render()))?;
    if output.exit_code != Some(0) {
        anyhow::bail!("`true` ended with {:?} in the sandbox", output.exit_code);
    }
    tracker.close();
    tracker.wait().await;
    Ok(output.sandbox_missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_resolve_by_path_or_on_path_and_entries_that_run_arbiter_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("arbiter");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::join_paths([Path::new("/nonexistent"), dir.path()]).unwrap();
        assert_eq!(resolve_command("arbiter", Some(&path)), Some(bin.clone()));
        assert_eq!(
            resolve_command(bin.to_str().unwrap(), None),
            Some(bin.clone())
        );
        assert_eq!(resolve_command("arbiter", None), None);
        assert_eq!(resolve_command("/nonexistent/arbiter", Some(&path)), None);
        let config = serde_json::json!({"mcpServers": {
            "arbiter": {"command": "/opt/x/arbiter", "args": ["serve"]},
            "other": {"command": "node"},
            "remote": {"type": "http", "url": "http://127.0.0.1:8787/mcp"}
        }});
        assert_eq!(
            arbiter_commands(&config),
            vec![("arbiter".to_string(), "/opt/x/arbiter".to_string())]
        );
    }
}
