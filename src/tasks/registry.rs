//! The agent registry's rules: what an agent declares it can do, whether it
//! can do a given task, and whether it may be routed to now.
//!
//! An agent is known by its identity (the MCP client's name on stdio) within
//! its tenant. It registers the task types it takes, the languages and tools
//! it works with, and how many tasks it holds at once. Routing passes over an
//! agent that lacks a capability the task needs (always), that has not been
//! seen for `agent_timeout_minutes` (it may be gone), or that is at capacity.
//!
//! Pure: the store keeps the rows, the caller passes the clock.

use rmcp::schemars::{self, JsonSchema};
use serde::{Deserialize, Serialize};

use super::TaskType;

/// Most entries in one capability list.
pub const MAX_ENTRIES: usize = 50;
/// Longest capability name.
pub const MAX_NAME_CHARS: usize = 64;
/// Most tasks one agent may hold at once.
pub const MAX_CONCURRENT: u32 = 100;

/// What an agent can do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// The task types it takes: any of feature, bugfix, refactor, test, docs, research, ops.
    pub task_types: Vec<TaskType>,
    /// Languages it works in (`rust`, `python`, ...); compared without regard to case.
    #[serde(default)]
    pub languages: Vec<String>,
    /// Tools it can use (`cargo`, `docker`, `terraform`, ...); compared without regard to case.
    #[serde(default)]
    pub tools: Vec<String>,
}

/// What a task needs of its agent, besides taking the task's type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequiredCapabilities {
    /// Every one of these languages (`rust`, `typescript`, ...).
    #[serde(default)]
    pub languages: Vec<String>,
    /// Every one of these tools (`cargo`, `docker`, ...).
    #[serde(default)]
    pub tools: Vec<String>,
}

impl RequiredCapabilities {
    pub fn is_empty(&self) -> bool {
        self.languages.is_empty() && self.tools.is_empty()
    }

    /// Lower-cased, trimmed, sorted and without repeats; an error names the bad entry.
    pub fn normalized(&self) -> Result<Self, String> {
        Ok(Self {
            languages: normalize_names("languages", &self.languages)?,
            tools: normalize_names("tools", &self.tools)?,
        })
    }
}

impl Capabilities {
    /// Lower-cased, trimmed, sorted and without repeats; an error names the bad entry.
    pub fn normalized(&self) -> Result<Self, String> {
        if self.task_types.is_empty() {
            return Err("task_types is empty: name at least one task type the agent takes".into());
        }
        let mut task_types = self.task_types.clone();
        task_types.sort();
        task_types.dedup();
        Ok(Self {
            task_types,
            languages: normalize_names("languages", &self.languages)?,
            tools: normalize_names("tools", &self.tools)?,
        })
    }

    /// Why this agent cannot do a task of `task_type` needing `required`, or
    /// `None` when it can. Both sides are expected normalized.
    pub fn gap(&self, task_type: TaskType, required: &RequiredCapabilities) -> Option<String> {
        let mut missing = Vec::new();
        if !self.task_types.contains(&task_type) {
            missing.push(format!("does not take {} tasks", task_type.as_str()));
        }
        for (what, needed, has) in [
            ("language", &required.languages, &self.languages),
            ("tool", &required.tools, &self.tools),
        ] {
            let lacking: Vec<&str> = needed
                .iter()
                .filter(|n| !has.contains(n))
                .map(String::as_str)
                .collect();
            if !lacking.is_empty() {
                missing.push(format!("lacks {what} {}", lacking.join(", ")));
            }
        }
        (!missing.is_empty()).then(|| missing.join("; "))
    }
}

fn normalize_names(field: &str, names: &[String]) -> Result<Vec<String>, String> {
    if names.len() > MAX_ENTRIES {
        return Err(format!(
            "{field} has {} entries; at most {MAX_ENTRIES}",
            names.len()
        ));
    }
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let name = name.trim().to_lowercase();
        if name.is_empty()
            || name.chars().count() > MAX_NAME_CHARS
            || name.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "{field} entry {name:?} must be one word of 1 to {MAX_NAME_CHARS} characters"
            ));
        }
        out.push(name);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// A registered agent, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRecord {
    pub tenant: String,
    pub name: String,
    pub capabilities: Capabilities,
    pub max_concurrent_tasks: u32,
    /// Unix milliseconds.
    pub registered_at: i64,
    /// The last agent_register, task_next, task_update or task_complete;
    /// 0: never (an agent declared in the policy that has not called yet).
    pub last_seen_at: i64,
    /// When the policy declaring it (`tasks.agents`) was loaded; `None`:
    /// it is known only from agent_register.
    pub declared_at: Option<i64>,
}

