//! The journal writer: one thread that makes changes durable, with group commit and compaction.
//! Generic over the table it serves ([`Owner`]): the context store and the lock table use it.
//!
//! Requests apply their change in memory and queue its record (under the table's lock, so the
//! queue is in revision order), then wait on the [`Watermark`] until their revision is durable. The thread
//! takes everything queued, writes it with one `write` and one `fdatasync`, and raises the
//! watermark once for the whole batch: concurrent writers share the cost of a sync.
//! When the journal outgrows the last compaction (and at a clean stop) the thread compacts: the
//! owner writes an image of its table, and the journal is replaced by that base.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::journal::Journal;
use super::StoreError;

/// The journal is compacted once it is larger than this and than the last snapshot, so the
/// work of compaction stays proportional to the writes that caused it.
const MIN_COMPACT_BYTES: u64 = 4 * 1024 * 1024;

/// A journal record that carries the revision the watermark counts.
pub(crate) trait Sequenced {
    fn revision(&self) -> u64;
}

/// What requests send to the writer thread.
#[derive(Debug)]
pub(crate) enum Message<R> {
    Record(R),
    /// Write everything queued, compact, answer, and exit.
    Stop(Sender<()>),
}

/// The table a writer makes durable: the context store, the lock table. It says how to take an
/// image of itself for compaction and how to write that image.
pub(crate) trait Owner: Send + 'static {
    type Record: Serialize + DeserializeOwned + Sequenced + Send + 'static;
    type Image;
    /// Names the table in log lines (`context`, `locks`).
    const NAME: &'static str;

    /// Takes the table's lock, calls `drain` under it (which takes everything queued, to be
    /// journalled before the image is written), and returns the image. Keep it short: requests
    /// wait for the lock meanwhile.
    fn capture(&self, drain: &mut dyn FnMut()) -> Self::Image;

    /// Writes `image` as the new base (a snapshot file, records in `journal.reset`, or both);
    /// returns the size it takes on disk.
    fn compact(&mut self, journal: &mut Journal<Self::Record>, image: Self::Image) -> anyhow::Result<u64>;
}

/// The highest revision known to be on disk, and the requests waiting for theirs.
#[derive(Debug, Default)]
pub(crate) struct Watermark {
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
    pub(crate) fn new(durable: u64) -> Watermark {
        Watermark { state: Mutex::new(WatermarkState { durable, ..WatermarkState::default() }) }
    }

    /// Completes once `revision` is durable; fails if it never will be.
    pub(crate) async fn wait(&self, revision: u64) -> Result<(), StoreError> {
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
        Err(StoreError::Storage(state.failed.clone().unwrap_or_else(|| "the journal writer stopped".into())))
    }

    pub(crate) fn advance(&self, revision: u64) {
        let mut state = self.state.lock().expect("watermark lock");
        state.durable = state.durable.max(revision);
        let first_pending = state.durable + 1;
        let later = state.waiters.split_off(&first_pending);
        state.waiters = later; // The earlier senders are dropped here, waking their waiters.
    }

    pub(crate) fn fail(&self, reason: String) {
        let mut state = self.state.lock().expect("watermark lock");
        state.failed.get_or_insert(reason);
        state.waiters.clear();
    }
}

/// The writer thread's state.
pub(crate) struct Writer<O: Owner> {
    pub owner: O,
    pub watermark: Arc<Watermark>,
    pub journal: Journal<O::Record>,
    /// The size of the last compaction's output.
    pub snapshot_bytes: u64,
    pub queue: Receiver<Message<O::Record>>,
    /// A journal write failed: nothing more is written.
    pub broken: bool,
}

/// A started writer, as its table keeps it.
pub(crate) struct Started<R> {
    /// Where changes are queued, in revision order.
    pub queue: Sender<Message<R>>,
    /// Raised as changes become durable.
    pub watermark: Arc<Watermark>,
    /// The thread (`<NAME>-journal`), joined at a clean stop.
    pub handle: std::thread::JoinHandle<()>,
}

/// Asks the writer behind `queue` to write everything pending, compact and stop, waits for it,
/// and joins its thread (once: the handle is taken). Blocks; a table calls it last.
pub(crate) fn stop<R>(queue: &Sender<Message<R>>, handle: &Mutex<Option<std::thread::JoinHandle<()>>>) {
    let (done, finished) = std::sync::mpsc::channel();
    if queue.send(Message::Stop(done)).is_ok() {
        let _ = finished.recv();
    }
    if let Some(handle) = handle.lock().expect("writer handle lock").take() {
        let _ = handle.join();
    }
}

