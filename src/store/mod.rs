//! The context store: a key → string map with TTLs, revisions and watchers, kept durably in the
//! data directory. No networking here: the HTTP routes are in `daemon/routes/context.rs`.
//!
//! # On disk
//!
//! - `context.json`: the snapshot, in 1.0.21's format (§9.3, a pretty-printed JSON array of
//!   entries in insertion order) with one more member per entry, `revision`. 1.0.21 reads it
//!   (it ignores the extra member), and a 1.0.21 file is imported on first start (entries get
//!   revisions, odd values are converted, see `snapshot.rs`).
//! - `context.journal`: every put and delete since the snapshot, as checksummed frames (see
//!   `journal.rs`). A change is acknowledged to the client only after its frame is fsync'd, so
//!   it survives `kill -9` and power loss; a write costs O(size of the entry).
//!
//! The journal is folded into a new snapshot when it outgrows the snapshot (at least 4 MiB), and
//! at a clean stop. Compaction first writes the snapshot (atomically, `durable::write`), then
//! replaces the journal by one holding only a base record with the store's revision.
//!
//! Loading: read the snapshot (highest entry revision `M`), then replay the journal's changes
//! whose revision is above `M`; the store's revision counter becomes the highest of `M`, the
//! journal's base and its records, so a revision is never given out twice. Replaying only
//! changes above `M` makes a crash between the two steps of a compaction harmless: the old
//! journal then holds every change the new snapshot holds, and the changes above `M` that it
//! replays end, for every key they touch, in the state the snapshot has.
//!
//! A frame cut short at the end of the journal is the append a crash interrupted (never
//! acknowledged) and is dropped. A damaged frame with intact ones after it is not: the store does
//! not open, the error says where and what to do, and the file stays as it is.
//!
//! Switch to 1.0.21 only after a clean stop (then the journal holds no changes).
//!
//! # Semantics
//!
//! Revisions are per store and monotonic: every put and every delete takes the next one; an
//! expiry takes none (its watch event carries the expired entry's revision). A client never
//! sees a change that is not yet durable: reads of an entry whose write is still being synced
//! wait for that sync.

mod entry;
pub(crate) mod journal;
mod map;
mod snapshot;
mod watch;
pub(crate) mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;

#[cfg(test)]
pub(crate) use entry::MAX_TTL_SECS;
pub(crate) use entry::{Change, Entry, Ttl, DEFAULT_MAX_ENTRIES, MAX_KEY_BYTES, MAX_VALUE_BYTES};
use journal::{Journal, Record};
use map::ContextMap;
pub(crate) use map::{check_key, Put};
pub(crate) use watch::BUFFER as WATCH_BUFFER;
use watch::{Feed, Watchers};
use writer::{Message, Owner, Started, Watermark, Writer};

use crate::paths::Paths;

/// The sweeper looks for expired entries at least this often.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// What can go wrong with a context operation.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("Key '{key}' not found")]
    NotFound { key: String },
    #[error("a context key must be 1 to {MAX_KEY_BYTES} bytes long, this one has {len}")]
    BadKey { len: usize },
    #[error("Value exceeds max size of {MAX_VALUE_BYTES} bytes (it has {len})")]
    ValueTooLarge { len: usize },
    #[error("Max context entries ({max}) reached")]
    TooManyEntries { max: usize },
    #[error("Revision conflict on key '{key}': its current revision is {current}, ifRevision was {expected}")]
    RevisionConflict { key: String, current: u64, expected: u64 },
    #[error("{0}")]
    Storage(String),
}

/// A cheap-clone handle on the store of one data directory.
#[derive(Clone)]
pub(crate) struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Mutex<Shared>>,
    queue: mpsc::Sender<Message<Record>>,
    watermark: Arc<Watermark>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Wakes the sweeper when an entry is written that expires before its next round.
    nudge: (smol::channel::Sender<()>, smol::channel::Receiver<()>),
    /// When the sweeper runs next (ms since the epoch).
    next_sweep: AtomicU64,
}

/// Everything behind the store lock.
pub(crate) struct Shared {
    map: ContextMap,
    watchers: Watchers,
}

/// The context store's files, as the journal writer compacts them: `context.json` and the
/// journal's base record.
struct ContextFiles {
    shared: Arc<Mutex<Shared>>,
    snapshot_path: PathBuf,
}

impl Owner for ContextFiles {
    type Record = Record;
    type Image = (Vec<Arc<Entry>>, u64);
    const NAME: &'static str = "context";

