//! `context.journal`: the append-only log of puts and deletes since the last snapshot.
//!
//! Each record is a frame: payload length (u32, little endian), CRC-32 (IEEE) of the payload
//! (u32, little endian), then the payload, a JSON object:
//! `{"op":"base","format":1,"revision":N}` (first record after a compaction: the store's
//! revision when the snapshot was taken), `{"op":"put","entry":{...}}` or
//! `{"op":"delete","key":"...","revision":N}`.
//! Reading stops at the first frame that is short or fails its checksum (a write torn by a
//! crash); the file is cut back to the last good frame before anything is appended.
//! This file only frames and reads; when to write, sync and compact is `writer.rs`'s business.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::entry::{Change, Entry};
use crate::durable::{self, Mode};

/// Version of the record format, written in every base record.
const FORMAT: u32 = 1;
/// A frame claiming to be larger than this is garbage (the largest real one is a 1 MiB value
/// with JSON escaping).
const MAX_FRAME: u32 = 64 * 1024 * 1024;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Record {
    Base { format: u32, revision: u64 },
    Put { entry: Entry },
    Delete { key: String, revision: u64 },
}

/// What reading an existing journal found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replay {
    /// The store revision recorded by the last compaction (0 if none).
    pub base: u64,
    pub records: usize,
    /// Bytes cut off the end: a torn or corrupt tail.
    pub dropped_bytes: u64,
}

/// The open journal, positioned at its end.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    bytes: u64,
}

impl Journal {
    /// Reads the journal at `path` (creating it if missing), feeding every intact change to
    /// `apply` in order, and cuts off a torn tail.
    pub fn open(path: &Path, mut apply: impl FnMut(Change)) -> anyhow::Result<(Journal, Replay)> {
        let file = open_append(path)?;
        let mut replay = Replay::default();
        let mut reader = BufReader::with_capacity(256 * 1024, &file);
        let mut good: u64 = 0;
        while let Some((record, frame_len)) = read_frame(&mut reader)? {
            good += frame_len;
            replay.records += 1;
            match record {
                Record::Base { format, revision } => {
                    anyhow::ensure!(
                        format == FORMAT,
                        "{} has record format {format}; this loopsy reads format {FORMAT}",
                        path.display()
                    );
                    replay.base = replay.base.max(revision);
                }
                Record::Put { entry } => apply(Change::Put(entry)),
                Record::Delete { key, revision } => apply(Change::Delete { key, revision }),
            }
        }
        let total = file.metadata().with_context(|| format!("reading {}", path.display()))?.len();
        if total > good {
            replay.dropped_bytes = total - good;
            file.set_len(good).with_context(|| format!("truncating the torn tail of {}", path.display()))?;
            file.sync_all().with_context(|| format!("syncing {}", path.display()))?;
        }
        Ok((Journal { path: path.to_path_buf(), file, bytes: good }, replay))
    }

    /// Size of the journal in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Appends the puts and deletes among `changes` and syncs them to disk.
    pub fn append(&mut self, changes: &[Change]) -> io::Result<()> {
        let mut buffer = Vec::new();
        for change in changes {
            let record = match change {
                Change::Put(entry) => Record::Put { entry: entry.clone() },
                Change::Delete { key, revision } => Record::Delete { key: key.clone(), revision: *revision },
                Change::Expire { .. } => continue, // Derived from the TTL again when replaying.
            };
            encode(&record, &mut buffer);
        }
        if buffer.is_empty() {
            return Ok(());
        }
        self.file.write_all(&buffer)?;
        self.file.sync_data()?;
        self.bytes += buffer.len() as u64;
        Ok(())
    }

    /// Replaces the journal by one holding only a base record (after a snapshot at `revision`).
    pub fn reset(&mut self, revision: u64) -> anyhow::Result<()> {
        let mut buffer = Vec::new();
        encode(&Record::Base { format: FORMAT, revision }, &mut buffer);
        durable::write(&self.path, &buffer, Mode::Secret)?;
        self.file = open_append(&self.path)?;
        self.bytes = buffer.len() as u64;
        Ok(())
    }
}

fn open_append(path: &Path) -> anyhow::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).with_context(|| format!("opening {}", path.display()))
}

fn encode(record: &Record, buffer: &mut Vec<u8>) {
    let payload = serde_json::to_vec(record).expect("journal records serialise");
    buffer.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buffer.extend_from_slice(&crc32(&payload).to_le_bytes());
    buffer.extend_from_slice(&payload);
}

