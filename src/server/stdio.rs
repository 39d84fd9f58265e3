//! MCP over stdio: newline-delimited JSON-RPC on the process's stdin and stdout.
//!
//! Every line goes to rmcp's service through an in-memory pipe, except the
//! plain `tools/call`s of the file tools, which are answered here
//! (`direct.rs`): a `file_read` on the reading task itself, with no task or
//! thread hop between the request and its reply; the other file tools on a
//! task of their own (at most [`MAX_UNANSWERED`] at once), since a write
//! waits for fsync. Replies from both lanes go out as whole lines through one
//! writer; the replies to a burst of reads go out in batches, each after its
//! records are committed, from a thread of their own ([`BatchSender`]).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use rmcp::service::RunningService;
use rmcp::transport::async_rw::{AsyncRwTransport, DEFAULT_MAX_LINE_LENGTH};
use rmcp::{RoleServer, ServiceExt};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream};
use tokio::sync::{Mutex, Semaphore};

use super::ArbiterServer;
use super::backpressure::{Bounded, MAX_UNANSWERED};
use super::direct::{self, DirectSession};
use crate::store::audit::AuditEntry;
use rmcp::model::RequestId;

/// Capacity of each in-memory pipe between this transport and rmcp.
const RMCP_PIPE_BYTES: usize = 64 * 1024;

/// Replies held back for one write at most (see `read_requests`). Two such
/// buffers exist in a burst ([`BatchSender`]); 256 KiB was no faster.
const REPLY_BATCH_BYTES: usize = 128 * 1024;

/// What the stdio pipes are grown to, when they are pipes: a 4 KiB read's
/// reply is ~10 KiB, so the usual 64 KiB pipe holds six, and a client reading
/// a burst of replies wakes the server (and is woken) every six.
const PIPE_BYTES: usize = 1024 * 1024;

/// Grow stdin's and stdout's pipes, best effort (the limit is
/// `/proc/sys/fs/pipe-max-size`; anything else stays as it was).
pub fn grow_pipes() {
    use std::os::fd::AsFd;
    let (stdin, stdout) = (std::io::stdin(), std::io::stdout());
    for (name, fd) in [("stdin", stdin.as_fd()), ("stdout", stdout.as_fd())] {
        let is_pipe = rustix::fs::fstat(fd).is_ok_and(|st| {
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Fifo
        });
        if is_pipe && let Err(e) = rustix::pipe::fcntl_setpipe_size(fd, PIPE_BYTES) {
            tracing::debug!(pipe = name, error = %e, "the pipe keeps its size");
        }
    }
}

/// stdin, when it is a pipe, read without blocking on a descriptor of its own
/// (as rmcp's `stdio_pipes` does), busy-polled for up to `busy_poll` before
/// the reading task waits for the kernel to wake it.
///
/// Why: a client that sends its next request as soon as it has a reply
/// finds the server parked, and on a virtual machine whose idle vCPUs halt,
/// waking a halted vCPU costs tens of microseconds, as much as the whole
/// call (a sequential 4 KiB `file_read` measured 37–40 µs when client and
/// server shared a vCPU, 75–110 µs when they did not). Polling costs at
/// most `busy_poll` of CPU per quiet spell, and yields the CPU at every
/// turn, so a client on the same CPU still runs. It polls only while its
/// [`BusyPollGate`] is open: the reader of requests opens it after a read it
/// answered itself with nothing else of its own running, since polling holds
/// the runtime thread, and a task queued behind it (a write just spawned)
/// would wait out the poll.
pub struct PollingStdin {
    pipe: tokio::net::unix::pipe::Receiver,
    busy_poll: Duration,
    gate: BusyPollGate,
}

/// Whether [`PollingStdin`] may poll now (see there).
#[derive(Clone, Default)]
pub struct BusyPollGate(Arc<std::sync::atomic::AtomicBool>);

impl BusyPollGate {
    fn set(&self, open: bool) {
        self.0.store(open, std::sync::atomic::Ordering::Relaxed);
    }

