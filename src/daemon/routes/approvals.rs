//! `/api/v1/approvals`: the approval inbox across this daemon, its sessions and its peers
//! (the work is in `crate::approvals`). Owner only: it lists what every agent asks and decides
//! on other machines with this node's keys. Agents may read it through MCP but never decide.

use futures_lite::FutureExt;
use serde::Deserialize;
use serde_json::json;
use tide::http::Method;
use tide::Request;

use super::system::json_response;
use super::Mount;
use crate::approvals::{Decision, Start};
use crate::daemon::body;
use crate::daemon::error::ApiError;
use crate::daemon::guard::{self, Access, Caller};
use crate::daemon::sse::data_event;
use crate::daemon::state::State;

pub fn mount(m: &mut Mount<'_>) {
    m.route(Method::Get, "/api/v1/approvals", Access::Owner, None, list)
        .route(Method::Get, "/api/v1/approvals/stream", Access::Owner, None, stream)
        .route(Method::Post, "/api/v1/approvals/decide", Access::Owner, None, decide);
}

async fn list(req: Request<State>) -> tide::Result {
    let (items, targets) = req.state().approvals.list();
    let now = crate::clock::now_ms();
    let pending = items.iter().filter(|i| i.is_pending()).count();
    let approvals: Vec<serde_json::Value> = items
        .into_iter()
        .map(|item| {
            let age = now.saturating_sub(item.record.requested_at);
            let mut value = serde_json::to_value(item).expect("items serialise");
            value["ageMs"] = age.into();
            value
        })
        .collect();
    json_response(&json!({"approvals": approvals, "targets": targets, "pending": pending, "timestamp": now}))
}

