//! Sessions: extra daemons on this machine, each with a full data directory in
//! `<home>/sessions/<name>/` (PROTOCOL.md §9.5), used by `loopsy session` and the MCP tools.
//!
//! There is no registry file: the sessions are the subdirectories, and whether one runs is asked
//! of the kernel through its instance lock (`instance::probe`), never of a PID file (H1). A start
//! holds `sessions/.lock` from choosing the port until the daemon answers, so concurrent starters
//! never share a port or start one session twice (H5). Names go through [`SessionName`] and
//! [`name::child_dir`], so no name reaches outside the sessions directory (A4).
//! Daemons are started as `loopsy --home <dir> start` (detached, logging to the session's
//! `logs/daemon.log`); this module does not serve HTTP.

mod config;
mod local;
mod name;
mod ports;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::json;

pub(crate) use local::{local_session, local_sessions, LocalSession};
pub(crate) use name::{natural_cmp, SessionName, MAIN};

use crate::config::{Config, ManualPeer};
use crate::instance::{self, Daemon, FileLock};
use crate::paths::Paths;
use crate::peer::{Client, Method};

/// How long to wait for a session daemon to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Calls to sibling daemons while registering peers.
const PEER_CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// A session as listings show it (§9.6), plus our `starting`/`crashed` states.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Session {
    pub name: String,
    pub port: u16,
    pub hostname: String,
    pub pid: Option<u32>,
    pub status: Status,
    pub data_dir: String,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    Running,
    /// Holds its lock but has not said where it listens yet.
    Starting,
    Stopped,
    /// Died without a clean shutdown (its `daemon.json` is still there).
    Crashed,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Starting => "starting",
            Status::Stopped => "stopped",
            Status::Crashed => "crashed",
        }
    }

    pub(crate) fn is_alive(self) -> bool {
        matches!(self, Status::Running | Status::Starting)
    }
}

/// The listing of §9.6: the main daemon and every session, sorted by name naturally
/// (`worker-2` before `worker-10`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Listing {
    pub main: Option<Session>,
    pub sessions: Vec<Session>,
}

/// The outcome of [`Sessions::start`].
#[derive(Debug, Clone)]
pub(crate) struct Started {
    pub session: Session,
    /// It was running already; nothing was done.
    pub already_running: bool,
    /// Peers that could not be told about the new session (it still runs).
    pub warnings: Vec<String>,
}

/// The sessions of one main data directory.
#[derive(Debug, Clone)]
pub(crate) struct Sessions {
    main: Paths,
    /// The `loopsy` binary that starts session daemons.
    exe: PathBuf,
    /// Overrides `sessions.basePort` of the main config.
    base_port: Option<u16>,
}

