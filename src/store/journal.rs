//! Append-only journals of checksummed records, and `context.journal`'s records.
//!
//! Each record is a frame: payload length (u32, little endian), CRC-32 (IEEE) of the payload
//! (u32, little endian), then the payload, a JSON object. [`Journal`] is generic over the record
//! type, so every durable table of the daemon (the context store, the lock table) shares this
//! framing, its damage handling and its compaction by atomic replacement. Every record type is
//! tagged by `op`, first (`#[serde(tag = "op")]`): that is how damage is told from a torn tail.
//! Reading stops at the first frame that is short or fails its checksum. When no intact frame
//! follows it, that is a write torn by a crash (only the last append can be), and the file is cut
//! back to the last good frame before anything is appended. When an intact frame does follow,
//! the journal is damaged in the middle: opening fails with an error that says where and what to
//! do, and the file is left exactly as it is (replaying the part before the damage and
//! compacting would silently drop every acknowledged write after it, and erase the evidence).
//! This file only frames and reads; when to write, sync and compact is `writer.rs`'s business.
//!
//! `context.journal` holds [`Record`]s: `{"op":"base","format":1,"revision":N}` (first record
//! after a compaction: the store's revision when the snapshot was taken),
//! `{"op":"put","entry":{...}}` or `{"op":"delete","key":"...","revision":N}`.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::entry::{Change, Entry};
use crate::durable::{self, Mode};

/// Version of the context record format, written in every base record.
pub(crate) const FORMAT: u32 = 1;
/// A frame claiming to be larger than this is garbage (the largest real one is a 1 MiB value
/// with JSON escaping).
const MAX_FRAME: u32 = 64 * 1024 * 1024;
/// Where every payload starts: the record's tag comes first (`#[serde(tag)]`), and inside a JSON
/// string a quote is always escaped, so these bytes appear nowhere else in a journal.
const PAYLOAD_START: &[u8] = b"{\"op\":\"";

/// A record of `context.journal`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub(crate) enum Record {
    Base { format: u32, revision: u64 },
    Put { entry: Arc<Entry> },
    Delete { key: String, revision: u64 },
}

impl Record {
    /// The journal record of a change; `None` for an expiry (derived from the TTL again when
    /// replaying).
    pub(crate) fn of(change: &Change) -> Option<Record> {
        match change {
            Change::Put(entry) => Some(Record::Put { entry: entry.clone() }),
            Change::Delete { key, revision } => Some(Record::Delete { key: key.clone(), revision: *revision }),
            Change::Expire { .. } => None,
        }
    }
}

impl super::writer::Sequenced for Record {
    fn revision(&self) -> u64 {
        match self {
            Record::Base { revision, .. } | Record::Delete { revision, .. } => *revision,
            Record::Put { entry } => entry.revision,
        }
    }
}

/// What reading an existing journal found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Replay {
    pub records: usize,
    /// Bytes cut off the end: a torn or corrupt tail.
    pub dropped_bytes: u64,
}

/// The open journal, positioned at its end.
#[derive(Debug)]
pub(crate) struct Journal<R> {
    path: PathBuf,
    file: File,
    bytes: u64,
    records: PhantomData<fn(R) -> R>,
}

impl<R: Serialize + DeserializeOwned> Journal<R> {
    /// Reads the journal at `path` (creating it if missing), feeding every intact record to
    /// `apply` in order, and cuts off a torn tail. An error from `apply` stops the reading.
    pub(crate) fn open(
        path: &Path,
        mut apply: impl FnMut(R) -> anyhow::Result<()>,
    ) -> anyhow::Result<(Journal<R>, Replay)> {
        let file = open_append(path)?;
        let mut replay = Replay::default();
        let mut reader = BufReader::with_capacity(256 * 1024, &file);
        let mut good: u64 = 0;
        loop {
            let (record, frame_len) = match read_frame::<R>(&mut reader)? {
                Frame::Intact(record, frame_len) => (record, frame_len),
                Frame::End => break,
                Frame::Damaged => {
                    check_damage_is_a_torn_tail::<R>(&file, path, good)?;
                    break;
                }
                Frame::Unreadable(len) => anyhow::bail!(
                    "{}: the record at byte {good} ({len} bytes) is intact but not one this loopsy reads \
                     (written by a newer version?); the file was left as it is",
                    path.display()
                ),
            };
            good += frame_len;
            replay.records += 1;
            apply(record).with_context(|| format!("replaying {}", path.display()))?;
        }
        let total = file.metadata().with_context(|| format!("reading {}", path.display()))?.len();
        if total > good {
            replay.dropped_bytes = total - good;
            file.set_len(good).with_context(|| format!("truncating the torn tail of {}", path.display()))?;
            file.sync_all().with_context(|| format!("syncing {}", path.display()))?;
        }
        Ok((Journal { path: path.to_path_buf(), file, bytes: good, records: PhantomData }, replay))
    }

