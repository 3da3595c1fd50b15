//! Leases and locks with fencing tokens, kept durably in the data directory. No networking here:
//! the HTTP routes are in `daemon/routes/locks.rs`.
//!
//! # On disk
//!
//! `locks.journal` holds every grant, renewal and release since the last compaction, in the
//! context store's checksummed frames (`store::journal`), written by the same group-commit
//! writer (`store::writer`). A change is acknowledged only after its record is fsync'd, so a
//! granted token survives `kill -9` and power loss and is never granted again. A compaction (when
//! the journal outgrows 4 MiB, and at a clean stop) replaces the journal by a base record with
//! the table's revision and one grant record per live lock.
//!
//! # Semantics
//!
//! A lock is held by a holder (a string the client chooses) until it releases it or its TTL runs
//! out without a renewal. The fencing token of a grant is the table revision that granted it:
//! every grant of a name gets a larger token than the one before, across restarts. A holder
//! that acquires a lock it already holds gets the same grant (same token) with a new expiry, so
//! retrying an acquire is harmless. Expiry is computed, not journalled: a restarted daemon
//! drops the grants whose `expiresAt` has passed.
//!
//! Context writes can be fenced (`Locks::check_fence`): they happen only while the named grant
//! is live, checked under the context store's lock so no grant can change in between.

pub(crate) mod api;
mod table;

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::paths::Paths;
use crate::store::journal::Journal;
use crate::store::writer::{Message, Owner, Sequenced, Started, Watermark, Writer};
pub(crate) use table::{
    check_holder, check_name, ttl_ms, wait_ms, FenceError, Grant, LockError, MAX_TTL_SECS, MAX_WAIT_SECS, MIN_TTL_SECS,
};
use table::{LockTable, Record};
#[cfg(test)]
pub(crate) use table::{MAX_HOLDER_CHARS, MAX_NAME_BYTES};

/// A cheap-clone handle on the lock table of one data directory.
#[derive(Clone)]
pub(crate) struct Locks {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Mutex<Shared>>,
    queue: mpsc::Sender<Message<Record>>,
    watermark: Arc<Watermark>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Everything behind the table lock.
struct Shared {
    table: LockTable,
    /// Requests waiting for a name to be released; dropping a sender wakes its waiter.
    waiters: HashMap<String, Vec<smol::channel::Sender<()>>>,
}

/// An acquire request, checked by the caller (`check_name`, `check_holder`, `ttl_ms`, `wait_ms`).
#[derive(Debug, Clone)]
pub(crate) struct Acquire {
    pub name: String,
    pub holder: String,
    pub ttl_ms: u64,
    /// How long to wait while another holder has it.
    pub wait: Duration,
}

/// The lock table's journal, as the writer compacts it.
struct LockFiles {
    shared: Arc<Mutex<Shared>>,
}

impl Owner for LockFiles {
    type Record = Record;
    type Image = Vec<Record>;
    const NAME: &'static str = "locks";

    fn capture(&self, drain: &mut dyn FnMut()) -> Vec<Record> {
        let shared = self.shared.lock().expect("lock table lock");
        drain();
        shared.table.image(crate::clock::now_ms())
    }

    fn compact(&mut self, journal: &mut Journal<Record>, image: Vec<Record>) -> anyhow::Result<u64> {
        journal.reset(&image)?;
        Ok(journal.bytes())
    }
}

impl Locks {
    /// Loads the lock table of `paths` and starts its writer.
    pub(crate) fn open(paths: &Paths) -> anyhow::Result<Locks> {
        let path = paths.locks_journal();
        let mut table = LockTable::default();
        let (mut journal, replay) = Journal::open(&path, |record: Record| {
            if let Record::Base { format, .. } = record {
                anyhow::ensure!(format == table::FORMAT, "record format {format}; this loopsy reads {}", table::FORMAT);
            }
            table.apply(record);
            Ok(())
        })?;
        table.sweep(crate::clock::now_ms());
        let shared = Arc::new(Mutex::new(Shared { table, waiters: HashMap::new() }));
        let mut files = LockFiles { shared: shared.clone() };
        let snapshot_bytes = if replay.dropped_bytes > 0 {
            log::warn!(
                "{}: ignored {} damaged byte(s) at the end (a write cut short by a crash)",
                path.display(),
                replay.dropped_bytes
            );
            let image = files.capture(&mut || {});
            files.compact(&mut journal, image).context("compacting the lock table")?
        } else {
            journal.bytes()
        };
        let revision = shared.lock().expect("lock table lock").table.revision();
        let Started { queue, watermark, handle } = Writer::spawn(files, journal, snapshot_bytes, revision)?;
        Ok(Locks { inner: Arc::new(Inner { shared, queue, watermark, writer: Mutex::new(Some(handle)) }) })
    }

