//! One job's output as numbered events, kept so a client can reattach after a dropped
//! connection and read on from the event it last saw.
//!
//! Events are numbered from 1 in the order the job produced them; the exit is the last event.
//! The log keeps at most its byte limit of output events, dropping the oldest; the exit event is
//! never dropped. A reader attached to the log holds the job back instead: while the log is
//! full and an attached reader still needs its oldest event, the job waits for it (a slow client
//! slows the job, as a plain stream does), but not for longer than [`STALL`], so a reader on a
//! dead connection cannot hold a job forever; that reader then sees a gap. A reader that asks
//! for events the log no longer has is told how many it missed. The log also says since when
//! nobody has been attached ([`JobLog::detached_for`]), so a job whose client never came back
//! can be stopped.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Outcome, Pipe};

/// How long an attached reader that does not move may hold the job back.
pub(super) const STALL: Duration = Duration::from_secs(30);
/// What an event costs beyond its text (a rough figure, so tiny events count too).
const EVENT_OVERHEAD: usize = 64;

/// What happened in a job.
#[derive(Debug, Clone)]
pub(crate) enum LogEvent {
    Output { pipe: Pipe, text: String, at: u64 },
    Exit { outcome: Outcome, at: u64 },
}

/// An event with its sequence number.
#[derive(Debug, Clone)]
pub(crate) struct Numbered {
    pub seq: u64,
    pub event: Arc<LogEvent>,
}

/// What a reader gets next.
#[derive(Debug, Clone)]
pub(crate) enum Item {
    Event(Numbered),
    /// Events `from..to` are no longer kept; the next item is event `to`.
    Gap {
        from: u64,
        to: u64,
    },
}

/// A job's numbered events.
#[derive(Debug)]
pub(crate) struct JobLog {
    state: Mutex<LogState>,
    /// `None`: keep every event (the job's own output cap bounds them).
    limit: Option<usize>,
}

#[derive(Debug, Default)]
struct LogState {
    // Invariant: `events` holds the consecutive numbers `first..next`.
    events: VecDeque<(Numbered, usize)>,
    first: u64,
    next: u64,
    bytes: usize,
    exit: Option<Numbered>,
    /// Attached readers: the next number each wants, and when it last moved.
    readers: HashMap<u64, (u64, Instant)>,
    next_reader: u64,
    /// Requests waiting for the whole result (`collect`).
    collectors: usize,
    /// Since when no reader or collector has been attached.
    detached_since: Option<Instant>,
    /// Dropping these wakes whoever waits for a change (readers and the job).
    wakers: Vec<smol::channel::Sender<()>>,
}

impl LogState {
    fn wake(&mut self) {
        self.wakers.clear();
    }

    /// Notes a reader or collector coming or going.
    fn attachment_changed(&mut self) {
        let attached = !self.readers.is_empty() || self.collectors > 0;
        match (attached, self.detached_since) {
            (true, _) => self.detached_since = None,
            (false, None) => self.detached_since = Some(Instant::now()),
            (false, Some(_)) => {}
        }
        self.wake();
    }

    fn waiter(&mut self) -> smol::channel::Receiver<()> {
        let (sender, receiver) = smol::channel::bounded(1);
        self.wakers.retain(|sender| !sender.is_closed());
        self.wakers.push(sender);
        receiver
    }
}

impl JobLog {
    pub(crate) fn new(limit: Option<usize>) -> JobLog {
        let state = LogState { first: 1, next: 1, detached_since: Some(Instant::now()), ..LogState::default() };
        JobLog { state: Mutex::new(state), limit }
    }

    /// Bytes of output held.
    pub(crate) fn bytes(&self) -> usize {
        self.locked(|state| state.bytes)
    }