/// In-process companion of `sessions/.lock`: fcntl locks do not exclude threads of one process
/// (the MCP server runs tool calls concurrently).
static START_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Sessions {
    pub(crate) fn new(main: &Paths, exe: PathBuf) -> Sessions {
        Sessions { main: main.clone(), exe, base_port: None }
    }

    /// The sessions of `main`, started with the binary running now.
    pub(crate) fn current(main: &Paths) -> anyhow::Result<Sessions> {
        Ok(Sessions::new(main, std::env::current_exe().context("finding the loopsy binary")?))
    }

    pub(crate) fn with_base_port(mut self, base_port: Option<u16>) -> Sessions {
        self.base_port = base_port;
        self
    }

    pub(crate) fn dir(&self) -> PathBuf {
        self.main.sessions_dir()
    }

    fn paths_of(&self, name: &SessionName) -> anyhow::Result<Paths> {
        Paths::from_dir(&name::child_dir(&self.dir(), name)?)
    }

    fn lock(&self) -> anyhow::Result<(std::sync::MutexGuard<'static, ()>, FileLock)> {
        let guard = START_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        crate::durable::create_private_dir(&self.dir())?;
        Ok((guard, FileLock::exclusive(&self.dir().join(".lock"))?))
    }

    /// Every session, sorted by name naturally, and the main daemon.
    pub(crate) fn list(&self) -> anyhow::Result<Listing> {
        let main = Config::load(&self.main).ok().map(|config| {
            let (status, pid, port) = observe(&self.main, config.server.port);
            Session {
                name: MAIN.into(),
                port,
                hostname: config.hostname(),
                pid,
                status,
                data_dir: self.main.home().display().to_string(),
            }
        });
        let sessions = self.scan()?.into_iter().map(|(_, session)| session).collect();
        Ok(Listing { main, sessions })
    }

    /// One session's state.
    pub(crate) fn get(&self, name: &SessionName) -> anyhow::Result<Session> {
        let paths = self.paths_of(name)?;
        if !paths.home().is_dir() {
            bail!("no session named '{name}' (see `loopsy session list`)");
        }
        Ok(describe(name, &paths))
    }

    /// The session directories that hold a valid name, with their state.
    fn scan(&self) -> anyhow::Result<Vec<(Paths, Session)>> {
        let entries = match std::fs::read_dir(self.dir()) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.dir().display())),
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().and_then(|n| SessionName::parse(n).ok()) else { continue };
            if !entry.file_type()?.is_dir() {
                continue;
            }
            let paths = self.paths_of(&name)?;
            let session = describe(&name, &paths);
            found.push((paths, session));
        }
        found.sort_by(|a, b| name::natural_cmp(&a.1.name, &b.1.name));
        Ok(found)
    }

    /// Starts session `name`, or reports it running; then introduces it to the main daemon and
    /// the running sessions, and them to it.
    pub(crate) fn start(&self, name: &SessionName) -> anyhow::Result<Started> {
        let main_config = Config::load(&self.main).context("sessions need the main config")?;
        let paths = self.paths_of(name)?;
        let (session, others) = {
            let _lock = self.lock()?;
            let current = describe(name, &paths);
            if current.status.is_alive() {
                return Ok(Started { session: current, already_running: true, warnings: Vec::new() });
            }
            let others: Vec<(Paths, Session)> =
                self.scan()?.into_iter().filter(|(_, s)| s.name != name.as_str()).collect();
            self.launch(name, &paths, &main_config, &others)?;
            (describe(name, &paths), others)
        };
        let running: Vec<(Paths, Session)> = others.into_iter().filter(|(_, s)| s.status == Status::Running).collect();
        let warnings = self.introduce(&paths, &session, &main_config, &running);
        Ok(Started { session, already_running: false, warnings })
    }

    /// Writes the session's config and starts its daemon; called with the sessions lock held.
    fn launch(
        &self,
        name: &SessionName,
        paths: &Paths,
        main: &Config,
        others: &[(Paths, Session)],
    ) -> anyhow::Result<()> {
        crate::durable::create_private_dir(paths.home())?;
        std::fs::create_dir_all(paths.logs_dir())?;
        let host: IpAddr = main.server.host.parse().context("server.host of the main config")?;
        let mut taken: BTreeSet<u16> = others.iter().map(|(_, s)| s.port).collect();
        taken.insert(main.server.port);
        if let Daemon::Running(info) = instance::probe(&self.main)? {
            taken.insert(info.port);
        }
        let previous = Config::read_unchecked(paths);
        let mut preferred = previous.as_ref().map(|config| config.server.port);
        let base = self.base_port.unwrap_or(main.sessions.base_port);
        let loopback = loopback_address(host);
        let mut peers = vec![];
        if let Some(port) = main_port(&self.main, main) {
            peers.push(ManualPeer {
                address: loopback.clone(),
                port,
                hostname: Some(main.hostname()),
                name: Some(MAIN.into()),
            });
        }
        for (_, other) in others.iter().filter(|(_, s)| s.status == Status::Running) {
            peers.push(ManualPeer {
                address: loopback.clone(),
                port: other.port,
                hostname: Some(other.hostname.clone()),
                name: Some(other.name.clone()),
            });
        }
        // A port can still be taken by another program between our bind test and the daemon's
        // bind: then try the next one.
        for attempt in 0..3 {
            let port =
                ports::choose(base, preferred, &taken, |p| ports::bindable(host, p)).map_err(anyhow::Error::msg)?;
            let generated = config::SessionConfig {
                main,
                main_home: self.main.home(),
                hostname: format!("{}-{name}", main.hostname()),
                port,
                peers: peers.clone(),
            };
            crate::config::replace(paths, &generated.render(previous.as_ref()))?;
            match self.spawn(paths) {
                Ok(()) => return Ok(()),
                Err(e) if attempt < 2 && !ports::bindable(host, port) => {
                    log::debug!("session {name}: port {port} was taken meanwhile ({e:#}); trying another");
                    taken.insert(port);
                    preferred = None;
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the last attempt returns")
    }

    /// `loopsy --home <session dir> start`, which returns once the daemon answers.
    fn spawn(&self, paths: &Paths) -> anyhow::Result<()> {
        let output = Command::new(&self.exe)
            .arg("--home")
            .arg(paths.home())
            .arg("start")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", self.exe.display()))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let message = stderr.trim().trim_start_matches("loopsy: error: ");
            bail!("the session daemon did not start: {message}");
        }
        Ok(())
    }

    /// Tells the main daemon and `running` sessions about `new`, and `new` about them.
    fn introduce(&self, paths: &Paths, new: &Session, main: &Config, running: &[(Paths, Session)]) -> Vec<String> {
        let key = &main.auth.api_key;
        let mut warnings = Vec::new();
        let mut tell = |to_paths: &Paths, to: &str, about: serde_json::Value| {
            let outcome = Client::local(to_paths, key).and_then(|client| {
                smol::block_on(client.with_timeout(PEER_CALL_TIMEOUT).call::<serde_json::Value>(
                    Method::Post,
                    "/api/v1/peers",
                    Some(&about),
                ))
            });
            if let Err(e) = outcome {
                warnings.push(format!("could not register {} with {to}: {e}", about["name"].as_str().unwrap_or("?")));
            }
        };
        let address = loopback_address(main.server.host.parse().unwrap_or(IpAddr::from([127, 0, 0, 1])));
        let new_body = peer_body(&address, new, paths);
        if let Daemon::Running(info) = instance::probe(&self.main).unwrap_or(Daemon::NotRunning) {
            let main_session = Session {
                name: MAIN.into(),
                port: info.port,
                hostname: main.hostname(),
                pid: Some(info.pid),
                status: Status::Running,
                data_dir: self.main.home().display().to_string(),
            };
            tell(&self.main, MAIN, new_body.clone());
            tell(paths, &new.name, peer_body(&address, &main_session, &self.main));
        }
        for (other_paths, other) in running {
            tell(other_paths, &other.name, new_body.clone());
            tell(paths, &new.name, peer_body(&address, other, other_paths));
        }
        warnings
    }

    /// Stops session `name`; returns its PID, or `None` if it was not running.
    pub(crate) fn stop(&self, name: &SessionName) -> anyhow::Result<Option<u32>> {
        let paths = self.paths_of(name)?;
        if !paths.home().is_dir() {
            bail!("no session named '{name}' (see `loopsy session list`)");
        }
        instance::terminate(&paths, STOP_TIMEOUT)
    }

    /// Stops every running session; returns (name, PID) of those stopped. All are told at once
    /// and each is waited for on its own thread: a fleet stops in the time of its slowest
    /// member, not the sum of their graceful exits. Every session is asked to stop even when
    /// another fails; the first failure (in listing order) is returned.
    pub(crate) fn stop_all(&self) -> anyhow::Result<Vec<(String, u32)>> {
        let sessions = self.scan()?;
        let outcomes: Vec<anyhow::Result<Option<u32>>> = std::thread::scope(|scope| {
            let waits: Vec<_> = sessions
                .iter()
                .map(|(paths, _)| scope.spawn(move || instance::terminate(paths, STOP_TIMEOUT)))
                .collect();
            waits.into_iter().map(|wait| wait.join().unwrap_or_else(|_| bail!("stopping a session panicked"))).collect()
        });
        let mut stopped = Vec::new();
        for ((_, session), outcome) in sessions.into_iter().zip(outcomes) {
            if let Some(pid) = outcome? {
                stopped.push((session.name, pid));
            }
        }
        Ok(stopped)
    }

    /// Deletes a stopped session's directory, and forgets it in the running daemons' registries.
    pub(crate) fn remove(&self, name: &SessionName) -> anyhow::Result<()> {
        let node_id = {
            let _lock = self.lock()?;
            let paths = self.paths_of(name)?;
            if !paths.home().is_dir() {
                bail!("no session named '{name}' (see `loopsy session list`)");
            }
            if describe(name, &paths).status.is_alive() {
                bail!("session '{name}' is still running. Stop it first with: loopsy session stop {name}");
            }
            // Only a loopsy data directory is deleted, never a directory of the user's that
            // happens to sit under `sessions/`.
            if !paths.config_file().is_file() && !paths.node_id_file().is_file() {
                bail!(
                    "{} is not a loopsy session (no config.yaml or node-id in it); it was left as it is",
                    paths.home().display()
                );
            }
            let node_id = std::fs::read_to_string(paths.node_id_file()).ok().map(|s| s.trim().to_string());
            std::fs::remove_dir_all(paths.home()).with_context(|| format!("removing {}", paths.home().display()))?;
            node_id
        };
        if let (Some(node_id), Ok(main)) = (node_id, Config::load(&self.main)) {
            let mut daemons = vec![self.main.clone()];
            daemons.extend(self.scan()?.into_iter().filter(|(_, s)| s.status == Status::Running).map(|(p, _)| p));
            let path = format!("/api/v1/peers/{}", crate::percent::encode(&node_id));
            for paths in daemons {
                if let Ok(client) = Client::local(&paths, &main.auth.api_key) {
                    let client = client.with_timeout(PEER_CALL_TIMEOUT);
                    let _ = smol::block_on(client.call::<serde_json::Value>(Method::Delete, &path, None::<&()>));
                }
            }
        }
        Ok(())
    }

    /// A client for a running session, with the main key (sessions share it).
    pub(crate) fn client(&self, name: &SessionName) -> anyhow::Result<Client> {
        let main = Config::load(&self.main)?;
        let paths = self.paths_of(name)?;
        Client::local(&paths, &main.auth.api_key).map_err(|_| anyhow::anyhow!("session '{name}' is not running"))
    }
}

/// The state of a session directory, from its lock, runtime file and config.
fn describe(name: &SessionName, paths: &Paths) -> Session {
    let config = Config::read_unchecked(paths);
    let config_port = config.as_ref().map_or(0, |c| c.server.port);
    let hostname = config.and_then(|c| c.server.hostname).unwrap_or_else(|| name.to_string());
    let (status, pid, port) = observe(paths, config_port);
    Session { name: name.to_string(), port, hostname, pid, status, data_dir: paths.home().display().to_string() }
}

/// (status, pid, port) of the daemon of `paths`; `config_port` when it does not say.
fn observe(paths: &Paths, config_port: u16) -> (Status, Option<u32>, u16) {
    match instance::probe(paths) {
        Ok(Daemon::Running(info)) => (Status::Running, Some(info.pid), info.port),
        Ok(Daemon::Starting { pid }) => (Status::Starting, Some(pid), config_port),
        _ if paths.runtime_file().exists() => (Status::Crashed, None, config_port),
        _ => (Status::Stopped, None, config_port),
    }
}

/// The body of `POST /api/v1/peers` introducing `session` (its node id, if it has one yet).
fn peer_body(address: &str, session: &Session, paths: &Paths) -> serde_json::Value {
    let mut body = json!({"address": address, "port": session.port, "name": session.name});
    if !session.hostname.is_empty() {
        body["hostname"] = json!(session.hostname);
    }
    if let Ok(id) = std::fs::read_to_string(paths.node_id_file()) {
        body["nodeId"] = json!(id.trim());
    }
    body
}

/// The main daemon's port: where it listens now, else its configured port (unless 0).
fn main_port(main: &Paths, config: &Config) -> Option<u16> {
    match instance::probe(main) {
        Ok(Daemon::Running(info)) => Some(info.port),
        _ => Some(config.server.port).filter(|p| *p != 0),
    }
}

/// How daemons on this machine reach one listening on `host`.
fn loopback_address(host: IpAddr) -> String {
    match host {
        IpAddr::V4(v4) if v4.is_unspecified() => "127.0.0.1".into(),
        IpAddr::V6(v6) if v6.is_unspecified() => "::1".into(),
        other => other.to_string(),
    }
}
