//! The HTTP/1.1 transport under surf: TCP, or TLS with a pinned certificate, into async-h1.
//!
//! One connection per request with `Connection: close`: simple, and on loopback cheap enough.
//! surf's own client backends are not used (they bring curl, OpenSSL or an old rustls).
//!
//! Answers come from any address mDNS announced, so the response head is capped here
//! ([`HeadLimited`]: async-h1 checks a head's size only at line ends); bodies and event streams
//! are capped where they are read (`peer::Client`, `peer::sse`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::io::{AsyncRead, AsyncWrite};
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
}

impl Transport {
    pub(super) fn new(trust: Trust) -> Transport {
        Transport { config: Config::default(), trust }
    }
}

/// A connection to a daemon: plain TCP, or TLS checked against the pin.
pub(super) trait Duplex: futures_lite::AsyncRead + futures_lite::AsyncWrite + Send + Sync + Unpin {}
impl<T: futures_lite::AsyncRead + futures_lite::AsyncWrite + Send + Sync + Unpin> Duplex for T {}

/// Opens a connection to `url`'s host and port as `trust` allows (the HTTP requests and the
/// WebSocket share it).
pub(super) async fn connect(url: &http_client::http_types::Url, trust: &Trust) -> Result<Box<dyn Duplex>, Error> {
    let host = url.host_str().ok_or_else(|| Error::from_str(400, format!("no host in {url}")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    let port = url.port_or_known_default().unwrap_or(80);
    let stream = async_net::TcpStream::connect((host.as_str(), port)).await?;
    stream.set_nodelay(true)?;
    let tls_config = match (url.scheme(), trust) {
        ("https" | "wss", Trust::Pinned(pin)) => crate::tls::client_config(pin),
        ("https" | "wss", Trust::PairingOnly) => crate::tls::client_config_for_pairing(),
        ("http" | "ws", Trust::Plain | Trust::PairingOnly) => return Ok(Box::new(stream)),
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
        Some(Ok(tls)) => Ok(Box::new(tls)),
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
        let stream = connect(req.url(), &self.trust).await?;
        req.insert_header("connection", "close");
        async_h1::connect(HeadLimited::new(stream), req).await
    }

    fn set_config(&mut self, config: Config) -> Result<(), Error> {
        self.config = config;
        Ok(())
    }

    fn config(&self) -> &Config {
        &self.config
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
