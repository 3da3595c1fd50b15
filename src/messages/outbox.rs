//! The delivery book: what this node still has to deliver (messages and acks), what became of
//! what it sent, and the ids of messages it has acknowledged (to drop re-deliveries). Pure
//! logic plus its file, `messages.json`; no networking.
//!
//! A record is small: the message itself is kept in its own file (`kept.rs`) and, for 1.0.21, in
//! the context store (`outbox:<id>`), so the whole book is rewritten atomically after every change
//! without copying message bodies.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::envelope::{MessageType, ACK_TTL_SECS, MESSAGE_TTL_SECS};

/// Records kept at most (messages and acks together); beyond that new sends are refused.
pub(crate) const MAX_RECORDS: usize = 1000;
/// Format version of `messages.json`.
const VERSION: u32 = 1;

/// What a record delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    /// A message of ours, to `inbox:<to>:<id>` on the peer.
    Message,
    /// Our ack of the peer's message `id`, to `ack:<us>:<id>` and `ack:<us>` on the peer.
    Ack,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Delivery {
    Queued,
    Delivered,
    Expired,
}

impl Delivery {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Delivery::Queued => "queued",
            Delivery::Delivered => "delivered",
            Delivery::Expired => "expired",
        }
    }
}

/// One delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Record {
    pub kind: Kind,
    /// The message id (ours for a message, the peer's for an ack).
    pub id: String,
    /// The peer's messaging name (its hostname); for a message also the envelope's `to`.
    pub to: String,
    /// Whether `to` is only the peer's address so far: the name is learnt at delivery.
    #[serde(default)]
    pub provisional: bool,
    /// The peer's node id in the registry when the record was made.
    pub peer: String,
    /// How the peer was named (its key depends on it, see `resolve::key_for`).
    pub spec: String,
    /// The message's type (for an ack: the type of the message acknowledged).
    #[serde(rename = "type")]
    pub message_type: MessageType,
    pub state: Delivery,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub created_at: u64,
    pub next_attempt_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<u64>,
    /// The envelope was kept at send time (`kept.rs`) and is delivered from there; false only
    /// for records of an older version, whose envelope is still read from `outbox:<id>`.
    #[serde(default)]
    pub kept: bool,
}

impl Record {
    /// When an undelivered record gives up: the message (or ack) would have expired anyway.
    pub(crate) fn expires_at(&self) -> u64 {
        self.created_at + ttl_secs(self.kind) * 1000
    }

    /// When the record itself is forgotten: long enough to answer status questions about it.
    fn forget_at(&self) -> u64 {
        self.created_at + ACK_TTL_SECS * 1000
    }
}

fn ttl_secs(kind: Kind) -> u64 {
    match kind {
        Kind::Message => MESSAGE_TTL_SECS,
        Kind::Ack => ACK_TTL_SECS,
    }
}

/// The back-off policy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait after `failures` failed attempts: `initial` doubling up to `max`, plus up to a
    /// quarter more (`jitter` in 0..1), so peers coming back are not hit by everyone at once.
    pub(crate) fn delay(&self, failures: u32, jitter: f64) -> Duration {
        let doubled = self.initial.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
        doubled.min(self.max).mul_f64(1.0 + 0.25 * jitter.clamp(0.0, 1.0))
    }
}

/// Everything in `messages.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Book {
    version: u32,
    // Invariant: keyed by `(kind, id)`.
    records: BTreeMap<String, Record>,
    /// Ids of messages acknowledged here, to the time (ms) they may be forgotten.
    seen: BTreeMap<String, u64>,
    /// Messaging names learnt for peers the registry knows only by address, by node id: from
    /// their `/status`, or from the envelopes they delivered with their own key. Kept, so an ack
    /// can be queued for a sender that is down.
    #[serde(default)]
    names: BTreeMap<String, String>,
    /// Deliveries being attempted right now (not saved: after a restart nothing is).
    #[serde(skip)]
    in_flight: HashSet<String>,
}

/// The book could not take another record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the outbox is full ({MAX_RECORDS} deliveries on record); try again once some have expired")]
pub(crate) struct Full;

