//! What a connection may cost the daemon: how many may be open (in all and per source
//! address), how long a client may take to send a request head, how long a read or a write may
//! stall, and how big a head may grow.
//!
//! async-h1 checks the head's size only at line ends (a head with no newline grows without
//! bound), has no timeouts at all, and panics on a header value that is not ASCII (http-types
//! unwraps it), so every connection's IO goes through [`Guarded`], which also refuses such a
//! head before async-h1 sees it, and the accept loop asks [`Connections`] before serving anyone.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_io::Timer;
use futures_lite::io::{AsyncRead, AsyncWrite};

/// A request head (request line and headers) may not take more than this.
pub(crate) const HEAD_LIMIT: usize = 64 * 1024;

/// The per-connection rules, from `server.*` in the config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// From accepting a connection (or the first byte of a later request) to its complete head.
    pub header_timeout: Duration,
    /// How long a read of the body, or a write of the response, may wait without progress.
    pub idle_timeout: Duration,
    /// Connections open at once, from everyone.
    pub max_connections: usize,
    /// Connections open at once from one source address.
    pub max_per_address: usize,
}

impl Limits {
    pub(crate) fn from_config(server: &crate::config::Server, descriptors: u64) -> Limits {
        Limits {
            header_timeout: Duration::from_millis(server.header_timeout),
            idle_timeout: Duration::from_millis(server.idle_timeout),
            max_connections: global_cap(server.max_connections as usize, descriptors),
            max_per_address: server.max_connections_per_address.max(1) as usize,
        }
    }
}

/// The global cap: at most the configured number, and always a quarter of the descriptor limit
/// (at least 64) below it, for files, pipes, PTYs and the mDNS sockets.
fn global_cap(configured: usize, descriptors: u64) -> usize {
    let descriptors = usize::try_from(descriptors).unwrap_or(usize::MAX);
    let reserve = (descriptors / 4).max(64);
    configured.min(descriptors.saturating_sub(reserve)).max(1)
}

/// Raises this process's soft descriptor limit to its hard limit (a daemon serving many
/// clients needs more than the usual 1024) and returns the limit in force.
pub(crate) fn raise_descriptor_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct we pass and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit reads the struct we pass; raising the soft limit up to the hard one
        // needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = limit.rlim_max;
        }
    }
    limit.rlim_cur
}

/// The open connections, counted in all and per source address.
#[derive(Clone)]
pub(crate) struct Connections {
    inner: Arc<Counts>,
}

struct Counts {
    total: AtomicUsize,
    by_address: Mutex<HashMap<IpAddr, usize>>,
    max_total: usize,
    max_per_address: usize,
    /// Unix ms of the last warning about a refused connection (one per minute at most).
    warned_at: AtomicU64,
}

/// One admitted connection; dropping it frees its place.
pub(crate) struct Permit {
    counts: Arc<Counts>,
    address: IpAddr,
}

impl Connections {
    pub(crate) fn new(limits: &Limits) -> Connections {
        Connections {
            inner: Arc::new(Counts {
                total: AtomicUsize::new(0),
                by_address: Mutex::new(HashMap::new()),
                max_total: limits.max_connections,
                max_per_address: limits.max_per_address,
                warned_at: AtomicU64::new(0),
            }),
        }
    }

    /// A place for a connection from `address`, or `None` when it or everyone is at the cap.
    pub(crate) fn admit(&self, address: IpAddr) -> Option<Permit> {
        let address = address.to_canonical();
        let counts = &self.inner;
        let mut by_address = counts.by_address.lock().expect("connection counts lock");
        let mine = by_address.get(&address).copied().unwrap_or(0);
        let total = counts.total.load(Ordering::SeqCst);
        if mine >= counts.max_per_address || total >= counts.max_total {
            drop(by_address);
            self.warn_refused(address, mine, total);
            return None;
        }
        by_address.insert(address, mine + 1);
        counts.total.fetch_add(1, Ordering::SeqCst);
        Some(Permit { counts: self.inner.clone(), address })
    }

    /// Connections open now.
    #[cfg(test)]
    pub(crate) fn open(&self) -> usize {
        self.inner.total.load(Ordering::SeqCst)
    }

    fn warn_refused(&self, address: IpAddr, mine: usize, total: usize) {
        let now = crate::clock::now_ms();
        let last = self.inner.warned_at.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 60_000
            && self.inner.warned_at.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            log::warn!(
                "refusing connections: {mine} open from {address} (at most {}), {total} in all (at most {}); \
                 further refusals this minute are not logged",
                self.inner.max_per_address,
                self.inner.max_total
            );
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut by_address = self.counts.by_address.lock().expect("connection counts lock");
        if let Some(count) = by_address.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                by_address.remove(&self.address);
            }
        }
        self.counts.total.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connection's IO under the server's rules: while a head is being read it may not exceed
