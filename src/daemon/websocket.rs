//! RFC 6455 WebSocket upgrades on the REST port (the server side; `peer::websocket` is the
//! client).
//!
//! A route that accepts an upgrade answers `101 Switching Protocols` through [`accept`], which
//! checks the handshake headers and puts the code to run on the connection into the
//! response. The listener, which owns the connection, writes the 101 head and hands the raw
//! connection to that code (`async-tungstenite` frames it); tide never sees it again. The
//! route's guard has authenticated the request like any other API call.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use async_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use async_tungstenite::WebSocketStream;
use futures_lite::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tide::{Request, Response, StatusCode};

use super::error::ApiError;
use super::state::State;

/// The largest message a client may send (terminal input, control frames).
const MAX_MESSAGE: usize = 1024 * 1024;

/// A connection after the upgrade: plain TCP or TLS.
pub(crate) trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

/// The WebSocket a handler gets.
pub(crate) type Socket = WebSocketStream<Box<dyn Duplex>>;

type Handler = Box<dyn FnOnce(Socket) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// The code to run once the listener has switched the connection (a response extension).
#[derive(Clone)]
pub(crate) struct Upgrade(Arc<Mutex<Option<(Handler, String)>>>);

impl Upgrade {
    /// Sends the 101 head on `io` and runs the handler on it. Returns false when this response
    /// carried no upgrade (or it was taken already).
    pub(crate) async fn run(&self, mut io: Box<dyn Duplex>) -> std::io::Result<bool> {
        let Some((handler, accept_key)) = self.0.lock().expect("upgrade lock").take() else { return Ok(false) };
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept_key}\r\n\r\n"
        );
        io.write_all(head.as_bytes()).await?;
        io.flush().await?;
        let config = WebSocketConfig::default().max_message_size(Some(MAX_MESSAGE)).max_frame_size(Some(MAX_MESSAGE));
        let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        handler(socket).await;
        Ok(true)
    }
}

/// A checked WebSocket handshake request, ready to be answered.
pub(crate) struct Handshake {
    accept_key: String,
}

/// Checks that `req` asks for a WebSocket (RFC 6455 §4.2.1); a request that does not is
/// refused with 426 (no `Upgrade: websocket`) or 400.
pub(crate) fn handshake(req: &Request<State>) -> Result<Handshake, ApiError> {
    let header = |name: &str| req.header(name).map(|v| v.last().as_str().to_string()).unwrap_or_default();
    let has_token = |value: String, token: &str| value.split(',').any(|t| t.trim().eq_ignore_ascii_case(token));
    if !has_token(header("Upgrade"), "websocket") {
        return Err(ApiError::plain(
            StatusCode::UpgradeRequired,
            "this route is a WebSocket: send Connection: Upgrade and Upgrade: websocket",
        ));
    }
    if !has_token(header("Connection"), "upgrade") {
        return Err(ApiError::bad_request("a WebSocket handshake needs Connection: Upgrade"));
    }
    if header("Sec-WebSocket-Version") != "13" {
        return Err(ApiError::bad_request("only WebSocket version 13 is spoken (Sec-WebSocket-Version: 13)"));
    }
    let key = header("Sec-WebSocket-Key");
    if !valid_key(&key) {
        return Err(ApiError::bad_request("Sec-WebSocket-Key must be 16 bytes in base64"));
    }
    Ok(Handshake { accept_key: async_tungstenite::tungstenite::handshake::derive_accept_key(key.trim().as_bytes()) })
}

impl Handshake {
    /// The 101 answer; `handler` runs on the connection once the listener has switched it.
    pub(crate) fn accept<F, Fut>(self, handler: F) -> Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handler: Handler = Box::new(move |socket| Box::pin(handler(socket)));
        let mut res = Response::new(StatusCode::SwitchingProtocols);
        res.insert_ext(Upgrade(Arc::new(Mutex::new(Some((handler, self.accept_key))))));
        res
    }
}

/// A base64 encoding of 16 bytes: 22 characters of the alphabet and `==`.
fn valid_key(key: &str) -> bool {
    let key = key.trim();
    key.len() == 24
        && key.ends_with("==")
        && key[..22].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_keys_are_16_bytes_of_base64() {
        assert!(valid_key("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!valid_key("dGhlIHNhbXBsZSBub25jZQ="));
        assert!(!valid_key("dGhlIHNhbXBsZSBub25j*Q=="));
        assert!(!valid_key(""));
    }

    #[test]
    fn the_accept_key_is_rfc_6455s() {
        // RFC 6455 §1.3's example.
        assert_eq!(
            async_tungstenite::tungstenite::handshake::derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
