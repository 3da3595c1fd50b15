//! A push (`POST /transfer/push`): a multipart body with a `destPath` field and a file part, in
//! either order, plus optional fields `sha256`, `mode`, `uploadId` and `offset`.
//!
//! The file streams into a temporary file beside the destination when `destPath` came first,
//! or into the daemon's private staging directory when the file came first (1.0.21's clients send
//! `destPath` first; a curl script may not). It appears at the destination only after it is
//! complete, within `maxFileSize`, matches every declared SHA-256, and is fsync'd.
//!
//! Resumable uploads: with `uploadId` (and `offset`) before the file part, the data goes to
//! `.<name>.loopsy-part-<uploadId>` beside the destination and survives an interrupted request;
//! [`status`] says how many bytes arrived, and the next push continues at that offset. The
//! whole file is verified (SHA-256 over all of it) before it is renamed into place.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use multer::{Field, Multipart};

use super::chunks::YieldingChunks;
use super::journal::{Entry, Journal, Kind};
use super::policy::PathPolicy;
use super::receive::{self, Checks, Received, Sink};
use super::{part_path, sibling, TransferError};

/// An upload with no data arriving for this long is abandoned (a resumable one is kept).
pub(crate) const STALL: std::time::Duration = std::time::Duration::from_secs(60);

/// Text fields are small; anything longer is refused.
const MAX_TEXT_FIELD: usize = 64 * 1024;

/// What a push needs from the daemon.
#[derive(Clone)]
pub(crate) struct TransferContext {
    pub policy: PathPolicy,
    pub max_file_size: u64,
    /// Private directory (inside the data directory) for files that arrive before `destPath`.
    pub staging: PathBuf,
    pub journal: Journal,
    /// Part files being written now: one writer per part.
    pub active: Arc<Mutex<HashSet<PathBuf>>>,
}

impl TransferContext {
    /// The context of a daemon whose transfer bookkeeping lives in `dir` (`<data>/transfer`),
    /// after cleaning up what an earlier run left behind: files a crash left in the staging
    /// directory, temporary files beside destinations, parts unused for [`super::PART_TTL`].
    pub(crate) fn open(dir: &Path, policy: PathPolicy, max_file_size: u64) -> TransferContext {
        let staging = dir.join("staging");
        super::journal::remove_staged(&staging);
        let journal = Journal::new(dir.join("journal"));
        let removed = journal.recover(super::PART_TTL);
        if removed > 0 {
            log::info!("removed {removed} temporary file(s) left by interrupted transfers");
        }
        TransferContext { policy, max_file_size, staging, journal, active: Default::default() }
    }
}

/// A completed push (the 1.0.21 response members).
#[derive(Debug)]
pub(crate) struct Pushed {
    /// `destPath` as sent.
    pub path: String,
    pub size: u64,
    pub checksum: String,
    pub duration_ms: u64,
}

/// How far a resumable upload got.
#[derive(Debug)]
pub(crate) struct UploadStatus {
    pub offset: u64,
    /// A request is writing this upload right now.
    pub active: bool,
    pub max_file_size: u64,
}

#[derive(Default)]
struct Fields {
    dest_path: Option<String>,
    sha256: Vec<String>,
    mode: Option<u32>,
    upload_id: Option<String>,
    offset: Option<u64>,
}

/// Where the file part went.
enum Landing {
    /// Beside its destination (canonical path), under its journal entry.
    Beside { received: Received, dest: PathBuf, entry: Entry, _claim: Option<Claim> },
    /// In the staging directory, destination not known yet.
    Staged { received: Received, entry: Entry },
}

/// The multipart boundary a push's `Content-Type` names; `None` when it is not
/// `multipart/form-data` with a boundary.
pub(crate) fn boundary(content_type: &str) -> Option<String> {
    multer::parse_boundary(content_type).ok()
}

