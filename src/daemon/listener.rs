//! The accept loop: TCP (and TLS) connections into async-h1 and `app.respond`, with a graceful
//! stop, connection caps and timeouts (`conn`).
//!
//! tide has no graceful shutdown and its own loop drains any unread request body, however
//! large, so this module owns the loop. On shutdown it stops accepting, lets each connection
//! finish the request it is serving (then closes it), and drops idle keep-alive connections.
//!
//! One port serves both HTTP and HTTPS once TLS is on: the first byte tells them apart (a TLS
//! handshake starts with 0x16, an HTTP request with a letter). Plain HTTP then stays open to
//! this machine's own tools (curl, MCP clients, 1.0.21 scripts) on loopback; from other
//! addresses it is served only while `tls.allowInsecurePeers` is true, and refused otherwise.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_h1::server::{decode, Encoder};
use async_io::Async;
use async_net::{TcpListener, TcpStream};
use futures_lite::future;
use futures_lite::io::{self, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::conn::{Connections, Guarded, Limits, Permit};
use super::error::{ApiError, ErrorCode};
use super::memory::Quiet;
use super::methods::MethodGate;
use super::sendfile::FileBody;
use super::state::State;
use crate::shutdown::Shutdown;

/// An idle keep-alive connection is closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// An answer whose body is at most this long is written with its head in one write.
const COALESCE_BYTES: u64 = 16 * 1024;
/// A response with an unread request body bigger than this closes the connection instead of
/// reading the rest (an oversized upload answered with 413 must not be read to the end).
const DRAIN_LIMIT: u64 = 256 * 1024;

/// Whether connections get TLS (pairing can turn it on while the daemon runs), and whether
/// plain HTTP from other machines is still served beside it (`tls.allowInsecurePeers`, re-read
/// on SIGHUP).
#[derive(Clone)]
pub(crate) struct TlsSwitch {
    acceptor: Arc<std::sync::RwLock<Option<crate::tls::Acceptor>>>,
    insecure_peers: Arc<AtomicBool>,
}

impl TlsSwitch {
    pub(crate) fn new(allow_insecure_peers: bool) -> TlsSwitch {
        TlsSwitch { acceptor: Default::default(), insecure_peers: Arc::new(AtomicBool::new(allow_insecure_peers)) }
    }

    pub(crate) fn current(&self) -> Option<crate::tls::Acceptor> {
        self.acceptor.read().expect("tls switch lock").clone()
    }

    /// New connections are served over TLS from now on.
    pub(crate) fn enable(&self, acceptor: crate::tls::Acceptor) {
        *self.acceptor.write().expect("tls switch lock") = Some(acceptor);
    }

    pub(crate) fn is_on(&self) -> bool {
        self.acceptor.read().expect("tls switch lock").is_some()
    }

    pub(crate) fn set_insecure_peers(&self, allowed: bool) {
        self.insecure_peers.store(allowed, Ordering::SeqCst);
    }

    /// Whether a plain HTTP connection from `peer` is served: always without TLS, and with TLS
    /// on from loopback, or from anywhere while insecure peers are allowed.
    fn serves_plain(&self, peer: &SocketAddr) -> bool {
        !self.is_on() || peer.ip().to_canonical().is_loopback() || self.insecure_peers.load(Ordering::SeqCst)
    }
}

/// Counts requests being served, from decoded headers to the last byte of the response, and
/// tells [`Quiet`] of each one finished (memory is trimmed once requests stop).
#[derive(Clone, Default)]
pub(crate) struct InFlight {
    count: Arc<AtomicUsize>,
    finished: Quiet,
}

struct InFlightGuard(InFlight);

impl InFlight {
    fn enter(&self) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(self.clone())
    }

    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Where finished requests are noted.
    pub(crate) fn quiet(&self) -> Quiet {
        self.finished.clone()
    }

    /// Waits until no request is in flight, or `limit` has passed. Returns how many remain.
    pub(crate) async fn drain(&self, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        while self.count() > 0 && Instant::now() < deadline {
            async_io::Timer::after(Duration::from_millis(10)).await;
        }
        self.count()
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::SeqCst);
        self.0.finished.note();
    }
}

