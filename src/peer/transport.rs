//! The HTTP/1.1 transport under surf: TCP, or TLS with a pinned certificate, into async-h1.
//!
//! By default one connection per request with `Connection: close`. A client made with
//! [`Pool`] (the MCP server's client of its local daemon, which makes many small calls) keeps
//! connections alive instead: see [`Pool`] for when a connection goes back and how a closed one
//! is recognised. surf's own client backends are not used (they bring curl, OpenSSL or an old
//! rustls).
//!
//! Answers come from any address mDNS announced, so the response head is capped here
//! ([`HeadLimited`]: async-h1 checks a head's size only at line ends); bodies and event streams
//! are capped where they are read (`peer::Client`, `peer::sse`).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::io::{AsyncBufRead, AsyncRead, AsyncWrite};
use http_client::http_types::Body;
use http_client::{Config, Error, HttpClient, Request, Response};

use crate::tls::Fingerprint;

/// A server that has not finished the TLS handshake by then is not speaking TLS.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Prefix of the error text of every TLS failure, so the client can tell them apart.
pub(super) const TLS_ERROR: &str = "tls: ";

/// How the server is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Plain HTTP; `https` URLs are refused.
    Plain,
    /// HTTPS only, and only with exactly this certificate.
    Pinned(Fingerprint),
    /// HTTPS with any certificate: pairing endpoints only, whose messages carry their own
    /// protection (see `pairing::channel`).
    PairingOnly,
}

#[derive(Debug)]
pub(super) struct Transport {
    config: Config,
    trust: Trust,
    /// Idle connections for reuse; `None`: a connection per request.
    pool: Option<Arc<Pool>>,
}

impl Transport {
    pub(super) fn new(trust: Trust) -> Transport {
        Transport { config: Config::default(), trust, pool: None }
    }

    /// A transport that keeps connections alive, each for at most `idle` between requests.
    pub(super) fn keeping_alive(trust: Trust, idle: Duration) -> Transport {
        Transport { config: Config::default(), trust, pool: Some(Pool::new(idle)) }
    }
}

/// A connection to a daemon: plain TCP, or TLS checked against the pin.
pub(super) trait Duplex: futures_lite::AsyncRead + futures_lite::AsyncWrite + Send + Sync + Unpin {}
impl<T: futures_lite::AsyncRead + futures_lite::AsyncWrite + Send + Sync + Unpin> Duplex for T {}

/// Opens a connection to `url`'s host and port as `trust` allows (the HTTP requests and the
/// WebSocket share it).
pub(super) async fn connect(url: &http_client::http_types::Url, trust: &Trust) -> Result<Box<dyn Duplex>, Error> {
    connect_with_fd(url, trust).await.map(|(stream, _)| stream)
}

