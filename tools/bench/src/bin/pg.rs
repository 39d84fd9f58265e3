//! arbiter-bench-pg: the issue 10 figures. `task_submit` and audited
//! `file_read` throughput on PostgreSQL with 1, 2 and 4 server processes on
//! one database, each with a workspace of its own (as on separate hosts: the
//! audit chain is kept by the database, not by a journal file).
//!
//! For each process count: a fresh database (migrated once with
//! `arbiter db migrate`), then that many `arbiter serve --db … --workspace …`
//! stdio servers, each driven by its own client thread with `--window` calls
//! in flight. First every process submits its share of `--tasks` tasks, then
//! reads a 4 KiB file `--reads` times in all. At the end `arbiter audit
//! verify` walks the tenant's chain: the figures count only if it holds
//! every call's record.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail, ensure};
use arbiter_bench::stdio::Client;
use arbiter_bench::{arbiter_binary, log_tail, percentile_sorted_us};
use clap::Parser;
use serde_json::{Value, json};

/// Untimed calls per process before each part.
const WARMUP: usize = 20;

#[derive(Parser)]
#[command(
    about = "task_submit and audited file_read throughput on PostgreSQL with 1, 2 and 4 server processes (see tools/bench/README.md)"
)]
struct Args {
    /// arbiter binary to run [default: <target dir>/release/arbiter]
    #[arg(long)]
    arbiter: Option<PathBuf>,
    /// Application role's URL of the cluster [default: from tools/pg/setup.sh]
    #[arg(long, requires = "db_owner")]
    db: Option<String>,
    /// Owner role's URL (makes the databases, runs the migrations)
    #[arg(long, requires = "db")]
    db_owner: Option<String>,
    /// Process counts to measure, comma-separated
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    processes: Vec<usize>,
    /// Tasks submitted in all, split over the processes
    #[arg(long, default_value_t = 2000)]
    tasks: usize,
    /// Reads in all, split over the processes
    #[arg(long, default_value_t = 4000)]
    reads: usize,
    /// Calls in flight per process
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// Seconds to wait for any single reply
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

fn main() -> ExitCode {
    arbiter_bench::main_with(|| run(Args::parse()))
}

/// One process count's figures.
struct Row {
    processes: usize,
    submit: Part,
    read: Part,
    audit_records: u64,
}

/// Latencies (sorted) and wall time of one part, over every process.
struct Part {
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Part {
    fn per_sec(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
    fn ms(&self, p: usize) -> f64 {
        percentile_sorted_us(&self.latencies, p) / 1e3
    }
}

fn run(args: Args) -> Result<()> {
    ensure!(
        args.tasks > 0 && args.reads > 0 && args.window > 0,
        "--tasks, --reads and --window must be at least 1"
    );
    ensure!(
        args.processes.iter().all(|&n| n > 0),
        "--processes: counts of at least 1"
    );
    let program = arbiter_binary(args.arbiter.clone())?;
    let (app_url, owner_url) = match (&args.db, &args.db_owner) {
        (Some(app), Some(owner)) => (app.clone(), owner.clone()),
        _ => cluster()?,
    };
    let scratch = tempfile::Builder::new()
        .prefix("arbiter-bench-pg-")
        .tempdir()?;
    let mut rows = Vec::new();
    for &n in &args.processes {
        eprintln!("{n} process(es) ...");
        let dir = scratch.path().join(format!("p{n}"));
        fs::create_dir(&dir)?;
        let log = dir.join("server.stderr");
        let row = measure(&args, &program, &app_url, &owner_url, &dir, n).with_context(|| {
            format!(
                "the benchmark failed with {n} process(es); last lines of the servers' stderr:\n{}",
                log_tail(&log, 20)
            )
        })?;
        rows.push(row);
    }
    print(&args, &program, &rows);
    Ok(())
}

/// The local test cluster's URLs, started if needed by `tools/pg/setup.sh`.
fn cluster() -> Result<(String, String)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pg/setup.sh");
    let out = Command::new(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    ensure!(
        out.status.success(),
        "{} failed (or pass --db and --db-owner)",
        script.display()
    );
    let text = String::from_utf8(out.stdout)?;
    let var = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_owned)
            .with_context(|| format!("{} printed no {key}", script.display()))
    };
    Ok((
        var("ARBITER_DATABASE_URL")?,
        var("ARBITER_DATABASE_OWNER_URL")?,
    ))
}

/// `url` with its database name replaced.
fn with_database(url: &str, name: &str) -> Result<String> {
    let (base, _) = url.rsplit_once('/').context("a database URL")?;
    Ok(format!("{base}/{name}"))
}

/// A new, empty database on the cluster, made by the owner with `psql`
/// (named like the tests' databases, so tools/pg/setup.sh drops it after an hour).
fn fresh_database(owner_url: &str, processes: usize) -> Result<String> {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_secs();
    let name = format!("arbiter_t_{secs}_bench_{processes}_{}", std::process::id());
    let psql = fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|dirs| {
            dirs.filter_map(Result::ok)
                .map(|d| d.path().join("bin/psql"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| PathBuf::from("psql"));
    let status = Command::new(&psql)
        .arg(owner_url)
        .args(["-v", "ON_ERROR_STOP=1", "-qc"])
        .arg(format!("CREATE DATABASE {name}"))
        .status()
        .with_context(|| format!("running {}", psql.display()))?;
    ensure!(status.success(), "CREATE DATABASE {name} failed");
    Ok(name)
}

fn measure(
    args: &Args,
    program: &Path,
    app_url: &str,
    owner_url: &str,
    dir: &Path,
    processes: usize,
) -> Result<Row> {
    let name = fresh_database(owner_url, processes)?;
    let app = with_database(app_url, &name)?;
    let owner = with_database(owner_url, &name)?;
    let log = dir.join("server.stderr");
    let cli = |extra: &[&str], workspace: &Path| -> Result<String> {
        let out = Command::new(program)
            .args(extra)
            .args(["--db", &app, "--db-owner", &owner, "--workspace"])
            .arg(workspace)
            .output()?;
        if !out.status.success() {
            bail!(
                "arbiter {}: {}{}",
                extra.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    };
    let content = "0123456789abcdef".repeat(4 * 1024 / 16);
    let mut workspaces = Vec::new();
    for i in 0..processes {
        let ws = dir.join(format!("ws{i}"));
        fs::create_dir(&ws)?;
        fs::write(ws.join("r.txt"), &content)?;
        workspaces.push(ws.canonicalize()?);
    }
    cli(&["db", "migrate"], &workspaces[0])?;

    let serve = vec![
        "serve".into(),
        "--db".into(),
        app.clone().into(),
        "--workspace".into(),
    ];
    let mut clients = workspaces
        .iter()
        .enumerate()
        .map(|(i, ws)| {
            let (mut client, _) = Client::spawn(
                program.as_os_str(),
                &serve,
                ws,
                &log,
                Duration::from_secs(args.timeout),
            )?;
            client.initialize_as(&format!("bench-{i}"))?;
            Ok(client)
        })
        .collect::<Result<Vec<_>>>()?;

    let submit = |p: usize, i: usize| {
        json!({"name": "task_submit", "arguments": {
            "title": format!("Fix crash when the config file is empty ({p}-{i})"),
            "description": "Benchmark task: keep the change small and add a test.",
            "task_type": "bugfix",
        }})
        .to_string()
    };
    let read = |_: usize, _: usize| {
        json!({"name": "file_read", "arguments": {"target_file": "r.txt"}}).to_string()
    };
    let submit_part = together(&mut clients, args.tasks, args.window, submit)?;
    let read_part = together(&mut clients, args.reads, args.window, read)?;
    for client in clients {
        client.shutdown()?;
    }

    let report: Value =
        serde_json::from_str(&cli(&["audit", "verify", "--json"], &workspaces[0])?)?;
    ensure!(
        report["first_bad"].is_null(),
        "the audit chain does not verify: {report}"
    );
    let audit_records = report["records"].as_u64().unwrap_or(0);
    let calls = processes * (2 * WARMUP)
        + args.tasks.div_ceil(processes) * processes
        + args.reads.div_ceil(processes) * processes;
    ensure!(
        audit_records == calls as u64,
        "the chain holds {audit_records} records for {calls} calls"
    );
    Ok(Row {
        processes,
        submit: submit_part,
        read: read_part,
        audit_records,
    })
}

/// Every client makes its share of `total` calls at once (after untimed
/// warm-up calls), `window` in flight each.
fn together(
    clients: &mut [Client],
    total: usize,
    window: usize,
    params: impl Fn(usize, usize) -> String + Sync,
) -> Result<Part> {
    let per_client = total.div_ceil(clients.len());
    for (p, client) in clients.iter_mut().enumerate() {
        client.pipelined(WARMUP, Some(1), |i| params(p + 1000, i), |_, _| Ok(()))?;
    }
    let params = &params;
    let begin = Instant::now();
    let results: Vec<Result<Vec<Duration>>> = thread::scope(|scope| {
        let handles: Vec<_> = clients
            .iter_mut()
            .enumerate()
            .map(|(p, client)| {
                scope.spawn(move || {
                    let timed = client.pipelined(
                        per_client,
                        Some(window),
                        |i| params(p, i),
                        |_, _| Ok(()),
                    )?;
                    Ok(timed.latencies)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread panicked"))
            .collect()
    });
    let elapsed = begin.elapsed();
    let mut latencies = Vec::new();
    for result in results {
        latencies.extend(result?);
    }
    latencies.sort_unstable();
    Ok(Part { latencies, elapsed })
}

fn print(args: &Args, program: &Path, rows: &[Row]) {
    println!();
    println!("arbiter:   {}", program.display());
    println!(
        "workload:  {} task_submit (type bugfix, no agent: queued), then {} file_read of 4 KiB, \
         split over the processes, {} in flight per process; each process has its own \
         workspace, all share one fresh PostgreSQL database (tenant default)",
        args.tasks, args.reads, args.window
    );
    println!(
        "machine:   {} CPUs, shared by PostgreSQL, the servers and this client",
        thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!(
        "{:>9}  {:>10}  {:>21}  {:>10}  {:>21}  {:>13}",
        "processes",
        "submits/s",
        "submit p50/p95/p99 ms",
        "reads/s",
        "read p50/p95/p99 ms",
        "audit records"
    );
    println!("{}", "-".repeat(94));
    for r in rows {
        let pct = |p: &Part| format!("{:.1} / {:.1} / {:.1}", p.ms(50), p.ms(95), p.ms(99));
        println!(
            "{:>9}  {:>10.0}  {:>21}  {:>10.0}  {:>21}  {:>13}",
            r.processes,
            r.submit.per_sec(),
            pct(&r.submit),
            r.read.per_sec(),
            pct(&r.read),
            format!("{} ok", r.audit_records)
        );
    }
}