/// [`HEAD_LIMIT`], and its header lines may hold only visible ASCII, spaces and tabs (see
/// [`HeadScan`]); a read or write that makes no progress for the idle timeout fails with
/// `TimedOut`, which ends the connection. Clones share the state (async-h1 clones the IO).
#[derive(Clone)]
pub(crate) struct Guarded<IO> {
    io: IO,
    watch: Arc<Watch>,
}

struct Watch {
    idle: Duration,
    /// Bytes a head may still take; `usize::MAX` outside a head.
    head_left: AtomicUsize,
    /// Set once the connection became a WebSocket: a read may then wait without limit.
    upgraded: AtomicBool,
    read_timer: Mutex<Option<Timer>>,
    write_timer: Mutex<Option<Timer>>,
    /// Where the reading of the current head is, and why it was refused, if it was.
    scan: Mutex<HeadScan>,
}

/// The bytes of a request head as they are read, checked before async-h1 parses them: a header
/// line (name or value) with a byte that is not visible ASCII, a space or a tab is refused.
/// async-h1 hands such a value to http-types, which panics on anything but ASCII (the
/// connection's task died without an answer); httparse refuses control characters without
/// saying why. The request line is left to httparse; bytes after the blank line that ends the
/// head are body, and not looked at.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct HeadScan {
    /// Past the request line: reading header lines.
    header_lines: bool,
    /// Bytes of the current line, not counting the CR of its CRLF.
    line_len: usize,
    /// The last byte was a CR: the end of a line if an LF follows.
    cr: bool,
    /// The blank line after the headers was read.
    ended: bool,
    /// Why the head is refused.
    refused: Option<String>,
}

impl HeadScan {
    /// Scans `bytes`, the next ones read; returns why the head is refused, once it is.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Option<&str> {
        for &byte in bytes {
            if self.ended || self.refused.is_some() {
                break;
            }
            if byte == b'\n' {
                self.cr = false;
                if self.line_len == 0 && self.header_lines {
                    self.ended = true;
                }
                // Empty lines before the request line are allowed (RFC 9112, 2.2).
                self.header_lines |= self.line_len > 0;
                self.line_len = 0;
                continue;
            }
            // A CR not followed by LF is a byte of the line, and a control character.
            if std::mem::replace(&mut self.cr, byte == b'\r') {
                self.line_byte(b'\r');
            }
            if byte != b'\r' {
                self.line_byte(byte);
            }
        }
        self.refused.as_deref()
    }

    fn line_byte(&mut self, byte: u8) {
        self.line_len += 1;
        if self.header_lines && self.refused.is_none() && !(byte == b'\t' || (0x20..0x7f).contains(&byte)) {
            let what = if byte >= 0x80 { "is not ASCII" } else { "is a control character" };
            self.refused = Some(format!(
                "a request header holds the byte 0x{byte:02X}, which {what}: header names and values must be \
                 visible ASCII, spaces and tabs (percent-encode anything else)"
            ));
        }
    }
}

impl<IO> Guarded<IO> {
    pub(crate) fn new(io: IO, idle: Duration) -> Guarded<IO> {
        let watch = Watch {
            idle,
            head_left: AtomicUsize::new(usize::MAX),
            upgraded: AtomicBool::new(false),
            read_timer: Mutex::new(None),
            write_timer: Mutex::new(None),
            scan: Mutex::new(HeadScan::default()),
        };
        Guarded { io, watch: Arc::new(watch) }
    }

    /// A request head starts: count its bytes, and forget stalls of earlier requests.
    pub(crate) fn start_head(&self) {
        self.watch.head_left.store(HEAD_LIMIT, Ordering::SeqCst);
        *self.watch.read_timer.lock().expect("timer lock") = None;
        *self.watch.write_timer.lock().expect("timer lock") = None;
        *self.watch.scan.lock().expect("head scan lock") = HeadScan::default();
    }

    /// The head is complete; the body is not counted.
    pub(crate) fn end_head(&self) {
        self.watch.head_left.store(usize::MAX, Ordering::SeqCst);
    }

    /// Whether a byte of the head being read has arrived (a failed read before that is the client
    /// going away, not a request to answer).
    pub(crate) fn head_begun(&self) -> bool {
        self.watch.head_left.load(Ordering::SeqCst) != HEAD_LIMIT
    }

    /// Why the head being read was refused (its reading then failed with `InvalidData`): to be
    /// answered with 400.
    pub(crate) fn head_refusal(&self) -> Option<String> {
        self.watch.scan.lock().expect("head scan lock").refused.clone()
    }

