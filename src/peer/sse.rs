//! Reading a Server-Sent Event stream from a daemon, event by event, as it arrives.
//!
//! Accepts `data:x` and `data: x`, multi-line data, `event:`/`id:` fields and skips comment
//! lines (heartbeats). A stream silent for longer than the idle limit counts as lost: daemons
//! send a heartbeat every 10 s. A line or an event longer than the caps below is an error, so
//! a peer cannot make the reader grow without bound.

use std::time::Duration;

use futures_lite::{AsyncBufReadExt, AsyncReadExt};

use super::{Client, ClientError};

/// The longest line read (an AI task's output line is at most 4 MiB before JSON escaping).
pub const LINE_LIMIT: usize = 16 * 1024 * 1024;
/// The most an event may hold (all its lines together).
pub const EVENT_LIMIT: usize = 16 * 1024 * 1024;

impl Client {
    /// Opens `GET path` as an event stream, resuming after `last_event_id` if given; a stream
    /// silent for longer than `idle` is reported as a timeout.
    pub async fn events(
        &self,
        path: &str,
        last_event_id: Option<u64>,
        idle: Duration,
    ) -> Result<EventStream, ClientError> {
        let last = last_event_id.map(|id| id.to_string());
        let stream = self.open_events(surf::http::Method::Get, path, None, last.as_deref()).await?;
        Ok(stream.with_idle_limit(idle))
    }
}

/// One event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    pub event: Option<String>,
    pub id: Option<String>,
    pub data: String,
}

/// An open event stream.
pub struct EventStream {
    response: surf::Response,
    url: String,
    idle_limit: Duration,
}

impl EventStream {
    pub(super) fn new(response: surf::Response, url: String, idle_limit: Duration) -> EventStream {
        EventStream { response, url, idle_limit }
    }

    /// A header of the response that opened the stream.
    pub fn header(&self, name: &str) -> Option<String> {
        self.response.header(name).map(|values| values.last().as_str().to_string())
    }

    /// How long the stream may stay silent (heartbeats count) before it is taken as lost.
    pub fn with_idle_limit(mut self, idle_limit: Duration) -> EventStream {
        self.idle_limit = idle_limit;
        self
    }

    /// Like [`EventStream::with_idle_limit`], on a stream in use.
    pub fn set_idle_limit(&mut self, idle_limit: Duration) {
        self.idle_limit = idle_limit;
    }

    /// The next event; `None` when the daemon ended the stream.
    pub async fn next(&mut self) -> Result<Option<Event>, ClientError> {
        let mut parser = Parser::default();
        loop {
            let mut line = String::new();
            let mut capped = (&mut self.response).take(LINE_LIMIT as u64 + 1);
            let read = crate::clock::timeout(self.idle_limit, capped.read_line(&mut line)).await;
            let read = match read {
                None => return Err(ClientError::Timeout { url: self.url.clone(), after: self.idle_limit }),
                Some(read) => {
                    read.map_err(|e| ClientError::Unreachable { url: self.url.clone(), reason: e.to_string() })?
                }
            };
            if read == 0 {
                return Ok(parser.finish());
            }
            if line.len() > LINE_LIMIT {
                return Err(self.too_long(format!("a line longer than {LINE_LIMIT} bytes")));
            }
            if let Some(event) = parser.line(&line) {
                return Ok(Some(event));
            }
            if parser.size() > EVENT_LIMIT {
                return Err(self.too_long(format!("an event larger than {EVENT_LIMIT} bytes")));
            }
        }
    }
}

impl EventStream {
    fn too_long(&self, what: String) -> ClientError {
        ClientError::Decode { url: self.url.clone(), reason: format!("the event stream sent {what}") }
    }
}

/// Builds events from lines.
#[derive(Debug, Default)]
struct Parser {
    event: Event,
    seen: bool,
}

impl Parser {
    /// Takes one line (with or without its line ending); an empty line completes an event.
    fn line(&mut self, line: &str) -> Option<Event> {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            return self.finish();
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        self.seen = true;
        match field {
            "event" => self.event.event = Some(value.to_string()),
            "id" => self.event.id = Some(value.to_string()),
            "data" => {
                if !self.event.data.is_empty() {
                    self.event.data.push('\n');
                }
                self.event.data.push_str(value);
            }
            _ => {}
        }
        None
    }

    /// Bytes held for the event being built.
    fn size(&self) -> usize {
        self.event.data.len()
            + self.event.id.as_ref().map_or(0, String::len)
            + self.event.event.as_ref().map_or(0, String::len)
    }

    fn finish(&mut self) -> Option<Event> {
        let seen = std::mem::take(&mut self.seen);
        let event = std::mem::take(&mut self.event);
        seen.then_some(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<Event> {
        let mut parser = Parser::default();
        let mut events: Vec<Event> = text.split_inclusive('\n').filter_map(|line| parser.line(line)).collect();
        events.extend(parser.finish());
        events
    }

    /// Event streams come from other daemons: any line, any length, any bytes.
    #[test]
    fn any_stream_is_read_without_panicking() {
        let text = "event: exit\nid: 7\ndata: {\"a\":1}\n\n: ping\n\n";
        for input in crate::fuzz::inputs(&[text], "event:idata \r\n{}", 27, 5_000) {
            let events = parse(&input);
            assert!(events.len() <= input.matches('\n').count() + 1, "{input:?}");
        }
    }

    #[test]
    fn events_with_and_without_a_space_after_the_colon() {
        let events = parse(": ping\n\ndata: {\"a\":1}\n\ndata:x\r\n\r\nevent:exit\nid: 7\ndata: one\ndata: two\n\n");
        let data: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(data, ["{\"a\":1}", "x", "one\ntwo"]);
        assert_eq!(events[2].event.as_deref(), Some("exit"));
        assert_eq!(events[2].id.as_deref(), Some("7"));
    }

    #[test]
    fn a_last_event_without_its_blank_line_still_counts() {
        assert_eq!(parse("data: end").len(), 1);
        assert!(parse(": only a comment\n\n").is_empty());
    }
}
