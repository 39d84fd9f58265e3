//! arbiter-bench: figures for the arbiter MCP server, optionally beside the
//! reference `@modelcontextprotocol/server-filesystem`.
//!
//! The server is driven the way an MCP host drives it: as a child process
//! speaking newline-delimited JSON-RPC over stdin/stdout. The client here is
//! hand-written and minimal (no MCP SDK), so that what is timed is the server
//! and the pipe, not a client framework. Measured, per server:
//!
//! 1. **Cold start**: spawn to the `initialize` reply, over `--starts` fresh
//!    processes, each in a fresh empty workspace (median and p95). This is the
//!    delay a host sees before it can list tools.
//! 2. **Round-trip latency**: p50/p95/p99 of sequential `tools/call`s (one in
//!    flight at a time) reading a 4 KiB file, writing a 4 KiB file, and
//!    search-replacing a marker in a 4 KiB file (alternating A→B, B→A so every
//!    call succeeds). The clock runs from writing the request to reading the
//!    reply line; building requests and checking replies happen off the clock.
//! 3. **Pipelined throughput**: `--pipelined` reads written by one thread
//!    without waiting while the main thread collects the replies; calls/s.
//!    This shows whether the server overlaps requests and how much work each
//!    one costs when the pipe is never idle. One round of 5,000 reads is only
//!    ~0.1 s of arbiter's time, and on a two-vCPU machine one round measured
//!    42,700 to 62,000 calls/s for the same build, so there are
//!    `--pipelined-rounds` rounds: the first where it always was (before the
//!    memory reading, so that figure still follows the same calls), the rest
//!    once both servers have been read, alternating between them round by
//!    round so that a slow spell of the machine falls on both. The figure is
//!    the median round; the slowest is shown too.
//! 4. **Memory**: VmRSS (from /proc/PID/status) right after the handshake and
//!    after `--memory-calls` calls in the same process, plus the peak (VmHWM).
//!    Growth between the two hints at leaks or unbounded caches.
//!
//! Every reply is checked: a JSON-RPC error or a tool result with
//! `"isError": true` aborts the run, since timing failures is worthless. Each
//! tool is also checked once for effect (the read returns the file, the write
//! lands on disk, the edit changes the file) before it is timed.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use arbiter_bench::stdio::Client;
use arbiter_bench::{arbiter_binary, elide, log_tail, percentile_us, reply_text, target_dir};
use clap::Parser;
use serde_json::{Value, json};

/// Size of the files read, written and edited.
const FILE_SIZE: usize = 4096;
/// Untimed calls per tool before its latency is sampled (even, so the edit
/// alternation is back at its start when timing begins).
const WARMUP_CALLS: usize = 20;
/// Markers swapped by the edit workload; each occurs exactly once in e.txt.
const MARKER_A: &str = "ALPHA-7f3a-marker";
const MARKER_B: &str = "BRAVO-7f3a-marker";
/// npm package of the reference server, and its entry point under node_modules.
const REFERENCE_PACKAGE: &str = "@modelcontextprotocol/server-filesystem";
const REFERENCE_ENTRY: &str = "node_modules/@modelcontextprotocol/server-filesystem/dist/index.js";

