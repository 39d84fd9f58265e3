//! CAWS waiver files: `.caws/waivers/WV-####.yaml`, as the CAWS tools write
//! them (`id, title, reason, status, gates, expires_at, approvers` or
//! `approved_by`, `delta`). Teams that keep their exceptions there keep them:
//! an active, approved, unexpired waiver lifts the rules its `gates` name,
//! for every agent of the workspace, like an approved override.
//!
//! The files are a person's record, so no agent may write them: file tools
//! refuse `.caws/waivers/` (`WAIVER-001`) and commands see the directory
//! read-only.

use serde::Deserialize;

use super::{CompiledScope, Scope, Waiver};

/// Where the waiver files live, relative to the workspace.
pub const WAIVER_DIR: &str = ".caws/waivers";

/// A waiver file's budget extension (CAWS `delta`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Delta {
    #[serde(default)]
    pub max_files: u64,
    #[serde(default)]
    pub max_loc: u64,
}

/// One waiver file as written. Unknown fields (CAWS writes several more:
/// description, impact_level, mitigation_plan, ...) are ignored.
#[derive(Debug, Clone, Deserialize)]
struct WaiverFile {
    id: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    gates: Vec<String>,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    approvers: Vec<String>,
    #[serde(default)]
    approved_by: Option<String>,
    #[serde(default)]
    delta: Option<Delta>,
}

/// A waiver file read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CawsWaiver {
    pub id: String,
    pub title: String,
    pub reason: String,
    pub status: String,
    /// The arbiter rule ids its gates name.
    pub rule_ids: Vec<String>,
    pub expires_at: i64,
    pub approvers: Vec<String>,
    pub delta: Option<Delta>,
}

impl CawsWaiver {
    /// Whether it lifts anything at `now`: active (or approved), approved by
    /// someone, not expired.
    pub fn in_force(&self, now: i64) -> bool {
        matches!(self.status.as_str(), "active" | "approved")
            && !self.approvers.is_empty()
            && self.expires_at > now
    }

    /// The waivers it grants at `now` (one per rule).
    pub fn waivers_at(&self, now: i64) -> Vec<Waiver> {
        if !self.in_force(now) {
            return Vec::new();
        }
        let Ok(scope) = CompiledScope::compile(&Scope::default()) else {
            return Vec::new();
        };
        self.rule_ids
            .iter()
            .map(|rule| Waiver {
                id: self.id.clone(),
                agent: None,
                rule_id: rule.clone(),
                scope: scope.clone(),
                expires_at: self.expires_at,
            })
            .collect()
    }
}

/// The arbiter rule a CAWS gate name stands for: a rule id as written
/// (`PATH-001`), or CAWS's names for the working spec's own gates. Quality
/// gates arbiter does not run (coverage, mutation, ...) and `*` name none.
fn gate_rule(gate: &str) -> Option<String> {
    let g = gate.trim();
    match g.to_ascii_lowercase().as_str() {
        "budget" | "budget_limit" | "change_budget" => return Some("BUDGET-001".into()),
        "scope" | "scope_boundary" | "scope_limit" => return Some("SCOPE-001".into()),
        _ => {}
    }
    let looks_like_id = g.contains('-')
        && g.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-' || c == '_');
    looks_like_id.then(|| g.to_string())
}

/// Parse one waiver file; `file_stem` is its name without `.yaml`.
pub fn parse(text: &str, file_stem: &str) -> Result<CawsWaiver, String> {
    let file: WaiverFile = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
    if file.id != file_stem {
        return Err(format!(
            "its id `{}` is not its file name `{file_stem}`",
            file.id
        ));
    }
    let valid_id = file
        .id
        .strip_prefix("WV-")
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
    if !valid_id {
        return Err(format!("`{}` is not a waiver id (WV-0001)", file.id));
    }
    let expires = file
        .expires_at
        .as_deref()
        .ok_or_else(|| "it has no expires_at".to_string())?;
    let expires_at =
        time::OffsetDateTime::parse(expires, &time::format_description::well_known::Rfc3339)
            .map_err(|e| format!("expires_at `{expires}` is not an RFC 3339 time: {e}"))?
            .unix_timestamp();
    let mut approvers: Vec<String> = file
        .approvers
        .into_iter()
        .chain(file.approved_by)
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
        .collect();
    approvers.dedup();
    let rule_ids: Vec<String> = file.gates.iter().filter_map(|g| gate_rule(g)).collect();
    Ok(CawsWaiver {
        id: file.id,
        title: file.title,
        reason: file.reason,
        status: file.status.trim().to_ascii_lowercase(),
        rule_ids,
        expires_at,
        approvers,
        delta: file.delta,
    })
}

