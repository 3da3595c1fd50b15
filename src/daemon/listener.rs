//! The accept loop: TCP connections into async-h1 and `app.respond`, with a graceful stop.
//!
//! tide has no graceful shutdown and its own loop drains any unread request body, however
//! large, so this module owns the loop. On shutdown it stops accepting, lets each connection
//! finish the request it is serving (then closes it), and drops idle keep-alive connections.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_h1::server::{decode, Encoder};
use async_net::{TcpListener, TcpStream};
use futures_lite::future;
use futures_lite::io::{self, AsyncRead, AsyncReadExt, AsyncWrite};

use super::state::State;
use crate::shutdown::Shutdown;

/// An idle keep-alive connection is closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// A response with an unread request body bigger than this closes the connection instead of
/// reading the rest (an oversized upload answered with 413 must not be read to the end).
const DRAIN_LIMIT: u64 = 256 * 1024;

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

/// Accepts connections until shutdown is triggered.
pub async fn serve(listener: TcpListener, app: tide::Server<State>, shutdown: Shutdown, in_flight: InFlight) {
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
                let (app, shutdown, in_flight) = (app.clone(), shutdown.clone(), in_flight.clone());
                smol::spawn(async move {
                    if let Err(e) = serve_connection(stream, peer, app, shutdown, in_flight).await {
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

async fn serve_connection<IO>(
    io: IO,
    peer: SocketAddr,
    app: tide::Server<State>,
    shutdown: Shutdown,
    in_flight: InFlight,
) -> tide::http::Result<()>
where
    IO: AsyncRead + AsyncWrite + Clone + Send + Sync + Unpin + 'static,
{
    let local = local_addr(&io);
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
        let mut res: tide::http::Response = app.respond(req).await?;
        let close = close_requested
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
        let unread = io::copy(&mut (&mut body).take(DRAIN_LIMIT + 1), &mut io::sink()).await?;
        if unread > DRAIN_LIMIT {
            return Ok(());
        }
    }
}

/// Completes with an error when the client closes its side of the connection. Bytes the client
/// sends meanwhile (a pipelined request) stop the watch; heartbeats then notice a hang-up.
async fn client_hangup<IO: 'static>(io: &IO) -> io::Result<u64> {
    let Some(tcp) = (io as &dyn std::any::Any).downcast_ref::<TcpStream>() else {
        return future::pending().await;
    };
    let mut byte = [0u8; 1];
    match tcp.peek(&mut byte).await {
        Ok(0) | Err(_) => Err(io::Error::new(io::ErrorKind::ConnectionAborted, "the client closed the connection")),
        Ok(_) => future::pending().await,
    }
}

fn local_addr<IO: 'static>(io: &IO) -> Option<SocketAddr> {
    (io as &dyn std::any::Any).downcast_ref::<TcpStream>().and_then(|tcp| tcp.local_addr().ok())
}
