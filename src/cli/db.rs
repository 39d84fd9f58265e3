//! `arbiter db migrate`: apply the store's migrations explicitly. On
//! PostgreSQL this needs the owner's URL (`--db-owner`, or `--db` when it
//! names the owner); each migration runs in a transaction, so one that fails
//! leaves the database as it was. On SQLite, opening the store applies them.

use std::process::ExitCode;

use clap::Subcommand;

use super::progress::Progress;
use crate::store::{PgStore, SqliteStore};

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Apply every migration not yet applied.
    Migrate,
}

pub async fn run(setup: &super::Setup, command: DbCommand) -> anyhow::Result<ExitCode> {
    match command {
        DbCommand::Migrate => {
            let db = super::Database::get();
            let mut progress: Option<Progress> = None;
            let mut step = |done: usize, total: usize, what: &str| {
                let bar =
                    progress.get_or_insert_with(|| Progress::steps("migrating", total as u64));
                // Lines only for what this run changed.
                if what.ends_with("already applied") {
                    bar.tick(done as u64, what);
                } else {
                    bar.step(done as u64, what);
                }
            };
            let (store, new) = if db.is_postgres() {
                let url = db
                    .owner_url
                    .as_deref()
                    .or(db.url.as_deref())
                    .unwrap_or_default();
                let new = PgStore::migrate_reporting(url, &mut step)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}\n(migrations need the URL of the role that owns the tables: --db-owner or ARBITER_DATABASE_OWNER_URL)"))?;
                ("PostgreSQL", new)
            } else if let Some(url) = &db.url {
                (
                    "SQLite",
                    SqliteStore::open_url_reporting(url, &mut step).await?.1,
                )
            } else {
                let root = std::path::absolute(&setup.workspace)?;
                let path = super::sqlite_path(&root)?;
                (
                    "SQLite",
                    SqliteStore::open_reporting(&path, &mut step).await?.1,
                )
            };
            drop(progress);
            println!("{store}: migrations applied ({new} new)");
            Ok(ExitCode::SUCCESS)
        }
    }
}
