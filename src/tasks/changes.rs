//! What an agent changed under the tasks it holds: each file write or edit
//! it makes while holding a task adds a `changed` event to that task's
//! history, with the path, the lines added and removed and the unified diff.
//! The judge reads them as "the diff"; `task export` sums them per file.

use serde::{Deserialize, Serialize};

/// The kind of a task event that records a file change.
pub const EVENT_KIND: &str = "changed";

/// One file write or edit made under a task (an event's note, as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileChange {
    pub path: String,
    pub tool: String,
    pub added: u64,
    pub removed: u64,
    /// Unified diff (capped; see `diff_truncated`).
    pub diff: String,
    pub diff_truncated: bool,
}

impl FileChange {
    /// The change from `before` to `after`, with its already rendered `diff`.
    pub fn new(tool: &str, path: &str, before: &str, after: &str, diff: (String, bool)) -> Self {
        let (mut added, mut removed) = (0, 0);
        for change in similar::TextDiff::from_lines(before, after).iter_all_changes() {
            match change.tag() {
                similar::ChangeTag::Insert => added += 1,
                similar::ChangeTag::Delete => removed += 1,
                similar::ChangeTag::Equal => {}
            }
        }
        Self {
            path: path.to_string(),
            tool: tool.to_string(),
            added,
            removed,
            diff: diff.0,
            diff_truncated: diff.1,
        }
    }
}

/// A file's changes under a task, summed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileTotal {
    pub path: String,
    pub added: u64,
    pub removed: u64,
    /// How many writes or edits.
    pub changes: u64,
}

/// Per-file totals, in the order files were first changed.
pub fn totals(changes: &[FileChange]) -> Vec<FileTotal> {
    let mut out: Vec<FileTotal> = Vec::new();
    for c in changes {
        match out.iter_mut().find(|t| t.path == c.path) {
            Some(t) => {
                t.added += c.added;
                t.removed += c.removed;
                t.changes += 1;
            }
            None => out.push(FileTotal {
                path: c.path.clone(),
                added: c.added,
                removed: c.removed,
                changes: 1,
            }),
        }
    }
    out
}

/// The changes recorded in a task's history, oldest first.
pub fn from_events(events: &[super::TaskEvent]) -> Vec<FileChange> {
    events
        .iter()
        .filter(|e| e.kind == EVENT_KIND)
        .filter_map(|e| serde_json::from_str(e.note.as_deref()?).ok())
        .collect()
}

/// For the judge: the files with their line counts, then each diff.
pub fn describe(changes: &[FileChange]) -> Option<String> {
    if changes.is_empty() {
        return None;
    }
    let mut text = String::from("Files changed:\n");
    for t in totals(changes) {
        text.push_str(&format!(
            "- {} (+{} -{}, {} change(s))\n",
            t.path, t.added, t.removed, t.changes
        ));
    }
    text.push_str("\nThe diffs, in order:\n");
    for c in changes {
        text.push_str(&c.diff);
        if !c.diff.ends_with('\n') {
            text.push('\n');
        }
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_counted_and_summed_per_file() {
        let a = FileChange::new(
            "file_write",
            "a.rs",
            "",
            "1\n2\n",
            ("+1\n+2\n".into(), false),
        );
        let b = FileChange::new(
            "file_search_replace",
            "a.rs",
            "1\n2\n",
            "1\nB\n",
            ("-2\n+B\n".into(), false),
        );
        let c = FileChange::new("file_write", "b.rs", "x\n", "", ("-x\n".into(), false));
        assert_eq!((a.added, a.removed), (2, 0));
        assert_eq!((b.added, b.removed), (1, 1));
        let t = totals(&[a.clone(), b.clone(), c.clone()]);
        assert_eq!(
            t.iter()
                .map(|t| (t.path.as_str(), t.added, t.removed, t.changes))
                .collect::<Vec<_>>(),
            [("a.rs", 3, 1, 2), ("b.rs", 0, 1, 1)]
        );
        let text = describe(&[a, b, c]).unwrap();
        assert!(
            text.starts_with("Files changed:\n- a.rs (+3 -1, 2 change(s))\n- b.rs (+0 -1"),
            "{text}"
        );
        assert!(text.contains("-2\n+B\n"), "{text}");
        assert!(describe(&[]).is_none());
    }
}