    fn capture(&self, drain: &mut dyn FnMut()) -> Self::Image {
        let shared = self.shared.lock().expect("store lock");
        drain();
        (shared.map.entries(), shared.map.revision())
    }

    fn compact(&mut self, journal: &mut Journal<Record>, (entries, revision): Self::Image) -> anyhow::Result<u64> {
        let now = crate::clock::now_ms();
        let live: Vec<Arc<Entry>> = entries.into_iter().filter(|entry| !entry.is_expired(now)).collect();
        let bytes = snapshot::write(&self.snapshot_path, &live)?;
        journal.reset(&[Record::Base { format: journal::FORMAT, revision }])?;
        Ok(bytes)
    }
}

impl Store {
    /// Loads the store of `paths` (importing a 1.0.21 `context.json`) and starts its writer.
    /// New keys are refused while `max_entries` live entries exist (what is on disk is loaded
    /// whole, even past it).
    pub(crate) fn open(paths: &Paths, max_entries: usize) -> anyhow::Result<Store> {
        let now = crate::clock::now_ms();
        let snapshot_path = paths.context_file();
        let mut map = ContextMap::with_max_entries(max_entries);
        let snapshot = snapshot::load(&snapshot_path, now)?;
        let snapshot_revision = snapshot.iter().map(|entry| entry.revision).max().unwrap_or(0);
        for entry in snapshot {
            map.apply(Change::Put(entry));
        }
        let mut base = 0;
        let (mut journal, replay) = Journal::open(&paths.context_journal(), |record| {
            match record {
                Record::Base { format, revision } => {
                    anyhow::ensure!(
                        format == journal::FORMAT,
                        "record format {format}; this loopsy reads format {}",
                        journal::FORMAT
                    );
                    base = base.max(revision);
                }
                Record::Put { entry } if entry.revision > snapshot_revision => map.apply(Change::Put(entry)),
                Record::Delete { key, revision } if revision > snapshot_revision => {
                    map.apply(Change::Delete { key, revision })
                }
                Record::Put { .. } | Record::Delete { .. } => {}
            }
            Ok(())
        })?;
        map.raise_revision(base);
        if replay.dropped_bytes > 0 {
            log::warn!(
                "{}: ignored {} damaged byte(s) at the end (a write cut short by a crash)",
                paths.context_journal().display(),
                replay.dropped_bytes
            );
        }
        let imported = map.number_unrevisioned();
        map.sweep(now);
        let mut files =
            ContextFiles { shared: Arc::new(Mutex::new(Shared { map, watchers: Watchers::default() })), snapshot_path };
        // Imported entries just got revisions: write them down before anything else, or a
        // crash would let the next start number them again, differently.
        let snapshot_bytes = if imported > 0 || replay.dropped_bytes > 0 {
            let image = files.capture(&mut || {});
            files.compact(&mut journal, image).context("compacting the context store")?
        } else {
            std::fs::metadata(&files.snapshot_path).map(|m| m.len()).unwrap_or(0)
        };
        if imported > 0 {
            log::info!("imported {imported} context entries from {}", files.snapshot_path.display());
        }
        let shared = files.shared.clone();
        let revision = shared.lock().expect("store lock").map.revision();
        let Started { queue, watermark, handle } = Writer::spawn(files, journal, snapshot_bytes, revision)?;
        Ok(Store {
            inner: Arc::new(Inner {
                shared,
                queue,
                watermark,
                writer: Mutex::new(Some(handle)),
                nudge: smol::channel::bounded(1),
                next_sweep: AtomicU64::new(0),
            }),
        })
    }

    /// Creates or replaces `key`; answers once the write is durable.
    pub(crate) async fn put(&self, key: &str, put: Put, now: u64) -> Result<Arc<Entry>, StoreError> {
        let unguarded = self.put_guarded(key, put, now, || Ok::<(), std::convert::Infallible>(()));
        unguarded.await.unwrap_or_else(|never| match never {})
    }

    /// Like [`Store::put`], but only if `guard` allows it. The guard runs under the store lock,
    /// so no other write comes between its answer and this one (a fencing check). A refusal
    /// (the outer `Err`) writes nothing.
    pub(crate) async fn put_guarded<E>(
        &self,
        key: &str,
        put: Put,
        now: u64,
        guard: impl FnOnce() -> Result<(), E>,
    ) -> Result<Result<Arc<Entry>, StoreError>, E> {
        let outcome = self.locked(|shared| {
            guard()?;
            let outcome = shared.map.put(key, put, now);
            let changes = match &outcome {
                Ok((_, changes)) => changes.as_slice(),
                Err(_) => &[],
            };
            self.publish(shared, changes);
            Ok((outcome.map(|(entry, _)| entry), shared.map.revision()))
        })?;
        if let (Ok(entry), _) = &outcome {
            if entry.expires_at.is_some_and(|at| at < self.inner.next_sweep.load(Ordering::SeqCst)) {
                let _ = self.inner.nudge.0.try_send(());
            }
        }
        Ok(self.settle(outcome).await)
    }

