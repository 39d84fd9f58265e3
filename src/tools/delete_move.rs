//! `delete_file` and `move_file`: removing and renaming entries, confined and
//! judged like writes.
//!
//! Both work on the entry itself, located through its parent directory
//! without following its last component: deleting a symlink removes the link,
//! moving one moves the link, and neither ever reaches what a link points to.
//! A delete is an [`Action::DeleteFile`]; a move is a delete of its source
//! plus a write of its destination. A directory is removed or moved only when
//! the policy allows it (`paths.allow_directory_delete`, else `DELETE-001`),
//! and then every entry inside is judged too, so a directory holding `.git/`
//! or a secret is refused by the rules that guard them.
//!
//! Under an active working spec both count against the change budget: a
//! delete removes the lines of every file it removes; a move changes no line
//! but touches a file at both ends (and an overwritten destination loses its
//! lines).

use std::io::Read;

use rmcp::schemars::{self, JsonSchema};
use serde::{Deserialize, Serialize};

use super::find::EntryType;
use super::{Outcome, ToolError, Toolbox, note_error};
use crate::exec::tree::{self, TreeError};
use crate::exec::{ConfineError, EntryKind, EntryMeta, EntryTarget, WorkspaceRoot};
use crate::policy::Action;

/// Most entries a directory delete or move takes in one call.
pub const MAX_TREE_ENTRIES: usize = 10_000;
/// Largest file whose lines are counted for the change budget; a larger one counts as 0 lines.
const MAX_COUNTED_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Deserialize, JsonSchema)]
pub struct DeleteFileInput {
    /// Path of the file to delete, relative to the workspace root. A symlink is removed itself, never what it points to. A directory (with everything in it) only where the policy allows it.
    pub target_file: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DeleteFileOutput {
    /// Real path of what was deleted, relative to the workspace root.
    pub path: String,
    #[serde(rename = "type")]
    pub kind: EntryType,
    /// Entries removed: 1 for a file or symlink; a directory counts itself and everything it held.
    pub entries_removed: u64,
    /// Lines of text removed, as counted against a working spec's change budget (0 when no spec is active).
    pub lines_removed: u64,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct MoveFileInput {
    /// Path of the file to move or rename, relative to the workspace root. A symlink is moved as a link.
    pub source: String,
    /// Its new path, relative to the workspace root; missing parent directories are created. Name the full new path, not a directory to move into.
    pub destination: String,
    /// Replace an existing file at `destination`. Default: false (the move fails and nothing changes).
    #[serde(default)]
    pub overwrite: Option<bool>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct MoveFileOutput {
    /// Real path the entry had, relative to the workspace root.
    pub source: String,
    /// Real path it has now.
    pub destination: String,
    #[serde(rename = "type")]
    pub kind: EntryType,
    /// True when an existing file at the destination was replaced.
    pub overwritten: bool,
    /// Parent directories created for the destination.
    pub dirs_created: usize,
}

impl DeleteFileOutput {
    pub fn render(&self) -> String {
        match self.kind {
            EntryType::Dir => format!(
                "Deleted directory {} ({} entries).",
                self.path, self.entries_removed
            ),
            EntryType::Symlink => {
                format!("Deleted symlink {} (its target is untouched).", self.path)
            }
            _ => format!("Deleted {}.", self.path),
        }
    }
}

impl MoveFileOutput {
    pub fn render(&self) -> String {
        let replaced = if self.overwritten {
            " (replacing the file that was there)"
        } else {
            ""
        };
        format!("Moved {} to {}{replaced}.", self.source, self.destination)
    }
}

fn reject(e: impl Into<ToolError>) -> ToolError {
    let e = e.into();
    note_error(&e);
    e
}

fn failed(rule: &str, message: String, advice: &str) -> ToolError {
    reject(ToolError::failed(rule, message, advice))
}

fn tree_failed(path: &str, e: TreeError) -> ToolError {
    match e {
        TreeError::TooManyEntries(n) => failed(
            "FILE-006",
            format!("`{path}` holds more than {n} entries; it is not removed or moved in one call"),
            "delete or move its subdirectories one at a time",
        ),
        TreeError::NotUtf8(dir) => failed(
            "FILE-006",
            format!(
                "`{path}` holds an entry in `{dir}` whose name is not UTF-8; the policy cannot judge it"
            ),
            "rename that entry first, or ask a person to remove the directory",
        ),
        TreeError::Io { path: at, source } => failed(
            "FILE-003",
            format!("reading `{at}` failed: {source}"),
            "check the directory's permissions",
        ),
    }
}

fn task_failed(e: String) -> ToolError {
    failed("FILE-003", format!("the task failed: {e}"), "retry")
}

/// The entry at `user_path`, which must exist.
fn existing(root: &WorkspaceRoot, user_path: &str) -> Result<(EntryTarget, EntryMeta), ToolError> {
    let target = root.locate_entry(user_path).map_err(reject)?;
    match target.existing {
        Some(meta) => Ok((target, meta)),
        None => Err(reject(ConfineError::NotFound(user_path.to_string()))),
    }
}

/// Lines in a text file (what deleting it removes); 0 for a binary or very large file.
fn count_lines(root: &WorkspaceRoot, rel: &str) -> u64 {
    let Ok(file) = root.open_walked_file(rel) else {
        return 0;
    };
    let mut reader = std::io::BufReader::new(file.take(MAX_COUNTED_BYTES + 1));
    let mut buf = [0u8; 64 * 1024];
    let (mut lines, mut total, mut last) = (0u64, 0u64, b'\n');
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(_) => return 0,
        };
        let chunk = &buf[..n];
        if (total < 8192 && chunk.contains(&0)) || total + n as u64 > MAX_COUNTED_BYTES {
            return 0;
        }
        lines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
        total += n as u64;
        last = chunk[n - 1];
    }
    lines + u64::from(last != b'\n')
}

impl Toolbox {
    pub async fn delete_file(&self, input: DeleteFileInput) -> Result<DeleteFileOutput, ToolError> {
        let (first, _) = existing(&self.root, &input.target_file)?;
        let _guard = self.locks.lock(&first.rel_path).await;
        drop(first);
        // Locate again under the lock: the entry may have changed while we waited.
        let (target, meta) = existing(&self.root, &input.target_file)?;
        let path = target.rel_path.clone();
        let is_dir = meta.kind == EntryKind::Dir;
        let top = Action::DeleteFile {
            path: &path,
            is_dir,
        };
        // The directory itself first: a refusal should not wait for a walk.
        let mut decision = self.enforce(&[top]).await.inspect_err(note_error)?;
        let inside = if is_dir {
            tree::collect_subtree(&self.root, &path, MAX_TREE_ENTRIES)
                .map_err(|e| tree_failed(&path, e))?
        } else {
            Vec::new()
        };
        if !inside.is_empty() {
            let actions: Vec<Action<'_>> = std::iter::once(top)
                .chain(inside.iter().map(|(p, m)| Action::DeleteFile {
                    path: p,
                    is_dir: m.kind == EntryKind::Dir,
                }))
                .collect();
            decision = self.enforce(&actions).await.inspect_err(note_error)?;
        }
        // What the budget counts: every file removed, with its lines.
        let counting = self.changes_are_measured();
        let files: Vec<(&str, u64)> = std::iter::once((path.as_str(), meta))
            .chain(inside.iter().map(|(p, m)| (p.as_str(), *m)))
            .filter(|(_, m)| m.kind != EntryKind::Dir)
            .map(|(p, m)| {
                let lines = if counting && m.kind == EntryKind::File {
                    count_lines(&self.root, p)
                } else {
                    0
                };
                (p, lines)
            })
            .collect();
        let lines_removed = files.iter().map(|f| f.1).sum();
        let charges = self
            .gate_changes(decision, &files)
            .await
            .inspect_err(note_error)?;
        let entries_removed = crate::exec::run_blocking(move || tree::remove_entry(&target))
            .await
            .map_err(task_failed)?
            .map_err(|e| {
                let partly = if is_dir {
                    "; entries removed before the error stay removed"
                } else {
                    "; nothing was removed"
                };
                failed(
                    "FILE-003",
                    format!("deleting `{path}` failed: {e}{partly}"),
                    "check permissions, then retry",
                )
            })?;
        self.charge_all(charges).await;
        Ok(DeleteFileOutput {
            path,
            kind: meta.kind.into(),
            entries_removed,
            lines_removed,
        })
    }

