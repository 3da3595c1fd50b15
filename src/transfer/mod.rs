//! File transfer, the domain side: which paths may be touched ([`policy`]), receiving uploads
//! into temporary files that become visible only when complete, verified and durable
//! ([`receive`], [`push`]), serving files and byte ranges ([`pull`]), listing and creating directories
//! ([`dirs`]) and cleaning up what interrupted transfers leave behind ([`journal`]).
//!
//! No tide here: the daemon's `routes/transfer.rs` parses requests, calls these functions and
//! maps [`TransferError`] to HTTP. multer is used because it is runtime-agnostic and works on any
//! byte stream.

pub(crate) mod chunks;
pub(crate) mod dirs;
pub(crate) mod journal;
mod pipeline;
pub(crate) mod policy;
pub(crate) mod pull;
pub(crate) mod push;
pub(crate) mod receive;

use std::path::{Path, PathBuf};

/// Partial uploads (`.<name>.loopsy-part-<uploadId>`) older than this are deleted.
pub(crate) const PART_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// Everything a transfer can fail with; each variant has one error code on the wire.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TransferError {
    /// 4001: the path policy refused the path.
    #[error("Path '{path}' is not allowed: {reason}")]
    PathDenied { path: String, reason: String },
    /// 4002: nothing (or no regular file, or no directory) where one was expected.
    #[error("{0}")]
    NotFound(String),
    /// 4003: over `transfer.maxFileSize`.
    #[error("{0}")]
    TooLarge(String),
    /// 4004: the data does not have the SHA-256 the sender declared.
    #[error("checksum mismatch: the sender declared sha256 {expected} but the received data has {actual}; nothing was written")]
    ChecksumMismatch { expected: String, actual: String },
    /// 4005: the request had no file part.
    #[error("No file in request")]
    NoFile,
    /// 4006: the destination cannot take a file (a directory, a missing parent...).
    #[error("{0}")]
    BadDestination(String),
    /// 4007: a resumed upload does not fit what arrived before, or is being written already.
    #[error("{0}")]
    ResumeConflict(String),
    /// 4008: a `Range` outside the file.
    #[error("range not satisfiable: the file has {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    /// 9003: a missing or malformed field.
    #[error("{0}")]
    Invalid(String),
    /// 4005: reading the request or writing the file failed.
    #[error("{0}")]
    Failed(String),
}

impl TransferError {
    pub(crate) fn denied(path: &str, refusal: policy::Refusal) -> TransferError {
        TransferError::PathDenied { path: path.to_string(), reason: refusal.0 }
    }

    /// An I/O error while working on `path`, worded for the client.
    pub(crate) fn io(doing: &str, path: &Path, e: std::io::Error) -> TransferError {
        match e.kind() {
            std::io::ErrorKind::PermissionDenied => TransferError::PathDenied {
                path: path.display().to_string(),
                reason: format!("{doing}: permission denied"),
            },
            _ => TransferError::Failed(format!("{doing} {}: {e}", path.display())),
        }
    }
}

/// The hidden name of the partial file of upload `upload_id` to `dest`.
pub(crate) fn part_path(dest: &Path, upload_id: &str) -> PathBuf {
    sibling(dest, &format!("loopsy-part-{upload_id}"))
}

/// A hidden temporary name beside `dest`: `.<name>.<suffix>`.
pub(crate) fn sibling(dest: &Path, suffix: &str) -> PathBuf {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dest.with_file_name(format!(".{name}.{suffix}"))
}

/// Why an existing part file was not opened.
#[derive(Debug)]
pub(crate) enum PartError {
    /// Nothing has the part's name.
    Missing,
    /// Something has the name that is not a part this process wrote: a symlink, a hard link to
    /// another file, a FIFO or directory, another user's file.
    NotOurs,
    Io(std::io::Error),
}

/// Opens the partial file at `path`: a new, empty one when `fresh`, else the existing one to
/// continue. A part sits beside its destination, where others may write, so what has its name
/// is never trusted blindly: a symlink is never followed, a hard link never truncated, a FIFO
/// never blocks. A fresh part replaces whatever has the name (removing a name never touches what
/// a link leads to).
pub(crate) fn open_part_file(path: &Path, fresh: bool) -> Result<std::fs::File, PartError> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    if fresh {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(PartError::Io(e)),
        }
        return options.create_new(true).open(path).map_err(PartError::Io);
    }
    let file = options.open(path).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => PartError::NotOurs,
        _ if e.kind() == std::io::ErrorKind::NotFound => PartError::Missing,
        _ => PartError::Io(e),
    })?;
    let meta = file.metadata().map_err(PartError::Io)?;
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if !meta.is_file() || meta.nlink() != 1 || meta.uid() != euid {
        return Err(PartError::NotOurs);
    }
    Ok(file)
}

/// The size of the part at `path` if it is one that [`open_part_file`] would continue; else 0.
pub(crate) fn part_len(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.file_type().is_file() && m.nlink() == 1 && m.uid() == euid)
        .map_or(0, |m| m.len())
}

/// Whether `name` is one of ours (temporary or partial), so cleanup never deletes anything else.
pub(crate) fn is_our_temp_name(name: &str) -> bool {
    name.starts_with('.') && (name.contains(".loopsy-tmp-") || name.contains(".loopsy-part-"))
}

/// Lowercase hex SHA-256 of what a hasher saw.
pub(crate) fn hex_digest(hasher: sha2::Sha256) -> String {
    use sha2::Digest;
    crate::random::to_hex(&hasher.finalize())
}

/// A declared SHA-256 (form field or header), normalised to lowercase hex.
pub(crate) fn parse_sha256(text: &str) -> Result<String, TransferError> {
    let text = text.trim();
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(TransferError::Invalid(format!("'{text}' is not a SHA-256 (64 hex characters)")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_hidden_siblings() {
        assert_eq!(part_path(Path::new("/a/b.txt"), "u1"), PathBuf::from("/a/.b.txt.loopsy-part-u1"));
        assert!(is_our_temp_name(".b.txt.loopsy-part-u1"));
        assert!(is_our_temp_name(".b.txt.loopsy-tmp-00ff"));
        assert!(!is_our_temp_name("b.txt"));
        assert!(!is_our_temp_name(".bashrc"));
    }

    #[test]
    fn declared_checksums_are_validated() {
        assert_eq!(parse_sha256(&"AB".repeat(32)).unwrap(), "ab".repeat(32));
        assert!(parse_sha256("abc").is_err());
        assert!(parse_sha256(&"zz".repeat(32)).is_err());
    }
}
