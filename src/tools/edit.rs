//! Exact search-and-replace on text, as `file_search_replace` needs it: literal
//! matching (no regex, so `$&`, `$1` and backslashes mean themselves), a count
//! of matches that refuses ambiguity, a pointer to the closest near-match when
//! nothing matches, and preservation of the file's line endings, byte-order
//! mark and final newline.

use similar::TextDiff;

/// Largest diff returned in a reply; longer diffs are cut with a marker.
const MAX_DIFF_BYTES: usize = 64 * 1024;
/// Longest prefix of a line compared when looking for a near-match.
const NEAR_MATCH_LINE_CHARS: usize = 200;

#[derive(Debug, Clone, PartialEq)]
pub struct Edited {
    /// The whole new file, in the file's own encoding conventions.
    pub text: String,
    pub replacements: usize,
    /// Unified diff (LF line endings), possibly cut.
    pub diff: String,
    pub diff_truncated: bool,
}

/// The closest place in the file to what the caller asked to replace.
#[derive(Debug, Clone, PartialEq)]
pub struct NearMatch {
    /// 1-based line where the closest window starts.
    pub line: usize,
    /// 1-based line of the first line that differs, with both versions.
    pub differing_line: usize,
    pub expected: String,
    pub found: String,
    pub similarity: f64,
    pub whitespace_only: bool,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EditError {
    #[error("old_string is empty")]
    EmptyOldString,
    #[error("old_string and new_string are identical; nothing would change")]
    NoChange,
    #[error("old_string was not found")]
    NotFound(Option<NearMatch>),
    #[error("old_string matches {} places (lines {}); it must match exactly one", .0.len(), join_lines(.0))]
    Ambiguous(Vec<usize>),
}

fn join_lines(lines: &[usize]) -> String {
    let shown: Vec<String> = lines.iter().take(50).map(ToString::to_string).collect();
    let mut s = shown.join(", ");
    if lines.len() > 50 {
        s.push_str(", …");
    }
    s
}

/// How a file ends its lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineEnding {
    Lf,
    /// Every line break is CRLF: edits are matched and written in CRLF too.
    Crlf,
}

/// Replace `old` with `new` in `original`.
pub fn search_replace(
    original: &str,
    old: &str,
    new: &str,
    replace_all: bool,
    display_path: &str,
) -> Result<Edited, EditError> {
    if old.is_empty() {
        return Err(EditError::EmptyOldString);
    }
    let (bom, body) = match original.strip_prefix('\u{feff}') {
        Some(rest) => ("\u{feff}", rest),
        None => ("", original),
    };
    let ending = detect_line_ending(body);
    // Work in LF when the file is consistently CRLF (agents send "\n"), and
    // accept CRLF from the caller for an LF file. Mixed files are matched raw.
    let normalize = ending == LineEnding::Crlf || !body.contains('\r');
    let (work, old, new) = if normalize {
        (
            body.replace("\r\n", "\n"),
            old.replace("\r\n", "\n"),
            new.replace("\r\n", "\n"),
        )
    } else {
        (body.to_string(), old.to_string(), new.to_string())
    };
    if old == new {
        return Err(EditError::NoChange);
    }
    let positions: Vec<usize> = work.match_indices(old.as_str()).map(|(i, _)| i).collect();
    match positions.len() {
        0 => return Err(EditError::NotFound(near_match(&work, &old))),
        1 => {}
        _ if replace_all => {}
        _ => return Err(EditError::Ambiguous(line_numbers(&work, &positions))),
    }
    let mut result = if replace_all {
        work.replace(old.as_str(), new.as_str())
    } else {
        let at = positions[0];
        let mut s = String::with_capacity(work.len() + new.len());
        s.push_str(&work[..at]);
        s.push_str(&new);
        s.push_str(&work[at + old.len()..]);
        s
    };
    // The final-newline state of the file is kept whatever the edit did at the end.
    let had_final_newline = work.ends_with('\n');
    if had_final_newline && !result.is_empty() && !result.ends_with('\n') {
        result.push('\n');
    } else if !had_final_newline && result.ends_with('\n') && !work.is_empty() {
        result.pop();
    }
    let (diff, diff_truncated) = unified_diff(&work, &result, display_path);
    let text = match (normalize, ending) {
        (true, LineEnding::Crlf) => format!("{bom}{}", result.replace('\n', "\r\n")),
        _ => format!("{bom}{result}"),
    };
    Ok(Edited {
        text,
        replacements: positions.len(),
        diff,
        diff_truncated,
    })
}

fn detect_line_ending(text: &str) -> LineEnding {
    let lf = text.matches('\n').count();
    let crlf = text.matches("\r\n").count();
    if crlf > 0 && crlf == lf {
        LineEnding::Crlf
    } else {
        LineEnding::Lf
    }
}

/// 1-based line numbers of byte offsets (ascending).
fn line_numbers(text: &str, positions: &[usize]) -> Vec<usize> {
    let mut lines = Vec::with_capacity(positions.len());
    let mut line = 1;
    let mut from = 0;
    for &p in positions {
        line += text[from..p].matches('\n').count();
        from = p;
        lines.push(line);
    }
    lines
}

/// Unified diff of two LF texts, with three lines of context.
pub fn unified_diff(before: &str, after: &str, display_path: &str) -> (String, bool) {
    let diff = TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{display_path}"), &format!("b/{display_path}"))
        .to_string();
    if diff.len() <= MAX_DIFF_BYTES {
        (diff, false)
    } else {
        let mut cut = MAX_DIFF_BYTES;
        while !diff.is_char_boundary(cut) {
            cut -= 1;
        }
        (
            format!(
                "{}\n… diff truncated ({} bytes in all)\n",
                &diff[..cut],
                diff.len()
            ),
            true,
        )
    }
}

