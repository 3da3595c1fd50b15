//! The messaging tools of 1.0.21 (`loopsy_send_message`, `loopsy_check_inbox`,
//! `loopsy_ack_message`, `loopsy_check_ack`) with their result texts, on the local daemon's
//! `/api/v1/messages`: the daemon finds the peer, holds its key, delivers and retries.

use std::sync::Arc;

use crate::peer::Method;
use serde_json::json;

use super::{handler, object, peer_property, Args, Outcome, Tool};
use crate::mcp::daemon::DaemonLocator;
use crate::messages::api::{AckRequest, Inbox, SendRequest, Sent, StatusReport};
use crate::messages::envelope::MessageType;
use crate::messages::text;
use crate::percent;

pub(super) fn tools() -> Vec<Tool> {
    vec![
        Tool {
            name: "loopsy_send_message",
            description: "Send a protocol-compliant message to a peer's inbox (inbox:<peer hostname>:<id>). \
                          Delivered now, or queued and retried by the daemon until the peer is back (1 h); \
                          the result says which. The peer acknowledges with loopsy_ack_message; see loopsy_check_ack.",
            schema: || {
                object(
                    json!({
                        "peer": peer_property("to message"),
                        "type": {"type": "string", "enum": ["chat", "request", "response", "broadcast"], "default": "chat", "description": "Message type"},
                        "body": {"type": "string", "description": "Message text"}
                    }),
                    &["peer", "body"],
                )
            },
            run: handler!(send_message),
        },
        Tool {
            name: "loopsy_check_inbox",
            description: "Check this machine's inbox for new messages from other agents (oldest first). \
                          Reading does not remove them: acknowledge each with loopsy_ack_message.",
            schema: || object(json!({}), &[]),
            run: handler!(check_inbox),
        },
        Tool {
            name: "loopsy_ack_message",
            description: "Acknowledge a received message: tells its sender (now, or as soon as it can be reached) \
                          and removes it from this inbox.",
            schema: || {
                object(
                    json!({
                        "messageKey": {"type": "string", "description": "The inbox key shown by loopsy_check_inbox (inbox:<host>:<id>)"},
                        "messageId": {"type": "string", "description": "The message id (optional; checked against the key)"}
                    }),
                    &["messageKey"],
                )
            },
            run: handler!(ack_message),
        },
        Tool {
            name: "loopsy_check_ack",
            description:
                "Check whether a peer received and acknowledged your messages: the latest ack, then each \
                          message with its delivery state (delivered, queued, expired) and whether it was acknowledged.",
            schema: || object(json!({"peer": peer_property("you sent messages to")}), &["peer"]),
            run: handler!(check_ack),
        },
    ]
}

async fn send_message(daemon: Arc<DaemonLocator>, args: Args) -> Outcome {
    let kind: MessageType = serde_json::from_value(args.str("type").unwrap_or("chat").into())
        .map_err(|_| "'type' must be chat, request, response or broadcast".to_string())?;
    let request = SendRequest { to: args.req("peer").to_string(), kind, body: args.req("body").to_string() };
    let client = daemon.client().await?;
    let sent: Sent = client.call(Method::Post, "/api/v1/messages", Some(&request)).await.map_err(|e| e.to_string())?;
    Ok(text::sent(&sent))
}

async fn check_inbox(daemon: Arc<DaemonLocator>, _args: Args) -> Outcome {
    let inbox: Inbox = daemon.client().await?.get("/api/v1/messages/inbox").await.map_err(|e| e.to_string())?;
    Ok(text::inbox(&inbox))
}

async fn ack_message(daemon: Arc<DaemonLocator>, args: Args) -> Outcome {
    let request =
        AckRequest { key: Some(args.req("messageKey").to_string()), id: args.str("messageId").map(String::from) };
    let client = daemon.client().await?;
    let sent: Sent =
        client.call(Method::Post, "/api/v1/messages/ack", Some(&request)).await.map_err(|e| e.to_string())?;
    Ok(text::acked(&sent))
}

async fn check_ack(daemon: Arc<DaemonLocator>, args: Args) -> Outcome {
    let peer = args.req("peer");
    let path = format!("/api/v1/messages/status?peer={}", percent::encode(peer));
    let report: StatusReport = daemon.client().await?.get(&path).await.map_err(|e| e.to_string())?;
    Ok(text::status(&report, peer))
}
