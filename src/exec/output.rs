//! What a command prints, made fit for a model: each stream is captured by a
//! bounded buffer that keeps the first and the last bytes (memory does not
//! grow with the output; the middle of a flood is counted, not kept), then
//! decoded as UTF-8 and stripped of terminal control sequences (colours,
//! cursor movement, titles, hyperlinks), so that what the model reads is the
//! text a person would have seen on a terminal.

/// Bounded capture of one stream: the first half of `cap` bytes, and a ring
/// buffer holding the last half.
#[derive(Debug, Clone)]
pub struct Capture {
    head_cap: usize,
    tail_cap: usize,
    head: Vec<u8>,
    /// Ring buffer; when full, `tail_pos` is the index of its oldest byte.
    tail: Vec<u8>,
    tail_pos: usize,
    total: u64,
}

/// A capture rendered for a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedText {
    /// Decoded, control sequences stripped; with a marker where bytes were left out.
    pub text: String,
    /// Bytes the stream carried in all.
    pub bytes: u64,
    /// True when the middle of the stream was left out.
    pub truncated: bool,
}

impl Capture {
    /// A capture that keeps at most `cap` bytes (half head, half tail).
    pub fn new(cap: usize) -> Self {
        let head_cap = cap / 2;
        Self {
            head_cap,
            tail_cap: cap - head_cap,
            head: Vec::new(),
            tail: Vec::new(),
            tail_pos: 0,
            total: 0,
        }
    }

    /// Bytes seen so far (kept or not).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes held in memory.
    pub fn kept(&self) -> usize {
        self.head.len() + self.tail.len()
    }

    pub fn truncated(&self) -> bool {
        self.total > self.kept() as u64
    }

