//! `arbiter serve --http ADDR`: MCP over streamable HTTP at `/mcp` (rmcp's
//! server on axum), the legacy HTTP+SSE transport at `/sse` (see `sse.rs`),
//! the probes `/healthz` and `/readyz`, and `/metrics` (see `metrics.rs`).
//!
//! Every request to `/mcp` is authenticated first (unless `--no-auth`), then
//! handed to an MCP endpoint of its own token: one rmcp service and session
//! manager per token, whose sessions are built on the token's tenant and act
//! for its agent. A session id is thereby bound to the token that made it:
//! under another token it does not exist. rmcp checks `Host` and `Origin`
//! (DNS rebinding) and the body size.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{
    SessionManager, StreamableHttpServerConfig, StreamableHttpService,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::ArbiterServer;
use super::auth::{self, AuthFailure, SessionIdentity};
use super::http_direct::{self, DirectSessions};
use super::rate::{OverLimit, RateLimit, RateLimits};
use super::replies::Replies;
use super::tenants::{TenantError, TenantRegistry, TenantRuntime};
use crate::store::DEFAULT_TENANT;

/// Largest request body: the same as the stdio transport's longest line.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// How long a stopping server waits for the calls in progress.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long it then waits for connections to close.
const STREAM_CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How long an ended session may take to leave rmcp's session manager.
const SESSION_TEARDOWN: Duration = Duration::from_millis(500);
/// The header that carries an MCP session id.
pub(super) const SESSION_HEADER: &str = "mcp-session-id";

/// How the operator asked to serve.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub addr: SocketAddr,
    /// Serve without tokens (loopback only): every session is tenant `default`.
    pub no_auth: bool,
    /// `Host` values accepted besides the loopback names and the bound address.
    pub allowed_hosts: Vec<String>,
    /// Browser origins accepted; any other `Origin` gets 403. Requests without
    /// an `Origin` header (not from a browser) are not affected.
    pub allowed_origins: Vec<String>,
    /// Requests per token, unless the token has its own limit.
    pub rate_limit: RateLimit,
    /// How long a verified token is trusted before the store is asked again.
    pub token_cache_ttl: Duration,
    /// Slow or stalled clients: request read and response write timeouts.
    pub timeouts: super::conn::ConnTimeouts,
    /// An MCP session with no message either way for this long is closed
    /// (keep-alive comments do not count).
    pub session_idle_timeout: Duration,
}

/// Refuse what must not start: `--no-auth` where others can connect.
pub fn check_options(options: &HttpOptions) -> anyhow::Result<()> {
    if options.no_auth && !options.addr.ip().is_loopback() {
        anyhow::bail!(
            "--no-auth is refused on {}: without tokens, anyone who can reach that address \
             would act on the workspace. Bind a loopback address (--http 127.0.0.1:PORT), or \
             drop --no-auth and give each client a token (`arbiter token create`).",
            options.addr
        );
    }
    Ok(())
}

type McpService = StreamableHttpService<ArbiterServer, LocalSessionManager>;

/// The MCP service of one token (or of everyone, with `--no-auth`).
struct Endpoint {
    service: McpService,
    sessions: Arc<LocalSessionManager>,
    /// Ends this endpoint's sessions (the token was revoked).
    ends: CancellationToken,
    /// Its sessions whose plain file-tool calls skip rmcp (`http_direct.rs`).
    lane: Arc<DirectSessions>,
}

struct App {
    tenants: Arc<TenantRegistry>,
    require_token: bool,
    /// rmcp's settings, shared by every endpoint.
    config: StreamableHttpServerConfig,
    /// Cancelled when the server stops: every endpoint's token is a child.
    stop: CancellationToken,
    /// By token id; `None` is the one endpoint of `--no-auth`.
    endpoints: Mutex<HashMap<Option<i64>, Arc<Endpoint>>>,
    /// The legacy HTTP+SSE transport's sessions (`/sse`).
    sse: Arc<super::sse::SseState>,
    /// Reply streams of `POST /mcp` still open.
    replies: Arc<Replies>,
    session_idle_timeout: Duration,
}

