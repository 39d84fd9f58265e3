//! arbiter-bench-grep: how long `grep_search` takes over a large tree,
//! through the real server, beside `rg` run as a process on the same tree.
//!
//! The tree is the Rust standard library's source when the toolchain has it
//! (`~/.rustup/toolchains/*/lib/rustlib/src/rust/library`), a tree given with
//! `--tree`, or else a generated one. It is copied into a temporary workspace
//! first, because the server keeps its state (`.arbiter/`) in the workspace.
//!
//! Each search is timed end to end as a client sees it: from writing the
//! `tools/call` line to reading its reply (the server walks, searches, writes
//! its audit record, then answers). `rg` is timed from spawn to exit with its
//! output read to the end. Both search the same tree with the same query
//! (literal, then regex), honouring the same ignore files; medians of
//! `--runs` runs after one warm-up run each (the page cache is warm for both).
//! `grep_search` is given a `max_results` above the match count so that both
//! walk the whole tree. This prints figures; it asserts nothing.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser)]
#[command(about = "Time grep_search over a large tree against rg (see tools/bench-grep/README.md)")]
struct Args {
    /// arbiter binary to run [default: <target dir>/release/arbiter]
    #[arg(long)]
    arbiter: Option<PathBuf>,
    /// Tree to search (copied to a temporary workspace) [default: the Rust
    /// standard library source if installed, else a generated tree]
    #[arg(long)]
    tree: Option<PathBuf>,
    /// Files in the generated tree
    #[arg(long, default_value_t = 20_000)]
    files: usize,
    /// Timed runs of each search (after one warm-up run)
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// The literal searched for [default: depends on the tree]
    #[arg(long)]
    literal: Option<String>,
    /// The regular expression searched for [default: depends on the tree]
    #[arg(long)]
    regex: Option<String>,
}

/// A marker the generated tree holds in a few files.
const GENERATED_LITERAL: &str = "needle_in_the_haystack";
const GENERATED_REGEX: &str = r"fn\s+needle_[a-z]+_\d+\(";
const STD_LITERAL: &str = "PhantomPinned";
const STD_REGEX: &str = r"fn\s+try_[a-z]+_in\(";

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.runs > 0, "--runs must be at least 1");
    let arbiter = args
        .arbiter
        .clone()
        .unwrap_or_else(|| arbiter_bench::target_dir().join("release/arbiter"));
    ensure!(
        arbiter.is_file(),
        "{} not found: build it with `cargo build --release` (or pass --arbiter PATH)",
        arbiter.display()
    );
    let scratch = tempfile::Builder::new()
        .prefix("arbiter-bench-grep-")
        .tempdir()?;
    let ws = scratch.path().join("ws");
    let source = args.tree.clone().or_else(std_library_source);
    let (literal, regex, what) = match &source {
        Some(tree) => {
            eprintln!("copying {} ...", tree.display());
            copy_tree(tree, &ws)?;
            (
                args.literal.clone().unwrap_or_else(|| STD_LITERAL.into()),
                args.regex.clone().unwrap_or_else(|| STD_REGEX.into()),
                tree.display().to_string(),
            )
        }
        None => {
            eprintln!(
                "no Rust library source found; generating {} files ...",
                args.files
            );
            generate_tree(&ws, args.files)?;
            (
                args.literal
                    .clone()
                    .unwrap_or_else(|| GENERATED_LITERAL.into()),
                args.regex.clone().unwrap_or_else(|| GENERATED_REGEX.into()),
                format!("generated: {} files of ~4 KiB", args.files),
            )
        }
    };
    let (files, bytes) = tree_size(&ws)?;
    println!("tree:    {what}");
    println!(
        "         {files} files, {:.1} MiB (copied to {})",
        bytes as f64 / 1048576.0,
        ws.display()
    );
    println!(
        "machine: {} CPUs; medians of {} runs after 1 warm-up",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.runs
    );

    let mut server = Server::start(&arbiter, &ws)?;
    let rg = which("rg");
    println!();
    println!(
        "{:<34} {:>12} {:>9} {:>12} {:>8}",
        "search", "grep_search", "matches", "rg", "ratio"
    );
    for (label, query, fixed) in [("literal", &literal, true), ("regex", &regex, false)] {
        let call = json!({"query": query, "fixed_string": fixed, "max_results": 500});
        let mut found = 0;
        let mut truncated = false;
        let times = time_runs(args.runs, || {
            let out = server.call("grep_search", &call)?;
            found = out["matches"].as_array().map_or(0, Vec::len);
            truncated = out["truncated"] == true;
            Ok(())
        })?;
        let ours = median(times);
        let mut rg_cell = "not installed".to_string();
        let mut ratio = "-".to_string();
        if let Some(rg) = &rg {
            let mut rg_count = 0;
            let times = time_runs(args.runs, || {
                rg_count = run_rg(rg, &ws, query, fixed)?;
                Ok(())
            })?;
            let theirs = median(times);
            rg_cell = format!("{:.1} ms", ms(theirs));
            ratio = format!("{:.2}x", ms(ours) / ms(theirs));
            if rg_count != found {
                eprintln!("note: {label}: rg found {rg_count} lines, grep_search {found}");
            }
        }
        let shown = format!("{label} `{}`", elide(query, 24));
        println!(
            "{shown:<34} {:>9.1} ms {:>8}{} {rg_cell:>12} {ratio:>8}",
            ms(ours),
            found,
            if truncated { "+" } else { " " },
        );
    }
    if rg.is_none() {
        println!();
        println!("rg (ripgrep) is not installed on this machine: the comparison was skipped.");
    }
    let grep_times = which("grep").map(|grep| {
        time_runs(args.runs, || {
            let status = Command::new(&grep)
                .args(["-rnF", "--", &literal])
                .arg(&ws)
                .stdout(Stdio::null())
                .status()?;
            ensure!(
                status.code().is_some_and(|c| c <= 1),
                "grep failed: {status}"
            );
            Ok(())
        })
    });
    if let Some(times) = grep_times {
        println!(
            "for scale: GNU grep -rnF (one thread, no ignore files, also reads .arbiter/): literal {:.1} ms",
            ms(median(times?))
        );
    }
    Ok(())
}

