//! Tasks through the real binary and real MCP clients: each agent is its own
//! client (and server process, as with stdio) with its own name, all on one
//! workspace and so one store. Lapsed leases and silent agents are simulated
//! by moving stored times into the past (the SQLite file is the real store;
//! only the clock is skipped).

mod common;

use std::collections::HashSet;
use std::path::Path;

use common::*;
use futures::StreamExt;
use serde_json::{Value, json};

async fn register(c: &NamedClient, capabilities: Value, max: u32) -> Value {
    ok(
        c,
        "agent_register",
        json!({"capabilities": capabilities, "max_concurrent_tasks": max}),
    )
    .await
}

/// An agent: a client named `name` that has registered.
async fn agent(ws: &Path, name: &str, capabilities: Value, extra: &[&str]) -> NamedClient {
    let c = start_as(ws, name, extra).await;
    register(&c, capabilities, 1).await;
    c
}

/// A tier 3 spec for the export work: `src/` in scope (but `src/generated/`),
/// three files and `max_loc` lines of budget.
fn export_spec(id: &str, max_loc: u32) -> String {
    format!(
        "id: {id}\ntitle: CSV export\nrisk_tier: 3\nmode: feature\n\
         change_budget: {{max_files: 3, max_loc: {max_loc}}}\n\
         blast_radius: {{modules: [export]}}\noperational_rollback_slo: 5m\n\
         scope: {{in: [src/], out: [src/generated/]}}\n\
         invariants: [existing exports keep their format]\n\
         acceptance:\n  - {{id: A1, given: a table, when: export is clicked, then: a CSV downloads}}\n\
         non_functional: {{perf: {{api_p95_ms: 200}}}}\ncontracts: []\n"
    )
}

fn id_of(out: &Value) -> String {
    out["task_id"].as_str().expect("task_id").to_string()
}

async fn store(ws: &Path) -> sqlx::SqlitePool {
    let url = format!("sqlite://{}", ws.join(".arbiter/arbiter.db").display());
    sqlx::SqlitePool::connect(&url).await.unwrap()
}

async fn sql_count(ws: &Path, sql: &'static str) -> i64 {
    let pool = store(ws).await;
    let n: i64 = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
    pool.close().await;
    n
}

/// Move stored times back by `minutes`: a task's lease, or an agent's last sighting.
async fn rewind(ws: &Path, sql: &'static str, key: &str, minutes: i64) {
    let pool = store(ws).await;
    let done = sqlx::query(sql)
        .bind(minutes * 60_000)
        .bind(key)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(done.rows_affected(), 1, "{sql} {key}");
    pool.close().await;
}

