//! The environment of every process a benchmark starts: a user home of its own and a `PATH`
//! without agent CLIs, so `loopsy init` registers nothing with the developer's agents and no
//! agent CLI of this machine is ever run (the same rule as the tests' harness).

use std::path::Path;
use std::process::Command;

/// The agent CLIs loopsy registers with and runs.
const AGENT_CLIS: [&str; 3] = ["claude", "gemini", "codex"];

/// Variables passed through: none of them locates a home or a config. (`SMOL_THREADS` lets a
/// run compare the daemon's executor thread counts.)
const PASSED: &[&str] =
    &["TMPDIR", "LANG", "LC_ALL", "TZ", "USER", "LOGNAME", "RUST_BACKTRACE", "RUST_LOG", "SMOL_THREADS"];

/// Clears `command`'s environment and gives it `user_home` and the controlled `PATH`.
pub fn isolate<'a>(command: &'a mut Command, user_home: &Path) -> &'a mut Command {
    command.env_clear();
    for name in PASSED {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command
        .env("PATH", controlled_path())
        .env("HOME", user_home)
        .env("XDG_CONFIG_HOME", user_home.join(".config"))
        .env("XDG_DATA_HOME", user_home.join(".local/share"))
        .env("XDG_STATE_HOME", user_home.join(".local/state"))
        .env("XDG_CACHE_HOME", user_home.join(".cache"))
        .env("XDG_RUNTIME_DIR", user_home.join(".run"))
        .env("CODEX_HOME", user_home.join(".codex"))
        .env("CLAUDE_CONFIG_DIR", user_home.join(".claude"))
        .env("GEMINI_CLI_HOME", user_home)
}

/// This process's `PATH` without the directories that hold an agent CLI.
fn controlled_path() -> std::ffi::OsString {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let dirs = std::env::split_paths(&path)
        .filter(|dir| dir.is_absolute() && !AGENT_CLIS.iter().any(|agent| dir.join(agent).exists()));
    std::env::join_paths(dirs).expect("PATH entries without ':'")
}
