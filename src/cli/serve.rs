//! `arbiter serve`: MCP over stdio until the client closes stdin or a signal arrives.

use anyhow::Context;
use rmcp::ServiceExt;

use rmcp::transport::async_rw::AsyncRwTransport;

use crate::server::ArbiterServer;
use crate::server::backpressure::Bounded;

/// How long a stopping server waits for calls already running.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

pub async fn run(setup: &super::Setup) -> anyhow::Result<()> {
    let (toolbox, audit) = super::open_workspace(setup)?;
    tracing::info!(workspace = %toolbox.root.path().display(), "arbiter serving MCP over stdio");
    // Follow the policy file: a good edit takes effect, a bad one is refused.
    let watched =
        crate::policy::file::watched_policy_path(setup.policy.as_deref(), toolbox.root.path());
    tokio::spawn(crate::policy::file::watch_policy(
        watched,
        setup.protected_paths(),
        toolbox.policy.clone(),
    ));
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
