//! `file_read`, `file_write` and `file_search_replace`: the confined file tools.
//! Names and argument names follow the tools agents already know, so agents
//! written for them keep working.

use std::io::{BufRead, BufReader, Read};

use rmcp::schemars::{self, JsonSchema};
use serde::{Deserialize, Serialize};

use super::edit::{self, EditError};
use super::{ToolError, Toolbox, note_error};
use crate::exec::{self, OpenedFile};
use crate::policy::Action;

/// How much of a file's start is checked for NUL bytes to call it binary.
const BINARY_SNIFF_BYTES: usize = 8192;
/// Files up to this size (less one byte) are read in one read and numbered
/// from that buffer; larger ones a line at a time.
const WHOLE_READ_BYTES: usize = 64 * 1024;

#[derive(Debug, Deserialize, JsonSchema)]
pub struct FileReadInput {
    /// Path of the file, relative to the workspace root (an absolute path inside the workspace also works).
    pub target_file: String,
    /// 1-based line number to start reading from. Default: 1.
    #[serde(default)]
    pub offset: Option<u64>,
    /// Maximum number of lines to return. Default and maximum: 2000. A reply is also cut at 256 KiB.
    #[serde(default)]
    pub limit: Option<u64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct FileReadOutput {
    /// Real path of the file read, relative to the workspace root.
    pub path: String,
    /// The lines, each prefixed with its 1-based line number and a tab.
    pub content: String,
    /// First line returned (1-based).
    pub start_line: u64,
    /// Last line returned (1-based); `start_line - 1` when no line was returned.
    pub end_line: u64,
    /// True when the file continues after `end_line`.
    pub truncated: bool,
    /// The `offset` that continues where this reply stopped, when truncated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<u64>,
    /// Number of lines in the file, when the read reached its end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_lines: Option<u64>,
    /// Size of the file in bytes.
    pub size_bytes: u64,
    /// True when some bytes were not valid UTF-8 and were shown as U+FFFD.
    pub invalid_utf8: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct FileWriteInput {
    /// Path of the file to create or replace, relative to the workspace root. Missing parent directories are created.
    pub file_path: String,
    /// The complete new contents of the file.
    pub contents: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct FileWriteOutput {
    /// Real path of the file written, relative to the workspace root.
    pub path: String,
    pub bytes_written: u64,
    /// True when the file did not exist before.
    pub created: bool,
    /// Number of parent directories created.
    pub dirs_created: usize,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct FileSearchReplaceInput {
    /// Path of the file to edit, relative to the workspace root.
    pub file_path: String,
    /// The exact text to find (whitespace and indentation included). It must occur exactly once unless replace_all is true.
    pub old_string: String,
    /// The text to put in its place, taken literally (no `$1` or backslash escapes).
    pub new_string: String,
    /// Replace every occurrence instead of requiring exactly one. Default: false.
    #[serde(default)]
    pub replace_all: Option<bool>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct FileSearchReplaceOutput {
    /// Real path of the file edited, relative to the workspace root.
    pub path: String,
    /// Number of occurrences replaced.
    pub replacements: usize,
    /// Unified diff of the change.
    pub diff: String,
    /// True when the diff was cut to fit the reply.
    pub diff_truncated: bool,
}

impl FileReadOutput {
    /// The text an agent reads: numbered lines plus a note on where to continue.
    pub fn render(&self) -> String {
        let mut text = self.content.clone();
        text.push_str(&self.note(self.content.is_empty()));
        text
    }

    /// What [`Self::render`] adds after the lines (`shown_nothing`: no line
    /// was shown): where to continue, or why nothing was shown; usually nothing.
    pub fn note(&self, shown_nothing: bool) -> String {
        if let Some(next) = self.next_offset.filter(|_| self.truncated) {
            format!(
                "\n[truncated: showing lines {}-{}; call file_read with offset={next} to continue]",
                self.start_line, self.end_line
            )
        } else if shown_nothing {
            match self.total_lines {
                Some(0) => "[empty file]".to_string(),
                Some(n) => format!(
                    "[offset {} is past the end: the file has {n} lines]",
                    self.start_line
                ),
                None => String::new(),
            }
        } else {
            String::new()
        }
    }
}

/// Where a read's numbered lines are written: a `String`, or (the direct
/// lane, `server::json_out::JsonStringBody`) the body of a JSON string, so
/// that a reply's text is escaped as it is numbered instead of built, copied
/// and escaped afterwards.
pub trait LineSink {
    /// Make room for about `bytes` of text.
    fn reserve_text(&mut self, bytes: usize);
    /// Append `text`.
    fn push_text(&mut self, text: &str);

    /// Append one numbered line: `prefix` (its number and a tab), `text`
    /// and a line end.
    fn push_line(&mut self, prefix: &str, text: &str) {
        self.push_text(prefix);
        self.push_text(text);
        self.push_text("\n");
    }

    /// Append every line of `text` numbered, the first as `first`, each
    /// without its line end (`\n`, `\r\n`, or a `\r` ending the text);
    /// returns the bytes of numbered text appended, before any escaping.
    fn push_lines(&mut self, first: u64, text: &str) -> usize
    where
        Self: Sized,
    {
        (first..)
            .zip(text_lines(text))
            .map(|(number, line)| push_numbered(self, number, line))
            .sum()
    }
}

impl LineSink for String {
    fn reserve_text(&mut self, bytes: usize) {
        self.reserve(bytes);
    }

    fn push_text(&mut self, text: &str) {
        self.push_str(text);
    }
}

impl Toolbox {
    pub async fn file_read(&self, input: FileReadInput) -> Result<FileReadOutput, ToolError> {
        let (mut output, content) = self.file_read_into(input, String::new()).await?;
        output.content = content;
        Ok(output)
    }

    /// [`Self::file_read`] with the numbered lines written to `sink`; the
    /// output's `content` is left empty.
    pub async fn file_read_into<S: LineSink>(
        &self,
        input: FileReadInput,
        sink: S,
    ) -> Result<(FileReadOutput, S), ToolError> {
        let opened = self
            .root
            .open_for_read(&input.target_file)
            .map_err(reject)?;
        self.enforce(&[Action::ReadFile {
            path: &opened.rel_path,
        }])
        .await
        .inspect_err(note_error)?;
        let offset = input.offset.unwrap_or(1).max(1);
        let limit = input
            .limit
            .unwrap_or(self.limits.read_max_lines)
            .clamp(1, self.limits.read_max_lines);
        read_numbered_lines(opened, offset, limit, self.limits.read_max_bytes, sink).map_err(reject)
    }

    pub async fn file_write(&self, input: FileWriteInput) -> Result<FileWriteOutput, ToolError> {
        let target = self.root.prepare_write(&input.file_path).map_err(reject)?;
        let _guard = self.locks.lock(&target.rel_path).await;
        // Resolve again under the lock: the file may have changed while we waited.
        let target = self.root.prepare_write(&input.file_path).map_err(reject)?;
        let decision = self
            .enforce(&[Action::WriteFile {
                path: &target.rel_path,
                hard_linked: target.existing.is_some_and(|e| e.nlink > 1),
                added: &input.contents,
            }])
            .await
            .inspect_err(note_error)?;
        // Under a working spec (the workspace's, or a held task's) the change
        // is measured, so the old text is needed.
        let before = if target.existing.is_some() && self.changes_are_measured() {
            self.root
                .open_for_read(&target.rel_path)
                .ok()
                .and_then(|old| read_whole_text(old, self.limits.edit_max_bytes).ok())
                .unwrap_or_default()
        } else {
            String::new()
        };
        let charge = self
            .gate_write(decision, &target.rel_path, &before, &input.contents)
            .await
            .inspect_err(note_error)?;
        let path = target.rel_path.clone();
        let contents = input.contents;
        // Kept for the held tasks' history, when there is one.
        let written = if super::noted_task_ids().is_empty() {
            String::new()
        } else {
            contents.clone()
        };
        let report = write_durably(target, contents, &path).await?;
        self.charge(charge).await;
        self.record_task_change("file_write", &path, &before, &written)
            .await;
        Ok(FileWriteOutput {
            path,
            bytes_written: report.bytes_written,
            created: report.created,
            dirs_created: report.dirs_created,
        })
    }

    pub async fn file_search_replace(
        &self,
        input: FileSearchReplaceInput,
    ) -> Result<FileSearchReplaceOutput, ToolError> {
        // Find the real file, then hold its lock across read, edit and write so
        // concurrent edits of one file apply one after the other.
        let first = self.root.open_for_read(&input.file_path).map_err(reject)?;
        let _guard = self.locks.lock(&first.rel_path).await;
        drop(first);
        let opened = self.root.open_for_read(&input.file_path).map_err(reject)?;
        let target = self.root.prepare_write(&input.file_path).map_err(reject)?;
        if target.rel_path != opened.rel_path {
            return Err(reject(ToolError::failed(
                "FILE-003",
                format!("`{}` changed while it was being edited", input.file_path),
                "retry the edit",
            )));
        }
        let decision = self
            .enforce(&[
                Action::ReadFile {
                    path: &opened.rel_path,
                },
                Action::WriteFile {
                    path: &target.rel_path,
                    hard_linked: opened.meta.nlink > 1,
                    added: &input.new_string,
                },
            ])
            .await
            .inspect_err(note_error)?;
        let path = opened.rel_path.clone();
        let original = read_whole_text(opened, self.limits.edit_max_bytes).map_err(reject)?;
        let edited = edit::search_replace(
            &original,
            &input.old_string,
            &input.new_string,
            input.replace_all.unwrap_or(false),
            &path,
        )
        .map_err(|e| reject(edit_failed(&path, e)))?;
        let charge = self
            .gate_write(decision, &path, &original, &edited.text)
            .await
            .inspect_err(note_error)?;
        let text = edited.text;
        let written = if super::noted_task_ids().is_empty() {
            String::new()
        } else {
            text.clone()
        };
        write_durably(target, text, &path).await?;
        self.charge(charge).await;
        self.record_task_change("file_search_replace", &path, &original, &written)
            .await;
        Ok(FileSearchReplaceOutput {
            path,
            replacements: edited.replacements,
            diff: edited.diff,
            diff_truncated: edited.diff_truncated,
        })
    }
}

/// Note a refusal's rule for the audit record and pass the error on.
fn reject(e: impl Into<ToolError>) -> ToolError {
    let e = e.into();
    note_error(&e);
    e
}

fn write_failed(path: &str, e: &std::io::Error) -> ToolError {
    ToolError::failed(
        "FILE-003",
        format!("writing `{path}` failed: {e}; the file is unchanged"),
        "check free space and permissions, then retry",
    )
}

fn edit_failed(path: &str, e: EditError) -> ToolError {
    match &e {
        EditError::NotFound(Some(near)) => {
            let hint = if near.whitespace_only {
                "it differs only in whitespace/indentation".to_string()
            } else {
                format!(
                    "line {} differs: you sent {:?}, the file has {:?}",
                    near.differing_line, near.expected, near.found
                )
            };
            ToolError::failed(
                "EDIT-001",
                format!(
                    "old_string was not found in `{path}`; the closest match starts at line {} ({hint})",
                    near.line
                ),
                "read the file around that line with file_read and copy old_string exactly",
            )
        }
        EditError::NotFound(None) => ToolError::failed(
            "EDIT-001",
            format!("old_string was not found in `{path}`, and nothing in the file is close to it"),
            "read the file with file_read and copy old_string exactly",
        ),
        EditError::Ambiguous(_) => ToolError::failed(
            "EDIT-002",
            format!("in `{path}`, {e}"),
            "add surrounding lines to old_string so it matches one place, or set replace_all to true",
        ),
        EditError::EmptyOldString => ToolError::failed(
            "EDIT-003",
            "old_string is empty",
            "send the exact text to replace; to create or overwrite a whole file use file_write",
        ),
        EditError::NoChange => {
            ToolError::failed("EDIT-004", e.to_string(), "send a different new_string")
        }
    }
}

/// Replace `target`'s file with `text` atomically and durably (the fsyncs
/// run on this worker: `exec::run_blocking`).
async fn write_durably(
    target: exec::WriteTarget,
    text: String,
    path: &str,
) -> Result<exec::WriteReport, ToolError> {
    exec::run_blocking(move || exec::write_atomically(&target, text.as_bytes()))
        .await
        .map_err(|e| {
            reject(ToolError::failed(
                "FILE-003",
                format!("the write task failed: {e}"),
                "retry",
            ))
        })?
        .map_err(|e| reject(write_failed(path, &e)))
}

fn not_text(path: &str, why: &str) -> ToolError {
    ToolError::failed(
        "FILE-004",
        format!("`{path}` {why}; it is not read as text"),
        "only text files can be read and edited with these tools",
    )
}

fn read_numbered_lines<S: LineSink>(
    opened: OpenedFile,
    offset: u64,
    limit: u64,
    max_bytes: usize,
    sink: S,
) -> Result<(FileReadOutput, S), ToolError> {
    let OpenedFile {
        file,
        rel_path,
        meta,
    } = opened;
    let io_err = |e: std::io::Error| {
        ToolError::failed(
            "FILE-003",
            format!("reading `{rel_path}` failed: {e}"),
            "retry",
        )
    };
    // A small file in one read, into a buffer its size (a fixed 16 KiB one
    // cost a large allocation per call).
    let capacity = usize::try_from(meta.size)
        .unwrap_or(usize::MAX)
        .saturating_add(1)
        .clamp(512, WHOLE_READ_BYTES);
    let mut reader = BufReader::with_capacity(capacity, file);
    // The first buffer holds the file's start: a NUL byte there means binary.
    let start = reader.fill_buf().map_err(io_err)?;
    if memchr::memchr(0, &start[..start.len().min(BINARY_SNIFF_BYTES)]).is_some() {
        return Err(not_text(&rel_path, "looks binary (it contains NUL bytes)"));
    }
    let mut lines = Numbering::new(offset, limit, max_bytes, sink);
    lines
        .sink
        .reserve_text((meta.size as usize).min(max_bytes) + 1024);
    // A short read of a regular file is its end: the whole file is in the
    // buffer, and valid UTF-8 (checked once) is numbered without copying.
    if start.len() < capacity
        && let Ok(text) = std::str::from_utf8(start)
    {
        let total = count_lines(text);
        if lines.shows_whole(text.len(), total) {
            lines.push_whole(text, total);
            return Ok(lines.finish(rel_path, meta.size));
        }
        for line in text_lines(text) {
            if !lines.next() || !lines.push(line) {
                break;
            }
        }
        return Ok(lines.finish(rel_path, meta.size));
    }
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(io_err)? == 0 {
            break;
        }
        if !lines.next() {
            break;
        }
        if lines.skipping() {
            continue;
        }
        let full = match std::str::from_utf8(trim_line_end(&line)) {
            Ok(text) => lines.push(text),
            Err(_) => {
                lines.invalid_utf8 = true;
                lines.push(&String::from_utf8_lossy(trim_line_end(&line)))
            }
        };
        if !full {
            break;
        }
    }
    Ok(lines.finish(rel_path, meta.size))
}

/// Lines gathered for a `file_read` reply, numbered from 1, from `offset`,
/// at most `limit` of them and `max_bytes` in all.
struct Numbering<S> {
    sink: S,
    /// Bytes of numbered lines written to `sink` (before any escaping).
    shown_bytes: usize,
    offset: u64,
    limit: u64,
    max_bytes: usize,
    /// The line last seen.
    number: u64,
    end_line: u64,
    cut_short: bool,
    invalid_utf8: bool,
}

impl<S: LineSink> Numbering<S> {
    fn new(offset: u64, limit: u64, max_bytes: usize, sink: S) -> Self {
        Self {
            sink,
            shown_bytes: 0,
            offset,
            limit,
            max_bytes,
            number: 0,
            end_line: offset - 1,
            cut_short: false,
            invalid_utf8: false,
        }
    }

    /// Count one more line; false when it is past `limit` (the reply is
    /// full). Lines before `offset` are counted and skipped.
    fn next(&mut self) -> bool {
        self.number += 1;
        if self.number >= self.offset + self.limit {
            self.cut_short = true;
            return false;
        }
        true
    }

    /// Whether the line [`Self::next`] counted comes before `offset`.
    fn skipping(&self) -> bool {
        self.number < self.offset
    }

    /// Whether a text of `len` bytes and `lines` lines is shown whole: read
    /// from its start, within the line limit, and within the byte limit
    /// even if every line were numbered with the widest number [`Self::push`]
    /// allows for (so no line would be cut or held back there).
    fn shows_whole(&self, len: usize, lines: u64) -> bool {
        self.offset == 1
            && self.number == 0
            && lines <= self.limit
            && lines < 1_000_000
            && (lines as usize)
                .saturating_mul(8)
                .saturating_add(len)
                .saturating_add(28)
                <= self.max_bytes
    }

    /// Show all `lines` lines of `text` at once (see [`Self::shows_whole`]).
    fn push_whole(&mut self, text: &str, lines: u64) {
        self.shown_bytes = self.sink.push_lines(1, text);
        self.number = lines;
        self.end_line = lines;
    }

    /// Add the line [`Self::next`] counted (without its line end), if it is
    /// one to show; false when it does not fit (the reply is full).
    fn push(&mut self, text: &str) -> bool {
        if self.skipping() {
            return true;
        }
        let entry_len = text.len() + 8 + 20;
        if self.shown_bytes + entry_len > self.max_bytes {
            if self.shown_bytes == 0 {
                // A single huge line: show what fits, and move past it.
                let mut line = String::new();
                push_numbered(&mut line, self.number, text);
                let line = edit_cap(&line, self.max_bytes);
                self.sink.push_text(&line);
                self.shown_bytes = line.len();
                self.end_line = self.number;
            }
            self.cut_short = true;
            return false;
        }
        self.shown_bytes += push_numbered(&mut self.sink, self.number, text);
        self.end_line = self.number;
        true
    }

    /// The output (its `content` empty) and the lines.
    fn finish(self, path: String, size_bytes: u64) -> (FileReadOutput, S) {
        let truncated = self.cut_short;
        let output = FileReadOutput {
            path,
            content: String::new(),
            start_line: self.offset,
            end_line: self.end_line,
            truncated,
            next_offset: truncated.then_some(self.end_line + 1),
            total_lines: (!truncated).then_some(self.number),
            size_bytes,
            invalid_utf8: self.invalid_utf8,
        };
        (output, self.sink)
    }
}

/// Append `"{number:>6}\t{text}\n"` (without the formatting machinery: hot
/// path); returns the bytes appended.
fn push_numbered(out: &mut impl LineSink, number: u64, text: &str) -> usize {
    let prefix = LinePrefix::new(number);
    out.push_line(prefix.as_str(), text);
    prefix.as_str().len() + text.len() + 1
}

/// A line's number as `cat -n` writes it: six places, right-aligned, then a tab.
pub(crate) struct LinePrefix {
    bytes: [u8; 21],
    start: usize,
}

impl LinePrefix {
    pub(crate) fn new(number: u64) -> Self {
        let mut bytes = *b"                    \t";
        let mut n = number;
        let mut start = bytes.len() - 1;
        loop {
            start -= 1;
            bytes[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        Self {
            bytes,
            start: start.min(bytes.len() - 7),
        }
    }

    /// Spaces and digits, then the tab.
    pub(crate) fn as_str(&self) -> &str {
        // Spaces, digits and a tab are ASCII.
        std::str::from_utf8(&self.bytes[self.start..]).unwrap_or_default()
    }
}

/// The lines of `text`, each without its line end (`\n`, `\r\n`, or a `\r`
/// ending the text). memchr's search, not `split_inclusive('\n')`: the std
/// searcher was ~3% of a pipelined read's CPU.
fn text_lines(text: &str) -> impl Iterator<Item = &str> {
    let ends = memchr::memchr_iter(b'\n', text.as_bytes()).map(|end| end + 1);
    ends.chain((!text.is_empty()).then_some(text.len()))
        .scan(0, move |from, to| {
            if to == *from {
                return None; // the end of a text that ends with a line end
            }
            let line = trim_str_line_end(&text[*from..to]);
            *from = to;
            Some(line)
        })
}

/// Lines in `text`: one per `\n`, and one more for text after the last.
fn count_lines(text: &str) -> u64 {
    let ends = memchr::memchr_iter(b'\n', text.as_bytes()).count();
    let unterminated = !text.is_empty() && !text.ends_with('\n');
    ends as u64 + u64::from(unterminated)
}

fn edit_cap(s: &str, max: usize) -> String {
    let mut out = crate::store::audit::cap(s, max.saturating_sub(64));
    out.push_str(" …[line cut]\n");
    out
}

fn trim_str_line_end(line: &str) -> &str {
    let line = line.strip_suffix('\n').unwrap_or(line);
    line.strip_suffix('\r').unwrap_or(line)
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

pub(crate) fn read_whole_text(opened: OpenedFile, max_bytes: u64) -> Result<String, ToolError> {
    let OpenedFile {
        mut file,
        rel_path,
        meta,
    } = opened;
    if meta.size > max_bytes {
        return Err(ToolError::failed(
            "FILE-005",
            format!(
                "`{rel_path}` is {} bytes; edits are limited to {max_bytes} bytes",
                meta.size
            ),
            "split the file or rewrite it with file_write",
        ));
    }
    let mut bytes = Vec::with_capacity(meta.size as usize);
    file.read_to_end(&mut bytes).map_err(|e| {
        ToolError::failed(
            "FILE-003",
            format!("reading `{rel_path}` failed: {e}"),
            "retry",
        )
    })?;
    if bytes[..bytes.len().min(BINARY_SNIFF_BYTES)].contains(&0) {
        return Err(not_text(&rel_path, "looks binary (it contains NUL bytes)"));
    }
    String::from_utf8(bytes).map_err(|_| not_text(&rel_path, "is not valid UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::WorkspaceRoot;

    /// The lines of `opened` as `file_read` numbers them, in `content`.
    fn read_numbered_lines(
        opened: OpenedFile,
        offset: u64,
        limit: u64,
        max_bytes: usize,
    ) -> Result<FileReadOutput, ToolError> {
        let (mut output, content) =
            super::read_numbered_lines(opened, offset, limit, max_bytes, String::new())?;
        output.content = content;
        Ok(output)
    }

    fn read(text: &str, offset: u64, limit: u64, max_bytes: usize) -> FileReadOutput {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), text).unwrap();
        let root = WorkspaceRoot::open(dir.path()).unwrap();
        read_numbered_lines(root.open_for_read("f").unwrap(), offset, limit, max_bytes).unwrap()
    }

    #[test]
    fn numbers_are_right_aligned_like_cat_n() {
        let mut s = String::new();
        push_numbered(&mut s, 7, "a");
        push_numbered(&mut s, 1234567, "b");
        assert_eq!(s, "     7\ta\n1234567\tb\n");
    }

    #[test]
    fn lines_are_numbered_from_one() {
        let out = read("a\r\nb\n", 1, 10, 1 << 20);
        assert_eq!(out.content, "     1\ta\n     2\tb\n");
        assert_eq!(
            (out.start_line, out.end_line, out.truncated, out.total_lines),
            (1, 2, false, Some(2))
        );
    }

    #[test]
    fn paging_by_offset_and_limit_says_where_to_continue() {
        let text: String = (1..=10).map(|i| format!("line {i}\n")).collect();
        let out = read(&text, 3, 4, 1 << 20);
        assert_eq!((out.start_line, out.end_line), (3, 6));
        assert!(out.truncated);
        assert_eq!(out.next_offset, Some(7));
        assert!(out.content.starts_with("     3\tline 3\n"));
        let last = read(&text, 7, 4, 1 << 20);
        assert!(!last.truncated);
        assert_eq!(last.total_lines, Some(10));
    }

    #[test]
    fn byte_cap_cuts_at_a_line_boundary() {
        let text: String = (1..=100).map(|i| format!("{i:0>50}\n")).collect();
        let out = read(&text, 1, 2000, 1000);
        assert!(out.content.len() <= 1000);
        assert!(out.truncated);
        assert_eq!(out.next_offset, Some(out.end_line + 1));
        assert!(out.content.ends_with('\n'));
    }

    #[test]
    fn a_line_longer_than_the_cap_is_shown_in_part() {
        let out = read(&format!("{}\nnext\n", "x".repeat(5000)), 1, 2000, 1000);
        assert!(out.content.len() <= 1000);
        assert_eq!(out.next_offset, Some(2));
    }

    #[test]
    fn offset_past_the_end_returns_nothing_and_the_line_count() {
        let out = read("a\nb\n", 9, 10, 1 << 20);
        assert!(out.content.is_empty());
        assert!(!out.truncated);
        assert_eq!(out.total_lines, Some(2));
        assert!(out.render().contains("past the end"));
    }

    /// `cat -n`'s numbering of `bytes` (lossy UTF-8), lines `offset..offset+limit`.
    fn numbered_like_cat_n(bytes: &[u8], offset: u64, limit: u64) -> String {
        let mut out = String::new();
        for (i, line) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
            let n = i as u64 + 1;
            if n >= offset && n < offset + limit {
                let text = String::from_utf8_lossy(trim_line_end(line));
                out.push_str(&format!("{n:>6}\t{text}\n"));
            }
        }
        out
    }

    #[test]
    fn a_file_read_whole_and_one_read_by_lines_number_alike() {
        let texts: [&[u8]; 6] = [
            b"a\r\nb\nc",
            b"\n\n\r\n\r",
            b"\xEF\xBB\xBFbom\r\nline\n",
            b"bad \xff utf-8\nok\n",
            "é\n€\nsmile \u{1F600}\n".as_bytes(),
            b"",
        ];
        for text in texts {
            // Small: one read of the whole file. Padded past WHOLE_READ_BYTES:
            // read a line at a time (the first lines are the same).
            let mut padded = text.to_vec();
            if !padded.is_empty() && !padded.ends_with(b"\n") {
                padded.push(b'\n');
            }
            padded.extend(
                std::iter::repeat_n(b"pad\n".as_slice(), WHOLE_READ_BYTES / 4 + 1).flatten(),
            );
            for (bytes, offset, limit) in [
                (text, 1, 2000),
                (text, 2, 2),
                (&padded[..], 1, 3),
                (&padded[..], 2, 2),
            ] {
                let dir = tempfile::tempdir().unwrap();
                std::fs::write(dir.path().join("f"), bytes).unwrap();
                let root = WorkspaceRoot::open(dir.path()).unwrap();
                let out =
                    read_numbered_lines(root.open_for_read("f").unwrap(), offset, limit, 1 << 20)
                        .unwrap();
                let label = String::from_utf8_lossy(&bytes[..bytes.len().min(20)]);
                assert_eq!(
                    out.content,
                    numbered_like_cat_n(bytes, offset, limit),
                    "{label:?}"
                );
                let shown_invalid = out.content.contains('\u{FFFD}');
                assert_eq!(out.invalid_utf8, shown_invalid, "{label:?}");
            }
        }
    }

    #[test]
    fn lines_numbered_into_a_json_string_are_the_escaped_text() {
        use crate::server::json_out::{JsonStringBody, write_str_body};
        let long = format!("{}\nnext\n", "\"x\\\t".repeat(2000));
        let capped: String = (1..=100).map(|i| format!("{i:0>50}\n")).collect();
        let texts: [&[u8]; 7] = [
            b"say \"hi\"\\ \t\x01\x1f\x7f\r\nb\nc",
            "é\n€\u{2028}\nsmile \u{1F600}\n".as_bytes(),
            b"bad \xff utf-8\nok\n",
            b"\n\n\r\n\r",
            b"",
            long.as_bytes(),
            capped.as_bytes(),
        ];
        for text in texts {
            for (offset, limit, max_bytes) in [(1, 2000, 1 << 20), (2, 2, 1 << 20), (1, 2000, 1000)]
            {
                let dir = tempfile::tempdir().unwrap();
                std::fs::write(dir.path().join("f"), text).unwrap();
                let root = WorkspaceRoot::open(dir.path()).unwrap();
                let open = || root.open_for_read("f").unwrap();
                let plain = read_numbered_lines(open(), offset, limit, max_bytes).unwrap();
                let (output, body) = super::read_numbered_lines(
                    open(),
                    offset,
                    limit,
                    max_bytes,
                    JsonStringBody::default(),
                )
                .unwrap();
                let mut escaped = Vec::new();
                write_str_body(&mut escaped, &plain.content);
                let label = String::from_utf8_lossy(&text[..text.len().min(20)]);
                assert_eq!(
                    String::from_utf8(body.0).unwrap(),
                    String::from_utf8(escaped).unwrap(),
                    "{label:?} {offset} {limit} {max_bytes}"
                );
                assert!(output.content.is_empty());
                assert_eq!(
                    (output.end_line, output.next_offset, output.total_lines),
                    (plain.end_line, plain.next_offset, plain.total_lines),
                    "{label:?}"
                );
                assert_eq!(output.invalid_utf8, plain.invalid_utf8, "{label:?}");
            }
        }
    }

    #[test]
    fn binary_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b"), b"abc\0def").unwrap();
        let root = WorkspaceRoot::open(dir.path()).unwrap();
        let err = read_numbered_lines(root.open_for_read("b").unwrap(), 1, 10, 1000).unwrap_err();
        assert_eq!(err.rule_id, "FILE-004");
    }
}
