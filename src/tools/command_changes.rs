//! What a task holder's command changed. A command's effects cannot be
//! known before it runs, so while an agent holds a task whose spec has a
//! scope and a change budget, the workspace is stamped before and after each
//! of its foreground commands (`run_terminal_cmd`, `terminal_execute_command`),
//! with the walk `grep_search` uses (`.gitignore`d files, `target/`,
//! `node_modules/`, `.git/` and `.arbiter/` are not looked at, so build output
//! is not a change). Every file the command created,
//! changed or deleted is then judged against the held task's spec like a
//! `file_write` (SCOPE-001, BUDGET-001), counted in its budget, and noted in
//! the task's history. A command cannot be refused after it ran, so its
//! reply is the error instead: which files broke which rule, and what to do
//! (revert them, or ask for an override), with the command's output.
//!
//! Lines are counted exactly for text files in the scope that were small
//! enough to keep a copy of before the command (at most [`MAX_TEXT_BYTES`]
//! each, [`MAX_TEXTS_BYTES`] in all); other changed files count as changed
//! files with the lines of their new text (created) or none (changed past the
//! copies, deleted).

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};

use crate::exec::WorkspaceRoot;
use crate::exec::walk::{KeepPath, WalkFilter, WorkspaceWalk};
use crate::policy::Policy;
use crate::policy::budget::{ActiveSpec, lines_changed};

use super::{ToolError, Toolbox};

/// The largest file whose text is kept before a command.
pub const MAX_TEXT_BYTES: u64 = 256 * 1024;
/// All kept texts together.
pub const MAX_TEXTS_BYTES: u64 = 32 * 1024 * 1024;

/// What identifies a file's version without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified_ns: i128,
    changed_ns: i128,
    ino: u64,
}

/// The workspace as it was before a command.
pub(crate) struct Before {
    stamps: HashMap<String, Stamp>,
    texts: HashMap<String, String>,
}

/// One file a command changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Changed {
    pub path: String,
    pub lines: u64,
    /// The text before and after, when both are known (for the task's history).
    pub texts: Option<(String, String)>,
}

fn stamp(meta: &std::fs::Metadata) -> Stamp {
    let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
    Stamp {
        len: meta.len(),
        modified_ns: ns(meta.mtime(), meta.mtime_nsec()),
        changed_ns: ns(meta.ctime(), meta.ctime_nsec()),
        ino: meta.ino(),
    }
}

/// Every file the walk shows, stamped; the text of those `keep_text` names
/// (within the size limits).
fn take_stamps(
    root: &WorkspaceRoot,
    keep_text: &(dyn Fn(&str) -> bool + Sync),
) -> (HashMap<String, Stamp>, HashMap<String, String>) {
    let found: Mutex<Vec<(String, Stamp, Option<String>)>> = Mutex::new(Vec::new());
    let text_budget = std::sync::atomic::AtomicU64::new(MAX_TEXTS_BYTES);
    let every: KeepPath = Arc::new(|_: &str, _: bool| true);
    WorkspaceWalk::new(root, WalkFilter::default(), every).visit_files(|| {
        let found = &found;
        let text_budget = &text_budget;
        move |rel: &str| {
            // Opened beneath the root through no symlink, like every walked file.
            let Ok(mut file) = root.open_walked_file(rel) else {
                return true;
            };
            let Ok(meta) = file.metadata() else {
                return true;
            };
            let stamp = stamp(&meta);
            let text = (meta.len() <= MAX_TEXT_BYTES
                && keep_text(rel)
                && text_budget
                    .fetch_update(
                        std::sync::atomic::Ordering::Relaxed,
                        std::sync::atomic::Ordering::Relaxed,
                        |left| left.checked_sub(meta.len()),
                    )
                    .is_ok())
            .then(|| {
                let mut text = String::new();
                file.read_to_string(&mut text).ok().map(|_| text)
            })
            .flatten();
            if let Ok(mut found) = found.lock() {
                found.push((rel.to_string(), stamp, text));
            }
            true
        }
    });
    let mut stamps = HashMap::new();
    let mut texts = HashMap::new();
    for (rel, stamp, text) in found.into_inner().unwrap_or_default() {
        if let Some(text) = text {
            texts.insert(rel.clone(), text);
        }
        stamps.insert(rel, stamp);
    }
    (stamps, texts)
}

/// Stamp the workspace, keeping the texts of files inside any of `specs`' scope.
fn before(root: &WorkspaceRoot, specs: &[ActiveSpec]) -> Before {
    let in_scope = |rel: &str| specs.iter().any(|s| s.scope.check(rel).is_none());
    let (stamps, texts) = take_stamps(root, &in_scope);
    Before { stamps, texts }
}

/// What changed since `before`, in path order.
fn changed_since(root: &WorkspaceRoot, before: Before, policy: &Policy) -> Vec<Changed> {
    let Before { stamps, mut texts } = before;
    let (now, _) = take_stamps(root, &|_: &str| false);
    let read = |rel: &str| -> Option<String> {
        let mut text = String::new();
        let mut file = root.open_walked_file(rel).ok()?;
        (file.metadata().ok()?.len() <= MAX_TEXT_BYTES).then_some(())?;
        file.read_to_string(&mut text).ok()?;
        Some(text)
    };
    let mut changed = Vec::new();
    for (rel, stamp) in &now {
        match stamps.get(rel) {
            Some(old) if old == stamp => {}
            Some(_) => {
                let new = read(rel);
                let lines = match (texts.remove(rel), new) {
                    (Some(old), Some(new)) if old == new => continue,
                    (Some(old), Some(new)) => {
                        let lines = lines_changed(&old, &new);
                        // A history shows only what the caller may read.
                        let texts = super::find::may_see(policy, rel, false).then_some((old, new));
                        changed.push(Changed {
                            path: rel.clone(),
                            lines,
                            texts,
                        });
                        continue;
                    }
                    _ => 0,
                };
                changed.push(Changed {
                    path: rel.clone(),
                    lines,
                    texts: None,
                });
            }
            None => {
                let new = read(rel);
                let lines = new.as_deref().map_or(0, |t| lines_changed("", t));
                let texts = new
                    .filter(|_| super::find::may_see(policy, rel, false))
                    .map(|t| (String::new(), t));
                changed.push(Changed {
                    path: rel.clone(),
                    lines,
                    texts,
                });
            }
        }
    }
    for rel in stamps.keys().filter(|rel| !now.contains_key(*rel)) {
        let old = texts.remove(rel);
        changed.push(Changed {
            path: rel.clone(),
            lines: old.as_deref().map_or(0, |t| lines_changed(t, "")),
            texts: None,
        });
    }
    changed.sort_by(|a, b| a.path.cmp(&b.path));
    changed
}