    fn is_open(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl PollingStdin {
    /// `None` when stdin is not a pipe (a file, a terminal): rmcp's reader then.
    pub fn open(busy_poll: Duration) -> Option<Self> {
        use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
        // Its own open file description, so O_NONBLOCK stays private to it.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/proc/self/fd/0")
            .ok()?;
        if !file.metadata().ok()?.file_type().is_fifo() {
            return None;
        }
        let pipe = tokio::net::unix::pipe::Receiver::from_file(file).ok()?;
        Some(Self {
            pipe,
            busy_poll,
            gate: BusyPollGate::default(),
        })
    }

    /// The gate the reader of requests opens and closes.
    pub fn gate(&self) -> BusyPollGate {
        self.gate.clone()
    }
}

impl AsyncRead for PollingStdin {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !this.busy_poll.is_zero() && this.gate.is_open() {
            // Read the descriptor itself: the runtime's readiness flag only
            // changes when it is woken, which is what this avoids.
            let deadline = std::time::Instant::now() + this.busy_poll;
            loop {
                match rustix::io::read(&this.pipe, buf.initialize_unfilled()) {
                    Ok(n) => {
                        buf.advance(n);
                        return std::task::Poll::Ready(Ok(()));
                    }
                    Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {}
                    Err(e) => return std::task::Poll::Ready(Err(e.into())),
                }
                if std::time::Instant::now() >= deadline {
                    break;
                }
                std::thread::yield_now();
            }
        }
        std::pin::Pin::new(&mut this.pipe).poll_read(cx, buf)
    }
}

/// The output, shared by both lanes; a line is written whole under the lock.
type Output<W> = Arc<Mutex<W>>;

/// A stdio session being served.
pub struct StdioSession {
    pub service: RunningService<RoleServer, ArbiterServer>,
    /// Ends once rmcp's last message is written out: awaited after the
    /// service ends, so that an answer rmcp gave just before the input
    /// ended is not lost with the process.
    pub output_done: tokio::task::JoinHandle<()>,
}

/// Serve `server` on `input`/`output` (the process's stdio pipes in
/// production). Returns once the `initialize` handshake is done.
/// `gate`: the [`PollingStdin`]'s, when `input` is one.
pub async fn serve<R, W>(
    server: ArbiterServer,
    input: R,
    output: W,
    gate: Option<BusyPollGate>,
) -> anyhow::Result<StdioSession>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let output: Output<W> = Arc::new(Mutex::new(output));
    let (to_rmcp, rmcp_input) = tokio::io::duplex(RMCP_PIPE_BYTES);
    let (rmcp_output, from_rmcp) = tokio::io::duplex(RMCP_PIPE_BYTES);
    let session = Arc::new(OnceLock::new());
    let output_done = tokio::spawn(copy_lines(from_rmcp, output.clone()));
    tokio::spawn(read_requests(
        input,
        to_rmcp,
        output,
        server.clone(),
        session.clone(),
        gate.unwrap_or_default(),
    ));
    let service = server
        .serve(Bounded::new(AsyncRwTransport::new_server(
            rmcp_input,
            rmcp_output,
        )))
        .await
        .context("the MCP handshake failed")?;
    if let Some(direct) = service
        .peer()
        .peer_info()
        .and_then(|peer| DirectSession::for_peer(&peer))
    {
        let _ = session.set(direct);
    }
    Ok(StdioSession {
        service,
        output_done,
    })
}

/// rmcp's messages to the output, one whole line at a time.
async fn copy_lines<W: AsyncWrite + Unpin>(from_rmcp: DuplexStream, output: Output<W>) {
    let mut from_rmcp = BufReader::new(from_rmcp);
    let mut line = Vec::new();
    loop {
        line.clear();
        match from_rmcp.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if let Err(e) = write_line(&output, &line).await {
                    tracing::debug!(error = %e, "stdout closed");
                    return;
                }
            }
        }
    }
}

/// Write whole lines (one or several).
async fn write_line<W: AsyncWrite + Unpin>(output: &Output<W>, line: &[u8]) -> std::io::Result<()> {
    if line.is_empty() {
        return Ok(());
    }
    let mut output = output.lock().await;
    output.write_all(line).await?;
    output.flush().await
}