/// Find the window of lines most like `old` and the first line in it that differs.
fn near_match(text: &str, old: &str) -> Option<NearMatch> {
    let file_lines: Vec<&str> = text.lines().collect();
    let old_lines: Vec<&str> = old.trim_end_matches('\n').lines().collect();
    if file_lines.is_empty() || old_lines.is_empty() {
        return None;
    }
    let window = old_lines.len().min(file_lines.len());
    // Rank windows by their first line, then score the best few in full: this
    // keeps the search linear in the file size for multi-line old_strings.
    let first = clip(old_lines[0]);
    let mut ranked: Vec<(f64, usize)> = (0..=file_lines.len() - window)
        .map(|i| {
            (
                strsim::normalized_levenshtein(first, clip(file_lines[i])),
                i,
            )
        })
        .collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let (score, start) = ranked
        .iter()
        .take(8)
        .map(|&(_, i)| {
            let total: f64 = (0..window)
                .map(|j| {
                    strsim::normalized_levenshtein(clip(old_lines[j]), clip(file_lines[i + j]))
                })
                .sum();
            (total / window as f64, i)
        })
        .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)))?;
    if score < 0.3 {
        return None;
    }
    let differing = (0..window)
        .find(|&j| old_lines[j] != file_lines[start + j])
        .unwrap_or(window.saturating_sub(1));
    let squash = |s: &str| s.split_whitespace().collect::<String>();
    let whitespace_only =
        (0..window).all(|j| squash(old_lines[j]) == squash(file_lines[start + j]));
    Some(NearMatch {
        line: start + 1,
        differing_line: start + differing + 1,
        expected: old_lines
            .get(differing)
            .copied()
            .unwrap_or_default()
            .to_string(),
        found: file_lines[start + differing].to_string(),
        similarity: score,
        whitespace_only,
    })
}

fn clip(line: &str) -> &str {
    match line.char_indices().nth(NEAR_MATCH_LINE_CHARS) {
        Some((i, _)) => &line[..i],
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_a_single_exact_match_and_reports_a_diff() {
        let e = search_replace("a\nb\nc\n", "b", "B", false, "f.txt").unwrap();
        assert_eq!(e.text, "a\nB\nc\n");
        assert_eq!(e.replacements, 1);
        assert!(e.diff.contains("-b\n+B\n"), "{}", e.diff);
        assert!(e.diff.contains("a/f.txt"));
    }

    #[test]
    fn replacement_text_is_literal() {
        let e = search_replace("x = 1\n", "1", r"$& $1 \0 \\n ${x}", false, "f").unwrap();
        assert_eq!(e.text, "x = $& $1 \\0 \\\\n ${x}\n");
    }

    #[test]
    fn several_matches_without_replace_all_lists_their_lines() {
        let err = search_replace("foo\nbar\nfoo\nfoo\n", "foo", "x", false, "f").unwrap_err();
        assert_eq!(err, EditError::Ambiguous(vec![1, 3, 4]));
        assert!(err.to_string().contains("lines 1, 3, 4"));
        let e = search_replace("foo\nbar\nfoo\nfoo\n", "foo", "x", true, "f").unwrap();
        assert_eq!(e.text, "x\nbar\nx\nx\n");
        assert_eq!(e.replacements, 3);
    }

    #[test]
    fn zero_matches_point_at_the_closest_line() {
        let text = "fn main() {\n    let total = 1;\n    println!(\"{total}\");\n}\n";
        let err =
            search_replace(text, "    let totl = 1;\n    println!", "x", false, "f").unwrap_err();
        let EditError::NotFound(Some(near)) = err else {
            panic!("{err:?}")
        };
        assert_eq!(near.line, 2);
        assert_eq!(near.differing_line, 2);
        assert_eq!(near.found, "    let total = 1;");
        assert!(!near.whitespace_only);
    }

    #[test]
    fn whitespace_only_difference_is_called_out() {
        let err = search_replace(
            "if x {\n\treturn 1;\n}\n",
            "if x {\n    return 1;",
            "y",
            false,
            "f",
        )
        .unwrap_err();
        let EditError::NotFound(Some(near)) = err else {
            panic!()
        };
        assert!(near.whitespace_only);
        assert_eq!(near.differing_line, 2);
    }

    #[test]
    fn crlf_bom_and_missing_final_newline_are_preserved() {
        let original = "\u{feff}one\r\ntwo\r\nthree";
        let e = search_replace(original, "two\nthree", "2\nthree", false, "f").unwrap();
        assert_eq!(e.text, "\u{feff}one\r\n2\r\nthree");
        let e = search_replace("a\r\nb\r\n", "b\r\n", "c\r\nd\r\n", false, "f").unwrap();
        assert_eq!(e.text, "a\r\nc\r\nd\r\n");
    }

    #[test]
    fn final_newline_state_is_kept() {
        let e = search_replace("a\nb\n", "b\n", "c", false, "f").unwrap();
        assert_eq!(e.text, "a\nc\n");
        let e = search_replace("a\nb", "b", "c\n", false, "f").unwrap();
        assert_eq!(e.text, "a\nc");
    }

    #[test]
    fn mixed_line_endings_are_matched_raw_and_left_alone() {
        let e = search_replace("a\r\nb\nc\r\n", "b", "B", false, "f").unwrap();
        assert_eq!(e.text, "a\r\nB\nc\r\n");
    }

    #[test]
    fn empty_and_identical_strings_are_refused() {
        assert_eq!(
            search_replace("a", "", "b", false, "f").unwrap_err(),
            EditError::EmptyOldString
        );
        assert_eq!(
            search_replace("a", "a", "a", false, "f").unwrap_err(),
            EditError::NoChange
        );
    }
}
