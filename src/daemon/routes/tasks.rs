//! `/api/v1/ai-tasks`: dispatch, inspect, stream, approve and cancel AI tasks (PROTOCOL.md §2.8;
//! the work is in `crate::tasks`).
//!
//! Errors use 1.0.21's plain `{"error":"..."}` family of these routes, but a bad request is a
//! 400 naming the field (never the 500 with a validation dump of 1.0.21, E10). The event stream
//! numbers its events (SSE `id:`), resumes after `?since=` or `Last-Event-ID`, sends heartbeat
//! comments and ends after the task's `exit` event (E7). The hook plumbing routes of 1.0.21
//! (`permission-request`, `permission-response`) do not exist: agents ask over their own
//! protocol's channel.

use std::time::Duration;

use serde_json::json;
use tide::http::{Method, StatusCode};
use tide::{Request, Response};

use super::system::json_response;
use super::Mount;
use crate::daemon::body;
use crate::daemon::error::ApiError;
use crate::daemon::guard::{self, Access};
use crate::daemon::rate_limit::Category;
use crate::daemon::state::State;
use crate::tasks::api::{ApproveRequest, DispatchRequest, EventList, PermissionList, TaskList};
use crate::tasks::events::Stored;
use crate::tasks::{ApprovalStart, ApproveError, Dispatcher, Since, Subscription, Verdict};

/// The longest `decisionId` and `decidedVia` accepted.
const DECISION_ID_LIMIT: usize = 128;
const DECIDED_VIA_LIMIT: usize = 200;

pub fn mount(m: &mut Mount<'_>) {
    m.route(Method::Post, "/api/v1/ai-tasks", Access::DataPlane, Some(Category::Execute), post_task)
        .route(Method::Get, "/api/v1/ai-tasks", Access::DataPlane, None, list_tasks)
        .route(Method::Get, "/api/v1/ai-tasks/approvals", Access::DataPlane, None, list_approvals)
        .route(Method::Get, "/api/v1/ai-tasks/approvals/stream", Access::DataPlane, None, stream_approvals)
        .route(Method::Get, "/api/v1/ai-tasks/:taskId", Access::DataPlane, None, get_task)
        .route(Method::Get, "/api/v1/ai-tasks/:taskId/events", Access::DataPlane, None, get_task_events)
        .route(Method::Get, "/api/v1/ai-tasks/:taskId/stream", Access::DataPlane, None, stream_task)
        .route(Method::Post, "/api/v1/ai-tasks/:taskId/approve", Access::DataPlane, None, approve_task)
        .route(Method::Delete, "/api/v1/ai-tasks/:taskId", Access::DataPlane, None, delete_task);
}

/// A body problem in this family: same status, plain shape.
fn plain(error: ApiError) -> ApiError {
    ApiError::plain(error.status(), error.message())
}

fn not_found() -> ApiError {
    ApiError::plain(StatusCode::NotFound, "Task not found")
}

async fn post_task(mut req: Request<State>) -> tide::Result {
    let request: DispatchRequest = body::json(&mut req).await.map_err(plain)?;
    let from = req
        .header("X-Loopsy-Node-Id")
        .map(|v| v.last().as_str().trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "remote".into());
    let info = req.state().tasks.dispatch(request, &from, asker(&req))?;
    Ok(Response::builder(201).body(tide::Body::from_json(&info)?).build())
}

/// Who is asking, as the task registry knows callers: the owner, or a peer by its key.
fn asker(req: &Request<State>) -> Dispatcher {
    match guard::caller(req) {
        Some(caller) if !caller.is_owner() => Dispatcher::Peer(caller.label()),
        _ => Dispatcher::Owner,
    }
}

/// The task's id, once the asker proved it may see and decide it: the owner, or the key that
/// dispatched it. Another peer's task is a 403 (1.0.21 let any key approve anything).
fn own_task(req: &Request<State>) -> Result<String, ApiError> {
    let task_id = body::param(req, "taskId").map_err(plain)?;
    match req.state().tasks.dispatcher(&task_id) {
        Some(dispatcher) if !asker(req).may_act_on(&dispatcher) => Err(ApiError::plain(
            StatusCode::Forbidden,
            "this task was dispatched by another caller: only its dispatcher and this node's owner may see or decide it",
        )),
        _ => Ok(task_id),
    }
}

