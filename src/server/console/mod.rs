//! `/ui`: the web console for people holding an admin token. Server-rendered
//! HTML (maud escapes everything it interpolates), one stylesheet served by
//! the binary, no script at all. Three pages: pending override requests
//! (approve or deny), the tenant's audit trail with the chain's verify
//! status, and the task board.
//!
//! A person signs in by pasting an admin token; the server keeps a session
//! (see `session.rs`) and re-checks the token on every request. An agent
//! token is refused. Decisions go through `overrides::decide` as the admin
//! API's do, audited as `admin:<person>`. Every response carries a strict
//! Content-Security-Policy; every form carries a CSRF token compared in
//! constant time, and Host/Origin are checked as for `/admin` (the console's
//! own origin is accepted, since its forms post to it).
//!
//! An admin token sees its own tenant. An operator's token (`token create
//! --admin --all-tenants`) sees every tenant, one at a time: each page takes
//! `?tenant=NAME` (default `default`) and offers the others.

mod data;
mod pages;
mod session;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::auth::{TOKEN_PREFIX, token_hash};
use super::tenants::{TenantError, TenantRegistry, TenantRuntime, asked_tenant};
use crate::overrides::decide::{DecideError, Decision, Verdict, decide};
use crate::overrides::{now_unix, parse_id};
use crate::store::{ALL_TENANTS, DEFAULT_TENANT, TokenRole, tokens::administered_tenant};
use session::{COOKIE, LOGIN_COOKIE, Session, Sessions};

/// No scripts, no frames, no foreign anything: styles and forms of this origin only.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";
const STYLESHEET: &str = include_str!("console.css");
/// Largest form body (a token, a note).
const MAX_FORM: usize = 16 * 1024;

struct Console {
    tenants: Arc<TenantRegistry>,
    allowed_hosts: Vec<String>,
    allowed_origins: Vec<String>,
    sessions: Sessions,
}

/// The console's routes, for `serve --http`'s router.
pub fn router(
    tenants: Arc<TenantRegistry>,
    allowed_hosts: Vec<String>,
    allowed_origins: Vec<String>,
) -> Router {
    let console = Arc::new(Console {
        tenants,
        allowed_hosts,
        allowed_origins,
        sessions: Sessions::default(),
    });
    Router::new()
        .route("/ui", get(home))
        .route("/ui/", get(home))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/overrides", get(overrides_page))
        .route("/ui/overrides/{id}/{action}", post(decide_override))
        .route("/ui/audit", get(audit_page))
        .route("/ui/tasks", get(tasks_page))
        .route("/ui/static/console.css", get(stylesheet))
        .with_state(console)
        .layer(axum::middleware::map_response(harden))
}

/// The headers every console response carries.
async fn harden(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not `no-referrer`: with it, browsers send `Origin: null` on form posts,
    // and the Origin check could not tell our forms from anyone's.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

fn html(status: StatusCode, page: maud::Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page.into_string(),
    )
        .into_response()
}

fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

fn with_cookie(mut response: Response, cookie: String) -> Response {
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// Host and Origin as for `/admin`, plus this server's own origin.
fn check_origin(console: &Console, headers: &HeaderMap) -> Option<Response> {
    let mut origins = console.allowed_origins.clone();
    if let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        // Safe to add: the Host itself must still be one of ours.
        origins.push(format!("http://{host}"));
        origins.push(format!("https://{host}"));
    }
    super::origin::refuse_host_or_origin(&console.allowed_hosts, &origins, headers)
}

/// A signed-in request: its session id, the session, and the tenant.
struct SignedIn {
    id: String,
    session: Session,
    flash: Option<session::Flash>,
    runtime: Arc<TenantRuntime>,
    /// The tenants an operator may switch to (empty for one tenant's admin).
    tenants: Vec<String>,
}

impl SignedIn {
    /// `?tenant=NAME` for links and forms, when the session spans tenants.
    fn tenant_query(&self) -> String {
        if self.tenants.is_empty() {
            String::new()
        } else {
            format!("?tenant={}", self.runtime.name)
        }
    }
}

