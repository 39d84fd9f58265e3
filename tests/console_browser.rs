//! The web console end to end in headless Chromium (Debian's `chromium` and
//! `chromium-driver`, installed by tools/browser/setup.sh when missing),
//! driven over WebDriver with fantoccini. An agent is refused a write and
//! asks for an override over MCP; a person signs in to /ui with an admin
//! token, sees the request with the refused call, approves it for a
//! duration with a note, and the agent's retried write succeeds. An agent
//! token cannot open the console. Screenshots of the three pages are saved
//! (see [`screenshots`]); the README's are refreshed with
//! `ARBITER_UPDATE_SCREENSHOTS=1 cargo test --test console_browser`.
//!
//! Everything stays on loopback: the arbiter server, chromedriver and the
//! browser (its background networking, sync and updates are switched off).

mod common;
mod console_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use console_support::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Install the browser when it is missing (CI runs as root on a clean
/// machine); a failed install fails the test rather than skipping it.
fn ensure_browser() {
    if Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists() {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/browser/setup.sh");
    eprintln!(
        "installing chromium and chromedriver with {}",
        script.display()
    );
    let status = Command::new("bash")
        .arg(&script)
        .status()
        .expect("run tools/browser/setup.sh");
    assert!(
        status.success(),
        "tools/browser/setup.sh failed ({status}): install Debian's chromium and chromium-driver \
         packages (as root: apt-get install chromium chromium-driver)"
    );
}

/// chromedriver on a free loopback port.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Self {
            child: Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn chromedriver"),
            url: format!("http://127.0.0.1:{port}"),
        };
        // Readiness, not timing: poll /status until it answers (bounded).
        for _ in 0..200 {
            if let Ok(r) = reqwest::get(format!("{}/status", driver.url)).await
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                return driver;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not become ready on {}", driver.url);
    }

    async fn browser(&self, profile: &Path) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1440,1000",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a Chromium session through chromedriver")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shipped default policy, plus quality gates so the board has verdicts.
fn policy_with_gates() -> String {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/default.yaml"),
    )
    .unwrap();
    let gates = "    - {name: tests, command: 'echo 42 passed, 0 failed'}\n    \
                 - {name: lint, command: 'echo no warnings'}\n";
    // The shipped policy has a `tasks:` block with no gates: give it some.
    let empty = "  gates: {}";
    let at = shipped
        .find(empty)
        .expect("the shipped tasks block has `gates: {}`");
    let line_end = at + shipped[at..].find('\n').unwrap_or(shipped.len() - at);
    format!(
        "{}  gates:\n    1:\n{gates}    2:\n{gates}    3:\n{gates}{}",
        &shipped[..at],
        &shipped[line_end + 1..]
    )
}

async fn sign_in(browser: &Client, base: &str, token: &str) -> String {
    browser.goto(&format!("{base}/ui/login")).await.unwrap();
    let field = browser.find(Locator::Css("#token")).await.unwrap();
    field.send_keys(token).await.unwrap();
    browser
        .find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The next page: the console's header, or a page saying why not.
    browser
        .wait()
        .for_element(Locator::Css("header, p.flash"))
        .await
        .expect("a page after signing in");
    browser.source().await.unwrap()
}

/// Where the screenshots go: the target directory on every run, and
/// docs/screenshots/ (the README's, tracked) with ARBITER_UPDATE_SCREENSHOTS=1,
/// so an ordinary test run leaves the work tree as it was.
fn screenshots() -> PathBuf {
    let dir = if std::env::var_os("ARBITER_UPDATE_SCREENSHOTS").is_some_and(|v| v == "1") {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots")
    } else {
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots")
    };
    std::fs::create_dir_all(&dir).unwrap();
    eprintln!("screenshots of the console: {}", dir.display());
    dir
}

