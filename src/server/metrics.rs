//! Process-wide counters for `GET /metrics` (Prometheus text format 0.0.4).
//!
//! Written by hand rather than with a metrics crate: a few counters, one
//! histogram and a gauge do not justify a dependency. The counters are global
//! because Prometheus scrapes a process; labels are bounded (a tool name the
//! server does not have is counted as `unknown`, so clients cannot grow the
//! label set). The hot path takes one uncontended mutex per call.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds: from a cached `file_read`
/// (~100 µs) to a long command.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 10.0, 60.0,
];

/// `(tool, decision, outcome)` -> calls.
static CALLS: Mutex<BTreeMap<(String, String, String), u64>> = Mutex::new(BTreeMap::new());
/// tool -> latency histogram.
static LATENCY: Mutex<BTreeMap<String, Histogram>> = Mutex::new(BTreeMap::new());
/// MCP sessions whose server is alive, over every transport.
static SESSIONS: AtomicI64 = AtomicI64::new(0);

#[derive(Default)]
struct Histogram {
    /// Per bucket, not cumulative (made cumulative when rendered).
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Held by each MCP session's server: counts it while it lives.
pub struct LiveSession(());

impl LiveSession {
    pub fn start() -> Self {
        SESSIONS.fetch_add(1, Ordering::Relaxed);
        Self(())
    }
}

impl Drop for LiveSession {
    fn drop(&mut self) {
        SESSIONS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Count one finished `tools/call`.
pub fn record_call(tool: &str, decision: &str, outcome: &str, elapsed: Duration) {
    let key = (tool.to_string(), decision.to_string(), outcome.to_string());
    *CALLS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key)
        .or_default() += 1;
    let seconds = elapsed.as_secs_f64();
    let mut latency = LATENCY.lock().unwrap_or_else(|e| e.into_inner());
    let histogram = latency.entry(tool.to_string()).or_default();
    if let Some(bucket) = BUCKETS.iter().position(|&le| seconds <= le) {
        histogram.counts[bucket] += 1;
    }
    histogram.count += 1;
    histogram.sum += seconds;
}

/// The exposition text; `pending` is overrides awaiting a decision, by
/// tenant; `store_unreachable` says calls needing the store are refused now.
pub fn render(pending: &[(String, u64)], store_unreachable: bool) -> String {
    let mut out = String::new();
    out.push_str(
        "# HELP arbiter_tool_calls_total Tool calls by tool, policy decision and outcome.\n",
    );
    out.push_str("# TYPE arbiter_tool_calls_total counter\n");
    for ((tool, decision, outcome), n) in CALLS.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let _ = writeln!(
            out,
            "arbiter_tool_calls_total{{tool=\"{}\",decision=\"{}\",outcome=\"{}\"}} {n}",
            escape(tool),
            escape(decision),
            escape(outcome)
        );
    }

    out.push_str(
        "# HELP arbiter_tool_call_duration_seconds Time from request to audited reply, by tool.\n",
    );
    out.push_str("# TYPE arbiter_tool_call_duration_seconds histogram\n");
    for (tool, h) in LATENCY.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let tool = escape(tool);
        let mut cumulative = 0;
        for (le, n) in BUCKETS.iter().zip(h.counts) {
            cumulative += n;
            let _ = writeln!(
                out,
                "arbiter_tool_call_duration_seconds_bucket{{tool=\"{tool}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "arbiter_tool_call_duration_seconds_bucket{{tool=\"{tool}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(
            out,
            "arbiter_tool_call_duration_seconds_sum{{tool=\"{tool}\"}} {}",
            h.sum
        );
        let _ = writeln!(
            out,
            "arbiter_tool_call_duration_seconds_count{{tool=\"{tool}\"}} {}",
            h.count
        );
    }

    out.push_str(
        "# HELP arbiter_mcp_sessions_active MCP sessions open (streamable HTTP and SSE).\n",
    );
    out.push_str("# TYPE arbiter_mcp_sessions_active gauge\n");
    let _ = writeln!(
        out,
        "arbiter_mcp_sessions_active {}",
        SESSIONS.load(Ordering::Relaxed).max(0)
    );

    out.push_str(
        "# HELP arbiter_commands_running Sandboxed commands running, terminal shells included.\n",
    );
    out.push_str("# TYPE arbiter_commands_running gauge\n");
    let _ = writeln!(
        out,
        "arbiter_commands_running {}",
        crate::exec::process::running_commands()
    );

    out.push_str(
        "# HELP arbiter_overrides_pending Override requests awaiting a decision, by tenant.\n",
    );
    out.push_str("# TYPE arbiter_overrides_pending gauge\n");
    for (tenant, n) in pending {
        let _ = writeln!(
            out,
            "arbiter_overrides_pending{{tenant=\"{}\"}} {n}",
            escape(tenant)
        );
    }

    out.push_str(
        "# HELP arbiter_store_unreachable 1 while calls that need the store are refused without trying (it could not be opened, or its circuit breaker is open), else 0.\n",
    );
    out.push_str("# TYPE arbiter_store_unreachable gauge\n");
    let _ = writeln!(
        out,
        "arbiter_store_unreachable {}",
        u8::from(store_unreachable)
    );
    out
}

/// A label value as the text format wants it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_end_at_the_count() {
        record_call(
            "metrics_test_tool",
            "allow",
            "ok",
            Duration::from_micros(80),
        );
        record_call(
            "metrics_test_tool",
            "deny",
            "refused",
            Duration::from_millis(3),
        );
        let text = render(&[("a\"b".to_string(), 2)], false);
        assert!(text.contains(
            "arbiter_tool_call_duration_seconds_bucket{tool=\"metrics_test_tool\",le=\"0.0001\"} 1"
        ));
        assert!(text.contains(
            "arbiter_tool_call_duration_seconds_bucket{tool=\"metrics_test_tool\",le=\"0.005\"} 2"
        ));
        assert!(text.contains(
            "arbiter_tool_call_duration_seconds_bucket{tool=\"metrics_test_tool\",le=\"+Inf\"} 2"
        ));
        assert!(text.contains(
            "arbiter_tool_calls_total{tool=\"metrics_test_tool\",decision=\"deny\",outcome=\"refused\"} 1"
        ));
        assert!(text.contains("arbiter_overrides_pending{tenant=\"a\\\"b\"} 2"));
        assert!(text.contains("\narbiter_store_unreachable 0\n"));
        assert!(render(&[], true).contains("\narbiter_store_unreachable 1\n"));
    }
}
