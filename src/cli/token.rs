//! `arbiter token create|list|revoke`: bearer tokens of the HTTP server,
//! kept in the served workspace's store. A token is printed once, when it is
//! made; only its hash is stored.

use std::process::ExitCode;

use clap::Subcommand;

use crate::overrides::{now_unix, rfc3339};
use crate::server::auth::generate_token;
use crate::server::rate::RateLimit;
use crate::store::{ALL_TENANTS, DEFAULT_TENANT, NewToken, Store, TokenRecord, TokenRole};

/// Longest agent name.
const MAX_AGENT_LEN: usize = 128;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token for one agent of one tenant; prints it once on stdout.
    Create {
        /// The tenant it acts for: `default` (the served workspace) or one added
        /// with `arbiter tenant add`.
        #[arg(long, required_unless_present = "all_tenants")]
        tenant: Option<String>,
        /// With --admin: an operator's token over every tenant (the console and
        /// the admin API then take `?tenant=NAME`; without it, `default`).
        #[arg(long, requires = "admin", conflicts_with = "tenant")]
        all_tenants: bool,
        /// The agent name its calls are recorded under (and overrides granted to);
        /// for an admin token, the person's name, recorded with each decision.
        #[arg(long)]
        agent: String,
        /// A token for a person at the admin API (/admin: override decisions of
        /// its tenant), which cannot speak MCP; agent tokens get 403 there.
        #[arg(long)]
        admin: bool,
        /// This token's request limit at the HTTP server: `N/s`, `N/min`, `N/h`,
        /// or `off`. Without it, the server's (`serve --rate-limit`, default 1200/min).
        #[arg(long, value_name = "N/PERIOD")]
        rate_limit: Option<RateLimit>,
    },
    /// List tokens (never the secrets): id, tenant, agent, created, revoked.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: it is refused from the next request on.
    Revoke {
        /// The token's id, as `arbiter token list` shows it.
        id: i64,
    },
}

pub async fn run(setup: &super::Setup, command: TokenCommand) -> anyhow::Result<ExitCode> {
    let root = crate::server::tenants::canonical_workspace(&setup.workspace)?;
    let store = super::open_store(&root).await?;
    match command {
        TokenCommand::Create {
            tenant,
            agent,
            admin,
            all_tenants,
            rate_limit,
        } => {
            let role = if admin {
                TokenRole::Admin
            } else {
                TokenRole::Agent
            };
            // clap makes one of --tenant and --all-tenants present.
            let tenant = tenant
                .filter(|_| !all_tenants)
                .unwrap_or_else(|| ALL_TENANTS.to_string());
            create(store.as_ref(), &tenant, &agent, role, rate_limit).await
        }
        TokenCommand::List { json } => {
            let tokens = store.token_list().await?;
            if json {
                for t in &tokens {
                    println!("{}", serde_json::to_string(t)?);
                }
            } else if tokens.is_empty() {
                println!(
                    "no tokens; make one with `arbiter token create --tenant NAME --agent NAME`"
                );
            } else {
                println!(
                    "{:>4}  {:<16} {:<20} {:<6} {:<12} {:<10} {:<20}  revoked",
                    "id", "tenant", "agent", "role", "token", "limit", "created"
                );
                for t in &tokens {
                    println!("{}", line(t));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Revoke { id } => match store.token_revoke(id, now_unix()).await? {
            Some(t) => {
                println!(
                    "token {} ({} / {}) revoked at {}",
                    t.id,
                    t.tenant,
                    t.agent,
                    rfc3339(t.revoked_at.unwrap_or_default())
                );
                Ok(ExitCode::SUCCESS)
            }
            None => {
                eprintln!("arbiter token revoke: there is no token {id} (`arbiter token list`)");
                Ok(ExitCode::from(1))
            }
        },
    }
}

async fn create(
    store: &dyn Store,
    tenant: &str,
    agent: &str,
    role: TokenRole,
    rate_limit: Option<RateLimit>,
) -> anyhow::Result<ExitCode> {
    let everyone = tenant == ALL_TENANTS && role == TokenRole::Admin;
    if tenant != DEFAULT_TENANT && !everyone && store.tenant_get(tenant).await?.is_none() {
        eprintln!(
            "arbiter token create: there is no tenant `{tenant}`; add it first with \
             `arbiter tenant add {tenant} --tenant-workspace DIR` (or use --tenant default)"
        );
        return Ok(ExitCode::from(2));
    }
    let agent = agent.trim();
    if agent.is_empty() || agent.len() > MAX_AGENT_LEN || agent.chars().any(char::is_control) {
        eprintln!(
            "arbiter token create: the agent name must be 1 to {MAX_AGENT_LEN} characters, without control characters"
        );
        return Ok(ExitCode::from(2));
    }
    let rate_limit = rate_limit.map(|r| r.to_string());
    let secret = generate_token()
        .map_err(|e| anyhow::anyhow!("cannot read random bytes for the token: {e}"))?;
    let record = store
        .token_create(&NewToken {
            tenant,
            agent,
            role,
            hash: &secret.hash,
            prefix: &secret.prefix,
            now: now_unix(),
            rate_limit: rate_limit.as_deref(),
        })
        .await?;
    // The token alone on stdout, for `TOKEN=$(arbiter token create ...)`.
    println!("{}", secret.token);
    let whose = if record.is_operator() {
        "every tenant".to_string()
    } else {
        format!("tenant `{}`", record.tenant)
    };
    eprintln!(
        "{} token {} for {whose}, `{}`: shown only this once, so keep it now. \
         Clients send it as `Authorization: Bearer <token>`; revoke it with `arbiter token revoke {}`.",
        record.role.as_str(),
        record.id,
        record.agent,
        record.id
    );
    Ok(ExitCode::SUCCESS)
}

fn line(t: &TokenRecord) -> String {
    format!(
        "{:>4}  {:<16} {:<20} {:<6} {:<12} {:<10} {:<20}  {}",
        t.id,
        t.tenant,
        t.agent,
        t.role.as_str(),
        format!("{}…", t.prefix),
        t.rate_limit.as_deref().unwrap_or("server's"),
        rfc3339(t.created_at),
        t.revoked_at.map_or_else(|| "-".to_string(), rfc3339)
    )
}