impl<O: Owner> Writer<O> {
    /// Starts the writer thread of `owner` over `journal`, whose table is at `revision` and whose
    /// last compaction took `snapshot_bytes`.
    pub(crate) fn spawn(
        owner: O,
        journal: Journal<O::Record>,
        snapshot_bytes: u64,
        revision: u64,
    ) -> anyhow::Result<Started<O::Record>> {
        use anyhow::Context;
        let watermark = Arc::new(Watermark::new(revision));
        let (queue, receiver) = std::sync::mpsc::channel();
        let writer =
            Writer { owner, watermark: watermark.clone(), journal, snapshot_bytes, queue: receiver, broken: false };
        let handle = std::thread::Builder::new()
            .name(format!("{}-journal", O::NAME))
            .spawn(move || writer.run())
            .with_context(|| format!("starting the {} journal writer", O::NAME))?;
        Ok(Started { queue, watermark, handle })
    }

    /// Runs until told to stop, or until every sender is gone.
    pub(crate) fn run(mut self) {
        // Records in the last commit: more than one means several writers are active.
        let mut last_batch = 0;
        while let Ok(first) = self.queue.recv() {
            let mut stop = None;
            let mut batch = Vec::new();
            take(first, &mut batch, &mut stop);
            while let Ok(next) = self.queue.try_recv() {
                take(next, &mut batch, &mut stop);
            }
            gather(&self.queue, &mut batch, &mut stop, last_batch);
            last_batch = batch.len();
            commit(&mut self.journal, &self.watermark, &mut self.broken, &batch);
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

    /// Replaces snapshot and journal by an image of the table as it is now. Returns a stop
    /// request found while draining the queue.
    fn compact(&mut self) -> Option<Sender<()>> {
        if self.broken {
            return None;
        }
        let mut stop = None;
        let mut batch = Vec::new();
        let image = {
            let Writer { owner, queue, .. } = &mut *self;
            // Changes are queued under the owner's lock, so everything up to the image is
            // queued by the time it is taken: drained with it.
            owner.capture(&mut || {
                while let Ok(next) = queue.try_recv() {
                    take(next, &mut batch, &mut stop);
                }
            })
        };
        // Written before the image, but outside the owner's lock (requests go on meanwhile):
        // then the journal holds every change the image holds, and a crash in the middle of
        // the compaction loses nothing.
        commit(&mut self.journal, &self.watermark, &mut self.broken, &batch);
        if self.broken {
            return stop;
        }
        match self.owner.compact(&mut self.journal, image) {
            Ok(bytes) => self.snapshot_bytes = bytes,
            Err(e) => {
                // The journal still holds everything; try again after it has doubled.
                log::error!("cannot compact the {} journal: {e:#}", O::NAME);
                self.snapshot_bytes = self.journal.bytes() * 2;
            }
        }
        stop
    }
}

/// How long the writer waits, after a commit of several records, for more writers to queue
/// theirs before it commits again (see [`gather`]).
const GATHER: Duration = Duration::from_micros(100);

/// Group commit under load: when the last commit carried `last_batch` > 1 records, several
/// writers are active, and the ones just acknowledged are about to queue again. Waiting a
/// moment ([`GATHER`]) makes the next `write` + `fdatasync` carry more of them: each sync costs
/// the writer ~80 µs of CPU on a virtual disk, so 32 connections of PUTs paid more in syncs
/// than in anything else. The writer sleeps meanwhile, so queueing a record does not wake it.
/// A lone writer (`last_batch` ≤ 1) and a stop request are not delayed.
fn gather<R>(queue: &Receiver<Message<R>>, batch: &mut Vec<R>, stop: &mut Option<Sender<()>>, last_batch: usize) {
    if last_batch <= 1 || stop.is_some() {
        return;
    }
    std::thread::sleep(GATHER);
    while let Ok(next) = queue.try_recv() {
        take(next, batch, stop);
    }
}

/// Writes and syncs `batch`, then tells its waiters.
fn commit<R: Serialize + DeserializeOwned + Sequenced>(
    journal: &mut Journal<R>,
    watermark: &Watermark,
    broken: &mut bool,
    batch: &[R],
) {
    let Some(last) = batch.last() else { return };
    if *broken {
        return;
    }
    match journal.append(batch) {
        Ok(()) => watermark.advance(last.revision()),
        Err(e) => {
            // A failed write may have left part of a frame behind: appending after it would
            // hide later records from the reader, so nothing is written any more.
            log::error!("cannot write a journal: {e}; its writes fail until a restart");
            *broken = true;
            watermark.fail(format!("cannot write the journal: {e}"));
        }
    }
}

fn take<R>(message: Message<R>, batch: &mut Vec<R>, stop: &mut Option<Sender<()>>) {
    match message {
        Message::Record(record) => batch.push(record),
        Message::Stop(done) => *stop = Some(done),
    }
}