    pub async fn move_file(&self, input: MoveFileInput) -> Result<MoveFileOutput, ToolError> {
        let overwrite = input.overwrite.unwrap_or(false);
        let (src, _) = existing(&self.root, &input.source)?;
        let dst = self.root.locate_entry(&input.destination).map_err(reject)?;
        // Lock both ends, in a fixed order so two moves cannot deadlock.
        let mut names = [src.rel_path.clone(), dst.rel_path.clone()];
        names.sort();
        drop((src, dst));
        let _first = self.locks.lock(&names[0]).await;
        let _second = if names[0] != names[1] {
            Some(self.locks.lock(&names[1]).await)
        } else {
            None
        };
        let (src, meta) = existing(&self.root, &input.source)?;
        let dst = self.root.locate_entry(&input.destination).map_err(reject)?;
        let (from, to) = (src.rel_path.clone(), dst.rel_path.clone());
        if from == to || to.starts_with(&format!("{from}/")) {
            return Err(failed(
                "MOVE-002",
                format!("`{to}` is `{from}` itself or inside it"),
                "choose a destination outside the source",
            ));
        }
        let is_dir = meta.kind == EntryKind::Dir;
        let replaced = dst.existing;
        match replaced.map(|m| m.kind) {
            Some(EntryKind::Dir) => {
                return Err(reject(ToolError::failed(
                    "FILE-002",
                    format!("the destination `{to}` is an existing directory"),
                    format!(
                        "name the full new path, e.g. `{to}/{}`",
                        from.rsplit('/').next().unwrap_or(&from)
                    ),
                )));
            }
            Some(_) if !overwrite => return Err(destination_exists(&to)),
            _ => {}
        }
        // The policy: a delete of the source and a write of the destination,
        // for the entry and, for a directory, for everything inside it.
        let inside = if is_dir {
            self.enforce(&[Action::DeleteFile {
                path: &from,
                is_dir: true,
            }])
            .await
            .inspect_err(note_error)?;
            tree::collect_subtree(&self.root, &from, MAX_TREE_ENTRIES)
                .map_err(|e| tree_failed(&from, e))?
        } else {
            Vec::new()
        };
        let moved: Vec<(String, String, EntryMeta)> = inside
            .into_iter()
            .map(|(p, m)| {
                let new = format!("{to}{}", &p[from.len()..]);
                (p, new, m)
            })
            .collect();
        let mut actions = vec![
            Action::DeleteFile {
                path: &from,
                is_dir,
            },
            Action::WriteFile {
                path: &to,
                hard_linked: replaced.is_some_and(|m| m.kind == EntryKind::File && m.nlink > 1),
                added: "",
            },
        ];
        for (old, new, m) in &moved {
            actions.push(Action::DeleteFile {
                path: old,
                is_dir: m.kind == EntryKind::Dir,
            });
            actions.push(Action::WriteFile {
                path: new,
                hard_linked: false,
                added: "",
            });
        }
        let decision = self.enforce(&actions).await.inspect_err(note_error)?;
        // The budget: both ends of every file moved; an overwritten file loses its lines.
        let lost = match replaced {
            Some(m) if m.kind == EntryKind::File && self.changes_are_measured() => {
                count_lines(&self.root, &to)
            }
            _ => 0,
        };
        let mut changes: Vec<(&str, u64)> = Vec::new();
        if !is_dir {
            changes.push((&from, 0));
            changes.push((&to, lost));
        }
        for (old, new, m) in &moved {
            if m.kind != EntryKind::Dir {
                changes.push((old, 0));
                changes.push((new, 0));
            }
        }
        let charges = self
            .gate_changes(decision, &changes)
            .await
            .inspect_err(note_error)?;
        let report = crate::exec::run_blocking(move || tree::move_entry(&src, &dst, overwrite))
            .await
            .map_err(task_failed)?
            .map_err(|e| match e.raw_os_error() {
                Some(code) if code == rustix::io::Errno::EXIST.raw_os_error() => {
                    destination_exists(&to)
                }
                _ => failed(
                    "FILE-003",
                    format!("moving `{from}` to `{to}` failed: {e}; nothing was moved"),
                    "check the paths and permissions, then retry",
                ),
            })?;
        self.charge_all(charges).await;
        Ok(MoveFileOutput {
            source: from,
            destination: to,
            kind: meta.kind.into(),
            overwritten: replaced.is_some(),
            dirs_created: report.dirs_created,
        })
    }
}

fn destination_exists(to: &str) -> ToolError {
    reject(ToolError {
        outcome: Outcome::Failed,
        rule_id: "MOVE-001".into(),
        message: format!("the destination `{to}` already exists; nothing was moved"),
        advice: "choose another destination, or set overwrite to true to replace it".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_counted_with_or_without_a_final_newline() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), "1\n2\n3").unwrap();
        std::fs::write(dir.path().join("b"), "1\n2\n").unwrap();
        std::fs::write(dir.path().join("c"), "").unwrap();
        std::fs::write(dir.path().join("bin"), b"x\0y\n").unwrap();
        let root = WorkspaceRoot::open(dir.path()).unwrap();
        assert_eq!(count_lines(&root, "a"), 3);
        assert_eq!(count_lines(&root, "b"), 2);
        assert_eq!(count_lines(&root, "c"), 0);
        assert_eq!(count_lines(&root, "bin"), 0);
    }
}
