//! The black-box harness: real `loopsy` binaries in temporary homes, driven over real HTTP.
//!
//! Each daemon gets its own home, `--port 0` on 127.0.0.1 and mDNS off; its bound address is
//! read from the `daemon.json` it writes once listening (never a port picked in advance). Its
//! output is forwarded to the test's stderr with a `[name]` prefix. Dropping a `Daemon` stops it.
//!
//! # Rules every test keeps (checked by `harness::tests_follow_the_harness_rules`)
//!
//! - **Isolation.** Every process a test starts comes from [`command`] (or a harness type built
//!   on it: `Home`, `Daemon`, `loopsy_in`, `Background`, `McpServer`): an empty environment with
//!   `HOME`, `XDG_*`, `CODEX_HOME`, `CLAUDE_CONFIG_DIR` and `GEMINI_CLI_HOME` inside the test's
//!   sandbox and a `PATH` on which no agent CLI of the machine is found ([`isolation`]). Never
//!   `std::process::Command::new`, never the test process's `HOME` or `PATH`: stand-in programs
//!   go first on the path with [`path_with`], another user home comes from [`UserHome`].
//! - **Loud skips.** A test whose prerequisite is missing calls [`skip`] or
//!   [`prerequisite`] with a probe from [`skip`](mod@skip) (`root`, `program`, `python_with`,
//!   `browser`, `udp_port_free`, `free_disk`) and returns. Under `CI` that fails the test;
//!   otherwise it prints `SKIPPED: <test>: <why>` and the run ends with the count.
//! - **Bounded waits.** No fixed sleeps: wait for a condition with [`wait_until`]; run
//!   processes with [`run_within`] / [`wait_child`]; every HTTP read has a deadline and a cut
//!   body is an error ([`http`]). `.ci/run` also bounds each test (nextest), and a plain
//!   `cargo test` has the [`watchdog`].
//! - **Loopback only**: listen and connect on 127.0.0.1, or inside netlab's namespaces.

#![allow(dead_code)] // Each test module uses its own part of the harness.

pub mod http;
pub mod isolation;
pub mod mcp_stdio;
pub mod process;
pub mod proxy;
pub mod recorder;
pub mod relay;
pub mod rogue;
pub mod skip;
pub mod watchdog;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use http::{Request, Response};
pub use isolation::{command, path_with, UserHome};
pub use process::{reap, run_within, wait_child, Run, PROCESS_LIMIT};
pub use skip::{prerequisite, skip};

/// The name of the running test (libtest names each test's thread after it).
pub fn test_name() -> String {
    std::thread::current().name().unwrap_or("unnamed thread").to_string()
}

/// The stand-in agent CLIs (`claude`, `codex`, `gemini`) that speak each real CLI's protocol.
pub fn stand_in_agents() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/agents")
}

/// The binary under test.
pub fn loopsy_bin() -> &'static str {
    env!("CARGO_BIN_EXE_loopsy")
}

/// A directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        let unique = format!(
            "loopsy-test-{label}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        );
        let dir = std::env::temp_dir().join(unique);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `condition` every 10 ms until it holds or `limit` passes (then the test fails).
#[track_caller]
pub fn wait_until(limit: Duration, what: &str, condition: impl FnMut() -> bool) {
    if wait_for(limit, condition).is_none() {
        panic!("timed out after {limit:?} waiting until {what}");
    }
}

