//! The embedded store: one SQLite file in WAL mode with `synchronous=NORMAL`.
//! A commit survives a killed process (only power loss can take the newest
//! commits), and it does not cost an fsync per call. It holds the indexed copy
//! of the audit journal; several processes may index the same journal, and the
//! primary key on `(tenant, seq)` keeps one copy of each record.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row};

use super::audit::{AuditRecord, ChainHead};
use super::{BudgetUsage, Store, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

const COLUMNS: &str = "tenant, seq, ts, session_id, client_name, tool, args_sha256, args_redacted, \
                       decision, rule_ids, outcome, detail, duration_us, prev_hash, hash";

impl SqliteStore {
    /// Open (creating if needed) the database file and apply migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        // Processes that open a fresh database at once would race to switch it
        // to WAL and to apply the migrations (SQLite answers "database is
        // locked" to the losers without waiting). One at a time, then.
        let lock_path = path.with_extension("open.lock");
        let _opening = tokio::task::spawn_blocking(move || lock_exclusive(&lock_path))
            .await
            .map_err(|e| StoreError::Database(format!("opening the store: {e}")))??;
        Self::connect(options).await
    }

    /// Open a database by URL (`sqlite://...`).
    pub async fn open_url(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        Self::connect(options).await
    }

    async fn connect(options: SqliteConnectOptions) -> Result<Self, StoreError> {
        // A small page cache: the hot use is appending, which touches few pages.
        let options = options.pragma("cache_size", "-1024");
        // One connection: the audit writer is the only hot user, and SQLite
        // serializes writers anyway. Reads (tail, verify) are rare.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    /// The pool, for tests that need raw SQL (e.g. tampering with a row).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

fn record_from_row(row: &SqliteRow) -> Result<AuditRecord, sqlx::Error> {
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
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn audit_head(&self, tenant: &str) -> Result<Option<ChainHead>, StoreError> {
        let row = sqlx::query(
            "SELECT seq, hash FROM audit_records WHERE tenant = ? ORDER BY seq DESC LIMIT 1",
        )
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(row) => Some(ChainHead {
                seq: row.try_get("seq")?,
                hash: row.try_get("hash")?,
            }),
            None => None,
        })
    }

    async fn audit_index(&self, records: &[AuditRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        // One multi-row INSERT is one statement, so it commits atomically in a
        // single round trip to SQLite's worker thread.
        let mut query =
            QueryBuilder::new(format!("INSERT OR IGNORE INTO audit_records ({COLUMNS}) "));
        query.push_values(records, |mut row, r| {
            row.push_bind(&r.tenant)
                .push_bind(r.seq)
                .push_bind(&r.ts)
                .push_bind(&r.session_id)
                .push_bind(&r.client_name)
                .push_bind(&r.tool)
                .push_bind(&r.args_sha256)
                .push_bind(&r.args_redacted)
                .push_bind(&r.decision)
                .push_bind(&r.rule_ids)
                .push_bind(&r.outcome)
                .push_bind(&r.detail)
                .push_bind(r.duration_us)
                .push_bind(&r.prev_hash)
                .push_bind(&r.hash);
        });
        query.build().execute(&self.pool).await?;
        Ok(())
    }

    async fn audit_page(
        &self,
        tenant: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT tenant, seq, ts, session_id, client_name, tool, args_sha256, args_redacted, \
             decision, rule_ids, outcome, detail, duration_us, prev_hash, hash \
             FROM audit_records WHERE tenant = ? AND seq > ? ORDER BY seq ASC LIMIT ?",
        )
        .bind(tenant)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(record_from_row).collect::<Result<_, _>>()?)
    }

    async fn audit_tail(&self, tenant: &str, n: i64) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT tenant, seq, ts, session_id, client_name, tool, args_sha256, args_redacted, \
             decision, rule_ids, outcome, detail, duration_us, prev_hash, hash \
             FROM audit_records WHERE tenant = ? ORDER BY seq DESC LIMIT ?",
        )
        .bind(tenant)
        .bind(n)
        .fetch_all(&self.pool)
        .await?;
        let mut records: Vec<AuditRecord> =
            rows.iter().map(record_from_row).collect::<Result<_, _>>()?;
        records.reverse();
        Ok(records)
    }

    async fn budget_usage(
        &self,
        tenant: &str,
        spec_id: &str,
        path: &str,
    ) -> Result<BudgetUsage, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS files, COALESCE(SUM(lines), 0) AS lines, \
             COALESCE(MAX(path = ?), 0) AS touched \
             FROM change_budget WHERE tenant = ? AND spec_id = ?",
        )
        .bind(path)
        .bind(tenant)
        .bind(spec_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(BudgetUsage {
            files: row.try_get::<i64, _>("files")?.max(0) as u64,
            lines: row.try_get::<i64, _>("lines")?.max(0) as u64,
            path_touched: row.try_get::<i64, _>("touched")? != 0,
        })
    }

    async fn budget_add(
        &self,
        tenant: &str,
        spec_id: &str,
        path: &str,
        lines: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO change_budget (tenant, spec_id, path, lines, writes, updated_at) \
             VALUES (?, ?, ?, ?, 1, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) \
             ON CONFLICT (tenant, spec_id, path) DO UPDATE SET \
             lines = lines + excluded.lines, writes = writes + 1, updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(spec_id)
        .bind(path)
        .bind(lines as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// Hold an exclusive `flock` on `path` (created if needed) until the file is dropped.
fn lock_exclusive(path: &Path) -> Result<std::fs::File, StoreError> {
    let io = |e: std::io::Error| StoreError::Database(format!("{}: {e}", path.display()));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io)?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| io(e.into()))?;
    Ok(file)
}
