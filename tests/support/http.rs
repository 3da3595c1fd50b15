//! A small blocking HTTP/1.1 client over `std::net`, so tests control every byte they send:
//! missing headers, odd content types, oversized or chunked bodies, slow streams.
//!
//! It fails instead of hanging or guessing: every read has a deadline (a whole response must
//! arrive within the request's timeout, 30 s unless set; each read of a [`Stream`] within it),
//! a body shorter than its `Content-Length` or a chunked body without its last chunk is an
//! error, and an event stream tells a clean end from a timeout, a reset or a cut.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// A request under construction.
#[must_use]
pub struct Request {
    addr: String,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    timeout: Duration,
    host: bool,
    /// The local address to connect from (another loopback address plays another machine).
    source: Option<std::net::IpAddr>,
}

/// A complete response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn new(addr: &str, method: &str, path: &str) -> Request {
        Request {
            addr: addr.to_string(),
            method: method.to_string(),
            path: path.to_string(),
            headers: Vec::new(),
            body: None,
            timeout: Duration::from_secs(30),
            host: true,
            source: None,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// `Authorization: Bearer <key>`.
    pub fn key(self, key: &str) -> Request {
        self.header("Authorization", &format!("Bearer {key}"))
    }

    /// A JSON body with `Content-Type: application/json`.
    pub fn json(self, value: &serde_json::Value) -> Request {
        self.header("Content-Type", "application/json").body(serde_json::to_vec(value).unwrap())
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = Some(body.into());
        self
    }

    /// How long the whole response may take (for a [`Stream`]: each read).
    pub fn timeout(mut self, timeout: Duration) -> Request {
        self.timeout = timeout;
        self
    }

    /// Connects from `ip` (e.g. `127.0.0.2`): the daemon sees another source address.
    pub fn from(mut self, ip: &str) -> Request {
        self.source = Some(ip.parse().expect("an IP address"));
        self
    }

    /// Sends no `Host` header of its own (the test gives one, or none, with `header`).
    pub fn without_host(mut self) -> Request {
        self.host = false;
        self
    }

    fn head(&self) -> Vec<u8> {
        let mut head = format!("{} {} HTTP/1.1\r\n", self.method, self.path);
        if self.host {
            head.push_str(&format!("Host: {}\r\n", self.addr));
        }
        head.push_str("Connection: close\r\n");
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let has = |wanted: &str| self.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(wanted));
        if let Some(body) = &self.body {
            if !has("transfer-encoding") && !has("content-length") {
                head.push_str(&format!("Content-Length: {}\r\n", body.len()));
            }
        }
        head.push_str("\r\n");
        head.into_bytes()
    }

    fn write_request(&self, stream: &mut TcpStream) -> std::io::Result<()> {
        // One write: a head and a small body in two segments meet delayed ACKs.
        let mut bytes = self.head();
        bytes.extend_from_slice(self.body.as_deref().unwrap_or_default());
        match stream.write_all(&bytes) {
            // A server may answer (413) and close before reading everything: the answer counts.
            Err(e) if self.body.is_some() && is_reset(&e) => Ok(()),
            other => other,
        }
    }

    fn connect(&self) -> std::io::Result<TcpStream> {
        let target = self.addr.to_socket_addrs()?.next().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("no address for {}", self.addr))
        })?;
        let stream = match self.source {
            None => TcpStream::connect_timeout(&target, self.timeout)?,
            Some(ip) => connect_from(ip, &self.addr)?,
        };
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(self.timeout))?;
        Ok(stream)
    }

    /// Sends the request and reads the whole response; any failure fails the test.
    #[track_caller]
    pub fn send(self) -> Response {
        self.try_send().unwrap_or_else(|e| panic!("{} {}: {e}", self.method, self.path))
    }

    /// Like [`Request::send`], but a failure (connection, timeout, cut body) is an `Err`.
    pub fn try_send(&self) -> std::io::Result<Response> {
        let mut stream = self.connect()?;
        self.write_request(&mut stream)?;
        read_response(&self.method, timed(stream, Some(Instant::now() + self.timeout), self.timeout))
    }

    /// Sends the head with `Content-Length: content_length`, lets `write_body` write the body
    /// (streaming it, or writing only part of it and then returning an error to cut the
    /// connection), then reads the response. A large body never has to be in memory.
    pub fn send_with(
        self,
        content_length: u64,
        write_body: impl FnOnce(&mut TcpStream) -> std::io::Result<()>,
    ) -> std::io::Result<Response> {
        let mut stream = self.connect()?;
        let request = self.header("Content-Length", &content_length.to_string());
        stream.write_all(&request.head())?;
        write_body(&mut stream)?;
        let deadline = Instant::now() + request.timeout;
        read_response(&request.method, timed(stream, Some(deadline), request.timeout))
    }

    /// Sends the request and returns the response head with a reader over its body.
    #[track_caller]
    pub fn stream(self) -> Stream {
        let mut socket = self.connect().unwrap_or_else(|e| panic!("connect {}: {e}", self.addr));
        self.write_request(&mut socket).unwrap_or_else(|e| panic!("{} {}: {e}", self.method, self.path));
        let mut reader = timed(socket.try_clone().unwrap(), None, self.timeout);
        let (status, headers) =
            read_head(&mut reader).unwrap_or_else(|e| panic!("{} {}: response head: {e}", self.method, self.path));
        let body = BufReader::new(body_reader(&self.method, status, &headers, reader));
        Stream { status, headers, body, socket }
    }
}