/// The session of a request, with its token checked again, acting on the
/// tenant it `asked` for (if its token may); otherwise the response to send
/// (the sign-in page, or a refusal).
async fn signed_in(
    console: &Console,
    headers: &HeaderMap,
    asked: Option<&str>,
) -> Result<SignedIn, Response> {
    if let Some(refused) = check_origin(console, headers) {
        return Err(refused);
    }
    let Some(id) = session::cookie(headers, COOKIE) else {
        return Err(see_other("/ui/login"));
    };
    let Some((session, flash)) = console.sessions.touch(&id) else {
        return Err(see_other("/ui/login"));
    };
    let store = console
        .tenants
        .default_tenant()
        .toolbox
        .store
        .get()
        .await
        .map_err(|e| unavailable(&format!("the store cannot be opened: {e}")))?;
    let token = store
        .token_by_hash(&session.token_hash)
        .await
        .map_err(|e| unavailable(&format!("the store cannot be read: {e}")))?;
    match token {
        Some(t) if !t.is_revoked() && t.role == TokenRole::Admin => {}
        _ => {
            console.sessions.end_token(session.token_id);
            tracing::info!(
                token = session.token_id,
                "console session ended: its token was revoked"
            );
            return Err(with_cookie(
                html(
                    StatusCode::UNAUTHORIZED,
                    pages::login(
                        "",
                        Some(
                            "Your admin token was revoked, so your session has ended. Ask the operator for a new one.",
                        ),
                    ),
                ),
                session::clear_cookie(COOKIE),
            ));
        }
    }
    let tenant = administered_tenant(&session.tenant, asked).map_err(|why| {
        html(
            StatusCode::FORBIDDEN,
            pages::problem("Not your tenant", &why),
        )
    })?;
    let runtime = console.tenants.get(&tenant).await.map_err(|e| match e {
        TenantError::Unknown(_) => html(
            StatusCode::NOT_FOUND,
            pages::problem("No such tenant", &e.to_string()),
        ),
        TenantError::Unavailable { .. } => {
            unavailable(&format!("{e}; the operator must fix it, then retry"))
        }
    })?;
    let tenants = if session.tenant == ALL_TENANTS {
        let others = store
            .tenant_list()
            .await
            .map_err(|e| unavailable(&format!("the store cannot be read: {e}")))?;
        std::iter::once(DEFAULT_TENANT.to_string())
            .chain(others.into_iter().map(|t| t.name))
            .collect()
    } else {
        Vec::new()
    };
    Ok(SignedIn {
        id,
        session,
        flash,
        runtime,
        tenants,
    })
}

fn unavailable(what: &str) -> Response {
    html(
        StatusCode::SERVICE_UNAVAILABLE,
        pages::problem("Service unavailable", what),
    )
}

fn forbidden_form() -> Response {
    html(
        StatusCode::FORBIDDEN,
        pages::problem(
            "Form refused",
            "This form's CSRF token is missing or does not match your session, so nothing was \
             done. Reload the page and submit the form again.",
        ),
    )
}

/// Form fields; unknown ones are ignored, missing ones are empty.
#[derive(Debug, Default, Deserialize)]
struct Form {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    minutes: String,
    #[serde(default)]
    note: String,
}

fn read_form(body: &Bytes) -> Result<Form, Box<Response>> {
    if body.len() > MAX_FORM {
        return Err(Box::new(html(
            StatusCode::PAYLOAD_TOO_LARGE,
            pages::problem(
                "Form too large",
                "A form holds a token or a note; say it shorter.",
            ),
        )));
    }
    serde_urlencoded::from_bytes(body).map_err(|e| {
        Box::new(html(
            StatusCode::BAD_REQUEST,
            pages::problem("Bad form", &format!("The form could not be read: {e}")),
        ))
    })
}

async fn home() -> Response {
    see_other("/ui/overrides")
}

async fn stylesheet() -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        STYLESHEET,
    )
        .into_response()
}