    pub fn push(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        let room = self.head_cap - self.head.len();
        if room > 0 {
            let n = room.min(data.len());
            self.head.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        if data.is_empty() || self.tail_cap == 0 {
            return;
        }
        if data.len() >= self.tail_cap {
            self.tail.clear();
            self.tail
                .extend_from_slice(&data[data.len() - self.tail_cap..]);
            self.tail_pos = 0;
            return;
        }
        if self.tail.len() < self.tail_cap {
            let n = (self.tail_cap - self.tail.len()).min(data.len());
            self.tail.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        // The ring is full: overwrite the oldest bytes.
        while !data.is_empty() {
            let n = (self.tail_cap - self.tail_pos).min(data.len());
            self.tail[self.tail_pos..self.tail_pos + n].copy_from_slice(&data[..n]);
            self.tail_pos = (self.tail_pos + n) % self.tail_cap;
            data = &data[n..];
        }
    }

    /// Take what was captured, leaving an empty capture of the same size
    /// (background jobs hand out output piece by piece).
    pub fn take(&mut self) -> CapturedText {
        let text = self.render();
        *self = Capture::new(self.head_cap + self.tail_cap);
        text
    }

    /// Decode and strip what was kept, marking the bytes left out.
    pub fn render(&self) -> CapturedText {
        let omitted = self.total - self.kept() as u64;
        let mut bytes = Vec::with_capacity(self.kept() + 64);
        if omitted == 0 {
            bytes.extend_from_slice(&self.head);
            bytes.extend_from_slice(&self.tail[self.tail_pos..]);
            bytes.extend_from_slice(&self.tail[..self.tail_pos]);
        } else {
            // Cut at character boundaries: no half character on either side of the gap.
            bytes.extend_from_slice(trim_partial_char_end(&self.head));
            bytes.extend_from_slice(
                format!("\n[… {omitted} bytes of output left out …]\n").as_bytes(),
            );
            let mut tail = Vec::with_capacity(self.tail.len());
            tail.extend_from_slice(&self.tail[self.tail_pos..]);
            tail.extend_from_slice(&self.tail[..self.tail_pos]);
            bytes.extend_from_slice(trim_partial_char_start(&tail));
        }
        CapturedText {
            text: strip_control_sequences(&String::from_utf8_lossy(&bytes)),
            bytes: self.total,
            truncated: omitted > 0,
        }
    }
}

/// Drop an incomplete UTF-8 sequence at the end.
fn trim_partial_char_end(b: &[u8]) -> &[u8] {
    // Look back at most 3 bytes for the start of the last character.
    for back in 1..=b.len().min(4) {
        let byte = b[b.len() - back];
        if byte & 0xC0 != 0x80 {
            let need = match byte {
                0x00..=0x7F => 1,
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF7 => 4,
                _ => return b,
            };
            return if back < need { &b[..b.len() - back] } else { b };
        }
    }
    b
}

/// Drop continuation bytes at the start (the rest of a character cut off).
fn trim_partial_char_start(b: &[u8]) -> &[u8] {
    let skip = b.iter().take(3).take_while(|&&x| x & 0xC0 == 0x80).count();
    &b[skip..]
}

/// Remove what a terminal would interpret rather than show: ANSI escape
/// sequences (CSI, OSC, DCS and friends, two-byte escapes), C1 controls,
/// and C0 controls other than tab and newline. A carriage return that is not
/// part of `\r\n` returns to the start of the line (as a progress bar
/// expects), so only what the line ends with is kept; a backspace removes
/// the character before it.
pub fn strip_control_sequences(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    let mut chars = input.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' | '\t' => out.push(c),
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    continue;
                }
                // Back to the start of the line; a `\r` at the very end changes nothing visible.
                if chars.peek().is_some() {
                    let line_start = out.rfind('\n').map_or(0, |i| i + 1);
                    out.truncate(line_start);
                }
            }
            '\u{8}' => {
                if let Some(last) = out.chars().last().filter(|&l| l != '\n') {
                    out.truncate(out.len() - last.len_utf8());
                }
            }
            '\u{1b}' => match chars.next() {
                Some('[') => skip_csi(&mut chars),
                Some(']') => skip_string(&mut chars, true),
                Some('P' | 'X' | '^' | '_') => skip_string(&mut chars, false),
                Some(c) if ('\u{20}'..='\u{2f}').contains(&c) => {
                    // Intermediate bytes, then one final byte.
                    while let Some(&n) = chars.peek() {
                        chars.next();
                        if !('\u{20}'..='\u{2f}').contains(&n) {
                            break;
                        }
                    }
                }
                _ => {} // a two-character escape (or a lone ESC at the end)
            },
            '\u{9b}' => skip_csi(&mut chars),
            '\u{9d}' => skip_string(&mut chars, true),
            '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}' => skip_string(&mut chars, false),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Skip a control sequence's parameters, intermediates and final byte.
fn skip_csi(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    for c in chars.by_ref() {
        if ('\u{40}'..='\u{7e}').contains(&c) {
            return;
        }
        if !('\u{20}'..='\u{3f}').contains(&c) {
            // Malformed: stop at the first byte that cannot belong to it.
            return;
        }
    }
}

/// Skip an OSC/DCS-style string up to its terminator (ST, or BEL for OSC).
fn skip_string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, bel_ends: bool) {
    while let Some(c) = chars.next() {
        match c {
            '\u{7}' if bel_ends => return,
            '\u{9c}' => return,
            '\u{1b}' => {
                if chars.peek() == Some(&'\\') {
                    chars.next();
                }
                return;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn captured(cap: usize, pushes: &[&[u8]]) -> Capture {
        let mut c = Capture::new(cap);
        for p in pushes {
            c.push(p);
        }
        c
    }

    #[test]
    fn small_output_is_kept_whole() {
        let c = captured(100, &[b"hello ", b"world\n"]);
        let r = c.render();
        assert_eq!(r.text, "hello world\n");
        assert_eq!((r.bytes, r.truncated), (12, false));
    }

    #[test]
    fn output_exactly_at_the_cap_is_not_truncated() {
        let c = captured(10, &[b"0123456789"]);
        assert_eq!(c.render().text, "0123456789");
        assert!(!c.truncated());
    }

    #[test]
    fn a_flood_keeps_head_and_tail_and_counts_the_rest() {
        let mut c = Capture::new(20);
        let mut expected_total = 0;
        for i in 0..10_000 {
            let line = format!("{i}\n");
            expected_total += line.len() as u64;
            c.push(line.as_bytes());
        }
        assert!(c.kept() <= 20);
        let r = c.render();
        assert!(r.truncated);
        assert_eq!(r.bytes, expected_total);
        assert!(r.text.starts_with("0\n1\n2\n3\n"), "{}", r.text);
        assert!(r.text.ends_with("9998\n9999\n"), "{}", r.text);
        let omitted = expected_total - 20;
        assert!(
            r.text
                .contains(&format!("[… {omitted} bytes of output left out …]")),
            "{}",
            r.text
        );
    }

    #[test]
    fn one_huge_push_keeps_its_last_bytes() {
        let data: Vec<u8> = (0..1000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let c = captured(10, &[&data]);
        let r = c.render();
        assert!(r.text.starts_with("abcde\n"));
        let last: String = data[995..].iter().map(|&b| b as char).collect();
        assert!(r.text.ends_with(&last), "{} / {last}", r.text);
    }

    #[test]
    fn the_ring_wraps_in_order() {
        let c = captured(8, &[b"abcd", b"ef", b"gh", b"ij", b"k"]);
        // head: abcd; tail keeps the last 4 bytes: hijk
        let r = c.render();
        assert!(r.text.starts_with("abcd\n"));
        assert!(r.text.ends_with("\nhijk"), "{}", r.text);
    }

    #[test]
    fn a_cut_never_leaves_half_a_character() {
        let text = "é".repeat(100); // 2 bytes each
        let c = captured(11, &[text.as_bytes()]);
        let r = c.render();
        assert!(!r.text.contains('\u{fffd}'), "{}", r.text);
    }

    #[test]
    fn take_hands_out_output_piece_by_piece() {
        let mut c = Capture::new(100);
        c.push(b"one\n");
        assert_eq!(c.take().text, "one\n");
        c.push(b"two\n");
        let r = c.take();
        assert_eq!((r.text.as_str(), r.bytes), ("two\n", 4));
        assert_eq!(c.take().text, "");
    }

    #[test]
    fn colours_and_cursor_movement_are_stripped() {
        assert_eq!(
            strip_control_sequences("\x1b[1;31merror\x1b[0m: bad\x1b[K\n"),
            "error: bad\n"
        );
        assert_eq!(
            strip_control_sequences("\x1b[?25lhidden\x1b[?25h"),
            "hidden"
        );
        assert_eq!(strip_control_sequences("a\x1b(Bb\x1b=c"), "abc");
    }

    #[test]
    fn titles_and_hyperlinks_are_stripped_but_their_text_stays() {
        assert_eq!(
            strip_control_sequences("\x1b]0;title\x07x\x1b]8;;http://e.x\x1b\\link\x1b]8;;\x1b\\"),
            "xlink"
        );
        assert_eq!(strip_control_sequences("\x1bPq#0;2;0;0;0\x1b\\ok"), "ok");
    }

    #[test]
    fn c1_and_other_controls_are_removed() {
        assert_eq!(
            strip_control_sequences("a\u{9b}31mb\u{7}c\0d\u{7f}e"),
            "abcde"
        );
        assert_eq!(
            strip_control_sequences("tab\tand\nnewline"),
            "tab\tand\nnewline"
        );
    }

    #[test]
    fn carriage_returns_keep_what_the_line_ends_with() {
        assert_eq!(strip_control_sequences("a\r\nb\r\n"), "a\nb\n");
        assert_eq!(
            strip_control_sequences("first\n10%\r50%\r100%\ndone\n"),
            "first\n100%\ndone\n"
        );
        assert_eq!(strip_control_sequences("end\r"), "end");
    }

    #[test]
    fn backspace_removes_the_previous_character() {
        assert_eq!(strip_control_sequences("ab\u{8}c"), "ac");
        assert_eq!(strip_control_sequences("a\n\u{8}b"), "a\nb");
        // Overstrike bold as man pages print it.
        assert_eq!(
            strip_control_sequences("N\u{8}NA\u{8}AM\u{8}ME\u{8}E"),
            "NAME"
        );
    }

    #[test]
    fn an_escape_cut_off_at_the_end_is_dropped() {
        assert_eq!(strip_control_sequences("ok\x1b"), "ok");
        assert_eq!(strip_control_sequences("ok\x1b[1;3"), "ok");
        assert_eq!(strip_control_sequences("ok\x1b]0;unterminated"), "ok");
    }
}
