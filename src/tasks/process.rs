//! Starting an agent process: its environment, its own process group, pipes or a
//! pseudo-terminal; and stopping the whole group.
//!
//! Pipes are the default (AGENT-CLIS.md §5: line-clean JSON on stdout, diagnostics apart on
//! stderr). With a PTY, stdout and stderr share the terminal while stdin stays a pipe: the
//! agents' JSON input modes need a clean stdin (a terminal would echo, interpret ^C/^D and cap
//! lines at 4 KiB). Either way the agent leads its own process group, so cancelling reaches the
//! tool processes and re-executed workers it spawned.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};

use futures_lite::{AsyncRead, AsyncWrite};

use super::api::Agent;

/// A running agent and its streams.
pub struct Spawned {
    /// Also the process group id.
    pub pid: u32,
    pub stdin: Pin<Box<dyn AsyncWrite + Send>>,
    pub stdout: Pin<Box<dyn AsyncRead + Send>>,
    /// `None` under a PTY (merged into stdout).
    pub stderr: Option<Pin<Box<dyn AsyncRead + Send>>>,
    pub exit: Pin<Box<dyn Future<Output = io::Result<ExitStatus>> + Send>>,
}

/// What to start.
pub struct Launch<'a> {
    pub program: &'a Path,
    pub args: &'a [String],
    pub cwd: &'a Path,
    pub env: &'a BTreeMap<String, String>,
    pub pty: bool,
}

pub fn spawn(launch: &Launch<'_>) -> io::Result<Spawned> {
    if launch.pty {
        spawn_pty(launch)
    } else {
        spawn_pipes(launch)
    }
}

fn spawn_pipes(launch: &Launch<'_>) -> io::Result<Spawned> {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(launch.program);
    command.args(launch.args).current_dir(launch.cwd).env_clear().envs(launch.env).process_group(0);
    let mut command = smol::process::Command::from(command);
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn()?;
    let stdin = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    Ok(Spawned {
        pid: child.id(),
        stdin: Box::pin(stdin),
        stdout: Box::pin(stdout),
        stderr: Some(Box::pin(stderr)),
        exit: Box::pin(async move { child.status().await }),
    })
}

fn spawn_pty(launch: &Launch<'_>) -> io::Result<Spawned> {
    let (pty, pts) = pty_process::blocking::open().map_err(pty_error)?;
    // Wide enough that nothing a terminal-aware agent prints is ever wrapped.
    pty.resize(pty_process::Size::new(50, 32_000)).map_err(pty_error)?;
    let mut env = launch.env.clone();
    env.entry("TERM".into()).or_insert_with(|| "xterm-256color".into());
    // pty-process makes the child a session leader (setsid): its own process group.
    let mut child = pty_process::blocking::Command::new(launch.program)
        .args(launch.args)
        .current_dir(launch.cwd)
        .env_clear()
        .envs(&env)
        .stdin(Stdio::piped())
        .spawn(pts)
        .map_err(pty_error)?;
    let stdin = child.stdin.take().expect("stdin is piped");
    Ok(Spawned {
        pid: child.id(),
        stdin: Box::pin(blocking::Unblock::new(stdin)),
        stdout: Box::pin(async_io::Async::new(PtyIo(pty))?),
        stderr: None,
        exit: Box::pin(blocking::unblock(move || child.wait())),
    })
}

fn pty_error(e: pty_process::Error) -> io::Error {
    match e {
        pty_process::Error::Io(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

/// An interactive program on a PTY of its own (the terminal sessions of `terminal/`): stdin,
/// stdout and stderr are all the terminal, and the program leads a new session (setsid).
pub(crate) struct Interactive {
    /// Also the process group and session id.
    pub pid: u32,
    /// The PTY master; `&PtyIo` reads and writes, so readers and writers can share it.
    pub master: std::sync::Arc<async_io::Async<PtyIo>>,
    pub exit: Pin<Box<dyn Future<Output = io::Result<ExitStatus>> + Send>>,
}

/// Starts `program` on a new PTY of `rows` x `cols`, with exactly the environment `env`.
pub(crate) fn spawn_interactive(
    program: &Path,
    args: &[String],
    cwd: &Path,
    env: &BTreeMap<String, String>,
    (rows, cols): (u16, u16),
) -> io::Result<Interactive> {
    let (pty, pts) = pty_process::blocking::open().map_err(pty_error)?;
    pty.resize(pty_process::Size::new(rows, cols)).map_err(pty_error)?;
    let mut child = pty_process::blocking::Command::new(program)
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .envs(env)
        .spawn(pts)
        .map_err(pty_error)?;
    Ok(Interactive {
        pid: child.id(),
        master: std::sync::Arc::new(async_io::Async::new(PtyIo(pty))?),
        exit: Box::pin(blocking::unblock(move || child.wait())),
    })
}

/// The PTY master, made pollable by async-io (DEPENDENCIES.md, pty-process).
pub(crate) struct PtyIo(pty_process::blocking::Pty);

impl PtyIo {
    /// Sets the terminal size; the kernel sends SIGWINCH to the foreground process group.
    pub(crate) fn resize(&self, rows: u16, cols: u16) -> io::Result<()> {
        self.0.resize(pty_process::Size::new(rows, cols)).map_err(pty_error)
    }
}

impl io::Read for PtyIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        io::Read::read(&mut &*self, buf)
    }
}

impl io::Read for &PtyIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match io::Read::read(&mut &self.0, buf) {
            // After the child exits a PTY master reads EIO, not EOF.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(0),
            other => other,
        }
    }
}

impl io::Write for &PtyIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        io::Write::write(&mut &self.0, buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl std::os::fd::AsFd for PtyIo {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.as_fd()
    }
}

