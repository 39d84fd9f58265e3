//! Command-line entry: argument parsing and start-up only. Each subcommand
//! opens what it needs and hands over to the modules that own the work.

mod audit;
mod call;
mod db;
mod doctor;
mod init;
mod overrides;
mod policy;
mod progress;
mod serve;
mod tasks;
mod tenant;
mod token;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::exec::WorkspaceRoot;
use crate::policy::Policy;
use crate::store::journal::StoreOpener;
use crate::store::{
    AuditChain, DEFAULT_TENANT, LazyStore, PgStore, SqliteStore, Store, StoreError,
};
use crate::tools::Toolbox;

#[derive(Debug, Parser)]
#[command(
    name = "arbiter",
    version,
    about = "A governed MCP server: confined file tools, policy, hash-chained audit."
)]
struct Cli {
    /// Workspace root: every tool path is confined to it. Default: the current directory.
    #[arg(long, global = true, env = "ARBITER_WORKSPACE", value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// Policy file. Default: <workspace>/.arbiter/policy.yaml if it exists, else the built-in default.
    #[arg(long, global = true, env = "ARBITER_POLICY", value_name = "FILE")]
    policy: Option<PathBuf>,
    /// The database: `postgres://ROLE@HOST/DB` (the application role, which
    /// row-level security confines to one tenant per request) or
    /// `sqlite://FILE`. Default: SQLite under <workspace>/.arbiter/.
    #[arg(
        long,
        global = true,
        env = "ARBITER_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    db: Option<String>,
    /// PostgreSQL URL of the role that owns the tables: `serve` applies the
    /// migrations with it at start, `arbiter db migrate` too, and the
    /// operator's commands (token, tenant, override, task, agents) use it to
    /// see every tenant.
    #[arg(
        long,
        global = true,
        env = "ARBITER_DATABASE_OWNER_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    db_owner: Option<String>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve MCP over stdio (stdout carries the protocol; logs go to stderr),
    /// or over streamable HTTP with --http.
    Serve(serve::ServeArgs),
    /// Run one tool call through the same policy and audit path, without an MCP client.
    /// Prints the result as JSON; exits 0 on success, 1 when the result is an error, 2 on bad usage.
    Call {
        /// Tool name, e.g. file_read.
        tool: String,
        /// Arguments as a JSON object, e.g. '{"target_file":"README.md"}'. Default: {}.
        args: Option<String>,
    },
    /// Check the policy, the store, the command sandbox (by running a command in it)
    /// and the disk; exit 1 with a fix for each failure.
    Doctor,
    /// Check, test and show the policy.
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
    /// Inspect the audit trail.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Put a shipped policy at <workspace>/.arbiter/policy.yaml and print each client's configuration.
    Init {
        #[arg(long, value_enum, default_value_t = init::Profile::Default)]
        profile: init::Profile,
        /// Replace an existing policy.
        #[arg(long)]
        force: bool,
    },
    /// Decide on override requests: list, show, approve, deny, revoke.
    Override {
        #[command(subcommand)]
        command: overrides::OverrideCommand,
    },
    /// Bearer tokens of the HTTP server: create (printed once), list, revoke.
    Token {
        #[command(subcommand)]
        command: token::TokenCommand,
    },
    /// Tenants of the HTTP server, each with its own workspace: add, list.
    Tenant {
        #[command(subcommand)]
        command: tenant::TenantCommand,
    },
    /// The registered agents: capabilities in use, and per task type their
    /// tasks, success rate and mean duration.
    Agents {
        /// One JSON object per agent and line.
        #[arg(long)]
        json: bool,
    },
    /// Inspect tasks.
    Task {
        #[command(subcommand)]
        command: tasks::TaskCommand,
    },
    /// The database: apply migrations.
    Db {
        #[command(subcommand)]
        command: db::DbCommand,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // A server logs its own start-up; one-shot commands only say what went wrong.
    let default_level = match cli.command {
        Command::Serve(_) => "warn,arbiter=info",
        _ => "warn",
    };
    init_logging(cli.log_format, default_level);
    if !matches!(cli.command, Command::Serve(_)) {
        // One-shot commands end quietly when their reader goes away
        // (`arbiter audit tail | head`), like any other command-line tool.
        // SAFETY: restoring the default disposition of one signal, before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    // Two workers: the reader of requests, the calls and the audit indexer
    // overlap (measured: sequential file_read p50 ~70 µs against ~120 µs on
    // one thread, on this 2-core kind of machine). Blocking work (fsync) goes
    // to the blocking pool.
    crate::memory::limit_malloc_arenas();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("arbiter: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let _ = DATABASE.set(Database {
        url: cli.db.clone().filter(|u| !u.is_empty()),
        owner_url: cli.db_owner.clone().filter(|u| !u.is_empty()),
    });
    let workspace = cli.workspace.clone().unwrap_or_else(|| PathBuf::from("."));
    let setup = Setup {
        workspace,
        policy: cli.policy.clone(),
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(&setup, args).await.map(|()| ExitCode::SUCCESS),
            Command::Call { tool, args } => call::run(&setup, &tool, args.as_deref()).await,
            Command::Policy { command } => policy::run(&setup, command).await,
            Command::Doctor => doctor::run(&setup).await,
            Command::Init { profile, force } => init::run(&setup.workspace, profile, force),
            Command::Audit { command } => audit::run(&setup.workspace, command).await,
            Command::Override { command } => overrides::run(&setup, command).await,
            Command::Token { command } => token::run(&setup, command).await,
            Command::Tenant { command } => tenant::run(&setup, command).await,
            Command::Agents { json } => tasks::agents(&setup, json).await,
            Command::Task { command } => tasks::task(&setup, command).await,
            Command::Db { command } => db::run(&setup, command).await,
        }
    });
    // Do not wait for idle blocking threads (e.g. a stdin reader) at exit.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("arbiter: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(format: LogFormat, default_level: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("ARBITER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Where a command runs: the workspace and the policy the operator chose.
