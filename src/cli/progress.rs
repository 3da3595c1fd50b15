//! A transfer's progress on stderr (bytes, rate, ETA), redrawn in place at most ten times a
//! second; shown only when stderr is a terminal and `--quiet` is not given.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::peer::transfer::OnProgress;

/// The progress line of one transfer.
pub(super) struct Progress {
    enabled: bool,
    label: String,
    state: Mutex<Drawn>,
    moved: Arc<AtomicBool>,
}

struct Drawn {
    started: Instant,
    /// Bytes done at the first update (a resumed transfer starts there).
    base: Option<u64>,
    last: Option<Instant>,
}

impl Progress {
    pub(super) fn new(label: impl Into<String>, quiet: bool) -> Arc<Progress> {
        Arc::new(Progress {
            enabled: !quiet && std::io::stderr().is_terminal(),
            label: label.into(),
            state: Mutex::new(Drawn { started: Instant::now(), base: None, last: None }),
            moved: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The callback the peer client calls as bytes move.
    pub(super) fn callback(self: &Arc<Self>) -> OnProgress {
        let me = self.clone();
        Arc::new(move |done, total| {
            me.moved.store(true, Ordering::Relaxed);
            me.update(done, total)
        })
    }

    /// A fresh flag that the next bytes moving will set (to tell a broken transfer from a
    /// peer that never answered).
    pub(super) fn moved(&self) -> Arc<AtomicBool> {
        self.moved.store(false, Ordering::Relaxed);
        self.moved.clone()
    }

    fn update(&self, done: u64, total: u64) {
        if !self.enabled {
            return;
        }
        let mut state = self.state.lock().expect("progress lock");
        let base = *state.base.get_or_insert(done);
        let now = Instant::now();
        if state.last.is_some_and(|last| now - last < Duration::from_millis(100)) && done < total {
            return;
        }
        state.last = Some(now);
        let elapsed = (now - state.started).as_secs_f64().max(0.001);
        let rate = (done - base) as f64 / elapsed;
        let percent = (done * 100).checked_div(total).unwrap_or(100);
        let eta = if rate > 0.0 && total > done { format!("{:.0}s", (total - done) as f64 / rate) } else { "-".into() };
        let line = format!(
            "{} {} / {} {percent:>3}% {}/s ETA {eta}",
            self.label,
            human_bytes(done),
            human_bytes(total),
            human_bytes(rate as u64)
        );
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
    }

    /// Clears the line.
    pub(super) fn finish(&self) {
        if self.enabled && self.state.lock().expect("progress lock").last.is_some() {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[2K");
        }
    }
}

/// `1.5 MiB` style sizes.
pub(super) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