    /// Acquires a lock, waiting up to `request.wait` while another holder has it; answers once
    /// the grant is durable.
    pub(crate) async fn acquire(&self, request: &Acquire) -> Result<Grant, LockError> {
        let deadline = Instant::now() + request.wait;
        loop {
            let now = crate::clock::now_ms();
            let may_wait = Instant::now() < deadline;
            let (outcome, revision, wakeup) = self.locked(|shared| {
                let outcome = shared.table.acquire(&request.name, &request.holder, request.ttl_ms, now);
                let mut wakeup = None;
                match &outcome {
                    Ok((_, record)) => self.publish(record),
                    Err(LockError::Held(_)) if may_wait => {
                        let (sender, receiver) = smol::channel::bounded::<()>(1);
                        let waiting = shared.waiters.entry(request.name.clone()).or_default();
                        // Waiters that gave up are dropped here, so the list stays as long as
                        // the number of requests waiting now.
                        waiting.retain(|sender| !sender.is_closed());
                        waiting.push(sender);
                        wakeup = Some(receiver);
                    }
                    Err(_) => {}
                }
                (outcome, shared.table.revision(), wakeup)
            });
            match (outcome, wakeup) {
                (Ok((grant, record)), _) => return self.durable(record.revision()).await.map(|()| grant),
                (Err(LockError::Held(grant)), Some(wakeup)) => {
                    log::debug!(
                        "lock '{}' is held by '{}' (token {}): '{}' waits for it",
                        grant.name,
                        grant.holder,
                        grant.token,
                        request.holder
                    );
                    let expiry = Duration::from_millis(grant.expires_at.saturating_sub(now) + 1);
                    let until = deadline.min(Instant::now() + expiry);
                    let _ = crate::clock::deadline(until, wakeup.recv()).await;
                }
                // A refusal shows only durable state: wait for what it was decided on.
                (Err(e), _) => return self.durable(revision).await.and(Err(e)),
            }
        }
    }

    /// Extends `holder`'s grant of `name` (by `ttl_ms`, or its own TTL).
    pub(crate) async fn renew(&self, name: &str, holder: &str, ttl_ms: Option<u64>) -> Result<Grant, LockError> {
        let now = crate::clock::now_ms();
        let (outcome, revision) = self.locked(|shared| {
            let outcome = shared.table.renew(name, holder, ttl_ms, now);
            if let Ok((_, record)) = &outcome {
                self.publish(record);
            }
            (outcome, shared.table.revision())
        });
        self.settle(outcome, revision).await
    }

    /// Releases `holder`'s grant of `name` and wakes whoever waits for it.
    pub(crate) async fn release(&self, name: &str, holder: &str) -> Result<Grant, LockError> {
        let now = crate::clock::now_ms();
        let (outcome, revision) = self.locked(|shared| {
            let outcome = shared.table.release(name, holder, now);
            if let Ok((_, record)) = &outcome {
                self.publish(record);
                // Dropping the senders wakes the waiters; they try again (after this release is
                // queued, so whoever wins is journalled after it).
                shared.waiters.remove(name);
            }
            (outcome, shared.table.revision())
        });
        self.settle(outcome, revision).await
    }

    /// The live grant of `name`.
    pub(crate) async fn get(&self, name: &str) -> Result<Grant, LockError> {
        let now = crate::clock::now_ms();
        let (found, revision) = self.locked(|shared| (shared.table.get(name, now).cloned(), shared.table.revision()));
        self.durable(revision).await?;
        found.ok_or_else(|| LockError::NotHeld { name: name.to_string() })
    }

    /// Every live grant, by name.
    pub(crate) async fn list(&self) -> Result<Vec<Grant>, LockError> {
        let now = crate::clock::now_ms();
        let (grants, revision) = self.locked(|shared| (shared.table.list(now), shared.table.revision()));
        self.durable(revision).await?;
        Ok(grants)
    }

    /// Whether a write fenced by `token` of lock `name` may happen now. Meant to run under the
    /// context store's lock (`Store::put_guarded`); it takes only the table's lock.
    pub(crate) fn check_fence(&self, name: &str, token: u64) -> Result<(), FenceError> {
        let now = crate::clock::now_ms();
        self.locked(|shared| shared.table.check_fence(name, token, now))
    }

    /// Completes once everything the table has decided so far is durable (before showing a
    /// fence refusal, which names the current grant).
    pub(crate) async fn settle_all(&self) -> Result<(), LockError> {
        let revision = self.locked(|shared| shared.table.revision());
        self.durable(revision).await
    }

