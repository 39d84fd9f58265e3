//! `list_dir`, `grep_search` and `file_search`: finding things in the
//! workspace. Names and argument names follow the tools agents already know.
//!
//! All three only ever show what a `file_read` could read: every path a walk
//! or a listing meets is put to the policy as a read ([`Action::ReadFile`],
//! no allocation when no rule matches), and what the policy refuses is left
//! out silently — a secret's name is not shown, let alone a line of it. The
//! server's state directory is never shown, and no symlink is followed out of
//! the root. Every path in a result is relative to the workspace root.
//!
//! The work runs on a blocking thread (the server's runtime is single
//! threaded), with a duplicated root descriptor and the policy in force when
//! the call began. Every result is bounded in entries, bytes and time, and says
//! `truncated` when it stopped at a bound.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use grep_regex::{RegexMatcher, RegexMatcherBuilder};
use grep_searcher::{
    BinaryDetection, Searcher, SearcherBuilder, Sink, SinkContext, SinkContextKind, SinkMatch,
};
use nucleo_matcher::pattern::{CaseMatching, Normalization, Pattern};
use nucleo_matcher::{Config, Matcher, Utf32Str};
use rmcp::schemars::{self, JsonSchema};
use serde::{Deserialize, Serialize};

use super::{ToolError, Toolbox, note_decision, note_error};
use crate::exec::tree::{ListedEntry, Visit, list_tree};
use crate::exec::walk::{DEFAULT_EXCLUDED_DIRS, KeepPath, PathGlob, WalkFilter, WorkspaceWalk};
use crate::exec::workspace::is_state_path;
use crate::exec::{ConfineError, EntryKind, EntryMeta, WorkspaceRoot};
use crate::policy::{Action, Decision, Policy};

/// Entries one `list_dir` reply holds at most.
pub const LIST_MAX_ENTRIES: usize = 1000;
/// Deepest `list_dir` listing.
pub const LIST_MAX_DEPTH: u32 = 10;
/// `grep_search` matches by default, and at most.
pub const GREP_DEFAULT_RESULTS: u32 = 50;
pub const GREP_MAX_RESULTS: u32 = 500;
/// Context lines at most, before and after.
pub const GREP_MAX_CONTEXT: u32 = 10;
/// Longest line shown in a match or context line; longer ones are cut.
pub const GREP_MAX_LINE_BYTES: usize = 500;
/// `file_search` results by default, and at most.
pub const FIND_DEFAULT_RESULTS: u32 = 20;
pub const FIND_MAX_RESULTS: u32 = 200;
/// How long a search walks before it returns what it has, `truncated`.
pub const SEARCH_TIME_LIMIT: Duration = Duration::from_secs(20);

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListDirInput {
    /// Directory to list, relative to the workspace root; `.` (or an empty string) is the root.
    pub relative_workspace_path: String,
    /// Levels to list: 1 (the default) lists the directory's own entries, 2 also what its subdirectories hold, and so on; at most 10. `.git`, `target` and `node_modules` are listed but not entered.
    #[serde(default)]
    pub depth: Option<u32>,
}

/// What an entry is (a symlink is reported as a symlink, not as what it points to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntryType {
    File,
    Dir,
    Symlink,
    /// FIFO, socket or device.
    Other,
}

impl From<EntryKind> for EntryType {
    fn from(kind: EntryKind) -> Self {
        match kind {
            EntryKind::File => Self::File,
            EntryKind::Dir => Self::Dir,
            EntryKind::Symlink => Self::Symlink,
            EntryKind::Other => Self::Other,
        }
    }
}

