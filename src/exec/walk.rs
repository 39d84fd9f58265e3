//! The workspace walk behind `grep_search` and `file_search`: ripgrep's own
//! `ignore` crate, walking in parallel, honouring `.gitignore` (inside a git
//! repository or not), `.ignore` and `.git/info/exclude` — but no ignore file
//! above the root and no global git configuration, so what a walk shows
//! depends only on the workspace. Directories named in [`DEFAULT_EXCLUDED_DIRS`]
//! are never entered; hidden files are walked (`.github/` is source too).
//!
//! Symlinks are never followed (`follow_links(false)`): a walk stays inside
//! the root, and a symlink loop cannot make it spin. Only regular files are
//! handed to visitors, by workspace-relative path; their contents must be
//! opened with [`WorkspaceRoot::open_walked_file`], beneath the root.
//!
//! What may be seen is not decided here: the caller passes the policy in as a
//! `keep` closure, asked for every directory (before it is entered) and every
//! file.

use std::path::PathBuf;
use std::sync::Arc;

use globset::{GlobBuilder, GlobMatcher};
use ignore::{WalkBuilder, WalkState};

use super::atomic::TEMP_MARKER;
use super::workspace::{STATE_DIR, WorkspaceRoot};

/// Directories a walk never enters, at any depth.
pub const DEFAULT_EXCLUDED_DIRS: &[&str] = &[".git", "target", "node_modules", STATE_DIR];

/// Whether a workspace-relative path may be seen; `is_dir` says what it is.
pub type KeepPath = Arc<dyn Fn(&str, bool) -> bool + Send + Sync>;

/// A caller's glob for paths: without a `/` it matches a file or directory
/// name at any depth (`*.rs`, `tests`); with one it matches the whole
/// workspace-relative path (`src/**/*.rs`; a leading `/` is dropped).
#[derive(Debug, Clone)]
pub struct PathGlob {
    matcher: GlobMatcher,
    name_only: bool,
}

impl PathGlob {
    pub fn new(pattern: &str) -> Result<Self, globset::Error> {
        let trimmed = pattern.trim().trim_start_matches('/');
        let name_only = !trimmed.contains('/');
        let glob = GlobBuilder::new(trimmed)
            .literal_separator(true)
            .backslash_escape(true)
            .build()?;
        Ok(Self {
            matcher: glob.compile_matcher(),
            name_only,
        })
    }

    pub fn is_match(&self, rel: &str) -> bool {
        if self.name_only {
            self.matcher.is_match(rel.rsplit('/').next().unwrap_or(rel))
        } else {
            self.matcher.is_match(rel)
        }
    }
}

/// What a walk shows besides the policy: files matching `include` (all files
/// when none), minus paths matching `exclude` (a matching directory is not entered).
#[derive(Debug, Clone, Default)]
pub struct WalkFilter {
    pub include: Option<PathGlob>,
    pub exclude: Option<PathGlob>,
}

/// A configured walk of the whole workspace.
pub struct WorkspaceWalk {
    builder: WalkBuilder,
    root: PathBuf,
    include: Option<PathGlob>,
}

impl WorkspaceWalk {
    pub fn new(root: &WorkspaceRoot, filter: WalkFilter, keep: KeepPath) -> Self {
        let root_path = root.path().to_path_buf();
        let prefix_len = root_path.as_os_str().len() + 1;
        let mut builder = WalkBuilder::new(&root_path);
        builder
            .follow_links(false)
            .hidden(false)
            .parents(false)
            .git_global(false)
            .git_ignore(true)
            .git_exclude(true)
            .ignore(true)
            .require_git(false)
            .threads(std::thread::available_parallelism().map_or(2, |n| n.get().min(8)));
        let exclude = filter.exclude.clone();
        builder.filter_entry(move |entry| {
            if entry.depth() == 0 {
                return true;
            }
            let is_dir = entry.file_type().is_some_and(|t| t.is_dir());
            let name = entry.file_name().as_encoded_bytes();
            if is_dir && DEFAULT_EXCLUDED_DIRS.iter().any(|d| d.as_bytes() == name) {
                return false;
            }
            let Some(rel) = rel_path(entry.path(), prefix_len) else {
                // Not UTF-8: the policy's globs cannot judge it, so it is not shown.
                return false;
            };
            if rel.contains(TEMP_MARKER) {
                return false;
            }
            if exclude.as_ref().is_some_and(|g| g.is_match(rel)) {
                return false;
            }
            keep(rel, is_dir)
        });
        Self {
            builder,
            root: root_path,
            include: filter.include,
        }
    }