pub struct Setup {
    pub workspace: PathBuf,
    pub policy: Option<PathBuf>,
}

impl Setup {
    /// The policy file in force, if any (`--policy`, else the workspace's own).
    pub fn policy_path(&self) -> Option<PathBuf> {
        crate::policy::file::policy_location(self.policy.as_deref(), &self.workspace)
    }

    /// Load the policy; a bad file is an error (the server does not start on it).
    pub fn load_policy(&self) -> anyhow::Result<Policy> {
        let mut policy = match self.policy_path() {
            Some(path) => crate::policy::file::load_policy_file(&path)
                .map_err(|e| anyhow::anyhow!("the policy is refused:\n{e}"))?,
            None => Policy::built_in(),
        };
        policy.protect(&self.protected_paths());
        Ok(policy)
    }

    /// The policy file's path inside the workspace, if it lies there (it is then
    /// write-protected: `POLICY-001`).
    pub fn protected_paths(&self) -> Vec<String> {
        crate::policy::file::inside_workspace(
            &crate::policy::file::watched_policy_path(self.policy.as_deref(), &self.workspace),
            &self.workspace,
        )
        .into_iter()
        .collect()
    }
}

/// The workspace root and its policy, without the audit trail; its store
/// is the operator's (see [`open_store`]).
pub fn open_toolbox(setup: &Setup) -> anyhow::Result<Toolbox> {
    open_toolbox_for(setup, None)
}

