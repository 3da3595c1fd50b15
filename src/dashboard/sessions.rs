//! The local sessions of this data directory, read from disk for the dashboard (read-only).
//!
//! A session is a subdirectory `<home>/sessions/<name>/` with its own `config.yaml` and, while
//! its daemon runs, `daemon.json` (§9.5). This module only reads them: starting, stopping and
//! removing sessions belong to the sessions area. Names are validated before any path is built
//! from them (1.0.21 let `..` delete arbitrary directories, weakness A4).

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::instance::{self, Daemon, RuntimeInfo};
use crate::paths::Paths;

/// One session directory as found on disk.
#[derive(Debug, Clone)]
pub struct LocalSession {
    pub name: String,
    pub dir: PathBuf,
    /// Its `config.yaml`, if readable (its key, hostname and port).
    pub config: Option<Config>,
    /// Where its daemon listens, when one runs.
    pub running: Option<RuntimeInfo>,
}

impl LocalSession {
    /// The messaging name: `server.hostname`, else the session's name.
    pub fn hostname(&self) -> String {
        self.config.as_ref().and_then(|c| c.server.hostname.clone()).unwrap_or_else(|| self.name.clone())
    }
}

/// `[A-Za-z0-9._-]{1,64}`, not `.` or `..`.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Every session of `home`, sorted by name naturally (`w2` before `w10`); entries with invalid names are skipped.
pub fn list(home: &Path) -> Vec<LocalSession> {
    let Ok(entries) = std::fs::read_dir(home.join("sessions")) else { return Vec::new() };
    let mut sessions: Vec<LocalSession> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter_map(|name| find(home, &name))
        .collect();
    sessions.sort_by(|a, b| crate::sessions::natural_cmp(&a.name, &b.name));
    sessions
}

/// The session `name` of `home`, if the name is valid and its directory exists.
pub fn find(home: &Path, name: &str) -> Option<LocalSession> {
    if !valid_name(name) {
        return None;
    }
    let dir = home.join("sessions").join(name);
    if !dir.is_dir() {
        return None;
    }
    let paths = Paths::from_dir(&dir).ok()?;
    let config = Config::load(&paths).ok();
    let running = match instance::probe(&paths) {
        Ok(Daemon::Running(info)) => Some(info),
        _ => None,
    };
    Some(LocalSession { name: name.to_string(), dir, config, running })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_are_checked_before_use() {
        for good in ["w1", "worker-1", "a.b_c", &"x".repeat(64)] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", ".", "..", "../x", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_home_without_sessions_lists_none_and_traversal_finds_nothing() {
        let dir = std::env::temp_dir().join(format!("loopsy-sessions-unit-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sessions/w1")).unwrap();
        std::fs::create_dir_all(dir.join("outside")).unwrap();
        let found = list(&dir);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name, "w1");
        assert!(found[0].config.is_none() && found[0].running.is_none());
        assert_eq!(found[0].hostname(), "w1");
        assert!(find(&dir, "../outside").is_none());
        assert!(list(&dir.join("nothing")).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