/// A TCP connection to `addr` from the local address `source`.
pub fn connect_from(source: std::net::IpAddr, addr: &str) -> std::io::Result<TcpStream> {
    let target = addr.to_socket_addrs()?.next().ok_or(std::io::ErrorKind::InvalidInput)?;
    let socket = socket2::Socket::new(socket2::Domain::for_address(target), socket2::Type::STREAM, None)?;
    socket.bind(&std::net::SocketAddr::new(source, 0).into())?;
    socket.connect(&target.into())?;
    Ok(socket.into())
}

fn is_reset(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(error.kind(), ConnectionReset | ConnectionAborted | BrokenPipe)
}

fn truncated(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, message)
}

/// A socket whose every read ends by its deadline (if any) and within `idle`.
struct Timed {
    socket: TcpStream,
    deadline: Option<Instant>,
    idle: Duration,
}

fn timed(socket: TcpStream, deadline: Option<Instant>, idle: Duration) -> BufReader<Timed> {
    BufReader::new(Timed { socket, deadline, idle })
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut wait = self.idle;
        if let Some(deadline) = self.deadline {
            wait = wait.min(deadline.saturating_duration_since(Instant::now()));
        }
        if wait.is_zero() {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the response deadline passed"));
        }
        self.socket.set_read_timeout(Some(wait))?;
        match self.socket.read(buf) {
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("nothing received for {wait:?}")))
            }
            other => other,
        }
    }
}

/// One line, which must end with a line feed (else the connection was cut within it).
fn read_line(reader: &mut impl BufRead, what: &str) -> std::io::Result<String> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if !line.ends_with('\n') {
        return Err(truncated(format!("the connection ended within {what} (got {line:?})")));
    }
    Ok(line)
}

fn read_head(reader: &mut impl BufRead) -> std::io::Result<(u16, Vec<(String, String)>)> {
    let line = read_line(reader, "the status line")?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader, "the response head")?;
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed.split_once(':').ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad header line {trimmed:?}"))
        })?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    Ok((status, headers))
}

fn read_response(method: &str, mut reader: impl BufRead + Send) -> std::io::Result<Response> {
    let (status, headers) = read_head(&mut reader)?;
    let mut body = Vec::new();
    body_reader(method, status, &headers, reader).read_to_end(&mut body)?;
    Ok(Response { status, headers, body })
}

