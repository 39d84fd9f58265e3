//! Replies still on their way to a client. A streamable HTTP `POST` is
//! answered by a stream that ends after the last reply; a stopping server
//! waits for these streams (not for the long-lived `GET` streams), so that a
//! call finished during shutdown is also delivered before sessions end.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use http_body::{Body as HttpBody, Frame, SizeHint};

/// How many reply streams are open.
#[derive(Default)]
pub struct Replies {
    open: AtomicUsize,
    changed: tokio::sync::Notify,
}

impl Replies {
    /// `body`, counted as open until it ends or is dropped.
    pub fn track(self: &Arc<Self>, body: Body) -> Body {
        self.open.fetch_add(1, Ordering::SeqCst);
        Body::new(Counted {
            inner: body,
            _open: Open(self.clone()),
        })
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Wait until no reply stream is open, or `limit` passes; returns the
    /// number still open.
    pub async fn wait_closed(&self, limit: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let changed = self.changed.notified();
            if self.open() == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.open();
            }
        }
    }
}

/// Decrements the count when the body is done with.
struct Open(Arc<Replies>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

struct Counted {
    inner: Body,
    _open: Open,
}

impl HttpBody for Counted {
    type Data = <Body as HttpBody>::Data;
    type Error = <Body as HttpBody>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reply_is_open_until_its_body_is_dropped() {
        let replies = Arc::new(Replies::default());
        let body = replies.track(Body::from("x"));
        assert_eq!(replies.open(), 1);
        assert_eq!(replies.wait_closed(Duration::from_millis(10)).await, 1);
        let waiter = {
            let replies = replies.clone();
            tokio::spawn(async move { replies.wait_closed(Duration::from_secs(10)).await })
        };
        tokio::task::yield_now().await;
        drop(body);
        assert_eq!(waiter.await.unwrap(), 0);
    }
}