impl Endpoint {
    async fn has_session(&self, id: &str) -> bool {
        self.sessions.has_session(&id.into()).await.unwrap_or(false)
    }

    /// Whether session `id` is gone within [`SESSION_TEARDOWN`] (rmcp
    /// removes a session only after its worker has wound down).
    async fn forgets_session(&self, id: &str) -> bool {
        let deadline = tokio::time::Instant::now() + SESSION_TEARDOWN;
        while self.has_session(id).await {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

impl App {
    /// The endpoint of a token, made on its first request.
    fn endpoint(
        &self,
        token: Option<i64>,
        runtime: &Arc<TenantRuntime>,
        identity: Option<SessionIdentity>,
    ) -> Arc<Endpoint> {
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        endpoints
            .entry(token)
            .or_insert_with(|| {
                let ends = self.stop.child_token();
                let mut manager = LocalSessionManager::default();
                // rmcp closes a session with no message either way for this
                // long; its SSE keep-alives do not count.
                manager.session_config.keep_alive = Some(self.session_idle_timeout);
                let sessions = Arc::new(manager);
                let lane = Arc::new(DirectSessions::new(self.session_idle_timeout));
                let joins = lane.clone();
                let runtime = runtime.clone();
                let service = StreamableHttpService::new(
                    move || {
                        let (toolbox, audit) = (runtime.toolbox.clone(), runtime.audit.clone());
                        let server = match &identity {
                            Some(identity) => {
                                ArbiterServer::acting_for(toolbox, audit, identity.clone())
                            }
                            None => ArbiterServer::new(toolbox, audit),
                        };
                        Ok(server.with_http_lane(joins.clone()))
                    },
                    sessions.clone(),
                    self.config.clone().with_cancellation_token(ends.clone()),
                );
                Arc::new(Endpoint {
                    service,
                    sessions,
                    ends,
                    lane,
                })
            })
            .clone()
    }

    /// Drop a revoked token's endpoint and end its sessions.
    fn forget(&self, token: i64) {
        let removed = self
            .endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&Some(token));
        if let Some(endpoint) = removed {
            tracing::info!(token, "token revoked: its MCP sessions are closed");
            endpoint.ends.cancel();
        }
        self.sse.forget(token);
    }
}

/// Serve until `stop_signal` resolves, then close sessions and connections.
pub async fn serve(
    options: HttpOptions,
    tenants: Arc<TenantRegistry>,
    stop_signal: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    check_options(&options)?;
    let listener = tokio::net::TcpListener::bind(options.addr)
        .await
        .with_context(|| format!("cannot listen on {}", options.addr))?;
    let bound = listener.local_addr()?;
    warn_about_exposure(&options, bound);

    let stop = CancellationToken::new();
    let origins = super::origin::with_own_origins(bound, &options.allowed_origins);
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(allowed_hosts(&options, bound))
        .with_allowed_origins(origins.clone())
        // An empty list would switch Origin checks off (rmcp's default):
        // a browser page must never drive this server unless allowed.
        .enforce_origin_validation()
        .with_max_request_body_bytes(MAX_BODY_BYTES)
        .with_sse_keep_alive(Some(super::sse::keep_alive_interval(
            options.session_idle_timeout,
        )))
        .with_cancellation_token(stop.clone());
    let sse = Arc::new(
        super::sse::SseState::new(
            tenants.clone(),
            !options.no_auth,
            allowed_hosts(&options, bound),
            origins.clone(),
            stop.clone(),
            Arc::new(RateLimits::with_store(
                options.rate_limit,
                tenants.default_tenant().toolbox.store.clone(),
            )),
            Arc::new(auth::TokenCache::new(options.token_cache_ttl)),
        )
        .with_idle_timeout(options.session_idle_timeout),
    );
    let replies = Arc::new(Replies::default());
    let app = Arc::new(App {
        tenants: tenants.clone(),
        require_token: !options.no_auth,
        config,
        stop: stop.clone(),
        endpoints: Mutex::new(HashMap::new()),
        sse: sse.clone(),
        replies: replies.clone(),
        session_idle_timeout: options.session_idle_timeout,
    });
    let admin = super::admin::router(super::admin::AdminState {
        tenants: app.tenants.clone(),
        tokens: sse.tokens.clone(),
        allowed_hosts: allowed_hosts(&options, bound),
        allowed_origins: origins,
    });
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/mcp", any(mcp))
        .with_state(app)
        .merge(admin)
        .merge(super::console::router(
            tenants.clone(),
            allowed_hosts(&options, bound),
            options.allowed_origins.clone(),
        ))
        .merge(super::sse::router(sse));

    tracing::info!(
        url = %format!("http://{bound}/mcp"),
        auth = if options.no_auth { "none" } else { "bearer token" },
        "arbiter serving MCP over streamable HTTP"
    );
    // The start (policy compiler, migrations, schemas, the router) is done:
    // its code need not stay resident, as over stdio.
    crate::memory::drop_clean_file_pages();
    // Cancelled first at shutdown: no new connections, and open ones close
    // once their request is answered (streams stay until `stop`).
    let accepting = CancellationToken::new();
    let no_more = accepting.clone();
    let server = super::conn::serve(listener, router, options.timeouts, no_more);
    let mut server = std::pin::pin!(server);
    tokio::select! {
        () = &mut server => anyhow::bail!("the HTTP server stopped accepting connections"),
        () = stop_signal => {
            accepting.cancel();
            drain_calls(&tenants).await;
            // Let the replies of those calls reach their clients.
            let open = replies.wait_closed(STREAM_CLOSE_GRACE).await;
            if open > 0 {
                tracing::warn!(open, "replies still being sent at shutdown were cut off");
            }
            // Now end every session and its streams, and let connections close.
            stop.cancel();
            if tokio::time::timeout(STREAM_CLOSE_GRACE, server).await.is_err() {
                tracing::warn!("connections still open at shutdown were dropped");
            }
        }
    }
    Ok(())
}

/// Stop every tenant's running commands (they end as cancelled, with their
/// records) and let the calls in progress finish and answer, up to
/// [`SHUTDOWN_GRACE`].
async fn drain_calls(tenants: &TenantRegistry) {
    let opened = tenants.opened().await;
    for tenant in &opened {
        tenant.toolbox.shutdown.cancel();
        tenant.toolbox.calls.close();
    }
    let running: usize = opened.iter().map(|t| t.toolbox.calls.len()).sum();
    if running > 0 {
        tracing::info!(running, "waiting for calls in progress to finish");
    }
    let all = futures::future::join_all(opened.iter().map(|t| t.toolbox.calls.wait()));
    if tokio::time::timeout(SHUTDOWN_GRACE, all).await.is_err() {
        let left: usize = opened.iter().map(|t| t.toolbox.calls.len()).sum();
        tracing::warn!(
            running = left,
            "calls still running at the shutdown deadline were abandoned"
        );
    }
}

/// A non-loopback server is reachable by others: say so where it cannot be missed.
fn warn_about_exposure(options: &HttpOptions, bound: SocketAddr) {
    if !bound.ip().is_loopback() {
        tracing::warn!(
            addr = %bound,
            "!!! arbiter is listening on a NON-LOOPBACK address: anyone who can reach {bound} \
             can try tokens against it, and traffic is plain HTTP (put TLS in front of it). \
             Bind 127.0.0.1 unless other machines must connect. !!!"
        );
        if bound.ip().is_unspecified() && options.allowed_hosts.is_empty() {
            tracing::warn!(
                "listening on every address, but only loopback Host names are accepted: \
                 add --allowed-host NAME for each name clients use to reach this machine"
            );
        }
    }
    if options.no_auth {
        tracing::warn!(
            "--no-auth: requests are not authenticated; every session acts as tenant `default`"
        );
    }
}

/// `Host` values accepted: loopback names, the bound address, and the operator's.
fn allowed_hosts(options: &HttpOptions, bound: SocketAddr) -> Vec<String> {
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"]
        .into_iter()
        .map(String::from)
        .collect();
    if !bound.ip().is_unspecified() {
        hosts.push(bound.ip().to_string());
    }
    hosts.extend(options.allowed_hosts.iter().cloned());
    hosts.sort();
    hosts.dedup();
    hosts
}

/// `GET /healthz`: the process is up.
async fn healthz() -> Response {
    json_response(StatusCode::OK, &json!({"status": "ok"}))
}

/// `GET /readyz`: the store opens and answers, and a policy is loaded.
async fn readyz(State(app): State<Arc<App>>) -> Response {
    let default = app.tenants.default_tenant();
    let store = match default.toolbox.store.get().await {
        Err(e) => Err(format!("the store cannot be opened: {e}")),
        Ok(store) => store
            .tenant_list()
            .await
            .map(|tenants| tenants.len())
            .map_err(|e| format!("the store cannot be read: {e}")),
    };
    let policy = default.toolbox.policy.load();
    match store {
        Ok(tenants) => json_response(
            StatusCode::OK,
            &json!({
                "status": "ready",
                "policy": policy.source(),
                "policy_rules": policy.rule_count(),
                "tenants": tenants + 1,
            }),
        ),
        Err(reason) => {
            tracing::warn!(reason = %reason, "not ready");
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"status": "not_ready", "reason": reason}),
            )
        }
    }
}

