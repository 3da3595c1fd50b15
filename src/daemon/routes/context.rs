//! `/api/v1/context`: the context store over HTTP (§2.7), with revisions and a watch stream.
//!
//! Handlers parse, call `store::Store` and render; the rules (limits, TTLs, compare-and-set,
//! durability) live in `src/store/`.
//!
//! A key literally named `watch` collides with `GET /api/v1/context/watch`, which is the watch
//! stream. The router matches the raw path, so such a key is read as `/api/v1/context/%77atch`
//! (any percent-encoding of it) or listed with `?prefix=watch`, for every method: the path
//! `/api/v1/context/watch` is the stream's alone (other methods get 405, see `routes/allow.rs`).
//! The CLI and the MCP tools encode it that way by themselves (`peer::context_path`).

use serde::{Deserialize, Serialize};
use serde_json::json;
use tide::http::Method;
use tide::Request;

use super::system::{json_response, json_response_made};
use super::Mount;
use crate::daemon::body;
use crate::daemon::error::ApiError;
use crate::daemon::guard::{Access, Caller};
use crate::daemon::rate_limit::Category;
use crate::daemon::state::State;
use crate::locks::api::Fence;
use crate::store::{self, Change, Entry, Put, StoreError, Subscription, Ttl};

/// Largest PUT body: a value of exactly 1 MiB plus its JSON envelope, with room for escapes
/// (quotes, newlines) in the value. A body beyond this is a 413; a value that fits in the body
/// but is over 1 MiB once decoded is a 400 with code 5002.
pub(super) const MAX_PUT_BODY: u64 = store::MAX_VALUE_BYTES as u64 + 64 * 1024;
/// Longest `X-Loopsy-Node-Id` accepted.
const MAX_NODE_ID: usize = 128;

pub(super) fn mount(m: &mut Mount<'_>) {
    let limit = Some(Category::Context);
    m.route(Method::Get, "/api/v1/context", Access::DataPlane, limit, list_entries)
        .route(Method::Get, "/api/v1/context/watch", Access::DataPlane, limit, watch_entries)
        .route(Method::Put, "/api/v1/context/:key", Access::DataPlane, limit, put_entry)
        .route(Method::Get, "/api/v1/context/:key", Access::DataPlane, limit, get_entry)
        .route(Method::Delete, "/api/v1/context/:key", Access::DataPlane, limit, delete_entry);
}

/// `PUT /api/v1/context/:key` body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PutBody {
    value: Option<String>,
    ttl: Option<serde_json::Number>,
    if_revision: Option<u64>,
    /// Write only while this lock grant is live (a fenced write, not in 1.0.21).
    if_fence: Option<Fence>,
}

/// `GET /api/v1/context` answer.
#[derive(Serialize)]
struct Listing {
    entries: Vec<std::sync::Arc<Entry>>,
}

/// `DELETE /api/v1/context/:key` answer: 1.0.21's plus the delete's revision.
#[derive(Serialize)]
struct Deleted {
    success: bool,
    key: String,
    revision: u64,
}

/// The `data` of a watch event.
#[derive(Serialize)]
struct ChangeEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    key: &'a str,
    revision: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    entry: Option<&'a Entry>,
}

async fn put_entry(mut req: Request<State>) -> tide::Result {
    let key = key_param(&req)?;
    let from_node_id = from_node_id(&req)?;
    let body: PutBody = body::json_limited(&mut req, MAX_PUT_BODY).await?;
    // 1.0.21 refused an empty string as "missing" too.
    let value = body.value.filter(|value| !value.is_empty()).ok_or_else(|| ApiError::bad_request("Missing value"))?;
    let ttl = Ttl::parse(body.ttl.as_ref()).map_err(ApiError::bad_request)?;
    let now = crate::clock::now_ms();
    if req.state().fleet.messages.is_redelivery(&key, &value) {
        // A retried delivery of a message acknowledged here already: answered as stored, but
        // dropped, so it does not come back into the inbox.
        return json_response(&unstored(key, value, ttl, from_node_id, now));
    }
    let delivered_by = match req.ext::<Caller>() {
        Some(Caller::Paired(name) | Caller::Legacy(name)) if key.starts_with("inbox:") => {
            Some((name.clone(), value.clone()))
        }
        _ => None,
    };
    let put = Put { value: value.into(), ttl, if_revision: body.if_revision, from_node_id };
    let state = req.state();
    let entry = match body.if_fence {
        None => state.data.context.put(&key, put, now).await,
        Some(fence) => {
            check_fence_lock(&fence)?;
            // Under the store lock: no grant can change between the check and the write.
            let guard = || state.data.locks.check_fence(&fence.lock, fence.token);
            fenced(state, state.data.context.put_guarded(&key, put, now, guard).await).await?
        }
    }?;
    if let Some((name, value)) = delivered_by {
        req.state().fleet.messages.note_sender(&name, &value).await;
    }
    json_response(&entry)
}

/// The answer to a PUT that was dropped: the entry as it would have been, with revision 0.
fn unstored(key: String, value: String, ttl: Option<Ttl>, from_node_id: String, now: u64) -> Entry {
    Entry {
        key: key.into(),
        value: value.into(),
        from_node_id: from_node_id.into(),
        created_at: now,
        updated_at: now,
        expires_at: ttl.as_ref().map(|ttl| now.saturating_add(ttl.millis)),
        ttl: ttl.map(|ttl| ttl.seconds),
        revision: 0,
    }
}

async fn get_entry(req: Request<State>) -> tide::Result {
    let key = key_param(&req)?;
    let entry = req.state().data.context.get(&key, crate::clock::now_ms()).await?;
    json_response(&entry)
}

