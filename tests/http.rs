//! `arbiter serve --http`: the real binary on a free loopback port, driven by
//! rmcp's streamable HTTP client and by raw HTTP requests (status codes and
//! headers a client library hides). Tokens and tenants are made with the
//! binary's own `token` and `tenant` commands.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::mcp_post as post;
use common::*;
use serde_json::{Value, json};

const PROTOCOL: &str = "2025-11-25";

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": PROTOCOL, "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"}}})
}

#[tokio::test]
async fn with_the_token_cache_a_revocation_from_another_process_still_takes_effect() {
    let s = Scratch::new();
    s.write("notes.txt", "x\n");
    let token = create_token(&s.ws(), "default", "agent-c");
    // The default: a verified token is trusted for 1 s without the store.
    let server = HttpServer::start(&s.ws(), &[]);
    let client = connect(&server.mcp(), Some(&token)).await.unwrap();
    for _ in 0..5 {
        ok(&client, "file_read", json!({"target_file": "notes.txt"})).await;
    }
    let id = newest_token_id(&s.ws());
    let (code, out, err) = run_cli(&s.ws(), &["token", "revoke", &id]);
    assert_eq!(code, 0, "{out}{err}");
    // Refused once the cached answer is older than the TTL; the limit below
    // only detects a cache that never asks the store again.
    let refused = tokio::time::timeout(Duration::from_secs(30), async {
        while try_call(&client, "file_read", json!({"target_file": "notes.txt"}))
            .await
            .is_ok()
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(refused.is_ok(), "a revoked token's session kept answering");
    let (status, _, _, body) = post(&server.mcp(), Some(&token), None, &[], &initialize()).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("revoked"), "{body}");
}

#[tokio::test]
async fn a_token_opens_a_session_that_lists_tools_and_reads_a_file_as_the_tokens_agent() {
    let s = Scratch::new();
    s.write("notes.txt", "hello over http\n");
    let token = create_token(&s.ws(), "default", "ci-bot");
    let server = HttpServer::start(&s.ws(), &[]);

    let client = connect(&server.mcp(), Some(&token)).await.unwrap();
    let info = client.peer_info().expect("server info");
    assert_eq!(info.server_info.as_ref().unwrap().name, "arbiter");
    let tools = client.list_all_tools().await.unwrap();
    assert!(tools.iter().any(|t| t.name == "file_read"), "{tools:?}");
    let out = ok(&client, "file_read", json!({"target_file": "notes.txt"})).await;
    assert!(out.to_string().contains("hello over http"), "{out}");
    client.cancel().await.unwrap();

    // The record names the token's agent, not the name the client gave itself.
    let records = audit_records(&s.ws());
    let read = records.iter().rfind(|r| r["tool"] == "file_read").unwrap();
    assert_eq!(read["client_name"], "ci-bot", "{read}");
    assert_eq!(read["tenant"], "default", "{read}");
    assert_eq!(read["outcome"], "ok", "{read}");
}

#[tokio::test]
async fn without_a_valid_token_mcp_answers_401_and_a_revoked_token_is_refused_at_once() {
    let s = Scratch::new();
    s.write("notes.txt", "x\n");
    let token = create_token(&s.ws(), "default", "agent-r");
    // No token cache: the store is asked on every request.
    let server = HttpServer::start(&s.ws(), &["--token-cache-ttl", "0"]);
    let url = server.mcp();

    for bad in [
        None,
        Some("arb_not-a-real-token"),
        Some("not-even-prefixed"),
    ] {
        let (status, session, headers, body) = post(&url, bad, None, &[], &initialize()).await;
        assert_eq!(status, 401, "{bad:?}: {body}");
        assert!(session.is_none());
        let challenge = headers["www-authenticate"].to_str().unwrap();
        assert!(challenge.starts_with("Bearer"), "{challenge}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert!(
            body["message"].as_str().unwrap().contains("token"),
            "{body}"
        );
    }
    assert!(connect(&url, None).await.is_err());

    // A live session stops working as soon as its token is revoked.
    let client = connect(&url, Some(&token)).await.unwrap();
    ok(&client, "file_read", json!({"target_file": "notes.txt"})).await;
    let id = newest_token_id(&s.ws());
    let (code, out, err) = run_cli(&s.ws(), &["token", "revoke", &id]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        try_call(&client, "file_read", json!({"target_file": "notes.txt"}))
            .await
            .is_err(),
        "a revoked token's session still answered"
    );
    let (status, _, _, body) = post(&url, Some(&token), None, &[], &initialize()).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("revoked"), "{body}");
    assert!(connect(&url, Some(&token)).await.is_err());

    let (code, out, _) = run_cli(&s.ws(), &["token", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("agent-r") && !out.contains(&token), "{out}");
}

#[tokio::test]
async fn a_foreign_origin_or_host_gets_403_and_an_oversized_body_413() {
    let s = Scratch::new();
    let token = create_token(&s.ws(), "default", "agent-o");
    let server = HttpServer::start(&s.ws(), &["--allowed-origin", "http://localhost:6274"]);
    let url = server.mcp();
    let t = Some(token.as_str());

    let (status, _, _, body) = post(
        &url,
        t,
        None,
        &[("origin", "http://evil.example")],
        &initialize(),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, _, _, body) =
        post(&url, t, None, &[("host", "evil.example")], &initialize()).await;
    assert_eq!(status, 403, "{body}");
    // Host and Origin come before the token: a foreign page gets 403 even
    // without one, at /mcp as at /sse and /admin.
    let (status, _, _, body) = post(
        &url,
        None,
        None,
        &[("origin", "http://evil.example")],
        &initialize(),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let admin = reqwest::Client::new()
        .get(format!("{}/admin/overrides", server.base))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status().as_u16(), 403);
    // The allowed browser origin, and a client that sends no Origin, get in.
    let (status, session, _, body) = post(
        &url,
        t,
        None,
        &[("origin", "http://localhost:6274")],
        &initialize(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(session.is_some());
    let (status, _, _, body) = post(&url, t, None, &[], &initialize()).await;
    assert_eq!(status, 200, "{body}");

    let huge = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"padding": "x".repeat(17 * 1024 * 1024)}});
    let (status, _, _, _) = post(&url, t, None, &[], &huge).await;
    assert_eq!(status, 413);
}

