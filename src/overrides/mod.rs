//! Overrides: exceptions to the policy that only a person can grant.
//!
//! An agent asks (`override_request`: a rule id, a reason, an optional
//! scope); a person decides outside the agent's reach (`arbiter override
//! approve|deny|revoke`); an approval is a [`Waiver`] for one tenant, agent,
//! rule and scope until it expires or is revoked. The policy engine stays
//! pure: the tools fetch the active waivers and [`apply`] lifts the matching
//! rules of a [`Decision`], naming the waiver in the decision and the audit
//! record. CAWS waiver files (`.caws/waivers/WV-*.yaml`) are read by [`caws`]
//! and honoured the same way.
//!
//! This module holds the rules of the lifecycle (states, limits, scope
//! matching); the rows live in the store and the tools and CLI drive it.

pub mod caws;
pub mod decide;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use rmcp::schemars::{self, JsonSchema};
use serde::{Deserialize, Serialize};

use crate::policy::file::OverrideSettings;
use crate::policy::{Action, Decision};

/// The states a request goes through. `expired` is never stored: an approved
/// request whose time has passed reads as expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OverrideState {
    Pending,
    Approved,
    Denied,
    Expired,
    Revoked,
}

impl OverrideState {
    pub fn as_str(self) -> &'static str {
        match self {
            OverrideState::Pending => "pending",
            OverrideState::Approved => "approved",
            OverrideState::Denied => "denied",
            OverrideState::Expired => "expired",
            OverrideState::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => OverrideState::Pending,
            "approved" => OverrideState::Approved,
            "denied" => OverrideState::Denied,
            "expired" => OverrideState::Expired,
            "revoked" => OverrideState::Revoked,
            _ => return None,
        })
    }
}

/// What a waiver covers besides its rule. Empty: every action the rule
/// refuses (for that agent, until it ends).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// Workspace paths or globs the waiver covers (`config/prod.env`, `vendor/**`).
    /// `*` stays within one directory, `**` crosses directories.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// A command prefix the waiver covers, written as a command line (`git push origin`):
    /// a command is covered when its words start with these words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// A task id: the waiver covers only calls made for that task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
}

impl Scope {
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty() && self.command.is_none() && self.task_id.is_none()
    }

    /// How a person reads it.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.paths.is_empty() {
            parts.push(format!("paths {}", self.paths.join(", ")));
        }
        if let Some(c) = &self.command {
            parts.push(format!("commands starting `{c}`"));
        }
        if let Some(t) = &self.task_id {
            parts.push(format!("task {t}"));
        }
        if parts.is_empty() {
            "every action the rule refuses".to_string()
        } else {
            parts.join("; ")
        }
    }
}

/// A scope ready to match actions.
#[derive(Debug, Clone)]
pub struct CompiledScope {
    globs: Option<GlobSet>,
    command: Option<Vec<String>>,
    task_id: Option<String>,
}

impl CompiledScope {
    pub fn compile(scope: &Scope) -> Result<Self, String> {
        let globs = if scope.paths.is_empty() {
            None
        } else {
            let mut builder = GlobSetBuilder::new();
            for p in &scope.paths {
                let p = p.trim_start_matches("./");
                if p.is_empty() || p.starts_with('/') || p.split('/').any(|c| c == "..") {
                    return Err(format!(
                        "scope path `{p}` must be a workspace-relative path or glob"
                    ));
                }
                let glob = GlobBuilder::new(p)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| format!("scope path `{p}`: {e}"))?;
                builder.add(glob);
            }
            Some(builder.build().map_err(|e| e.to_string())?)
        };
        let command = match &scope.command {
            None => None,
            Some(c) => {
                let words = command_words(c)
                    .filter(|w| !w.is_empty())
                    .ok_or_else(|| format!("scope command `{c}` is not a plain command line"))?;
                Some(words)
            }
        };
        Ok(Self {
            globs,
            command,
            task_id: scope.task_id.clone(),
        })
    }

    /// Whether `action` (made for `task_id`, if any) is inside the scope.
    pub fn covers(&self, action: &Action<'_>, task_id: Option<&str>) -> bool {
        if let Some(t) = &self.task_id
            && task_id != Some(t.as_str())
        {
            return false;
        }
        match action {
            Action::ReadFile { path }
            | Action::WriteFile { path, .. }
            | Action::DeleteFile { path, .. } => {
                if self.command.is_some() {
                    return false;
                }
                match &self.globs {
                    None => true,
                    Some(globs) => globs.is_match(path.trim_start_matches("./")),
                }
            }
            Action::RunCommand { command } => {
                if self.globs.is_some() {
                    return false;
                }
                match &self.command {
                    None => true,
                    Some(prefix) => command_words(command).is_some_and(|words| {
                        words.len() >= prefix.len()
                            && words.iter().zip(prefix).enumerate().all(|(i, (w, p))| {
                                if i == 0 {
                                    basename(w) == basename(p)
                                } else {
                                    w == p
                                }
                            })
                    }),
                }
            }
        }
    }
}