    /// Appends output, after waiting for room while an attached reader needs the oldest event.
    pub(crate) async fn push(&self, pipe: Pipe, text: String, at: u64) {
        let cost = text.len() + EVENT_OVERHEAD;
        loop {
            let wait = self.locked(|state| {
                let limit = self.limit?;
                while state.bytes + cost > limit && !state.events.is_empty() {
                    let oldest = state.first;
                    let now = Instant::now();
                    // The reader that moved least recently among those that still need it.
                    let holding = state
                        .readers
                        .values()
                        .filter(|(wants, moved)| *wants <= oldest && now.duration_since(*moved) < STALL)
                        .map(|(_, moved)| *moved)
                        .min();
                    if let Some(moved) = holding {
                        return Some((state.waiter(), moved + STALL));
                    }
                    let (_, bytes) = state.events.pop_front().expect("not empty");
                    state.bytes -= bytes;
                    state.first += 1;
                }
                None
            });
            let Some((wakeup, until)) = wait else { break };
            let _ = crate::clock::deadline(until, wakeup.recv()).await;
        }
        self.locked(|state| {
            let numbered = Numbered { seq: state.next, event: Arc::new(LogEvent::Output { pipe, text, at }) };
            state.next += 1;
            state.bytes += cost;
            state.events.push_back((numbered, cost));
            state.wake();
        });
    }

    /// Ends the log with the job's outcome.
    pub(crate) fn finish(&self, outcome: Outcome, at: u64) {
        self.locked(|state| {
            state.exit = Some(Numbered { seq: state.next, event: Arc::new(LogEvent::Exit { outcome, at }) });
            state.next += 1;
            state.wake();
        });
    }

    /// Completes once nobody has been attached for `limit` (and never while someone is).
    pub(crate) async fn detached_for(&self, limit: Duration) {
        loop {
            let (since, wakeup) = self.locked(|state| (state.detached_since, state.waiter()));
            match since {
                Some(since) if since.elapsed() >= limit => return,
                Some(since) => {
                    let _ = crate::clock::deadline(since + limit, wakeup.recv()).await;
                }
                None => {
                    let _ = wakeup.recv().await;
                }
            }
        }
    }

    /// Waits until the job has ended; returns every kept event and whether any were dropped.
    pub(crate) async fn collect(&self) -> (Vec<Numbered>, bool) {
        self.locked(|state| {
            state.collectors += 1;
            state.attachment_changed();
        });
        // Counted as attached until this returns or is dropped (a request that went away).
        let _attached = Collecting { log: self };
        loop {
            let wakeup = self.locked(|state| match state.exit.is_some() {
                true => None,
                false => Some(state.waiter()),
            });
            match wakeup {
                Some(wakeup) => {
                    let _ = wakeup.recv().await;
                }
                None => break,
            }
        }
        self.locked(|state| {
            let mut events: Vec<Numbered> = state.events.iter().map(|(numbered, _)| numbered.clone()).collect();
            events.extend(state.exit.clone());
            (events, state.first > 1)
        })
    }

    /// A reader from event `from` on (1 = the beginning).
    pub(crate) fn attach(self: &Arc<Self>, from: u64) -> Reader {
        let id = self.locked(|state| {
            let id = state.next_reader;
            state.next_reader += 1;
            state.readers.insert(id, (from.max(1), Instant::now()));
            state.attachment_changed();
            id
        });
        Reader { log: self.clone(), id }
    }

    fn locked<T>(&self, f: impl FnOnce(&mut LogState) -> T) -> T {
        f(&mut self.state.lock().expect("job log lock"))
    }
}

/// An attached reader; dropping it detaches (and no longer holds the job back).
pub(crate) struct Reader {
    log: Arc<JobLog>,
    id: u64,
}

impl Reader {
    /// The next item; `None` once the exit event has been read.
    pub(crate) async fn next(&mut self) -> Option<Item> {
        loop {
            let (item, wakeup) = self.log.locked(|state| {
                let (wants, _) = state.readers[&self.id];
                let exit_seq = state.exit.as_ref().map(|exit| exit.seq);
                if exit_seq.is_some_and(|seq| wants > seq) {
                    return (Some(None), None);
                }
                if wants < state.first {
                    let gap = Item::Gap { from: wants, to: state.first };
                    state.readers.insert(self.id, (state.first, Instant::now()));
                    return (Some(Some(gap)), None);
                }
                let found = match state.events.get((wants - state.first) as usize) {
                    Some((numbered, _)) => Some(numbered.clone()),
                    None => state.exit.clone().filter(|exit| exit.seq == wants),
                };
                match found {
                    Some(numbered) => {
                        state.readers.insert(self.id, (wants + 1, Instant::now()));
                        // The job may be waiting for this reader to move.
                        state.wake();
                        (Some(Some(Item::Event(numbered))), None)
                    }
                    None => (None, Some(state.waiter())),
                }
            });
            match (item, wakeup) {
                (Some(item), _) => return item,
                (None, Some(wakeup)) => {
                    let _ = wakeup.recv().await;
                }
                (None, None) => unreachable!("a wakeup comes with every wait"),
            }
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.log.locked(|state| {
            state.readers.remove(&self.id);
            state.attachment_changed();
        });
    }
}

/// A `collect` in progress.
struct Collecting<'a> {
    log: &'a JobLog,
}

