//! A daemon for benchmarks: a temporary home, the release binary, the bound address.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

pub struct Node {
    pub child: Option<Child>,
    pub addr: String,
    pub key: String,
    /// The data directory.
    pub home: PathBuf,
    /// Removed with its user home when the node is dropped (a home made for this node alone).
    pub owns_home: bool,
}

/// The user home of the benchmark processes of data directory `home` (its sibling): `init`
/// makes it the default `transfer.allowedPaths`.
pub fn user_home(home: &Path) -> PathBuf {
    home.with_extension("user")
}

/// A `Command` for `program` isolated in the user home of data directory `home`.
pub fn command(program: &Path, home: &Path) -> Command {
    let user = user_home(home);
    let _ = std::fs::create_dir_all(&user);
    let mut command = Command::new(program);
    crate::isolation::isolate(&mut command, &user);
    command
}

/// Runs `loopsy --home HOME ARGS` isolated as [`command`]; its stdout, or an error with its
/// stderr when it fails.
pub fn loopsy(bin: &Path, home: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = command(bin, home).arg("--home").arg(home).args(args).output()?;
    anyhow::ensure!(out.status.success(), "loopsy {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Removes a benchmark's data directory and its user home.
pub fn remove_home(home: &Path) {
    let _ = std::fs::remove_dir_all(home);
    let _ = std::fs::remove_dir_all(user_home(home));
}

/// A fresh home with `loopsy init`, listening on 127.0.0.1:0, mDNS and rate limits off; with its key.
pub fn prepare_home(bin: &Path, label: &str) -> anyhow::Result<(PathBuf, String)> {
    prepare_home_with(bin, label, false)
}

/// [`prepare_home`], with TLS on when `tls` (the certificate is `tls/cert.pem` once started).
pub fn prepare_home_with(bin: &Path, label: &str, tls: bool) -> anyhow::Result<(PathBuf, String)> {
    let home = std::env::temp_dir().join(format!("loopsy-bench-{label}-{}", std::process::id()));
    remove_home(&home);
    let status = command(bin, &home).arg("--home").arg(&home).arg("init").stdout(Stdio::null()).status()?;
    anyhow::ensure!(status.success(), "loopsy init failed");
    // The config is changed through loopsy's own operations (`generate local-config`), and
    // its key read with `key show`: only loopsy knows the config's format.
    let home_arg = home.to_str().context("a UTF-8 temporary directory")?;
    let mut generate = command(bin, &home);
    generate.args(["generate", "local-config", home_arg, "--port", "0", "--unlimited"]);
    if tls {
        generate.arg("--tls");
    }
    let status = generate.status()?;
    anyhow::ensure!(status.success(), "loopsy generate local-config failed");
    let output = command(bin, &home).args(["--home", home_arg, "key", "show"]).output()?;
    anyhow::ensure!(output.status.success(), "loopsy key show failed");
    let key = String::from_utf8(output.stdout)?.trim().to_string();
    Ok((home, key))
}

impl Node {
    /// Spawns `loopsy start --foreground` and waits until `/health` answers.
    pub fn start(bin: &Path, home: &Path, key: &str) -> anyhow::Result<(Node, Duration)> {
        Node::start_under(&[], bin, home, key, Duration::from_secs(10))
    }

    /// [`Node::start`] under `wrapper` (a program and its arguments that run the daemon in the
    /// same process, as valgrind does), waiting at most `patience` for `/health`.
    pub fn start_under(
        wrapper: &[String],
        bin: &Path,
        home: &Path,
        key: &str,
        patience: Duration,
    ) -> anyhow::Result<(Node, Duration)> {
        let _ = std::fs::remove_file(home.join("daemon.json"));
        let started = Instant::now();
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = command(Path::new(program), home);
                command.args(args).arg(bin);
                command
            }
            None => command(bin, home),
        };
        let child = command
            .arg("--home")
            .arg(home)
            .args(["start", "--foreground"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning the daemon")?;
        let pid = child.id();
        let mut node = Node {
            child: Some(child),
            addr: String::new(),
            key: key.to_string(),
            home: home.to_path_buf(),
            owns_home: false,
        };
        let deadline = started + patience;
        loop {
            if node.addr.is_empty() {
                if let Ok(text) = std::fs::read_to_string(home.join("daemon.json")) {
                    let info: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                    if info["pid"] == pid {
                        node.addr = format!("127.0.0.1:{}", info["port"]);
                    }
                }
            }
            if !node.addr.is_empty() {
                if let Ok(mut conn) = crate::http::Conn::open(&node.addr) {
                    if conn.call("GET", "/api/v1/health", None, None).map(|r| r.status).unwrap_or(0) == 200 {
                        return Ok((node, started.elapsed()));
                    }
                }
            }
            if Instant::now() > deadline {
                bail!("the daemon did not come up");
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM, then wait for the graceful exit.
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
        if self.owns_home {
            remove_home(&self.home);
        }
    }
}
