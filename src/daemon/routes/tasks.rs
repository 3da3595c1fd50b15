//! `/api/v1/ai-tasks`: dispatch, inspect, stream, approve and cancel AI tasks (PROTOCOL.md §2.8;
//! the work is in `crate::tasks`).
//!
//! Errors use 1.0.21's plain `{"error":"..."}` family of these routes, but a bad request is a
//! 400 naming the field (never the 500 with a validation dump of 1.0.21, E10). The event stream
//! numbers its events (SSE `id:`), resumes after `?since=` or `Last-Event-ID`, sends heartbeat
//! comments and ends after the task's `exit` event (E7). The hook plumbing routes of 1.0.21
//! (`permission-request`, `permission-response`) do not exist: agents ask over their own
//! protocol's channel.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::{FutureExt, Stream};
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
use crate::tasks::api::{ApproveRequest, DispatchRequest, EventList, TaskList};
use crate::tasks::events::Stored;
use crate::tasks::{Decision, DispatchError, Dispatcher, Since, Subscription};

pub fn mount(m: &mut Mount<'_>) {
    m.route(Method::Post, "/api/v1/ai-tasks", Access::DataPlane, Some(Category::Execute), post_task)
        .route(Method::Get, "/api/v1/ai-tasks", Access::DataPlane, None, list_tasks)
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
    let info = req.state().tasks.dispatch(request, &from, asker(&req)).map_err(|e| {
        let status = match &e {
            DispatchError::Invalid { .. } | DispatchError::NotInstalled(_) | DispatchError::NoAgent => {
                StatusCode::BadRequest
            }
            DispatchError::Forbidden(_) => StatusCode::Forbidden,
            DispatchError::TooMany(_) => StatusCode::TooManyRequests,
            DispatchError::Spawn { .. } => StatusCode::ServiceUnavailable,
        };
        ApiError::plain(status, e.to_string())
    })?;
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

async fn approve_task(mut req: Request<State>) -> tide::Result {
    let task_id = own_task(&req)?;
    let request: ApproveRequest = body::json(&mut req).await.map_err(plain)?;
    if request.request_id.trim().is_empty() {
        return Err(ApiError::plain(StatusCode::BadRequest, "requestId: must not be empty").into());
    }
    let decision = Decision { approved: request.approved, message: request.message };
    req.state()
        .tasks
        .approve(&task_id, &request.request_id, decision)
        .map_err(|e| ApiError::plain(StatusCode::BadRequest, e.to_string()))?;
    json_response(&json!({"success": true, "taskId": task_id}))
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
    // Per-connection work: it ends when the task ends, the client goes or the daemon stops.
    smol::spawn(pump(subscription, sender, heartbeat, shutdown)).detach();
    let mut res = Response::new(StatusCode::Ok);
    res.insert_header("Content-Type", "text/event-stream");
    res.insert_header("Cache-Control", "no-cache");
    res.insert_header("Connection", "keep-alive");
    res.insert_header("X-Accel-Buffering", "no");
    res.set_body(tide::Body::from_reader(ChannelReader::new(receiver), None));
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

async fn pump(
    subscription: Subscription,
    sender: smol::channel::Sender<Vec<u8>>,
    heartbeat: Duration,
    shutdown: crate::shutdown::Shutdown,
) {
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
    loop {
        let next = async { Some(live.recv().await.ok()) };
        let beat = async {
            async_io::Timer::after(heartbeat).await;
            None
        };
        let stop = async {
            shutdown.wait().await;
            Some(None)
        };
        match next.or(stop).or(beat).await {
            Some(Some(stored)) => {
                if sender.send(frame(&stored)).await.is_err() {
                    return;
                }
                if stored.event.kind == crate::tasks::api::EventType::Exit {
                    return;
                }
            }
            // The task ended, the subscriber fell behind (it can resume) or the daemon stops.
            Some(None) => return,
            None => {
                if sender.send(b": heartbeat\n\n".to_vec()).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The response body: bytes from the pump, as they come.
struct ChannelReader {
    receiver: Pin<Box<smol::channel::Receiver<Vec<u8>>>>,
    buf: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    fn new(receiver: smol::channel::Receiver<Vec<u8>>) -> ChannelReader {
        ChannelReader { receiver: Box::pin(receiver), buf: Vec::new(), pos: 0 }
    }
}

impl futures_lite::AsyncBufRead for ChannelReader {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<&[u8]>> {
        let this = self.get_mut();
        if this.pos >= this.buf.len() {
            match this.receiver.as_mut().poll_next(cx) {
                Poll::Ready(Some(bytes)) => {
                    this.buf = bytes;
                    this.pos = 0;
                }
                Poll::Ready(None) => return Poll::Ready(Ok(&[])),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(&this.buf[this.pos..]))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        self.get_mut().pos += amt;
    }
}

impl futures_lite::AsyncRead for ChannelReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut [u8]) -> Poll<std::io::Result<usize>> {
        use futures_lite::AsyncBufRead;
        let available = match self.as_mut().poll_fill_buf(cx) {
            Poll::Ready(Ok(bytes)) => bytes,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Poll::Ready(Ok(n))
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
                        "400": error("a field is invalid (the message names it), the cwd is not a directory, the agent is not installed, or an option the agent does not support"),
                        "403": error("bypassPermissions is disabled on this node"),
                        "429": error("aiTasks.maxConcurrent agent processes are alive (cancelling ones count)"),
                        "503": error("the agent could not be started")}},
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
                    "200": {"description": "the event stream; for a finished task the replay ends with a status event", "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                    "403": error(other),
                    "404": error("no such task")}}},
            "/api/v1/ai-tasks/{taskId}/approve": {"post": {
                "summary": "Answer a pending permission request of the task", "tags": ["ai-tasks"], "parameters": [task_id],
                "requestBody": {"required": true, "content": {"application/json": {"schema": schema("ApproveRequest")}}},
                "responses": {"200": body("ApproveResult", "answered"), "400": error("no such pending request for this task, or an invalid body"), "403": error(other)}}}
        },
        "schemas": {
            "PlainError": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
            "DispatchRequest": {"type": "object", "required": ["prompt"], "properties": {
                "prompt": {"type": "string", "minLength": 1},
                "cwd": {"type": "string", "description": "absolute path of an existing directory; default the daemon user's home"},
                "agent": {"enum": ["claude", "gemini", "codex", "auto"], "default": "auto", "description": "auto: the first of claude, gemini, codex on the daemon's PATH"},
                "model": {"type": "string"},
                "permissionMode": {"enum": ["default", "acceptEdits", "bypassPermissions", "dontAsk", "plan"], "default": "default", "description": "bypassPermissions only when asked for explicitly (and allowed by aiTasks.allowBypassPermissions)"},
                "maxBudgetUsd": {"type": "number", "exclusiveMinimum": 0, "description": "claude only"},
                "allowedTools": {"type": "array", "items": {"type": "string"}, "description": "claude only"},
                "disallowedTools": {"type": "array", "items": {"type": "string"}, "description": "claude only"},
                "additionalArgs": {"type": "array", "items": {"type": "string"}, "description": "flags from the agent's allow list (README, Trust) and their values, appended to its command line; any other flag is refused with 400 naming it"},
                "resumeSessionId": {"type": "string", "description": "a sessionId of an earlier task to continue"},
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
                "model": {"type": "string"}, "agent": {"enum": ["claude", "gemini", "codex"]},
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
                "requestId": {"type": "string", "minLength": 1}, "approved": {"type": "boolean"},
                "message": {"type": "string", "description": "shown to the agent with a denial"}}},
            "ApproveResult": {"type": "object", "properties": {"success": {"const": true}, "taskId": {"type": "string"}}},
            "DeleteResult": {"type": "object", "properties": {"success": {"const": true}, "taskId": {"type": "string"}, "deleted": {"type": "boolean"}}}
        }
    })
}