/// Accepts connections until shutdown is triggered; with TLS on, a connection that starts a
/// TLS handshake gets HTTPS and one that speaks plain HTTP is judged by `TlsSwitch`.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: TlsSwitch,
    app: tide::Server<State>,
    shutdown: Shutdown,
    in_flight: InFlight,
    limits: Limits,
) {
    let connections = Connections::new(&limits);
    log::info!(
        "accepting at most {} connections ({} per address); request heads within {} s",
        limits.max_connections,
        limits.max_per_address,
        limits.header_timeout.as_secs_f32()
    );
    loop {
        let accepted = shutdown.until(listener.accept()).await;
        match accepted {
            None => return,
            Some(Ok((stream, peer))) => {
                // Over the cap: closed at once, before anything is read or spawned.
                let Some(permit) = connections.admit(peer.ip()) else { continue };
                let _ = stream.set_nodelay(true);
                let connection = Accepted {
                    peer,
                    local: stream.local_addr().ok(),
                    app: app.clone(),
                    shutdown: shutdown.clone(),
                    in_flight: in_flight.clone(),
                    limits,
                    deadline: Instant::now() + limits.header_timeout,
                    _permit: permit,
                };
                let tls = tls.clone();
                // The task holds the connection's future (tens of KiB) boxed, made on a worker
                // thread: moved in here, it would be copied through this loop's stack frame on
                // the main thread, which then stays that deep (resident) for the daemon's life.
                smol::spawn(async move {
                    if let Err(e) = Box::pin(connection.run(stream, tls)).await {
                        log::debug!("connection from {peer}: {e}");
                    }
                })
                .detach();
            }
            Some(Err(e)) => {
                // Typically EMFILE: back off instead of spinning.
                log::warn!("accept failed: {e}");
                async_io::Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
}

/// How a request's connection arrived; the listener puts it on every request for the guard
/// (a key minted at pairing is accepted only over TLS) and the dashboard's cookie rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Connection {
    pub tls: bool,
}

/// One accepted connection and what serving it needs.
struct Accepted {
    peer: SocketAddr,
    local: Option<SocketAddr>,
    app: tide::Server<State>,
    shutdown: Shutdown,
    in_flight: InFlight,
    limits: Limits,
    /// The first request's head (and a TLS handshake before it) must be complete by then.
    deadline: Instant,
    /// Holds the connection's place under the caps until it closes.
    _permit: Permit,
}

/// What a connection's requests get.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Serve,
    /// Plain HTTP from another machine while TLS is on and insecure peers are not allowed.
    RefusePlain,
}

impl Accepted {
    async fn run(self, stream: TcpStream, tls: TlsSwitch) -> tide::http::Result<()> {
        let Some(first) = first_byte(&stream, self.deadline).await else { return Ok(()) };
        let is_tls_hello = first == 0x16;
        match (tls.current(), is_tls_hello) {
            (None, true) => {
                log::debug!("{} started a TLS handshake on the plain HTTP port; closing", self.peer);
                Ok(())
            }
            (Some(acceptor), true) => {
                let tcp = stream.clone();
                match crate::clock::deadline(self.deadline, acceptor.accept(stream)).await {
                    Some(Ok(tls_stream)) => {
                        let io = async_dup::Arc::new(async_dup::Mutex::new(tls_stream));
                        let io = Guarded::new(io, self.limits.idle_timeout);
                        self.serve(io, tcp, Mode::Serve, Connection { tls: true }).await
                    }
                    Some(Err(e)) => Err(tide::http::Error::from_str(400, format!("TLS handshake: {e}"))),
                    None => Err(tide::http::Error::from_str(408, "TLS handshake timed out")),
                }
            }
            (_, false) => {
                let mode = if tls.serves_plain(&self.peer) { Mode::Serve } else { Mode::RefusePlain };
                let io = Guarded::new(stream.clone(), self.limits.idle_timeout);
                self.serve(io, stream, mode, Connection { tls: false }).await
            }
        }
    }

    async fn serve<IO>(
        self,
        io: Guarded<IO>,
        tcp: TcpStream,
        mode: Mode,
        connection: Connection,
    ) -> tide::http::Result<()>
    where
        IO: AsyncRead + AsyncWrite + Clone + Send + Sync + Unpin + 'static,
    {
        let mut deadline = self.deadline;
        let gate = MethodGate::new(io.clone());
        let socket: Arc<Async<std::net::TcpStream>> = tcp.clone().into();
        loop {
            io.start_head();
            gate.arm();
            let next = self.shutdown.until(crate::clock::deadline(deadline, decode(gate.clone()))).await.flatten();
            let Some(decoded) = next else {
                if !self.shutdown.is_triggered() {
                    log::debug!("{}: no complete request head within the header timeout; closing", self.peer);
                }
                return Ok(());
            };
            let decoded = match decoded {
                Ok(decoded) => decoded,
                Err(e) => match io.head_refusal() {
                    // A head async-h1 must not see: answered, then the connection closes.
                    Some(why) => {
                        log::debug!("{}: request head refused: {why}", self.peer);
                        let mut res: tide::http::Response = ApiError::bad_request(why).into_response().into();
                        res.insert_header("Connection", "close");
                        let mut encoder = Encoder::new(res, tide::http::Method::Get);
                        io::copy(&mut encoder, &mut io.clone()).await?;
                        return Ok(());
                    }
                    // Nothing of a request yet: the client went away (a reset, a TLS peer closing
                    // without close_notify), between requests or before the first. No answer.
                    None if !io.head_begun() => {
                        log::debug!("{}: connection closed before a request: {e}", self.peer);
                        return Ok(());
                    }
                    None => {
                        // A head the parser refuses (HTTP/1.0, too long, a bad request line)
                        // gets an answer before the connection closes, not silence.
                        let mut writer = io.clone();
                        let _ = futures_lite::io::AsyncWriteExt::write_all(&mut writer, &malformed(&e)).await;
                        let _ = futures_lite::io::AsyncWriteExt::flush(&mut writer).await;
                        return Err(e);
                    }
                },
            };
            let Some((mut req, mut body)) = decoded else { return Ok(()) };
            io.end_head();
            let _serving = self.in_flight.enter();
            req.set_peer_addr(Some(self.peer));
            req.set_local_addr(self.local);
            req.ext_mut().insert(connection);
            if let Some(unknown) = gate.take_unknown() {
                req.ext_mut().insert(unknown);
            }
            let method = req.method();
            let close_requested = req.header("Connection").is_some_and(|v| v.as_str().eq_ignore_ascii_case("close"));
            let declared = req.len();
            let mut res: tide::http::Response = match mode {
                Mode::Serve => self.app.respond(req).await?,
                Mode::RefusePlain => plain_refusal(),
            };
            let drained = mode == Mode::Serve && drain_unread(&mut body, declared).await?;
            if drained && res.status() == tide::StatusCode::SwitchingProtocols {
                if let Some(upgrade) = res.ext().get::<super::websocket::Upgrade>().cloned() {
                    // The connection now belongs to the WebSocket: it is no request in flight (a
                    // stop ends it through its own domain, terminals hanging up), and it may be
                    // silent for hours, so reads no longer time out; a write that makes no
                    // progress for the idle timeout still ends it (the protocol's pings find a
                    // client that is gone while nothing is written).
                    drop(_serving);
                    io.upgraded();
                    upgrade.run(Box::new(io)).await?;
                    return Ok(());
                }
            }
            let close = close_requested
                || !drained
                || self.shutdown.is_triggered()
                || res.header("Connection").is_some_and(|v| v.as_str().eq_ignore_ascii_case("close"));
            if close {
                res.insert_header("Connection", "close");
            }
            let event_stream = res.content_type().is_some_and(|mime| mime.essence() == "text/event-stream");
            let large = declared.max(res.len()).unwrap_or(0) >= super::memory::LARGE_BODY;
            let small = res.len().filter(|len| !event_stream && *len as u64 <= COALESCE_BYTES);
            // A file body goes out with sendfile on plain TCP; the encoder then writes the head
            // alone (as for HEAD: the body's length, no body).
            let file_body = res
                .ext_mut()
                .remove::<FileBody>()
                .filter(|_| !connection.tls && small.is_none() && method != tide::http::Method::Head);
            let encode_as = if file_body.is_some() { tide::http::Method::Head } else { method };
            let mut encoder = Encoder::new(res, encode_as);
            let mut writer = io.clone();
            if let Some(file) = &file_body {
                io::copy(&mut encoder, &mut writer).await?;
                writer.flush().await?;
                file.send(&socket, &mut writer, self.limits.idle_timeout).await?;
                log::debug!("{}: sent {} bytes of a file with sendfile", self.peer, file.length());
            } else if let Some(len) = small {
                // Head and body in one write: one segment, one wake-up of the client.
                let mut bytes = Vec::with_capacity(len + 1024);
                encoder.read_to_end(&mut bytes).await?;
                writer.write_all(&bytes).await?;
                writer.flush().await?;
            } else if event_stream {
                // An event stream may be quiet for long: end it (dropping its producer) as soon as
                // the client closes the connection, not at the next heartbeat.
                future::or(io::copy(&mut encoder, &mut writer), client_hangup(&tcp)).await?;
            } else {
                io::copy(&mut encoder, &mut writer).await?;
            }
            if large {
                // Its buffers are freed by now: give their pages back (memory returns after a burst).
                drop(encoder);
                super::memory::give_back_soon();
            }
            if close {
                return Ok(());
            }
            drop(_serving);
            // Keep-alive: wait for the next request's first byte (or the client's close, which
            // the next decode reads as the end), then give it a head timeout. Waiting for
            // readiness costs no read: a peek would fail once, wait, then read the byte again.
            let readable = socket.readable();
            match self.shutdown.until(crate::clock::timeout(IDLE_TIMEOUT, readable)).await.flatten() {
                Some(Ok(())) => deadline = Instant::now() + self.limits.header_timeout,
                _ => return Ok(()),
            }
        }
    }
}

/// The raw answer to a request head that could not be parsed: 400 (or the parser's own 4xx)
/// with a JSON error body, and the connection closes.
fn malformed(error: &tide::http::Error) -> Vec<u8> {
    let status = match error.status() as u16 {
        status @ 400..=499 => status,
        _ => 400,
    };
    let body = ApiError::bad_request(format!("malformed request: {error}")).body().to_string();
    let reason = tide::http::StatusCode::try_from(status).map(|s| s.canonical_reason()).unwrap_or("Bad Request");
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The answer to every request of a refused plain-HTTP connection.
fn plain_refusal() -> tide::http::Response {
    let message = "this daemon serves other machines over HTTPS only (tls.allowInsecurePeers is false): \
                   pair with it (`loopsy pair`) to reach it with its pinned certificate";
    let mut res: tide::http::Response = ApiError::new(ErrorCode::TlsRequired, message).into_response().into();
    res.insert_header("Connection", "close");
    res
}

/// The first byte a client sends, without consuming it; `None` if it closes or says nothing
/// before `deadline`.
async fn first_byte(stream: &TcpStream, deadline: Instant) -> Option<u8> {
    let mut first = [0u8; 1];
    match crate::clock::deadline(deadline, stream.peek(&mut first)).await {
        Some(Ok(1)) => Some(first[0]),
        _ => None,
    }
}

/// Reads what the handler left of the request body, before the answer is written: once the
/// client has its answer it may send the next request at once, and reading ahead after that
/// could swallow the start of it. Returns false when the connection must close instead: a
/// declared body too big to read for nothing (an upload refused with 413), or a body of unknown
/// length that does not end promptly.
async fn drain_unread(body: &mut (impl AsyncRead + Unpin), declared: Option<usize>) -> io::Result<bool> {
    let patience = match declared {
        Some(length) if length as u64 > DRAIN_LIMIT => return Ok(false),
        // A declared small body normally arrived with the head already.
        Some(_) => Duration::from_secs(10),
        None => Duration::from_millis(100),
    };
    match crate::clock::timeout(patience, io::copy(body.take(DRAIN_LIMIT + 1), &mut io::sink())).await {
        Some(Ok(n)) => Ok(n <= DRAIN_LIMIT),
        Some(Err(e)) => Err(e),
        None => Ok(false),
    }
}

/// Completes with an error when the client closes its side of the connection. Bytes the client
/// sends meanwhile (a pipelined request) stop the watch; heartbeats then notice a hang-up.
async fn client_hangup(tcp: &TcpStream) -> io::Result<u64> {
    let mut byte = [0u8; 1];
    match tcp.peek(&mut byte).await {
        Ok(0) | Err(_) => Err(io::Error::new(io::ErrorKind::ConnectionAborted, "the client closed the connection")),
        Ok(_) => future::pending().await,
    }
}
