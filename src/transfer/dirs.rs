//! Directories: listing one (`POST /transfer/list`) and creating one (`POST /transfer/mkdir`,
//! used by recursive sends to recreate a tree, empty directories included).
//!
//! Listing stats entries one by one on a blocking thread and stops at [`MAX_ENTRIES`], saying so
//! (1.0.21 had no bound, weakness C6).

use std::path::Path;

use serde::Serialize;

use super::policy::PathPolicy;
use super::TransferError;

/// A listing stops after this many entries and sets `truncated`.
pub(crate) const MAX_ENTRIES: usize = 100_000;

/// One directory entry, as 1.0.21 lists it, plus its permission bits.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct ListEntry {
    pub name: String,
    /// The requested path joined with the name.
    pub path: String,
    /// `directory`, `symlink` or `file` (of the entry itself, symlinks not followed).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Of the symlink's target for symlinks (1.0.21).
    pub size: u64,
    /// Fractional milliseconds since the epoch (1.0.21).
    pub modified: f64,
    /// Permission bits (e.g. 420 = 0o644), so trees can be copied with their modes.
    pub mode: u32,
}

/// A directory's entries.
#[derive(Debug)]
pub(crate) struct Listing {
    pub files: Vec<ListEntry>,
    pub truncated: bool,
}

/// Lists `requested` (entries whose stat fails, e.g. dangling links, are left out, as in 1.0.21).
pub(crate) async fn list(policy: &PathPolicy, requested: &str) -> Result<Listing, TransferError> {
    let (policy, shown) = (policy.clone(), requested.to_string());
    blocking::unblock(move || {
        let dir = policy.check(&shown).map_err(|refusal| TransferError::denied(&shown, refusal))?;
        match std::fs::metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(TransferError::NotFound(format!("Not a directory: {shown}"))),
            Err(_) => return Err(TransferError::NotFound(format!("Directory not found: {shown}"))),
        }
        let entries = std::fs::read_dir(&dir).map_err(|e| TransferError::io("listing", &dir, e))?;
        let mut files = Vec::new();
        for entry in entries.flatten() {
            if files.len() == MAX_ENTRIES {
                return Ok(Listing { files, truncated: true });
            }
            if let Some(item) = describe(&entry, Path::new(&shown)) {
                files.push(item);
            }
        }
        Ok(Listing { files, truncated: false })
    })
    .await
}

fn describe(entry: &std::fs::DirEntry, requested: &Path) -> Option<ListEntry> {
    use std::os::unix::fs::PermissionsExt;
    let own = entry.file_type().ok()?;
    let meta = std::fs::metadata(entry.path()).ok()?;
    let kind = if own.is_dir() {
        "directory"
    } else if own.is_symlink() {
        "symlink"
    } else {
        "file"
    };
    let modified =
        meta.modified().ok()?.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0);
    let name = entry.file_name().to_string_lossy().into_owned();
    Some(ListEntry {
        path: requested.join(&name).to_string_lossy().into_owned(),
        name,
        kind,
        size: meta.len(),
        modified,
        mode: meta.permissions().mode() & 0o777,
    })
}

/// Creates `requested` (and missing parents); with `mode`, sets its permission bits (also when it
/// existed). Returns whether it was created.
pub(crate) async fn make_dir(policy: &PathPolicy, requested: &str, mode: Option<u32>) -> Result<bool, TransferError> {
    let (policy, shown) = (policy.clone(), requested.to_string());
    blocking::unblock(move || {
        let dir = policy.check(&shown).map_err(|refusal| TransferError::denied(&shown, refusal))?;
        use std::os::unix::fs::PermissionsExt;
        let created = match std::fs::metadata(&dir) {
            Ok(meta) if meta.is_dir() => false,
            Ok(_) => return Err(TransferError::BadDestination(format!("{shown} exists and is not a directory"))),
            Err(_) => {
                std::fs::create_dir_all(&dir).map_err(|e| match e.kind() {
                    std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::NotADirectory => {
                        TransferError::BadDestination(format!("cannot create {shown}: a parent is not a directory"))
                    }
                    _ => TransferError::io("creating", &dir, e),
                })?;
                true
            }
        };
        if let Some(mode) = mode {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
                .map_err(|e| TransferError::io("setting the mode of", &dir, e))?;
        }
        if created {
            if let Some(parent) = dir.parent() {
                crate::durable::sync_dir(parent);
            }
        }
        Ok(created)
    })
    .await
}
