//! `arbiter serve`: MCP over stdio until the client closes stdin or a signal
//! arrives; with `--http ADDR`, MCP over streamable HTTP for many clients and
//! tenants until a signal arrives.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::server::ArbiterServer;
use crate::server::http::HttpOptions;
use crate::server::tenants::{TenantOpener, TenantRegistry, TenantRuntime};
use crate::store::DEFAULT_TENANT;

/// How long a stopping server waits for calls already running.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a stopping HTTP server spends indexing each tenant's journal.
const INDEX_FLUSH_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Serve MCP over streamable HTTP at http://ADDR/mcp instead of stdio
    /// (e.g. 127.0.0.1:8787; port 0 picks a free port, logged at start).
    /// Clients need a bearer token (`arbiter token create`).
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// Over stdio, how long after answering a `file_read` to keep polling
    /// stdin for the next request (in microseconds) before waiting to be
    /// woken: a client that sends reads back to back gets its answers sooner,
    /// for at most this much CPU per quiet spell. 0 turns it off.
    #[arg(long, value_name = "MICROSECONDS", default_value_t = 100)]
    stdin_busy_poll_us: u64,
    /// Requests each token may make (`N/s`, `N/min`, `N/h`, or `off`), unless
    /// the token has its own limit (`arbiter token create --rate-limit`).
    /// Over it a request gets 429 with `Retry-After`.
    #[arg(long, value_name = "N/PERIOD", requires = "http", default_value = crate::server::rate::DEFAULT_RATE_LIMIT)]
    rate_limit: crate::server::rate::RateLimit,
    /// Accept HTTP requests without a token, all as tenant `default`.
    /// Refused unless ADDR is a loopback address.
    #[arg(long, requires = "http")]
    no_auth: bool,
    /// A `Host` header value to accept besides the loopback names and ADDR
    /// (the name clients use to reach this machine). Repeatable.
    #[arg(long, value_name = "HOST", requires = "http")]
    allowed_host: Vec<String>,
    /// A browser origin allowed to call /mcp, e.g. http://localhost:6274.
    /// Any other `Origin` gets 403, except the server's own
    /// (http://localhost:PORT of this server). Repeatable.
    #[arg(long, value_name = "ORIGIN", requires = "http")]
    allowed_origin: Vec<String>,
    /// Close an MCP session (on /mcp or /sse) that has passed no message
    /// either way for this long, with its streams, terminals and jobs (on
    /// /sse, not while one of its calls runs). Keep-alive comments on its
    /// streams do not count. `30s`, `5m`, `1h`.
    #[arg(long, value_name = "DURATION", requires = "http", default_value = "5m", value_parser = parse_timeout)]
    session_idle_timeout: Duration,
    /// A client must send a request's headers within this time, and its body
    /// within this time again; a connection idle this long between requests
    /// is closed too (slowloris).
    #[arg(long, value_name = "DURATION", requires = "http", default_value = "30s", value_parser = parse_timeout)]
    read_timeout: Duration,
    /// Close a connection, with its streams, when its client takes none of
    /// what is sent to it for this long (it stopped reading).
    #[arg(long, value_name = "DURATION", requires = "http", default_value = "30s", value_parser = parse_timeout)]
    write_timeout: Duration,
    /// Trust a token the store accepted for this long before asking it again:
    /// a revocation by `arbiter token revoke` takes effect within this time
    /// (`0`: on the next request, at the cost of a store lookup per request).
    #[arg(long, value_name = "DURATION", requires = "http", default_value = "1s", value_parser = parse_duration)]
    token_cache_ttl: Duration,
}

/// A duration that is not zero (a zero timeout would refuse everything).
fn parse_timeout(text: &str) -> Result<Duration, String> {
    let timeout = parse_duration(text)?;
    if timeout.is_zero() {
        return Err("a timeout of 0 would cut every client off; give e.g. 30s".into());
    }
    Ok(timeout)
}

/// `500ms`, `30s`, `5m`, `1h`, or a number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}`: expected a number and a unit, e.g. 30s, 5m, 500ms"))?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        other => return Err(format!("`{other}`: the units are ms, s, m and h")),
    })
}

