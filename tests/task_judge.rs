//! The model judge on task_complete, through the real binary and real MCP
//! clients. The model endpoints are NOT real models: this test starts its
//! own small HTTP server on 127.0.0.1 (`ModelServer` below) that speaks
//! Ollama's `POST /api/chat` and OpenAI's `POST /v1/chat/completions` wire
//! formats and answers by the model name it is asked for: a good answer, a
//! given verdict and confidence, garbage, or no answer at all (it hangs).
//! Nothing leaves the machine.

mod common;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use common::*;
use serde_json::{Value, json};

/// What the stand-in server was sent: (path, model, body).
type Seen = Arc<Mutex<Vec<(String, String, Value)>>>;

/// The stand-in model server (in this test, on loopback).
struct ModelServer {
    url: String,
    seen: Seen,
}

impl ModelServer {
    async fn start() -> Self {
        let seen: Seen = Arc::default();
        let app = Router::new()
            .route("/api/chat", post(ollama))
            .route("/v1/chat/completions", post(openai))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, seen }
    }

    /// How many requests asked for `model`.
    fn asked(&self, model: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, m, _)| m == model)
            .count()
    }

    fn bodies(&self, model: &str) -> Vec<(String, Value)> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, m, _)| m == model)
            .map(|(p, _, b)| (p.clone(), b.clone()))
            .collect()
    }
}

/// The model's message text for `model`: `pass-90` is a pass with
/// confidence 0.9, `fail-60` a fail with 0.6, and so on; `garbage` is not
/// JSON at all; `hang` never answers.
async fn content_for(model: &str) -> String {
    if model == "hang" {
        std::future::pending::<()>().await;
    }
    if model == "garbage" {
        return "The work looks fine to me!".to_string();
    }
    let (verdict, pct) = model
        .split_once('-')
        .expect("model names are VERDICT-PERCENT");
    let confidence: f64 = pct.parse::<f64>().unwrap() / 100.0;
    json!({
        "verdict": verdict,
        "score": if verdict == "pass" { 90 } else { 40 },
        "confidence": confidence,
        "reasons": [format!("the stand-in judge says {verdict}")],
    })
    .to_string()
}

/// A JSON reply (axum is built here without its `json` feature).
type JsonReply = ([(&'static str, &'static str); 1], String);

fn reply(v: Value) -> JsonReply {
    ([("content-type", "application/json")], v.to_string())
}

async fn ollama(State(seen): State<Seen>, body: String) -> JsonReply {
    let body: Value = serde_json::from_str(&body).unwrap();
    let model = body["model"].as_str().unwrap().to_string();
    seen.lock()
        .unwrap()
        .push(("/api/chat".into(), model.clone(), body));
    let content = content_for(&model).await;
    reply(json!({
        "model": model,
        "message": {"role": "assistant", "content": content},
        "done": true,
        "prompt_eval_count": 120,
        "eval_count": 30,
    }))
}

async fn openai(State(seen): State<Seen>, body: String) -> JsonReply {
    let body: Value = serde_json::from_str(&body).unwrap();
    let model = body["model"].as_str().unwrap().to_string();
    seen.lock()
        .unwrap()
        .push(("/v1/chat/completions".into(), model.clone(), body));
    let content = content_for(&model).await;
    reply(json!({
        "id": "x",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 200, "completion_tokens": 50, "total_tokens": 250},
    }))
}

