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

use super::system::json_response;
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
pub const MAX_PUT_BODY: u64 = store::MAX_VALUE_BYTES as u64 + 64 * 1024;
/// Longest `X-Loopsy-Node-Id` accepted.
const MAX_NODE_ID: usize = 128;

pub fn mount(m: &mut Mount<'_>) {
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
    entries: Vec<Entry>,
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
    if req.state().messages.is_redelivery(&key, &value) {
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
        None => state.context.put(&key, put, now).await,
        Some(fence) => {
            check_fence_lock(&fence)?;
            // Under the store lock: no grant can change between the check and the write.
            let guard = || state.locks.check_fence(&fence.lock, fence.token);
            fenced(state, state.context.put_guarded(&key, put, now, guard).await).await?
        }
    }?;
    if let Some((name, value)) = delivered_by {
        req.state().messages.note_sender(&name, &value).await;
    }
    json_response(&entry)
}

/// The answer to a PUT that was dropped: the entry as it would have been, with revision 0.
fn unstored(key: String, value: String, ttl: Option<Ttl>, from_node_id: String, now: u64) -> Entry {
    Entry {
        key,
        value: value.into(),
        from_node_id,
        created_at: now,
        updated_at: now,
        expires_at: ttl.as_ref().map(|ttl| now.saturating_add(ttl.millis)),
        ttl: ttl.map(|ttl| ttl.seconds),
        revision: 0,
    }
}

async fn get_entry(req: Request<State>) -> tide::Result {
    let key = key_param(&req)?;
    let entry = req.state().context.get(&key, crate::clock::now_ms()).await?;
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
        None => state.context.delete(&key, if_revision, now).await,
        Some(fence) => {
            let guard = || state.locks.check_fence(&fence.lock, fence.token);
            fenced(state, state.context.delete_guarded(&key, if_revision, now, guard).await).await?
        }
    }?;
    json_response(&Deleted { success: true, key, revision })
}

async fn list_entries(req: Request<State>) -> tide::Result {
    let prefix = body::query(&req, "prefix").unwrap_or_default();
    let entries = req.state().context.list(&prefix, crate::clock::now_ms()).await?;
    json_response(&Listing { entries })
}

