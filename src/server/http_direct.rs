//! `tools/call`s over streamable HTTP answered without rmcp's session worker.
//!
//! rmcp answers every `POST /mcp` of a session through that session's worker:
//! the request becomes a typed message, crosses two channels and a spawned
//! task, and its reply comes back as an SSE stream (a priming event, then the
//! message). For the file tools, which need nothing from rmcp's request
//! context, that is most of what a call costs. This lane answers the plain
//! ones itself, as `stdio.rs` does, through `direct::answer` (the same check,
//! policy, tool and audit record, committed before the reply), with one
//! `application/json` body: the transport allows a JSON reply to a POST, and
//! clients must accept one.
//!
//! A session joins the lane when rmcp tells its server the client is
//! initialized (`ArbiterServer::on_initialized`, which sees the request's
//! `Mcp-Session-Id`). The lane holds sessions weakly: a session rmcp has
//! ended is gone from it too, and `http.rs` has already answered 404 for a
//! session its token does not have. Everything the lane does not take goes to
//! rmcp unchanged: other methods, `_meta`, other tools, headers rmcp checks
//! (a `MCP-Protocol-Version` other than the session's), bodies over
//! [`LANE_MAX_BODY`], and now and then a call of a busy session, so that rmcp,
//! which closes a session that has seen no message for its idle time, sees
//! one often enough.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::direct::{self, DirectSession};
use super::{ArbiterServer, WeakArbiterServer};

/// Largest body this lane reads; larger ones (a big `file_write`) go to rmcp.
pub const LANE_MAX_BODY: usize = 1024 * 1024;

/// The sessions of one endpoint (one token) that the lane may answer for.
pub struct DirectSessions {
    sessions: Mutex<HashMap<String, LaneSession>>,
    /// rmcp is handed one call of a session at least this often.
    feed_rmcp_every: Duration,
}

struct LaneSession {
    server: WeakArbiterServer,
    direct: DirectSession,
    /// The protocol version negotiated at `initialize`.
    protocol: String,
    /// When rmcp last saw a message of this session (as far as the lane knows).
    rmcp_saw: Instant,
}

impl DirectSessions {
    /// Sessions that rmcp closes after `idle` without a message.
    pub fn new(idle: Duration) -> Self {
        Self {
            sessions: Mutex::new(HashMap::new()),
            feed_rmcp_every: idle / 4,
        }
    }

    /// Let the lane answer for session `id`, served by `server`.
    pub(super) fn register(
        &self,
        id: &str,
        server: WeakArbiterServer,
        direct: DirectSession,
        protocol: String,
    ) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        // Sessions rmcp has dropped since the last registration.
        sessions.retain(|_, s| s.server.is_alive());
        sessions.insert(
            id.to_string(),
            LaneSession {
                server,
                direct,
                protocol,
                rmcp_saw: Instant::now(),
            },
        );
    }

    /// The server and settings of session `id` if the lane may answer for it
    /// now; `None` also when rmcp is due a message of it (counted as seen).
    fn take(&self, id: &str, headers: &HeaderMap) -> Option<(ArbiterServer, DirectSession)> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let session = sessions.get_mut(id)?;
        let Some(server) = session.server.upgrade() else {
            sessions.remove(id);
            return None;
        };
        if !plain_post_headers(headers, &session.protocol) {
            return None;
        }
        if rmcp_due(&mut session.rmcp_saw, self.feed_rmcp_every, Instant::now()) {
            return None;
        }
        Some((server, session.direct.clone()))
    }
}

/// Whether rmcp is due a message of a session it last saw at `saw` (which
/// then becomes `now`).
fn rmcp_due(saw: &mut Instant, every: Duration, now: Instant) -> bool {
    let due = now.saturating_duration_since(*saw) >= every;
    if due {
        *saw = now;
    }
    due
}

/// Answer `request` (a request of session `id`) here if the lane takes it;
/// otherwise hand it back, unchanged in what rmcp reads.
pub async fn try_answer(
    lane: &DirectSessions,
    id: &str,
    request: Request,
) -> Result<Response, Request> {
    if request.method() != Method::POST {
        return Err(request);
    }
    let Some((server, session)) = lane.take(id, request.headers()) else {
        return Err(request);
    };
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, LANE_MAX_BODY).await {
        Ok(bytes) => bytes,
        // Content-Length said it fits: the client broke off or lied.
        Err(e) => {
            return Ok(super::http::json_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("the request body could not be read: {e}; send it again"),
            ));
        }
    };
    let Some(call) = direct::parse(&bytes) else {
        return Err(Request::from_parts(parts, Body::from(bytes)));
    };
    // The call runs to its audit record in a task of its own, as rmcp's do,
    // even if the client goes away before the reply.
    let reply = server
        .in_flight()
        .spawn(async move { direct::answer(&server, &session, call, None).await })
        .await;
    Ok(match reply {
        Ok(line) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            line,
        )
            .into_response(),
        Err(e) => super::http::json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            &format!("the tool call task failed: {e}; its audit record says how far it got"),
        ),
    })
}

