//! The WebSocket client (RFC 6455, async-tungstenite over our own connection): `loopsy term`
//! and the dashboard's relay attach to terminals with it. The server side is
//! `daemon/websocket.rs`.
//!
//! Callers see terminal bytes and JSON control messages, not WebSocket frames.

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::{self, Message};
use async_tungstenite::{WebSocketReceiver, WebSocketSender, WebSocketStream};
use futures_lite::StreamExt;

use super::transport::{self, Duplex};
use super::{remote_error, transport_error, Client, ClientError};

/// The largest message accepted from a daemon (a screen snapshot with its history).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// What a daemon sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// Terminal bytes.
    Output(Vec<u8>),
    /// A JSON control message.
    Control(serde_json::Value),
}

/// The sending half.
pub struct Sender(WebSocketSender<Box<dyn Duplex>>);
/// The receiving half.
pub struct Receiver(WebSocketReceiver<Box<dyn Duplex>>);

impl Client {
    /// Opens a WebSocket to `path_and_query` with this client's key and trust. A refused
    /// handshake is `ClientError::Remote` with the daemon's status and message.
    pub async fn websocket(&self, path_and_query: &str) -> Result<(Sender, Receiver), ClientError> {
        let url = format!("{}{}", self.base, path_and_query);
        let ws_url = url.replacen("https://", "wss://", 1).replacen("http://", "ws://", 1);
        let parsed = http_client::http_types::Url::parse(&ws_url)
            .map_err(|e| ClientError::Decode { url: url.clone(), reason: e.to_string() })?;
        let mut request = ws_url
            .as_str()
            .into_client_request()
            .map_err(|e| ClientError::Decode { url: url.clone(), reason: e.to_string() })?;
        if let Some(key) = &self.key {
            let value = format!("Bearer {key}").parse().map_err(|_| ClientError::Decode {
                url: url.clone(),
                reason: "the key is not a header value".into(),
            })?;
            request.headers_mut().insert("Authorization", value);
        }
        let opening = async {
            let stream = transport::connect(&parsed, &self.trust)
                .await
                .map_err(|e| transport_error(&self.base, e.to_string()))?;
            let config =
                WebSocketConfig::default().max_message_size(Some(MAX_MESSAGE)).max_frame_size(Some(MAX_MESSAGE));
            async_tungstenite::client_async_with_config(request, stream, Some(config)).await.map_err(|e| match e {
                tungstenite::Error::Http(response) => {
                    let body = response.body().clone().unwrap_or_default();
                    remote_error(response.status().as_u16(), &body)
                }
                other => ClientError::Unreachable { url: url.clone(), reason: other.to_string() },
            })
        };
        let (socket, _response): (WebSocketStream<Box<dyn Duplex>>, _) = self.timed(opening).await?;
        let (sender, receiver) = socket.split();
        Ok((Sender(sender), Receiver(receiver)))
    }
}

impl Sender {
    /// Terminal input.
    pub async fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.send(Message::Binary(bytes.to_vec().into())).await
    }

    /// A control message (`{"type":"resize",…}`).
    pub async fn send_control(&mut self, value: &serde_json::Value) -> Result<(), ClientError> {
        self.send(Message::Text(value.to_string().into())).await
    }

    pub async fn close(&mut self) {
        let _ = self.0.close(None).await;
    }

    async fn send(&mut self, message: Message) -> Result<(), ClientError> {
        self.0
            .send(message)
            .await
            .map_err(|e| ClientError::Unreachable { url: "websocket".into(), reason: e.to_string() })
    }
}

impl Receiver {
    /// The next message; `None` once the daemon closed the connection.
    pub async fn next(&mut self) -> Option<Result<Incoming, ClientError>> {
        loop {
            let message = match self.0.next().await? {
                Ok(message) => message,
                Err(tungstenite::Error::ConnectionClosed) => return None,
                Err(e) => {
                    return Some(Err(ClientError::Unreachable { url: "websocket".into(), reason: e.to_string() }))
                }
            };
            return Some(Ok(match message {
                Message::Binary(bytes) => Incoming::Output(bytes.to_vec()),
                Message::Text(text) => match serde_json::from_str(&text) {
                    Ok(value) => Incoming::Control(value),
                    Err(e) => return Some(Err(ClientError::Decode { url: "websocket".into(), reason: e.to_string() })),
                },
                Message::Close(_) => return None,
                _ => continue,
            }));
        }
    }
}
