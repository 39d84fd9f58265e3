//! Which agents may hold a task, as this process saw them claim or work
//! one: a hint that spares agents holding nothing a store lookup on every
//! file and terminal call. The store decides which tasks a call is made
//! under ([`crate::store::TaskStore::task_held`], claims not lapsed); an
//! agent found holding none is forgotten until it claims again.
//!
//! Limit: an agent that claimed its task through another server process and
//! has not called task_next or task_update in this one is not looked up.

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};

static CLAIMERS: LazyLock<Mutex<HashSet<(String, String)>>> =
    LazyLock::new(|| Mutex::new(HashSet::new()));

/// The agent claimed or worked a task here.
pub fn claimed(tenant: &str, agent: &str) {
    CLAIMERS
        .lock()
        .unwrap()
        .insert((tenant.to_string(), agent.to_string()));
}

/// Whether the agent might hold a task (worth asking the store).
pub fn may_hold(tenant: &str, agent: &str) -> bool {
    CLAIMERS
        .lock()
        .unwrap()
        .contains(&(tenant.to_string(), agent.to_string()))
}

/// The store says the agent holds nothing.
pub fn released(tenant: &str, agent: &str) {
    CLAIMERS
        .lock()
        .unwrap()
        .remove(&(tenant.to_string(), agent.to_string()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_remembered_until_released() {
        assert!(!may_hold("t-attr", "a"));
        claimed("t-attr", "a");
        assert!(may_hold("t-attr", "a"));
        assert!(!may_hold("t-attr-other", "a"));
        released("t-attr", "a");
        assert!(!may_hold("t-attr", "a"));
    }
}
