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

pub(super) fn mount(m: &mut Mount<'_>) {
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
    let info = req.state().work.tasks.dispatch(request, &from, asker(&req))?;
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
    match req.state().work.tasks.dispatcher(&task_id) {
        Some(dispatcher) if !asker(req).may_act_on(&dispatcher) => Err(ApiError::plain(
            StatusCode::Forbidden,
            "this task was dispatched by another caller: only its dispatcher and this node's owner may see or decide it",
        )),
        _ => Ok(task_id),
    }
}

async fn list_tasks(req: Request<State>) -> tide::Result {
    json_response(&TaskList { tasks: req.state().work.tasks.list(&asker(&req)) })
}

async fn get_task(req: Request<State>) -> tide::Result {
    let task_id = own_task(&req)?;
    json_response(&req.state().work.tasks.get(&task_id).ok_or_else(not_found)?)
}

async fn get_task_events(req: Request<State>) -> tide::Result {
    let task_id = own_task(&req)?;
    let events = req.state().work.tasks.events(&task_id);
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
    match req.state().work.tasks.approve(&task_id, &request.request_id, verdict) {
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
    json_response(&PermissionList { approvals: req.state().work.tasks.permission_records(&asker(&req)) })
}

/// The changes of the permission requests the caller may see, as an event stream: first a
/// `hello` (this daemon's clock), then either the changes since `Last-Event-ID` or, when those
/// are gone (or the daemon restarted), a snapshot (`reset`, one `approval` per request), then
/// `synced` and the live changes. Each `approval` after the snapshot carries an SSE id.
async fn stream_approvals(req: Request<State>) -> tide::Result {
    let asker = asker(&req);
    let last = req.header("Last-Event-ID").map(|v| v.last().as_str().to_string());
    let stream = req.state().work.tasks.subscribe_approvals(&asker, last.as_deref());
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
    match req.state().work.tasks.cancel_or_forget(&task_id) {
        Some(false) => json_response(&json!({"success": true, "taskId": task_id})),
        Some(true) => json_response(&json!({"success": true, "taskId": task_id, "deleted": true})),
        None => Err(not_found().into()),
    }
}

async fn stream_task(req: Request<State>) -> tide::Result {
    let task_id = own_task(&req)?;
    let since = resume_point(&req);
    let subscription = req.state().work.tasks.subscribe(&task_id, since).ok_or_else(not_found)?;
    let heartbeat = Duration::from_millis(req.state().work.tasks.settings().heartbeat_interval);
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
