//! Reading a daemon's Server-Sent Events stream (`GET …/stream`) through [`Client`].
//!
//! Only the parts of SSE the daemons send: `id:`, `event:`, `data:` and comment lines, both
//! `data:x` and `data: x`. Reconnecting is the caller's decision (it knows the last id).

use std::time::Duration;

use futures_lite::io::BufReader;
use futures_lite::AsyncBufReadExt;
use surf::http::Method;

use super::{remote_error, transport_error, Client, ClientError};

/// One event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// An open event stream.
pub struct EventStream {
    body: BufReader<surf::Response>,
    url: String,
    idle: Duration,
}

impl Client {
    /// Opens `GET path` as an event stream, resuming after `last_event_id` if given. A stream
    /// silent for longer than `idle` (heartbeats count) is reported as a timeout.
    pub async fn events(
        &self,
        path: &str,
        last_event_id: Option<u64>,
        idle: Duration,
    ) -> Result<EventStream, ClientError> {
        let url = format!("{}{}", self.base, path);
        let mut request = self.http.request(Method::Get, &url).header("Accept", "text/event-stream");
        if let Some(key) = &self.key {
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let head = async { request.await.map_err(|e| transport_error(&self.base, e.to_string())) };
        let timeout = async {
            async_io::Timer::after(self.timeout).await;
            Err(ClientError::Timeout { url: self.base.clone(), after: self.timeout })
        };
        let mut response = futures_lite::future::or(head, timeout).await?;
        if !response.status().is_success() {
            let bytes = response.body_bytes().await.unwrap_or_default();
            return Err(remote_error(response.status() as u16, &bytes));
        }
        Ok(EventStream { body: BufReader::new(response), url, idle })
    }
}

impl EventStream {
    /// The next event; `None` when the server ended the stream.
    pub async fn next(&mut self) -> Result<Option<SseEvent>, ClientError> {
        let mut event = SseEvent::default();
        let mut seen = false;
        loop {
            let mut line = String::new();
            let (url, idle_for) = (&self.url, self.idle);
            let body = &mut self.body;
            let read = async {
                body.read_line(&mut line)
                    .await
                    .map_err(|e| ClientError::Unreachable { url: url.clone(), reason: e.to_string() })
            };
            let idle = async {
                async_io::Timer::after(idle_for).await;
                Err(ClientError::Timeout { url: url.clone(), after: idle_for })
            };
            if futures_lite::future::or(read, idle).await? == 0 {
                return Ok(seen.then_some(event));
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if seen {
                    return Ok(Some(event));
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            seen = true;
            match field {
                "id" => event.id = Some(value.to_string()),
                "event" => event.event = Some(value.to_string()),
                "data" => {
                    if !event.data.is_empty() {
                        event.data.push('\n');
                    }
                    event.data.push_str(value);
                }
                _ => {}
            }
        }
    }
}
