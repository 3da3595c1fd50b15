//! Isolation: every process a test starts runs in the running test's sandbox, never in the
//! developer's real home.
//!
//! `loopsy init` and `mcp add` register the MCP server with every agent they find, the task
//! runner starts agent CLIs found on `PATH`, and the service code talks to the user's systemd.
//! Run with the developer's environment, a test would edit the real `~/.claude.json` and start
//! the real `claude`. So [`command`] starts from an empty environment and sets:
//!
//! - `HOME`, `XDG_{CONFIG,DATA,STATE,CACHE}_HOME`, `XDG_RUNTIME_DIR`, and the agents' own
//!   config variables (`CODEX_HOME`, `CLAUDE_CONFIG_DIR`, `GEMINI_CLI_HOME`) inside the test's
//!   sandbox, a temporary directory of the test thread, removed when the test ends;
//! - a controlled `PATH`: the test process's own, where every directory holding an agent CLI
//!   (`claude`, `gemini`, `codex`) is replaced by a copy of it without them (symbolic links);
//! - a few harmless variables passed through (`TMPDIR`, locale, `RUST_BACKTRACE`, `USER`).
//!
//! Nothing else crosses: no `LOOPSY_*` of the developer's shell, no API keys, no session bus.
//! A test that wants the stand-in agents puts them first with [`path_with`]; a test that wants
//! its own user home (agent config files to look at) calls [`UserHome::user_home`].

use std::cell::RefCell;
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The agent CLIs loopsy registers with and runs; never found on a test's `PATH` by accident.
pub const AGENT_CLIS: [&str; 3] = ["claude", "gemini", "codex"];

/// Variables passed through from the test process: none of them locates a home or a config.
const PASSED: &[&str] = &[
    "TMPDIR",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "USER",
    "LOGNAME",
    "RUST_BACKTRACE",
    "RUST_LIB_BACKTRACE",
    "RUST_LOG",
    "SMOL_THREADS",
    // Coverage runs write their profiles here.
    "LLVM_PROFILE_FILE",
    // netlab's state directory (root-owned, outside any home).
    "NETLAB_STATE_DIR",
    // Where skips are recorded (the harness's own tests move it).
    "LOOPSY_SKIP_RECORDS",
];

/// The running test's sandbox: a user home and a runtime directory of its own.
pub struct Sandbox {
    root: PathBuf,
    _watchdog: super::watchdog::Guard,
}

impl Sandbox {
    fn new() -> Sandbox {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        sweep_stale();
        super::skip::count_at_exit();
        let test = super::test_name();
        let label: String =
            test.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).rev().take(40).collect();
        let label: String = label.chars().rev().collect();
        let root = std::env::temp_dir().join(format!(
            "{SANDBOX_PREFIX}{}-{}-{label}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let home = root.join("home");
        for dir in [".config", ".local/share", ".local/state", ".cache"] {
            std::fs::create_dir_all(home.join(dir)).expect("creating the sandbox home");
        }
        let run = root.join("run");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
        Sandbox { root, _watchdog: super::watchdog::Guard::start(&test) }
    }

    /// The user home every process of this test gets as `HOME`.
    pub fn home(&self) -> PathBuf {
        self.root.join("home")
    }

    /// `XDG_RUNTIME_DIR`: empty, so no user manager or bus is reachable through it.
    pub fn runtime_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    /// The controlled `PATH` of this sandbox (mirrors made on first use).
    pub fn path(&self) -> OsString {
        let dirs: Vec<PathBuf> = inherited_path()
            .iter()
            .enumerate()
            .map(|(i, entry)| match entry {
                PathEntry::Plain(dir) => dir.clone(),
                PathEntry::HoldsAgents(dir) => self.mirror(i, dir),
            })
            .collect();
        std::env::join_paths(dirs).expect("PATH entries without ':'")
    }

    /// A copy of `dir` (symbolic links) without the agent CLIs.
    fn mirror(&self, index: usize, dir: &Path) -> PathBuf {
        let mirror = self.root.join(format!("path-{index}"));
        if mirror.is_dir() {
            return mirror;
        }
        let partial = self.root.join(format!(".path-{index}"));
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&partial).unwrap();
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name();
            if AGENT_CLIS.iter().any(|agent| OsStr::new(agent) == name) {
                continue;
            }
            let _ = std::os::unix::fs::symlink(entry.path(), partial.join(&name));
        }
        std::fs::rename(&partial, &mirror).unwrap();
        mirror
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

const SANDBOX_PREFIX: &str = "loopsy-test-env-";

thread_local! {
    static SANDBOX: RefCell<Option<Rc<Sandbox>>> = const { RefCell::new(None) };
}

/// The sandbox of the running test (of this thread), made on first use and removed when the
/// thread ends. libtest runs each test on a thread of its own, named after the test.
pub fn sandbox() -> Rc<Sandbox> {
    SANDBOX.with(|cell| cell.borrow_mut().get_or_insert_with(|| Rc::new(Sandbox::new())).clone())
}

/// Removes the sandboxes of test processes that are gone (a killed run cannot clean up).
fn sweep_stale() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for entry in std::fs::read_dir(std::env::temp_dir()).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix(SANDBOX_PREFIX).and_then(|rest| rest.split('-').next()) else {
                continue;
            };
            let Ok(pid) = pid.parse::<i32>() else { continue };
            // SAFETY: signal 0 only checks whether the process exists.
            let gone = unsafe { libc::kill(pid, 0) } != 0
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
            if gone {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    });
}

