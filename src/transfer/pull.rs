//! A pull (`POST /transfer/pull`): which file, which bytes of it, and its SHA-256 on request.
//!
//! The route streams the opened file; nothing here holds file contents in memory beyond one
//! hashing buffer. `Range` follows RFC 9110 for a single range; anything else is ignored (the
//! whole file is served), as the RFC allows.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use sha2::{Digest, Sha256};

use super::policy::PathPolicy;
use super::receive::BATCH;
use super::TransferError;

/// An opened file, positioned at the first byte to send.
#[derive(Debug)]
pub(crate) struct PullPlan {
    pub file: File,
    /// The whole file's size.
    pub size: u64,
    /// `(first, last)` byte, inclusive, when a range was asked for.
    pub range: Option<(u64, u64)>,
    /// The last `/`-separated component of the requested path (1.0.21's `Content-Disposition`).
    pub name: String,
    /// The whole file's SHA-256, when asked for.
    pub sha256: Option<String>,
}

impl PullPlan {
    /// How many bytes the response body has.
    pub(crate) fn length(&self) -> u64 {
        match self.range {
            Some((first, last)) => last - first + 1,
            None => self.size,
        }
    }
}

/// Opens `source_path` for a pull.
pub(crate) async fn open(
    policy: &PathPolicy,
    max_file_size: u64,
    source_path: &str,
    range: Option<String>,
    want_checksum: bool,
) -> Result<PullPlan, TransferError> {
    let (policy, shown) = (policy.clone(), source_path.to_string());
    blocking::unblock(move || {
        let path = policy.check(&shown).map_err(|refusal| TransferError::denied(&shown, refusal))?;
        let not_found = || TransferError::NotFound(format!("File not found: {shown}"));
        let meta = std::fs::metadata(&path).map_err(|_| not_found())?;
        if !meta.is_file() {
            return Err(not_found());
        }
        if meta.len() > max_file_size {
            return Err(TransferError::TooLarge(format!(
                "File exceeds max size: {} bytes, transfer.maxFileSize is {max_file_size}",
                meta.len()
            )));
        }
        let mut file = File::open(&path).map_err(|e| TransferError::io("opening", &path, e))?;
        let size = file.metadata().map_err(|e| TransferError::io("reading", &path, e))?.len();
        let range = match range {
            Some(header) => parse_range(&header, size)?,
            None => None,
        };
        let sha256 = if want_checksum {
            Some(hash_file(&mut file).map_err(|e| TransferError::io("reading", &path, e))?)
        } else {
            None
        };
        let first = range.map_or(0, |(first, _)| first);
        file.seek(SeekFrom::Start(first)).map_err(|e| TransferError::io("seeking", &path, e))?;
        let name = shown.rsplit('/').next().unwrap_or_default().to_string();
        Ok(PullPlan { file, size, range, name, sha256 })
    })
    .await
}

fn hash_file(file: &mut File) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; BATCH];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok(super::hex_digest(hasher));
        }
        hasher.update(&buffer[..n]);
    }
}

/// A single `bytes=` range of a `size`-byte file as `(first, last)`; `Ok(None)` means "serve
/// the whole file" (no usable range); unsatisfiable ranges are errors (416).
pub(crate) fn parse_range(header: &str, size: u64) -> Result<Option<(u64, u64)>, TransferError> {
    let Some(spec) = header.trim().strip_prefix("bytes=") else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None); // several ranges: serve the whole file
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return Ok(None) };
    let number = |text: &str| text.trim().parse::<u64>().ok();
    let unsatisfiable = TransferError::RangeNotSatisfiable { size };
    match (first.trim().is_empty(), number(first), number(last)) {
        // bytes=-N: the last N bytes
        (true, _, Some(suffix)) => {
            if suffix == 0 || size == 0 {
                return Err(unsatisfiable);
            }
            Ok(Some((size.saturating_sub(suffix), size - 1)))
        }
        (false, Some(first), None) if last.trim().is_empty() => {
            if first >= size {
                return Err(unsatisfiable);
            }
            Ok(Some((first, size - 1)))
        }
        (false, Some(first), Some(last)) if first <= last => {
            if first >= size {
                return Err(unsatisfiable);
            }
            Ok(Some((first, last.min(size - 1))))
        }
        _ => Ok(None), // not a valid range: ignored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(header: &str, size: u64) -> Option<Option<(u64, u64)>> {
        parse_range(header, size).ok()
    }

    #[test]
    fn ranges() {
        assert_eq!(range("bytes=0-9", 100), Some(Some((0, 9))));
        assert_eq!(range("bytes=90-", 100), Some(Some((90, 99))));
        assert_eq!(range("bytes=90-200", 100), Some(Some((90, 99))));
        assert_eq!(range("bytes=-10", 100), Some(Some((90, 99))));
        assert_eq!(range("bytes=-200", 100), Some(Some((0, 99))));
        assert_eq!(range("bytes=100-", 100), None, "starts past the end: 416");
        assert_eq!(range("bytes=0-", 0), None, "nothing to serve of an empty file");
        assert_eq!(range("bytes=-0", 100), None);
        assert_eq!(range("bytes=5-1", 100), Some(None), "invalid: ignored");
        assert_eq!(range("bytes=0-1,5-6", 100), Some(None), "several ranges: ignored");
        assert_eq!(range("items=0-1", 100), Some(None));
        assert_eq!(range("bytes=x-", 100), Some(None));
    }
}
