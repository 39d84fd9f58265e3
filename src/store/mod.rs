//! Persistent state behind one interface. SQLite under `<workspace>/.arbiter/`
//! is the embedded default; PostgreSQL (`postgres.rs`) is for several
//! processes sharing one database, with row-level security per tenant.
//! Nothing above this module names a backend.

pub mod audit;
pub mod breaker;
#[cfg(test)]
mod conformance;
pub mod journal;
pub mod postgres;
mod postgres_tasks;
#[cfg(test)]
mod rls_tests;
pub mod sqlite;
mod sqlite_tasks;
pub mod tasks;
#[cfg(test)]
pub(crate) mod testdb;
pub mod tokens;

use std::sync::Arc;

pub use crate::policy::budget::Usage as BudgetUsage;

use async_trait::async_trait;

pub use audit::{AuditEntry, AuditRecord, ChainHead, IndexLine, VerifyReport};
pub use journal::AuditChain;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub use tasks::TaskStore;
pub use tokens::{ALL_TENANTS, NewToken, TenantRecord, TokenRecord, TokenRole};

/// Told after each migration: (done, total, what happened to it).
pub type MigrationStep<'a> = &'a mut (dyn FnMut(usize, usize, &str) + Send);

/// Apply `migrator`'s migrations one at a time on `conn`, telling `step`
/// after each, for `arbiter db migrate`'s progress. Each runs as
/// `Migrator::run` would run it (its own transaction, the migrator's lock);
/// returns how many were new.
pub(crate) async fn migrate_in_steps<C: sqlx::migrate::Migrate>(
    migrator: &sqlx::migrate::Migrator,
    conn: &mut C,
    step: MigrationStep<'_>,
) -> Result<usize, StoreError> {
    conn.ensure_migrations_table(&migrator.table_name).await?;
    let applied: std::collections::HashSet<i64> = conn
        .list_applied_migrations(&migrator.table_name)
        .await?
        .into_iter()
        .map(|m| m.version)
        .collect();
    let ups: Vec<_> = migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .collect();
    let mut new = 0;
    for (i, m) in ups.iter().enumerate() {
        let name = format!("{:04}_{}", m.version, m.description.replace(' ', "_"));
        let said = if applied.contains(&m.version) {
            format!("{name}: already applied")
        } else {
            migrator.run_direct(Some(m.version), conn, false).await?;
            new += 1;
            format!("{name}: applied")
        };
        step(i + 1, ups.len(), &said);
    }
    // The checks `Migrator::run` makes (changed or unknown migrations).
    migrator.run_direct(None, conn, false).await?;
    Ok(new)
}

/// The tenant of an embedded, single-user server.
pub const DEFAULT_TENANT: &str = "default";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(String),
    /// The database could not be reached; the message says since when and
    /// what to do (`breaker.rs`).
    #[error("{0}")]
    Unavailable(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Database(e.to_string())
    }
}

