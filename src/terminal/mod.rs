//! Interactive terminal sessions: programs on PTYs that outlive the clients attached to them.
//!
//! [`Terminals`] is the registry behind `/api/v1/terminals` (routes in
//! `daemon/routes/terminals.rs`, the WebSocket in `daemon/websocket.rs`). Each session
//! (`session.rs`) keeps a screen model (`screen.rs`, the `vt100` crate) and a queue per
//! attached client (`fanout.rs`). Sessions live in memory only: a daemon restart ends them, and
//! stopping the daemon hangs up every program they started. No HTTP here.

pub(crate) mod api;
pub(crate) mod fanout;
pub(crate) mod keys;
pub(crate) mod screen;
pub(crate) mod session;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) use session::{AttachOptions, Attachment, Session, SessionError};

use crate::config;
use crate::exec::policy::Policy;
use api::{CreateRequest, TerminalInfo};

/// The size of a terminal whose creator gave none.
const DEFAULT_SIZE: (u16, u16) = (24, 80);
/// How long a killed program has between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// The terminals of this daemon; cheap to clone.
#[derive(Clone)]
pub(crate) struct Terminals {
    entries: Arc<Mutex<Vec<Entry>>>,
    settings: Arc<Settings>,
}

struct Entry {
    session: Session,
    /// Reads the PTY until the program ends; dropping it stops reading.
    _pump: smol::Task<()>,
}

struct Settings {
    config: config::Terminals,
    policy: Policy,
    /// Values no program may see in its environment (the daemon's keys).
    secrets: crate::child_env::Secrets,
}

/// Why a terminal request was refused; each message says what to change.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TerminalError {
    #[error("{0}")]
    Invalid(String),
    #[error("no terminal '{0}'")]
    NotFound(String),
    #[error("'{0}' matches several terminals ({1}); use the id")]
    Ambiguous(String, String),
    #[error("a running terminal is already named '{0}'")]
    NameTaken(String),
    #[error("{0} terminals exist already (terminals.maxSessions); kill some first")]
    TooMany(usize),
    #[error("{0}")]
    Denied(String),
    #[error("cannot start '{program}': {reason}")]
    Spawn { program: String, reason: String },
    #[error(transparent)]
    Session(#[from] SessionError),
}

