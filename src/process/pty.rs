//! Pseudo-terminals: the only code that knows pty-process. An agent's output on a PTY
//! (`spawn_agent`), an interactive program on a PTY of its own (`spawn_interactive`), and the
//! PTY master made pollable by async-io (`PtyIo`, DEPENDENCIES.md).

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};

use super::spawn::{AgentLaunch, Spawned};

/// An agent with stdout and stderr on a new PTY, stdin a pipe.
pub(super) fn spawn_agent(launch: &AgentLaunch<'_>) -> io::Result<Spawned> {
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
pub struct PtyIo(pty_process::blocking::Pty);

impl PtyIo {
    /// Sets the terminal size; the kernel sends SIGWINCH to the foreground process group.
    pub fn resize(&self, rows: u16, cols: u16) -> io::Result<()> {
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