/// `GET /ui/login`: the sign-in form, with a fresh CSRF cookie for it.
async fn login_form(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if let Some(refused) = check_origin(&console, &headers) {
        return refused;
    }
    let csrf = session::random_secret();
    with_cookie(
        html(StatusCode::OK, pages::login(&csrf, None)),
        session::set_cookie(LOGIN_COOKIE, &csrf),
    )
}

/// A sign-in refused: the form again, with why.
fn login_refused(status: StatusCode, why: &str) -> Response {
    let csrf = session::random_secret();
    with_cookie(
        html(status, pages::login(&csrf, Some(why))),
        session::set_cookie(LOGIN_COOKIE, &csrf),
    )
}

/// `POST /ui/login`: an admin token in, a session cookie out.
async fn login(State(console): State<Arc<Console>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refused) = check_origin(&console, &headers) {
        return refused;
    }
    let form = match read_form(&body) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let expected = session::cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if !session::same_secret(&expected, &form.csrf) {
        return forbidden_form();
    }
    let token = form.token.trim();
    if !token.starts_with(TOKEN_PREFIX) {
        return login_refused(
            StatusCode::UNAUTHORIZED,
            "That is not an arbiter token: paste it exactly as `arbiter token create --admin` printed it (it starts with arb_).",
        );
    }
    let hash = token_hash(token);
    let record = match console.tenants.default_tenant().toolbox.store.get().await {
        Ok(store) => match store.token_by_hash(&hash).await {
            Ok(r) => r,
            Err(e) => return unavailable(&format!("the store cannot be read: {e}")),
        },
        Err(e) => return unavailable(&format!("the store cannot be opened: {e}")),
    };
    let record = match record {
        None => {
            return login_refused(
                StatusCode::UNAUTHORIZED,
                "This token is not known to this server. Check that it was made for this server's workspace (`arbiter token list`).",
            );
        }
        Some(r) if r.is_revoked() => {
            return login_refused(
                StatusCode::UNAUTHORIZED,
                &format!(
                    "Token {} was revoked; ask the operator for a new one.",
                    r.id
                ),
            );
        }
        Some(r) => r,
    };
    if record.role != TokenRole::Admin {
        tracing::warn!(token = record.id, agent = %record.agent, "an agent token tried to sign in to the console");
        return html(
            StatusCode::FORBIDDEN,
            pages::problem(
                "Agent tokens cannot open the console",
                "This is an agent token: it lets an agent call tools over MCP, and the console \
                 is where a person decides on what agents ask, so it takes admin tokens only. \
                 An operator makes one with `arbiter token create --tenant NAME --agent \
                 YOUR-NAME --admin`.",
            ),
        );
    }
    let first = administered_tenant(&record.tenant, None).unwrap_or_default();
    if let Err(e) = console.tenants.get(&first).await {
        return unavailable(&format!("{e}; the operator must fix it, then retry"));
    }
    let id = console
        .sessions
        .create(hash, record.id, record.tenant.clone(), record.agent.clone());
    tracing::info!(token = record.id, person = %record.agent, tenant = %record.tenant, "console sign-in");
    let response = with_cookie(see_other("/ui/overrides"), session::set_cookie(COOKIE, &id));
    with_cookie(response, session::clear_cookie(LOGIN_COOKIE))
}

/// `POST /ui/logout`.
async fn logout(State(console): State<Arc<Console>>, headers: HeaderMap, body: Bytes) -> Response {
    let me = match signed_in(&console, &headers, None).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let form = match read_form(&body) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    if !session::same_secret(&me.session.csrf, &form.csrf) {
        return forbidden_form();
    }
    console.sessions.end(&me.id);
    with_cookie(see_other("/ui/login"), session::clear_cookie(COOKIE))
}

/// `GET /ui/overrides`: pending requests with the refused call, and recent decisions.
async fn overrides_page(
    State(console): State<Arc<Console>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let me = match signed_in(&console, &headers, asked_tenant(&uri).as_deref()).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    match data::overrides(&me.runtime).await {
        Ok(view) => html(
            StatusCode::OK,
            pages::overrides(&pages::Frame::of(&me, "overrides"), &view),
        ),
        Err(e) => unavailable(&e),
    }
}