/// [`connect`], and the descriptor of the TCP socket under it (the pool looks at it).
async fn connect_with_fd(url: &http_client::http_types::Url, trust: &Trust) -> Result<(Box<dyn Duplex>, RawFd), Error> {
    let host = url.host_str().ok_or_else(|| Error::from_str(400, format!("no host in {url}")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    let port = url.port_or_known_default().unwrap_or(80);
    let stream = async_net::TcpStream::connect((host.as_str(), port)).await?;
    stream.set_nodelay(true)?;
    let fd = stream.as_raw_fd();
    let tls_config = match (url.scheme(), trust) {
        ("https" | "wss", Trust::Pinned(pin)) => crate::tls::client_config(pin),
        ("https" | "wss", Trust::PairingOnly) => crate::tls::client_config_for_pairing(),
        ("http" | "ws", Trust::Plain | Trust::PairingOnly) => return Ok((Box::new(stream), fd)),
        ("https" | "wss", Trust::Plain) => {
            return Err(Error::from_str(
                400,
                format!("{TLS_ERROR}no pinned certificate for {host}:{port}; pair with it first"),
            ))
        }
        ("http" | "ws", Trust::Pinned(_)) => {
            return Err(Error::from_str(
                400,
                format!("{TLS_ERROR}{host}:{port} is pinned and must be reached over https"),
            ))
        }
        (scheme, _) => return Err(Error::from_str(400, format!("unsupported scheme '{scheme}' in {url}"))),
    };
    match crate::clock::timeout(HANDSHAKE_TIMEOUT, crate::tls::connect(tls_config, &host, stream)).await {
        Some(Ok(tls)) => Ok((Box::new(tls), fd)),
        Some(Err(e)) => Err(Error::from_str(502, format!("{TLS_ERROR}{e}"))),
        None => {
            let message = format!("{TLS_ERROR}no TLS handshake from {host}:{port} (does it serve plain HTTP?)");
            Err(Error::from_str(504, message))
        }
    }
}

#[async_trait::async_trait]
impl HttpClient for Transport {
    async fn send(&self, mut req: Request) -> Result<Response, Error> {
        let Some(pool) = &self.pool else {
            let stream = connect(req.url(), &self.trust).await?;
            req.insert_header("connection", "close");
            return async_h1::connect(HeadLimited::new(stream), req).await;
        };
        let origin = req.url().origin().ascii_serialization();
        let head = req.method() == http_client::http_types::Method::Head;
        let (stream, fd) = match pool.take(&origin) {
            Some(kept) => kept,
            None => connect_with_fd(req.url(), &self.trust).await?,
        };
        let finished = Arc::new(AtomicBool::new(false));
        let lent = Lent { stream: Some(stream), fd, origin, pool: Arc::downgrade(pool), finished: finished.clone() };
        let mut res = async_h1::connect(HeadLimited::new(lent), req).await?;
        if let Some(length) = reusable(&res).filter(|_| !head) {
            if length == Some(0) {
                finished.store(true, Ordering::SeqCst);
            }
            let body = res.take_body();
            res.set_body(Body::from_reader(ToTheEnd { body, left: length, finished }, length));
        }
        Ok(res)
    }

    fn set_config(&mut self, config: Config) -> Result<(), Error> {
        self.config = config;
        Ok(())
    }

    fn config(&self) -> &Config {
        &self.config
    }
}

/// Idle connections to one origin, kept for the next request.
///
/// A connection goes back only after its response was read to its very end: the request was
/// written whole (async-h1 writes it before reading anything), the response has a length or
/// chunked framing, no `Connection: close`, and its body's last byte was consumed
/// ([`ToTheEnd`]). A response dropped half-read (an event stream, a download cut short, a
/// cancelled or timed-out call) closes its connection.
///
/// Stale connections: a connection the server has closed (it stopped or restarted, or closed an
/// idle connection) is recognised before reuse, not by sending a request on it and retrying.
/// Before a kept connection is lent, [`still_open`] peeks at its socket without blocking:
/// end-of-file, an error, or any byte the server sent unasked (a TLS close alert) discards it.
/// Nothing is ever sent twice by this layer: a retry would have to prove that the server did
/// not receive the request, which a closed connection cannot prove for a POST. What remains is
/// the server closing in the instant between the peek and the request; connections are kept
/// at most `idle` (shorter than the server's keep-alive: loopsy daemons wait 75 s for the next
/// request), so that happens only when the server stops at that very moment, and the request
/// then fails as it would have without the pool (`post_idempotent` retries with its key).
#[derive(Debug)]
pub(super) struct Pool {
    idle: Duration,
    kept: Mutex<Kept>,
}

#[derive(Debug, Default)]
struct Kept {
    connections: Vec<Idle>,
    /// A task drops connections once they have been idle too long; it runs while any are kept.
    pruning: bool,
}

struct Idle {
    origin: String,
    stream: Box<dyn Duplex>,
    fd: RawFd,
    since: Instant,
}

impl std::fmt::Debug for Idle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idle").field("origin", &self.origin).field("since", &self.since).finish_non_exhaustive()
    }
}

/// At most this many idle connections per origin (more are closed when they come back).
const MAX_IDLE_PER_ORIGIN: usize = 4;