fn slot(kind: Kind, id: &str) -> String {
    match kind {
        Kind::Message => format!("m:{id}"),
        Kind::Ack => format!("a:{id}"),
    }
}

impl Book {
    /// Reads `path`; a missing file is an empty book. A file that cannot be read as a book is an
    /// error (the caller sets it aside).
    pub(crate) fn load(path: &Path, now: u64) -> anyhow::Result<Book> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Book::default()),
            Err(e) => return Err(e.into()),
        };
        let mut book: Book = serde_json::from_slice(&bytes)?;
        if book.version != VERSION {
            anyhow::bail!("format version {} is not {VERSION}", book.version);
        }
        for record in book.records.values_mut() {
            // Retry soon after a restart: the peer may have come back while we were down.
            if record.state == Delivery::Queued {
                record.next_attempt_at = record.next_attempt_at.min(now);
            }
        }
        book.sweep(now);
        Ok(book)
    }

    /// The file's bytes.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let saved = Saved { version: VERSION, records: &self.records, seen: &self.seen, names: &self.names };
        let mut bytes = serde_json::to_vec(&saved).expect("the book serialises");
        bytes.push(b'\n');
        bytes
    }

    /// Adds a queued record, due now.
    pub(crate) fn add(&mut self, record: Record, now: u64) -> Result<(), Full> {
        let key = slot(record.kind, &record.id);
        if !self.records.contains_key(&key) && self.records.len() >= MAX_RECORDS {
            self.sweep(now);
            if self.records.len() >= MAX_RECORDS {
                return Err(Full);
            }
        }
        self.records.insert(key, record);
        Ok(())
    }

    pub(crate) fn get(&self, kind: Kind, id: &str) -> Option<&Record> {
        self.records.get(&slot(kind, id))
    }

    /// Every message record (not acks), oldest first.
    pub(crate) fn messages(&self) -> Vec<Record> {
        let mut list: Vec<Record> = self.records.values().filter(|r| r.kind == Kind::Message).cloned().collect();
        list.sort_by_key(|r| r.created_at);
        list
    }

    /// Claims a queued record for one attempt; false if it is not queued or already claimed.
    pub(crate) fn begin(&mut self, kind: Kind, id: &str) -> bool {
        let key = slot(kind, id);
        let queued = self.records.get(&key).is_some_and(|r| r.state == Delivery::Queued);
        queued && self.in_flight.insert(key)
    }

    /// Gives up a claim of [`Book::begin`] without an attempt: the retrier may take the record.
    pub(crate) fn release(&mut self, kind: Kind, id: &str) {
        self.in_flight.remove(&slot(kind, id));
    }

    /// Records the outcome of an attempt claimed with [`Book::begin`]; returns whether it is
    /// worth saving now. A failure is not: after a restart every queued record is due at once
    /// anyway, and rewriting the book for each failed attempt would cost a write per record per
    /// retry while a peer is down.
    pub(crate) fn finish(
        &mut self,
        kind: Kind,
        id: &str,
        outcome: Result<Option<String>, String>,
        now: u64,
        delay: Duration,
    ) -> bool {
        let key = slot(kind, id);
        self.in_flight.remove(&key);
        let Some(record) = self.records.get_mut(&key) else { return false };
        record.attempts += 1;
        let delivered = outcome.is_ok();
        match outcome {
            Ok(learnt_name) => {
                if let Some(name) = learnt_name {
                    record.to = name;
                    record.provisional = false;
                }
                record.state = Delivery::Delivered;
                record.delivered_at = Some(now);
                record.last_error = None;
            }
            Err(error) => {
                record.last_error = Some(error);
                record.next_attempt_at = now + delay.as_millis() as u64;
                if record.next_attempt_at >= record.expires_at() {
                    // The next try would come after the message is gone anyway.
                    record.next_attempt_at = record.expires_at();
                }
            }
        }
        delivered
    }

    /// Expires what is overdue and forgets what is old; returns whether anything changed.
    pub(crate) fn sweep(&mut self, now: u64) -> bool {
        let before = (self.records.len(), self.seen.len());
        let mut expired = false;
        for record in self.records.values_mut() {
            if record.state == Delivery::Queued && now >= record.expires_at() {
                record.state = Delivery::Expired;
                expired = true;
            }
        }
        self.records.retain(|_, r| now < r.forget_at());
        self.seen.retain(|_, until| now < *until);
        expired || before != (self.records.len(), self.seen.len())
    }

    /// Queued records due at `now` that nobody is attempting, and when the next one is due.
    pub(crate) fn due(&self, now: u64) -> (Vec<Record>, Option<u64>) {
        let mut due = Vec::new();
        let mut next: Option<u64> = None;
        for (key, record) in &self.records {
            if record.state != Delivery::Queued || self.in_flight.contains(key) {
                continue;
            }
            if record.next_attempt_at <= now {
                due.push(record.clone());
            } else {
                next = Some(next.map_or(record.next_attempt_at, |n| n.min(record.next_attempt_at)));
            }
        }
        (due, next)
    }

    /// Remembers that message `id` was acknowledged here.
    pub(crate) fn mark_seen(&mut self, id: &str, now: u64) {
        self.seen.insert(id.to_string(), now + ACK_TTL_SECS * 1000);
    }

    /// Whether message `id` of ours still waits for delivery (its kept envelope is needed).
    pub(crate) fn is_queued_message(&self, id: &str) -> bool {
        self.get(Kind::Message, id).is_some_and(|r| r.state == Delivery::Queued)
    }

    pub(crate) fn is_seen(&self, id: &str, now: u64) -> bool {
        self.seen.get(id).is_some_and(|until| now < *until)
    }

    /// The messaging name learnt for the peer `node_id`.
    pub(crate) fn name_of(&self, node_id: &str) -> Option<&str> {
        self.names.get(node_id).map(String::as_str)
    }

    /// Remembers `name` for `node_id`; returns whether that changed anything.
    pub(crate) fn learn_name(&mut self, node_id: &str, name: &str) -> bool {
        self.names.insert(node_id.to_string(), name.to_string()).as_deref() != Some(name)
    }
}

