//! `arbiter db migrate`: apply the store's migrations explicitly. On
//! PostgreSQL this needs the owner's URL (`--db-owner`, or `--db` when it
//! names the owner); each migration runs in a transaction, so one that fails
//! leaves the database as it was. On SQLite, opening the store applies them.

use std::process::ExitCode;

use clap::Subcommand;

use crate::store::PgStore;

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Apply every migration not yet applied.
    Migrate,
}

pub async fn run(setup: &super::Setup, command: DbCommand) -> anyhow::Result<ExitCode> {
    match command {
        DbCommand::Migrate => {
            let db = super::Database::get();
            if db.is_postgres() {
                let url = db
                    .owner_url
                    .as_deref()
                    .or(db.url.as_deref())
                    .unwrap_or_default();
                PgStore::migrate(url)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}\n(migrations need the URL of the role that owns the tables: --db-owner or ARBITER_DATABASE_OWNER_URL)"))?;
                println!("PostgreSQL: migrations applied");
            } else {
                let root = std::path::absolute(&setup.workspace)?;
                super::open_store(&root).await?;
                println!("SQLite: migrations applied");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
