//! The hot/cold code layout of the release binary: the pure part, shared by `build.rs` (which
//! decides whether to pass the list to the linker) and `cargo xtask link-order` / `tidy` (which
//! write and check it). See ARCHITECTURE.md "Code layout of the release binary".
//!
//! `src/build/link-order.txt` names, one a line, the functions a daemon runs from start through
//! idle and its common requests, hottest first, as the linker spells them (mangled). A header of
//! `# key value` lines says what they were generated from:
//!
//! ```text
//! # target x86_64-unknown-linux-gnu
//! # rustc 1.95.0
//! # lock 0123456789abcdef
//! _ZN6loopsy6daemon3run17h0123456789abcdefE
//! ```
//!
//! Mangled names carry a hash of the crate's build (its `-C metadata`: the rustc version, the
//! target, the dependency graph), so a list from another toolchain, target or lock file names
//! symbols the binary does not have: the linker ignores them and the layout falls back to the
//! usual one. Nothing breaks; the benefit is lost until the list is regenerated.

/// The list, relative to the repository root.
pub const LIST: &str = "src/build/link-order.txt";

/// The list's header and names.
#[derive(Debug, PartialEq, Eq, Default)]
pub struct List<'a> {
    pub target: Option<&'a str>,
    pub rustc: Option<&'a str>,
    pub lock: Option<&'a str>,
    pub symbols: Vec<&'a str>,
}

/// Parses the list: `# key value` header lines, blank lines and other comments skipped.
pub fn parse(text: &str) -> List<'_> {
    let mut list = List::default();
    for line in text.lines().map(str::trim) {
        if let Some(comment) = line.strip_prefix('#') {
            let (key, value) = comment.trim().split_once(' ').unwrap_or((comment.trim(), ""));
            let value = Some(value.trim()).filter(|v| !v.is_empty());
            match key {
                "target" => list.target = value,
                "rustc" => list.rustc = value,
                "lock" => list.lock = value,
                _ => {}
            }
        } else if !line.is_empty() {
            list.symbols.push(line);
        }
    }
    list
}

/// Whether `build.rs` should try the list on this build: only for the release profile, only on
/// the target the list was made for (another target's symbols differ anyway), and only on
/// Linux, where the linker may be lld. Whether the linker really accepts the flags is then
/// probed by linking an empty program with them (GNU ld and gold do not know them).
pub fn wanted(profile: &str, target: &str, target_os: &str, list: &List<'_>) -> bool {
    profile == "release" && target_os == "linux" && list.target == Some(target) && !list.symbols.is_empty()
}

/// The linker arguments, given the path of the names-only copy of the list: `-Wl,` because
/// rustc drives the linker through `cc` on Linux.
pub fn link_args(names_file: &str) -> [String; 2] {
    [format!("-Wl,--symbol-ordering-file={names_file}"), "-Wl,--no-warn-symbol-ordering".to_string()]
}
