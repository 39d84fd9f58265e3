//! `arbiter init`: put a policy in the workspace and show how each client
//! starts the server. It never replaces a policy unless told to.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::ValueEnum;

/// The shipped policies, as written in `policies/`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Profile {
    /// Work freely inside the workspace; ask before pushing or deleting recursively.
    Default,
    /// An allowlist of commands; CI and build files need an override.
    Strict,
    /// For CI jobs: build and test commands only, no pushing.
    Ci,
}

impl Profile {
    fn yaml(self) -> &'static str {
        match self {
            Profile::Default => crate::policy::file::DEFAULT_POLICY_YAML,
            Profile::Strict => include_str!("../../policies/strict.yaml"),
            Profile::Ci => include_str!("../../policies/ci.yaml"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Profile::Default => "default",
            Profile::Strict => "strict",
            Profile::Ci => "ci",
        }
    }
}

pub fn run(workspace: &Path, profile: Profile, force: bool) -> anyhow::Result<ExitCode> {
    let root = std::fs::canonicalize(workspace)
        .with_context(|| format!("cannot open the workspace {}", workspace.display()))?;
    let dir = super::state_dir(&root)?;
    let policy = dir.join("policy.yaml");
    if policy.exists() && !force {
        eprintln!(
            "arbiter init: {} exists; it was left as it is (--force replaces it)",
            policy.display()
        );
        return Ok(ExitCode::from(1));
    }
    // Check it loads before writing it, so a workspace never gets a policy
    // the server would refuse.
    crate::policy::file::parse_policy(profile.yaml(), profile.name())
        .map_err(|e| anyhow::anyhow!("the shipped {} policy does not load: {e}", profile.name()))?;
    write_new(&dir, &policy, profile.yaml(), force)
        .with_context(|| format!("cannot write {}", policy.display()))?;
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.to_str().map(str::to_string))
        .unwrap_or_else(|| "arbiter".to_string());
    let ws = root.display().to_string();
    println!(
        "wrote {} (the {} policy; `arbiter policy show` prints it with defaults filled in)",
        policy.display(),
        profile.name()
    );
    let server = serde_json::json!({"command": exe, "args": ["serve", "--workspace", ws]});
    let mut vscode = server.clone();
    vscode["type"] = "stdio".into();
    println!("\nClaude Code:\n  claude mcp add arbiter -- {exe} serve --workspace {ws}");
    println!(
        "\nClaude Desktop (claude_desktop_config.json), Cursor (.cursor/mcp.json), a project's .mcp.json:\n{}",
        serde_json::to_string_pretty(&serde_json::json!({"mcpServers": {"arbiter": server}}))?
    );
    println!(
        "\nVS Code (.vscode/mcp.json):\n{}",
        serde_json::to_string_pretty(&serde_json::json!({"servers": {"arbiter": vscode}}))?
    );
    println!("\nCheck the machine with: {exe} --workspace {ws} doctor");
    Ok(ExitCode::SUCCESS)
}

/// Write `text` to `path` whole or not at all (temp file, fsync, rename);
/// without `force`, never over a file that appeared meanwhile.
fn write_new(dir: &Path, path: &Path, text: &str, force: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    if force {
        tmp.persist(path).map_err(|e| e.error)?;
    } else {
        tmp.persist_noclobber(path).map_err(|e| e.error)?;
    }
    std::fs::File::open(dir)?.sync_all()
}