/// Polls `condition` every 10 ms; how long it took to hold, or `None` once `limit` passed.
pub fn wait_for(limit: Duration, mut condition: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if condition() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `loopsy --home <home> <args>` to completion (within [`PROCESS_LIMIT`]).
#[must_use = "assert on the outcome"]
pub fn loopsy_in(home: &Path, args: &[&str]) -> Run {
    run_within(command(loopsy_bin()).arg("--home").arg(home).args(args), PROCESS_LIMIT)
}

/// A CLI command running in the background, read line by line (interactive flows).
pub struct Background {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Background {
    pub fn spawn(home: &Path, args: &[&str]) -> Background {
        Background::start(command(loopsy_bin()).arg("--home").arg(home).args(args))
    }

    /// Starts `command` with piped stdio; its output lines are collected as they come.
    pub fn start(command: &mut std::process::Command) -> Background {
        let what = process::describe(command);
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting `{what}`: {e}"));
        let (send, lines) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let send = send.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    eprintln!("[cli] {line}");
                    let _ = send.send(line);
                }
            });
        }
        Background { child, lines, seen: Vec::new() }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("checking a child").is_none()
    }

    /// Sends a signal to the process.
    pub fn signal(&self, signal: i32) {
        assert_eq!(unsafe_kill(self.child.id(), signal), 0, "kill {signal} {}", self.child.id());
    }

    /// Waits for a line containing `text`; returns it.
    #[track_caller]
    pub fn wait_line(&mut self, text: &str, limit: Duration) -> String {
        self.try_line(text, limit)
            .unwrap_or_else(|| panic!("no line with {text:?} within {limit:?}; saw {:?}", self.seen))
    }

    /// A line containing `text` (seen before, or arriving within `limit`), or `None`.
    pub fn try_line(&mut self, text: &str, limit: Duration) -> Option<String> {
        if let Some(line) = self.seen.iter().find(|l| l.contains(text)) {
            return Some(line.clone());
        }
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).ok()?;
            self.seen.push(line.clone());
            if line.contains(text) {
                return Some(line);
            }
        }
    }

    pub fn answer(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("stdin is piped");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for the exit code (and the output the process wrote before exiting).
    #[track_caller]
    pub fn wait(mut self, limit: Duration) -> (i32, Vec<String>) {
        let Some(status) = process::try_wait_within(&mut self.child, limit) else {
            panic!("command did not finish within {limit:?}; saw {:?}", self.seen);
        };
        // The readers end with the pipes; a grandchild holding one gets a short grace only.
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Ok(line) = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            self.seen.push(line);
        }
        (status.code().unwrap_or(-1), std::mem::take(&mut self.seen))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        reap(&mut self.child);
    }
}

/// A home initialised by `loopsy init` and adjusted for tests, with no daemon yet.
pub struct Home {
    pub dir: TempDir,
    pub name: String,
    /// Extra environment for the daemon process.
    pub env: Vec<(String, String)>,
}

impl Home {
    /// `loopsy init`, then: listen on 127.0.0.1 port 0, no mDNS, no rate limits.
    pub fn new(name: &str) -> Home {
        let dir = TempDir::new(name);
        let _ = loopsy_in(dir.path(), &["init"]).success();
        let home = Home { dir, name: name.to_string(), env: Vec::new() };
        home.edit_config(|doc| {
            doc["server"]["host"] = "127.0.0.1".into();
            doc["server"]["port"] = 0.into();
            doc["discovery"]["enabled"] = false.into();
            for category in ["execute", "transfer", "context"] {
                doc["rateLimits"][category] = 0.into();
            }
        });
        home
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Puts the stand-in agent CLIs (`tests/agents`) first on the daemon's `PATH`.
    pub fn with_stand_in_agents(&mut self) {
        let path = path_with(&[&stand_in_agents()]);
        self.env.push(("PATH".into(), path.to_string_lossy().into_owned()));
    }

    pub fn config_path(&self) -> PathBuf {
        self.path().join("config.yaml")
    }

    pub fn config(&self) -> Yaml {
        read_config(self.path())
    }

    pub fn edit_config(&self, change: impl FnOnce(&mut Yaml)) {
        edit_config_in(self.path(), change)
    }

    pub fn key(&self) -> String {
        self.config()["auth"]["apiKey"].as_str().unwrap().to_string()
    }

    #[must_use = "assert on the outcome"]
    pub fn loopsy(&self, args: &[&str]) -> Run {
        loopsy_in(self.path(), args)
    }

    /// Starts `loopsy start --foreground` and waits until it listens.
    pub fn start(self) -> Daemon {
        Daemon::spawn(self)
    }

    /// The running daemon's address from `daemon.json`, if it wrote one for `pid`.
    pub fn runtime(&self, pid: Option<u32>) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(self.path().join("daemon.json")).ok()?;
        let info: serde_json::Value = serde_json::from_str(&text).ok()?;
        match pid {
            Some(pid) if info["pid"] != pid => None,
            _ => Some(info),
        }
    }
}

/// A daemon running in the foreground as a child of the test.
pub struct Daemon {
    pub home: Home,
    child: Option<Child>,
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub url: String,
    pub port: u16,
    pub key: String,
    /// Every line the daemon printed.
    pub output: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// A daemon with the test defaults.
    pub fn start(name: &str) -> Daemon {
        Home::new(name).start()
    }

