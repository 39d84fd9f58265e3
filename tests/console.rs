//! The web console at `/ui` of `arbiter serve --http`: the real binary on a
//! free loopback port, a person's browser played by reqwest (cookies and
//! forms by hand, so every header and status is seen), and agents played by
//! rmcp's streamable HTTP client with agent tokens. The end-to-end run in
//! headless Chromium is in `console_browser.rs`.

mod common;
mod console_support;

use common::*;
use console_support::*;
use serde_json::json;

#[tokio::test]
async fn an_admin_signs_in_and_every_page_carries_the_security_headers() {
    let s = Scratch::new();
    let admin = create_admin_token(&s.ws(), "default", "alice");
    let server = HttpServer::start(&s.ws(), &[]);
    let mut person = Person::new(&server.base);

    // Not signed in: every page sends to the sign-in form.
    for page in ["/ui", "/ui/overrides", "/ui/audit", "/ui/tasks"] {
        let r = person.get(page).await;
        assert_eq!(r.status, 303, "{page}");
        let to = r.header("location");
        assert!(to == "/ui/login" || to == "/ui/overrides", "{page} → {to}");
    }
    let form = person.get("/ui/login").await;
    assert_eq!(form.status, 200);
    assert_security_headers(&form);
    let login_cookie = form.header_all("set-cookie").join("\n");
    assert!(
        login_cookie.contains("HttpOnly") && login_cookie.contains("SameSite=Strict"),
        "{login_cookie}"
    );

    let r = person.login(&admin).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), "/ui/overrides");
    let cookie = r
        .header_all("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("arbiter_console="))
        .expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains(&admin), "the cookie never holds the token");

    for (page, title) in [
        ("/ui/overrides", "Override requests"),
        ("/ui/audit", "Audit trail"),
        ("/ui/tasks", "Task board"),
    ] {
        let r = person.get(page).await;
        assert_eq!(r.status, 200, "{page}: {}", r.body);
        assert_security_headers(&r);
        assert!(r.body.contains(title), "{page}: {}", r.body);
        assert!(r.body.contains("alice"), "{page} names the person");
        assert!(!r.body.contains("<script"), "{page} has no script");
    }
    let css = person.get("/ui/static/console.css").await;
    assert_eq!(css.status, 200);
    assert!(css.header("content-type").starts_with("text/css"));

    // Sign out: the session is gone.
    let r = person.post("/ui/logout", &[]).await;
    assert_eq!(r.status, 303);
    assert_eq!(person.get("/ui/overrides").await.status, 303);
}

#[tokio::test]
async fn an_agent_token_cannot_open_the_console() {
    let s = Scratch::new();
    let agent = create_token(&s.ws(), "default", "agent-a");
    let server = HttpServer::start(&s.ws(), &[]);
    let mut person = Person::new(&server.base);
    let r = person.login(&agent).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body.contains("Agent tokens cannot open the console") && r.body.contains("--admin"),
        "{}",
        r.body
    );
    assert!(
        r.header_all("set-cookie")
            .iter()
            .all(|c| !c.starts_with("arbiter_console=")),
        "no session for an agent token"
    );
    assert_eq!(person.get("/ui/overrides").await.status, 303);

    // Nor an unknown token, nor something that is not a token.
    let r = person.login("arb_not-a-real-token").await;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = person.login("hunter2").await;
    assert_eq!(r.status, 401, "{}", r.body);
}