// SAFETY: the PTY's file descriptor is owned by `PtyIo` and never closed or replaced while the
// `Async` wrapper holds it.
unsafe impl async_io::IoSafe for PtyIo {}

/// Sends `signal` to the agent's whole process group.
pub fn signal_group(pgid: u32, signal: i32) {
    if pgid == 0 {
        return;
    }
    // SAFETY: kill(2) on a negative pid targets the group the agent leads; no memory involved.
    unsafe {
        libc::kill(-(pgid as libc::pid_t), signal);
    }
}

/// Sends `signal` to every process of the session `sid` (a terminal's programs, whatever
/// process group a shell put each job in), found through `/proc`. Returns how many were
/// signalled.
pub(crate) fn signal_session(sid: u32, signal: i32) -> usize {
    let mut signalled = 0;
    for pid in session_members(sid) {
        // SAFETY: kill(2) with a pid read from /proc; no memory involved.
        if unsafe { libc::kill(pid as libc::pid_t, signal) } == 0 {
            signalled += 1;
        }
    }
    signalled
}

/// The live processes whose session id is `sid` (zombies, already dead, are left out).
pub(crate) fn session_members(sid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| stat_session(&s)) == Some(sid)
        })
        .collect()
}

/// The session id in a `/proc/<pid>/stat` line: the 4th field after the parenthesised name
/// (which may itself hold spaces and parentheses); `None` for a zombie.
fn stat_session(stat: &str) -> Option<u32> {
    let (_, after) = stat.rsplit_once(')')?;
    let mut fields = after.split_whitespace();
    if fields.next()? == "Z" {
        return None;
    }
    fields.nth(2)?.parse().ok()
}

/// The first executable file named `program` on `path` (a `PATH` value).
pub fn find_program(program: &str, path: Option<&OsString>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = path?;
    std::env::split_paths(path).filter(|dir| dir.is_absolute()).map(|dir| dir.join(program)).find(|candidate| {
        std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// The agent's environment: the daemon's, minus what would make a nested agent refuse to start
/// or talk to the wrong parent (PROTOCOL.md §8.3), minus the daemon's own variables and anything
/// carrying one of `secrets` (`child_env`: the daemon's keys never reach an agent, C3). API keys
/// the user set for the agent stay.
pub fn agent_env(
    agent: Agent,
    vars: impl IntoIterator<Item = (String, String)>,
    secrets: &[String],
) -> BTreeMap<String, String> {
    crate::child_env::inherited(vars, secrets).into_iter().filter(|(name, _)| keep_var(agent, name)).collect()
}

fn keep_var(agent: Agent, name: &str) -> bool {
    const KEPT: &[&str] = &[
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_BASE_URL",
        "CLAUDE_CODE_OAUTH_TOKEN",
        "CLAUDE_CODE_GIT_BASH_PATH",
        "CLAUDE_CONFIG_DIR",
        "GEMINI_API_KEY",
        "CODEX_API_KEY",
        "CODEX_HOME",
    ];
    if KEPT.contains(&name) {
        return true;
    }
    match agent {
        Agent::Claude => {
            !(name.starts_with("CLAUDE")
                || name.starts_with("ANTHROPIC_")
                || name.starts_with("OTEL_")
                || name == "MCP_")
        }
        Agent::Gemini => !(name.starts_with("GEMINI_") || name == "GEMINI_CLI"),
        Agent::Codex => !name.starts_with("CODEX_"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(agent: Agent, names: &[&str]) -> Vec<String> {
        let vars = names.iter().map(|n| (n.to_string(), format!("v-{n}")));
        agent_env(agent, vars, &["v-SECRET".into()]).into_keys().collect()
    }

    #[test]
    fn nested_agent_variables_are_cleared_and_api_keys_kept() {
        let names = [
            "PATH",
            "HOME",
            "CLAUDECODE",
            "CLAUDE_CODE_ENTRYPOINT",
            "CLAUDE_CODE_SSE_PORT",
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_MODEL",
            "OTEL_EXPORTER",
            "LOOPSY_API_KEY",
            "GEMINI_CLI",
            "GEMINI_API_KEY",
            "CODEX_SANDBOX",
            "SECRET",
        ];
        assert_eq!(
            env(Agent::Claude, &names),
            ["ANTHROPIC_API_KEY", "CODEX_SANDBOX", "GEMINI_API_KEY", "GEMINI_CLI", "HOME", "PATH"]
        );
        assert_eq!(
            env(Agent::Gemini, &names),
            [
                "ANTHROPIC_API_KEY",
                "ANTHROPIC_MODEL",
                "CLAUDECODE",
                "CLAUDE_CODE_ENTRYPOINT",
                "CLAUDE_CODE_SSE_PORT",
                "CODEX_SANDBOX",
                "GEMINI_API_KEY",
                "HOME",
                "OTEL_EXPORTER",
                "PATH"
            ]
        );
        assert!(!env(Agent::Codex, &names).contains(&"CODEX_SANDBOX".to_string()));
    }

    #[test]
    fn the_session_id_is_read_past_odd_process_names() {
        assert_eq!(stat_session("42 (a) b (c)) S 1 42 40 0 -1"), Some(40));
        assert_eq!(stat_session("42 (sh) S 1"), None);
        assert_eq!(stat_session("42 (sh) Z 1 42 40 0"), None);
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(stat_session(&own).is_some());
    }

    #[test]
    fn programs_are_found_on_the_path() {
        let path = OsString::from("relative:/nonexistent:/bin:/usr/bin");
        assert!(find_program("sh", Some(&path)).is_some_and(|p| p.is_absolute()));
        assert_eq!(find_program("no-such-program-here", Some(&path)), None);
        assert_eq!(find_program("sh", None), None);
    }
}
