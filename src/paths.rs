//! Every on-disk location, derived from one home directory.
//!
//! Nothing else in the crate builds a path into the data directory, and nothing reads the
//! current directory: that is what lets tests and sessions run many daemons side by side.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// The data directory of one daemon (`~/.loopsy`, a session directory, or `--home`).
#[derive(Debug, Clone)]
pub struct Paths {
    home: PathBuf,
}

impl Paths {
    /// Resolves the data directory: `--home` flag, then `LOOPSY_HOME`, then `~/.loopsy`.
    pub fn resolve(flag: Option<&Path>) -> anyhow::Result<Paths> {
        if let Some(dir) = flag {
            return Paths::from_dir(dir).context("--home");
        }
        if let Some(dir) = std::env::var_os("LOOPSY_HOME").filter(|v| !v.is_empty()) {
            return Paths::from_dir(Path::new(&dir)).context("LOOPSY_HOME");
        }
        let Some(user_home) = user_home_dir() else {
            bail!("cannot find the home directory: set HOME or LOOPSY_HOME");
        };
        Ok(Paths { home: user_home.join(".loopsy") })
    }

    /// A data directory at `dir`, which must be absolute once resolved.
    pub fn from_dir(dir: &Path) -> anyhow::Result<Paths> {
        let home = if dir.is_absolute() {
            dir.to_path_buf()
        } else {
            // The one place a relative path is accepted: a user typing `--home ./x`. Resolve it
            // now so nothing later depends on the current directory.
            std::env::current_dir().context("resolving a relative data directory")?.join(dir)
        };
        Ok(Paths { home })
    }

    pub fn home(&self) -> &Path {
        &self.home
    }
    pub fn config_file(&self) -> PathBuf {
        self.home.join("config.yaml")
    }
    /// Serialises read-modify-write cycles of `config.yaml` between processes.
    pub fn config_lock(&self) -> PathBuf {
        self.home.join(".config.lock")
    }
    pub fn node_id_file(&self) -> PathBuf {
        self.home.join("node-id")
    }
    pub fn context_file(&self) -> PathBuf {
        self.home.join("context.json")
    }
    /// Puts and deletes since `context.json` was written (see `store`).
    pub fn context_journal(&self) -> PathBuf {
        self.home.join("context.journal")
    }
    /// The lock table: grants, renewals and releases since the last compaction (see `locks`).
    pub fn locks_journal(&self) -> PathBuf {
        self.home.join("locks.journal")
    }
    pub fn peers_file(&self) -> PathBuf {
        self.home.join("peers.json")
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.home.join("logs")
    }
    pub fn audit_log(&self) -> PathBuf {
        self.logs_dir().join("audit.jsonl")
    }
    pub fn daemon_log(&self) -> PathBuf {
        self.logs_dir().join("daemon.log")
    }
    /// Decimal PID of the running daemon, as 1.0.21 wrote it (kept for compatibility).
    pub fn pid_file(&self) -> PathBuf {
        self.home.join("daemon.pid")
    }
    /// Held locked by the running daemon for its whole life: the proof that a PID is ours.
    pub fn lock_file(&self) -> PathBuf {
        self.home.join("daemon.lock")
    }
    /// Where the running daemon says it listens (`daemon.json`), written once it is ready.
    pub fn runtime_file(&self) -> PathBuf {
        self.home.join("daemon.json")
    }
    pub fn tls_dir(&self) -> PathBuf {
        self.home.join("tls")
    }
    /// File transfer's private area: `journal/` (temporary files to clean up after a crash) and
    /// `staging/` (uploads whose destination is not known yet).
    pub fn transfer_dir(&self) -> PathBuf {
        self.home.join("transfer")
    }
    pub fn sessions_dir(&self) -> PathBuf {
        self.home.join("sessions")
    }
    /// Agent messaging's delivery records (outbox states, acks to send, ids already seen).
    pub fn messages_file(&self) -> PathBuf {
        self.home.join("messages.json")
    }
    /// The envelopes of messages still to deliver, as they were sent (one file each, 0600).
    pub fn outbox_dir(&self) -> PathBuf {
        self.home.join("outbox")
    }
    /// Per-task private directories of running AI tasks (removed when each task ends).
    pub fn tasks_dir(&self) -> PathBuf {
        self.home.join("tasks")
    }
}

/// What identifies one version of a file: device, inode, length and modification time (ns).
/// A rewrite, in place or by rename, changes it; `None` when the file cannot be looked at.
pub(crate) type FileStamp = (u64, u64, u64, i64, i64);

/// The [`FileStamp`] of `path` now.
pub(crate) fn file_stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.dev(), meta.ino(), meta.len(), meta.mtime(), meta.mtime_nsec()))
}

/// The user's home directory from `HOME` (or `USERPROFILE` on Windows).
pub fn user_home_dir() -> Option<PathBuf> {
    let var = if cfg!(windows) { "USERPROFILE" } else { "HOME" };
    std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from)
}