#[tokio::test]
async fn a_form_without_its_csrf_token_or_from_another_origin_is_refused() {
    let s = Scratch::new();
    let agent = create_token(&s.ws(), "default", "agent-a");
    let admin = create_admin_token(&s.ws(), "default", "alice");
    let server = HttpServer::start(&s.ws(), &[]);
    let client = agent_client(&server.mcp(), &agent).await;
    let asked = ok(
        &client,
        "override_request",
        json!({"rule_id": "PATH-002", "reason": "generated dev env", "scope": {"paths": ["config/.env"]}}),
    )
    .await;
    let id = asked["override_id"].as_str().unwrap().to_string();
    let mut person = Person::new(&server.base);
    assert_eq!(person.login(&admin).await.status, 303);
    let approve = format!("/ui/overrides/{id}/approve");

    // No CSRF field, then a wrong one: 403, nothing decided.
    let r = person
        .post_raw(&approve, &[("minutes", "10"), ("note", "x")], &[])
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("CSRF"), "{}", r.body);
    let r = person
        .post_raw(&approve, &[("csrf", "forged"), ("minutes", "10")], &[])
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    // The right token from a foreign page (its Origin): 403 as well.
    let csrf = person.csrf().await;
    let r = person
        .post_raw(
            &approve,
            &[("csrf", &csrf), ("minutes", "10")],
            &[("origin", "http://evil.example")],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    // A foreign Host (DNS rebinding): 403 before anything else.
    let r = person
        .post_raw(&approve, &[("csrf", &csrf)], &[("host", "evil.example:80")])
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    // A sign-in form posted without its own CSRF cookie is refused too.
    let mut stranger = Person::new(&server.base);
    let r = stranger
        .post_raw("/ui/login", &[("csrf", "x"), ("token", &admin)], &[])
        .await;
    assert_eq!(r.status, 403, "{}", r.body);

    let st = ok(&client, "override_status", json!({"override_id": id})).await;
    assert_eq!(st["state"], "pending", "{st}");

    // With its token, from the console's own origin, the form works.
    let own = server.base.clone();
    let r = person
        .post_raw(
            &approve,
            &[("csrf", &csrf), ("minutes", "10"), ("note", "dev only")],
            &[("origin", &own)],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let page = person.get("/ui/overrides").await;
    assert!(
        page.body.contains(&format!("{id} approved by admin:alice")),
        "{}",
        page.body
    );
    let st = ok(&client, "override_status", json!({"override_id": id})).await;
    assert_eq!(st["state"], "approved", "{st}");
    assert_eq!(st["decided_by"], "admin:alice", "{st}");
    assert_eq!(st["note"], "dev only", "{st}");
    client.cancel().await.unwrap();
    // Audited as the admin API's decisions are.
    assert!(
        audit_records(&s.ws())
            .iter()
            .any(|r| r["tool"] == "override approve" && r["client_name"] == "admin:alice"),
        "the approval is on record"
    );
}

#[tokio::test]
async fn what_an_agent_wrote_is_shown_escaped_never_run() {
    let s = Scratch::new();
    let agent = create_token(&s.ws(), "default", "agent-a");
    let admin = create_admin_token(&s.ws(), "default", "alice");
    let server = HttpServer::start(&s.ws(), &[]);
    let client = agent_client(&server.mcp(), &agent).await;
    let evil = r#"<script>alert("owned")</script><img src=x onerror=alert(1)> & "quoted""#;
    refused(
        &client,
        "file_write",
        json!({"file_path": "config/.env", "contents": evil}),
    )
    .await;
    ok(
        &client,
        "override_request",
        json!({"rule_id": "PATH-002", "reason": evil, "scope": {"paths": ["config/.env"]}}),
    )
    .await;
    client.cancel().await.unwrap();

    let mut person = Person::new(&server.base);
    assert_eq!(person.login(&admin).await.status, 303);
    for page in ["/ui/overrides", "/ui/audit"] {
        let r = person.get(page).await;
        assert_eq!(r.status, 200, "{page}");
        assert!(
            !r.body.contains("<script") && !r.body.contains("<img"),
            "{page} must not carry the agent's markup: {}",
            r.body
        );
        assert!(
            r.body.contains("&lt;script&gt;alert(") && r.body.contains("&lt;img src=x"),
            "{page} shows the text escaped: {}",
            r.body
        );
    }
    // The pending request shows the refused call it is about.
    let r = person.get("/ui/overrides").await;
    assert!(
        r.body
            .contains("&lt;script&gt;alert(&quot;owned&quot;)&lt;/script&gt;"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("file_write") && r.body.contains("config/.env"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn a_revoked_admin_token_ends_its_console_session_at_once() {
    let s = Scratch::new();
    let admin = create_admin_token(&s.ws(), "default", "alice");
    let id = newest_token_id(&s.ws());
    let server = HttpServer::start(&s.ws(), &[]);
    let mut person = Person::new(&server.base);
    assert_eq!(person.login(&admin).await.status, 303);
    assert_eq!(person.get("/ui/audit").await.status, 200);
    let (code, _, err) = run_cli(&s.ws(), &["token", "revoke", &id]);
    assert_eq!(code, 0, "{err}");
    let r = person.get("/ui/audit").await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("revoked"), "{}", r.body);
    assert_eq!(person.get("/ui/overrides").await.status, 303);
}

#[tokio::test]
async fn the_audit_trail_filters_pages_and_verifies_the_chain() {
    let s = Scratch::new();
    s.write("a.txt", "a\n");
    s.write("config/.env", "SECRET=1\n");
    let agent = create_token(&s.ws(), "default", "agent-a");
    let other = create_token(&s.ws(), "default", "agent-b");
    let admin = create_admin_token(&s.ws(), "default", "alice");
    let server = HttpServer::start(&s.ws(), &[]);
    let a = agent_client(&server.mcp(), &agent).await;
    let b = agent_client(&server.mcp(), &other).await;
    for _ in 0..55 {
        ok(&a, "file_read", json!({"target_file": "a.txt"})).await;
    }
    refused(&b, "file_read", json!({"target_file": "config/.env"})).await;
    a.cancel().await.unwrap();
    b.cancel().await.unwrap();

    let mut person = Person::new(&server.base);
    assert_eq!(person.login(&admin).await.status, 303);
    let all = person.get("/ui/audit").await;
    assert!(
        all.body.contains("Chain verified: 56 records"),
        "{}",
        all.body
    );
    assert!(all.body.contains("page 1 of 2"), "{}", all.body);
    let older = person.get("/ui/audit?page=2").await;
    assert!(older.body.contains("page 2 of 2"), "{}", older.body);

    let refusals = person.get("/ui/audit?agent=agent-b&decision=deny").await;
    assert!(
        refusals.body.contains("1 matching records"),
        "{}",
        refusals.body
    );
    assert!(refusals.body.contains("PATH-002"), "{}", refusals.body);
    let none = person.get("/ui/audit?agent=agent-a&decision=deny").await;
    assert!(none.body.contains("0 matching records"), "{}", none.body);
    let future = person.get("/ui/audit?from=2999-01-01").await;
    assert!(
        future.body.contains("0 matching records"),
        "{}",
        future.body
    );
    let bad = person.get("/ui/audit?from=%3Cscript%3E").await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(!bad.body.contains("<script"), "{}", bad.body);
}

/// Two tenants: an admin of one sees only its own trail and requests (asking
/// for the other's is 403), while an operator's token (`--all-tenants`) picks
/// a tenant on each page, and decides the other tenant's request — through
/// the console and through the admin API, whose `?tenant=` works the same way.
#[tokio::test]
async fn an_operator_filters_by_tenant_and_a_tenant_admin_sees_only_its_own() {
    let s = Scratch::new();
    let beta_dir = s.outside().join("beta");
    std::fs::create_dir_all(beta_dir.join("config")).unwrap();
    std::fs::write(beta_dir.join("config/.env"), "B=1\n").unwrap();
    let (code, _, err) = run_cli(
        &s.ws(),
        &[
            "tenant",
            "add",
            "beta",
            "--tenant-workspace",
            beta_dir.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let default_agent = create_token(&s.ws(), "default", "bot-default");
    let beta_agent = create_token(&s.ws(), "beta", "bot-beta");
    let default_admin = create_admin_token(&s.ws(), "default", "dora");
    let operator = token_with(&s.ws(), &["--all-tenants", "--admin", "--agent", "olga"]);
    // --all-tenants is for people only.
    let (code, _, err) = run_cli(
        &s.ws(),
        &["token", "create", "--all-tenants", "--agent", "bot"],
    );
    assert_ne!(code, 0, "an agent token over every tenant was made: {err}");
    let (_, list, _) = run_cli(&s.ws(), &["token", "list"]);
    assert!(
        list.lines()
            .any(|l| l.contains("olga") && l.contains(" * ")),
        "{list}"
    );

    let server = HttpServer::start(&s.ws(), &[]);
    let d = agent_client(&server.mcp(), &default_agent).await;
    let b = agent_client(&server.mcp(), &beta_agent).await;
    ok(&d, "list_dir", json!({"relative_workspace_path": "."})).await;
    refused(&b, "file_read", json!({"target_file": "config/.env"})).await;
    let asked = ok(
        &b,
        "override_request",
        json!({"rule_id": "PATH-002", "reason": "beta needs its env", "scope": {"paths": ["config/.env"]}}),
    )
    .await;
    let id = asked["override_id"].as_str().unwrap().to_string();

    // The default tenant's admin: its own trail; beta's is not for it.
    let mut dora = Person::new(&server.base);
    assert_eq!(dora.login(&default_admin).await.status, 303);
    let own = dora.get("/ui/audit").await;
    assert!(
        own.body.contains("bot-default") && !own.body.contains("bot-beta"),
        "{}",
        own.body
    );
    assert!(
        !own.body.contains("Tenants:"),
        "no tenant switcher for one tenant's admin"
    );
    for page in [
        "/ui/audit?tenant=beta",
        "/ui/overrides?tenant=beta",
        "/ui/tasks?tenant=beta",
    ] {
        let r = dora.get(page).await;
        assert_eq!(r.status, 403, "{page}: {}", r.body);
        assert!(r.body.contains("for tenant `default` only"), "{}", r.body);
    }
    let r = dora
        .post(
            &format!("/ui/overrides/{id}/approve?tenant=beta"),
            &[("minutes", "5")],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);

    // The operator: default first, beta on asking, each with its own chain.
    let mut olga = Person::new(&server.base);
    assert_eq!(olga.login(&operator).await.status, 303);
    let first = olga.get("/ui/audit").await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(
        first.body.contains("bot-default") && !first.body.contains("bot-beta"),
        "{}",
        first.body
    );
    assert!(
        first.body.contains("Tenants:") && first.body.contains("?tenant=beta"),
        "{}",
        first.body
    );
    let beta = olga
        .get("/ui/audit?tenant=beta&agent=bot-beta&decision=deny")
        .await;
    assert_eq!(beta.status, 200, "{}", beta.body);
    assert!(beta.body.contains("1 matching records"), "{}", beta.body);
    assert!(
        beta.body.contains("PATH-002") && !beta.body.contains("bot-default"),
        "{}",
        beta.body
    );
    assert!(beta.body.contains("Chain verified"), "{}", beta.body);
    let pending = olga.get("/ui/overrides?tenant=beta").await;
    assert!(
        pending.body.contains(&id) && pending.body.contains("beta needs its env"),
        "{}",
        pending.body
    );
    assert!(
        pending
            .body
            .contains(&format!("/ui/overrides/{id}/approve?tenant=beta")),
        "the forms keep the tenant: {}",
        pending.body
    );
    assert!(
        !olga
            .get("/ui/overrides")
            .await
            .body
            .contains("beta needs its env")
    );
    let r = olga
        .post(
            &format!("/ui/overrides/{id}/approve?tenant=beta"),
            &[("minutes", "5"), ("note", "ok for beta")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), "/ui/overrides?tenant=beta");
    ok(&b, "file_read", json!({"target_file": "config/.env"})).await;
    assert_eq!(olga.get("/ui/audit?tenant=nobody").await.status, 404);

    // The admin API: the same rule.
    let http = reqwest::Client::new();
    let api = |token: &str, path: &str| {
        http.get(format!("{}{path}", server.base))
            .bearer_auth(token)
            .send()
    };
    let r = api(&default_admin, "/admin/overrides?state=all&tenant=beta")
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = api(&operator, "/admin/overrides?state=all&tenant=beta")
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["tenant"], "beta", "{body}");
    assert_eq!(body["overrides"][0]["state"], "approved", "{body}");
    assert_eq!(body["overrides"][0]["decided_by"], "admin:olga", "{body}");
    let r = api(&operator, "/admin/overrides?tenant=nobody")
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = api(&operator, "/admin/overrides?state=all").await.unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["overrides"].as_array().unwrap().len(), 0, "{body}");
    d.cancel().await.unwrap();
    b.cancel().await.unwrap();
}
