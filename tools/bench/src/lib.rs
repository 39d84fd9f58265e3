//! What the arbiter benchmarks share: a minimal MCP client over a child's
//! stdio ([`stdio`]), reply checks, percentiles, `/proc` memory readings, and
//! where to find the binary. The binaries are `arbiter-bench` (stdio latency,
//! throughput, memory), `arbiter-bench-http` (the issue 9 load test) and
//! `arbiter-bench-tasks` (the issue 8 `task_submit` and routing figures).

pub mod stdio;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde_json::Value;

/// MCP protocol revision offered in `initialize`.
pub const PROTOCOL_VERSION: &str = "2025-11-25";

/// Runs a benchmark's body and turns its error into a message and exit code.
pub fn main_with(run: impl FnOnce() -> Result<()>) -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The chain without a backtrace: the request and reply are what matter.
            eprintln!("error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("\ncaused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Cargo's target directory: `$CARGO_TARGET_DIR`, else `<workspace>/target`
/// (this crate lives in `<workspace>/tools/bench`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
            manifest_dir
                .ancestors()
                .nth(2)
                .unwrap_or(manifest_dir)
                .join("target")
        })
}

/// The arbiter binary to run: `given`, else `<target dir>/release/arbiter`;
/// an error saying how to build it when it is missing.
pub fn arbiter_binary(given: Option<PathBuf>) -> Result<PathBuf> {
    let path = given.unwrap_or_else(|| target_dir().join("release/arbiter"));
    ensure!(
        path.is_file(),
        "{} not found: build it first with `cargo build --release` (or pass --arbiter PATH)",
        path.display()
    );
    Ok(path)
}

/// A `kB` field of /proc/PID/status, such as VmRSS or VmHWM, in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().strip_suffix("kB")?.trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// CPU time (user + system) a process has used so far, from
/// /proc/PID/stat (`self` for this process), in seconds. Ticks are USER_HZ,
/// 100 a second on every Linux ABI this runs on.
pub fn proc_cpu_seconds(pid: &str) -> Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which may hold spaces: state is field 3,
    // utime and stime are fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields.get(i).context("short /proc stat")?.parse::<u64>()? as f64)
    };
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// Nearest-rank percentile of `samples` in microseconds.
/// (`p` in percent, 1..=100.)
pub fn percentile_us(samples: &[Duration], p: usize) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    percentile_sorted_us(&sorted, p)
}

/// [`percentile_us`] of samples already sorted (for many percentiles of a
/// large sample).
pub fn percentile_sorted_us(sorted: &[Duration], p: usize) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len()).div_ceil(100).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e6
}

/// What a load client reads of a reply it only checks: its id, whether it
/// is a notification, an error or a failed tool result. The rest (a read's
/// 4 KiB text, twice) is skipped without being built: the client shares the
/// two cores with the server it measures.
#[derive(serde::Deserialize)]
pub struct ReplyHead {
    pub id: Option<u64>,
    method: Option<serde::de::IgnoredAny>,
    error: Option<serde::de::IgnoredAny>,
    result: Option<ResultHead>,
}

#[derive(serde::Deserialize)]
struct ResultHead {
    #[serde(rename = "isError")]
    is_error: Option<bool>,
}

impl ReplyHead {
    /// A message sent by the server on its own (no id).
    pub fn is_notification(&self) -> bool {
        self.method.is_some() && self.id.is_none()
    }

    /// The head of the reply `line`, checked as [`check_tool_reply`] checks a
    /// whole one (its error says what the reply was).
    pub fn checked(line: &[u8]) -> Result<Self> {
        let head: Self = serde_json::from_slice(line).with_context(|| {
            format!(
                "reply is not JSON-RPC: {}",
                elide(&String::from_utf8_lossy(line))
            )
        })?;
        let failed = head.method.is_some() && head.id.is_some()
            || head.error.is_some()
            || head
                .result
                .as_ref()
                .is_none_or(|r| r.is_error == Some(true));
        if failed && !head.is_notification() {
            let reply: Value = serde_json::from_slice(line)?;
            check_tool_reply(&reply)?;
            bail!("unexpected message: {}", elide(&reply.to_string()));
        }
        Ok(head)
    }
}

/// Fails on a JSON-RPC error or a tool result flagged `isError`.
pub fn check_tool_reply(reply: &Value) -> Result<()> {
    if let Some(error) = reply.get("error") {
        bail!("JSON-RPC error: {error}");
    }
    let result = reply
        .get("result")
        .ok_or_else(|| anyhow!("reply has no result: {}", elide(&reply.to_string())))?;
    if result.get("isError") == Some(&Value::Bool(true)) {
        bail!("tool failed (isError: true): {}", elide(&reply.to_string()));
    }
    Ok(())
}

/// Concatenated text blocks of a tool result.
pub fn reply_text(reply: &Value) -> String {
    let blocks = reply["result"]["content"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    blocks
        .iter()
        .filter_map(|block| block["text"].as_str())
        .collect()
}

/// `text` cut to about 2,000 bytes, for error messages.
pub fn elide(text: &str) -> String {
    const MAX: usize = 2000;
    let text = text.trim_end();
    if text.len() <= MAX {
        return text.to_owned();
    }
    let cut = (0..=MAX)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    format!("{}...({} bytes)", &text[..cut], text.len())
}

/// A JSON-RPC request line (no newline). `params` is serialised JSON.
pub fn request_json(id: u64, method: &str, params: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{params}}}"#)
}

/// The request as sent, with long strings shortened, for error messages.
pub fn request_line(id: u64, method: &str, params: &str) -> String {
    let mut request: Value =
        serde_json::from_str(&request_json(id, method, params)).expect("requests are valid JSON");
    shorten_strings(&mut request);
    request.to_string()
}

fn shorten_strings(value: &mut Value) {
    match value {
        Value::String(s) if s.len() > 80 => {
            let cut = (0..=60).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
            *s = format!("{}...({} bytes)", &s[..cut], s.len());
        }
        Value::Array(items) => items.iter_mut().for_each(shorten_strings),
        Value::Object(map) => map.values_mut().for_each(shorten_strings),
        _ => {}
    }
}

/// The last `n` lines of a log file, or `(nothing)`, for error messages.
pub fn log_tail(log: &Path, n: usize) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(n)..].join("\n");
    if tail.trim().is_empty() {
        "(nothing)".to_owned()
    } else {
        tail
    }
}