/// Receives a whole push: `body` is the request body, multipart with `boundary`, of at most
/// `limit` bytes; `declared` is the `X-Loopsy-Sha256` header, if any.
pub(crate) async fn receive(
    ctx: &TransferContext,
    body: impl futures_lite::AsyncRead + Unpin + Send + 'static,
    boundary: String,
    limit: u64,
    declared: Option<String>,
) -> Result<Pushed, TransferError> {
    let constraints = multer::Constraints::new().size_limit(multer::SizeLimit::new().whole_stream(limit));
    let mut multipart = Multipart::with_constraints(YieldingChunks::new(body), boundary, constraints);
    let started = Instant::now();
    let mut fields = Fields::default();
    if let Some(text) = declared {
        fields.sha256.push(super::parse_sha256(&text)?);
    }
    let mut landing = None;
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        if field.file_name().is_none() {
            let name = field.name().unwrap_or_default().to_string();
            let value = read_text(field).await?;
            fields.set(&name, value, landing.is_some())?;
        } else if landing.is_none() {
            landing = Some(receive_file(ctx, &fields, &mut field).await?);
        } else {
            // 1.0.21 uses the first file part only; later ones are read and dropped.
            while field.chunk().await.map_err(multipart_error)?.is_some() {}
        }
    }
    let landing = landing.ok_or(TransferError::NoFile)?;
    let dest_path = fields.dest_path.clone().ok_or_else(|| TransferError::Invalid("Missing destPath field".into()))?;
    let checks = Checks { sha256: fields.sha256, mode: fields.mode };
    let (size, checksum) = match landing {
        Landing::Beside { received, dest, entry, _claim } => {
            let done = (received.size, received.sha256.clone());
            receive::commit(received, dest, checks).await?;
            entry.done();
            done
        }
        Landing::Staged { received, entry } => {
            let dest = prepare_destination(ctx, &dest_path).await?;
            let temp = sibling(&dest, &format!("loopsy-tmp-{}", crate::random::hex(8)));
            let beside =
                ctx.journal.enter(&temp, Kind::Temp).await.map_err(|e| TransferError::io("recording", &temp, e))?;
            let received = receive::relocate(received, temp).await?;
            entry.done();
            let done = (received.size, received.sha256.clone());
            receive::commit(received, dest, checks).await?;
            beside.done();
            done
        }
    };
    Ok(Pushed { path: dest_path, size, checksum, duration_ms: started.elapsed().as_millis() as u64 })
}

impl Fields {
    fn set(&mut self, name: &str, value: String, after_file: bool) -> Result<(), TransferError> {
        // The file's bytes went where a plain push puts them: too late to resume (409, 4007).
        let resumable_too_late = || {
            TransferError::ResumeConflict(format!(
                "the '{name}' field came after the file part; uploadId and offset must come before it"
            ))
        };
        match name {
            "destPath" if self.dest_path.is_none() && !value.is_empty() => self.dest_path = Some(value),
            "sha256" => self.sha256.push(super::parse_sha256(&value)?),
            "mode" => self.mode = Some(parse_mode(&value)?),
            "uploadId" if after_file => return Err(resumable_too_late()),
            "uploadId" => self.upload_id = Some(parse_upload_id(&value)?),
            "offset" if after_file => return Err(resumable_too_late()),
            "offset" => {
                let offset = value
                    .trim()
                    .parse()
                    .map_err(|_| TransferError::Invalid(format!("offset '{value}' is not a non-negative integer")))?;
                self.offset = Some(offset);
            }
            _ => {} // unknown fields are ignored, as in 1.0.21
        }
        Ok(())
    }
}

/// Permission bits from an octal string (`644`, `0755`); set-id and sticky bits are dropped.
pub(crate) fn parse_mode(text: &str) -> Result<u32, TransferError> {
    u32::from_str_radix(text.trim(), 8)
        .ok()
        .filter(|mode| *mode <= 0o7777)
        .map(|mode| mode & 0o777)
        .ok_or_else(|| TransferError::Invalid(format!("mode '{text}' is not an octal permission like 644")))
}

/// Upload ids are chosen by clients: 8 to 64 of `[A-Za-z0-9_-]`, so they are safe in file names.
pub(crate) fn parse_upload_id(text: &str) -> Result<String, TransferError> {
    let ok =
        (8..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(text.to_string())
    } else {
        Err(TransferError::Invalid(format!("uploadId '{text}' must be 8 to 64 characters of A-Z a-z 0-9 - _")))
    }
}