    /// Walk in parallel. `make` builds one visitor per walking thread; each is
    /// handed the workspace-relative path of every regular file the walk
    /// shows, and stops the whole walk by returning `false`. A visitor is
    /// dropped when its thread finishes, so it can hand its results over in `Drop`.
    pub fn visit_files<'s, V, F>(self, mut make: F)
    where
        F: FnMut() -> V,
        V: FnMut(&str) -> bool + Send + 's,
    {
        let prefix_len = self.root.as_os_str().len() + 1;
        let include = self.include;
        self.builder.build_parallel().run(|| {
            let mut visit = make();
            let include = include.clone();
            Box::new(move |result| {
                let Ok(entry) = result else {
                    return WalkState::Continue;
                };
                if !entry.file_type().is_some_and(|t| t.is_file()) {
                    return WalkState::Continue;
                }
                let Some(rel) = rel_path(entry.path(), prefix_len) else {
                    return WalkState::Continue;
                };
                if include.as_ref().is_some_and(|g| !g.is_match(rel)) {
                    return WalkState::Continue;
                }
                if visit(rel) {
                    WalkState::Continue
                } else {
                    WalkState::Quit
                }
            })
        });
    }
}

fn rel_path(path: &std::path::Path, prefix_len: usize) -> Option<&str> {
    let bytes = path.as_os_str().as_encoded_bytes();
    std::str::from_utf8(bytes.get(prefix_len..)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_glob_without_a_slash_matches_names_at_any_depth() {
        let g = PathGlob::new("*.rs").unwrap();
        assert!(g.is_match("main.rs") && g.is_match("src/deep/lib.rs"));
        assert!(!g.is_match("src/lib.rs.orig"));
        let g = PathGlob::new("tests").unwrap();
        assert!(g.is_match("tests") && g.is_match("crates/x/tests"));
    }

    #[test]
    fn a_glob_with_a_slash_matches_the_whole_path() {
        let g = PathGlob::new("src/**/*.rs").unwrap();
        assert!(g.is_match("src/a/b.rs") && g.is_match("src/b.rs"));
        assert!(!g.is_match("lib/src/b.rs"));
        let g = PathGlob::new("/src/*.rs").unwrap();
        assert!(g.is_match("src/b.rs") && !g.is_match("src/a/b.rs"));
        assert!(PathGlob::new("src/[a").is_err());
    }

    fn walk_all(root: &WorkspaceRoot, filter: WalkFilter, keep: KeepPath) -> Vec<String> {
        let found = Arc::new(std::sync::Mutex::new(Vec::new()));
        WorkspaceWalk::new(root, filter, keep).visit_files(|| {
            let found = found.clone();
            move |rel: &str| {
                found.lock().unwrap().push(rel.to_string());
                true
            }
        });
        let mut found = found.lock().unwrap().clone();
        found.sort();
        found
    }

    #[test]
    fn the_walk_honours_gitignore_defaults_filters_and_keep() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path();
        for (p, text) in [
            ("src/a.rs", "a"),
            ("src/gen.rs", "g"),
            ("notes.md", "n"),
            (".gitignore", "gen.rs\n"),
            (".github/ci.yml", "c"),
            (".git/config", "x"),
            ("target/debug/x", "x"),
            ("node_modules/m/i.js", "x"),
            (".arbiter/arbiter.db", "x"),
            ("secret/.env", "x"),
            ("src/.a.rs.arbiter-tmp-1-2", "x"),
        ] {
            let p = ws.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        std::os::unix::fs::symlink("/etc", ws.join("etc")).unwrap();
        std::os::unix::fs::symlink(".", ws.join("loop")).unwrap();
        let root = WorkspaceRoot::open(ws).unwrap();
        let keep: KeepPath = Arc::new(|rel: &str, _| !rel.ends_with(".env"));
        assert_eq!(
            walk_all(&root, WalkFilter::default(), keep.clone()),
            [".github/ci.yml", ".gitignore", "notes.md", "src/a.rs"]
        );
        let filter = WalkFilter {
            include: Some(PathGlob::new("*.rs").unwrap()),
            exclude: None,
        };
        assert_eq!(walk_all(&root, filter, keep.clone()), ["src/a.rs"]);
        let filter = WalkFilter {
            include: None,
            exclude: Some(PathGlob::new("src").unwrap()),
        };
        assert_eq!(
            walk_all(&root, filter, keep),
            [".github/ci.yml", ".gitignore", "notes.md"]
        );
    }
}