impl Terminals {
    pub(crate) fn new(config: &config::Config, secrets: crate::child_env::Secrets) -> Terminals {
        let execution = &config.execution;
        Terminals {
            entries: Default::default(),
            settings: Arc::new(Settings {
                config: config.terminals.clone(),
                policy: Policy::new(&execution.denylist, execution.allowlist.as_deref()),
                secrets,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().expect("terminals lock")
    }

    pub(crate) fn list(&self) -> Vec<TerminalInfo> {
        let sessions: Vec<Session> = self.lock().iter().map(|e| e.session.clone()).collect();
        sessions.iter().map(Session::info).collect()
    }

    /// Starts a program on a new PTY; `started_by` is the caller's label.
    pub(crate) fn create(&self, request: CreateRequest, started_by: &str) -> Result<TerminalInfo, TerminalError> {
        let launch = self.prepare(&request)?;
        let mut entries = self.lock();
        if entries.len() >= self.settings.config.max_sessions as usize && !evict_one(&mut entries) {
            return Err(TerminalError::TooMany(entries.len()));
        }
        let name = match &request.name {
            Some(name) if entries.iter().any(|e| e.session.name() == name && e.session.is_running()) => {
                return Err(TerminalError::NameTaken(name.clone()))
            }
            Some(name) => name.clone(),
            None => default_name(&entries, &launch.command),
        };
        let process =
            crate::process::spawn_interactive(&launch.program, &launch.args, &launch.cwd, &launch.env, launch.size)
                .map_err(|e| TerminalError::Spawn { program: launch.command.clone(), reason: e.to_string() })?;
        let spec = session::Spec {
            id: crate::random::uuid_v4(),
            name,
            command: launch.command,
            args: launch.args,
            cwd: launch.cwd.display().to_string(),
            started_by: started_by.to_string(),
            created_at: crate::clock::now_ms(),
            pid: process.pid,
        };
        let limits = session::Limits {
            client_buffer: self.settings.config.client_buffer_bytes as usize,
            max_clients: self.settings.config.max_clients as usize,
        };
        let history = self.settings.config.scrollback_bytes as usize;
        let (session, pump) = Session::start(spec, process, launch.size, history, limits);
        log::info!("terminal {} ({}) started by {started_by}: {}", session.id(), session.name(), session.pid());
        let info = session.info();
        entries.push(Entry { session, _pump: smol::spawn(pump) });
        Ok(info)
    }

    /// The terminal `spec` names: its id, its name (a running one first), or an id prefix of at
    /// least 4 characters.
    pub(crate) fn find(&self, spec: &str) -> Result<Session, TerminalError> {
        let entries = self.lock();
        let sessions: Vec<&Session> = entries.iter().map(|e| &e.session).collect();
        if let Some(found) = sessions.iter().find(|s| s.id() == spec) {
            return Ok((*found).clone());
        }
        let named: Vec<&&Session> = sessions.iter().filter(|s| s.name() == spec).collect();
        if let Some(running) = named.iter().find(|s| s.is_running()) {
            return Ok((**running).clone());
        }
        if let Some(last) = named.last() {
            return Ok((**last).clone());
        }
        let prefixed: Vec<&&Session> =
            if spec.len() >= 4 { sessions.iter().filter(|s| s.id().starts_with(spec)).collect() } else { Vec::new() };
        match prefixed.as_slice() {
            [] => Err(TerminalError::NotFound(spec.to_string())),
            [one] => Ok((**one).clone()),
            several => Err(TerminalError::Ambiguous(
                spec.to_string(),
                several.iter().map(|s| s.id().to_string()).collect::<Vec<_>>().join(", "),
            )),
        }
    }

    pub(crate) fn info(&self, spec: &str) -> Result<TerminalInfo, TerminalError> {
        Ok(self.find(spec)?.info())
    }

    /// Ends a terminal: its whole session gets SIGHUP and SIGTERM, then SIGKILL after a grace
    /// period; then it is removed. Returns its last state.
    pub(crate) async fn kill(&self, spec: &str) -> Result<TerminalInfo, TerminalError> {
        let session = self.find(spec)?;
        stop(std::slice::from_ref(&session)).await;
        self.lock().retain(|e| e.session.id() != session.id());
        Ok(session.info())
    }

    /// Ends every terminal (daemon stop).
    pub(crate) async fn kill_all(&self) {
        let sessions: Vec<Session> = self.lock().iter().map(|e| e.session.clone()).collect();
        stop(&sessions).await;
        self.lock().clear();
    }

    /// Removes exited terminals nobody has been attached to for `terminals.reapExitedAfter`,
    /// until `shutdown`.
    pub(crate) async fn run_reaper(self, shutdown: crate::shutdown::Shutdown) {
        let after = self.settings.config.reap_exited_after;
        let period = Duration::from_millis((after / 2).clamp(100, 30_000));
        loop {
            if !shutdown.sleep(period).await {
                return;
            }
            let now = crate::clock::now_ms();
            self.lock().retain(|e| match e.session.idle_exited_since() {
                Some(since) if now.saturating_sub(since) >= after => {
                    log::info!("terminal {} ({}) reaped", e.session.id(), e.session.name());
                    false
                }
                _ => true,
            });
        }
    }

    /// Checks a request and works out what exactly to start.
    fn prepare(&self, request: &CreateRequest) -> Result<Launch, TerminalError> {
        let invalid = |m: String| TerminalError::Invalid(m);
        let command = match &request.command {
            Some(command) if command.trim().is_empty() => return Err(invalid("field 'command' is empty".into())),
            Some(command) => command.clone(),
            None => std::env::var("SHELL").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "/bin/sh".into()),
        };
        let nul = std::iter::once(&command).chain(&request.args).chain(&request.cwd).any(|s| s.contains('\0'));
        if nul {
            return Err(invalid("command, args and cwd must not contain NUL".into()));
        }
        if let Some(name) = &request.name {
            check_name(name).map_err(invalid)?;
        }
        let size = match (request.cols, request.rows) {
            (None, None) => DEFAULT_SIZE,
            (cols, rows) => {
                let (cols, rows) =
                    api::check_size(cols.unwrap_or(DEFAULT_SIZE.1), rows.unwrap_or(DEFAULT_SIZE.0)).map_err(invalid)?;
                (rows, cols)
            }
        };
        self.settings.policy.check(&command, &request.args).map_err(|e| TerminalError::Denied(e.to_string()))?;
        let env = self.environment(&request.env)?;
        let cwd = match &request.cwd {
            Some(cwd) => PathBuf::from(cwd),
            None => std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/")),
        };
        if !cwd.is_absolute() {
            return Err(invalid(format!("working directory '{}' is not an absolute path", cwd.display())));
        }
        if !cwd.is_dir() {
            // Well-formed, but not there: the program cannot be started (404, as for exec).
            return Err(TerminalError::Spawn {
                program: command,
                reason: format!("working directory '{}' is not an existing directory", cwd.display()),
            });
        }
        let program = find_program(&command, &cwd, env.get("PATH")).ok_or_else(|| TerminalError::Spawn {
            program: command.clone(),
            reason: "not found or not executable".into(),
        })?;
        Ok(Launch { command, program, args: request.args.clone(), cwd, env, size })
    }

    /// The daemon's environment without its own variables and keys, plus `extra`.
    fn environment(&self, extra: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, TerminalError> {
        for (name, value) in extra {
            if name.is_empty() || name.contains(['=', '\0']) || value.contains('\0') {
                return Err(TerminalError::Invalid(format!("field 'env.{name}': not a valid variable")));
            }
            if name.starts_with("LD_") || name.starts_with("DYLD_") {
                return Err(TerminalError::Invalid(format!(
                    "field 'env.{name}': loader variables (LD_*, DYLD_*) cannot be set through a remote request"
                )));
            }
        }
        // The daemon's environment without its secrets (`child_env`), nor the size and
        // multiplexer of the terminal the daemon was started from.
        let mut env = crate::child_env::inherited(std::env::vars(), &self.settings.secrets.current());
        env.retain(|name, _| !matches!(name.as_str(), "LINES" | "COLUMNS" | "TMUX" | "TMUX_PANE"));
        env.insert("TERM".into(), "xterm-256color".into());
        env.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(env)
    }
}

struct Launch {
    command: String,
    program: PathBuf,
    args: Vec<String>,
    cwd: PathBuf,
    env: BTreeMap<String, String>,
    /// (rows, cols).
    size: (u16, u16),
}

/// A terminal name: `[A-Za-z0-9._-]{1,64}`, so it is safe in paths, URLs and shells.
fn check_name(name: &str) -> Result<(), String> {
    let fine = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if fine {
        Ok(())
    } else {
        Err(format!("field 'name': '{name}' is not 1 to 64 of A-Z a-z 0-9 . _ -"))
    }
}

/// `<program>-<n>` with the smallest `n` no running terminal uses.
fn default_name(entries: &[Entry], command: &str) -> String {
    let base: String = Path::new(command)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(48)
        .collect();
    let base = if base.is_empty() { "term".to_string() } else { base };
    (1..)
        .map(|n| format!("{base}-{n}"))
        .find(|name| !entries.iter().any(|e| e.session.name() == name && e.session.is_running()))
        .expect("some number is free")
}

/// Drops the oldest exited terminal nobody is attached to; false when there is none.
fn evict_one(entries: &mut Vec<Entry>) -> bool {
    match entries.iter().position(|e| e.session.idle_exited_since().is_some()) {
        Some(i) => {
            entries.remove(i);
            true
        }
        None => false,
    }
}

/// A path with a `/` (relative to `cwd`), else the first executable on `PATH`.
fn find_program(command: &str, cwd: &Path, path: Option<&String>) -> Option<PathBuf> {
    let path = path.map(std::ffi::OsString::from).or_else(|| std::env::var_os("PATH"));
    crate::process::find_program(command, Some(cwd), path.as_deref()).ok()
}

/// SIGHUP and SIGTERM to every program of `sessions`, SIGKILL to what is left after the grace
/// period; returns when all have exited (or after the SIGKILL had a moment to work).
async fn stop(sessions: &[Session]) {
    let running: Vec<&Session> = sessions.iter().filter(|s| s.is_running()).collect();
    // Signalling a session and seeing whether anything of it is left both walk /proc, which
    // costs milliseconds on a busy host: done on the blocking pool, since the daemon's one
    // executor thread serves everyone else meanwhile.
    let pids: Vec<u32> = running.iter().map(|s| s.pid()).collect();
    let signal = |signals: &'static [i32]| {
        let pids = pids.clone();
        smol::unblock(move || {
            for pid in pids {
                for signal in signals {
                    crate::process::signal_session(pid, *signal);
                }
            }
        })
    };
    signal(&[libc::SIGHUP, libc::SIGTERM]).await;
    // Done when every program has exited, including jobs a shell started in other groups.
    let all_gone = || {
        let exited = running.iter().all(|s| !s.is_running());
        let pids = pids.clone();
        async move {
            exited
                && smol::unblock(move || pids.iter().all(|pid| crate::process::session_members(*pid).is_empty())).await
        }
    };
    if wait_until(all_gone, KILL_GRACE).await {
        return;
    }
    signal(&[libc::SIGKILL]).await;
    wait_until(all_gone, Duration::from_secs(2)).await;
}

/// Polls `done` until it holds or `limit` has passed.
async fn wait_until<F: std::future::Future<Output = bool>>(done: impl Fn() -> F, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while !done().await {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        async_io::Timer::after(Duration::from_millis(10)).await;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("build-1.x_y").is_ok());
        for bad in ["", "a b", "../x", "é", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