/// `POST /ui/overrides/{id}/{approve|deny|revoke}`: a decision, as at `/admin`.
async fn decide_override(
    State(console): State<Arc<Console>>,
    Path((id, action)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let me = match signed_in(&console, &headers, asked_tenant(&uri).as_deref()).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let form = match read_form(&body) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    if !session::same_secret(&me.session.csrf, &form.csrf) {
        return forbidden_form();
    }
    let said = decide_from_form(&me, &id, &action, &form).await;
    let (ok, text) = match said {
        Ok(text) => (true, text),
        Err(text) => (false, text),
    };
    console.sessions.flash(&me.id, ok, text);
    see_other(&format!("/ui/overrides{}", me.tenant_query()))
}

/// Apply a decision; the account of what happened, or why nothing did.
async fn decide_from_form(
    me: &SignedIn,
    id: &str,
    action: &str,
    form: &Form,
) -> Result<String, String> {
    let minutes = match form.minutes.trim() {
        "" => None,
        m => Some(m.parse::<u64>().map_err(|_| {
            format!("the duration `{m}` is not a whole number of minutes; nothing was decided")
        })?),
    };
    let verdict = match action {
        "approve" => Verdict::Approve { minutes },
        "deny" => Verdict::Deny,
        "revoke" => Verdict::Revoke,
        other => {
            return Err(format!(
                "`{other}` is not a decision (approve, deny, revoke)"
            ));
        }
    };
    let n = parse_id(id).ok_or_else(|| format!("`{id}` is not an override id"))?;
    let runtime = &me.runtime;
    let store = runtime.toolbox.store.get().await?;
    let record = store
        .override_get(Some(&runtime.name), n)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("this tenant has no override {id}"))?;
    let policy = runtime.toolbox.policy.load();
    let actor = format!("admin:{}", me.session.person);
    let note = Some(form.note.trim()).filter(|n| !n.is_empty());
    let decision = Decision {
        verdict,
        actor: &actor,
        note,
        now: now_unix(),
    };
    match decide(store.as_ref(), &runtime.audit, &policy, &record, decision).await {
        Ok((_, said)) => Ok(said),
        Err(DecideError::WrongState(said) | DecideError::NotAllowed(said)) => Err(said),
        Err(DecideError::Store(e)) => Err(format!("the store failed: {e}; retry")),
    }
}

/// `GET /ui/audit`: the tenant's trail, filtered and paged, with verify status.
async fn audit_page(State(console): State<Arc<Console>>, uri: Uri, headers: HeaderMap) -> Response {
    let me = match signed_in(&console, &headers, asked_tenant(&uri).as_deref()).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let mut filter: data::AuditFilter =
        match serde_urlencoded::from_str(uri.query().unwrap_or_default()) {
            Ok(f) => f,
            Err(e) => {
                return html(
                    StatusCode::BAD_REQUEST,
                    pages::problem("Bad filter", &format!("The filter could not be read: {e}")),
                );
            }
        };
    if let Err(why) = filter.check() {
        return html(StatusCode::BAD_REQUEST, pages::problem("Bad filter", &why));
    }
    // Pages and links carry the tenant only when there is a choice.
    filter.tenant = if me.tenants.is_empty() {
        String::new()
    } else {
        me.runtime.name.clone()
    };
    match data::audit(&me.runtime, &filter).await {
        Ok(view) => html(
            StatusCode::OK,
            pages::audit(&pages::Frame::of(&me, "audit"), &filter, &view),
        ),
        Err(e) => unavailable(&e),
    }
}

/// `GET /ui/tasks`: the task board.
async fn tasks_page(State(console): State<Arc<Console>>, uri: Uri, headers: HeaderMap) -> Response {
    let me = match signed_in(&console, &headers, asked_tenant(&uri).as_deref()).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    match data::tasks(&me.runtime).await {
        Ok(view) => html(
            StatusCode::OK,
            pages::tasks(&pages::Frame::of(&me, "tasks"), &view),
        ),
        Err(e) => unavailable(&e),
    }
}
