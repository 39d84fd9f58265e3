//! A minimal MCP client over a child's stdio: one JSON-RPC message per line,
//! hand-written (no MCP SDK) so that what is timed is the server and the pipe,
//! not a client framework.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::{PROTOCOL_VERSION, ReplyHead, check_tool_reply, elide, request_json, request_line};

/// A running MCP server on the other end of a pipe.
pub struct Client {
    child: Reaper,
    stdin: BufWriter<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pub workspace: PathBuf,
    /// Reused buffer for incoming lines.
    line: Vec<u8>,
    next_id: u64,
    /// `tools/call`s answered so far.
    pub calls: usize,
    /// When the last reply line was read.
    pub last_reply_at: Instant,
    timeout: Duration,
}

/// What [`Client::pipelined`] does with each reply after checking it.
type OnReply<'a> = dyn FnMut(usize, &Value) -> Result<()> + 'a;

/// What [`Client::pipelined`] measured.
pub struct Pipelined {
    /// Time from writing each request to reading its reply, in request order.
    pub latencies: Vec<Duration>,
    /// From the first request written to the last reply read.
    pub elapsed: Duration,
}

impl Pipelined {
    pub fn calls_per_sec(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
}

impl Client {
    /// Starts `program args... workspace`, appending its stderr to `log`, and
    /// returns the client with the instant just before the spawn.
    pub fn spawn(
        program: &OsStr,
        args: &[OsString],
        workspace: &Path,
        log: &Path,
        timeout: Duration,
    ) -> Result<(Self, Instant)> {
        let stderr = File::options().create(true).append(true).open(log)?;
        let spawned_at = Instant::now();
        let mut child = Command::new(program)
            .args(args)
            .arg(workspace)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", program.to_string_lossy()))?;
        let client = Self {
            stdin: BufWriter::new(child.stdin.take().expect("piped stdin")),
            stdout: BufReader::with_capacity(64 * 1024, child.stdout.take().expect("piped stdout")),
            child: Reaper(child),
            workspace: workspace.to_owned(),
            line: Vec::new(),
            next_id: 1,
            calls: 0,
            last_reply_at: spawned_at,
            timeout,
        };
        Ok((client, spawned_at))
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// The MCP handshake as client `arbiter-bench`. Returns the `initialize` result.
    pub fn initialize(&mut self) -> Result<Value> {
        self.initialize_as("arbiter-bench")
    }

    /// The MCP handshake: `initialize` (no client capabilities, `name` as
    /// clientInfo.name, which a stdio server takes as the agent's identity),
    /// its reply, `notifications/initialized`. Returns the `initialize` result.
    pub fn initialize_as(&mut self, name: &str) -> Result<Value> {
        let params = json!({
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": { "name": name, "version": "0" },
        });
        let reply = self.request("initialize", &params.to_string())?;
        writeln!(
            self.stdin,
            r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
        )?;
        self.stdin.flush()?;
        Ok(reply["result"].clone())
    }

    /// Sends one request and waits for its reply, failing on a JSON-RPC error.
    /// `params` is serialised JSON. Returns the reply and the round-trip time.
    pub fn exchange(&mut self, method: &str, params: &str) -> Result<(Value, Duration)> {
        let id = self.next_id;
        self.next_id += 1;
        let sent_at = Instant::now();
        writeln!(self.stdin, "{}", request_json(id, method, params))?;
        self.stdin.flush()?;
        let context = || format!("request: {}", request_line(id, method, params));
        let reply = loop {
            let message = read_message(&mut self.stdout, &mut self.line, self.timeout)
                .with_context(context)?;
            self.last_reply_at = Instant::now();
            if !is_notification(&message).with_context(context)? {
                break message;
            }
        };
        let rtt = self.last_reply_at.duration_since(sent_at);
        ensure!(
            reply["id"].as_u64() == Some(id),
            "reply to another id: {}\n{}",
            elide(&reply.to_string()),
            context()
        );
        if let Some(error) = reply.get("error") {
            bail!("JSON-RPC error: {error}\n{}", context());
        }
        Ok((reply, rtt))
    }

    pub fn request(&mut self, method: &str, params: &str) -> Result<Value> {
        Ok(self.exchange(method, params)?.0)
    }

    /// One `tools/call`; fails unless the tool succeeded.
    pub fn call(&mut self, params: &str) -> Result<(Value, Duration)> {
        let id = self.next_id;
        let (reply, rtt) = self.exchange("tools/call", params)?;
        check_tool_reply(&reply)
            .with_context(|| format!("request: {}", request_line(id, "tools/call", params)))?;
        self.calls += 1;
        Ok((reply, rtt))
    }

    /// `n` `tools/call`s with at most `window` in flight (`None`: all of them
    /// written back to back). A writer thread sends `params(i)` for call `i`
    /// while this thread reads the replies, in any order, checks each (a
    /// failed call aborts the run) and hands it to `on_reply(i, reply)`.
    pub fn pipelined(
        &mut self,
        n: usize,
        window: Option<usize>,
        params: impl Fn(usize) -> String + Sync,
        mut on_reply: impl FnMut(usize, &Value) -> Result<()>,
    ) -> Result<Pipelined> {
        self.run_pipelined(n, window, params, Some(&mut on_reply))
    }

    /// [`Self::pipelined`] for calls whose replies are only checked: read
    /// as a [`ReplyHead`], not built whole.
    pub fn pipelined_checked(
        &mut self,
        n: usize,
        window: Option<usize>,
        params: impl Fn(usize) -> String + Sync,
    ) -> Result<Pipelined> {
        self.run_pipelined(n, window, params, None)
    }

    fn run_pipelined(
        &mut self,
        n: usize,
        window: Option<usize>,
        params: impl Fn(usize) -> String + Sync,
        mut on_reply: Option<&mut OnReply<'_>>,
    ) -> Result<Pipelined> {
        let first = self.next_id;
        self.next_id += n as u64;
        let Self {
            child,
            stdin,
            stdout,
            line,
            timeout,
            ..
        } = self;
        // Permits bound the calls in flight; the reader returns one per reply.
        let (permit_tx, permit_rx) = mpsc::sync_channel::<()>(window.unwrap_or(0));
        if let Some(window) = window {
            ensure!(window > 0, "a window of at least one call");
            for _ in 0..window.min(n) {
                permit_tx.send(())?;
            }
        }
        let (sent_tx, sent_rx) = mpsc::channel::<Instant>();
        let params = &params;
        let begin = Instant::now();
        let (written, read) = thread::scope(|scope| {
            let writer = scope.spawn(move || -> Result<()> {
                for i in 0..n {
                    if window.is_some() && permit_rx.try_recv().is_err() {
                        // Waiting for a reply: what is buffered must go out first.
                        stdin.flush()?;
                        if permit_rx.recv().is_err() {
                            return Ok(()); // the reader gave up
                        }
                    }
                    let request = request_json(first + i as u64, "tools/call", &params(i));
                    // The time goes to the reader before the request can be answered.
                    let _ = sent_tx.send(Instant::now());
                    writeln!(stdin, "{request}")?;
                }
                stdin.flush()?;
                Ok(())
            });
            let mut sent_at = Vec::with_capacity(n);
            let mut latencies = vec![Duration::ZERO; n];
            let mut seen = vec![false; n];
            let read = (|| -> Result<()> {
                for _ in 0..n {
                    let (reply, id) = match on_reply {
                        Some(_) => loop {
                            let message = read_message(stdout, line, *timeout)?;
                            if !is_notification(&message)? {
                                let id = message["id"].as_u64();
                                break (Some(message), id);
                            }
                        },
                        None => loop {
                            read_line(stdout, line, *timeout)?;
                            let head = ReplyHead::checked(line)?;
                            if !head.is_notification() {
                                break (None, head.id);
                            }
                        },
                    };
                    let arrived = Instant::now();
                    let Some(i) = id
                        .and_then(|id| id.checked_sub(first))
                        .and_then(|i| usize::try_from(i).ok())
                        .filter(|&i| i < n)
                    else {
                        bail!(
                            "reply with unexpected id: {}",
                            elide(&String::from_utf8_lossy(line))
                        )
                    };
                    ensure!(!seen[i], "second reply to call {i}");
                    seen[i] = true;
                    while sent_at.len() <= i {
                        sent_at.push(sent_rx.recv()?);
                    }
                    latencies[i] = arrived.duration_since(sent_at[i]);
                    let _ = permit_tx.try_send(());
                    if let (Some(reply), Some(on_reply)) = (&reply, &mut on_reply) {
                        check_tool_reply(reply).with_context(|| {
                            format!(
                                "request: {}",
                                request_line(first + i as u64, "tools/call", &params(i))
                            )
                        })?;
                        on_reply(i, reply)?;
                    }
                }
                Ok(())
            })();
            if read.is_err() {
                // Unblock the writer if the server stopped reading.
                let _ = child.0.kill();
            }
            drop(permit_tx);
            let written = writer.join().expect("writer thread panicked");
            (written, read.map(|()| latencies))
        });
        let elapsed = begin.elapsed();
        let latencies = read?;
        written.context("writing pipelined requests")?;
        self.calls += n;
        Ok(Pipelined { latencies, elapsed })
    }

    /// A `kB` field of the server's /proc/PID/status, such as VmRSS, in KiB.
    pub fn proc_status_kib(&self, field: &str) -> Result<u64> {
        crate::proc_status_kib(self.pid(), field)
    }

    /// Closes stdin, which tells an MCP stdio server to exit, and reaps it
    /// (killing it if it lingers).
    pub fn shutdown(self) -> Result<()> {
        let Self {
            mut child, stdin, ..
        } = self;
        drop(stdin);
        let child = &mut child.0;
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                eprintln!(
                    "warning: server pid {} still running 5 s after stdin closed; killing it",
                    child.id()
                );
                break; // the Reaper kills it
            }
            thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }
}

/// Owns a server process and kills it when dropped, so that an aborted run
/// (a hung server, a failed check) leaves nothing behind.
pub struct Reaper(pub Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Reads the next non-blank line and parses it, waiting at most `timeout`
/// for it to start arriving.
fn read_message(
    stdout: &mut BufReader<ChildStdout>,
    line: &mut Vec<u8>,
    timeout: Duration,
) -> Result<Value> {
    read_line(stdout, line, timeout)?;
    serde_json::from_slice(line).with_context(|| {
        format!(
            "reply is not JSON: {}",
            elide(&String::from_utf8_lossy(line))
        )
    })
}

/// Reads the next non-blank line into `line`, waiting at most `timeout` for
/// it to start arriving.
fn read_line(
    stdout: &mut BufReader<ChildStdout>,
    line: &mut Vec<u8>,
    timeout: Duration,
) -> Result<()> {
    loop {
        line.clear();
        if stdout.buffer().is_empty() && !wait_readable(stdout.get_ref(), timeout)? {
            bail!("no reply within {} s (server hung?)", timeout.as_secs_f64());
        }
        if stdout.read_until(b'\n', line)? == 0 {
            bail!("server closed its stdout (exited?)");
        }
        if !line.trim_ascii().is_empty() {
            return Ok(());
        }
    }
}

/// Waits until `fd` is readable (or closed); false on timeout.
fn wait_readable(fd: impl AsFd, timeout: Duration) -> Result<bool> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let timeout = Timespec::try_from(timeout)?;
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    loop {
        match poll(&mut fds, Some(&timeout)) {
            Ok(ready) => return Ok(ready > 0),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// True for a notification (skipped); an error for a request from the server,
/// which this client never invites (it declares no capabilities).
fn is_notification(message: &Value) -> Result<bool> {
    match (message.get("method"), message.get("id")) {
        (Some(_), None) => Ok(true),
        (Some(_), Some(_)) => bail!(
            "unexpected request from the server: {}",
            elide(&message.to_string())
        ),
        _ => Ok(false),
    }
}
