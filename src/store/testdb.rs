//! Databases for the store's tests: a scratch SQLite file, or a fresh
//! PostgreSQL database on the local test cluster. The cluster is found or
//! started by `tools/pg/setup.sh` (idempotent, behind a lock file, so test
//! binaries running at once share one cluster); each test gets a database of
//! its own, migrated by the owner role, and talks to it as the application
//! role (databases older than an hour are dropped by the script). Without PostgreSQL the PostgreSQL half of a test is skipped with a
//! note on stderr — except under CI (`CI=true`), where it fails.

use std::collections::HashMap;
use std::sync::Arc;

use super::{PgStore, SqliteStore, Store};

/// The cluster's URLs (for the `arbiter` database), from the set-up script.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub app_url: String,
    pub owner_url: String,
}

static CLUSTER: tokio::sync::OnceCell<Option<Cluster>> = tokio::sync::OnceCell::const_new();

/// The local test cluster, started if needed; `None` when PostgreSQL is not
/// available here (panics under CI, where it must be).
pub async fn cluster() -> Option<Cluster> {
    CLUSTER
        .get_or_init(|| async {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/pg/setup.sh");
            let out = tokio::process::Command::new(script)
                .stderr(std::process::Stdio::inherit())
                .output()
                .await;
            let found = match out {
                Ok(out) if out.status.success() => {
                    let text = String::from_utf8_lossy(&out.stdout);
                    let vars: HashMap<&str, &str> =
                        text.lines().filter_map(|l| l.split_once('=')).collect();
                    match (
                        vars.get("ARBITER_DATABASE_URL"),
                        vars.get("ARBITER_DATABASE_OWNER_URL"),
                    ) {
                        (Some(app), Some(owner)) => Some(Cluster {
                            app_url: app.to_string(),
                            owner_url: owner.to_string(),
                        }),
                        _ => None,
                    }
                }
                Ok(out) => {
                    eprintln!("tools/pg/setup.sh failed: {}", out.status);
                    None
                }
                Err(e) => {
                    eprintln!("tools/pg/setup.sh could not run: {e}");
                    None
                }
            };
            if found.is_none() {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "PostgreSQL tests must not be skipped under CI: tools/pg/setup.sh failed"
                );
                eprintln!("PostgreSQL not available: its half of the store tests is skipped");
            }
            found
        })
        .await
        .clone()
}

/// `url` with its database name replaced.
fn with_database(url: &str, name: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("a database URL");
    format!("{base}/{name}")
}

/// One backend under test, with a database of its own.
pub enum TestDb {
    Sqlite(tempfile::TempDir),
    Postgres { app_url: String, owner_url: String },
}

impl TestDb {
    pub fn sqlite() -> Self {
        TestDb::Sqlite(tempfile::tempdir().unwrap())
    }

    /// A fresh, migrated PostgreSQL database; `None` when there is no cluster.
    pub async fn postgres() -> Option<Self> {
        let cluster = cluster().await?;
        // The time in the name lets tools/pg/setup.sh drop old ones.
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let name = format!("arbiter_t_{secs}_{}", uuid::Uuid::new_v4().simple());
        let admin = PgStore::connect(&cluster.owner_url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(admin.pool())
            .await
            .unwrap();
        admin.pool().close().await;
        let owner_url = with_database(&cluster.owner_url, &name);
        PgStore::migrate(&owner_url).await.unwrap();
        Some(TestDb::Postgres {
            app_url: with_database(&cluster.app_url, &name),
            owner_url,
        })
    }

    /// Both backends (PostgreSQL when available).
    pub async fn all() -> Vec<Self> {
        let mut dbs = vec![Self::sqlite()];
        dbs.extend(Self::postgres().await);
        dbs
    }

    pub fn name(&self) -> &'static str {
        match self {
            TestDb::Sqlite(_) => "sqlite",
            TestDb::Postgres { .. } => "postgres",
        }
    }

    /// A new handle (its own connections) as the server has it: on
    /// PostgreSQL the application role, scoped to tenant `default`.
    pub async fn store(&self) -> Arc<dyn Store> {
        match self {
            TestDb::Sqlite(dir) => Arc::new(
                SqliteStore::open(&dir.path().join("arbiter.db"))
                    .await
                    .unwrap(),
            ),
            TestDb::Postgres { app_url, .. } => {
                let store = PgStore::connect(app_url).await.unwrap();
                store.check_application_role().await.unwrap();
                Arc::new(store.for_tenant(super::DEFAULT_TENANT))
            }
        }
    }

    /// The operator's handle: on PostgreSQL the owner role, every tenant.
    pub async fn operator(&self) -> Arc<dyn Store> {
        match self {
            TestDb::Sqlite(_) => self.store().await,
            TestDb::Postgres { owner_url, .. } => {
                Arc::new(PgStore::connect(owner_url).await.unwrap())
            }
        }
    }
}
