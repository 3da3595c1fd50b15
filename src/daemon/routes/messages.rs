//! `/api/v1/messages`: agent messaging (PROTOCOL.md §6) delivered by the daemon, with a durable
//! outbox, per-message acks and delivery status. The work is in `crate::messages`.

use serde::Deserialize;
use serde_json::json;
use tide::http::Method;
use tide::Request;

use super::system::json_response;
use super::Mount;
use crate::daemon::body;
use crate::daemon::error::ApiError;
use crate::daemon::guard::Access;
use crate::daemon::rate_limit::Category;
use crate::daemon::state::State;
use crate::messages::api::{AckRequest, SendRequest};

pub fn mount(m: &mut Mount<'_>) {
    let limit = Some(Category::Context);
    m.route(Method::Post, "/api/v1/messages", Access::Owner, limit, post_message)
        .route(Method::Get, "/api/v1/messages/inbox", Access::Owner, limit, get_inbox)
        .route(Method::Post, "/api/v1/messages/ack", Access::Owner, limit, post_ack)
        .route(Method::Get, "/api/v1/messages/status", Access::Owner, limit, get_status);
}

async fn post_message(mut req: Request<State>) -> tide::Result {
    let request: SendRequest = body::json(&mut req).await?;
    let sent = req.state().messages.send(request).await?;
    json_response(&sent)
}

async fn get_inbox(req: Request<State>) -> tide::Result {
    json_response(&req.state().messages.inbox().await?)
}

async fn post_ack(mut req: Request<State>) -> tide::Result {
    let request: AckRequest = body::json(&mut req).await?;
    let sent = req.state().messages.ack(request).await?;
    json_response(&sent)
}

#[derive(Deserialize)]
struct StatusQuery {
    peer: Option<String>,
}

async fn get_status(req: Request<State>) -> tide::Result {
    let query: StatusQuery = req.query().map_err(|e| ApiError::bad_request(e.to_string()))?;
    let peer = query.peer.filter(|p| !p.trim().is_empty()).ok_or_else(|| {
        ApiError::bad_request("query parameter 'peer' is required (name, hostname, node id or address)")
    })?;
    json_response(&req.state().messages.status(&peer).await?)
}

