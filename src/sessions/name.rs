//! Session names and the one place a name becomes a path (A4 of REFERENCE-WEAKNESSES.md).
//!
//! 1.0.21 joined unvalidated names into paths and `rm -rf`ed the result, so `..` deleted the data
//! directory. Here a [`SessionName`] can only hold `[A-Za-z0-9._-]{1,64}` other than `.`, `..`
//! and the reserved `main`, and [`child_dir`] checks that the directory it names is a real
//! directory directly inside the sessions directory (no symlink leading elsewhere).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// The name `main` stands for the main daemon in listings; no session may take it.
pub(crate) const MAIN: &str = "main";

/// A validated session name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SessionName(String);

impl SessionName {
    pub(crate) fn parse(name: &str) -> Result<SessionName, String> {
        let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
        if name.is_empty() || name.len() > 64 {
            return Err(format!("invalid session name '{name}': must be 1 to 64 characters"));
        }
        if !name.bytes().all(allowed) {
            return Err(format!("invalid session name '{name}': only letters, digits, '.', '_' and '-' are allowed"));
        }
        if name == "." || name == ".." {
            return Err(format!("invalid session name '{name}'"));
        }
        if name == MAIN {
            return Err("invalid session name 'main': it is reserved for the main daemon".into());
        }
        Ok(SessionName(name.to_string()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SessionName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The directory of session `name` inside `sessions_dir`, checked to be a direct child of it.
///
/// When the directory exists it must be a real directory (not a symlink) whose canonical parent
/// is the canonical sessions directory.
pub(super) fn child_dir(sessions_dir: &Path, name: &SessionName) -> anyhow::Result<PathBuf> {
    let dir = sessions_dir.join(name.as_str());
    if dir.parent() != Some(sessions_dir) || dir.file_name().and_then(|n| n.to_str()) != Some(name.as_str()) {
        bail!("session '{name}' does not name a directory inside {}", sessions_dir.display());
    }
    match std::fs::symlink_metadata(&dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(dir),
        Err(e) => return Err(e).with_context(|| format!("inspecting {}", dir.display())),
        Ok(meta) if !meta.is_dir() => {
            bail!("{} is not a directory (a symlink or a file); refusing to use it as a session", dir.display())
        }
        Ok(_) => {}
    }
    let canonical = dir.canonicalize().with_context(|| format!("resolving {}", dir.display()))?;
    let base = sessions_dir.canonicalize().with_context(|| format!("resolving {}", sessions_dir.display()))?;
    if canonical.parent() != Some(base.as_path()) {
        bail!("{} resolves outside {}; refusing", dir.display(), sessions_dir.display());
    }
    Ok(canonical)
}

/// Orders names as people count: runs of digits by their value (`worker-2` before
/// `worker-10`), everything else by character; equal values with different zeros (`w-01`,
/// `w-1`) and any other tie fall back to the plain order, so the order is total.
pub(crate) fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    fn runs(text: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = text.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &text[start..i]));
                start = i;
            }
        }
        out
    }
    let (left, right) = (runs(a), runs(b));
    for (x, y) in left.iter().zip(&right) {
        let order = match (x, y) {
            ((true, x), (true, y)) => {
                let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                x.len().cmp(&y.len()).then_with(|| x.cmp(y))
            }
            ((_, x), (_, y)) => x.cmp(y),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    left.len().cmp(&right.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_names_are_accepted() {
        for name in ["w1", "worker-3", "a.b_c", ".hidden", "x".repeat(64).as_str()] {
            assert_eq!(SessionName::parse(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn hostile_names_are_refused() {
        let long = "x".repeat(65);
        for name in ["", ".", "..", "../x", "a/b", "a\\b", "main", "a b", "é", "a\0b", long.as_str()] {
            assert!(SessionName::parse(name).is_err(), "{name:?} was accepted");
        }
    }

    #[test]
    fn a_symlinked_session_directory_is_refused() {
        let base = std::env::temp_dir().join(format!("loopsy-name-test-{}", std::process::id()));
        let sessions = base.join("sessions");
        std::fs::create_dir_all(&sessions).unwrap();
        std::fs::create_dir_all(base.join("victim")).unwrap();
        std::os::unix::fs::symlink(base.join("victim"), sessions.join("evil")).unwrap();
        std::fs::create_dir_all(sessions.join("ok")).unwrap();
        let evil = child_dir(&sessions, &SessionName::parse("evil").unwrap());
        assert!(evil.unwrap_err().to_string().contains("symlink"));
        assert!(child_dir(&sessions, &SessionName::parse("ok").unwrap()).is_ok());
        assert!(child_dir(&sessions, &SessionName::parse("new").unwrap()).is_ok());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn names_sort_naturally() {
        let mut names = vec![
            "worker-10",
            "worker-2",
            "alpha",
            "worker-1",
            "w-01",
            "w-1",
            "worker-2b",
            "9",
            "10",
            "x99999999999999999999999",
            "x1",
        ];
        names.sort_by(|a, b| super::natural_cmp(a, b));
        assert_eq!(
            names,
            [
                "9",
                "10",
                "alpha",
                "w-01",
                "w-1",
                "worker-1",
                "worker-2",
                "worker-2b",
                "worker-10",
                "x1",
                "x99999999999999999999999"
            ]
        );
        for text in crate::fuzz::inputs(&["worker-10"], "worker-0123456789", 31, 2_000) {
            assert_eq!(super::natural_cmp(&text, &text), std::cmp::Ordering::Equal);
            let other = format!("{text}1");
            assert_eq!(super::natural_cmp(&text, &other), super::natural_cmp(&other, &text).reverse());
        }
    }
}
