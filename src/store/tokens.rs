//! Rows of the HTTP server's access tables: bearer tokens (kept as hashes
//! only) and registered tenants. The server reads them from the served
//! workspace's store; the `arbiter token` and `arbiter tenant` commands write them.

use serde::Serialize;

use super::DEFAULT_TENANT;

/// The tenant of an operator's admin token (`token create --admin
/// --all-tenants`): it administers every tenant. Not a valid tenant name, so
/// no tenant can be called this.
pub const ALL_TENANTS: &str = "*";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenRole {
    /// Speaks MCP at `/mcp` as its agent.
    Agent,
    /// A person at `/admin`: decides override requests of its tenant; no MCP.
    Admin,
}

impl TokenRole {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRole::Agent => "agent",
            TokenRole::Admin => "admin",
        }
    }

    /// As stored; anything unknown is the least privileged role.
    pub fn parse(s: &str) -> Self {
        if s == "admin" {
            TokenRole::Admin
        } else {
            TokenRole::Agent
        }
    }
}

/// A stored bearer token: who it acts for. The secret itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenRecord {
    pub id: i64,
    pub tenant: String,
    /// The agent (or, for an admin token, the person) its requests are recorded under.
    pub agent: String,
    pub role: TokenRole,
    /// The token's first characters (`arb_` and a few more), to tell tokens apart.
    pub prefix: String,
    /// Unix seconds, UTC.
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    /// Its own request limit (`N/s`, `N/min`, `N/h` or `off`); `None`: the server's.
    pub rate_limit: Option<String>,
}

impl TokenRecord {
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }

    /// An admin token over every tenant.
    pub fn is_operator(&self) -> bool {
        self.role == TokenRole::Admin && self.tenant == ALL_TENANTS
    }

    /// The tenant an admin request acts on: the one it asked for (`?tenant=`)
    /// if this token may administer it, else its own (an operator's: `default`).
    /// Err: why it may not.
    pub fn administered_tenant(&self, asked: Option<&str>) -> Result<String, String> {
        administered_tenant(&self.tenant, asked)
    }
}

/// [`TokenRecord::administered_tenant`] for a token (or console session) of `own` tenant.
pub fn administered_tenant(own: &str, asked: Option<&str>) -> Result<String, String> {
    let asked = asked.map(str::trim).filter(|t| !t.is_empty());
    match asked {
        None if own == ALL_TENANTS => Ok(DEFAULT_TENANT.to_string()),
        None => Ok(own.to_string()),
        Some(t) if own == ALL_TENANTS || t == own => Ok(t.to_string()),
        Some(t) => Err(format!(
            "this admin token is for tenant `{own}` only, so tenant `{t}` is not yours to see; \
             an operator over every tenant uses a token made with \
             `arbiter token create --admin --all-tenants --agent NAME`"
        )),
    }
}

/// A new token, as `arbiter token create` makes it.
#[derive(Debug, Clone)]
pub struct NewToken<'a> {
    pub tenant: &'a str,
    pub agent: &'a str,
    pub role: TokenRole,
    /// Hex SHA-256 of the whole token.
    pub hash: &'a str,
    pub prefix: &'a str,
    pub now: i64,
    /// See [`TokenRecord::rate_limit`].
    pub rate_limit: Option<&'a str>,
}

/// A tenant other than `default`: its own workspace and, optionally, its own policy file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantRecord {
    pub name: String,
    /// Absolute and canonical.
    pub workspace: String,
    /// Absolute; `None`: the workspace's own `.arbiter/policy.yaml`, else the built-in.
    pub policy: Option<String>,
    pub created_at: i64,
}

#[cfg(test)]
mod tests {
    use super::{ALL_TENANTS, administered_tenant};

    #[test]
    fn an_admin_token_administers_its_own_tenant_and_an_operator_every_one() {
        assert_eq!(administered_tenant("acme", None).unwrap(), "acme");
        assert_eq!(administered_tenant("acme", Some("")).unwrap(), "acme");
        assert_eq!(administered_tenant("acme", Some("acme")).unwrap(), "acme");
        let refused = administered_tenant("acme", Some("beta")).unwrap_err();
        assert!(
            refused.contains("`acme` only") && refused.contains("--all-tenants"),
            "{refused}"
        );
        assert_eq!(administered_tenant(ALL_TENANTS, None).unwrap(), "default");
        assert_eq!(
            administered_tenant(ALL_TENANTS, Some("beta")).unwrap(),
            "beta"
        );
    }
}