fn std_library_source() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let toolchains = Path::new(&home).join(".rustup/toolchains");
    let mut found: Vec<PathBuf> = std::fs::read_dir(toolchains)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("lib/rustlib/src/rust/library"))
        .filter(|p| p.is_dir())
        .collect();
    found.sort();
    found.pop()
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status()?;
    ensure!(status.success(), "cp -a {} failed", from.display());
    Ok(())
}

/// Source-like files in nested directories; a few hold the markers.
fn generate_tree(ws: &Path, files: usize) -> Result<()> {
    let words = [
        "let", "mut", "value", "return", "match", "self", "config", "result", "iter", "map",
        "collect", "into", "from", "buffer", "len", "index", "parse", "error", "unwrap", "clone",
    ];
    let mut state: u64 = 0x9e3779b97f4a7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..files {
        let dir = ws.join(format!("m{:02}/s{:02}", i % 50, (i / 50) % 20));
        if i < 1000 {
            std::fs::create_dir_all(&dir)?;
        }
        let mut text = String::with_capacity(4300);
        let mut line_no = 0;
        while text.len() < 4096 {
            line_no += 1;
            text.push_str("    ");
            for _ in 0..(4 + next() % 8) {
                text.push_str(words[(next() % words.len() as u64) as usize]);
                text.push(' ');
            }
            if i % 200 == 7 && line_no == 20 {
                text.push_str(&format!("fn needle_marker_{i}() {{ {GENERATED_LITERAL} }}"));
            }
            text.push('\n');
        }
        std::fs::write(dir.join(format!("f{i}.rs")), text)?;
    }
    Ok(())
}

fn tree_size(ws: &Path) -> Result<(u64, u64)> {
    let (mut files, mut bytes) = (0, 0);
    let mut stack = vec![ws.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let ty = entry.file_type()?;
            if ty.is_dir() {
                stack.push(entry.path());
            } else if ty.is_file() {
                files += 1;
                bytes += entry.metadata()?.len();
            }
        }
    }
    Ok((files, bytes))
}

fn run_rg(rg: &Path, ws: &Path, query: &str, fixed: bool) -> Result<usize> {
    let mut cmd = Command::new(rg);
    // Like grep_search: no config file, hidden files searched, .gitignore
    // honoured outside a git repository too, the default excludes.
    cmd.args(["--no-config", "-n", "--hidden", "--no-require-git"])
        .args([
            "-g",
            "!.git",
            "-g",
            "!target",
            "-g",
            "!node_modules",
            "-g",
            "!.arbiter",
        ]);
    if fixed {
        cmd.arg("-F");
    }
    let out = cmd.arg("--").arg(query).arg(ws).output()?;
    ensure!(
        out.status.code().is_some_and(|c| c <= 1),
        "rg failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out.stdout.iter().filter(|&&b| b == b'\n').count())
}

fn time_runs(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<Vec<Duration>> {
    f()?;
    (0..runs)
        .map(|_| {
            let started = Instant::now();
            f()?;
            Ok(started.elapsed())
        })
        .collect()
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn elide(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max - 1).collect::<String>())
    }
}

/// The server as a child process speaking newline-delimited JSON-RPC.
struct Server {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: u64,
}

impl Server {
    fn start(program: &Path, ws: &Path) -> Result<Self> {
        let mut child = Command::new(program)
            .arg("serve")
            .arg("--workspace")
            .arg(ws)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        let mut server = Self {
            child,
            stdin,
            stdout,
            next_id: 1,
        };
        server.request(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "arbiter-bench-grep", "version": "0"}}),
        )?;
        writeln!(
            server.stdin,
            r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
        )?;
        Ok(server)
    }

    fn request(&mut self, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let line = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        writeln!(self.stdin, "{line}")?;
        self.stdin.flush()?;
        loop {
            let mut reply = String::new();
            if self.stdout.read_line(&mut reply)? == 0 {
                bail!("the server closed its output");
            }
            let reply: Value = serde_json::from_str(&reply)?;
            if reply["id"] == id {
                if let Some(error) = reply.get("error") {
                    bail!("{method} failed: {error}");
                }
                return Ok(reply["result"].clone());
            }
        }
    }

    /// Call a tool that must succeed; returns its structured content.
    fn call(&mut self, tool: &str, args: &Value) -> Result<Value> {
        let result = self.request("tools/call", json!({"name": tool, "arguments": args}))?;
        if result["isError"] == true {
            bail!("{tool} {args} failed: {}", result["content"]);
        }
        Ok(result["structuredContent"].clone())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
