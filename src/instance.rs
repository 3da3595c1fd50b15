//! The running daemon of a data directory: its lock, its PID and where it listens.
//!
//! The daemon holds an exclusive `fcntl` lock on `daemon.lock` for its whole life. The kernel
//! reports the holder's PID and drops the lock when the process dies, so "is a daemon running,
//! and which process is it" is answered by the kernel, never by a PID file that may name a
//! reused PID. Signals go through a pidfd opened while the lock is confirmed held, so they
//! cannot reach another process (1.0.21 signalled whatever `daemon.pid` said).

use std::fs::{File, OpenOptions};
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::durable;
use crate::paths::Paths;

/// An exclusive advisory lock on a file, released on drop or when the process exits.
#[derive(Debug)]
pub(crate) struct FileLock {
    // Invariant: never duplicated or reopened in this process, since closing any descriptor of
    // the file would release an fcntl lock.
    _file: File,
}

impl FileLock {
    /// Waits until the lock is ours.
    pub(crate) fn exclusive(path: &Path) -> anyhow::Result<FileLock> {
        let file = open_lock_file(path)?;
        set_lock(&file, true).with_context(|| format!("locking {}", path.display()))?;
        Ok(FileLock { _file: file })
    }

    /// Takes the lock if nobody holds it.
    pub(crate) fn try_exclusive(path: &Path) -> anyhow::Result<Option<FileLock>> {
        let file = open_lock_file(path)?;
        match set_lock(&file, false) {
            Ok(()) => Ok(Some(FileLock { _file: file })),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("locking {}", path.display())),
        }
    }
}

fn open_lock_file(path: &Path) -> anyhow::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

fn whole_file_lock(kind: libc::c_short) -> libc::flock {
    // SAFETY: flock is a plain C struct; all-zero is a valid value that we then fill in.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock
}

fn set_lock(file: &File, wait: bool) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let lock = whole_file_lock(libc::F_WRLCK as libc::c_short);
    let cmd = if wait { libc::F_SETLKW } else { libc::F_SETLK };
    loop {
        // SAFETY: a valid descriptor and a pointer to an initialised flock struct.
        if unsafe { libc::fcntl(file.as_raw_fd(), cmd, &lock) } == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// The PID of the process holding the lock on `path`, if another process holds it.
pub(crate) fn lock_holder(path: &Path) -> anyhow::Result<Option<u32>> {
    use std::os::fd::AsRawFd;
    let file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let mut lock = whole_file_lock(libc::F_WRLCK as libc::c_short);
    // SAFETY: a valid descriptor and a pointer to an initialised flock struct.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut lock) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("querying {}", path.display()));
    }
    Ok((lock.l_type != libc::F_UNLCK as libc::c_short).then_some(lock.l_pid as u32))
}

/// What the running daemon wrote about itself once it was ready (`daemon.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RuntimeInfo {
    pub pid: u32,
    /// Base URL for local clients, e.g. `http://127.0.0.1:19532`.
    pub url: String,
    pub port: u16,
    pub tls: bool,
    pub started_at: u64,
    pub version: String,
    /// Set when a service manager (systemd, launchd) started the daemon.
    #[serde(default)]
    pub managed_by: Option<String>,
}

impl RuntimeInfo {
    pub(crate) fn write(&self, paths: &Paths) -> anyhow::Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("runtime info serialises");
        durable::write(&paths.runtime_file(), &json, durable::Mode::Public)?;
        durable::write(&paths.pid_file(), self.pid.to_string().as_bytes(), durable::Mode::Public)
    }

    pub(crate) fn remove(paths: &Paths) {
        let _ = std::fs::remove_file(paths.runtime_file());
        let _ = std::fs::remove_file(paths.pid_file());
    }
}

/// The daemon of a data directory as seen from outside.
#[derive(Debug, Clone)]
pub(crate) enum Daemon {
    NotRunning,
    /// Holds the lock but has not written its runtime file yet.
    Starting {
        pid: u32,
    },
    Running(RuntimeInfo),
}

