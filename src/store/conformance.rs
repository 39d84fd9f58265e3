//! The store's tests, each body run on both backends: SQLite, and
//! PostgreSQL as the application role under row-level security (see
//! `testdb.rs` for how the database is found; under CI it must be).

use super::tasks::{Claim, NewTask, Requeued, TaskCompletion, TaskJudgement, TaskReview};
use super::testdb::TestDb;
use super::{NewToken, Store, TenantRecord, TokenRole};
use crate::tasks::gates::{GateResult, Verdict};
use crate::tasks::routing::{RoutingInput, RoutingStrategy};
use crate::tasks::{RequiredCapabilities, RouteChoice, TaskRecord, TaskState, TaskType};

const MINUTE: i64 = 60_000;

#[tokio::test]
async fn a_token_is_found_by_hash_and_keeps_its_first_revocation() {
    for db in TestDb::all().await {
        let store = db.operator().await;
        let server = db.store().await;
        let new = NewToken {
            tenant: "acme",
            role: TokenRole::Agent,
            agent: "bot",
            hash: "h1",
            prefix: "arb_abcdefgh",
            now: 100,
            rate_limit: Some("5/s"),
        };
        let made = store.token_create(&new).await.unwrap();
        // The server (another tenant's handle) finds it by hash.
        assert_eq!(
            server.token_by_hash("h1").await.unwrap(),
            Some(made.clone()),
            "{}",
            db.name()
        );
        assert_eq!(server.token_by_hash("h2").await.unwrap(), None);
        // The same secret twice is refused (the hash is unique).
        assert!(store.token_create(&new).await.is_err());
        let revoked = store.token_revoke(made.id, 200).await.unwrap().unwrap();
        assert_eq!(revoked.revoked_at, Some(200));
        let again = store.token_revoke(made.id, 300).await.unwrap().unwrap();
        assert_eq!(again.revoked_at, Some(200));
        assert!(
            store
                .token_revoke(made.id + 1, 300)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(store.token_list().await.unwrap(), vec![again]);
    }
}

#[tokio::test]
async fn a_tenant_name_or_workspace_is_registered_once() {
    for db in TestDb::all().await {
        let store = db.operator().await;
        let acme = TenantRecord {
            name: "acme".into(),
            workspace: "/srv/acme".into(),
            policy: None,
            created_at: 1,
        };
        store.tenant_add(&acme).await.unwrap();
        assert!(store.tenant_add(&acme).await.is_err(), "{}", db.name());
        let same_dir = TenantRecord {
            name: "other".into(),
            ..acme.clone()
        };
        assert!(store.tenant_add(&same_dir).await.is_err(), "{}", db.name());
        assert_eq!(store.tenant_get("acme").await.unwrap(), Some(acme.clone()));
        assert_eq!(store.tenant_list().await.unwrap(), vec![acme.clone()]);
        assert_eq!(store.tenant_get("nobody").await.unwrap(), None);
        // The server reads a tenant's registration by name.
        let server = db.store().await;
        assert_eq!(server.tenant_get("acme").await.unwrap(), Some(acme));
    }
}

fn queue_it(_: &RoutingInput<'_>) -> RouteChoice {
    RouteChoice {
        strategy: RoutingStrategy::Ucb1,
        seed: 0,
        chosen: None,
        rationale: "nobody".into(),
        candidates: vec![],
    }
}

/// A tier 3 test task of tenant `default`, submitted by `lead` at `now`,
/// whose assignment lapses after `assigned_for` ms.
fn new_task<'a>(
    title: &'a str,
    required: &'a RequiredCapabilities,
    now: i64,
    assigned_for: i64,
) -> NewTask<'a> {
    NewTask {
        tenant: "default",
        title,
        description: "",
        spec: None,
        spec_id: None,
        task_type: TaskType::Test,
        type_confidence: 1.0,
        type_source: "given",
        risk_tier: 3,
        tier_reason: "test",
        priority: 3,
        required,
        submitted_by: "lead",
        now,
        assignment_ends: now + assigned_for,
    }
}

