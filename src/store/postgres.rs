//! The shared store: PostgreSQL, for several arbiter processes (and hosts)
//! on one database, with tenant isolation enforced by the database itself.
//!
//! Row-level security (`migrations/postgres/0002_row_level_security.sql`):
//! every request runs in a transaction whose first statement is
//! `set_config('app.tenant_id', $1, true)` — transaction-local, so a pooled
//! connection never carries one tenant's setting into another's request —
//! and every tenant-owned table shows the server only that tenant's rows.
//!
//! A [`PgStore`] is a pool plus a scope. A server holds one handle per tenant
//! ([`PgStore::for_tenant`]), all on one pool: a method given a tenant uses
//! it; a method given none (a task's events by id, `tenant: None`) uses the
//! handle's tenant. An unscoped handle sets no tenant: on the application
//! role it sees nothing; on the owner role (the operator's CLI, with
//! `ARBITER_DATABASE_OWNER_URL`) the `operator` policy shows every tenant.
//! A server refuses to run on a role that owns the tables or bypasses row
//! security ([`PgStore::check_application_role`]).
//!
//! The pool is bounded, with a short acquire timeout and statement and
//! idle-in-transaction timeouts set on every connection ([`PgSettings`]). A
//! circuit breaker (`breaker.rs`) sits in front of it: once the database has
//! been unreachable a few times in a row, requests fail at once with STORE-001
//! instead of each waiting for the pool, and a probe every retry interval lets
//! the server recover by itself when the database is back.
//!
//! Token lookup by hash happens before the tenant is known: it sets
//! `app.token_hash` instead, which shows the one row with that hash.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, QueryBuilder, Row, Transaction};

use super::audit::{AuditRecord, ChainHead, push_audit_values};
use super::breaker::{self, Breaker, Outage};
use super::tokens::{NewToken, TenantRecord, TokenRecord, TokenRole};
use super::{BudgetUsage, NewOverride, OverrideDecision, Store, StoreError};
use crate::overrides::{OverrideRecord, Scope};

pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Pool limits and timeouts, from the environment (see README, PostgreSQL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgSettings {
    /// Connections per process; several processes share the server's limit.
    pub max_connections: u32,
    /// Longest a request waits for a free connection (or a new one): short,
    /// so a database that went away is noticed in seconds.
    pub acquire_timeout: Duration,
    /// Longest a statement may run before the database cancels it.
    pub statement_timeout: Duration,
    /// Longest a connection may sit idle inside a transaction (a stuck
    /// request must not hold row locks, e.g. a chain's head, for ever).
    pub idle_in_transaction_timeout: Duration,
    /// Connection failures in a row after which calls fail fast.
    pub breaker_failures: u32,
    /// How often a probe checks whether the database is back.
    pub retry: Duration,
}

impl Default for PgSettings {
    fn default() -> Self {
        Self {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(10),
            idle_in_transaction_timeout: Duration::from_secs(30),
            breaker_failures: 3,
            retry: super::breaker::retry_interval(),
        }
    }
}

impl PgSettings {
    /// The defaults, overridden by `ARBITER_DB_*` variables.
    pub fn from_env() -> Result<Self, StoreError> {
        let mut s = Self::default();
        let number = |name: &str, default: u64| -> Result<u64, StoreError> {
            match std::env::var(name) {
                Ok(v) => v.trim().parse::<u64>().map_err(|_| {
                    StoreError::Database(format!(
                        "{name}={v:?} is not a whole number (default {default})"
                    ))
                }),
                Err(_) => Ok(default),
            }
        };
        let ms = |d: Duration| d.as_millis() as u64;
        s.max_connections =
            number("ARBITER_DB_MAX_CONNECTIONS", s.max_connections.into())?.clamp(1, 1000) as u32;
        s.acquire_timeout = Duration::from_millis(
            number("ARBITER_DB_ACQUIRE_TIMEOUT_MS", ms(s.acquire_timeout))?.max(1),
        );
        s.statement_timeout = Duration::from_millis(number(
            "ARBITER_DB_STATEMENT_TIMEOUT_MS",
            ms(s.statement_timeout),
        )?);
        s.idle_in_transaction_timeout = Duration::from_millis(number(
            "ARBITER_DB_IDLE_TX_TIMEOUT_MS",
            ms(s.idle_in_transaction_timeout),
        )?);
        s.breaker_failures =
            number("ARBITER_DB_BREAKER_FAILURES", s.breaker_failures.into())?.clamp(1, 1000) as u32;
        Ok(s)
    }
}

macro_rules! select_overrides {
    ($rest:literal) => {
        concat!(
            "SELECT id, tenant, agent, session_id, rule_id, reason, scope, requested_minutes, \
             state, created_at, decided_at, decided_by, note, expires_at FROM overrides ",
            $rest
        )
    };
}

macro_rules! token_columns {
    () => {
        "id, tenant, agent, role, prefix, created_at, revoked_at, rate_limit"
    };
}

macro_rules! audit_columns {
    () => {
        "tenant, seq, ts, session_id, client_name, tool, args_sha256, args_redacted, decision, \
         rule_ids, outcome, detail, duration_us, waiver_ids, task_ids, prev_hash, hash"
    };
}

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// The tenant of requests that name none; `None`: set no tenant.
    scope: Option<String>,
    /// Whether the database answers; shared by every handle on the pool.
    health: Arc<Health>,
}

