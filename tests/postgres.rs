//! The real server on PostgreSQL (`--db postgres://…`): migrations applied
//! at start with the owner's URL, calls audited and tasks kept in the
//! database as the application role, and a server given the owner's URL as
//! its own refused. The cluster comes from `tools/pg/setup.sh` (see
//! README, Set-up); without it these tests are skipped, except under CI.

mod common;

use std::collections::HashSet;

use arbiter::store::PgStore;
use common::pg::database;
use common::*;
use futures::StreamExt;
use serde_json::{Value, json};

#[tokio::test]
async fn a_server_on_postgres_migrates_at_start_and_keeps_audit_and_tasks_there() {
    let Some(db) = database().await else {
        return;
    };
    let s = Scratch::new();
    s.write("notes.txt", "hello\n");
    let client = start_as(
        &s.ws(),
        "lead",
        &["--db", &db.app_url, "--db-owner", &db.owner_url],
    )
    .await;
    ok(&client, "file_read", json!({"target_file": "notes.txt"})).await;
    let sub = ok(
        &client,
        "task_submit",
        json!({"title": "Write the docs", "description": "the README", "task_type": "docs"}),
    )
    .await;
    assert_eq!(sub["state"], "queued", "{sub}");

    // The task is in PostgreSQL, and no SQLite file was made.
    let owner = PgStore::connect(&db.owner_url).await.unwrap();
    let tasks: Vec<(String, String)> = sqlx::query_as("SELECT tenant, title FROM tasks")
        .fetch_all(owner.pool())
        .await
        .unwrap();
    assert_eq!(tasks, vec![("default".into(), "Write the docs".into())]);
    assert!(!s.ws().join(".arbiter/arbiter.db").exists());
    // The audit records were committed to PostgreSQL before the replies
    // (no journal file is the commit point).
    let committed =
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM audit_records WHERE tenant = 'default'")
            .fetch_one(owner.pool())
            .await
            .unwrap();
    assert_eq!(committed, 2, "audit records committed");
    assert!(!s.ws().join(".arbiter/audit.journal").exists());
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_server_given_the_owners_url_refuses_to_serve_on_it() {
    let Some(db) = database().await else {
        return;
    };
    let s = Scratch::new();
    s.write("notes.txt", "hello\n");
    let client = start_with(
        &s.ws(),
        &["--db", &db.owner_url, "--db-owner", &db.owner_url],
    )
    .await;
    let why = refused(&client, "file_read", json!({"target_file": "notes.txt"})).await;
    assert!(why.contains("owns the tables"), "{why}");
    assert!(why.contains("AUDIT-001"), "{why}");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn db_migrate_applies_each_migration_once_and_says_so() {
    let Some(db) = database().await else {
        return;
    };
    let s = Scratch::new();
    assert_migrates_once(
        &s.ws(),
        &["--db", &db.app_url, "--db-owner", &db.owner_url],
        "PostgreSQL",
        "postgres",
    );
    // Without the owner's URL, the application role cannot migrate: a clear error.
    let fresh = database().await.unwrap();
    let (code, _, err) = run_cli(&s.ws(), &["--db", &fresh.app_url, "db", "migrate"]);
    assert_ne!(code, 0);
    assert!(err.contains("--db-owner"), "{err}");
}

#[tokio::test]
async fn doctor_checks_the_database_and_that_row_security_holds_for_the_servers_role() {
    let Some(db) = database().await else {
        return;
    };
    let s = Scratch::new();
    let (code, out, _) = run_cli(&s.ws(), &["--db", &db.app_url, "doctor"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL  store: PostgreSQL at postgres://arbiter_app@"),
        "{out}"
    );
    assert!(out.contains("arbiter db migrate"), "{out}");
    // The URL is shown without its password.
    let password = db.app_url.split_once("://").unwrap().1;
    let password = password
        .split_once('@')
        .unwrap()
        .0
        .split_once(':')
        .unwrap()
        .1;
    assert!(!password.is_empty() && !out.contains(password), "{out}");
    let (code, _, err) = run_cli(&s.ws(), &["--db-owner", &db.owner_url, "db", "migrate"]);
    assert_eq!(code, 0, "{err}");
    // (Its exit status also depends on this machine's sandbox and clients.)
    let (_, out, _) = run_cli(&s.ws(), &["--db", &db.app_url, "doctor"]);
    assert!(
        out.contains("ok    database role: not a superuser"),
        "{out}"
    );
    assert!(out.contains("ok    store: PostgreSQL"), "{out}");
    assert!(
        !out.contains("FAIL  store") && !out.contains("FAIL  database"),
        "{out}"
    );
    // The owner's URL as the server's: row security would not hold.
    let (code, out, _) = run_cli(&s.ws(), &["--db", &db.owner_url, "doctor"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL  database role:"), "{out}");
    assert!(out.contains("owner"), "{out}");
}

/// Four server processes, each with a workspace of its own (as on four
/// hosts: no journal file can serialize them), append to tenant default's
/// chain at once. `audit verify` finds one chain, with no fork and no gap,
/// holding every call's record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_with_their_own_workspaces_append_to_one_chain() {
    const PROCESSES: usize = 4;
    const CALLS: usize = 40;
    let Some(db) = database().await else {
        return;
    };
    let dirs: Vec<Scratch> = (0..PROCESSES).map(|_| Scratch::new()).collect();
    for d in &dirs {
        d.write("notes.txt", "hello\n");
    }
    // The first applies the migrations; the others start together.
    let mut clients = vec![start_as(&dirs[0].ws(), "proc-0", &db.args()).await];
    ok(
        &clients[0],
        "file_read",
        json!({"target_file": "notes.txt"}),
    )
    .await;
    for (i, d) in dirs.iter().enumerate().skip(1) {
        clients.push(start_as(&d.ws(), &format!("proc-{i}"), &db.args()).await);
    }
    futures::future::join_all(clients.iter().map(|c| async move {
        futures::stream::iter(0..CALLS)
            .for_each_concurrent(4, |_| async {
                ok(c, "file_read", json!({"target_file": "notes.txt"})).await;
            })
            .await;
    }))
    .await;
    for c in clients {
        c.cancel().await.unwrap();
    }

    for d in &dirs {
        assert!(!d.ws().join(".arbiter/audit.journal").exists());
    }
    let (code, out, err) = run_cli(
        &dirs[1].ws(),
        &[
            "audit",
            "verify",
            "--json",
            "--db",
            &db.app_url,
            "--db-owner",
            &db.owner_url,
        ],
    );
    assert_eq!(code, 0, "audit verify: {out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let total = PROCESSES * CALLS + 1;
    assert_eq!(report["records"], total as u64, "{report}");
    assert!(report["first_bad"].is_null(), "{report}");
    // Every process's calls are there, each once.
    let owner = PgStore::connect(&db.owner_url).await.unwrap();
    let per_client: Vec<(String, i64)> = sqlx::query_as(
        "SELECT client_name, COUNT(*) FROM audit_records WHERE tenant = 'default' \
         GROUP BY client_name ORDER BY client_name",
    )
    .fetch_all(owner.pool())
    .await
    .unwrap();
    let expected: Vec<(String, i64)> = (0..PROCESSES)
        .map(|i| (format!("proc-{i}"), CALLS as i64 + i64::from(i == 0)))
        .collect();
    assert_eq!(per_client, expected);
    let head: (i64,) = sqlx::query_as("SELECT seq FROM audit_heads WHERE tenant = 'default'")
        .fetch_one(owner.pool())
        .await
        .unwrap();
    assert_eq!(head.0, total as i64);
}

/// Agents in separate processes, each with its own workspace, on one
/// database race for queued tasks (tests/tasks.rs runs the same race on one
/// SQLite file): every task is handed out exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_in_several_processes_claim_each_task_exactly_once() {
    const AGENTS: usize = 6;
    const TASKS: usize = 60;
    let Some(db) = database().await else {
        return;
    };
    let lead_dir = Scratch::new();
    let lead = start_as(&lead_dir.ws(), "lead", &db.args()).await;
    let submitted: HashSet<String> = futures::stream::iter(0..TASKS)
        .map(|i| {
            let lead = &lead;
            async move {
                let sub = ok(
                    lead,
                    "task_submit",
                    json!({"title": format!("Task {i}"), "description": "", "task_type": "test"}),
                )
                .await;
                assert_eq!(sub["assigned_to"], "queued", "{sub}");
                sub["task_id"].as_str().unwrap().to_string()
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    assert_eq!(submitted.len(), TASKS);

    let dirs: Vec<Scratch> = (0..AGENTS).map(|_| Scratch::new()).collect();
    let db_ref = &db;
    let agents = futures::future::join_all(dirs.iter().enumerate().map(|(i, d)| async move {
        let c = start_as(&d.ws(), &format!("agent-{i}"), &db_ref.args()).await;
        ok(
            &c,
            "agent_register",
            json!({"capabilities": {"task_types": ["test"]}, "max_concurrent_tasks": 1}),
        )
        .await;
        c
    }))
    .await;
    let claimed: Vec<Vec<String>> = futures::future::join_all(agents.iter().map(|c| async move {
        let mut mine = Vec::new();
        loop {
            let next = ok(c, "task_next", json!({})).await;
            match next["outcome"].as_str().unwrap() {
                "none" => break,
                "claimed_from_queue" => {
                    let id = next["task"]["task_id"].as_str().unwrap().to_string();
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
    for c in agents {
        c.cancel().await.unwrap();
    }
    lead.cancel().await.unwrap();

    let all: Vec<&String> = claimed.iter().flatten().collect();
    let distinct: HashSet<String> = all.iter().map(|s| s.to_string()).collect();
    assert_eq!(all.len(), TASKS, "claims handed out");
    assert_eq!(distinct, submitted, "each task handed out once");
    eprintln!(
        "claims per agent: {:?}",
        claimed.iter().map(Vec::len).collect::<Vec<_>>()
    );
    let owner = PgStore::connect(&db.owner_url).await.unwrap();
    let count = |sql: &'static str| {
        let pool = owner.pool().clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        count("SELECT COUNT(*) FROM task_events WHERE kind = 'claimed'").await,
        TASKS as i64
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM tasks WHERE attempts = 1 AND state = 'completed'").await,
        TASKS as i64
    );
}

/// One `initialize` to `/mcp` with a bearer token: the status and Retry-After.
async fn initialize_with(server: &HttpServer, token: &str) -> (u16, Option<u64>) {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"}}});
    let response = reqwest::Client::new()
        .post(server.mcp())
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (response.status().as_u16(), retry)
}

/// Two HTTP servers on one database share a token's budget: 4 requests an
/// hour, split over both, let four in; then both answer 429 with
/// Retry-After (in memory per process, each would have let four in).
#[tokio::test]
async fn two_http_servers_on_one_database_share_a_tokens_request_limit() {
    let Some(db) = database().await else {
        return;
    };
    let (a, b) = (Scratch::new(), Scratch::new());
    let (code, out, err) = run_cli(&a.ws(), &["db", "migrate", "--db-owner", &db.owner_url]);
    assert_eq!(code, 0, "db migrate: {out}{err}");
    let mut args = vec!["--tenant", "default", "--agent", "bot"];
    args.extend(["--rate-limit", "4/h"]);
    args.extend(db.args());
    let token = token_with(&a.ws(), &args);
    let servers = [
        HttpServer::start(&a.ws(), &db.args()),
        HttpServer::start(&b.ws(), &db.args()),
    ];
    for i in 0..4 {
        let (status, _) = initialize_with(&servers[i % 2], &token).await;
        assert_eq!(status, 200, "request {i} of 4 is within the limit");
    }
    for server in &servers {
        let (status, retry) = initialize_with(server, &token).await;
        assert_eq!(status, 429, "the shared budget is spent");
        // 4 an hour: the next one is due in about 15 minutes.
        let retry = retry.expect("Retry-After");
        assert!((800..=900).contains(&retry), "Retry-After: {retry}");
    }
    // Another token has a budget of its own.
    let mut args = vec!["--tenant", "default", "--agent", "other"];
    args.extend(["--rate-limit", "4/h"]);
    args.extend(db.args());
    let other = token_with(&a.ws(), &args);
    assert_eq!(initialize_with(&servers[1], &other).await.0, 200);
}