#[derive(Parser)]
#[command(about = "Benchmark the arbiter MCP server over stdio (see tools/bench/README.md)")]
struct Args {
    /// arbiter binary to run [default: <target dir>/release/arbiter]
    #[arg(long)]
    arbiter: Option<PathBuf>,
    /// Sequential file_read calls to time
    #[arg(long, default_value_t = 2000)]
    iterations: usize,
    /// Sequential file_write and file_search_replace calls to time, each
    /// [default: a quarter of --iterations]
    #[arg(long)]
    write_iterations: Option<usize>,
    /// Processes spawned for the cold-start figure
    #[arg(long, default_value_t = 30)]
    starts: usize,
    /// Reads sent back to back in each round of the throughput figure
    #[arg(long, default_value_t = 5000)]
    pipelined: usize,
    /// Rounds of pipelined reads; the figure is their median
    #[arg(long, default_value_t = 5)]
    pipelined_rounds: usize,
    /// Calls made in one process before its resident memory is read
    #[arg(long, default_value_t = 10_000)]
    memory_calls: usize,
    /// Also run the reference server (@modelcontextprotocol/server-filesystem,
    /// installed with npm into <target dir>/bench-ref on first use)
    #[arg(long)]
    reference: bool,
    /// Seconds to wait for any single reply before declaring the server hung
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

fn main() -> ExitCode {
    arbiter_bench::main_with(|| run(Args::parse()))
}

fn run(args: Args) -> Result<()> {
    ensure!(args.iterations > 0, "--iterations must be at least 1");
    ensure!(args.starts > 0, "--starts must be at least 1");
    ensure!(args.pipelined > 0, "--pipelined must be at least 1");
    ensure!(
        args.pipelined_rounds > 0,
        "--pipelined-rounds must be at least 1"
    );
    let target = target_dir();
    let plan = Plan {
        starts: args.starts,
        reads: args.iterations,
        writes: args.write_iterations.unwrap_or(args.iterations / 4).max(1),
        pipelined: args.pipelined,
        pipelined_rounds: args.pipelined_rounds,
        memory_calls: args.memory_calls,
        timeout: Duration::from_secs(args.timeout),
    };

    let arbiter_bin = arbiter_binary(args.arbiter)?;
    let arbiter = Server {
        label: "arbiter",
        description: arbiter_bin.display().to_string(),
        program: arbiter_bin.into(),
        args: vec!["serve".into(), "--workspace".into()],
        dialect: Dialect::Arbiter,
    };
    let reference = if args.reference {
        Some(reference_server(&target.join("bench-ref"))?)
    } else {
        None
    };

    let scratch = tempfile::Builder::new()
        .prefix("arbiter-bench-")
        .tempdir()?;
    let mut arbiter_run = ServerRun::start(&arbiter, &plan, scratch.path())?;
    let mut reference_run = match &reference {
        Some(server) => Some(ServerRun::start(server, &plan, scratch.path())?),
        None => None,
    };
    // The later pipelined rounds alternate between the servers, so that a
    // slow spell of the machine (seconds long, at times) falls on both.
    if plan.pipelined_rounds > 1 {
        eprintln!(
            "pipelined throughput, rounds 2 to {}, alternating ...",
            plan.pipelined_rounds
        );
    }
    for _ in 1..plan.pipelined_rounds {
        let reference_pid = reference_run.as_ref().map(ServerRun::pid);
        arbiter_run.pipelined_round(reference_pid)?;
        if let Some(run) = &mut reference_run {
            run.pipelined_round(Some(arbiter_run.pid()))?;
        }
    }
    let arbiter_figures = arbiter_run.finish()?;
    let reference_figures = match reference_run {
        Some(run) => Some(run.finish()?),
        None => None,
    };

    println!();
    println!(
        "arbiter:   {} ({})",
        arbiter.description, arbiter_figures.server_info
    );
    if let (Some(server), Some(figures)) = (&reference, &reference_figures) {
        println!(
            "reference: {} ({})",
            server.description, figures.server_info
        );
    }
    println!(
        "workload:  {} cold starts; sequential {} reads, {} writes, {} edits of 4 KiB files \
         (after {} warm-up calls each); {} rounds of {} pipelined reads; memory after {} calls",
        plan.starts,
        plan.reads,
        plan.writes,
        plan.writes,
        WARMUP_CALLS,
        plan.pipelined_rounds,
        plan.pipelined,
        arbiter_figures.calls_at_rss,
    );
    println!(
        "machine:   {} CPUs; workspaces under {}",
        thread::available_parallelism().map_or(0, |n| n.get()),
        std::env::temp_dir().display()
    );
    println!(
        "note:      arbiter fsyncs every write (file + directory); the reference server does not"
    );
    println!();
    print_table(&arbiter_figures, reference_figures.as_ref());
    Ok(())
}

/// How much of each measurement to do.
struct Plan {
    starts: usize,
    reads: usize,
    writes: usize,
    pipelined: usize,
    pipelined_rounds: usize,
    memory_calls: usize,
    timeout: Duration,
}

/// A server under test: how to start it (`program args... WORKSPACE`) and
/// which tool dialect it speaks.
struct Server {
    label: &'static str,
    description: String,
    program: OsString,
    args: Vec<OsString>,
    dialect: Dialect,
}

#[derive(Clone, Copy)]
enum Dialect {
    /// arbiter: `file_read`, `file_write`, `file_search_replace`, workspace-relative paths.
    Arbiter,
    /// server-filesystem: `read_text_file`, `write_file`, `edit_file`, absolute paths.
    Reference,
}

/// Installs the reference server with npm on first use and describes how to run it.
fn reference_server(dir: &Path) -> Result<Server> {
    let entry = dir.join(REFERENCE_ENTRY);
    if !entry.is_file() {
        eprintln!("installing {REFERENCE_PACKAGE} into {} ...", dir.display());
        fs::create_dir_all(dir)?;
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(dir)
            .arg(REFERENCE_PACKAGE)
            .stdout(Stdio::from(io::stderr()))
            .status()
            .context("running npm (is Node.js installed?)")?;
        ensure!(
            status.success(),
            "npm install {REFERENCE_PACKAGE} failed: {status}"
        );
        ensure!(
            entry.is_file(),
            "npm install did not produce {}",
            entry.display()
        );
    }
    let package_json = dir
        .join("node_modules")
        .join(REFERENCE_PACKAGE)
        .join("package.json");
    let version = fs::read_to_string(&package_json)
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|v| v["version"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    let node_version = Command::new("node")
        .arg("--version")
        .output()
        .context("running node (is Node.js installed?)")?;
    Ok(Server {
        label: "reference",
        description: format!(
            "{REFERENCE_PACKAGE} {version} on node {}",
            String::from_utf8_lossy(&node_version.stdout).trim()
        ),
        program: "node".into(),
        args: vec![entry.into()],
        dialect: Dialect::Reference,
    })
}

// ---------------------------------------------------------------------------
// Measurements
// ---------------------------------------------------------------------------

/// Everything measured for one server.
struct Figures {
    server_info: String,
    start: Vec<Duration>,
    read: Vec<Duration>,
    write: Vec<Duration>,
    edit: Vec<Duration>,
    /// Calls/s of each pipelined round, slowest first.
    pipelined_rounds: Vec<f64>,
    rss_idle_kib: u64,
    rss_kib: u64,
    rss_peak_kib: u64,
    calls_at_rss: usize,
}

/// One server being measured: everything up to the memory reading is done
/// by [`ServerRun::start`], the later pipelined rounds one at a time.
struct ServerRun {
    label: &'static str,
    /// The server's stderr, whose tail is attached to any error.
    log: PathBuf,
    client: Client,
    read_call: String,
    pipelined: usize,
    figures: Figures,
    /// Kept until the end: the server's workspace.
    _workspace: tempfile::TempDir,
}

impl ServerRun {
    fn start(server: &Server, plan: &Plan, scratch: &Path) -> Result<Self> {
        let log = scratch.join(format!("{}.stderr", server.label));
        let (client, read_call, figures, workspace) =
            measure_up_to_memory(server, plan, scratch, &log)
                .with_context(|| failed(server.label, &log))?;
        Ok(Self {
            label: server.label,
            log,
            client,
            read_call,
            pipelined: plan.pipelined,
            figures,
            _workspace: workspace,
        })
    }

    fn pid(&self) -> u32 {
        self.client.pid()
    }

    /// One round, once `bystander` (the other server) is idle. Its CPU time
    /// during the round is shown: it should be none.
    ///
    /// Why wait: after its own round the reference server goes on working
    /// (node's garbage collector: 20 to 70 ms of CPU in the ~80 ms of one
    /// arbiter round, measured), and on a two-vCPU machine that is taken
    /// from the round being measured. Arbiter's audit indexer does the same
    /// after its rounds, during the reference's.
    fn pipelined_round(&mut self, bystander: Option<u32>) -> Result<()> {
        let before = bystander.map(|pid| (pid, wait_until_idle(pid)));
        let calls_per_sec = measure_pipelined(&mut self.client, &self.read_call, self.pipelined)
            .with_context(|| failed(self.label, &self.log))?;
        self.figures.pipelined_rounds.push(calls_per_sec);
        let meanwhile = before
            .map(|(pid, ns)| {
                let ms = proc_cpu_ns(pid).saturating_sub(ns) as f64 / 1e6;
                format!(" (the other server used {ms:.0} ms of CPU meanwhile)")
            })
            .unwrap_or_default();
        eprintln!("{}: {calls_per_sec:.0} calls/s{meanwhile}", self.label);
        Ok(())
    }

    fn finish(self) -> Result<Figures> {
        let Self {
            label,
            log,
            client,
            mut figures,
            ..
        } = self;
        client.shutdown().with_context(|| failed(label, &log))?;
        figures.pipelined_rounds.sort_by(f64::total_cmp);
        Ok(figures)
    }
}

/// Wait until process `pid` has used under 1 ms of CPU in 100 ms, for at
/// most 5 s (a server that never settles is measured against anyway; the
/// round's line shows how much CPU it took). Returns its CPU time then.
fn wait_until_idle(pid: u32) -> u64 {
    const WINDOW: Duration = Duration::from_millis(100);
    const MOST: Duration = Duration::from_secs(5);
    let began = std::time::Instant::now();
    let mut last = proc_cpu_ns(pid);
    while began.elapsed() < MOST {
        thread::sleep(WINDOW);
        let now = proc_cpu_ns(pid);
        if now.saturating_sub(last) < 1_000_000 {
            return now;
        }
        last = now;
    }
    last
}

/// CPU time every thread of `pid` has run, in nanoseconds
/// (/proc/PID/task/*/schedstat, finer than /proc/PID/stat's 10 ms ticks).
fn proc_cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|task| fs::read_to_string(task.ok()?.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn failed(label: &str, log: &Path) -> String {
    format!(
        "{label} failed; last lines of its stderr:\n{}",
        log_tail(log, 20)
    )
}

/// Cold starts, then in one process: latency, the first pipelined round and
/// the memory reading. Returns that process's client, its read call, the
/// figures so far and its workspace.
fn measure_up_to_memory(
    server: &Server,
    plan: &Plan,
    scratch: &Path,
    log: &Path,
) -> Result<(Client, String, Figures, tempfile::TempDir)> {
    eprintln!("{}: cold start x{} ...", server.label, plan.starts);
    let start = measure_cold_start(server, plan, scratch, log)?;

    let workspace_dir = tempfile::Builder::new().prefix("ws-").tempdir_in(scratch)?;
    let workspace = workspace_dir.path().canonicalize()?;
    let files = Files::create(&workspace)?;
    let (mut client, _) =
        Client::spawn(&server.program, &server.args, &workspace, log, plan.timeout)?;
    let init = client.initialize()?;
    let server_info = format!(
        "serverInfo {} {}, protocol {}",
        init["serverInfo"]["name"].as_str().unwrap_or("?"),
        init["serverInfo"]["version"].as_str().unwrap_or("?"),
        init["protocolVersion"].as_str().unwrap_or("?"),
    );
    let rss_idle_kib = client.proc_status_kib("VmRSS")?;

    let calls = Calls::new(&mut client, server.dialect, &workspace, &files)?;
    calls.verify(&mut client, &files)?;

    eprintln!(
        "{}: latency ({} reads, {} writes, {} edits) ...",
        server.label, plan.reads, plan.writes, plan.writes
    );
    let read = measure_latency(&mut client, std::slice::from_ref(&calls.read), plan.reads)?;
    let write = measure_latency(&mut client, &calls.write, plan.writes)?;
    let edit = measure_latency(&mut client, &calls.edit, plan.writes)?;

    eprintln!(
        "{}: pipelined throughput, round 1 of {} ({} reads) ...",
        server.label, plan.pipelined_rounds, plan.pipelined
    );
    let rounds = vec![measure_pipelined(&mut client, &calls.read, plan.pipelined)?];

    eprintln!(
        "{}: memory after {} calls ...",
        server.label, plan.memory_calls
    );
    while client.calls < plan.memory_calls {
        client.call(&calls.read)?;
    }
    let calls_at_rss = client.calls;
    let rss_kib = client.proc_status_kib("VmRSS")?;
    let rss_peak_kib = client.proc_status_kib("VmHWM")?;

    let figures = Figures {
        server_info,
        start,
        read,
        write,
        edit,
        pipelined_rounds: rounds,
        rss_idle_kib,
        rss_kib,
        rss_peak_kib,
        calls_at_rss,
    };
    Ok((client, calls.read, figures, workspace_dir))
}

/// Spawn-to-`initialize`-reply time of `plan.starts` fresh processes, each in
/// its own new, empty workspace, after one untimed start: a start whose
/// program the VM had evicted from the page cache read it from disk (24 ms
/// for arbiter instead of 8; 50–120 ms for the first start of a run when the
/// disk was busy), which measures the disk, not the server. Every start is
/// printed to stderr, the untimed one too.
fn measure_cold_start(
    server: &Server,
    plan: &Plan,
    scratch: &Path,
    log: &Path,
) -> Result<Vec<Duration>> {
    let untimed = start_once(server, plan, scratch, log)?;
    eprintln!(
        "{}: cold start (untimed, loads the page cache): {:.1} ms",
        server.label,
        untimed.as_secs_f64() * 1e3
    );
    let mut samples = Vec::with_capacity(plan.starts);
    for _ in 0..plan.starts {
        let took = start_once(server, plan, scratch, log)?;
        samples.push(took);
        eprintln!(
            "{}: cold start {}: {:.1} ms",
            server.label,
            samples.len(),
            took.as_secs_f64() * 1e3
        );
    }
    Ok(samples)
}

/// Spawn `server` in a new, empty workspace; the time to its `initialize` reply.
fn start_once(server: &Server, plan: &Plan, scratch: &Path, log: &Path) -> Result<Duration> {
    let workspace = tempfile::Builder::new()
        .prefix("cold-")
        .tempdir_in(scratch)?;
    let (mut client, spawned_at) = Client::spawn(
        &server.program,
        &server.args,
        &workspace.path().canonicalize()?,
        log,
        plan.timeout,
    )?;
    client.initialize()?;
    let took = client.last_reply_at.duration_since(spawned_at);
    client.shutdown()?;
    Ok(took)
}

/// Round-trip time of `n` sequential calls, cycling through `calls`, after
/// `WARMUP_CALLS` untimed ones.
fn measure_latency(client: &mut Client, calls: &[String], n: usize) -> Result<Vec<Duration>> {
    for call in calls.iter().cycle().take(WARMUP_CALLS) {
        client.call(call)?;
    }
    let mut samples = Vec::with_capacity(n);
    for call in calls.iter().cycle().take(n) {
        let (_, rtt) = client.call(call)?;
        samples.push(rtt);
    }
    Ok(samples)
}

/// Calls per second for `n` identical calls written back to back by a writer
/// thread while this thread reads and checks the replies, in any order.
fn measure_pipelined(client: &mut Client, call: &str, n: usize) -> Result<f64> {
    let run = client.pipelined_checked(n, None, |_| call.to_owned())?;
    Ok(run.calls_per_sec())
}

// ---------------------------------------------------------------------------
// Workload
// ---------------------------------------------------------------------------

/// The files in the benchmark workspace and their expected contents.
struct Files {
    /// r.txt: 4 KiB, read by every read call.
    read: String,
    /// The two 4 KiB contents written alternately to w.txt.
    write: [String; 2],
}

impl Files {
    fn create(workspace: &Path) -> Result<Self> {
        let read = text("r", FILE_SIZE);
        fs::write(workspace.join("r.txt"), &read)?;
        let mut edit = text("e", FILE_SIZE);
        let middle = edit.len() / 2;
        let line_start = edit[..middle].rfind('\n').map_or(0, |i| i + 1);
        edit.replace_range(line_start..line_start + MARKER_A.len(), MARKER_A);
        fs::write(workspace.join("e.txt"), &edit)?;
        Ok(Self {
            read,
            write: [text("w0", FILE_SIZE), text("w1", FILE_SIZE)],
        })
    }
}

/// `size` bytes of 64-byte ASCII lines, each naming `tag` and its number.
fn text(tag: &str, size: usize) -> String {
    const FILLER: &str = "the quick brown fox jumps over the lazy dog; pack my box with five dozen";
    (0..size / 64)
        .map(|i| format!("{:<63.63}\n", format!("{tag} line {i:04}: {FILLER}")))
        .collect()
}

/// Pre-serialised `tools/call` params for each workload, in the server's dialect.
struct Calls {
    read: String,
    /// Write w0, then w1, alternately.
    write: [String; 2],
    /// Replace A with B, then B with A, alternately.
    edit: [String; 2],
}

impl Calls {
    /// Builds the calls, first checking with `tools/list` that the server has the tools.
    fn new(client: &mut Client, dialect: Dialect, workspace: &Path, files: &Files) -> Result<Self> {
        let listed = client.request("tools/list", "{}")?;
        let names: Vec<&str> = listed["result"]["tools"]
            .as_array()
            .context("tools/list reply has no tools array")?
            .iter()
            .filter_map(|tool| tool["name"].as_str())
            .collect();
        let has = |name: &str| names.contains(&name);
        let params = |name: &str, arguments: Value| {
            json!({ "name": name, "arguments": arguments }).to_string()
        };
        let calls = match dialect {
            Dialect::Arbiter => {
                for tool in ["file_read", "file_write", "file_search_replace"] {
                    ensure!(
                        has(tool),
                        "server does not list tool {tool}; it lists {names:?}"
                    );
                }
                let write = |contents: &str| {
                    params(
                        "file_write",
                        json!({ "file_path": "w.txt", "contents": contents }),
                    )
                };
                let edit = |old: &str, new: &str| {
                    params(
                        "file_search_replace",
                        json!({ "file_path": "e.txt", "old_string": old, "new_string": new }),
                    )
                };
                Self {
                    read: params("file_read", json!({ "target_file": "r.txt" })),
                    write: [write(&files.write[0]), write(&files.write[1])],
                    edit: [edit(MARKER_A, MARKER_B), edit(MARKER_B, MARKER_A)],
                }
            }
            Dialect::Reference => {
                let read_tool = if has("read_text_file") {
                    "read_text_file"
                } else {
                    "read_file"
                };
                for tool in [read_tool, "write_file", "edit_file"] {
                    ensure!(
                        has(tool),
                        "server does not list tool {tool}; it lists {names:?}"
                    );
                }
                let path = |name: &str| {
                    workspace
                        .join(name)
                        .to_str()
                        .expect("UTF-8 temp path")
                        .to_owned()
                };
                let write = |content: &str| {
                    params(
                        "write_file",
                        json!({ "path": path("w.txt"), "content": content }),
                    )
                };
                let edit = |old: &str, new: &str| {
                    params(
                        "edit_file",
                        json!({ "path": path("e.txt"), "edits": [{ "oldText": old, "newText": new }] }),
                    )
                };
                Self {
                    read: params(read_tool, json!({ "path": path("r.txt") })),
                    write: [write(&files.write[0]), write(&files.write[1])],
                    edit: [edit(MARKER_A, MARKER_B), edit(MARKER_B, MARKER_A)],
                }
            }
        };
        Ok(calls)
    }

    /// Calls each tool once and checks that it did what it says, so that the
    /// timings below are of real work. Leaves e.txt as it found it.
    fn verify(&self, client: &mut Client, files: &Files) -> Result<()> {
        let workspace = client.workspace.clone();
        let (reply, _) = client.call(&self.read)?;
        let returned = reply_text(&reply);
        let last_line = files
            .read
            .lines()
            .last()
            .expect("non-empty file")
            .trim_end();
        ensure!(
            returned.contains(last_line),
            "read of r.txt did not return its last line {last_line:?}; reply: {}",
            elide(&reply.to_string())
        );

        client.call(&self.write[0])?;
        let on_disk = fs::read_to_string(workspace.join("w.txt")).context("w.txt after write")?;
        ensure!(
            on_disk == files.write[0],
            "w.txt does not hold what was written"
        );

        for (call, expected, gone) in [
            (&self.edit[0], MARKER_B, MARKER_A),
            (&self.edit[1], MARKER_A, MARKER_B),
        ] {
            client.call(call)?;
            let on_disk =
                fs::read_to_string(workspace.join("e.txt")).context("e.txt after edit")?;
            ensure!(
                on_disk.contains(expected) && !on_disk.contains(gone),
                "e.txt should contain {expected} and not {gone} after the edit"
            );
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

/// Which way a figure is better, for the ratio column.
#[derive(Clone, Copy)]
enum Better {
    Lower,
    Higher,
}

/// One line of the table for one server.
struct Row {
    label: String,
    value: f64,
    decimals: usize,
    better: Better,
}

impl Row {
    fn new(label: impl Into<String>, value: f64, decimals: usize, better: Better) -> Self {
        Self {
            label: label.into(),
            value,
            decimals,
            better,
        }
    }
}

fn rows(f: &Figures) -> Vec<Row> {
    let mib = |kib: u64| kib as f64 / 1024.0;
    let mut rows = vec![
        Row::new(
            "cold start, median (ms)",
            percentile_us(&f.start, 50) / 1e3,
            1,
            Better::Lower,
        ),
        Row::new(
            "cold start, p95 (ms)",
            percentile_us(&f.start, 95) / 1e3,
            1,
            Better::Lower,
        ),
    ];
    for (name, samples) in [
        ("read 4 KiB", &f.read),
        ("write 4 KiB", &f.write),
        ("edit 4 KiB", &f.edit),
    ] {
        for p in [50, 95, 99] {
            rows.push(Row::new(
                format!("{name}, p{p} (µs)"),
                percentile_us(samples, p),
                0,
                Better::Lower,
            ));
        }
    }
    let rounds = &f.pipelined_rounds;
    rows.push(Row::new(
        format!("pipelined reads, median of {} (calls/s)", rounds.len()),
        median_sorted(rounds),
        0,
        Better::Higher,
    ));
    rows.push(Row::new(
        "pipelined reads, slowest (calls/s)",
        rounds[0],
        0,
        Better::Higher,
    ));
    rows.push(Row::new(
        "RSS after handshake (MiB)",
        mib(f.rss_idle_kib),
        1,
        Better::Lower,
    ));
    rows.push(Row::new(
        format!("RSS after {} calls (MiB)", f.calls_at_rss),
        mib(f.rss_kib),
        1,
        Better::Lower,
    ));
    rows.push(Row::new(
        "peak RSS (MiB)",
        mib(f.rss_peak_kib),
        1,
        Better::Lower,
    ));
    rows
}

/// The median of `sorted` (not empty).
fn median_sorted(sorted: &[f64]) -> f64 {
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// Prints arbiter's figures and, if given, the reference's and their ratio.
fn print_table(arbiter: &Figures, reference: Option<&Figures>) {
    let arbiter_rows = rows(arbiter);
    let reference_rows = reference.map(rows);
    let width = arbiter_rows
        .iter()
        .map(|row| row.label.chars().count())
        .max()
        .unwrap_or(0);

    let mut header = format!("{:<width$}  {:>12}", "metric", "arbiter");
    if reference.is_some() {
        write!(header, "  {:>12}  {:>8}", "reference", "ratio").unwrap();
    }
    println!("{header}");
    println!("{}", "-".repeat(header.chars().count()));
    for (i, row) in arbiter_rows.iter().enumerate() {
        let mut line = format!("{:<width$}  {:>12.*}", row.label, row.decimals, row.value);
        if let Some(reference) = reference_rows.as_ref().map(|r| r[i].value) {
            let ratio = match row.better {
                Better::Lower => reference / row.value,
                Better::Higher => row.value / reference,
            };
            write!(line, "  {:>12.*}  {:>7.2}x", row.decimals, reference, ratio).unwrap();
        }
        println!("{line}");
    }
    if reference.is_some() {
        println!();
        println!(
            "ratio: reference/arbiter for times and memory, arbiter/reference for throughput; \
             above 1 means arbiter is better"
        );
    }
}
