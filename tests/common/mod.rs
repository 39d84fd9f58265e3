//! Shared helpers for integration tests: a scratch workspace, the real
//! `arbiter` binary started as a child process, and the rmcp client talking to
//! it over the child's stdio.
#![allow(dead_code)]

pub mod pg;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{RunningService, ServiceError};
use rmcp::transport::TokioChildProcess;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_arbiter");

/// A temporary directory holding a workspace `ws/` and things beside it.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("ws")).unwrap();
        Self { dir }
    }

    pub fn ws(&self) -> PathBuf {
        self.dir.path().join("ws")
    }

    pub fn outside(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub fn write(&self, rel: &str, contents: &str) {
        let p = self.ws().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, contents).unwrap();
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.ws().join(rel)).unwrap()
    }
}

pub type Client = RunningService<RoleClient, ()>;
/// A client with a name of its own (see [`start_as`]).
pub type NamedClient = RunningService<RoleClient, rmcp::model::ClientConfig>;

/// Start `arbiter serve --workspace WS` and complete the MCP handshake.
pub async fn start(ws: &Path) -> Client {
    start_with(ws, &[]).await
}

/// Like [`start`], with more arguments for `serve` (e.g. `--policy FILE`).
pub async fn start_with(ws: &Path, extra: &[&str]) -> Client {
    ().serve(spawn_server(ws, extra))
        .await
        .expect("MCP handshake")
}

/// Like [`start_with`], as a client that calls itself `name` (the agent
/// name the server records and grants overrides to).
pub async fn start_as(ws: &Path, name: &str, extra: &[&str]) -> NamedClient {
    rmcp::model::ClientConfig::new(
        rmcp::model::ClientCapabilities::default(),
        rmcp::model::Implementation::new(name, "1"),
    )
    .serve(spawn_server(ws, extra))
    .await
    .expect("MCP handshake")
}

/// The server as a child process, for a client with a handler of its own.
pub fn spawn_server(ws: &Path, extra: &[&str]) -> TokioChildProcess {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("serve").arg("--workspace").arg(ws).args(extra);
    let (transport, _stderr) = TokioChildProcess::builder(cmd)
        .stderr(if std::env::var_os("ARBITER_TEST_STDERR").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .expect("spawn arbiter");
    transport
}

pub async fn try_call<H: ClientHandler>(
    client: &RunningService<RoleClient, H>,
    tool: &str,
    args: Value,
) -> Result<CallToolResult, ServiceError> {
    let args = args.as_object().cloned().expect("arguments are an object");
    client
        .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args))
        .await
}

/// Call a tool and return its result (tool errors included); protocol errors panic.
pub async fn call<H: ClientHandler>(
    client: &RunningService<RoleClient, H>,
    tool: &str,
    args: Value,
) -> CallToolResult {
    try_call(client, tool, args)
        .await
        .expect("tools/call answered")
}

/// Call a tool that must succeed; returns its structured content.
pub async fn ok<H: ClientHandler>(
    client: &RunningService<RoleClient, H>,
    tool: &str,
    args: Value,
) -> Value {
    let r = call(client, tool, args.clone()).await;
    assert_ne!(r.is_error, Some(true), "{tool} {args} failed: {}", text(&r));
    r.structured_content.expect("structuredContent")
}

/// Call a tool that must fail with `isError: true`; returns the error text.
pub async fn refused<H: ClientHandler>(
    client: &RunningService<RoleClient, H>,
    tool: &str,
    args: Value,
) -> String {
    let r = call(client, tool, args.clone()).await;
    assert_eq!(
        r.is_error,
        Some(true),
        "{tool} {args} should have failed: {}",
        text(&r)
    );
    text(&r)
}