    /// Writes everything pending, compacts, and stops the writer. Blocks; call it last.
    pub(crate) fn close(&self) {
        // Waiters wake up, find the lock still held, and get their answer.
        self.locked(|shared| shared.waiters.clear());
        crate::store::writer::stop(&self.inner.queue, &self.inner.writer);
    }

    fn locked<T>(&self, f: impl FnOnce(&mut Shared) -> T) -> T {
        f(&mut self.inner.shared.lock().expect("lock table lock"))
    }

    /// Queues `record` for the journal; called under the table lock, so the queue is in
    /// revision order.
    fn publish(&self, record: &Record) {
        // A closed queue means the writer stopped; the waiter then sees the watermark fail.
        let _ = self.inner.queue.send(Message::Record(record.clone()));
    }

    async fn durable(&self, revision: u64) -> Result<(), LockError> {
        self.inner.watermark.wait(revision).await.map_err(|e| LockError::Storage(e.to_string()))
    }

    async fn settle(&self, outcome: Result<(Grant, Record), LockError>, current: u64) -> Result<Grant, LockError> {
        match outcome {
            Ok((grant, record)) => self.durable(record.revision()).await.map(|()| grant),
            Err(e) => self.durable(current).await.and(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_paths() -> Paths {
        let dir = std::env::temp_dir().join(format!("loopsy-locks-{}", crate::random::hex(6)));
        std::fs::create_dir_all(&dir).unwrap();
        Paths::from_dir(&dir).unwrap()
    }

    fn request(name: &str, holder: &str, ttl_ms: u64, wait_ms: u64) -> Acquire {
        Acquire { name: name.into(), holder: holder.into(), ttl_ms, wait: Duration::from_millis(wait_ms) }
    }

    #[test]
    fn grants_and_tokens_survive_a_restart_with_or_without_a_clean_stop() {
        let paths = temp_paths();
        let locks = Locks::open(&paths).unwrap();
        let (first, held) = smol::block_on(async {
            let first = locks.acquire(&request("db", "a", 60_000, 0)).await.unwrap();
            locks.release("db", "a").await.unwrap();
            let held = locks.acquire(&request("db", "b", 60_000, 0)).await.unwrap();
            (first, held)
        });
        assert!(held.token > first.token);
        // No close: as after kill -9, only the journal has the changes.
        drop(locks);
        let locks = Locks::open(&paths).unwrap();
        assert_eq!(smol::block_on(locks.get("db")).unwrap(), held, "the live grant is back");
        smol::block_on(locks.release("db", "b")).unwrap();
        let next = smol::block_on(locks.acquire(&request("db", "c", 60_000, 0))).unwrap();
        assert!(next.token > held.token + 1, "the release took a revision too: {} {}", next.token, held.token);
        locks.close();
        let journal = std::fs::metadata(paths.locks_journal()).unwrap().len();
        assert!(journal < 300, "a clean stop compacts: journal of {journal} bytes");
        let locks = Locks::open(&paths).unwrap();
        assert_eq!(smol::block_on(locks.get("db")).unwrap(), next);
        smol::block_on(locks.release("db", "c")).unwrap();
        locks.close();
        let locks = Locks::open(&paths).unwrap();
        let last = smol::block_on(locks.acquire(&request("db", "d", 60_000, 0))).unwrap();
        assert!(last.token > next.token + 1, "the base record keeps the revision with no live lock");
        std::fs::remove_dir_all(paths.home()).unwrap();
    }

    #[test]
    fn a_waiting_acquire_gets_the_lock_when_it_is_released_or_expires() {
        let paths = temp_paths();
        let locks = Locks::open(&paths).unwrap();
        smol::block_on(async {
            let held = locks.acquire(&request("db", "a", 60_000, 0)).await.unwrap();
            let waiter = smol::spawn({
                let locks = locks.clone();
                async move { locks.acquire(&request("db", "b", 60_000, 5_000)).await }
            });
            async_io::Timer::after(Duration::from_millis(50)).await;
            locks.release("db", "a").await.unwrap();
            let taken = waiter.await.unwrap();
            assert_eq!(taken.holder, "b");
            assert!(taken.token > held.token);

            let started = Instant::now();
            let short = locks.acquire(&request("short", "a", 200, 0)).await.unwrap();
            let after_expiry = locks.acquire(&request("short", "b", 1000, 5_000)).await.unwrap();
            assert!(started.elapsed() >= Duration::from_millis(150), "waited for the expiry");
            assert!(after_expiry.token > short.token);

            let refused = locks.acquire(&request("db", "c", 1000, 100)).await;
            assert!(matches!(refused, Err(LockError::Held(grant)) if grant.holder == "b"));
        });
        std::fs::remove_dir_all(paths.home()).unwrap();
    }
}
