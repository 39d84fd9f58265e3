//! `arbiter doctor`: check the policy, the store, the command sandbox and the
//! disk of this machine and workspace, and say how to fix what fails. The
//! sandbox is checked by running a real command through it, the way a tool
//! call would, so what it reports is what commands get.

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

    match super::open_store(&std::path::absolute(&setup.workspace)?).await {
        Ok(store) => match store.audit_head(crate::store::DEFAULT_TENANT).await {
            Ok(head) => report.ok(
                "store",
                format!(
                    "SQLite under {}/.arbiter ({} audit records indexed)",
                    setup.workspace.display(),
                    head.map_or(0, |h| h.seq)
                ),
            ),
            Err(e) => report.fail(
                "store",
                e,
                "move .arbiter/arbiter.db aside; the audit journal re-indexes it",
            ),
        },
        Err(e) => report.fail(
            "store",
            e,
            "check that the workspace is writable and .arbiter/ is not a file",
        ),
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

    if report.failures == 0 {
        println!("all checks passed");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{} check(s) failed", report.failures);
        Ok(ExitCode::from(1))
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
