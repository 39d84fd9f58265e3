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

use super::audit::{AuditRecord, ChainHead, IndexLine};
use super::tokens::TokenRole;
use super::tokens::{NewToken, TenantRecord, TokenRecord};
use super::{BudgetUsage, NewOverride, OverrideDecision, Store, StoreError};
use crate::overrides::{OverrideRecord, Scope};

/// `SELECT <every override column> FROM overrides ` followed by the rest.
macro_rules! select_overrides {
    ($rest:literal) => {
        concat!(
            "SELECT id, tenant, agent, session_id, rule_id, reason, scope, requested_minutes, \
             state, created_at, decided_at, decided_by, note, expires_at FROM overrides ",
            $rest
        )
    };
}

/// The columns [`token_from_row`] reads (never the hash).
macro_rules! token_columns {
    () => {
        "id, tenant, agent, role, prefix, created_at, revoked_at, rate_limit"
    };
}
/// Decode every row with `from_row`.
pub(super) fn rows<T>(
    rows: &[SqliteRow],
    from_row: fn(&SqliteRow) -> Result<T, sqlx::Error>,
) -> Result<Vec<T>, StoreError> {
    Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
}

fn override_from_row(row: &SqliteRow) -> Result<OverrideRecord, sqlx::Error> {
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

pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Open (creating if needed) the database file and apply migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self::open_file(path, None).await?.0)
    }

    /// [`SqliteStore::open`], applying the migrations one at a time and
    /// telling `step` after each; also returns how many were new.
    pub async fn open_reporting(
        path: &Path,
        step: super::MigrationStep<'_>,
    ) -> Result<(Self, usize), StoreError> {
        Self::open_file(path, Some(step)).await
    }

    async fn open_file(
        path: &Path,
        step: Option<super::MigrationStep<'_>>,
    ) -> Result<(Self, usize), StoreError> {
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
        Self::connect(options, step).await
    }

    /// Open a database by URL (`sqlite://...`).
    pub async fn open_url(url: &str) -> Result<Self, StoreError> {
        Ok(Self::open_by_url(url, None).await?.0)
    }

    /// [`SqliteStore::open_url`], with the migrations' progress as in [`SqliteStore::open_reporting`].
    pub async fn open_url_reporting(
        url: &str,
        step: super::MigrationStep<'_>,
    ) -> Result<(Self, usize), StoreError> {
        Self::open_by_url(url, Some(step)).await
    }

    async fn open_by_url(
        url: &str,
        step: Option<super::MigrationStep<'_>>,
    ) -> Result<(Self, usize), StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        Self::connect(options, step).await
    }

    /// Connect and migrate: one migration at a time when someone follows
    /// the steps (`db migrate`), else in one go as every start does (then
    /// the count is 0: not counted).
    async fn connect(
        options: SqliteConnectOptions,
        step: Option<super::MigrationStep<'_>>,
    ) -> Result<(Self, usize), StoreError> {
        // A small page cache (128 KiB): the hot use is appending, which
        // touches few pages. 1 MiB filled up within 10,000 calls and stayed
        // resident, at no measurable gain in the indexer's time.
        let options = options.pragma("cache_size", "-128");
        // One connection: the audit writer is the only hot user, and SQLite
        // serializes writers anyway. Reads (tail, verify) are rare.
        // No ping before each use: a file cannot drop the connection, and
        // the ping was a round trip to the connection's thread per query.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        let new = match step {
            Some(step) => {
                let mut conn = pool.acquire().await?;
                super::migrate_in_steps(&MIGRATOR, &mut *conn, step).await?
            }
            None => {
                MIGRATOR.run(&pool).await?;
                0
            }
        };
        Ok((Self { pool }, new))
    }

    /// The pool, for tests that need raw SQL (e.g. tampering with a row).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// A record from its row (`tenant, seq, record`): its JSON decoded. A row
/// whose JSON does not decode, or whose key disagrees with it, is named.
fn record_from_row(row: &SqliteRow) -> Result<AuditRecord, StoreError> {
    let tenant: String = row.try_get("tenant")?;
    let seq: i64 = row.try_get("seq")?;
    AuditRecord::decode(row.try_get("record")?, &tenant, seq)
}