/// The body of a response, framed as its head says, strictly.
fn body_reader<'a>(
    method: &str,
    status: u16,
    headers: &[(String, String)],
    reader: impl BufRead + Send + 'a,
) -> Box<dyn Read + Send + 'a> {
    let get = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    if method.eq_ignore_ascii_case("HEAD") || status == 204 || status == 304 || (100..200).contains(&status) {
        Box::new(std::io::empty())
    } else if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        Box::new(Chunked { inner: reader, left: 0, state: ChunkState::Size })
    } else if let Some(len) = get("content-length") {
        match len.parse::<u64>() {
            Ok(len) => Box::new(Length { inner: reader, left: len, total: len }),
            Err(_) => Box::new(Failing(format!("bad Content-Length {len:?}"))),
        }
    } else {
        // Delimited by the end of the connection: its end is the end of the body.
        Box::new(reader)
    }
}

/// A reader that only fails (a head the client cannot frame).
struct Failing(String);

impl Read for Failing {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::Error::new(std::io::ErrorKind::InvalidData, self.0.clone()))
    }
}

/// A `Content-Length` body: ending early is an error, not an end.
struct Length<R> {
    inner: R,
    left: u64,
    total: u64,
}

impl<R: Read> Read for Length<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let len = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..len])?;
        if n == 0 {
            return Err(truncated(format!(
                "body truncated: the connection ended after {} of {} bytes",
                self.total - self.left,
                self.total
            )));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

enum ChunkState {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data (`left` bytes to go), then its CRLF.
    Data,
    /// The last chunk and the trailers were read.
    Done,
}

/// `Transfer-Encoding: chunked`, strictly: the body ends only with its zero-size chunk.
struct Chunked<R> {
    inner: R,
    left: u64,
    state: ChunkState,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.state {
                ChunkState::Done => return Ok(0),
                ChunkState::Size => {
                    let mut line = String::new();
                    self.inner.read_line(&mut line)?;
                    if line.is_empty() {
                        return Err(truncated("chunked body cut: the connection ended before its last chunk".into()));
                    }
                    if !line.ends_with('\n') {
                        return Err(truncated(format!("chunked body cut within a chunk-size line ({line:?})")));
                    }
                    let size = line.trim().split(';').next().unwrap_or("");
                    self.left = u64::from_str_radix(size, 16).map_err(|_| {
                        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad chunk size line {line:?}"))
                    })?;
                    if self.left == 0 {
                        // Trailers, up to the empty line that ends the message.
                        loop {
                            let trailer = read_line(&mut self.inner, "the end of a chunked body")?;
                            if trailer.trim_end().is_empty() {
                                break;
                            }
                        }
                        self.state = ChunkState::Done;
                        return Ok(0);
                    }
                    self.state = ChunkState::Data;
                }
                ChunkState::Data if self.left == 0 => {
                    let end = read_line(&mut self.inner, "the end of a chunk")?;
                    if !end.trim_end().is_empty() {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("chunk longer than its size line said ({end:?} follows)"),
                        ));
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::Data => {
                    if buf.is_empty() {
                        return Ok(0);
                    }
                    let len = buf.len().min(self.left.min(usize::MAX as u64) as usize);
                    let n = self.inner.read(&mut buf[..len])?;
                    if n == 0 {
                        return Err(truncated(format!("chunked body cut: {} bytes of a chunk missing", self.left)));
                    }
                    self.left -= n as u64;
                    return Ok(n);
                }
            }
        }
    }
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("status {}: body is not JSON ({e}): {}", self.status, self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    /// Asserts the status and returns the JSON body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> serde_json::Value {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.text());
        if self.body.is_empty() {
            serde_json::Value::Null
        } else {
            self.json()
        }
    }

    /// Asserts a `{"error":{"code":N,...}}` body with this status and code; returns the message.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: u64) -> String {
        let body = self.expect(status);
        assert_eq!(body["error"]["code"], code, "unexpected error body: {body}");
        body["error"]["message"].as_str().expect("an error message").to_string()
    }
}

/// One kept-alive connection: raw requests written by the test, responses read strictly.
pub struct Connection {
    writer: TcpStream,
    reader: BufReader<Timed>,
}

