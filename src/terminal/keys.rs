//! Named keys (`Enter`, `Ctrl-C`, `Up`, …) as the bytes a terminal sends for them, for callers
//! that cannot type (agents through MCP, `POST /terminals/:id/input`).

/// The bytes of `name`, or `None` for a name we do not know. Names are case-insensitive;
/// `Ctrl-X`/`C-x` take any letter and `[ \ ] ^ _ @`; `Alt-X`/`M-x` prefix ESC.
pub(crate) fn bytes(name: &str) -> Option<Vec<u8>> {
    let lower = name.trim().to_ascii_lowercase();
    let fixed: &[u8] = match lower.as_str() {
        "enter" | "return" | "cr" => b"\r",
        "tab" => b"\t",
        "backtab" | "shift-tab" => b"\x1b[Z",
        "escape" | "esc" => b"\x1b",
        "backspace" | "bs" => b"\x7f",
        "space" => b" ",
        "up" => b"\x1b[A",
        "down" => b"\x1b[B",
        "right" => b"\x1b[C",
        "left" => b"\x1b[D",
        "home" => b"\x1b[H",
        "end" => b"\x1b[F",
        "pageup" | "page-up" | "pgup" => b"\x1b[5~",
        "pagedown" | "page-down" | "pgdn" => b"\x1b[6~",
        "insert" => b"\x1b[2~",
        "delete" | "del" => b"\x1b[3~",
        "f1" => b"\x1bOP",
        "f2" => b"\x1bOQ",
        "f3" => b"\x1bOR",
        "f4" => b"\x1bOS",
        "f5" => b"\x1b[15~",
        "f6" => b"\x1b[17~",
        "f7" => b"\x1b[18~",
        "f8" => b"\x1b[19~",
        "f9" => b"\x1b[20~",
        "f10" => b"\x1b[21~",
        "f11" => b"\x1b[23~",
        "f12" => b"\x1b[24~",
        _ => return modified(&lower),
    };
    Some(fixed.to_vec())
}

/// The names [`bytes`] takes, as a regular expression (the OpenAPI document's pattern): the
/// fixed names and their aliases, `Ctrl-`/`C-`/`^` with a letter or `@ [ \ ] ^ _ ?`, `Alt-`/`M-`
/// with one ASCII character, any case, with the white space `trim` removes around them.
#[cfg(test)]
pub(crate) fn pattern() -> String {
    const FIXED: [&str; 38] = [
        "enter",
        "return",
        "cr",
        "tab",
        "backtab",
        "shift-tab",
        "escape",
        "esc",
        "backspace",
        "bs",
        "space",
        "up",
        "down",
        "right",
        "left",
        "home",
        "end",
        "pageup",
        "page-up",
        "pgup",
        "pagedown",
        "page-down",
        "pgdn",
        "insert",
        "delete",
        "del",
        "f1",
        "f2",
        "f3",
        "f4",
        "f5",
        "f6",
        "f7",
        "f8",
        "f9",
        "f10",
        "f11",
        "f12",
    ];
    let any_case = |word: &str| -> String {
        word.chars()
            .map(|c| match c {
                'a'..='z' => format!("[{}{c}]", c.to_ascii_uppercase()),
                '+' | '^' => format!("\\{c}"),
                c => c.to_string(),
            })
            .collect()
    };
    let fixed: Vec<String> = FIXED.iter().map(|w| any_case(w)).collect();
    let ctrl: Vec<String> = ["ctrl-", "ctrl+", "c-", "^"].iter().map(|w| any_case(w)).collect();
    let alt: Vec<String> = ["alt-", "alt+", "m-", "meta-"].iter().map(|w| any_case(w)).collect();
    let space = "[\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*";
    format!(
        "^{space}({}|({})[A-Za-z@\\[\\\\\\]^_?]|({})[\\u0000-\\u0008\\u000e-\\u001f!-\\u007f]){space}$",
        fixed.join("|"),
        ctrl.join("|"),
        alt.join("|")
    )
}

/// The byte of a control key given as `C-a`/`Ctrl-a` (the CLI's detach prefix), if it is one.
pub(crate) fn prefix_byte(name: &str) -> Option<u8> {
    let lower = name.trim().to_ascii_lowercase();
    if !(lower.starts_with("c-") || lower.starts_with("ctrl")) {
        return None;
    }
    match bytes(name)?.as_slice() {
        [byte] if *byte < 0x20 && *byte != 0 => Some(*byte),
        _ => None,
    }
}

/// `ctrl-x`, `c-x`, `alt-x`, `m-x` (a single character after the prefix).
fn modified(lower: &str) -> Option<Vec<u8>> {
    let split = |prefixes: &[&str]| prefixes.iter().find_map(|p| lower.strip_prefix(p)).filter(|rest| rest.len() == 1);
    if let Some(rest) = split(&["ctrl-", "ctrl+", "c-", "^"]) {
        let c = rest.as_bytes()[0];
        return match c {
            b'a'..=b'z' => Some(vec![c - b'a' + 1]),
            b'@' | b' ' => Some(vec![0]),
            b'[' => Some(vec![0x1b]),
            b'\\' => Some(vec![0x1c]),
            b']' => Some(vec![0x1d]),
            b'^' => Some(vec![0x1e]),
            b'_' => Some(vec![0x1f]),
            b'?' => Some(vec![0x7f]),
            _ => None,
        };
    }
    if let Some(rest) = split(&["alt-", "alt+", "m-", "meta-"]) {
        let mut out = vec![0x1b];
        out.extend_from_slice(rest.as_bytes());
        return Some(out);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_names_what_bytes_takes() {
        let pattern = pattern();
        for name in ["Enter", "shift-tab", "PgDn", "F12", "Ctrl-C", "c-\\", "^?", "Alt-x", "META-."] {
            assert!(bytes(name).is_some(), "{name}");
        }
        for part in ["[Pp][Gg][Dd][Nn]", "[Ff]12", "[Mm][Ee][Tt][Aa]-", "\\^"] {
            assert!(pattern.contains(part), "{part} in {pattern}");
        }
    }

    #[track_caller]
    fn check(name: &str, expected: Option<&[u8]>) {
        assert_eq!(bytes(name).as_deref(), expected, "{name}");
    }

    #[test]
    fn named_keys_are_the_bytes_a_terminal_sends() {
        check("Enter", Some(b"\r"));
        check("Tab", Some(b"\t"));
        check("Escape", Some(b"\x1b"));
        check("Ctrl-C", Some(b"\x03"));
        check("C-d", Some(b"\x04"));
        check("ctrl-[", Some(b"\x1b"));
        check("Up", Some(b"\x1b[A"));
        check("Down", Some(b"\x1b[B"));
        check("PageDown", Some(b"\x1b[6~"));
        check("Alt-x", Some(b"\x1bx"));
        check("F5", Some(b"\x1b[15~"));
    }

    #[test]
    fn a_detach_prefix_is_one_control_key() {
        assert_eq!(prefix_byte("C-a"), Some(1));
        assert_eq!(prefix_byte("Ctrl-B"), Some(2));
        assert_eq!(prefix_byte("a"), None);
        assert_eq!(prefix_byte("Up"), None);
        assert_eq!(prefix_byte("C-@"), None);
    }

    #[test]
    fn unknown_names_are_refused() {
        check("Hyper-Q", None);
        check("Ctrl-", None);
        check("Ctrl-Ä", None);
        check("", None);
    }
}
