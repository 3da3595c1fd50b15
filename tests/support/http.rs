//! A small blocking HTTP/1.1 client over `std::net`, so tests control every byte they send:
//! missing headers, odd content types, oversized or chunked bodies, slow streams.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A request under construction.
#[must_use]
pub struct Request {
    addr: String,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    timeout: Duration,
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
            source: None,
        }
    }

    /// Connects from `ip` (e.g. `127.0.0.2`): the daemon sees another source address.
    pub fn from(mut self, ip: &str) -> Request {
        self.source = Some(ip.parse().expect("an IP address"));
        self
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

    pub fn timeout(mut self, timeout: Duration) -> Request {
        self.timeout = timeout;
        self
    }

    fn write_head(&self, stream: &mut TcpStream) {
        let mut head =
            format!("{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", self.method, self.path, self.addr);
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(body) = &self.body {
            if !self.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding")) {
                head.push_str(&format!("Content-Length: {}\r\n", body.len()));
            }
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).unwrap();
        if let Some(body) = &self.body {
            // A peer may answer (413) and close before reading everything: that is fine.
            let _ = stream.write_all(body);
        }
    }

    fn connect(&self) -> TcpStream {
        let stream = self.open().unwrap_or_else(|e| panic!("connect {}: {e}", self.addr));
        stream.set_read_timeout(Some(self.timeout)).unwrap();
        stream
    }

    fn open(&self) -> std::io::Result<TcpStream> {
        match self.source {
            None => TcpStream::connect(&self.addr),
            Some(ip) => connect_from(ip, &self.addr),
        }
    }

    /// Sends the request and reads the whole response.
    pub fn send(self) -> Response {
        self.try_send().unwrap_or_else(|e| panic!("{} {}: {e}", self.method, self.path))
    }

    /// Like [`Request::send`], but a connection failure is an `Err`.
    pub fn try_send(&self) -> std::io::Result<Response> {
        let mut stream = self.open()?;
        stream.set_read_timeout(Some(self.timeout))?;
        self.write_head(&mut stream);
        let mut reader = BufReader::new(stream);
        let (status, headers) = read_head(&mut reader)?;
        let mut body = Vec::new();
        body_reader(&headers, reader).read_to_end(&mut body)?;
        Ok(Response { status, headers, body })
    }

    /// Sends the head with `Content-Length: content_length`, lets `write_body` write the body
    /// (streaming it, or writing only part of it and then returning an error to cut the
    /// connection), then reads the response. A large body never has to be in memory.
    pub fn send_with(
        self,
        content_length: u64,
        write_body: impl FnOnce(&mut TcpStream) -> std::io::Result<()>,
    ) -> std::io::Result<Response> {
        let mut stream = self.connect();
        self.header("Content-Length", &content_length.to_string()).write_head(&mut stream);
        write_body(&mut stream)?;
        let mut reader = BufReader::new(stream);
        let (status, headers) = read_head(&mut reader)?;
        let mut body = Vec::new();
        body_reader(&headers, reader).read_to_end(&mut body)?;
        Ok(Response { status, headers, body })
    }

    /// Sends the request and returns the response head with a reader over its body.
    pub fn stream(self) -> Stream {
        let mut stream = self.connect();
        self.write_head(&mut stream);
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let (status, headers) = read_head(&mut reader).expect("response head");
        let body = BufReader::new(body_reader(&headers, reader));
        Stream { status, headers, body, socket: stream }
    }
}

/// A TCP connection to `addr` from the local address `source`.
pub fn connect_from(source: std::net::IpAddr, addr: &str) -> std::io::Result<TcpStream> {
    use std::net::ToSocketAddrs;
    let target = addr.to_socket_addrs()?.next().ok_or(std::io::ErrorKind::InvalidInput)?;
    let socket = socket2::Socket::new(socket2::Domain::for_address(target), socket2::Type::STREAM, None)?;
    socket.bind(&std::net::SocketAddr::new(source, 0).into())?;
    socket.connect(&target.into())?;
    Ok(socket.into())
}

fn read_head(reader: &mut impl BufRead) -> std::io::Result<(u16, Vec<(String, String)>)> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        if let Some((name, value)) = trimmed.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    Ok((status, headers))
}

fn body_reader(headers: &[(String, String)], reader: BufReader<TcpStream>) -> Box<dyn Read + Send> {
    let get = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        Box::new(Chunked { inner: reader, left: 0, done: false })
    } else if let Some(len) = get("content-length").and_then(|v| v.parse::<u64>().ok()) {
        Box::new(reader.take(len))
    } else {
        Box::new(reader)
    }
}

/// Decodes `Transfer-Encoding: chunked`.
struct Chunked<R> {
    inner: R,
    left: usize,
    done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            self.inner.read_line(&mut line)?;
            if line.trim().is_empty() {
                // The CRLF that ends the previous chunk.
                line.clear();
                self.inner.read_line(&mut line)?;
            }
            if line.is_empty() {
                self.done = true;
                return Ok(0);
            }
            let size = line.trim().split(';').next().unwrap_or("0");
            self.left = usize::from_str_radix(size, 16)
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("chunk size {line:?}")))?;
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let len = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..len])?;
        self.left -= n;
        Ok(n)
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

/// A response whose body is read as it arrives.
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

impl Stream {
    /// The next event, or `None` at the end of the stream. Comment lines are skipped.
    pub fn next_event(&mut self) -> Option<Event> {
        let mut event = Event::default();
        let mut seen = false;
        loop {
            let mut line = String::new();
            if self.body.read_line(&mut line).ok()? == 0 {
                return seen.then_some(event);
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if seen {
                    return Some(event);
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

    /// Closes the connection (a client going away).
    pub fn close(self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }
}
