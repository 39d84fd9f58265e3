//! The older HTTP+SSE transport (MCP 2024-11-05), for clients that still use
//! it: `GET /sse` opens an event stream whose first event, `endpoint`, names
//! the URL to POST to (`messages?sessionId=ID`, relative to the stream's URL); each POST carries one
//! JSON-RPC message and gets 202, and the server's answers and notifications
//! go out on the stream as `message` events.
//!
//! rmcp dropped this transport, so only the HTTP part lives here: each stream
//! runs one `ArbiterServer` served by rmcp over a pair of channels, so the MCP
//! session logic (handshake, requests, cancellation) is rmcp's, as on `/mcp`.
//!
//! The rules are those of `/mcp`: a token unless `--no-auth`, admin tokens
//! refused, the same `Host`/`Origin` checks and body limit. A session is bound
//! to the token that opened it: a POST with another token gets 404, exactly
//! as for an id that does not exist, so ids cannot be probed. The session
//! ends (its server dropped, with its terminal sessions and jobs) when the
//! stream closes, the token is revoked, or the server stops.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use rmcp::RoleServer;
use rmcp::ServiceExt;
use rmcp::model::JsonRpcMessage;
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ArbiterServer;
use super::auth::TokenCache;
use super::backpressure::Bounded;
use super::http::{Caller, MAX_BODY_BYTES, identify, json_error};
use super::rate::RateLimits;
use super::tenants::TenantRegistry;

/// Messages a POST may queue for a session before it waits for the server.
const INBOX: usize = 32;
/// Messages the server may queue for a slow stream before its sends wait.
const OUTBOX: usize = 64;
/// A comment on an idle stream, so proxies and clients do not time it out and
/// a vanished client is noticed (the write fails, the stream is dropped).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How long a session may be idle unless the server is told otherwise.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// The keep-alive interval of SSE streams (here and on `/mcp`): at most
/// [`KEEP_ALIVE`], and several within a session's idle timeout, whose clock
/// keep-alives do not reset.
pub fn keep_alive_interval(idle_timeout: Duration) -> Duration {
    KEEP_ALIVE.min(idle_timeout / 3)
}

type ClientMessage = RxJsonRpcMessage<RoleServer>;
type ServerMessage = TxJsonRpcMessage<RoleServer>;

/// What `/sse` and `/messages` need of the server's settings.
pub struct SseState {
    pub tenants: Arc<TenantRegistry>,
    pub require_token: bool,
    /// `Host` values accepted (names, optionally with a port).
    pub allowed_hosts: Vec<String>,
    /// Browser origins accepted; a request without `Origin` is not a browser's.
    pub allowed_origins: Vec<String>,
    /// Cancelled when the server stops: every session's token is a child.
    pub stop: CancellationToken,
    /// Per-token request limits, shared with `/mcp`.
    pub limits: Arc<RateLimits>,
    /// Tokens recently verified, shared with `/mcp` and `/admin`.
    pub tokens: Arc<TokenCache>,
    /// A session with no message either way and no call running for this
    /// long is closed (`serve --session-idle-timeout`).
    idle_timeout: Duration,
    sessions: Arc<Sessions>,
}

impl SseState {
    /// Host and Origin first (a foreign page gets 403 whatever it sends),
    /// then the token; a revoked token's sessions are forgotten.
    async fn admit(&self, headers: &HeaderMap) -> Result<Caller, Response> {
        if let Some(refused) = super::origin::refuse_host_or_origin(
            &self.allowed_hosts,
            &self.allowed_origins,
            headers,
        ) {
            return Err(refused);
        }
        identify(
            &self.tenants,
            self.require_token,
            &self.limits,
            &self.tokens,
            headers,
        )
        .await
        .map_err(|refused| {
            if let Some(id) = refused.revoked {
                self.forget(id);
            }
            refused.response
        })
    }

    pub fn new(
        tenants: Arc<TenantRegistry>,
        require_token: bool,
        allowed_hosts: Vec<String>,
        allowed_origins: Vec<String>,
        stop: CancellationToken,
        limits: Arc<RateLimits>,
        tokens: Arc<TokenCache>,
    ) -> Self {
        Self {
            tenants,
            require_token,
            allowed_hosts,
            allowed_origins,
            stop,
            limits,
            tokens,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            sessions: Arc::default(),
        }
    }

