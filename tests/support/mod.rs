//! The black-box harness: real `loopsy` binaries in temporary homes, driven over real HTTP.
//!
//! Each daemon gets its own home, `--port 0` on 127.0.0.1 and mDNS off; its bound address is
//! read from the `daemon.json` it writes once listening (never a port picked in advance). Its
//! output is forwarded to the test's stderr with a `[name]` prefix. Dropping a `Daemon` stops it.

#![allow(dead_code)] // Each test module uses its own part of the harness.

pub mod http;
pub mod mcp_stdio;
pub mod proxy;
pub mod relay;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use http::{Request, Response};

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

/// Polls `condition` every 10 ms until it holds or `limit` passes.
#[track_caller]
pub fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The outcome of a CLI run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    #[track_caller]
    pub fn success(self) -> Run {
        assert_eq!(self.code, 0, "command failed\nstdout: {}\nstderr: {}", self.stdout, self.stderr);
        self
    }

    #[track_caller]
    pub fn code(self, code: i32) -> Run {
        assert_eq!(self.code, code, "unexpected exit code\nstdout: {}\nstderr: {}", self.stdout, self.stderr);
        self
    }

    #[track_caller]
    pub fn stdout_has(self, text: &str) -> Run {
        assert!(self.stdout.contains(text), "stdout lacks {text:?}:\n{}\nstderr: {}", self.stdout, self.stderr);
        self
    }

    #[track_caller]
    pub fn stderr_has(self, text: &str) -> Run {
        assert!(self.stderr.contains(text), "stderr lacks {text:?}:\n{}\nstdout: {}", self.stderr, self.stdout);
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}

/// Runs `loopsy --home <home> <args>` to completion.
#[must_use = "assert on the outcome"]
pub fn loopsy_in(home: &Path, args: &[&str]) -> Run {
    let output = Command::new(loopsy_bin())
        .arg("--home")
        .arg(home)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running loopsy");
    Run::from(output)
}

/// A CLI command running in the background, read line by line (interactive flows).
pub struct Background {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Background {
    pub fn spawn(home: &Path, args: &[&str]) -> Background {
        let mut child = Command::new(loopsy_bin())
            .arg("--home")
            .arg(home)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running loopsy");
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

    /// Waits for a line containing `text`; returns it.
    #[track_caller]
    pub fn wait_line(&mut self, text: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        if let Some(line) = self.seen.iter().find(|l| l.contains(text)) {
            return line.clone();
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with {text:?} within {limit:?}; saw {:?}", self.seen),
            }
        }
    }

    /// Sends `signal` to the command.
    pub fn signal(&self, signal: i32) {
        assert_eq!(unsafe_kill(self.child.id(), signal), 0, "kill {signal} {}", self.child.id());
    }

    pub fn answer(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("stdin is piped");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for the exit code.
    #[track_caller]
    pub fn wait(mut self, limit: Duration) -> (i32, Vec<String>) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(50));
                while let Ok(line) = self.lines.try_recv() {
                    self.seen.push(line);
                }
                return (status.code().unwrap_or(-1), std::mem::take(&mut self.seen));
            }
            assert!(Instant::now() < deadline, "command did not finish; saw {:?}", self.seen);
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

    pub fn config_path(&self) -> PathBuf {
        self.path().join("config.yaml")
    }

    pub fn config(&self) -> serde_yaml::Value {
        serde_yaml::from_str(&std::fs::read_to_string(self.config_path()).unwrap()).unwrap()
    }

    pub fn edit_config(&self, change: impl FnOnce(&mut serde_yaml::Value)) {
        let mut doc = self.config();
        change(&mut doc);
        std::fs::write(self.config_path(), serde_yaml::to_string(&doc).unwrap()).unwrap();
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
        let mut child = Command::new(loopsy_bin())
            .arg("--home")
            .arg(home.path())
            .args(["start", "--foreground"])
            .envs(home.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning the daemon");
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
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status.code();
            }
            assert!(Instant::now() < deadline, "daemon did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `kill -9`, for crash tests.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
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

    /// SIGTERM and wait, then SIGKILL.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        unsafe_kill(child.id(), 15);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
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
