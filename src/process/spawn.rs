//! Starting a job or an agent in a process group of its own.
//!
//! `process_group(0)` (std still starts the child through `posix_spawn`, no fork of the daemon),
//! an environment given whole (nothing inherited), and pipes driven by async-io
//! (`smol::process`, i.e. async-process): no thread per process. A job's program and working
//! directory are checked before spawning, so a failure says which one is wrong.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::future::Future;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};

use futures_lite::{AsyncRead, AsyncWrite};
use smol::process::{Child, Command};

use super::Missing;

/// Why a job could not be started; each message names what is wrong.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpawnError {
    #[error("working directory '{0}' does not exist")]
    NoCwd(String),
    #[error("working directory '{0}' is not a directory")]
    CwdNotDir(String),
    #[error("program '{0}' not found on PATH")]
    NotOnPath(String),
    #[error("program '{0}' does not exist")]
    NoProgram(String),
    #[error("program '{0}' is not an executable file")]
    NotExecutable(String),
    #[error("cannot start '{program}': {source}")]
    Io { program: String, source: std::io::Error },
}

/// A job of remote execution to start.
pub(crate) struct JobLaunch<'a> {
    pub command: &'a str,
    pub args: &'a [String],
    pub cwd: Option<&'a str>,
    /// The whole environment of the process (nothing else is inherited).
    pub env: &'a BTreeMap<String, String>,
}

/// Starts a job in a new process group; stdin `/dev/null`, stdout and stderr piped.
pub(crate) fn spawn_job(launch: &JobLaunch<'_>) -> Result<Child, SpawnError> {
    let cwd = check_cwd(launch.cwd)?;
    let path_var = launch.env.get("PATH").map(OsString::from);
    let program = super::find_program(launch.command, cwd.as_deref(), path_var.as_deref()).map_err(|missing| {
        let command = launch.command.to_string();
        match missing {
            Missing::NotOnPath => SpawnError::NotOnPath(command),
            Missing::NoFile => SpawnError::NoProgram(command),
            Missing::NotExecutable => SpawnError::NotExecutable(command),
        }
    })?;
    let mut command = std::process::Command::new(&program);
    // argv[0] as the caller wrote it (busybox-style programs look at it).
    command.arg0(launch.command).args(launch.args).env_clear().envs(launch.env).process_group(0);
    if let Some(cwd) = &cwd {
        command.current_dir(cwd);
    }
    let mut command = Command::from(command);
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    command.spawn().map_err(|source| SpawnError::Io { program: launch.command.to_string(), source })
}

fn check_cwd(cwd: Option<&str>) -> Result<Option<PathBuf>, SpawnError> {
    let Some(cwd) = cwd else { return Ok(None) };
    match std::fs::metadata(cwd) {
        Ok(meta) if meta.is_dir() => Ok(Some(PathBuf::from(cwd))),
        Ok(_) => Err(SpawnError::CwdNotDir(cwd.to_string())),
        Err(_) => Err(SpawnError::NoCwd(cwd.to_string())),
    }
}

/// A running agent and its streams.
pub(crate) struct Spawned {
    /// Also the process group id.
    pub pid: u32,
    pub stdin: Pin<Box<dyn AsyncWrite + Send>>,
    pub stdout: Pin<Box<dyn AsyncRead + Send>>,
    /// `None` under a PTY (merged into stdout).
    pub stderr: Option<Pin<Box<dyn AsyncRead + Send>>>,
    pub exit: Pin<Box<dyn Future<Output = io::Result<ExitStatus>> + Send>>,
}

/// An AI agent to start.
pub(crate) struct AgentLaunch<'a> {
    pub program: &'a Path,
    pub args: &'a [String],
    pub cwd: &'a Path,
    pub env: &'a BTreeMap<String, String>,
    /// stdout and stderr on a PTY (stdin stays a pipe), else pipes.
    pub pty: bool,
}

/// Starts an agent leading its own process group, so stopping it reaches the tool processes
/// and workers it spawned. With a PTY, stdout and stderr share the terminal while stdin stays a
/// pipe: the agents' JSON input modes need a clean stdin (a terminal would echo, interpret
/// ^C/^D and cap lines at 4 KiB).
pub(crate) fn spawn_agent(launch: &AgentLaunch<'_>) -> io::Result<Spawned> {
    if launch.pty {
        super::pty::spawn_agent(launch)
    } else {
        spawn_agent_piped(launch)
    }
}

fn spawn_agent_piped(launch: &AgentLaunch<'_>) -> io::Result<Spawned> {
    let mut command = std::process::Command::new(launch.program);
    command.args(launch.args).current_dir(launch.cwd).env_clear().envs(launch.env).process_group(0);
    let mut command = Command::from(command);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_working_directories_are_named() {
        assert_eq!(
            check_cwd(Some("/no/such/dir")).unwrap_err().to_string(),
            "working directory '/no/such/dir' does not exist"
        );
        assert_eq!(
            check_cwd(Some("/etc/passwd")).unwrap_err().to_string(),
            "working directory '/etc/passwd' is not a directory"
        );
        assert_eq!(check_cwd(Some("/")).unwrap(), Some(PathBuf::from("/")));
    }
}
