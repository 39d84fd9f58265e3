//! `/admin`: the HTTP face of what a person decides, for admin tokens only.
//! An admin token belongs to one tenant and one person; it sees and decides
//! that tenant's override requests, and cannot speak MCP (`/mcp` refuses
//! it), so the token that asked for an exception is never the one that
//! grants it. Agent tokens get 403 here. Every decision goes through the same
//! code as `arbiter override` and joins the tenant's audit chain.
//!
//! An operator's admin token (`token create --admin --all-tenants`) acts on
//! the tenant named by `?tenant=NAME` on any route (default: `default`); an
//! admin token of one tenant naming another gets 403.
//!
//! Routes (JSON in and out; bodies are optional):
//! - `GET  /admin/overrides[?state=pending|approved|denied|expired|revoked|all]`
//! - `GET  /admin/overrides/{id}`
//! - `POST /admin/overrides/{id}/approve` `{"note"?: str, "minutes"?: int}`
//! - `POST /admin/overrides/{id}/deny` `{"note"?: str}`
//! - `POST /admin/overrides/{id}/revoke` `{"note"?: str}`

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::auth;
use super::http::json_error;
use super::tenants::{TenantError, TenantRegistry, TenantRuntime};
use crate::overrides::decide::{DecideError, Decision, Verdict, decide};
use crate::overrides::{OverrideState, now_unix, parse_id};
use crate::store::{TokenRecord, TokenRole};

/// Largest decision body.
const MAX_BODY: usize = 16 * 1024;

#[derive(Clone)]
pub struct AdminState {
    pub tenants: Arc<TenantRegistry>,
    /// Tokens recently verified, shared with `/mcp`.
    pub tokens: Arc<auth::TokenCache>,
    /// `Host` values accepted.
    pub allowed_hosts: Vec<String>,
    /// Origins a browser may call from (none by default).
    pub allowed_origins: Vec<String>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/admin/overrides", get(list))
        .route("/admin/overrides/{id}", get(show))
        .route("/admin/overrides/{id}/{action}", post(act))
        .with_state(state)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    minutes: Option<u64>,
}

/// The admin token of a request and its tenant, or the response that refuses it.
async fn admin(
    state: &AdminState,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<(TokenRecord, Arc<TenantRuntime>), Response> {
    if let Some(refused) =
        super::origin::refuse_host_or_origin(&state.allowed_hosts, &state.allowed_origins, headers)
    {
        return Err(refused);
    }
    let store = &state.tenants.default_tenant().toolbox.store;
    let token = auth::authenticate(store, &state.tokens, headers)
        .await
        .map_err(IntoResponse::into_response)?;
    if token.role != TokenRole::Admin {
        tracing::warn!(token = token.id, agent = %token.agent, "an agent token tried the admin API");
        return Err(json_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this is an agent token; the admin API takes admin tokens, which only a person \
             holds (`arbiter token create --admin`)",
        ));
    }
    let tenant = token
        .administered_tenant(super::tenants::asked_tenant(uri).as_deref())
        .map_err(|why| json_error(StatusCode::FORBIDDEN, "other_tenant", &why))?;
    let runtime = state.tenants.get(&tenant).await.map_err(|e| match e {
        TenantError::Unknown(_) => json_error(StatusCode::NOT_FOUND, "no_tenant", &e.to_string()),
        TenantError::Unavailable { .. } => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "tenant_unavailable",
            &format!("{e}; the operator must fix it, then retry"),
        ),
    })?;
    Ok((token, runtime))
}

fn store_error(e: impl std::fmt::Display) -> Response {
    json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        &format!("the override store cannot be used: {e}; retry once the operator fixed it"),
    )
}

fn ok(body: serde_json::Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn list(State(state): State<AdminState>, uri: Uri, headers: HeaderMap) -> Response {
    let (_, runtime) = match admin(&state, &uri, &headers).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let wanted = uri
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("state="))
        .unwrap_or("pending")
        .to_string();
    if wanted != "all" && OverrideState::parse(&wanted).is_none() {
        return json_error(
            StatusCode::BAD_REQUEST,
            "bad_state",
            "state must be pending, approved, denied, expired, revoked or all",
        );
    }
    let store = match runtime.toolbox.store.get().await {
        Ok(s) => s,
        Err(e) => return store_error(e),
    };
    let now = now_unix();
    match store.override_list(Some(&runtime.name), None, 1000).await {
        Ok(records) => ok(json!({
            "tenant": runtime.name,
            "overrides": records
                .iter()
                .filter(|r| wanted == "all" || r.state_at(now).as_str() == wanted)
                .map(|r| r.view(now))
                .collect::<Vec<_>>()
        })),
        Err(e) => store_error(e),
    }
}

async fn find(
    runtime: &TenantRuntime,
    id: &str,
) -> Result<crate::overrides::OverrideRecord, Response> {
    let n = parse_id(id).ok_or_else(|| {
        json_error(
            StatusCode::BAD_REQUEST,
            "bad_id",
            &format!("`{id}` is not an override id (OVR-12)"),
        )
    })?;
    let store = runtime.toolbox.store.get().await.map_err(store_error)?;
    store
        .override_get(Some(&runtime.name), n)
        .await
        .map_err(store_error)?
        .ok_or_else(|| {
            json_error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("this tenant has no override {id}"),
            )
        })
}

async fn show(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let (_, runtime) = match admin(&state, &uri, &headers).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    match find(&runtime, &id).await {
        Ok(record) => ok(record.view(now_unix())),
        Err(r) => r,
    }
}

async fn act(
    State(state): State<AdminState>,
    Path((id, action)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (token, runtime) = match admin(&state, &uri, &headers).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    if body.len() > MAX_BODY {
        return json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "a decision body is a note and a duration",
        );
    }
    let input: DecisionBody = if body.iter().all(u8::is_ascii_whitespace) {
        DecisionBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    &format!("the body must be {{\"note\"?: string, \"minutes\"?: integer}}: {e}"),
                );
            }
        }
    };
    let verdict = match action.as_str() {
        "approve" => Verdict::Approve {
            minutes: input.minutes,
        },
        "deny" => Verdict::Deny,
        "revoke" => Verdict::Revoke,
        other => {
            return json_error(
                StatusCode::NOT_FOUND,
                "unknown_action",
                &format!("`{other}`: the actions are approve, deny and revoke"),
            );
        }
    };
    let record = match find(&runtime, &id).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let store = match runtime.toolbox.store.get().await {
        Ok(s) => s,
        Err(e) => return store_error(e),
    };
    let policy = runtime.toolbox.policy.load();
    let actor = format!("admin:{}", token.agent);
    let now = now_unix();
    let note = input
        .note
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    let decision = Decision {
        verdict,
        actor: &actor,
        note,
        now,
    };
    match decide(store.as_ref(), &runtime.audit, &policy, &record, decision).await {
        Ok((record, said)) => ok(json!({"message": said, "override": record.view(now)})),
        Err(DecideError::WrongState(said)) => {
            json_error(StatusCode::CONFLICT, "wrong_state", &said)
        }
        Err(DecideError::NotAllowed(said)) => {
            json_error(StatusCode::UNPROCESSABLE_ENTITY, "not_allowed", &said)
        }
        Err(DecideError::Store(e)) => store_error(e),
    }
}