pub fn text(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Run the binary with arguments; returns (exit code, stdout, stderr).
pub fn run_cli(ws: &Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(BIN)
        .args(args)
        .arg("--workspace")
        .arg(ws)
        .output()
        .expect("run arbiter");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every audit record of the workspace, oldest first.
pub fn audit_records(ws: &Path) -> Vec<Value> {
    let (code, out, err) = run_cli(ws, &["audit", "tail", "-n", "100000", "--json"]);
    assert_eq!(code, 0, "audit tail failed: {err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Each audit record as `[tool, outcome, decision, rule_ids]`, oldest first.
pub fn audit_summary(ws: &Path) -> Vec<[String; 4]> {
    audit_records(ws)
        .iter()
        .map(|r| {
            let f = |k: &str| r[k].as_str().unwrap().to_string();
            [f("tool"), f("outcome"), f("decision"), f("rule_ids")]
        })
        .collect()
}

/// The binary driven with hand-written JSON-RPC lines, for what a well-behaved
/// client library will not send (garbage lines) or for killing mid-stream.
pub struct RawServer {
    pub child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl RawServer {
    pub fn start(ws: &Path) -> Self {
        Self::start_with(ws, &[])
    }

    /// Started as `serve --workspace WS EXTRA...`.
    pub fn start_with(ws: &Path, extra: &[&str]) -> Self {
        Self::start_command(
            ws,
            std::process::Command::new(BIN).stderr(Stdio::null()),
            extra,
        )
    }

    /// Started with debug logs going to the file `log`.
    pub fn start_logging(ws: &Path, log: &Path) -> Self {
        let log = std::fs::File::create(log).expect("create the log file");
        Self::start_command(
            ws,
            std::process::Command::new(BIN)
                .env("ARBITER_LOG", "arbiter=debug")
                .stderr(log),
            &[],
        )
    }

    fn start_command(ws: &Path, command: &mut std::process::Command, extra: &[&str]) -> Self {
        let mut child = command
            .arg("serve")
            .arg("--workspace")
            .arg(ws)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn arbiter");
        let stdin = child.stdin.take().unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut s = Self {
            child,
            stdin: Some(stdin),
            stdout,
        };
        s.send_line(
            &serde_json::json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "raw-test", "version": "0"}}})
            .to_string(),
        );
        let init = s.recv();
        assert_eq!(init["result"]["serverInfo"]["name"], "arbiter", "{init}");
        s.send_line(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        s
    }

    pub fn send_line(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    pub fn send_call(&mut self, id: u64, tool: &str, args: Value) {
        let line = serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": tool, "arguments": args}});
        self.send_line(&line.to_string());
    }

    /// The server's stdin, for a writer thread (pipelining without reading).
    pub fn take_stdin(&mut self) -> std::process::ChildStdin {
        self.stdin.take().expect("stdin is open")
    }

    /// Close the server's stdin (the client goes away) and wait for it to exit.
    pub fn hang_up(&mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        self.child.wait().unwrap()
    }

    /// The next message from the server (panics on EOF).
    pub fn recv(&mut self) -> Value {
        use std::io::BufRead;
        let mut line = String::new();
        let n = self.stdout.read_line(&mut line).unwrap();
        assert!(n > 0, "the server closed stdout");
        serde_json::from_str(&line).unwrap()
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A unique number for markers and file names.
pub fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    (u64::from(std::process::id()) << 20) ^ (nanos << 4) ^ N.fetch_add(1, Ordering::Relaxed)
}

/// Host pids whose command line contains `marker`.
pub fn processes_with(marker: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline"))
            && String::from_utf8_lossy(&cmdline).contains(marker)
        {
            found.push(pid);
        }
    }
    found
}

/// Wait until `cond` holds (polling), or panic with `what`.
pub async fn eventually(what: &str, limit: std::time::Duration, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// `arbiter serve --http 127.0.0.1:0` on a workspace, killed on drop; `base` is
/// `http://127.0.0.1:PORT`, read from its start-up log (stderr keeps being drained;
/// `ARBITER_TEST_STDERR=1` echoes it).
pub struct HttpServer {
    pub child: std::process::Child,
    pub base: String,
    /// Its stderr so far.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl HttpServer {
    pub fn start(ws: &Path, extra: &[&str]) -> Self {
        Self::start_command(std::process::Command::new(BIN), ws, extra)
    }

    /// Started with debug logs (see [`Self::log_count`]).
    pub fn start_logging(ws: &Path, extra: &[&str]) -> Self {
        let mut command = std::process::Command::new(BIN);
        command.env("ARBITER_LOG", "arbiter=debug");
        Self::start_command(command, ws, extra)
    }

    /// How many lines of its stderr so far contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        let log = self.log.lock().unwrap();
        log.iter().filter(|l| l.contains(needle)).count()
    }

    /// [`Self::log_count`] once it reaches `expected` or 5 s have passed: a
    /// line the server wrote before its reply may still be on its way
    /// through the stderr pipe to the thread that collects the log.
    pub fn log_count_awaiting(&self, needle: &str, expected: usize) -> usize {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let count = self.log_count(needle);
            if count >= expected || std::time::Instant::now() > deadline {
                return count;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    fn start_command(mut command: std::process::Command, ws: &Path, extra: &[&str]) -> Self {
        let mut child = command
            .args(["serve", "--http", "127.0.0.1:0", "--workspace"])
            .arg(ws)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn arbiter");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = log.clone();
        // Keep reading stderr for the server's whole life, so it never
        // blocks on a full pipe.
        std::thread::spawn(move || {
            let echo = std::env::var_os("ARBITER_TEST_STDERR").is_some();
            for line in
                std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok)
            {
                if echo {
                    eprintln!("[server] {line}");
                }
                if let Some(at) = line.find("url=http://") {
                    let url: String = line[at + 4..]
                        .chars()
                        .take_while(|c| !c.is_whitespace() && *c != '"')
                        .collect();
                    let _ = tx.send(url);
                }
                kept.lock().unwrap().push(line);
            }
        });
        let url = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the server logs the address it serves");
        let base = url.trim_end_matches("/mcp").to_string();
        Self { child, base, log }
    }

    pub fn mcp(&self) -> String {
        format!("{}/mcp", self.base)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = reqwest::get(format!("{}{path}", self.base)).await.unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.unwrap())
    }

    /// A page as text (`/metrics`).
    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let r = reqwest::get(format!("{}{path}", self.base)).await.unwrap();
        let status = r.status().as_u16();
        (status, r.text().await.unwrap())
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The client name of [`connect`]'s MCP clients.
pub const HTTP_CLIENT_NAME: &str = "http-test-client";

pub type HttpClient = rmcp::service::RunningService<rmcp::RoleClient, rmcp::model::ClientConfig>;

/// rmcp's streamable HTTP client, with a bearer token or without.
pub async fn connect(url: &str, token: Option<&str>) -> Result<HttpClient, String> {
    let mut config =
        rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(
            url.to_string(),
        );
    if let Some(token) = token {
        config = config.auth_header(token.to_string());
    }
    rmcp::model::ClientConfig::new(
        rmcp::model::ClientCapabilities::default(),
        rmcp::model::Implementation::new(HTTP_CLIENT_NAME, "1"),
    )
    .serve(rmcp::transport::StreamableHttpClientTransport::from_config(
        config,
    ))
    .await
    .map_err(|e| format!("{e:?}"))
}

pub fn create_token(ws: &Path, tenant: &str, agent: &str) -> String {
    token_with(ws, &["--tenant", tenant, "--agent", agent])
}

/// An admin token: for a person at /admin, never for MCP.
pub fn create_admin_token(ws: &Path, tenant: &str, person: &str) -> String {
    token_with(ws, &["--tenant", tenant, "--agent", person, "--admin"])
}

pub fn token_with(ws: &Path, args: &[&str]) -> String {
    let mut all = vec!["token", "create"];
    all.extend_from_slice(args);
    let (code, out, err) = run_cli(ws, &all);
    assert_eq!(code, 0, "token create: {err}");
    let token = out.trim().to_string();
    assert!(token.starts_with("arb_"), "{out}");
    token
}

/// The id `arbiter token list --json` shows for the newest token.
pub fn newest_token_id(ws: &Path) -> String {
    let (code, out, err) = run_cli(ws, &["token", "list", "--json"]);
    assert_eq!(code, 0, "token list: {err}");
    let last: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    last["id"].to_string()
}

/// `arbiter db migrate` (with `args` before it) on a fresh store, twice: the
/// first run names each migration of `migrations/<dir>` as it applies it,
/// the second applies none and names none. `store` is how the CLI calls it.
pub fn assert_migrates_once(ws: &Path, args: &[&str], store: &str, dir: &str) {
    let migrations = std::fs::read_dir(format!("{}/migrations/{dir}", env!("CARGO_MANIFEST_DIR")))
        .unwrap()
        .count();
    let mut all = args.to_vec();
    all.extend(["db", "migrate"]);
    let (code, out, err) = run_cli(ws, &all);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        format!("{store}: migrations applied ({migrations} new)")
    );
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("migrating: "))
        .collect();
    assert_eq!(lines.len(), migrations, "{err}");
    assert!(
        lines[0].starts_with(&format!("migrating: 1/{migrations} 0001_")),
        "{err}"
    );
    assert!(lines.iter().all(|l| l.ends_with(": applied")), "{err}");
    let (code, out, err) = run_cli(ws, &all);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), format!("{store}: migrations applied (0 new)"));
    assert!(!err.contains("migrating: "), "{err}");
}