pub fn openapi() -> serde_json::Value {
    let error = json!({"$ref": "#/components/responses/Error"});
    let ok = |schema: &str, description: &str| json!({"description": description, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
    let message_type = json!({"type": "string", "enum": ["chat", "request", "response", "ack", "broadcast"]});
    json!({
        "paths": {
            "/api/v1/messages": {"post": {
                "summary": "Send a message to a peer (1.0.21's inbox/outbox convention), delivered now or retried",
                "description": "Writes `outbox:<id>` here (TTL 3600) and the envelope to `inbox:<peer hostname>:<id>` on the peer (TTL 3600). An unreachable peer gets it later: the daemon retries with back-off (messaging.retryInitial doubling to messaging.retryMax, plus jitter) until it is delivered or an hour has passed. 404 code 2001 for an unknown peer; 400 code 9003 for an ambiguous peer, a bad type or a body over 65536 characters; 403 code 9009 for a peer this node has no key for (or cannot reach safely); 503 code 7002 when the outbox is full.",
                "tags": ["messages"],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/MessageSend"}}}},
                "responses": {"200": ok("MessageSent", "delivered, or queued (with the reason in `error`)"), "400": error.clone(), "403": error.clone(), "404": error.clone(), "503": error.clone()}}},
            "/api/v1/messages/inbox": {"get": {
                "summary": "Messages for this node, oldest first",
                "description": "The `inbox:<own hostname>:` entries whose value is a valid envelope (others are skipped, as 1.0.21 does). Reading removes nothing.",
                "tags": ["messages"],
                "responses": {"200": ok("MessageInbox", "the messages")}}},
            "/api/v1/messages/ack": {"post": {
                "summary": "Acknowledge a message: ack to its sender (now or retried), remove it from the inbox",
                "description": "Writes `ack:<own hostname>:<id>` and `ack:<own hostname>` (the id, TTL 7200) on the sender, found by the envelope's `from`. The id is remembered for 2 h: a re-delivery of the message is then answered without being stored. 404 code 7001 when the key is not in the inbox; 404 code 2001 when the sender is not a known peer; 400 code 9003 for a bad key or an id that does not match the key; 403 code 9009 for a sender this node has no key for.",
                "tags": ["messages"],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/MessageAck"}}}},
                "responses": {"200": ok("MessageSent", "acknowledged; `state` says whether the ack reached the sender yet"), "400": error, "404": error, "503": error}}},
            "/api/v1/messages/status": {"get": {
                "summary": "Delivery and acknowledgement of each message sent to a peer",
                "tags": ["messages"],
                "parameters": [{"name": "peer", "in": "query", "required": true, "schema": {"type": "string", "minLength": 1}, "description": "name, hostname, node id (prefix) or address[:port]"}],
                "responses": {"200": ok("MessageStatusReport", "one entry per message still on record (2 h)"), "400": error, "404": error}}}
        },
        "schemas": {
            "MessageSend": {"type": "object", "required": ["to", "body"], "additionalProperties": false, "properties": {
                "to": {"type": "string", "minLength": 1, "description": "the peer: name, hostname, node id (prefix of at least 4) or address[:port]"},
                "type": {"type": "string", "enum": ["chat", "request", "response", "ack", "broadcast"], "default": "chat"},
                "body": {"type": "string", "maxLength": crate::messages::MAX_BODY_CHARS}}},
            "MessageSent": {"type": "object", "required": ["id", "key", "to", "endpoint", "type", "state"], "properties": {
                "id": {"type": "string", "description": "<ms>-<sender hostname>-<4 hex>"},
                "key": {"type": "string", "description": "the inbox key: on the peer for a send, the one removed here for an ack"},
                "to": {"type": "string", "description": "the peer's messaging name (hostname)"},
                "endpoint": {"type": "string", "description": "address:port of the peer"},
                "type": message_type.clone(),
                "state": {"type": "string", "enum": ["delivered", "queued", "expired"]},
                "error": {"type": "string", "description": "why it is still queued"}}},
            "MessageInbox": {"type": "object", "required": ["messages"], "properties": {"messages": {"type": "array", "items": {
                "type": "object", "required": ["key", "from", "to", "ts", "id", "type", "body"], "properties": {
                    "key": {"type": "string"}, "from": {"type": "string"}, "to": {"type": "string"},
                    "ts": {"type": "integer"}, "id": {"type": "string"}, "type": message_type.clone(), "body": {"type": "string"}}}}}},
            "MessageAck": {"type": "object", "additionalProperties": false, "properties": {
                "key": {"type": "string", "pattern": "^inbox:", "description": "inbox:<own hostname>:<id>"},
                "id": {"type": "string", "pattern": "^[0-9]+-[A-Za-z0-9_.-]+-[0-9a-f]{4}$", "description": "the message id (enough on its own; checked against key when both are given)"}},
                "description": "the key, the id, or both (at least one, not null)",
                "anyOf": [{"required": ["key"], "properties": {"key": {"type": "string"}}}, {"required": ["id"], "properties": {"id": {"type": "string"}}}]},
            "MessageStatusReport": {"type": "object", "required": ["peer", "nodeId", "hostname", "messages"], "properties": {
                "peer": {"type": "string"}, "nodeId": {"type": "string"}, "hostname": {"type": "string"},
                "lastAck": {"type": "string", "description": "ack:<hostname>: the latest id the peer acknowledged"},
                "messages": {"type": "array", "items": {"type": "object", "required": ["id", "ts", "type", "state", "attempts", "acked"], "properties": {
                    "id": {"type": "string"}, "ts": {"type": "integer"}, "type": message_type,
                    "state": {"type": "string", "enum": ["queued", "delivered", "expired", "unknown"]},
                    "attempts": {"type": "integer"}, "lastError": {"type": "string"}, "deliveredAt": {"type": "integer"},
                    "acked": {"type": "boolean"}}}}}}
        }
    })
}
