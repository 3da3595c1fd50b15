//! Splitting an agent's output into lines: bounded line length, and the cleaning a
//! pseudo-terminal needs (CRLF, ANSI escape sequences, other control characters).
//!
//! Pure: bytes in, strings out. An agent printing a huge line without a newline cannot grow the
//! daemon's memory beyond [`MAX_LINE`] (1.0.21 buffered it all, E6).

/// Longest line kept; the rest of a longer line is dropped and the line marked truncated.
pub(crate) const MAX_LINE: usize = 4 * 1024 * 1024;

/// Turns chunks of bytes into complete lines.
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    partial: Vec<u8>,
    /// Inside a line that already overflowed: drop bytes until its newline.
    skipping: bool,
    limit: usize,
}

impl LineSplitter {
    pub(crate) fn new() -> LineSplitter {
        LineSplitter::with_limit(MAX_LINE)
    }

    pub(crate) fn with_limit(limit: usize) -> LineSplitter {
        LineSplitter { partial: Vec::new(), skipping: false, limit }
    }

    /// The lines completed by `chunk` (without their `\n`).
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        let mut rest = chunk;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            let (head, tail) = rest.split_at(pos);
            if self.skipping {
                self.skipping = false;
            } else {
                self.append(head, &mut lines);
                if !self.skipping {
                    lines.push(self.take());
                }
                self.skipping = false;
            }
            rest = &tail[1..];
        }
        if !self.skipping {
            self.append(rest, &mut lines);
        }
        lines
    }

    /// The last line when the stream ends without a newline.
    pub(crate) fn finish(&mut self) -> Option<String> {
        let skipping = std::mem::take(&mut self.skipping);
        (!self.partial.is_empty() && !skipping).then(|| self.take())
    }

    fn append(&mut self, bytes: &[u8], lines: &mut Vec<String>) {
        let room = self.limit.saturating_sub(self.partial.len());
        if bytes.len() <= room {
            self.partial.extend_from_slice(bytes);
            return;
        }
        self.partial.extend_from_slice(&bytes[..room]);
        let mut line = self.take();
        line.push_str(" … [line truncated]");
        lines.push(line);
        self.skipping = true;
    }

    fn take(&mut self) -> String {
        let bytes = std::mem::take(&mut self.partial);
        String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }
}

/// Removes what a terminal adds: `\r`, ANSI CSI/OSC/charset escapes and other C0 controls
/// (tab kept). JSON lines stay intact; Claude's reset trailer disappears.
pub(crate) fn clean_terminal_line(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                // CSI: parameters and intermediates, then one final byte in @..~.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC, DCS, PM, APC: up to BEL or ST (ESC \).
                Some(']' | 'P' | '^' | '_') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' {
                            break;
                        }
                        if c == '\x1b' && chars.peek() == Some(&'\\') {
                            chars.next();
                            break;
                        }
                    }
                }
                // Charset selection and similar: one more character.
                Some('(' | ')' | '*' | '+' | '#' | '%') => {
                    chars.next();
                }
                _ => {}
            },
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_become_lines() {
        let mut s = LineSplitter::new();
        assert!(s.push(b"{\"a\":").is_empty());
        assert_eq!(s.push(b"1}\nnext\n\npart"), ["{\"a\":1}", "next", ""]);
        assert_eq!(s.finish().as_deref(), Some("part"));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn an_overlong_line_is_cut_and_the_rest_dropped() {
        let mut s = LineSplitter::with_limit(8);
        assert_eq!(s.push(b"0123456789abc"), ["01234567 … [line truncated]"]);
        assert!(s.push(b"more of the same line").is_empty());
        assert_eq!(s.push(b"tail\nok\n"), ["ok"]);
        assert_eq!(s.push(b"12345678\n"), ["12345678"]);
    }

    #[track_caller]
    fn check(raw: &str, expect: &str) {
        assert_eq!(clean_terminal_line(raw), expect);
    }

    #[test]
    fn terminal_noise_is_removed() {
        check("{\"type\":\"result\"}\r", "{\"type\":\"result\"}");
        check("\x1b[31mred\x1b[0m text", "red text");
        check("\x1b[?1006l\x1b[?1003l\x1b(B\x0f\x1b[>4m\x1b[<u\x1b[?25h\x1b7\x1b[r\x1b8\x1b]0;\x07\x1b[?25h", "");
        check("a\tb\x07c", "a\tbc");
        check("\x1b]0;title\x1b\\after", "after");
    }
}
