//! The two blocking stages an upload's bytes go through, each on its own long-lived thread:
//! hashing, then writing. Batches flow async side → hasher → writer and their buffers come back
//! for reuse, so reading the socket (async side), hashing batch n+1 and writing batch n overlap.
//!
//! At most [`DEPTH`] batches are in flight; the async side waits for a buffer to come back before
//! it sends more (memory per upload stays `DEPTH + 1` batches). Batches reach each stage in the
//! order they were sent. The first error of either stage stops the pipeline: it is what the next
//! [`Pipeline::send`] or [`Pipeline::finish`] returns, and nothing more is written.

use std::io;
use std::sync::mpsc;

use smol::channel;

/// Batches in flight: being hashed, between the stages, being written.
pub(crate) const DEPTH: usize = 3;

/// One stage: takes every batch in order; an error stops the pipeline.
pub(crate) trait Stage: Send + 'static {
    fn take(&mut self, batch: &[u8]) -> io::Result<()>;
}

enum ToWriter<H> {
    Batch(Vec<u8>),
    /// The hasher is done: its state, for the writer to hand back with its own.
    End(H),
}

enum Back<H, W> {
    /// A batch through both stages: its buffer, for the next one.
    Buffer(Vec<u8>),
    Failed(io::Error),
    /// Both stages' final states, after every batch.
    Done(H, W),
}

/// A running pipeline: see the module documentation.
pub(crate) struct Pipeline<H, W> {
    /// `None` once finishing.
    to_hasher: Option<channel::Sender<Vec<u8>>>,
    back: channel::Receiver<Back<H, W>>,
    in_flight: usize,
    /// Buffers returned while fewer than `DEPTH` batches were in flight.
    spare: Vec<Vec<u8>>,
}

impl<H: Stage, W: Stage> Pipeline<H, W> {
    /// Starts the two threads.
    pub(crate) fn start(mut hasher: H, mut writer: W) -> io::Result<Pipeline<H, W>> {
        let (to_hasher, from_async) = channel::bounded::<Vec<u8>>(DEPTH);
        let (to_writer, from_hasher) = mpsc::sync_channel::<ToWriter<H>>(DEPTH);
        let (back_tx, back) = channel::unbounded::<Back<H, W>>();
        let hasher_back = back_tx.clone();
        std::thread::Builder::new().name("loopsy-hash".into()).spawn(move || {
            while let Ok(batch) = from_async.recv_blocking() {
                if let Err(e) = hasher.take(&batch) {
                    let _ = hasher_back.send_blocking(Back::Failed(e));
                    return; // the writer sees the end without `End` and stops
                }
                if to_writer.send(ToWriter::Batch(batch)).is_err() {
                    return; // the writer stopped (and said why)
                }
            }
            let _ = to_writer.send(ToWriter::End(hasher));
        })?;
        std::thread::Builder::new().name("loopsy-write".into()).spawn(move || {
            while let Ok(message) = from_hasher.recv() {
                match message {
                    ToWriter::Batch(mut batch) => {
                        if let Err(e) = writer.take(&batch) {
                            let _ = back_tx.send_blocking(Back::Failed(e));
                            return; // dropping `from_hasher` stops the hasher too
                        }
                        batch.clear();
                        let _ = back_tx.send_blocking(Back::Buffer(batch));
                    }
                    ToWriter::End(hasher) => {
                        let _ = back_tx.send_blocking(Back::Done(hasher, writer));
                        return;
                    }
                }
            }
        })?;
        Ok(Pipeline { to_hasher: Some(to_hasher), back, in_flight: 0, spare: Vec::new() })
    }

    /// Sends `batch` through the stages; returns an empty buffer for the next one (a returned
    /// one, or a new one with `capacity` while fewer than [`DEPTH`] are in flight).
    pub(crate) async fn send(&mut self, batch: Vec<u8>, capacity: usize) -> io::Result<Vec<u8>> {
        let to_hasher = self.to_hasher.as_ref().ok_or_else(stopped)?;
        if to_hasher.send(batch).await.is_err() {
            return Err(self.failure().await);
        }
        self.in_flight += 1;
        while let Ok(message) = self.back.try_recv() {
            self.handle(message)?;
        }
        while self.in_flight >= DEPTH {
            let message = self.back.recv().await.map_err(|_| stopped())?;
            self.handle(message)?;
        }
        Ok(self.spare.pop().unwrap_or_else(|| Vec::with_capacity(capacity)))
    }

    /// Waits until every batch went through both stages; returns their final states.
    pub(crate) async fn finish(mut self) -> io::Result<(H, W)> {
        self.to_hasher = None;
        loop {
            match self.back.recv().await.map_err(|_| stopped())? {
                Back::Done(hasher, writer) => return Ok((hasher, writer)),
                message => self.handle(message)?,
            }
        }
    }

    fn handle(&mut self, message: Back<H, W>) -> io::Result<()> {
        match message {
            Back::Buffer(buffer) => {
                self.in_flight -= 1;
                self.spare.push(buffer);
                Ok(())
            }
            Back::Failed(e) => {
                self.to_hasher = None;
                Err(e)
            }
            Back::Done(..) => Err(stopped()),
        }
    }

