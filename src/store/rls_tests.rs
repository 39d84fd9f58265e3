//! Row-level security on PostgreSQL, proved with raw SQL as the application
//! role (the role the server connects as): with tenant A's setting, a
//! `SELECT *`, `UPDATE` or `DELETE` on every table sees and touches none of
//! tenant B's rows; with no tenant set, it sees nothing. Every table of the
//! schema must be in the list, so a new table without policies fails here.

use sqlx::{Executor, Postgres, Row, Transaction};

use super::audit::{AuditEntry, AuditRecord, GENESIS_HASH};
use super::tasks::{AgentRegistration, Claim, NewTask, TaskJudgement};
use super::testdb::TestDb;
use super::{
    NewOverride, NewToken, OverrideDecision, PgStore, Store, TaskStore, TenantRecord, TokenRole,
};
use crate::tasks::gates::{GateResult, Verdict};
use crate::tasks::routing::RoutingStrategy;
use crate::tasks::{CandidateScore, Capabilities, RequiredCapabilities, RouteChoice, TaskType};

/// Every table and the column that names its tenant.
const TABLES: &[(&str, &str)] = &[
    ("audit_records", "tenant"),
    ("audit_heads", "tenant"),
    ("change_budget", "tenant"),
    ("overrides", "tenant"),
    ("override_events", "tenant"),
    ("api_tokens", "tenant"),
    ("tenants", "name"),
    ("tasks", "tenant"),
    ("task_events", "tenant"),
    ("agents", "tenant"),
    ("routing_decisions", "tenant"),
    ("routing_scores", "tenant"),
    ("agent_performance", "tenant"),
    ("task_verdicts", "tenant"),
    ("task_gate_results", "tenant"),
    ("task_arbitrations", "tenant"),
    ("task_judge_calls", "tenant"),
    ("rate_counts", "tenant"),
];

/// Give tenant `t` at least one row in every table, through the store.
async fn populate(app: &PgStore, t: &str) {
    let store = app.for_tenant(t);
    let entry = AuditEntry::sample(0);
    let record = AuditRecord::from_entry(t, 1, GENESIS_HASH, &entry);
    store.audit_index(&[record]).await.unwrap();
    store.budget_add(t, "spec", "a.rs", 3).await.unwrap();
    let second = std::time::Duration::from_secs(1);
    let counted = store.rate_take(t, 1, second, second).await.unwrap();
    assert_eq!(counted, Some(std::time::Duration::ZERO));
    let scope = crate::overrides::Scope::default();
    let o = store
        .override_create(&NewOverride {
            tenant: t,
            agent: "bot",
            session_id: "s",
            rule_id: "R-1",
            reason: "why",
            scope: &scope,
            requested_minutes: None,
            now: 1,
        })
        .await
        .unwrap();
    store
        .override_decide(&OverrideDecision {
            id: o.id,
            from: &["pending"],
            to: "denied",
            actor: "ops",
            note: None,
            expires_at: None,
            now: 2,
        })
        .await
        .unwrap()
        .unwrap();
    store
        .token_create(&NewToken {
            tenant: t,
            agent: "bot",
            role: TokenRole::Agent,
            hash: &format!("hash-{t}"),
            prefix: "arb_",
            now: 1,
            rate_limit: None,
        })
        .await
        .unwrap();
    store
        .tenant_add(&TenantRecord {
            name: t.into(),
            workspace: format!("/srv/{t}"),
            policy: None,
            created_at: 1,
        })
        .await
        .unwrap();
    let caps = Capabilities {
        task_types: vec![TaskType::Test],
        languages: vec![],
        tools: vec![],
    };
    store
        .agent_register(&AgentRegistration {
            tenant: t,
            name: "worker",
            capabilities: &caps,
            max_concurrent_tasks: 2,
            now: 1,
        })
        .await
        .unwrap();
    let required = RequiredCapabilities::default();
    let route = |_: &crate::tasks::routing::RoutingInput<'_>| RouteChoice {
        strategy: RoutingStrategy::RoundRobin,
        seed: 7,
        chosen: Some("worker".into()),
        rationale: "only one".into(),
        candidates: vec![CandidateScore {
            agent: "worker".into(),
            eligible: true,
            score: Some(1.0),
            detail: "ok".into(),
        }],
    };
    let (task, _) = store
        .task_create(
            &NewTask {
                tenant: t,
                title: "t",
                description: "",
                spec: None,
                spec_id: None,
                task_type: TaskType::Test,
                type_confidence: 1.0,
                type_source: "given",
                risk_tier: 2,
                tier_reason: "r",
                priority: 3,
                required: &required,
                submitted_by: "lead",
                now: 10,
                assignment_ends: 1_000_000,
            },
            &route,
        )
        .await
        .unwrap();
    let claimed = store
        .task_claim_assigned(&Claim {
            tenant: t,
            agent: "worker",
            now: 20,
            lease_ends: 1_000_000,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, task.id);
    let gate = GateResult {
        name: "unit".into(),
        command: "true".into(),
        passed: false,
        rule_id: Some("GATE-001".into()),
        policy_rule: None,
        exit_code: Some(1),
        duration_ms: 1,
        measured: None,
        detail: "failed".into(),
        output_tail: String::new(),
    };
    let reasons = vec!["no".to_string()];
    store
        .task_judge(&TaskJudgement {
            tenant: t,
            id: task.id,
            agent: "worker",
            summary: "s",
            now: 30,
            decided_at: 31,
            lease_ends: 1_000_000,
            risk_tier: 2,
            verdict: Verdict::Fail,
            needs_review: false,
            score: 10.0,
            coverage: None,
            mutation: None,
            reasons: &reasons,
            gates: std::slice::from_ref(&gate),
            arbitration: Some(&super::conformance::unsettled_arbitration()),
        })
        .await
        .unwrap()
        .unwrap();
}