/// The next intact frame and its length on disk; `None` at the end or at a damaged frame.
fn read_frame(reader: &mut impl Read) -> anyhow::Result<Option<(Record, u64)>> {
    let mut head = [0u8; 8];
    if !read_full(reader, &mut head)? {
        return Ok(None);
    }
    let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
    let checksum = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
    if len > MAX_FRAME {
        return Ok(None);
    }
    let mut payload = vec![0u8; len as usize];
    if !read_full(reader, &mut payload)? || crc32(&payload) != checksum {
        return Ok(None);
    }
    match serde_json::from_slice(&payload) {
        Ok(record) => Ok(Some((record, 8 + u64::from(len)))),
        Err(_) => Ok(None),
    }
}

/// Fills `buffer`; `false` if the input ends first.
fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> anyhow::Result<bool> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("reading the context journal"),
        }
    }
    Ok(true)
}

/// CRC-32 (IEEE 802.3, as in zlib and PNG).
pub fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut crc = i as u32;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
                bit += 1;
            }
            table[i] = crc;
            i += 1;
        }
        table
    };
    !bytes.iter().fold(!0u32, |crc, byte| TABLE[((crc ^ u32::from(*byte)) & 0xFF) as usize] ^ (crc >> 8))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("loopsy-journal-{}", crate::random::hex(6)));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    fn entry(key: &str, revision: u64) -> Entry {
        Entry {
            key: key.into(),
            value: format!("value of {key}").into(),
            from_node_id: "local".into(),
            created_at: 1,
            updated_at: 1,
            ttl: None,
            expires_at: None,
            revision,
        }
    }

    fn read_back(path: &Path) -> (Vec<Change>, Replay) {
        let mut changes = Vec::new();
        let (_, replay) = Journal::open(path, |change| changes.push(change)).unwrap();
        (changes, replay)
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn records_survive_a_reopen_and_a_reset_keeps_only_the_base() {
        let path = temp_path("context.journal");
        let written = vec![Change::Put(entry("a", 1)), Change::Delete { key: "a".into(), revision: 2 }];
        let (mut journal, _) = Journal::open(&path, |_| {}).unwrap();
        journal.append(&written).unwrap();
        journal.append(&[Change::Expire { key: "x".into(), revision: 1 }]).unwrap();
        let (changes, replay) = read_back(&path);
        assert_eq!(changes, written, "expiry is not journalled");
        assert_eq!(replay, Replay { base: 0, records: 2, dropped_bytes: 0 });

        journal.reset(2).unwrap();
        journal.append(&[Change::Put(entry("b", 3))]).unwrap();
        let (changes, replay) = read_back(&path);
        assert_eq!(changes, vec![Change::Put(entry("b", 3))]);
        assert_eq!((replay.base, replay.records), (2, 2));
    }

    #[test]
    fn a_torn_or_corrupt_tail_is_cut_off_and_appending_continues() {
        let path = temp_path("context.journal");
        let (mut journal, _) = Journal::open(&path, |_| {}).unwrap();
        journal.append(&[Change::Put(entry("a", 1)), Change::Put(entry("b", 2))]).unwrap();
        let full = std::fs::read(&path).unwrap();
        for cut in [1, 7, 20] {
            std::fs::write(&path, &full[..full.len() - cut]).unwrap();
            let (changes, replay) = read_back(&path);
            assert_eq!(changes, vec![Change::Put(entry("a", 1))], "cut {cut}");
            assert_eq!(replay.dropped_bytes, (full.len() - cut) as u64 - std::fs::metadata(&path).unwrap().len());
        }
        let mut flipped = full.clone();
        *flipped.last_mut().unwrap() ^= 0x20;
        std::fs::write(&path, &flipped).unwrap();
        let (mut journal, replay) = Journal::open(&path, |_| {}).unwrap();
        assert!(replay.dropped_bytes > 0);
        journal.append(&[Change::Put(entry("c", 3))]).unwrap();
        let keys: Vec<_> = replay_keys(&path);
        assert_eq!(keys, ["a", "c"]);
    }

    fn replay_keys(path: &Path) -> Vec<String> {
        read_back(path).0.iter().map(|change| change.key().to_string()).collect()
    }
}