    /// Why the pipeline stopped taking batches: a stage's error, else that a thread is gone.
    async fn failure(&mut self) -> io::Error {
        self.to_hasher = None;
        while let Ok(message) = self.back.recv().await {
            if let Back::Failed(e) = message {
                return e;
            }
        }
        stopped()
    }
}

fn stopped() -> io::Error {
    io::Error::other("the hashing or writing thread of the upload stopped")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Records what it took; fails at batch `fail_at`, or panics at `panic_at`.
    #[derive(Default)]
    struct Record {
        seen: Arc<Mutex<Vec<u8>>>,
        batches: usize,
        fail_at: Option<usize>,
        panic_at: Option<usize>,
    }

    impl Stage for Record {
        fn take(&mut self, batch: &[u8]) -> io::Result<()> {
            self.batches += 1;
            if self.fail_at == Some(self.batches) {
                return Err(io::Error::other(format!("failed at batch {}", self.batches)));
            }
            assert!(self.panic_at != Some(self.batches), "stage panics");
            self.seen.lock().unwrap().extend_from_slice(batch);
            Ok(())
        }
    }

    fn batches(count: usize) -> Vec<Vec<u8>> {
        (0..count).map(|i| (0..1000 + i).map(|j| (i * 7 + j) as u8).collect()).collect()
    }

    #[test]
    fn both_stages_take_every_batch_in_order_and_buffers_are_reused() {
        smol::block_on(async {
            let (hashed, written) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
            let hasher = Record { seen: hashed.clone(), ..Record::default() };
            let writer = Record { seen: written.clone(), ..Record::default() };
            let mut pipeline = Pipeline::start(hasher, writer).unwrap();
            let input = batches(50);
            let mut buffer = Vec::with_capacity(4096);
            let mut allocated = std::collections::HashSet::new();
            for batch in &input {
                buffer.extend_from_slice(batch);
                allocated.insert(buffer.as_ptr() as usize);
                buffer = pipeline.send(buffer, 4096).await.unwrap();
                assert!(buffer.is_empty());
            }
            let (hasher, writer) = pipeline.finish().await.unwrap();
            assert_eq!((hasher.batches, writer.batches), (50, 50));
            let whole = input.concat();
            assert!(*hashed.lock().unwrap() == whole, "the hasher saw the bytes in order");
            assert!(*written.lock().unwrap() == whole, "the writer saw the bytes in order");
            assert!(allocated.len() <= DEPTH + 1, "{} buffers for 50 batches", allocated.len());
        });
    }

    #[test]
    fn an_error_of_the_writer_stops_the_pipeline_and_nothing_after_it_is_written() {
        smol::block_on(async {
            let written = Arc::new(Mutex::new(Vec::new()));
            let writer = Record { seen: written.clone(), fail_at: Some(3), ..Record::default() };
            let mut pipeline = Pipeline::start(Record::default(), writer).unwrap();
            let input = batches(20);
            let mut error = None;
            for batch in &input {
                match pipeline.send(batch.clone(), 0).await {
                    Ok(_) => {}
                    Err(e) => {
                        error = Some(e);
                        break;
                    }
                }
            }
            let error = match error {
                Some(e) => e,
                None => pipeline.finish().await.err().expect("finish fails"),
            };
            assert_eq!(error.to_string(), "failed at batch 3");
            assert!(*written.lock().unwrap() == input[..2].concat(), "only the batches before the error");
        });
    }

    #[test]
    fn an_error_or_a_panic_of_the_hasher_stops_the_pipeline_before_the_batch_is_written() {
        for (fail_at, panic_at) in [(Some(2), None), (None, Some(4))] {
            smol::block_on(async {
                let written = Arc::new(Mutex::new(Vec::new()));
                let hasher = Record { fail_at, panic_at, ..Record::default() };
                let writer = Record { seen: written.clone(), ..Record::default() };
                let mut pipeline = Pipeline::start(hasher, writer).unwrap();
                let input = batches(20);
                let mut failed = false;
                for batch in &input {
                    if pipeline.send(batch.clone(), 0).await.is_err() {
                        failed = true;
                        break;
                    }
                }
                // Until both threads are gone: the writer may still be on the batches before.
                let Pipeline { to_hasher, back, .. } = pipeline;
                drop(to_hasher);
                while let Ok(message) = back.recv().await {
                    failed |= matches!(message, Back::Failed(_));
                    assert!(!matches!(message, Back::Done(..)), "a stopped pipeline never finishes");
                }
                assert!(failed, "the push fails");
                let stopped_at = fail_at.or(panic_at).unwrap() - 1;
                assert!(*written.lock().unwrap() == input[..stopped_at].concat(), "nothing unhashed is written");
            });
        }
    }

    #[test]
    fn an_empty_pipeline_finishes_with_untouched_stages() {
        smol::block_on(async {
            let pipeline = Pipeline::start(Record::default(), Record::default()).unwrap();
            let (hasher, writer) = pipeline.finish().await.unwrap();
            assert_eq!((hasher.batches, writer.batches), (0, 0));
        });
    }
}
