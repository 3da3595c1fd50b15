//! Liveness of the daemons that share this machine and this data directory's family (the main
//! daemon and its sessions), learnt from the kernel instead of HTTP probes.
//!
//! Every daemon holds the `fcntl` lock on its `daemon.lock` for its whole life
//! (`instance`). A loopback peer whose node id is that of a daemon of the family, listening on
//! the peer's port, whose lock is held, is alive; the health checker then watches a pidfd of the
//! lock's holder, which becomes readable the moment that process exits (however it ends, `kill
//! -9` included), and stops probing the peer over HTTP. A family daemon whose lock is free is
//! not running: it is offline without a probe.

use std::path::{Path, PathBuf};

use crate::instance::{self, Daemon};
use crate::paths::Paths;

/// The data directories of one family: a main home and the sessions under it.
#[derive(Debug, Clone)]
pub(crate) struct Family {
    root: PathBuf,
}

/// What the kernel says about a peer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// A daemon of the family with this node id runs on this port: its PID.
    Alive(u32),
    /// The family's daemon with this node id does not run.
    Stopped,
    /// Not a daemon of the family (or starting, or elsewhere): only a probe can tell.
    Unknown,
}

impl Family {
    /// The family of the daemon whose data directory is `home`: a session's
    /// (`<main>/sessions/<name>`, with a `config.yaml` in `<main>`) is its main home's.
    pub(crate) fn of(home: &Path) -> Family {
        let main = home
            .parent()
            .filter(|dir| dir.file_name().is_some_and(|n| n == "sessions"))
            .and_then(Path::parent)
            .filter(|main| main.join("config.yaml").is_file());
        Family { root: main.unwrap_or(home).to_path_buf() }
    }

    /// Whether a peer at `address` could be a daemon of the family (this machine, loopback).
    pub(crate) fn may_hold(address: &str) -> bool {
        address == "localhost" || address.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.to_canonical().is_loopback())
    }

    /// Asks the kernel about the daemon of node `node_id` said to listen on `port`.
    pub(crate) fn liveness(&self, node_id: &str, port: u16) -> Liveness {
        let Some(paths) = self.homes().find(|paths| read_node_id(paths).as_deref() == Some(node_id)) else {
            return Liveness::Unknown;
        };
        match instance::probe(&paths) {
            Ok(Daemon::Running(info)) if info.port == port => Liveness::Alive(info.pid),
            Ok(Daemon::NotRunning) => Liveness::Stopped,
            _ => Liveness::Unknown,
        }
    }

    fn homes(&self) -> impl Iterator<Item = Paths> {
        let sessions = std::fs::read_dir(self.root.join("sessions")).into_iter().flatten().flatten().map(|e| e.path());
        std::iter::once(self.root.clone()).chain(sessions).filter_map(|dir| Paths::from_dir(&dir).ok())
    }

    /// A pidfd of the daemon of node `node_id` on `port`, opened while it is
    /// confirmed to hold its lock (so a reused PID is never watched), readable once it exits.
    #[cfg(target_os = "linux")]
    pub(crate) fn watch(&self, node_id: &str, port: u16) -> Option<async_io::Async<std::os::fd::OwnedFd>> {
        use std::os::fd::FromRawFd;
        let Liveness::Alive(pid) = self.liveness(node_id, port) else { return None };
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) } as libc::c_int;
        if fd < 0 {
            return None;
        }
        // SAFETY: a descriptor we just opened and nothing else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        // The pidfd pins the process looked at; if it is still the one alive on that port, the
        // pidfd is that daemon's.
        if self.liveness(node_id, port) != Liveness::Alive(pid) {
            return None;
        }
        async_io::Async::new_nonblocking(fd).ok()
    }

    #[cfg(not(target_os = "linux"))]
    pub fn watch(&self, _node_id: &str, _port: u16) -> Option<async_io::Async<std::os::fd::OwnedFd>> {
        None
    }
}

fn read_node_id(paths: &Paths) -> Option<String> {
    std::fs::read_to_string(paths.node_id_file()).ok().map(|id| id.trim().to_string()).filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_belongs_to_its_main_home_and_loopback_peers_may_be_family() {
        let dir = std::env::temp_dir().join(format!("loopsy-family-{}", crate::random::hex(6)));
        std::fs::create_dir_all(dir.join("sessions/w1")).unwrap();
        assert_eq!(Family::of(&dir.join("sessions/w1")).root, dir.join("sessions/w1"), "no main config: alone");
        std::fs::write(dir.join("config.yaml"), "").unwrap();
        assert_eq!(Family::of(&dir.join("sessions/w1")).root, dir);
        assert_eq!(Family::of(&dir).root, dir);

        std::fs::write(dir.join("sessions/w1/node-id"), "11111111-1111-4111-8111-111111111111\n").unwrap();
        let family = Family::of(&dir);
        assert_eq!(family.liveness("11111111-1111-4111-8111-111111111111", 1), Liveness::Stopped, "no lock held");
        assert_eq!(family.liveness("22222222-2222-4222-8222-222222222222", 1), Liveness::Unknown);
        let _lock = instance::FileLock::exclusive(&dir.join("sessions/w1/daemon.lock")).unwrap();
        // Our own lock reads as free to us (fcntl locks are per process): the running case is
        // covered black-box (tests/sessions.rs).
        assert!(family.watch("22222222-2222-4222-8222-222222222222", 1).is_none());

        for address in ["127.0.0.1", "::1", "localhost", "127.0.0.2", "::ffff:127.0.0.1"] {
            assert!(Family::may_hold(address), "{address}");
        }
        for address in ["10.0.0.1", "example.com", "::", "0.0.0.0"] {
            assert!(!Family::may_hold(address), "{address}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