/// Rows per INSERT when the audit index is written (see `audit_index`).
const INDEX_SHAPES: [usize; 4] = [128, 32, 8, 1];

#[async_trait]
impl Store for SqliteStore {
    async fn audit_head(&self, tenant: &str) -> Result<Option<ChainHead>, StoreError> {
        let row = sqlx::query(
            "SELECT seq, json_extract(record, '$.hash') AS hash FROM audit_records \
             WHERE tenant = ? ORDER BY seq DESC LIMIT 1",
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
        let json = records
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Database(e.to_string()))?;
        let lines: Vec<IndexLine<'_>> = records
            .iter()
            .zip(&json)
            .map(|(r, json)| IndexLine {
                tenant: r.tenant.as_str().into(),
                seq: r.seq,
                task_ids: r.task_ids.as_str().into(),
                json,
            })
            .collect();
        self.audit_index_lines(&lines).await
    }

    async fn audit_index_lines(&self, lines: &[IndexLine<'_>]) -> Result<(), StoreError> {
        if lines.is_empty() {
            return Ok(());
        }
        // Multi-row INSERTs of a few fixed shapes: each shape is parsed once and
        // kept in the connection's statement cache (a statement for every batch
        // size was parsed anew each time, or, cached, grew the server by ~250
        // bytes a call). One transaction, one commit. Each record is stored as
        // its JSON text (migration 0015).
        let mut tx = self.pool.begin().await?;
        let mut rest = lines;
        while !rest.is_empty() {
            let rows = INDEX_SHAPES
                .into_iter()
                .find(|&n| n <= rest.len())
                .unwrap_or(1);
            let (chunk, tail) = rest.split_at(rows);
            let mut query =
                QueryBuilder::new("INSERT OR IGNORE INTO audit_records (tenant, seq, record) ");
            query.push_values(chunk, |mut row, line| {
                row.push_bind(line.tenant.to_string())
                    .push_bind(line.seq)
                    .push_bind(line.json.to_string());
            });
            query.build().execute(&mut *tx).await?;
            rest = tail;
        }
        tx.commit().await?;
        // Each record made under a task is linked to it, for the task's provenance.
        let links: Vec<(&IndexLine<'_>, i64)> = lines
            .iter()
            .flat_map(|line| {
                line.task_ids
                    .split(',')
                    .filter_map(crate::tasks::parse_id)
                    .map(move |id| (line, id))
            })
            .collect();
        if !links.is_empty() {
            let mut query =
                QueryBuilder::new("INSERT OR IGNORE INTO audit_task_links (task_id, tenant, seq) ");
            query.push_values(links, |mut row, (line, id)| {
                row.push_bind(id)
                    .push_bind(line.tenant.to_string())
                    .push_bind(line.seq);
            });
            query.build().persistent(false).execute(&self.pool).await?;
        }
        Ok(())
    }

    async fn audit_for_task(
        &self,
        tenant: &str,
        task_id: i64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT a.tenant, a.seq, a.record \
             FROM audit_task_links l JOIN audit_records a ON a.tenant = l.tenant AND a.seq = l.seq \
             WHERE l.task_id = ? AND l.tenant = ? ORDER BY a.seq",
        )
        .bind(task_id)
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(record_from_row).collect::<Result<_, _>>()?)
    }

    async fn audit_page(
        &self,
        tenant: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT tenant, seq, record FROM audit_records WHERE tenant = ? AND seq > ? ORDER BY seq ASC LIMIT ?",
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
            "SELECT tenant, seq, record FROM audit_records WHERE tenant = ? ORDER BY seq DESC LIMIT ?",
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

    async fn override_create(&self, new: &NewOverride<'_>) -> Result<OverrideRecord, StoreError> {
        let scope =
            serde_json::to_string(new.scope).map_err(|e| StoreError::Database(e.to_string()))?;
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO overrides (tenant, agent, session_id, rule_id, reason, scope, \
             requested_minutes, state, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?) \
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
            "INSERT INTO override_events (override_id, at, state, actor, note) VALUES (?, ?, 'pending', ?, ?)",
        )
        .bind(id)
        .bind(new.now)
        .bind(format!("agent:{}", new.agent))
        .bind(new.reason)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.override_by_id(id)
            .await?
            .ok_or_else(|| StoreError::Database(format!("override {id} vanished after insert")))
    }