/// The pool's circuit breaker, and what to call the database in messages.
#[derive(Debug)]
struct Health {
    /// The URL without its password.
    target: String,
    breaker: Mutex<Breaker>,
    /// When a request last got a connection: a pool timeout while others
    /// got theirs means a busy pool, not an unreachable database.
    last_success: Mutex<Option<Instant>>,
}

impl Health {
    fn admit(&self) -> Result<(), StoreError> {
        let mut breaker = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        breaker
            .admit(Instant::now())
            .map_err(|outage| self.unreachable(&outage, true))
    }

    fn success(&self) {
        *self.last_success.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        let mut breaker = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        breaker.success();
    }

    /// Whether some request got a connection after `t`.
    fn succeeded_since(&self, t: Instant) -> bool {
        self.last_success
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|at| at > t)
    }

    /// Note a failure to reach the database; the error to report.
    fn failure(&self, e: &sqlx::Error) -> StoreError {
        let mut breaker = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        breaker.failure(Instant::now(), &e.to_string());
        self.unreachable(&breaker.outage(), false)
    }

    /// The error to report; `fast`: the call was refused without trying.
    fn unreachable(&self, outage: &Outage, fast: bool) -> StoreError {
        StoreError::Unavailable(format!(
            "[{}] the database at {} is unreachable since {} ({} failed attempt{} in a row; last: {}){}; \
             arbiter retries every {}; check `arbiter doctor`",
            breaker::UNREACHABLE,
            self.target,
            outage.since_text(),
            outage.failures,
            if outage.failures == 1 { "" } else { "s" },
            outage.last_error,
            if fast {
                "; refused without waiting for it"
            } else {
                ""
            },
            outage.retry_text(),
        ))
    }
}

/// Whether `e` says the database could not be reached (as opposed to a
/// query it refused): those count toward the breaker.
fn is_connection_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // Class 08 (connection exception); 57P01-03: the server is shutting
        // down, crashed or starting.
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03")),
        _ => false,
    }
}

/// `postgres://user:secret@host/db` as `postgres://user@host:port/db`.
fn describe(options: &PgConnectOptions) -> String {
    format!(
        "postgres://{}@{}:{}/{}",
        options.get_username(),
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("")
    )
}

fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

impl PgStore {
    /// Whether `url` names a PostgreSQL database.
    pub fn is_url(url: &str) -> bool {
        is_postgres_url(url)
    }