impl AgentRecord {
    /// Why routing must pass over this agent now (it is gone, or full), or
    /// `None` when it may be given a task. `active`: tasks assigned to or
    /// held by it.
    ///
    /// A declared agent counts as seen when its policy was loaded (server
    /// start or reload): like a fresh registration, it has
    /// `agent_timeout_minutes` to show up before routing passes it over.
    pub fn unavailable(&self, active: u32, now: i64, timeout_ms: i64) -> Option<String> {
        let seen = self.last_seen_at.max(self.declared_at.unwrap_or(0));
        let silent_ms = now - seen;
        if silent_ms > timeout_ms {
            let what = if self.declared_at.is_some() && self.last_seen_at == 0 {
                "declared in the policy but not seen since it was loaded"
            } else {
                "not seen"
            };
            return Some(format!(
                "{what} for {} min (agent_timeout_minutes is {})",
                silent_ms / 60_000,
                timeout_ms / 60_000
            ));
        }
        if active >= self.max_concurrent_tasks {
            return Some(format!(
                "at capacity ({active} of {} tasks)",
                self.max_concurrent_tasks
            ));
        }
        None
    }
}

/// Check an agent's name: the identity it is known by.
pub fn check_agent_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.chars().count() > 128 || name.chars().any(char::is_control) {
        return Err(format!(
            "agent name {name:?} must be 1 to 128 characters without control characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(types: &[TaskType], languages: &[&str], tools: &[&str]) -> Capabilities {
        Capabilities {
            task_types: types.to_vec(),
            languages: languages.iter().map(|s| s.to_string()).collect(),
            tools: tools.iter().map(|s| s.to_string()).collect(),
        }
        .normalized()
        .unwrap()
    }

    fn needs(languages: &[&str], tools: &[&str]) -> RequiredCapabilities {
        RequiredCapabilities {
            languages: languages.iter().map(|s| s.to_string()).collect(),
            tools: tools.iter().map(|s| s.to_string()).collect(),
        }
        .normalized()
        .unwrap()
    }

    #[test]
    fn names_are_compared_without_case_or_repeats() {
        let c = caps(
            &[TaskType::Bugfix, TaskType::Bugfix],
            &[" Rust ", "rust"],
            &["Cargo"],
        );
        assert_eq!(c.task_types, vec![TaskType::Bugfix]);
        assert_eq!(c.languages, vec!["rust"]);
        assert_eq!(c.gap(TaskType::Bugfix, &needs(&["RUST"], &["cargo"])), None);
    }

    #[test]
    fn the_gap_names_every_missing_capability() {
        let c = caps(&[TaskType::Docs], &["markdown"], &[]);
        let gap = c
            .gap(TaskType::Bugfix, &needs(&["rust", "markdown"], &["cargo"]))
            .unwrap();
        assert_eq!(
            gap,
            "does not take bugfix tasks; lacks language rust; lacks tool cargo"
        );
    }

    #[test]
    fn bad_registrations_are_refused_with_the_entry() {
        let empty = Capabilities::default().normalized().unwrap_err();
        assert!(empty.contains("task_types"), "{empty}");
        let spaced = caps_err(&["two words"]);
        assert!(spaced.contains("\"two words\""), "{spaced}");
        let many: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!("l{i}")).collect();
        let e = Capabilities {
            task_types: vec![TaskType::Ops],
            languages: many,
            tools: vec![],
        }
        .normalized()
        .unwrap_err();
        assert!(e.contains("at most"), "{e}");
    }

    fn caps_err(languages: &[&str]) -> String {
        Capabilities {
            task_types: vec![TaskType::Feature],
            languages: languages.iter().map(|s| s.to_string()).collect(),
            tools: vec![],
        }
        .normalized()
        .unwrap_err()
    }

    fn agent(last_seen_at: i64, max: u32) -> AgentRecord {
        AgentRecord {
            tenant: "default".into(),
            name: "a".into(),
            capabilities: caps(&[TaskType::Feature], &[], &[]),
            max_concurrent_tasks: max,
            registered_at: 0,
            last_seen_at,
            declared_at: None,
        }
    }

    #[test]
    fn a_declared_agent_counts_as_seen_when_its_policy_was_loaded() {
        let minute = 60_000;
        // Never seen, declared at minute 100: routable until minute 110.
        let mut a = agent(0, 2);
        a.declared_at = Some(100 * minute);
        assert_eq!(a.unavailable(0, 110 * minute, 10 * minute), None);
        let why = a.unavailable(0, 111 * minute, 10 * minute).unwrap();
        assert!(
            why.starts_with("declared in the policy but not seen since it was loaded for 11 min"),
            "{why}"
        );
        // Seen after the declaration: the later time counts.
        a.last_seen_at = 105 * minute;
        assert_eq!(a.unavailable(0, 115 * minute, 10 * minute), None);
        let why = a.unavailable(0, 116 * minute, 10 * minute).unwrap();
        assert!(why.starts_with("not seen for 11 min"), "{why}");
    }

    #[test]
    fn an_agent_not_seen_within_the_timeout_is_not_routed_to() {
        let minute = 60_000;
        let a = agent(0, 2);
        assert_eq!(a.unavailable(0, 10 * minute, 10 * minute), None);
        let why = a.unavailable(0, 11 * minute, 10 * minute).unwrap();
        assert!(why.starts_with("not seen for 11 min"), "{why}");
    }

    #[test]
    fn an_agent_at_capacity_is_not_routed_to() {
        let a = agent(0, 2);
        assert_eq!(a.unavailable(1, 0, 1), None);
        assert_eq!(
            a.unavailable(2, 0, 1).unwrap(),
            "at capacity (2 of 2 tasks)"
        );
    }
}