/// What is written: the book without its in-memory parts.
#[derive(Serialize)]
struct Saved<'a> {
    version: u32,
    records: &'a BTreeMap<String, Record>,
    seen: &'a BTreeMap<String, u64>,
    names: &'a BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: Kind, id: &str, created_at: u64) -> Record {
        Record {
            kind,
            id: id.into(),
            to: "bob".into(),
            provisional: false,
            peer: "node".into(),
            spec: "bob".into(),
            message_type: MessageType::Chat,
            state: Delivery::Queued,
            attempts: 0,
            last_error: None,
            created_at,
            next_attempt_at: created_at,
            delivered_at: None,
            kept: true,
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn back_off_doubles_up_to_the_maximum_with_a_bounded_jitter() {
        let backoff = Backoff { initial: SECOND, max: 60 * SECOND };
        let delays: Vec<u64> = (1..=8).map(|n| backoff.delay(n, 0.0).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff.delay(1_000, 0.0), 60 * SECOND);
        assert_eq!(backoff.delay(1, 1.0), SECOND.mul_f64(1.25));
        assert_eq!(backoff.delay(7, 7.0), (60 * SECOND).mul_f64(1.25), "jitter is clamped");
    }

    #[test]
    fn a_claimed_record_is_not_due_until_its_claim_is_released() {
        let mut book = Book::default();
        book.add(record(Kind::Ack, "1-a-0001", 1_000), 1_000).unwrap();
        assert!(book.begin(Kind::Ack, "1-a-0001"), "the call that added it claims it");
        assert!(book.due(5_000).0.is_empty(), "the retrier does not take a claimed record");
        book.release(Kind::Ack, "1-a-0001");
        assert_eq!(book.due(5_000).0.len(), 1, "released, it is the retrier's");
    }

    #[test]
    fn failed_attempts_wait_and_successes_are_final() {
        let mut book = Book::default();
        book.add(record(Kind::Message, "1-a-0001", 1_000), 1_000).unwrap();
        assert_eq!(book.due(1_000).0.len(), 1);
        assert!(book.begin(Kind::Message, "1-a-0001"));
        assert!(!book.begin(Kind::Message, "1-a-0001"), "one attempt at a time");
        assert!(book.due(1_000).0.is_empty(), "an attempt in flight is not due again");
        assert!(!book.finish(Kind::Message, "1-a-0001", Err("refused".into()), 1_500, SECOND), "not saved");
        assert_eq!(book.due(2_000), (Vec::new(), Some(2_500)));
        let again = book.due(2_500).0;
        assert_eq!((again[0].attempts, again[0].last_error.as_deref()), (1, Some("refused")));
        assert!(book.begin(Kind::Message, "1-a-0001"));
        assert!(book.finish(Kind::Message, "1-a-0001", Ok(Some("bobby".into())), 2_600, SECOND), "saved");
        let done = book.get(Kind::Message, "1-a-0001").unwrap();
        assert_eq!((done.state, done.delivered_at, done.to.as_str()), (Delivery::Delivered, Some(2_600), "bobby"));
        assert!(done.last_error.is_none());
        assert!(!book.begin(Kind::Message, "1-a-0001"));
        assert_eq!(book.due(10_000), (Vec::new(), None));
    }

    #[test]
    fn undelivered_records_expire_with_their_message_and_are_forgotten_later() {
        let mut book = Book::default();
        book.add(record(Kind::Message, "m", 0), 0).unwrap();
        book.add(record(Kind::Ack, "m", 0), 0).unwrap();
        book.mark_seen("x", 0);
        assert!(!book.sweep(3_599_999));
        assert!(book.sweep(3_600_000));
        assert_eq!(book.get(Kind::Message, "m").unwrap().state, Delivery::Expired);
        assert_eq!(book.get(Kind::Ack, "m").unwrap().state, Delivery::Queued, "acks live 7200 s");
        assert!(book.is_seen("x", 7_199_999));
        assert!(book.sweep(7_200_000));
        assert!(book.get(Kind::Message, "m").is_none() && book.get(Kind::Ack, "m").is_none());
        assert!(!book.is_seen("x", 7_200_000));
    }

    #[test]
    fn a_full_book_refuses_new_records_until_old_ones_are_forgotten() {
        let mut book = Book::default();
        for i in 0..MAX_RECORDS {
            book.add(record(Kind::Message, &format!("{i}"), 0), 0).unwrap();
        }
        assert_eq!(book.add(record(Kind::Message, "new", 10), 10), Err(Full));
        book.add(record(Kind::Message, "0", 10), 10).expect("replacing a record is fine");
        book.add(record(Kind::Message, "new", 7_200_000), 7_200_000).expect("old records were forgotten");
    }

    #[test]
    fn the_file_round_trips_and_queued_records_are_due_after_a_restart() {
        let dir = std::env::temp_dir().join(format!("loopsy-book-{}", crate::random::hex(6)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("messages.json");
        assert!(Book::load(&path, 0).unwrap().records.is_empty(), "no file: an empty book");
        let mut book = Book::default();
        let mut later = record(Kind::Message, "m", 100);
        later.next_attempt_at = 60_000;
        book.add(later, 100).unwrap();
        book.mark_seen("s", 100);
        assert!(book.learn_name("node", "bob.lan") && !book.learn_name("node", "bob.lan"));
        std::fs::write(&path, book.to_bytes()).unwrap();
        let loaded = Book::load(&path, 200).unwrap();
        assert_eq!(loaded.get(Kind::Message, "m").unwrap().next_attempt_at, 200);
        assert!(loaded.is_seen("s", 200));
        assert_eq!(loaded.name_of("node"), Some("bob.lan"));
        std::fs::write(&path, b"{\"version\": 9, \"records\": {}, \"seen\": {}}").unwrap();
        assert!(Book::load(&path, 0).is_err());
        std::fs::write(&path, b"{oops").unwrap();
        assert!(Book::load(&path, 0).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