/// Read the input line by line: answer the direct lane's calls, hand
/// everything else to rmcp. Ends at the end of the input, closing rmcp's.
async fn read_requests<R, W>(
    input: R,
    mut to_rmcp: DuplexStream,
    output: Output<W>,
    server: ArbiterServer,
    session: Arc<OnceLock<DirectSession>>,
    gate: BusyPollGate,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut input = BufReader::with_capacity(64 * 1024, input);
    let writers = Arc::new(Semaphore::new(MAX_UNANSWERED));
    let mut line = Vec::new();
    // Reads answered here and not yet sent: while more requests are already
    // waiting, their records are committed together (one journal write) and
    // then their replies go out together (one write, one wake-up of the client).
    let mut batch = ReadBatch::default();
    let mut sender = BatchSender::start(server.clone(), output.clone());
    let mut answered_read = false;
    loop {
        if !batch.is_empty() && memchr::memchr(b'\n', input.buffer()).is_none() {
            sender.send(&mut batch).await;
        }
        line.clear();
        // Poll for the next request only after a read answered here with no
        // write of ours still running (see `PollingStdin`).
        gate.set(answered_read && writers.available_permits() == MAX_UNANSWERED);
        answered_read = false;
        let whole = match read_line(&mut input, &mut line, &mut to_rmcp).await {
            Ok(Some(whole)) => whole,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "reading stdin failed; ending the session");
                break;
            }
        };
        let request = match session.get() {
            Some(direct) if whole => direct::parse(&line).map(|request| (direct, request)),
            _ => None,
        };
        let Some((direct, request)) = request else {
            if to_rmcp.write_all(&line).await.is_err() {
                break; // rmcp's service has ended
            }
            continue;
        };
        let tracker = server.in_flight();
        if request.tool == "file_read" {
            batch.ids.push(request.id.clone());
            let ReadBatch {
                records, replies, ..
            } = &mut batch;
            tracker
                .track_future(direct::answer_into(
                    &server,
                    direct,
                    request,
                    Some(records),
                    replies,
                ))
                .await;
            answered_read = true;
            if batch.replies.len() >= REPLY_BATCH_BYTES {
                sender.send(&mut batch).await;
            }
        } else {
            let Ok(permit) = writers.clone().acquire_owned().await else {
                break;
            };
            let (server, direct, output) = (server.clone(), direct.clone(), output.clone());
            tracker.spawn(async move {
                let reply = direct::answer(&server, &direct, request, None).await;
                let _ = write_line(&output, &reply).await;
                drop(permit);
            });
        }
    }
    sender.send(&mut batch).await;
    sender.finish().await;
    // Whatever is left goes to rmcp, then its input ends.
    let _ = to_rmcp.shutdown().await;
}

/// Reads answered on the reading task whose replies wait for one another.
#[derive(Default)]
struct ReadBatch {
    /// Their audit records, not yet committed.
    records: Vec<AuditEntry>,
    ids: Vec<RequestId>,
    replies: Vec<u8>,
}

