//! The accept loop: TCP (and TLS) connections into async-h1 and `app.respond`, with a graceful
//! stop.
//!
//! tide has no graceful shutdown and its own loop drains any unread request body, however
//! large, so this module owns the loop. On shutdown it stops accepting, lets each connection
//! finish the request it is serving (then closes it), and drops idle keep-alive connections.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_h1::server::{decode, Encoder};
use async_net::TcpListener;
use futures_lite::future;
use futures_lite::io::{self, AsyncRead, AsyncReadExt, AsyncWrite};

use super::state::State;
use crate::shutdown::Shutdown;

/// An idle keep-alive connection is closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// A response with an unread request body bigger than this closes the connection instead of
/// reading the rest (an oversized upload answered with 413 must not be read to the end).
const DRAIN_LIMIT: u64 = 256 * 1024;

/// The TLS acceptor, if HTTPS is on; pairing can turn it on while the daemon runs.
#[derive(Clone, Default)]
pub struct TlsSwitch(std::sync::Arc<std::sync::RwLock<Option<futures_rustls::TlsAcceptor>>>);

impl TlsSwitch {
    pub fn current(&self) -> Option<futures_rustls::TlsAcceptor> {
        self.0.read().expect("tls switch lock").clone()
    }

    /// New connections are served over TLS from now on.
    pub fn enable(&self, acceptor: futures_rustls::TlsAcceptor) {
        *self.0.write().expect("tls switch lock") = Some(acceptor);
    }

    pub fn is_on(&self) -> bool {
        self.0.read().expect("tls switch lock").is_some()
    }
}

/// Counts requests being served, from decoded headers to the last byte of the response.
#[derive(Clone, Default)]
pub struct InFlight(Arc<AtomicUsize>);

struct InFlightGuard(Arc<AtomicUsize>);

impl InFlight {
    fn enter(&self) -> InFlightGuard {
        self.0.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(self.0.clone())
    }

    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    /// Waits until no request is in flight, or `limit` has passed. Returns how many remain.
    pub async fn drain(&self, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        while self.count() > 0 && Instant::now() < deadline {
            async_io::Timer::after(Duration::from_millis(10)).await;
        }
        self.count()
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until shutdown is triggered; with `tls`, every connection is HTTPS.
pub async fn serve(
    listener: TcpListener,
    tls: TlsSwitch,
    app: tide::Server<State>,
    shutdown: Shutdown,
    in_flight: InFlight,
) {
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            shutdown.wait().await;
            None
        })
        .await;
        match accepted {
            None => return,
            Some(Ok((stream, peer))) => {
                let _ = stream.set_nodelay(true);
                let local = stream.local_addr().ok();
                let (app, shutdown, in_flight, tls) = (app.clone(), shutdown.clone(), in_flight.clone(), tls.current());
                smol::spawn(async move {
                    let served = match tls {
                        None if starts_with_tls_hello(&stream).await => {
                            log::debug!("{peer} started a TLS handshake on the plain HTTP port; closing");
                            Ok(())
                        }
                        None => serve_connection(stream, peer, local, app, shutdown, in_flight).await,
                        Some(acceptor) => {
                            let handshake = future::or(async { Some(acceptor.accept(stream).await) }, async {
                                async_io::Timer::after(HANDSHAKE_TIMEOUT).await;
                                None
                            });
                            match handshake.await {
                                Some(Ok(tls_stream)) => {
                                    let io = async_dup::Arc::new(async_dup::Mutex::new(tls_stream));
                                    serve_connection(io, peer, local, app, shutdown, in_flight).await
                                }
                                Some(Err(e)) => Err(tide::http::Error::from_str(400, format!("TLS handshake: {e}"))),
                                None => Err(tide::http::Error::from_str(408, "TLS handshake timed out")),
                            }
                        }
                    };
                    if let Err(e) = served {
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
    let drain = async { Some(io::copy(body.take(DRAIN_LIMIT + 1), &mut io::sink()).await) };
    let timeout = async {
        async_io::Timer::after(patience).await;
        None
    };
    match future::or(drain, timeout).await {
        Some(Ok(n)) => Ok(n <= DRAIN_LIMIT),
        Some(Err(e)) => Err(e),
        None => Ok(false),
    }
}

/// Whether the client opened with a TLS handshake record (0x16), which a plain HTTP port
/// closes at once instead of waiting for an HTTP head that never comes.
async fn starts_with_tls_hello(stream: &async_net::TcpStream) -> bool {
    let mut first = [0u8; 1];
    let peek = async { stream.peek(&mut first).await.ok() };
    let timeout = async {
        async_io::Timer::after(HANDSHAKE_TIMEOUT).await;
        None
    };
    matches!(future::or(peek, timeout).await, Some(1)) && first[0] == 0x16
}

async fn serve_connection<IO>(
    io: IO,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    app: tide::Server<State>,
    shutdown: Shutdown,
    in_flight: InFlight,
) -> tide::http::Result<()>
where
    IO: AsyncRead + AsyncWrite + Clone + Send + Sync + Unpin + 'static,
{
    loop {
        let next = future::or(async { Some(decode(io.clone()).await) }, async {
            future::or(shutdown.wait(), async {
                async_io::Timer::after(IDLE_TIMEOUT).await;
            })
            .await;
            None
        })
        .await;
        let Some(decoded) = next else { return Ok(()) };
        let Some((mut req, mut body)) = decoded? else { return Ok(()) };
        let _serving = in_flight.enter();
        req.set_peer_addr(Some(peer));
        req.set_local_addr(local);
        let method = req.method();
        let close_requested = req.header("Connection").is_some_and(|v| v.as_str().eq_ignore_ascii_case("close"));
        let declared = req.len();
        let mut res: tide::http::Response = app.respond(req).await?;
        let drained = drain_unread(&mut body, declared).await?;
        if res.status() == tide::StatusCode::SwitchingProtocols {
            if let Some(upgrade) = res.ext().get::<super::websocket::Upgrade>().cloned() {
                // The connection now belongs to the WebSocket; it is no request in flight (a
                // stop ends it through its own domain, e.g. terminals hanging up).
                drop(_serving);
                upgrade.run(Box::new(io)).await?;
                return Ok(());
            }
        }
        let close = close_requested
            || !drained
            || shutdown.is_triggered()
            || res.header("Connection").is_some_and(|v| v.as_str().eq_ignore_ascii_case("close"));
        if close {
            res.insert_header("Connection", "close");
        }
        let event_stream = res.content_type().is_some_and(|mime| mime.essence() == "text/event-stream");
        let mut encoder = Encoder::new(res, method);
        let mut writer = io.clone();
        let copy = io::copy(&mut encoder, &mut writer);
        if event_stream {
            // An event stream may be quiet for long: end it (dropping its producer) as soon as
            // the client closes the connection, not at the next heartbeat.
            future::or(copy, client_hangup(&io)).await?;
        } else {
            copy.await?;
        }
        if close {
            return Ok(());
        }
    }
}

/// Completes with an error when the client closes its side of the connection. Bytes the client
/// sends meanwhile (a pipelined request) stop the watch; heartbeats then notice a hang-up.
async fn client_hangup<IO: 'static>(io: &IO) -> io::Result<u64> {
    let Some(tcp) = (io as &dyn std::any::Any).downcast_ref::<async_net::TcpStream>() else {
        return future::pending().await;
    };
    let mut byte = [0u8; 1];
    match tcp.peek(&mut byte).await {
        Ok(0) | Err(_) => Err(io::Error::new(io::ErrorKind::ConnectionAborted, "the client closed the connection")),
        Ok(_) => future::pending().await,
    }
}
