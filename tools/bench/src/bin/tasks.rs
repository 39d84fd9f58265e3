//! arbiter-bench-tasks: the issue 8 figures. `task_submit` throughput and
//! latency on SQLite, through the stdio MCP client of this crate against
//! `arbiter serve`, first with no agent registered (every task is queued:
//! routing has nothing to weigh) and then with `--agents` agents registered
//! through `agent_register`, each over its own connection, since an agent
//! registers only itself (its MCP client name). The difference between the
//! two runs is what routing over that many candidates costs per task.
//!
//! Each run has three parts: sequential submits (one in flight: latency),
//! pipelined submits from one client (`--window` in flight: throughput of one
//! connection), and `--clients` server processes on the same workspace
//! submitting at once (several agents or CI jobs, each with its own stdio
//! server, sharing the store). Tasks carry no type, so detection runs too.

use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use arbiter_bench::stdio::Client;
use arbiter_bench::{arbiter_binary, elide, log_tail, percentile_sorted_us};
use clap::Parser;
use serde_json::{Value, json};

/// Untimed submits before each run.
const WARMUP: usize = 50;
/// Task types an agent registers for: all of them, so every agent is a candidate.
const TASK_TYPES: [&str; 7] = [
    "feature", "bugfix", "refactor", "test", "docs", "research", "ops",
];
/// Titles cycled through (with a number), so detection sees several types.
const TITLES: [&str; 7] = [
    "Add a retry option to the HTTP client",
    "Fix crash when the config file is empty",
    "Refactor the parser into smaller modules",
    "Add tests for the token revocation path",
    "Document the policy file format",
    "Research faster JSON parsers",
    "Deploy the metrics dashboard to staging",
];

