//! Durable file writes: temp file beside the target, fsync, rename, fsync the directory.
//!
//! A reader sees either the old or the new content, never a torn file, and once a write returns
//! the new content survives a crash. Secrets are created 0600 from the first byte.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use anyhow::Context;

/// Who may read the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Readable only by the owner (0600): config, keys, anything with a secret in it.
    Secret,
    /// Default permissions (0644 before the umask).
    Public,
}

/// Atomically replaces `path` with `bytes`.
pub(crate) fn write(path: &Path, bytes: &[u8], mode: Mode) -> anyhow::Result<()> {
    let dir = path.parent().context("a file path has a parent directory")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let file_name = path.file_name().context("a file path has a name")?.to_string_lossy();
    let temp = dir.join(format!(".{file_name}.tmp-{}-{}", std::process::id(), crate::random::hex(4)));
    let result = write_temp(&temp, bytes, mode)
        .and_then(|()| fs::rename(&temp, path).with_context(|| format!("renaming into {}", path.display())));
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result?;
    sync_dir(dir);
    Ok(())
}

fn write_temp(temp: &Path, bytes: &[u8], mode: Mode) -> anyhow::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(match mode {
            Mode::Secret => 0o600,
            Mode::Public => 0o644,
        });
    }
    let mut file = options.open(temp).with_context(|| format!("creating {}", temp.display()))?;
    file.write_all(bytes).with_context(|| format!("writing {}", temp.display()))?;
    file.sync_all().with_context(|| format!("syncing {}", temp.display()))?;
    Ok(())
}

/// Makes a rename or a new file in `dir` durable. Best effort: some file systems refuse it.
pub(crate) fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(handle) = File::open(dir) {
        let _ = handle.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Creates `dir` (and parents) readable only by the owner.
///
/// A directory that already exists and holds something keeps its mode: it may be the user's
/// own (`--home ~/project`), and loopsy never changes what is not its own. The files loopsy puts
/// there that hold secrets are 0600 by themselves. An empty one is made private, as if created.
pub(crate) fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let existed_with_content = match fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_some(),
        Err(_) => false,
    };
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    #[cfg(unix)]
    if !existed_with_content {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // See: #13 (`--home` on an existing directory made it 0700).
    #[cfg(unix)]
    #[test]
    fn only_new_or_empty_directories_are_made_private() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("loopsy-private-{}", crate::random::hex(6)));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        create_private_dir(&base.join("new/deeper")).unwrap();
        assert_eq!(mode(&base.join("new/deeper")), 0o700);
        let users = base.join("users");
        fs::create_dir_all(&users).unwrap();
        fs::write(users.join("notes.txt"), "mine").unwrap();
        fs::set_permissions(&users, fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&users).unwrap();
        assert_eq!(mode(&users), 0o755, "a directory with the user's files keeps its mode");
        let empty = base.join("empty");
        fs::create_dir_all(&empty).unwrap();
        fs::set_permissions(&empty, fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&empty).unwrap();
        assert_eq!(mode(&empty), 0o700);
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn a_write_replaces_the_file_and_leaves_no_temp_behind() {
        let dir = std::env::temp_dir().join(format!("loopsy-durable-{}", crate::random::hex(6)));
        let target = dir.join("sub/config.yaml");
        write(&target, b"one", Mode::Secret).unwrap();
        write(&target, b"two", Mode::Secret).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(target.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "only the target remains: {names:?}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o600);
        }
        fs::remove_dir_all(dir).unwrap();
    }
}
