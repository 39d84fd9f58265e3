//! Overrides through the real binary and a real MCP client: an agent asks
//! with override_request, a person decides with `arbiter override ...`, and
//! the policy lets exactly the approved rule, agent and scope through until
//! the approval ends. Expiry is simulated by moving the stored end time into
//! the past (the SQLite file is the real store; only the clock is skipped).

mod common;

use common::*;
use serde_json::{Value, json};

const AGENT: &str = "agent-a";

fn write_env(path: &str) -> Value {
    json!({"file_path": path, "contents": "MODE=dev\n"})
}

async fn request(c: &NamedClient, rule: &str, scope: Value) -> String {
    let out = ok(
        c,
        "override_request",
        json!({"rule_id": rule, "reason": "the dev env file is generated for local runs", "scope": scope}),
    )
    .await;
    assert_eq!(out["state"], "pending", "{out}");
    assert!(
        out["next"]
            .as_str()
            .unwrap()
            .contains("arbiter override approve"),
        "{out}"
    );
    out["override_id"].as_str().unwrap().to_string()
}

fn decide(ws: &std::path::Path, args: &[&str]) -> String {
    let mut all = vec!["override"];
    all.extend_from_slice(args);
    let (code, out, err) = run_cli(ws, &all);
    assert_eq!(code, 0, "arbiter {all:?}: {out}{err}");
    out
}

async fn status(c: &NamedClient, id: &str) -> Value {
    ok(c, "override_status", json!({"override_id": id})).await
}

