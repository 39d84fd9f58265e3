//! The HTTP server's connections: accepting them, and the timeouts that keep
//! a slow or stalled client from holding one forever.
//!
//! `axum::serve` sets no timer on hyper, so a client could send its headers
//! a byte at a time for ever, and a client that stops reading a stream kept
//! its connection (and the stream's session) as long as the socket buffers
//! were not full, and for ever once they were. Here:
//!
//! - **read timeout**: a request's headers must arrive within it (hyper's
//!   `header_read_timeout`, which also closes a kept-alive connection idle
//!   that long), and its body within it again ([`body_deadline`]);
//! - **write timeout**: a connection whose writes make no progress for that
//!   long (the client's receive window stays full) fails, which drops its
//!   response streams: an SSE session ends with its stream ([`WriteDeadline`]).
//!
//! Idle sessions whose client still reads are the sessions' business
//! (`--session-idle-timeout`, see `http.rs` and `sse.rs`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Connection timeouts (`serve --read-timeout`, `--write-timeout`).
#[derive(Debug, Clone, Copy)]
pub struct ConnTimeouts {
    pub read: Duration,
    pub write: Duration,
}

/// Serve `router` on `listener` until `accepting` is cancelled, then let
/// open connections finish their responses (streams end when their sessions
/// do) and return once every connection is closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    timeouts: ConnTimeouts,
    accepting: CancellationToken,
) {
    let router = router.layer(axum::middleware::from_fn_with_state(
        timeouts.read,
        body_deadline,
    ));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(timeouts.read);
    let connections = TaskTracker::new();
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = accepting.cancelled() => break,
        };
        // An SSE reply goes out in several small writes (priming event, then
        // the message): with Nagle's algorithm on, each waits for the client's
        // delayed ACK, about 40 ms a call on Linux (tools/bench: arbiter-bench-http).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let io = TokioIo::new(WriteDeadline::new(tcp, timeouts.write));
        let service = TowerToHyperService::new(router.clone());
        let connection = http.serve_connection(io, service);
        let accepting = accepting.clone();
        connections.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection closed with an error");
                    }
                    return;
                }
                () = accepting.cancelled() => connection.as_mut().graceful_shutdown(),
            }
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection closed with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Errors of `accept` that concern one connection are skipped; others (out
/// of file descriptors) are logged, and accepting pauses a moment.
async fn accept_failed(e: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "cannot accept connections; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Middleware: the request's body must arrive within the read timeout.
async fn body_deadline(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    let deadline = Instant::now() + limit;
    next.run(request.map(|body| {
        Body::new(DeadlineBody {
            inner: body,
            deadline,
            sleep: None,
        })
    }))
    .await
}

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time (serve --read-timeout)")]
struct BodyTimedOut;

/// A body that fails once its deadline passes before it has all arrived.
struct DeadlineBody {
    inner: Body,
    deadline: Instant,
    /// Made on the first wait only: most bodies arrive with their headers.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        let deadline = self.deadline;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        ready!(sleep.as_mut().poll(cx));
        tracing::info!("a request body arrived too slowly; the connection is closed");
        Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A TCP stream whose writes fail after making no progress for `limit`: the
/// client stopped reading and its receive window is full.
pub struct WriteDeadline {
    inner: TcpStream,
    limit: Duration,
    /// Armed when a write first waits; cleared when one goes through.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl WriteDeadline {
    pub fn new(inner: TcpStream, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            stalled: None,
        }
    }

    /// What a write that waits returns: still waiting, or the timeout.
    fn wait<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let limit = self.limit;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(stalled.as_mut().poll(cx));
        tracing::info!(
            timeout = ?limit,
            "a client read nothing of what was sent to it; its connection is closed"
        );
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client stopped reading (serve --write-timeout)",
        )))
    }

    fn progress<T>(
        &mut self,
        done: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match done {
            Poll::Ready(result) => {
                self.stalled = None;
                Poll::Ready(result)
            }
            Poll::Pending => self.wait(cx),
        }
    }
}

impl AsyncRead for WriteDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let done = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progress(done, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let done = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progress(done, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let done = Pin::new(&mut self.inner).poll_flush(cx);
        self.progress(done, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let done = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.progress(done, cx)
    }
}
