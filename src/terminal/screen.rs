//! The screen model of one terminal: everything the program wrote, parsed by `vt100` into a
//! grid, plus a bounded history of the lines that scrolled off the top.
//!
//! A client that attaches is sent [`Screen::snapshot`]: the history, then escape codes that
//! redraw the current grid (alternate screen and input modes included) at the size in force.
//! Replaying raw bytes instead is what half-painted full-screen programs in loopsy 1.0.53: the
//! bytes were drawn for another size and often start mid-frame.

use std::collections::VecDeque;
use std::num::NonZeroU16;

/// The screen and its history. The history keeps whole rows (SGR formatting included) up to a
/// byte budget; the grid itself is `rows` x `cols` cells.
pub(crate) struct Screen {
    parser: vt100::Parser<Events>,
}

/// What the parser reports besides the grid: rows leaving the top, the window title.
struct Events {
    history: History,
    title: Option<String>,
    title_changed: bool,
}

/// Rows that scrolled off the normal screen, oldest first, at most `limit` bytes.
struct History {
    rows: VecDeque<String>,
    bytes: usize,
    limit: usize,
}

impl vt100::Callbacks for Events {
    fn set_window_title(&mut self, _: &mut vt100::Screen, title: &[u8]) {
        // A title is a label: keep it short and printable.
        let title: String = String::from_utf8_lossy(title).chars().filter(|c| !c.is_control()).take(256).collect();
        if self.title.as_deref() != Some(title.as_str()) {
            self.title = Some(title);
            self.title_changed = true;
        }
    }

    fn on_scroll(&mut self, row: vt100::capture::RowContents<'_>, alternate_screen: bool) {
        // Full-screen programs scroll inside the alternate screen; that is not history.
        if alternate_screen || self.history.limit == 0 {
            return;
        }
        let mut text = String::new();
        let mut state = vt100::capture::BasicFormattedCaptureState::new();
        if row.write_formatted_basic(&mut text, &mut state).is_ok() {
            self.history.push(text);
        }
    }
}

impl History {
    fn push(&mut self, row: String) {
        if row.len() > self.limit {
            return;
        }
        self.bytes += row.len();
        self.rows.push_back(row);
        while self.bytes > self.limit {
            let oldest = self.rows.pop_front().expect("rows add up to bytes");
            self.bytes -= oldest.len();
        }
    }
}

impl Screen {
    /// A blank screen of `rows` x `cols` keeping up to `history_bytes` of scrolled-off rows.
    pub(crate) fn new(rows: u16, cols: u16, history_bytes: usize) -> Screen {
        let events = Events {
            history: History { rows: VecDeque::new(), bytes: 0, limit: history_bytes },
            title: None,
            title_changed: false,
        };
        // Scrollback capacity 0: every row leaving the top goes to `on_scroll`, where it is
        // kept as text (a vt100 cell costs 32 bytes, a 1 MiB history of cells would be 30 MiB).
        Screen { parser: vt100::Parser::new_with_callbacks(non_zero(rows), non_zero(cols), 0, events) }
    }

    pub(crate) fn process(&mut self, bytes: &[u8]) {
        self.parser.process(bytes);
    }

    pub(crate) fn resize(&mut self, rows: u16, cols: u16) {
        self.parser.set_size(non_zero(rows), non_zero(cols));
    }

    /// (rows, cols).
    pub(crate) fn size(&self) -> (u16, u16) {
        let (rows, cols) = self.parser.screen().size();
        (rows.get(), cols.get())
    }

    /// The window title, when it changed since the last call.
    pub(crate) fn take_title_change(&mut self) -> Option<String> {
        let events = self.parser.callbacks_mut();
        if !std::mem::take(&mut events.title_changed) {
            return None;
        }
        events.title.clone()
    }

    pub(crate) fn title(&self) -> Option<&str> {
        self.parser.callbacks().title.as_deref()
    }

    pub(crate) fn alternate(&self) -> bool {
        self.parser.screen().alternate_screen()
    }

    /// The visible grid as plain text, trailing blanks of each row trimmed.
    pub(crate) fn text(&self) -> String {
        let (_, cols) = self.size();
        let rows: Vec<String> = self.parser.screen().rows(0, cols).map(|row| row.trim_end().to_string()).collect();
        let last = rows.iter().rposition(|row| !row.is_empty()).map_or(0, |i| i + 1);
        rows[..last].join("\n")
    }

