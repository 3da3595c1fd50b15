//! Wire types of `/api/v1/messages`, shared by the routes, the CLI and the MCP tools.

use serde::{Deserialize, Serialize};

use super::envelope::MessageType;

/// `POST /api/v1/messages`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct SendRequest {
    /// The peer: its name, hostname, node id (or a prefix of at least 4) or address[:port].
    pub to: String,
    #[serde(rename = "type", default = "chat")]
    pub kind: MessageType,
    pub body: String,
}

fn chat() -> MessageType {
    MessageType::Chat
}

/// What became of a send (or an ack): delivered now, or queued for retries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Sent {
    pub id: String,
    /// `inbox:<to>:<id>` on the peer (for an ack: the inbox key it removed here).
    pub key: String,
    /// The peer's messaging name (its hostname).
    pub to: String,
    /// Where the peer is reached, `address:port`.
    pub endpoint: String,
    #[serde(rename = "type")]
    pub kind: MessageType,
    /// `delivered` or `queued`.
    pub state: String,
    /// Why the delivery has not happened yet (queued only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One message of `GET /api/v1/messages/inbox`: the envelope and its key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InboxMessage {
    pub key: String,
    #[serde(flatten)]
    pub envelope: super::envelope::Envelope,
}

/// `GET /api/v1/messages/inbox`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Inbox {
    pub messages: Vec<InboxMessage>,
}

/// `POST /api/v1/messages/ack`: the inbox key, the message id, or both (they must agree).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct AckRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// `GET /api/v1/messages/status?peer=`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StatusReport {
    /// The peer as asked for.
    pub peer: String,
    pub node_id: String,
    /// The peer's messaging name.
    pub hostname: String,
    /// `ack:<hostname>`: the latest id it acknowledged (what 1.0.21 peers write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ack: Option<String>,
    /// Messages to the peer still on record, oldest first.
    pub messages: Vec<MessageStatus>,
}

/// One message of a [`StatusReport`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MessageStatus {
    pub id: String,
    pub ts: u64,
    #[serde(rename = "type")]
    pub kind: MessageType,
    /// `queued`, `delivered`, `expired`, or `unknown` for an outbox entry this daemon did not
    /// deliver itself (written by a 1.0.21 client).
    pub state: String,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<u64>,
    /// Whether the peer acknowledged it (`ack:<hostname>:<id>`, or `ack:<hostname>` = id).
    pub acked: bool,
}
