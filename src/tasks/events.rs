//! A task's event log: numbered events in a bounded buffer, and the live subscribers.
//!
//! Pure data structure (no I/O, no clock): the caller passes timestamps. Bounds: at most
//! [`MAX_EVENTS`] events and [`MAX_BYTES`] of serialised JSON per task; the oldest go first.
//! A subscriber that does not keep up is dropped (it can reconnect with `Last-Event-ID`), so a
//! slow client never makes the daemon buffer without limit.

use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::Value;

use super::api::{Event, EventType};

/// Events kept per task (1.0.21's buffer size).
pub(crate) const MAX_EVENTS: usize = 500;
/// Serialised bytes kept per task.
pub(crate) const MAX_BYTES: usize = 2 * 1024 * 1024;
/// One event's data larger than this is replaced by a truncated text.
pub(crate) const MAX_EVENT_BYTES: usize = 256 * 1024;
/// Events a live subscriber may lag behind before it is dropped.
const SUBSCRIBER_BACKLOG: usize = 1024;

/// An event with its JSON text, rendered once.
#[derive(Debug)]
pub(crate) struct Stored {
    pub event: Event,
    pub json: String,
}

pub(crate) type Subscriber = smol::channel::Receiver<Arc<Stored>>;

#[derive(Debug)]
pub(crate) struct EventLog {
    task_id: String,
    next_seq: u64,
    buffer: VecDeque<Arc<Stored>>,
    bytes: usize,
    subscribers: Vec<smol::channel::Sender<Arc<Stored>>>,
    /// Set once the `exit` event was pushed: no subscriber will get anything more.
    closed: bool,
}

impl EventLog {
    pub(crate) fn new(task_id: &str) -> EventLog {
        EventLog {
            task_id: task_id.to_string(),
            next_seq: 1,
            buffer: VecDeque::new(),
            bytes: 0,
            subscribers: Vec::new(),
            closed: false,
        }
    }

    /// Numbers, stores and delivers one event; an `exit` event ends every subscription.
    pub(crate) fn push(&mut self, kind: EventType, data: Value, now: u64) -> Arc<Stored> {
        let data = bounded(data);
        let event = Event { kind, task_id: self.task_id.clone(), timestamp: now, data, seq: self.next_seq };
        self.next_seq += 1;
        let json = serde_json::to_string(&event).expect("events serialise");
        let stored = Arc::new(Stored { event, json });
        self.bytes += stored.json.len();
        self.buffer.push_back(stored.clone());
        while self.buffer.len() > MAX_EVENTS || (self.bytes > MAX_BYTES && self.buffer.len() > 1) {
            let old = self.buffer.pop_front().expect("not empty");
            self.bytes -= old.json.len();
        }
        self.subscribers.retain(|s| s.try_send(stored.clone()).is_ok());
        if kind == EventType::Exit {
            self.closed = true;
            self.subscribers.clear();
        }
        stored
    }

    /// Buffered events with `seq > since`.
    pub(crate) fn since(&self, since: u64) -> Vec<Arc<Stored>> {
        self.buffer.iter().filter(|s| s.event.seq > since).cloned().collect()
    }

    /// Buffered events with `timestamp > ms` (1.0.21's lossy resume, kept for its clients).
    pub(crate) fn since_timestamp(&self, ms: u64) -> Vec<Arc<Stored>> {
        self.buffer.iter().filter(|s| s.event.timestamp > ms).cloned().collect()
    }

    pub(crate) fn all(&self) -> Vec<Event> {
        self.buffer.iter().map(|s| s.event.clone()).collect()
    }

    /// A live subscription, or `None` once the log is closed. Taken under the same lock as
    /// the replay, so no event falls between replay and subscription.
    pub(crate) fn subscribe(&mut self) -> Option<Subscriber> {
        if self.closed {
            return None;
        }
        let (sender, receiver) = smol::channel::bounded(SUBSCRIBER_BACKLOG);
        self.subscribers.push(sender);
        Some(receiver)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buffer.len()
    }
}

/// Replaces oversized data by a truncated string, so one event cannot hold the buffer.
fn bounded(data: Value) -> Value {
    let size = match &data {
        Value::String(text) => text.len(),
        other => serde_json::to_string(other).map(|s| s.len()).unwrap_or(0),
    };
    if size <= MAX_EVENT_BYTES {
        return data;
    }
    let text = match data {
        Value::String(text) => text,
        other => other.to_string(),
    };
    let mut end = MAX_EVENT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Value::String(format!("{}… [truncated, {size} bytes in all]", &text[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_are_numbered_from_one_and_replayed_after_a_sequence_number() {
        let mut log = EventLog::new("t");
        for i in 0..5 {
            log.push(EventType::Text, json!(format!("e{i}")), 100);
        }
        let seqs: Vec<u64> = log.since(3).iter().map(|s| s.event.seq).collect();
        assert_eq!(seqs, [4, 5]);
        assert_eq!(log.since(0).len(), 5);
        assert!(log.since_timestamp(100).is_empty());
        assert!(log.since(0)[0].json.contains(r#""seq":1"#));
    }

    #[test]
    fn the_buffer_keeps_the_newest_events_within_its_bounds() {
        let mut log = EventLog::new("t");
        for i in 0..(MAX_EVENTS + 20) {
            log.push(EventType::Text, json!(i), 0);
        }
        assert_eq!(log.len(), MAX_EVENTS);
        assert_eq!(log.since(0)[0].event.seq, 21);
        let mut big = EventLog::new("t");
        for _ in 0..20 {
            big.push(EventType::Text, json!("x".repeat(200_000)), 0);
        }
        assert!(big.bytes <= MAX_BYTES, "{} bytes", big.bytes);
        let huge = big.push(EventType::Text, json!("y".repeat(MAX_EVENT_BYTES * 2)), 0);
        assert!(huge.json.len() < MAX_EVENT_BYTES + 200);
        assert!(huge.event.data.as_str().unwrap().ends_with("bytes in all]"));
    }

    #[test]
    fn subscribers_get_new_events_and_nothing_after_exit() {
        let mut log = EventLog::new("t");
        log.push(EventType::Status, json!({"status": "running"}), 0);
        let sub = log.subscribe().unwrap();
        log.push(EventType::Text, json!("hi"), 0);
        log.push(EventType::Exit, json!({"exitCode": 0}), 0);
        assert_eq!(sub.try_recv().unwrap().event.seq, 2);
        assert_eq!(sub.try_recv().unwrap().event.kind, EventType::Exit);
        assert!(sub.try_recv().is_err());
        assert!(sub.is_closed(), "the exit event ends the subscription");
        assert!(log.subscribe().is_none());
    }
}
