//! Running processes with a bound: every wait of the harness ends, by the process ending or by
//! the test failing with what the process printed so far.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a CLI command may run unless a test says otherwise.
pub const PROCESS_LIMIT: Duration = Duration::from_secs(120);

/// How long output is still read after a process exited (a grandchild may hold the pipe).
const DRAIN: Duration = Duration::from_secs(5);

/// The outcome of a finished process.
#[derive(Debug)]
pub struct Run {
    /// The exit code, or -1 when a signal ended it.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from_output(output: Output) -> Run {
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

/// `program arg…` of a command, for messages.
pub fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Output read on a thread of its own, kept as it arrives.
struct Collector {
    data: Arc<Mutex<Vec<u8>>>,
    done: Receiver<()>,
}

impl Collector {
    fn start(mut stream: impl Read + Send + 'static) -> Collector {
        let data = Arc::new(Mutex::new(Vec::new()));
        let (finished, done) = channel();
        let sink = data.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
            let _ = finished.send(());
        });
        Collector { data, done }
    }

    /// What was read, after waiting at most `limit` for the end of the stream.
    fn take(self, limit: Duration) -> String {
        let _ = self.done.recv_timeout(limit);
        let data = self.data.lock().unwrap();
        String::from_utf8_lossy(&data).into_owned()
    }
}

/// Runs `command` to completion, its output captured; past `limit` the process is killed and
/// the test fails with what it printed so far.
#[track_caller]
pub fn run_within(command: &mut Command, limit: Duration) -> Run {
    let what = describe(command);
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting `{what}`: {e}"));
    let stdout = Collector::start(child.stdout.take().expect("piped"));
    let stderr = Collector::start(child.stderr.take().expect("piped"));
    match try_wait_within(&mut child, limit) {
        Some(status) => {
            Run { code: status.code().unwrap_or(-1), stdout: stdout.take(DRAIN), stderr: stderr.take(DRAIN) }
        }
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`{what}` did not finish within {limit:?}\nstdout so far: {}\nstderr so far: {}",
                stdout.take(Duration::ZERO),
                stderr.take(Duration::ZERO)
            );
        }
    }
}

/// Waits for `child` to exit; `None` if it still runs after `limit` (it is left running).
pub fn try_wait_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait().expect("waiting for a child") {
            return Some(status);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Waits for `child` to exit; past `limit` it is killed and the test fails.
#[track_caller]
pub fn wait_child(child: &mut Child, limit: Duration) -> ExitStatus {
    match try_wait_within(child, limit) {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process {} did not exit within {limit:?}", child.id());
        }
    }
}

/// Kills `child` and reaps it, without failing (for `Drop`): SIGKILL cannot be ignored, so the
/// wait ends; a process stuck in the kernel is left after a while rather than hanging the test.
pub fn reap(child: &mut Child) {
    let _ = child.kill();
    let _ = try_wait_within(child, Duration::from_secs(10));
}