impl Toolbox {
    /// Before a command: stamp the workspace when the caller holds a task
    /// whose spec binds its changes; `None` otherwise (nothing to check).
    pub(crate) async fn watch_command(&self) -> Option<Before> {
        let (_, specs) = self.held_task_specs().await;
        if specs.is_empty() {
            return None;
        }
        let root = self.root.try_clone().ok()?;
        tokio::task::spawn_blocking(move || before(&root, &specs))
            .await
            .ok()
    }

    /// After a command: judge, count and note what it changed since
    /// `watched`. `Err` names the changes the held task's spec (or the
    /// workspace's) does not allow; the command has run either way.
    pub(crate) async fn settle_command(
        &self,
        tool: &str,
        watched: Before,
    ) -> Result<(), ToolError> {
        let policy = self.policy.load_full();
        let Ok(root) = self.root.try_clone() else {
            return Ok(());
        };
        let seen = policy.clone();
        let changed = tokio::task::spawn_blocking(move || changed_since(&root, watched, &seen))
            .await
            .unwrap_or_default();
        if changed.is_empty() {
            return Ok(());
        }
        let changes: Vec<(&str, u64)> =
            changed.iter().map(|c| (c.path.as_str(), c.lines)).collect();
        let (decision, charges) = self.judge_spec_changes(&changes).await?;
        // They happened: counted and noted whatever the verdict.
        self.charge_all(charges).await;
        for c in &changed {
            match &c.texts {
                Some((old, new)) => self.record_task_change(tool, &c.path, old, new).await,
                None => self.record_task_change(tool, &c.path, "", "").await,
            }
        }
        if decision.matched.is_empty() {
            return Ok(());
        }
        let broke: Vec<&str> = changed.iter().map(|c| c.path.as_str()).collect();
        let subject = broke.join(", ");
        match self.settle(&policy, decision, &subject) {
            Ok(_) => Ok(()),
            Err(refused) => Err(ToolError {
                outcome: refused.outcome,
                rule_id: refused.rule_id,
                message: format!(
                    "the command ran, but what it changed is not allowed: {}",
                    refused.message
                ),
                advice: format!(
                    "revert those files (the changes are in the task's history), then make the change within the task's scope and budget; or: {}",
                    refused.advice
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::spec::{Tiers, validate_spec};

    fn spec() -> ActiveSpec {
        let text = "id: FEAT-9\ntitle: t\nrisk_tier: 3\nmode: feature\n\
             change_budget: {max_files: 5, max_loc: 100}\n\
             blast_radius: {modules: [src]}\noperational_rollback_slo: 5m\n\
             scope: {in: [src/], out: [src/vendor/]}\ninvariants: [none]\n\
             acceptance: [{id: A1, given: a, when: b, then: c}]\n\
             non_functional: {perf: {api_p95_ms: 100}}\ncontracts: []\n";
        let report = validate_spec(text, &Tiers::default());
        ActiveSpec::new(&report.spec.expect("spec reads"), &Tiers::default()).unwrap()
    }

    #[test]
    fn created_changed_and_deleted_files_are_found_with_their_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("src")).unwrap();
        std::fs::create_dir_all(p.join("target")).unwrap();
        std::fs::write(p.join("src/a.rs"), "one\ntwo\nthree\n").unwrap();
        std::fs::write(p.join("src/gone.rs"), "x\ny\n").unwrap();
        std::fs::write(p.join("src/same.rs"), "same\n").unwrap();
        std::fs::write(p.join("README.md"), "readme\n").unwrap();
        let root = WorkspaceRoot::open(p).unwrap();
        let policy = Policy::built_in();
        let taken = before(&root, &[spec()]);
        // Texts are kept only inside the scope.
        assert!(taken.texts.contains_key("src/a.rs"));
        assert!(!taken.texts.contains_key("README.md"));

        std::fs::write(p.join("src/a.rs"), "one\n2\nthree\nfour\n").unwrap();
        std::fs::remove_file(p.join("src/gone.rs")).unwrap();
        std::fs::write(p.join("src/new.rs"), "a\nb\nc\n").unwrap();
        std::fs::write(p.join("README.md"), "changed outside\n").unwrap();
        std::fs::write(p.join("target/out.bin"), "build output").unwrap();
        // Rewritten with the same text: not a change.
        std::fs::write(p.join("src/same.rs"), "same\n").unwrap();

        let found = changed_since(&root, taken, &policy);
        let summary: Vec<(&str, u64, bool)> = found
            .iter()
            .map(|c| (c.path.as_str(), c.lines, c.texts.is_some()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("README.md", 0, false),
                ("src/a.rs", 3, true),
                ("src/gone.rs", 2, false),
                ("src/new.rs", 3, true),
            ]
        );
    }
}
