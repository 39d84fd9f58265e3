//! JSON text for the reply hot path, byte for byte what `serde_json` writes.
//!
//! A `file_read` reply carries the file twice (the text block and
//! `structuredContent`), and `serde_json` escapes strings one byte at a time:
//! that was the largest single cost of a 4 KiB read over stdio. Here a string
//! is scanned sixteen bytes at a time (eight off x86_64) and copied in runs
//! between the bytes that need escaping; a read's lines are escaped once, as
//! they are numbered ([`JsonStringBody`]).

use serde_json::Value;

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// A mask whose lowest set bit is the high bit of the first byte of `word`
/// (little-endian) that is a control character, `"` or `\\`; zero when none
/// is. Bits above the lowest may be false alarms (a borrow of the classic
/// has-zero-byte tests), so only the lowest is used.
fn escape_mask(word: u64) -> u64 {
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    let quote = has_zero(word ^ (ONES * u64::from(b'"')));
    let backslash = has_zero(word ^ (ONES * u64::from(b'\\')));
    below_space | quote | backslash
}

fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Append `s` as a JSON string, quotes included.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + s.len() / 16 + 2);
    out.push(b'"');
    write_str_body(out, s);
    out.push(b'"');
}

/// Append `s` escaped as the inside of a JSON string (no quotes): pieces of
/// one string written apart, such as a read's numbered lines.
pub fn write_str_body(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut run = 0; // start of the bytes not yet copied
    while let Some(escape) = next_escape(bytes, run) {
        out.extend_from_slice(&bytes[run..escape]);
        push_escape(out, bytes[escape]);
        run = escape + 1;
    }
    out.extend_from_slice(&bytes[run..]);
}

/// Where the first byte at or after `at` that needs escaping is, sixteen
/// bytes at a time (SSE2 is part of every x86_64 CPU).
#[cfg(target_arch = "x86_64")]
fn next_escape(bytes: &[u8], at: usize) -> Option<usize> {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    if bytes.len() < 16 {
        return next_escape_by_words(bytes, at);
    }
    // Bit i set: byte `start + i` is a control character, `"` or `\\`.
    let mask_at = |start: usize| -> u32 {
        assert!(start + 16 <= bytes.len());
        // SAFETY: the sixteen bytes loaded lie inside `bytes` (asserted just
        // above) and the load needs no alignment; the intrinsics need SSE2,
        // which every x86_64 CPU has.
        unsafe {
            let v = _mm_loadu_si128(bytes.as_ptr().add(start).cast::<__m128i>());
            let control = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v);
            let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
            _mm_movemask_epi8(_mm_or_si128(control, _mm_or_si128(quote, backslash))) as u32
        }
    };
    let mut at = at;
    while at + 16 <= bytes.len() {
        let mask = mask_at(at);
        if mask != 0 {
            return Some(at + mask.trailing_zeros() as usize);
        }
        at += 16;
    }
    if at >= bytes.len() {
        return None;
    }
    // The last sixteen bytes, less those already looked at.
    let start = bytes.len() - 16;
    let mask = mask_at(start) >> (at - start);
    (mask != 0).then(|| at + mask.trailing_zeros() as usize)
}

#[cfg(not(target_arch = "x86_64"))]
fn next_escape(bytes: &[u8], at: usize) -> Option<usize> {
    next_escape_by_words(bytes, at)
}