/// A `tools/call` request: with an empty `_meta`, which keeps it in rmcp's
/// lane, or without, so that the direct lane takes it.
pub fn lane_call(id: u64, tool: &str, args: &Value, through_rmcp: bool) -> Value {
    let mut params = serde_json::json!({"name": tool, "arguments": args});
    if through_rmcp {
        params["_meta"] = serde_json::json!({});
    }
    serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params})
}

/// Files for [`lane_test_calls`].
pub fn lane_test_files(s: &Scratch) {
    s.write("a.txt", "one\ntwo\nthree\n");
    s.write("crlf.txt", "x\r\ny\r\n");
    s.write("dir/inner.txt", "needle here\n");
    s.write("w.txt", "old\n");
    std::fs::write(s.ws().join("bin.dat"), [0u8, 1, 2, 3]).unwrap();
    // What a reply must escape: quotes, backslashes, controls, non-ASCII, bad UTF-8.
    std::fs::write(
        s.ws().join("odd.txt"),
        b"say \"hi\" \\ \t\x01\x1b[0m\r\n\xc3\xa9 \xe2\x80\xa8 \xf0\x9f\x98\x80 \xff\nlast",
    )
    .unwrap();
    s.write("empty.txt", "");
}

/// Calls of every directly answered tool, successes, refusals and malformed
/// arguments, whose answers do not depend on being made twice: both lanes of
/// a transport must answer each alike (`stdio_lanes.rs`, `http_lanes.rs`).
pub fn lane_test_calls() -> Vec<(&'static str, Value)> {
    use serde_json::json;
    vec![
        ("file_read", json!({"target_file": "a.txt"})),
        (
            "file_read",
            json!({"target_file": "a.txt", "offset": 2, "limit": 1}),
        ),
        ("file_read", json!({"target_file": "crlf.txt"})),
        ("file_read", json!({"target_file": "odd.txt"})),
        ("file_read", json!({"target_file": "odd.txt", "limit": 1})),
        ("file_read", json!({"target_file": "empty.txt"})),
        ("file_read", json!({"target_file": "a.txt", "offset": 9})),
        ("file_read", json!({"target_file": "missing.txt"})),
        ("file_read", json!({"target_file": "bin.dat"})),
        ("file_read", json!({"target_file": "../outside.txt"})),
        ("file_read", json!({"target_file": ".arbiter/arbiter.db"})),
        ("file_read", json!({"target_file": "dir"})),
        ("file_read", json!({})),
        ("file_read", json!({"target_file": 7})),
        ("file_read", json!({"target_file": "a.txt", "limit": "ten"})),
        (
            "file_write",
            json!({"file_path": "w.txt", "contents": "new\n"}),
        ),
        (
            "file_write",
            json!({"file_path": "../escape.txt", "contents": "x"}),
        ),
        ("file_write", json!({"file_path": "w.txt"})),
        (
            "file_search_replace",
            json!({"file_path": "a.txt", "old_string": "absent", "new_string": "x"}),
        ),
        (
            "file_search_replace",
            json!({"file_path": "a.txt", "old_string": "", "new_string": "x"}),
        ),
        ("list_dir", json!({"relative_workspace_path": "."})),
        (
            "list_dir",
            json!({"relative_workspace_path": "dir", "depth": 2}),
        ),
        ("grep_search", json!({"query": "needle"})),
        ("grep_search", json!({"query": "("})),
        ("file_search", json!({"query": "inner"})),
        ("delete_file", json!({"target_file": "dir"})),
        ("delete_file", json!({"target_file": "missing.txt"})),
        (
            "move_file",
            json!({"source": "a.txt", "destination": "crlf.txt"}),
        ),
        (
            "move_file",
            json!({"source": "a.txt", "destination": "../out.txt"}),
        ),
    ]
}

/// One raw JSON-RPC POST to /mcp; returns the status, the session id header
/// and the body.
pub async fn mcp_post(
    url: &str,
    token: Option<&str>,
    session: Option<&str>,
    extra: &[(&str, &str)],
    body: &Value,
) -> (u16, Option<String>, reqwest::header::HeaderMap, String) {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("mcp-protocol-version", "2025-11-25")
        .body(body.to_string());
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let session = headers
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_string());
    (status, session, headers, response.text().await.unwrap())
}
