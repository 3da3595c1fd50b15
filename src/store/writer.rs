//! The journal writer: one thread that makes changes durable, with group commit and compaction.
//!
//! Requests apply their change in memory and queue it (under the store lock, so the queue is in
//! revision order), then wait on the [`Watermark`] until their revision is durable. The thread
//! takes everything queued, writes it with one `write` and one `fdatasync`, and raises the
//! watermark once for the whole batch: concurrent writers share the cost of a sync.
//! When the journal outgrows the snapshot (and at a clean stop) the thread compacts: a new
//! snapshot of the store, then a journal holding only the snapshot's revision.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};

use super::entry::Change;
use super::journal::Journal;
use super::{snapshot, Shared, StoreError};

/// The journal is compacted once it is larger than this and than the last snapshot, so the
/// work of compaction stays proportional to the writes that caused it.
const MIN_COMPACT_BYTES: u64 = 4 * 1024 * 1024;

/// What requests send to the writer thread.
#[derive(Debug)]
pub enum Message {
    Change(Change),
    /// Write everything queued, compact, answer, and exit.
    Stop(Sender<()>),
}

/// The highest revision known to be on disk, and the requests waiting for theirs.
#[derive(Debug, Default)]
pub struct Watermark {
    state: Mutex<WatermarkState>,
}

#[derive(Debug, Default)]
struct WatermarkState {
    durable: u64,
    /// Set when the journal cannot be written (or the writer has stopped): nothing newer than
    /// `durable` will ever be.
    failed: Option<String>,
    /// Dropping a sender wakes its waiter.
    waiters: BTreeMap<u64, Vec<smol::channel::Sender<()>>>,
}

impl Watermark {
    pub fn new(durable: u64) -> Watermark {
        Watermark { state: Mutex::new(WatermarkState { durable, ..WatermarkState::default() }) }
    }

    /// Completes once `revision` is durable; fails if it never will be.
    pub async fn wait(&self, revision: u64) -> Result<(), StoreError> {
        let wakeup = {
            let mut state = self.state.lock().expect("watermark lock");
            if state.durable >= revision {
                return Ok(());
            }
            if let Some(reason) = &state.failed {
                return Err(StoreError::Storage(reason.clone()));
            }
            let (sender, receiver) = smol::channel::bounded::<()>(1);
            state.waiters.entry(revision).or_default().push(sender);
            receiver
        };
        let _ = wakeup.recv().await;
        let state = self.state.lock().expect("watermark lock");
        if state.durable >= revision {
            return Ok(());
        }
        Err(StoreError::Storage(state.failed.clone().unwrap_or_else(|| "the context store stopped".into())))
    }

    fn advance(&self, revision: u64) {
        let mut state = self.state.lock().expect("watermark lock");
        state.durable = state.durable.max(revision);
        let first_pending = state.durable + 1;
        let later = state.waiters.split_off(&first_pending);
        state.waiters = later; // The earlier senders are dropped here, waking their waiters.
    }

    pub fn fail(&self, reason: String) {
        let mut state = self.state.lock().expect("watermark lock");
        state.failed.get_or_insert(reason);
        state.waiters.clear();
    }
}

/// The writer thread's state.
pub struct Writer {
    pub shared: Arc<Mutex<Shared>>,
    pub watermark: Arc<Watermark>,
    pub journal: Journal,
    pub snapshot_path: PathBuf,
    pub snapshot_bytes: u64,
    pub queue: Receiver<Message>,
    /// A journal write failed: nothing more is written.
    pub broken: bool,
}

impl Writer {
    /// Runs until told to stop, or until every sender is gone.
    pub fn run(mut self) {
        while let Ok(first) = self.queue.recv() {
            let mut stop = None;
            let mut batch = Vec::new();
            take(first, &mut batch, &mut stop);
            while let Ok(next) = self.queue.try_recv() {
                take(next, &mut batch, &mut stop);
            }
            self.commit(&batch);
            let stop = match stop {
                // A clean stop compacts, so the next start reads one snapshot and no journal.
                Some(done) => {
                    if let Some(again) = self.compact() {
                        let _ = again.send(());
                    }
                    done
                }
                None if self.journal.bytes() > MIN_COMPACT_BYTES.max(self.snapshot_bytes) => match self.compact() {
                    Some(done) => done,
                    None => continue,
                },
                None => continue,
            };
            self.watermark.fail("the daemon is stopping".into());
            let _ = stop.send(());
            return;
        }
    }

    /// Writes and syncs `batch`, then tells its waiters.
    fn commit(&mut self, batch: &[Change]) {
        let Some(last) = batch.last() else { return };
        if self.broken {
            return;
        }
        match self.journal.append(batch) {
            Ok(()) => self.watermark.advance(last.revision()),
            Err(e) => {
                // A failed write may have left part of a frame behind: appending after it
                // would hide later records from the reader, so nothing is written any more.
                log::error!("cannot write the context journal: {e}; context writes fail until a restart");
                self.broken = true;
                self.watermark.fail(format!("cannot write the context journal: {e}"));
            }
        }
    }

    /// Replaces snapshot and journal by a snapshot of the store as it is now. Returns a stop
    /// request found while draining the queue.
    fn compact(&mut self) -> Option<Sender<()>> {
        if self.broken {
            return None;
        }
        let (entries, revision, stop) = {
            let shared_handle = self.shared.clone();
            let shared = shared_handle.lock().expect("store lock");
            // Changes are queued under this lock, so everything up to the store's revision is
            // queued by now: write it first. Then the journal holds every change the snapshot
            // holds, and a crash between the two renames below loses nothing.
            let mut batch = Vec::new();
            let mut stop = None;
            while let Ok(next) = self.queue.try_recv() {
                take(next, &mut batch, &mut stop);
            }
            self.commit(&batch);
            if self.broken {
                return stop;
            }
            (shared.map.entries(), shared.map.revision(), stop)
        };
        let now = crate::clock::now_ms();
        let live: Vec<_> = entries.into_iter().filter(|entry| !entry.is_expired(now)).collect();
        match compact(&mut self.journal, &self.snapshot_path, &live, revision) {
            Ok(bytes) => self.snapshot_bytes = bytes,
            Err(e) => {
                // The journal still holds everything; try again after it has doubled.
                log::error!("cannot compact the context store: {e:#}");
                self.snapshot_bytes = self.journal.bytes() * 2;
            }
        }
        stop
    }
}

fn take(message: Message, batch: &mut Vec<Change>, stop: &mut Option<Sender<()>>) {
    match message {
        Message::Change(change) => batch.push(change),
        Message::Stop(done) => *stop = Some(done),
    }
}

/// Writes `entries` as the snapshot of `revision` and resets the journal to it.
pub fn compact(
    journal: &mut Journal,
    snapshot_path: &std::path::Path,
    entries: &[super::entry::Entry],
    revision: u64,
) -> anyhow::Result<u64> {
    let bytes = snapshot::write(snapshot_path, entries)?;
    journal.reset(revision)?;
    Ok(bytes)
}