fn agents_json(ws: &Path) -> Vec<Value> {
    let (code, out, err) = run_cli(ws, &["agents", "--json"]);
    assert_eq!(code, 0, "{err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn a_task_goes_to_the_capable_agent_which_claims_updates_and_completes_it() {
    let s = Scratch::new();
    let ws = s.ws();
    let rust = agent(
        &ws,
        "rust-fixer",
        json!({"task_types": ["bugfix", "feature"], "languages": ["rust"], "tools": ["cargo"]}),
        &[],
    )
    .await;
    let docs = agent(
        &ws,
        "doc-writer",
        json!({"task_types": ["docs"], "languages": ["markdown"]}),
        &[],
    )
    .await;
    let lead = start_as(&ws, "lead", &[]).await;

    let sub = ok(
        &lead,
        "task_submit",
        json!({
            "title": "Fix crash when the config file is empty",
            "description": "arbiter panics on an empty .arbiter/policy.yaml",
            "required_capabilities": {"languages": ["Rust"]}
        }),
    )
    .await;
    assert_eq!(sub["task_type"], "bugfix", "{sub}");
    assert_eq!(sub["type_source"], "detected", "{sub}");
    assert!(sub["type_confidence"].as_f64().unwrap() > 0.8, "{sub}");
    assert_eq!(sub["risk_tier"], 2, "{sub}");
    assert_eq!(sub["state"], "assigned", "{sub}");
    assert_eq!(sub["assigned_to"], "rust-fixer", "{sub}");
    let candidates = sub["routing"]["candidates"].as_array().unwrap();
    assert_eq!(candidates[0]["agent"], "rust-fixer");
    assert!(candidates[0]["score"].is_number(), "{sub}");
    assert_eq!(candidates[1]["agent"], "doc-writer");
    assert_eq!(candidates[1]["eligible"], false);
    assert_eq!(
        candidates[1]["detail"],
        "excluded: does not take bugfix tasks; lacks language rust"
    );
    let id = id_of(&sub);

    // The docs agent is not given it.
    let none = ok(&docs, "task_next", json!({})).await;
    assert_eq!(none["outcome"], "none", "{none}");
    assert!(none.get("task").is_none());

    let next = ok(&rust, "task_next", json!({})).await;
    assert_eq!(next["outcome"], "claimed_assigned", "{next}");
    assert_eq!(next["task"]["task_id"], id.as_str());
    assert_eq!(next["task"]["state"], "claimed");
    assert_eq!(next["held"], json!([id]));
    assert!(
        next["task"]["description"]
            .as_str()
            .unwrap()
            .contains("panics")
    );

    let up = ok(
        &rust,
        "task_update",
        json!({"task_id": id, "progress": 50, "note": "reproduced with an empty file"}),
    )
    .await;
    assert_eq!(up["task"]["progress"], 50, "{up}");

    let done = ok(
        &rust,
        "task_complete",
        json!({"task_id": id, "summary": "empty policy files now load as the default; test added"}),
    )
    .await;
    assert_eq!(done["task"]["state"], "completed", "{done}");
    let perf = &done["performance"];
    assert_eq!(perf["task_type"], "bugfix", "{done}");
    assert_eq!(
        (&perf["attempts"], &perf["successes"], &perf["success_rate"]),
        (&json!(1), &json!(1), &json!(1.0)),
        "{done}"
    );

    let status = ok(&lead, "task_status", json!({"task_id": id})).await;
    assert_eq!(status["task"]["state"], "completed", "{status}");
    assert_eq!(status["task"]["holder"], "rust-fixer");
    assert_eq!(status["task"]["progress"], 100);
    assert!(
        status["task"]["summary"]
            .as_str()
            .unwrap()
            .contains("test added")
    );
    let kinds: Vec<&str> = status["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["submitted", "assigned", "claimed", "progress", "completed"]
    );
    assert_eq!(status["routing"][0]["chosen"], "rust-fixer");

    // The record feeds the next decision.
    let again = ok(
        &lead,
        "task_submit",
        json!({"title": "Null check in the loader", "description": "", "task_type": "bugfix"}),
    )
    .await;
    assert_eq!(again["type_source"], "given");
    assert_eq!(again["type_confidence"], 1.0);
    let detail = again["routing"]["candidates"][0]["detail"]
        .as_str()
        .unwrap();
    assert!(detail.starts_with("success 1/1 = 1.00"), "{again}");

    // The operator's view.
    let listed = agents_json(&ws);
    let fixer = listed.iter().find(|a| a["agent"] == "rust-fixer").unwrap();
    assert_eq!(fixer["performance"][0]["successes"], 1, "{fixer}");
    assert_eq!(
        fixer["active_tasks"], 1,
        "the second bugfix is assigned to it"
    );
    let (code, table, err) = run_cli(&ws, &["agents"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        table.contains("rust-fixer") && table.contains("100% (1/1)"),
        "{table}"
    );
    assert!(table.contains("doc-writer"), "{table}");
    let (code, shown, err) = run_cli(&ws, &["task", "show", &id]);
    assert_eq!(code, 0, "{err}");
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["state"], "completed");
    assert_eq!(shown["events"].as_array().unwrap().len(), 5);
    assert_eq!(shown["routing"][0]["candidates"][1]["agent"], "doc-writer");

    for c in [rust, docs, lead] {
        c.cancel().await.unwrap();
    }
    let (code, out, _) = run_cli(&ws, &["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test]
async fn only_the_holder_may_update_or_complete_and_only_the_submitter_may_cancel() {
    let s = Scratch::new();
    let ws = s.ws();
    let caps = json!({"task_types": ["feature"]});
    let a = agent(&ws, "agent-a", caps.clone(), &[]).await;
    let b = agent(&ws, "agent-b", caps, &[]).await;
    let lead = start_as(&ws, "lead", &[]).await;
    let sub = ok(
        &lead,
        "task_submit",
        json!({"title": "Implement CSV export", "description": "", "task_type": "feature"}),
    )
    .await;
    let id = id_of(&sub);
    let (holder, other, holder_name) = match sub["assigned_to"].as_str().unwrap() {
        "agent-a" => (&a, &b, "agent-a"),
        "agent-b" => (&b, &a, "agent-b"),
        x => panic!("assigned to {x}"),
    };

    // Assigned is not held: not even the assignee may complete it before claiming.
    let t = refused(
        holder,
        "task_complete",
        json!({"task_id": id, "summary": "x"}),
    )
    .await;
    assert!(t.contains("[TASK-004]") && t.contains("task_next"), "{t}");
    ok(holder, "task_next", json!({})).await;

    let t = refused(
        other,
        "task_complete",
        json!({"task_id": id, "summary": "mine now"}),
    )
    .await;
    assert!(t.starts_with("Refused [TASK-004]"), "{t}");
    assert!(t.contains(&format!("held by {holder_name}")), "{t}");
    let t = refused(other, "task_update", json!({"task_id": id, "progress": 90})).await;
    assert!(t.contains("[TASK-004]"), "{t}");
    let t = refused(other, "task_cancel", json!({"task_id": id})).await;
    assert!(t.contains("[TASK-006]") && t.contains("lead"), "{t}");

    // Requests that are wrong in themselves.
    let t = refused(
        holder,
        "task_update",
        json!({"task_id": "OVR-1", "progress": 1}),
    )
    .await;
    assert!(t.starts_with("Invalid request [TASK-001]"), "{t}");
    let t = refused(
        holder,
        "task_update",
        json!({"task_id": id, "progress": 101}),
    )
    .await;
    assert!(t.contains("[TASK-001]"), "{t}");
    let t = refused(holder, "task_status", json!({"task_id": "T-999"})).await;
    assert!(t.contains("[TASK-003]"), "{t}");
    let t = refused(&lead, "task_next", json!({})).await;
    assert!(
        t.contains("[AGENT-001]") && t.contains("agent_register"),
        "{t}"
    );
    let t = refused(
        &lead,
        "agent_register",
        json!({"name": "agent-a", "capabilities": {"task_types": ["docs"]}}),
    )
    .await;
    assert!(t.contains("[AGENT-003]") && t.contains("`lead`"), "{t}");
    let t = refused(
        &lead,
        "agent_register",
        json!({"capabilities": {"task_types": []}}),
    )
    .await;
    assert!(t.contains("[AGENT-002]"), "{t}");
    let t = refused(
        &lead,
        "task_submit",
        json!({"title": " ", "description": ""}),
    )
    .await;
    assert!(t.contains("[TASK-001]"), "{t}");

    let cancelled = ok(&lead, "task_cancel", json!({"task_id": id})).await;
    assert_eq!(cancelled["task"]["state"], "cancelled");
    let t = refused(
        holder,
        "task_complete",
        json!({"task_id": id, "summary": "done"}),
    )
    .await;
    assert!(t.contains("[TASK-005]") && t.contains("cancelled"), "{t}");

    for c in [a, b, lead] {
        c.cancel().await.unwrap();
    }
    let refusals: Vec<[String; 4]> = audit_summary(&ws)
        .into_iter()
        .filter(|[tool, outcome, _, _]| tool.starts_with("task_") && outcome == "refused")
        .collect();
    assert!(
        refusals
            .iter()
            .any(|[tool, _, _, rules]| tool == "task_complete" && rules == "TASK-004"),
        "{refusals:?}"
    );
}

#[tokio::test]
async fn tasks_and_claims_survive_a_restart() {
    let s = Scratch::new();
    let ws = s.ws();
    let caps = json!({"task_types": ["docs"]});
    let worker = agent(&ws, "worker", caps, &[]).await;
    let lead = start_as(&ws, "lead", &[]).await;
    let first = id_of(
        &ok(
            &lead,
            "task_submit",
            json!({"title": "Document the export format", "description": ""}),
        )
        .await,
    );
    // The worker takes one task at a time: the second waits in the queue.
    let second = ok(
        &lead,
        "task_submit",
        json!({"title": "Fix typos in the README", "description": ""}),
    )
    .await;
    assert_eq!(second["assigned_to"], "queued", "{second}");
    assert!(
        second["routing"]["candidates"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("at capacity"),
        "{second}"
    );
    let second = id_of(&second);
    let next = ok(&worker, "task_next", json!({})).await;
    assert_eq!(next["task"]["task_id"], first.as_str());
    worker.cancel().await.unwrap();
    lead.cancel().await.unwrap();

    let worker = start_as(&ws, "worker", &[]).await;
    let status = ok(&worker, "task_status", json!({"task_id": first})).await;
    assert_eq!(status["task"]["state"], "claimed", "{status}");
    assert_eq!(status["task"]["holder"], "worker");
    // Still holding it, the worker is given it again rather than a new one.
    let held = ok(&worker, "task_next", json!({})).await;
    assert_eq!(held["outcome"], "already_held", "{held}");
    assert_eq!(held["task"]["task_id"], first.as_str());
    ok(
        &worker,
        "task_complete",
        json!({"task_id": first, "summary": "documented"}),
    )
    .await;
    let next = ok(&worker, "task_next", json!({})).await;
    assert_eq!(next["outcome"], "claimed_from_queue", "{next}");
    assert_eq!(next["task"]["task_id"], second.as_str());
    let listed = ok(&worker, "task_list", json!({"state": "completed"})).await;
    assert_eq!(listed["tasks"].as_array().unwrap().len(), 1, "{listed}");
    worker.cancel().await.unwrap();
}

#[tokio::test]
async fn a_lapsed_claim_returns_to_the_queue_and_a_silent_agent_is_not_routed_to() {
    let s = Scratch::new();
    let ws = s.ws();
    let caps = json!({"task_types": ["bugfix"]});
    let first = agent(&ws, "first", caps.clone(), &[]).await;
    let lead = start_as(&ws, "lead", &[]).await;
    let id = id_of(
        &ok(
            &lead,
            "task_submit",
            json!({"title": "Fix the leak in the indexer", "description": ""}),
        )
        .await,
    );
    ok(&first, "task_next", json!({})).await;
    let second = agent(&ws, "second", caps, &[]).await;

    // first's claim lapses: it stopped calling task_update (the lease is 30 minutes).
    rewind(
        &ws,
        "UPDATE tasks SET lease_expires_at = lease_expires_at - ?1 WHERE 'T-' || id = ?2",
        &id,
        31,
    )
    .await;
    let next = ok(&second, "task_next", json!({})).await;
    assert_eq!(next["outcome"], "claimed_from_queue", "{next}");
    assert_eq!(next["task"]["task_id"], id.as_str());
    assert_eq!(next["task"]["attempts"], 2);
    let t = refused(
        &first,
        "task_update",
        json!({"task_id": id, "progress": 10}),
    )
    .await;
    assert!(t.contains("held by second"), "{t}");
    let status = ok(&lead, "task_status", json!({"task_id": id})).await;
    assert!(
        status["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "lease_expired" && e["actor"] == "arbiter"),
        "{status}"
    );
    let record = agents_json(&ws);
    let first_record = record.iter().find(|a| a["agent"] == "first").unwrap();
    assert_eq!(
        first_record["performance"][0]["failures"], 1,
        "{first_record}"
    );

    // first goes silent past the agent timeout: the next task skips it.
    rewind(
        &ws,
        "UPDATE agents SET last_seen_at = last_seen_at - ?1 WHERE name = ?2",
        "first",
        11,
    )
    .await;
    let sub = ok(
        &lead,
        "task_submit",
        json!({"title": "Fix the crash on exit", "description": ""}),
    )
    .await;
    assert_eq!(
        sub["assigned_to"], "queued",
        "second is busy, first is gone: {sub}"
    );
    let candidates = sub["routing"]["candidates"].as_array().unwrap();
    let first_candidate = candidates.iter().find(|c| c["agent"] == "first").unwrap();
    assert!(
        first_candidate["detail"]
            .as_str()
            .unwrap()
            .starts_with("excluded: not seen for 11 min"),
        "{sub}"
    );
    for c in [first, second, lead] {
        c.cancel().await.unwrap();
    }
}

#[tokio::test]
async fn a_spec_is_validated_and_sets_the_tier_and_the_type() {
    let s = Scratch::new();
    let ws = s.ws();
    let lead = start_as(&ws, "lead", &[]).await;
    let bad = "id: FEAT-43\ntitle: Rewrite the payment flow\nrisk_tier: 1\nmode: feature\n\
               scope: {in: [src/pay/]}\ninvariants: [no double charge]\nacceptance: []\n";
    let t = refused(
        &lead,
        "task_submit",
        json!({"title": "Rewrite the payment flow", "description": "", "spec": bad}),
    )
    .await;
    assert!(t.starts_with("Invalid request [TASK-002]"), "{t}");
    assert!(
        t.contains("ACCEPTANCE-001") && t.contains("arbiter_validate"),
        "{t}"
    );

    let good = "id: FEAT-42\ntitle: CSV export\nrisk_tier: 3\nmode: feature\n\
                change_budget: {max_files: 10, max_loc: 100}\n\
                blast_radius: {modules: [export]}\noperational_rollback_slo: 5m\n\
                scope: {in: [src/], out: [src/generated/]}\n\
                invariants: [existing exports keep their format]\n\
                acceptance:\n  - {id: A1, given: a table, when: export is clicked, then: a CSV downloads}\n\
                non_functional: {perf: {api_p95_ms: 200}}\ncontracts: []\n";
    s.write(".caws/export.yaml", good);
    for spec in [good, ".caws/export.yaml"] {
        let sub = ok(
            &lead,
            "task_submit",
            json!({"title": "The export button", "description": "", "spec": spec}),
        )
        .await;
        assert_eq!(sub["spec_id"], "FEAT-42", "{sub}");
        assert_eq!(sub["risk_tier"], 3, "{sub}");
        assert_eq!(sub["tier_reason"], "the spec FEAT-42 sets it");
        assert_eq!(sub["task_type"], "feature", "{sub}");
        assert!(
            sub["type_signals"][0]
                .as_str()
                .unwrap()
                .starts_with("the spec's mode (feature)"),
            "{sub}"
        );
        assert_eq!(sub["assigned_to"], "queued");
        let status = ok(&lead, "task_status", json!({"task_id": sub["task_id"]})).await;
        assert!(status["task"]["spec"].as_str().unwrap().contains("FEAT-42"));
    }

    let critical = ok(
        &lead,
        "task_submit",
        json!({"title": "Add authentication to the admin API", "description": ""}),
    )
    .await;
    assert_eq!(critical["risk_tier"], 1, "{critical}");
    assert!(
        critical["tier_reason"]
            .as_str()
            .unwrap()
            .contains("`authentication`"),
        "{critical}"
    );
    lead.cancel().await.unwrap();
}

#[tokio::test]
async fn the_policy_chooses_round_robin_and_policy_show_prints_it() {
    let s = Scratch::new();
    let ws = s.ws();
    let policy = s.outside().join("tasks-policy.yaml");
    std::fs::write(
        &policy,
        "version: 1\ntasks:\n  strategy: round_robin\n  seed: 7\n  lease_minutes: 5\n",
    )
    .unwrap();
    let policy_arg = policy.to_str().unwrap();
    let extra = ["--policy", policy_arg];
    let mut agents = Vec::new();
    for name in ["carol", "alice", "bob"] {
        let c = start_as(&ws, name, &extra).await;
        register(&c, json!({"task_types": ["feature"]}), 10).await;
        agents.push(c);
    }
    let lead = start_as(&ws, "lead", &extra).await;
    let mut order = Vec::new();
    for i in 0..6 {
        let sub = ok(
            &lead,
            "task_submit",
            json!({"title": format!("Implement widget {i}"), "description": ""}),
        )
        .await;
        assert_eq!(sub["routing"]["strategy"], "round_robin");
        assert_eq!(sub["routing"]["seed"], 7);
        order.push(sub["assigned_to"].as_str().unwrap().to_string());
    }
    assert_eq!(order, ["alice", "bob", "carol", "alice", "bob", "carol"]);

    let (code, out, err) = run_cli(&ws, &["--policy", policy_arg, "policy", "show"]);
    assert_eq!(code, 0, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        shown["tasks"],
        json!({"strategy": "round_robin", "ucb1_exploration": std::f64::consts::SQRT_2,
               "ucb1_score_weight": 0.5,
               "agent_timeout_minutes": 10, "lease_minutes": 5, "seed": 7, "gates": {},
               "judge": {"judges": [], "min_confidence": 0.6, "gates_weight": 1.0,
                         "max_attempts": 3, "backoff_ms": 500, "timeout_ms": 60000,
                         "breaker_failures": 3, "breaker_cooldown_seconds": 60}})
    );
    for c in agents {
        c.cancel().await.unwrap();
    }
    lead.cancel().await.unwrap();
}

/// Twenty agents, each its own server process on one store, race for a
/// thousand queued tasks, the count (`ARBITER_RACE_TASKS=N` for
/// another). Every task must be claimed exactly once: counted from what the
/// agents were given, from the tasks' states, and from the claim events in
/// the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_agents_claim_each_of_a_thousand_tasks_exactly_once() {
    const AGENTS: usize = 20;
    let tasks: usize = std::env::var("ARBITER_RACE_TASKS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let s = Scratch::new();
    let ws = s.ws();
    let lead = start_as(&ws, "lead", &[]).await;
    // Submitted before any agent registers, so every task is queued and the
    // agents race for each one.
    let submitted: Vec<String> = futures::stream::iter(0..tasks)
        .map(|i| {
            let lead = &lead;
            async move {
                let sub = ok(
                    lead,
                    "task_submit",
                    json!({"title": format!("Task {i}"), "description": "", "task_type": "test",
                           "priority": 1 + (i % 5)}),
                )
                .await;
                assert_eq!(sub["assigned_to"], "queued");
                id_of(&sub)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert_eq!(submitted.iter().collect::<HashSet<_>>().len(), tasks);

    let ws_ref = &ws;
    let agents: Vec<NamedClient> = futures::future::join_all((0..AGENTS).map(|i| async move {
        agent(
            ws_ref,
            &format!("agent-{i:02}"),
            json!({"task_types": ["test"]}),
            &[],
        )
        .await
    }))
    .await;

    let claimed: Vec<Vec<String>> = futures::future::join_all(agents.iter().map(|c| async move {
        let mut mine = Vec::new();
        loop {
            let next = ok(c, "task_next", json!({})).await;
            match next["outcome"].as_str().unwrap() {
                "none" => break,
                "claimed_from_queue" => {
                    let id = id_of(&next["task"]);
                    ok(
                        c,
                        "task_complete",
                        json!({"task_id": id, "summary": "done"}),
                    )
                    .await;
                    mine.push(id);
                }
                other => panic!("unexpected task_next outcome {other}: {next}"),
            }
        }
        mine
    }))
    .await;

    let all: Vec<&String> = claimed.iter().flatten().collect();
    let distinct: HashSet<&String> = all.iter().copied().collect();
    assert_eq!(all.len(), tasks, "claims handed out");
    assert_eq!(distinct.len(), tasks, "no task was handed out twice");
    assert_eq!(
        distinct,
        submitted.iter().collect::<HashSet<_>>(),
        "every submitted task was claimed"
    );
    let per_agent: Vec<usize> = claimed.iter().map(Vec::len).collect();
    eprintln!("claims per agent: {per_agent:?}");
    let busy = claimed.iter().filter(|mine| !mine.is_empty()).count();
    assert!(
        busy >= 2,
        "the work was shared: {busy} agents claimed tasks"
    );

    let limit = tasks.min(1000);
    let completed = ok(
        &lead,
        "task_list",
        json!({"state": "completed", "limit": limit}),
    )
    .await;
    assert_eq!(completed["tasks"].as_array().unwrap().len(), limit);
    for c in agents {
        c.cancel().await.unwrap();
    }
    lead.cancel().await.unwrap();

    assert_eq!(
        sql_count(
            &ws,
            "SELECT COUNT(*) FROM task_events WHERE kind = 'claimed'"
        )
        .await,
        tasks as i64
    );
    assert_eq!(
        sql_count(
            &ws,
            "SELECT COUNT(*) FROM tasks WHERE attempts = 1 AND state = 'completed'"
        )
        .await,
        tasks as i64
    );
    assert_eq!(
        sql_count(&ws, "SELECT SUM(successes) FROM agent_performance").await,
        tasks as i64
    );
    let (code, out, _) = run_cli(&ws, &["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test]
async fn the_task_tools_are_listed_with_schemas_and_malformed_calls_name_the_field() {
    let s = Scratch::new();
    let c = start_as(&s.ws(), "lead", &[]).await;
    let tools = c.list_all_tools().await.unwrap();
    let find = |name: &str| {
        tools
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("{name} missing"))
            .clone()
    };
    for name in [
        "task_submit",
        "agent_register",
        "task_next",
        "task_update",
        "task_complete",
        "task_cancel",
        "task_status",
        "task_list",
    ] {
        let tool = find(name);
        assert!(tool.output_schema.is_some(), "{name}");
        let read_only = tool.annotations.and_then(|a| a.read_only_hint);
        let expected = matches!(name, "task_status" | "task_list");
        assert_eq!(read_only, Some(expected), "{name}");
    }
    let complete = find("task_complete");
    assert!(
        complete
            .description
            .as_deref()
            .unwrap()
            .contains("quality gates the policy names"),
        "the description says the gates run"
    );

    let err = try_call(&c, "task_update", json!({"progress": 5}))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("task_id") && err.contains("missing"), "{err}");
    let err = try_call(&c, "task_next", json!({"agent": "x"}))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("agent"), "{err}");
    let err = try_call(
        &c,
        "task_submit",
        json!({"title": "t", "description": "", "task_type": "chore"}),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("task_type"), "{err}");
    c.cancel().await.unwrap();
}

fn declared(agents: &[Value], name: &str) -> Option<Value> {
    agents.iter().find(|a| a["agent"] == name).cloned()
}

/// Agents declared in the policy (`tasks.agents`) are in the registry from
/// the server's start, before they ever connect; one that never calls stops
/// being routed to after `agent_timeout_minutes`; a reload adds, updates and
/// drops them.
#[tokio::test]
async fn agents_declared_in_the_policy_are_routable_from_start_and_follow_reloads() {
    let s = Scratch::new();
    let ws = s.ws();
    let policy = s.outside().join("agents-policy.yaml");
    std::fs::write(
        &policy,
        "version: 1\ntasks:\n  seed: 3\n  agents:\n\
         \x20   - name: planner\n\
         \x20     capabilities: {task_types: [feature, bugfix], languages: [Rust], tools: [cargo]}\n\
         \x20     max_concurrent_tasks: 2\n\
         \x20   - name: ghost\n\
         \x20     capabilities: {task_types: [docs]}\n",
    )
    .unwrap();
    let policy_arg = policy.to_str().unwrap();
    let extra = ["--policy", policy_arg];
    let lead = start_as(&ws, "lead", &extra).await;

    // No tool call yet: the server registered them when it started.
    eventually(
        "the declared agents in `arbiter agents`",
        std::time::Duration::from_secs(20),
        || {
            let shown = agents_json(&ws);
            declared(&shown, "planner").is_some() && declared(&shown, "ghost").is_some()
        },
    )
    .await;
    let shown = agents_json(&ws);
    let planner = declared(&shown, "planner").unwrap();
    assert_eq!(
        planner["capabilities"],
        json!({"task_types": ["feature", "bugfix"], "languages": ["rust"], "tools": ["cargo"]}),
        "{planner}"
    );
    assert_eq!(planner["max_concurrent_tasks"], 2);
    assert!(planner["last_seen_at"].is_null(), "never seen: {planner}");
    assert!(planner["declared_in_policy_at"].is_string(), "{planner}");
    let (code, table, err) = run_cli(&ws, &["agents"]);
    assert_eq!(code, 0, "{err}");
    assert!(table.contains("never (declared)"), "{table}");

    // Routable before it ever connected.
    let sub = ok(
        &lead,
        "task_submit",
        json!({"title": "Implement the CSV export", "description": "",
               "required_capabilities": {"languages": ["rust"]}}),
    )
    .await;
    assert_eq!(sub["assigned_to"], "planner", "{sub}");
    let id = id_of(&sub);
    // It connects under its name and works without agent_register.
    let planner = start_as(&ws, "planner", &extra).await;
    let next = ok(&planner, "task_next", json!({})).await;
    assert_eq!(next["outcome"], "claimed_assigned", "{next}");
    assert_eq!(next["task"]["task_id"], id.as_str());

    // ghost never calls: once agent_timeout_minutes (10) have passed since
    // the policy's load, routing passes it over.
    rewind(
        &ws,
        "UPDATE agents SET declared_at = declared_at - ?1 WHERE name = ?2",
        "ghost",
        11,
    )
    .await;
    let sub = ok(
        &lead,
        "task_submit",
        json!({"title": "Document the export", "description": "", "task_type": "docs"}),
    )
    .await;
    assert_eq!(sub["assigned_to"], "queued", "{sub}");
    let ghost = sub["routing"]["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["agent"] == "ghost")
        .cloned()
        .unwrap();
    assert!(
        ghost["detail"].as_str().unwrap().starts_with(
            "excluded: declared in the policy but not seen since it was loaded for 11 min"
        ),
        "{sub}"
    );

    // A reload: ghost (never seen) is dropped, planner (seen, holding a
    // task) changes capacity, reviewer appears.
    std::fs::write(
        &policy,
        "version: 1\ntasks:\n  seed: 3\n  agents:\n\
         \x20   - name: planner\n\
         \x20     capabilities: {task_types: [feature, bugfix], languages: [rust], tools: [cargo]}\n\
         \x20     max_concurrent_tasks: 3\n\
         \x20   - name: reviewer\n\
         \x20     capabilities: {task_types: [docs, test]}\n",
    )
    .unwrap();
    eventually(
        "the reloaded declarations in `arbiter agents`",
        std::time::Duration::from_secs(20),
        || {
            let shown = agents_json(&ws);
            declared(&shown, "reviewer").is_some()
                && declared(&shown, "ghost").is_none()
                && declared(&shown, "planner").is_some_and(|p| p["max_concurrent_tasks"] == 3)
        },
    )
    .await;
    let planner_row = declared(&agents_json(&ws), "planner").unwrap();
    assert!(planner_row["last_seen_at"].is_string(), "{planner_row}");
    assert_eq!(planner_row["active_tasks"], 1, "{planner_row}");
    // The queued docs task goes to the new agent when it asks.
    let reviewer = start_as(&ws, "reviewer", &extra).await;
    let next = ok(&reviewer, "task_next", json!({})).await;
    assert_eq!(next["outcome"], "claimed_from_queue", "{next}");
    for c in [lead, planner, reviewer] {
        c.cancel().await.unwrap();
    }
}

/// With many agents a task_submit reply lists the best five candidates and
/// counts the rest; the decision is stored whole as one row (no per-candidate
/// rows), and task_status and `arbiter task show` list every candidate.
/// Decisions stored one row per candidate before this still read back.
#[tokio::test]
async fn a_submit_reply_shows_the_best_candidates_and_the_store_keeps_them_all() {
    let s = Scratch::new();
    let ws = s.ws();
    let policy = s.outside().join("many-agents.yaml");
    let mut yaml = String::from("version: 1\ntasks:\n  seed: 5\n  agents:\n");
    for i in 0..7 {
        yaml.push_str(&format!(
            "    - {{name: agent-{i}, capabilities: {{task_types: [feature]}}}}\n"
        ));
    }
    yaml.push_str("    - {name: writer, capabilities: {task_types: [docs]}}\n");
    std::fs::write(&policy, yaml).unwrap();
    let lead = start_as(&ws, "lead", &["--policy", policy.to_str().unwrap()]).await;
    let sub = ok(
        &lead,
        "task_submit",
        json!({"title": "Implement the importer", "description": "", "task_type": "feature"}),
    )
    .await;
    let routing = &sub["routing"];
    assert_eq!(routing["candidates"].as_array().unwrap().len(), 5, "{sub}");
    assert_eq!(routing["eligible_count"], 7, "{sub}");
    assert_eq!(routing["excluded_count"], 1, "{sub}");
    assert_eq!(routing["candidates_omitted"], 3, "{sub}");
    assert_eq!(routing["candidates"][0]["agent"], sub["assigned_to"]);
    let id = id_of(&sub);

    let status = ok(&lead, "task_status", json!({"task_id": id})).await;
    let all = status["routing"][0]["candidates"].as_array().unwrap();
    assert_eq!(all.len(), 8, "{status}");
    assert_eq!(all[7]["agent"], "writer");
    assert_eq!(all[7]["detail"], "excluded: does not take feature tasks");
    assert!(status["routing"][0].get("candidates_omitted").is_none());
    let (code, shown, err) = run_cli(&ws, &["task", "show", &id]);
    assert_eq!(code, 0, "{err}");
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["routing"][0]["candidates"], json!(all), "{shown}");
    assert!(
        shown["routing"][0]["rationale"]
            .as_str()
            .unwrap()
            .contains("of 7 eligible agent(s); 1 excluded"),
        "{shown}"
    );
    assert_eq!(
        sql_count(&ws, "SELECT COUNT(*) FROM routing_scores").await,
        0
    );
    assert_eq!(
        sql_count(
            &ws,
            "SELECT COUNT(*) FROM routing_decisions WHERE candidates IS NOT NULL"
        )
        .await,
        1
    );

    // A decision stored the older way: one row per candidate.
    let pool = store(&ws).await;
    sqlx::query("UPDATE routing_decisions SET candidates = NULL")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO routing_scores (decision_id, rank, agent, eligible, score, detail) \
         SELECT id, 0, 'old-agent', 1, 0.5, 'stored per row' FROM routing_decisions",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let status = ok(&lead, "task_status", json!({"task_id": id})).await;
    assert_eq!(
        status["routing"][0]["candidates"],
        json!([{"agent": "old-agent", "eligible": true, "score": 0.5, "detail": "stored per row"}]),
        "{status}"
    );
    lead.cancel().await.unwrap();
}

/// While an agent holds a task whose spec has a scope and a change budget,
/// its writes, deletes and moves are checked against them (SCOPE-001,
/// BUDGET-001, naming the task); another agent, and the same agent once the
/// task is done, are not bound by it.
#[tokio::test]
async fn a_held_tasks_scope_and_budget_bind_the_holders_writes() {
    let s = Scratch::new();
    let ws = s.ws();
    s.write("docs/guide.md", "guide\n");
    s.write("src/old.rs", "old\n");
    let worker = agent(&ws, "worker", json!({"task_types": ["feature"]}), &[]).await;
    let other = agent(&ws, "other", json!({"task_types": ["docs"]}), &[]).await;
    let lead = start_as(&ws, "lead", &[]).await;
    let spec = export_spec("FEAT-42", 5);
    let sub = ok(
        &lead,
        "task_submit",
        json!({"title": "The export button", "description": "", "spec": spec}),
    )
    .await;
    assert_eq!(sub["assigned_to"], "worker", "{sub}");
    let id = id_of(&sub);
    ok(&worker, "task_next", json!({})).await;

    ok(
        &worker,
        "file_write",
        json!({"file_path": "src/a.rs", "contents": "1\n2\n3\n"}),
    )
    .await;
    // Rewriting it unchanged changes no line: the budget counts changes, not
    // the bytes written.
    ok(
        &worker,
        "file_write",
        json!({"file_path": "src/a.rs", "contents": "1\n2\n3\n"}),
    )
    .await;
    let out = refused(
        &worker,
        "file_write",
        json!({"file_path": "docs/guide.md", "contents": "x\n"}),
    )
    .await;
    assert!(out.starts_with("Refused [SCOPE-001]"), "{out}");
    assert!(out.contains(&format!("FEAT-42 of task {id}")), "{out}");
    let out = refused(
        &worker,
        "file_write",
        json!({"file_path": "src/generated/x.rs", "contents": "x\n"}),
    )
    .await;
    assert!(
        out.starts_with("Refused [SCOPE-001]") && out.contains("scope.out"),
        "{out}"
    );
    // A move out of scope and a delete out of scope are refused too.
    let out = refused(
        &worker,
        "move_file",
        json!({"source": "src/old.rs", "destination": "docs/old.rs"}),
    )
    .await;
    assert!(out.starts_with("Refused [SCOPE-001]"), "{out}");
    let out = refused(
        &worker,
        "delete_file",
        json!({"target_file": "docs/guide.md"}),
    )
    .await;
    assert!(out.starts_with("Refused [SCOPE-001]"), "{out}");
    // Three lines used of five: three more are over the task's budget.
    let out = refused(
        &worker,
        "file_write",
        json!({"file_path": "src/b.rs", "contents": "1\n2\n3\n"}),
    )
    .await;
    assert!(out.starts_with("Refused [BUDGET-001]"), "{out}");
    assert!(
        out.contains(&format!("spec FEAT-42 of task {id}"))
            && out.contains("6 of 5 lines")
            && out.contains("so far 1 files, 3 lines"),
        "{out}"
    );
    ok(
        &worker,
        "file_write",
        json!({"file_path": "src/b.rs", "contents": "1\n2\n"}),
    )
    .await;
    // The budget is spent: deleting a line's file in scope is one line too many.
    let out = refused(&worker, "delete_file", json!({"target_file": "src/old.rs"})).await;
    assert!(out.starts_with("Refused [BUDGET-001]"), "{out}");

    // Another agent holds no task: the spec does not bind it.
    ok(
        &other,
        "file_write",
        json!({"file_path": "docs/guide.md", "contents": "by other\n"}),
    )
    .await;
    // Done with the task (no gates in this policy), the worker is free again.
    let done = ok(
        &worker,
        "task_complete",
        json!({"task_id": id, "summary": "exported"}),
    )
    .await;
    assert_eq!(done["task"]["state"], "completed", "{done}");
    ok(
        &worker,
        "file_write",
        json!({"file_path": "docs/guide.md", "contents": "after the task\n"}),
    )
    .await;
    for c in [worker, other, lead] {
        c.cancel().await.unwrap();
    }
}

#[tokio::test]
async fn what_a_holders_command_changes_is_judged_by_the_tasks_spec() {
    let s = Scratch::new();
    let ws = s.ws();
    s.write("docs/guide.md", "guide\n");
    s.write("src/old.rs", "old\n");
    let worker = agent(&ws, "worker", json!({"task_types": ["feature"]}), &[]).await;
    let lead = start_as(&ws, "lead", &[]).await;
    let spec = export_spec("FEAT-43", 4);
    let sub = ok(
        &lead,
        "task_submit",
        json!({"title": "The export button", "description": "", "spec": spec}),
    )
    .await;
    let id = id_of(&sub);
    // Before the claim the spec does not bind the worker's commands.
    ok(
        &worker,
        "run_terminal_cmd",
        json!({"command": "cp docs/guide.md docs/before.md"}),
    )
    .await;
    ok(&worker, "task_next", json!({})).await;

    // In scope: allowed, and its one line counts in the task's budget.
    ok(
        &worker,
        "run_terminal_cmd",
        json!({"command": "cp src/old.rs src/copy.rs"}),
    )
    .await;
    // Out of scope: the command ran (it cannot be undone), and the reply says
    // which file broke which rule, with the command's result.
    let out = refused(
        &worker,
        "run_terminal_cmd",
        json!({"command": "cp docs/guide.md docs/copy.md"}),
    )
    .await;
    assert!(out.contains("[SCOPE-001]"), "{out}");
    assert!(
        out.contains("the command ran, but what it changed is not allowed")
            && out.contains("docs/copy.md")
            && out.contains(&format!("FEAT-43 of task {id}"))
            && out.contains("revert those files"),
        "{out}"
    );
    assert!(ws.join("docs/copy.md").exists());
    // The budget counted both files the commands made (a line each): 2 + 4 is over 4.
    let out = refused(
        &worker,
        "file_write",
        json!({"file_path": "src/b.rs", "contents": "1\n2\n3\n4\n"}),
    )
    .await;
    assert!(out.starts_with("Refused [BUDGET-001]"), "{out}");
    assert!(out.contains("so far 2 files, 2 lines"), "{out}");
    // Build output (ignored paths) is not a change.
    s.write(".gitignore", "out/\n");
    ok(
        &worker,
        "run_terminal_cmd",
        json!({"command": "mkdir -p out"}),
    )
    .await;
    ok(
        &worker,
        "run_terminal_cmd",
        json!({"command": "cp docs/guide.md out/built.md"}),
    )
    .await;

    // A command in a terminal session is judged the same way.
    let session = ok(&worker, "terminal_create_session", json!({})).await;
    let session = session["session_id"].as_str().unwrap().to_string();
    let out = refused(
        &worker,
        "terminal_execute_command",
        json!({"session_id": session, "command": "cp -v docs/guide.md docs/typed.md", "timeout_ms": 20000}),
    )
    .await;
    assert!(
        out.contains("[SCOPE-001]")
            && out.contains("exit status 0")
            && out.contains("-> 'docs/typed.md'"),
        "{out}"
    );

    // The task's history names the files its commands changed.
    let shown = ok(&lead, "task_status", json!({"task_id": id})).await;
    let text = shown.to_string();
    assert!(
        text.contains("src/copy.rs") && text.contains("docs/copy.md"),
        "{shown}"
    );
    assert!(!text.contains("docs/before.md"), "{shown}");
    for c in [worker, lead] {
        c.cancel().await.unwrap();
    }
}
