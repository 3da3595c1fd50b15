//! A small `log` backend: timestamped lines on stderr (the daemon log when run in the background).
//!
//! Logging never fails the program: a line that cannot be written (stderr a pipe nobody reads
//! any more, a full disk) is dropped. `eprintln!` would panic there instead, and a daemon whose
//! starter went away could then not even stop on SIGTERM.

use std::io::Write;

use log::{LevelFilter, Log, Metadata, Record};

struct Stderr {
    level: LevelFilter,
}

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata) -> bool {
        // Our own modules at the configured level; dependencies only when they warn.
        let ours = metadata.target().starts_with("loopsy");
        metadata.level() <= self.level && (ours || metadata.level() <= log::Level::Warn)
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            let line =
                format!("{} {:<5} {}\n", crate::clock::iso8601(crate::clock::now_ms()), record.level(), record.args());
            write_line(&mut std::io::stderr().lock(), &line);
        }
    }

    fn flush(&self) {}
}

/// Writes `line` whole, or drops it if `out` cannot take it (closed, broken pipe, full disk).
fn write_line(out: &mut impl Write, line: &str) {
    let _ = out.write_all(line.as_bytes());
}

/// Installs the logger once; later calls are ignored.
pub(crate) fn init(level: LevelFilter) {
    if log::set_boxed_logger(Box::new(Stderr { level })).is_ok() {
        log::set_max_level(level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that fails like a pipe nobody reads.
    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
        }
    }

    #[test]
    fn a_line_that_cannot_be_written_is_dropped_without_a_panic() {
        write_line(&mut Broken, "2026-01-01T00:00:00Z INFO  stopping\n");
        let mut kept = Vec::new();
        write_line(&mut kept, "a line\n");
        assert_eq!(kept, b"a line\n");
    }
}