async fn list_tasks(req: Request<State>) -> tide::Result {
    json_response(&TaskList { tasks: req.state().tasks.list(&asker(&req)) })
}

async fn get_task(req: Request<State>) -> tide::Result {
    let task_id = own_task(&req)?;
    json_response(&req.state().tasks.get(&task_id).ok_or_else(not_found)?)
}

async fn get_task_events(req: Request<State>) -> tide::Result {
    let task_id = own_task(&req)?;
    let events = req.state().tasks.events(&task_id);
    json_response(&EventList { count: events.len(), events })
}

/// Who decides, as a permission record names it: `owner`, `dashboard`, or a peer's key label.
fn decider(req: &Request<State>) -> String {
    match guard::caller(req) {
        Some(caller) if caller.is_owner() && caller.label() == "own" => "owner".into(),
        Some(caller) => caller.label(),
        None => "owner".into(),
    }
}

/// Decides once: the first decision on a request wins, a later one is a 409 naming it (this
/// daemon holds the request, so two inboxes forwarding decisions cannot both win).
async fn approve_task(mut req: Request<State>) -> tide::Result {
    let task_id = own_task(&req)?;
    let request: ApproveRequest = body::json(&mut req).await.map_err(plain)?;
    if request.request_id.trim().is_empty() {
        return Err(ApiError::plain(StatusCode::BadRequest, "requestId: must not be empty").into());
    }
    let too_long = |field: &str, value: &Option<String>, limit: usize| match value {
        Some(v) if v.chars().count() > limit || v.contains('\0') => {
            Err(ApiError::plain(StatusCode::BadRequest, format!("{field}: at most {limit} characters, no NUL")))
        }
        _ => Ok(()),
    };
    too_long("decisionId", &request.decision_id, DECISION_ID_LIMIT)?;
    too_long("decidedVia", &request.decided_via, DECIDED_VIA_LIMIT)?;
    let verdict = Verdict {
        approved: request.approved,
        message: request.message,
        by: decider(&req),
        via: request.decided_via,
        decision_id: request.decision_id,
    };
    match req.state().tasks.approve(&task_id, &request.request_id, verdict) {
        Ok(settled) => {
            let mut body = json!({"success": true, "taskId": task_id, "approval": settled.record});
            if settled.repeated {
                body["repeated"] = true.into();
            }
            json_response(&body)
        }
        // Not a request of this task (or none at all): what the body names is not here.
        Err(ApproveError::NoPending) => {
            Err(ApiError::plain(StatusCode::NotFound, ApproveError::NoPending.to_string()).into())
        }
        Err(decided @ ApproveError::Decided(_)) => {
            let message = decided.to_string();
            let ApproveError::Decided(record) = decided else { unreachable!() };
            let body = json!({"error": message, "approval": record});
            Ok(Response::builder(StatusCode::Conflict).body(tide::Body::from_json(&body)?).build())
        }
    }
}

async fn list_approvals(req: Request<State>) -> tide::Result {
    json_response(&PermissionList { approvals: req.state().tasks.permission_records(&asker(&req)) })
}