async fn watch_entries(req: Request<State>) -> tide::Result {
    let prefix = body::query(&req, "prefix").unwrap_or_default();
    let subscription = req.state().context.watch(&prefix);
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
        Change::Put(entry) => ("put", Some(entry)),
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
            state.locks.settle_all().await?;
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

pub fn openapi() -> serde_json::Value {
    let entry_ref = json!({"$ref": "#/components/schemas/ContextEntry"});
    let ok = |schema: serde_json::Value, description: &str| json!({"200": {"description": description, "content": {"application/json": {"schema": schema}}}});
    let error = json!({"$ref": "#/components/responses/Error"});
    let key_param = json!({"name": "key", "in": "path", "required": true, "schema": {"type": "string", "minLength": 1},
        "description": format!("1 to {} bytes once percent-decoded; may contain ':' and '/' (as %2F). A key named `watch` is read as `%77atch`.", store::MAX_KEY_BYTES)});
    let prefix_param = json!({"name": "prefix", "in": "query", "required": false, "schema": {"type": "string"},
        "description": "only keys that start with this (case-sensitive); absent or empty: all"});
    let mut put_responses = ok(entry_ref.clone(), "the stored entry, once it is durable");
    put_responses["409"] = error.clone();
    put_responses["503"] = error.clone();
    let mut get_responses = ok(entry_ref.clone(), "the entry");
    get_responses["404"] = error.clone();
    let mut delete_responses = ok(json!({"$ref": "#/components/schemas/ContextDeleted"}), "the key was deleted");
    delete_responses["404"] = error.clone();
    delete_responses["409"] = error.clone();
    json!({
        "paths": {
            "/api/v1/context": {"get": {
                "summary": "List live entries in insertion order", "tags": ["context"],
                "parameters": [prefix_param.clone()],
                "responses": ok(json!({"type": "object", "required": ["entries"], "properties": {"entries": {"type": "array", "items": entry_ref}}}), "the entries")}},
            "/api/v1/context/watch": {"get": {
                "summary": "Stream changes under a prefix as Server-Sent Events",
                "description": "Events `put`, `delete` and `expire` (SSE `id` = revision, `data` = ContextChange), in revision order, each sent once durable; a comment every 10 s as heartbeat; an `overflow` event and the end of the stream if the client reads too slowly; the stream ends when the daemon stops. Changes before the request are not replayed: list first, then watch. This path shadows GET of a key named `watch` (read it as `/api/v1/context/%77atch`).",
                "tags": ["context"], "parameters": [prefix_param],
                "responses": {"200": {"description": "the event stream", "content": crate::daemon::openapi::event_stream(json!({"anyOf": [
                    {"$ref": "#/components/schemas/ContextChange"},
                    {"type": "object", "required": ["type", "message"], "properties": {"type": {"const": "overflow"}, "message": {"type": "string"}}}]}))}}}},
            "/api/v1/context/{key}": {
                "put": {
                    "summary": "Create or replace an entry; acknowledged once durable", "tags": ["context"],
                    "description": "400 code 9003 for a missing/empty value, a non-string value, a bad ttl or key; 400 code 5002 for a value over 1 MiB (bytes of UTF-8); 413 code 9006 for a body over 1 MiB + 64 KiB; 400 code 5003 when `context.maxEntries` (default 100,000; 1.0.21: 1000) live entries exist and the key is new; 409 code 6003 when ifFence names a grant that is not live; a PUT of an `inbox:` key whose value is an envelope of a message this node acknowledged already is answered 200 with revision 0 and not stored (a re-delivery); 409 code 5004 when ifRevision does not match (error.details.currentRevision); 503 code 5005 when the journal cannot be written.",
                    "parameters": [key_param.clone(), {"name": "X-Loopsy-Node-Id", "in": "header", "required": false, "schema": {"type": "string", "maxLength": MAX_NODE_ID, "pattern": "^[ -~]*$"}, "description": "recorded as fromNodeId (default `local`); printable ASCII"}],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ContextPut"}}}},
                    "responses": put_responses},
                "get": {
                    "summary": "Read an entry", "tags": ["context"], "parameters": [key_param.clone()],
                    "description": "404 code 5001 `Key '<key>' not found` when absent or expired.",
                    "responses": get_responses},
                "delete": {
                    "summary": "Delete an entry", "tags": ["context"],
                    "parameters": [key_param, {"name": "ifRevision", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 0}, "description": "delete only if the key is at this revision (409 code 5004 otherwise)"},
                        {"name": "ifFence", "in": "query", "required": false, "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:/@-]{1,128}:[0-9]{1,19}$"}, "description": "<lock>:<token>: delete only while that grant is live (409 code 6003 otherwise)"}],
                    "responses": delete_responses}
            }
        },
        "schemas": {
            "ContextEntry": {"type": "object", "required": ["key", "value", "fromNodeId", "createdAt", "updatedAt", "revision"], "properties": {
                "key": {"type": "string"}, "value": {"type": "string"},
                "fromNodeId": {"type": "string", "description": "X-Loopsy-Node-Id of the writer, or `local`"},
                "createdAt": {"type": "integer", "description": "ms since the epoch; kept across overwrites"},
                "updatedAt": {"type": "integer", "description": "ms since the epoch of the last write"},
                "ttl": {"type": "number", "description": "seconds, as sent; absent when the entry does not expire"},
                "expiresAt": {"type": "integer", "description": "updatedAt + ttl * 1000; absent when the entry does not expire"},
                "revision": {"type": "integer", "description": "store revision of the write that produced this entry (not in 1.0.21)"}}},
            "ContextPut": {"type": "object", "required": ["value"], "properties": {
                "value": {"type": "string", "minLength": 1, "description": "at most 1048576 bytes of UTF-8"},
                "ttl": {"type": "number", "minimum": 0, "maximum": store::MAX_TTL_SECS, "description": "seconds until the entry expires; absent or 0: never"},
                "ifRevision": {"type": "integer", "minimum": 0, "description": "write only if the key is at this revision; 0: only if it does not exist (not in 1.0.21)"},
                "ifFence": {"$ref": "#/components/schemas/Fence", "description": "write only while this grant of a lock of this daemon is live: a holder whose lock passed to another cannot write stale data (409 code 6003, error.details.current); not in 1.0.21"}}},
            "ContextDeleted": {"type": "object", "required": ["success", "key"], "properties": {
                "success": {"const": true}, "key": {"type": "string"},
                "revision": {"type": "integer", "description": "store revision of the delete"}}},
            "ContextChange": {"type": "object", "required": ["type", "key", "revision"], "properties": {
                "type": {"enum": ["put", "delete", "expire"]}, "key": {"type": "string"},
                "revision": {"type": "integer", "description": "the change's revision; for expire, the expired entry's"},
                "entry": {"$ref": "#/components/schemas/ContextEntry"}}}
        }
    })
}
