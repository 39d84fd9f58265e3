//! `arbiter policy check|test|show`: the policy from the command line, through
//! the same code the server uses.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{Value, json};

use super::progress::Progress;
use crate::policy::file::{
    BUILT_IN_SOURCE, DEFAULT_POLICY_YAML, PolicyErrors, load_policy_file_checked,
    parse_policy_checked,
};
use crate::tools::check::CheckError;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Print the decision for one tool call as JSON; exit 0 when allowed, 1
    /// when refused (deny or needs_override), 2 on bad usage.
    Check {
        /// Tool name, e.g. run_terminal_cmd or file_write.
        #[arg(long)]
        tool: String,
        /// Arguments as a JSON object, e.g. '{"command":"git push"}'.
        #[arg(long, default_value = "{}")]
        args: String,
    },
    /// Load a policy file and run every rule's examples; exit 1 on any problem.
    Test {
        /// The file to test. Default: the policy in force (see --policy).
        file: Option<PathBuf>,
    },
    /// Print the effective policy (every default filled in) as JSON.
    Show,
}

pub async fn run(setup: &super::Setup, command: PolicyCommand) -> anyhow::Result<ExitCode> {
    match command {
        PolicyCommand::Check { tool, args } => check(setup, &tool, &args).await,
        PolicyCommand::Test { file } => Ok(test(setup, file)),
        PolicyCommand::Show => {
            let policy = setup.load_policy()?;
            println!("{}", serde_json::to_string_pretty(policy.effective())?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn check(setup: &super::Setup, tool: &str, args: &str) -> anyhow::Result<ExitCode> {
    let args = match serde_json::from_str::<Value>(args) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Ok(usage("--args must be a JSON object")),
        Err(e) => return Ok(usage(&format!("--args is not valid JSON: {e}"))),
    };
    let toolbox = super::open_toolbox(setup)?;
    let source = toolbox.policy.load().source().to_string();
    let out = match toolbox.decide(tool, &args).await {
        Ok(decision) => {
            let allowed = decision.is_allowed();
            let mut out = serde_json::to_value(&decision)?;
            out["tool"] = json!(tool);
            out["policy"] = json!(source);
            println!("{}", serde_json::to_string_pretty(&out)?);
            return Ok(if allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        Err(CheckError::Invalid(message)) => return Ok(usage(&message)),
        Err(CheckError::Refused(e)) => json!({
            "tool": tool,
            "decision": "deny",
            "matched": [{"id": e.rule_id, "decision": "deny", "justification": e.message, "advice": e.advice}],
            "policy": source,
        }),
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::from(1))
}

fn test(setup: &super::Setup, file: Option<PathBuf>) -> ExitCode {
    // Load without the examples, then run them with a progress bar.
    let result = match file.or_else(|| setup.policy_path()) {
        Some(path) => load_policy_file_checked(&path, false),
        None => parse_policy_checked(DEFAULT_POLICY_YAML, BUILT_IN_SOURCE, false),
    }
    .and_then(|policy| {
        let mut progress = Progress::new("checking examples", policy.example_count() as u64);
        let failures = policy.check_examples_with(&mut |done| progress.set(done as u64));
        drop(progress);
        if failures.is_empty() {
            Ok(policy)
        } else {
            Err(PolicyErrors(failures))
        }
    });
    match result {
        Ok(policy) => {
            println!(
                "OK: {} ({} rules, {} examples, all behave as they claim)",
                policy.source(),
                policy.rule_count(),
                policy.example_count()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors.0 {
                println!("FAIL: {e}");
            }
            println!("{} problem(s)", errors.0.len());
            ExitCode::from(1)
        }
    }
}

fn usage(message: &str) -> ExitCode {
    eprintln!("arbiter policy: {message}");
    ExitCode::from(2)
}
