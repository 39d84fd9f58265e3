//! Tenants of an HTTP server. Each tenant has its own workspace, policy,
//! store and audit journal, so files, records, overrides and terminal
//! sessions are kept apart by construction: a session is built on its
//! tenant's [`TenantRuntime`] and can reach nothing else.
//!
//! The served workspace is tenant `default`; other tenants are registered in
//! its store (`arbiter tenant add`) and opened on first use, so a tenant added
//! while the server runs is served without a restart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::store::{AuditChain, DEFAULT_TENANT, TenantRecord};
use crate::tools::Toolbox;

/// Longest tenant name.
const MAX_NAME_LEN: usize = 64;

/// One tenant's toolbox (workspace, policy, store) and audit chain.
pub struct TenantRuntime {
    pub name: String,
    pub toolbox: Arc<Toolbox>,
    pub audit: AuditChain,
}

/// Opens a registered tenant's workspace (start-up code, owned by the CLI).
pub type TenantOpener = Arc<dyn Fn(&TenantRecord) -> anyhow::Result<TenantRuntime> + Send + Sync>;

/// Why a tenant cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error("tenant `{0}` is not registered with this server (`arbiter tenant list`)")]
    Unknown(String),
    #[error("tenant `{name}` cannot be opened: {reason}")]
    Unavailable { name: String, reason: String },
}

/// The tenants a server serves, opened on first use.
pub struct TenantRegistry {
    default: Arc<TenantRuntime>,
    opened: tokio::sync::Mutex<HashMap<String, Arc<TenantRuntime>>>,
    open: TenantOpener,
}

impl TenantRegistry {
    pub fn new(default: TenantRuntime, open: TenantOpener) -> Self {
        Self {
            default: Arc::new(default),
            opened: tokio::sync::Mutex::new(HashMap::new()),
            open,
        }
    }

    /// Tenant `default`: the served workspace, whose store also holds tokens and tenants.
    pub fn default_tenant(&self) -> &Arc<TenantRuntime> {
        &self.default
    }

    /// A tenant's runtime, opening its workspace the first time.
    pub async fn get(&self, name: &str) -> Result<Arc<TenantRuntime>, TenantError> {
        if name == DEFAULT_TENANT {
            return Ok(self.default.clone());
        }
        let mut opened = self.opened.lock().await;
        if let Some(runtime) = opened.get(name) {
            return Ok(runtime.clone());
        }
        let unavailable = |reason: String| TenantError::Unavailable {
            name: name.to_string(),
            reason,
        };
        let store = self
            .default
            .toolbox
            .store
            .get()
            .await
            .map_err(unavailable)?;
        let record = store
            .tenant_get(name)
            .await
            .map_err(|e| unavailable(e.to_string()))?
            .ok_or_else(|| TenantError::Unknown(name.to_string()))?;
        // Registration refused overlapping workspaces; a directory moved or
        // replaced by a symlink since then must not join two tenants either.
        let root = std::fs::canonicalize(&record.workspace)
            .map_err(|e| unavailable(format!("workspace {}: {e}", record.workspace)))?;
        let others = std::iter::once(self.default.toolbox.root.path().to_path_buf())
            .chain(opened.values().map(|t| t.toolbox.root.path().to_path_buf()));
        if let Some(other) = others.into_iter().find(|o| workspaces_overlap(o, &root)) {
            return Err(unavailable(format!(
                "its workspace {} overlaps {}, which another tenant serves",
                root.display(),
                other.display()
            )));
        }
        let runtime = Arc::new((self.open)(&record).map_err(|e| unavailable(format!("{e:#}")))?);
        tracing::info!(tenant = name, workspace = %root.display(), "tenant opened");
        opened.insert(name.to_string(), runtime.clone());
        Ok(runtime)
    }

    /// Every tenant opened so far, `default` first.
    pub async fn opened(&self) -> Vec<Arc<TenantRuntime>> {
        let mut all = vec![self.default.clone()];
        all.extend(self.opened.lock().await.values().cloned());
        all
    }
}

/// Whether one workspace lies inside the other (or they are the same): a
/// tenant could then reach the other's files. Both paths must be canonical.
pub fn workspaces_overlap(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// The `tenant` an admin request names in its query string (`?tenant=acme`), if any.
pub fn asked_tenant(uri: &axum::http::Uri) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(uri.query()?).ok()?;
    pairs
        .into_iter()
        .find(|(k, _)| k == "tenant")
        .map(|(_, v)| v)
}

/// A tenant name is used in file names (`audit.<tenant>.journal`) and shown
/// in lists: lower-case letters, digits, `-` and `_`, starting with a letter
/// or digit.
pub fn check_tenant_name(name: &str) -> Result<(), String> {
    let ok_first = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok_rest = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok_first && ok_rest && name.len() <= MAX_NAME_LEN {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a tenant name: use 1 to {MAX_NAME_LEN} lower-case letters, digits, \
             `-` or `_`, starting with a letter or digit"
        ))
    }
}

/// The audit journal of a tenant in a workspace: `default` keeps the
/// journal every local command uses; another tenant has its own, so its chain
/// never interleaves with local `arbiter call`s in the same directory.
pub fn journal_file_name(tenant: &str) -> String {
    if tenant == DEFAULT_TENANT {
        "audit.journal".to_string()
    } else {
        format!("audit.{tenant}.journal")
    }
}

/// Canonical form of a workspace path given on the command line.
pub fn canonical_workspace(dir: &Path) -> anyhow::Result<PathBuf> {
    use anyhow::Context;
    let root = std::fs::canonicalize(dir)
        .with_context(|| format!("cannot open the workspace {}", dir.display()))?;
    anyhow::ensure!(root.is_dir(), "{} is not a directory", root.display());
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names_are_safe_in_file_names() {
        for good in ["acme", "team-2", "a_b", "0"] {
            assert!(check_tenant_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Acme", "../x", "a/b", "-x", "a.b", &"x".repeat(65)] {
            assert!(check_tenant_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nested_or_equal_workspaces_overlap_but_siblings_with_a_common_prefix_do_not() {
        let p = |s: &str| PathBuf::from(s);
        assert!(workspaces_overlap(&p("/srv/a"), &p("/srv/a")));
        assert!(workspaces_overlap(&p("/srv/a"), &p("/srv/a/b")));
        assert!(workspaces_overlap(&p("/srv/a/b"), &p("/srv/a")));
        assert!(!workspaces_overlap(&p("/srv/a"), &p("/srv/a_evil")));
        assert!(!workspaces_overlap(&p("/srv/a"), &p("/srv/b")));
    }

    #[test]
    fn default_keeps_the_usual_journal() {
        assert_eq!(journal_file_name("default"), "audit.journal");
        assert_eq!(journal_file_name("acme"), "audit.acme.journal");
    }
}