    /// Connect a pool (no migrations), with the settings from the
    /// environment ([`PgSettings::from_env`]); the handle is unscoped.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, &PgSettings::from_env()?).await
    }

    /// [`PgStore::connect`] with explicit settings.
    pub async fn connect_with(url: &str, settings: &PgSettings) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)?
            .application_name("arbiter")
            .options([
                (
                    "statement_timeout",
                    settings.statement_timeout.as_millis().to_string(),
                ),
                (
                    "idle_in_transaction_session_timeout",
                    settings.idle_in_transaction_timeout.as_millis().to_string(),
                ),
            ]);
        let health = Arc::new(Health {
            target: describe(&options),
            breaker: Mutex::new(Breaker::new(settings.breaker_failures, settings.retry)),
            last_success: Mutex::new(None),
        });
        let connected = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .min_connections(0)
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options.clone())
            .await;
        let pool = match connected {
            Ok(pool) => pool,
            // A first connection has no breaker to speak of yet; the opener
            // (`LazyStore`) spaces out the retries.
            Err(e) if is_connection_error(&e) => {
                // The pool only says it timed out: one direct try says why.
                let why = match e {
                    sqlx::Error::PoolTimedOut => {
                        use sqlx::ConnectOptions;
                        match tokio::time::timeout(settings.acquire_timeout, options.connect())
                            .await
                        {
                            Ok(Err(direct)) => direct.to_string(),
                            _ => e.to_string(),
                        }
                    }
                    e => e.to_string(),
                };
                return Err(StoreError::Unavailable(format!(
                    "the database at {} is unreachable: {why}",
                    health.target
                )));
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Self {
            pool,
            scope: None,
            health,
        })
    }

    /// Apply the migrations, as the role that owns the tables. Each runs in
    /// a transaction (a failed one leaves the database as it was); sqlx holds
    /// an advisory lock, so processes starting at once apply them once.
    pub async fn migrate(owner_url: &str) -> Result<(), StoreError> {
        let owner = Self::connect(owner_url).await?;
        let applied = MIGRATOR.run(&owner.pool).await;
        owner.pool.close().await;
        Ok(applied?)
    }

    /// [`PgStore::migrate`], one migration at a time, telling `step` after
    /// each; returns how many were new.
    pub async fn migrate_reporting(
        owner_url: &str,
        step: super::MigrationStep<'_>,
    ) -> Result<usize, StoreError> {
        let owner = Self::connect(owner_url).await?;
        let mut conn = owner.pool.acquire().await?;
        let new = super::migrate_in_steps(&MIGRATOR, &mut *conn, step).await;
        drop(conn);
        owner.pool.close().await;
        new
    }

    /// The same pool, scoped to `tenant`.
    pub fn for_tenant(&self, tenant: &str) -> Self {
        Self {
            pool: self.pool.clone(),
            scope: Some(tenant.to_string()),
            health: Arc::clone(&self.health),
        }
    }

    /// Refuse a role for which row-level security would not hold: a
    /// superuser, a role with BYPASSRLS, or the tables' owner (or a member of it).
    pub async fn check_application_role(&self) -> Result<(), StoreError> {
        let row = sqlx::query(
            "SELECT current_user::text AS me, r.rolsuper, r.rolbypassrls, \
             (SELECT bool_or(pg_has_role(current_user, c.relowner, 'USAGE')) FROM pg_class c \
              WHERE c.relname = 'tasks' AND c.relkind = 'r' \
              AND c.relnamespace = 'public'::regnamespace) AS owns \
             FROM pg_roles r WHERE r.rolname = current_user",
        )
        .fetch_one(&self.pool)
        .await?;
        let me: String = row.try_get("me")?;
        let owns: Option<bool> = row.try_get("owns")?;
        let Some(owns) = owns else {
            return Err(StoreError::Database(
                "the database has no arbiter tables: run `arbiter db migrate` with the owner's URL \
                 (ARBITER_DATABASE_OWNER_URL)"
                    .into(),
            ));
        };
        let why = if row.try_get::<bool, _>("rolsuper")? {
            Some("is a superuser")
        } else if row.try_get::<bool, _>("rolbypassrls")? {
            Some("has BYPASSRLS")
        } else if owns {
            Some("owns the tables")
        } else {
            None
        };
        match why {
            Some(why) => Err(StoreError::Database(format!(
                "the database role {me} {why}, so row-level security would not keep tenants apart; \
                 connect the server as the application role (arbiter_app, see README, PostgreSQL) \
                 and keep the owner's URL for `arbiter db migrate`"
            ))),
            None => Ok(()),
        }
    }

    /// The pool, for tests that need raw SQL.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A transaction, through the breaker: refused at once while the
    /// database is known to be unreachable; a failure to connect counts.
    async fn transaction(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        self.health.admit()?;
        let started = Instant::now();
        match self.pool.begin().await {
            Ok(tx) => {
                self.health.success();
                Ok(tx)
            }
            Err(e) => Err(self.classify(e, started).await),
        }
    }

    /// A connection from the pool, as the breaker sees it: the pool checks
    /// it with a ping, so this is one round trip that proves the database
    /// answers.
    async fn answers(&self) -> Result<(), StoreError> {
        self.health.admit()?;
        let started = Instant::now();
        match self.pool.acquire().await {
            Ok(_) => {
                self.health.success();
                Ok(())
            }
            Err(e) => Err(self.classify(e, started).await),
        }
    }

    /// What a failure to get a connection (since `started`) means, reported
    /// to the breaker.
    async fn classify(&self, e: sqlx::Error, started: Instant) -> StoreError {
        match e {
            // Others were served meanwhile: a busy pool, not an outage.
            sqlx::Error::PoolTimedOut if self.health.succeeded_since(started) => self.busy(),
            sqlx::Error::PoolTimedOut => match self.connect_directly().await {
                // The database answers: every connection was busy.
                Ok(()) => self.busy(),
                Err(e) => self.health.failure(&e),
            },
            e if is_connection_error(&e) => self.health.failure(&e),
            e => {
                // It answered, if only to refuse.
                self.health.success();
                e.into()
            }
        }
    }

    fn busy(&self) -> StoreError {
        StoreError::Database(format!(
            "every connection to the database was busy for {:?} (a burst of requests, or slow \
             statements); retry, or raise ARBITER_DB_MAX_CONNECTIONS",
            self.pool.options().get_acquire_timeout()
        ))
    }

    /// After a pool timeout with no one else served: one connection outside
    /// the pool, to tell a busy pool from an unreachable database and to
    /// learn why (the pool only says it timed out).
    async fn connect_directly(&self) -> Result<(), sqlx::Error> {
        use sqlx::{ConnectOptions, Connection};
        let options = self.pool.connect_options();
        let wait = self.pool.options().get_acquire_timeout();
        match tokio::time::timeout(wait, options.connect()).await {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(sqlx::Error::PoolTimedOut),
        }
    }

    /// A transaction for one request, with the tenant set first: `tenant`,
    /// else the handle's scope, else none.
    pub(super) async fn begin(
        &self,
        tenant: Option<&str>,
    ) -> Result<Transaction<'static, Postgres>, StoreError> {
        let mut tx = self.transaction().await?;
        if let Some(tenant) = tenant.or(self.scope.as_deref()) {
            sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
                .bind(tenant)
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }

    async fn override_by_id(
        tx: &mut Transaction<'static, Postgres>,
        id: i64,
    ) -> Result<Option<OverrideRecord>, StoreError> {
        let row = sqlx::query(select_overrides!("WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
        Ok(row.as_ref().map(override_from_row).transpose()?)
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

pub(super) fn rows<T>(
    rows: &[PgRow],
    from_row: fn(&PgRow) -> Result<T, sqlx::Error>,
) -> Result<Vec<T>, StoreError> {
    Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
}

fn override_from_row(row: &PgRow) -> Result<OverrideRecord, sqlx::Error> {
    let scope: String = row.try_get("scope")?;
    Ok(OverrideRecord {
        id: row.try_get("id")?,
        tenant: row.try_get("tenant")?,
        agent: row.try_get("agent")?,
        session_id: row.try_get("session_id")?,
        rule_id: row.try_get("rule_id")?,
        reason: row.try_get("reason")?,
        scope: serde_json::from_str::<Scope>(&scope).map_err(|e| sqlx::Error::Decode(e.into()))?,
        requested_minutes: row
            .try_get::<Option<i64>, _>("requested_minutes")?
            .map(|m| m.max(0) as u64),
        stored_state: row.try_get("state")?,
        created_at: row.try_get("created_at")?,
        decided_at: row.try_get("decided_at")?,
        decided_by: row.try_get("decided_by")?,
        note: row.try_get("note")?,
        expires_at: row.try_get("expires_at")?,
    })
}

fn record_from_row(row: &PgRow) -> Result<AuditRecord, sqlx::Error> {
    Ok(AuditRecord {
        tenant: row.try_get("tenant")?,
        seq: row.try_get("seq")?,
        ts: row.try_get("ts")?,
        session_id: row.try_get("session_id")?,
        client_name: row.try_get("client_name")?,
        tool: row.try_get("tool")?,
        args_sha256: row.try_get("args_sha256")?,
        args_redacted: row.try_get("args_redacted")?,
        decision: row.try_get("decision")?,
        rule_ids: row.try_get("rule_ids")?,
        outcome: row.try_get("outcome")?,
        detail: row.try_get("detail")?,
        duration_us: row.try_get("duration_us")?,
        waiver_ids: row.try_get("waiver_ids")?,
        task_ids: row.try_get("task_ids")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

fn token_from_row(row: &PgRow) -> Result<TokenRecord, sqlx::Error> {
    Ok(TokenRecord {
        id: row.try_get("id")?,
        tenant: row.try_get("tenant")?,
        agent: row.try_get("agent")?,
        role: TokenRole::parse(&row.try_get::<String, _>("role")?),
        prefix: row.try_get("prefix")?,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
        rate_limit: row.try_get("rate_limit")?,
    })
}

fn tenant_from_row(row: &PgRow) -> Result<TenantRecord, sqlx::Error> {
    Ok(TenantRecord {
        name: row.try_get("name")?,
        workspace: row.try_get("workspace")?,
        policy: row.try_get("policy")?,
        created_at: row.try_get("created_at")?,
    })
}

#[async_trait]
impl Store for PgStore {
    async fn reachable(&self) -> Result<(), StoreError> {
        self.answers().await
    }

    fn breaker_open(&self) -> bool {
        self.health
            .breaker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_open()
    }

    async fn audit_head(&self, tenant: &str) -> Result<Option<ChainHead>, StoreError> {
        let mut tx = self.begin(Some(tenant)).await?;
        let row = sqlx::query(
            "SELECT seq, hash FROM audit_records WHERE tenant = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(tenant)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(match row {
            Some(row) => Some(ChainHead {
                seq: row.try_get("seq")?,
                hash: row.try_get("hash")?,
            }),
            None => None,
        })
    }

    /// The commit point of audit records on PostgreSQL, for several
    /// processes (or hosts) on one database: the transaction locks the
    /// tenant's row in `audit_heads`, so appenders take turns and each links
    /// to the record committed just before it (no fork, no gap). The head
    /// row is made on first use from the newest record already stored.
    async fn audit_append(
        &self,
        tenant: &str,
        entry: &super::AuditEntry,
    ) -> Result<AuditRecord, StoreError> {
        const LOCK_HEAD: &str = "SELECT seq, hash FROM audit_heads WHERE tenant = $1 FOR UPDATE";
        let mut tx = self.begin(Some(tenant)).await?;
        let mut head: Option<(i64, String)> = sqlx::query_as(LOCK_HEAD)
            .bind(tenant)
            .fetch_optional(&mut *tx)
            .await?;
        if head.is_none() {
            // First append of this chain here: concurrent first appenders
            // insert the same row; one wins, the others wait on it.
            sqlx::query(
                "INSERT INTO audit_heads (tenant, seq, hash)                  SELECT $1, COALESCE(MAX(seq), 0),                  COALESCE((SELECT hash FROM audit_records WHERE tenant = $1 ORDER BY seq DESC LIMIT 1), $2)                  FROM audit_records WHERE tenant = $1 ON CONFLICT (tenant) DO NOTHING",
            )
            .bind(tenant)
            .bind(super::audit::GENESIS_HASH)
            .execute(&mut *tx)
            .await?;
            head = Some(
                sqlx::query_as(LOCK_HEAD)
                    .bind(tenant)
                    .fetch_one(&mut *tx)
                    .await?,
            );
        }
        let (seq, hash) = head.unwrap_or_default();
        let record = AuditRecord::from_entry(tenant, seq + 1, &hash, entry);
        // The record and the new head in one statement (one round trip).
        let mut insert = QueryBuilder::<Postgres>::new(concat!(
            "WITH added AS (INSERT INTO audit_records (",
            audit_columns!(),
            ") "
        ));
        push_audit_values(&mut insert, std::slice::from_ref(&record));
        insert.push(
            " RETURNING tenant, seq, hash) UPDATE audit_heads h SET seq = added.seq,              hash = added.hash FROM added WHERE h.tenant = added.tenant",
        );
        let done = insert.build().execute(&mut *tx).await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Database(format!(
                "the audit head of tenant {tenant} did not move to seq {}",
                record.seq
            )));
        }
        tx.commit().await?;
        Ok(record)
    }

    async fn rate_take(
        &self,
        tenant: &str,
        token: i64,
        interval: Duration,
        tolerance: Duration,
    ) -> Result<Option<Duration>, StoreError> {
        // One round trip: the function sets the tenant itself
        // (migrations/postgres/0004_shared_rate_limits.sql).
        let wait_us: i64 = sqlx::query_scalar("SELECT arbiter_rate_take($1, $2, $3, $4)")
            .bind(tenant)
            .bind(token)
            .bind(micros(interval))
            .bind(micros(tolerance))
            .fetch_one(&self.pool)
            .await?;
        Ok(Some(Duration::from_micros(wait_us.max(0) as u64)))
    }

    async fn audit_index(&self, records: &[AuditRecord]) -> Result<(), StoreError> {
        // Records of one tenant per transaction: the setting is per transaction.
        let mut start = 0;
        while start < records.len() {
            let tenant = &records[start].tenant;
            let end = records[start..]
                .iter()
                .position(|r| &r.tenant != tenant)
                .map_or(records.len(), |n| start + n);
            let batch = &records[start..end];
            let mut tx = self.begin(Some(tenant)).await?;
            let mut query = QueryBuilder::<Postgres>::new(concat!(
                "INSERT INTO audit_records (",
                audit_columns!(),
                ") "
            ));
            push_audit_values(&mut query, batch);
            query.push(" ON CONFLICT (tenant, seq) DO NOTHING");
            query.build().persistent(false).execute(&mut *tx).await?;
            // A head row (made by `audit_append`) follows indexed records, so
            // the next append links to them; only to a record that is stored.
            let last = &batch[batch.len() - 1];
            sqlx::query(
                "UPDATE audit_heads SET seq = $2, hash = $3 WHERE tenant = $1 AND seq < $2                  AND EXISTS (SELECT 1 FROM audit_records WHERE tenant = $1 AND seq = $2 AND hash = $3)",
            )
            .bind(tenant)
            .bind(last.seq)
            .bind(&last.hash)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            start = end;
        }
        Ok(())
    }

    async fn audit_page(
        &self,
        tenant: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let mut tx = self.begin(Some(tenant)).await?;
        let found = sqlx::query(concat!(
            "SELECT ",
            audit_columns!(),
            " FROM audit_records WHERE tenant = $1 AND seq > $2 ORDER BY seq ASC LIMIT $3"
        ))
        .bind(tenant)
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows(&found, record_from_row)
    }

    async fn audit_for_task(
        &self,
        tenant: &str,
        task_id: i64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let mut tx = self.begin(Some(tenant)).await?;
        let found = sqlx::query(concat!(
            "SELECT ",
            audit_columns!(),
            " FROM audit_records WHERE tenant = $1 AND task_ids <> '' \
             AND $2 = ANY(string_to_array(task_ids, ',')) ORDER BY seq"
        ))
        .bind(tenant)
        .bind(crate::tasks::display_id(task_id))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows(&found, record_from_row)
    }

    async fn audit_tail(&self, tenant: &str, n: i64) -> Result<Vec<AuditRecord>, StoreError> {
        let mut tx = self.begin(Some(tenant)).await?;
        let found = sqlx::query(concat!(
            "SELECT ",
            audit_columns!(),
            " FROM audit_records WHERE tenant = $1 ORDER BY seq DESC LIMIT $2"
        ))
        .bind(tenant)
        .bind(n)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut records = rows(&found, record_from_row)?;
        records.reverse();
        Ok(records)
    }

    async fn budget_usage(
        &self,
        tenant: &str,
        spec_id: &str,
        path: &str,
    ) -> Result<BudgetUsage, StoreError> {
        let mut tx = self.begin(Some(tenant)).await?;
        let row = sqlx::query(
            "SELECT COUNT(*) AS files, COALESCE(SUM(lines), 0)::BIGINT AS lines, \
             COALESCE(BOOL_OR(path = $1), false) AS touched \
             FROM change_budget WHERE tenant = $2 AND spec_id = $3",
        )
        .bind(path)
        .bind(tenant)
        .bind(spec_id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(BudgetUsage {
            files: row.try_get::<i64, _>("files")?.max(0) as u64,
            lines: row.try_get::<i64, _>("lines")?.max(0) as u64,
            path_touched: row.try_get::<bool, _>("touched")?,
        })
    }

    async fn budget_add(
        &self,
        tenant: &str,
        spec_id: &str,
        path: &str,
        lines: u64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin(Some(tenant)).await?;
        sqlx::query(
            "INSERT INTO change_budget (tenant, spec_id, path, lines, writes, updated_at) \
             VALUES ($1, $2, $3, $4, 1, to_char(clock_timestamp() AT TIME ZONE 'UTC', \
             'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')) \
             ON CONFLICT (tenant, spec_id, path) DO UPDATE SET \
             lines = change_budget.lines + excluded.lines, writes = change_budget.writes + 1, \
             updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(spec_id)
        .bind(path)
        .bind(lines.min(i64::MAX as u64) as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn override_create(&self, new: &NewOverride<'_>) -> Result<OverrideRecord, StoreError> {
        let scope =
            serde_json::to_string(new.scope).map_err(|e| StoreError::Database(e.to_string()))?;
        let mut tx = self.begin(Some(new.tenant)).await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO overrides (tenant, agent, session_id, rule_id, reason, scope, \
             requested_minutes, state, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8) \
             RETURNING id",
        )
        .bind(new.tenant)
        .bind(new.agent)
        .bind(new.session_id)
        .bind(new.rule_id)
        .bind(new.reason)
        .bind(&scope)
        .bind(new.requested_minutes.map(|m| m.min(i64::MAX as u64) as i64))
        .bind(new.now)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO override_events (tenant, override_id, at, state, actor, note) \
             VALUES ($1, $2, $3, 'pending', $4, $5)",
        )
        .bind(new.tenant)
        .bind(id)
        .bind(new.now)
        .bind(format!("agent:{}", new.agent))
        .bind(new.reason)
        .execute(&mut *tx)
        .await?;
        let record = Self::override_by_id(&mut tx, id).await?;
        tx.commit().await?;
        record.ok_or_else(|| StoreError::Database(format!("override {id} vanished after insert")))
    }

    async fn override_get(
        &self,
        tenant: Option<&str>,
        id: i64,
    ) -> Result<Option<OverrideRecord>, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let record = Self::override_by_id(&mut tx, id).await?;
        tx.commit().await?;
        Ok(record.filter(|r| tenant.is_none_or(|t| t == r.tenant)))
    }

    async fn override_list(
        &self,
        tenant: Option<&str>,
        state: Option<&str>,
        limit: i64,
    ) -> Result<Vec<OverrideRecord>, StoreError> {
        let mut tx = self.begin(tenant).await?;
        let found = sqlx::query(select_overrides!(
            "WHERE ($1::TEXT IS NULL OR tenant = $1) AND ($2::TEXT IS NULL OR state = $2) \
             ORDER BY id DESC LIMIT $3"
        ))
        .bind(tenant)
        .bind(state)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows(&found, override_from_row)
    }

    async fn override_recent(
        &self,
        tenant: &str,
        agent: &str,
        since: i64,
    ) -> Result<Vec<OverrideRecord>, StoreError> {
        let mut tx = self.begin(Some(tenant)).await?;
        let found = sqlx::query(select_overrides!(
            "WHERE tenant = $1 AND agent = $2 AND (created_at > $3 OR decided_at > $3) ORDER BY id"
        ))
        .bind(tenant)
        .bind(agent)
        .bind(since)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows(&found, override_from_row)
    }

    async fn override_active(
        &self,
        tenant: &str,
        agent: &str,
        now: i64,
    ) -> Result<Vec<OverrideRecord>, StoreError> {
        let mut tx = self.begin(Some(tenant)).await?;
        let found = sqlx::query(select_overrides!(
            "WHERE tenant = $1 AND agent = $2 AND state = 'approved' AND expires_at > $3 ORDER BY id"
        ))
        .bind(tenant)
        .bind(agent)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows(&found, override_from_row)
    }

    async fn override_decide(
        &self,
        d: &OverrideDecision<'_>,
    ) -> Result<Option<OverrideRecord>, StoreError> {
        let mut tx = self.begin(None).await?;
        // The row lock keeps a concurrent decision from deciding it twice.
        let current: Option<(String, String, Option<i64>)> = sqlx::query_as(
            "SELECT tenant, state, expires_at FROM overrides WHERE id = $1 FOR UPDATE",
        )
        .bind(d.id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((tenant, state, expires_at)) = current else {
            return Ok(None);
        };
        let expired = state == "approved" && expires_at.is_some_and(|e| e <= d.now);
        if !d.from.contains(&state.as_str()) || expired {
            return Ok(None);
        }
        if d.to == "approved" {
            sqlx::query(
                "UPDATE overrides SET state = $1, decided_at = $2, decided_by = $3, note = $4, \
                 expires_at = $5 WHERE id = $6",
            )
            .bind(d.to)
            .bind(d.now)
            .bind(d.actor)
            .bind(d.note)
            .bind(d.expires_at)
            .bind(d.id)
            .execute(&mut *tx)
            .await?;
        } else {
            sqlx::query(
                "UPDATE overrides SET state = $1, decided_at = $2, decided_by = $3, \
                 note = COALESCE($4, note) WHERE id = $5",
            )
            .bind(d.to)
            .bind(d.now)
            .bind(d.actor)
            .bind(d.note)
            .bind(d.id)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO override_events (tenant, override_id, at, state, actor, note) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&tenant)
        .bind(d.id)
        .bind(d.now)
        .bind(d.to)
        .bind(d.actor)
        .bind(d.note)
        .execute(&mut *tx)
        .await?;
        let record = Self::override_by_id(&mut tx, d.id).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn token_create(&self, new: &NewToken<'_>) -> Result<TokenRecord, StoreError> {
        let mut tx = self.begin(Some(new.tenant)).await?;
        let row = sqlx::query(concat!(
            "INSERT INTO api_tokens (tenant, agent, role, hash, prefix, created_at, rate_limit) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ",
            token_columns!()
        ))
        .bind(new.tenant)
        .bind(new.agent)
        .bind(new.role.as_str())
        .bind(new.hash)
        .bind(new.prefix)
        .bind(new.now)
        .bind(new.rate_limit)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(token_from_row(&row)?)
    }

    async fn token_list(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let mut tx = self.begin(None).await?;
        let found = sqlx::query(concat!(
            "SELECT ",
            token_columns!(),
            " FROM api_tokens ORDER BY id"
        ))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows(&found, token_from_row)
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        let mut tx = self.transaction().await?;
        sqlx::query("SELECT set_config('app.token_hash', $1, true)")
            .bind(hash)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            token_columns!(),
            " FROM api_tokens WHERE hash = $1"
        ))
        .bind(hash)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row.as_ref().map(token_from_row).transpose()?)
    }

    async fn token_revoke(&self, id: i64, now: i64) -> Result<Option<TokenRecord>, StoreError> {
        let mut tx = self.begin(None).await?;
        let row = sqlx::query(concat!(
            "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 RETURNING ",
            token_columns!()
        ))
        .bind(now)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row.as_ref().map(token_from_row).transpose()?)
    }

    async fn tenant_add(&self, t: &TenantRecord) -> Result<(), StoreError> {
        let mut tx = self.begin(Some(&t.name)).await?;
        sqlx::query(
            "INSERT INTO tenants (name, workspace, policy, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&t.name)
        .bind(&t.workspace)
        .bind(&t.policy)
        .bind(t.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn tenant_list(&self) -> Result<Vec<TenantRecord>, StoreError> {
        let mut tx = self.begin(None).await?;
        let found =
            sqlx::query("SELECT name, workspace, policy, created_at FROM tenants ORDER BY name")
                .fetch_all(&mut *tx)
                .await?;
        tx.commit().await?;
        rows(&found, tenant_from_row)
    }

    async fn tenant_get(&self, name: &str) -> Result<Option<TenantRecord>, StoreError> {
        let mut tx = self.begin(Some(name)).await?;
        let row =
            sqlx::query("SELECT name, workspace, policy, created_at FROM tenants WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(row.as_ref().map(tenant_from_row).transpose()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_to_reach_the_database_count_toward_the_breaker() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(is_connection_error(&sqlx::Error::Io(refused)));
        assert!(is_connection_error(&sqlx::Error::PoolTimedOut));
        assert!(is_connection_error(&sqlx::Error::PoolClosed));
        assert!(!is_connection_error(&sqlx::Error::RowNotFound));
        assert!(!is_connection_error(&sqlx::Error::ColumnNotFound(
            "x".into()
        )));
    }

    #[test]
    fn the_database_is_named_without_its_password() {
        let options =
            PgConnectOptions::from_str("postgres://app:s3cret@127.0.0.1:5433/arbiter").unwrap();
        assert_eq!(describe(&options), "postgres://app@127.0.0.1:5433/arbiter");
    }
}
