//! `run_terminal_cmd` and `terminal_get_status` through the real binary and
//! the rmcp client: each sandbox layer is checked by what a command can no
//! longer do (write beside the workspace, reach a loopback listener, see the
//! server's environment or its audit store, outlive its timeout), and the
//! server is checked to stay responsive through fork bombs and output floods.
//!
//! Processes of a command live in their own PID namespace, so the pids they
//! could write down mean nothing outside it. To prove that nothing is left
//! running, each test gives its processes a unique marker in their command
//! line and looks for it in the host's `/proc`: seen while the command runs,
//! gone once the call has returned.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, ClientRequest, ProgressNotificationParam,
};
use rmcp::service::{NotificationContext, PeerRequestOptions, RunningService};
use rmcp::transport::TokioChildProcess;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};

const PYTHON: &str = "/usr/bin/python3";

/// How to start a server for a test.
#[derive(Default)]
struct ServerOptions<'a> {
    args: Vec<&'a str>,
    env: Vec<(&'a str, &'a str)>,
    /// Run the server as this (uid, gid).
    user: Option<(u32, u32)>,
    /// The binary to start (default: the one cargo built, which another user
    /// may not be able to reach, e.g. in a private clone).
    program: Option<&'a Path>,
}

/// Start `arbiter serve` with a client handler; also returns the server's pid.
async fn start_server<H: ClientHandler>(
    handler: H,
    ws: &Path,
    opts: ServerOptions<'_>,
) -> (RunningService<RoleClient, H>, u32) {
    let mut cmd = tokio::process::Command::new(opts.program.unwrap_or(Path::new(BIN)));
    cmd.arg("serve").arg("--workspace").arg(ws).args(&opts.args);
    for (k, v) in &opts.env {
        cmd.env(k, v);
    }
    if let Some((uid, gid)) = opts.user {
        cmd.uid(uid).gid(gid);
    }
    let (transport, _stderr) = TokioChildProcess::builder(cmd)
        .stderr(if std::env::var_os("ARBITER_TEST_STDERR").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .expect("spawn arbiter");
    let pid = transport.id().expect("server pid");
    (handler.serve(transport).await.expect("MCP handshake"), pid)
}

/// A policy file beside the workspace: the default policy's rules with `sandbox_yaml` as its sandbox section.
fn policy_file(s: &Scratch, sandbox_yaml: &str) -> String {
    let path = s.outside().join(format!("policy-{}.yaml", unique()));
    std::fs::write(&path, format!("version: 1\nsandbox:\n{sandbox_yaml}\n")).unwrap();
    path.display().to_string()
}

async fn run(c: &Client, args: Value) -> rmcp::model::CallToolResult {
    call(c, "run_terminal_cmd", args).await
}

/// Run a command that must complete normally; returns its structured output.
async fn run_ok(c: &Client, args: Value) -> Value {
    ok(c, "run_terminal_cmd", args).await
}

/// A python program as one command-line word (single-quoted).
fn python(program: &str) -> String {
    assert!(!program.contains('\''));
    format!("{PYTHON} -c '{program}'")
}

#[tokio::test]
async fn writes_outside_the_workspace_fail_at_the_kernel() {
    let s = Scratch::new();
    let c = start(&s.ws()).await;
    let id = unique();
    let beside = s.outside().join(format!("beside-{id}"));
    let in_tmp = format!("/tmp/outside-{id}");
    for target in [beside.display().to_string(), in_tmp.clone()] {
        let out = run_ok(&c, json!({"command": format!("touch {target}")})).await;
        assert_ne!(out["exit_code"], 0, "{out}");
        assert!(
            out["stderr"]
                .as_str()
                .unwrap()
                .contains("Permission denied"),
            "{out}"
        );
        assert!(!Path::new(&target).exists(), "{target} was created");
    }
    // A program that writes with its own system calls fares no better.
    let out = run_ok(
        &c,
        json!({"command": python(&format!("open(\"{}\", \"w\").write(\"x\")", beside.display()))}),
    )
    .await;
    assert_ne!(out["exit_code"], 0);
    assert!(!beside.exists());
    // Inside the workspace, and in the private temporary directory, writing works.
    let out = run_ok(&c, json!({"command": "touch inside.txt"})).await;
    assert_eq!(out["exit_code"], 0, "{out}");
    assert!(s.ws().join("inside.txt").exists());
    let out = run_ok(
        &c,
        json!({"command": python("import tempfile; tempfile.NamedTemporaryFile(); print(\"ok\")")}),
    )
    .await;
    assert_eq!(out["stdout"], "ok\n", "{out}");
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn a_loopback_listener_never_gets_a_connection() {
    let s = Scratch::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let c = start(&s.ws()).await;
    let program = format!(
        "import socket\ns = socket.create_connection((\"127.0.0.1\", {port}), timeout=2)\nprint(\"connected\")"
    );
    let out = run_ok(&c, json!({"command": python(&program)})).await;
    assert_ne!(out["exit_code"], 0, "{out}");
    assert!(!out["stdout"].as_str().unwrap().contains("connected"));
    let udp = "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b\"x\", (\"127.0.0.1\", 9))";
    let out = run_ok(&c, json!({"command": python(udp)})).await;
    assert_ne!(out["exit_code"], 0, "{out}");
    // Nothing ever arrived.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(matches!(
        listener.accept(),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
    ));
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn a_policy_can_give_one_command_the_network() {
    let s = Scratch::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let policy = policy_file(&s, "  network: {commands: [[python3]]}");
    let (c, _) = start_server(
        (),
        &s.ws(),
        ServerOptions {
            args: vec!["--policy", &policy],
            ..Default::default()
        },
    )
    .await;
    let program = format!(
        "import socket\nsocket.create_connection((\"127.0.0.1\", {port}), timeout=5)\nprint(\"connected\")"
    );
    let out = run_ok(&c, json!({"command": python(&program)})).await;
    assert_eq!(out["stdout"], "connected\n", "{out}");
    assert_eq!(out["network"], true);
    assert!(listener.accept().is_ok());
    // Other commands stay offline.
    let out = run_ok(&c, json!({"command": "cat /proc/net/dev"})).await;
    assert_eq!(out["network"], false);
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn a_fork_bomb_is_contained_and_the_server_still_answers() {
    let root = rustix::process::geteuid().is_root();
    // As root: the PID namespace's pid_max (a bound of pids_max + 299), and
    // the exact pids cgroup; otherwise RLIMIT_NPROC, exact.
    for (mechanism, bound) in [("auto", if root { 64 + 300 } else { 64 }), ("cgroup", 64)] {
        let s = Scratch::new();
        let policy = policy_file(
            &s,
            &format!("  limits: {{pids_max: 64, pids_mechanism: {mechanism}}}"),
        );
        let (c, _) = start_server(
            (),
            &s.ws(),
            ServerOptions {
                args: vec!["--policy", &policy],
                ..Default::default()
            },
        )
        .await;
        // Count how many processes one command gets.
        let count = "import os, time\nn = 0\ntry:\n    while n < 1000:\n        if os.fork() == 0:\n            time.sleep(10)\n            os._exit(0)\n        n += 1\nexcept OSError:\n    pass\nprint(n)";
        let out = run_ok(&c, json!({"command": python(count)})).await;
        let forked: u64 = out["stdout"].as_str().unwrap().trim().parse().unwrap();
        assert!(forked < bound, "{mechanism}: {forked} processes");
        assert!(forked > 32, "{mechanism}: only {forked} processes");
        // A real bomb: every process forks forever.
        let marker = format!("bomb{}", unique());
        let bomb = format!(
            "import os\n{marker} = 1\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
        );
        let started = Instant::now();
        let r = run(&c, json!({"command": python(&bomb), "timeout_ms": 2000})).await;
        assert_eq!(r.is_error, Some(true));
        assert!(text(&r).contains("EXEC-004"), "{}", text(&r));
        assert!(started.elapsed() < Duration::from_secs(15));
        let out = run_ok(&c, json!({"command": "echo alive"})).await;
        assert_eq!(out["stdout"], "alive\n");
        assert!(processes_with(&marker).is_empty());
        c.cancel().await.unwrap();
    }
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn an_output_flood_is_capped_and_the_server_still_answers() {
    let s = Scratch::new();
    let (c, pid) = start_server((), &s.ws(), ServerOptions::default()).await;
    let before = peak_rss_kib(pid);
    // About 169 MB on stdout.
    let out = run_ok(
        &c,
        json!({"command": "seq 1 20000000", "timeout_ms": 120000}),
    )
    .await;
    let expected_bytes: u64 = (1..=20_000_000u64)
        .map(|n| n.to_string().len() as u64 + 1)
        .sum();
    assert_eq!(out["stdout_bytes"], expected_bytes);
    assert_eq!(out["stdout_truncated"], true);
    let stdout = out["stdout"].as_str().unwrap();
    assert!(stdout.len() <= 1024 * 1024 + 100, "{}", stdout.len());
    assert!(stdout.starts_with("1\n2\n3\n"));
    assert!(stdout.ends_with("19999999\n20000000\n"));
    assert!(stdout.contains("bytes of output left out"));
    // The server's memory did not follow the output.
    let grown_mib = (peak_rss_kib(pid) - before) / 1024;
    assert!(grown_mib < 64, "peak RSS grew by {grown_mib} MiB");
    let out = run_ok(&c, json!({"command": "echo still here"})).await;
    assert_eq!(out["stdout"], "still here\n");
    c.cancel().await.unwrap();
}

/// A python program that starts a `setsid` grandchild and a double-forked
/// daemon (each with `marker` in its command line), then sleeps.
fn family(marker: &str, ignore_term: bool) -> String {
    let ignore = if ignore_term {
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    } else {
        ""
    };
    format!(
        "import os, signal, subprocess, time\n{ignore}subprocess.Popen([\"/bin/sleep\", \"1000.{marker}\"], start_new_session=True)\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        os.execv(\"/bin/sleep\", [\"/bin/sleep\", \"1001.{marker}\"])\n    os._exit(0)\nprint(\"started\", flush=True)\ntime.sleep(1000)"
    )
}

/// Run `args` while watching for `marker`; returns the result and the most
/// marked processes seen at once while it ran.
async fn run_watching(
    c: &Client,
    args: Value,
    marker: &str,
) -> (rmcp::model::CallToolResult, usize) {
    let seen = Arc::new(Mutex::new(0usize));
    let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let (seen, watching, marker) = (seen.clone(), watching.clone(), marker.to_string());
        tokio::spawn(async move {
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                let n = processes_with(&marker).len();
                {
                    let mut s = seen.lock().unwrap();
                    *s = (*s).max(n);
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    let r = run(c, args).await;
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    watcher.await.unwrap();
    let seen = *seen.lock().unwrap();
    (r, seen)
}

#[tokio::test]
async fn a_command_past_its_timeout_is_killed_with_everything_it_started() {
    let s = Scratch::new();
    let c = start(&s.ws()).await;
    let marker = unique().to_string();
    let started = Instant::now();
    let (r, seen) = run_watching(
        &c,
        json!({"command": python(&family(&marker, false)), "timeout_ms": 1500}),
        &marker,
    )
    .await;
    let took = started.elapsed();
    assert_eq!(r.is_error, Some(true));
    let t = text(&r);
    assert!(t.starts_with("Failed [EXEC-004]"), "{t}");
    let out = r.structured_content.clone().unwrap();
    assert_eq!(out["timed_out"], true);
    assert_eq!(out["state"], "timed_out");
    assert_eq!(out["stdout"], "started\n", "{out}");
    // python, its setsid child, and the double-forked daemon were all running...
    assert!(seen >= 3, "saw {seen} marked processes");
    // ...and none is left, though none of them was waited for by the command.
    assert!(
        processes_with(&marker).is_empty(),
        "{:?}",
        processes_with(&marker)
    );
    assert!(took < Duration::from_secs(6), "{took:?}");
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn daemons_left_behind_die_with_the_call_and_do_not_hold_it() {
    let s = Scratch::new();
    let c = start(&s.ws()).await;
    let marker = unique().to_string();
    // Start the daemons (they keep stdout open) and exit soon after,
    // without waiting for them.
    let program = family(&marker, false).replace("time.sleep(1000)", "time.sleep(0.3)");
    let started = Instant::now();
    let (r, seen) = run_watching(&c, json!({"command": python(&program)}), &marker).await;
    let out = r.structured_content.clone().unwrap();
    assert_eq!(
        (out["exit_code"].clone(), out["stdout"].clone()),
        (json!(0), json!("started\n")),
        "{out}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(seen >= 3, "saw {seen}");
    assert!(processes_with(&marker).is_empty());
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn a_command_that_ignores_sigterm_is_killed() {
    let s = Scratch::new();
    let c = start(&s.ws()).await;
    let marker = unique().to_string();
    let started = Instant::now();
    let (r, seen) = run_watching(
        &c,
        json!({"command": python(&family(&marker, true)), "timeout_ms": 1000}),
        &marker,
    )
    .await;
    let took = started.elapsed();
    let out = r.structured_content.clone().unwrap();
    assert_eq!(out["timed_out"], true, "{}", text(&r));
    assert_eq!(out["signal"], "SIGKILL", "{out}");
    assert!(text(&r).contains("SIGTERM, then SIGKILL"), "{}", text(&r));
    assert!(seen >= 3, "saw {seen}");
    assert!(processes_with(&marker).is_empty());
    // Timeout 1 s + grace 1 s, and some slack.
    assert!(took >= Duration::from_millis(1900), "{took:?}");
    assert!(took < Duration::from_secs(6), "{took:?}");
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn cancelling_the_call_kills_the_command() {
    let s = Scratch::new();
    let c = start(&s.ws()).await;
    let marker = unique().to_string();
    let params = CallToolRequestParams::new("run_terminal_cmd").with_arguments(
        json!({"command": python(&family(&marker, false)), "timeout_ms": 60000})
            .as_object()
            .unwrap()
            .clone(),
    );
    let handle = c
        .peer()
        .send_cancellable_request(
            ClientRequest::CallToolRequest(CallToolRequest::new(params)),
            PeerRequestOptions::no_options(),
        )
        .await
        .unwrap();
    eventually("the command's processes", Duration::from_secs(10), || {
        processes_with(&marker).len() >= 3
    })
    .await;
    let cancelled_at = Instant::now();
    handle.cancel(Some("test".to_string())).await.unwrap();
    eventually("the processes to die", Duration::from_secs(5), || {
        processes_with(&marker).is_empty()
    })
    .await;
    assert!(cancelled_at.elapsed() < Duration::from_secs(3));
    // The call is on record as cancelled.
    eventually("the audit record", Duration::from_secs(5), || {
        audit_records(&s.ws()).iter().any(|r| {
            r["tool"] == "run_terminal_cmd" && r["rule_ids"].as_str().unwrap().contains("EXEC-005")
        })
    })
    .await;
    let out = run_ok(&c, json!({"command": "echo next"})).await;
    assert_eq!(out["stdout"], "next\n");
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn the_servers_environment_does_not_reach_commands() {
    let s = Scratch::new();
    let secret = format!("s3cr3t-{}", unique());
    let (c, _) = start_server(
        (),
        &s.ws(),
        ServerOptions {
            env: vec![
                ("ARBITER_TEST_SECRET", &secret),
                ("AWS_SECRET_ACCESS_KEY", &secret),
            ],
            ..Default::default()
        },
    )
    .await;
    let out = run_ok(&c, json!({"command": "env"})).await;
    let env = out["stdout"].as_str().unwrap();
    assert!(!env.contains(&secret), "{env}");
    let names: Vec<&str> = env.lines().filter_map(|l| l.split('=').next()).collect();
    for expected in ["PATH", "HOME", "TMPDIR", "TERM", "LANG"] {
        assert!(names.contains(&expected), "{names:?}");
    }
    // Not through /proc either: the command sees its own processes only.
    let out = run_ok(
        &c,
        json!({"command": "grep -rals ARBITER_TEST_SECRET /proc --include=environ"}),
    )
    .await;
    assert_eq!(out["stdout"], "", "{out}");
    let out = run_ok(&c, json!({"command": python("import os; print(sorted(int(p) for p in os.listdir(\"/proc\") if p.isdigit()))")})).await;
    assert_eq!(
        out["stdout"], "[1, 2]\n",
        "only the sandbox's init and the command itself: {out}"
    );
    // A leading assignment reaches the command.
    let out = run_ok(&c, json!({"command": "GREETING=hello env"})).await;
    assert!(out["stdout"].as_str().unwrap().contains("GREETING=hello\n"));
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn the_audit_store_is_not_visible_to_commands() {
    let s = Scratch::new();
    let c = start(&s.ws()).await;
    assert!(s.ws().join(".arbiter").is_dir());
    let out = run_ok(&c, json!({"command": "ls -A .arbiter"})).await;
    assert_eq!(
        (out["exit_code"].clone(), out["stdout"].clone()),
        (json!(0), json!("")),
        "{out}"
    );
    let out = run_ok(&c, json!({"command": "cat .arbiter/audit.journal"})).await;
    assert_ne!(out["exit_code"], 0);
    // Nor can a command plant a policy for the server to pick up.
    let out = run_ok(&c, json!({"command": "touch .arbiter/policy.yaml"})).await;
    assert!(
        out["stderr"]
            .as_str()
            .unwrap()
            .contains("Read-only file system"),
        "{out}"
    );
    for cmd in ["mv .arbiter moved", "rmdir .arbiter"] {
        let out = run_ok(&c, json!({"command": cmd})).await;
        assert_ne!(out["exit_code"], 0, "{cmd}: {out}");
    }
    assert!(!s.ws().join(".arbiter/policy.yaml").exists());
    assert!(s.ws().join(".arbiter/audit.journal").exists());
    // And a working directory inside it is refused before anything runs.
    let t = refused(
        &c,
        "run_terminal_cmd",
        json!({"command": "ls", "cwd": ".arbiter"}),
    )
    .await;
    assert!(t.contains("CONFINE-002"), "{t}");
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn git_hooks_and_config_are_read_only_to_commands() {
    let s = Scratch::new();
    s.write(".git/config", "[core]\n");
    s.write(".git/HEAD", "ref: refs/heads/main\n");
    std::fs::create_dir_all(s.ws().join(".git/hooks")).unwrap();
    let c = start(&s.ws()).await;
    for cmd in [
        "touch .git/hooks/pre-commit",
        "cp .git/HEAD .git/config",
        "mv .git/hooks .git/hooks.old",
        "mv .git .git.old",
        "rm .git/config",
    ] {
        let out = run_ok(&c, json!({"command": cmd})).await;
        assert_ne!(out["exit_code"], 0, "{cmd}: {out}");
    }
    assert!(!s.ws().join(".git/hooks/pre-commit").exists());
    assert_eq!(s.read(".git/config"), "[core]\n");
    assert!(s.ws().join(".git/HEAD").exists());
    // The rest of .git stays writable (commits, refs, the index).
    let out = run_ok(&c, json!({"command": "touch .git/index"})).await;
    assert_eq!(out["exit_code"], 0, "{out}");
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn a_background_job_is_followed_with_terminal_get_status() {
    let s = Scratch::new();
    let c = start(&s.ws()).await;
    let tools = c.list_all_tools().await.unwrap();
    for name in ["run_terminal_cmd", "terminal_get_status"] {
        let tool = tools.iter().find(|t| t.name == name).unwrap();
        assert!(tool.output_schema.is_some(), "{name}");
    }
    let program = "import time\nprint(\"first\", flush=True)\ntime.sleep(0.6)\nprint(\"second\", flush=True)\ntime.sleep(0.6)\nprint(\"third\")";
    let started = Instant::now();
    let out = run_ok(
        &c,
        json!({"command": python(program), "is_background": true}),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(out["state"], "running");
    let job = out["job_id"].as_str().unwrap().to_string();
    let mut stdout = String::new();
    let mut polls = 0;
    let last = loop {
        let st = ok(&c, "terminal_get_status", json!({"job_id": job})).await;
        stdout.push_str(st["stdout"].as_str().unwrap());
        polls += 1;
        if st["state"] != "running" {
            break st;
        }
        assert!(started.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(150)).await;
    };
    assert_eq!(stdout, "first\nsecond\nthird\n");
    assert!(polls > 2, "{polls} polls");
    assert_eq!(
        (last["state"].clone(), last["exit_code"].clone()),
        (json!("exited"), json!(0))
    );
    // Nothing new after the end.
    let again = ok(&c, "terminal_get_status", json!({"job_id": job})).await;
    assert_eq!(
        (again["stdout"].clone(), again["state"].clone()),
        (json!(""), json!("exited"))
    );
    // A job that cannot start says so in its status.
    let out = run_ok(
        &c,
        json!({"command": "no-such-program-xyz", "is_background": true}),
    )
    .await;
    let failed_job = out["job_id"].as_str().unwrap().to_string();
    let mut st = ok(&c, "terminal_get_status", json!({"job_id": failed_job})).await;
    for _ in 0..100 {
        if st["state"] != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        st = ok(&c, "terminal_get_status", json!({"job_id": failed_job})).await;
    }
    assert_eq!(st["state"], "failed");
    assert!(st["error"].as_str().unwrap().contains("EXEC-001"), "{st}");
    let t = refused(&c, "terminal_get_status", json!({"job_id": "job-999"})).await;
    assert!(t.contains("JOB-001"), "{t}");
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn background_jobs_end_with_the_session() {
    let s = Scratch::new();
    let (c, server_pid) = start_server((), &s.ws(), ServerOptions::default()).await;
    let marker = unique().to_string();
    run_ok(
        &c,
        json!({"command": python(&family(&marker, true)), "is_background": true}),
    )
    .await;
    eventually("the job's processes", Duration::from_secs(10), || {
        processes_with(&marker).len() >= 3
    })
    .await;
    c.cancel().await.unwrap();
    eventually(
        "the job's processes to die",
        Duration::from_secs(10),
        || processes_with(&marker).is_empty(),
    )
    .await;
    eventually("the server to exit", Duration::from_secs(10), || {
        !Path::new(&format!("/proc/{server_pid}/cmdline")).exists()
            || std::fs::read(format!("/proc/{server_pid}/cmdline")).is_ok_and(|c| c.is_empty())
    })
    .await;
}

#[tokio::test]
async fn a_missing_program_is_a_tool_error_not_a_protocol_error() {
    let s = Scratch::new();
    s.write("script.sh", "echo hi\n");
    let c = start(&s.ws()).await;
    let t = refused(
        &c,
        "run_terminal_cmd",
        json!({"command": "no-such-program-xyz --help"}),
    )
    .await;
    assert!(t.starts_with("Failed [EXEC-001]"), "{t}");
    assert!(t.contains("sandbox PATH"), "{t}");
    let t = refused(&c, "run_terminal_cmd", json!({"command": "./script.sh"})).await;
    assert!(t.starts_with("Failed [EXEC-002]"), "{t}");
    // A program killed by a signal is an error too, with its output.
    let r = run(&c, json!({"command": python("import os, signal\nprint(\"before\", flush=True)\nos.kill(os.getpid(), signal.SIGSEGV)")})).await;
    assert_eq!(r.is_error, Some(true));
    assert!(text(&r).starts_with("Failed [EXEC-003]"), "{}", text(&r));
    assert!(text(&r).contains("SIGSEGV"));
    let out = r.structured_content.unwrap();
    assert_eq!(
        (out["signal"].clone(), out["stdout"].clone()),
        (json!("SIGSEGV"), json!("before\n"))
    );
    // A non-zero exit is an answer, not an error.
    let out = run_ok(&c, json!({"command": "false"})).await;
    assert_eq!(out["exit_code"], 1);
    // Colours and cursor movement are stripped from what comes back.
    let out = run_ok(
        &c,
        json!({"command": "printf '\\033[1;31mred\\033[0m\\rplain\\n'"}),
    )
    .await;
    assert_eq!(out["stdout"], "plain\n", "{out}");
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn shell_syntax_and_bad_working_directories_are_refused_before_anything_runs() {
    let s = Scratch::new();
    std::fs::create_dir_all(s.ws().join("sub/dir")).unwrap();
    let c = start(&s.ws()).await;
    let marker = s.outside().join(format!("ran-{}", unique()));
    let t = refused(
        &c,
        "run_terminal_cmd",
        json!({"command": format!("true; touch {}", marker.display())}),
    )
    .await;
    assert!(t.starts_with("Refused [SHELL-001]"), "{t}");
    let t = refused(&c, "run_terminal_cmd", json!({"command": "sudo id"})).await;
    assert!(t.starts_with("Refused [CMD-100]"), "{t}");
    for (cwd, rule) in [
        ("..", "CONFINE-001"),
        ("nope", "FILE-001"),
        ("/etc", "CONFINE-001"),
    ] {
        let t = refused(
            &c,
            "run_terminal_cmd",
            json!({"command": "pwd", "cwd": cwd}),
        )
        .await;
        assert!(t.contains(rule), "{cwd}: {t}");
    }
    let out = run_ok(&c, json!({"command": "pwd", "cwd": "sub/dir"})).await;
    let pwd = out["stdout"].as_str().unwrap().trim().to_string();
    assert!(pwd.ends_with("/ws/sub/dir"), "{pwd}");
    assert_eq!(out["cwd"], "sub/dir");
    let records = audit_records(&s.ws());
    let rules: Vec<&str> = records
        .iter()
        .map(|r| r["rule_ids"].as_str().unwrap())
        .collect();
    assert!(
        rules.contains(&"SHELL-001") && rules.contains(&"CMD-100"),
        "{rules:?}"
    );
    c.cancel().await.unwrap();
}

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
}

#[tokio::test]
async fn long_commands_report_progress() {
    let s = Scratch::new();
    let log = ProgressLog::default();
    let (c, _) = start_server(log.clone(), &s.ws(), ServerOptions::default()).await;
    let program =
        "import time\nfor i in range(5):\n    print(\"x\" * 99, flush=True)\n    time.sleep(0.6)";
    let r = c
        .call_tool(
            CallToolRequestParams::new("run_terminal_cmd").with_arguments(
                json!({"command": python(program)})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        )
        .await
        .unwrap();
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    let seen = log.0.lock().unwrap().clone();
    assert!(seen.len() >= 2, "{} progress notifications", seen.len());
    assert!(seen.iter().all(|p| {
        p.message
            .as_deref()
            .unwrap_or("")
            .contains("bytes of output")
    }));
    assert!(seen.last().unwrap().progress >= 100.0, "{:?}", seen.last());
    assert!(seen.windows(2).all(|w| w[0].progress <= w[1].progress));
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn a_missing_layer_refuses_in_strict_mode_and_is_reported_in_best_effort() {
    // /proc/self/fdinfo is the server's own, so it cannot be found in the
    // command's fresh /proc: that mount of the plan always fails.
    for (mode, runs) in [("strict", false), ("best_effort", true)] {
        let s = Scratch::new();
        let policy = policy_file(
            &s,
            &format!("  mode: {mode}\n  hide_paths: [/proc/self/fdinfo]"),
        );
        let (c, _) = start_server(
            (),
            &s.ws(),
            ServerOptions {
                args: vec!["--policy", &policy],
                ..Default::default()
            },
        )
        .await;
        let r = run(&c, json!({"command": "touch ran"})).await;
        if runs {
            assert_ne!(r.is_error, Some(true), "{}", text(&r));
            let out = r.structured_content.clone().unwrap();
            let missing = out["sandbox_missing"].as_array().unwrap();
            assert!(
                missing[0].as_str().unwrap().starts_with("mount:/proc/"),
                "{out}"
            );
            assert!(text(&r).contains("sandbox layers missing"), "{}", text(&r));
        } else {
            assert_eq!(r.is_error, Some(true));
            assert!(
                text(&r).starts_with("Refused [SANDBOX-001]"),
                "{}",
                text(&r)
            );
            assert!(text(&r).contains("best_effort"), "{}", text(&r));
        }
        assert_eq!(s.ws().join("ran").exists(), runs, "{mode}");
        c.cancel().await.unwrap();
    }
}

/// The same guarantees for a server that is not root: a user namespace
/// instead of root's cgroup, RLIMIT_NPROC counted inside it.
#[tokio::test]
async fn a_server_that_is_not_root_sandboxes_commands_too() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to start a server as another user");
        return;
    }
    let s = Scratch::new();
    const NOBODY: u32 = 65534;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(s.outside(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(s.ws(), Some(NOBODY), Some(NOBODY)).unwrap();
    let home = s.outside().display().to_string();
    // A copy `nobody` can execute: the build directory may be private.
    let program = s.outside().join("arbiter");
    std::fs::copy(BIN, &program).unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (c, _) = start_server(
        (),
        &s.ws(),
        ServerOptions {
            env: vec![("HOME", &home), ("TMPDIR", "/tmp")],
            user: Some((NOBODY, NOBODY)),
            program: Some(&program),
            ..Default::default()
        },
    )
    .await;
    let out = run_ok(&c, json!({"command": "id -u"})).await;
    assert_eq!(out["stdout"], "65534\n", "{out}");
    let beside = s.outside().join(format!("beside-{}", unique()));
    let out = run_ok(
        &c,
        json!({"command": format!("touch {}", beside.display())}),
    )
    .await;
    assert_ne!(out["exit_code"], 0);
    assert!(!beside.exists());
    let out = run_ok(&c, json!({"command": "ls -A .arbiter"})).await;
    assert_eq!(out["stdout"], "", "{out}");
    let out = run_ok(
        &c,
        json!({"command": python("import socket; socket.socket()")}),
    )
    .await;
    assert_ne!(out["exit_code"], 0);
    let count = "import os, time\nn = 0\ntry:\n    while n < 2000:\n        if os.fork() == 0:\n            time.sleep(10)\n            os._exit(0)\n        n += 1\nexcept OSError:\n    pass\nprint(n)";
    let out = run_ok(&c, json!({"command": python(count)})).await;
    let forked: u64 = out["stdout"].as_str().unwrap().trim().parse().unwrap();
    assert!(forked < 512, "{forked} processes");
    let marker = unique().to_string();
    let (r, seen) = run_watching(
        &c,
        json!({"command": python(&family(&marker, true)), "timeout_ms": 1000}),
        &marker,
    )
    .await;
    assert!(text(&r).contains("EXEC-004"), "{}", text(&r));
    assert!(seen >= 3, "saw {seen}");
    assert!(processes_with(&marker).is_empty());
    c.cancel().await.unwrap();
}
