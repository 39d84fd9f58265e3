//! `arbiter call TOOL JSON`: one tool call for scripts and CI. It runs a real
//! MCP session in-process (server and rmcp client joined by a pipe), so the call
//! takes exactly the path a remote client's call takes: argument checks, policy,
//! executor and audit.

use std::process::ExitCode;

use anyhow::Context;
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation};
use rmcp::service::ServiceError;

use crate::server::ArbiterServer;

pub async fn run(setup: &super::Setup, tool: &str, args: Option<&str>) -> anyhow::Result<ExitCode> {
    let arguments = match serde_json::from_str::<serde_json::Value>(args.unwrap_or("{}")) {
        Ok(serde_json::Value::Object(map)) => map,
        Ok(_) => {
            return Ok(usage(
                "the arguments must be a JSON object, e.g. '{\"target_file\":\"README.md\"}'",
            ));
        }
        Err(e) => return Ok(usage(&format!("the arguments are not valid JSON: {e}"))),
    };
    let (toolbox, audit) = super::open_workspace(setup)?;
    let (server_io, client_io) = tokio::io::duplex(1 << 20);
    let shutdown = toolbox.shutdown.clone();
    let server = ArbiterServer::new(toolbox, audit);
    let in_flight = server.in_flight();
    let server_task = tokio::spawn(async move {
        if let Ok(service) = server.serve(server_io).await {
            let _ = service.waiting().await;
        }
    });
    let client = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("arbiter-call", env!("CARGO_PKG_VERSION")),
    )
    .serve(client_io)
    .await
    .context("the in-process MCP handshake failed")?;
    let outcome = client
        .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(arguments))
        .await;
    let _ = client.cancel().await;
    let _ = server_task.await;
    // As `serve` does: stop background jobs, let cleanups finish.
    shutdown.cancel();
    in_flight.close();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), in_flight.wait()).await;
    match outcome {
        Ok(result) => {
            println!("{}", serde_json::to_string_pretty(&result)?);
            Ok(if result.is_error == Some(true) {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Err(ServiceError::McpError(e)) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({ "error": e }))?
            );
            eprintln!("arbiter call: {}", e.message);
            Ok(ExitCode::from(2))
        }
        Err(e) => Err(e).context("the tool call failed"),
    }
}

fn usage(message: &str) -> ExitCode {
    eprintln!("arbiter call: {message}");
    ExitCode::from(2)
}