    /// The connection switched protocols (a WebSocket, whose client may say nothing for hours):
    /// reads wait without limit from now on; a stalled write still times out.
    pub(crate) fn upgraded(&self) {
        self.watch.head_left.store(usize::MAX, Ordering::SeqCst);
        self.watch.upgraded.store(true, Ordering::SeqCst);
        *self.watch.read_timer.lock().expect("timer lock") = None;
    }
}

/// Polls the stall timer of a pending operation; `Ready` means the idle timeout passed.
fn stalled(timer: &Mutex<Option<Timer>>, idle: Duration, cx: &mut Context<'_>) -> Poll<io::Error> {
    let mut timer = timer.lock().expect("timer lock");
    let armed = timer.get_or_insert_with(|| Timer::after(idle));
    match Pin::new(armed).poll(cx) {
        Poll::Ready(_) => {
            *timer = None;
            let message = format!("no progress for {} s", idle.as_secs_f32());
            Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, message))
        }
        Poll::Pending => Poll::Pending,
    }
}

fn progressed(timer: &Mutex<Option<Timer>>) {
    let mut timer = timer.lock().expect("timer lock");
    if timer.is_some() {
        *timer = None;
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(n)) => {
                progressed(&this.watch.read_timer);
                let left = this.watch.head_left.load(Ordering::SeqCst);
                if left != usize::MAX {
                    if n > left {
                        let message = format!("request head larger than {} KiB", HEAD_LIMIT / 1024);
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, message)));
                    }
                    this.watch.head_left.store(left - n, Ordering::SeqCst);
                    if let Some(why) = this.watch.scan.lock().expect("head scan lock").feed(&buf[..n]) {
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, why.to_string())));
                    }
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if this.watch.upgraded.load(Ordering::SeqCst) => Poll::Pending,
            Poll::Pending => stalled(&this.watch.read_timer, this.watch.idle, cx).map(Err),
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Ready(result) => {
                progressed(&this.watch.write_timer);
                Poll::Ready(result)
            }
            Poll::Pending => stalled(&this.watch.write_timer, this.watch.idle, cx).map(Err),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Ready(result) => {
                progressed(&this.watch.write_timer);
                Poll::Ready(result)
            }
            Poll::Pending => stalled(&this.watch.write_timer, this.watch.idle, cx).map(Err),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What scanning `head` in pieces of `step` bytes refuses, if anything.
    fn scan(head: &[u8], step: usize) -> Option<String> {
        let mut scan = HeadScan::default();
        for piece in head.chunks(step) {
            if let Some(why) = scan.feed(piece) {
                return Some(why.to_string());
            }
        }
        None
    }

    #[test]
    fn a_header_line_with_a_byte_that_is_not_visible_ascii_is_refused_wherever_the_reads_split() {
        let refused: &[(&[u8], &str)] = &[
            (b"GET / HTTP/1.1\r\nX-A: caf\xc3\xa9\r\n\r\n", "0xC3, which is not ASCII"),
            (b"GET / HTTP/1.1\r\nX-A: \xff\r\n\r\n", "0xFF"),
            (b"GET / HTTP/1.1\r\nX-\xc3\xa9: b\r\n\r\n", "0xC3"),
            (b"GET / HTTP/1.1\r\nX-A: a\x01b\r\n\r\n", "0x01, which is a control character"),
            (b"GET / HTTP/1.1\r\nX-A: a\x7fb\r\n\r\n", "0x7F"),
            (b"GET / HTTP/1.1\nX-A: ok\nX-B: \xc3\xa9\n\n", "0xC3"),
            (b"\r\n\r\nGET / HTTP/1.1\r\nX-A: \xc3\xa9\r\n\r\n", "0xC3"),
        ];
        let accepted: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: visible ~ ascii\tand tabs\r\n\r\n",
            // The request line is httparse's to judge; the body is not a head.
            b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\n\xc3\xa9\x00\x01",
            b"GET / HTTP/1.1\nHost: a\n\n\xff",
        ];
        for step in [1, 2, 3, 7, 4096] {
            for (head, why) in refused {
                let got = scan(head, step).unwrap_or_else(|| panic!("{head:?} in pieces of {step} was accepted"));
                assert!(got.contains(why), "{head:?}: {got}");
            }
            for head in accepted {
                assert_eq!(scan(head, step), None, "{head:?} in pieces of {step}");
            }
        }
    }

    #[test]
    fn the_head_scan_never_panics_and_judges_alike_however_the_reads_split() {
        let valid = ["GET /api/v1/health HTTP/1.1\r\nX-Loopsy-Node-Id: abc\r\n\r\n", "Host: a\r\n"];
        for input in crate::fuzz::inputs(&valid, "GET /:\r\n\t-aé\u{1}", 31, 3_000) {
            let whole = scan(input.as_bytes(), usize::MAX);
            assert_eq!(scan(input.as_bytes(), 1), whole, "{input:?}");
            assert_eq!(scan(input.as_bytes(), 5), whole, "{input:?}");
            if input.contains("\n\n") || input.contains("\n\r\n") {
                continue;
            }
            // Without a blank line the whole input is head: refused exactly when a line after
            // the first non-empty one holds a byte outside visible ASCII, space and tab.
            let mut lines =
                input.split('\n').map(|line| line.strip_suffix('\r').unwrap_or(line)).skip_while(|l| l.is_empty());
            lines.next();
            let bad = lines.any(|line| line.bytes().any(|b| !(b == b'\t' || (0x20..0x7f).contains(&b))));
            assert_eq!(whole.is_some(), bad, "{input:?}: {whole:?}");
        }
    }

    #[test]
    fn the_global_cap_leaves_descriptors_for_everything_else() {
        assert_eq!(global_cap(4096, 1024), 768);
        assert_eq!(global_cap(4096, 20_000), 4096);
        assert_eq!(global_cap(100, 20_000), 100);
        assert_eq!(global_cap(4096, 100), 36, "at least 64 are kept back");
        assert_eq!(global_cap(4096, 10), 1);
    }

    #[test]
    fn connections_are_capped_per_address_and_in_all() {
        let limits = Limits {
            header_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            max_connections: 3,
            max_per_address: 2,
        };
        let connections = Connections::new(&limits);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = connections.admit(a).unwrap();
        let _second = connections.admit(mapped).unwrap();
        assert!(connections.admit(a).is_none(), "an IPv4-mapped address is the same address");
        let _third = connections.admit(b).unwrap();
        assert!(connections.admit("10.0.0.3".parse().unwrap()).is_none(), "the global cap");
        drop(first);
        assert_eq!(connections.open(), 2);
        assert!(connections.admit(a).is_some(), "a closed connection frees its place");
    }

    #[test]
    fn a_head_without_an_end_is_cut_at_the_limit_and_a_stalled_read_times_out() {
        use futures_lite::io::AsyncReadExt;
        smol::block_on(async {
            let endless = futures_lite::io::repeat(b'a');
            let mut guarded = Guarded::new(endless, Duration::from_secs(5));
            guarded.start_head();
            let mut sink = Vec::new();
            let err = (&mut guarded).take(HEAD_LIMIT as u64 * 2).read_to_end(&mut sink).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            assert!(sink.len() <= HEAD_LIMIT);
            guarded.end_head();
            let mut body = [0u8; 1000];
            guarded.read_exact(&mut body).await.unwrap();

            let (reader, _writer) =
                async_net::TcpStream::connect(loopback_listener().await).await.map(|s| (s.clone(), s)).unwrap();
            let mut silent = Guarded::new(reader, Duration::from_millis(50));
            let err = silent.read(&mut body).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        });
    }

    #[test]
    fn an_upgraded_connection_may_be_silent_but_not_stall_a_write() {
        use futures_lite::io::AsyncReadExt;
        smol::block_on(async {
            let (reader, _writer) =
                async_net::TcpStream::connect(loopback_listener().await).await.map(|s| (s.clone(), s)).unwrap();
            let mut silent = Guarded::new(reader, Duration::from_millis(50));
            silent.upgraded();
            let mut byte = [0u8; 1];
            let read = crate::clock::timeout(Duration::from_millis(300), silent.read(&mut byte));
            assert!(read.await.is_none(), "a read of an upgraded connection waits past the idle timeout");

            // Nobody reads the other end: writes stall once the socket buffers are full.
            let (stalled, _kept) =
                async_net::TcpStream::connect(loopback_listener().await).await.map(|s| (s.clone(), s)).unwrap();
            let mut guarded = Guarded::new(stalled, Duration::from_millis(50));
            guarded.upgraded();
            let chunk = vec![0u8; 64 * 1024];
            let err = loop {
                if let Err(e) = futures_lite::io::AsyncWriteExt::write_all(&mut guarded, &chunk).await {
                    break e;
                }
            };
            assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        });
    }

    /// A listener that accepts and then says nothing; returns its address.
    async fn loopback_listener() -> std::net::SocketAddr {
        let listener = async_net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        smol::spawn(async move {
            let _held = listener.accept().await;
            futures_lite::future::pending::<()>().await;
        })
        .detach();
        addr
    }
}
