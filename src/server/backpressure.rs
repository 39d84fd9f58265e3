//! Backpressure for a message transport: stop reading new requests while too
//! many are unanswered.
//!
//! rmcp reads requests as fast as they arrive and spawns a task for each, so a
//! client that pipelines thousands of calls makes the server hold thousands of
//! half-done calls at once, and the memory stays with the process afterwards.
//! Wrapping the transport keeps at most [`MAX_UNANSWERED`] requests inside the
//! server; the rest wait in the pipe, which is where backpressure belongs.
//!
//! A request may legitimately wait for the client (an elicitation, a sampling
//! call), and that answer can only arrive if we keep reading; so a full server
//! waits at most [`STALL_LIMIT`] and then reads anyway rather than deadlock.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::RoleServer;
use rmcp::model::{ClientNotification, JsonRpcMessage, RequestId};
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use tokio::sync::Notify;

/// Requests read but not yet answered, at most.
pub const MAX_UNANSWERED: usize = 32;
/// How long a full server waits for an answer to go out before reading anyway.
pub const STALL_LIMIT: Duration = Duration::from_millis(250);

/// A transport that reads a new message only while fewer than
/// [`MAX_UNANSWERED`] requests are open.
pub struct Bounded<T> {
    inner: T,
    open: Arc<OpenRequests>,
}

#[derive(Default)]
struct OpenRequests {
    ids: Mutex<HashSet<RequestId>>,
    answered: Notify,
}

impl OpenRequests {
    fn len(&self) -> usize {
        self.ids.lock().map_or(0, |ids| ids.len())
    }

    fn open(&self, id: RequestId) {
        if let Ok(mut ids) = self.ids.lock() {
            ids.insert(id);
        }
    }

    fn close(&self, id: &RequestId) {
        let removed = self.ids.lock().is_ok_and(|mut ids| ids.remove(id));
        if removed {
            self.answered.notify_one();
        }
    }
}

impl<T> Bounded<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            open: Arc::default(),
        }
    }
}

impl<T: Transport<RoleServer>> Transport<RoleServer> for Bounded<T> {
    type Error = T::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let answered = match &item {
            JsonRpcMessage::Response(response) => Some(response.id.clone()),
            JsonRpcMessage::Error(error) => error.id.clone(),
            _ => None,
        };
        let send = self.inner.send(item);
        let open = self.open.clone();
        async move {
            let result = send.await;
            if let Some(id) = answered {
                open.close(&id);
            }
            result
        }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        while self.open.len() >= MAX_UNANSWERED {
            let answered = self.open.answered.notified();
            if tokio::time::timeout(STALL_LIMIT, answered).await.is_err() {
                tracing::debug!(
                    open = self.open.len(),
                    "no answer went out for a while; reading the next message anyway"
                );
                break;
            }
        }
        let message = self.inner.receive().await?;
        match &message {
            JsonRpcMessage::Request(request) => self.open.open(request.id.clone()),
            JsonRpcMessage::Notification(notification) => {
                // A cancelled request gets no answer: it no longer counts.
                if let ClientNotification::CancelledNotification(cancelled) =
                    &notification.notification
                    && let Some(id) = &cancelled.params.request_id
                {
                    self.open.close(id);
                }
            }
            _ => {}
        }
        Some(message)
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.inner.close()
    }
}
