//! Which paths the transfer routes may touch: `transfer.allowedPaths` and `deniedPaths`.
//!
//! 1.0.21 compared lexically normalised strings by prefix (weakness C5): `/home/u` allowed
//! `/home/u2`, a `.ssh` deny also hit `.sshx`, and a symlink inside the allowed tree led anywhere.
//! Here a path must be absolute, free of NUL bytes and `..`, and is judged on its canonical form
//! (symlinks of the existing components resolved; a new file's deepest existing ancestor is
//! canonicalised), component by component. Denied wins over allowed; an empty allow list allows
//! everything (1.0.21). The daemon's own data directory is always denied: it holds the keys.
//!
//! This module does not open files; callers use the canonical path it returns, which narrows (but
//! does not close) the window in which a component could be swapped for a symlink.

use std::io;
use std::path::{Component, Path, PathBuf};

/// Why a path was refused. The message completes "Path '<p>' is not allowed: ...".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal(pub String);

/// The configured roots.
#[derive(Debug, Clone, Default)]
pub(crate) struct PathPolicy {
    allowed: Vec<PathBuf>,
    denied: Vec<PathBuf>,
}

impl PathPolicy {
    /// Roots as configured (absolute paths; the config loader checks that).
    pub(crate) fn new(allowed: &[String], denied: &[String]) -> PathPolicy {
        let roots = |list: &[String]| list.iter().filter_map(|p| lexical(p).ok()).collect();
        PathPolicy { allowed: roots(allowed), denied: roots(denied) }
    }

    /// Adds a denied root (the daemon's data directory).
    pub(crate) fn deny(mut self, root: &Path) -> PathPolicy {
        if let Some(root) = root.to_str().and_then(|r| lexical(r).ok()) {
            self.denied.push(root);
        }
        self
    }

    /// Checks `requested` and returns the canonical path to operate on. It asks the file system
    /// (which may take long: a hung network mount), so the daemon calls it on the blocking pool,
    /// in the same task as the file work that follows.
    pub(crate) fn check(&self, requested: &str) -> Result<PathBuf, Refusal> {
        let lexical_path = lexical(requested)?;
        let canonical = canonicalize(&lexical_path).map_err(|e| Refusal(e.to_string()))?;
        // Roots are resolved per request: a root created (or re-linked) later counts as it is now.
        let resolve = |roots: &[PathBuf]| -> Vec<(PathBuf, PathBuf)> {
            roots.iter().map(|r| (r.clone(), canonicalize(r).unwrap_or_else(|_| r.clone()))).collect()
        };
        judge(&lexical_path, &canonical, &resolve(&self.allowed), &resolve(&self.denied))?;
        Ok(canonical)
    }
}

/// The purely lexical checks: absolute, no NUL, no `..`; `.` and repeated `/` are dropped.
pub(crate) fn lexical(requested: &str) -> Result<PathBuf, Refusal> {
    if requested.contains('\0') {
        return Err(Refusal("it contains a NUL byte".into()));
    }
    let path = Path::new(requested);
    if !path.is_absolute() {
        return Err(Refusal("it is not an absolute path".into()));
    }
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => return Err(Refusal("it contains a '..' component".into())),
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    Ok(out)
}

/// Denied if under a denied root (lexically or canonically); else allowed if the allow list is
/// empty or the canonical path is under an allowed root. Roots are `(lexical, canonical)` pairs.
pub(crate) fn judge(
    lexical: &Path,
    canonical: &Path,
    allowed: &[(PathBuf, PathBuf)],
    denied: &[(PathBuf, PathBuf)],
) -> Result<(), Refusal> {
    // `Path::starts_with` compares whole components: `/home/u2` does not start with `/home/u`.
    if let Some((root, _)) = denied.iter().find(|(lex, canon)| lexical.starts_with(lex) || canonical.starts_with(canon))
    {
        return Err(Refusal(format!("'{}' is a denied path", root.display())));
    }
    if allowed.is_empty() || allowed.iter().any(|(_, canon)| canonical.starts_with(canon)) {
        return Ok(());
    }
    if allowed.iter().any(|(lex, _)| lexical.starts_with(lex)) {
        return Err(Refusal("it leads outside the allowed paths through a symbolic link".into()));
    }
    Err(Refusal("it is outside the allowed paths".into()))
}

