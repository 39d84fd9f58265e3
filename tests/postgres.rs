//! The real server on PostgreSQL (`--db postgres://…`): migrations applied
//! at start with the owner's URL, calls audited and tasks kept in the
//! database as the application role, and a server given the owner's URL as
//! its own refused. The cluster comes from `tools/pg/setup.sh` (see
//! README, Set-up); without it these tests are skipped, except under CI.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use arbiter::store::PgStore;
use common::*;
use serde_json::json;

struct Database {
    app_url: String,
    owner_url: String,
}

/// A fresh database on the local test cluster; `None` when there is none.
async fn database() -> Option<Database> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/pg/setup.sh");
    let out = std::process::Command::new(script)
        .stderr(std::process::Stdio::inherit())
        .output();
    let vars: HashMap<String, String> = match out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        _ => HashMap::new(),
    };
    let (Some(app), Some(owner)) = (
        vars.get("ARBITER_DATABASE_URL"),
        vars.get("ARBITER_DATABASE_OWNER_URL"),
    ) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "PostgreSQL tests must not be skipped under CI"
        );
        eprintln!("PostgreSQL not available: skipped");
        return None;
    };
    // The time in the name lets tools/pg/setup.sh drop old ones.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let name = format!("arbiter_it_{secs}_{}", unique());
    let admin = PgStore::connect(owner).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(admin.pool())
        .await
        .unwrap();
    let swap = |url: &str| format!("{}/{name}", url.rsplit_once('/').unwrap().0);
    Some(Database {
        app_url: swap(app),
        owner_url: swap(owner),
    })
}

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
    // The audit records reach PostgreSQL (indexed behind the journal).
    let mut indexed = 0;
    for _ in 0..500 {
        indexed = sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM audit_records WHERE tenant = 'default'",
        )
        .fetch_one(owner.pool())
        .await
        .unwrap();
        if indexed >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(indexed >= 2, "{indexed} audit records indexed");
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