#[tokio::test]
async fn the_servers_own_origin_gets_in_and_another_loopback_port_gets_403() {
    // A browser sends `Origin: http://127.0.0.1:PORT` only for a page this
    // server itself served: not a rebinding attack (the MCP conformance
    // suite's dns-rebinding-protection expects it accepted). A page of
    // another program on loopback is still foreign.
    let s = Scratch::new();
    let server = HttpServer::start(&s.ws(), &["--no-auth"]);
    let url = server.mcp();
    let port: u16 = server.base.rsplit(':').next().unwrap().parse().unwrap();
    for own in [server.base.clone(), format!("http://localhost:{port}")] {
        let (status, session, _, body) =
            post(&url, None, None, &[("origin", own.as_str())], &initialize()).await;
        assert_eq!(status, 200, "{own}: {body}");
        assert!(session.is_some(), "{own}");
    }
    for foreign in [
        format!("http://localhost:{}", port.wrapping_add(1)),
        format!("https://localhost:{port}"),
        format!("http://evil.example:{port}"),
    ] {
        let (status, _, _, body) = post(
            &url,
            None,
            None,
            &[("origin", foreign.as_str())],
            &initialize(),
        )
        .await;
        assert_eq!(status, 403, "{foreign}: {body}");
    }
    let sse = open_sse(&server.base, None, &[("origin", &server.base)]).await;
    assert_eq!(sse.status().as_u16(), 200);
}

#[tokio::test]
async fn healthz_and_readyz_answer_without_a_token_and_readyz_names_a_broken_store() {
    let s = Scratch::new();
    let server = HttpServer::start(&s.ws(), &[]);
    let (status, body) = server.get("/healthz").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = server.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
    assert!(
        body["policy"].as_str().unwrap().starts_with("built-in"),
        "{body}"
    );
    drop(server);

    // A store that cannot be opened: up, but not ready, and says why.
    let broken = Scratch::new();
    std::fs::create_dir_all(broken.ws().join(".arbiter/arbiter.db")).unwrap();
    let server = HttpServer::start(&broken.ws(), &[]);
    let (status, _) = server.get("/healthz").await;
    assert_eq!(status, 200);
    let (status, body) = server.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not_ready");
    assert!(body["reason"].as_str().unwrap().contains("store"), "{body}");
    // Tokens cannot be checked either: 503, not a false 401.
    let (status, _, _, body) = post(&server.mcp(), Some("arb_x"), None, &[], &initialize()).await;
    assert_eq!(status, 503, "{body}");
}

#[tokio::test]
async fn no_auth_is_refused_off_loopback_and_acts_as_the_client_on_loopback() {
    let s = Scratch::new();
    let out = Command::new(BIN)
        .args(["serve", "--http", "0.0.0.0:0", "--no-auth", "--workspace"])
        .arg(s.ws())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--no-auth is refused"), "{err}");

    s.write("a.txt", "a\n");
    let server = HttpServer::start(&s.ws(), &["--no-auth"]);
    let client = connect(&server.mcp(), None).await.unwrap();
    ok(&client, "file_read", json!({"target_file": "a.txt"})).await;
    client.cancel().await.unwrap();
    let records = audit_records(&s.ws());
    let read = records.iter().rfind(|r| r["tool"] == "file_read").unwrap();
    assert_eq!(read["client_name"], HTTP_CLIENT_NAME, "{read}");
}

