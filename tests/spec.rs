//! CAWS working specs from outside: `arbiter_validate` over MCP, and writes
//! held to the active spec's scope and change budget, with totals that
//! survive a restart.

mod common;

use common::*;
use serde_json::json;

/// A tier-3 spec: writes only under src/, at most `files` files and `lines` lines.
fn spec_text(files: u32, lines: u32) -> String {
    format!(
        "id: FEAT-42\ntitle: Add the CSV export button\nrisk_tier: 3\nmode: feature\n\
         change_budget: {{max_files: {files}, max_loc: {lines}}}\n\
         blast_radius: {{modules: [export]}}\noperational_rollback_slo: 5m\n\
         scope: {{in: [src/], out: [src/generated/]}}\n\
         invariants: [existing exports keep their format]\n\
         acceptance:\n  - {{id: A1, given: a table, when: export is clicked, then: a CSV downloads}}\n\
         non_functional: {{perf: {{api_p95_ms: 200}}}}\ncontracts: []\n"
    )
}

#[tokio::test]
async fn arbiter_validate_lists_every_problem_with_its_rule_path_and_fix() {
    let s = Scratch::new();
    let client = start(&s.ws()).await;
    let good = ok(
        &client,
        "arbiter_validate",
        json!({"spec": spec_text(10, 100)}),
    )
    .await;
    assert_eq!(good["valid"], true, "{good}");
    assert_eq!(good["spec_id"], "FEAT-42");
    assert_eq!(good["budget"], json!({"max_files": 10, "max_loc": 100}));

    let bad = "id: FEAT-43\ntitle: Rewrite the payment flow\nrisk_tier: 1\nmode: feature\n\
               change_budget: {max_files: 80, max_loc: 100}\nscope: {in: [src/pay/]}\n\
               invariants: [no double charge]\nacceptance: []\n";
    let r = call(&client, "arbiter_validate", json!({"spec": bad})).await;
    assert_ne!(r.is_error, Some(true), "validation itself succeeded");
    let out = r.structured_content.clone().unwrap();
    assert_eq!(out["valid"], false);
    let violations = out["violations"].as_array().unwrap();
    let has = |rule: &str, path: &str| {
        violations.iter().any(|v| {
            v["rule_id"] == rule && v["path"] == path && !v["fix"].as_str().unwrap().is_empty()
        })
    };
    assert!(has("BUDGET-001", "change_budget.max_files"), "{out}");
    assert!(has("ACCEPTANCE-001", "acceptance"), "{out}");
    assert!(
        violations.iter().any(|v| v["rule_id"] == "CONTRACT-001"),
        "{out}"
    );
    assert!(
        text(&r).starts_with("INVALID: spec FEAT-43"),
        "{}",
        text(&r)
    );

    // A path in the workspace works too.
    s.write(".caws/working-spec.yaml", &spec_text(3, 30));
    let from_file = ok(
        &client,
        "arbiter_validate",
        json!({"spec": ".caws/working-spec.yaml"}),
    )
    .await;
    assert_eq!(from_file["source"], ".caws/working-spec.yaml");
    assert_eq!(from_file["valid"], true);
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn writes_are_held_to_the_spec_scope_and_budget_across_restarts() {
    let s = Scratch::new();
    let ws = s.ws();
    // A person puts the spec in place (agents cannot: PATH-003).
    s.write(".caws/working-spec.yaml", &spec_text(2, 6));
    s.write("README.md", "readme\n");
    let client = start(&ws).await;

    ok(
        &client,
        "file_write",
        json!({"file_path": "src/a.rs", "contents": "1\n2\n3\n"}),
    )
    .await;
    let out = refused(
        &client,
        "file_write",
        json!({"file_path": "docs/guide.md", "contents": "x\n"}),
    )
    .await;
    assert!(out.starts_with("Refused [SCOPE-001]"), "{out}");
    let out = refused(
        &client,
        "file_write",
        json!({"file_path": "src/generated/x.rs", "contents": "x\n"}),
    )
    .await;
    assert!(
        out.starts_with("Refused [SCOPE-001]") && out.contains("scope.out"),
        "{out}"
    );
    ok(
        &client,
        "file_write",
        json!({"file_path": "src/b.rs", "contents": "1\n2\n"}),
    )
    .await;
    // Two files and five lines used: a third file is over budget.
    let out = refused(
        &client,
        "file_write",
        json!({"file_path": "src/c.rs", "contents": "1\n"}),
    )
    .await;
    assert!(out.starts_with("Refused [BUDGET-001]"), "{out}");
    assert!(
        out.contains("3 of 2 files") && out.contains("so far 2 files, 5 lines"),
        "{out}"
    );
    // An edit of a counted file counts its changed lines (one removed, one added).
    let out = refused(
        &client,
        "file_search_replace",
        json!({"file_path": "src/a.rs", "old_string": "2", "new_string": "two"}),
    )
    .await;
    assert!(out.contains("7 of 6 lines"), "{out}");
    assert_eq!(
        s.read("src/a.rs"),
        "1\n2\n3\n",
        "a refused edit changes nothing"
    );
    ok(
        &client,
        "file_write",
        json!({"file_path": "src/b.rs", "contents": "1\n2\n3\n"}),
    )
    .await;
    // Reads are not limited by the spec.
    ok(&client, "file_read", json!({"target_file": "README.md"})).await;
    client.cancel().await.unwrap();

    // The totals are in the store: a new server (and policy check) still knows them.
    let client = start(&ws).await;
    let out = refused(
        &client,
        "file_write",
        json!({"file_path": "src/d.rs", "contents": "1\n"}),
    )
    .await;
    assert!(out.contains("so far 2 files, 6 lines"), "{out}");
    client.cancel().await.unwrap();
    let (code, out, _) = run_cli(
        &ws,
        &[
            "policy",
            "check",
            "--tool",
            "file_write",
            "--args",
            r#"{"file_path":"src/d.rs","contents":"1\n"}"#,
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("BUDGET-001") && out.contains("needs_override"),
        "{out}"
    );
    let records = audit_records(&ws);
    assert!(
        records
            .iter()
            .any(|r| r["rule_ids"] == "SCOPE-001" && r["decision"] == "deny"),
        "audit names the spec rule"
    );
}

#[tokio::test]
async fn a_broken_spec_stops_writes_until_it_is_fixed() {
    let s = Scratch::new();
    s.write(".caws/working-spec.yaml", "id: FEAT-1\ntitle: x\n");
    let client = start(&s.ws()).await;
    let out = refused(
        &client,
        "file_write",
        json!({"file_path": "src/a.rs", "contents": "x\n"}),
    )
    .await;
    assert!(
        out.contains("writes wait for a valid working spec"),
        "{out}"
    );
    s.write(".caws/working-spec.yaml", &spec_text(5, 50));
    ok(
        &client,
        "file_write",
        json!({"file_path": "src/a.rs", "contents": "x\n"}),
    )
    .await;
    client.cancel().await.unwrap();
}