#[tokio::test]
async fn a_person_approves_in_the_browser_what_an_agent_asked_and_its_retry_succeeds() {
    ensure_browser();
    let s = Scratch::new();
    s.write(".arbiter/policy.yaml", &policy_with_gates());
    let agent = create_token(&s.ws(), "default", "agent-a");
    let admin = create_admin_token(&s.ws(), "default", "alice");
    let server = HttpServer::start(&s.ws(), &[]);
    let base = server.base.clone();

    // The agent: some task work for the board, then a refused write and a request.
    let client = agent_client(&server.mcp(), &agent).await;
    ok(
        &client,
        "agent_register",
        json!({"capabilities": {"task_types": ["feature", "bugfix", "refactor", "test", "docs", "research", "ops"]}}),
    )
    .await;
    for (title, priority) in [
        ("Fix crash when the config file is empty", 5),
        ("Add authentication to the admin API", 4),
        ("Refactor the config loader into modules", 3),
        ("Document the task board in the README", 2),
    ] {
        ok(
            &client,
            "task_submit",
            json!({"title": title, "description": "see the title", "priority": priority}),
        )
        .await;
    }
    // The bugfix passes its gates (done); the tier 1 feature waits for review.
    for expected in ["completed", "needs_review"] {
        let next = ok(&client, "task_next", json!({})).await;
        let id = next["task"]["task_id"].as_str().unwrap().to_string();
        let done = ok(
            &client,
            "task_complete",
            json!({"task_id": id, "summary": "done, tests added"}),
        )
        .await;
        assert_eq!(done["task"]["state"], expected, "{done}");
    }
    ok(&client, "task_next", json!({})).await;

    let write = json!({"file_path": "config/.env", "contents": "MODE=dev\n"});
    let why = refused(&client, "file_write", write.clone()).await;
    assert!(why.contains("[PATH-002]"), "{why}");
    let asked = ok(
        &client,
        "override_request",
        json!({"rule_id": "PATH-002", "reason": "the dev env file is generated for local test runs; it holds no secret",
               "scope": {"paths": ["config/.env"]}, "duration_minutes": 30}),
    )
    .await;
    let id = asked["override_id"].as_str().unwrap().to_string();

    let driver = Driver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let browser = driver.browser(profile.path()).await;

    // An agent token cannot open the console.
    let page = sign_in(&browser, &base, &agent).await;
    assert!(
        page.contains("Agent tokens cannot open the console"),
        "{page}"
    );
    browser.goto(&format!("{base}/ui/overrides")).await.unwrap();
    assert!(
        browser.current_url().await.unwrap().path() == "/ui/login",
        "no session for an agent token"
    );

    // The person signs in and sees the request, with the call that was refused.
    let page = sign_in(&browser, &base, &admin).await;
    assert_eq!(browser.current_url().await.unwrap().path(), "/ui/overrides");
    let card = browser
        .find(Locator::Css(&format!("section[id='{id}']")))
        .await
        .expect("the pending request is shown");
    let shown = card.text().await.unwrap();
    for expected in [
        "PATH-002",
        "agent-a",
        "generated for local test runs",
        "file_write",
        "config/.env",
    ] {
        assert!(shown.contains(expected), "{expected} in {shown}\n{page}");
    }
    let dir = screenshots();
    std::fs::write(
        dir.join("console-overrides.png"),
        browser.screenshot().await.unwrap(),
    )
    .unwrap();

    // Approve for 45 minutes with a note.
    let minutes = card
        .find(Locator::Css("input[name=minutes]"))
        .await
        .unwrap();
    minutes.clear().await.unwrap();
    minutes.send_keys("45").await.unwrap();
    card.find(Locator::Css("form[action$='/approve'] input[name=note]"))
        .await
        .unwrap()
        .send_keys("dev only; delete it after the run")
        .await
        .unwrap();
    card.find(Locator::Css("button.approve"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let flash = browser
        .wait()
        .for_element(Locator::Css("p.flash"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        flash.contains(&format!("{id} approved by admin:alice")),
        "{flash}"
    );

    // The agent's retried call goes through, under the waiver.
    ok(&client, "file_write", write).await;
    assert_eq!(s.read("config/.env"), "MODE=dev\n");
    let st = ok(&client, "override_status", json!({"override_id": id})).await;
    assert_eq!(st["state"], "approved", "{st}");
    assert_eq!(st["note"], "dev only; delete it after the run", "{st}");
    // As approved: 45 minutes from the decision (the CLI shows both times).
    let (code, shown, err) = run_cli(&s.ws(), &["override", "list", "--state", "all", "--json"]);
    assert_eq!(code, 0, "{err}");
    let record: Value = shown
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .flat_map(|v| match v {
            Value::Array(all) => all,
            one => vec![one],
        })
        .find(|r| r["override_id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} in {shown}"));
    let at = |field: &str| {
        time::OffsetDateTime::parse(
            record[field].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    assert_eq!(
        (at("expires_at") - at("decided_at")).whole_minutes(),
        45,
        "{record}"
    );
    client.cancel().await.unwrap();

    // The audit trail, verified, with the decision and the waived write.
    browser.goto(&format!("{base}/ui/audit")).await.unwrap();
    let page = browser.source().await.unwrap();
    assert!(page.contains("Chain verified"), "{page}");
    assert!(
        page.contains("override approve") && page.contains("admin:alice"),
        "{page}"
    );
    std::fs::write(
        dir.join("console-audit.png"),
        browser.screenshot().await.unwrap(),
    )
    .unwrap();

    // The task board, with the gates' verdicts.
    browser.goto(&format!("{base}/ui/tasks")).await.unwrap();
    let page = browser.source().await.unwrap();
    assert!(
        page.contains("Task board") && page.contains("Verdict"),
        "{page}"
    );
    assert!(
        page.contains(r#"<pre class="output">42 passed, 0 failed"#),
        "the gate output is shown: {page}"
    );
    for column in ["Done", "Needs review", "Running", "Queued"] {
        assert!(page.contains(column), "{column}: {page}");
    }
    std::fs::write(
        dir.join("console-tasks.png"),
        browser.screenshot().await.unwrap(),
    )
    .unwrap();

    // Sign out: the console is closed again.
    browser
        .find(Locator::Css("header button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait()
        .for_element(Locator::Css("input#token"))
        .await
        .expect("the sign-in form again");
    assert_eq!(browser.current_url().await.unwrap().path(), "/ui/login");
    browser.close().await.unwrap();
}