/// The changes of the permission requests the caller may see, as an event stream: first a
/// `hello` (this daemon's clock), then either the changes since `Last-Event-ID` or, when those
/// are gone (or the daemon restarted), a snapshot (`reset`, one `approval` per request), then
/// `synced` and the live changes. Each `approval` after the snapshot carries an SSE id.
async fn stream_approvals(req: Request<State>) -> tide::Result {
    let asker = asker(&req);
    let last = req.header("Last-Event-ID").map(|v| v.last().as_str().to_string());
    let stream = req.state().tasks.subscribe_approvals(&asker, last.as_deref());
    let hello = json!({"type": "hello", "now": crate::clock::now_ms(), "nodeId": req.state().node.id.as_str()});
    let shutdown = req.state().shutdown.clone();
    let (sender, receiver) = smol::channel::bounded(16);
    let producer = smol::spawn(async move {
        let send = |bytes: Vec<u8>| sender.send(bytes);
        if send(crate::daemon::sse::data_event(&hello)).await.is_err() {
            return;
        }
        match stream.start {
            ApprovalStart::Snapshot(records) => {
                if send(crate::daemon::sse::data_event(&json!({"type": "reset"}))).await.is_err() {
                    return;
                }
                for record in records {
                    let event = json!({"type": "approval", "approval": record});
                    if send(crate::daemon::sse::data_event(&event)).await.is_err() {
                        return;
                    }
                }
            }
            ApprovalStart::Replay(changes) => {
                for change in changes {
                    let id = format!("{}.{}", stream.epoch, change.seq);
                    if send(id_frame(&id, &change.json)).await.is_err() {
                        return;
                    }
                }
            }
        }
        if send(id_frame(&stream.synced_id, r#"{"type":"synced"}"#)).await.is_err() {
            return;
        }
        // The feed dropped us (we fell behind) or the daemon stops: the client resumes.
        while let Some(Ok(change)) = shutdown.until(stream.live.recv()).await {
            if !asker.may_act_on(&change.tag) {
                continue;
            }
            let id = format!("{}.{}", stream.epoch, change.seq);
            if send(id_frame(&id, &change.json)).await.is_err() {
                return;
            }
        }
    });
    Ok(crate::daemon::sse::response(receiver, producer))
}

/// `id: <id>` and `data: <json>` (one line: the JSON is compact).
fn id_frame(id: &str, json: &str) -> Vec<u8> {
    format!("id: {id}\ndata: {json}\n\n").into_bytes()
}

async fn delete_task(req: Request<State>) -> tide::Result {
    let task_id = own_task(&req)?;
    match req.state().tasks.cancel_or_forget(&task_id) {
        Some(false) => json_response(&json!({"success": true, "taskId": task_id})),
        Some(true) => json_response(&json!({"success": true, "taskId": task_id, "deleted": true})),
        None => Err(not_found().into()),
    }
}

async fn stream_task(req: Request<State>) -> tide::Result {
    let task_id = own_task(&req)?;
    let since = resume_point(&req);
    let subscription = req.state().tasks.subscribe(&task_id, since).ok_or_else(not_found)?;
    let heartbeat = Duration::from_millis(req.state().tasks.settings().heartbeat_interval);
    let (sender, receiver) = smol::channel::bounded(16);
    let shutdown = req.state().shutdown.clone();
    // Per-connection work, owned by the body: it ends when the task ends, the client goes or the
    // daemon stops.
    let producer = smol::spawn(pump(subscription, sender, shutdown));
    let mut res = crate::daemon::sse::response_every(receiver, producer, heartbeat);
    // 1.0.21's headers of this stream (§2.8.3).
    res.insert_header("Connection", "keep-alive");
    res.insert_header("X-Accel-Buffering", "no");
    Ok(res)
}

/// `Last-Event-ID` (a reconnecting client) wins over `?since=`; absent or invalid means all.
fn resume_point(req: &Request<State>) -> Since {
    let header = req.header("Last-Event-ID").and_then(|v| v.last().as_str().trim().parse::<u64>().ok());
    if let Some(seq) = header {
        return Since::Seq(seq);
    }
    let query = req.url().query_pairs().find(|(k, _)| k == "since").and_then(|(_, v)| v.trim().parse::<u64>().ok());
    Since::parse(query.unwrap_or(0))
}

fn frame(stored: &Stored) -> Vec<u8> {
    format!("id: {}\ndata: {}\n\n", stored.event.seq, stored.json).into_bytes()
}

async fn pump(subscription: Subscription, sender: smol::channel::Sender<Vec<u8>>, shutdown: crate::shutdown::Shutdown) {
    let task_id = subscription.replay.first().map(|s| s.event.task_id.clone());
    for stored in &subscription.replay {
        if sender.send(frame(stored)).await.is_err() {
            return;
        }
    }
    let Some(live) = subscription.live else {
        // A finished task: 1.0.21's closing status event (no id: it is not part of the log).
        let event = json!({"type": "status", "taskId": task_id, "timestamp": crate::clock::now_ms(),
            "data": {"status": subscription.status}});
        let _ = sender.send(format!("data: {event}\n\n").into_bytes()).await;
        return;
    };
    // The task ended, the subscriber fell behind (it can resume) or the daemon stops: the end.
    while let Some(Ok(stored)) = shutdown.until(live.recv()).await {
        if sender.send(frame(&stored)).await.is_err() {
            return;
        }
        if stored.event.kind == crate::tasks::api::EventType::Exit {
            return;
        }
    }
}

pub fn openapi() -> serde_json::Value {
    let schema = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    let body = |name: &str, description: &str| json!({"description": description, "content": {"application/json": {"schema": schema(name)}}});
    let error = |description: &str| json!({"description": description, "content": {"application/json": {"schema": schema("PlainError")}}});
    let task_id = json!({"name": "taskId", "in": "path", "required": true, "schema": {"type": "string"}});
    let other =
        "the task was dispatched by another peer's key: only its dispatcher and this node's owner may see or decide it";
    json!({
        "paths": {
            "/api/v1/ai-tasks": {
                "post": {
                    "summary": "Dispatch a prompt to an AI agent CLI (Claude Code, Gemini CLI, Codex CLI) on this node", "tags": ["ai-tasks"],
                    "description": "The agent runs in its structured two-way mode (Claude stream-json with the stdio permission prompt, `codex app-server`, `gemini --acp`); what it would ask a human becomes a `permission_request` event, answered with /approve or denied after aiTasks.approvalTimeout. The user's agent settings files are never written.",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": schema("DispatchRequest")}}},
                    "responses": {
                        "201": body("TaskInfo", "the task, running"),
                        "400": error("a field is invalid (the message names it), or an option the agent does not support"),
                        "403": error("bypassPermissions is disabled on this node"),
                        "404": error("cwd is not an existing directory"),
                        "429": error("aiTasks.maxConcurrent agent processes are alive (cancelling ones count)"),
                        "503": error("the agent asked for (or, with auto, any agent) is not installed on this node, or could not be started")}},
                "get": {
                    "summary": "Every task (running and recently finished) the caller may see, newest first: all for the owner, a peer's own for a peer", "tags": ["ai-tasks"],
                    "responses": {"200": body("TaskList", "the tasks")}}},
            "/api/v1/ai-tasks/{taskId}": {
                "get": {
                    "summary": "One task", "tags": ["ai-tasks"], "parameters": [task_id],
                    "responses": {"200": body("TaskInfo", "the task"), "403": error(other), "404": error("no such task")}},
                "delete": {
                    "summary": "Cancel a running task (SIGTERM to its process group, SIGKILL after 5 s) or forget a finished one", "tags": ["ai-tasks"],
                    "parameters": [task_id],
                    "responses": {"200": body("DeleteResult", "cancelling, or forgotten (`deleted: true`)"), "403": error(other), "404": error("no such task")}}},
            "/api/v1/ai-tasks/{taskId}/events": {"get": {
                "summary": "The task's buffered events (at most 500; unknown task: none)", "tags": ["ai-tasks"], "parameters": [task_id],
                "responses": {"200": body("EventList", "the events"), "403": error(other)}}},
            "/api/v1/ai-tasks/{taskId}/stream": {"get": {
                "summary": "Server-Sent Events: `id: <seq>` and `data: <event JSON>` per event; heartbeat comments; the stream ends after the `exit` event", "tags": ["ai-tasks"],
                "parameters": [task_id,
                    {"name": "since", "in": "query", "schema": {"type": "integer"}, "description": "replay events with a sequence number above this (values of 10^12 and more are 1.0.21 millisecond timestamps)"},
                    {"name": "Last-Event-ID", "in": "header", "schema": {"type": "integer"}, "description": "the last sequence number seen; wins over since"}],
                "responses": {
                    "200": {"description": "the event stream; for a finished task the replay ends with a status event", "content": crate::daemon::openapi::event_stream(json!({"type": "object"}))},
                    "403": error(other),
                    "404": error("no such task")}}},
            "/api/v1/ai-tasks/{taskId}/approve": {"post": {
                "summary": "Answer a pending permission request of the task, exactly once", "tags": ["ai-tasks"], "parameters": [task_id],
                "description": "The first decision wins: a request already decided, expired or withdrawn answers 409 with the first decision (who, when). The same decision sent again with the same `decisionId` (a retry after a lost answer) answers 200 with `repeated: true`.",
                "requestBody": {"required": true, "content": {"application/json": {"schema": schema("ApproveRequest")}}},
                "responses": {
                    "200": body("ApproveResult", "answered"),
                    "400": error("an invalid body"),
                    "403": error(other),
                    "404": error("no such task, or no such pending request of the task"),
                    "409": {"description": "decided before (or expired, or withdrawn): `error` says by whom and when", "content": {"application/json": {"schema": schema("DecidedError")}}}}}},
            "/api/v1/ai-tasks/approvals": {"get": {
                "summary": "The permission requests of the tasks the caller may see: the open ones and the recently decided ones, oldest first", "tags": ["ai-tasks"],
                "responses": {"200": body("PermissionList", "the requests")}}},
            "/api/v1/ai-tasks/approvals/stream": {"get": {
                "summary": "Server-Sent Events of the permission requests the caller may see (what approval inboxes follow)", "tags": ["ai-tasks"],
                "description": "Data is JSON with `type`: `hello` (`now`: this daemon's clock, `nodeId`) first; then after a `Last-Event-ID` this daemon can still resume, the `approval` changes since it; otherwise `reset` and one `approval` per current request (a snapshot); then `synced` (with an id) and the live `approval` changes, each with an id `<epoch>.<seq>`. Heartbeat comments every 10 s. A reader that falls behind is disconnected and resumes.",
                "parameters": [{"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}, "description": "the last id seen"}],
                "responses": {"200": {"description": "the event stream", "content": crate::daemon::openapi::event_stream(json!({"type": "object", "required": ["type"], "properties": {"type": {"type": "string", "description": "hello, reset, approval or synced"}}}))}}}}
        },
        "schemas": {
            "PlainError": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
            "DispatchRequest": {"type": "object", "required": ["prompt"], "properties": {
                "prompt": {"type": "string", "pattern": "^[^\\u0000]*\\S[^\\u0000]*$", "description": "not blank, no NUL"},
                "cwd": {"type": "string", "pattern": "^/", "description": "absolute path of an existing directory; default the daemon user's home"},
                "agent": {"enum": ["claude", "gemini", "codex", "auto"], "default": "auto", "description": "auto: the first of claude, gemini, codex on the daemon's PATH"},
                "model": {"type": "string", "pattern": "\\S"},
                "permissionMode": {"enum": ["default", "acceptEdits", "bypassPermissions", "dontAsk", "plan"], "default": "default", "description": "bypassPermissions only when asked for explicitly (and allowed by aiTasks.allowBypassPermissions)"},
                "maxBudgetUsd": {"type": "number", "exclusiveMinimum": 0, "description": "claude only"},
                "allowedTools": {"type": "array", "items": {"type": "string", "pattern": "^[^\\u0000]*$"}, "description": "claude only"},
                "disallowedTools": {"type": "array", "items": {"type": "string", "pattern": "^[^\\u0000]*$"}, "description": "claude only"},
                "additionalArgs": {"type": "array", "items": {"type": "string", "pattern": "^[^\\u0000]*$"}, "description": "flags from the agent's allow list (README, Trust) and their values, appended to its command line; any other flag is refused with 400 naming it"},
                "resumeSessionId": {"type": "string", "pattern": "\\S", "description": "a sessionId of an earlier task to continue"},
                "pty": {"type": "boolean", "default": false, "description": "stdout and stderr on a pseudo-terminal (stdin stays a pipe)"}}},
            "Approval": {"type": "object", "required": ["toolName", "toolInput", "requestId", "timestamp", "description"], "properties": {
                "toolName": {"type": "string"}, "toolInput": {}, "requestId": {"type": "string"},
                "timestamp": {"type": "integer"}, "description": {"type": "string"}}},
            "TaskInfo": {"type": "object", "required": ["taskId", "prompt", "status", "startedAt", "updatedAt", "fromNodeId", "agent", "permissionMode", "cwd"], "properties": {
                "taskId": {"type": "string", "format": "uuid"}, "prompt": {"type": "string"},
                "status": {"enum": ["running", "waiting_approval", "completed", "failed", "cancelled"]},
                "startedAt": {"type": "integer"}, "updatedAt": {"type": "integer"}, "completedAt": {"type": "integer"},
                "fromNodeId": {"type": "string", "description": "X-Loopsy-Node-Id of the dispatcher, else \"remote\""},
                "pid": {"type": "integer", "description": "also the agent's process group"},
                "model": {"type": "string", "pattern": "\\S"}, "agent": {"enum": ["claude", "gemini", "codex"]},
                "permissionMode": {"type": "string"}, "cwd": {"type": "string"}, "pty": {"type": "boolean"},
                "pendingApproval": schema("Approval"),
                "pendingApprovals": {"type": "array", "items": schema("Approval")},
                "sessionId": {"type": "string"},
                "exitCode": {"type": ["integer", "null"]}, "signal": {"type": "integer"},
                "error": {"type": "string", "description": "why it failed or was cancelled; for a crash the exit status and the last stderr lines"}}},
            "TaskList": {"type": "object", "required": ["tasks"], "properties": {"tasks": {"type": "array", "items": schema("TaskInfo")}}},
            "TaskEvent": {"type": "object", "required": ["type", "taskId", "timestamp", "data", "seq"], "properties": {
                "type": {"enum": ["text", "thinking", "tool_use", "tool_result", "permission_request", "status", "error", "result", "exit", "system"]},
                "taskId": {"type": "string"}, "timestamp": {"type": "integer"}, "data": {},
                "seq": {"type": "integer", "description": "1, 2, 3… per task; the SSE id"}}},
            "EventList": {"type": "object", "required": ["events", "count"], "properties": {
                "events": {"type": "array", "items": schema("TaskEvent")}, "count": {"type": "integer"}}},
            "ApproveRequest": {"type": "object", "required": ["requestId", "approved"], "properties": {
                "requestId": {"type": "string", "pattern": "\\S"}, "approved": {"type": "boolean"},
                "message": {"type": "string", "description": "shown to the agent with a denial"},
                "decisionId": {"type": "string", "maxLength": 128, "pattern": "^[^\\u0000]*$", "description": "the sender's id for this decision: sending it again is not a second decision"},
                "decidedVia": {"type": "string", "maxLength": 200, "pattern": "^[^\\u0000]*$", "description": "what the decider is (recorded, shown with the decision)"}}},
            "ApproveResult": {"type": "object", "properties": {"success": {"const": true}, "taskId": {"type": "string"},
                "approval": schema("PermissionRecord"), "repeated": {"type": "boolean", "description": "the same decision was taken before"}}},
            "DecidedError": {"type": "object", "required": ["error", "approval"], "properties": {
                "error": {"type": "string"}, "approval": schema("PermissionRecord")}},
            "PermissionRecord": {"type": "object", "required": ["taskId", "requestId", "agent", "prompt", "cwd", "toolName", "toolInput", "description", "requestedAt", "state"], "properties": {
                "taskId": {"type": "string"}, "requestId": {"type": "string"}, "agent": {"enum": ["claude", "gemini", "codex"]},
                "prompt": {"type": "string", "description": "the task's prompt, first 200 characters"}, "cwd": {"type": "string"},
                "toolName": {"type": "string"}, "toolInput": {}, "toolInputTruncated": {"type": "boolean", "description": "toolInput was larger than 256 KiB and is its JSON text, cut"},
                "description": {"type": "string"},
                "requestedAt": {"type": "integer", "description": "Unix ms, this daemon's clock"},
                "state": {"enum": ["pending", "approved", "denied", "expired", "withdrawn"], "description": "expired: nobody answered within aiTasks.approvalTimeout and the agent was told no; withdrawn: the agent withdrew it or the task was cancelled or ended"},
                "decidedBy": {"type": "string", "description": "owner, dashboard, a peer's key (paired:<name>, peer:<name>), timeout, or what withdrew it (agent, cancel, exit)"},
                "decidedVia": {"type": "string"}, "decidedAt": {"type": "integer"}, "message": {"type": "string"}}},
            "PermissionList": {"type": "object", "required": ["approvals"], "properties": {"approvals": {"type": "array", "items": schema("PermissionRecord")}}},
            "DeleteResult": {"type": "object", "properties": {"success": {"const": true}, "taskId": {"type": "string"}, "deleted": {"type": "boolean"}}}
        }
    })
}
