//! Receiving bytes into a file that nobody sees yet: counted against a limit, hashed, and written
//! in batches by the two long-lived threads of a [`Pipeline`] while the next batches arrive;
//! then checked, made durable and renamed into place ([`commit`]).
//!
//! Memory per upload is `DEPTH + 1` batches ([`BATCH`]), whatever the file size. The caller
//! decides what an unfinished file becomes: a plain temporary file is removed, a resumable part
//! is kept.
//!
//! Writeback starts while the upload still arrives: every [`WRITEBACK`] bytes the writer thread
//! asks the kernel to start writing the range out (`sync_file_range`, Linux). Otherwise nothing
//! reaches the disk before the final fsync (the dirty-page limits are gigabytes on a large
//! machine), and that fsync would write the whole file after the last byte arrived instead of
//! only the tail.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::pipeline::{Pipeline, Stage};
use super::{PartError, TransferError};

/// Bytes collected before they are handed to the pipeline.
pub(crate) const BATCH: usize = 1 << 20;

/// Bytes written between two requests to start writeback.
pub(crate) const WRITEBACK: u64 = 8 << 20;

/// The hashing stage.
struct Hasher(Sha256);

impl Stage for Hasher {
    fn take(&mut self, batch: &[u8]) -> io::Result<()> {
        self.0.update(batch);
        Ok(())
    }
}

/// The writing stage: appends to the file and starts writeback every [`WRITEBACK`] bytes.
struct Writer {
    file: File,
    /// The file offset the next batch is written at (a resumed file is positioned there).
    offset: u64,
    /// File offset from which writeback has not been started yet.
    unstarted: u64,
}

impl Stage for Writer {
    fn take(&mut self, batch: &[u8]) -> io::Result<()> {
        self.file.write_all(batch)?;
        self.offset += batch.len() as u64;
        if self.offset - self.unstarted >= WRITEBACK {
            start_writeback(&self.file, self.unstarted, self.offset);
            self.unstarted = self.offset;
        }
        Ok(())
    }
}

/// A file being received. See the module documentation.
pub(crate) struct Sink {
    path: PathBuf,
    pipeline: Pipeline<Hasher, Writer>,
    buffer: Vec<u8>,
    /// Bytes accepted so far, including those of an earlier attempt (resume).
    size: u64,
    limit: u64,
}

/// A completely received file, flushed to disk but not yet in place.
pub(crate) struct Received {
    pub file: File,
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
}

impl Sink {
    /// A new, empty file at `path` (which must not exist), accepting at most `limit` bytes.
    pub(crate) async fn create(path: PathBuf, limit: u64) -> io::Result<Sink> {
        let file = blocking::unblock({
            let path = path.clone();
            move || OpenOptions::new().write(true).create_new(true).open(path)
        })
        .await?;
        Sink::with(path, file, Sha256::new(), 0, limit)
    }

    /// Continues the partial file at `path` after its first `offset` bytes (created when
    /// `offset` is 0), re-hashing what is there. More bytes than `offset` are cut off; fewer
    /// are a conflict.
    pub(crate) async fn resume(path: PathBuf, offset: u64, limit: u64) -> Result<Sink, TransferError> {
        let (file, hasher) = blocking::unblock({
            let path = path.clone();
            move || reopen(&path, offset)
        })
        .await?;
        Sink::with(path.clone(), file, hasher, offset, limit).map_err(|e| TransferError::io("receiving", &path, e))
    }

    fn with(path: PathBuf, file: File, hasher: Sha256, size: u64, limit: u64) -> io::Result<Sink> {
        let pipeline = Pipeline::start(Hasher(hasher), Writer { file, offset: size, unstarted: size })?;
        Ok(Sink { path, pipeline, buffer: Vec::with_capacity(BATCH), size, limit })
    }

    /// Accepts `chunk`; refuses it whole if it would pass the limit.
    pub(crate) async fn write(&mut self, chunk: &[u8]) -> Result<(), TransferError> {
        if self.size + chunk.len() as u64 > self.limit {
            return Err(TransferError::TooLarge(format!(
                "File exceeds max size: more than {} bytes (transfer.maxFileSize)",
                self.limit
            )));
        }
        self.size += chunk.len() as u64;
        self.buffer.extend_from_slice(chunk);
        if self.buffer.len() >= BATCH {
            let batch = std::mem::take(&mut self.buffer);
            self.buffer =
                self.pipeline.send(batch, BATCH).await.map_err(|e| TransferError::io("writing", &self.path, e))?;
        }
        Ok(())
    }