/// [`open_toolbox`] for a server's tenant (`Some`): on PostgreSQL its store
/// is the application role's, scoped to that tenant.
fn open_toolbox_for(setup: &Setup, tenant: Option<&str>) -> anyhow::Result<Toolbox> {
    let root = WorkspaceRoot::open(&setup.workspace)
        .with_context(|| format!("cannot open the workspace {}", setup.workspace.display()))?;
    let policy = setup.load_policy()?;
    tracing::info!(
        policy = policy.source(),
        rules = policy.rule_count(),
        "policy loaded"
    );
    let root_path = root.path().to_path_buf();
    let tenant = tenant.map(str::to_string);
    let opener: StoreOpener = Arc::new(move || {
        let root = root_path.clone();
        let tenant = tenant.clone();
        Box::pin(async move {
            match tenant {
                Some(tenant) => open_tenant_store(&root, &tenant).await,
                None => open_store(&root).await,
            }
        })
    });
    Ok(Toolbox::new(root, policy, LazyStore::new(opener)))
}

/// Path of the server's state directory, created (private) if missing.
pub fn state_dir(root: &Path) -> anyhow::Result<PathBuf> {
    let dir = root.join(crate::exec::workspace::STATE_DIR);
    if !dir.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&dir)
            .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
        // Keep the database and logs out of the user's commits.
        let _ = std::fs::write(dir.join(".gitignore"), "*\n");
    }
    Ok(dir)
}

/// The database the operator chose (`--db`, `--db-owner`), set once at start.
static DATABASE: OnceLock<Database> = OnceLock::new();

#[derive(Debug, Default)]
struct Database {
    url: Option<String>,
    owner_url: Option<String>,
}

impl Database {
    fn get() -> &'static Database {
        DATABASE.get_or_init(Database::default)
    }

    fn is_postgres(&self) -> bool {
        self.url.as_deref().is_some_and(PgStore::is_url)
            || self.owner_url.as_deref().is_some_and(PgStore::is_url)
    }
}

/// One pool per process and role, shared by every tenant's handle.
static APP_POOL: tokio::sync::OnceCell<PgStore> = tokio::sync::OnceCell::const_new();
static OWNER_POOL: tokio::sync::OnceCell<PgStore> = tokio::sync::OnceCell::const_new();

/// The server's pool: migrations first (with the owner's URL, if given),
/// then the application role, refused if row security would not hold for it.
async fn app_pool() -> Result<PgStore, StoreError> {
    let db = Database::get();
    // Kept once made; an attempt that fails is tried again by the next caller
    // (LazyStore spaces them out), so a database down at start needs no restart.
    APP_POOL
        .get_or_try_init(|| async {
            let url = db.url.as_deref().filter(|u| PgStore::is_url(u)).ok_or(
                "the server needs --db postgres://… (ARBITER_DATABASE_URL): the application role; \
                 the owner's URL is only for migrations and the operator's commands",
            )?;
            if let Some(owner) = &db.owner_url {
                PgStore::migrate(owner)
                    .await
                    .map_err(|e| format!("applying the PostgreSQL migrations (owner URL): {e}"))?;
            }
            let store = PgStore::connect(url).await.map_err(message)?;
            store.check_application_role().await.map_err(message)?;
            Ok::<_, String>(store)
        })
        .await
        .cloned()
        .map_err(StoreError::Database)
}

fn message(e: StoreError) -> String {
    match e {
        StoreError::Database(m) | StoreError::Unavailable(m) => m,
    }
}

/// The operator's pool: the owner's URL if given (every tenant; migrated
/// first), else `--db`.
async fn owner_pool() -> Result<PgStore, StoreError> {
    let db = Database::get();
    OWNER_POOL
        .get_or_try_init(|| async {
            let url = db
                .owner_url
                .as_deref()
                .or(db.url.as_deref())
                .ok_or("no PostgreSQL URL")?;
            // With the owner's URL, the operator's commands migrate first, as
            // the server does: `tenant add` on a fresh database just works.
            if let Some(owner) = &db.owner_url {
                PgStore::migrate(owner)
                    .await
                    .map_err(|e| format!("applying the PostgreSQL migrations (owner URL): {e}"))?;
            }
            PgStore::connect(url).await.map_err(message)
        })
        .await
        .cloned()
        .map_err(StoreError::Database)
}

