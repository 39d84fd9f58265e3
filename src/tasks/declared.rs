//! Agents declared in the policy (`tasks.agents`): the operator writes what
//! `agent_register` would say, and the server puts it in the store's
//! registry when the policy is loaded (at start, and again at each reload),
//! so they are routable before they first connect.
//!
//! Seen-time rule: a declared agent counts as seen when its policy was
//! loaded, like a fresh registration. If it does not call within
//! `agent_timeout_minutes`, routing passes it over (it may not exist) until
//! it calls a task tool. A reload that drops an agent hides it if it never
//! called (rows are never deleted; it comes back if it registers or is
//! declared again), and otherwise leaves it as an agent known from
//! agent_register (its record and held tasks stay). Between loads, `agent_register` by the
//! agent itself may change its capabilities; the next load restores the
//! policy's.

use std::sync::Arc;

use crate::policy::Policy;
use crate::store::tasks::AgentRegistration;
use crate::store::{Store, StoreError};

/// Which policy's declarations are in the store (each load applied once).
#[derive(Debug, Default)]
pub struct DeclaredAgents {
    applied: tokio::sync::Mutex<Option<Arc<Policy>>>,
}

impl DeclaredAgents {
    /// Bring the tenant's declared agents in line with `policy`, unless this
    /// very policy (the same load) was applied already. True when it wrote.
    pub async fn apply(
        &self,
        store: &dyn Store,
        tenant: &str,
        policy: &Arc<Policy>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut applied = self.applied.lock().await;
        if applied.as_ref().is_some_and(|p| Arc::ptr_eq(p, policy)) {
            return Ok(false);
        }
        let declared = &policy.task_settings().agents;
        // The policy's checks ran at load; a declaration that still does not
        // normalize is skipped rather than failing every task call.
        let normalized: Vec<_> = declared
            .iter()
            .filter_map(|a| match a.capabilities.normalized() {
                Ok(c) => Some((a, c)),
                Err(e) => {
                    tracing::warn!(agent = %a.name, error = %e, "declared agent skipped");
                    None
                }
            })
            .collect();
        let regs: Vec<AgentRegistration<'_>> = normalized
            .iter()
            .map(|(a, caps)| AgentRegistration {
                tenant,
                name: &a.name,
                capabilities: caps,
                max_concurrent_tasks: a.max_concurrent_tasks,
                now,
            })
            .collect();
        store.agents_declare(tenant, &regs, now).await?;
        if !regs.is_empty() {
            tracing::info!(
                tenant,
                agents = regs.len(),
                "agents declared in the policy registered"
            );
        }
        *applied = Some(policy.clone());
        Ok(true)
    }

    /// Whether the store may hold declarations to update: the policy
    /// declares agents, or an applied one did.
    pub async fn worth_applying(&self, policy: &Policy) -> bool {
        !policy.task_settings().agents.is_empty()
            || self
                .applied
                .lock()
                .await
                .as_ref()
                .is_some_and(|p| !p.task_settings().agents.is_empty())
    }
}