    /// Sends the rest through the pipeline and waits for it: the file and the hash of all.
    async fn drain(mut self) -> Result<(File, Sha256, PathBuf, u64), TransferError> {
        let path = self.path;
        if !self.buffer.is_empty() {
            let batch = std::mem::take(&mut self.buffer);
            self.pipeline.send(batch, 0).await.map_err(|e| TransferError::io("writing", &path, e))?;
        }
        let (Hasher(hasher), writer) =
            self.pipeline.finish().await.map_err(|e| TransferError::io("writing", &path, e))?;
        Ok((writer.file, hasher, path, self.size))
    }

    /// Writes out everything accepted so far and flushes it: the end of an interrupted resumable
    /// upload, so that the reported offset is what is on disk.
    pub(crate) async fn flush(self) -> Result<u64, TransferError> {
        let (file, _, path, size) = self.drain().await?;
        blocking::unblock(move || file.sync_data()).await.map_err(|e| TransferError::io("syncing", &path, e))?;
        Ok(size)
    }

    /// Writes out the rest, fsyncs the file and returns it with its size and SHA-256.
    pub(crate) async fn finish(self) -> Result<Received, TransferError> {
        let (file, hasher, path, size) = self.drain().await?;
        let file = blocking::unblock(move || file.sync_all().map(|()| file))
            .await
            .map_err(|e| TransferError::io("syncing", &path, e))?;
        Ok(Received { file, path, size, sha256: super::hex_digest(hasher) })
    }
}

/// Asks the kernel to start writing bytes `from..to` of `file` to disk, without waiting for
/// it. Only a hint: durability still comes from the fsync at the end, so a failure is ignored.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, from: u64, to: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range(2) on an open descriptor; it reads no memory of ours.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), from as i64, (to - from) as i64, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _from: u64, _to: u64) {}

/// Opens the part file at `path` (see [`super::open_part_file`]): a new one at offset 0, the
/// daemon's own existing one to resume.
fn open_part(path: &Path, offset: u64) -> Result<File, TransferError> {
    super::open_part_file(path, offset == 0).map_err(|e| match e {
        PartError::Missing => {
            TransferError::ResumeConflict(format!("no partial upload at {}: resume from offset 0", path.display()))
        }
        PartError::NotOurs => TransferError::ResumeConflict(format!(
            "{} is not this upload's partial data (not a regular file of the daemon's): resume from offset 0",
            path.display()
        )),
        PartError::Io(e) => TransferError::io("opening", path, e),
    })
}

fn reopen(path: &Path, offset: u64) -> Result<(File, Sha256), TransferError> {
    let mut file = open_part(path, offset)?;
    let have = file.metadata().map_err(|e| TransferError::io("reading", path, e))?.len();
    if have < offset {
        return Err(TransferError::ResumeConflict(format!(
            "only {have} bytes of this upload arrived, cannot continue at offset {offset}"
        )));
    }
    file.set_len(offset).map_err(|e| TransferError::io("truncating", path, e))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; BATCH];
    let mut left = offset;
    while left > 0 {
        let n = file
            .read(&mut buffer[..left.min(BATCH as u64) as usize])
            .map_err(|e| TransferError::io("reading", path, e))?;
        if n == 0 {
            return Err(TransferError::Failed(format!("{} shrank while being read", path.display())));
        }
        hasher.update(&buffer[..n]);
        left -= n as u64;
    }
    file.seek(SeekFrom::Start(offset)).map_err(|e| TransferError::io("seeking", path, e))?;
    Ok((file, hasher))
}

/// What must hold before a received file may appear at its destination.
#[derive(Debug, Default, Clone)]
pub(crate) struct Checks {
    /// Declared SHA-256 values (form field, header); each must match.
    pub sha256: Vec<String>,
    /// Permission bits to give the file (`mode` field).
    pub mode: Option<u32>,
}

/// Verifies `received`, applies the mode, and renames it to `dest`, then fsyncs the directory.
/// On any failure the received file is removed and nothing appears at `dest`.
pub(crate) async fn commit(received: Received, dest: PathBuf, checks: Checks) -> Result<(), TransferError> {
    blocking::unblock(move || {
        let temp = received.path.clone();
        let result = commit_blocking(received, &dest, &checks);
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        result
    })
    .await
}

