//! The per-test upper bound of a plain `cargo test` run.
//!
//! `.ci/run` runs the suite under cargo-nextest, which ends any test past its
//! `terminate-after` bound (`.config/nextest.toml`). libtest has no such bound, so the harness
//! keeps one itself: a test still running `LOOPSY_TEST_TIMEOUT` seconds (default 600, above
//! nextest's bounds) after its sandbox was made stops the whole run, loudly, after killing every
//! process the test binary started. A hang then costs minutes, not a stuck terminal.

use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::time::Duration;

/// Held by a test's sandbox; dropping it (the test ended) stops its watchdog.
pub struct Guard {
    _ended: Sender<()>,
}

impl Guard {
    pub fn start(test: &str) -> Guard {
        let (ended, wait) = channel::<()>();
        let limit = limit();
        let test = test.to_string();
        std::thread::Builder::new()
            .name(format!("watchdog {test}"))
            .spawn(move || {
                if let Err(RecvTimeoutError::Timeout) = wait.recv_timeout(limit) {
                    eprintln!(
                        "\nwatchdog: test {test} is still running after {limit:?} (LOOPSY_TEST_TIMEOUT); \
                         killing the processes it started and stopping the run"
                    );
                    kill_descendants();
                    std::process::abort();
                }
            })
            .expect("starting a watchdog thread");
        Guard { _ended: ended }
    }
}

fn limit() -> Duration {
    let seconds = std::env::var("LOOPSY_TEST_TIMEOUT").ok().and_then(|v| v.parse().ok()).unwrap_or(600);
    Duration::from_secs(seconds)
}

/// SIGKILLs every process descended from this one (daemons, CLIs, their children).
pub fn kill_descendants() {
    let me = std::process::id() as i32;
    let mut parents: Vec<(i32, i32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // The command name may hold spaces and parentheses: fields start after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else { continue };
        if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
            parents.push((pid, ppid));
        }
    }
    let mut family = vec![me];
    let mut i = 0;
    while i < family.len() {
        let parent = family[i];
        family.extend(parents.iter().filter(|(_, ppid)| *ppid == parent).map(|(pid, _)| *pid));
        i += 1;
    }
    for pid in family.into_iter().skip(1) {
        // SAFETY: kill(2) on a process this test binary started (directly or not).
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}