    /// (row, col) of the cursor.
    pub(crate) fn cursor(&self) -> (u16, u16) {
        self.parser.screen().cursor_position()
    }

    /// Bytes that make a terminal of the current size show this screen: with `history`, the
    /// scrolled-off rows first (pushed into the client's own scrollback), then the grid,
    /// cursor, attributes and input modes.
    pub(crate) fn snapshot(&self, history: bool) -> Vec<u8> {
        let screen = self.parser.screen();
        let mut out = String::new();
        // Start from the normal screen with default attributes, whatever the client showed.
        out.push_str("\x1b[?1049l\x1b[m");
        if history {
            let rows = &self.parser.callbacks().history.rows;
            if !rows.is_empty() {
                out.push_str("\x1b[H\x1b[2J");
                for row in rows {
                    out.push_str(row);
                    out.push_str("\x1b[m\r\n");
                }
                // Enough new lines that every history row has left the visible area.
                out.push_str(&"\r\n".repeat(usize::from(self.size().0)));
            }
        }
        if screen.alternate_screen() {
            // The normal screen under it is not kept by vt100; the session repaints it when
            // the program leaves the alternate screen (`Session` tracks that).
            out.push_str("\x1b[?1049h");
        }
        out.push_str(&screen.state_formatted());
        out.into_bytes()
    }

    /// The normal screen redrawn, for a client that attached while the alternate screen was
    /// in use and has just left it.
    pub(crate) fn repaint(&self) -> Vec<u8> {
        self.parser.screen().state_formatted().into_bytes()
    }

    /// Bytes of history kept (for the memory bound's tests).
    #[cfg(test)]
    fn history_bytes(&self) -> usize {
        self.parser.callbacks().history.bytes
    }
}

fn non_zero(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).unwrap_or(NonZeroU16::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay(snapshot: &[u8], rows: u16, cols: u16) -> vt100::Parser {
        let mut parser = vt100::Parser::new(non_zero(rows), non_zero(cols), 0);
        parser.process(snapshot);
        parser
    }

    #[test]
    fn a_snapshot_redraws_the_same_cells() {
        let mut screen = Screen::new(5, 20, 1024);
        screen.process(b"one\r\ntwo \x1b[31mred\x1b[m\r\nthree\r\n\x1b[1mbold");
        let copy = replay(&screen.snapshot(true), 5, 20);
        assert_eq!(copy.screen().contents_formatted(), screen.parser.screen().contents_formatted());
        assert_eq!(copy.screen().cursor_position(), screen.cursor());
    }

    #[test]
    fn the_alternate_screen_is_entered_by_the_snapshot() {
        let mut screen = Screen::new(4, 10, 1024);
        screen.process(b"prompt$ \x1b[?1049h\x1b[Hfull\x1b[2;3Hscreen");
        let copy = replay(&screen.snapshot(false), 4, 10);
        assert!(copy.screen().alternate_screen());
        assert_eq!(copy.screen().contents(), screen.parser.screen().contents());
    }

    #[test]
    fn history_keeps_scrolled_rows_within_its_budget() {
        let mut screen = Screen::new(3, 10, 40);
        for i in 0..50 {
            screen.process(format!("line {i:02}\r\n").as_bytes());
        }
        assert!(screen.history_bytes() <= 40, "{}", screen.history_bytes());
        let rows = &screen.parser.callbacks().history.rows;
        assert_eq!(rows.back().map(String::as_str), Some("line 47"));
        assert_eq!(screen.text(), "line 48\nline 49");
    }

    #[test]
    fn titles_are_reported_once_per_change() {
        let mut screen = Screen::new(3, 10, 0);
        screen.process(b"\x1b]2;build\x07");
        assert_eq!(screen.take_title_change().as_deref(), Some("build"));
        assert_eq!(screen.take_title_change(), None);
        screen.process(b"\x1b]2;build\x07");
        assert_eq!(screen.take_title_change(), None);
        assert_eq!(screen.title(), Some("build"));
    }

    #[test]
    fn text_trims_blank_rows_and_trailing_spaces() {
        let mut screen = Screen::new(6, 10, 0);
        screen.process(b">>> 1+1\r\n2   \r\n>>> ");
        assert_eq!(screen.text(), ">>> 1+1\n2\n>>>");
    }
}
