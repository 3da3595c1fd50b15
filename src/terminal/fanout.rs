//! What each attached client still has to be sent: a queue with a byte budget.
//!
//! The PTY reader never waits for a client. It appends every chunk to every client's queue; a
//! client whose queue would pass its budget (a stalled connection) loses the queue and is sent
//! a fresh screen snapshot when it reads again, so one slow client neither holds up the others
//! nor grows the daemon's memory.

use std::collections::VecDeque;

/// One thing for a client, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    /// Terminal bytes (a WebSocket binary frame).
    Output(Vec<u8>),
    /// A small JSON control message (a WebSocket text frame).
    Control(serde_json::Value),
    /// The last frame: the connection closes after it.
    End(serde_json::Value),
}

impl Frame {
    fn cost(&self) -> usize {
        match self {
            Frame::Output(bytes) => bytes.len(),
            // Control frames are small; count them so a flood of them is bounded too.
            Frame::Control(_) | Frame::End(_) => 64,
        }
    }
}

/// A client's pending frames.
#[derive(Debug)]
pub(crate) struct Queue {
    frames: VecDeque<Frame>,
    bytes: usize,
    budget: usize,
    /// Frames were dropped: the next take starts with a fresh snapshot.
    skipped: Option<usize>,
}

/// What a client's writer takes from its queue.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Take {
    /// The queue as it was.
    Frames(Vec<Frame>),
    /// The client fell behind by this many bytes: send a snapshot, then these frames.
    Skipped(usize),
}

impl Queue {
    pub(crate) fn new(budget: usize) -> Queue {
        Queue { frames: VecDeque::new(), bytes: 0, budget, skipped: None }
    }

    /// Appends `frame`, or drops everything queued when the budget would be passed.
    pub(crate) fn push(&mut self, frame: Frame) {
        let cost = frame.cost();
        if let Some(skipped) = &mut self.skipped {
            // Already behind: the snapshot taken later will include this.
            if let Frame::End(_) = frame {
                self.frames.push_back(frame);
            } else {
                *skipped += cost;
            }
            return;
        }
        if self.bytes + cost > self.budget && !matches!(frame, Frame::End(_)) {
            self.skipped = Some(self.bytes + cost);
            self.frames.clear();
            self.bytes = 0;
            return;
        }
        self.bytes += cost;
        self.frames.push_back(frame);
    }

    /// Everything pending. After `Skipped`, the frames still queued (an end) follow in the next
    /// take.
    pub(crate) fn take(&mut self) -> Take {
        if let Some(skipped) = self.skipped.take() {
            return Take::Skipped(skipped);
        }
        self.bytes = 0;
        Take::Frames(self.frames.drain(..).collect())
    }

    /// Whether this client is still being served in order and has at least `high_water`
    /// bytes waiting (a client that fell behind is not waited for).
    pub(crate) fn is_full(&self, high_water: usize) -> bool {
        self.skipped.is_none() && self.bytes >= high_water
    }

    /// Drops what is queued (the client has not read for too long): it gets a fresh screen
    /// when it reads again.
    pub(crate) fn skip(&mut self) {
        if self.skipped.is_none() {
            self.skipped = Some(self.bytes);
            self.frames.retain(|frame| matches!(frame, Frame::End(_)));
            self.bytes = 0;
        }
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.frames.is_empty() && self.skipped.is_none()
    }

    #[cfg(test)]
    fn queued_bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(n: usize) -> Frame {
        Frame::Output(vec![b'x'; n])
    }

    #[test]
    fn frames_come_out_in_order() {
        let mut queue = Queue::new(100);
        queue.push(out(10));
        queue.push(Frame::Control(serde_json::json!({"type": "size"})));
        queue.push(out(5));
        assert_eq!(
            queue.take(),
            Take::Frames(vec![out(10), Frame::Control(serde_json::json!({"type": "size"})), out(5)])
        );
        assert!(queue.is_empty());
    }

    #[test]
    fn a_client_past_its_budget_skips_to_a_snapshot() {
        let mut queue = Queue::new(100);
        queue.push(out(60));
        queue.push(out(60));
        assert_eq!(queue.queued_bytes(), 0, "the queue was dropped, not kept");
        queue.push(out(30));
        assert_eq!(queue.take(), Take::Skipped(150));
        queue.push(out(7));
        assert_eq!(queue.take(), Take::Frames(vec![out(7)]));
    }

    #[test]
    fn a_queue_is_full_above_its_mark_until_it_skips() {
        let mut queue = Queue::new(100);
        queue.push(out(40));
        assert!(!queue.is_full(50));
        queue.push(out(20));
        assert!(queue.is_full(50));
        queue.skip();
        assert!(!queue.is_full(50));
        assert_eq!(queue.take(), Take::Skipped(60));
    }

    #[test]
    fn the_end_is_never_dropped() {
        let mut queue = Queue::new(10);
        queue.push(out(20));
        queue.push(Frame::End(serde_json::json!({"type": "exit"})));
        assert_eq!(queue.take(), Take::Skipped(20));
        assert_eq!(queue.take(), Take::Frames(vec![Frame::End(serde_json::json!({"type": "exit"}))]));
    }
}
