//! The envelopes of messages still to be delivered, kept privately at send time: one file per
//! message in `<data>/outbox/`, written durably before the first attempt.
//!
//! `outbox:<id>` in the context store is 1.0.21's record of a sent message, and any caller who
//! may write the context (a peer's key) can change it. Delivering what it says at retry time
//! would let someone else put words in our sender's mouth, so every attempt sends the envelope
//! kept here instead. A file each, rather than inside `messages.json`: the book is rewritten
//! after every change and must stay small, while bodies may be up to 64 Ki characters.

use std::path::{Path, PathBuf};

use super::envelope::{is_valid_id, Envelope};
use crate::durable::{self, Mode};

/// `<dir>/<id>.json`; `None` for anything that is not a message id (so never a path elsewhere).
fn file(dir: &Path, id: &str) -> Option<PathBuf> {
    is_valid_id(id).then(|| dir.join(format!("{id}.json")))
}

/// Keeps `envelope` (0600: a message may be private).
pub(super) fn keep(dir: &Path, envelope: &Envelope) -> anyhow::Result<()> {
    let path = file(dir, &envelope.id).ok_or_else(|| anyhow::anyhow!("'{}' is not a message id", envelope.id))?;
    durable::create_private_dir(dir)?;
    durable::write(&path, envelope.to_value().as_bytes(), Mode::Secret)
}

/// The envelope kept for message `id`, if any (and if it is still a valid envelope of that id).
pub(super) fn load(dir: &Path, id: &str) -> Option<Envelope> {
    let text = std::fs::read_to_string(file(dir, id)?).ok()?;
    Envelope::parse(&text).filter(|envelope| envelope.id == id)
}

/// Forgets the envelope of message `id`.
pub(super) fn forget(dir: &Path, id: &str) {
    if let Some(path) = file(dir, id) {
        let _ = std::fs::remove_file(path);
    }
}

/// Forgets every kept envelope whose message is not `wanted` any more (delivered, expired or
/// forgotten); only files named as this module names them are looked at.
pub(super) fn prune(dir: &Path, wanted: impl Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")).filter(|id| is_valid_id(id)) else {
            continue;
        };
        if !wanted(id) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::envelope::MessageType;

    #[test]
    fn envelopes_are_kept_by_id_and_pruned_when_no_longer_wanted() {
        let dir = std::env::temp_dir().join(format!("loopsy-kept-{}", crate::random::hex(6)));
        let envelope = |id: &str| Envelope {
            from: "a".into(),
            to: "b".into(),
            ts: 1,
            id: id.into(),
            kind: MessageType::Chat,
            body: "the words as sent".into(),
        };
        keep(&dir, &envelope("1-a-0001")).unwrap();
        keep(&dir, &envelope("2-a-0002")).unwrap();
        assert_eq!(load(&dir, "1-a-0001"), Some(envelope("1-a-0001")));
        assert!(keep(&dir, &envelope("../../x")).is_err(), "never a path outside the directory");
        assert_eq!(load(&dir, "../1-a-0001"), None);
        std::fs::write(dir.join("notes.txt"), "not ours").unwrap();
        prune(&dir, |id| id == "2-a-0002");
        assert_eq!(load(&dir, "1-a-0001"), None);
        assert!(load(&dir, "2-a-0002").is_some() && dir.join("notes.txt").exists());
        forget(&dir, "2-a-0002");
        assert_eq!(load(&dir, "2-a-0002"), None);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
