//! `loopsy term` driven in a real terminal: tmux runs it, `send-keys` types and
//! `capture-pane` reads the screen.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::support::{command, loopsy_bin, prerequisite, run_within, skip, wait_until, Home, TempDir};

/// How long one tmux command may take.
const TMUX: Duration = Duration::from_secs(20);

/// A tmux server of its own (private socket, no config) with one 100x30 pane running `sh`.
struct Tmux {
    socket: PathBuf,
    _dir: TempDir,
}

impl Tmux {
    fn start(home: &Path) -> Tmux {
        let dir = TempDir::new("tmux");
        let socket = dir.path().join("tmux.sock");
        let tmux = Tmux { socket, _dir: dir };
        let run = run_within(
            tmux.command()
                .env("HOME", home)
                .env("TERM", "xterm-256color")
                .args(["-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", "100", "-y", "30"])
                .arg("PS1='pane> ' ENV= exec sh"),
            TMUX,
        );
        assert_eq!(run.code, 0, "tmux new-session: {}", run.stderr);
        tmux.wait_for("pane>");
        tmux
    }

    fn command(&self) -> Command {
        let mut tmux = command("tmux");
        tmux.arg("-S").arg(&self.socket);
        tmux
    }

    /// Types `keys` (tmux key names such as `Enter`, `C-a`; anything else literally).
    fn send(&self, keys: &[&str]) {
        let run = run_within(self.command().args(["send-keys", "-t", "t"]).args(keys), TMUX);
        assert_eq!(run.code, 0, "send-keys {keys:?}: {}", run.stderr);
    }

    /// Types a command line and Enter.
    fn line(&self, text: &str) {
        self.send(&["-l", text]);
        self.send(&["Enter"]);
    }

    fn screen(&self) -> String {
        run_within(self.command().args(["capture-pane", "-p", "-t", "t"]), TMUX).stdout
    }

    #[track_caller]
    fn wait_for(&self, text: &str) {
        if crate::support::wait_for(Duration::from_secs(20), || self.screen().contains(text)).is_none() {
            panic!("'{text}' never appeared in the pane:\n{}", self.screen());
        }
    }

    /// Clears the pane (the pane's shell runs `clear`), so old text cannot satisfy a wait.
    fn clear(&self) {
        self.line("clear");
        if crate::support::wait_for(Duration::from_secs(20), || self.screen().trim() == "pane>").is_none() {
            panic!("the pane did not clear:\n{}", self.screen());
        }
    }

    /// Asserts the pane's terminal is back in cooked mode with echo (raw mode undone).
    #[track_caller]
    fn assert_restored(&self) {
        self.clear();
        self.line("stty -a | tr ' ' '\\n' | grep -x -e icanon -e echo -e isig | tr '\\n' ,; echo END");
        self.wait_for("isig,icanon,echo,END");
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        run_within(self.command().arg("kill-server"), TMUX);
    }
}

/// Processes whose command line contains every one of `words`.
fn processes_with(words: &[&str]) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            words.iter().all(|w| cmdline.contains(w))
        })
        .collect()
}

