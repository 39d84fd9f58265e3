//! `arbiter serve`: MCP over stdio until the client closes stdin or a signal
//! arrives; with `--http ADDR`, MCP over streamable HTTP for many clients and
//! tenants until a signal arrives.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use rmcp::ServiceExt;

use rmcp::transport::async_rw::AsyncRwTransport;

use crate::server::ArbiterServer;
use crate::server::backpressure::Bounded;
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
            };
            serve_http(setup, options).await
        }
        None => serve_stdio(setup).await,
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

async fn serve_stdio(setup: &super::Setup) -> anyhow::Result<()> {
    let TenantRuntime { toolbox, audit, .. } = open_tenant(setup, DEFAULT_TENANT)?;
    tracing::info!(workspace = %toolbox.root.path().display(), "arbiter serving MCP over stdio");
    let shutdown = toolbox.shutdown.clone();
    let server = ArbiterServer::new(toolbox, audit);
    let in_flight = server.in_flight();
    let (reader, writer) = rmcp::transport::io::stdio_pipes();
    let service = server
        .serve(Bounded::new(AsyncRwTransport::new_server(reader, writer)))
        .await
        .context("the MCP handshake failed")?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = service.waiting() => {
            result.context("the MCP session ended with an error")?;
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
