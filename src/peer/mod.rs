//! The one HTTP client: the CLI to its local daemon, and daemons, MCP and the dashboard to peers.
//!
//! This is the only module that knows surf. Callers speak in paths and JSON values and get a
//! [`ClientError`] that says which daemon failed and how.

pub mod retry;
pub mod sse;
pub mod transfer;
mod transport;
pub mod websocket;

pub use transport::Trust;

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
/// The HTTP method of [`Client::call`], re-exported so callers need not know surf.
pub use surf::http::Method;

use crate::instance::{self, Daemon};
use crate::paths::Paths;
use crate::tls::Fingerprint;

/// How a call to a daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("refusing {url}: {reason}")]
    Tls { url: String, reason: String },
    #[error("{url} did not answer within {} s", after.as_secs_f32())]
    Timeout { url: String, after: Duration },
    #[error("{message}")]
    Remote { status: u16, code: Option<u64>, message: String },
    #[error("unexpected answer from {url}: {reason}")]
    Decode { url: String, reason: String },
    #[error("the local daemon is not running (start it with `loopsy start`)")]
    NotRunning,
    /// A local file of a transfer could not be read or written.
    #[error("{path}: {reason}")]
    Local { path: String, reason: String },
}

/// A daemon's base URL and the key to present to it.
#[derive(Clone)]
pub struct Client {
    http: surf::Client,
    base: String,
    key: Option<String>,
    timeout: Duration,
    /// Sent with every request (an `Idempotency-Key`).
    headers: Vec<(String, String)>,
    /// How the daemon is trusted (the WebSocket opens its own connection with it).
    trust: Trust,
    /// The largest answer body read (`call`, `forward`); a longer one is an error.
    body_limit: usize,
}

/// The default cap on an answer body: above any legitimate answer (an `/execute` result holds at
/// most 2 × 10 MiB of output, JSON-escaped), far below what would hurt.
pub const BODY_LIMIT: usize = 64 * 1024 * 1024;
/// The cap on an error body (read to show its message).
pub(crate) const ERROR_BODY_LIMIT: usize = 64 * 1024;

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret: never in debug output.
        f.debug_struct("Client").field("base", &self.base).finish_non_exhaustive()
    }
}

impl Client {
    /// A client for the daemon at `base` (e.g. `http://127.0.0.1:19532`).
    pub fn new(base: &str, key: Option<String>) -> Client {
        Client::pinned(base, key, None)
    }

    /// A client that accepts only the certificate `pin`; the connection is HTTPS whatever
    /// scheme `base` names, so a pinned peer is never reached in clear.
    pub fn pinned(base: &str, key: Option<String>, pin: Option<Fingerprint>) -> Client {
        let mut base = base.trim_end_matches('/').to_string();
        if pin.is_some() {
            if let Some(rest) = base.strip_prefix("http://") {
                base = format!("https://{rest}");
            }
        }
        let trust = match pin {
            Some(pin) => Trust::Pinned(pin),
            None => Trust::Plain,
        };
        Client::with_trust(base, key, trust)
    }

    /// A client for pairing endpoints: plain HTTP, or HTTPS with any certificate. Safe only for
    /// pairing, whose messages are protected by the SPAKE2 channel (`pairing::channel`).
    pub fn for_pairing(base: &str) -> Client {
        Client::with_trust(base.trim_end_matches('/').to_string(), None, Trust::PairingOnly)
    }

    fn with_trust(base: String, key: Option<String>, trust: Trust) -> Client {
        Client {
            http: surf::Client::with_http_client(transport::Transport::new(trust.clone())),
            base,
            key,
            timeout: Duration::from_secs(30),
            headers: Vec::new(),
            trust,
            body_limit: BODY_LIMIT,
        }
    }

    /// A client for the running daemon of `paths`, with that daemon's own key (and, when it
    /// serves HTTPS, its own certificate pinned).
    pub fn local(paths: &Paths, key: &str) -> Result<Client, ClientError> {
        match instance::probe(paths) {
            Ok(Daemon::Running(info)) => {
                let pin = if info.tls { crate::tls::local_fingerprint(paths) } else { None };
                Ok(Client::pinned(&info.url, Some(key.to_string()), pin))
            }
            _ => Err(ClientError::NotRunning),
        }
    }

    /// This client, keeping a few connections to its daemon open between requests, each for at
    /// most `idle` (see `transport::Pool`: when a connection goes back, how a closed one is
    /// recognised). For a client that makes many calls to one daemon (the MCP server's client of
    /// its local daemon); clones share the kept connections.
    pub fn keeping_alive(mut self, idle: Duration) -> Client {
        self.http = surf::Client::with_http_client(transport::Transport::keeping_alive(self.trust.clone(), idle));
        self
    }