impl Drop for Collecting<'_> {
    fn drop(&mut self) {
        self.log.locked(|state| {
            state.collectors -= 1;
            state.attachment_changed();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome() -> Outcome {
        Outcome {
            exit_code: Some(0),
            signal: None,
            stopped: None,
            duration: Duration::ZERO,
            stdout_truncated: false,
            stderr_truncated: false,
        }
    }

    fn text(item: Option<Item>) -> String {
        match item {
            Some(Item::Event(Numbered { seq, event })) => match &*event {
                LogEvent::Output { text, .. } => format!("{seq}:{text}"),
                LogEvent::Exit { .. } => format!("{seq}:exit"),
            },
            Some(Item::Gap { from, to }) => format!("gap {from}..{to}"),
            None => "end".into(),
        }
    }

    #[test]
    fn a_reader_attached_late_reads_from_any_event_and_ends_after_the_exit() {
        smol::block_on(async {
            let log = Arc::new(JobLog::new(None));
            for word in ["a", "b", "c"] {
                log.push(Pipe::Stdout, word.into(), 0).await;
            }
            log.finish(outcome(), 0);
            let mut reader = log.attach(2);
            let read: Vec<String> =
                vec![text(reader.next().await), text(reader.next().await), text(reader.next().await)];
            assert_eq!(read, ["2:b", "3:c", "4:exit"]);
            assert_eq!(text(reader.next().await), "end");
            assert_eq!(text(log.attach(9).next().await), "end");
        });
    }

    #[test]
    fn a_full_log_drops_the_oldest_events_when_nobody_reads_and_a_late_reader_sees_the_gap() {
        smol::block_on(async {
            let limit = 3 * (EVENT_OVERHEAD + 1);
            let log = Arc::new(JobLog::new(Some(limit)));
            for word in ["a", "b", "c", "d", "e"] {
                log.push(Pipe::Stdout, word.into(), 0).await;
            }
            log.finish(outcome(), 0);
            assert!(log.bytes() <= limit);
            let mut reader = log.attach(1);
            assert_eq!(text(reader.next().await), "gap 1..3");
            assert_eq!(text(reader.next().await), "3:c");
            let (events, dropped) = log.collect().await;
            assert_eq!((events.len(), dropped), (4, true), "c d e and the exit");
        });
    }

    #[test]
    fn detachment_is_timed_from_the_last_reader_leaving() {
        smol::block_on(async {
            let log = Arc::new(JobLog::new(None));
            let reader = log.attach(1);
            // Timed from here, not from the watcher's first poll, which a loaded machine may
            // delay past the reader's leaving.
            let started = Instant::now();
            let watch = smol::spawn({
                let log = log.clone();
                async move {
                    log.detached_for(Duration::from_millis(100)).await;
                    started.elapsed()
                }
            });
            async_io::Timer::after(Duration::from_millis(200)).await;
            log.push(Pipe::Stdout, "output does not count".into(), 0).await;
            drop(reader);
            let waited = watch.await;
            assert!(waited >= Duration::from_millis(300), "not while attached: {waited:?}");
        });
    }

    #[test]
    fn an_attached_reader_holds_the_job_back_instead_of_losing_events() {
        smol::block_on(async {
            let log = Arc::new(JobLog::new(Some(2 * (EVENT_OVERHEAD + 1))));
            let mut reader = log.attach(1);
            let writer = smol::spawn({
                let log = log.clone();
                async move {
                    for word in ["a", "b", "c", "d"] {
                        log.push(Pipe::Stdout, word.into(), 0).await;
                    }
                    log.finish(outcome(), 0);
                }
            });
            let mut read = Vec::new();
            loop {
                let item = reader.next().await;
                let done = item.is_none();
                read.push(text(item));
                if done {
                    break;
                }
            }
            writer.await;
            assert_eq!(read, ["1:a", "2:b", "3:c", "4:d", "5:exit", "end"]);
        });
    }
}