fn basename(program: &str) -> &str {
    program.rsplit('/').next().unwrap_or(program)
}

/// The words of a plain command line (no shell syntax), as the policy splits it.
fn command_words(command: &str) -> Option<Vec<String>> {
    crate::policy::command::analyze(command, &Default::default())
        .ok()
        .map(|line| line.argv)
}

/// Who makes a call: the tenant, the agent (token or client name) and the
/// MCP session; the task when the call is made for one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub tenant: String,
    pub agent: String,
    pub session_id: String,
    pub task_id: Option<String>,
}

/// An exception in force: from an approved override or a CAWS waiver file.
#[derive(Debug, Clone)]
pub struct Waiver {
    /// `OVR-12` or `WV-0001`.
    pub id: String,
    /// The agent it was granted to; `None` for CAWS waivers (the workspace's).
    pub agent: Option<String>,
    pub rule_id: String,
    pub scope: CompiledScope,
    /// Unix seconds; the waiver lifts nothing from then on.
    pub expires_at: i64,
}

/// Lift every rule of `decision` (about `action`) that an active waiver for
/// `caller` covers. Pure: `now` and the waivers are data.
pub fn apply(
    decision: &mut Decision,
    action: &Action<'_>,
    waivers: &[Waiver],
    caller: &Caller,
    now: i64,
) {
    if decision.is_allowed() {
        return;
    }
    let refused: Vec<std::sync::Arc<str>> = decision
        .matched
        .iter()
        .filter(|r| r.verdict > crate::policy::Verdict::Allow)
        .map(|r| r.id.clone())
        .collect();
    for rule_id in refused {
        if let Some(w) = waivers.iter().find(|w| {
            w.rule_id == *rule_id
                && w.expires_at > now
                && w.agent.as_deref().is_none_or(|a| a == caller.agent)
                && w.scope.covers(action, caller.task_id.as_deref())
        }) {
            decision.waive(&rule_id, &w.id);
        }
    }
}

/// One stored request, as the store returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OverrideRecord {
    pub id: i64,
    pub tenant: String,
    pub agent: String,
    pub session_id: String,
    pub rule_id: String,
    pub reason: String,
    pub scope: Scope,
    pub requested_minutes: Option<u64>,
    /// As stored: pending, approved, denied or revoked.
    pub stored_state: String,
    pub created_at: i64,
    pub decided_at: Option<i64>,
    pub decided_by: Option<String>,
    pub note: Option<String>,
    pub expires_at: Option<i64>,
}

impl OverrideRecord {
    pub fn display_id(&self) -> String {
        display_id(self.id)
    }

    /// The state at `now` (an approval past its end is `expired`).
    pub fn state_at(&self, now: i64) -> OverrideState {
        match OverrideState::parse(&self.stored_state) {
            Some(OverrideState::Approved) if self.expires_at.is_some_and(|e| e <= now) => {
                OverrideState::Expired
            }
            Some(s) => s,
            None => OverrideState::Denied,
        }
    }

    /// The record as people read it (CLI `--json`, the admin API).
    pub fn view(&self, now: i64) -> serde_json::Value {
        serde_json::json!({
            "override_id": self.display_id(),
            "state": self.state_at(now).as_str(),
            "tenant": self.tenant,
            "agent": self.agent,
            "session_id": self.session_id,
            "rule_id": self.rule_id,
            "reason": self.reason,
            "scope": self.scope,
            "requested_minutes": self.requested_minutes,
            "requested_at": rfc3339(self.created_at),
            "decided_at": self.decided_at.map(rfc3339),
            "decided_by": self.decided_by,
            "note": self.note,
            "expires_at": self.expires_at.map(rfc3339),
        })
    }

    /// The waiver an approved record grants, if it is in force at `now`.
    pub fn waiver_at(&self, now: i64) -> Option<Waiver> {
        if self.state_at(now) != OverrideState::Approved {
            return None;
        }
        Some(Waiver {
            id: self.display_id(),
            agent: Some(self.agent.clone()),
            rule_id: self.rule_id.clone(),
            scope: CompiledScope::compile(&self.scope).ok()?,
            expires_at: self.expires_at?,
        })
    }
}

pub fn display_id(id: i64) -> String {
    format!("OVR-{id}")
}

/// `OVR-12`, `ovr-12` or `12`.
pub fn parse_id(s: &str) -> Option<i64> {
    let s = s.trim();
    let digits = s
        .strip_prefix("OVR-")
        .or_else(|| s.strip_prefix("ovr-"))
        .unwrap_or(s);
    digits.parse().ok().filter(|&n| n > 0)
}