    /// Close sessions idle for `timeout` (`serve --session-idle-timeout`).
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// End every SSE session of a revoked token.
    pub fn forget(&self, token: i64) {
        for session in self.sessions.remove_token(token) {
            tracing::info!(token, "token revoked: its SSE session is closed");
            session.ends.cancel();
        }
    }

    /// Open SSE sessions (for metrics and tests of clean-up).
    pub fn active(&self) -> usize {
        self.sessions.lock().len()
    }
}

pub fn router(state: Arc<SseState>) -> Router {
    Router::new()
        .route("/sse", get(open))
        .route("/messages", post(message))
        .with_state(state)
}

/// One open stream: where its POSTs go, and who may send them.
struct Session {
    token: Option<i64>,
    inbox: mpsc::Sender<ClientMessage>,
    ends: CancellationToken,
}

#[derive(Default)]
struct Sessions(Mutex<HashMap<String, Session>>);

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Dropping the session's inbox sender lets its server read the end.
    fn remove(&self, id: &str) -> Option<Session> {
        self.lock().remove(id)
    }

    fn remove_token(&self, token: i64) -> Vec<Session> {
        let mut sessions = self.lock();
        let ids: Vec<String> = sessions
            .iter()
            .filter(|(_, s)| s.token == Some(token))
            .map(|(id, _)| id.clone())
            .collect();
        ids.iter().filter_map(|id| sessions.remove(id)).collect()
    }
}

/// rmcp's side of a session: messages POSTed in, messages streamed out.
struct Channels {
    inbox: mpsc::Receiver<ClientMessage>,
    outbox: mpsc::Sender<ServerMessage>,
    activity: Arc<Activity>,
}

/// When a session last passed a message either way, and how many of its
/// client's requests are unanswered (a long call is not idleness). The
/// stream's keep-alive comments are not messages: they keep nothing alive.
struct Activity(Mutex<(Instant, usize)>);

impl Activity {
    fn new() -> Self {
        Self(Mutex::new((Instant::now(), 0)))
    }

    fn touch(&self, opened: usize, answered: usize) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        state.0 = Instant::now();
        state.1 = (state.1 + opened).saturating_sub(answered);
    }

    /// When the session becomes idle, unless something happens first;
    /// `None` while a call runs.
    fn idle_at(&self, timeout: Duration) -> Option<Instant> {
        let state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        (state.1 == 0).then(|| state.0 + timeout)
    }
}

/// Close the session once it has been idle for `timeout`.
async fn close_when_idle(activity: Arc<Activity>, timeout: Duration, ends: CancellationToken) {
    loop {
        let check = match activity.idle_at(timeout) {
            Some(at) if at <= Instant::now() => break,
            Some(at) => at,
            // A call is running: look again later.
            None => Instant::now() + timeout,
        };
        tokio::select! {
            () = tokio::time::sleep_until(check) => {}
            () = ends.cancelled() => return,
        }
    }
    tracing::info!(timeout = ?timeout, "SSE session idle; it is closed");
    ends.cancel();
}

#[derive(Debug, thiserror::Error)]
#[error("the SSE stream of this session is closed")]
struct StreamClosed;

impl Transport<RoleServer> for Channels {
    type Error = StreamClosed;

    fn send(
        &mut self,
        item: ServerMessage,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let outbox = self.outbox.clone();
        let activity = self.activity.clone();
        let answer = matches!(item, JsonRpcMessage::Response(_) | JsonRpcMessage::Error(_));
        async move {
            outbox.send(item).await.map_err(|_| StreamClosed)?;
            activity.touch(0, usize::from(answer));
            Ok(())
        }
    }

    async fn receive(&mut self) -> Option<ClientMessage> {
        let message = self.inbox.recv().await?;
        let request = matches!(message, JsonRpcMessage::Request(_));
        self.activity.touch(usize::from(request), 0);
        Some(message)
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.inbox.close();
        Ok(())
    }
}

/// Removes the session when its stream is dropped (the client went away or
/// the server stops), which ends its MCP server.
struct StreamGuard {
    id: String,
    sessions: Arc<Sessions>,
    ends: CancellationToken,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.sessions.remove(&self.id).is_some() {
            tracing::info!(session = %self.id, "SSE stream closed; its MCP session ends");
        }
        self.ends.cancel();
    }
}