#[derive(Parser)]
#[command(
    about = "task_submit throughput and latency, and routing over registered agents, over stdio (see tools/bench/README.md)"
)]
struct Args {
    /// arbiter binary to run [default: <target dir>/release/arbiter]
    #[arg(long)]
    arbiter: Option<PathBuf>,
    /// Tasks submitted in each part of each run
    #[arg(long, default_value_t = 2000)]
    tasks: usize,
    /// Agents registered for the second run
    #[arg(long, default_value_t = 100)]
    agents: usize,
    /// Submits in flight on one connection in the pipelined part
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// Server processes submitting at once in the last part (each with --window in flight)
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Seconds to wait for any single reply
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

fn main() -> ExitCode {
    arbiter_bench::main_with(|| run(Args::parse()))
}

/// How to start servers on the benchmark's workspace.
struct Setup {
    program: PathBuf,
    workspace: PathBuf,
    log: PathBuf,
    timeout: Duration,
}

impl Setup {
    /// A new `arbiter serve` on the workspace, initialised as client `name`.
    fn connect(&self, name: &str) -> Result<Client> {
        let args = ["serve".into(), "--workspace".into()];
        let (mut client, _) = Client::spawn(
            self.program.as_os_str(),
            &args,
            &self.workspace,
            &self.log,
            self.timeout,
        )?;
        client.initialize_as(name)?;
        Ok(client)
    }
}

fn run(args: Args) -> Result<()> {
    ensure!(
        args.tasks > 0 && args.window > 0 && args.clients > 0,
        "--tasks, --window and --clients must be at least 1"
    );
    let scratch = tempfile::Builder::new()
        .prefix("arbiter-bench-tasks-")
        .tempdir()?;
    let workspace = scratch.path().join("ws");
    fs::create_dir(&workspace)?;
    let setup = Setup {
        program: arbiter_binary(args.arbiter.clone())?,
        workspace: workspace.canonicalize()?,
        log: scratch.path().join("server.stderr"),
        timeout: Duration::from_secs(args.timeout),
    };
    let result = measure(&args, &setup);
    let figures = result.with_context(|| {
        format!(
            "the benchmark failed; last lines of the servers' stderr:\n{}",
            log_tail(&setup.log, 20)
        )
    })?;
    print(&args, &setup, &figures);
    Ok(())
}

struct Figures {
    without_agents: RunFigures,
    registration: Duration,
    with_agents: RunFigures,
    db_bytes: u64,
}

/// One run: sequential, pipelined, several clients.
struct RunFigures {
    sequential: Part,
    pipelined: Part,
    clients: Part,
    /// Distinct agents chosen across the run, and tasks queued (no agent chosen).
    chosen: usize,
    queued: usize,
    /// Candidates the router weighed for the last task.
    candidates: usize,
}

/// Latencies (sorted) and wall time of one part.
struct Part {
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Part {
    fn new(mut latencies: Vec<Duration>, elapsed: Duration) -> Self {
        latencies.sort_unstable();
        Self { latencies, elapsed }
    }
    fn per_sec(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
    fn ms(&self, p: usize) -> f64 {
        percentile_sorted_us(&self.latencies, p) / 1e3
    }
}

fn measure(args: &Args, setup: &Setup) -> Result<Figures> {
    eprintln!("submitting without agents ...");
    let without_agents = submit_run(args, setup, "A")?;

    eprintln!("registering {} agents ...", args.agents);
    let begin = Instant::now();
    for i in 0..args.agents {
        let mut agent = setup.connect(&format!("agent-{i:03}"))?;
        let params = json!({"name": "agent_register", "arguments": {
            "capabilities": {"task_types": TASK_TYPES, "languages": ["rust", "python"], "tools": ["cargo"]},
            "max_concurrent_tasks": 100,
        }});
        agent.call(&params.to_string())?;
        agent.shutdown()?;
    }
    let registration = begin.elapsed();

    eprintln!("submitting with {} agents ...", args.agents);
    let with_agents = submit_run(args, setup, "B")?;
    let db_bytes = fs::metadata(setup.workspace.join(".arbiter/arbiter.db")).map_or(0, |m| m.len());
    Ok(Figures {
        without_agents,
        registration,
        with_agents,
        db_bytes,
    })
}

/// `task_submit` params for task `i` of run `run`.
fn submit_params(run: &str, client: usize, i: usize) -> String {
    let title = TITLES[i % TITLES.len()];
    json!({"name": "task_submit", "arguments": {
        "title": format!("{title} ({run}{client}-{i})"),
        "description": format!("{title}. Benchmark task {i} of client {client} in run {run}: \
            keep the change small, add a test, and say how it was checked."),
    }})
    .to_string()
}

/// Tally of routing outcomes seen in replies.
#[derive(Default)]
struct Routing {
    chosen: std::collections::BTreeSet<String>,
    queued: usize,
    candidates: usize,
}

impl Routing {
    fn note(&mut self, reply: &Value) -> Result<()> {
        let out = &reply["result"]["structuredContent"];
        let assigned = out["assigned_to"]
            .as_str()
            .with_context(|| format!("no assigned_to in {}", elide(&reply.to_string())))?;
        if assigned == "queued" {
            self.queued += 1;
        } else {
            self.chosen.insert(assigned.to_owned());
        }
        // The reply lists the best few and counts every one weighed.
        let routing = &out["routing"];
        self.candidates = match (
            routing["eligible_count"].as_u64(),
            routing["excluded_count"].as_u64(),
        ) {
            (Some(e), Some(x)) => (e + x) as usize,
            _ => routing["candidates"].as_array().map_or(0, Vec::len),
        };
        Ok(())
    }
}

fn submit_run(args: &Args, setup: &Setup, run: &str) -> Result<RunFigures> {
    let mut routing = Routing::default();
    let mut client = setup.connect("bench-submitter")?;
    client.pipelined(
        WARMUP,
        Some(1),
        |i| submit_params(run, 99, i),
        |_, _| Ok(()),
    )?;

    let timed = client.pipelined(
        args.tasks,
        Some(1),
        |i| submit_params(run, 0, i),
        |_, reply| routing.note(reply),
    )?;
    let sequential = Part::new(timed.latencies, timed.elapsed);
    let timed = client.pipelined(
        args.tasks,
        Some(args.window),
        |i| submit_params(run, 1, i),
        |_, reply| routing.note(reply),
    )?;
    let pipelined = Part::new(timed.latencies, timed.elapsed);
    client.shutdown()?;

    // Several processes at once, each its own connection and store handle.
    let per_client = args.tasks.div_ceil(args.clients);
    let mut clients = (0..args.clients)
        .map(|c| {
            let mut client = setup.connect(&format!("bench-submitter-{c}"))?;
            client.pipelined(
                WARMUP / 5,
                Some(1),
                |i| submit_params(run, 90 + c, i),
                |_, _| Ok(()),
            )?;
            Ok(client)
        })
        .collect::<Result<Vec<_>>>()?;
    let begin = Instant::now();
    let results: Vec<Result<(Vec<Duration>, Routing)>> = thread::scope(|scope| {
        let handles: Vec<_> = clients
            .iter_mut()
            .enumerate()
            .map(|(c, client)| {
                scope.spawn(move || {
                    let mut routing = Routing::default();
                    let timed = client.pipelined(
                        per_client,
                        Some(args.window),
                        |i| submit_params(run, 2 + c, i),
                        |_, reply| routing.note(reply),
                    )?;
                    Ok((timed.latencies, routing))
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
        let (samples, theirs) = result?;
        latencies.extend(samples);
        routing.chosen.extend(theirs.chosen);
        routing.queued += theirs.queued;
    }
    for client in clients {
        client.shutdown()?;
    }
    Ok(RunFigures {
        sequential,
        pipelined,
        clients: Part::new(latencies, elapsed),
        chosen: routing.chosen.len(),
        queued: routing.queued,
        candidates: routing.candidates,
    })
}

fn print(args: &Args, setup: &Setup, f: &Figures) {
    println!();
    println!("arbiter:   {}", setup.program.display());
    println!(
        "workload:  task_submit without a type (detected), {} tasks per part; SQLite store {} ({:.1} MiB at the end)",
        args.tasks,
        setup.workspace.join(".arbiter/arbiter.db").display(),
        f.db_bytes as f64 / (1024.0 * 1024.0)
    );
    println!(
        "machine:   {} CPUs, shared by the servers and this client",
        thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "agents:    {} registered with agent_register (one connection each) in {:.2} s",
        args.agents,
        f.registration.as_secs_f64()
    );
    println!();
    let (without, with) = (&f.without_agents, &f.with_agents);
    println!(
        "{:<44}  {:>12}  {:>12}",
        "metric",
        "0 agents",
        format!("{} agents", args.agents)
    );
    println!("{}", "-".repeat(72));
    let row = |label: String, value: &dyn Fn(&RunFigures) -> String| {
        println!("{label:<44}  {:>12}  {:>12}", value(without), value(with));
    };
    /// A part of both runs, by name.
    type PartOf = fn(&RunFigures) -> &Part;
    let parts: [(String, PartOf); 3] = [
        ("sequential (1 in flight)".into(), |r| &r.sequential),
        (format!("pipelined ({} in flight)", args.window), |r| {
            &r.pipelined
        }),
        (
            format!("{} clients ({} in flight each)", args.clients, args.window),
            |r| &r.clients,
        ),
    ];
    for (name, part) in parts {
        row(format!("{name}: tasks/s"), &|r| {
            format!("{:.0}", part(r).per_sec())
        });
        for p in [50, 95, 99] {
            row(format!("{name}: p{p} (ms)"), &|r| {
                format!("{:.2}", part(r).ms(p))
            });
        }
    }
    row("tasks routed to an agent / queued".into(), &|r| {
        let total =
            r.sequential.latencies.len() + r.pipelined.latencies.len() + r.clients.latencies.len();
        format!("{}/{}", total - r.queued, r.queued)
    });
    row("distinct agents chosen".into(), &|r| r.chosen.to_string());
    row("candidates weighed per task".into(), &|r| {
        r.candidates.to_string()
    });
    let routing_ms = f.with_agents.sequential.ms(50) - f.without_agents.sequential.ms(50);
    println!();
    println!(
        "routing over {} agents adds {routing_ms:.3} ms to a sequential task_submit (p50 difference)",
        args.agents
    );
    let seq = &f.with_agents.sequential;
    let best = [&f.with_agents.pipelined, &f.with_agents.clients]
        .into_iter()
        .map(Part::per_sec)
        .fold(seq.per_sec(), f64::max);
    println!(
        "targets (issue 8), with {} agents: at least 1,000 tasks/s (best part: {best:.0}), p95 under 5 ms (sequential: {:.2} ms): {}",
        args.agents,
        seq.ms(95),
        if best >= 1000.0 && seq.ms(95) < 5.0 {
            "met"
        } else {
            "NOT met"
        }
    );
}