impl Pool {
    fn new(idle: Duration) -> Arc<Pool> {
        Arc::new(Pool { idle, kept: Mutex::new(Kept::default()) })
    }

    /// The most recently used open connection to `origin`; closed or expired ones are dropped.
    fn take(&self, origin: &str) -> Option<(Box<dyn Duplex>, RawFd)> {
        let mut discarded = Vec::new();
        let found = {
            let mut kept = self.kept.lock().expect("pool lock");
            let now = Instant::now();
            let mut found = None;
            while let Some(at) = kept.connections.iter().rposition(|c| c.origin == origin) {
                let idle = kept.connections.remove(at);
                if now.duration_since(idle.since) < self.idle && still_open(idle.fd) {
                    found = Some((idle.stream, idle.fd));
                    break;
                }
                discarded.push(idle);
            }
            found
        };
        drop(discarded); // closed outside the lock
        found
    }

    /// Keeps a connection whose exchange is complete.
    fn put(self: &Arc<Pool>, origin: String, stream: Box<dyn Duplex>, fd: RawFd) {
        let mut kept = self.kept.lock().expect("pool lock");
        if kept.connections.iter().filter(|c| c.origin == origin).count() >= MAX_IDLE_PER_ORIGIN {
            return;
        }
        kept.connections.push(Idle { origin, stream, fd, since: Instant::now() });
        if !std::mem::replace(&mut kept.pruning, true) {
            let pool = Arc::downgrade(self);
            smol::spawn(prune(pool, self.idle)).detach();
        }
    }
}

/// Closes connections of `pool` idle for `idle` or more, until none is kept (or the pool is gone).
async fn prune(pool: Weak<Pool>, idle: Duration) {
    let mut wait = idle;
    loop {
        async_io::Timer::after(wait).await;
        let Some(pool) = pool.upgrade() else { return };
        let expired: Vec<Idle> = {
            let mut kept = pool.kept.lock().expect("pool lock");
            let now = Instant::now();
            let (expired, fresh) =
                std::mem::take(&mut kept.connections).into_iter().partition(|c| now.duration_since(c.since) >= idle);
            kept.connections = fresh;
            match kept.connections.iter().map(|c| c.since).min() {
                Some(oldest) => wait = (oldest + idle).saturating_duration_since(now),
                None => {
                    kept.pruning = false;
                    return;
                }
            }
            expired
        };
        drop(expired);
    }
}

/// Whether a kept connection is still open and quiet: a peek that would block. End-of-file (the
/// server closed it), an error (reset), or bytes nobody asked for all mean it is not reused.
fn still_open(fd: RawFd) -> bool {
    let mut byte = 0u8;
    // SAFETY: `fd` is the socket of a connection the pool owns (open while it is kept); the
    // peek writes at most one byte into `byte` and consumes nothing.
    let n = unsafe { libc::recv(fd, (&mut byte as *mut u8).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
}

/// Whether a response leaves its connection reusable once its body is read to the end, and
/// where that end is: `Some(Some(n))` after `n` bytes, `Some(None)` after the last chunk of a
/// chunked body; `None` when the connection must close (`Connection: close`, a protocol
/// switch, or no framing that marks the end).
fn reusable(res: &Response) -> Option<Option<usize>> {
    let closes = res.header("connection").is_some_and(|values| {
        values.iter().any(|v| v.as_str().split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    });
    if closes || res.status() == http_client::http_types::StatusCode::SwitchingProtocols {
        return None;
    }
    let chunked = res.header("transfer-encoding").is_some_and(|v| v.last().as_str().eq_ignore_ascii_case("chunked"));
    match res.header("content-length") {
        _ if chunked => Some(None),
        Some(length) => length.last().as_str().trim().parse().ok().map(Some),
        None => None,
    }
}

/// A connection lent to one exchange: back into the pool when it is dropped after its response
/// was read to the end, closed otherwise.
struct Lent {
    stream: Option<Box<dyn Duplex>>,
    fd: RawFd,
    origin: String,
    pool: Weak<Pool>,
    /// Set by [`ToTheEnd`] once the response body's last byte was read.
    finished: Arc<AtomicBool>,
}

impl Lent {
    fn stream(&mut self) -> &mut Box<dyn Duplex> {
        self.stream.as_mut().expect("a lent connection has its stream until dropped")
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if !self.finished.load(Ordering::SeqCst) {
            return;
        }
        if let (Some(stream), Some(pool)) = (self.stream.take(), self.pool.upgrade()) {
            pool.put(std::mem::take(&mut self.origin), stream, self.fd);
        }
    }
}

impl AsyncRead for Lent {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().stream()).poll_read(cx, buf)
    }
}

impl AsyncWrite for Lent {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().stream()).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().stream()).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().stream()).poll_close(cx)
    }
}