/// Who a request to an MCP transport acts for: its token (`None` with
/// `--no-auth`), the token's identity, and the tenant it works in.
pub(super) struct Caller {
    pub token: Option<i64>,
    pub identity: Option<SessionIdentity>,
    pub runtime: Arc<TenantRuntime>,
}

/// Why a caller was refused: the response, and the token id when the token
/// was revoked (so its open sessions can be ended).
pub(super) struct Refused {
    pub response: Response,
    pub revoked: Option<i64>,
}

/// Authenticate a request to `/mcp` or `/sse` and open its tenant. An admin
/// token is refused: it belongs to a person at `/admin`, never to an agent.
pub(super) async fn identify(
    tenants: &TenantRegistry,
    require_token: bool,
    limits: &RateLimits,
    tokens: &auth::TokenCache,
    headers: &axum::http::HeaderMap,
) -> Result<Caller, Refused> {
    let refuse = |response| Refused {
        response,
        revoked: None,
    };
    let (token, identity) = if require_token {
        let store = &tenants.default_tenant().toolbox.store;
        match auth::authenticate(store, tokens, headers).await {
            Ok(record) if record.role == crate::store::TokenRole::Admin => {
                return Err(refuse(json_error(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "this is an admin token, for a person at /admin; agents connect with \
                     agent tokens (`arbiter token create` without --admin)",
                )));
            }
            Ok(record) => {
                if let Err(over) = limits
                    .check(record.id, &record.tenant, record.rate_limit.as_deref())
                    .await
                {
                    tracing::info!(token = record.id, limit = %over.limit, "rate limit reached");
                    return Err(refuse(too_many_requests(record.id, &over)));
                }
                (
                    Some(record.id),
                    Some(SessionIdentity {
                        tenant: record.tenant,
                        agent: record.agent,
                    }),
                )
            }
            Err(failure) => {
                let revoked = match failure {
                    AuthFailure::Revoked { id } => Some(id),
                    _ => None,
                };
                tracing::info!(reason = ?failure, "MCP request refused");
                return Err(Refused {
                    response: failure.into_response(),
                    revoked,
                });
            }
        }
    } else {
        (None, None)
    };
    let tenant = identity
        .as_ref()
        .map_or(DEFAULT_TENANT, |i| i.tenant.as_str());
    let runtime = match tenants.get(tenant).await {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "tenant unavailable");
            let next = match e {
                TenantError::Unknown(_) => "the operator must register it (`arbiter tenant add`)",
                TenantError::Unavailable { .. } => "the operator must fix it, then retry",
            };
            return Err(refuse(json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "tenant_unavailable",
                &format!("{e}; {next}"),
            )));
        }
    };
    Ok(Caller {
        token,
        identity,
        runtime,
    })
}