async fn submit(store: &dyn Store, title: &str, now: i64) -> TaskRecord {
    let required = RequiredCapabilities::default();
    let (task, routing) = store
        .task_create(&new_task(title, &required, now, 30 * MINUTE), &queue_it)
        .await
        .unwrap();
    assert_eq!(task.state, TaskState::Queued);
    assert_eq!(routing.choice.chosen, None);
    task
}

fn claim(agent: &str, now: i64) -> Claim<'_> {
    Claim {
        tenant: "default",
        agent,
        now,
        lease_ends: now + 30 * MINUTE,
    }
}

fn judgement<'a>(
    id: i64,
    now: i64,
    verdict: Verdict,
    needs_review: bool,
    gates: &'a [GateResult],
    reasons: &'a [String],
) -> TaskJudgement<'a> {
    TaskJudgement {
        tenant: "default",
        id,
        agent: "worker",
        summary: "done",
        now,
        decided_at: now + 1,
        lease_ends: now + 30 * MINUTE,
        risk_tier: 1,
        verdict,
        needs_review,
        score: 80.0,
        coverage: None,
        mutation: Some(0.5),
        reasons,
        gates,
        arbitration: None,
    }
}

/// Two judges: one answered after a malformed try, one never did.
pub(super) fn unsettled_arbitration() -> crate::tasks::judge::Arbitration {
    use crate::tasks::judge::{Exchange, JudgeAnswer, JudgeCall};
    let call = |attempt: u32, answer: Option<JudgeAnswer>| JudgeCall {
        attempt,
        started_at: 3 * MINUTE,
        duration_ms: 7,
        request: Some("{}".into()),
        http_status: Some(200),
        raw_answer: Some("garbage".into()),
        rule_id: answer.is_none().then(|| "JUDGE-001".into()),
        error: answer.is_none().then(|| "not JSON".into()),
        answer,
        prompt_tokens: Some(100),
        completion_tokens: Some(20),
        cost: 0.25,
    };
    let good = JudgeAnswer {
        verdict: Verdict::Pass,
        score: 90.0,
        confidence: 0.9,
        reasons: vec!["fine".into()],
    };
    let ex = |name: &str, calls| {
        Exchange::from_calls(name.into(), "ollama".into(), "u".into(), "m".into(), calls)
    };
    crate::tasks::judge::combine(
        Verdict::Pass,
        1.0,
        vec![
            ex("a", vec![call(1, None), call(2, Some(good))]),
            ex("b", vec![call(1, None)]),
        ],
        0.6,
    )
}

