//! Streaming file transfer through [`Client`]: uploads as a multipart body chained from a head,
//! the file and a tail (which carries the SHA-256 computed while sending), and downloads copied
//! into a hidden partial file that is verified, fsync'd and renamed into place. Whole files are
//! never in memory (1.0.21's clients read them whole, weakness C7).
//!
//! Both directions resume: an upload asks the daemon how much of it arrived
//! (`GET /transfer/uploads/:id`), a download continues its partial file with `Range`. Against a
//! 1.0.21 daemon (no such route, no checksum header) they fall back to plain transfers.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, Cursor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use surf::http::Method;

use super::{read_body, remote_error, Client, ClientError, ERROR_BODY_LIMIT};

/// A transfer with no byte moving for this long is abandoned.
const STALL: Duration = Duration::from_secs(60);
/// Read size for files and response bodies.
const CHUNK: usize = 256 * 1024;
/// How often a request refused by the rate limit is retried.
const RATE_LIMIT_RETRIES: u32 = 30;

/// Called with (bytes done, bytes in total) as a transfer moves.
pub type OnProgress = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// One file to upload.
#[derive(Debug, Clone)]
pub struct PushFile {
    pub source: PathBuf,
    /// Absolute path on the peer.
    pub dest_path: String,
    /// Permission bits to give the remote file.
    pub mode: Option<u32>,
}

/// The daemon's answer to a push (1.0.21's members).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushReply {
    pub path: String,
    pub size: u64,
    pub checksum: String,
    #[serde(default)]
    pub duration: u64,
    /// Bytes that an earlier, interrupted attempt had delivered already.
    #[serde(default, skip_deserializing)]
    pub resumed_from: u64,
}

/// A completed download.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pulled {
    pub path: PathBuf,
    pub size: u64,
    pub checksum: String,
    /// The peer sent its SHA-256 and it matched (1.0.21 peers send none).
    pub verified: bool,
    pub resumed_from: u64,
}

/// What `GET /transfer/uploads/:id` answers.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UploadStatus {
    offset: u64,
    active: bool,
    max_file_size: u64,
    /// Seconds until the peer's rate limit lets a push through.
    retry_after: Option<u64>,
}