    /// The live entry of `key`.
    pub(crate) async fn get(&self, key: &str, now: u64) -> Result<Arc<Entry>, StoreError> {
        let outcome = self.locked(|shared| {
            let mut changes = Vec::new();
            let found = shared.map.get(key, now, &mut changes);
            self.publish(shared, &changes);
            (found.ok_or_else(|| StoreError::NotFound { key: key.into() }), shared.map.revision())
        });
        self.settle(outcome).await
    }

    /// Deletes `key`; returns the revision of the delete.
    pub(crate) async fn delete(&self, key: &str, if_revision: Option<u64>, now: u64) -> Result<u64, StoreError> {
        let unguarded = self.delete_guarded(key, if_revision, now, || Ok::<(), std::convert::Infallible>(()));
        unguarded.await.unwrap_or_else(|never| match never {})
    }

    /// Like [`Store::delete`], but only if `guard` allows it (see [`Store::put_guarded`]).
    pub(crate) async fn delete_guarded<E>(
        &self,
        key: &str,
        if_revision: Option<u64>,
        now: u64,
        guard: impl FnOnce() -> Result<(), E>,
    ) -> Result<Result<u64, StoreError>, E> {
        let outcome = self.locked(|shared| {
            guard()?;
            let outcome = shared.map.delete(key, if_revision, now);
            if let Ok((_, changes)) = &outcome {
                self.publish(shared, changes);
            }
            Ok((outcome.map(|(revision, _)| revision), shared.map.revision()))
        })?;
        Ok(match outcome {
            (Ok(revision), _) => self.wait_durable(revision).await.map(|()| revision),
            (Err(e), current) => self.wait_durable(current).await.and(Err(e)),
        })
    }

    /// Live entries whose key starts with `prefix`, in insertion order.
    pub(crate) async fn list(&self, prefix: &str, now: u64) -> Result<Vec<Arc<Entry>>, StoreError> {
        let (entries, revision) = self.locked(|shared| {
            let mut changes = Vec::new();
            let entries = shared.map.list(prefix, now, &mut changes);
            self.publish(shared, &changes);
            (entries, shared.map.revision())
        });
        self.wait_durable(revision).await?;
        Ok(entries)
    }

    /// Entries that have not expired at `now`.
    pub(crate) fn live_count(&self, now: u64) -> usize {
        self.locked(|shared| shared.map.live_count(now))
    }

    /// Completes once every change up to `revision` is durable.
    pub(crate) async fn wait_durable(&self, revision: u64) -> Result<(), StoreError> {
        self.inner.watermark.wait(revision).await
    }

    /// Changes to keys under `prefix` from now on, until the daemon stops.
    pub(crate) fn watch(&self, prefix: &str) -> Subscription {
        let feed = self.locked(|shared| shared.watchers.add(prefix));
        Subscription { feed, store: self.clone() }
    }

    /// Ends every watch (the daemon is stopping).
    pub(crate) fn close_watchers(&self) {
        self.locked(|shared| shared.watchers.close_all());
    }

    /// Removes expired entries as they expire, until dropped. The daemon owns this task.
    pub(crate) async fn expire_entries(self) {
        loop {
            let now = crate::clock::now_ms();
            let interval = SWEEP_INTERVAL.as_millis() as u64;
            let at = self.locked(|shared| {
                let changes = shared.map.sweep(now);
                self.publish(shared, &changes);
                let at = shared.map.next_expiry().map_or(now + interval, |at| at.min(now + interval));
                // Under the lock: a put either is seen by `next_expiry` or sees this value.
                self.inner.next_sweep.store(at, Ordering::SeqCst);
                at
            });
            let nudged = async {
                let _ = self.inner.nudge.1.recv().await;
            };
            crate::clock::timeout(Duration::from_millis(at.saturating_sub(now)), nudged).await;
        }
    }

    /// Writes everything pending, compacts, and stops the writer. Blocks; call it last.
    pub(crate) fn close(&self) {
        self.close_watchers();
        writer::stop(&self.inner.queue, &self.inner.writer);
    }

    fn locked<T>(&self, f: impl FnOnce(&mut Shared) -> T) -> T {
        f(&mut self.inner.shared.lock().expect("store lock"))
    }

