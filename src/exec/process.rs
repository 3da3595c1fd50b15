//! Starting a job's process and signalling its process group: the part that talks to the OS.
//!
//! Each job runs in a process group of its own (`process_group(0)`, which std still starts
//! through `posix_spawn`, no fork of the daemon), with stdin on `/dev/null` and stdout/stderr on
//! pipes driven by async-io (`smol::process`, i.e. async-process): no thread per job. The program
//! and the working directory are checked before spawning so a failure says which one is wrong.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use smol::process::{Child, Command};

/// Why a process could not be started; each message names what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
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

/// What to start.
pub struct Launch<'a> {
    pub command: &'a str,
    pub args: &'a [String],
    pub cwd: Option<&'a str>,
    /// The whole environment of the process (nothing else is inherited).
    pub env: &'a BTreeMap<String, String>,
}

/// Starts `launch` in a new process group; stdin `/dev/null`, stdout and stderr piped.
pub fn spawn(launch: &Launch<'_>) -> Result<Child, SpawnError> {
    let cwd = check_cwd(launch.cwd)?;
    let path_var = launch.env.get("PATH").map(OsString::from);
    let program = resolve_program(launch.command, cwd.as_deref(), path_var.as_deref())?;
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

/// The file that `command` names: a path (relative to `cwd`) if it has a `/`, else the first
/// executable match on `PATH`, as execvp would find it.
fn resolve_program(
    command: &str,
    cwd: Option<&Path>,
    path_var: Option<&std::ffi::OsStr>,
) -> Result<PathBuf, SpawnError> {
    if command.contains('/') {
        let path = match cwd {
            Some(cwd) if !command.starts_with('/') => cwd.join(command),
            _ => PathBuf::from(command),
        };
        return match std::fs::metadata(&path) {
            Ok(meta) if is_executable(&meta) => Ok(path),
            Ok(_) => Err(SpawnError::NotExecutable(command.to_string())),
            Err(_) => Err(SpawnError::NoProgram(command.to_string())),
        };
    }
    let dirs = path_var.map(std::env::split_paths).into_iter().flatten();
    for dir in dirs {
        let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
        let dir = match cwd {
            Some(cwd) if dir.is_relative() => cwd.join(dir),
            _ => dir,
        };
        let candidate = dir.join(command);
        if std::fs::metadata(&candidate).is_ok_and(|meta| is_executable(&meta)) {
            return Ok(candidate);
        }
    }
    Err(SpawnError::NotOnPath(command.to_string()))
}

fn is_executable(meta: &std::fs::Metadata) -> bool {
    meta.is_file() && meta.permissions().mode() & 0o111 != 0
}

/// Sends `signal` to every process of the group `pgid`. Returns false when the group is gone.
pub fn signal_group(pgid: u32, signal: i32) -> bool {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else { return false };
    if pgid <= 1 {
        return false; // never the caller's own group or every process
    }
    // SAFETY: killpg(2) on a process group this daemon created for a job.
    unsafe { libc::killpg(pgid, signal) == 0 }
}

/// The name of a signal number, as Node reports it (`SIGTERM`).
pub fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        _ => return format!("SIG{signal}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_resolve_on_path_and_relative_to_the_working_directory() {
        let path = std::ffi::OsString::from("/nonexistent:/bin:/usr/bin");
        let sh = resolve_program("sh", None, Some(&path)).unwrap();
        assert!(sh.ends_with("sh"), "{sh:?}");
        assert!(matches!(resolve_program("no-such-program-x", None, Some(&path)), Err(SpawnError::NotOnPath(_))));
        assert!(matches!(resolve_program("./nope", Some(Path::new("/")), None), Err(SpawnError::NoProgram(_))));
        assert!(matches!(resolve_program("/etc/passwd", None, None), Err(SpawnError::NotExecutable(_))));
        assert!(resolve_program("bin/sh", Some(Path::new("/")), None).is_ok());
    }

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

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(libc::SIGTERM), "SIGTERM");
        assert_eq!(signal_name(libc::SIGKILL), "SIGKILL");
        assert_eq!(signal_name(64), "SIG64");
    }
}