/// A response body that marks its connection reusable once its end is read: `left` bytes of a
/// declared length, or the end of a chunked body (its last chunk and trailers consumed).
struct ToTheEnd {
    body: Body,
    left: Option<usize>,
    finished: Arc<AtomicBool>,
}

impl ToTheEnd {
    fn consumed(&mut self, n: usize) {
        if let Some(left) = &mut self.left {
            *left = left.saturating_sub(n);
            if *left == 0 {
                self.finished.store(true, Ordering::SeqCst);
            }
        }
    }
}

impl AsyncRead for ToTheEnd {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.left == Some(0) {
            this.finished.store(true, Ordering::SeqCst);
            return Poll::Ready(Ok(0));
        }
        let n = futures_lite::ready!(Pin::new(&mut this.body).poll_read(cx, buf))?;
        if n == 0 && !buf.is_empty() {
            // The end of a chunked body; a short fixed-length one is an error above, not an end.
            if this.left.is_none() {
                this.finished.store(true, Ordering::SeqCst);
            }
        } else {
            this.consumed(n);
        }
        Poll::Ready(Ok(n))
    }
}

impl AsyncBufRead for ToTheEnd {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        if this.left == Some(0) {
            this.finished.store(true, Ordering::SeqCst);
            return Poll::Ready(Ok(&[]));
        }
        let buf = futures_lite::ready!(Pin::new(&mut this.body).poll_fill_buf(cx))?;
        if buf.is_empty() && this.left.is_none() {
            this.finished.store(true, Ordering::SeqCst);
        }
        Poll::Ready(Ok(buf))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        Pin::new(&mut this.body).consume(amt);
        this.consumed(amt);
    }
}

/// A response head may take at most this many bytes.
pub(super) const HEAD_LIMIT: usize = 64 * 1024;

/// A connection whose reads fail once `HEAD_LIMIT` bytes came without the blank line that ends
/// a response head; after it, bytes pass untouched.
struct HeadLimited<S> {
    inner: S,
    read: usize,
    /// The last bytes seen, to find `\r\n\r\n` or `\n\n` across reads; `None` once found.
    tail: Option<[u8; 3]>,
}

impl<S> HeadLimited<S> {
    fn new(inner: S) -> HeadLimited<S> {
        HeadLimited { inner, read: 0, tail: Some([0; 3]) }
    }