/// Everything the server keeps. The task half is [`TaskStore`] (`store/tasks.rs`).
#[async_trait]
pub trait Store: TaskStore + Send + Sync + std::fmt::Debug {
    /// Whether the store answers now (PostgreSQL: a pooled connection
    /// passes its check, through the circuit breaker). The embedded store
    /// is a file this process has open: it always does.
    async fn reachable(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Whether calls are being refused without trying, the database being
    /// unreachable (PostgreSQL's circuit breaker is open or probing).
    fn breaker_open(&self) -> bool {
        false
    }
    /// The last record of a tenant's chain, if any.
    async fn audit_head(&self, tenant: &str) -> Result<Option<ChainHead>, StoreError>;
    /// Index records committed to the journal. Records already present (same
    /// tenant and seq, indexed by another process) are left as they are.
    async fn audit_index(&self, records: &[AuditRecord]) -> Result<(), StoreError>;
    /// [`Self::audit_index`] for journal lines, each a record's JSON. A store
    /// that keeps records as JSON stores the lines as they are; the others
    /// decode them first (this default).
    async fn audit_index_lines(&self, lines: &[IndexLine<'_>]) -> Result<(), StoreError> {
        let records = lines
            .iter()
            .map(|line| AuditRecord::decode(line.json, &line.tenant, line.seq))
            .collect::<Result<Vec<_>, _>>()?;
        self.audit_index(&records).await
    }
    /// Append one record to a tenant's chain and commit it, as the commit
    /// point itself: for stores shared by several hosts (PostgreSQL), where
    /// no journal file can serialize the appenders. A store that commits
    /// through the journal (SQLite) refuses.
    async fn audit_append(
        &self,
        _tenant: &str,
        _entry: &AuditEntry,
    ) -> Result<AuditRecord, StoreError> {
        Err(StoreError::Database(
            "this store commits audit records through the workspace's journal".into(),
        ))
    }
    /// Count one request of token `token` against a limit shared by every
    /// process on the store: GCRA, one request every `interval`, bursts up
    /// to `tolerance / interval + 1`. `Ok(None)`: the store keeps no shared
    /// counts (each process counts its own); `Ok(Some(ZERO))`: let in;
    /// otherwise how long until a request would be.
    async fn rate_take(
        &self,
        _tenant: &str,
        _token: i64,
        _interval: std::time::Duration,
        _tolerance: std::time::Duration,
    ) -> Result<Option<std::time::Duration>, StoreError> {
        Ok(None)
    }
    /// Records with `seq > after`, oldest first, at most `limit`.
    async fn audit_page(
        &self,
        tenant: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, StoreError>;
    /// The newest `n` records, oldest first.
    async fn audit_tail(&self, tenant: &str, n: i64) -> Result<Vec<AuditRecord>, StoreError>;
    /// The records of calls made under task `task_id` (its `task_ids`), oldest first.
    async fn audit_for_task(
        &self,
        tenant: &str,
        task_id: i64,
    ) -> Result<Vec<AuditRecord>, StoreError>;
    /// What a working spec's work has changed so far, and whether `path` is among it.
    async fn budget_usage(
        &self,
        tenant: &str,
        spec_id: &str,
        path: &str,
    ) -> Result<BudgetUsage, StoreError>;
    /// Count a change of `lines` lines to `path` against a working spec.
    async fn budget_add(
        &self,
        tenant: &str,
        spec_id: &str,
        path: &str,
        lines: u64,
    ) -> Result<(), StoreError>;
    /// Store a new pending request (and its first event); returns it.
    async fn override_create(
        &self,
        new: &NewOverride<'_>,
    ) -> Result<crate::overrides::OverrideRecord, StoreError>;
    /// One request, by id; `tenant` None: any tenant (the operator's CLI).
    async fn override_get(
        &self,
        tenant: Option<&str>,
        id: i64,
    ) -> Result<Option<crate::overrides::OverrideRecord>, StoreError>;
    /// Requests, newest first: of a tenant (or all), with a stored state (or all).
    async fn override_list(
        &self,
        tenant: Option<&str>,
        state: Option<&str>,
        limit: i64,
    ) -> Result<Vec<crate::overrides::OverrideRecord>, StoreError>;
    /// An agent's requests made, or decided, after `since` (for the limits).
    async fn override_recent(
        &self,
        tenant: &str,
        agent: &str,
        since: i64,
    ) -> Result<Vec<crate::overrides::OverrideRecord>, StoreError>;
    /// Approved requests of an agent that have not expired at `now`.
    async fn override_active(
        &self,
        tenant: &str,
        agent: &str,
        now: i64,
    ) -> Result<Vec<crate::overrides::OverrideRecord>, StoreError>;
    /// Change a request's state if it is in one of `decision.from`, with an
    /// event; returns the record after the change, or `None` when the
    /// request was not in such a state (it is left as it was).
    async fn override_decide(
        &self,
        decision: &OverrideDecision<'_>,
    ) -> Result<Option<crate::overrides::OverrideRecord>, StoreError>;
    /// Store a new bearer token (its hash only); returns its record.
    async fn token_create(&self, new: &NewToken<'_>) -> Result<TokenRecord, StoreError>;
    /// Every token, oldest first.
    async fn token_list(&self) -> Result<Vec<TokenRecord>, StoreError>;
    /// The token whose SHA-256 is `hash`, revoked or not.
    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError>;
    /// Revoke a token (a token already revoked keeps its first revocation
    /// time); returns its record, or `None` when there is no such token.
    async fn token_revoke(&self, id: i64, now: i64) -> Result<Option<TokenRecord>, StoreError>;
    /// Register a tenant; a name or workspace already registered is an error.
    async fn tenant_add(&self, tenant: &TenantRecord) -> Result<(), StoreError>;
    /// Every registered tenant, by name.
    async fn tenant_list(&self) -> Result<Vec<TenantRecord>, StoreError>;
    /// One registered tenant.
    async fn tenant_get(&self, name: &str) -> Result<Option<TenantRecord>, StoreError>;
}

/// A new override request, as the agent made it.
#[derive(Debug, Clone)]
pub struct NewOverride<'a> {
    pub tenant: &'a str,
    pub agent: &'a str,
    pub session_id: &'a str,
    pub rule_id: &'a str,
    pub reason: &'a str,
    pub scope: &'a crate::overrides::Scope,
    pub requested_minutes: Option<u64>,
    pub now: i64,
}

/// A person's decision on a request.
#[derive(Debug, Clone)]
pub struct OverrideDecision<'a> {
    pub id: i64,
    /// The states the request must be in for the change to apply.
    pub from: &'a [&'a str],
    pub to: &'a str,
    pub actor: &'a str,
    pub note: Option<&'a str>,
    /// Set on approval.
    pub expires_at: Option<i64>,
    pub now: i64,
}

/// A store opened on first use and shared by everyone who needs it (the
/// audit indexer, the budget keeper), so a server answers `initialize` before
/// the database is open. An open that fails is retried, no more often than
/// every retry interval (in between, callers get the last error at once), so
/// a database that was down at first use does not need a restart.
pub struct LazyStore {
    opener: journal::StoreOpener,
    store: std::sync::OnceLock<Arc<dyn Store>>,
    /// Serializes attempts to open; holds their breaker.
    opening: tokio::sync::Mutex<breaker::Breaker>,
}

impl std::fmt::Debug for LazyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyStore")
            .field("open", &self.store.get().is_some())
            .finish()
    }
}