/// Asks the kernel whether a daemon runs for `paths`, and reads where it listens.
pub(crate) fn probe(paths: &Paths) -> anyhow::Result<Daemon> {
    let Some(pid) = lock_holder(&paths.lock_file())? else {
        return Ok(Daemon::NotRunning);
    };
    let info = std::fs::read(paths.runtime_file())
        .ok()
        .and_then(|bytes| serde_json::from_slice::<RuntimeInfo>(&bytes).ok())
        .filter(|info| info.pid == pid);
    Ok(match info {
        Some(info) => Daemon::Running(info),
        None => Daemon::Starting { pid },
    })
}

/// The outcome of [`signal`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Signalled {
    Sent { pid: u32 },
    NotRunning,
}

/// Sends `signal` to the daemon of `paths`, and only to it.
pub(crate) fn signal(paths: &Paths, signal: libc::c_int) -> anyhow::Result<Signalled> {
    let lock = paths.lock_file();
    let Some(pid) = lock_holder(&lock)? else { return Ok(Signalled::NotRunning) };
    send_to_lock_holder(&lock, pid, signal)
}

#[cfg(target_os = "linux")]
fn send_to_lock_holder(lock: &Path, pid: u32, signal: libc::c_int) -> anyhow::Result<Signalled> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) } as libc::c_int;
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ESRCH) {
            return Ok(Signalled::NotRunning);
        }
        if err.raw_os_error() == Some(libc::ENOSYS) {
            return kill_verified(lock, pid, signal);
        }
        return Err(err).context("pidfd_open");
    }
    // The pidfd pins the process we looked at. If that process still holds the lock now, the
    // pidfd is our daemon: a reused PID could not hold it.
    let result = if lock_holder(lock)? == Some(pid) {
        // SAFETY: a valid pidfd, a signal number, no siginfo, no flags.
        let rc = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, fd, signal, std::ptr::null::<u8>(), 0) };
        if rc == 0 {
            Ok(Signalled::Sent { pid })
        } else {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ESRCH) {
                Ok(Signalled::NotRunning)
            } else {
                Err(err).context("pidfd_send_signal")
            }
        }
    } else {
        Ok(Signalled::NotRunning)
    };
    // SAFETY: closing the descriptor we opened above.
    unsafe { libc::close(fd) };
    result
}

#[cfg(not(target_os = "linux"))]
fn send_to_lock_holder(lock: &Path, pid: u32, signal: libc::c_int) -> anyhow::Result<Signalled> {
    kill_verified(lock, pid, signal)
}

/// Sends SIGTERM to the daemon of `paths` and waits until it released its lock; returns its
/// PID, or `None` if none was running (files left by a daemon that died are removed then).
pub(crate) fn terminate(paths: &Paths, timeout: std::time::Duration) -> anyhow::Result<Option<u32>> {
    let pid = match signal(paths, libc::SIGTERM)? {
        Signalled::Sent { pid } => pid,
        Signalled::NotRunning => {
            RuntimeInfo::remove(paths);
            return Ok(None);
        }
    };
    let deadline = std::time::Instant::now() + timeout;
    while lock_holder(&paths.lock_file())? == Some(pid) {
        if std::time::Instant::now() > deadline {
            anyhow::bail!("the daemon (PID {pid}) did not stop within {} s", timeout.as_secs());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Ok(Some(pid))
}

/// Without pidfds: re-check the holder immediately before `kill`, leaving only a tiny window.
fn kill_verified(lock: &Path, pid: u32, signal: libc::c_int) -> anyhow::Result<Signalled> {
    if lock_holder(lock)? != Some(pid) {
        return Ok(Signalled::NotRunning);
    }
    // SAFETY: kill with a verified pid and a signal number.
    if unsafe { libc::kill(pid as libc::pid_t, signal) } == 0 {
        Ok(Signalled::Sent { pid })
    } else {
        Err(std::io::Error::last_os_error()).context("kill")
    }
}