    /// Size of the journal in bytes.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Appends `records` and syncs them to disk.
    pub(crate) fn append(&mut self, records: &[R]) -> io::Result<()> {
        let mut buffer = Vec::new();
        for record in records {
            encode(record, &mut buffer);
        }
        if buffer.is_empty() {
            return Ok(());
        }
        self.file.write_all(&buffer)?;
        self.file.sync_data()?;
        self.bytes += buffer.len() as u64;
        Ok(())
    }

    /// Replaces the journal, atomically, by one holding only `records` (a compaction).
    pub(crate) fn reset(&mut self, records: &[R]) -> anyhow::Result<()> {
        let mut buffer = Vec::new();
        for record in records {
            encode(record, &mut buffer);
        }
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

fn encode<R: Serialize>(record: &R, buffer: &mut Vec<u8>) {
    let payload = serde_json::to_vec(record).expect("journal records serialise");
    buffer.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buffer.extend_from_slice(&crc32(&payload).to_le_bytes());
    buffer.extend_from_slice(&payload);
}

/// What the next bytes of a journal hold.
enum Frame<R> {
    /// A record and the length of its frame on disk.
    Intact(R, u64),
    /// The end of the file, between frames.
    End,
    /// A frame that is short, too long, empty or fails its checksum.
    Damaged,
    /// A frame whose checksum holds but whose payload (of this many bytes) is no record we know.
    Unreadable(u32),
}

fn read_frame<R: DeserializeOwned>(reader: &mut impl Read) -> anyhow::Result<Frame<R>> {
    let mut head = [0u8; 8];
    match read_some(reader, &mut head)? {
        0 => return Ok(Frame::End),
        8 => {}
        _ => return Ok(Frame::Damaged),
    }
    let (len, checksum) = split_head(&head);
    // Never written: an empty payload (zeros left by a crash have a valid checksum) or a huge one.
    if len == 0 || len > MAX_FRAME {
        return Ok(Frame::Damaged);
    }
    let mut payload = vec![0u8; len as usize];
    if read_some(reader, &mut payload)? < payload.len() || crc32(&payload) != checksum {
        return Ok(Frame::Damaged);
    }
    match serde_json::from_slice(&payload) {
        Ok(record) => Ok(Frame::Intact(record, 8 + u64::from(len))),
        Err(_) => Ok(Frame::Unreadable(len)),
    }
}

fn split_head(head: &[u8; 8]) -> (u32, u32) {
    let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
    let checksum = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
    (len, checksum)
}

/// The journal has a damaged frame at byte `at`: fine if it is the torn end of the last append,
/// an error if an intact frame follows it anywhere (damage in the middle).
fn check_damage_is_a_torn_tail<R: DeserializeOwned>(file: &File, path: &Path, at: u64) -> anyhow::Result<()> {
    let total = file.metadata().with_context(|| format!("reading {}", path.display()))?.len();
    let Some(next) = intact_frame_after::<R>(file, at, total).with_context(|| format!("reading {}", path.display()))?
    else {
        return Ok(());
    };
    anyhow::bail!(
        "{path} is damaged in the middle: the frame at byte {at} is corrupt, yet an intact one follows at byte \
         {next}, so this is not a write cut short by a crash. The file was left as it is and the daemon does not \
         start, because the changes after the damage would be lost. Keep a copy of it; then either cut it at the \
         damage to keep the changes before it (`truncate -s {at} {path}`), or move it aside to start without \
         the changes it holds",
        path = path.display()
    )
}

/// The offset of the first intact frame that starts after `from`, if any: every place where a
/// payload could start is tried (the frame length at `from` may itself be what is damaged).
fn intact_frame_after<R: DeserializeOwned>(file: &File, from: u64, total: u64) -> io::Result<Option<u64>> {
    const CHUNK: usize = 1 << 20;
    let mut buffer = vec![0u8; CHUNK + PAYLOAD_START.len()];
    // Payloads of frames starting at `from + 1` or later.
    let mut at = from + 9;
    while at < total {
        let want = ((total - at) as usize).min(buffer.len());
        let n = read_at_full(file, &mut buffer[..want], at)?;
        for (i, window) in buffer[..n].windows(PAYLOAD_START.len()).enumerate() {
            if window == PAYLOAD_START && frame_at::<R>(file, at + i as u64 - 8, total)? {
                return Ok(Some(at + i as u64 - 8));
            }
        }
        if n < buffer.len() {
            break;
        }
        // The next chunk overlaps this one by the pattern's length less one.
        at += (n - (PAYLOAD_START.len() - 1)) as u64;
    }
    Ok(None)
}

/// Whether an intact, readable frame starts at `start`.
fn frame_at<R: DeserializeOwned>(file: &File, start: u64, total: u64) -> io::Result<bool> {
    let mut head = [0u8; 8];
    if read_at_full(file, &mut head, start)? < 8 {
        return Ok(false);
    }
    let (len, checksum) = split_head(&head);
    if len == 0 || len > MAX_FRAME || start + 8 + u64::from(len) > total {
        return Ok(false);
    }
    let mut payload = vec![0u8; len as usize];
    if read_at_full(file, &mut payload, start + 8)? < payload.len() {
        return Ok(false);
    }
    Ok(crc32(&payload) == checksum && serde_json::from_slice::<R>(&payload).is_ok())
}

fn read_at_full(file: &File, buffer: &mut [u8], offset: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read_at(&mut buffer[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Fills as much of `buffer` as the input has; returns how much.
fn read_some(reader: &mut impl Read, buffer: &mut [u8]) -> anyhow::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("reading a journal"),
        }
    }
    Ok(filled)
}

/// CRC-32 (IEEE 802.3, as in zlib and PNG).
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
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

    fn put(key: &str, revision: u64) -> Record {
        Record::Put { entry: entry(key, revision).into() }
    }

    fn read_back(path: &Path) -> (Vec<Record>, Replay) {
        let mut records = Vec::new();
        let (_, replay) = Journal::open(path, |record| {
            records.push(record);
            Ok(())
        })
        .unwrap();
        (records, replay)
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn records_survive_a_reopen_and_a_reset_keeps_only_what_it_is_given() {
        let path = temp_path("context.journal");
        let written = vec![put("a", 1), Record::Delete { key: "a".into(), revision: 2 }];
        let (mut journal, _) = Journal::open(&path, |_: Record| Ok(())).unwrap();
        journal.append(&written).unwrap();
        let (records, replay) = read_back(&path);
        assert_eq!(records, written);
        assert_eq!(replay, Replay { records: 2, dropped_bytes: 0 });

        journal.reset(&[Record::Base { format: FORMAT, revision: 2 }]).unwrap();
        journal.append(&[put("b", 3)]).unwrap();
        let (records, replay) = read_back(&path);
        assert_eq!(records, vec![Record::Base { format: FORMAT, revision: 2 }, put("b", 3)]);
        assert_eq!(replay.records, 2);
    }

    #[test]
    fn the_record_of_an_expiry_is_none() {
        assert_eq!(Record::of(&Change::Expire { key: "x".into(), revision: 1 }), None);
        assert_eq!(Record::of(&Change::Put(entry("a", 1).into())), Some(put("a", 1)));
    }

    #[test]
    fn an_error_while_replaying_stops_the_open() {
        let path = temp_path("context.journal");
        let (mut journal, _) = Journal::open(&path, |_: Record| Ok(())).unwrap();
        journal.append(&[put("a", 1)]).unwrap();
        let error = Journal::open(&path, |_: Record| anyhow::bail!("format 9")).unwrap_err();
        assert!(format!("{error:#}").contains("format 9"), "{error:#}");
    }

    #[test]
    fn a_torn_or_corrupt_tail_is_cut_off_and_appending_continues() {
        let path = temp_path("context.journal");
        let (mut journal, _) = Journal::open(&path, |_: Record| Ok(())).unwrap();
        journal.append(&[put("a", 1), put("b", 2)]).unwrap();
        let full = std::fs::read(&path).unwrap();
        for cut in [1, 7, 20] {
            std::fs::write(&path, &full[..full.len() - cut]).unwrap();
            let (records, replay) = read_back(&path);
            assert_eq!(records, vec![put("a", 1)], "cut {cut}");
            assert_eq!(replay.dropped_bytes, (full.len() - cut) as u64 - std::fs::metadata(&path).unwrap().len());
        }
        let mut flipped = full.clone();
        *flipped.last_mut().unwrap() ^= 0x20;
        std::fs::write(&path, &flipped).unwrap();
        let (mut journal, replay) = Journal::open(&path, |_: Record| Ok(())).unwrap();
        assert!(replay.dropped_bytes > 0);
        journal.append(&[put("c", 3)]).unwrap();
        let keys: Vec<_> = replay_keys(&path);
        assert_eq!(keys, ["a", "c"]);
    }

    /// A journal of three puts; returns its bytes and where each frame starts.
    fn three_frames(path: &Path) -> (Vec<u8>, Vec<usize>) {
        let (mut journal, _) = Journal::open(path, |_: Record| Ok(())).unwrap();
        let mut starts = Vec::new();
        for (i, key) in ["a", "b", "c"].iter().enumerate() {
            starts.push(journal.bytes() as usize);
            journal.append(&[put(key, i as u64 + 1)]).unwrap();
        }
        (std::fs::read(path).unwrap(), starts)
    }

    // See: #13 (a corrupt frame in the middle dropped every later write, and compaction then
    // erased the evidence).
    #[test]
    fn damage_in_the_middle_stops_the_replay_with_a_clear_error_and_keeps_the_file() {
        let path = temp_path("context.journal");
        let (full, starts) = three_frames(&path);
        // A flipped payload byte, a flipped checksum, a length that points past the end, zeros.
        for what in ["payload", "checksum", "length", "zeros"] {
            let mut bytes = full.clone();
            match what {
                "payload" => bytes[starts[1] + 12] ^= 0x01,
                "checksum" => bytes[starts[0] + 5] ^= 0x80,
                "length" => bytes[starts[1] + 2] = 0x7f,
                _ => bytes[starts[1]..starts[1] + 8].fill(0),
            }
            std::fs::write(&path, &bytes).unwrap();
            let mut applied = Vec::new();
            let error = Journal::open(&path, |record: Record| {
                applied.push(record);
                Ok(())
            })
            .unwrap_err()
            .to_string();
            assert!(error.contains("damaged in the middle") && error.contains("truncate -s"), "{what}: {error}");
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "{what}: the file is left exactly as it was");
        }
        // The offsets in the message are the damaged frame and the next intact one.
        let mut bytes = full.clone();
        bytes[starts[1] + 12] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let error = Journal::open(&path, |_: Record| Ok(())).unwrap_err().to_string();
        assert!(
            error.contains(&format!("byte {}", starts[1])) && error.contains(&format!("byte {}", starts[2])),
            "{error}"
        );
    }

    #[test]
    fn a_torn_last_frame_or_a_zero_filled_tail_is_still_cut_off() {
        let path = temp_path("context.journal");
        let (full, starts) = three_frames(&path);
        for cut in [1, 8, full.len() - starts[2] - 1] {
            std::fs::write(&path, &full[..full.len() - cut]).unwrap();
            assert_eq!(replay_keys(&path), ["a", "b"], "cut {cut}");
            assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, starts[2]);
        }
        let mut zeros = full.clone();
        zeros.extend_from_slice(&[0u8; 4096]);
        std::fs::write(&path, &zeros).unwrap();
        assert_eq!(replay_keys(&path), ["a", "b", "c"]);
        assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, full.len());
        let mut flipped_last = full.clone();
        flipped_last[starts[2] + 10] ^= 0x04;
        std::fs::write(&path, &flipped_last).unwrap();
        assert_eq!(replay_keys(&path), ["a", "b"]);
    }

    #[test]
    fn an_intact_record_of_an_unknown_kind_is_an_error_not_a_torn_tail() {
        let path = temp_path("context.journal");
        let (mut bytes, _) = three_frames(&path);
        let payload = br#"{"op":"rename","from":"a","to":"b"}"#;
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32(payload).to_le_bytes());
        bytes.extend_from_slice(payload);
        std::fs::write(&path, &bytes).unwrap();
        let error = Journal::open(&path, |_: Record| Ok(())).unwrap_err().to_string();
        assert!(error.contains("not one this loopsy reads"), "{error}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    fn replay_keys(path: &Path) -> Vec<String> {
        read_back(path)
            .0
            .iter()
            .filter_map(|record| match record {
                Record::Put { entry } => Some(entry.key.to_string()),
                _ => None,
            })
            .collect()
    }
}
