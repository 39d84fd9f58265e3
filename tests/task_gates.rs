//! Quality gates on task_complete, through the real binary and real MCP
//! clients: the policy names gate commands per risk tier, task_complete runs
//! them in the sandbox and answers with the verdict (pass, conditional or
//! fail, with the CAWS score), a tier 1 task waits for `arbiter task
//! approve`, and a client that sent a progress token hears about each gate.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};

use common::*;
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation,
    ProgressNotificationParam,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};

/// A policy file beside the workspace whose `tasks.gates` is `gates_yaml`
/// (indented under `gates:`), with one command rule: `deploy` is refused.
fn policy(s: &Scratch, gates_yaml: &str) -> String {
    let path = s.outside().join("policy.yaml");
    std::fs::write(
        &path,
        format!(
            "version: 1\ncommands:\n  rules:\n    - {{id: NO-DEPLOY, decision: deny, prefixes: [[deploy]], justification: gates do not deploy}}\ntasks:\n  gates:\n{gates_yaml}\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// Tier 2 (a bugfix) and tier 1 (touches authentication), as detected.
const TIER_2: &str = "Fix crash when the config file is empty";
const TIER_1: &str = "Add authentication to the admin API";

/// Submit a task as `lead`, claim it as `worker` (registered for every type).
async fn claimed<H: ClientHandler>(
    lead: &NamedClient,
    worker: &RunningService<RoleClient, H>,
    title: &str,
) -> String {
    let sub = ok(
        lead,
        "task_submit",
        json!({"title": title, "description": "see the title"}),
    )
    .await;
    let id = sub["task_id"].as_str().unwrap().to_string();
    let next = ok(worker, "task_next", json!({})).await;
    assert_eq!(next["task"]["task_id"], id.as_str(), "{next}");
    id
}

const EVERY_TYPE: &str =
    r#"{"task_types": ["feature", "bugfix", "refactor", "test", "docs", "research", "ops"]}"#;

async fn worker(ws: &Path, extra: &[&str]) -> NamedClient {
    let c = start_as(ws, "worker", extra).await;
    let caps: Value = serde_json::from_str(EVERY_TYPE).unwrap();
    ok(&c, "agent_register", json!({"capabilities": caps})).await;
    c
}

/// One tier 2 task completed under `gates_yaml`: (scratch, worker, lead, id, reply).
async fn complete_under(gates_yaml: &str) -> (Scratch, NamedClient, NamedClient, String, Value) {
    let s = Scratch::new();
    let ws = s.ws();
    let p = policy(&s, gates_yaml);
    let extra = ["--policy", p.as_str()];
    let w = worker(&ws, &extra).await;
    let lead = start_as(&ws, "lead", &extra).await;
    let id = claimed(&lead, &w, TIER_2).await;
    let done = ok(
        &w,
        "task_complete",
        json!({"task_id": id, "summary": "fixed and tested"}),
    )
    .await;
    (s, w, lead, id, done)
}

#[tokio::test]
async fn passing_gates_complete_the_task_with_a_pass() {
    let (s, w, lead, id, done) = complete_under(
        "    2:\n      - {name: tests, command: 'true'}\n      - {name: lint, command: 'echo clean'}\n",
    )
    .await;
    let v = &done["verdict"];
    assert_eq!(v["verdict"], "pass", "{done}");
    assert_eq!(v["score"], 100.0, "{done}");
    assert_eq!(v["gates"][0]["exit_code"], 0);
    assert_eq!(v["gates"][1]["output_tail"], "clean\n");
    assert_eq!(done["task"]["state"], "completed", "{done}");
    assert_eq!(done["performance"]["successes"], 1, "{done}");
    assert_eq!(done["performance"]["mean_score"], 100.0, "{done}");
    // `arbiter agents` shows the mean verdict score per agent and type.
    let (code, table, err) = run_cli(&s.ws(), &["agents"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        table.contains("SCORE") && table.contains("100.0 (1)"),
        "{table}"
    );
    // task_status shows the verdict and each gate; so does `task show`.
    let status = ok(&lead, "task_status", json!({"task_id": id})).await;
    assert_eq!(status["verdicts"][0]["verdict"], "pass", "{status}");
    // The claim was kept alive while the gates ran, and the history says so.
    assert!(
        status
            .to_string()
            .contains("quality gates running: claim renewed"),
        "{status}"
    );
    assert_eq!(status["verdicts"][0]["gates"][1]["name"], "lint");
    let (code, shown, err) = run_cli(&s.ws(), &["task", "show", &id]);
    assert_eq!(code, 0, "{err}");
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["verdicts"][0]["score"], 100.0, "{shown}");
    w.cancel().await.unwrap();
    lead.cancel().await.unwrap();
}

#[tokio::test]
async fn a_failing_gate_fails_with_its_exit_code_and_the_task_stays_held() {
    let (_s, w, lead, id, done) = complete_under(
        "    2:\n      - {name: tests, command: 'true'}\n      - {name: lint, command: 'false'}\n",
    )
    .await;
    let v = &done["verdict"];
    assert_eq!(v["verdict"], "fail", "{done}");
    // 0.4 x 1/2 + 0.3 + 0.3
    assert_eq!(v["score"], 80.0, "{done}");
    let lint = &v["gates"][1];
    assert_eq!(lint["passed"], false);
    assert_eq!(lint["exit_code"], 1, "{done}");
    assert_eq!(lint["rule_id"], "GATE-001", "{done}");
    assert_eq!(done["task"]["state"], "claimed", "{done}");
    assert_eq!(done["performance"]["failures"], 1, "{done}");
    // The holder may try again (the same gates fail again).
    let again = ok(
        &w,
        "task_complete",
        json!({"task_id": id, "summary": "second try"}),
    )
    .await;
    assert_eq!(again["verdict"]["verdict"], "fail");
    assert_eq!(again["performance"]["scored"], 2, "{again}");
    assert_eq!(again["performance"]["mean_score"], 80.0, "{again}");
    let status = ok(&lead, "task_status", json!({"task_id": id})).await;
    assert_eq!(status["verdicts"].as_array().unwrap().len(), 2, "{status}");
    w.cancel().await.unwrap();
    lead.cancel().await.unwrap();
}

#[tokio::test]
async fn coverage_under_the_tier_minimum_is_conditional_with_the_score() {
    let (_s, w, lead, _id, done) = complete_under(
        "    2:\n      - name: coverage\n        command: 'echo total coverage: 55%'\n        coverage_pattern: 'coverage: ([0-9.]+)%'\n",
    )
    .await;
    let v = &done["verdict"];
    assert_eq!(v["verdict"], "conditional", "{done}");
    // Tier 2's min_coverage is 0.8: 0.4 + 0.3 x 0.55/0.8 + 0.3 (no mutation gate) = 90.625.
    assert_eq!(v["score"], 90.63, "{done}");
    assert_eq!(v["coverage_percent"], 55.0, "{done}");
    assert_eq!(v["gates"][0]["measured"], 0.55, "{done}");
    assert!(
        v["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().contains("below the tier's minimum")),
        "{done}"
    );
    assert_eq!(done["task"]["state"], "completed", "{done}");
    assert_eq!(done["performance"]["mean_score"], 90.63, "{done}");
    w.cancel().await.unwrap();
    lead.cancel().await.unwrap();
}

#[tokio::test]
async fn a_gate_command_the_policy_refuses_fails_naming_the_rule() {
    let (_s, w, lead, _id, done) =
        complete_under("    2:\n      - {name: deploy, command: 'deploy prod'}\n").await;
    let gate = &done["verdict"]["gates"][0];
    assert_eq!(done["verdict"]["verdict"], "fail", "{done}");
    assert_eq!(gate["rule_id"], "GATE-002", "{done}");
    assert_eq!(gate["policy_rule"], "NO-DEPLOY", "{done}");
    assert!(
        gate["detail"].as_str().unwrap().contains("NO-DEPLOY"),
        "{done}"
    );
    w.cancel().await.unwrap();
    lead.cancel().await.unwrap();
}

#[tokio::test]
async fn a_tier_1_task_waits_for_a_person_then_is_approved() {
    let s = Scratch::new();
    let ws = s.ws();
    let p = policy(&s, "    1:\n      - {name: tests, command: 'true'}\n");
    let extra = ["--policy", p.as_str()];
    let w = worker(&ws, &extra).await;
    let lead = start_as(&ws, "lead", &extra).await;
    let id = claimed(&lead, &w, TIER_1).await;
    let done = ok(
        &w,
        "task_complete",
        json!({"task_id": id, "summary": "added, with tests"}),
    )
    .await;
    assert_eq!(done["verdict"]["verdict"], "pass", "{done}");
    assert_eq!(done["task"]["state"], "needs_review", "{done}");
    assert!(done.get("performance").is_none(), "{done}");
    // The agent cannot complete it again, nor approve it.
    let t = refused(
        &w,
        "task_complete",
        json!({"task_id": id, "summary": "again"}),
    )
    .await;
    assert!(t.contains("GATE-005"), "{t}");
    // Nor can its submitter cancel it: a person decides now.
    let t = refused(&lead, "task_cancel", json!({"task_id": id})).await;
    assert!(t.contains("GATE-005"), "{t}");

    let (code, out, err) = run_cli(&ws, &["task", "approve", &id, "--note", "read the diff"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("approved") && out.contains("completed"),
        "{out}"
    );
    let status = ok(&lead, "task_status", json!({"task_id": id})).await;
    assert_eq!(status["task"]["state"], "completed", "{status}");
    let v = &status["verdicts"][0];
    assert_eq!(v["review"], "approved", "{status}");
    assert_eq!(v["review_note"], "read the diff", "{status}");
    assert!(v["reviewed_by"].as_str().unwrap().starts_with("cli:"));
    // Approving twice is refused.
    let (code, _, err) = run_cli(&ws, &["task", "approve", &id]);
    assert_eq!(code, 1);
    assert!(err.contains("GATE-005"), "{err}");

    // Another tier 1 task, rejected: back in the queue, a failure on the record.
    let id2 = claimed(&lead, &w, TIER_1).await;
    let done = ok(
        &w,
        "task_complete",
        json!({"task_id": id2, "summary": "done"}),
    )
    .await;
    assert_eq!(done["task"]["state"], "needs_review");
    let (code, _, err) = run_cli(&ws, &["task", "reject", &id2, "--note", "no tests"]);
    assert_eq!(code, 0, "{err}");
    let status = ok(&lead, "task_status", json!({"task_id": id2})).await;
    assert_eq!(status["task"]["state"], "queued", "{status}");
    let perf = ok(
        &w,
        "agent_register",
        json!({"capabilities": serde_json::from_str::<Value>(EVERY_TYPE).unwrap()}),
    )
    .await;
    let feature = perf["performance"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["task_type"] == "feature")
        .unwrap()
        .clone();
    assert_eq!(
        (feature["successes"].clone(), feature["failures"].clone()),
        (json!(1), json!(1)),
        "{perf}"
    );
    w.cancel().await.unwrap();
    lead.cancel().await.unwrap();
}

/// A client named `worker` that keeps the progress notifications it gets.
#[derive(Clone, Default)]
struct ProgressLog(Arc<Mutex<Vec<ProgressNotificationParam>>>);

impl ClientHandler for ProgressLog {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
        self.0.lock().unwrap().push(params);
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("worker", "1"),
        )
    }
}

#[tokio::test]
async fn each_gate_reports_progress_to_a_client_that_asked() {
    let s = Scratch::new();
    let ws = s.ws();
    let p = policy(
        &s,
        "    2:\n      - {name: tests, command: 'true'}\n      - {name: lint, command: 'false'}\n",
    );
    let extra = ["--policy", p.as_str()];
    let log = ProgressLog::default();
    let w = log
        .clone()
        .serve(spawn_server(&ws, &extra))
        .await
        .expect("MCP handshake");
    let caps: Value = serde_json::from_str(EVERY_TYPE).unwrap();
    ok(&w, "agent_register", json!({"capabilities": caps})).await;
    let lead = start_as(&ws, "lead", &extra).await;
    let id = claimed(&lead, &w, TIER_2).await;
    let r = w
        .call_tool(
            CallToolRequestParams::new("task_complete").with_arguments(
                json!({"task_id": id, "summary": "done"})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        )
        .await
        .unwrap();
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    // Notifications are sent before the reply; give the last one a moment.
    for _ in 0..50 {
        if log.0.lock().unwrap().len() >= 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let seen = log.0.lock().unwrap().clone();
    assert_eq!(seen.len(), 4, "{seen:?}");
    let steps: Vec<f64> = seen.iter().map(|p| p.progress).collect();
    assert_eq!(steps, [1.0, 2.0, 3.0, 4.0]);
    assert!(seen.iter().all(|p| p.total == Some(4.0)));
    let messages: Vec<&str> = seen.iter().map(|p| p.message.as_deref().unwrap()).collect();
    assert!(messages[0].contains("`tests` started"), "{messages:?}");
    assert!(messages[1].contains("`tests` passed"), "{messages:?}");
    assert!(messages[3].contains("`lint` failed"), "{messages:?}");
    w.cancel().await.unwrap();
    lead.cancel().await.unwrap();
}

#[tokio::test]
async fn without_gates_the_verdict_says_so() {
    let s = Scratch::new();
    let ws = s.ws();
    let w = worker(&ws, &[]).await;
    let lead = start_as(&ws, "lead", &[]).await;
    let id = claimed(&lead, &w, TIER_2).await;
    let done = ok(
        &w,
        "task_complete",
        json!({"task_id": id, "summary": "done"}),
    )
    .await;
    assert_eq!(done["verdict"]["verdict"], "pass", "{done}");
    assert!(
        done["verdict"]["reasons"][0]
            .as_str()
            .unwrap()
            .contains("no quality gates"),
        "{done}"
    );
    w.cancel().await.unwrap();
    lead.cancel().await.unwrap();
}
