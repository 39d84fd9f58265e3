//! Progress of long CLI work when stderr is not a terminal (as in CI): plain
//! lines on stderr, stdout left to what scripts read. (On a terminal the same
//! code draws an `indicatif` bar; a test has no terminal to look at.)

mod common;

use common::*;
use serde_json::Value;

#[test]
fn db_migrate_says_each_migration_it_applies_and_nothing_for_the_rest() {
    let s = Scratch::new();
    assert_migrates_once(&s.ws(), &[], "SQLite", "sqlite");
}

/// A policy with `rules` path rules of 100 examples each.
fn big_policy(s: &Scratch, rules: usize) -> String {
    let mut yaml = String::from("version: 1\npaths:\n  rules:\n");
    for r in 0..rules {
        yaml.push_str(&format!(
            "    - id: BIG-{r}\n      decision: deny\n      globs: [\"secret{r}/**\"]\n      justification: big\n      examples:\n        match: ["
        ));
        let examples: Vec<String> = (0..50).map(|i| format!("secret{r}/f{i}")).collect();
        yaml.push_str(&examples.join(", "));
        yaml.push_str("]\n        not_match: [");
        let examples: Vec<String> = (0..50).map(|i| format!("open{r}/f{i}")).collect();
        yaml.push_str(&examples.join(", "));
        yaml.push_str("]\n");
    }
    let path = s.outside().join("big.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

#[test]
fn policy_test_on_a_big_policy_reports_each_quarter() {
    let s = Scratch::new();
    let path = big_policy(&s, 120);
    let (code, out, err) = run_cli(&s.ws(), &["policy", "test", &path]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("12000 examples, all behave"), "{out}");
    let quarters: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("checking examples: "))
        .collect();
    assert_eq!(
        quarters
            .iter()
            .map(|l| l.rsplit(' ').next().unwrap())
            .collect::<Vec<_>>(),
        ["(25%)", "(50%)", "(75%)", "(100%)"],
        "{err}"
    );
    // A small policy: no lines at all.
    let (code, _, err) = run_cli(&s.ws(), &["policy", "test"]);
    assert_eq!(code, 0);
    assert!(!err.contains("checking examples"), "{err}");
}

#[test]
fn arbiter_call_shows_the_gates_of_task_complete_as_they_run() {
    let s = Scratch::new();
    let policy = s.outside().join("policy.yaml");
    std::fs::write(
        &policy,
        "version: 1\ntasks:\n  gates:\n    2:\n      - {name: tests, command: 'true'}\n      - {name: lint, command: 'echo clean'}\n",
    )
    .unwrap();
    let p = policy.to_str().unwrap();
    let call = |tool: &str, args: &str| {
        let (code, out, err) = run_cli(&s.ws(), &["--policy", p, "call", tool, args]);
        assert_eq!(code, 0, "{tool}: {out}{err}");
        let result: Value = serde_json::from_str(&out).unwrap();
        (result["structuredContent"].clone(), err)
    };
    call(
        "agent_register",
        r#"{"capabilities": {"task_types": ["bugfix"]}}"#,
    );
    let (submitted, _) = call(
        "task_submit",
        r#"{"title": "Fix crash when the config file is empty", "description": "see the title"}"#,
    );
    let id = submitted["task_id"].as_str().unwrap().to_string();
    let (next, _) = call("task_next", "{}");
    assert_eq!(next["task"]["task_id"], id.as_str(), "{next}");
    let (done, err) = call(
        "task_complete",
        &format!(r#"{{"task_id": "{id}", "summary": "fixed"}}"#),
    );
    assert_eq!(done["verdict"]["verdict"], "pass", "{done}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("progress: "))
        .collect();
    assert!(
        lines.iter().any(|l| l.contains("tests")) && lines.iter().any(|l| l.contains("lint")),
        "each gate is named as it runs: {err}"
    );
    assert_eq!(
        lines,
        [
            "progress: 1/4 gate 1/2 `tests` started: true",
            "progress: 2/4 gate 1/2 `tests` passed: exited 0",
            "progress: 3/4 gate 2/2 `lint` started: echo clean",
            "progress: 4/4 gate 2/2 `lint` passed: exited 0",
        ],
        "{err}"
    );
}