/// The inbox's changes: a snapshot (`reset`, each `target`, each `approval`, `synced`) unless
/// `Last-Event-ID` can be resumed, then every change with an id.
async fn stream(req: Request<State>) -> tide::Result {
    let last = req.header("Last-Event-ID").map(|v| v.last().as_str().to_string());
    let reader = req.state().approvals.subscribe(last.as_deref());
    let shutdown = req.state().shutdown.clone();
    let (sender, receiver) = smol::channel::bounded(16);
    let producer = smol::spawn(async move {
        let mut frames = Vec::new();
        match reader.start {
            Start::Snapshot { targets, items } => {
                frames.push(data_event(&json!({"type": "reset"})));
                frames.extend(targets.iter().map(|t| data_event(&json!({"type": "target", "target": t}))));
                frames.extend(items.iter().map(|i| data_event(&json!({"type": "approval", "approval": i}))));
            }
            Start::Replay(changes) => {
                frames.extend(changes.iter().map(|c| frame(&format!("{}.{}", reader.epoch, c.seq), &c.json)));
            }
        }
        frames.push(frame(&reader.synced_id, r#"{"type":"synced"}"#));
        for bytes in frames {
            if sender.send(bytes).await.is_err() {
                return;
            }
        }
        loop {
            let next = async { Some(reader.live.recv().await.ok()) };
            let stop = async {
                shutdown.wait().await;
                None
            };
            let Some(Some(change)) = next.or(stop).await else { return };
            let id = format!("{}.{}", reader.epoch, change.seq);
            if sender.send(frame(&id, &change.json)).await.is_err() {
                return;
            }
        }
    });
    Ok(crate::daemon::sse::response(receiver, producer))
}

fn frame(id: &str, json: &str) -> Vec<u8> {
    format!("id: {id}\ndata: {json}\n\n").into_bytes()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DecideBody {
    target: String,
    task_id: String,
    request_id: String,
    approved: bool,
    #[serde(default)]
    message: Option<String>,
}

async fn decide(mut req: Request<State>) -> tide::Result {
    let body: DecideBody = body::json(&mut req).await?;
    crate::dashboard::targets::TargetId::parse(&body.target)
        .map_err(|e| ApiError::bad_request(format!("target: {e}")))?;
    for (field, value) in [("taskId", &body.task_id), ("requestId", &body.request_id)] {
        if value.trim().is_empty() || value.chars().count() > 128 {
            return Err(ApiError::bad_request(format!("{field}: 1 to 128 characters")).into());
        }
    }
    if body.message.as_ref().is_some_and(|m| m.chars().count() > 4096) {
        return Err(ApiError::bad_request("message: at most 4096 characters").into());
    }
    let channel = matches!(guard::caller(&req), Some(Caller::Dashboard)).then(|| "dashboard".to_string());
    let decision = Decision {
        target: body.target,
        task_id: body.task_id,
        request_id: body.request_id,
        approved: body.approved,
        message: body.message,
        channel,
    };
    let item = req.state().approvals.decide(decision).await?;
    json_response(&json!({"approval": item}))
}

pub fn openapi() -> serde_json::Value {
    let error = json!({"$ref": "#/components/responses/Error"});
    let ok = |schema: &str, description: &str| json!({"description": description, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
    json!({
        "paths": {
            "/api/v1/approvals": {"get": {
                "summary": "The approval inbox: the permission requests of AI tasks on this daemon, its local sessions and the peers it holds keys for",
                "description": "Pending requests first (oldest first), then the recently decided, expired and withdrawn ones (newest first), and every target with its state: a target that is down is listed as such and the others are unaffected. Times are on this daemon's clock; `ageMs` is how long ago the request was made. Owner only.",
                "tags": ["approvals"],
                "responses": {"200": ok("ApprovalInbox", "the inbox")}}},
            "/api/v1/approvals/stream": {"get": {
                "summary": "Server-Sent Events of the inbox's changes",
                "description": "Data is JSON with `type`: without a resumable `Last-Event-ID` a snapshot first (`reset`, one `target` per target, one `approval` per request), then `synced` (with an id), then each change with an id: `approval` (a request added or changed), `removed` (`id` of a request no longer kept), `target` (a target's state or count changed), `targetRemoved` (`id`). Heartbeat comments every 10 s. Owner only.",
                "tags": ["approvals"],
                "parameters": [{"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}, "description": "the last id seen; replays the changes since when still kept"}],
                "responses": {"200": {"description": "the event stream", "content": crate::daemon::openapi::event_stream(json!({"type": "object", "required": ["type"], "properties": {"type": {"type": "string"}}}))}}}},
            "/api/v1/approvals/decide": {"post": {
                "summary": "Approve or deny one request; the decision is forwarded to the daemon that holds it, which takes it exactly once",
                "description": "409 code 6101 when the request was decided before (by anyone: another inbox, the task's own API, the dashboard), expired or withdrawn; the message says by whom and when, `details.approval` is the request as decided. An expired request is never approved. 404 code 6102 when the target has no such request; 404 code 2001 for an unknown target; 502 code 2003 when the target cannot be reached (deciding again is safe). Owner only.",
                "tags": ["approvals"],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ApprovalDecision"}}}},
                "responses": {"200": ok("ApprovalDecided", "decided"), "400": error, "404": error, "409": error, "502": error}}}
        },
        "schemas": {
            "ApprovalTarget": {"type": "object", "required": ["id", "kind", "name", "state", "since", "pending"], "properties": {
                "id": {"type": "string", "description": "local, session:<name> or peer:<nodeId>"},
                "kind": {"enum": ["local", "session", "peer"]},
                "name": {"type": "string"},
                "state": {"enum": ["connecting", "live", "down", "offline", "stopped", "unsupported"], "description": "live: its requests are current; down: its feed cannot be reached (retried with back-off, `error` says why); offline: the health checker does not see the peer; stopped: a session not running; unsupported: it has no approvals feed"},
                "error": {"type": "string"}, "since": {"type": "integer"}, "pending": {"type": "integer"}}},
            "ApprovalItem": {"allOf": [{"$ref": "#/components/schemas/PermissionRecord"}, {"type": "object", "required": ["id", "target", "targetKind", "targetName"], "properties": {
                "id": {"type": "string", "description": "<target>/<taskId>/<requestId>"},
                "target": {"type": "string"}, "targetKind": {"enum": ["local", "session", "peer"]}, "targetName": {"type": "string"},
                "ageMs": {"type": "integer", "description": "in lists only"}}}]},
            "ApprovalInbox": {"type": "object", "required": ["approvals", "targets", "pending", "timestamp"], "properties": {
                "approvals": {"type": "array", "items": {"$ref": "#/components/schemas/ApprovalItem"}},
                "targets": {"type": "array", "items": {"$ref": "#/components/schemas/ApprovalTarget"}},
                "pending": {"type": "integer"}, "timestamp": {"type": "integer"}}},
            "ApprovalDecision": {"type": "object", "required": ["target", "taskId", "requestId", "approved"], "additionalProperties": false, "properties": {
                "target": {"type": "string", "pattern": crate::daemon::openapi::TARGET_PATTERN, "description": "`local`, `session:<name>` or `peer:<nodeId>`"},
                "taskId": {"type": "string", "maxLength": 128, "pattern": "\\S"}, "requestId": {"type": "string", "maxLength": 128, "pattern": "\\S"},
                "approved": {"type": "boolean"}, "message": {"type": "string", "maxLength": 4096, "description": "shown to the agent"}}},
            "ApprovalDecided": {"type": "object", "required": ["approval"], "properties": {"approval": {"$ref": "#/components/schemas/ApprovalItem"}}}
        }
    })
}