    /// Queues `changes` for the journal and the watchers; called under the lock, so both see
    /// changes in revision order.
    fn publish(&self, shared: &mut Shared, changes: &[Change]) {
        for change in changes {
            if let Some(record) = Record::of(change) {
                // A closed queue means the writer stopped; the waiter then sees the watermark fail.
                let _ = self.inner.queue.send(Message::Record(record));
            }
            shared.watchers.broadcast(change);
        }
    }

    /// Waits until what `outcome` says is durable, then returns it.
    async fn settle(&self, outcome: (Result<Arc<Entry>, StoreError>, u64)) -> Result<Arc<Entry>, StoreError> {
        match outcome {
            (Ok(entry), _) => self.wait_durable(entry.revision).await.map(|()| entry),
            (Err(e), current) => self.wait_durable(current).await.and(Err(e)),
        }
    }
}

/// One watcher's feed of changes; dropping it unsubscribes.
pub(crate) struct Subscription {
    feed: Feed,
    store: Store,
}

impl Subscription {
    /// The next change, once it is durable; `None` when the feed has ended.
    pub(crate) async fn next(&self) -> Option<Change> {
        let change = self.feed.changes.recv().await.ok()?;
        self.store.wait_durable(change.revision()).await.ok()?;
        Some(change)
    }

