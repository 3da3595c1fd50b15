//! Who this node is: a stable node id, its hostname and platform, and the version strings.
//!
//! The node id is generated once and persisted in the data directory, so a restarted daemon is
//! the same peer to everybody (1.0.21 drew a new one at every start and filled registries with
//! duplicates).

use std::fmt;

use anyhow::Context;

use crate::durable;
use crate::paths::Paths;

/// The protocol version spoken on the wire, the one 1.0.21 peers compare against.
pub(crate) const PROTOCOL_VERSION: &str = "1.0.21";
/// This implementation and its version, reported beside the protocol version.
pub(crate) const IMPLEMENTATION: &str = concat!("loopsy-rs/", env!("CARGO_PKG_VERSION"));
/// The capabilities 1.0.21 advertises, in its order.
pub(crate) const CAPABILITIES: [&str; 4] = ["execute", "transfer", "context", "ai-tasks"];

/// A node's stable identity: a UUID v4 string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct NodeId(String);

impl NodeId {
    /// Reads the persisted id, creating it on first use.
    pub(crate) fn load_or_create(paths: &Paths) -> anyhow::Result<NodeId> {
        let file = paths.node_id_file();
        match std::fs::read_to_string(&file) {
            Ok(text) => {
                let id = text.trim();
                anyhow::ensure!(is_uuid(id), "{} does not hold a node id; delete it to make a new one", file.display());
                Ok(NodeId(id.to_string()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = crate::random::uuid_v4();
                durable::write(&file, id.as_bytes(), durable::Mode::Public)?;
                Ok(NodeId(id))
            }
            Err(e) => Err(e).with_context(|| format!("reading {}", file.display())),
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The operating system's host name.
pub(crate) fn os_hostname() -> String {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if rc == 0 {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            let name = String::from_utf8_lossy(&buf[..end]).into_owned();
            if !name.is_empty() {
                return name;
            }
        }
    }
    std::env::var("COMPUTERNAME").or_else(|_| std::env::var("HOSTNAME")).unwrap_or_else(|_| "localhost".into())
}

/// The platform name as 1.0.21 (Node's `process.platform`) reports it.
pub(crate) fn platform() -> &'static str {
    match std::env::consts::OS {
        "macos" => "darwin",
        "windows" => "win32",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_id_is_created_once_and_then_reused() {
        let dir = std::env::temp_dir().join(format!("loopsy-id-{}", crate::random::hex(6)));
        let paths = Paths::from_dir(&dir).unwrap();
        let first = NodeId::load_or_create(&paths).unwrap();
        assert!(is_uuid(first.as_str()));
        assert_eq!(NodeId::load_or_create(&paths).unwrap(), first);
        std::fs::write(paths.node_id_file(), "garbage").unwrap();
        assert!(NodeId::load_or_create(&paths).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn platform_uses_node_names() {
        assert!(!["macos", "windows"].contains(&platform()));
    }
}
