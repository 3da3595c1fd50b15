//! Remembering the temporary files transfers create outside the data directory, so that nothing
//! is left behind by a crash (`kill -9`, power loss) or an abandoned resumable upload.
//!
//! Each temporary file beside a destination has a small record in `<data>/transfer/journal/`,
//! written before the file is created and removed once the file is renamed into place or
//! deleted. At start the daemon deletes the files of leftover records of plain temporary files;
//! partial uploads are kept for resuming and deleted by [`Journal::sweep`] once unused for
//! [`super::PART_TTL`]. Files are only ever deleted if their name is one of ours.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// What a record protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    /// A plain upload's temporary file: garbage as soon as its request is gone.
    Temp,
    /// A resumable upload's partial file: kept until completed, cancelled or expired.
    Part,
}

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    path: PathBuf,
    kind: Kind,
}

/// The journal directory of one daemon; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Journal {
    dir: PathBuf,
}

/// A record that removes itself (and, unless kept, its file) when dropped.
#[derive(Debug)]
pub(crate) struct Entry {
    record: PathBuf,
    file: PathBuf,
    /// Set once the file was renamed into place or must stay (a part to resume).
    settled: bool,
}

impl Journal {
    pub(crate) fn new(dir: PathBuf) -> Journal {
        Journal { dir }
    }

    /// Records `file` before it is created (a durable write: two fsyncs, on the blocking pool).
    pub(crate) async fn enter(&self, file: &Path, kind: Kind) -> std::io::Result<Entry> {
        let (journal, file) = (self.clone(), file.to_path_buf());
        smol::unblock(move || journal.enter_blocking(&file, kind)).await
    }

    fn enter_blocking(&self, file: &Path, kind: Kind) -> std::io::Result<Entry> {
        std::fs::create_dir_all(&self.dir)?;
        let id = match kind {
            // One record per part file, however often it is resumed.
            Kind::Part => {
                use sha2::Digest;
                crate::random::to_hex(&sha2::Sha256::digest(file.as_os_str().as_encoded_bytes())[..16])
            }
            Kind::Temp => crate::random::hex(16),
        };
        let record = self.dir.join(format!("{id}.json"));
        let text = serde_json::to_vec(&Record { path: file.to_path_buf(), kind }).expect("a record serialises");
        crate::durable::write(&record, &text, crate::durable::Mode::Secret).map_err(std::io::Error::other)?;
        Ok(Entry { record, file: file.to_path_buf(), settled: false })
    }

    /// At start: deletes leftover temporary files, and parts older than `ttl`.
    pub(crate) fn recover(&self, ttl: Duration) -> usize {
        self.scan(|kind, age| kind == Kind::Temp || age > ttl)
    }

    /// Deletes parts unused for longer than `ttl` (their mtime is their last write).
    pub(crate) fn sweep(&self, ttl: Duration) -> usize {
        self.scan(|kind, age| kind == Kind::Part && age > ttl)
    }

    fn scan(&self, expired: impl Fn(Kind, Duration) -> bool) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return 0 };
        let mut removed = 0;
        for entry in entries.flatten() {
            // Only our own records: the data directory may be a directory of the user's.
            if !entry.file_name().to_str().is_some_and(is_record_name) {
                continue;
            }
            let path = entry.path();
            let Some(record) = std::fs::read(&path).ok().and_then(|t| serde_json::from_slice::<Record>(&t).ok()) else {
                let _ = std::fs::remove_file(&path);
                continue;
            };
            let age = std::fs::metadata(&record.path)
                .and_then(|m| m.modified())
                .map(|t| SystemTime::now().duration_since(t).unwrap_or_default());
            let Ok(age) = age else {
                let _ = std::fs::remove_file(&path); // the file is gone already
                continue;
            };
            if expired(record.kind, age) {
                if is_ours(&record.path) {
                    let _ = std::fs::remove_file(&record.path);
                    removed += 1;
                }
                let _ = std::fs::remove_file(&path);
            }
        }
        removed
    }
}

fn is_ours(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(super::is_our_temp_name)
}

/// `<32 lowercase hex>.json`, the names [`Journal::enter`] gives records.
fn is_record_name(name: &str) -> bool {
    name.strip_suffix(".json")
        .is_some_and(|id| id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// Removes the files a crash left in the staging directory: only those named as the daemon
/// names them (`.staged.loopsy-tmp-*`); the directory and anything else in it stay.
pub(crate) fn remove_staged(staging: &Path) {
    let Ok(entries) = std::fs::read_dir(staging) else { return };
    for entry in entries.flatten() {
        if entry.file_name().to_str().is_some_and(|name| name.starts_with(".staged.loopsy-tmp-")) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

impl Entry {
    /// The file was renamed into place (or deleted by its owner): forget the record.
    pub(crate) fn done(mut self) {
        self.settled = true;
        let _ = std::fs::remove_file(&self.record);
    }

    /// The file stays (an interrupted part): keep the record for the sweeper.
    pub(crate) fn keep(mut self) {
        self.settled = true;
    }
}

impl Drop for Entry {
    /// Neither done nor kept: the transfer failed, so its file and record go.
    fn drop(&mut self) {
        if !self.settled {
            if is_ours(&self.file) {
                let _ = std::fs::remove_file(&self.file);
            }
            let _ = std::fs::remove_file(&self.record);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftover_temps_are_deleted_at_start_and_parts_only_when_old() {
        let base = std::env::temp_dir().join(format!("loopsy-journal-{}", crate::random::hex(6)));
        std::fs::create_dir_all(&base).unwrap();
        let journal = Journal::new(base.join("journal"));
        let temp = base.join(".a.loopsy-tmp-1");
        let part = base.join(".b.loopsy-part-u1");
        let stranger = base.join("c");
        for (file, kind) in [(&temp, Kind::Temp), (&part, Kind::Part), (&stranger, Kind::Temp)] {
            std::fs::write(file, b"x").unwrap();
            std::mem::forget(journal.enter_blocking(file, kind).unwrap()); // as if the daemon died
        }
        assert_eq!(journal.recover(PART_TTL_FOR_TEST), 1);
        assert!(!temp.exists() && part.exists() && stranger.exists(), "only our temp file goes");
        assert_eq!(journal.sweep(Duration::ZERO), 1);
        assert!(!part.exists());
        std::fs::remove_dir_all(base).unwrap();
    }

    const PART_TTL_FOR_TEST: Duration = Duration::from_secs(3600);

    #[test]
    fn a_dropped_entry_removes_its_temp_file_and_record() {
        let base = std::env::temp_dir().join(format!("loopsy-journal-{}", crate::random::hex(6)));
        let journal = Journal::new(base.join("journal"));
        let temp = base.join(".a.loopsy-tmp-2");
        let entry = journal.enter_blocking(&temp, Kind::Temp).unwrap();
        std::fs::write(&temp, b"x").unwrap();
        drop(entry);
        assert!(!temp.exists());
        assert_eq!(std::fs::read_dir(base.join("journal")).unwrap().count(), 0);
        std::fs::remove_dir_all(base).unwrap();
    }
}