    /// Whether `other` reaches the same daemon the same way (address, key, trust).
    pub(crate) fn same_target(&self, other: &Client) -> bool {
        self.base == other.base && self.key == other.key && self.trust == other.trust
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// This client, sending `name: value` with every request as well.
    pub fn with_header(mut self, name: &str, value: &str) -> Client {
        self.headers.retain(|(existing, _)| !existing.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Caps answer bodies at `limit` bytes (health probes of announced addresses take little).
    pub fn with_body_limit(mut self, limit: usize) -> Client {
        self.body_limit = limit;
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// `exchange`, or [`ClientError::Timeout`] once the client's timeout passed.
    async fn timed<T>(
        &self,
        exchange: impl std::future::Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        crate::clock::timeout(self.timeout, exchange)
            .await
            .unwrap_or_else(|| Err(ClientError::Timeout { url: self.base.clone(), after: self.timeout }))
    }

    /// `GET path`, decoded from JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::Get, path, None::<&()>).await
    }

    /// `method path` with an optional JSON body, decoded from JSON.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let url = format!("{}{}", self.base, path);
        let request = self.request(method, &url, body)?;
        let exchange = async {
            let mut response = request.await.map_err(|e| transport_error(&self.base, e.to_string()))?;
            let bytes = read_body(&mut response, self.body_limit, &url).await?;
            Ok::<_, ClientError>((response.status(), bytes))
        };
        let (status, bytes) = self.timed(exchange).await?;
        if !status.is_success() {
            return Err(remote_error(status as u16, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| decode_error(&url, e))
    }

    /// `POST path` with a JSON body, answered by a Server-Sent Event stream. The timeout bounds
    /// the wait for the response head; then the stream may last as long as events (or the
    /// daemon's heartbeats) keep coming.
    pub async fn post_events(&self, path: &str, body: &impl Serialize) -> Result<sse::EventStream, ClientError> {
        let url = format!("{}{}", self.base, path);
        let json = serde_json::to_vec(body).map_err(|e| decode_error(&url, e))?;
        self.open_events(Method::Post, path, Some(json), None).await
    }

    fn request(
        &self,
        method: Method,
        url: &str,
        body: Option<&impl Serialize>,
    ) -> Result<surf::RequestBuilder, ClientError> {
        let mut request = self.http.request(method, url);
        if let Some(key) = &self.key {
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        for (name, value) in &self.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        if let Some(body) = body {
            // Content-Type only with a body: 1.0.21 daemons reject an empty JSON body.
            let json = serde_json::to_vec(body).map_err(|e| decode_error(url, e))?;
            request = request.body(json).content_type("application/json");
        }
        Ok(request)
    }
}

/// Raw forwarding, for the dashboard's proxy: bytes in, status and bytes out.
impl Client {
    /// `method path` with an optional JSON body given as bytes; any status is returned with the
    /// body as it came (the caller relays it).
    pub async fn forward(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let url = format!("{}{}", self.base, path);
        let request = self.raw_request(method, &url, body);
        let exchange = async {
            let mut response = request.await.map_err(|e| transport_error(&self.base, e.to_string()))?;
            let bytes = read_body(&mut response, self.body_limit, &url).await?;
            Ok::<_, ClientError>((response.status() as u16, bytes))
        };
        self.timed(exchange).await
    }

    /// `method path` answered by an event stream; `last_event_id` resumes a stream that has ids.
    /// A refusal is `ClientError::Remote` with the daemon's status and message.
    pub async fn open_events(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        last_event_id: Option<&str>,
    ) -> Result<sse::EventStream, ClientError> {
        let url = format!("{}{}", self.base, path);
        let mut request = self.raw_request(method, &url, body).header("Accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let exchange = async { request.await.map_err(|e| transport_error(&self.base, e.to_string())) };
        let mut response = self.timed(exchange).await?;
        let status = response.status();
        if !status.is_success() {
            let read = read_body(&mut response, ERROR_BODY_LIMIT, &url);
            let bytes = self.timed(read).await?;
            return Err(remote_error(status as u16, &bytes));
        }
        Ok(sse::EventStream::new(response, self.base.clone(), SSE_IDLE_LIMIT))
    }

    fn raw_request(&self, method: Method, url: &str, body: Option<Vec<u8>>) -> surf::RequestBuilder {
        let mut request = self.http.request(method, url);
        if let Some(key) = &self.key {
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        for (name, value) in &self.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        match body {
            // Content-Type only with a body: 1.0.21 daemons reject an empty JSON body.
            Some(bytes) if !bytes.is_empty() => request.body(bytes).content_type("application/json"),
            _ => request,
        }
    }
}

/// An event stream silent for this long is taken as lost (daemons send a heartbeat every 10 s;
/// 1.0.21 daemons send none, so this is generous).
const SSE_IDLE_LIMIT: Duration = Duration::from_secs(600);

/// Reads an answer body of at most `limit` bytes; a longer one (declared or sent) is an error,
/// and what follows the limit is never read.
pub(crate) async fn read_body(response: &mut surf::Response, limit: usize, url: &str) -> Result<Vec<u8>, ClientError> {
    use futures_lite::AsyncReadExt;
    let too_long =
        || ClientError::Decode { url: url.to_string(), reason: format!("the answer is larger than {limit} bytes") };
    if response.len().is_some_and(|declared| declared > limit) {
        return Err(too_long());
    }
    let mut bytes = Vec::new();
    let body = response.take_body().into_reader();
    body.take(limit as u64 + 1).read_to_end(&mut bytes).await.map_err(|e| decode_error(url, e))?;
    if bytes.len() > limit {
        return Err(too_long());
    }
    Ok(bytes)
}

/// Whether `base` is a URL the HTTP client can join paths to: some host names that look valid
/// (punycode labels that do not decode, `xn--…`) fail IDNA, and the client would panic on them.
pub(crate) fn check_base_url(base: &str) -> Result<(), String> {
    surf::Url::parse(base)
        .and_then(|url| url.join("/api/v1/health"))
        .map(drop)
        .map_err(|e| format!("'{base}' is not a usable address: {e}"))
}

/// The base URL of `host:port`, bracketing IPv6 literals.
pub(crate) fn base_url(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("http://[{host}]:{port}")
    } else {
        format!("http://{host}:{port}")
    }
}

fn decode_error(url: &str, e: impl std::fmt::Display) -> ClientError {
    ClientError::Decode { url: url.to_string(), reason: e.to_string() }
}

/// The URL path of the context entry `key`. A key named `watch` is spelled `%77atch`: the path
/// `/api/v1/context/watch` is the watch stream (see `daemon/routes/context.rs`).
pub fn context_path(key: &str) -> String {
    match crate::percent::encode(key).as_str() {
        "watch" => "/api/v1/context/%77atch".to_string(),
        segment => format!("/api/v1/context/{segment}"),
    }
}
fn transport_error(base: &str, reason: String) -> ClientError {
    match reason.strip_prefix(transport::TLS_ERROR) {
        Some(tls) => ClientError::Tls { url: base.to_string(), reason: tls.to_string() },
        None => ClientError::Unreachable { url: base.to_string(), reason },
    }
}

/// Reads any of 1.0.21's three error shapes (§1.8).
fn remote_error(status: u16, body: &[u8]) -> ClientError {
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let (code, message) = match &json["error"] {
        // The framework family has `error` = reason phrase and the detail in `message`.
        _ if json["statusCode"].is_number() && json["message"].is_string() => {
            (None, json["message"].as_str().map(String::from))
        }
        serde_json::Value::Object(error) => (
            error.get("code").and_then(|c| c.as_u64()),
            error.get("message").and_then(|m| m.as_str()).map(String::from),
        ),
        serde_json::Value::String(text) => (None, Some(text.clone())),
        _ => (None, json["message"].as_str().map(String::from)),
    };
    ClientError::Remote { status, code, message: message.unwrap_or_else(|| format!("HTTP {status}")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_family_yields_a_message() {
        let check = |body: &str, code: Option<u64>, message: &str| match remote_error(400, body.as_bytes()) {
            ClientError::Remote { code: c, message: m, .. } => assert_eq!((c, m.as_str()), (code, message)),
            other => panic!("{other:?}"),
        };
        check(r#"{"error":{"code":5001,"message":"Key 'x' not found"}}"#, Some(5001), "Key 'x' not found");
        check(r#"{"error":"Task not found"}"#, None, "Task not found");
        check(
            r#"{"statusCode":400,"error":"Bad Request","message":"Body is not valid JSON"}"#,
            None,
            "Body is not valid JSON",
        );
        check("not json", None, "HTTP 400");
    }

    #[test]
    fn a_host_name_that_fails_idna_is_an_error_not_a_panic() {
        assert!(check_base_url("http://127.0.0.1:19532").is_ok());
        assert!(check_base_url("http://bob.lan:19532").is_ok());
        assert!(check_base_url("http://xn--zz:19532").is_err());
        assert_eq!(base_url("::1", 5), "http://[::1]:5");
    }
}