/// The canonical form of `path`: its deepest existing ancestor canonicalised (symlinks resolved),
/// with the components that do not exist yet appended. A dangling symlink on the way is refused,
/// since where it leads is decided only when something is created through it.
pub(crate) fn canonicalize(path: &Path) -> io::Result<PathBuf> {
    let mut existing = path.to_path_buf();
    let mut missing = Vec::new();
    loop {
        match std::fs::canonicalize(&existing) {
            Ok(mut canonical) => {
                canonical.extend(missing.iter().rev());
                return Ok(canonical);
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
                if std::fs::symlink_metadata(&existing).is_ok_and(|m| m.file_type().is_symlink()) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("'{}' is a dangling symbolic link", existing.display()),
                    ));
                }
                let Some(name) = existing.file_name().map(|n| n.to_os_string()) else { return Err(e) };
                missing.push(name);
                existing.pop();
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots(list: &[&str]) -> Vec<(PathBuf, PathBuf)> {
        list.iter().map(|r| (PathBuf::from(r), PathBuf::from(r))).collect()
    }

    /// Judges a path whose canonical form equals its lexical form (no symlinks).
    fn ok(path: &str, allowed: &[&str], denied: &[&str]) -> bool {
        let lexical = lexical(path).unwrap();
        judge(&lexical, &lexical, &roots(allowed), &roots(denied)).is_ok()
    }

    #[test]
    fn lexical_checks() {
        assert_eq!(lexical("/a/./b//c").unwrap(), PathBuf::from("/a/b/c"));
        assert_eq!(lexical("/").unwrap(), PathBuf::from("/"));
        assert!(lexical("rel.txt").is_err());
        assert!(lexical("./rel").is_err());
        assert!(lexical("").is_err());
        assert!(lexical("/a/../etc/passwd").is_err());
        assert!(lexical("/a/b/..").is_err());
        assert!(lexical("/a\0b").is_err());
        assert!(lexical("/a/..b/c").is_ok(), "'..b' is a name, not a parent reference");
    }

    #[test]
    fn allowed_roots_match_whole_components() {
        assert!(ok("/home/u/x", &["/home/u"], &[]));
        assert!(ok("/home/u", &["/home/u"], &[]));
        assert!(!ok("/home/u2/x", &["/home/u"], &[]));
        assert!(!ok("/home/u2", &["/home/u"], &[]));
        assert!(!ok("/home", &["/home/u"], &[]));
        assert!(ok("/home/u2/x", &["/home/u", "/home/u2"], &[]));
        assert!(ok("/anything", &[], &[]), "an empty allow list allows everything");
        assert!(ok("/x", &["/"], &[]));
    }

    #[test]
    fn denied_roots_win_and_match_whole_components() {
        assert!(!ok("/home/u/.ssh/id", &["/home/u"], &["/home/u/.ssh"]));
        assert!(!ok("/home/u/.ssh", &["/home/u"], &["/home/u/.ssh"]));
        assert!(ok("/home/u/.sshx/id", &["/home/u"], &["/home/u/.ssh"]));
        assert!(!ok("/etc/x", &[], &["/etc"]));
        assert!(!ok("/home/u/x", &["/home/u"], &["/home"]));
    }

    #[test]
    fn a_canonical_path_outside_the_tree_is_refused() {
        let (lex, canon) = (PathBuf::from("/home/u/link"), PathBuf::from("/etc/passwd"));
        let refusal = judge(&lex, &canon, &roots(&["/home/u"]), &[]).unwrap_err();
        assert!(refusal.0.contains("symbolic link"), "{refusal:?}");
        let denied_target = [(PathBuf::from("/home/u/.ssh"), PathBuf::from("/data/ssh"))];
        assert!(judge(Path::new("/home/u/keys"), Path::new("/data/ssh/id"), &[], &denied_target).is_err());
    }

    #[test]
    fn canonicalisation_resolves_links_and_keeps_new_components() {
        let dir = std::env::temp_dir().join(format!("loopsy-policy-{}", crate::random::hex(6)));
        std::fs::create_dir_all(dir.join("real")).unwrap();
        let dir = std::fs::canonicalize(&dir).unwrap();
        std::os::unix::fs::symlink(dir.join("real"), dir.join("link")).unwrap();
        std::os::unix::fs::symlink(dir.join("nowhere"), dir.join("dangling")).unwrap();
        assert_eq!(canonicalize(&dir.join("link/new/file")).unwrap(), dir.join("real/new/file"));
        assert_eq!(canonicalize(&dir.join("real")).unwrap(), dir.join("real"));
        assert!(canonicalize(&dir.join("dangling/x")).is_err());
        let policy = PathPolicy::new(&[dir.join("real").display().to_string()], &[]);
        assert_eq!(policy.check(&format!("{}/link/a", dir.display())).unwrap(), dir.join("real/a"));
        assert!(policy.check(&format!("{}/elsewhere", dir.display())).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