impl ReadBatch {
    fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Commit the records, then write the replies (each an AUDIT-001 error
    /// instead when the records could not be committed), and start afresh.
    async fn send<W: AsyncWrite + Unpin>(&mut self, server: &ArbiterServer, output: &Output<W>) {
        if self.is_empty() {
            return;
        }
        if let Err(e) = server
            .commit_records(std::mem::take(&mut self.records))
            .await
        {
            self.replies.clear();
            for id in self.ids.drain(..) {
                self.replies
                    .extend_from_slice(&direct::audit_failure_reply(id, &e));
            }
        }
        let _ = write_line(output, &self.replies).await;
        self.ids.clear();
        self.replies.clear();
    }
}

/// Batches of at least this many replies are sent by the [`BatchSender`]'s
/// thread; fewer (a client waiting for each reply) right on the reading task.
const HANDOFF_REPLIES: usize = 4;

/// Sends [`ReadBatch`]es on a thread of its own, so that committing one
/// batch's records and writing its replies overlaps answering the next.
///
/// Why: in a pipelined burst the reading task is the bottleneck (one core),
/// and a fifth of its time went to sending. A lone reply is still sent
/// right there: the hop to another thread would wake it, which on a
/// virtual machine whose idle vCPUs halt costs more than the send itself.
///
/// One batch at a time is with the thread: the next is handed off (or sent
/// here) only once it has come back sent. So batches go out in the order
/// they were answered, their records join the chain in the order of their
/// calls, and there are two reply buffers, not more.
struct BatchSender<W> {
    /// To the thread.
    queue: tokio::sync::mpsc::Sender<ReadBatch>,
    /// From the thread: each batch once sent, emptied, its buffers kept.
    sent: tokio::sync::mpsc::Receiver<ReadBatch>,
    /// A batch is with the thread.
    in_flight: bool,
    /// The buffers of the last batch that came back.
    spare: ReadBatch,
    thread: tokio::task::JoinHandle<()>,
    server: ArbiterServer,
    output: Output<W>,
}

impl<W: AsyncWrite + Unpin + Send + 'static> BatchSender<W> {
    fn start(server: ArbiterServer, output: Output<W>) -> Self {
        let (queue, mut handed_off) = tokio::sync::mpsc::channel::<ReadBatch>(1);
        let (give_back, sent) = tokio::sync::mpsc::channel(1);
        let runtime = tokio::runtime::Handle::current();
        let thread = tokio::task::spawn_blocking({
            let (server, output) = (server.clone(), output.clone());
            move || {
                while let Some(mut batch) = handed_off.blocking_recv() {
                    runtime.block_on(batch.send(&server, &output));
                    if give_back.blocking_send(batch).is_err() {
                        return;
                    }
                }
            }
        });
        Self {
            queue,
            sent,
            in_flight: false,
            spare: ReadBatch::default(),
            thread,
            server,
            output,
        }
    }

    /// Send `batch` (left empty), here or on the thread (see above).
    async fn send(&mut self, batch: &mut ReadBatch) {
        if batch.is_empty() {
            return;
        }
        self.wait_for_the_thread().await;
        if batch.ids.len() < HANDOFF_REPLIES {
            batch.send(&self.server, &self.output).await;
            // Calls one at a time again: the burst's second buffer goes.
            self.spare = ReadBatch::default();
            return;
        }
        let full = std::mem::replace(batch, std::mem::take(&mut self.spare));
        match self.queue.send(full).await {
            Ok(()) => self.in_flight = true,
            // The thread is gone (it panicked): send here.
            Err(refused) => {
                self.spare = refused.0;
                self.spare.send(&self.server, &self.output).await;
            }
        }
    }

    /// Until the batch with the thread (if any) is sent.
    async fn wait_for_the_thread(&mut self) {
        if std::mem::take(&mut self.in_flight)
            && let Some(sent) = self.sent.recv().await
        {
            self.spare = sent;
        }
    }

    /// Wait until everything handed off is sent.
    async fn finish(mut self) {
        self.wait_for_the_thread().await;
        drop(self.queue);
        let _ = self.thread.await;
    }
}

/// Read the next line (with its `\n`) into `line`: `Some(true)` when it is
/// whole, `Some(false)` for the last bytes before the end of the input
/// without a `\n`, `None` at the end. A line longer than rmcp's limit is
/// passed on to rmcp as it arrives (rmcp drops it and says so) and reported
/// as an empty, not whole, line.
async fn read_line<R: AsyncRead + Unpin>(
    input: &mut BufReader<R>,
    line: &mut Vec<u8>,
    to_rmcp: &mut DuplexStream,
) -> std::io::Result<Option<bool>> {
    let mut passed_on = false;
    loop {
        let buffer = input.fill_buf().await?;
        if buffer.is_empty() {
            return Ok((!line.is_empty() || passed_on).then_some(false));
        }
        let (chunk, done) = match memchr::memchr(b'\n', buffer) {
            Some(end) => (&buffer[..=end], true),
            None => (buffer, false),
        };
        line.extend_from_slice(chunk);
        let used = chunk.len();
        input.consume(used);
        if line.len() > DEFAULT_MAX_LINE_LENGTH {
            to_rmcp.write_all(line).await?;
            line.clear();
            passed_on = true;
        }
        if done {
            return Ok(Some(!passed_on));
        }
    }
}