/// Where a symlink leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// To an existing file or directory inside the workspace (`link_target`).
    Inside,
    /// Out of the workspace; where is not shown, and tools will not follow it.
    Outside,
    /// To nothing that exists.
    Broken,
    /// Into a loop of symlinks.
    Loop,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ListedItem {
    /// Path relative to the workspace root.
    pub path: String,
    #[serde(rename = "type")]
    pub kind: EntryType,
    /// Size in bytes (files only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Last modification, RFC 3339 (UTC).
    pub modified: String,
    /// For a symlink: where it leads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkState>,
    /// For a symlink that stays inside: the real workspace-relative path it leads to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ListDirOutput {
    /// The directory listed, relative to the workspace root (`.` for the root).
    pub path: String,
    /// Entries, breadth first: the directory's own entries by name, then the next level.
    pub entries: Vec<ListedItem>,
    /// True when the listing stopped at 1000 entries.
    pub truncated: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct GrepSearchInput {
    /// What to find: a regular expression (Rust/ripgrep syntax, matched line by line), or literal text when `fixed_string` is true.
    pub query: String,
    /// Only search files matching this glob: `*.rs` matches a file name at any depth, `src/**/*.ts` a path from the workspace root.
    #[serde(default)]
    pub include_pattern: Option<String>,
    /// Leave out files and directories matching this glob (same syntax as include_pattern).
    #[serde(default)]
    pub exclude_pattern: Option<String>,
    /// Match case exactly. Default: true.
    #[serde(default)]
    pub case_sensitive: Option<bool>,
    /// Treat `query` as literal text, not a regular expression. Default: false.
    #[serde(default)]
    pub fixed_string: Option<bool>,
    /// Lines of context to show before and after each match, 0 to 10. Default: 0.
    #[serde(default)]
    pub context_lines: Option<u32>,
    /// Most matches to return, 1 to 500. Default: 50.
    #[serde(default)]
    pub max_results: Option<u32>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ContextLine {
    pub line_number: u64,
    pub line: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct GrepMatch {
    /// File, relative to the workspace root.
    pub path: String,
    /// 1-based line number.
    pub line_number: u64,
    /// The matching line (cut at 500 bytes, shown lossily if not UTF-8).
    pub line: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub context_before: Vec<ContextLine>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub context_after: Vec<ContextLine>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct GrepSearchOutput {
    /// Matches, ordered by path and line.
    pub matches: Vec<GrepMatch>,
    /// Files searched (binary files are skipped as soon as they are recognised).
    pub files_searched: u64,
    /// True when the search stopped at `max_results`, the reply size or the time limit: there may be more matches.
    pub truncated: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct FileSearchInput {
    /// Part of a file's path, matched fuzzily (`srvmod` finds `src/server/mod.rs`). fzf syntax works: `'exact`, `^prefix`, `suffix$`, `!not`; words separated by spaces must all match.
    pub query: String,
    /// Most files to return, 1 to 200. Default: 20.
    #[serde(default)]
    pub max_results: Option<u32>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct FoundFile {
    /// File, relative to the workspace root.
    pub path: String,
    /// Match score: higher is better.
    pub score: u32,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct FileSearchOutput {
    /// Best matches first.
    pub files: Vec<FoundFile>,
    /// Files that matched at all.
    pub total_matches: u64,
    /// True when more files matched than were returned, or the walk stopped at the time limit.
    pub truncated: bool,
}

impl ListDirOutput {
    pub fn render(&self) -> String {
        let mut text = String::with_capacity(self.entries.len() * 48);
        for e in &self.entries {
            text.push_str(&e.path);
            match e.kind {
                EntryType::Dir => text.push('/'),
                EntryType::Symlink => match (&e.link, &e.link_target) {
                    (_, Some(target)) => {
                        text.push_str(" -> ");
                        text.push_str(target);
                    }
                    (Some(LinkState::Outside), _) => text.push_str(" -> (outside the workspace)"),
                    (Some(LinkState::Loop), _) => text.push_str(" -> (symlink loop)"),
                    _ => text.push_str(" -> (broken)"),
                },
                EntryType::Other => text.push_str(" (special file)"),
                EntryType::File => {}
            }
            if let Some(size) = e.size {
                text.push_str(&format!("  {size} B"));
            }
            text.push_str("  ");
            text.push_str(&e.modified);
            text.push('\n');
        }
        if self.entries.is_empty() {
            text.push_str(&format!("[`{}` is empty]\n", self.path));
        }
        if self.truncated {
            text.push_str(&format!(
                "[truncated at {LIST_MAX_ENTRIES} entries: list a subdirectory, or a smaller depth]\n"
            ));
        }
        text
    }
}

impl GrepSearchOutput {
    /// ripgrep's layout: `path:line:text` for a match, `path-line-text` for
    /// context, `--` between groups that are not contiguous.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let with_context = self.has_context();
        let mut last: Option<(&str, u64)> = None;
        for m in &self.matches {
            let first = m
                .context_before
                .first()
                .map_or(m.line_number, |c| c.line_number);
            if with_context
                && let Some((path, end)) = last
                && (path != m.path || first > end + 1)
            {
                text.push_str("--\n");
            }
            for c in &m.context_before {
                if last.is_some_and(|(p, l)| p == m.path && c.line_number <= l) {
                    continue;
                }
                text.push_str(&format!("{}-{}-{}\n", m.path, c.line_number, c.line));
            }
            text.push_str(&format!("{}:{}:{}\n", m.path, m.line_number, m.line));
            for c in &m.context_after {
                text.push_str(&format!("{}-{}-{}\n", m.path, c.line_number, c.line));
            }
            let end = m
                .context_after
                .last()
                .map_or(m.line_number, |c| c.line_number);
            last = Some((&m.path, end));
        }
        if self.matches.is_empty() {
            text.push_str(&format!("No matches in {} files.\n", self.files_searched));
        }
        if self.truncated {
            text.push_str(&format!(
                "[truncated: {} matches shown; narrow the query or include_pattern, or raise max_results]\n",
                self.matches.len()
            ));
        }
        text
    }

    fn has_context(&self) -> bool {
        self.matches
            .iter()
            .any(|m| !m.context_before.is_empty() || !m.context_after.is_empty())
    }
}

impl FileSearchOutput {
    pub fn render(&self) -> String {
        let mut text: String = self.files.iter().map(|f| format!("{}\n", f.path)).collect();
        if self.files.is_empty() {
            text.push_str("No file matches.\n");
        }
        if self.truncated {
            text.push_str(&format!(
                "[{} of {} matching files shown, best first]\n",
                self.files.len(),
                self.total_matches
            ));
        }
        text
    }
}

/// Whether the policy lets `rel` be seen. A directory is hidden only by a
/// rule that names it (a default-deny policy still lets a walk reach the
/// files its rules allow); a file by anything that would refuse its read.
pub fn may_see(policy: &Policy, rel: &str, is_dir: bool) -> bool {
    let decision = policy.evaluate(&Action::ReadFile { path: rel });
    decision.is_allowed() || (is_dir && decision.matched.iter().all(|r| &*r.id == "PATH-DEFAULT"))
}

fn search_failed(rule: &str, message: String, advice: &str) -> ToolError {
    let e = ToolError::failed(rule, message, advice);
    note_error(&e);
    e
}

fn reject(e: impl Into<ToolError>) -> ToolError {
    let e = e.into();
    note_error(&e);
    e
}

fn task_failed(e: tokio::task::JoinError) -> ToolError {
    reject(ToolError::failed(
        "FILE-003",
        format!("the search task failed: {e}"),
        "retry",
    ))
}

fn cloned_root(root: &WorkspaceRoot) -> Result<WorkspaceRoot, ToolError> {
    root.try_clone().map_err(|e| {
        reject(ToolError::failed(
            "FILE-003",
            format!("the workspace root cannot be opened again: {e}"),
            "retry",
        ))
    })
}

impl Toolbox {
    pub async fn list_dir(&self, input: ListDirInput) -> Result<ListDirOutput, ToolError> {
        let (dir, base) =
            self.root
                .open_dir(&input.relative_workspace_path)
                .map_err(|e| match e {
                    ConfineError::NotRegular { path, .. } => reject(ToolError::failed(
                        "FILE-002",
                        format!("`{path}` is a file, not a directory"),
                        "read it with file_read, or list its directory",
                    )),
                    e => reject(e),
                })?;
        if base.is_empty() {
            note_decision(&Decision::allow());
        } else {
            self.enforce(&[Action::ReadFile { path: &base }])
                .await
                .inspect_err(note_error)?;
        }
        let depth = input.depth.unwrap_or(1).clamp(1, LIST_MAX_DEPTH);
        let policy = self.policy.load_full();
        let root = cloned_root(&self.root)?;
        let listed =
            tokio::task::spawn_blocking(move || list_visible(&root, &policy, dir, &base, depth))
                .await
                .map_err(task_failed)?
                .map_err(|e| {
                    reject(ToolError::failed(
                        "FILE-003",
                        format!("listing `{}` failed: {e}", input.relative_workspace_path),
                        "check the directory's permissions",
                    ))
                })?;
        Ok(listed)
    }

    pub async fn grep_search(&self, input: GrepSearchInput) -> Result<GrepSearchOutput, ToolError> {
        if input.query.is_empty() {
            return Err(search_failed(
                "FIND-001",
                "the query is empty".into(),
                "send the text or regular expression to find",
            ));
        }
        let matcher = RegexMatcherBuilder::new()
            .case_insensitive(!input.case_sensitive.unwrap_or(true))
            .fixed_strings(input.fixed_string.unwrap_or(false))
            .line_terminator(Some(b'\n'))
            .build(&input.query)
            .map_err(|e| {
                search_failed(
                    "FIND-001",
                    format!(
                        "the query is not a usable regular expression: {}",
                        one_line(&e.to_string())
                    ),
                    "fix the pattern, or set fixed_string to true to search for the text literally",
                )
            })?;
        let filter = walk_filter(&input.include_pattern, &input.exclude_pattern)?;
        note_decision(&Decision::allow());
        let options = GrepOptions {
            context: input.context_lines.unwrap_or(0).min(GREP_MAX_CONTEXT) as usize,
            max_results: input
                .max_results
                .unwrap_or(GREP_DEFAULT_RESULTS)
                .clamp(1, GREP_MAX_RESULTS) as usize,
            max_bytes: self.limits.read_max_bytes,
        };
        let policy = self.policy.load_full();
        let root = cloned_root(&self.root)?;
        tokio::task::spawn_blocking(move || grep_workspace(&root, policy, filter, matcher, options))
            .await
            .map_err(task_failed)
    }

    pub async fn file_search(&self, input: FileSearchInput) -> Result<FileSearchOutput, ToolError> {
        if input.query.trim().is_empty() {
            return Err(search_failed(
                "FIND-001",
                "the query is empty".into(),
                "send part of the file's name or path",
            ));
        }
        note_decision(&Decision::allow());
        let max = input
            .max_results
            .unwrap_or(FIND_DEFAULT_RESULTS)
            .clamp(1, FIND_MAX_RESULTS) as usize;
        let policy = self.policy.load_full();
        let root = cloned_root(&self.root)?;
        tokio::task::spawn_blocking(move || find_files(&root, policy, &input.query, max))
            .await
            .map_err(task_failed)
    }
}

fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn walk_filter(
    include: &Option<String>,
    exclude: &Option<String>,
) -> Result<WalkFilter, ToolError> {
    let compile = |field: &str, pattern: &Option<String>| -> Result<Option<PathGlob>, ToolError> {
        match pattern.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(p) => PathGlob::new(p).map(Some).map_err(|e| {
                search_failed(
                    "FIND-002",
                    format!("{field} `{p}` is not a valid glob: {e}"),
                    "send a glob such as `*.rs` or `src/**/*.ts`",
                )
            }),
        }
    };
    Ok(WalkFilter {
        include: compile("include_pattern", include)?,
        exclude: compile("exclude_pattern", exclude)?,
    })
}

fn keep_visible(policy: Arc<Policy>) -> KeepPath {
    Arc::new(move |rel: &str, is_dir: bool| may_see(&policy, rel, is_dir))
}

fn rfc3339(mtime: (i64, u32)) -> String {
    time::OffsetDateTime::from_unix_timestamp(mtime.0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// List what the policy lets be seen; symlinks are resolved (inside the root
/// only) to say where they lead, and one leading to a hidden path is hidden.
fn list_visible(
    root: &WorkspaceRoot,
    policy: &Policy,
    dir: std::os::fd::OwnedFd,
    base: &str,
    depth: u32,
) -> std::io::Result<ListDirOutput> {
    let mut links: HashMap<String, (LinkState, Option<String>)> = HashMap::new();
    let visit = |rel: &str, meta: &EntryMeta| -> Visit {
        let is_dir = meta.kind == EntryKind::Dir;
        if is_state_path(rel)
            || rel.contains(crate::exec::atomic::TEMP_MARKER)
            || !may_see(policy, rel, is_dir)
        {
            return Visit::Hide;
        }
        if meta.kind == EntryKind::Symlink {
            let state = match root.resolve_inside(rel) {
                Ok((target, kind)) => {
                    if !may_see(policy, &target, kind == EntryKind::Dir) {
                        return Visit::Hide;
                    }
                    let shown = if target.is_empty() {
                        ".".into()
                    } else {
                        target
                    };
                    (LinkState::Inside, Some(shown))
                }
                Err(ConfineError::NotFound(_) | ConfineError::NotADirectory(_)) => {
                    (LinkState::Broken, None)
                }
                Err(ConfineError::SymlinkLoop(_)) => (LinkState::Loop, None),
                Err(_) => (LinkState::Outside, None),
            };
            links.insert(rel.to_string(), state);
            return Visit::Show;
        }
        let name = rel.rsplit('/').next().unwrap_or(rel);
        if is_dir && DEFAULT_EXCLUDED_DIRS.contains(&name) {
            Visit::Show
        } else {
            Visit::ShowAndDescend
        }
    };
    let (entries, truncated) = list_tree(root, dir, base, depth, LIST_MAX_ENTRIES, visit)?;
    let entries = entries
        .into_iter()
        .map(|ListedEntry { rel_path, meta, .. }| {
            let (link, link_target) = links
                .remove(&rel_path)
                .map_or((None, None), |(state, target)| (Some(state), target));
            ListedItem {
                kind: meta.kind.into(),
                size: (meta.kind == EntryKind::File).then_some(meta.size),
                modified: rfc3339(meta.mtime),
                link,
                link_target,
                path: rel_path,
            }
        })
        .collect();
    Ok(ListDirOutput {
        path: if base.is_empty() {
            ".".into()
        } else {
            base.to_string()
        },
        entries,
        truncated,
    })
}

struct GrepOptions {
    context: usize,
    max_results: usize,
    max_bytes: usize,
}

/// What the searching threads share.
struct GrepShared {
    max_results: usize,
    found: AtomicU64,
    files_searched: AtomicU64,
    stop: AtomicBool,
    truncated: AtomicBool,
    deadline: Instant,
    matches: Mutex<Vec<GrepMatch>>,
}

impl GrepShared {
    fn halt(&self) {
        self.truncated.store(true, Ordering::Relaxed);
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn grep_workspace(
    root: &WorkspaceRoot,
    policy: Arc<Policy>,
    filter: WalkFilter,
    matcher: RegexMatcher,
    options: GrepOptions,
) -> GrepSearchOutput {
    let shared = GrepShared {
        max_results: options.max_results,
        found: AtomicU64::new(0),
        files_searched: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        truncated: AtomicBool::new(false),
        deadline: Instant::now() + SEARCH_TIME_LIMIT,
        matches: Mutex::new(Vec::new()),
    };
    let context = options.context;
    WorkspaceWalk::new(root, filter, keep_visible(policy)).visit_files(|| {
        let mut searcher = SearcherBuilder::new()
            .binary_detection(BinaryDetection::quit(b'\x00'))
            .line_number(true)
            .before_context(context)
            .after_context(context)
            .build();
        let matcher = matcher.clone();
        let shared = &shared;
        let mut buffer = vec![0u8; WHOLE_FILE_BYTES];
        move |rel: &str| {
            if shared.stop.load(Ordering::Relaxed) {
                return false;
            }
            if Instant::now() > shared.deadline {
                shared.halt();
                return false;
            }
            let Ok(mut file) = root.open_walked_file(rel) else {
                return true;
            };
            shared.files_searched.fetch_add(1, Ordering::Relaxed);
            let mut sink = CollectMatches {
                path: rel,
                shared,
                matches: Vec::new(),
                before: Vec::new(),
            };
            // Most files fit the thread's buffer: read whole in one call (and
            // one more to see the end), then search the bytes in place.
            // Larger ones are streamed, starting with what was read.
            let _ = match fill(&mut file, &mut buffer) {
                Ok(Some(len)) if !has_utf16_bom(&buffer[..len]) => {
                    searcher.search_slice(&matcher, &buffer[..len], &mut sink)
                }
                Ok(Some(len)) => searcher.search_reader(&matcher, &buffer[..len], &mut sink),
                Ok(None) => searcher.search_reader(&matcher, (&buffer[..]).chain(&file), &mut sink),
                Err(_) => Ok(()),
            };
            if !sink.matches.is_empty() {
                let found = std::mem::take(&mut sink.matches);
                if let Ok(mut all) = shared.matches.lock() {
                    all.extend(found);
                }
            }
            !shared.stop.load(Ordering::Relaxed)
        }
    });
    let mut matches = shared.matches.into_inner().unwrap_or_default();
    let mut truncated = shared.truncated.into_inner();
    matches.sort_by(|a, b| (&a.path, a.line_number).cmp(&(&b.path, b.line_number)));
    if matches.len() > options.max_results {
        matches.truncate(options.max_results);
        truncated = true;
    }
    // Keep the reply within the byte bound, at a match boundary.
    let mut bytes = 0;
    let mut keep = matches.len();
    for (i, m) in matches.iter().enumerate() {
        bytes += m.path.len() * (1 + m.context_before.len() + m.context_after.len())
            + m.line.len()
            + m.context_before
                .iter()
                .chain(&m.context_after)
                .map(|c| c.line.len() + 8)
                .sum::<usize>()
            + 32;
        if bytes > options.max_bytes {
            keep = i;
            truncated = true;
            break;
        }
    }
    matches.truncate(keep);
    GrepSearchOutput {
        matches,
        files_searched: shared.files_searched.into_inner(),
        truncated,
    }
}

/// Files up to this size are read whole and searched in place.
const WHOLE_FILE_BYTES: usize = 256 * 1024;

/// Read `file` into `buffer`: `Some(len)` when it all fit, `None` when the
/// buffer filled first (the rest is still to be read from `file`).
fn fill(file: &mut std::fs::File, buffer: &mut [u8]) -> std::io::Result<Option<usize>> {
    let mut len = 0;
    while len < buffer.len() {
        match file.read(&mut buffer[len..]) {
            Ok(0) => return Ok(Some(len)),
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// UTF-16 text (with its byte-order mark) is searched through the
/// transcoding reader, as ripgrep does.
fn has_utf16_bom(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF])
}

/// Collects one file's matches with their context lines.
struct CollectMatches<'a> {
    path: &'a str,
    shared: &'a GrepShared,
    matches: Vec<GrepMatch>,
    /// Context lines seen before the next match.
    before: Vec<ContextLine>,
}

impl Sink for CollectMatches<'_> {
    type Error = std::io::Error;

    fn matched(&mut self, _: &Searcher, m: &SinkMatch<'_>) -> Result<bool, std::io::Error> {
        let n = self.shared.found.fetch_add(1, Ordering::Relaxed);
        if n as usize >= self.shared.max_results {
            self.shared.halt();
            return Ok(false);
        }
        self.matches.push(GrepMatch {
            path: self.path.to_string(),
            line_number: m.line_number().unwrap_or(0),
            line: shown_line(m.bytes()),
            context_before: std::mem::take(&mut self.before),
            context_after: Vec::new(),
        });
        Ok(true)
    }

    fn context(&mut self, _: &Searcher, c: &SinkContext<'_>) -> Result<bool, std::io::Error> {
        let line = ContextLine {
            line_number: c.line_number().unwrap_or(0),
            line: shown_line(c.bytes()),
        };
        match c.kind() {
            SinkContextKind::Before => self.before.push(line),
            SinkContextKind::After => {
                if let Some(last) = self.matches.last_mut() {
                    last.context_after.push(line);
                }
            }
            SinkContextKind::Other => {}
        }
        Ok(true)
    }

    fn context_break(&mut self, _: &Searcher) -> Result<bool, std::io::Error> {
        self.before.clear();
        Ok(true)
    }
}

/// A line as shown: without its terminator, lossily decoded, cut at the bound.
fn shown_line(bytes: &[u8]) -> String {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    if bytes.len() <= GREP_MAX_LINE_BYTES {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let mut cut = String::from_utf8_lossy(&bytes[..GREP_MAX_LINE_BYTES]).into_owned();
    // A cut through a multi-byte character shows as U+FFFD; drop it.
    if cut.ends_with('\u{FFFD}') {
        cut.pop();
    }
    cut.push_str(" …[line cut]");
    cut
}

/// Rank: higher score first, then the shorter path, then by name.
type Ranked = (u32, Reverse<usize>, Reverse<String>);

fn find_files(
    root: &WorkspaceRoot,
    policy: Arc<Policy>,
    query: &str,
    max: usize,
) -> FileSearchOutput {
    let pattern = Pattern::parse(query, CaseMatching::Smart, Normalization::Smart);
    let best: Mutex<Vec<Ranked>> = Mutex::new(Vec::new());
    let total = AtomicU64::new(0);
    let timed_out = AtomicBool::new(false);
    let deadline = Instant::now() + SEARCH_TIME_LIMIT;
    WorkspaceWalk::new(root, WalkFilter::default(), keep_visible(policy)).visit_files(|| {
        let mut top = TopFiles {
            heap: BinaryHeap::new(),
            max,
            out: &best,
        };
        let mut matcher = Matcher::new(Config::DEFAULT.match_paths());
        let mut chars = Vec::new();
        let pattern = &pattern;
        let total = &total;
        let timed_out = &timed_out;
        move |rel: &str| {
            if Instant::now() > deadline {
                timed_out.store(true, Ordering::Relaxed);
                return false;
            }
            if let Some(score) = pattern.score(Utf32Str::new(rel, &mut chars), &mut matcher) {
                total.fetch_add(1, Ordering::Relaxed);
                top.offer((score, Reverse(rel.len()), Reverse(rel.to_string())));
            }
            true
        }
    });
    let mut ranked = best.into_inner().unwrap_or_default();
    ranked.sort_by(|a, b| b.cmp(a));
    ranked.truncate(max);
    let total = total.into_inner();
    FileSearchOutput {
        truncated: total as usize > ranked.len() || timed_out.into_inner(),
        files: ranked
            .into_iter()
            .map(|(score, _, Reverse(path))| FoundFile { path, score })
            .collect(),
        total_matches: total,
    }
}

/// One walking thread's best files; handed over when the thread is done.
struct TopFiles<'a> {
    /// A min-heap of the best `max`, worst on top.
    heap: BinaryHeap<Reverse<Ranked>>,
    max: usize,
    out: &'a Mutex<Vec<Ranked>>,
}

impl TopFiles<'_> {
    fn offer(&mut self, candidate: Ranked) {
        if self.heap.len() == self.max {
            match self.heap.peek() {
                Some(Reverse(worst)) if *worst >= candidate => return,
                _ => {
                    self.heap.pop();
                }
            }
        }
        self.heap.push(Reverse(candidate));
    }
}

impl Drop for TopFiles<'_> {
    fn drop(&mut self) {
        if let Ok(mut out) = self.out.lock() {
            out.extend(self.heap.drain().map(|Reverse(r)| r));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_on_a_character_boundary() {
        let line = "é".repeat(400);
        let shown = shown_line(line.as_bytes());
        assert!(shown.ends_with(" …[line cut]"));
        assert!(!shown.contains('\u{FFFD}'));
        assert_eq!(shown_line(b"abc\r\n"), "abc");
    }

    #[test]
    fn the_top_files_keep_the_best_and_prefer_short_paths() {
        let out = Mutex::new(Vec::new());
        {
            let mut top = TopFiles {
                heap: BinaryHeap::new(),
                max: 2,
                out: &out,
            };
            for (score, path) in [(5, "a/long/x.rs"), (9, "b.rs"), (5, "x.rs"), (1, "z")] {
                top.offer((score, Reverse(path.len()), Reverse(path.to_string())));
            }
        }
        let mut kept = out.into_inner().unwrap();
        kept.sort_by(|a, b| b.cmp(a));
        let paths: Vec<_> = kept.iter().map(|r| r.2.0.as_str()).collect();
        assert_eq!(paths, ["b.rs", "x.rs"]);
    }

    #[test]
    fn secrets_are_not_seen_but_default_deny_dirs_are_walked() {
        let policy = Policy::built_in();
        assert!(!may_see(&policy, "app/.env", false));
        assert!(may_see(&policy, "src/main.rs", false));
        let strict = crate::policy::file::parse_policy(
            "version: 1\npaths:\n  default: deny\n  rules:\n    - {id: P-1, decision: allow, globs: [\"src/**\"], justification: j}\n",
            "p.yaml",
        )
        .unwrap();
        assert!(may_see(&strict, "src", true));
        assert!(!may_see(&strict, "docs/a.md", false));
        assert!(may_see(&strict, "src/a.rs", false));
    }

    #[test]
    fn small_large_and_utf16_files_are_all_searched() {
        let dir = tempfile::tempdir().unwrap();
        let mut big = "filler line\n".repeat(40_000);
        big.push_str("the needle at the end\n");
        std::fs::write(dir.path().join("big.txt"), &big).unwrap();
        std::fs::write(dir.path().join("small.txt"), "a needle\n").unwrap();
        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain(
                "one\nneedle two\n"
                    .encode_utf16()
                    .flat_map(u16::to_le_bytes),
            )
            .collect();
        std::fs::write(dir.path().join("wide.txt"), utf16).unwrap();
        std::fs::write(dir.path().join("bin.dat"), b"needle\0\x01").unwrap();
        let root = WorkspaceRoot::open(dir.path()).unwrap();
        let matcher = RegexMatcherBuilder::new()
            .line_terminator(Some(b'\n'))
            .build("needle")
            .unwrap();
        let options = GrepOptions {
            context: 0,
            max_results: 50,
            max_bytes: 1 << 20,
        };
        let policy = Arc::new(Policy::built_in());
        let out = grep_workspace(&root, policy, WalkFilter::default(), matcher, options);
        let found: Vec<(&str, u64, &str)> = out
            .matches
            .iter()
            .map(|m| (m.path.as_str(), m.line_number, m.line.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                ("big.txt", 40_001, "the needle at the end"),
                ("small.txt", 1, "a needle"),
                ("wide.txt", 2, "needle two"),
            ]
        );
    }

    #[test]
    fn grep_render_looks_like_ripgrep() {
        let out = GrepSearchOutput {
            matches: vec![
                GrepMatch {
                    path: "a.rs".into(),
                    line_number: 2,
                    line: "fn x()".into(),
                    context_before: vec![ContextLine {
                        line_number: 1,
                        line: "// x".into(),
                    }],
                    context_after: vec![],
                },
                GrepMatch {
                    path: "b.rs".into(),
                    line_number: 7,
                    line: "x()".into(),
                    context_before: vec![],
                    context_after: vec![],
                },
            ],
            files_searched: 2,
            truncated: false,
        };
        assert_eq!(out.render(), "a.rs-1-// x\na.rs:2:fn x()\n--\nb.rs:7:x()\n");
    }
}