#[tokio::test]
async fn a_session_id_is_bound_to_the_token_that_made_it() {
    let s = Scratch::new();
    let a = create_token(&s.ws(), "default", "agent-a");
    let b = create_token(&s.ws(), "default", "agent-b");
    let server = HttpServer::start(&s.ws(), &[]);
    let url = server.mcp();

    let (status, session, _, body) = post(&url, Some(&a), None, &[], &initialize()).await;
    assert_eq!(status, 200, "{body}");
    let session = session.expect("a session id");
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let (status, _, _, body) = post(&url, Some(&a), Some(&session), &[], &initialized).await;
    assert!(status == 202 || status == 200, "{status} {body}");
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});

    // Token B cannot use, nor end, A's session.
    let (status, _, _, body) = post(&url, Some(&b), Some(&session), &[], &list).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("another token"), "{body}");
    let delete = |token: String| {
        let (url, session) = (url.clone(), session.clone());
        async move {
            reqwest::Client::new()
                .delete(&url)
                .header("authorization", format!("Bearer {token}"))
                .header("mcp-session-id", session)
                .header("mcp-protocol-version", PROTOCOL)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(delete(b.clone()).await, 404);

    let (status, _, _, body) = post(&url, Some(&a), Some(&session), &[], &list).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("file_read"), "{body}");

    // DELETE ends the session.
    let status = delete(a.clone()).await;
    assert!((200..300).contains(&status), "{status}");
    let (status, _, _, body) = post(&url, Some(&a), Some(&session), &[], &list).await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn tenants_reach_only_their_own_workspace_and_records() {
    let s = Scratch::new();
    let root = s.outside();
    let (dir_a, dir_b) = (root.join("tenant-a"), root.join("tenant-b"));
    for (dir, secret) in [(&dir_a, "A-SECRET"), (&dir_b, "B-SECRET")] {
        std::fs::create_dir_all(dir.join("src")).unwrap();
        std::fs::write(dir.join("src/secret.txt"), format!("{secret}\n")).unwrap();
    }
    s.write("served.txt", "SERVED-SECRET\n");
    let add = |name: &str, dir: &Path| {
        let dir = dir.to_str().unwrap();
        run_cli(&s.ws(), &["tenant", "add", name, "--tenant-workspace", dir])
    };
    assert_eq!(add("acme", &dir_a).0, 0);
    assert_eq!(add("beta", &dir_b).0, 0);
    // Overlapping workspaces, or a token for a tenant nobody added, are refused.
    let (code, _, err) = add("nested", &dir_a.join("src"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("overlaps"), "{err}");
    let (code, _, err) = add("served", &s.ws());
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run_cli(
        &s.ws(),
        &["token", "create", "--tenant", "nobody", "--agent", "x"],
    );
    assert_eq!(code, 2, "{err}");
    let (code, out, _) = run_cli(&s.ws(), &["tenant", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("acme") && out.contains("beta") && out.contains("default"),
        "{out}"
    );

    let token_a = create_token(&s.ws(), "acme", "bot-a");
    let token_b = create_token(&s.ws(), "beta", "bot-b");
    let server = HttpServer::start(&s.ws(), &[]);
    let a = connect(&server.mcp(), Some(&token_a)).await.unwrap();
    let b = connect(&server.mcp(), Some(&token_b)).await.unwrap();

    let own = ok(&a, "file_read", json!({"target_file": "src/secret.txt"})).await;
    assert!(own.to_string().contains("A-SECRET"), "{own}");
    let own = ok(&b, "file_read", json!({"target_file": "src/secret.txt"})).await;
    assert!(own.to_string().contains("B-SECRET"), "{own}");

    let b_secret = dir_b.join("src/secret.txt");
    let served = s.ws().join("served.txt");
    for path in [
        "../tenant-b/src/secret.txt".to_string(),
        b_secret.to_str().unwrap().to_string(),
        "/proc/self/root".to_string() + b_secret.to_str().unwrap(),
        served.to_str().unwrap().to_string(),
        "../ws/served.txt".to_string(),
    ] {
        let r = call(&a, "file_read", json!({"target_file": path})).await;
        assert_eq!(r.is_error, Some(true), "tenant A read {path}: {}", text(&r));
        assert!(!text(&r).contains("B-SECRET"), "{path}: {}", text(&r));
    }
    for (tool, args) in [
        ("grep_search", json!({"query": "SECRET"})),
        (
            "list_dir",
            json!({"relative_workspace_path": ".", "depth": 5}),
        ),
        ("file_search", json!({"query": "secret"})),
    ] {
        let out = ok(&a, tool, args).await.to_string();
        assert!(
            !out.contains("B-SECRET") && !out.contains("SERVED"),
            "{tool}: {out}"
        );
    }
    // Commands run in A's workspace, in a sandbox that cannot read B's.
    let command = format!("cat {}", b_secret.display());
    let r = call(&a, "run_terminal_cmd", json!({"command": command})).await;
    let out = format!("{} {:?}", text(&r), r.structured_content);
    assert!(!out.contains("B-SECRET"), "{out}");
    // B's override request does not exist for A.
    let refused_write = refused(
        &b,
        "file_write",
        json!({"file_path": "config/.env", "contents": "X=1\n"}),
    )
    .await;
    assert!(refused_write.contains("PATH-002"), "{refused_write}");
    let request = ok(
        &b,
        "override_request",
        json!({"rule_id": "PATH-002", "reason": "generated dev settings", "scope": {"paths": ["config/.env"]}}),
    )
    .await;
    let id = request["override_id"].as_str().unwrap();
    ok(&b, "override_status", json!({"override_id": id})).await;
    refused(&a, "override_status", json!({"override_id": id})).await;
    a.cancel().await.unwrap();
    b.cancel().await.unwrap();

    // Each tenant's records are in its own workspace, under its name and agent.
    let tail = |ws: &Path, tenant: &str| -> Vec<Value> {
        let (code, out, err) = run_cli(
            ws,
            &["audit", "tail", "-n", "1000", "--json", "--tenant", tenant],
        );
        assert_eq!(code, 0, "{err}");
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let records_a = tail(&dir_a, "acme");
    assert_eq!(records_a.len(), 11, "{records_a:?}");
    assert!(
        records_a
            .iter()
            .all(|r| r["tenant"] == "acme" && r["client_name"] == "bot-a"),
        "{records_a:?}"
    );
    let records_b = tail(&dir_b, "beta");
    assert_eq!(records_b.len(), 4, "{records_b:?}");
    assert!(
        records_b
            .iter()
            .all(|r| r["tenant"] == "beta" && r["client_name"] == "bot-b"),
        "{records_b:?}"
    );
    assert!(tail(&dir_b, "acme").is_empty());
    assert!(tail(&s.ws(), "acme").is_empty());
    assert!(audit_records(&s.ws()).is_empty());
    assert!(audit_records(&dir_a).is_empty());
    let (code, out, err) = run_cli(&dir_a, &["audit", "verify", "--tenant", "acme"]);
    assert_eq!(code, 0, "{out}{err}");
}

/// A request to the admin API; returns the status and the JSON body.
async fn admin_call(
    server: &HttpServer,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("{}{path}", server.base);
    let client = reqwest::Client::new();
    let mut request = match method {
        "GET" => client.get(url),
        _ => client.post(url),
    };
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_agent_token_cannot_call_the_admin_api() {
    let s = Scratch::new();
    let agent = create_token(&s.ws(), "default", "agent-a");
    let server = HttpServer::start(&s.ws(), &[]);
    let client = connect(&server.mcp(), Some(&agent)).await.unwrap();
    let asked = ok(
        &client,
        "override_request",
        json!({"rule_id": "PATH-002", "reason": "let me", "scope": {"paths": ["a/.env"]}}),
    )
    .await;
    let id = asked["override_id"].as_str().unwrap().to_string();
    for (method, path) in [
        ("GET", "/admin/overrides".to_string()),
        ("GET", format!("/admin/overrides/{id}")),
        ("POST", format!("/admin/overrides/{id}/approve")),
    ] {
        let (status, body) = admin_call(&server, method, &path, Some(&agent), None).await;
        assert_eq!(status, 403, "{method} {path}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("--admin"),
            "{body}"
        );
        let (status, _) = admin_call(&server, method, &path, None, None).await;
        assert_eq!(status, 401, "{method} {path} without a token");
    }
    let st = ok(&client, "override_status", json!({"override_id": id})).await;
    assert_eq!(st["state"], "pending", "{st}");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn an_admin_token_decides_over_http_for_its_tenant_only() {
    let s = Scratch::new();
    let agent = create_token(&s.ws(), "default", "agent-a");
    let admin = create_admin_token(&s.ws(), "default", "alice");
    let other_ws = s.outside().join("other");
    std::fs::create_dir(&other_ws).unwrap();
    let (code, _, err) = run_cli(
        &s.ws(),
        &[
            "tenant",
            "add",
            "other",
            "--tenant-workspace",
            other_ws.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let other_admin = create_admin_token(&s.ws(), "other", "bob");
    let server = HttpServer::start(&s.ws(), &[]);

    // An admin token is no MCP client.
    let (status, _, _, body) = post(&server.mcp(), Some(&admin), None, &[], &initialize()).await;
    assert_eq!(status, 403, "{body}");

    let client = connect(&server.mcp(), Some(&agent)).await.unwrap();
    let write = json!({"file_path": "config/.env", "contents": "MODE=dev\n"});
    refused(&client, "file_write", write.clone()).await;
    let asked = ok(
        &client,
        "override_request",
        json!({"rule_id": "PATH-002", "reason": "dev env", "scope": {"paths": ["config/.env"]}}),
    )
    .await;
    let id = asked["override_id"].as_str().unwrap().to_string();

    let (status, body) = admin_call(&server, "GET", "/admin/overrides", Some(&admin), None).await;
    assert_eq!(status, 200, "{body}");
    let listed = body["overrides"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{body}");
    assert_eq!(listed[0]["override_id"], id.as_str());
    assert_eq!(listed[0]["agent"], "agent-a");
    // Another tenant's admin sees none of it and cannot decide it.
    let (status, body) =
        admin_call(&server, "GET", "/admin/overrides", Some(&other_admin), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["overrides"], json!([]), "{body}");
    let approve = format!("/admin/overrides/{id}/approve");
    let (status, _) = admin_call(&server, "POST", &approve, Some(&other_admin), None).await;
    assert_eq!(status, 404);

    let (status, body) = admin_call(
        &server,
        "POST",
        &approve,
        Some(&admin),
        Some(json!({"note": "dev only", "minutes": 30})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["override"]["state"], "approved", "{body}");
    assert_eq!(body["override"]["decided_by"], "admin:alice", "{body}");
    // Deciding twice is a conflict, not a second decision.
    let (status, _) = admin_call(&server, "POST", &approve, Some(&admin), None).await;
    assert_eq!(status, 409);
    let (status, _) = admin_call(
        &server,
        "POST",
        &approve,
        Some(&admin),
        Some(json!({"minutes": 99_999_999})),
    )
    .await;
    // Longer than the policy's overrides.max_minutes: refused as such.
    assert_eq!(status, 422);

    ok(&client, "file_write", write).await;
    let st = ok(&client, "override_status", json!({"override_id": id})).await;
    assert_eq!(st["note"], "dev only", "{st}");
    client.cancel().await.unwrap();

    let records = audit_records(&s.ws());
    assert!(
        records
            .iter()
            .any(|r| r["tool"] == "override approve" && r["client_name"] == "admin:alice"),
        "{records:?}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["tool"] == "file_write" && r["waiver_ids"] == id.as_str()),
        "{records:?}"
    );
}

#[test]
fn a_tenant_workspace_under_a_path_every_command_reads_is_refused() {
    let s = Scratch::new();
    let (code, _, err) = run_cli(
        &s.ws(),
        &["tenant", "add", "sys", "--tenant-workspace", "/etc"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("every sandboxed command may"), "{err}");
    let (_, out, _) = run_cli(&s.ws(), &["tenant", "list"]);
    assert!(!out.contains("sys"), "{out}");
}

// ---- The legacy HTTP+SSE transport: GET /sse + POST /messages?sessionId= ----

/// An open `GET /sse` stream, read event by event.
struct SseStream {
    response: reqwest::Response,
    buf: String,
}

impl SseStream {
    /// The next `(event, data)`; keep-alive comments are skipped.
    async fn next_event(&mut self) -> (String, String) {
        let read = async {
            loop {
                if let Some(end) = self.buf.find("\n\n") {
                    let block: String = self.buf.drain(..end + 2).collect();
                    let (mut event, mut data) = (String::from("message"), Vec::new());
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("event:") {
                            event = v.trim().to_string();
                        } else if let Some(v) = line.strip_prefix("data:") {
                            data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
                        }
                    }
                    if !data.is_empty() {
                        return (event, data.join("\n"));
                    }
                    continue;
                }
                let chunk = self.response.chunk().await.unwrap().expect("stream ended");
                self.buf.push_str(&String::from_utf8_lossy(&chunk));
            }
        };
        tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .expect("an SSE event within 30 s")
    }

    /// The next `message` event, as JSON.
    async fn next_message(&mut self) -> Value {
        let (event, data) = self.next_event().await;
        assert_eq!(event, "message", "{data}");
        serde_json::from_str(&data).unwrap()
    }
}

async fn open_sse(base: &str, token: Option<&str>, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .get(format!("{base}/sse"))
        .header("accept", "text/event-stream");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// An SSE session of `token`: the stream and the POST URL its `endpoint` event gave.
async fn sse_session(base: &str, token: &str) -> (SseStream, String) {
    let response = open_sse(base, Some(token), &[]).await;
    assert_eq!(response.status().as_u16(), 200);
    let kind = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(kind.starts_with("text/event-stream"), "{kind}");
    let mut stream = SseStream {
        response,
        buf: String::new(),
    };
    let (event, data) = stream.next_event().await;
    assert_eq!(event, "endpoint", "the first event names the POST URL");
    // Relative to the stream's URL, so it survives a path-prefixing proxy.
    let id = data
        .strip_prefix("messages?sessionId=")
        .unwrap_or_else(|| panic!("endpoint data: {data}"));
    assert!(
        id.len() >= 32 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "a random session id: {id}"
    );
    let url = reqwest::Url::parse(&format!("{base}/sse"))
        .unwrap()
        .join(&data)
        .unwrap();
    assert_eq!(url.path(), "/messages");
    (stream, url.to_string())
}

async fn post_message(url: &str, token: Option<&str>, body: &Value) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn sse_sends_the_endpoint_first_then_answers_posts_on_the_stream() {
    let s = Scratch::new();
    s.write("notes.txt", "hello over sse\n");
    let token = create_token(&s.ws(), "default", "sse-bot");
    let server = HttpServer::start(&s.ws(), &[]);

    let (mut stream, url) = sse_session(&server.base, &token).await;
    let (status, _) = post_message(&url, Some(&token), &initialize()).await;
    assert_eq!(
        status, 202,
        "a POST is accepted; the answer goes on the stream"
    );
    let init = stream.next_message().await;
    assert_eq!(init["id"], 1, "{init}");
    assert_eq!(init["result"]["serverInfo"]["name"], "arbiter", "{init}");

    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    assert_eq!(post_message(&url, Some(&token), &initialized).await.0, 202);
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "file_read", "arguments": {"target_file": "notes.txt"}}});
    assert_eq!(post_message(&url, Some(&token), &call).await.0, 202);
    let read = stream.next_message().await;
    assert_eq!(read["id"], 2, "{read}");
    assert!(read.to_string().contains("hello over sse"), "{read}");

    let (status, body) = post_message(&url, Some(&token), &json!({"not": "json-rpc"})).await;
    assert_eq!(status, 400, "{body}");

    // The call acted as the token's agent.
    let records = audit_records(&s.ws());
    let record = records.iter().rfind(|r| r["tool"] == "file_read").unwrap();
    assert_eq!(record["client_name"], "sse-bot", "{record}");

    // Closing the stream ends the session: its id is gone.
    drop(stream);
    let mut status = 0;
    for _ in 0..50 {
        status = post_message(&url, Some(&token), &call).await.0;
        if status == 404 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status, 404,
        "a closed stream's session no longer takes messages"
    );
}

#[tokio::test]
async fn sse_needs_a_token_refuses_admin_tokens_and_foreign_origins() {
    let s = Scratch::new();
    let token = create_token(&s.ws(), "default", "sse-bot");
    let admin = create_admin_token(&s.ws(), "default", "alice");
    let server = HttpServer::start(&s.ws(), &[]);

    let response = open_sse(&server.base, None, &[]).await;
    assert_eq!(response.status().as_u16(), 401);
    assert!(response.headers().contains_key("www-authenticate"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request", "{body}");

    let response = open_sse(&server.base, Some(&admin), &[]).await;
    assert_eq!(
        response.status().as_u16(),
        403,
        "admin tokens do not speak MCP"
    );

    let evil = [("origin", "http://evil.example")];
    let response = open_sse(&server.base, Some(&token), &evil).await;
    assert_eq!(response.status().as_u16(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "forbidden_origin", "{body}");

    let foreign_host = [("host", "evil.example")];
    let response = open_sse(&server.base, Some(&token), &foreign_host).await;
    assert_eq!(
        response.status().as_u16(),
        403,
        "DNS rebinding: foreign Host"
    );

    // A POST is checked the same way, before its session is looked at.
    let (_stream, url) = sse_session(&server.base, &token).await;
    let response = reqwest::Client::new()
        .post(&url)
        .header("authorization", format!("Bearer {token}"))
        .header("origin", "http://evil.example")
        .body(initialize().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    assert_eq!(post_message(&url, None, &initialize()).await.0, 401);
}

#[tokio::test]
async fn an_sse_session_is_bound_to_the_token_that_opened_it() {
    let s = Scratch::new();
    let token_a = create_token(&s.ws(), "default", "agent-a");
    let token_b = create_token(&s.ws(), "default", "agent-b");
    let server = HttpServer::start(&s.ws(), &[]);

    let (mut stream, url) = sse_session(&server.base, &token_a).await;
    let (status, body) = post_message(&url, Some(&token_b), &initialize()).await;
    assert_eq!(
        status, 404,
        "another token's session does not exist: {body}"
    );
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "session_not_found", "{body}");
    let unknown = format!(
        "{}/messages?sessionId=0123456789abcdef0123456789abcdef",
        server.base
    );
    assert_eq!(
        post_message(&unknown, Some(&token_a), &initialize())
            .await
            .0,
        404
    );

    // The owner still can, and nothing of B's attempt reached the session.
    assert_eq!(
        post_message(&url, Some(&token_a), &initialize()).await.0,
        202
    );
    let init = stream.next_message().await;
    assert_eq!(init["id"], 1, "{init}");
}

/// `GET /metrics` as `name{labels}` -> value; every sample line must parse.
async fn scrape(base: &str) -> std::collections::BTreeMap<String, f64> {
    let response = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let kind = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(kind.starts_with("text/plain"), "{kind}");
    let text = response.text().await.unwrap();
    let mut samples = std::collections::BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            assert!(
                line.is_empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE "),
                "{line}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = value.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        assert!(
            text.contains(&format!(
                "# TYPE {}",
                name.trim_end_matches("_bucket")
                    .trim_end_matches("_sum")
                    .trim_end_matches("_count")
            )),
            "no TYPE for {line}"
        );
        samples.insert(series.to_string(), value);
    }
    samples
}

#[tokio::test]
async fn metrics_count_calls_by_tool_and_decision_with_latency_and_sessions() {
    let s = Scratch::new();
    s.write("notes.txt", "x\n");
    let token = create_token(&s.ws(), "default", "metrics-bot");
    let server = HttpServer::start(&s.ws(), &[]);

    let client = connect(&server.mcp(), Some(&token)).await.unwrap();
    ok(&client, "file_read", json!({"target_file": "notes.txt"})).await;
    ok(&client, "file_read", json!({"target_file": "notes.txt"})).await;
    let m = scrape(&server.base).await;

    let calls: f64 = m
        .iter()
        .filter(|(k, _)| {
            k.starts_with("arbiter_tool_calls_total{tool=\"file_read\",")
                && k.contains("outcome=\"ok\"")
        })
        .map(|(_, v)| v)
        .sum();
    assert_eq!(calls, 2.0, "{m:#?}");
    assert!(
        m.keys()
            .any(|k| k.starts_with("arbiter_tool_calls_total{") && k.contains("decision=\"")),
        "{m:#?}"
    );
    let count = m["arbiter_tool_call_duration_seconds_count{tool=\"file_read\"}"];
    assert_eq!(count, 2.0);
    assert_eq!(
        m["arbiter_tool_call_duration_seconds_bucket{tool=\"file_read\",le=\"+Inf\"}"],
        count
    );
    // Buckets are cumulative: never fewer calls under a larger bound.
    let mut buckets: Vec<(f64, f64)> = m
        .iter()
        .filter_map(|(k, v)| {
            let le = k
                .strip_prefix("arbiter_tool_call_duration_seconds_bucket{tool=\"file_read\",le=\"")?
                .trim_end_matches("\"}");
            Some((le.parse::<f64>().unwrap_or(f64::INFINITY), *v))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(buckets.len() > 5, "{buckets:?}");
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    assert!(m["arbiter_mcp_sessions_active"] >= 1.0, "{m:#?}");
    assert_eq!(m["arbiter_overrides_pending{tenant=\"default\"}"], 0.0);
    assert_eq!(m["arbiter_commands_running"], 0.0);

    // A background command is counted while it runs, and no longer once stopped.
    let started = ok(
        &client,
        "run_terminal_cmd",
        json!({"command": "sleep 30", "is_background": true}),
    )
    .await;
    let job = started["job_id"].as_str().unwrap().to_string();
    assert_eq!(scrape(&server.base).await["arbiter_commands_running"], 1.0);
    client.cancel().await.unwrap(); // the session's jobs end with it
    let mut running = -1.0;
    for _ in 0..100 {
        running = scrape(&server.base).await["arbiter_commands_running"];
        if running == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        running, 0.0,
        "job {job} still counted after its session ended"
    );
}

#[tokio::test]
async fn revoking_a_token_ends_its_sse_session_and_drops_its_server() {
    let s = Scratch::new();
    let token = create_token(&s.ws(), "default", "sse-revoked");
    let id = newest_token_id(&s.ws());
    let server = HttpServer::start(&s.ws(), &["--token-cache-ttl", "0"]);

    let (mut stream, url) = sse_session(&server.base, &token).await;
    assert_eq!(post_message(&url, Some(&token), &initialize()).await.0, 202);
    stream.next_message().await;
    assert_eq!(
        scrape(&server.base).await["arbiter_mcp_sessions_active"],
        1.0
    );

    let (code, _, err) = run_cli(&s.ws(), &["token", "revoke", &id]);
    assert_eq!(code, 0, "token revoke: {err}");
    assert_eq!(post_message(&url, Some(&token), &initialize()).await.0, 401);
    // The refusal ended the session: its stream closes and its server is dropped.
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(_chunk) = stream.response.chunk().await.unwrap() {}
    })
    .await;
    assert!(end.is_ok(), "the revoked token's stream closes");
    let mut active = -1.0;
    for _ in 0..50 {
        active = scrape(&server.base).await["arbiter_mcp_sessions_active"];
        if active == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        active, 0.0,
        "the session's server (and its terminals, jobs) is gone"
    );
}

#[tokio::test]
async fn sigterm_lets_running_calls_answer_then_exits_cleanly() {
    let s = Scratch::new();
    let token = create_token(&s.ws(), "default", "shutdown-bot");
    let mut server = HttpServer::start(&s.ws(), &[]);
    let client = connect(&server.mcp(), Some(&token)).await.unwrap();
    let call = tokio::spawn(async move {
        let r = try_call(
            &client,
            "run_terminal_cmd",
            json!({"command": "sleep 30", "timeout_ms": 60000}),
        )
        .await;
        (r, client)
    });
    let base = server.base.clone();
    let mut running = 0.0;
    for _ in 0..200 {
        running = scrape(&base).await["arbiter_commands_running"];
        if running == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(running, 1.0, "the command started");

    let pid = server.child.id() as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    // The running call still gets its answer: the command was stopped.
    let (result, _client) = tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .expect("the call in progress is answered before the server exits")
        .unwrap();
    let result = result.expect("a tools/call result, not a dropped connection");
    assert_eq!(result.is_error, Some(true));
    assert!(text(&result).contains("cancelled"), "{}", text(&result));

    let mut status = None;
    for _ in 0..300 {
        status = server.child.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = status.expect("the server exits after SIGTERM");
    assert_eq!(status.code(), Some(0), "{status:?}");
    // New connections are refused once it is gone, and the record was kept.
    assert!(reqwest::get(format!("{base}/healthz")).await.is_err());
    let records = audit_records(&s.ws());
    let last = records.last().expect("audit records");
    assert_eq!(last["tool"], "run_terminal_cmd", "{last}");
    let (code, out, err) = run_cli(&s.ws(), &["audit", "verify"]);
    assert_eq!(code, 0, "audit verify: {out}{err}");
}

#[tokio::test]
async fn a_token_over_its_request_limit_gets_429_with_retry_after() {
    let s = Scratch::new();
    // The server's limit applies to tokens without their own; `limited` has its own.
    let limited = token_with(
        &s.ws(),
        &[
            "--tenant",
            "default",
            "--agent",
            "slow",
            "--rate-limit",
            "3/h",
        ],
    );
    let unlimited = token_with(
        &s.ws(),
        &[
            "--tenant",
            "default",
            "--agent",
            "ci",
            "--rate-limit",
            "off",
        ],
    );
    let plain = create_token(&s.ws(), "default", "plain");
    let (code, out, err) = run_cli(&s.ws(), &["token", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("3/h") && out.contains("off"), "{out}");
    let (code, _, err) = run_cli(
        &s.ws(),
        &[
            "token",
            "create",
            "--tenant",
            "default",
            "--agent",
            "x",
            "--rate-limit",
            "9/day",
        ],
    );
    assert_eq!(code, 2, "a bad limit is refused");
    assert!(err.contains("N/s, N/min or N/h"), "{err}");

    let server = HttpServer::start(&s.ws(), &["--rate-limit", "5/h"]);
    let url = server.mcp();
    for i in 0..3 {
        let (status, ..) = post(&url, Some(&limited), None, &[], &initialize()).await;
        assert_eq!(status, 200, "request {i} of 3 is within the limit");
    }
    let (status, _, headers, body) = post(&url, Some(&limited), None, &[], &initialize()).await;
    assert_eq!(status, 429, "{body}");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    // 3 an hour: the next one is due in about 20 minutes.
    assert!((1000..=1200).contains(&retry), "Retry-After: {retry}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "rate_limited");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("3/h") && message.contains("--rate-limit"),
        "{message}"
    );
    // The legacy transport counts against the same bucket.
    assert_eq!(
        open_sse(&server.base, Some(&limited), &[]).await.status(),
        429
    );

    // Other tokens have buckets of their own: the server's 5/h, or none.
    for _ in 0..5 {
        assert_eq!(
            post(&url, Some(&plain), None, &[], &initialize()).await.0,
            200
        );
    }
    assert_eq!(
        post(&url, Some(&plain), None, &[], &initialize()).await.0,
        429
    );
    for _ in 0..20 {
        assert_eq!(
            post(&url, Some(&unlimited), None, &[], &initialize())
                .await
                .0,
            200
        );
    }
}