#[tokio::test]
async fn verdicts_move_the_task_and_keep_every_gate() {
    for db in TestDb::all().await {
        let store = db.store().await;
        let store = store.as_ref();
        let task = submit(store, "judged", 0).await;
        store
            .task_claim_queued(&claim("worker", MINUTE), task.id)
            .await
            .unwrap()
            .unwrap();
        let gate = GateResult {
            name: "deploy".into(),
            command: "deploy prod".into(),
            passed: false,
            rule_id: Some("GATE-002".into()),
            policy_rule: Some("NO-DEPLOY".into()),
            exit_code: None,
            duration_ms: 3,
            measured: None,
            detail: "refused".into(),
            output_tail: String::new(),
        };
        let reasons = vec!["0 of 1 gate(s) passed".to_string()];
        // A fail keeps the claim (renewed) and counts a failure.
        let gates = [gate.clone()];
        let j = judgement(task.id, 2 * MINUTE, Verdict::Fail, false, &gates, &reasons);
        let (held, perf) = store.task_judge(&j).await.unwrap().unwrap();
        assert_eq!(held.state, TaskState::Claimed);
        assert_eq!(held.lease_expires_at, Some(32 * MINUTE));
        let perf = perf.unwrap();
        assert_eq!(perf.stats.failures, 1);
        assert_eq!(
            (perf.stats.scored, perf.stats.mean_score()),
            (1, Some(80.0))
        );
        // A pass the judges could not settle waits, uncounted, with the
        // exchange kept; then it is approved.
        let arbitration = unsettled_arbitration();
        let mut j = judgement(task.id, 3 * MINUTE, Verdict::Pass, true, &[], &reasons);
        j.arbitration = Some(&arbitration);
        j.score = 60.0;
        let (waiting, perf) = store.task_judge(&j).await.unwrap().unwrap();
        assert_eq!((waiting.state, perf), (TaskState::NeedsReview, None));
        let stored = store.task_arbitrations(task.id).await.unwrap();
        assert_eq!(stored.len(), 1, "{}", db.name());
        assert_eq!(stored[0].arbitration, arbitration, "{}", db.name());
        assert_eq!(stored[0].arbitration.usage(), (300, 60, 0.75));
        let late = judgement(task.id, 4 * MINUTE, Verdict::Pass, false, &[], &reasons);
        assert!(store.task_judge(&late).await.unwrap().is_none());
        let review = TaskReview {
            id: task.id,
            approve: true,
            by: "cli:ops",
            note: Some("ok"),
            now: 5 * MINUTE,
        };
        let (done, perf) = store.task_review(&review).await.unwrap().unwrap();
        assert_eq!(done.state, TaskState::Completed);
        let perf = perf.unwrap();
        assert_eq!(perf.stats.successes, 1);
        // The reviewed verdict's score counts when the person decides.
        assert_eq!(
            (perf.stats.scored, perf.stats.mean_score()),
            (2, Some(70.0)),
            "{}",
            db.name()
        );
        assert!(store.task_review(&review).await.unwrap().is_none());
        let verdicts = store.task_verdicts(task.id).await.unwrap();
        assert_eq!(verdicts.len(), 2, "{}", db.name());
        assert_eq!(verdicts[0].gates, vec![gate]);
        assert_eq!(verdicts[0].mutation, Some(0.5));
        assert_eq!(verdicts[1].review.as_deref(), Some("approved"));
        assert_eq!(verdicts[1].review_note.as_deref(), Some("ok"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_task_is_claimed_by_exactly_one_of_many_racers() {
    for db in TestDb::all().await {
        // Separate pools are separate connections, as separate processes have.
        let mut stores = Vec::new();
        for _ in 0..4 {
            stores.push(db.store().await);
        }
        let task = submit(stores[0].as_ref(), "race", 1_000).await;
        let names: Vec<String> = (0..20).map(|i| format!("agent-{i}")).collect();
        let results = futures::future::join_all(names.iter().enumerate().map(|(i, name)| {
            let store = &stores[i % stores.len()];
            async move {
                store
                    .task_claim_queued(&claim(name, 2_000), task.id)
                    .await
                    .unwrap()
            }
        }))
        .await;
        let winners: Vec<&TaskRecord> = results.iter().flatten().collect();
        assert_eq!(winners.len(), 1, "{}: {results:?}", db.name());
        let stored = stores[1].task_get(None, task.id).await.unwrap().unwrap();
        assert_eq!(stored.holder, winners[0].holder);
        assert_eq!(stored.attempts, 1);
        let claims = stores[2]
            .task_events(task.id)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == "claimed")
            .count();
        assert_eq!(claims, 1);
    }
}

#[tokio::test]
async fn a_lapsed_claim_is_requeued_once_and_counts_as_a_failure() {
    for db in TestDb::all().await {
        let store = db.store().await;
        let task = submit(store.as_ref(), "lapse", 0).await;
        let held = store
            .task_claim_queued(&claim("slow", MINUTE), task.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(held.lease_expires_at, Some(31 * MINUTE));
        // Not yet lapsed: nothing moves.
        assert!(
            store
                .task_requeue_lapsed("default", 30 * MINUTE)
                .await
                .unwrap()
                .is_empty()
        );
        let requeued = store
            .task_requeue_lapsed("default", 31 * MINUTE)
            .await
            .unwrap();
        assert_eq!(
            requeued,
            vec![Requeued {
                task_id: task.id,
                agent: Some("slow".into()),
                kind: "lease_expired"
            }],
            "{}",
            db.name()
        );
        assert!(
            store
                .task_requeue_lapsed("default", 32 * MINUTE)
                .await
                .unwrap()
                .is_empty()
        );
        let back = store
            .task_get(Some("default"), task.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((back.state, back.holder), (TaskState::Queued, None));
        let record = store.performance_list(None, Some("slow")).await.unwrap();
        assert_eq!(record[0].stats.failures, 1);
        assert_eq!(record[0].stats.attempts, 1);
        // The lapsed holder can no longer complete it; another agent can claim it.
        let late = TaskCompletion {
            tenant: "default",
            id: task.id,
            agent: "slow",
            summary: "done",
            now: 33 * MINUTE,
        };
        assert!(store.task_complete(&late).await.unwrap().is_none());
        assert!(
            store
                .task_claim_queued(&claim("quick", 33 * MINUTE), task.id)
                .await
                .unwrap()
                .is_some()
        );
    }
}

#[tokio::test]
async fn another_tenant_sees_none_of_the_tasks() {
    for db in TestDb::all().await {
        let store = db.store().await;
        let task = submit(store.as_ref(), "mine", 0).await;
        assert!(
            store
                .task_get(Some("other"), task.id)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .task_list(Some("other"), None, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(store.task_queued("other", 10, 0).await.unwrap().is_empty());
        let foreign = Claim {
            tenant: "other",
            agent: "x",
            now: 1,
            lease_ends: 2,
        };
        assert!(
            store
                .task_claim_queued(&foreign, task.id)
                .await
                .unwrap()
                .is_none(),
            "{}",
            db.name()
        );
    }
}

/// PostgreSQL only: appenders on separate pools (as separate processes or
/// hosts have) extend one chain per tenant, with no fork and no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_on_postgres_make_one_valid_chain_per_tenant() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let TestDb::Postgres { app_url, .. } = &db else {
        unreachable!()
    };
    let mut pools = Vec::new();
    for _ in 0..4 {
        // 120 appenders taking turns on one head row may wait longer for a
        // connection than a request normally should.
        let settings = super::postgres::PgSettings {
            acquire_timeout: std::time::Duration::from_secs(60),
            ..Default::default()
        };
        pools.push(
            super::PgStore::connect_with(app_url, &settings)
                .await
                .unwrap(),
        );
    }
    let entry = |i: usize| super::AuditEntry {
        session_id: format!("s{i}"),
        ..super::AuditEntry::sample(i as i64)
    };
    let appends = (0..120).map(|i| {
        let store = &pools[i % pools.len()];
        let tenant = if i % 3 == 0 { "b" } else { "a" };
        let e = entry(i);
        async move { store.audit_append(tenant, &e).await.unwrap() }
    });
    let records = futures::future::join_all(appends).await;
    let store = pools[0].for_tenant("a");
    for (tenant, expected) in [("a", 80), ("b", 40)] {
        let report = super::audit::verify_chain(&store, tenant, &mut |_| {})
            .await
            .unwrap();
        assert!(report.first_bad.is_none(), "{tenant}: {report:?}");
        assert_eq!(report.records, expected, "{tenant}");
        let mut seqs: Vec<i64> = records
            .iter()
            .filter(|r| r.tenant == tenant)
            .map(|r| r.seq)
            .collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=expected as i64).collect::<Vec<_>>(), "{tenant}");
    }
}

/// PostgreSQL counts a token's requests for every process (SQLite leaves it
/// to each process): over two pools, a 5/h token gets five in, then waits
/// about one interval (12 minutes); another token counts apart.
#[tokio::test]
async fn request_counts_are_shared_on_postgres_and_left_to_the_process_on_sqlite() {
    use std::time::Duration;
    let interval = Duration::from_secs(12 * 60);
    let tolerance = Duration::from_secs(48 * 60);
    for db in TestDb::all().await {
        let store = db.store().await;
        let TestDb::Postgres { app_url, .. } = &db else {
            assert_eq!(
                store.rate_take("a", 1, interval, tolerance).await.unwrap(),
                None
            );
            continue;
        };
        let other = super::PgStore::connect(app_url).await.unwrap();
        let mut waits = Vec::new();
        for i in 0..8 {
            let pool: &dyn Store = if i % 2 == 0 { &*store } else { &other };
            waits.push(
                pool.rate_take("a", 1, interval, tolerance)
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        assert!(waits[..5].iter().all(Duration::is_zero), "{waits:?}");
        for wait in &waits[5..] {
            assert!(
                (Duration::from_secs(11 * 60)..=interval).contains(wait),
                "{waits:?}"
            );
        }
        let fresh = other.rate_take("a", 2, interval, tolerance).await.unwrap();
        assert_eq!(fresh, Some(Duration::ZERO));
    }
}

#[tokio::test]
async fn declared_agents_follow_each_load_and_a_dropped_one_is_hidden_unless_it_called() {
    use super::tasks::AgentRegistration;
    use crate::tasks::Capabilities;
    for db in TestDb::all().await {
        let store = db.store().await;
        let caps = Capabilities {
            task_types: vec![TaskType::Docs],
            languages: vec![],
            tools: vec![],
        };
        let reg = |name: &'static str, max: u32| AgentRegistration {
            tenant: "default",
            name,
            capabilities: &caps,
            max_concurrent_tasks: max,
            now: 0,
        };
        store
            .agents_declare("default", &[reg("seen", 1), reg("never", 1)], 10)
            .await
            .unwrap();
        let listed = store.agent_list(Some("default")).await.unwrap();
        assert_eq!(listed.len(), 2, "{}", db.name());
        assert!(
            listed
                .iter()
                .all(|a| a.agent.declared_at == Some(10) && a.agent.last_seen_at == 0),
            "{listed:?}"
        );
        store.agent_seen("default", "seen", 20).await.unwrap();
        // The next load drops both and changes nothing else.
        store
            .agents_declare("default", &[reg("new", 4)], 30)
            .await
            .unwrap();
        let listed = store.agent_list(Some("default")).await.unwrap();
        let names: Vec<(&str, Option<i64>, i64, u32)> = listed
            .iter()
            .map(|a| {
                (
                    a.agent.name.as_str(),
                    a.agent.declared_at,
                    a.agent.last_seen_at,
                    a.agent.max_concurrent_tasks,
                )
            })
            .collect();
        assert_eq!(
            names,
            vec![("new", Some(30), 0, 4), ("seen", None, 20, 1)],
            "{}",
            db.name()
        );
        // The hidden one is not an agent until it registers or is declared again.
        assert_eq!(
            store.agent_seen("default", "never", 40).await.unwrap(),
            None
        );
        store
            .agents_declare("default", &[reg("never", 1)], 50)
            .await
            .unwrap();
        let listed = store.agent_list(Some("default")).await.unwrap();
        let names: Vec<&str> = listed.iter().map(|a| a.agent.name.as_str()).collect();
        // ... and "new", dropped before it called, is hidden in turn.
        assert_eq!(names, ["never", "seen"], "{}", db.name());
    }
}

/// The shipped migrations and one more after them whose SQL makes a table
/// and then fails (`broken`), or only makes it.
fn with_one_more(shipped: &sqlx::migrate::Migrator, broken: bool) -> sqlx::migrate::Migrator {
    use sqlx::SqlSafeStr;
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    let mut all: Vec<Migration> = shipped.iter().cloned().collect();
    let version = all.iter().map(|m| m.version).max().unwrap_or(0) + 1;
    let sql = if broken {
        "CREATE TABLE half_done (x INTEGER);\nINSERT INTO no_such_table VALUES (1);"
    } else {
        "CREATE TABLE half_done (x INTEGER);"
    };
    all.push(Migration::new(
        version,
        "one_more".into(),
        MigrationType::Simple,
        sqlx::AssertSqlSafe(sql.to_string()).into_sql_str(),
        false,
    ));
    Migrator::with_migrations(all)
}

/// Apply `migrator` the way `arbiter db migrate` does; how many were new.
async fn migrate<C: sqlx::migrate::Migrate>(
    migrator: &sqlx::migrate::Migrator,
    conn: &mut C,
) -> Result<usize, super::StoreError> {
    super::migrate_in_steps(migrator, conn, &mut |_, _, _| {}).await
}

/// A migration that fails leaves the database as it was: the ones before it
/// stay applied, nothing of it remains (its table, a row saying it ran), and
/// once fixed the next run applies it. On both backends, through the path
/// `arbiter db migrate` and the server's start take.
#[tokio::test]
async fn a_migration_that_fails_leaves_the_database_as_it_was() {
    for db in TestDb::all().await {
        let shipped_count = match &db {
            TestDb::Sqlite(_) => super::sqlite::MIGRATOR.iter().count(),
            TestDb::Postgres { .. } => super::postgres::MIGRATOR.iter().count(),
        } as i64;
        let _ = db.store().await; // migrated as shipped
        // The same steps on either backend's connection (a macro: the two
        // connection types share no trait sqlx's queries accept).
        macro_rules! run_on {
            ($conn:expr, $shipped:expr, $count_table:expr) => {{
                let mut conn = $conn;
                let failed = migrate(&with_one_more($shipped, true), &mut *conn).await;
                let count = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql);
                let tables = count($count_table).fetch_one(&mut *conn).await.unwrap();
                let rows = count("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
                    .fetch_one(&mut *conn)
                    .await
                    .unwrap();
                let fixed = migrate(&with_one_more($shipped, false), &mut *conn).await;
                let after = count($count_table).fetch_one(&mut *conn).await.unwrap();
                (failed, tables, rows, fixed, after)
            }};
        }
        let (failed, tables_after_failure, rows, fixed, tables_after_fix) = match &db {
            TestDb::Sqlite(dir) => {
                let store = super::SqliteStore::open(&dir.path().join("arbiter.db"))
                    .await
                    .unwrap();
                run_on!(
                    store.pool().acquire().await.unwrap(),
                    &super::sqlite::MIGRATOR,
                    "SELECT COUNT(*) FROM sqlite_master WHERE name = 'half_done'"
                )
            }
            TestDb::Postgres { owner_url, .. } => {
                let owner = super::PgStore::connect(owner_url).await.unwrap();
                run_on!(
                    owner.pool().acquire().await.unwrap(),
                    &super::postgres::MIGRATOR,
                    "SELECT COUNT(*) FROM pg_tables WHERE tablename = 'half_done'"
                )
            }
        };
        let name = db.name();
        let why = failed
            .expect_err("the broken migration must fail")
            .to_string();
        assert!(why.contains("no_such_table"), "{name}: {why}");
        assert_eq!(
            tables_after_failure, 0,
            "{name}: the failed migration's table remains"
        );
        assert_eq!(
            rows, shipped_count,
            "{name}: the shipped migrations, and only they, are applied"
        );
        assert_eq!(fixed.unwrap(), 1, "{name}: the fixed migration applies");
        assert_eq!(tables_after_fix, 1, "{name}");
    }
}

/// A change is noted in a task's history only by the agent holding it, in
/// its tenant; the notes come back as events of their kind.
#[tokio::test]
async fn only_the_holder_notes_changes_in_a_tasks_history() {
    for db in TestDb::all().await {
        let store = db.store().await;
        let store = store.as_ref();
        let task = submit(store, "noted", 0).await;
        let note = |agent: &'static str, tenant: &'static str| {
            store.task_note(tenant, task.id, agent, 5, "changed", "{\"path\":\"a\"}")
        };
        assert!(
            !note("worker", "default").await.unwrap(),
            "not claimed yet: {}",
            db.name()
        );
        store
            .task_claim_queued(&claim("worker", MINUTE), task.id)
            .await
            .unwrap()
            .unwrap();
        assert!(note("worker", "default").await.unwrap(), "{}", db.name());
        assert!(!note("someone", "default").await.unwrap(), "{}", db.name());
        let events = store.task_events(task.id).await.unwrap();
        let changed: Vec<_> = events.iter().filter(|e| e.kind == "changed").collect();
        assert_eq!(changed.len(), 1, "{}", db.name());
        assert_eq!(changed[0].actor, "worker");
        assert_eq!(changed[0].note.as_deref(), Some("{\"path\":\"a\"}"));
    }
}

/// Each agent's load as the store reports it, beside a count of the tasks
/// it holds (`claimed`) or is assigned (`assigned`).
async fn loads(store: &dyn Store) -> Vec<(String, u32, u32)> {
    let tasks = store.task_list(Some("default"), None, 1_000).await.unwrap();
    let mut loads: Vec<(String, u32, u32)> = store
        .agent_list(Some("default"))
        .await
        .unwrap()
        .into_iter()
        .map(|status| {
            let name = status.agent.name;
            let counted = tasks
                .iter()
                .filter(|t| match t.state {
                    TaskState::Claimed => t.holder.as_deref() == Some(name.as_str()),
                    TaskState::Assigned => t.assigned_agent.as_deref() == Some(name.as_str()),
                    _ => false,
                })
                .count() as u32;
            (name, status.active, counted)
        })
        .collect();
    loads.sort();
    loads
}

#[tokio::test]
async fn an_agents_load_follows_every_move_of_its_tasks() {
    use super::tasks::{AgentRegistration, TaskCancel};
    use crate::tasks::Capabilities;
    for db in TestDb::all().await {
        let store = db.store().await;
        let store = store.as_ref();
        let capabilities = Capabilities {
            task_types: vec![TaskType::Test],
            ..Capabilities::default()
        };
        for name in ["ann", "bob"] {
            store
                .agent_register(&AgentRegistration {
                    tenant: "default",
                    name,
                    capabilities: &capabilities,
                    max_concurrent_tasks: 10,
                    now: MINUTE,
                })
                .await
                .unwrap();
        }
        let expect =
            |ann: u32, bob: u32| vec![("ann".to_string(), ann, ann), ("bob".to_string(), bob, bob)];
        let to = |agent: &'static str| {
            move |_: &RoutingInput<'_>| RouteChoice {
                strategy: RoutingStrategy::Ucb1,
                seed: 0,
                chosen: Some(agent.to_string()),
                rationale: format!("{agent} it is"),
                candidates: vec![],
            }
        };
        let required = RequiredCapabilities::default();
        let mut ids = Vec::new();
        for (i, agent) in ["ann", "ann", "bob", "ann"].into_iter().enumerate() {
            let title = format!("task {i}");
            let new = new_task(&title, &required, MINUTE, MINUTE);
            let (task, _) = store.task_create(&new, &to(agent)).await.unwrap();
            assert_eq!(task.assigned_agent.as_deref(), Some(agent), "{}", db.name());
            ids.push(task.id);
        }
        assert_eq!(loads(store).await, expect(3, 1), "assigned: {}", db.name());

        // Claiming an assigned task moves it from assigned to held: same load.
        let held = store
            .task_claim_assigned(&claim("ann", MINUTE))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(loads(store).await, expect(3, 1), "claimed: {}", db.name());

        // Completing and cancelling free a slot each.
        let done = TaskCompletion {
            tenant: "default",
            id: held.id,
            agent: "ann",
            summary: "done",
            now: MINUTE,
        };
        assert!(store.task_complete(&done).await.unwrap().is_some());
        assert_eq!(loads(store).await, expect(2, 1), "completed: {}", db.name());
        let bobs = ids[2];
        let cancel = TaskCancel {
            tenant: "default",
            id: bobs,
            actor: "lead",
            now: MINUTE,
        };
        assert!(store.task_cancel(&cancel).await.unwrap().is_some());
        assert_eq!(loads(store).await, expect(2, 0), "cancelled: {}", db.name());

        // Assignments that lapse go back to the queue and count for no one;
        // a queued task claimed by bob counts for bob.
        let requeued = store
            .task_requeue_lapsed("default", 3 * MINUTE)
            .await
            .unwrap();
        assert_eq!(requeued.len(), 2, "{}", db.name());
        assert_eq!(loads(store).await, expect(0, 0), "requeued: {}", db.name());
        let taken = store
            .task_claim_queued(&claim("bob", 3 * MINUTE), requeued[0].task_id)
            .await
            .unwrap();
        assert!(taken.is_some(), "{}", db.name());
        assert_eq!(loads(store).await, expect(0, 1), "taken: {}", db.name());

        // A re-registration keeps the load.
        store
            .agent_register(&AgentRegistration {
                tenant: "default",
                name: "bob",
                capabilities: &capabilities,
                max_concurrent_tasks: 3,
                now: 4 * MINUTE,
            })
            .await
            .unwrap();
        assert_eq!(
            loads(store).await,
            expect(0, 1),
            "re-registered: {}",
            db.name()
        );
    }
}

#[tokio::test]
async fn indexed_records_of_any_batch_size_are_kept_once_in_order() {
    use crate::store::audit::{AuditEntry, AuditRecord, IndexLine};
    for db in TestDb::all().await {
        let store = db.store().await;
        let records = AuditRecord::sample_chain(200, |seq| AuditEntry {
            detail: format!("call {seq}: \"quoted\", tab\t, é, \u{1}"),
            task_ids: if seq % 7 == 0 {
                "T-3".into()
            } else {
                String::new()
            },
            ..AuditEntry::sample(seq)
        });
        // 173 (128 + 32 + 8 + 1 x 5 rows), then 160..=200 again: the overlap
        // is ignored.
        store.audit_index(&records[..173]).await.unwrap();
        store.audit_index(&records[159..180]).await.unwrap();
        // The rest as journal lines (what the indexer hands over).
        let json: Vec<String> = records[170..]
            .iter()
            .map(|r| serde_json::to_string(r).unwrap())
            .collect();
        let lines: Vec<IndexLine<'_>> = json
            .iter()
            .map(|line| IndexLine::parse(line).unwrap())
            .collect();
        assert_eq!(lines[0].seq, 171);
        assert_eq!(lines[4].task_ids, "T-3", "seq 175");
        store.audit_index_lines(&lines).await.unwrap();
        let kept = store.audit_page("default", 0, 300).await.unwrap();
        assert_eq!(kept, records, "{}", db.name());
        let tail = store.audit_tail("default", 3).await.unwrap();
        assert_eq!(tail, records[197..], "{}", db.name());
        let head = store.audit_head("default").await.unwrap().unwrap();
        assert_eq!(
            (head.seq, head.hash.as_str()),
            (200, records[199].hash.as_str())
        );
        let linked = store.audit_for_task("default", 3).await.unwrap();
        let under_task: Vec<_> = records.iter().filter(|r| r.seq % 7 == 0).cloned().collect();
        assert_eq!(linked, under_task, "{}", db.name());
    }
}