/// Whether the operator chose PostgreSQL (`--db` / `--db-owner`).
pub fn uses_postgres() -> bool {
    Database::get().is_postgres()
}

/// Which store [`open_store`] opens, for people: a PostgreSQL URL without
/// its password, or the SQLite file.
pub fn store_description(root: &Path) -> String {
    let db = Database::get();
    match (&db.url, &db.owner_url) {
        (Some(url), _) | (None, Some(url)) if PgStore::is_url(url) => {
            format!("PostgreSQL at {}", without_password(url))
        }
        (Some(url), _) => format!("SQLite at {url}"),
        _ => format!("SQLite under {}/.arbiter", root.display()),
    }
}

/// `postgres://user:secret@host/db` -> `postgres://user@host/db`.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}@{host}")
        }
        None => url.to_string(),
    }
}

/// The operator's store: SQLite under the workspace, or PostgreSQL (see [`owner_pool`]).
pub async fn open_store(root: &Path) -> Result<Arc<dyn Store>, StoreError> {
    let db = Database::get();
    if db.is_postgres() {
        return Ok(Arc::new(owner_pool().await?));
    }
    if let Some(url) = &db.url {
        return Ok(Arc::new(SqliteStore::open_url(url).await?));
    }
    let store = SqliteStore::open(&sqlite_path(root)?).await?;
    Ok(Arc::new(store))
}

/// The embedded store's file: `<workspace>/.arbiter/arbiter.db`.
pub fn sqlite_path(root: &Path) -> Result<PathBuf, StoreError> {
    let dir = state_dir(root).map_err(|e| StoreError::Database(format!("{e:#}")))?;
    Ok(dir.join("arbiter.db"))
}

/// A server tenant's store: on PostgreSQL the application role's pool,
/// scoped to the tenant; on SQLite the workspace's own file.
async fn open_tenant_store(root: &Path, tenant: &str) -> Result<Arc<dyn Store>, StoreError> {
    if Database::get().is_postgres() {
        return Ok(Arc::new(app_pool().await?.for_tenant(tenant)));
    }
    open_store(root).await
}

/// Everything a server needs for one workspace: the toolbox and the audit writer.
pub fn open_workspace(setup: &Setup) -> anyhow::Result<(Arc<Toolbox>, AuditChain)> {
    open_workspace_as(setup, DEFAULT_TENANT)
}

/// [`open_workspace`] for one tenant: its audit records carry its name and
/// go to its own journal in the workspace.
pub fn open_workspace_as(
    setup: &Setup,
    tenant: &str,
) -> anyhow::Result<(Arc<Toolbox>, AuditChain)> {
    let toolbox = Arc::new(open_toolbox_for(setup, Some(tenant))?);
    let root_path = toolbox.root.path().to_path_buf();
    state_dir(&root_path)?;
    let audit = open_chain(&root_path, tenant, toolbox.store.clone())?;
    Ok((toolbox, audit))
}

/// A tenant's audit chain: committed by PostgreSQL itself when that is the
/// store (several hosts share it), else by the workspace's journal.
pub fn open_chain(root: &Path, tenant: &str, store: Arc<LazyStore>) -> anyhow::Result<AuditChain> {
    let journal = tenant_journal_path(root, tenant);
    if uses_postgres() {
        return Ok(AuditChain::in_store(tenant.to_string(), &journal, store));
    }
    AuditChain::open(tenant.to_string(), &journal, store)
        .with_context(|| format!("cannot open the audit journal {}", journal.display()))
}

/// The audit journal of a workspace (see `store::journal`).
pub fn journal_path(root: &Path) -> PathBuf {
    tenant_journal_path(root, DEFAULT_TENANT)
}

/// The audit journal of one tenant in a workspace.
pub fn tenant_journal_path(root: &Path, tenant: &str) -> PathBuf {
    root.join(crate::exec::workspace::STATE_DIR)
        .join(crate::server::tenants::journal_file_name(tenant))
}
