//! arbiter-bench-exec: what running a command through arbiter costs, next to
//! running the same program with a plain fork/exec from this process.
//!
//! The server is driven as a host drives it: `arbiter serve` as a child
//! process speaking newline-delimited JSON-RPC on stdin/stdout, with a
//! minimal hand-written client, so the client framework is not what is
//! timed. Figures (see README.md):
//!
//! 1. plain fork/exec + wait of `true` and of `echo hello` (output read),
//!    from this process: the floor any command runner pays;
//! 2. round trip of `run_terminal_cmd` for the same commands, sequential:
//!    MCP framing, policy, audit commit, and the whole sandbox (helper
//!    process, cgroup, namespaces, mounts, Landlock, seccomp, private
//!    directory, cleanup);
//! 3. round trip of `file_read` of a small file: the server's per-call cost
//!    without a command (protocol, policy, audit), to split the overhead;
//! 4. 20 commands at once: 20 `run_terminal_cmd` requests written back to
//!    back, time until the last reply; beside it 20 plain spawns at once.
//!
//! Every reply is checked (exit code 0, the expected output): timing
//! failures would be worthless.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser)]
#[command(
    about = "Benchmark run_terminal_cmd against plain fork/exec (see tools/bench-exec/README.md)"
)]
struct Args {
    /// arbiter binary to run [default: <target dir>/release/arbiter]
    #[arg(long)]
    arbiter: Option<PathBuf>,
    /// Sequential calls timed per figure
    #[arg(long, default_value_t = 300)]
    iterations: usize,
    /// Commands started at once for the concurrency figure
    #[arg(long, default_value_t = 20)]
    concurrent: usize,
    /// Rounds of the concurrency figure
    #[arg(long, default_value_t = 15)]
    rounds: usize,
    /// Seconds to wait for any one reply
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    ensure!(
        args.iterations > 0 && args.concurrent > 0 && args.rounds > 0,
        "counts must be positive"
    );
    let arbiter = args
        .arbiter
        .clone()
        .unwrap_or_else(|| arbiter_bench::target_dir().join("release/arbiter"));
    ensure!(
        arbiter.exists(),
        "{} does not exist; run `cargo build --release` first",
        arbiter.display()
    );
    let true_bin = which("true")?;
    let echo_bin = which("echo")?;
    let scratch = tempfile::tempdir()?;
    let ws = scratch.path().join("ws");
    std::fs::create_dir(&ws)?;
    std::fs::write(ws.join("small.txt"), "hello\n")?;
    let timeout = Duration::from_secs(args.timeout);
    let mut client = Client::spawn(&arbiter, &ws, timeout)?;
    eprintln!("arbiter: {}", arbiter.display());

    // Warm up: page cache, first cgroup, allocator.
    for _ in 0..20 {
        check_command(
            &client
                .call("run_terminal_cmd", json!({"command": "true"}))?
                .0,
            "",
        )?;
        plain(&true_bin, &[])?;
    }
    let n = args.iterations;
    eprintln!("timing {n} sequential calls per figure, interleaved...");
    // Interleaved, so that every figure sees the same load on the machine.
    let (mut plain_true, mut plain_echo, mut tool_true, mut tool_echo, mut read) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        plain_true.push(plain(&true_bin, &[])?);
        let (reply, took) = client.call("run_terminal_cmd", json!({"command": "true"}))?;
        check_command(&reply, "")?;
        tool_true.push(took);
        plain_echo.push(plain(&echo_bin, &["hello"])?);
        let (reply, took) = client.call("run_terminal_cmd", json!({"command": "echo hello"}))?;
        check_command(&reply, "hello\n")?;
        tool_echo.push(took);
        let (reply, took) = client.call("file_read", json!({"target_file": "small.txt"}))?;
        ensure!(
            reply["result"]["isError"] != true,
            "file_read failed: {reply}"
        );
        read.push(took);
    }
    let load_before = load_average();

    eprintln!(
        "timing {} rounds of {} concurrent commands...",
        args.rounds, args.concurrent
    );
    let mut tool_batch = Vec::new();
    let mut plain_batch = Vec::new();
    for _ in 0..args.rounds {
        tool_batch.push(client.batch(args.concurrent, json!({"command": "echo hello"}))?);
        let start = Instant::now();
        let children: Vec<Child> = (0..args.concurrent)
            .map(|_| {
                Command::new(&echo_bin)
                    .arg("hello")
                    .stdout(Stdio::piped())
                    .spawn()
            })
            .collect::<Result<_, _>>()?;
        for child in children {
            let out = child.wait_with_output()?;
            ensure!(out.stdout == b"hello\n");
        }
        plain_batch.push(start.elapsed());
    }
    client.shutdown()?;
    let load_after = load_average();

    let ms = |d: f64| d / 1000.0;
    let p = |s: &[Duration], q| percentile_us(s, q);
    println!();
    println!(
        "{} cores; 1-minute load average {load_before} after the sequential figures, {load_after} at the end",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<46} {:>9} {:>9} {:>9}",
        "figure (ms)", "p50", "p95", "p99"
    );
    for (label, s) in [
        ("plain fork/exec: true", &plain_true),
        ("plain fork/exec: echo hello (output read)", &plain_echo),
        ("run_terminal_cmd: true", &tool_true),
        ("run_terminal_cmd: echo hello", &tool_echo),
        ("file_read of 6 bytes (protocol+policy+audit)", &read),
    ] {
        println!(
            "{label:<46} {:>9.3} {:>9.3} {:>9.3}",
            ms(p(s, 50)),
            ms(p(s, 95)),
            ms(p(s, 99))
        );
    }
    println!();
    println!(
        "overhead of run_terminal_cmd over plain fork/exec, p50: true {:.3} ms, echo {:.3} ms",
        ms(p(&tool_true, 50) - p(&plain_true, 50)),
        ms(p(&tool_echo, 50) - p(&plain_echo, 50)),
    );
    println!(
        "  of which the server's per-call cost without a command (file_read p50): {:.3} ms",
        ms(p(&read, 50))
    );
    println!(
        "{} commands at once (echo hello), wall time p50 / max over {} rounds: run_terminal_cmd {:.1} / {:.1} ms; plain spawns {:.1} / {:.1} ms",
        args.concurrent,
        args.rounds,
        ms(p(&tool_batch, 50)),
        ms(p(&tool_batch, 100)),
        ms(p(&plain_batch, 50)),
        ms(p(&plain_batch, 100)),
    );
    Ok(())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