    async fn override_get(
        &self,
        tenant: Option<&str>,
        id: i64,
    ) -> Result<Option<OverrideRecord>, StoreError> {
        Ok(self
            .override_by_id(id)
            .await?
            .filter(|r| tenant.is_none_or(|t| t == r.tenant)))
    }

    async fn override_list(
        &self,
        tenant: Option<&str>,
        state: Option<&str>,
        limit: i64,
    ) -> Result<Vec<OverrideRecord>, StoreError> {
        let found = sqlx::query(select_overrides!(
            "\
             WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR state = ?2) \
             ORDER BY id DESC LIMIT ?3"
        ))
        .bind(tenant)
        .bind(state)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows(&found, override_from_row)
    }

    async fn override_recent(
        &self,
        tenant: &str,
        agent: &str,
        since: i64,
    ) -> Result<Vec<OverrideRecord>, StoreError> {
        let found = sqlx::query(select_overrides!(
            "WHERE tenant = ? AND agent = ? \
             AND (created_at > ?3 OR decided_at > ?3) ORDER BY id"
        ))
        .bind(tenant)
        .bind(agent)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows(&found, override_from_row)
    }

    async fn override_active(
        &self,
        tenant: &str,
        agent: &str,
        now: i64,
    ) -> Result<Vec<OverrideRecord>, StoreError> {
        let found = sqlx::query(select_overrides!(
            "WHERE tenant = ? AND agent = ? \
             AND state = 'approved' AND expires_at > ? ORDER BY id"
        ))
        .bind(tenant)
        .bind(agent)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows(&found, override_from_row)
    }

    async fn override_decide(
        &self,
        d: &OverrideDecision<'_>,
    ) -> Result<Option<OverrideRecord>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let current: Option<(String, Option<i64>)> =
            sqlx::query_as("SELECT state, expires_at FROM overrides WHERE id = ?")
                .bind(d.id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((state, expires_at)) = current else {
            return Ok(None);
        };
        // An approval past its end is expired: it can no longer be revoked.
        let expired = state == "approved" && expires_at.is_some_and(|e| e <= d.now);
        if !d.from.contains(&state.as_str()) || expired {
            return Ok(None);
        }
        if d.to == "approved" {
            sqlx::query(
                "UPDATE overrides SET state = ?, decided_at = ?, decided_by = ?, note = ?, expires_at = ? WHERE id = ?",
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
                "UPDATE overrides SET state = ?, decided_at = ?, decided_by = ?, note = COALESCE(?, note) WHERE id = ?",
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
            "INSERT INTO override_events (override_id, at, state, actor, note) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(d.id)
        .bind(d.now)
        .bind(d.to)
        .bind(d.actor)
        .bind(d.note)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.override_by_id(d.id).await
    }

    async fn token_create(&self, new: &NewToken<'_>) -> Result<TokenRecord, StoreError> {
        let row = sqlx::query(concat!(
            "INSERT INTO api_tokens (tenant, agent, role, hash, prefix, created_at, rate_limit) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING ",
            token_columns!()
        ))
        .bind(new.tenant)
        .bind(new.agent)
        .bind(new.role.as_str())
        .bind(new.hash)
        .bind(new.prefix)
        .bind(new.now)
        .bind(new.rate_limit)
        .fetch_one(&self.pool)
        .await?;
        Ok(token_from_row(&row)?)
    }

    async fn token_list(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            token_columns!(),
            " FROM api_tokens ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(token_from_row).collect::<Result<_, _>>()?)
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            token_columns!(),
            " FROM api_tokens WHERE hash = ?"
        ))
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(token_from_row).transpose()?)
    }

    async fn token_revoke(&self, id: i64, now: i64) -> Result<Option<TokenRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? RETURNING ",
            token_columns!()
        ))
        .bind(now)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(token_from_row).transpose()?)
    }

    async fn tenant_add(&self, t: &TenantRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO tenants (name, workspace, policy, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(&t.name)
        .bind(&t.workspace)
        .bind(&t.policy)
        .bind(t.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn tenant_list(&self) -> Result<Vec<TenantRecord>, StoreError> {
        let rows =
            sqlx::query("SELECT name, workspace, policy, created_at FROM tenants ORDER BY name")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.iter().map(tenant_from_row).collect::<Result<_, _>>()?)
    }

    async fn tenant_get(&self, name: &str) -> Result<Option<TenantRecord>, StoreError> {
        let row =
            sqlx::query("SELECT name, workspace, policy, created_at FROM tenants WHERE name = ?")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.as_ref().map(tenant_from_row).transpose()?)
    }
}

