//! The sessions of a data directory as found on disk, read-only: what the dashboard shows and
//! proxies to. Names are [`SessionName`]s like everywhere else; a session directory that is a
//! symlink the owner put there is followed, since nothing here writes or deletes (the commands
//! that do go through `name::child_dir`, which refuses it, A4).

use crate::config::Config;
use crate::instance::{self, Daemon, RuntimeInfo};
use crate::paths::Paths;

use super::name::SessionName;

/// One session directory as found on disk.
#[derive(Debug, Clone)]
pub(crate) struct LocalSession {
    pub name: SessionName,
    pub paths: Paths,
    /// Its `config.yaml`, if valid (its key, hostname and port).
    pub config: Option<Config>,
    /// Where its daemon listens, when one runs.
    pub running: Option<RuntimeInfo>,
}

impl LocalSession {
    /// The messaging name: `server.hostname`, else the session's name.
    pub(crate) fn hostname(&self) -> String {
        self.config.as_ref().and_then(|c| c.server.hostname.clone()).unwrap_or_else(|| self.name.to_string())
    }
}

/// Every session of the data directory `main`, sorted by name naturally (`w2` before `w10`); entries that are not valid
/// session directories are skipped.
pub(crate) fn local_sessions(main: &Paths) -> Vec<LocalSession> {
    let Ok(entries) = std::fs::read_dir(main.sessions_dir()) else { return Vec::new() };
    let mut sessions: Vec<LocalSession> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| SessionName::parse(entry.file_name().to_str()?).ok())
        .filter_map(|name| local_session(main, &name))
        .collect();
    sessions.sort_by(|a, b| super::natural_cmp(a.name.as_str(), b.name.as_str()));
    sessions
}

/// The session `name` of the data directory `main`, if its directory exists.
pub(crate) fn local_session(main: &Paths, name: &SessionName) -> Option<LocalSession> {
    let dir = main.sessions_dir().join(name.as_str());
    if !dir.is_dir() {
        return None;
    }
    let paths = Paths::from_dir(&dir).ok()?;
    let config = Config::load(&paths).ok();
    let running = match instance::probe(&paths) {
        Ok(Daemon::Running(info)) => Some(info),
        _ => None,
    };
    Some(LocalSession { name: name.clone(), paths, config, running })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_home_without_sessions_lists_none_and_only_session_directories_are_found() {
        let dir = std::env::temp_dir().join(format!("loopsy-sessions-local-{}", crate::random::hex(6)));
        std::fs::create_dir_all(dir.join("sessions/w1")).unwrap();
        std::fs::create_dir_all(dir.join("sessions/main")).unwrap();
        std::fs::create_dir_all(dir.join("outside")).unwrap();
        std::os::unix::fs::symlink(dir.join("outside"), dir.join("sessions/link")).unwrap();
        std::fs::write(dir.join("sessions/file"), "").unwrap();
        let main = Paths::from_dir(&dir).unwrap();
        let found = local_sessions(&main);
        let names: Vec<&str> = found.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["link", "w1"], "a link to a directory is read, `main` and a file are not");
        assert!(found[1].config.is_none() && found[1].running.is_none());
        assert_eq!(found[1].hostname(), "w1");
        assert!(local_session(&main, &SessionName::parse("file").unwrap()).is_none());
        assert!(local_sessions(&Paths::from_dir(&dir.join("nothing")).unwrap()).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