impl Client {
    /// Uploads `job.source` to `job.dest_path`, resuming what an earlier attempt delivered.
    pub async fn push_file(&self, job: &PushFile, progress: OnProgress) -> Result<PushReply, ClientError> {
        let local =
            |e: std::io::Error| ClientError::Local { path: job.source.display().to_string(), reason: e.to_string() };
        let meta = std::fs::metadata(&job.source).map_err(local)?;
        if !meta.is_file() {
            return Err(ClientError::Local {
                path: job.source.display().to_string(),
                reason: "not a regular file".into(),
            });
        }
        let size = meta.len();
        let upload_id = upload_id(&job.source, &meta, &job.dest_path, &self.base);
        let mut resume = self.upload_status(&job.dest_path, &upload_id).await?;
        // An earlier attempt that just broke off may still be winding down on the peer (it gives
        // up on a silent connection after its stall timeout).
        let deadline = Instant::now() + STALL + Duration::from_secs(5);
        while resume.as_ref().is_some_and(|status| status.active) && Instant::now() < deadline {
            async_io::Timer::after(Duration::from_millis(200)).await;
            resume = self.upload_status(&job.dest_path, &upload_id).await?;
        }
        // A push refused by the rate limit is refused before its body is read, and the refusal
        // is lost while the body is still being sent: wait first instead.
        for _ in 0..RATE_LIMIT_RETRIES {
            let Some(wait) = resume.as_ref().and_then(|status| status.retry_after) else { break };
            log::info!("{}: rate limited, sending in {wait} s", self.base);
            async_io::Timer::after(Duration::from_secs(wait.clamp(1, 120))).await;
            resume = self.upload_status(&job.dest_path, &upload_id).await?;
        }
        let offset = match &resume {
            Some(status) if status.max_file_size < size => {
                return Err(ClientError::Remote {
                    status: 413,
                    code: Some(4003),
                    message: format!("File exceeds max size: {size} bytes, the peer accepts {}", status.max_file_size),
                })
            }
            Some(status) if status.active => {
                return Err(ClientError::Remote {
                    status: 409,
                    code: Some(4007),
                    message: "another request is uploading this file to the same destination right now".into(),
                })
            }
            Some(status) if status.offset <= size => status.offset,
            _ => 0,
        };
        let source = job.source.clone();
        let (file, prefix) = blocking::unblock(move || open_at(&source, offset)).await.map_err(local)?;
        let name = job.source.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "file".into());
        let mut fields = vec![("destPath", job.dest_path.clone())];
        if let Some(mode) = job.mode {
            fields.push(("mode", format!("{mode:o}")));
        }
        if resume.is_some() {
            fields.push(("uploadId", upload_id));
            fields.push(("offset", offset.to_string()));
        }
        let body = UploadBody::new(&fields, &name, file, size, offset, prefix, progress);
        let (boundary, total, digest) = (body.boundary.clone(), body.total_len(), body.digest.clone());
        let moved = body.moved.clone();
        let request = self
            .authorized(Method::Post, "/api/v1/transfer/push")
            .body(surf::Body::from_reader(
                futures_lite::io::BufReader::with_capacity(CHUNK, body),
                Some(total as usize),
            ))
            .header("Content-Type", format!("multipart/form-data; boundary={boundary}"));
        let (status, bytes) = self.exchange_watched(request, moved).await?;
        if !status.is_success() {
            return Err(remote_error(status as u16, &bytes));
        }
        let mut reply: PushReply = serde_json::from_slice(&bytes).map_err(|e| self.decode_error(e))?;
        let sent = digest.lock().expect("digest lock").clone().unwrap_or_default();
        if reply.checksum != sent || reply.size != size {
            return Err(ClientError::Decode {
                url: self.base.clone(),
                reason: format!(
                    "the peer stored {} bytes with sha256 {} but {size} bytes with sha256 {sent} were sent",
                    reply.size, reply.checksum
                ),
            });
        }
        reply.resumed_from = offset;
        Ok(reply)
    }

    /// How much of an upload arrived; `None` when the daemon cannot resume (1.0.21).
    async fn upload_status(&self, dest_path: &str, upload_id: &str) -> Result<Option<UploadStatus>, ClientError> {
        let path = format!("/api/v1/transfer/uploads/{upload_id}?destPath={}", crate::percent::encode(dest_path));
        match self.get::<UploadStatus>(&path).await {
            Ok(status) => Ok(Some(status)),
            Err(ClientError::Remote { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Downloads `source_path` to `dest`, continuing `.<name>.loopsy-part` beside it if present.
    pub async fn pull_file(&self, source_path: &str, dest: &Path, progress: OnProgress) -> Result<Pulled, ClientError> {
        let part = crate::transfer::sibling(dest, "loopsy-part");
        // Only our own partial download is continued; anything else with its name (a planted
        // symlink or hard link) is replaced, never written through.
        let have = crate::transfer::part_len(&part);
        match self.pull_attempt(source_path, dest, &part, have, progress.clone()).await {
            // A partial file that does not fit the source (changed since, or garbage): start over.
            Err(_) if have > 0 => {
                let _ = std::fs::remove_file(&part);
                self.pull_attempt(source_path, dest, &part, 0, progress).await
            }
            result => result,
        }
    }

    async fn pull_attempt(
        &self,
        source_path: &str,
        dest: &Path,
        part: &Path,
        offset: u64,
        progress: OnProgress,
    ) -> Result<Pulled, ClientError> {
        let body = serde_json::json!({"sourcePath": source_path, "checksum": true});
        let request = || {
            let request = self
                .authorized(Method::Post, "/api/v1/transfer/pull")
                .body(serde_json::to_vec(&body).expect("a JSON value serialises"))
                .header("Content-Type", "application/json");
            if offset > 0 {
                request.header("Range", format!("bytes={offset}-"))
            } else {
                request
            }
        };
        let moved = Arc::new(AtomicU64::new(0));
        let exchange = async {
            let mut response = self.send_retrying(request).await?;
            let status = response.status() as u16;
            if !(200..300).contains(&status) {
                let bytes = read_body(&mut response, ERROR_BODY_LIMIT, &self.base).await.unwrap_or_default();
                return Err(remote_error(status, &bytes));
            }
            let header = |name: &str| response.header(name).map(|v| v.last().as_str().to_string());
            let start = match (status, header("Content-Range")) {
                (206, Some(range)) if range.starts_with(&format!("bytes {offset}-")) => offset,
                (206, _) => return Err(self.decode_error("the peer answered a different range than asked for")),
                _ => 0,
            };
            let declared_sha = header("X-Loopsy-Sha256");
            let declared_size = header("X-Loopsy-File-Size").and_then(|v| v.parse::<u64>().ok());
            let total = declared_size.unwrap_or(0);
            let local =
                |e: std::io::Error| ClientError::Local { path: part.display().to_string(), reason: e.to_string() };
            let part_path = part.to_path_buf();
            let (file, hasher) = blocking::unblock(move || open_part(&part_path, start)).await.map_err(local)?;
            let mut file = blocking::Unblock::with_capacity(CHUNK, file);
            let (mut hasher, mut done) = (hasher, start);
            let mut buffer = vec![0u8; CHUNK];
            loop {
                let n = response.read(&mut buffer).await.map_err(|e| self.unreachable(e))?;
                if n == 0 {
                    break;
                }
                done += n as u64;
                // Not a byte more than the peer said the file has.
                if declared_size.is_some_and(|size| done > size) {
                    return Err(self.decode_error(format!("the peer sent more than the {total} bytes it declared")));
                }
                hasher.update(&buffer[..n]);
                file.write_all(&buffer[..n]).await.map_err(local)?;
                moved.store(done, Ordering::Relaxed);
                progress(done, total.max(done));
            }
            file.flush().await.map_err(local)?;
            let file = file.into_inner().await;
            let checksum = crate::transfer::hex_digest(hasher);
            if declared_size.is_some_and(|size| size != done) {
                return Err(self.decode_error(format!("the peer sent {done} bytes of a {total}-byte file")));
            }
            if declared_sha.as_ref().is_some_and(|sha| !sha.eq_ignore_ascii_case(&checksum)) {
                let _ = std::fs::remove_file(part);
                return Err(self.decode_error(format!(
                    "checksum mismatch: the peer's file has sha256 {} but {checksum} arrived",
                    declared_sha.unwrap_or_default()
                )));
            }
            let (part_path, dest_path) = (part.to_path_buf(), dest.to_path_buf());
            blocking::unblock(move || finish_part(file, &part_path, &dest_path)).await.map_err(local)?;
            Ok(Pulled {
                path: dest.to_path_buf(),
                size: done,
                checksum,
                verified: declared_sha.is_some(),
                resumed_from: start,
            })
        };
        futures_lite::future::or(exchange, stall_watch(moved.clone(), &self.base)).await
    }

    /// `method path` with a JSON body, retried while the peer's rate limit refuses it.
    pub async fn call_retrying<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, ClientError> {
        let json = serde_json::to_vec(body).map_err(|e| self.decode_error(e))?;
        let request = || self.authorized(method, path).body(json.clone()).header("Content-Type", "application/json");
        let mut response = self.send_retrying(request).await?;
        let bytes = read_body(&mut response, self.body_limit, &self.base).await?;
        if !response.status().is_success() {
            return Err(remote_error(response.status() as u16, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| self.decode_error(e))
    }

    fn authorized(&self, method: Method, path: &str) -> surf::RequestBuilder {
        let url = format!("{}{}", self.base, path);
        let mut request = surf::RequestBuilder::new(method, url.parse().expect("the base URL and path form a URL"));
        if let Some(key) = &self.key {
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        request
    }

    /// Sends a request with a small (re-sendable) body; waits out 429s as `Retry-After` says.
    async fn send_retrying(&self, request: impl Fn() -> surf::RequestBuilder) -> Result<surf::Response, ClientError> {
        let mut attempts = 0;
        loop {
            let head = async { self.http.send(request().build()).await.map_err(|e| self.unreachable(e)) };
            let response = self.timed(head).await?;
            if response.status() as u16 != 429 || attempts == RATE_LIMIT_RETRIES {
                return Ok(response);
            }
            attempts += 1;
            let wait = response.header("Retry-After").and_then(|v| v.last().as_str().parse::<u64>().ok()).unwrap_or(6);
            log::info!("{}: rate limited, retrying in {wait} s", self.base);
            async_io::Timer::after(Duration::from_secs(wait.clamp(1, 120))).await;
        }
    }

    /// Sends a streaming request; fails when no byte moved for [`STALL`].
    async fn exchange_watched(
        &self,
        request: surf::RequestBuilder,
        moved: Arc<AtomicU64>,
    ) -> Result<(surf::StatusCode, Vec<u8>), ClientError> {
        let exchange = async {
            let mut response = self.http.send(request.build()).await.map_err(|e| self.unreachable(e))?;
            let bytes = read_body(&mut response, self.body_limit, &self.base).await?;
            Ok((response.status(), bytes))
        };
        futures_lite::future::or(exchange, stall_watch(moved, &self.base)).await
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> ClientError {
        ClientError::Unreachable { url: self.base.clone(), reason: e.to_string() }
    }

    fn decode_error(&self, e: impl std::fmt::Display) -> ClientError {
        ClientError::Decode { url: self.base.clone(), reason: e.to_string() }
    }
}

/// Completes with a timeout error once `moved` has not changed for [`STALL`]. Waiting for the
/// answer after the last byte (the peer verifies and fsyncs) counts as moving for that long too.
async fn stall_watch<T>(moved: Arc<AtomicU64>, base: &str) -> Result<T, ClientError> {
    let (mut last, mut since) = (u64::MAX, Instant::now());
    loop {
        async_io::Timer::after(Duration::from_millis(500)).await;
        let now = moved.load(Ordering::Relaxed);
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() >= STALL {
            return Err(ClientError::Timeout { url: base.to_string(), after: STALL });
        }
    }
}

/// A stable id for "this source file, as it is now, to this destination on this peer", so a
/// re-run after an interruption finds its partial upload.
fn upload_id(source: &Path, meta: &std::fs::Metadata, dest_path: &str, peer: &str) -> String {
    use std::os::unix::fs::MetadataExt;
    let absolute = std::fs::canonicalize(source).unwrap_or_else(|_| source.to_path_buf());
    let mut hasher = Sha256::new();
    for part in [absolute.as_os_str().as_encoded_bytes(), dest_path.as_bytes(), peer.as_bytes()] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.update(meta.len().to_le_bytes());
    hasher.update(meta.mtime().to_le_bytes());
    hasher.update(meta.mtime_nsec().to_le_bytes());
    crate::random::to_hex(&hasher.finalize()[..16])
}

/// Opens `path` positioned at `offset`, with the SHA-256 state of the bytes before it.
fn open_at(path: &Path, offset: u64) -> std::io::Result<(File, Sha256)> {
    let mut file = File::open(path)?;
    let hasher = hash_prefix(&mut file, offset)?;
    file.seek(SeekFrom::Start(offset))?;
    Ok((file, hasher))
}

/// Opens (or creates) the partial download, cut to `offset` bytes, hashed so far.
fn open_part(path: &Path, offset: u64) -> std::io::Result<(File, Sha256)> {
    use crate::transfer::PartError;
    let mut file = crate::transfer::open_part_file(path, offset == 0).map_err(|e| match e {
        PartError::Io(e) => e,
        PartError::Missing => std::io::Error::new(std::io::ErrorKind::NotFound, "the partial download is gone"),
        PartError::NotOurs => std::io::Error::other("the partial download was replaced by something else"),
    })?;
    file.set_len(offset)?;
    let hasher = hash_prefix(&mut file, offset)?;
    file.seek(SeekFrom::Start(offset))?;
    Ok((file, hasher))
}

fn hash_prefix(file: &mut File, len: u64) -> std::io::Result<Sha256> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; CHUNK];
    let mut left = len;
    while left > 0 {
        let n = file.read(&mut buffer[..left.min(CHUNK as u64) as usize])?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file is shorter than expected"));
        }
        hasher.update(&buffer[..n]);
        left -= n as u64;
    }
    Ok(hasher)
}

fn finish_part(file: File, part: &Path, dest: &Path) -> std::io::Result<()> {
    file.sync_all()?;
    drop(file);
    std::fs::rename(part, dest)?;
    if let Some(parent) = dest.parent() {
        crate::durable::sync_dir(parent);
    }
    Ok(())
}

/// The multipart body of a push: text fields and the file part's head, the file from `offset`
/// (hashed as it is read), then a `sha256` field with the digest of the whole file.
struct UploadBody {
    boundary: String,
    head: Cursor<Vec<u8>>,
    file: blocking::Unblock<std::io::Take<File>>,
    /// File bytes still to come.
    left: u64,
    hasher: Option<Sha256>,
    tail: Option<Cursor<Vec<u8>>>,
    tail_len: u64,
    digest: Arc<Mutex<Option<String>>>,
    moved: Arc<AtomicU64>,
    done: u64,
    size: u64,
    progress: OnProgress,
}

impl UploadBody {
    fn new(
        fields: &[(&str, String)],
        file_name: &str,
        file: File,
        size: u64,
        offset: u64,
        prefix: Sha256,
        progress: OnProgress,
    ) -> UploadBody {
        let boundary = format!("loopsy-{}", crate::random::hex(12));
        let mut head = String::new();
        for (name, value) in fields {
            head.push_str(&format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            ));
        }
        let safe_name: String =
            file_name.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' { c } else { '_' }).collect();
        head.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{safe_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        ));
        let tail_len = Self::tail(&boundary, &"0".repeat(64)).len() as u64;
        UploadBody {
            head: Cursor::new(head.into_bytes()),
            file: blocking::Unblock::with_capacity(CHUNK, file.take(size - offset)),
            left: size - offset,
            hasher: Some(prefix),
            tail: None,
            tail_len,
            digest: Arc::new(Mutex::new(None)),
            moved: Arc::new(AtomicU64::new(0)),
            done: offset,
            size,
            progress,
            boundary,
        }
    }

    fn tail(boundary: &str, sha256: &str) -> String {
        format!(
            "\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"sha256\"\r\n\r\n{sha256}\r\n--{boundary}--\r\n"
        )
    }

    fn total_len(&self) -> u64 {
        self.head.get_ref().len() as u64 + self.left + self.tail_len
    }
}

impl AsyncRead for UploadBody {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if (this.head.position() as usize) < this.head.get_ref().len() {
            return Pin::new(&mut this.head).poll_read(cx, buf);
        }
        if this.left > 0 {
            let n = futures_lite::ready!(Pin::new(&mut this.file).poll_read(cx, buf))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file got shorter while it was being sent",
                )));
            }
            this.left -= n as u64;
            this.done += n as u64;
            this.hasher.as_mut().expect("hashing until the file ends").update(&buf[..n]);
            this.moved.store(this.done, Ordering::Relaxed);
            (this.progress)(this.done, this.size);
            return Poll::Ready(Ok(n));
        }
        if this.tail.is_none() {
            let digest = crate::transfer::hex_digest(this.hasher.take().expect("hashed once"));
            this.tail = Some(Cursor::new(Self::tail(&this.boundary, &digest).into_bytes()));
            *this.digest.lock().expect("digest lock") = Some(digest);
        }
        Pin::new(this.tail.as_mut().expect("set above")).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upload_body_has_the_announced_length_and_ends_with_the_digest() {
        let dir = std::env::temp_dir().join(format!("loopsy-upload-{}", crate::random::hex(6)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.txt");
        std::fs::write(&path, b"hello world").unwrap();
        let (file, prefix) = open_at(&path, 6).unwrap();
        let progress: OnProgress = Arc::new(|_, _| {});
        let mut body = UploadBody::new(&[("destPath", "/x".into())], "f.txt", file, 11, 6, prefix, progress);
        let total = body.total_len();
        let mut bytes = Vec::new();
        smol::block_on(body.read_to_end(&mut bytes)).unwrap();
        assert_eq!(bytes.len() as u64, total);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("\r\n\r\nworld\r\n"), "only the bytes after the offset: {text}");
        let whole = crate::random::to_hex(&Sha256::digest(b"hello world"));
        assert!(text.contains(&whole), "the digest covers the whole file");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
