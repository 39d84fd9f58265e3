//! arbiter-bench-http: the issue 9 load test. `--sessions` MCP sessions at
//! once, each making `--calls` sequential `file_read` calls of a 4 KiB file
//! over streamable HTTP on loopback, against `arbiter serve --http` with a
//! bearer token made by `arbiter token create` (so the token check is in every
//! measured request), or with `--no-auth`.
//!
//! The client is hyper's HTTP/1.1 connection (one keep-alive connection per
//! session, no pool) speaking the transport by hand: `POST /mcp` with
//! `Accept: application/json, text/event-stream`, the `Mcp-Session-Id` the
//! server gave at `initialize`, and the reply read from the SSE stream (or
//! JSON body) that answers each POST. Every reply is checked; failures are
//! counted (and the first few printed), not fatal, since "errors" is one of
//! the figures. Prints throughput, latency percentiles, errors, and the
//! server's resident memory (VmRSS sampled every 20 ms, and VmHWM).

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use arbiter_bench::stdio::Reaper;
use arbiter_bench::{
    PROTOCOL_VERSION, ReplyHead, arbiter_binary, check_tool_reply, elide, log_tail,
    percentile_sorted_us, proc_cpu_seconds, proc_status_kib, reply_text,
};
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::Barrier;

/// Size of the file every call reads.
const FILE_SIZE: usize = 4096;
/// Failures printed in full (the rest are only counted).
const ERRORS_SHOWN: usize = 5;
/// How often the server's VmRSS is read during the run.
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(20);

#[derive(Parser)]
#[command(
    about = "Load test of `arbiter serve --http`: concurrent MCP sessions reading a file over streamable HTTP (see tools/bench/README.md)"
)]
struct Args {
    /// arbiter binary to run [default: <target dir>/release/arbiter]
    #[arg(long)]
    arbiter: Option<PathBuf>,
    /// Concurrent MCP sessions
    #[arg(long, default_value_t = 100)]
    sessions: usize,
    /// Sequential file_read calls per session
    #[arg(long, default_value_t = 1000)]
    calls: usize,
    /// Serve without tokens (`serve --no-auth`) instead of with a bearer token
    #[arg(long)]
    no_auth: bool,
    /// Seconds to wait for any single reply
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// An extra argument for `arbiter serve`, e.g. `--serve-arg=--token-cache-ttl=0`
    /// (repeatable)
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    serve_arg: Vec<String>,
}

fn main() -> ExitCode {
    arbiter_bench::main_with(|| {
        let args = Args::parse();
        tokio::runtime::Runtime::new()?.block_on(run(args))
    })
}

async fn run(args: Args) -> Result<()> {
    ensure!(
        args.sessions > 0 && args.calls > 0,
        "--sessions and --calls must be at least 1"
    );
    let binary = arbiter_binary(args.arbiter.clone())?;
    let scratch = tempfile::Builder::new()
        .prefix("arbiter-bench-http-")
        .tempdir()?;
    let workspace = scratch.path().join("ws");
    fs::create_dir(&workspace)?;
    let workspace = workspace.canonicalize()?;
    let content = text(FILE_SIZE);
    fs::write(workspace.join("r.txt"), &content)?;
    let log = scratch.path().join("server.stderr");

    let token = if args.no_auth {
        None
    } else {
        Some(create_token(&binary, &workspace)?)
    };
    let server = start_server(&binary, &workspace, &log, args.no_auth, &args.serve_arg)?;
    let result = load(&args, &server, token.as_deref(), &content).await;
    let result = result.with_context(|| {
        format!(
            "the load test failed; last lines of the server's stderr:\n{}",
            log_tail(&log, 20)
        )
    });
    drop(server);
    let figures = result?;
    figures.print(&args, &binary);
    Ok(())
}

