//! `arbiter call TOOL JSON`: one tool call for scripts and CI. It runs a real
//! MCP session in-process (server and rmcp client joined by a pipe), so the call
//! takes exactly the path a remote client's call takes: argument checks, policy,
//! executor and audit.

use std::process::ExitCode;

use anyhow::Context;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, NumberOrString,
    ProgressNotificationParam, ProgressToken, RequestParamsMeta,
};
use rmcp::service::{NotificationContext, ServiceError};
use rmcp::{ClientHandler, RoleClient, ServiceExt};

use super::progress::Progress;

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
    let client = ShowProgress::default()
        .serve(client_io)
        .await
        .context("the in-process MCP handshake failed")?;
    let mut request = CallToolRequestParams::new(tool.to_string()).with_arguments(arguments);
    // Ask for progress (gates of task_complete, a long command's output).
    request.set_progress_token(ProgressToken(NumberOrString::Number(1)));
    let outcome = client.call_tool(request).await;
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

/// Between plain lines of open-ended progress (a command's output so far).
const PLAIN_EVERY: Duration = Duration::from_secs(10);

/// The client side of `arbiter call`: shows the server's progress
/// notifications on stderr (see `progress.rs`): steps with a total (gates)
/// as a bar or a line each; open-ended news (bytes of output) as a spinner,
/// or a line every ten seconds.
#[derive(Default)]
struct ShowProgress {
    shown: Mutex<Option<Shown>>,
}

struct Shown {
    progress: Progress,
    last_line: Option<Instant>,
    /// The last step shown.
    done: u64,
    /// Steps that arrived early: rmcp handles each notification in a task of
    /// its own, so two sent back to back can arrive swapped.
    early: BTreeMap<u64, String>,
}

impl Shown {
    fn new(total: Option<f64>) -> Self {
        let progress = match total {
            Some(total) => Progress::steps("progress", total.max(0.0) as u64),
            None => Progress::open_ended("running"),
        };
        Self {
            progress,
            last_line: None,
            done: 0,
            early: BTreeMap::new(),
        }
    }

    /// Show the early steps that are next in line (all of them if `all`).
    fn catch_up(&mut self, all: bool) {
        while let Some(entry) = self.early.first_entry() {
            if !all && *entry.key() != self.done + 1 {
                break;
            }
            let (done, what) = entry.remove_entry();
            self.progress.step(done, &what);
            self.done = done;
        }
    }
}

impl Drop for ShowProgress {
    fn drop(&mut self) {
        if let Ok(mut shown) = self.shown.lock()
            && let Some(shown) = shown.as_mut()
        {
            shown.catch_up(true);
        }
    }
}

impl ClientHandler for ShowProgress {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let Ok(mut shown) = self.shown.lock() else {
            return;
        };
        let shown = shown.get_or_insert_with(|| Shown::new(params.total));
        let what = params.message.unwrap_or_default();
        let done = params.progress.max(0.0) as u64;
        if params.total.is_some() {
            shown.early.insert(done, what);
            shown.catch_up(false);
        } else if done >= shown.done
            && (shown.progress.is_bar()
                || shown.last_line.is_none_or(|t| t.elapsed() >= PLAIN_EVERY))
        {
            shown.progress.step(done, &what);
            shown.done = done;
            shown.last_line = Some(Instant::now());
        }
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("arbiter-call", env!("CARGO_PKG_VERSION")),
        )
    }
}

fn usage(message: &str) -> ExitCode {
    eprintln!("arbiter call: {message}");
    ExitCode::from(2)
}