impl Connection {
    /// Connects; every response must arrive within `timeout`.
    pub fn open(addr: &str, timeout: Duration) -> Connection {
        let writer =
            Request::new(addr, "GET", "/").timeout(timeout).connect().unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        let reader = timed(writer.try_clone().unwrap(), None, timeout);
        Connection { writer, reader }
    }

    /// Writes raw bytes (a request, or part of one).
    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes)
    }

    /// Reads one response to a request with `method`, leaving the connection open.
    pub fn read_response(&mut self, method: &str) -> std::io::Result<Response> {
        let (status, headers) = read_head(&mut self.reader)?;
        let mut body = Vec::new();
        body_reader(method, status, &headers, &mut self.reader).read_to_end(&mut body)?;
        Ok(Response { status, headers, body })
    }
}

/// A response whose body is read as it arrives; each read must come within the request's
/// timeout.
pub struct Stream {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: BufReader<Box<dyn Read + Send>>,
    socket: TcpStream,
}

/// One Server-Sent Event.
#[derive(Debug, Clone, Default)]
pub struct Event {
    pub event: Option<String>,
    pub id: Option<String>,
    pub data: String,
}

impl Event {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("event data is not JSON ({e}): {}", self.data))
    }
}

/// How an event stream stopped other than by its clean end.
#[derive(Debug)]
pub enum StreamError {
    /// Nothing arrived within the request's timeout.
    TimedOut(String),
    /// The connection was reset or aborted.
    Reset(String),
    /// The connection ended without the body's end (no last chunk, or within an event).
    Cut(String),
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamError::TimedOut(why) => write!(f, "the event stream timed out: {why}"),
            StreamError::Reset(why) => write!(f, "the event stream was reset: {why}"),
            StreamError::Cut(why) => write!(f, "the event stream was cut: {why}"),
        }
    }
}

impl From<std::io::Error> for StreamError {
    fn from(error: std::io::Error) -> StreamError {
        match error.kind() {
            std::io::ErrorKind::TimedOut => StreamError::TimedOut(error.to_string()),
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData => StreamError::Cut(error.to_string()),
            _ => StreamError::Reset(error.to_string()),
        }
    }
}

impl Stream {
    /// The next event, or `None` at the clean end of the stream. A timeout, a reset or a cut
    /// stream fails the test (use [`Stream::try_next_event`] to expect one). Comments are
    /// skipped.
    #[track_caller]
    pub fn next_event(&mut self) -> Option<Event> {
        self.try_next_event().unwrap_or_else(|e| panic!("{e}"))
    }

    /// The next event, `Ok(None)` at the clean end of the stream, or how it stopped otherwise.
    pub fn try_next_event(&mut self) -> Result<Option<Event>, StreamError> {
        let mut event = Event::default();
        let mut seen = false;
        loop {
            let mut line = String::new();
            if self.body.read_line(&mut line)? == 0 {
                if seen {
                    return Err(StreamError::Cut("the stream ended within an event".into()));
                }
                return Ok(None);
            }
            if !line.ends_with('\n') {
                return Err(StreamError::Cut(format!("the stream ended within a line ({line:?})")));
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
                "event" => event.event = Some(value.to_string()),
                "id" => event.id = Some(value.to_string()),
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

    /// Asserts that the stream ends cleanly next, without further events.
    #[track_caller]
    pub fn expect_end(&mut self) {
        match self.try_next_event() {
            Ok(None) => {}
            Ok(Some(event)) => panic!("expected the end of the stream, got {event:?}"),
            Err(e) => panic!("expected a clean end of the stream: {e}"),
        }
    }

    /// Closes the connection (a client going away).
    pub fn close(self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }
}

/// A slow client: writes `line` every `every` until the server closes the connection (a
/// slowloris that is never idle and never done). Pacing is the point here, so it sleeps.
pub fn drip(mut stream: TcpStream, line: &'static [u8], every: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while stream.write_all(line).is_ok() {
            std::thread::sleep(every);
        }
    })
}