impl LazyStore {
    pub fn new(opener: journal::StoreOpener) -> Arc<Self> {
        Self::with_retry(opener, breaker::retry_interval())
    }

    /// [`LazyStore::new`] with a given retry interval.
    pub fn with_retry(opener: journal::StoreOpener, retry: std::time::Duration) -> Arc<Self> {
        Arc::new(Self {
            opener,
            store: std::sync::OnceLock::new(),
            opening: tokio::sync::Mutex::new(breaker::Breaker::new(1, retry)),
        })
    }

    /// The store, opening it if it is not open yet.
    pub async fn get(&self) -> Result<Arc<dyn Store>, String> {
        if let Some(store) = self.store.get() {
            return Ok(Arc::clone(store));
        }
        let mut breaker = self.opening.lock().await;
        if let Some(store) = self.store.get() {
            return Ok(Arc::clone(store));
        }
        let now = std::time::Instant::now();
        if let Err(outage) = breaker.admit(now) {
            return Err(not_opened(&outage));
        }
        match (self.opener)().await {
            Ok(store) => {
                breaker.success();
                Ok(Arc::clone(self.store.get_or_init(|| store)))
            }
            Err(e) => {
                tracing::warn!(error = %e, "the store could not be opened; will retry");
                breaker.failure(std::time::Instant::now(), &e.to_string());
                Err(not_opened(&breaker.outage()))
            }
        }
    }
}

fn not_opened(outage: &breaker::Outage) -> String {
    format!(
        "[{}] the store could not be opened (since {}, {} attempt{}): {}; arbiter retries every {}; \
         check `arbiter doctor`",
        breaker::NOT_OPENED,
        outage.since_text(),
        outage.failures,
        if outage.failures == 1 { "" } else { "s" },
        outage.last_error,
        outage.retry_text(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn a_store_that_failed_to_open_is_opened_on_a_later_try() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let tries = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&tries);
        let opener: journal::StoreOpener = Arc::new(move || {
            let path = path.clone();
            let n = counted.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if n == 0 {
                    return Err(StoreError::Database("connection refused".into()));
                }
                Ok(Arc::new(SqliteStore::open(&path).await?) as Arc<dyn Store>)
            })
        });
        let lazy = LazyStore::with_retry(opener, std::time::Duration::from_millis(50));
        let first = lazy.get().await.unwrap_err();
        assert!(
            first.contains("STORE-002") && first.contains("connection refused"),
            "{first}"
        );
        // Within the interval: the same error, without trying again.
        let again = lazy.get().await.unwrap_err();
        assert!(again.contains("connection refused"), "{again}");
        assert_eq!(tries.load(Ordering::SeqCst), 1);
        tokio::time::sleep(std::time::Duration::from_millis(60)).await;
        lazy.get().await.expect("opened on the next try");
        lazy.get().await.unwrap();
        assert_eq!(tries.load(Ordering::SeqCst), 2, "an open store is kept");
    }
}
