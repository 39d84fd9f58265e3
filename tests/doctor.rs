//! `arbiter doctor` on this machine: every check runs for real (the sandbox
//! check runs a command in the sandbox), and a broken policy fails with its place.

mod common;

use common::*;

#[test]
fn doctor_passes_on_a_healthy_workspace_and_checks_the_sandbox_for_real() {
    let s = Scratch::new();
    let (code, out, err) = run_cli(&s.ws(), &["doctor"]);
    assert_eq!(code, 0, "{out}\n{err}");
    for check in [
        "ok    policy:",
        "ok    store:",
        "ok    sandbox:",
        "ok    disk:",
    ] {
        assert!(out.contains(check), "{check} missing:\n{out}");
    }
    assert!(out.contains("every layer is in force"), "{out}");
    assert!(out.ends_with("all checks passed\n"), "{out}");
}

#[test]
fn doctor_fails_on_a_broken_policy_and_says_where_and_how_to_fix_it() {
    let s = Scratch::new();
    let bad = s.dir.path().join("bad.yaml");
    std::fs::write(&bad, "version: 1\npaths:\n  rulez: []\n").unwrap();
    let (code, out, _) = run_cli(&s.ws(), &["doctor", "--policy", bad.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL  policy:") && out.contains("bad.yaml:3:"),
        "{out}"
    );
    assert!(out.contains("fix: "), "{out}");
    assert!(out.contains("1 check(s) failed"), "{out}");
}

#[test]
fn doctor_checks_that_each_client_configuration_can_start_the_binary() {
    let s = Scratch::new();
    // Claude Code's project file names this very binary: fine.
    let good = serde_json::json!({"mcpServers": {"arbiter": {
        "command": BIN, "args": ["serve", "--workspace", "."]}}});
    s.write(".mcp.json", &good.to_string());
    let (code, out, err) = run_cli(&s.ws(), &["doctor"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(&format!("`arbiter` starts {BIN}")), "{out}");
    // Cursor's names a binary that is not there: a failure, with the fix.
    let bad = serde_json::json!({"mcpServers": {"arbiter": {
        "command": "/nonexistent/bin/arbiter", "args": ["serve"]}}});
    s.write(".cursor/mcp.json", &bad.to_string());
    let (code, out, _) = run_cli(&s.ws(), &["doctor"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL  clients:") && out.contains("/nonexistent/bin/arbiter"),
        "{out}"
    );
    assert!(out.contains("absolute path"), "{out}");
    assert!(out.contains("1 check(s) failed"), "{out}");
}