/// Why a request may not be made now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitRefusal {
    pub rule_id: &'static str,
    pub message: String,
    /// Unix seconds from which the agent may ask again.
    pub retry_at: i64,
}

/// Check a new request by `agent` for `rule_id` against the limits, given the
/// agent's recent requests (`history`, any order). Pure.
pub fn check_limits(
    history: &[OverrideRecord],
    rule_id: &str,
    settings: &OverrideSettings,
    now: i64,
) -> Result<(), LimitRefusal> {
    let hour_ago = now - 3600;
    let mut recent: Vec<i64> = history
        .iter()
        .map(|r| r.created_at)
        .filter(|&t| t > hour_ago)
        .collect();
    let max = settings.max_requests_per_hour as usize;
    if recent.len() >= max {
        recent.sort_unstable();
        // The oldest request that keeps the count at the limit leaves the window first.
        let retry_at = recent[recent.len() - max] + 3600;
        return Err(LimitRefusal {
            rule_id: "OVERRIDE-002",
            message: format!(
                "this agent has made {} override requests in the last hour; the policy allows {max}",
                recent.len()
            ),
            retry_at,
        });
    }
    let cooldown = settings.denial_cooldown_minutes as i64 * 60;
    let mut denials: Vec<i64> = history
        .iter()
        .filter(|r| r.rule_id == rule_id && r.stored_state == "denied")
        .filter_map(|r| r.decided_at)
        .filter(|&t| t > now - cooldown)
        .collect();
    let max_denials = settings.max_denials.max(1) as usize;
    if denials.len() >= max_denials {
        denials.sort_unstable();
        let retry_at = denials[denials.len() - max_denials] + cooldown;
        return Err(LimitRefusal {
            rule_id: "OVERRIDE-003",
            message: format!(
                "requests for {rule_id} were denied {} times in the last {} minutes; the policy allows {max_denials} before a cool-down",
                denials.len(),
                settings.denial_cooldown_minutes
            ),
            retry_at,
        });
    }
    Ok(())
}

/// How long an approval lasts: what the approver says, else what the agent
/// asked for, else the policy's default; never beyond the policy's maximum.
pub fn approval_minutes(
    approver: Option<u64>,
    requested: Option<u64>,
    settings: &OverrideSettings,
) -> Result<u64, String> {
    if let Some(m) = approver {
        if m == 0 {
            return Err("--minutes must be at least 1".into());
        }
        if m > settings.max_minutes {
            return Err(format!(
                "--minutes {m} is longer than the policy allows (overrides.max_minutes: {})",
                settings.max_minutes
            ));
        }
        return Ok(m);
    }
    Ok(requested
        .filter(|&m| m > 0)
        .unwrap_or(settings.default_minutes)
        .min(settings.max_minutes))
}

/// `text` on one line, cut to `max` characters.
pub fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() > max {
        let cut: String = flat.chars().take(max).collect();
        format!("{cut}…")
    } else {
        flat
    }
}

pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Unix seconds as RFC 3339 (UTC).
pub fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{MatchedRule, Verdict};

    fn caller(agent: &str) -> Caller {
        Caller {
            tenant: "default".into(),
            agent: agent.into(),
            session_id: "s".into(),
            task_id: None,
        }
    }

    fn waiver(rule: &str, scope: Scope, expires_at: i64) -> Waiver {
        Waiver {
            id: "OVR-1".into(),
            agent: Some("a".into()),
            rule_id: rule.into(),
            scope: CompiledScope::compile(&scope).unwrap(),
            expires_at,
        }
    }

    fn denied(rule: &str) -> Decision {
        let mut d = Decision::allow();
        d.add(MatchedRule::for_test(rule, Verdict::Deny));
        d
    }

    #[test]
    fn a_waiver_lifts_only_its_rule_path_agent_and_time() {
        let w = [waiver(
            "R-1",
            Scope {
                paths: vec!["config/*.env".into()],
                ..Scope::default()
            },
            100,
        )];
        let write = |path| Action::WriteFile {
            path,
            hard_linked: false,
            added: "",
        };
        let mut d = denied("R-1");
        apply(&mut d, &write("config/prod.env"), &w, &caller("a"), 50);
        assert!(d.is_allowed());
        assert_eq!(d.waiver_ids(), "OVR-1");
        for (path, agent, now, rule) in [
            ("config/sub/x.env", "a", 50, "R-1"),
            ("other.env", "a", 50, "R-1"),
            ("config/prod.env", "b", 50, "R-1"),
            ("config/prod.env", "a", 100, "R-1"),
            ("config/prod.env", "a", 50, "R-2"),
        ] {
            let mut d = denied(rule);
            apply(&mut d, &write(path), &w, &caller(agent), now);
            assert!(!d.is_allowed(), "{path} {agent} {now} {rule}");
            assert!(d.waived.is_empty());
        }
        // Another refusing rule still refuses.
        let mut d = denied("R-1");
        d.add(MatchedRule::for_test("R-2", Verdict::NeedsOverride));
        apply(&mut d, &write("config/prod.env"), &w, &caller("a"), 50);
        assert_eq!(d.verdict, Verdict::NeedsOverride);
    }

    #[test]
    fn a_command_scope_is_a_word_prefix() {
        let w = [waiver(
            "R-1",
            Scope {
                command: Some("git push origin".into()),
                ..Scope::default()
            },
            100,
        )];
        for (command, lifted) in [
            ("git push origin main", true),
            ("/usr/bin/git push origin", true),
            ("git push upstream main", false),
            ("git pushx origin", false),
            ("git", false),
        ] {
            let mut d = denied("R-1");
            apply(&mut d, &Action::RunCommand { command }, &w, &caller("a"), 0);
            assert_eq!(d.is_allowed(), lifted, "{command}");
        }
        // A command scope never covers a file.
        let mut d = denied("R-1");
        apply(
            &mut d,
            &Action::ReadFile { path: "git" },
            &w,
            &caller("a"),
            0,
        );
        assert!(!d.is_allowed());
    }

    #[test]
    fn bad_scopes_are_refused() {
        for scope in [
            Scope {
                paths: vec!["../x".into()],
                ..Scope::default()
            },
            Scope {
                paths: vec!["/etc/passwd".into()],
                ..Scope::default()
            },
            Scope {
                paths: vec!["a/[".into()],
                ..Scope::default()
            },
            Scope {
                command: Some("ls | sh".into()),
                ..Scope::default()
            },
        ] {
            assert!(CompiledScope::compile(&scope).is_err(), "{scope:?}");
        }
    }

    fn record(rule: &str, state: &str, created_at: i64, decided_at: Option<i64>) -> OverrideRecord {
        OverrideRecord {
            id: 1,
            tenant: "default".into(),
            agent: "a".into(),
            session_id: "s".into(),
            rule_id: rule.into(),
            reason: "r".into(),
            scope: Scope::default(),
            requested_minutes: None,
            stored_state: state.into(),
            created_at,
            decided_at,
            decided_by: None,
            note: None,
            expires_at: None,
        }
    }

    #[test]
    fn limits_count_requests_per_hour_and_denials_per_rule() {
        let s = OverrideSettings::default();
        let now = 10_000;
        let five: Vec<_> = (0..5)
            .map(|i| record("R-1", "pending", now - 3000 + i * 10, None))
            .collect();
        let refusal = check_limits(&five, "R-1", &s, now).unwrap_err();
        assert_eq!(refusal.rule_id, "OVERRIDE-002");
        assert_eq!(refusal.retry_at, now - 3000 + 3600);
        // An hour later the oldest has left the window.
        assert!(check_limits(&five, "R-1", &s, now - 3000 + 3601).is_ok());

        let denials: Vec<_> = (0..3)
            .map(|i| record("R-1", "denied", now - 7200, Some(now - 600 + i)))
            .collect();
        let refusal = check_limits(&denials, "R-1", &s, now).unwrap_err();
        assert_eq!(refusal.rule_id, "OVERRIDE-003");
        assert_eq!(refusal.retry_at, now - 600 + 3600);
        assert!(check_limits(&denials, "R-2", &s, now).is_ok());
        assert!(check_limits(&denials, "R-1", &s, now + 3001).is_ok());
    }

    #[test]
    fn approvals_last_a_day_unless_said_and_never_past_the_maximum() {
        let s = OverrideSettings::default();
        assert_eq!(approval_minutes(None, None, &s), Ok(1440));
        assert_eq!(approval_minutes(None, Some(30), &s), Ok(30));
        assert_eq!(approval_minutes(None, Some(999_999), &s), Ok(s.max_minutes));
        assert_eq!(approval_minutes(Some(5), Some(30), &s), Ok(5));
        assert!(approval_minutes(Some(999_999), None, &s).is_err());
        assert!(approval_minutes(Some(0), None, &s).is_err());
    }

    #[test]
    fn an_approval_past_its_end_reads_expired() {
        let mut r = record("R-1", "approved", 0, Some(1));
        r.expires_at = Some(100);
        assert_eq!(r.state_at(99), OverrideState::Approved);
        assert!(r.waiver_at(99).is_some());
        assert_eq!(r.state_at(100), OverrideState::Expired);
        assert!(r.waiver_at(100).is_none());
        assert_eq!(parse_id("OVR-12"), Some(12));
        assert_eq!(parse_id("12"), Some(12));
        assert_eq!(parse_id("OVR-x"), None);
    }
}