fn token_from_row(row: &SqliteRow) -> Result<TokenRecord, sqlx::Error> {
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

fn tenant_from_row(row: &SqliteRow) -> Result<TenantRecord, sqlx::Error> {
    Ok(TenantRecord {
        name: row.try_get("name")?,
        workspace: row.try_get("workspace")?,
        policy: row.try_get("policy")?,
        created_at: row.try_get("created_at")?,
    })
}

impl SqliteStore {
    async fn override_by_id(&self, id: i64) -> Result<Option<OverrideRecord>, StoreError> {
        let row = sqlx::query(select_overrides!("WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(override_from_row).transpose()?)
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

#[cfg(test)]
mod tests {
    use sqlx::Connection;

    use super::*;
    use crate::store::audit::{AuditEntry, GENESIS_HASH};

    /// A database from before migration 0015 (a column per field) keeps
    /// every record, and each still verifies, once migrated.
    #[tokio::test]
    async fn records_kept_in_columns_survive_the_move_to_json() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let mut conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .unwrap();
        MIGRATOR
            .run_direct(Some(14), &mut conn, false)
            .await
            .unwrap();
        let records = AuditRecord::sample_chain(3, |seq| AuditEntry {
            detail: format!("line\n\"{seq}\""),
            waiver_ids: if seq == 2 {
                "W-1".into()
            } else {
                String::new()
            },
            task_ids: if seq == 3 {
                "T-9".into()
            } else {
                String::new()
            },
            ..AuditEntry::sample(seq)
        });
        let mut insert = QueryBuilder::new(
            "INSERT INTO audit_records (tenant, seq, ts, session_id, client_name, tool, \
             args_sha256, args_redacted, decision, rule_ids, outcome, detail, duration_us, \
             waiver_ids, task_ids, prev_hash, hash) ",
        );
        crate::store::audit::push_audit_values(&mut insert, &records);
        insert.build().execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();

        let store = SqliteStore::open(&path).await.unwrap();
        let kept = store.audit_page("default", 0, 10).await.unwrap();
        assert_eq!(kept, records);
        for r in &kept {
            assert_eq!(r.compute_hash(), r.hash, "seq {}", r.seq);
        }
        // The fields can still be queried by name.
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT detail, waiver_ids, task_ids FROM audit_record_fields ORDER BY seq",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        let expected: Vec<_> = records
            .iter()
            .map(|r| (r.detail.clone(), r.waiver_ids.clone(), r.task_ids.clone()))
            .collect();
        assert_eq!(rows, expected);
    }

    /// A row whose JSON was damaged is named, not passed over.
    #[tokio::test]
    async fn a_record_that_does_not_decode_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("a.db")).await.unwrap();
        let record = AuditRecord::from_entry("default", 1, GENESIS_HASH, &AuditEntry::sample(1));
        store.audit_index(&[record]).await.unwrap();
        sqlx::query("UPDATE audit_records SET record = '{\"tenant\": 1}' WHERE seq = 1")
            .execute(store.pool())
            .await
            .unwrap();
        let e = store.audit_page("default", 0, 10).await.unwrap_err();
        assert!(e.to_string().contains("audit record 1 of `default`"), "{e}");
    }
}