    fn spawn(home: Home) -> Daemon {
        let mut daemon = command(loopsy_bin());
        daemon.arg("--home").arg(home.path()).args(["start", "--foreground"]);
        isolation::apply_env(&mut daemon, &home.env);
        let mut child = daemon.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawning the daemon");
        let output = Arc::new(Mutex::new(Vec::new()));
        forward(&home.name, child.stdout.take().unwrap(), output.clone());
        forward(&home.name, child.stderr.take().unwrap(), output.clone());
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(15);
        let info = loop {
            if let Some(info) = home.runtime(Some(pid)) {
                break info;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("daemon {} exited during start-up ({status}): {:?}", home.name, output.lock().unwrap());
            }
            assert!(Instant::now() < deadline, "daemon {} did not start", home.name);
            std::thread::sleep(Duration::from_millis(5));
        };
        let port = info["port"].as_u64().unwrap() as u16;
        let key = home.key();
        Daemon {
            addr: format!("127.0.0.1:{port}"),
            url: info["url"].as_str().unwrap().to_string(),
            port,
            key,
            home,
            child: Some(child),
            output,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// A request with this daemon's own key.
    pub fn req(&self, method: &str, path: &str) -> Request {
        Request::new(&self.addr, method, path).key(&self.key)
    }

    /// A request with no `Authorization` header.
    pub fn anon(&self, method: &str, path: &str) -> Request {
        Request::new(&self.addr, method, path)
    }

    pub fn get(&self, path: &str) -> Response {
        self.req("GET", path).send()
    }

    #[must_use = "assert on the outcome"]
    pub fn loopsy(&self, args: &[&str]) -> Run {
        self.home.loopsy(args)
    }

    /// Sends a signal to the daemon process.
    pub fn signal(&self, signal: i32) {
        let rc = unsafe_kill(self.pid(), signal);
        assert_eq!(rc, 0, "kill {signal} {}", self.pid());
    }

    /// Waits for the process to exit by itself; returns its exit code.
    #[track_caller]
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let child = self.child.as_mut().expect("daemon still owned");
        let status = process::try_wait_within(child, limit)
            .unwrap_or_else(|| panic!("daemon {} did not exit within {limit:?}", self.home.name));
        self.child = None;
        status.code()
    }

    /// `kill -9`, for crash tests.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            reap(&mut child);
        }
    }

    /// Starts the daemon again in the same home (after `kill` or `wait_exit`).
    pub fn restart(mut self) -> Daemon {
        self.stop();
        let home = std::mem::replace(
            &mut self.home,
            Home { dir: TempDir(PathBuf::new()), name: String::new(), env: Vec::new() },
        );
        Daemon::spawn(home)
    }

    /// SIGTERM and wait (15 s), then SIGKILL.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        unsafe_kill(child.id(), 15);
        if process::try_wait_within(&mut child, Duration::from_secs(15)).is_none() {
            reap(&mut child);
        }
    }

    pub fn output_has(&self, text: &str) -> bool {
        self.output.lock().unwrap().iter().any(|line| line.contains(text))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

fn forward(name: &str, stream: impl std::io::Read + Send + 'static, sink: Arc<Mutex<Vec<String>>>) {
    let name = name.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            eprintln!("[{name}] {line}");
            sink.lock().unwrap().push(line);
        }
    });
}

fn unsafe_kill(pid: u32, signal: i32) -> i32 {
    // SAFETY: kill(2) with a PID this harness spawned.
    unsafe { libc::kill(pid as libc::pid_t, signal) }
}

/// A `config.yaml` document as tests read and change it. These helpers are the one place the
/// tests know the file's format (`cargo xtask tidy` holds them to it); the product changes it
/// only through `config`'s operations.
pub type Yaml = serde_yaml::Value;

/// `value` (a list, a map) as a YAML value, to put into a config.
pub fn yaml(value: impl serde::Serialize) -> Yaml {
    serde_yaml::to_value(value).unwrap()
}

/// The `config.yaml` of data directory `home`.
pub fn read_config(home: &Path) -> Yaml {
    let path = home.join("config.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// Changes the `config.yaml` of data directory `home` (a running daemon reads it at its next
/// start, or keys at SIGHUP).
pub fn edit_config_in(home: &Path, change: impl FnOnce(&mut Yaml)) {
    let mut doc = read_config(home);
    change(&mut doc);
    std::fs::write(home.join("config.yaml"), serde_yaml::to_string(&doc).unwrap()).unwrap();
}
