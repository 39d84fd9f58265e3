//! Persistent state behind one interface. SQLite under `<workspace>/.arbiter/`
//! is the embedded default; the [`Store`] trait is what a PostgreSQL
//! implementation will provide too, so nothing above this module names a backend.

pub mod audit;
pub mod journal;
pub mod sqlite;

use async_trait::async_trait;

pub use audit::{AuditEntry, AuditRecord, ChainHead, VerifyReport};
pub use journal::AuditChain;
pub use sqlite::SqliteStore;

/// The tenant of an embedded, single-user server.
pub const DEFAULT_TENANT: &str = "default";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(String),
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

#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// The last record of a tenant's chain, if any.
    async fn audit_head(&self, tenant: &str) -> Result<Option<ChainHead>, StoreError>;
    /// Index records committed to the journal. Records already present (same
    /// tenant and seq, indexed by another process) are left as they are.
    async fn audit_index(&self, records: &[AuditRecord]) -> Result<(), StoreError>;
    /// Records with `seq > after`, oldest first, at most `limit`.
    async fn audit_page(
        &self,
        tenant: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, StoreError>;
    /// The newest `n` records, oldest first.
    async fn audit_tail(&self, tenant: &str, n: i64) -> Result<Vec<AuditRecord>, StoreError>;
}