/// `GET /metrics`: Prometheus text. Like the probes it needs no token: it
/// shows counts and timings, never arguments, paths or names of agents.
async fn metrics(State(app): State<Arc<App>>) -> Response {
    let now = crate::overrides::now_unix();
    let mut pending = Vec::new();
    for runtime in app.tenants.opened().await {
        let Ok(store) = runtime.toolbox.store.get().await else {
            continue; // /readyz says why; a scrape must not fail for it
        };
        if let Ok(records) = store.override_list(Some(&runtime.name), None, 10_000).await {
            let n = records
                .iter()
                .filter(|r| r.state_at(now) == crate::overrides::OverrideState::Pending)
                .count();
            pending.push((runtime.name.clone(), n as u64));
        }
    }
    let store_unreachable = match app.tenants.default_tenant().toolbox.store.get().await {
        Ok(store) => store.breaker_open(),
        Err(_) => true,
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        super::metrics::render(&pending, store_unreachable),
    )
        .into_response()
}

/// `/mcp`: authenticate, pick the token's endpoint, let rmcp answer.
async fn mcp(State(app): State<Arc<App>>, request: Request) -> Response {
    // Host and Origin before the token, as on every route: a foreign page
    // gets 403 whatever it sends.
    if let Some(refused) = super::origin::refuse_host_or_origin(
        &app.sse.allowed_hosts,
        &app.sse.allowed_origins,
        request.headers(),
    ) {
        return refused;
    }
    let Caller {
        token,
        identity,
        runtime,
    } = match identify(
        &app.tenants,
        app.require_token,
        &app.sse.limits,
        &app.sse.tokens,
        request.headers(),
    )
    .await
    {
        Ok(caller) => caller,
        Err(refused) => {
            if let Some(id) = refused.revoked {
                app.forget(id);
            }
            return refused.response;
        }
    };
    let endpoint = app.endpoint(token, &runtime, identity);
    let mut request = request;
    let mut session_id = None;
    if let Some(session) = request.headers().get(SESSION_HEADER) {
        let id = String::from_utf8_lossy(session.as_bytes()).into_owned();
        // rmcp answers 404 to an unknown session too, but a DELETE of one
        // would get 202: say plainly that this token has no such session.
        if !endpoint.has_session(&id).await {
            return session_not_found();
        }
        request = match http_direct::try_answer(&endpoint.lane, &id, request).await {
            Ok(response) => return response.map(|body| app.replies.track(body)),
            Err(request) => request,
        };
        session_id = Some(id);
    }
    // A POST's reply stream is counted, so shutdown can wait for it.
    let counted = request.method() == axum::http::Method::POST;
    let response = endpoint.service.handle(request).await.map(Body::new);
    // A session whose worker has just ended (closed for idleness, say) gets
    // rmcp's 500 until rmcp, a moment later, forgets it: a 404 like any other.
    if response.status() == StatusCode::INTERNAL_SERVER_ERROR
        && let Some(id) = &session_id
        && endpoint.forgets_session(id).await
    {
        return session_not_found();
    }
    if counted {
        response.map(|body| app.replies.track(body))
    } else {
        response
    }
}

/// 404 for a session id this token does not have (any more).
fn session_not_found() -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        "session_not_found",
        "no such MCP session for this token: it ended, expired, or was started with \
         another token; start a new session with `initialize`",
    )
}

/// 429 for a token over its limit, with `Retry-After` (RFC 9110) in seconds.
fn too_many_requests(token: i64, over: &OverLimit) -> Response {
    let mut response = json_error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        &format!(
            "token {token} is over its request limit ({}); retry after {} s. If this agent \
             needs more, the operator can give it a token with a higher limit \
             (`arbiter token create --rate-limit N/PERIOD`) or raise the server's \
             (`serve --rate-limit`)",
            over.limit, over.retry_after_secs
        ),
    );
    response.headers_mut().insert(
        header::RETRY_AFTER,
        axum::http::HeaderValue::from(over.retry_after_secs),
    );
    response
}

/// A JSON error body: `{"error": code, "message": what, why, what to do}`.
pub fn json_error(status: StatusCode, error: &str, message: &str) -> Response {
    json_response(status, &json!({"error": error, "message": message}))
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