/// A policy beside the workspace: one passing gate for tiers 2 and 3, and
/// `judge_yaml` (indented under `judge:`).
fn policy(s: &Scratch, judge_yaml: &str) -> String {
    let path = s.outside().join("policy.yaml");
    std::fs::write(
        &path,
        format!(
            "version: 1\ntasks:\n  gates:\n    2: [{{name: tests, command: 'echo 12 passed'}}]\n    3: [{{name: tests, command: 'echo 12 passed'}}]\n  judge:\n{judge_yaml}\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

fn judge_line(name: &str, api: &str, url: &str, model: &str, extra: &str) -> String {
    format!("      - {{name: {name}, api: {api}, url: '{url}', model: {model}{extra}}}\n")
}

const SPEC: &str = "id: FEAT-42\ntitle: CSV export\nrisk_tier: 3\nmode: feature\n\
    change_budget: {max_files: 10, max_loc: 100}\n\
    blast_radius: {modules: [export]}\noperational_rollback_slo: 5m\n\
    scope: {in: [src/], out: [src/generated/]}\n\
    invariants: [existing exports keep their format]\n\
    acceptance:\n  - {id: A1, given: a table, when: export is clicked, then: a CSV downloads}\n\
    non_functional: {perf: {api_p95_ms: 200}}\ncontracts: []\n";

const EVERY_TYPE: &str =
    r#"{"task_types": ["feature", "bugfix", "refactor", "test", "docs", "research", "ops"]}"#;

struct Setup {
    s: Scratch,
    worker: NamedClient,
    lead: NamedClient,
}

impl Setup {
    async fn new(judge_yaml: &str) -> Self {
        let s = Scratch::new();
        let p = policy(&s, judge_yaml);
        let extra = ["--policy", p.as_str()];
        let worker = start_as(&s.ws(), "worker", &extra).await;
        let caps: Value = serde_json::from_str(EVERY_TYPE).unwrap();
        ok(&worker, "agent_register", json!({"capabilities": caps})).await;
        let lead = start_as(&s.ws(), "lead", &extra).await;
        Self { s, worker, lead }
    }

    /// Submit (with the spec: tier 3) and claim a task.
    async fn claim(&self) -> String {
        let sub = ok(
            &self.lead,
            "task_submit",
            json!({"title": "CSV export", "description": "Export the table as CSV.", "spec": SPEC}),
        )
        .await;
        let id = sub["task_id"].as_str().unwrap().to_string();
        let next = ok(&self.worker, "task_next", json!({})).await;
        assert_eq!(next["task"]["task_id"], id.as_str(), "{next}");
        id
    }

    /// Submit, claim and complete a task: (id, reply).
    async fn complete(&self) -> (String, Value) {
        let id = self.claim().await;
        self.finish(&id).await
    }

    async fn finish(&self, id: &str) -> (String, Value) {
        let id = id.to_string();
        let done = ok(
            &self.worker,
            "task_complete",
            json!({"task_id": id, "summary": "added the CSV button; tested by hand"}),
        )
        .await;
        (id, done)
    }

    fn cli(&self, args: &[&str]) -> (i32, String, String) {
        run_cli(&self.s.ws(), args)
    }

    async fn stop(self) {
        self.worker.cancel().await.unwrap();
        self.lead.cancel().await.unwrap();
    }
}

fn calls_of(verdict: &Value, judge: usize) -> Vec<Value> {
    verdict["judges"]["exchanges"][judge]["calls"]
        .as_array()
        .unwrap_or_else(|| panic!("no calls in {verdict}"))
        .clone()
}

#[tokio::test]
async fn agreeing_judges_complete_the_task_with_tokens_and_cost_in_both_wire_formats() {
    let m = ModelServer::start().await;
    let judges = judge_line(
        "local",
        "ollama",
        &m.url,
        "pass-90",
        ", prompt_price_per_1k: 0.5, completion_price_per_1k: 2.0",
    ) + &judge_line(
        "hosted",
        "openai",
        &m.url,
        "pass-80",
        ", prompt_price_per_1k: 1.0, completion_price_per_1k: 1.0",
    );
    let t = Setup::new(&format!("    judges:\n{judges}")).await;
    let id = t.claim().await;
    // The worker's file and terminal calls are made under the task.
    ok(
        &t.worker,
        "file_write",
        json!({"file_path": "src/export.rs", "contents": "pub fn export() {}\n"}),
    )
    .await;
    ok(
        &t.worker,
        "run_terminal_cmd",
        json!({"command": "echo built"}),
    )
    .await;
    ok(
        &t.worker,
        "file_search_replace",
        json!({"file_path": "src/export.rs", "old_string": "pub fn export() {}", "new_string": "pub fn export() {\n    csv();\n}"}),
    )
    .await;
    ok(
        &t.lead,
        "file_read",
        json!({"target_file": "src/export.rs"}),
    )
    .await;
    let (_, done) = t.finish(&id).await;
    let v = &done["verdict"];
    assert_eq!(v["verdict"], "pass", "{done}");
    assert_eq!(done["task"]["state"], "completed", "{done}");
    assert_eq!(v["judges"]["confidence"], 1.0, "{done}");
    assert_eq!(v["judges"]["needs_review"], false, "{done}");
    // Ollama: 120 + 30 tokens at 0.5 and 2.0 per 1k; OpenAI: 200 + 50 at 1.0.
    let ollama = &calls_of(v, 0)[0];
    assert_eq!(ollama["prompt_tokens"], 120, "{done}");
    assert_eq!(ollama["completion_tokens"], 30, "{done}");
    assert_eq!(ollama["cost"], 0.12, "{done}");
    assert_eq!(ollama["answer"]["verdict"], "pass", "{done}");
    assert!(
        ollama.get("request").is_none(),
        "task_complete leaves the prompt out"
    );
    let openai = &calls_of(v, 1)[0];
    assert_eq!(openai["cost"], 0.25, "{done}");
    assert_eq!(
        v["judges"]["exchanges"][1]["url"],
        format!("{}/v1/chat/completions", m.url)
    );

    // The judges were shown the spec's criteria, the summary and the gates,
    // and asked for JSON in each format's own way.
    let (path, body) = m.bodies("pass-90").remove(0);
    assert_eq!(path, "/api/chat");
    assert_eq!(
        (body["stream"].clone(), body["format"].clone()),
        (json!(false), json!("json"))
    );
    let user = body["messages"][1]["content"].as_str().unwrap();
    for part in [
        "A1: given a table, when export is clicked, then a CSV downloads",
        "added the CSV button",
        "tests `echo 12 passed`: passed",
        "12 passed",
        // What changed: the files with their line counts and diffs, then
        // the calls attributed to the task.
        "Files changed:\n- src/export.rs (+4 -1, 2 change(s))",
        "+++ b/src/export.rs",
        "+pub fn export() {}",
        "-pub fn export() {}\n+pub fn export() {\n+    csv();\n+}",
        "- file_write {",
        "src/export.rs",
        "- run_terminal_cmd {\"command\":\"echo built\"} → ok",
    ] {
        assert!(user.contains(part), "{part} not in the prompt:\n{user}");
    }
    let (_, body) = m.bodies("pass-80").remove(0);
    assert_eq!(body["response_format"]["type"], "json_object");

    // Tokens and cost per task.
    let status = ok(&t.lead, "task_status", json!({"task_id": id})).await;
    let usage = &status["judge_usage"];
    assert_eq!(
        (
            usage["calls"].clone(),
            usage["prompt_tokens"].clone(),
            usage["completion_tokens"].clone(),
            usage["cost"].clone()
        ),
        (json!(2), json!(320), json!(80), json!(0.37)),
        "{status}"
    );

    // The provenance export holds everything, the prompts included.
    let (code, out, err) = t.cli(&["task", "export", &id, "--json"]);
    assert_eq!(code, 0, "{err}");
    let e: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(e["spec_id"], "FEAT-42", "{e}");
    assert!(e["spec"].as_str().unwrap().contains("A1"));
    assert_eq!(e["provenance"]["agents"]["holder"], "worker", "{e}");
    let kinds: Vec<&str> = e["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"submitted"), "{kinds:?}");
    assert_eq!(
        e["files_changed"],
        json!([{"path": "src/export.rs", "added": 4, "removed": 1, "changes": 2}]),
        "{e}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "changed").count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(kinds.last(), Some(&"completed"), "{kinds:?}");
    assert!(!e["routing"].as_array().unwrap().is_empty());
    let verdict = &e["verdicts"][0];
    assert_eq!(verdict["gates"][0]["output_tail"], "12 passed\n", "{e}");
    let request = calls_of(verdict, 0)[0]["request"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(request.contains("a CSV downloads"), "{request}");
    assert_eq!(e["judge_usage"]["cost"], 0.37);
    let audited: Vec<&str> = e["provenance"]["audit"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["tool"].as_str().unwrap())
        .collect();
    // The worker's calls under the task, its task_complete and the lead's
    // task_status that named it; not the lead's file_read.
    assert_eq!(
        audited,
        [
            "file_write",
            "run_terminal_cmd",
            "file_search_replace",
            "task_complete",
            "task_status"
        ],
        "{e}"
    );
    let records = audit_records(&t.s.ws());
    let under: Vec<(&str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["tool"].as_str().unwrap(),
                r.get("task_ids").and_then(Value::as_str).unwrap_or(""),
            )
        })
        .filter(|(tool, _)| !tool.starts_with("task_") && *tool != "agent_register")
        .collect();
    assert_eq!(
        under,
        [
            ("file_write", id.as_str()),
            ("run_terminal_cmd", id.as_str()),
            ("file_search_replace", id.as_str()),
            ("file_read", "")
        ]
    );
    // Records with and without the field verify in one chain.
    let (code, out, err) = t.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    let record = &e["provenance"]["audit"]["records"][3];
    assert_eq!(record["hash"].as_str().unwrap().len(), 64, "{record}");
    assert!(
        record["detail"]
            .as_str()
            .unwrap()
            .contains("judges local pass, hosted pass"),
        "{record}"
    );
    t.stop().await;
}

#[tokio::test]
async fn garbage_is_retried_then_the_task_waits_for_a_person_who_approves_it() {
    let m = ModelServer::start().await;
    let judges = judge_line("local", "ollama", &m.url, "garbage", "");
    let t = Setup::new(&format!(
        "    max_attempts: 3\n    backoff_ms: 5\n    judges:\n{judges}"
    ))
    .await;
    let (id, done) = t.complete().await;
    assert_eq!(m.asked("garbage"), 3, "three tries");
    assert_eq!(done["task"]["state"], "needs_review", "{done}");
    let v = &done["verdict"];
    // The gates passed; the judge's silence is not a pass.
    assert_eq!(v["judges"]["gates_verdict"], "pass", "{done}");
    assert_eq!(v["judges"]["needs_review"], true, "{done}");
    let calls = calls_of(v, 0);
    assert_eq!(calls.len(), 3, "{done}");
    for (i, c) in calls.iter().enumerate() {
        assert_eq!(c["attempt"], i + 1);
        assert_eq!(c["rule_id"], "JUDGE-001", "{c}");
        assert!(c["error"].as_str().unwrap().contains("is not"), "{c}");
        assert_eq!(c["http_status"], 200);
        // Tokens spent on garbage are counted too.
        assert_eq!(c["prompt_tokens"], 120);
    }
    assert!(
        v["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().contains("[JUDGE-004]")),
        "{done}"
    );
    assert!(
        done["next"]
            .as_str()
            .unwrap()
            .contains("arbiter task review"),
        "{done}"
    );
    // The agent can do nothing more on it.
    let r = refused(
        &t.worker,
        "task_complete",
        json!({"task_id": id, "summary": "again"}),
    )
    .await;
    assert!(r.contains("GATE-005"), "{r}");

    // A person reads the exchange (no terminal: no prompt), then approves.
    let (code, out, err) = t.cli(&["task", "review", &id]);
    assert_eq!(code, 0, "{err}");
    for part in [
        "judge local (ollama garbage",
        "try 3",
        "[JUDGE-001]",
        "raw answer: {",
        "The work looks fine to me!",
        "waits for review",
    ] {
        assert!(out.contains(part), "{part} not in:\n{out}");
    }
    let (code, out, err) = t.cli(&[
        "task",
        "review",
        &id,
        "--approve",
        "--note",
        "read it myself",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("approved") && out.contains("now completed"),
        "{out}"
    );
    let status = ok(&t.lead, "task_status", json!({"task_id": id})).await;
    assert_eq!(status["task"]["state"], "completed", "{status}");
    assert_eq!(status["verdicts"][0]["review_note"], "read it myself");
    t.stop().await;
}

#[tokio::test]
async fn a_hanging_judge_times_out_and_its_breaker_then_fails_fast() {
    let m = ModelServer::start().await;
    let judges = judge_line("slow", "openai", &m.url, "hang", "");
    let t = Setup::new(&format!(
        "    max_attempts: 2\n    backoff_ms: 5\n    timeout_ms: 300\n    breaker_failures: 2\n    breaker_cooldown_seconds: 600\n    judges:\n{judges}"
    ))
    .await;
    let (_, done) = t.complete().await;
    assert_eq!(done["task"]["state"], "needs_review", "{done}");
    let calls = calls_of(&done["verdict"], 0);
    assert_eq!(calls.len(), 2, "{done}");
    for c in &calls {
        assert_eq!(c["rule_id"], "JUDGE-002", "{c}");
        assert!(
            c["error"]
                .as_str()
                .unwrap()
                .contains("no answer within 300 ms"),
            "{c}"
        );
    }
    assert_eq!(m.asked("hang"), 2);

    // The breaker is open now: the next task's judge is not called at all.
    let (id2, done) = t.complete().await;
    assert_eq!(done["task"]["state"], "needs_review", "{done}");
    let calls = calls_of(&done["verdict"], 0);
    assert_eq!(calls.len(), 1, "{done}");
    assert_eq!(calls[0]["rule_id"], "JUDGE-003", "{done}");
    assert!(
        calls[0]["error"]
            .as_str()
            .unwrap()
            .contains("circuit breaker"),
        "{done}"
    );
    assert_eq!(
        m.asked("hang"),
        2,
        "no new request while the breaker is open"
    );
    // The stored exchange shows it too.
    let (code, out, err) = t.cli(&["task", "review", &id2, "--json"]);
    assert_eq!(code, 0, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    let call = &r["verdicts"][0]["judges"]["exchanges"][0]["calls"][0];
    assert_eq!(call["rule_id"], "JUDGE-003", "{r}");
    assert!(call.get("request").is_none(), "nothing was sent: {r}");
    t.stop().await;
}

#[tokio::test]
async fn judges_that_disagree_with_low_confidence_go_to_a_person_who_rejects() {
    let m = ModelServer::start().await;
    // gates pass 0.5 + judge pass 0.3 against judge fail 0.6: pass with 57%.
    let judges = judge_line("a", "ollama", &m.url, "pass-30", "")
        + &judge_line("b", "openai", &m.url, "fail-60", "");
    let t = Setup::new(&format!(
        "    gates_weight: 0.5\n    min_confidence: 0.6\n    judges:\n{judges}"
    ))
    .await;
    let (id, done) = t.complete().await;
    let a = &done["verdict"]["judges"];
    assert_eq!(done["task"]["state"], "needs_review", "{done}");
    assert_eq!(a["verdict"], "pass", "{done}");
    assert_eq!(a["confidence"], 0.5714, "{done}");
    let votes: Vec<(String, String)> = a["votes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["source"].as_str().unwrap().into(),
                v["verdict"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        votes,
        [
            ("gates".to_string(), "pass".to_string()),
            ("a".into(), "pass".into()),
            ("b".into(), "fail".into())
        ]
    );
    assert!(
        a["reasons"].as_array().unwrap().iter().any(|r| r
            .as_str()
            .unwrap()
            .contains("57% is under min_confidence 60%")),
        "{done}"
    );
    let (code, out, err) = t.cli(&[
        "task",
        "review",
        &id,
        "--reject",
        "--note",
        "judge b is right",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("Arbitration: gates pass, vote pass with 57%, needs review"),
        "{out}"
    );
    assert!(
        out.contains("rejected") && out.contains("now queued"),
        "{out}"
    );
    let status = ok(&t.lead, "task_status", json!({"task_id": id})).await;
    assert_eq!(status["task"]["state"], "queued", "{status}");
    t.stop().await;
}

#[tokio::test]
async fn a_confident_failing_judge_outvotes_light_gates_and_the_holder_keeps_the_task() {
    let m = ModelServer::start().await;
    let judges = judge_line("strict", "ollama", &m.url, "fail-95", "");
    let t = Setup::new(&format!("    gates_weight: 0.2\n    judges:\n{judges}")).await;
    let (id, done) = t.complete().await;
    assert_eq!(done["verdict"]["verdict"], "fail", "{done}");
    assert_eq!(done["verdict"]["judges"]["gates_verdict"], "pass", "{done}");
    assert_eq!(done["task"]["state"], "claimed", "{done}");
    assert_eq!(done["performance"]["failures"], 1, "{done}");
    // Nothing waits for a person; `review` says what there is and decides nothing.
    let (code, out, err) = t.cli(&["task", "review", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("judge strict (ollama fail-95"), "{out}");
    assert!(!out.contains("waits for review"), "{out}");
    t.stop().await;
}