enum PathEntry {
    Plain(PathBuf),
    HoldsAgents(PathBuf),
}

/// The test process's own `PATH`, each absolute directory marked if it holds an agent CLI.
fn inherited_path() -> &'static [PathEntry] {
    static ENTRIES: OnceLock<Vec<PathEntry>> = OnceLock::new();
    ENTRIES.get_or_init(|| {
        let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
        let mut dirs: Vec<PathBuf> = Vec::new();
        for dir in std::env::split_paths(&path) {
            // A relative entry would depend on the current directory.
            if dir.is_absolute() && !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        dirs.into_iter()
            .map(|dir| {
                if AGENT_CLIS.iter().any(|agent| is_executable(&dir.join(agent))) {
                    PathEntry::HoldsAgents(dir)
                } else {
                    PathEntry::Plain(dir)
                }
            })
            .collect()
    })
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `dirs` first, then the sandbox's controlled `PATH` (for stand-in programs).
pub fn path_with(dirs: &[&Path]) -> OsString {
    let sandbox_path = sandbox().path();
    let all = dirs.iter().map(|d| d.to_path_buf()).chain(std::env::split_paths(&sandbox_path));
    std::env::join_paths(all).expect("PATH entries without ':'")
}

/// A program found on the test process's own `PATH` (to check a prerequisite and start it by
/// its absolute path); agent CLIs are never looked up here.
pub fn find_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return is_executable(Path::new(name)).then(|| PathBuf::from(name));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| is_executable(candidate))
}

/// A `Command` for `program` in the running test's sandbox, with stdin from `/dev/null`.
///
/// A bare program name is looked up in the controlled `PATH`, so an agent CLI of the machine is
/// never started; tests start the stand-ins by `path_with` or by absolute path.
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let sandbox = sandbox();
    let mut command = Command::new(program);
    command.env_clear();
    for name in PASSED {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    if std::env::var_os("LANG").is_none() && std::env::var_os("LC_ALL").is_none() {
        command.env("LANG", "C.UTF-8");
    }
    command
        .env("PATH", sandbox.path())
        .env("XDG_RUNTIME_DIR", sandbox.runtime_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONNOUSERSITE", "1")
        .user_home(&sandbox.home())
        .stdin(Stdio::null());
    command
}

/// Moves a command's user home (and every variable derived from it) to `home`.
pub trait UserHome {
    fn user_home(&mut self, home: &Path) -> &mut Self;
}

impl UserHome for Command {
    fn user_home(&mut self, home: &Path) -> &mut Command {
        self.env("HOME", home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .env("XDG_STATE_HOME", home.join(".local/state"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .env("CODEX_HOME", home.join(".codex"))
            .env("CLAUDE_CONFIG_DIR", home.join(".claude"))
            .env("GEMINI_CLI_HOME", home)
    }
}

/// Applies extra variables (a test's choice); a `HOME` among them moves the derived ones too.
pub fn apply_env(command: &mut Command, env: &[(String, String)]) {
    if let Some((_, home)) = env.iter().find(|(name, _)| name == "HOME") {
        command.user_home(Path::new(home));
    }
    for (name, value) in env {
        command.env(name, value);
    }
}
