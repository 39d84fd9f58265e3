//! Interactive terminal sessions (`terminal_create_session` and friends)
//! through the real binary and the rmcp client: a shell on a PTY in the
//! command sandbox, judged by the policy, owned by the MCP session that made
//! it, capped, and killed with everything it started when closed or when the
//! client goes away. Processes are found by a marker in their command line
//! in the host's `/proc` (the session has its own PID namespace).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

async fn create(c: &Client) -> String {
    let out = ok(c, "terminal_create_session", json!({})).await;
    out["session_id"].as_str().unwrap().to_string()
}

async fn exec(c: &Client, id: &str, command: &str) -> Value {
    ok(
        c,
        "terminal_execute_command",
        json!({"session_id": id, "command": command, "timeout_ms": 10_000}),
    )
    .await
}

/// Run `command` just after a ^C: the shell may take the ^C after it has
/// read the command line and discard it (exit status 130), as at a real
/// terminal when one types ahead of an interrupt; then it runs once more.
async fn exec_after_interrupt(c: &Client, id: &str, command: &str) -> Value {
    let out = exec(c, id, command).await;
    if out["exit_code"] == 130 {
        return exec(c, id, command).await;
    }
    out
}

/// Start `sleep` with a marker in the session (it keeps running past the
/// call's timeout) and return its host pid.
async fn start_marked_sleep(c: &Client, id: &str) -> i32 {
    let marker = format!("1000.{}", unique());
    let out = ok(
        c,
        "terminal_execute_command",
        json!({"session_id": id, "command": format!("sleep {marker}"), "timeout_ms": 1000}),
    )
    .await;
    assert_eq!(out["timed_out"], true, "{out}");
    let mut pid = 0;
    eventually("the marked sleep", Duration::from_secs(5), || {
        pid = processes_with(&marker).first().copied().unwrap_or(0);
        pid != 0
    })
    .await;
    pid
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.split(") ").nth(1).unwrap_or("").starts_with('Z'))
}

#[tokio::test]
async fn a_session_runs_echo_and_returns_output_and_exit_status() {
    let s = Scratch::new();
    let c = start(&s.ws()).await;
    let id = create(&c).await;
    let out = exec(&c, &id, "echo hello-session").await;
    assert_eq!(out["output"], "hello-session\n", "{out}");
    assert_eq!(out["exit_code"], 0, "{out}");
    assert_eq!(out["timed_out"], false, "{out}");
    let out = exec(&c, &id, "ls no-such-file").await;
    assert_ne!(out["exit_code"], 0, "{out}");
    // The shell keeps its state between commands.
    std::fs::create_dir(s.ws().join("sub")).unwrap();
    exec(&c, &id, "cd sub").await;
    let out = exec(&c, &id, "pwd").await;
    assert!(out["output"].as_str().unwrap().ends_with("/sub\n"), "{out}");
    let status = ok(&c, "terminal_get_status", json!({"session_id": id})).await;
    assert_eq!(status["state"], "running", "{status}");
    c.cancel().await.unwrap();
}

