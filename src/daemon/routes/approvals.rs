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

pub(super) fn mount(m: &mut Mount<'_>) {
    m.route(Method::Get, "/api/v1/approvals", Access::Owner, None, list)
        .route(Method::Get, "/api/v1/approvals/stream", Access::Owner, None, stream)
        .route(Method::Post, "/api/v1/approvals/decide", Access::Owner, None, decide);
}

async fn list(req: Request<State>) -> tide::Result {
    let (items, targets) = req.state().fleet.approvals.list();
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
    let reader = req.state().fleet.approvals.subscribe(last.as_deref());
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
    let item = req.state().fleet.approvals.decide(decision).await?;
    json_response(&json!({"approval": item}))
}