async fn read_text(mut field: Field<'_>) -> Result<String, TransferError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if bytes.len() + chunk.len() > MAX_TEXT_FIELD {
            return Err(TransferError::Invalid(format!("a text field is longer than {MAX_TEXT_FIELD} bytes")));
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes).map_err(|_| TransferError::Invalid("a text field is not UTF-8".into()))
}

async fn receive_file(ctx: &TransferContext, fields: &Fields, field: &mut Field<'_>) -> Result<Landing, TransferError> {
    let Some(dest_path) = &fields.dest_path else {
        if fields.upload_id.is_some() {
            return Err(TransferError::Invalid("a resumable upload needs destPath before the file part".into()));
        }
        crate::durable::create_private_dir(&ctx.staging).map_err(|e| TransferError::Failed(format!("{e:#}")))?;
        let temp = ctx.staging.join(format!(".staged.loopsy-tmp-{}", crate::random::hex(8)));
        let entry = ctx.journal.enter(&temp, Kind::Temp).await.map_err(|e| TransferError::io("recording", &temp, e))?;
        let sink =
            Sink::create(temp.clone(), ctx.max_file_size).await.map_err(|e| TransferError::io("creating", &temp, e))?;
        let received = stream_into(sink, field).await?;
        return Ok(Landing::Staged { received, entry });
    };
    let dest = prepare_destination(ctx, dest_path).await?;
    let Some(upload_id) = &fields.upload_id else {
        let temp = sibling(&dest, &format!("loopsy-tmp-{}", crate::random::hex(8)));
        let entry = ctx.journal.enter(&temp, Kind::Temp).await.map_err(|e| TransferError::io("recording", &temp, e))?;
        let sink =
            Sink::create(temp.clone(), ctx.max_file_size).await.map_err(|e| TransferError::io("creating", &temp, e))?;
        let received = stream_into(sink, field).await?;
        return Ok(Landing::Beside { received, dest, entry, _claim: None });
    };
    let part = part_path(&dest, upload_id);
    let claim = Claim::take(&ctx.active, &part)?;
    let entry = ctx.journal.enter(&part, Kind::Part).await.map_err(|e| TransferError::io("recording", &part, e))?;
    let mut sink = match Sink::resume(part.clone(), fields.offset.unwrap_or(0), ctx.max_file_size).await {
        Ok(sink) => sink,
        Err(e) => {
            entry.keep(); // the part is as it was: refusing this request must not lose it
            return Err(e);
        }
    };
    match copy_chunks(&mut sink, field).await {
        Ok(()) => {
            let received = sink.finish().await?;
            Ok(Landing::Beside { received, dest, entry, _claim: Some(claim) })
        }
        Err(e @ TransferError::TooLarge(_)) => Err(e), // the entry's drop deletes the part
        Err(e) => {
            // Interrupted: keep what arrived, on disk, for the next attempt.
            let arrived = sink.flush().await?;
            entry.keep();
            Err(TransferError::Failed(format!(
                "{e}; {arrived} bytes of upload {upload_id} are kept: resume at that offset"
            )))
        }
    }
}

async fn stream_into(mut sink: Sink, field: &mut Field<'_>) -> Result<Received, TransferError> {
    copy_chunks(&mut sink, field).await?;
    sink.finish().await
}

async fn copy_chunks(sink: &mut Sink, field: &mut Field<'_>) -> Result<(), TransferError> {
    loop {
        let next = crate::clock::timeout(STALL, field.chunk()).await;
        let Some(next) = next else {
            // A peer that vanished without closing would otherwise hold the upload forever.
            return Err(TransferError::Failed(format!("no data for {} s: the upload stalled", STALL.as_secs())));
        };
        match next.map_err(multipart_error)? {
            Some(chunk) => sink.write(&chunk).await?,
            None => return Ok(()),
        }
    }
}