/// `arbiter token create --tenant default --agent load-bench --rate-limit off`:
/// the secret it prints.
fn create_token(binary: &Path, workspace: &Path) -> Result<String> {
    let out = Command::new(binary)
        .args([
            "token",
            "create",
            "--tenant",
            "default",
            "--agent",
            "load-bench",
        ])
        // The server's default per-token limit (1200/min) would answer most
        // calls with 429: this token is the load generator.
        .args(["--rate-limit", "off"])
        .arg("--workspace")
        .arg(workspace)
        .stdin(Stdio::null())
        .output()
        .context("running arbiter token create")?;
    ensure!(
        out.status.success(),
        "arbiter token create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout)?.trim().to_owned();
    ensure!(token.starts_with("arb_"), "token create printed {token:?}");
    Ok(token)
}

/// A running `arbiter serve --http 127.0.0.1:0` and the URL it logged.
struct Server {
    process: Reaper,
    url: String,
}

/// Starts the server on a free loopback port; its stderr is copied to `log`
/// by a thread that also picks the URL out of the start-up line.
fn start_server(
    binary: &Path,
    workspace: &Path,
    log: &Path,
    no_auth: bool,
    extra: &[String],
) -> Result<Server> {
    let mut command = Command::new(binary);
    command
        .args(["serve", "--http", "127.0.0.1:0", "--workspace"])
        .arg(workspace)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if no_auth {
        command.arg("--no-auth");
    }
    command.args(extra);
    let mut child = command.spawn().context("starting arbiter serve --http")?;
    let stderr = child.stderr.take().expect("piped stderr");
    let process = Reaper(child);
    let mut file = File::create(log)?;
    let (url_tx, url_rx) = mpsc::channel();
    // Reads stderr for the server's whole life, so it never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = writeln!(file, "{line}");
            if let Some(at) = line.find("url=http://") {
                let url: String = line[at + 4..]
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != '"')
                    .collect();
                let _ = url_tx.send(url);
            }
        }
    });
    let url = url_rx
        .recv_timeout(Duration::from_secs(30))
        .with_context(|| format!("the server did not log its URL:\n{}", log_tail(log, 20)))?;
    Ok(Server { process, url })
}

/// What the run measured.
struct Figures {
    server_info: String,
    handshakes: Vec<Duration>,
    /// Every call's latency, sorted.
    latencies: Vec<Duration>,
    errors: u64,
    error_samples: Vec<String>,
    elapsed: Duration,
    rss_start_kib: u64,
    rss_end_kib: u64,
    rss_sampled_peak_kib: u64,
    rss_hwm_kib: u64,
    /// CPU seconds the server and this client used during the calls.
    server_cpu: f64,
    client_cpu: f64,
}

