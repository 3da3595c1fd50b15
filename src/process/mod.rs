//! Processes loopsy starts and stops: remote execution's jobs, AI agents and interactive
//! terminals. The one module that spawns them in process groups of their own, opens PTYs (the
//! only code that knows pty-process), signals whole groups and sessions, and finds programs.
//!
//! - `spawn.rs`: a job (`spawn_job`: stdin `/dev/null`, stdout/stderr piped) and an agent
//!   (`spawn_agent`: stdin piped, stdout/stderr piped or on a PTY), each leading its own group.
//! - `pty.rs`: the PTY master made pollable (`PtyIo`) and interactive programs on a PTY of
//!   their own (`spawn_interactive`, a new session).
//!
//! The guards are in one place: a group id of 0 or 1 is never signalled (that would be our own
//! group or every process), and programs are looked up only in absolute `PATH` directories.

mod pty;
mod spawn;

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub(crate) use pty::{spawn_interactive, Interactive, PtyIo};
pub(crate) use spawn::{spawn_agent, spawn_job, AgentLaunch, JobLaunch, SpawnError, Spawned};

/// Sends `signal` to every process of the group `pgid` (0 only asks whether it exists).
/// Returns false when the group is gone, and refuses the groups 0 and 1.
pub(crate) fn signal_group(pgid: u32, signal: i32) -> bool {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else { return false };
    if pgid <= 1 {
        return false; // never the caller's own group or every process
    }
    // SAFETY: killpg(2) on a process group this daemon created; no memory involved.
    unsafe { libc::killpg(pgid, signal) == 0 }
}

/// Sends `signal` to every process of the session `sid` (a terminal's programs, whatever
/// process group a shell put each job in), found through `/proc`. Returns how many were
/// signalled.
pub(crate) fn signal_session(sid: u32, signal: i32) -> usize {
    let mut signalled = 0;
    for pid in session_members(sid) {
        // SAFETY: kill(2) with a pid read from /proc (never 0 or 1: see `session_members`).
        if unsafe { libc::kill(pid as libc::pid_t, signal) } == 0 {
            signalled += 1;
        }
    }
    signalled
}

/// The live processes whose session id is `sid` (zombies, already dead, are left out); none
/// for the sessions 0 and 1.
pub(crate) fn session_members(sid: u32) -> Vec<u32> {
    if sid <= 1 {
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid > 1)
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

/// The name of a signal number, as Node reports it (`SIGTERM`).
pub(crate) fn signal_name(signal: i32) -> String {
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

/// Why [`find_program`] found nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missing {
    /// No executable file of that name in an absolute directory of `PATH`.
    NotOnPath,
    /// The path names nothing.
    NoFile,
    /// The path names something that is not an executable file.
    NotExecutable,
}

/// The file `command` names, as execvp would find it, but stricter: with a `/` it is a path
/// (relative to `cwd`, when given); else the first executable file of that name in an
/// absolute directory of `path` (a `PATH` value). Relative `PATH` entries, `.` and the empty
/// entry among them, are skipped: which program runs never depends on the working directory.
pub(crate) fn find_program(command: &str, cwd: Option<&Path>, path: Option<&OsStr>) -> Result<PathBuf, Missing> {
    if command.contains('/') {
        let path = match cwd {
            Some(cwd) => cwd.join(command),
            None => PathBuf::from(command),
        };
        return match std::fs::metadata(&path) {
            Ok(meta) if is_executable(&meta) => Ok(path),
            Ok(_) => Err(Missing::NotExecutable),
            Err(_) => Err(Missing::NoFile),
        };
    }
    path.map(std::env::split_paths)
        .into_iter()
        .flatten()
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(command))
        .find(|candidate| std::fs::metadata(candidate).is_ok_and(|meta| is_executable(&meta)))
        .ok_or(Missing::NotOnPath)
}

fn is_executable(meta: &std::fs::Metadata) -> bool {
    meta.is_file() && meta.permissions().mode() & 0o111 != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_on_absolute_path_entries_and_relative_to_the_working_directory() {
        let path = std::ffi::OsString::from("relative:/nonexistent::/bin:/usr/bin");
        let sh = find_program("sh", None, Some(&path)).unwrap();
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{sh:?}");
        assert_eq!(find_program("no-such-program-x", None, Some(&path)), Err(Missing::NotOnPath));
        assert_eq!(find_program("sh", None, None), Err(Missing::NotOnPath));
        assert_eq!(find_program("./nope", Some(Path::new("/")), None), Err(Missing::NoFile));
        assert_eq!(find_program("/etc/passwd", None, None), Err(Missing::NotExecutable));
        assert!(find_program("bin/sh", Some(Path::new("/")), None).is_ok());
        assert!(find_program("/bin/sh", Some(Path::new("/tmp")), None).is_ok(), "an absolute path stays");
        // `sh` in the working directory is not found through a relative entry.
        let bin = Path::new("/bin");
        assert_eq!(find_program("sh", Some(bin), Some(OsStr::new(".:"))), Err(Missing::NotOnPath));
    }

    #[test]
    fn the_groups_and_sessions_0_and_1_are_never_signalled() {
        assert!(!signal_group(0, 0));
        assert!(!signal_group(1, 0));
        assert!(!signal_group(u32::MAX, 0), "not a pid_t");
        assert!(session_members(0).is_empty());
        assert!(session_members(1).is_empty());
        assert_eq!(signal_session(1, 0), 0);
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
    fn signal_names() {
        assert_eq!(signal_name(libc::SIGTERM), "SIGTERM");
        assert_eq!(signal_name(libc::SIGKILL), "SIGKILL");
        assert_eq!(signal_name(64), "SIG64");
    }
}