/// Checks `dest_path` against the policy and that a file can be put there; returns the
/// canonical destination.
pub(crate) async fn prepare_destination(ctx: &TransferContext, dest_path: &str) -> Result<PathBuf, TransferError> {
    let (policy, shown) = (ctx.policy.clone(), dest_path.to_string());
    blocking::unblock(move || {
        let dest = policy.check(&shown).map_err(|refusal| TransferError::denied(&shown, refusal))?;
        let Some(parent) = dest.parent() else {
            return Err(TransferError::BadDestination(format!("{shown} is a directory")));
        };
        match std::fs::metadata(parent) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(TransferError::BadDestination(format!("the parent of {shown} is not a directory"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TransferError::BadDestination(format!(
                    "the parent directory of {shown} does not exist (create it first, e.g. with /api/v1/transfer/mkdir)"
                )))
            }
            Err(e) => return Err(TransferError::io("checking", parent, e)),
        }
        if std::fs::metadata(&dest).is_ok_and(|m| m.is_dir()) {
            return Err(TransferError::BadDestination(format!("{shown} is a directory")));
        }
        Ok(dest)
    })
    .await
}

/// How many bytes of upload `upload_id` to `dest_path` arrived.
pub(crate) async fn status(
    ctx: &TransferContext,
    dest_path: &str,
    upload_id: &str,
) -> Result<UploadStatus, TransferError> {
    let upload_id = parse_upload_id(upload_id)?;
    let dest = prepare_destination(ctx, dest_path).await?;
    let part = part_path(&dest, &upload_id);
    let active = ctx.active.lock().expect("active uploads lock").contains(&part);
    // Not followed: a symlink (or anything but the daemon's own file) at the part's name is no
    // data of this upload, which then starts again at 0 and replaces it.
    let offset = super::part_len(&part);
    Ok(UploadStatus { offset, active, max_file_size: ctx.max_file_size })
}

/// Deletes what arrived of upload `upload_id`; true if there was something.
pub(crate) async fn cancel(ctx: &TransferContext, dest_path: &str, upload_id: &str) -> Result<bool, TransferError> {
    let upload_id = parse_upload_id(upload_id)?;
    let dest = prepare_destination(ctx, dest_path).await?;
    let part = part_path(&dest, &upload_id);
    let _claim = Claim::take(&ctx.active, &part)?;
    let entry = ctx.journal.enter(&part, Kind::Part).await.map_err(|e| TransferError::io("recording", &part, e))?;
    // Dropping the entry deletes the part (up to maxFileSize) and its record: on the blocking pool.
    let existed = smol::unblock(move || {
        let existed = std::fs::symlink_metadata(&part).is_ok();
        drop(entry);
        existed
    })
    .await;
    Ok(existed)
}

/// Exclusive use of a part file while a request writes it.
struct Claim {
    set: Arc<Mutex<HashSet<PathBuf>>>,
    path: PathBuf,
}

impl Claim {
    fn take(set: &Arc<Mutex<HashSet<PathBuf>>>, path: &Path) -> Result<Claim, TransferError> {
        if !set.lock().expect("active uploads lock").insert(path.to_path_buf()) {
            return Err(TransferError::ResumeConflict("another request is writing this upload right now".into()));
        }
        Ok(Claim { set: set.clone(), path: path.to_path_buf() })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.set.lock().expect("active uploads lock").remove(&self.path);
    }
}

fn multipart_error(e: multer::Error) -> TransferError {
    use multer::Error as E;
    match e {
        E::StreamSizeExceeded { .. } | E::FieldSizeExceeded { .. } => {
            TransferError::TooLarge("File exceeds max size (transfer.maxFileSize)".into())
        }
        E::StreamReadFailed(_) | E::IncompleteStream | E::IncompleteFieldData { .. } | E::IncompleteHeaders => {
            TransferError::Failed(format!("the request body ended early: {e}"))
        }
        other => TransferError::Invalid(format!("malformed multipart body: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_upload_ids() {
        assert_eq!(parse_mode("644").unwrap(), 0o644);
        assert_eq!(parse_mode("0755").unwrap(), 0o755);
        assert_eq!(parse_mode("4755").unwrap(), 0o755, "set-id bits are dropped");
        assert!(parse_mode("9").is_err());
        assert!(parse_mode("-1").is_err());
        assert!(parse_upload_id("abcd-1234_XY").is_ok());
        assert!(parse_upload_id("short").is_err());
        assert!(parse_upload_id("../../etc/passwd").is_err());
        assert!(parse_upload_id(&"a".repeat(65)).is_err());
    }
}