async fn load(args: &Args, server: &Server, token: Option<&str>, content: &str) -> Result<Figures> {
    let pid = server.process.0.id();
    let addr: std::net::SocketAddr = server
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .parse()
        .with_context(|| format!("the server's URL {} is not http://ADDR/mcp", server.url))?;
    let client = Arc::new(McpHttp {
        addr,
        authority: addr.to_string(),
        token: token.map(|t| format!("Bearer {t}")),
        timeout: Duration::from_secs(args.timeout),
    });

    // One session first, to check that a read returns the whole file.
    let mut conn = client.connect().await?;
    let (session, info) = client.open_session(&mut conn).await?;
    let reply = client.call(&mut conn, &session, 2).await?;
    let last_line = content.lines().last().expect("non-empty file");
    ensure!(
        reply_text(&reply).contains(last_line),
        "file_read did not return the file's last line; reply: {}",
        elide(&reply.to_string())
    );
    let server_info = format!(
        "serverInfo {} {}, protocol {}",
        info["serverInfo"]["name"].as_str().unwrap_or("?"),
        info["serverInfo"]["version"].as_str().unwrap_or("?"),
        info["protocolVersion"].as_str().unwrap_or("?"),
    );
    client.close_session(&mut conn, &session).await;
    drop(conn);
    let rss_start_kib = proc_status_kib(pid, "VmRSS")?;

    let peak = Arc::new(AtomicU64::new(rss_start_kib));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(RSS_SAMPLE_EVERY);
            loop {
                every.tick().await;
                match proc_status_kib(pid, "VmRSS") {
                    Ok(kib) => peak.fetch_max(kib, Ordering::Relaxed),
                    Err(_) => break,
                };
            }
        })
    };

    eprintln!(
        "{} sessions x {} file_read calls against {} ({}) ...",
        args.sessions,
        args.calls,
        server.url,
        if token.is_some() {
            "bearer token"
        } else {
            "--no-auth"
        }
    );
    // Every session is opened before the clock starts; then all start together.
    let start = Arc::new(Barrier::new(args.sessions + 1));
    let errors = Arc::new(Errors::default());
    let mut workers = Vec::with_capacity(args.sessions);
    for _ in 0..args.sessions {
        let (client, start, errors) = (client.clone(), start.clone(), errors.clone());
        let calls = args.calls;
        workers.push(tokio::spawn(async move {
            session_worker(&client, calls, &start, &errors).await
        }));
    }
    start.wait().await;
    let begin = Instant::now();
    let cpu_before = (
        proc_cpu_seconds(&pid.to_string())?,
        proc_cpu_seconds("self")?,
    );
    let mut latencies = Vec::with_capacity(args.sessions * args.calls);
    let mut handshakes = Vec::with_capacity(args.sessions);
    for worker in workers {
        let (handshake, samples) = worker.await?;
        handshakes.push(handshake);
        latencies.extend(samples);
    }
    let elapsed = begin.elapsed();
    let server_cpu = proc_cpu_seconds(&pid.to_string())? - cpu_before.0;
    let client_cpu = proc_cpu_seconds("self")? - cpu_before.1;
    sampler.abort();
    latencies.sort_unstable();
    handshakes.sort_unstable();
    let rss_end_kib = proc_status_kib(pid, "VmRSS")?;
    let rss_hwm_kib = proc_status_kib(pid, "VmHWM")?;
    let errors = Arc::into_inner(errors).expect("workers are done");
    Ok(Figures {
        server_info,
        handshakes,
        latencies,
        errors: errors.count.into_inner(),
        error_samples: errors
            .samples
            .into_inner()
            .unwrap_or_else(|e| e.into_inner()),
        elapsed,
        rss_start_kib,
        rss_end_kib,
        rss_sampled_peak_kib: peak.load(Ordering::Relaxed).max(rss_end_kib),
        rss_hwm_kib,
        server_cpu,
        client_cpu,
    })
}

/// Failed calls: counted, the first few kept.
#[derive(Default)]
struct Errors {
    count: AtomicU64,
    samples: Mutex<Vec<String>>,
}

impl Errors {
    fn record(&self, error: &anyhow::Error) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples.len() < ERRORS_SHOWN {
            samples.push(format!("{error:#}"));
        }
    }
}

/// One session: open it, wait for the others, make `calls` reads, close it.
/// Returns the handshake time and the latency of each successful call.
async fn session_worker(
    client: &McpHttp,
    calls: usize,
    start: &Barrier,
    errors: &Errors,
) -> (Duration, Vec<Duration>) {
    let opened_at = Instant::now();
    let opened = match client.connect().await {
        Ok(mut conn) => client
            .open_session(&mut conn)
            .await
            .map(|(session, _)| (conn, session)),
        Err(e) => Err(e),
    };
    let handshake = opened_at.elapsed();
    start.wait().await;
    let (mut conn, session) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            // Every call this session would have made fails with it.
            for _ in 0..calls {
                errors.record(&e);
            }
            return (handshake, Vec::new());
        }
    };
    let mut samples = Vec::with_capacity(calls);
    for i in 0..calls {
        let sent_at = Instant::now();
        match client.call_checked(&mut conn, &session, i as u64 + 2).await {
            Ok(()) => samples.push(sent_at.elapsed()),
            Err(e) => errors.record(&e),
        }
    }
    client.close_session(&mut conn, &session).await;
    (handshake, samples)
}

/// The MCP streamable HTTP transport, by hand: where and as whom to connect.
struct McpHttp {
    addr: std::net::SocketAddr,
    /// `127.0.0.1:PORT`: the `Host` the server checks.
    authority: String,
    /// `Bearer arb_...`, or none with `--no-auth`.
    token: Option<String>,
    timeout: Duration,
}

