//! The audit log: one JSON line per request in `logs/audit.jsonl`, rotated by size.
//!
//! Requests hand their line to a writer thread, so no request waits on the disk. The file is
//! rotated to `audit.jsonl.1` … `.N` when it passes its size bound, so it cannot fill the disk.
//! The query string is not logged: it may carry data the caller did not mean to keep.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde::Serialize;

/// One audit line, members in 1.0.21's order plus `caller`. The request hands over raw values;
/// the writer thread formats them.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Entry {
    pub request_id: String,
    pub method: String,
    pub path: String,
    /// The peer's address as the connection gave it; the line holds its IP.
    #[serde(serialize_with = "ip_of")]
    pub from_ip: String,
    pub status_code: u16,
    /// Milliseconds, fractional.
    pub duration: f64,
    /// Milliseconds since the epoch; the line holds it in ISO 8601.
    #[serde(serialize_with = "iso8601")]
    pub timestamp: u64,
    /// `guard::Caller::label` (`own`, `dashboard`, `paired:<name>`, `peer:<name>`, `own-remote`),
    /// or absent for unauthenticated requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
}

fn iso8601<S: serde::Serializer>(ms: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&crate::clock::iso8601(*ms))
}

/// `127.0.0.1` of `127.0.0.1:5000` (and of `[::1]:5000` `::1`); anything else as it is.
fn ip_of<S: serde::Serializer>(addr: &str, serializer: S) -> Result<S::Ok, S::Error> {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(socket) => serializer.collect_str(&socket.ip()),
        Err(_) => serializer.serialize_str(addr),
    }
}

/// Size bounds of the log.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rotation {
    pub max_bytes: u64,
    pub keep: u32,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation { max_bytes: 10 * 1024 * 1024, keep: 3 }
    }
}

/// Handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub(crate) struct Audit {
    sender: Arc<Mutex<Option<Sender<Entry>>>>,
    writer: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Audit {
    pub(crate) fn start(path: PathBuf, rotation: Rotation) -> Audit {
        let (sender, receiver) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("audit".into())
            .spawn(move || write_loop(&path, rotation, receiver))
            .expect("spawning the audit thread");
        Audit { sender: Arc::new(Mutex::new(Some(sender))), writer: Arc::new(Mutex::new(Some(writer))) }
    }

    pub(crate) fn record(&self, entry: Entry) {
        if let Some(sender) = self.sender.lock().expect("audit lock").as_ref() {
            let _ = sender.send(entry);
        }
    }

    /// Writes what is queued and stops the writer.
    pub(crate) fn close(&self) {
        self.sender.lock().expect("audit lock").take();
        if let Some(writer) = self.writer.lock().expect("audit lock").take() {
            let _ = writer.join();
        }
    }
}

/// After a line arrives the writer waits this long for more before it writes: under load one
/// wake-up and one `write` per interval instead of per request (measured: the audit thread's
/// wake-ups were ~8 % of the daemon's CPU under 32 connections of context PUTs). A line reaches
/// the file at most this much later; it is not fsync'd either way.
const GATHER: std::time::Duration = std::time::Duration::from_millis(10);

fn write_loop(path: &Path, rotation: Rotation, receiver: Receiver<Entry>) {
    let mut log = Log::open(path, rotation);
    while let Ok(entry) = receiver.recv() {
        log.append(&entry);
        // Requests queue lines without waking this thread while it sleeps here.
        std::thread::sleep(GATHER);
        while let Ok(entry) = receiver.try_recv() {
            log.append(&entry);
        }
        log.flush();
    }
    log.flush();
}

struct Log<'a> {
    path: &'a Path,
    rotation: Rotation,
    out: Option<BufWriter<File>>,
    size: u64,
}

impl<'a> Log<'a> {
    fn open(path: &'a Path, rotation: Rotation) -> Log<'a> {
        let mut log = Log { path, rotation, out: None, size: 0 };
        log.reopen();
        log
    }

    fn reopen(&mut self) {
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        match OpenOptions::new().create(true).append(true).open(self.path) {
            Ok(file) => {
                self.size = file.metadata().map(|m| m.len()).unwrap_or(0);
                self.out = Some(BufWriter::with_capacity(64 * 1024, file));
            }
            Err(e) => {
                log::warn!("cannot open the audit log {}: {e}", self.path.display());
                self.out = None;
            }
        }
    }

    fn append(&mut self, entry: &Entry) {
        let mut line = serde_json::to_vec(entry).expect("audit entries serialise");
        line.push(b'\n');
        if self.size + line.len() as u64 > self.rotation.max_bytes && self.size > 0 {
            self.rotate();
        }
        let Some(out) = self.out.as_mut() else { return };
        match out.write_all(&line) {
            Ok(()) => self.size += line.len() as u64,
            Err(e) => log::warn!("cannot write the audit log: {e}"),
        }
    }

    fn rotate(&mut self) {
        self.flush();
        self.out = None;
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        let _ = std::fs::remove_file(numbered(self.rotation.keep));
        for n in (1..self.rotation.keep).rev() {
            let _ = std::fs::rename(numbered(n), numbered(n + 1));
        }
        if self.rotation.keep > 0 {
            let _ = std::fs::rename(self.path, numbered(1));
        } else {
            let _ = std::fs::remove_file(self.path);
        }
        self.reopen();
    }

    fn flush(&mut self) {
        if let Some(out) = self.out.as_mut() {
            let _ = out.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: usize) -> Entry {
        Entry {
            request_id: format!("r{i}"),
            method: "GET".into(),
            path: "/api/v1/status".into(),
            from_ip: "127.0.0.1".into(),
            status_code: 200,
            duration: 0.5,
            timestamp: 1_767_225_600_000,
            caller: Some("own".into()),
        }
    }

    #[test]
    fn a_line_holds_the_peers_ip_and_an_iso_timestamp() {
        let line = |from_ip: &str| {
            let entry = Entry { from_ip: from_ip.into(), ..entry(1) };
            serde_json::to_value(&entry).unwrap()
        };
        assert_eq!(line("127.0.0.1:5000")["fromIp"], "127.0.0.1");
        assert_eq!(line("[::1]:5000")["fromIp"], "::1");
        assert_eq!(line("")["fromIp"], "");
        assert_eq!(line("127.0.0.1:5000")["timestamp"], "2026-01-01T00:00:00.000Z");
    }

    #[test]
    fn the_log_rotates_and_keeps_a_bounded_number_of_files() {
        let dir = std::env::temp_dir().join(format!("loopsy-audit-{}", crate::random::hex(6)));
        let path = dir.join("audit.jsonl");
        let audit = Audit::start(path.clone(), Rotation { max_bytes: 1000, keep: 2 });
        for i in 0..100 {
            audit.record(entry(i));
        }
        audit.close();
        let mut names: Vec<_> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]);
        for name in &names {
            let size = std::fs::metadata(dir.join(name)).unwrap().len();
            assert!(size <= 1000, "{name} has {size} bytes");
        }
        let last = std::fs::read_to_string(&path).unwrap();
        assert!(last.trim_end().ends_with(r#""caller":"own"}"#), "{last}");
        assert!(last.contains(r#""requestId":"r99""#));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
