//! A small `log` backend: timestamped lines on stderr (the daemon log when run in the background).

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
            eprintln!("{} {:<5} {}", crate::clock::iso8601(crate::clock::now_ms()), record.level(), record.args());
        }
    }

    fn flush(&self) {}
}

/// Installs the logger once; later calls are ignored.
pub fn init(level: LevelFilter) {
    if log::set_boxed_logger(Box::new(Stderr { level })).is_ok() {
        log::set_max_level(level);
    }
}
