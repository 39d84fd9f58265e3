//! The database goes away under a running server and comes back. The test
//! starts a PostgreSQL cluster of its own (`tools/pg/setup.sh` with
//! `ARBITER_PG_DIR`; the shared test cluster is never stopped), runs `arbiter
//! serve --http` on it, and crashes the database (`pg_ctl -m immediate`):
//! calls that need it fail fast with STORE-001 and `/readyz` answers 503;
//! a write meanwhile is refused before it changes anything (the database is
//! where its audit record would be committed); once it is back, the same
//! server answers again, and every call reported done has its record there. A database down when
//! the server starts is waited for the same way. Without PostgreSQL the test
//! is skipped, except under CI (`CI=true`), where it fails.
//!
//! Timeouts below only detect a hang (a call that never answers); they are
//! not assertions about speed.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use arbiter::store::PgStore;
use common::*;
use serde_json::{Value, json};

/// Longer than any call may take when the server works as it should.
const HANG: Duration = Duration::from_secs(60);

/// A private cluster, destroyed on drop.
struct Cluster {
    dir: PathBuf,
    app_url: String,
    owner_url: String,
}

impl Cluster {
    fn script(dir: &std::path::Path, action: &str) -> std::process::Output {
        std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tools/pg/setup.sh"))
            .arg(action)
            .env("ARBITER_PG_DIR", dir)
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("run tools/pg/setup.sh")
    }

    fn start() -> Option<Self> {
        // Directly under /tmp: as root the cluster belongs to `postgres`,
        // which must be able to reach it.
        let dir = std::env::temp_dir().join(format!(
            "arbiter-pg-outage-{}-{}",
            std::process::id(),
            unique()
        ));
        let out = Self::script(&dir, "start");
        let vars: HashMap<String, String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match (
            out.status.success(),
            vars.get("ARBITER_DATABASE_URL"),
            vars.get("ARBITER_DATABASE_OWNER_URL"),
        ) {
            (true, Some(app), Some(owner)) => Some(Self {
                app_url: app.clone(),
                owner_url: owner.clone(),
                dir,
            }),
            _ => {
                let _ = Self::script(&dir, "destroy");
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "PostgreSQL tests must not be skipped under CI"
                );
                eprintln!("PostgreSQL not available: skipped");
                None
            }
        }
    }

    /// Stop the server at once, as a crash would.
    fn kill(&self) {
        assert!(Self::script(&self.dir, "kill").status.success());
    }

    /// Start it again, on the same port.
    fn restart(&self) {
        let out = Self::script(&self.dir, "start");
        assert!(out.status.success(), "restarting the cluster");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("ARBITER_DATABASE_URL={}", self.app_url)),
            "the cluster came back on another port: {text}"
        );
    }

    fn password(&self) -> String {
        let (_, rest) = self.app_url.split_once("arbiter_app:").unwrap();
        rest.split_once('@').unwrap().0.to_string()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Self::script(&self.dir, "destroy");
        // The script's lock file, beside the directory.
        let _ = std::fs::remove_file(self.dir.with_extension("lock"));
    }
}

/// A tool call through the hang detector.
async fn call_in_time(client: &HttpClient, tool: &str, args: Value) -> rmcp::model::CallToolResult {
    tokio::time::timeout(HANG, call(client, tool, args))
        .await
        .unwrap_or_else(|_| panic!("{tool} did not answer: the server hangs on the database"))
}

async fn readyz(server: &HttpServer) -> (u16, Value) {
    tokio::time::timeout(HANG, server.get("/readyz"))
        .await
        .expect("/readyz did not answer")
}

fn submit(n: u32) -> Value {
    json!({"title": format!("task {n}"), "description": "d", "task_type": "docs"})
}

