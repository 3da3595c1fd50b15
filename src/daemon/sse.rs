//! Server-Sent Event responses fed from a channel, with heartbeat comments.
//!
//! tide's own `sse` endpoint cannot send comment lines, so a stream here is a response body read
//! from a channel of pre-formatted event bytes: `text/event-stream`, no content length (chunked),
//! a `: ping` comment whenever the channel was quiet for [`HEARTBEAT`] so a vanished client is
//! noticed. The body owns the task producing the events: when the client goes away the body is
//! dropped, and with it the task.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_io::Timer;
use futures_lite::io::{AsyncRead, BufReader};
use futures_lite::Stream;
use smol::channel::Receiver;

/// Quiet time after which a comment line is sent.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(10);

/// `data: <json>\n\n`: one event in the 1.0.21 shape (no `event:` or `id:` field).
pub(crate) fn data_event(json: &impl serde::Serialize) -> Vec<u8> {
    let mut bytes = b"data: ".to_vec();
    serde_json::to_writer(&mut bytes, json).expect("event JSON serialises");
    bytes.extend_from_slice(b"\n\n");
    bytes
}

/// `id: <id>\ndata: <json>\n\n`: a numbered event, so a client can resume after it.
pub(crate) fn numbered_event(id: u64, json: &impl serde::Serialize) -> Vec<u8> {
    let mut bytes = format!("id: {id}\n").into_bytes();
    bytes.extend(data_event(json));
    bytes
}

/// A 200 `text/event-stream` response whose body is what `events` yields until it closes.
/// `producer` runs as long as the body exists.
pub(crate) fn response(events: Receiver<Vec<u8>>, producer: smol::Task<()>) -> tide::Response {
    response_every(events, producer, HEARTBEAT)
}

/// Like [`response`], with a heartbeat after `heartbeat` of quiet.
pub(crate) fn response_every(
    events: Receiver<Vec<u8>>,
    producer: smol::Task<()>,
    heartbeat: Duration,
) -> tide::Response {
    let body = SseBody {
        events: Box::pin(events),
        current: Vec::new(),
        pos: 0,
        heartbeat: Timer::interval(heartbeat),
        every: heartbeat,
        _producer: producer,
    };
    let mut res = tide::Response::new(200);
    res.set_body(tide::Body::from_reader(BufReader::new(body), None));
    res.set_content_type("text/event-stream");
    res.insert_header("Cache-Control", "no-cache");
    res
}

struct SseBody {
    events: Pin<Box<Receiver<Vec<u8>>>>,
    current: Vec<u8>,
    pos: usize,
    heartbeat: Timer,
    every: Duration,
    _producer: smol::Task<()>,
}

impl AsyncRead for SseBody {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        loop {
            if this.pos < this.current.len() {
                let n = buf.len().min(this.current.len() - this.pos);
                buf[..n].copy_from_slice(&this.current[this.pos..this.pos + n]);
                this.pos += n;
                return Poll::Ready(Ok(n));
            }
            match this.events.as_mut().poll_next(cx) {
                Poll::Ready(Some(bytes)) => {
                    this.current = bytes;
                    this.pos = 0;
                    this.heartbeat.set_interval(this.every);
                    continue;
                }
                Poll::Ready(None) => return Poll::Ready(Ok(0)),
                Poll::Pending => {}
            }
            match Pin::new(&mut this.heartbeat).poll_next(cx) {
                Poll::Ready(_) => {
                    this.current = b": ping\n\n".to_vec();
                    this.pos = 0;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::AsyncReadExt;

    #[test]
    fn events_are_passed_through_and_the_body_ends_with_the_channel() {
        smol::block_on(async {
            let (tx, rx) = smol::channel::bounded(4);
            let producer = smol::spawn(async move {
                tx.send(data_event(&serde_json::json!({"type": "stdout", "data": "hi"}))).await.unwrap();
            });
            let mut body = SseBody {
                events: Box::pin(rx),
                current: Vec::new(),
                pos: 0,
                heartbeat: Timer::interval(HEARTBEAT),
                every: HEARTBEAT,
                _producer: producer,
            };
            let mut text = String::new();
            body.read_to_string(&mut text).await.unwrap();
            assert_eq!(text, "data: {\"type\":\"stdout\",\"data\":\"hi\"}\n\n");
        });
    }
}
