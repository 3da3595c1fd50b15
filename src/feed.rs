//! A numbered, bounded log of changes with live subscribers, resumable with `Last-Event-ID`.
//!
//! Pure data structure (no I/O, no clock). Each change gets the next sequence number; its SSE
//! id is `<epoch>.<seq>`, where the epoch is random per log (so per daemon process): an id of
//! another process, or one older than what the buffer still holds, cannot be resumed and the
//! reader starts again from a snapshot. At most `max_items` changes and `max_bytes` of their
//! JSON are kept; a subscriber that falls [`BACKLOG`] changes behind is dropped (its stream
//! ends and the client resumes), so a slow reader never makes the log buffer without bound.
//! Each change carries a `tag` (who may see it), which readers filter on.

use std::collections::VecDeque;
use std::sync::Arc;

/// Changes a live subscriber may lag behind before it is dropped.
pub(crate) const BACKLOG: usize = 256;

/// One change, with its JSON rendered once.
#[derive(Debug)]
pub(crate) struct Change<T> {
    pub seq: u64,
    pub tag: T,
    pub json: String,
}

pub(crate) type Subscriber<T> = smol::channel::Receiver<Arc<Change<T>>>;

#[derive(Debug)]
pub(crate) struct Feed<T> {
    epoch: String,
    next_seq: u64,
    buffer: VecDeque<Arc<Change<T>>>,
    bytes: usize,
    max_items: usize,
    max_bytes: usize,
    subscribers: Vec<smol::channel::Sender<Arc<Change<T>>>>,
}

impl<T> Feed<T> {
    pub(crate) fn new(max_items: usize, max_bytes: usize) -> Feed<T> {
        Feed {
            epoch: crate::random::hex(8),
            next_seq: 1,
            buffer: VecDeque::new(),
            bytes: 0,
            max_items: max_items.max(1),
            max_bytes,
            subscribers: Vec::new(),
        }
    }

    /// What makes this log's ids differ from another process's.
    pub(crate) fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The sequence number of the latest change (0: none yet).
    pub(crate) fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// The SSE id of change `seq`.
    pub(crate) fn id(&self, seq: u64) -> String {
        format!("{}.{seq}", self.epoch)
    }

    /// Numbers, stores and delivers one change; returns its sequence number.
    pub(crate) fn push(&mut self, tag: T, json: String) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let change = Arc::new(Change { seq, tag, json });
        self.bytes += change.json.len();
        self.buffer.push_back(change.clone());
        while self.buffer.len() > self.max_items || (self.bytes > self.max_bytes && self.buffer.len() > 1) {
            let old = self.buffer.pop_front().expect("not empty");
            self.bytes -= old.json.len();
        }
        self.subscribers.retain(|s| s.try_send(change.clone()).is_ok());
        seq
    }

    /// The changes after `last_event_id`, or `None` when it cannot be resumed: malformed, of
    /// another epoch, in the future, or older than the buffer.
    pub(crate) fn resume(&self, last_event_id: &str) -> Option<Vec<Arc<Change<T>>>> {
        let (epoch, seq) = last_event_id.trim().split_once('.')?;
        let seq: u64 = seq.parse().ok()?;
        if epoch != self.epoch || seq > self.last_seq() {
            return None;
        }
        let first = self.buffer.front().map_or(self.next_seq, |c| c.seq);
        if seq + 1 < first {
            return None;
        }
        Some(self.buffer.iter().filter(|c| c.seq > seq).cloned().collect())
    }

    /// A live subscription from the next change on. Take it under the same lock as the replay
    /// or snapshot, so no change falls in between.
    pub(crate) fn subscribe(&mut self) -> Subscriber<T> {
        let (sender, receiver) = smol::channel::bounded(BACKLOG);
        self.subscribers.retain(|s| !s.is_closed());
        self.subscribers.push(sender);
        receiver
    }

    /// Whether someone still reads the changes.
    pub(crate) fn has_subscribers(&mut self) -> bool {
        self.subscribers.retain(|s| !s.is_closed());
        !self.subscribers.is_empty()
    }

    /// Ends every subscription (the daemon is stopping).
    pub(crate) fn close(&mut self) {
        self.subscribers.clear();
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buffer.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed() -> Feed<u8> {
        let mut feed = Feed::new(4, 1 << 20);
        for i in 0..3 {
            feed.push(i, format!("change {i}"));
        }
        feed
    }

    #[test]
    fn a_reader_resumes_after_its_last_id_while_the_buffer_holds_the_next_change() {
        let mut feed = feed();
        let seqs = |changes: Vec<Arc<Change<u8>>>| changes.iter().map(|c| c.seq).collect::<Vec<_>>();
        assert_eq!(seqs(feed.resume(&feed.id(1)).unwrap()), [2, 3]);
        assert_eq!(seqs(feed.resume(&feed.id(3)).unwrap()), Vec::<u64>::new());
        assert_eq!(seqs(feed.resume(&feed.id(0)).unwrap()), [1, 2, 3]);
        for i in 3..8 {
            feed.push(i, "x".into());
        }
        // Changes 1..=4 are gone: 4 is the oldest id still resumable (5 is buffered).
        assert_eq!(seqs(feed.resume(&feed.id(4)).unwrap()), [5, 6, 7, 8]);
        assert!(feed.resume(&feed.id(3)).is_none(), "a gap means a snapshot");
        assert!(feed.resume(&feed.id(9)).is_none(), "an id from the future");
        assert!(feed.resume("other.5").is_none(), "another daemon process");
        for bad in ["", "5", ".5", "x.y", &format!("{}.-1", feed.epoch), &format!("{}.5.5", feed.epoch)] {
            assert!(feed.resume(bad).is_none(), "{bad:?}");
        }
    }

    /// `Last-Event-ID` is whatever a client sends.
    #[test]
    fn any_last_event_id_is_judged_without_panicking() {
        let feed = feed();
        let valid = feed.id(2);
        for text in crate::fuzz::inputs(&[&valid, "0.0"], "0123456789abcdef.-", 29, 3_000) {
            if let Some(changes) = feed.resume(&text) {
                let (epoch, seq) = text.trim().split_once('.').unwrap();
                assert_eq!(epoch, feed.epoch, "{text:?}");
                let seq: u64 = seq.parse().unwrap();
                assert!(changes.iter().all(|c| c.seq > seq), "{text:?}");
            }
        }
    }

    #[test]
    fn bytes_are_bounded_and_a_slow_subscriber_is_dropped() {
        let mut feed: Feed<()> = Feed::new(1000, 100);
        for _ in 0..10 {
            feed.push((), "y".repeat(30));
        }
        assert!(feed.bytes <= 100 && feed.len() == 3, "{} bytes, {} changes", feed.bytes, feed.len());
        let slow = feed.subscribe();
        let fast = feed.subscribe();
        for _ in 0..BACKLOG + 1 {
            feed.push((), "z".into());
            while fast.try_recv().is_ok() {}
        }
        assert!(slow.is_closed(), "a subscriber that fell behind is dropped");
        assert!(!fast.is_closed());
        assert_eq!(slow.len(), BACKLOG, "what it had stays readable; it resumes from its last id");
        feed.close();
        assert!(fast.is_closed());
    }
}
