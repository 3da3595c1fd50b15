//! Watchers: who wants to hear about changes under which key prefix.
//!
//! Changes are handed out in revision order (the caller broadcasts under the store lock). A
//! watcher that falls [`BUFFER`] changes behind is dropped and told so, instead of letting its
//! queue grow without bound; it can reconnect and list again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use smol::channel::{Receiver, Sender, TrySendError};

use super::entry::Change;

/// Unread changes a watcher may have before it is dropped.
pub(crate) const BUFFER: usize = 1024;

#[derive(Debug, Default)]
pub(super) struct Watchers {
    next_id: u64,
    list: Vec<Watcher>,
}

#[derive(Debug)]
struct Watcher {
    id: u64,
    prefix: String,
    sender: Sender<Change>,
    overflowed: Arc<AtomicBool>,
}

/// The receiving end of one watcher.
#[derive(Debug)]
pub(super) struct Feed {
    pub id: u64,
    pub changes: Receiver<Change>,
    /// Set when the watcher was dropped for falling behind.
    pub overflowed: Arc<AtomicBool>,
}

impl Watchers {
    pub(super) fn add(&mut self, prefix: &str) -> Feed {
        let (sender, changes) = smol::channel::bounded(BUFFER);
        let overflowed = Arc::new(AtomicBool::new(false));
        self.next_id += 1;
        let id = self.next_id;
        self.list.push(Watcher { id, prefix: prefix.to_string(), sender, overflowed: overflowed.clone() });
        Feed { id, changes, overflowed }
    }

    pub(super) fn remove(&mut self, id: u64) {
        self.list.retain(|watcher| watcher.id != id);
    }

    /// Queues `change` for every watcher whose prefix matches its key.
    pub(super) fn broadcast(&mut self, change: &Change) {
        if self.list.is_empty() {
            return;
        }
        self.list.retain(|watcher| {
            if !change.key().starts_with(&watcher.prefix) {
                return true;
            }
            match watcher.sender.try_send(change.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    watcher.overflowed.store(true, Ordering::SeqCst);
                    false
                }
                Err(TrySendError::Closed(_)) => false,
            }
        });
    }

    /// Ends every feed (the daemon is stopping).
    pub(super) fn close_all(&mut self) {
        self.list.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delete(key: &str, revision: u64) -> Change {
        Change::Delete { key: key.into(), revision }
    }

    #[test]
    fn watchers_get_only_their_prefix_and_slow_ones_are_dropped() {
        let mut watchers = Watchers::default();
        let inbox = watchers.add("inbox:");
        let all = watchers.add("");
        watchers.broadcast(&delete("inbox:1", 1));
        watchers.broadcast(&delete("outbox:1", 2));
        assert_eq!(inbox.changes.try_recv().unwrap(), delete("inbox:1", 1));
        assert!(inbox.changes.try_recv().is_err());
        assert_eq!(all.changes.len(), 2);
        for revision in 3..3 + BUFFER as u64 {
            watchers.broadcast(&delete("inbox:x", revision));
        }
        assert_eq!(watchers.list.len(), 1, "the watcher of everything fell behind");
        assert!(all.overflowed.load(Ordering::SeqCst));
        assert!(!inbox.overflowed.load(Ordering::SeqCst));
        drop(inbox);
        watchers.broadcast(&delete("inbox:y", 9999));
        assert!(watchers.list.is_empty(), "a closed feed is forgotten");
    }
}