async fn delete_entry(req: Request<State>) -> tide::Result {
    let key = key_param(&req)?;
    let if_revision = match body::query(&req, "ifRevision") {
        None => None,
        Some(text) => Some(text.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("query parameter 'ifRevision' must be a non-negative integer, got '{text}'"))
        })?),
    };
    let fence = match body::query(&req, "ifFence") {
        None => None,
        Some(text) => Some(parse_fence(&text)?),
    };
    let (state, now) = (req.state(), crate::clock::now_ms());
    let revision = match fence {
        None => state.data.context.delete(&key, if_revision, now).await,
        Some(fence) => {
            let guard = || state.data.locks.check_fence(&fence.lock, fence.token);
            fenced(state, state.data.context.delete_guarded(&key, if_revision, now, guard).await).await?
        }
    }?;
    json_response(&Deleted { success: true, key, revision })
}

async fn list_entries(req: Request<State>) -> tide::Result {
    let prefix = body::query(&req, "prefix").unwrap_or_default();
    let entries = req.state().data.context.list(&prefix, crate::clock::now_ms()).await?;
    // Up to `context.maxEntries` values of up to 1 MiB.
    json_response_made(tide::StatusCode::Ok, entries.len() <= LISTED_INLINE, move || Listing { entries }).await
}

/// Listings of at most this many entries are encoded where the request runs.
const LISTED_INLINE: usize = 64;

async fn watch_entries(req: Request<State>) -> tide::Result {
    let prefix = body::query(&req, "prefix").unwrap_or_default();
    let subscription = req.state().data.context.watch(&prefix);
    let (frames, receiver) = smol::channel::bounded(16);
    // Per-connection work, owned by the body: it ends when the client goes away or the daemon
    // stops (which ends the feed).
    let producer = smol::spawn(pump(subscription, prefix, frames));
    Ok(crate::daemon::sse::response(receiver, producer))
}

/// Turns changes into SSE frames until the feed ends or the client is gone.
async fn pump(subscription: Subscription, prefix: String, frames: smol::channel::Sender<Vec<u8>>) {
    let hello = format!(": watching {}\n\n", serde_json::to_string(&prefix).expect("strings serialise"));
    if frames.send(hello.into_bytes()).await.is_err() {
        return;
    }
    while let Some(change) = subscription.next().await {
        if frames.send(event_frame(&change)).await.is_err() {
            return;
        }
    }
    if subscription.overflowed() {
        let data = json!({"type": "overflow", "message": format!("more than {} changes were not read in time; watch again and list to catch up", store::WATCH_BUFFER)});
        let _ = frames.send(format!("event: overflow\ndata: {data}\n\n").into_bytes()).await;
    }
}

fn event_frame(change: &Change) -> Vec<u8> {
    let (kind, entry) = match change {
        Change::Put(entry) => ("put", Some(&**entry)),
        Change::Delete { .. } => ("delete", None),
        Change::Expire { .. } => ("expire", None),
    };
    let event = ChangeEvent { kind, key: change.key(), revision: change.revision(), entry };
    let data = serde_json::to_string(&event).expect("events serialise");
    format!("event: {kind}\nid: {}\ndata: {data}\n\n", change.revision()).into_bytes()
}

/// The `:key` parameter, percent-decoded and checked before any body is read.
fn key_param(req: &Request<State>) -> Result<String, ApiError> {
    let key = body::param(req, "key")?;
    store::check_key(&key)?;
    Ok(key)
}

/// Who wrote an entry: the `X-Loopsy-Node-Id` header (§1.10), else `local`.
fn from_node_id(req: &Request<State>) -> Result<String, ApiError> {
    let Some(value) = req.header("X-Loopsy-Node-Id").map(|values| values.last().as_str().trim().to_string()) else {
        return Ok("local".into());
    };
    if value.is_empty() {
        return Ok("local".into());
    }
    if value.len() > MAX_NODE_ID || value.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "header 'X-Loopsy-Node-Id' must be at most {MAX_NODE_ID} bytes of printable text"
        )));
    }
    Ok(value)
}

/// The store's answer to a fenced write, or the fence's refusal as a 409 (once the lock state
/// it names is durable).
async fn fenced<T>(
    state: &State,
    outcome: Result<Result<T, StoreError>, crate::locks::FenceError>,
) -> Result<Result<T, StoreError>, ApiError> {
    match outcome {
        Ok(result) => Ok(result),
        Err(refusal) => {
            state.data.locks.settle_all().await?;
            Err(ApiError::from(refusal))
        }
    }
}

fn check_fence_lock(fence: &Fence) -> Result<(), ApiError> {
    crate::locks::check_name(&fence.lock).map_err(|e| ApiError::bad_request(format!("field 'ifFence.lock': {e}")))
}

/// `?ifFence=<lock>:<token>` of a DELETE (a lock name may contain ':', the token does not).
fn parse_fence(text: &str) -> Result<Fence, ApiError> {
    let bad = || ApiError::bad_request(format!("query parameter 'ifFence' must be <lock>:<token>, got '{text}'"));
    let (lock, token) = text.rsplit_once(':').ok_or_else(bad)?;
    let fence = Fence { lock: lock.to_string(), token: token.parse().map_err(|_| bad())? };
    check_fence_lock(&fence)?;
    Ok(fence)
}

#[cfg(test)]
mod tests {
    use super::MAX_NODE_ID;

    #[test]
    fn the_documented_node_id_header_has_the_enforced_limit() {
        let doc = crate::daemon::openapi::build();
        let header = &doc["paths"]["/api/v1/context/{key}"]["put"]["parameters"][1];
        assert_eq!(header["name"], "X-Loopsy-Node-Id");
        assert_eq!(header["schema"]["maxLength"], MAX_NODE_ID);
    }
}