fn commit_blocking(received: Received, dest: &Path, checks: &Checks) -> Result<(), TransferError> {
    if let Some(expected) = checks.sha256.iter().find(|expected| **expected != received.sha256) {
        return Err(TransferError::ChecksumMismatch { expected: expected.clone(), actual: received.sha256 });
    }
    let on_disk = received.file.metadata().map_err(|e| TransferError::io("reading", &received.path, e))?.len();
    if on_disk != received.size {
        return Err(TransferError::Failed(format!(
            "{} has {on_disk} bytes on disk but {} were received",
            received.path.display(),
            received.size
        )));
    }
    #[cfg(unix)]
    if let Some(mode) = checks.mode {
        use std::os::unix::fs::PermissionsExt;
        received
            .file
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| TransferError::io("setting the mode of", &received.path, e))?;
    }
    if dest.is_dir() {
        return Err(TransferError::BadDestination(format!("{} is a directory", dest.display())));
    }
    std::fs::rename(&received.path, dest).map_err(|e| TransferError::io("renaming into", dest, e))?;
    if let Some(parent) = dest.parent() {
        crate::durable::sync_dir(parent);
    }
    Ok(())
}

/// Moves a staged file (received before its destination was known) to `temp`, beside the
/// destination: a rename when both are on one file system, else a copy (fsync'd).
pub(crate) async fn relocate(received: Received, temp: PathBuf) -> Result<Received, TransferError> {
    blocking::unblock(move || {
        let Received { file, path, size, sha256 } = received;
        match std::fs::rename(&path, &temp) {
            Ok(()) => return Ok(Received { file, path: temp, size, sha256 }),
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {}
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(TransferError::io("moving the received file to", &temp, e));
            }
        }
        let copied = copy_to(&path, &temp);
        let _ = std::fs::remove_file(&path);
        let target = copied.map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            TransferError::io("copying the received file to", &temp, e)
        })?;
        Ok(Received { file: target, path: temp, size, sha256 })
    })
    .await
}

