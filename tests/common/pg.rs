//! PostgreSQL for the tests that drive the binary on it: a fresh database
//! on the local test cluster (`tools/pg/setup.sh`). Without PostgreSQL
//! those tests are skipped, except under CI (`CI=true`), where they fail.

use std::collections::HashMap;

use arbiter::store::PgStore;

use super::unique;

/// A database of its own on the local test cluster: the application role's
/// URL (the server's `--db`) and the owner's (`--db-owner`).
pub struct Database {
    pub app_url: String,
    pub owner_url: String,
}

impl Database {
    /// `--db` and `--db-owner` for a process on this database.
    pub fn args(&self) -> [&str; 4] {
        ["--db", &self.app_url, "--db-owner", &self.owner_url]
    }
}

/// A fresh database on the local test cluster; `None` when there is none.
pub async fn database() -> Option<Database> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/pg/setup.sh");
    let out = std::process::Command::new(script)
        .stderr(std::process::Stdio::inherit())
        .output();
    let vars: HashMap<String, String> = match out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        _ => HashMap::new(),
    };
    let (Some(app), Some(owner)) = (
        vars.get("ARBITER_DATABASE_URL"),
        vars.get("ARBITER_DATABASE_OWNER_URL"),
    ) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "PostgreSQL tests must not be skipped under CI"
        );
        eprintln!("PostgreSQL not available: skipped");
        return None;
    };
    // The time in the name lets tools/pg/setup.sh drop old ones.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let name = format!("arbiter_it_{secs}_{}", unique());
    let admin = PgStore::connect(owner).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(admin.pool())
        .await
        .unwrap();
    let swap = |url: &str| format!("{}/{name}", url.rsplit_once('/').unwrap().0);
    Some(Database {
        app_url: swap(app),
        owner_url: swap(owner),
    })
}
