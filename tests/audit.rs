//! The audit trail through the real binary: one record per call whatever its
//! outcome, a hash chain that `audit verify` checks and that tampering breaks,
//! atomic writes that survive SIGKILL, and `arbiter call` on the same path.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn every_call_leaves_one_record_whatever_its_outcome() {
    let s = Scratch::new();
    s.write("a.txt", "alpha\n");
    let c = start(&s.ws()).await;
    ok(&c, "file_read", json!({"target_file": "a.txt"})).await;
    refused(&c, "file_read", json!({"target_file": "../x"})).await;
    refused(
        &c,
        "file_write",
        json!({"file_path": ".env", "contents": "SECRET=1"}),
    )
    .await;
    refused(&c, "file_read", json!({"target_file": "missing.txt"})).await;
    try_call(&c, "file_read", json!({"wrong": 1}))
        .await
        .unwrap_err();
    ok(
        &c,
        "file_write",
        json!({"file_path": "b.txt", "contents": "private words"}),
    )
    .await;
    let records = audit_records(&s.ws());
    assert_eq!(
        audit_summary(&s.ws()),
        vec![
            ["file_read", "ok", "allow", ""],
            ["file_read", "refused", "none", "CONFINE-001"],
            ["file_write", "refused", "deny", "PATH-002"],
            ["file_read", "failed", "none", "FILE-001"],
            ["file_read", "invalid", "none", ""],
            ["file_write", "ok", "allow", ""],
        ]
    );
    let last = records.last().unwrap();
    assert_eq!(last["client_name"], "rmcp");
    assert!(last["args_redacted"].as_str().unwrap().contains("b.txt"));
    assert!(
        !last["args_redacted"]
            .as_str()
            .unwrap()
            .contains("private words")
    );
    assert_eq!(last["args_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(records[1]["prev_hash"], records[0]["hash"]);
    let (code, out, _) = run_cli(&s.ws(), &["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("OK: 6 records"), "{out}");
}

#[tokio::test]
async fn tampering_with_one_record_makes_verify_fail_naming_it() {
    let s = Scratch::new();
    let c = start(&s.ws()).await;
    for i in 0..5 {
        ok(
            &c,
            "file_write",
            json!({"file_path": format!("f{i}.txt"), "contents": "x"}),
        )
        .await;
    }
    drop(c);
    assert_eq!(run_cli(&s.ws(), &["audit", "verify"]).0, 0);
    let db = s.ws().join(".arbiter/arbiter.db");
    let store = arbiter::store::SqliteStore::open(&db).await.unwrap();
    // Each record is kept as its JSON (see migrations/sqlite/0015).
    sqlx::query(
        "UPDATE audit_records SET record = json_set(record, '$.outcome', 'refused') WHERE seq = 3",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let (code, out, _) = run_cli(&s.ws(), &["audit", "verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("BROKEN at seq 3") && out.contains("altered"),
        "{out}"
    );
    // Restore the value, then remove a record instead: the gap is found too.
    sqlx::query(
        "UPDATE audit_records SET record = json_set(record, '$.outcome', 'ok') WHERE seq = 3",
    )
    .execute(store.pool())
    .await
    .unwrap();
    assert_eq!(run_cli(&s.ws(), &["audit", "verify"]).0, 0);
    sqlx::query("DELETE FROM audit_records WHERE seq = 2")
        .execute(store.pool())
        .await
        .unwrap();
    let (code, out, _) = run_cli(&s.ws(), &["audit", "verify", "--json"]);
    assert_eq!(code, 1, "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["first_bad"]["seq"], 3);
}

#[test]
fn sigkill_during_many_writes_leaves_each_file_old_or_new() {
    let s = Scratch::new();
    let files = 40;
    let old = |i: usize| format!("old {i}\n").repeat(8 * 1024);
    let new = |i: usize| format!("NEW {i}\n").repeat(8 * 1024);
    for i in 0..files {
        s.write(&format!("data/f{i}.txt"), &old(i));
    }
    let mut server = RawServer::start(&s.ws());
    // Pipeline every write, wait for a few replies, then kill the server mid-stream.
    for round in 0..3 {
        for i in 0..files {
            server.send_call(
                (round * files + i) as u64 + 1,
                "file_write",
                json!({"file_path": format!("data/f{i}.txt"), "contents": new(i)}),
            );
        }
    }
    for _ in 0..5 {
        let reply = server.recv();
        assert_eq!(reply["result"]["isError"], false, "{reply}");
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let mut changed = 0;
    for i in 0..files {
        let text = s.read(&format!("data/f{i}.txt"));
        assert!(
            text == old(i) || text == new(i),
            "f{i}.txt is neither old nor new ({} bytes)",
            text.len()
        );
        changed += usize::from(text == new(i));
    }
    assert!(
        changed >= 5,
        "the acknowledged writes must be there (changed {changed})"
    );
    let (code, out, err) = run_cli(&s.ws(), &["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    // Every acknowledged write has its record.
    let records = audit_records(&s.ws());
    assert!(records.len() >= 5, "{} records", records.len());
    // A new server continues the same chain.
    let mut again = RawServer::start(&s.ws());
    again.send_call(
        1,
        "file_read",
        json!({"target_file": "data/f0.txt", "limit": 1}),
    );
    assert_eq!(again.recv()["result"]["isError"], false);
    drop(again);
    assert_eq!(run_cli(&s.ws(), &["audit", "verify"]).0, 0);
}

#[test]
fn arbiter_call_reports_results_and_exit_codes() {
    let s = Scratch::new();
    s.write("a.txt", "one\ntwo\n");
    let ws = s.ws();
    let (code, out, _) = run_cli(&ws, &["call", "file_read", r#"{"target_file":"a.txt"}"#]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["structuredContent"]["end_line"], 2);
    let (code, out, _) = run_cli(
        &ws,
        &["call", "file_read", r#"{"target_file":"../etc/passwd"}"#],
    );
    assert_eq!(code, 1);
    assert!(out.contains("CONFINE-001"), "{out}");
    let (code, _, err) = run_cli(&ws, &["call", "file_read", "{not json"]);
    assert_eq!(code, 2);
    assert!(err.contains("not valid JSON"), "{err}");
    let (code, out, _) = run_cli(&ws, &["call", "file_read", r#"{"target_file": 7}"#]);
    assert_eq!(code, 2);
    assert!(
        out.contains("-32602") && out.contains("target_file"),
        "{out}"
    );
    let (code, _, _) = run_cli(&ws, &["call"]);
    assert_eq!(code, 2);
    // The same audit path: three tool calls reached the server (bad JSON never did).
    let records = audit_records(&ws);
    assert_eq!(records.len(), 3);
    assert!(records.iter().all(|r| r["client_name"] == "arbiter-call"));
}

#[test]
fn concurrent_processes_extend_one_chain() {
    let s = Scratch::new();
    let ws = s.ws();
    let mut server = RawServer::start(&ws);
    let children = spawn_writers(&ws, 6);
    for id in 1..=20u64 {
        server.send_call(
            id,
            "file_write",
            json!({"file_path": "server.txt", "contents": id.to_string()}),
        );
    }
    for _ in 1..=20 {
        assert_eq!(server.recv()["result"]["isError"], false);
    }
    wait_all_succeed(children);
    drop(server);
    let (code, out, _) = run_cli(&ws, &["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("OK: 26 records"), "{out}");
}

#[test]
fn garbage_on_stdin_does_not_kill_the_server() {
    let s = Scratch::new();
    s.write("a.txt", "a\n");
    let mut server = RawServer::start(&s.ws());
    server.send_line("this is not json");
    server.send_line("{\"jsonrpc\":\"2.0\",\"id\":");
    server.send_line("");
    server.send_call(7, "file_read", json!({"target_file": "a.txt"}));
    let reply = server.recv();
    assert_eq!(reply["id"], 7, "{reply}");
    assert_eq!(reply["result"]["isError"], false, "{reply}");
}

#[test]
fn calls_in_flight_when_the_client_hangs_up_are_finished_and_recorded() {
    let s = Scratch::new();
    let mut server = RawServer::start(&s.ws());
    let calls = 150;
    for i in 0..calls {
        server.send_call(
            i + 1,
            "file_write",
            json!({"file_path": format!("out/f{i}.txt"), "contents": "done"}),
        );
    }
    assert!(server.hang_up().success());
    let written = (0..calls)
        .filter(|i| s.ws().join(format!("out/f{i}.txt")).exists())
        .count();
    let records = audit_records(&s.ws());
    let ok_writes = records
        .iter()
        .filter(|r| r["tool"] == "file_write" && r["outcome"] == "ok")
        .count();
    // Whatever the server got to, every file it wrote has its record.
    assert_eq!(
        ok_writes, written,
        "{written} files written, {ok_writes} recorded"
    );
    assert!(written > 0);
    assert_eq!(run_cli(&s.ws(), &["audit", "verify"]).0, 0);
}

/// Many processes using a fresh workspace at once all create the store and
/// apply its migrations without tripping over each other.
#[test]
fn first_use_by_many_processes_at_once_is_safe() {
    for _round in 0..3 {
        let s = Scratch::new();
        let ws = s.ws();
        let children = spawn_writers(&ws, 8);
        wait_all_succeed(children);
        let (code, out, _) = run_cli(&ws, &["audit", "verify"]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("OK: 8 records"), "{out}");
    }
}

/// `n` concurrent `arbiter call file_write` processes, each writing its own file.
fn spawn_writers(ws: &std::path::Path, n: usize) -> Vec<std::process::Child> {
    (0..n)
        .map(|i| {
            std::process::Command::new(BIN)
                .args(["call", "file_write"])
                .arg(json!({"file_path": format!("p{i}.txt"), "contents": "x"}).to_string())
                .arg("--workspace")
                .arg(ws)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect()
}

fn wait_all_succeed(children: Vec<std::process::Child>) {
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "arbiter call failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