/// One session's keep-alive HTTP/1.1 connection (hyper's client connection,
/// without a pool: each session has its own, as a real agent would).
struct Conn {
    send: SendRequest<Full<Bytes>>,
}

/// A POST's answer: status, whether the body is JSON (not SSE), the body.
struct Answer {
    status: hyper::StatusCode,
    json: bool,
    session: Option<String>,
    body: Bytes,
}

impl McpHttp {
    async fn connect(&self) -> Result<Conn> {
        let stream = tokio::net::TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let (send, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Conn { send })
    }

    async fn send(
        &self,
        conn: &mut Conn,
        method: hyper::Method,
        session: Option<&str>,
        body: String,
    ) -> Result<Answer> {
        let mut request = hyper::Request::builder()
            .method(method)
            .uri("/mcp")
            .header("host", &self.authority)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-protocol-version", PROTOCOL_VERSION);
        if let Some(token) = &self.token {
            request = request.header("authorization", token);
        }
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        let request = request.body(Full::new(Bytes::from(body)))?;
        let exchange = async {
            conn.send.ready().await?;
            let response = conn.send.send_request(request).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            anyhow::Ok((parts, body))
        };
        let (parts, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .context("no reply in time (--timeout)")??;
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Ok(Answer {
            status: parts.status,
            json: header("content-type").is_some_and(|v| v.starts_with("application/json")),
            session: header("mcp-session-id"),
            body,
        })
    }

    /// `initialize` and `notifications/initialized`: the session id and the
    /// `initialize` result.
    async fn open_session(&self, conn: &mut Conn) -> Result<(String, Value)> {
        let params = json!({
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": { "name": "arbiter-bench-http", "version": "0" },
        });
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params});
        let answer = self
            .send(conn, hyper::Method::POST, None, body.to_string())
            .await?;
        let session = answer.session.clone();
        let reply = reply_message(&answer, 1).context("initialize")?;
        let session = session.context("the initialize reply has no Mcp-Session-Id header")?;
        let notification = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let answer = self
            .send(
                conn,
                hyper::Method::POST,
                Some(&session),
                notification.to_string(),
            )
            .await?;
        ensure!(
            answer.status.is_success(),
            "notifications/initialized: HTTP {}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
        Ok((session, reply["result"].clone()))
    }

    /// One `file_read` of r.txt, its reply read in full; fails unless it succeeded.
    async fn call(&self, conn: &mut Conn, session: &str, id: u64) -> Result<Value> {
        let answer = self.send_read(conn, session, id).await?;
        let reply = reply_message(&answer, id)?;
        check_tool_reply(&reply)?;
        Ok(reply)
    }

    /// One `file_read` of r.txt under load: the reply's id, error and
    /// `isError` are checked without building the 4 KiB text (this client
    /// shares the two cores with the server).
    async fn call_checked(&self, conn: &mut Conn, session: &str, id: u64) -> Result<()> {
        let answer = self.send_read(conn, session, id).await?;
        if !answer.json {
            // An SSE reply (rmcp's lane): read it in full.
            return check_tool_reply(&reply_message(&answer, id)?);
        }
        ensure!(
            answer.status.is_success(),
            "HTTP {}: {}",
            answer.status,
            elide(&String::from_utf8_lossy(&answer.body))
        );
        let head = ReplyHead::checked(&answer.body)?;
        ensure!(
            head.id == Some(id),
            "reply to request {id} has id {:?}",
            head.id
        );
        Ok(())
    }

    async fn send_read(&self, conn: &mut Conn, session: &str, id: u64) -> Result<Answer> {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"file_read","arguments":{{"target_file":"r.txt"}}}}}}"#
        );
        self.send(conn, hyper::Method::POST, Some(session), body)
            .await
    }

    /// `DELETE /mcp`: ends the session (best effort: it is not measured).
    async fn close_session(&self, conn: &mut Conn, session: &str) {
        let _ = self
            .send(conn, hyper::Method::DELETE, Some(session), String::new())
            .await;
    }
}

