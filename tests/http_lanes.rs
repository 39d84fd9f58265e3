//! Over streamable HTTP, plain `tools/call`s of the file tools are answered
//! without rmcp's session worker (`src/server/http_direct.rs`), as one
//! `application/json` body; a call carrying `_meta` still goes through rmcp
//! (an SSE reply). Both lanes must give the same answers and audit records,
//! the lane must answer only for the token's own live sessions, and a
//! session busy with direct calls must not be closed by rmcp as idle.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const ANSWERED_DIRECTLY: &str = "tools/call answered directly";

/// A session opened by hand: `initialize`, then `notifications/initialized`.
async fn open_session(url: &str, token: Option<&str>) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"}}});
    let (status, session, _, body) = mcp_post(url, token, None, &[], &init).await;
    assert_eq!(status, 200, "{body}");
    let session = session.expect("a session id");
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let (status, _, _, body) = mcp_post(url, token, Some(&session), &[], &initialized).await;
    assert_eq!(status, 202, "{body}");
    session
}

/// The JSON-RPC message of a POST's answer, and whether it came as JSON
/// (the direct lane) rather than as an SSE stream (rmcp).
fn message(headers: &reqwest::header::HeaderMap, body: &str) -> (Value, bool) {
    let content_type = headers["content-type"].to_str().unwrap();
    if content_type.starts_with("application/json") {
        return (serde_json::from_str(body).unwrap(), true);
    }
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let data = body
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .find(|d| !d.is_empty())
        .unwrap_or_else(|| panic!("no message in {body}"));
    (serde_json::from_str(data).unwrap(), false)
}

#[tokio::test]
async fn both_lanes_answer_and_record_alike_over_http() {
    let s = Scratch::new();
    lane_test_files(&s);
    let token = create_token(&s.ws(), "default", "lane-agent");
    let server = HttpServer::start_logging(&s.ws(), &[]);
    let url = server.mcp();
    let session = open_session(&url, Some(&token)).await;
    // rmcp registers the session with the lane as it handles the
    // notification, which it acknowledges first.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let calls = lane_test_calls();
    let mut id = 100;
    for (tool, args) in &calls {
        let mut answers = Vec::new();
        for through_rmcp in [true, false] {
            id += 1;
            let request = lane_call(id, tool, args, through_rmcp);
            let (status, _, headers, body) =
                mcp_post(&url, Some(&token), Some(&session), &[], &request).await;
            assert_eq!(status, 200, "{body}");
            let (mut answer, as_json) = message(&headers, &body);
            assert_eq!(as_json, !through_rmcp, "{tool} {args}: {body}");
            assert_eq!(answer["id"], id, "{answer}");
            answer["id"] = Value::Null;
            answers.push(answer);
        }
        assert_eq!(
            answers[0], answers[1],
            "{tool} {args}: rmcp's lane (left) and the direct one (right) differ"
        );
    }
    assert_eq!(
        server.log_count_awaiting(ANSWERED_DIRECTLY, calls.len()),
        calls.len()
    );

    // The records of each pair agree, name the token's agent, and the chain verifies.
    let records = audit_records(&s.ws());
    assert_eq!(records.len(), calls.len() * 2);
    for pair in records.chunks(2) {
        for field in ["tool", "outcome", "decision", "rule_ids", "client_name"] {
            assert_eq!(pair[0][field], pair[1][field], "{field}: {pair:?}");
        }
        assert_eq!(pair[1]["client_name"], "lane-agent", "{pair:?}");
    }
    let (code, out, err) = run_cli(&s.ws(), &["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
}

#[tokio::test]
async fn the_lane_answers_only_for_the_tokens_live_sessions() {
    let s = Scratch::new();
    s.write("r.txt", "secret\n");
    let a = create_token(&s.ws(), "default", "agent-a");
    let b = create_token(&s.ws(), "default", "agent-b");
    let server = HttpServer::start_logging(&s.ws(), &[]);
    let url = server.mcp();
    let session = open_session(&url, Some(&a)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let read = lane_call(2, "file_read", &json!({"target_file": "r.txt"}), false);

    let (status, _, headers, body) = mcp_post(&url, Some(&a), Some(&session), &[], &read).await;
    assert_eq!(status, 200, "{body}");
    assert!(message(&headers, &body).1, "answered directly: {body}");
    // Another token does not reach the session, lane or not.
    let (status, _, _, body) = mcp_post(&url, Some(&b), Some(&session), &[], &read).await;
    assert_eq!(status, 404, "{body}");
    assert!(!body.contains("secret"), "{body}");
    // A protocol version other than the session's is rmcp's to judge.
    let other = [("mcp-protocol-version", "2025-06-18")];
    let (_, _, headers, body) = mcp_post(&url, Some(&a), Some(&session), &other, &read).await;
    assert!(
        !headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
            || !body.contains("secret"),
        "{body}"
    );
    assert_eq!(server.log_count_awaiting(ANSWERED_DIRECTLY, 1), 1);

    // Once the session is ended, it is gone from the lane too.
    let status = reqwest::Client::new()
        .delete(&url)
        .header("authorization", format!("Bearer {a}"))
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success(), "{status}");
    let (status, _, _, body) = mcp_post(&url, Some(&a), Some(&session), &[], &read).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(server.log_count_awaiting(ANSWERED_DIRECTLY, 1), 1);
}

#[tokio::test]
async fn a_session_busy_with_direct_calls_is_not_closed_as_idle() {
    let s = Scratch::new();
    s.write("r.txt", "busy\n");
    let server = HttpServer::start_logging(&s.ws(), &["--no-auth", "--session-idle-timeout", "2s"]);
    let url = server.mcp();
    let session = open_session(&url, None).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Twice the idle time of calls that rmcp mostly does not see.
    let started = Instant::now();
    let mut calls = 0;
    while started.elapsed() < Duration::from_secs(5) {
        calls += 1;
        let read = lane_call(calls, "file_read", &json!({"target_file": "r.txt"}), false);
        let (status, _, headers, body) = mcp_post(&url, None, Some(&session), &[], &read).await;
        assert_eq!(
            status,
            200,
            "call {calls} after {:?}: {body}",
            started.elapsed()
        );
        let (answer, _) = message(&headers, &body);
        assert_eq!(answer["result"]["isError"], false, "{answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let direct = server.log_count(ANSWERED_DIRECTLY);
    assert!(
        direct as u64 > calls / 2 && (direct as u64) < calls,
        "{direct} of {calls} calls answered directly: most should be, and a few handed to rmcp"
    );
}