/// At server start: when the workspace uses CAWS (`.caws/` is a real
/// directory), make sure `.caws/waivers/` exists so commands can be given it
/// read-only, and say that waiver files are to be honoured. Without `.caws/`
/// none are: a `.caws/` created later (by a command) grants nothing.
pub fn prepare_dir(workspace: &std::path::Path) -> bool {
    let is_dir = |p: &std::path::Path| p.symlink_metadata().is_ok_and(|m| m.is_dir());
    let caws = workspace.join(".caws");
    if !is_dir(&caws) {
        return false;
    }
    let dir = workspace.join(WAIVER_DIR);
    if dir.symlink_metadata().is_err()
        && let Err(e) = std::fs::create_dir(&dir)
    {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot create the CAWS waiver directory");
    }
    is_dir(&dir)
}

/// Read every `WV-*.yaml` file of the waiver directory under `root`, never
/// following a symlink. Files that do not parse are returned as problems
/// (file name, message); they waive nothing.
pub fn read_dir(root: &crate::exec::WorkspaceRoot) -> (Vec<CawsWaiver>, Vec<(String, String)>) {
    let mut waivers = Vec::new();
    let mut problems = Vec::new();
    let Ok(dir) = root.open_walked_dir(WAIVER_DIR) else {
        return (waivers, problems);
    };
    let Ok((entries, _)) = crate::exec::tree::read_entries(std::os::fd::AsFd::as_fd(&dir)) else {
        return (waivers, problems);
    };
    for (name, meta) in entries {
        if meta.kind != crate::exec::EntryKind::File {
            continue;
        }
        let Some(stem) = name
            .strip_suffix(".yaml")
            .or_else(|| name.strip_suffix(".yml"))
        else {
            continue;
        };
        if !stem.starts_with("WV-") {
            continue;
        }
        let path = format!("{WAIVER_DIR}/{name}");
        let text = match read_small(root, &path) {
            Ok(text) => text,
            Err(e) => {
                problems.push((name.clone(), e.to_string()));
                continue;
            }
        };
        match parse(&text, stem) {
            Ok(w) => waivers.push(w),
            Err(e) => problems.push((name.clone(), e)),
        }
    }
    waivers.sort_by(|a, b| a.id.cmp(&b.id));
    (waivers, problems)
}

fn read_small(root: &crate::exec::WorkspaceRoot, path: &str) -> std::io::Result<String> {
    use std::io::Read;
    let file = root.open_walked_file(path)?;
    let mut text = String::new();
    file.take(64 * 1024).read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "id: WV-0001\ntitle: Vendor bump\nreason: emergency_hotfix\nstatus: active\ngates: [budget_limit, PATH-001, coverage]\nexpires_at: 2030-01-01T00:00:00Z\napprovers: ['@lead']\ndelta: {max_files: 5, max_loc: 200}\nimpact_level: high\n";

    #[test]
    fn a_caws_waiver_file_is_read() {
        let w = parse(FILE, "WV-0001").unwrap();
        assert_eq!(w.rule_ids, ["BUDGET-001", "PATH-001"]);
        assert_eq!(w.approvers, ["@lead"]);
        assert_eq!(
            w.delta,
            Some(Delta {
                max_files: 5,
                max_loc: 200
            })
        );
        assert!(w.in_force(0));
        assert!(!w.in_force(w.expires_at));
        assert_eq!(w.waivers_at(0).len(), 2);
    }

    #[test]
    fn unapproved_revoked_or_misnamed_waivers_waive_nothing() {
        let unapproved = FILE.replace("approvers: ['@lead']\n", "");
        assert!(!parse(&unapproved, "WV-0001").unwrap().in_force(0));
        let revoked = FILE.replace("status: active", "status: revoked");
        assert!(parse(&revoked, "WV-0001").unwrap().waivers_at(0).is_empty());
        assert!(parse(FILE, "WV-0002").is_err());
        assert!(parse(&FILE.replace("2030-01-01T00:00:00Z", "soon"), "WV-0001").is_err());
        let approved_by = FILE.replace("approvers: ['@lead']", "approved_by: '@lead'");
        assert!(parse(&approved_by, "WV-0001").unwrap().in_force(0));
    }
}