/// `GET /sse`: authenticate, start a session's server, stream its messages.
async fn open(State(state): State<Arc<SseState>>, headers: HeaderMap) -> Response {
    let Caller {
        token,
        identity,
        runtime,
    } = match state.admit(&headers).await {
        Ok(caller) => caller,
        Err(refused) => return refused,
    };
    let (toolbox, audit) = (runtime.toolbox.clone(), runtime.audit.clone());
    let server = match identity {
        Some(identity) => ArbiterServer::acting_for(toolbox, audit, identity),
        None => ArbiterServer::new(toolbox, audit),
    };

    // 128 random bits (uuid v4 from the OS generator): not guessable, and
    // bound to the token anyway.
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (inbox_tx, inbox_rx) = mpsc::channel(INBOX);
    let (outbox_tx, outbox_rx) = mpsc::channel(OUTBOX);
    let ends = state.stop.child_token();
    state.sessions.lock().insert(
        id.clone(),
        Session {
            token,
            inbox: inbox_tx,
            ends: ends.clone(),
        },
    );
    tracing::info!(session = %id, token = ?token, "SSE session opened");

    let activity = Arc::new(Activity::new());
    let idle_timeout = state.idle_timeout;
    tokio::spawn(close_when_idle(
        activity.clone(),
        idle_timeout,
        ends.clone(),
    ));
    let transport = Bounded::new(Channels {
        inbox: inbox_rx,
        outbox: outbox_tx,
        activity,
    });
    tokio::spawn(run_session(
        server,
        transport,
        ends.clone(),
        id.clone(),
        state.sessions.clone(),
    ));

    let endpoint = Event::default()
        .event("endpoint")
        // Relative to the stream's URL, so a proxy that serves this server
        // under a path prefix (`/prefix/sse`) gets `/prefix/messages`.
        .data(format!("messages?sessionId={id}"));
    let guard = StreamGuard {
        id,
        sessions: state.sessions.clone(),
        ends,
    };
    let messages = futures::stream::unfold((outbox_rx, guard), |(mut outbox, guard)| async move {
        let message = tokio::select! {
            // Send what the server already said before ending.
            biased;
            message = outbox.recv() => message,
            () = guard.ends.cancelled() => None,
        }?;
        let data = match serde_json::to_string(&message) {
            Ok(data) => data,
            Err(e) => {
                tracing::error!(error = %e, "a server message could not be encoded");
                return None;
            }
        };
        Some((
            Event::default().event("message").data(data),
            (outbox, guard),
        ))
    });
    let stream = futures::stream::once(async { endpoint })
        .chain(messages)
        .map(Ok::<_, Infallible>);
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(keep_alive_interval(idle_timeout)))
        .into_response()
}

/// Serve one session until its client, its stream or the server ends it.
async fn run_session(
    server: ArbiterServer,
    transport: Bounded<Channels>,
    ends: CancellationToken,
    id: String,
    sessions: Arc<Sessions>,
) {
    match server.serve_with_ct(transport, ends.clone()).await {
        Ok(service) => {
            if let Err(e) = service.waiting().await {
                tracing::warn!(session = %id, error = %e, "SSE session ended with an error");
            }
        }
        Err(e) => tracing::info!(session = %id, error = %e, "SSE session ended before initialize"),
    }
    // The server is gone: close the stream, and forget the id.
    ends.cancel();
    sessions.remove(&id);
}

/// `POST /messages?sessionId=ID`: one JSON-RPC message for a session's server.
async fn message(State(state): State<Arc<SseState>>, request: Request) -> Response {
    let headers = request.headers().clone();
    let caller = match state.admit(&headers).await {
        Ok(caller) => caller,
        Err(refused) => return refused,
    };
    let id = request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("sessionId="))
        .unwrap_or("")
        .to_string();
    // Another token's session is answered like one that does not exist.
    let inbox = state
        .sessions
        .lock()
        .get(&id)
        .filter(|s| s.token == caller.token)
        .map(|s| s.inbox.clone());
    let Some(inbox) = inbox else {
        return session_not_found();
    };
    let body = match axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(_) => {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                &format!("a message is at most {MAX_BODY_BYTES} bytes"),
            );
        }
    };
    let message: ClientMessage = match serde_json::from_slice(&body) {
        Ok(message) => message,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "bad_message",
                &format!("the body must be one JSON-RPC message: {e}"),
            );
        }
    };
    if inbox.send(message).await.is_err() {
        return session_not_found();
    }
    (
        StatusCode::ACCEPTED,
        [(header::CONTENT_TYPE, "text/plain")],
        "Accepted",
    )
        .into_response()
}

fn session_not_found() -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        "session_not_found",
        "no such SSE session for this token: its stream closed, or it was opened with another \
         token; open a new one with GET /sse",
    )
}