/// A ^C typed at once must reach a shell that handles it: sent before the
/// shell had installed its SIGINT handler, it killed the shell (seen in CI).
#[tokio::test]
async fn ctrl_c_right_after_create_leaves_the_shell_alive() {
    let s = Scratch::new();
    let c = start(&s.ws()).await;
    // Six: within max_sessions (8), as closing a session takes its grace period.
    for _ in 0..6 {
        let id = create(&c).await;
        ok(
            &c,
            "terminal_send_input",
            json!({"session_id": id, "data": "\u{3}"}),
        )
        .await;
        let out = exec_after_interrupt(&c, &id, "echo alive").await;
        assert!(out["output"].as_str().unwrap().contains("alive"), "{out}");
    }
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn a_refused_command_never_reaches_the_shell() {
    let s = Scratch::new();
    let c = start(&s.ws()).await;
    let id = create(&c).await;
    let t = refused(
        &c,
        "terminal_execute_command",
        json!({"session_id": id, "command": "sudo id", "timeout_ms": 5000}),
    )
    .await;
    assert!(t.contains("CMD-100"), "{t}");
    // Typed line by line, or split across calls, it is judged the same.
    let t = refused(
        &c,
        "terminal_send_input",
        json!({"session_id": id, "data": "sudo id\n"}),
    )
    .await;
    assert!(t.contains("CMD-100"), "{t}");
    ok(
        &c,
        "terminal_send_input",
        json!({"session_id": id, "data": "sud"}),
    )
    .await;
    let t = refused(
        &c,
        "terminal_send_input",
        json!({"session_id": id, "data": "o id\n"}),
    )
    .await;
    assert!(t.contains("CMD-100"), "{t}");
    // The same through terminal_execute_command after a partial line (^C
    // discards the "sud" still in the terminal's line first).
    ok(
        &c,
        "terminal_send_input",
        json!({"session_id": id, "data": "\u{3}"}),
    )
    .await;
    ok(
        &c,
        "terminal_send_input",
        json!({"session_id": id, "data": "sud"}),
    )
    .await;
    let t = refused(
        &c,
        "terminal_execute_command",
        json!({"session_id": id, "command": "o id", "timeout_ms": 5000}),
    )
    .await;
    assert!(t.contains("CMD-100"), "{t}");
    // Line editing mixed with text is refused outright.
    let t = refused(
        &c,
        "terminal_send_input",
        json!({"session_id": id, "data": "\u{15}sudx\u{7f}o id\n"}),
    )
    .await;
    assert!(t.contains("SESSION-003"), "{t}");
    // Nothing reached the shell: discard the pending "sud", and no output came.
    ok(
        &c,
        "terminal_send_input",
        json!({"session_id": id, "data": "\u{3}"}),
    )
    .await;
    let out = ok(&c, "terminal_read_output", json!({"session_id": id})).await;
    assert!(!out["output"].as_str().unwrap().contains("sudo"), "{out}");
    let out = exec_after_interrupt(&c, &id, "echo still-here").await;
    assert!(
        out["output"].as_str().unwrap().contains("still-here"),
        "{out}"
    );
    c.cancel().await.unwrap();
    // Every call is on record, refusals with their rule.
    let records = audit_records(&s.ws());
    let denied = |tool: &str| {
        records.iter().any(|r| {
            r["tool"] == tool
                && r["decision"] == "deny"
                && r["rule_ids"].as_str().unwrap().contains("CMD-100")
        })
    };
    assert!(denied("terminal_execute_command"), "{records:?}");
    assert!(denied("terminal_send_input"), "{records:?}");
    assert!(
        records
            .iter()
            .any(|r| r["tool"] == "terminal_create_session" && r["outcome"] == "ok"),
        "{records:?}"
    );
}

#[tokio::test]
async fn a_program_cannot_type_into_the_sessions_shell() {
    let s = Scratch::new();
    let c = start(&s.ws()).await;
    let id = create(&c).await;
    // TIOCSTI would put a line into the shell's input that the policy never saw.
    let out = exec(
        &c,
        &id,
        "/usr/bin/python3 -c 'import fcntl, termios; fcntl.ioctl(0, termios.TIOCSTI, b\"x\")'",
    )
    .await;
    assert_ne!(out["exit_code"], 0, "{out}");
    assert!(
        out["output"]
            .as_str()
            .unwrap()
            .contains("Operation not permitted"),
        "{out}"
    );
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn a_session_cannot_write_outside_the_workspace() {
    let s = Scratch::new();
    let c = start(&s.ws()).await;
    let id = create(&c).await;
    let beside = s.outside().join(format!("beside-{}", unique()));
    let out = exec(&c, &id, &format!("touch {}", beside.display())).await;
    assert_ne!(out["exit_code"], 0, "{out}");
    assert!(
        out["output"]
            .as_str()
            .unwrap()
            .contains("Permission denied"),
        "{out}"
    );
    assert!(!beside.exists());
    // A script the policy never sees fares no better: the sandbox holds.
    s.write(
        "escape.sh",
        &format!(
            "echo x > {}\necho x > /tmp/escape-{}\n",
            beside.display(),
            unique()
        ),
    );
    let out = exec(&c, &id, "sh escape.sh").await;
    assert_ne!(out["exit_code"], 0, "{out}");
    assert!(!beside.exists());
    let out = exec(&c, &id, "touch inside.txt").await;
    assert_eq!(out["exit_code"], 0, "{out}");
    assert!(s.ws().join("inside.txt").exists());
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn another_client_cannot_use_or_close_a_session() {
    let s = Scratch::new();
    let a = start(&s.ws()).await;
    let b = start(&s.ws()).await;
    let id = create(&a).await;
    for (tool, args) in [
        (
            "terminal_execute_command",
            json!({"session_id": id, "command": "echo hi", "timeout_ms": 2000}),
        ),
        (
            "terminal_send_input",
            json!({"session_id": id, "data": "echo hi\n"}),
        ),
        ("terminal_read_output", json!({"session_id": id})),
        ("terminal_get_status", json!({"session_id": id})),
        ("terminal_close_session", json!({"session_id": id})),
    ] {
        let t = refused(&b, tool, args).await;
        assert!(t.contains("SESSION-001"), "{tool}: {t}");
    }
    let out = exec(&a, &id, "echo mine").await;
    assert_eq!(out["output"], "mine\n", "{out}");
    a.cancel().await.unwrap();
    b.cancel().await.unwrap();
}

#[tokio::test]
async fn the_session_cap_is_enforced() {
    let s = Scratch::new();
    let policy = s.outside().join(format!("policy-{}.yaml", unique()));
    std::fs::write(
        &policy,
        "version: 1\nsandbox:\n  limits:\n    max_sessions: 2\n",
    )
    .unwrap();
    let c = start_with(&s.ws(), &["--policy", policy.to_str().unwrap()]).await;
    let first = create(&c).await;
    create(&c).await;
    let t = refused(&c, "terminal_create_session", json!({})).await;
    assert!(t.contains("SESSION-002"), "{t}");
    assert!(t.contains("2 terminal sessions"), "{t}");
    ok(&c, "terminal_close_session", json!({"session_id": first})).await;
    create(&c).await;
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn an_idle_session_expires_with_its_processes() {
    let s = Scratch::new();
    let policy = s.outside().join(format!("policy-{}.yaml", unique()));
    std::fs::write(
        &policy,
        "version: 1\nsandbox:\n  limits:\n    session_idle_ms: 1500\n    kill_grace_ms: 200\n",
    )
    .unwrap();
    let c = start_with(&s.ws(), &["--policy", policy.to_str().unwrap()]).await;
    let id = create(&c).await;
    let pid = start_marked_sleep(&c, &id).await;
    eventually(
        "the idle session to expire",
        Duration::from_secs(10),
        || !alive(pid),
    )
    .await;
    // The shell itself gets SIGKILL after the grace period; then the session
    // is gone, and said to have expired.
    let start = Instant::now();
    loop {
        let r = ok(&c, "terminal_get_status", json!({"session_id": id})).await;
        if r["state"] == "expired" {
            break;
        }
        assert_eq!(r["state"], "running", "{r}");
        assert!(start.elapsed() < Duration::from_secs(10), "{r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t = refused(&c, "terminal_read_output", json!({"session_id": id})).await;
    assert!(
        t.contains("SESSION-001") && t.contains("was expired"),
        "{t}"
    );
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn closing_a_session_kills_its_processes() {
    let s = Scratch::new();
    let c = start(&s.ws()).await;
    let id = create(&c).await;
    let pid = start_marked_sleep(&c, &id).await;
    assert!(alive(pid));
    let out = ok(&c, "terminal_close_session", json!({"session_id": id})).await;
    assert_eq!(out["state"], "closed", "{out}");
    assert!(!alive(pid), "pid {pid} survived the close");
    let helper = out["pid"].as_i64().unwrap() as i32;
    assert!(!alive(helper), "the helper {helper} survived the close");
    let t = refused(&c, "terminal_read_output", json!({"session_id": id})).await;
    assert!(t.contains("SESSION-001"), "{t}");
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn a_sessions_processes_die_when_the_client_disconnects() {
    let s = Scratch::new();
    let c = start(&s.ws()).await;
    let id = create(&c).await;
    let pid = start_marked_sleep(&c, &id).await;
    c.cancel().await.unwrap();
    eventually(
        "the session's processes to die",
        Duration::from_secs(10),
        || !alive(pid),
    )
    .await;
    assert!(!Path::new(&format!("/proc/{pid}/cmdline")).exists() || !alive(pid));
}

#[tokio::test]
async fn a_session_whose_shell_exited_stays_readable_and_says_so() {
    let s = Scratch::new();
    let c = start(&s.ws()).await;
    let id = create(&c).await;
    for line in ["echo bye\n", "exit 3\n"] {
        ok(
            &c,
            "terminal_send_input",
            json!({"session_id": id, "data": line}),
        )
        .await;
    }
    let mut status = Value::Null;
    for _ in 0..200 {
        status = ok(&c, "terminal_get_status", json!({"session_id": id})).await;
        if status["state"] != "running" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(status["state"], "exited", "{status}");
    assert_eq!(status["exit_code"], 3, "{status}");
    let out = ok(&c, "terminal_read_output", json!({"session_id": id})).await;
    assert!(out["output"].as_str().unwrap().contains("bye"), "{out}");
    assert_eq!(out["state"], "exited", "{out}");
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn a_closed_session_is_reported_closed_not_unknown() {
    let s = Scratch::new();
    let c = start(&s.ws()).await;
    let id = create(&c).await;
    ok(&c, "terminal_close_session", json!({"session_id": id})).await;
    let status = ok(&c, "terminal_get_status", json!({"session_id": id})).await;
    assert_eq!(status["state"], "closed", "{status}");
    let t = refused(
        &c,
        "terminal_execute_command",
        json!({"session_id": id, "command": "echo hi", "timeout_ms": 2000}),
    )
    .await;
    assert!(t.contains("SESSION-001") && t.contains("was closed"), "{t}");
    let t = refused(
        &c,
        "terminal_get_status",
        json!({"session_id": "term-never-was"}),
    )
    .await;
    assert!(t.contains("no terminal session"), "{t}");
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn a_session_can_be_resized_and_its_programs_see_the_new_size() {
    let ws = tempfile::tempdir().unwrap();
    let c = start(ws.path()).await;
    let id = create(&c).await;
    let before = exec_after_interrupt(&c, &id, "stty size").await;
    assert_eq!(
        before["output"].as_str().unwrap().trim(),
        "40 120",
        "{before}"
    );
    let out = ok(
        &c,
        "terminal_resize_session",
        json!({"session_id": id, "cols": 100, "rows": 30}),
    )
    .await;
    assert_eq!(out["state"], "running", "{out}");
    let after = exec(&c, &id, "stty size").await;
    assert_eq!(
        after["output"].as_str().unwrap().trim(),
        "30 100",
        "{after}"
    );
    // A size the terminal cannot have, and a session that is not there.
    let why = refused(
        &c,
        "terminal_resize_session",
        json!({"session_id": id, "cols": 0, "rows": 30}),
    )
    .await;
    assert!(
        why.contains("SESSION-006") && why.contains("0 columns"),
        "{why}"
    );
    let why = refused(&c, "terminal_create_session", json!({"cols": 5000})).await;
    assert!(why.contains("SESSION-006"), "{why}");
    let why = refused(
        &c,
        "terminal_resize_session",
        json!({"session_id": "nope", "cols": 80, "rows": 24}),
    )
    .await;
    assert!(why.contains("SESSION-001"), "{why}");
    c.cancel().await.unwrap();
}