fn which(name: &str) -> Result<PathBuf> {
    ["/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .with_context(|| format!("no {name} in /usr/bin or /bin"))
}

/// Spawn, wait, read the output: what a plain command runner does.
fn plain(program: &Path, args: &[&str]) -> Result<Duration> {
    let start = Instant::now();
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    let took = start.elapsed();
    ensure!(out.status.success(), "{} failed", program.display());
    Ok(took)
}

fn check_command(reply: &Value, stdout: &str) -> Result<()> {
    let result = &reply["result"];
    let out = &result["structuredContent"];
    if result["isError"] == true || out["exit_code"] != 0 || out["stdout"] != stdout {
        bail!("unexpected reply: {reply}");
    }
    Ok(())
}

fn percentile_us(samples: &[Duration], p: usize) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = (p * sorted.len()).div_ceil(100).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e6
}

/// A minimal MCP client over the server's stdio.
struct Client {
    child: Child,
    stdin: ChildStdin,
    replies: mpsc::Receiver<Value>,
    next_id: u64,
    timeout: Duration,
}

impl Client {
    fn spawn(arbiter: &Path, ws: &Path, timeout: Duration) -> Result<Self> {
        let mut child = Command::new(arbiter)
            .arg("serve")
            .arg("--workspace")
            .arg(ws)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", arbiter.display()))?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, replies) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v.get("id").is_some()
                    && tx.send(v).is_err()
                {
                    return;
                }
            }
        });
        let mut client = Self {
            child,
            stdin,
            replies,
            next_id: 1,
            timeout,
        };
        let init = client.request(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "bench-exec", "version": "0"}}),
        )?;
        ensure!(
            init.0["result"]["serverInfo"]["name"] == "arbiter",
            "not arbiter: {}",
            init.0
        );
        client.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))?;
        Ok(client)
    }

    fn send(&mut self, message: &Value) -> Result<()> {
        let mut line = serde_json::to_vec(message)?;
        line.push(b'\n');
        self.stdin.write_all(&line)?;
        self.stdin.flush()?;
        Ok(())
    }

    fn request(&mut self, method: &str, params: Value) -> Result<(Value, Duration)> {
        let id = self.next_id;
        self.next_id += 1;
        let message = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let start = Instant::now();
        self.send(&message)?;
        let reply = self
            .replies
            .recv_timeout(self.timeout)
            .context("no reply in time")?;
        let took = start.elapsed();
        ensure!(reply["id"] == id, "reply out of order: {reply}");
        Ok((reply, took))
    }

    fn call(&mut self, tool: &str, arguments: Value) -> Result<(Value, Duration)> {
        self.request("tools/call", json!({"name": tool, "arguments": arguments}))
    }

    /// `n` calls written back to back; the time until the last reply.
    fn batch(&mut self, n: usize, arguments: Value) -> Result<Duration> {
        let start = Instant::now();
        for _ in 0..n {
            let id = self.next_id;
            self.next_id += 1;
            self.send(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": "run_terminal_cmd", "arguments": arguments}}))?;
        }
        for _ in 0..n {
            let reply = self
                .replies
                .recv_timeout(self.timeout)
                .context("no reply in time")?;
            check_command(&reply, "hello\n")?;
        }
        Ok(start.elapsed())
    }

    fn shutdown(mut self) -> Result<()> {
        drop(self.stdin);
        let status = self.child.wait()?;
        ensure!(status.success(), "the server exited with {status}");
        Ok(())
    }
}