    /// Whether the feed ended because this watcher fell too far behind.
    pub(crate) fn overflowed(&self) -> bool {
        self.feed.overflowed.load(Ordering::SeqCst)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let id = self.feed.id;
        self.store.locked(|shared| shared.watchers.remove(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_paths() -> Paths {
        let dir = std::env::temp_dir().join(format!("loopsy-store-{}", crate::random::hex(6)));
        std::fs::create_dir_all(&dir).unwrap();
        Paths::from_dir(&dir).unwrap()
    }

    fn put(value: &str, if_revision: Option<u64>) -> Put {
        Put { value: value.into(), ttl: None, if_revision, from_node_id: "local".into() }
    }

    fn summary(store: &Store) -> Vec<(String, String, u64)> {
        let entries = smol::block_on(store.list("", crate::clock::now_ms())).unwrap();
        entries.into_iter().map(|e| (e.key.to_string(), e.value.to_string(), e.revision)).collect()
    }

    fn s(key: &str, value: &str, revision: u64) -> (String, String, u64) {
        (key.into(), value.into(), revision)
    }

    #[test]
    fn changes_and_revisions_survive_a_restart_with_or_without_a_clean_stop() {
        let paths = temp_paths();
        let store = Store::open(&paths, DEFAULT_MAX_ENTRIES).unwrap();
        smol::block_on(async {
            store.put("a", put("1", Some(0)), 1).await.unwrap();
            store.put("b", put("2", None), 2).await.unwrap();
            store.put("a", put("3", Some(1)), 3).await.unwrap();
            assert_eq!(store.delete("b", None, 4).await.unwrap(), 4);
        });
        // No close: as after kill -9, only the journal has the changes.
        drop(store);
        let store = Store::open(&paths, DEFAULT_MAX_ENTRIES).unwrap();
        assert_eq!(summary(&store), [s("a", "3", 3)]);
        let entry = smol::block_on(store.put("c", put("x", None), 5)).unwrap();
        assert_eq!(entry.revision, 5, "the delete's revision 4 is not given out again");
        store.close();
        let journal = std::fs::metadata(paths.context_journal()).unwrap().len();
        assert!(journal < 100, "a clean stop compacts: journal of {journal} bytes");
        let store = Store::open(&paths, DEFAULT_MAX_ENTRIES).unwrap();
        assert_eq!(summary(&store), [s("a", "3", 3), s("c", "x", 5)]);
        smol::block_on(store.delete("c", None, 6)).unwrap();
        store.close();
        let store = Store::open(&paths, DEFAULT_MAX_ENTRIES).unwrap();
        assert_eq!(smol::block_on(store.put("d", put("y", None), 7)).unwrap().revision, 7);
        std::fs::remove_dir_all(paths.home()).unwrap();
    }

    #[test]
    fn concurrent_writers_are_all_acknowledged_and_kept() {
        let paths = temp_paths();
        let store = Store::open(&paths, DEFAULT_MAX_ENTRIES).unwrap();
        let mut revisions: Vec<u64> = smol::block_on(async {
            let tasks: Vec<_> = (0..64)
                .map(|i| {
                    let store = store.clone();
                    smol::spawn(async move { store.put(&format!("k{i}"), put("v", None), 1).await.unwrap().revision })
                })
                .collect();
            let mut revisions = Vec::new();
            for task in tasks {
                revisions.push(task.await);
            }
            revisions
        });
        revisions.sort_unstable();
        assert_eq!(revisions, (1..=64).collect::<Vec<_>>());
        drop(store);
        let store = Store::open(&paths, DEFAULT_MAX_ENTRIES).unwrap();
        assert_eq!(summary(&store).len(), 64);
        std::fs::remove_dir_all(paths.home()).unwrap();
    }

    #[test]
    fn a_journal_that_outgrows_the_snapshot_is_compacted() {
        let paths = temp_paths();
        let store = Store::open(&paths, DEFAULT_MAX_ENTRIES).unwrap();
        let big = "x".repeat(MAX_VALUE_BYTES);
        for round in 0..6 {
            smol::block_on(store.put("big", put(&format!("{round}{big}")[..MAX_VALUE_BYTES], None), 1)).unwrap();
        }
        let journal_bytes = || std::fs::metadata(paths.context_journal()).unwrap().len();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        // Six 1 MiB records without compaction; at most the few since the last one with it.
        while journal_bytes() > 4 * 1024 * 1024 {
            assert!(std::time::Instant::now() < deadline, "no compaction: journal of {} bytes", journal_bytes());
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(std::fs::metadata(paths.context_file()).unwrap().len() > MAX_VALUE_BYTES as u64);
        drop(store);
        let store = Store::open(&paths, DEFAULT_MAX_ENTRIES).unwrap();
        let entry = smol::block_on(store.get("big", 2)).unwrap();
        assert_eq!((entry.revision, entry.value.as_bytes()[0]), (6, b'5'));
        std::fs::remove_dir_all(paths.home()).unwrap();
    }

    #[test]
    fn writes_acknowledged_while_compactions_run_are_all_kept() {
        let paths = temp_paths();
        let store = Store::open(&paths, DEFAULT_MAX_ENTRIES).unwrap();
        let big = "x".repeat(MAX_VALUE_BYTES - 2);
        std::thread::scope(|scope| {
            // 1 MiB values outgrow the snapshot again and again: compaction after compaction,
            // each one draining and journalling what the small writers queued meanwhile.
            scope.spawn(|| {
                for round in 0..24 {
                    smol::block_on(store.put("big", put(&format!("{round:02}{big}"), None), 1)).unwrap();
                }
            });
            for writer in 0..4 {
                let store = &store;
                scope.spawn(move || {
                    for i in 0..300 {
                        smol::block_on(store.put(&format!("w{writer}-{i}"), put(&i.to_string(), None), 1)).unwrap();
                    }
                });
            }
        });
        drop(store);
        let store = Store::open(&paths, DEFAULT_MAX_ENTRIES).unwrap();
        let kept = summary(&store);
        assert_eq!(kept.len(), 1 + 4 * 300, "every acknowledged key is there");
        let big = smol::block_on(store.get("big", 2)).unwrap();
        assert!(big.value.starts_with("23"), "the last big value");
        for writer in 0..4 {
            for i in (0..300).step_by(37) {
                assert_eq!(
                    smol::block_on(store.get(&format!("w{writer}-{i}"), 2)).unwrap().value.as_ref(),
                    i.to_string()
                );
            }
        }
        std::fs::remove_dir_all(paths.home()).unwrap();
    }

    #[test]
    fn a_crash_between_snapshot_and_journal_reset_loses_nothing() {
        let paths = temp_paths();
        let store = Store::open(&paths, DEFAULT_MAX_ENTRIES).unwrap();
        smol::block_on(async {
            store.put("a", put("1", None), 1).await.unwrap();
            store.put("b", put("2", None), 2).await.unwrap();
            store.put("c", put("3", None), 3).await.unwrap();
            store.delete("c", None, 4).await.unwrap();
            store.put("a", put("4", None), 5).await.unwrap();
            store.delete("a", None, 6).await.unwrap();
        });
        let journal = std::fs::read(paths.context_journal()).unwrap();
        // The new snapshot is written, the old journal is still in place.
        let entries = smol::block_on(store.list("", 7)).unwrap();
        snapshot::write(&paths.context_file(), &entries).unwrap();
        drop(store);
        std::fs::write(paths.context_journal(), journal).unwrap();
        let store = Store::open(&paths, DEFAULT_MAX_ENTRIES).unwrap();
        assert_eq!(summary(&store), [s("b", "2", 2)]);
        assert_eq!(smol::block_on(store.put("d", put("x", None), 8)).unwrap().revision, 7);
        std::fs::remove_dir_all(paths.home()).unwrap();
    }
}