/// Whether a POST's headers are ones rmcp would accept as they are and check
/// nothing more of: JSON in, JSON and SSE accepted, a body that fits, and
/// the session's protocol version if one is named.
fn plain_post_headers(headers: &HeaderMap, protocol: &str) -> bool {
    let fits = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|len| len <= LANE_MAX_BODY);
    let json_in = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| essence(v).eq_ignore_ascii_case("application/json"));
    let (mut json_out, mut sse) = (false, false);
    for value in headers.get_all(header::ACCEPT) {
        for media in value.to_str().unwrap_or("").split(',') {
            json_out |= essence(media).eq_ignore_ascii_case("application/json");
            sse |= essence(media).eq_ignore_ascii_case("text/event-stream");
        }
    }
    let mut versions = headers.get_all("mcp-protocol-version").iter();
    let version_ok = match (versions.next(), versions.next()) {
        (None, _) => true,
        (Some(v), None) => v.as_bytes() == protocol.as_bytes(),
        (Some(_), Some(_)) => false,
    };
    fits && json_in && json_out && sse && version_ok
}

/// A media type without its parameters.
fn essence(media: &str) -> &str {
    media.split(';').next().unwrap_or("").trim()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    const PLAIN: &[(&str, &str)] = &[
        ("content-length", "120"),
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", "2025-11-25"),
    ];

    #[test]
    fn only_plain_posts_take_the_lane() {
        assert!(plain_post_headers(&headers(PLAIN), "2025-11-25"));
        let without = |name: &str| {
            let pairs: Vec<_> = PLAIN.iter().copied().filter(|(n, _)| *n != name).collect();
            headers(&pairs)
        };
        // No version header: rmcp assumes the session's.
        assert!(plain_post_headers(
            &without("mcp-protocol-version"),
            "2025-11-25"
        ));
        // Another version than negotiated, two of them: rmcp's to judge.
        assert!(!plain_post_headers(&headers(PLAIN), "2025-06-18"));
        let mut twice = headers(PLAIN);
        twice.append(
            "mcp-protocol-version",
            HeaderValue::from_static("2025-11-25"),
        );
        assert!(!plain_post_headers(&twice, "2025-11-25"));
        // rmcp answers 406 and 415 for these, and reads unsized bodies itself.
        for name in ["accept", "content-type", "content-length"] {
            assert!(!plain_post_headers(&without(name), "2025-11-25"), "{name}");
        }
        let mut only_json = without("accept");
        only_json.insert("accept", HeaderValue::from_static("application/json"));
        assert!(!plain_post_headers(&only_json, "2025-11-25"));
        let mut split = without("accept");
        split.append("accept", HeaderValue::from_static("application/json;q=0.9"));
        split.append("accept", HeaderValue::from_static("text/event-stream"));
        assert!(plain_post_headers(&split, "2025-11-25"));
        let mut big = without("content-length");
        big.insert("content-length", HeaderValue::from(LANE_MAX_BODY + 1));
        assert!(!plain_post_headers(&big, "2025-11-25"));
        let mut charset = without("content-type");
        charset.insert(
            "content-type",
            HeaderValue::from_static("Application/JSON; charset=utf-8"),
        );
        assert!(plain_post_headers(&charset, "2025-11-25"));
    }

    #[test]
    fn rmcp_is_handed_a_call_of_a_busy_session_now_and_then() {
        let every = Duration::from_secs(10);
        let start = Instant::now();
        let mut saw = start;
        assert!(!rmcp_due(&mut saw, every, start + Duration::from_secs(9)));
        assert!(rmcp_due(&mut saw, every, start + Duration::from_secs(10)));
        assert_eq!(saw, start + Duration::from_secs(10));
        assert!(!rmcp_due(&mut saw, every, start + Duration::from_secs(11)));
        // A clock read before `saw` (another thread's) is not due.
        assert!(!rmcp_due(&mut saw, every, start));
    }
}