    /// Looks for the end of the head in `bytes`; fails when the head is too long.
    fn scan(&mut self, bytes: &[u8]) -> io::Result<()> {
        let Some(mut tail) = self.tail else { return Ok(()) };
        for (i, &byte) in bytes.iter().enumerate() {
            let ends = byte == b'\n' && (tail[2] == b'\n' || (tail[2] == b'\r' && tail[1] == b'\n'));
            if ends {
                self.tail = None;
                return Ok(());
            }
            tail = [tail[1], tail[2], byte];
            if self.read + i + 1 > HEAD_LIMIT {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the response head is larger than {} KiB", HEAD_LIMIT / 1024),
                ));
            }
        }
        self.read += bytes.len();
        self.tail = Some(tail);
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HeadLimited<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(n)) => n,
            other => return other,
        };
        Poll::Ready(this.scan(&buf[..n]).map(|()| n))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HeadLimited<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(chunks: &[&[u8]], ok: bool) {
        let mut limited = HeadLimited::new(());
        let result = chunks.iter().try_for_each(|chunk| limited.scan(chunk));
        assert_eq!(result.is_ok(), ok, "{result:?}");
    }

    #[test]
    fn a_head_ends_at_its_blank_line_and_may_not_grow_past_the_limit() {
        let long = vec![b'a'; HEAD_LIMIT + 1];
        check(&[b"HTTP/1.1 200 OK\r\n\r\n", &long], true);
        check(&[b"HTTP/1.1 200 OK\r\n\r", b"\n", &long], true);
        check(&[b"HTTP/1.1 200 OK\n\n", &long], true);
        check(&[b"HTTP/1.1 200 OK\r\n", &long], false);
        check(&[&long[..HEAD_LIMIT - 2], b"\n\n"], true);
        check(&[&long[..HEAD_LIMIT], b"\n\n"], false);
    }
}

#[cfg(test)]
mod pool_tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::peer::{Client, Method};

    /// A loopback HTTP/1.1 server answering GETs by path, counting the connections it accepts.
    fn server() -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                counter.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut writer = stream;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                        while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                            line.clear();
                        }
                        let answer: Vec<u8> = match path.as_str() {
                            "/length" => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}".to_vec(),
                            "/empty" => b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec(),
                            "/chunked" => {
                                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\n{\r\n1\r\n}\r\n0\r\n\r\n"
                                    .to_vec()
                            }
                            "/close" => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}".to_vec(),
                            _ => {
                                let mut big = b"HTTP/1.1 200 OK\r\ncontent-length: 1048576\r\n\r\n".to_vec();
                                big.resize(big.len() + 1_048_576, b'x');
                                big
                            }
                        };
                        if writer.write_all(&answer).is_err() || path == "/close" {
                            return;
                        }
                    }
                });
            }
        });
        (base, accepted)
    }

    #[test]
    fn a_connection_is_reused_only_after_a_complete_response_that_keeps_it_open() {
        let (base, accepted) = server();
        let client = Client::new(&base, None).keeping_alive(Duration::from_secs(30));
        let get = |path: &str| smol::block_on(client.forward(Method::Get, path, None)).unwrap().0;
        for path in ["/length", "/length", "/chunked", "/empty", "/length"] {
            assert_eq!(get(path), 200);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "complete responses leave the connection for the next");
        assert_eq!(get("/close"), 200);
        assert_eq!(get("/length"), 200);
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "a connection the server closes is not reused");
        // A response dropped before its end (an event stream given up, a download cut short)
        // takes its connection with it.
        drop(smol::block_on(client.open_events(Method::Get, "/big", None, None)).unwrap());
        assert_eq!(get("/length"), 200);
        assert_eq!(accepted.load(Ordering::SeqCst), 3, "the kept one was lent to the dropped response");
        // Without keep-alive, every request has its own connection.
        let plain = Client::new(&base, None);
        smol::block_on(plain.forward(Method::Get, "/length", None)).unwrap();
        smol::block_on(plain.forward(Method::Get, "/length", None)).unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 5);
    }

    /// Whether `condition` holds within a generous time (loopback delivers at once, but not
    /// necessarily before the sending call returns).
    fn eventually(mut condition: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    #[test]
    fn a_kept_connection_is_open_until_its_peer_closes_it_or_says_something_unasked() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        assert!(still_open(client.as_raw_fd()), "open and quiet");
        (&server).write_all(b"x").unwrap();
        assert!(eventually(|| !still_open(client.as_raw_fd())), "bytes nobody asked for");
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        assert!(still_open(client.as_raw_fd()));
        drop(server);
        assert!(eventually(|| !still_open(client.as_raw_fd())), "closed by its peer");
    }
}