/// [`next_escape`] eight bytes at a time in a `u64`, then byte by byte.
fn next_escape_by_words(bytes: &[u8], mut at: usize) -> Option<usize> {
    while let Some(word) = bytes.get(at..at + 8) {
        let mask = escape_mask(u64::from_le_bytes(word.try_into().unwrap_or_default()));
        if mask != 0 {
            return Some(at + (mask.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    bytes[at..]
        .iter()
        .position(|&b| needs_escape(b))
        .map(|i| at + i)
}

/// The body of a JSON string (escaped, no quotes), written piece by piece:
/// a read's numbered lines, escaped as they are numbered.
#[derive(Debug, Default)]
pub struct JsonStringBody(pub Vec<u8>);

impl crate::tools::files::LineSink for JsonStringBody {
    fn reserve_text(&mut self, bytes: usize) {
        // Every line's tab and line end take two bytes each.
        self.0.reserve(bytes + bytes / 8);
    }

    fn push_text(&mut self, text: &str) {
        write_str_body(&mut self.0, text);
    }

    fn push_line(&mut self, prefix: &str, text: &str) {
        // A number's spaces and digits need no escaping, its tab and the line
        // end are known: only the text is scanned.
        match prefix.strip_suffix('\t') {
            Some(number) if number.bytes().all(|b| b == b' ' || b.is_ascii_digit()) => {
                self.0.extend_from_slice(number.as_bytes());
                self.0.extend_from_slice(b"\\t");
            }
            _ => write_str_body(&mut self.0, prefix),
        }
        write_str_body(&mut self.0, text);
        self.0.extend_from_slice(b"\\n");
    }

    /// One scan of the whole text for the bytes to escape: a line end found
    /// there is written as `\n` and the next line's number (a scan per line
    /// cost more than the escaping itself for short lines).
    fn push_lines(&mut self, first: u64, text: &str) -> usize {
        let bytes = text.as_bytes();
        if bytes.is_empty() {
            return 0;
        }
        let mut numbers = LineNumbers::new(first);
        let mut shown = numbers.write(&mut self.0);
        let mut run = 0; // start of the bytes not yet copied
        while let Some(at) = next_escape(bytes, run) {
            let line_end = match bytes[at] {
                b'\n' => Some(at + 1),
                b'\r' if at + 1 == bytes.len() => Some(at + 1),
                b'\r' if bytes[at + 1] == b'\n' => Some(at + 2),
                _ => None,
            };
            self.0.extend_from_slice(&bytes[run..at]);
            shown += at - run + 1;
            match line_end {
                Some(next) => {
                    self.0.extend_from_slice(b"\\n");
                    if next == bytes.len() {
                        return shown;
                    }
                    numbers.advance();
                    shown += numbers.write(&mut self.0);
                    run = next;
                }
                None => {
                    push_escape(&mut self.0, bytes[at]);
                    run = at + 1;
                }
            }
        }
        self.0.extend_from_slice(&bytes[run..]);
        self.0.extend_from_slice(b"\\n");
        shown + bytes.len() - run + 1
    }
}

/// Line numbers as `cat -n` writes them (six places, right-aligned) and an
/// escaped tab, counted up in place: dividing each number into digits cost
/// more than the rest of numbering a short line.
struct LineNumbers {
    /// The six places, then `\t` escaped; valid while `number` fits in six.
    prefix: [u8; 8],
    number: u64,
}

impl LineNumbers {
    const WIDE: u64 = 1_000_000;

    fn new(first: u64) -> Self {
        let mut prefix = *b"      \\t";
        if first < Self::WIDE {
            let line = crate::tools::files::LinePrefix::new(first);
            prefix[..6].copy_from_slice(&line.as_str().as_bytes()[..6]);
        }
        Self {
            prefix,
            number: first,
        }
    }

    /// Write the current number and its tab; returns the bytes before escaping.
    fn write(&self, out: &mut Vec<u8>) -> usize {
        if self.number < Self::WIDE {
            out.extend_from_slice(&self.prefix);
            return 7;
        }
        let line = crate::tools::files::LinePrefix::new(self.number);
        let digits = line.as_str().trim_end_matches('\t');
        out.extend_from_slice(digits.as_bytes());
        out.extend_from_slice(b"\\t");
        digits.len() + 1
    }

    fn advance(&mut self) {
        self.number += 1;
        if self.number >= Self::WIDE {
            return; // written by `write`'s slow path from now on
        }
        for place in self.prefix[..6].iter_mut().rev() {
            match *place {
                b'9' => *place = b'0',
                b' ' => {
                    *place = b'1';
                    return;
                }
                digit => {
                    *place = digit + 1;
                    return;
                }
            }
        }
    }
}

fn push_escape(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let short = match b {
        b'"' => b'"',
        b'\\' => b'\\',
        b'\n' => b'n',
        b'\r' => b'r',
        b'\t' => b't',
        0x08 => b'b',
        0x0c => b'f',
        _ => {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
            return;
        }
    };
    out.extend_from_slice(&[b'\\', short]);
}

/// Append `value` as compact JSON (keys in the map's order, as serde_json).
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            // Numbers are few and short: serde_json's own formatting.
            let _ = serde_json::to_writer(&mut *out, n);
        }
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, key);
                out.push(b':');
                write_value(out, item);
            }
            out.push(b'}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ours(s: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_escape_matches_serde_json() {
        for b in 0u8..=0x7f {
            let s = format!("ab{}cdefghijkl{}", b as char, b as char);
            assert_eq!(ours(&s), serde_json::to_string(&s).unwrap(), "byte {b:#x}");
        }
        for s in [
            "",
            "\"",
            "\\",
            "é\u{2028}😀",
            "line\n\tnext\r\n",
            "12345678\"1234567\\",
        ] {
            assert_eq!(ours(s), serde_json::to_string(s).unwrap());
        }
    }

    #[test]
    fn a_numbered_line_in_a_string_body_is_its_escaped_text() {
        use crate::tools::files::LineSink;
        for (prefix, text) in [
            ("     7\t", "say \"hi\"\t\u{1}"),
            ("12\t", ""),
            ("x\"\n", "y"),
        ] {
            let mut body = JsonStringBody::default();
            body.push_line(prefix, text);
            let whole = serde_json::to_string(&format!("{prefix}{text}\n")).unwrap();
            assert_eq!(
                String::from_utf8(body.0).unwrap(),
                whole[1..whole.len() - 1]
            );
        }
    }

    #[test]
    fn the_next_escape_is_found_at_every_place_and_from_every_start() {
        let naive = |bytes: &[u8], at: usize| {
            bytes[at..]
                .iter()
                .position(|&b| needs_escape(b))
                .map(|i| at + i)
        };
        for len in 0..50 {
            for special in [
                None,
                Some(b'"'),
                Some(b'\\'),
                Some(b'\n'),
                Some(0x1f),
                Some(0),
            ] {
                for place in 0..len.max(1) {
                    let mut bytes = vec![b'a'; len];
                    if let (Some(b), true) = (special, place < len) {
                        bytes[place] = b;
                    }
                    // High bytes (UTF-8) and the first bytes past the escapes never need one.
                    if len > 3 {
                        bytes[len - 1] = 0xa9;
                        bytes[len - 2] = 0xc3;
                        bytes[0] = if place == 0 { bytes[0] } else { b' ' };
                    }
                    for at in 0..=len {
                        let expected = naive(&bytes, at);
                        assert_eq!(next_escape(&bytes, at), expected, "{bytes:?} from {at}");
                        assert_eq!(
                            next_escape_by_words(&bytes, at),
                            expected,
                            "{bytes:?} from {at}"
                        );
                    }
                }
            }
        }
    }

    proptest! {
        #[test]
        fn long_strings_with_few_escapes_match_serde_json(
            s in "([ -~]{0,40}[\\x00-\\x7f]){0,12}"
        ) {
            prop_assert_eq!(ours(&s), serde_json::to_string(&s).unwrap());
        }

        #[test]
        fn strings_match_serde_json(s in any::<String>()) {
            prop_assert_eq!(ours(&s), serde_json::to_string(&s).unwrap());
        }

        #[test]
        fn ascii_with_controls_matches_serde_json(s in "[\\x00-\\x7f]{0,64}") {
            prop_assert_eq!(ours(&s), serde_json::to_string(&s).unwrap());
        }

        /// The one-scan numbering of a whole text is the line-by-line
        /// numbering (`String`'s), escaped: line ends of every kind, quotes,
        /// controls and non-ASCII, from any first number.
        #[test]
        fn whole_texts_numbered_in_one_scan_are_the_escaped_lines(
            text in "([a-z \"\\\\\t\x01é€]{0,20}(\n|\r\n|\r)?){0,12}",
            first in prop_oneof![1u64..30, 999_990u64..1_000_010],
        ) {
            use crate::tools::files::LineSink;
            let mut plain = String::new();
            let plain_bytes = plain.push_lines(first, &text);
            let mut body = JsonStringBody::default();
            let body_bytes = body.push_lines(first, &text);
            let mut escaped = Vec::new();
            write_str_body(&mut escaped, &plain);
            prop_assert_eq!(String::from_utf8(body.0).unwrap(), String::from_utf8(escaped).unwrap());
            prop_assert_eq!(body_bytes, plain_bytes);
        }
    }

    #[test]
    fn line_numbers_counted_up_are_cat_ns() {
        for first in [1, 8, 99, 99_995, 999_990] {
            let mut numbers = LineNumbers::new(first);
            for n in first..first + 20 {
                let mut out = Vec::new();
                let shown = numbers.write(&mut out);
                assert_eq!(String::from_utf8(out).unwrap(), format!("{n:>6}\\t"));
                assert_eq!(shown, format!("{n:>6}\t").len());
                numbers.advance();
            }
        }
    }

    #[test]
    fn values_match_serde_json() {
        let value = serde_json::json!({
            "content": "  1\tfn main() {\n  2\t    println!(\"hi\\n\");\n",
            "n": 12, "neg": -3, "f": 1.5, "big": u64::MAX, "t": true, "f2": false, "z": null,
            "list": [1, "two", {"k\"ey": [null]}], "empty": {}, "none": []
        });
        let mut out = Vec::new();
        write_value(&mut out, &value);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            serde_json::to_string(&value).unwrap()
        );
    }
}