#[test]
fn the_cli_attaches_detaches_and_restores_the_terminal_on_every_way_out() {
    if prerequisite(skip::program("tmux", "tmux")).is_none() {
        return;
    }
    let mut home = Home::new("term-cli");
    home.env.push(("HOME".into(), home.path().to_string_lossy().into_owned()));
    home.env.push(("PS1".into(), "remote$ ".into()));
    home.env.push(("ENV".into(), String::new()));
    let mut daemon = home.start();
    let loopsy = format!("{} --home {}", loopsy_bin(), daemon.home.path().display());
    let tmux = Tmux::start(daemon.home.path());

    // New, type, detach with Ctrl-A d: the pane's shell is back and cooked.
    tmux.line(&format!("{loopsy} term new local --name cli -- sh; echo rc=$?"));
    tmux.wait_for("remote$");
    tmux.line("echo typed-$((6*7))");
    tmux.wait_for("typed-42");
    tmux.send(&["C-a", "d"]);
    tmux.wait_for("rc=0");
    assert!(tmux.screen().contains("[detached from"), "{}", tmux.screen());
    tmux.assert_restored();
    let listed = daemon.req("GET", "/api/v1/terminals/cli").send().json();
    assert_eq!((listed["state"].as_str(), listed["clients"].as_u64()), (Some("running"), Some(0)));
    assert_eq!((listed["cols"].as_u64(), listed["rows"].as_u64()), (Some(100), Some(30)), "created at the pane's size");

    // Attach again: the earlier output is on the screen; the pane shrinks and the size follows.
    tmux.line(&format!("{loopsy} term attach local cli; echo rc=$?"));
    tmux.wait_for("typed-42");
    run_within(tmux.command().args(["resize-window", "-t", "t", "-x", "90", "-y", "25"]), TMUX);
    wait_until(Duration::from_secs(20), "the resize to reach the terminal", || {
        let info = daemon.req("GET", "/api/v1/terminals/cli").send().json();
        info["cols"] == 90 && info["rows"] == 25
    });
    // The remote program's exit code is ours.
    tmux.line("exit 7");
    tmux.wait_for("rc=7");
    assert!(tmux.screen().contains("exited with 7"), "{}", tmux.screen());
    tmux.assert_restored();

    // A full-screen program switched modes on: detaching undoes them.
    let made = daemon.req("POST", "/api/v1/terminals").json(&json!({"command": "sh", "name": "modes"})).send();
    assert_eq!(made.status, 201);
    tmux.line(&format!("{loopsy} term attach local modes; echo rc=$?"));
    tmux.wait_for("remote$");
    tmux.line("printf '\\033[?1049h\\033[?25l\\033[?1000hALT-SCREEN'");
    tmux.wait_for("ALT-SCREEN");
    tmux.send(&["C-a", "d"]);
    tmux.wait_for("rc=0");
    tmux.assert_restored();
    assert!(!tmux.screen().contains("ALT-SCREEN"), "the alternate screen was left:\n{}", tmux.screen());

    // SIGTERM to the CLI: it detaches, restores and says so.
    tmux.line(&format!("{loopsy} term attach local modes; echo rc=$?"));
    tmux.wait_for("ALT-SCREEN");
    let pids = processes_with(&["term", "attach", "modes"]);
    assert_eq!(pids.len(), 1, "{pids:?}");
    // SAFETY: kill(2) on the CLI process this test started.
    unsafe { libc::kill(pids[0], libc::SIGTERM) };
    tmux.wait_for("rc=2");
    tmux.assert_restored();

    // The daemon stops while attached: the program is hung up, the CLI ends and restores.
    tmux.line(&format!("{loopsy} term attach local modes; echo rc=$?"));
    tmux.wait_for("ALT-SCREEN");
    daemon.stop();
    tmux.wait_for("rc=");
    tmux.assert_restored();

    // Refusals are messages and exit code 2, the terminal untouched.
    tmux.line(&format!("{loopsy} term attach local nothing; echo rc=$?"));
    tmux.wait_for("rc=2");
    assert!(tmux.screen().contains("loopsy: error:"), "{}", tmux.screen());
}

#[test]
fn term_list_and_kill_from_the_cli() {
    let mut home = Home::new("term-cli-list");
    home.env.push(("HOME".into(), home.path().to_string_lossy().into_owned()));
    let daemon = home.start();
    let created = daemon.loopsy(&["term", "new", "--name", "bg", "-d", "--", "sleep", "1000"]).success();
    let id = created.stdout.trim().to_string();
    assert_eq!(id.len(), 36, "{id}");
    let listed = daemon.loopsy(&["term", "list", "--json"]).success().json();
    let terminals = listed["terminals"].as_array().unwrap();
    assert_eq!(terminals.len(), 1);
    assert_eq!((terminals[0]["id"].as_str(), terminals[0]["name"].as_str()), (Some(id.as_str()), Some("bg")));
    assert_eq!((terminals[0]["command"].as_str(), terminals[0]["state"].as_str()), (Some("sleep"), Some("running")));
    daemon.loopsy(&["term", "list"]).success().stdout_has("bg").stdout_has("running");
    daemon.loopsy(&["term", "kill", "local", "bg"]).success().stdout_has("killed bg");
    daemon.loopsy(&["term", "kill", "local", "bg"]).code(2).stderr_has("no terminal 'bg'");
    assert_eq!(daemon.loopsy(&["term", "list", "--json"]).success().json()["terminals"], json!([]));
    // Not a terminal on stdin: attach refuses clearly.
    daemon.loopsy(&["term", "new", "--", "sh"]).code(2).stderr_has("needs a terminal");
}

#[test]
fn the_cli_attaches_over_pinned_tls() {
    if prerequisite(skip::program("tmux", "tmux")).is_none() {
        return;
    }
    let mut home = Home::new("term-cli-tls");
    home.env.push(("HOME".into(), home.path().to_string_lossy().into_owned()));
    home.env.push(("PS1".into(), "tls$ ".into()));
    home.env.push(("ENV".into(), String::new()));
    home.edit_config(|doc| doc["tls"]["enabled"] = true.into());
    let daemon = home.start();
    assert!(daemon.url.starts_with("https://"), "{}", daemon.url);
    let loopsy = format!("{} --home {}", loopsy_bin(), daemon.home.path().display());
    let tmux = Tmux::start(daemon.home.path());
    tmux.line(&format!("{loopsy} term new --name secure -- sh; echo rc=$?"));
    tmux.wait_for("tls$");
    tmux.line("echo over-tls-$((4*4))");
    tmux.wait_for("over-tls-16");
    tmux.send(&["C-a", "d"]);
    tmux.wait_for("rc=0");
    tmux.assert_restored();
    let listed = daemon.loopsy(&["term", "list", "--json"]).success().json();
    assert_eq!(listed["terminals"][0]["name"], "secure");
}