/// Call `tool` until it succeeds (the database is back): the server must
/// recover by itself.
async fn until_ok(client: &HttpClient, tool: &str, args: Value) -> Value {
    let start = std::time::Instant::now();
    loop {
        let r = call_in_time(client, tool, args.clone()).await;
        if r.is_error != Some(true) {
            return r.structured_content.unwrap_or_default();
        }
        assert!(
            start.elapsed() < HANG,
            "{tool} never succeeded again: {}",
            text(&r)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn calls_fail_fast_while_the_database_is_down_and_the_server_recovers_without_a_restart() {
    let Some(pg) = Cluster::start() else {
        return;
    };
    let s = Scratch::new();
    s.write("notes.txt", "hello\n");

    // The database is down when the server starts (and has never been migrated).
    pg.kill();
    let server = HttpServer::start(
        &s.ws(),
        &[
            "--no-auth",
            "--db",
            &pg.app_url,
            "--db-owner",
            &pg.owner_url,
        ],
    );
    let client = connect(&server.mcp(), None).await.expect("MCP over HTTP");
    let (status, body) = readyz(&server).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["reason"].as_str().unwrap().contains("STORE-002"),
        "{body}"
    );
    let r = call_in_time(&client, "task_submit", submit(0)).await;
    assert_eq!(r.is_error, Some(true), "{}", text(&r));
    let why = text(&r);
    eprintln!("refused before the first open: {why}");
    assert!(
        why.contains("STORE-002") && why.contains("retries every"),
        "{why}"
    );
    assert!(why.contains("arbiter doctor"), "{why}");
    assert!(!why.contains(&pg.password()), "the password leaked: {why}");

    // A change whose record could not be committed is not made at all.
    let w = call_in_time(
        &client,
        "file_write",
        json!({"file_path": "before-open.txt", "contents": "x\n"}),
    )
    .await;
    assert_eq!(w.is_error, Some(true), "{}", text(&w));
    assert!(text(&w).contains("AUDIT-001"), "{}", text(&w));
    assert!(
        !s.ws().join("before-open.txt").exists(),
        "a change was made that is not on record"
    );

    // It comes up: the same server opens it (migrating it) and serves.
    pg.restart();
    until_ok(&client, "task_submit", submit(1)).await;
    let (status, body) = readyz(&server).await;
    assert_eq!(status, 200, "{body}");
    ok(&client, "file_read", json!({"target_file": "notes.txt"})).await;

    // It crashes mid-run.
    pg.kill();
    // Calls that need the database fail (the first ones wait out the pool's
    // timeout), then fail fast, refused by the breaker without trying.
    let mut why = String::new();
    for n in 0..20 {
        let began = std::time::Instant::now();
        let r = call_in_time(&client, "task_submit", submit(100 + n)).await;
        // A figure for people, not an assertion.
        eprintln!("outage call {n}: refused after {:?}", began.elapsed());
        assert_eq!(r.is_error, Some(true), "{}", text(&r));
        why = text(&r);
        assert!(why.contains("STORE-001"), "{why}");
        if why.contains("refused without waiting") {
            break;
        }
    }
    eprintln!("refused during the outage: {why}");
    assert!(
        why.contains("refused without waiting"),
        "the breaker never opened: {why}"
    );
    assert!(why.contains("unreachable since"), "{why}");
    assert!(
        why.contains("retries every") && why.contains("arbiter doctor"),
        "{why}"
    );
    assert!(why.contains("postgres://arbiter_app@127.0.0.1:"), "{why}");
    assert!(!why.contains(&pg.password()), "the password leaked: {why}");
    let (status, body) = readyz(&server).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["reason"].as_str().unwrap().contains("STORE-001"),
        "{body}"
    );
    // And the metrics say so, for an alert.
    let (_, metrics) = server.get_text("/metrics").await;
    assert!(
        metrics.contains("\narbiter_store_unreachable 1\n"),
        "{metrics}"
    );

    // A write while the database is down is refused before it runs: its
    // record could not be committed, so nothing may change.
    let w = call_in_time(
        &client,
        "file_write",
        json!({"file_path": "during-outage.txt", "contents": "written while the database was down\n"}),
    )
    .await;
    let written = w.is_error != Some(true);
    eprintln!("file_write during the outage: {}", text(&w));
    assert!(
        !written,
        "a write was done while its record could not be committed"
    );
    let why = text(&w);
    assert!(
        why.contains("STORE-00") || why.contains("AUDIT-001"),
        "{why}"
    );
    assert!(!s.ws().join("during-outage.txt").exists());

    // It comes back: no restart of the server.
    pg.restart();
    let back = std::time::Instant::now();
    let sub = until_ok(&client, "task_submit", submit(200)).await;
    eprintln!(
        "served again {:?} after the database was up",
        back.elapsed()
    );
    assert_eq!(sub["state"], "queued", "{sub}");
    let (_, metrics) = server.get_text("/metrics").await;
    assert!(
        metrics.contains("\narbiter_store_unreachable 0\n"),
        "{metrics}"
    );
    let (status, body) = readyz(&server).await;
    assert_eq!(status, 200, "{body}");
    ok(&client, "file_read", json!({"target_file": "notes.txt"})).await;

    // Every call reported done has its record in the database, indexed by
    // the server itself (not by the CLI below).
    let owner = PgStore::connect(&pg.owner_url).await.unwrap();
    let start = std::time::Instant::now();
    loop {
        let outage_writes: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit_records WHERE tool = 'file_write' \
             AND outcome = 'ok' AND args_redacted LIKE '%during-outage.txt%'",
        )
        .fetch_one(owner.pool())
        .await
        .unwrap();
        let reads: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit_records WHERE tool = 'file_read' AND outcome = 'ok'",
        )
        .fetch_one(owner.pool())
        .await
        .unwrap();
        if outage_writes == i64::from(written) && reads == 2 {
            break;
        }
        assert!(
            start.elapsed() < HANG,
            "records missing from the database: {outage_writes} outage writes (reported done: \
             {written}), {reads} reads of 2"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The chain is whole.
    let out = std::process::Command::new(BIN)
        .args(["audit", "verify", "--workspace"])
        .arg(s.ws())
        .env("ARBITER_DATABASE_URL", &pg.app_url)
        .env("ARBITER_DATABASE_OWNER_URL", &pg.owner_url)
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "audit verify: {said}");
    client.cancel().await.unwrap();
}