pub async fn run(setup: &super::Setup, args: ServeArgs) -> anyhow::Result<()> {
    match args.http {
        Some(addr) => {
            let options = HttpOptions {
                addr,
                no_auth: args.no_auth,
                allowed_hosts: args.allowed_host,
                allowed_origins: args.allowed_origin,
                rate_limit: args.rate_limit,
                token_cache_ttl: args.token_cache_ttl,
                timeouts: crate::server::conn::ConnTimeouts {
                    read: args.read_timeout,
                    write: args.write_timeout,
                },
                session_idle_timeout: args.session_idle_timeout,
            };
            serve_http(setup, options).await
        }
        None => serve_stdio(setup, Duration::from_micros(args.stdin_busy_poll_us)).await,
    }
}

async fn serve_http(setup: &super::Setup, options: HttpOptions) -> anyhow::Result<()> {
    // Refuse a bad combination before opening anything.
    crate::server::http::check_options(&options)?;
    let default = open_tenant(setup, DEFAULT_TENANT)?;
    let opener: TenantOpener = Arc::new(|record| {
        let setup = super::Setup {
            workspace: record.workspace.clone().into(),
            policy: record.policy.clone().map(Into::into),
        };
        open_tenant(&setup, &record.name)
    });
    let tenants = Arc::new(TenantRegistry::new(default, opener));
    crate::server::http::serve(options, tenants.clone(), stop_signal()).await?;
    // Calls have finished (or were abandoned at the deadline): give the
    // audit indexers a moment.
    for tenant in tenants.opened().await {
        let flushed = tokio::time::timeout(INDEX_FLUSH_GRACE, tenant.audit.flush_index()).await;
        if !matches!(flushed, Ok(Ok(()))) {
            tracing::warn!(tenant = %tenant.name, "audit index not brought up to date at shutdown (the journal has every record)");
        }
    }
    Ok(())
}

/// One tenant's workspace, audit chain and policy watcher.
fn open_tenant(setup: &super::Setup, name: &str) -> anyhow::Result<TenantRuntime> {
    let (toolbox, audit) = super::open_workspace_as(setup, name)?;
    // Follow the policy file: a good edit takes effect, a bad one is refused.
    let watched =
        crate::policy::file::watched_policy_path(setup.policy.as_deref(), toolbox.root.path());
    tokio::spawn(crate::policy::file::watch_policy(
        watched,
        setup.protected_paths(),
        toolbox.policy.clone(),
    ));
    tokio::spawn(toolbox.clone().follow_declared_agents(name.to_string()));
    Ok(TenantRuntime {
        name: name.to_string(),
        toolbox,
        audit,
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_signal() {
    let mut sigterm = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; shutting down"),
        _ = sigterm.recv() => tracing::info!("terminated; shutting down"),
    }
}

async fn serve_stdio(setup: &super::Setup, busy_poll: Duration) -> anyhow::Result<()> {
    let TenantRuntime { toolbox, audit, .. } = open_tenant(setup, DEFAULT_TENANT)?;
    tracing::info!(workspace = %toolbox.root.path().display(), "arbiter serving MCP over stdio");
    let shutdown = toolbox.shutdown.clone();
    let server = ArbiterServer::new(toolbox, audit);
    let in_flight = server.in_flight();
    crate::server::stdio::grow_pipes();
    let (reader, writer) = rmcp::transport::io::stdio_pipes();
    let (reader, gate): (Box<dyn tokio::io::AsyncRead + Unpin + Send>, _) =
        match crate::server::stdio::PollingStdin::open(busy_poll) {
            Some(polling) => {
                let gate = polling.gate();
                (Box::new(polling), Some(gate))
            }
            None => (Box::new(reader), None),
        };
    let crate::server::stdio::StdioSession {
        service,
        output_done,
    } = crate::server::stdio::serve(server, reader, writer, gate).await?;
    // The start (policy compiler, migrations, schemas, the handshake) is
    // done: its code need not stay resident.
    crate::memory::drop_clean_file_pages();
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = service.waiting() => {
            result.context("the MCP session ended with an error")?;
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, output_done).await;
        }
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; shutting down"),
        _ = sigterm.recv() => tracing::info!("terminated; shutting down"),
    }
    // Stop running commands and background jobs (they record themselves as
    // cancelled), let the other calls finish, then exit.
    shutdown.cancel();
    in_flight.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, in_flight.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            running = in_flight.len(),
            "calls still running at shutdown were abandoned"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_timeouts_refuse_zero() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("5 days").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_timeout("0s").is_err());
    }
}