async fn as_tenant(app: &PgStore, tenant: Option<&str>) -> Transaction<'static, Postgres> {
    let mut tx = app.pool().begin().await.unwrap();
    if let Some(t) = tenant {
        sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
            .bind(t)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx
}

fn sql(text: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(text)
}

async fn count(tx: &mut Transaction<'static, Postgres>, text: String) -> i64 {
    sqlx::query_scalar(sql(text))
        .fetch_one(&mut **tx)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_tenant_sees_and_touches_none_of_another_tenants_rows() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let TestDb::Postgres { app_url, owner_url } = &db else {
        unreachable!()
    };
    let app = PgStore::connect(app_url).await.unwrap();
    app.check_application_role().await.unwrap();
    // The seed rows go in as the application role, through the store.
    let audit_head = "INSERT INTO audit_heads (tenant, seq, hash) VALUES ($1, 1, 'h')";
    // The store writes no routing_scores rows any more (a decision keeps its
    // candidates as JSON); older decisions' rows are still protected.
    let legacy_score = "INSERT INTO routing_scores (tenant, decision_id, rank, agent, eligible, score, detail) \
                        SELECT tenant, id, 0, 'old', true, 1.0, 'one row per candidate' \
                        FROM routing_decisions WHERE tenant = $1";
    for t in ["a", "b"] {
        populate(&app, t).await;
        let mut tx = as_tenant(&app, Some(t)).await;
        for q in [audit_head, legacy_score] {
            sqlx::query(q).bind(t).execute(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
    }
    let owner = PgStore::connect(owner_url).await.unwrap();

    // Every table of the schema is listed, and has ENABLE and FORCE.
    let tables: Vec<(String, bool, bool)> = sqlx::query_as(
        "SELECT relname::TEXT, relrowsecurity, relforcerowsecurity FROM pg_class \
         WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' \
         AND relname <> '_sqlx_migrations' ORDER BY relname",
    )
    .fetch_all(owner.pool())
    .await
    .unwrap();
    assert_eq!(tables.len(), TABLES.len(), "{tables:?}");
    for (name, enabled, forced) in &tables {
        assert!(
            TABLES.iter().any(|(t, _)| t == name),
            "{name} is not checked"
        );
        assert!(
            *enabled && *forced,
            "{name}: ENABLE {enabled}, FORCE {forced}"
        );
    }

    for &(table, col) in TABLES {
        let b_rows = |owner: &PgStore| {
            let q = format!("SELECT COUNT(*) FROM {table} WHERE {col} = 'b'");
            let pool = owner.pool().clone();
            async move {
                sqlx::query_scalar::<_, i64>(sql(q))
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }
        };
        let before = b_rows(&owner).await;
        assert!(before > 0, "{table}: no rows of tenant b to protect");

        // A's setting: SELECT * returns only A's rows.
        let mut tx = as_tenant(&app, Some("a")).await;
        let rows = tx
            .fetch_all(sql(format!("SELECT * FROM {table}")))
            .await
            .unwrap();
        assert!(
            !rows.is_empty(),
            "{table}: tenant a sees none of its own rows"
        );
        for row in &rows {
            assert_eq!(row.try_get::<String, _>(col).unwrap(), "a", "{table}");
        }
        // UPDATE touches none of B's rows, and cannot move A's rows to B.
        let updated = tx
            .execute(sql(format!(
                "UPDATE {table} SET {col} = {col} WHERE {col} = 'b'"
            )))
            .await;
        match updated {
            Ok(done) => assert_eq!(done.rows_affected(), 0, "{table}: UPDATE reached b"),
            Err(e) => assert_permission_denied(table, "UPDATE", e),
        }
        tx.rollback().await.unwrap();
        let mut tx = as_tenant(&app, Some("a")).await;
        let moved = tx
            .execute(sql(format!("UPDATE {table} SET {col} = 'b'")))
            .await;
        assert!(moved.is_err(), "{table}: a moved its rows to b");
        tx.rollback().await.unwrap();
        // DELETE: the application role deletes nothing (no privilege).
        let mut tx = as_tenant(&app, Some("a")).await;
        let deleted = tx.execute(sql(format!("DELETE FROM {table}"))).await;
        match deleted {
            Ok(done) => panic!("{table}: DELETE ran ({} rows)", done.rows_affected()),
            Err(e) => assert_permission_denied(table, "DELETE", e),
        }
        tx.rollback().await.unwrap();
        // Inserting a row of B under A's setting is refused.
        // (Covered for every table by the UPDATE above: WITH CHECK.)

        // No tenant set: nothing at all.
        let mut tx = as_tenant(&app, None).await;
        assert_eq!(
            count(&mut tx, format!("SELECT COUNT(*) FROM {table}")).await,
            0,
            "{table}: rows visible with no tenant set"
        );
        let updated = tx
            .execute(sql(format!("UPDATE {table} SET {col} = {col}")))
            .await;
        if let Ok(done) = updated {
            assert_eq!(done.rows_affected(), 0, "{table}: UPDATE with no tenant");
        }
        tx.rollback().await.unwrap();

        assert_eq!(b_rows(&owner).await, before, "{table}: b's rows changed");
    }

    // A token is visible by its hash alone (the lookup before the tenant is known).
    let mut tx = as_tenant(&app, None).await;
    sqlx::query("SELECT set_config('app.token_hash', 'hash-b', true)")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(
        count(&mut tx, "SELECT COUNT(*) FROM api_tokens".into()).await,
        1
    );
    tx.rollback().await.unwrap();
}

fn assert_permission_denied(table: &str, what: &str, e: sqlx::Error) {
    let code = e
        .as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.to_string());
    assert_eq!(
        code.as_deref(),
        Some("42501"),
        "{table}: {what} failed, but not for want of privilege: {e}"
    );
}
