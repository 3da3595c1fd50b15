//! A WebSocket terminal client for the tests: a blocking RFC 6455 client (tungstenite) and a
//! vt100 parser that shows what a real terminal attached to the session would show.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::{self, Message, WebSocket};
use serde_json::{json, Value};

use loopsy::tls::Fingerprint;

use crate::support::Daemon;

/// The connection under the WebSocket: plain TCP, or TLS pinned to the daemon's certificate.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.get_ref(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.read(buf),
            Stream::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.write(buf),
            Stream::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.flush(),
            Stream::Tls(tls) => tls.flush(),
        }
    }
}

/// One attached client.
pub struct TermClient {
    ws: WebSocket<Stream>,
    pub parser: vt100::Parser,
    /// Every control frame received, in order.
    pub controls: Vec<Value>,
    pub exit: Option<i64>,
    pub closed: bool,
    /// Bytes of terminal output received.
    pub received: usize,
    /// Binary frames received (the first is the screen snapshot).
    pub outputs: usize,
}

/// How to attach.
pub struct Attach {
    pub cols: u16,
    pub rows: u16,
    pub read_only: bool,
    /// `Authorization` value; `None` sends none.
    pub auth: Option<String>,
    /// Attach over TLS, pinning this certificate (the daemon serves TLS and plain HTTP on one
    /// port).
    pub tls: Option<Fingerprint>,
}

impl Attach {
    pub fn new(daemon: &Daemon, cols: u16, rows: u16) -> Attach {
        Attach { cols, rows, read_only: false, auth: Some(format!("Bearer {}", daemon.key)), tls: None }
    }
}

fn size(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).unwrap()
}

impl TermClient {
    /// Attaches to terminal `id`; a refused handshake is `Err((status, body))`.
    pub fn connect(daemon: &Daemon, id: &str, attach: Attach) -> Result<TermClient, (u16, String)> {
        let read_only = if attach.read_only { "&readOnly=1" } else { "" };
        let url = format!(
            "ws://{}/api/v1/terminals/{id}/attach?cols={}&rows={}{read_only}",
            daemon.addr, attach.cols, attach.rows
        );
        let mut request = url.into_client_request().unwrap();
        if let Some(auth) = &attach.auth {
            request.headers_mut().insert("Authorization", auth.parse().unwrap());
        }
        let tcp = TcpStream::connect(&daemon.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let stream = match &attach.tls {
            None => Stream::Plain(tcp),
            Some(pin) => {
                let server = loopsy::tls::server_name("127.0.0.1");
                let tls = rustls::ClientConnection::new(loopsy::tls::client_config(pin), server).unwrap();
                Stream::Tls(Box::new(rustls::StreamOwned::new(tls, tcp)))
            }
        };
        let ws = match tungstenite::client(request, stream) {
            Ok((ws, _)) => ws,
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
                let body =
                    response.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
                let status = tungstenite::http::Response::status(&response);
                return Err((status.as_u16(), body));
            }
            Err(e) => panic!("handshake: {e}"),
        };
        ws.get_ref().tcp().set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let parser = vt100::Parser::new(size(attach.rows), size(attach.cols), 0);
        let mut client =
            TermClient { ws, parser, controls: Vec::new(), exit: None, closed: false, received: 0, outputs: 0 };
        client
            .wait_for("the hello and the screen", Duration::from_secs(10), |c| !c.controls.is_empty() && c.outputs > 0);
        Ok(client)
    }

    /// Reads what arrives for at most `limit` (less if the connection closes).
    pub fn pump(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.closed && Instant::now() < deadline {
            self.read_one();
        }
    }

    /// One frame, or nothing within the socket's short read timeout.
    fn read_one(&mut self) {
        match self.ws.read() {
            Ok(Message::Binary(bytes)) => {
                self.received += bytes.len();
                self.outputs += 1;
                self.parser.process(&bytes);
            }
            Ok(Message::Text(text)) => {
                let value: Value = serde_json::from_str(&text).expect("control frames are JSON");
                match value["type"].as_str() {
                    Some("attached" | "size") => {
                        let (rows, cols) =
                            (value["rows"].as_u64().unwrap() as u16, value["cols"].as_u64().unwrap() as u16);
                        self.parser.screen_mut().set_size(size(rows), size(cols));
                    }
                    Some("exit") => self.exit = value["code"].as_i64(),
                    _ => {}
                }
                self.controls.push(value);
            }
            Ok(Message::Close(_)) => self.closed = true,
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => self.closed = true,
            Err(tungstenite::Error::Io(_) | tungstenite::Error::Protocol(_)) => self.closed = true,
            Err(e) => panic!("reading the terminal: {e}"),
        }
    }

    /// Reads until `condition` holds; fails the test after `limit`.
    #[track_caller]
    pub fn wait_for(&mut self, what: &str, limit: Duration, condition: impl Fn(&TermClient) -> bool) {
        let deadline = Instant::now() + limit;
        while !condition(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}; screen:\n{}", self.text());
            assert!(
                !self.closed || condition(self),
                "the connection closed while waiting for {what}:\n{}",
                self.text()
            );
            self.read_one();
        }
    }

    /// Waits until the screen shows `text`.
    #[track_caller]
    pub fn wait_text(&mut self, text: &str) {
        self.wait_for(&format!("'{text}' on the screen"), Duration::from_secs(15), |c| c.text().contains(text));
    }

    pub fn type_bytes(&mut self, bytes: &[u8]) {
        self.ws.send(Message::Binary(bytes.to_vec().into())).unwrap();
    }

    pub fn resize(&mut self, cols: u16, rows: u16) {
        self.ws.send(Message::Text(json!({"type": "resize", "cols": cols, "rows": rows}).to_string().into())).unwrap();
    }

    pub fn text(&self) -> String {
        self.parser.screen().contents()
    }

    /// (rows, cols) the client shows.
    pub fn size(&self) -> (u16, u16) {
        let (rows, cols) = self.parser.screen().size();
        (rows.get(), cols.get())
    }

    /// Stops reading without closing: the daemon's buffer for this client fills up.
    pub fn stall(&mut self) {
        self.ws.get_ref().tcp().set_read_timeout(None).unwrap();
    }

    /// Reads again after [`stall`](Self::stall).
    pub fn resume(&mut self) {
        self.ws.get_ref().tcp().set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    }

    pub fn close(mut self) {
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
    }

    /// Whether a control frame of `kind` arrived.
    pub fn got(&self, kind: &str) -> bool {
        self.controls.iter().any(|c| c["type"] == kind)
    }
}

/// Asserts two screens are equal cell by cell (contents and attributes) and in cursor.
#[track_caller]
pub fn assert_same_screen(a: &TermClient, b: &TermClient) {
    let (sa, sb) = (a.parser.screen(), b.parser.screen());
    assert_eq!(sa.size(), sb.size(), "sizes differ");
    let (rows, cols) = (sa.size().0.get(), sa.size().1.get());
    for row in 0..rows {
        for col in 0..cols {
            let (ca, cb) = (sa.cell(row, col), sb.cell(row, col));
            assert_eq!(ca, cb, "cell ({row}, {col}) differs\n--- a:\n{}\n--- b:\n{}", a.text(), b.text());
        }
    }
    assert_eq!(sa.cursor_position(), sb.cursor_position(), "cursor positions differ");
    assert_eq!(sa.alternate_screen(), sb.alternate_screen(), "alternate screen differs");
}