/// The JSON-RPC reply with `id` in a POST's answer: a JSON body, or the
/// `data:` lines of an SSE stream (which rmcp ends after the reply).
fn reply_message(answer: &Answer, id: u64) -> Result<Value> {
    let body = String::from_utf8_lossy(&answer.body);
    ensure!(
        answer.status.is_success(),
        "HTTP {}: {}",
        answer.status,
        elide(&body)
    );
    if answer.json {
        return Ok(serde_json::from_str(&body)?);
    }
    for line in body.lines() {
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        let data = data.trim();
        if data.is_empty() {
            continue; // rmcp's priming event
        }
        let message: Value = serde_json::from_str(data)
            .with_context(|| format!("SSE data is not JSON: {}", elide(data)))?;
        if message["id"].as_u64() == Some(id) {
            return Ok(message);
        }
    }
    bail!("no reply to request {id} in the response: {}", elide(&body))
}

/// `size` bytes of numbered 64-byte lines.
fn text(size: usize) -> String {
    (0..size / 64)
        .map(|i| format!("{:<63.63}\n", format!("r line {i:04}: load benchmark")))
        .collect()
}

impl Figures {
    fn print(&self, args: &Args, binary: &Path) {
        let ms = |us: f64| us / 1e3;
        let mib = |kib: u64| kib as f64 / 1024.0;
        let lat = |p| ms(percentile_sorted_us(&self.latencies, p));
        let ok = self.latencies.len();
        let total = args.sessions * args.calls;
        println!();
        println!("arbiter:   {} ({})", binary.display(), self.server_info);
        println!(
            "workload:  {} sessions x {} sequential file_read calls (4 KiB) over streamable HTTP on loopback, {}",
            args.sessions,
            args.calls,
            if args.no_auth {
                "--no-auth"
            } else {
                "bearer token checked on every request"
            }
        );
        if !args.serve_arg.is_empty() {
            println!("serve:     {}", args.serve_arg.join(" "));
        }
        println!(
            "machine:   {} CPUs, shared by the server and this client",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!();
        let per_call_us = |seconds: f64| seconds * 1e6 / ok.max(1) as f64;
        let rows: [(&str, String); 15] = [
            ("calls ok / made", format!("{ok} / {total}")),
            ("errors", format!("{}", self.errors)),
            (
                "wall time (s)",
                format!("{:.2}", self.elapsed.as_secs_f64()),
            ),
            (
                "throughput (calls/s)",
                format!("{:.0}", ok as f64 / self.elapsed.as_secs_f64()),
            ),
            ("latency p50 (ms)", format!("{:.2}", lat(50))),
            ("latency p90 (ms)", format!("{:.2}", lat(90))),
            ("latency p99 (ms)", format!("{:.2}", lat(99))),
            ("latency max (ms)", format!("{:.2}", lat(100))),
            (
                "server CPU per call (µs)",
                format!("{:.0}", per_call_us(self.server_cpu)),
            ),
            (
                "client CPU per call (µs)",
                format!("{:.0}", per_call_us(self.client_cpu)),
            ),
            (
                "session handshake p50 (ms)",
                format!("{:.2}", ms(percentile_sorted_us(&self.handshakes, 50))),
            ),
            (
                "server RSS before load (MiB)",
                format!("{:.1}", mib(self.rss_start_kib)),
            ),
            (
                "server RSS after load (MiB)",
                format!("{:.1}", mib(self.rss_end_kib)),
            ),
            (
                "server RSS peak, sampled (MiB)",
                format!("{:.1}", mib(self.rss_sampled_peak_kib)),
            ),
            (
                "server VmHWM (MiB)",
                format!("{:.1}", mib(self.rss_hwm_kib)),
            ),
        ];
        let width = rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        for (label, value) in rows {
            println!("{label:<width$}  {value:>14}");
        }
        if !self.error_samples.is_empty() {
            println!();
            println!("first errors:");
            for e in &self.error_samples {
                println!("  {e}");
            }
        }
        println!();
        println!(
            "targets (issue 9): 0 errors, p99 under 10 ms, memory under 100 MB: {}",
            if self.errors == 0 && lat(99) < 10.0 && (self.rss_hwm_kib as f64 * 1024.0) < 100e6 {
                "met"
            } else {
                "NOT met"
            }
        );
    }
}