fn copy_to(from: &Path, to: &Path) -> io::Result<File> {
    let mut source = File::open(from)?;
    let mut target = OpenOptions::new().read(true).write(true).create_new(true).open(to)?;
    io::copy(&mut source, &mut target)?;
    target.sync_all()?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("loopsy-receive-{}", crate::random::hex(6)));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    // See: #13 (the part file was opened following symlinks).
    #[test]
    fn a_part_file_that_is_not_the_daemons_own_is_never_written_through() {
        smol::block_on(async {
            let dir = temp_dir();
            let victim = dir.join("victim");
            std::fs::write(&victim, b"precious").unwrap();
            let part = dir.join(".f.loopsy-part-abcdefgh");
            // A symlink: refused when resuming, replaced (not followed) when starting over.
            std::os::unix::fs::symlink(&victim, &part).unwrap();
            assert!(matches!(Sink::resume(part.clone(), 3, 1 << 20).await, Err(TransferError::ResumeConflict(_))));
            let mut sink = Sink::resume(part.clone(), 0, 1 << 20).await.unwrap();
            sink.write(b"new").await.unwrap();
            sink.flush().await.unwrap();
            assert!(std::fs::symlink_metadata(&part).unwrap().file_type().is_file(), "the link was replaced");
            assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
            // A hard link to another file: never truncated or continued.
            std::fs::remove_file(&part).unwrap();
            std::fs::hard_link(&victim, &part).unwrap();
            assert!(matches!(Sink::resume(part.clone(), 2, 1 << 20).await, Err(TransferError::ResumeConflict(_))));
            Sink::resume(part.clone(), 0, 1 << 20).await.unwrap();
            assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
            // A FIFO: the daemon neither blocks on it nor reads it.
            std::fs::remove_file(&part).unwrap();
            let fifo = std::ffi::CString::new(part.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: mkfifo(3) with a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
            assert!(matches!(Sink::resume(part.clone(), 1, 1 << 20).await, Err(TransferError::ResumeConflict(_))));
            // Our own part is continued as before.
            std::fs::remove_file(&part).unwrap();
            std::fs::write(&part, b"abc").unwrap();
            let mut sink = Sink::resume(part.clone(), 3, 1 << 20).await.unwrap();
            sink.write(b"def").await.unwrap();
            assert_eq!(sink.finish().await.unwrap().size, 6);
            assert_eq!(std::fs::read(&part).unwrap(), b"abcdef");
            std::fs::remove_dir_all(dir).unwrap();
        });
    }

    #[test]
    fn a_received_file_appears_only_after_commit_and_a_bad_checksum_leaves_nothing() {
        smol::block_on(async {
            let dir = temp_dir();
            let mut sink = Sink::create(dir.join(".a.tmp"), 1 << 30).await.unwrap();
            let data = vec![7u8; BATCH * 2 + 5];
            for piece in data.chunks(100_000) {
                sink.write(piece).await.unwrap();
            }
            let received = sink.finish().await.unwrap();
            assert_eq!(received.size, data.len() as u64);
            assert!(!dir.join("a").exists());
            let good = received.sha256.clone();
            commit(received, dir.join("a"), Checks { sha256: vec![good], mode: Some(0o640) }).await.unwrap();
            assert_eq!(std::fs::read(dir.join("a")).unwrap(), data);

            let mut sink = Sink::create(dir.join(".b.tmp"), 1 << 30).await.unwrap();
            sink.write(b"hello").await.unwrap();
            let received = sink.finish().await.unwrap();
            let err = commit(received, dir.join("b"), Checks { sha256: vec!["0".repeat(64)], mode: None }).await;
            assert!(matches!(err, Err(TransferError::ChecksumMismatch { .. })));
            assert!(!dir.join("b").exists() && !dir.join(".b.tmp").exists());
            std::fs::remove_dir_all(dir).unwrap();
        });
    }

    #[test]
    fn a_file_longer_than_the_writeback_step_is_written_whole_also_when_resumed() {
        smol::block_on(async {
            let dir = temp_dir();
            let part = dir.join(".e.part");
            let len = WRITEBACK as usize * 2 + BATCH / 3;
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            // The first attempt stops inside the second writeback range; the second continues.
            let cut = WRITEBACK as usize + BATCH + 7;
            let mut sink = Sink::resume(part.clone(), 0, 1 << 30).await.unwrap();
            for piece in data[..cut].chunks(300_001) {
                sink.write(piece).await.unwrap();
            }
            assert_eq!(sink.flush().await.unwrap(), cut as u64);
            let mut sink = Sink::resume(part.clone(), cut as u64, 1 << 30).await.unwrap();
            for piece in data[cut..].chunks(300_001) {
                sink.write(piece).await.unwrap();
            }
            let received = sink.finish().await.unwrap();
            assert_eq!(received.size, len as u64);
            let mut whole = Sha256::new();
            whole.update(&data);
            assert_eq!(received.sha256, crate::transfer::hex_digest(whole));
            assert!(std::fs::read(&part).unwrap() == data, "the bytes on disk are the bytes sent");
            std::fs::remove_dir_all(dir).unwrap();
        });
    }

    #[test]
    fn the_limit_refuses_the_chunk_that_passes_it() {
        smol::block_on(async {
            let dir = temp_dir();
            let mut sink = Sink::create(dir.join(".c.tmp"), 10).await.unwrap();
            sink.write(b"0123456789").await.unwrap();
            assert!(matches!(sink.write(b"x").await, Err(TransferError::TooLarge(_))));
            std::fs::remove_dir_all(dir).unwrap();
        });
    }

    #[test]
    fn a_resumed_file_hashes_like_one_received_at_once() {
        smol::block_on(async {
            let dir = temp_dir();
            let part = dir.join(".d.part");
            let mut sink = Sink::resume(part.clone(), 0, 1 << 20).await.unwrap();
            sink.write(b"hello wo").await.unwrap();
            assert_eq!(sink.flush().await.unwrap(), 8);
            assert!(matches!(Sink::resume(part.clone(), 9, 1 << 20).await, Err(TransferError::ResumeConflict(_))));
            let mut sink = Sink::resume(part.clone(), 6, 1 << 20).await.unwrap();
            sink.write(b"world").await.unwrap();
            let received = sink.finish().await.unwrap();
            let mut whole = Sha256::new();
            whole.update(b"hello world");
            assert_eq!(received.sha256, crate::transfer::hex_digest(whole));
            std::fs::remove_dir_all(dir).unwrap();
        });
    }
}