/// Move an approval's end into the past, as if its time had run out.
async fn expire(ws: &std::path::Path, id: &str) {
    let n: i64 = id.trim_start_matches("OVR-").parse().unwrap();
    let url = format!("sqlite://{}", ws.join(".arbiter/arbiter.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let done =
        sqlx::query("UPDATE overrides SET expires_at = ? WHERE id = ? AND state = 'approved'")
            .bind(now - 1)
            .bind(n)
            .execute(&pool)
            .await
            .unwrap();
    assert_eq!(done.rows_affected(), 1);
    pool.close().await;
}

#[tokio::test]
async fn a_refused_write_is_allowed_once_a_person_approves_and_the_record_names_the_waiver() {
    let s = Scratch::new();
    let c = start_as(&s.ws(), AGENT, &[]).await;
    let t = refused(&c, "file_write", write_env("config/.env")).await;
    assert!(
        t.contains("[PATH-002]") && t.contains("override_request"),
        "{t}"
    );
    let id = request(&c, "PATH-002", json!({"paths": ["config/.env"]})).await;
    assert_eq!(status(&c, &id).await["state"], "pending");
    // Pending is not approved.
    refused(&c, "file_write", write_env("config/.env")).await;

    let listed = decide(&s.ws(), &["list"]);
    assert!(listed.contains(&id) && listed.contains(AGENT), "{listed}");
    let said = decide(&s.ws(), &["approve", &id, "--note", "dev only"]);
    assert!(said.contains("approved"), "{said}");
    let st = status(&c, &id).await;
    assert_eq!(st["state"], "approved", "{st}");
    assert_eq!(st["note"], "dev only", "{st}");
    assert!(
        st["decided_by"].as_str().unwrap().starts_with("cli:"),
        "{st}"
    );

    ok(&c, "file_write", write_env("config/.env")).await;
    assert_eq!(s.read("config/.env"), "MODE=dev\n");
    c.cancel().await.unwrap();

    let records = audit_records(&s.ws());
    let allowed = records
        .iter()
        .find(|r| r["tool"] == "file_write" && r["outcome"] == "ok")
        .expect("the allowed write is on record");
    assert_eq!(allowed["decision"], "allow", "{allowed}");
    assert_eq!(allowed["waiver_ids"], id.as_str(), "{allowed}");
    assert!(
        allowed["rule_ids"].as_str().unwrap().contains("PATH-002"),
        "{allowed}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["tool"] == "override approve" && r["waiver_ids"] == id.as_str()),
        "{records:?}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["tool"] == "override_request" && r["outcome"] == "ok")
    );
    let (code, out, _) = run_cli(&s.ws(), &["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test]
async fn a_waiver_for_one_path_does_not_allow_another_nor_another_agent() {
    let s = Scratch::new();
    let c = start_as(&s.ws(), AGENT, &[]).await;
    let id = request(&c, "PATH-002", json!({"paths": ["config/.env"]})).await;
    decide(&s.ws(), &["approve", &id]);
    ok(&c, "file_write", write_env("config/.env")).await;
    let t = refused(&c, "file_write", write_env("other/.env")).await;
    assert!(t.contains("PATH-002"), "{t}");
    // Reading is another action on the same path: the scope is paths, so it is covered too.
    ok(&c, "file_read", json!({"target_file": "config/.env"})).await;
    let other = start_as(&s.ws(), "agent-b", &[]).await;
    let t = refused(&other, "file_write", write_env("config/.env")).await;
    assert!(t.contains("PATH-002"), "{t}");
    other.cancel().await.unwrap();
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn expired_override_no_longer_waives() {
    let s = Scratch::new();
    let c = start_as(&s.ws(), AGENT, &[]).await;
    let id = request(&c, "PATH-002", json!({"paths": ["config/.env"]})).await;
    decide(&s.ws(), &["approve", &id, "--minutes", "5"]);
    ok(&c, "file_write", write_env("config/.env")).await;
    expire(&s.ws(), &id).await;
    let t = refused(&c, "file_write", write_env("config/.env")).await;
    assert!(t.contains("PATH-002"), "{t}");
    assert_eq!(status(&c, &id).await["state"], "expired");
    let listed = decide(&s.ws(), &["list", "--state", "expired"]);
    assert!(listed.contains(&id), "{listed}");
    // An expired approval cannot be revoked; the CLI says so.
    let (code, _, err) = run_cli(&s.ws(), &["override", "revoke", &id]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("expired"), "{err}");
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn revoked_override_no_longer_waives() {
    let s = Scratch::new();
    let c = start_as(&s.ws(), AGENT, &[]).await;
    let id = request(&c, "PATH-002", json!({"paths": ["config/*.env"]})).await;
    decide(&s.ws(), &["approve", &id]);
    ok(&c, "file_write", write_env("config/.env")).await;
    decide(&s.ws(), &["revoke", &id, "--note", "done with it"]);
    let t = refused(&c, "file_write", write_env("config/.env")).await;
    assert!(t.contains("PATH-002"), "{t}");
    let st = status(&c, &id).await;
    assert_eq!(st["state"], "revoked", "{st}");
    assert_eq!(st["note"], "done with it", "{st}");
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn the_sixth_request_in_an_hour_is_refused() {
    let s = Scratch::new();
    let c = start_as(&s.ws(), AGENT, &[]).await;
    for i in 0..5 {
        request(&c, "PATH-002", json!({"paths": [format!("p{i}/.env")]})).await;
    }
    let t = refused(
        &c,
        "override_request",
        json!({"rule_id": "PATH-002", "reason": "one more"}),
    )
    .await;
    assert!(t.contains("[OVERRIDE-002]"), "{t}");
    assert!(t.contains("you may ask again from"), "{t}");
    // Another agent has its own count.
    let other = start_as(&s.ws(), "agent-b", &[]).await;
    request(&other, "PATH-002", json!({})).await;
    other.cancel().await.unwrap();
    c.cancel().await.unwrap();
    let (_, out, _) = run_cli(&s.ws(), &["override", "list", "--json"]);
    assert_eq!(out.lines().count(), 6, "{out}");
}

#[tokio::test]
async fn three_denials_of_a_rule_start_a_cool_down_for_it() {
    let s = Scratch::new();
    let c = start_as(&s.ws(), AGENT, &[]).await;
    for _ in 0..3 {
        let id = request(&c, "PATH-002", json!({})).await;
        decide(&s.ws(), &["deny", &id, "--note", "no"]);
        assert_eq!(status(&c, &id).await["state"], "denied");
    }
    let t = refused(
        &c,
        "override_request",
        json!({"rule_id": "PATH-002", "reason": "please"}),
    )
    .await;
    assert!(t.contains("[OVERRIDE-003]"), "{t}");
    // Another rule may still be asked for.
    request(&c, "PATH-001", json!({"paths": [".git/config"]})).await;
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn an_approval_survives_a_restart() {
    let s = Scratch::new();
    let c = start_as(&s.ws(), AGENT, &[]).await;
    let id = request(&c, "PATH-002", json!({"paths": ["config/.env"]})).await;
    c.cancel().await.unwrap();
    decide(&s.ws(), &["approve", &id]);
    let c = start_as(&s.ws(), AGENT, &[]).await;
    assert_eq!(status(&c, &id).await["state"], "approved");
    ok(&c, "file_write", write_env("config/.env")).await;
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn invariants_and_unknown_rules_cannot_be_requested() {
    let s = Scratch::new();
    let policy = s.outside().join("policy.yaml");
    std::fs::write(
        &policy,
        "version: 1\npaths:\n  rules:\n    - id: KEYS-001\n      decision: deny\n      globs: ['**/*.key']\n      justification: keys stay out\n      never_waivable: true\n",
    )
    .unwrap();
    let c = start_as(&s.ws(), AGENT, &["--policy", policy.to_str().unwrap()]).await;
    for rule in ["CONFINE-001", "POLICY-001", "WAIVER-001", "KEYS-001"] {
        let t = refused(
            &c,
            "override_request",
            json!({"rule_id": rule, "reason": "x"}),
        )
        .await;
        assert!(t.contains("[OVERRIDE-001]"), "{rule}: {t}");
    }
    let t = refused(
        &c,
        "override_request",
        json!({"rule_id": "NOPE-9", "reason": "x"}),
    )
    .await;
    assert!(t.contains("[OVERRIDE-005]") && t.contains("NOPE-9"), "{t}");
    for bad in [
        json!({"rule_id": "PATH-DEFAULT", "reason": "  "}),
        json!({"rule_id": "PATH-DEFAULT", "reason": "x", "scope": {"paths": ["../outside"]}}),
        json!({"rule_id": "PATH-DEFAULT", "reason": "x", "duration_minutes": 999999}),
    ] {
        let t = refused(&c, "override_request", bad.clone()).await;
        assert!(t.contains("[OVERRIDE-005]"), "{bad}: {t}");
    }
    // A rule no override lifts does not point the agent at override_request.
    let t = refused(
        &c,
        "file_write",
        json!({"file_path": "a.key", "contents": "k"}),
    )
    .await;
    assert!(
        t.contains("KEYS-001") && !t.contains("override_request"),
        "{t}"
    );
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn an_agent_cannot_approve_its_own_request_from_a_command() {
    let s = Scratch::new();
    // Commands may run anything here, so only the sandbox stands between the
    // agent and the store: it hides `.arbiter/` from every command.
    let policy = s.outside().join("policy.yaml");
    std::fs::write(&policy, "version: 1\n").unwrap();
    std::fs::copy(BIN, s.ws().join("arbiter-copy")).unwrap();
    let c = start_as(&s.ws(), AGENT, &["--policy", policy.to_str().unwrap()]).await;
    let id = request(&c, "CMD-DEFAULT", json!({})).await;
    let out = ok(
        &c,
        "run_terminal_cmd",
        json!({"command": format!("./arbiter-copy override approve {id} --workspace .")}),
    )
    .await;
    assert_ne!(out["exit_code"], 0, "{out}");
    // It ran, and failed at the store it cannot see.
    assert!(
        out["stderr"].as_str().unwrap().contains(".arbiter"),
        "{out}"
    );
    assert_eq!(status(&c, &id).await["state"], "pending");
    c.cancel().await.unwrap();
}

fn caws_waiver(id: &str, gates: &str, approvers: &str, expires: &str) -> String {
    format!(
        "id: {id}\ntitle: local env\nreason: emergency_hotfix\nstatus: active\ngates: [{gates}]\nexpires_at: {expires}\napprovers: [{approvers}]\nimpact_level: low\n"
    )
}

#[tokio::test]
async fn caws_waiver_files_are_honoured_and_protected() {
    let s = Scratch::new();
    s.write(
        ".caws/waivers/WV-0001.yaml",
        &caws_waiver("WV-0001", "PATH-002", "'@lead'", "2099-01-01T00:00:00Z"),
    );
    // Expired, and unapproved: they lift nothing.
    s.write(
        ".caws/waivers/WV-0002.yaml",
        &caws_waiver("WV-0002", "PATH-001", "'@lead'", "2001-01-01T00:00:00Z"),
    );
    s.write(
        ".caws/waivers/WV-0003.yaml",
        &caws_waiver("WV-0003", "PATH-001", "", "2099-01-01T00:00:00Z"),
    );
    std::fs::create_dir_all(s.ws().join(".git")).unwrap();
    let c = start_as(&s.ws(), AGENT, &[]).await;
    ok(&c, "file_write", write_env("config/.env")).await;
    let t = refused(
        &c,
        "file_write",
        json!({"file_path": ".git/x", "contents": "x"}),
    )
    .await;
    assert!(t.contains("PATH-001"), "{t}");
    // No agent writes or removes waiver files.
    for (tool, args) in [
        (
            "file_write",
            json!({"file_path": ".caws/waivers/WV-0009.yaml", "contents": "id: WV-0009\n"}),
        ),
        (
            "delete_file",
            json!({"target_file": ".caws/waivers/WV-0002.yaml"}),
        ),
    ] {
        let t = refused(&c, tool, args).await;
        assert!(t.contains("WAIVER-001"), "{tool}: {t}");
    }
    let out = ok(
        &c,
        "run_terminal_cmd",
        json!({"command": "touch .caws/waivers/WV-0010.yaml"}),
    )
    .await;
    assert_ne!(out["exit_code"], 0, "{out}");
    assert!(!s.ws().join(".caws/waivers/WV-0010.yaml").exists());
    c.cancel().await.unwrap();
    let records = audit_records(&s.ws());
    assert!(
        records
            .iter()
            .any(|r| r["tool"] == "file_write" && r["waiver_ids"] == "WV-0001"),
        "{records:?}"
    );
}

/// A client whose person answers every elicitation with `answer`, and counts
/// how often they were asked.
#[derive(Clone)]
struct PersonAtClient {
    answer: Value,
    asked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl rmcp::ClientHandler for PersonAtClient {
    fn get_info(&self) -> rmcp::model::ClientConfig {
        rmcp::model::ClientConfig::new(
            rmcp::model::ClientCapabilities::builder()
                .enable_elicitation()
                .build(),
            rmcp::model::Implementation::new(AGENT, "1"),
        )
    }

    async fn create_elicitation(
        &self,
        request: rmcp::model::ElicitRequestParams,
        _context: rmcp::service::RequestContext<rmcp::RoleClient>,
    ) -> Result<rmcp::model::ElicitResult, rmcp::ErrorData> {
        assert!(format!("{request:?}").contains("PATH-002"), "{request:?}");
        self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(
            rmcp::model::ElicitResult::new(rmcp::model::ElicitationAction::Accept)
                .with_content(self.answer.clone()),
        )
    }
}

async fn start_with_person(
    ws: &std::path::Path,
    policy: &str,
    answer: Value,
) -> (
    rmcp::service::RunningService<rmcp::RoleClient, PersonAtClient>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use rmcp::ServiceExt;
    let person = PersonAtClient {
        answer,
        asked: Default::default(),
    };
    let asked = person.asked.clone();
    let client = person
        .serve(spawn_server(ws, &["--policy", policy]))
        .await
        .expect("MCP handshake");
    (client, asked)
}

#[tokio::test]
async fn the_person_at_the_client_decides_when_the_policy_enables_it() {
    let s = Scratch::new();
    let enabled = s.outside().join("elicit.yaml");
    std::fs::write(
        &enabled,
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/policies/default.yaml"
        ))
        .unwrap()
        .replace("elicitation: false", "elicitation: true"),
    )
    .unwrap();
    assert!(
        std::fs::read_to_string(&enabled)
            .unwrap()
            .contains("elicitation: true")
    );
    let (c, asked) = start_with_person(
        &s.ws(),
        enabled.to_str().unwrap(),
        json!({"approve": true, "note": "fine for today", "minutes": 30}),
    )
    .await;
    let out = ok(
        &c,
        "override_request",
        json!({"rule_id": "PATH-002", "reason": "local env", "scope": {"paths": ["config/.env"]}}),
    )
    .await;
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(out["state"], "approved", "{out}");
    assert_eq!(out["note"], "fine for today", "{out}");
    assert!(
        out["decided_by"]
            .as_str()
            .unwrap()
            .starts_with("elicitation:"),
        "{out}"
    );
    ok(&c, "file_write", write_env("config/.env")).await;
    c.cancel().await.unwrap();

    // A denial at the client is a denial.
    let (c, _) = start_with_person(
        &s.ws(),
        enabled.to_str().unwrap(),
        json!({"approve": false, "note": "no"}),
    )
    .await;
    let out = ok(
        &c,
        "override_request",
        json!({"rule_id": "PATH-002", "reason": "other env", "scope": {"paths": ["other/.env"]}}),
    )
    .await;
    assert_eq!(out["state"], "denied", "{out}");
    refused(&c, "file_write", write_env("other/.env")).await;
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn without_the_policy_the_client_is_never_asked() {
    let s = Scratch::new();
    let plain = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/default.yaml");
    let (c, asked) = start_with_person(&s.ws(), plain, json!({"approve": true})).await;
    let out = ok(
        &c,
        "override_request",
        json!({"rule_id": "PATH-002", "reason": "local env"}),
    )
    .await;
    assert_eq!(out["state"], "pending", "{out}");
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 0);
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn a_caws_budget_waiver_with_a_delta_raises_the_budget_by_that_much() {
    let s = Scratch::new();
    s.write(
        ".caws/working-spec.yaml",
        "id: FEAT-7\ntitle: Export\nrisk_tier: 3\nmode: feature\n\
         change_budget: {max_files: 1, max_loc: 100}\n\
         blast_radius: {modules: [export]}\noperational_rollback_slo: 5m\n\
         scope: {in: [src/]}\ninvariants: [exports keep their format]\n\
         acceptance:\n  - {id: A1, given: a table, when: export is clicked, then: a CSV downloads}\n\
         non_functional: {perf: {api_p95_ms: 200}}\ncontracts: []\n",
    );
    let c = start_as(&s.ws(), AGENT, &[]).await;
    let write = |p: &str| json!({"file_path": p, "contents": "x\n"});
    ok(&c, "file_write", write("src/a.rs")).await;
    let t = refused(&c, "file_write", write("src/b.rs")).await;
    assert!(t.contains("BUDGET-001"), "{t}");
    // A person records a waiver the CAWS way while the server runs.
    s.write(
        ".caws/waivers/WV-0007.yaml",
        "id: WV-0007\ntitle: one more file\nreason: scope_creep\nstatus: active\n\
         gates: [budget_limit]\nexpires_at: 2099-01-01T00:00:00Z\napproved_by: '@lead'\n\
         delta: {max_files: 1, max_loc: 0}\n",
    );
    ok(&c, "file_write", write("src/b.rs")).await;
    let t = refused(&c, "file_write", write("src/c.rs")).await;
    assert!(
        t.contains("BUDGET-001") && t.contains("3 of 2 files"),
        "{t}"
    );
    c.cancel().await.unwrap();
    let (code, out, _) = run_cli(&s.ws(), &["override", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("WV-0007") && out.contains("in force") && out.contains("+1 files"),
        "{out}"
    );
}
