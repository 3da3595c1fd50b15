//! `/api/v1/locks`: leases with fencing tokens over HTTP. Handlers parse, call `locks::Locks` and
//! render; the rules (expiry, tokens, durability) live in `src/locks/`.
//!
//! Locks are data-plane routes (`Access::DataPlane`): the owner, paired and legacy peers may take
//! turns on a resource of this node. A holder is a name the client chooses; whoever knows it may
//! renew or release the lock, as with the context store's keys.

use std::time::Duration;

use serde_json::json;
use tide::http::Method;
use tide::Request;

use super::system::json_response;
use super::Mount;
use crate::daemon::body;
use crate::daemon::error::{ApiError, ErrorCode};
use crate::daemon::guard::Access;
use crate::daemon::rate_limit::Category;
use crate::daemon::state::State;
use crate::locks::api::{LockInfo, LockList, LockRequest, Released};
use crate::locks::{self, Acquire};

pub fn mount(m: &mut Mount<'_>) {
    let limit = Some(Category::Context);
    m.route(Method::Get, "/api/v1/locks", Access::DataPlane, limit, list_locks)
        .route(Method::Post, "/api/v1/locks/:name", Access::DataPlane, limit, post_lock)
        .route(Method::Get, "/api/v1/locks/:name", Access::DataPlane, limit, get_lock)
        .route(Method::Delete, "/api/v1/locks/:name", Access::DataPlane, limit, delete_lock)
        .route(Method::Post, "/api/v1/locks/:name/renew", Access::DataPlane, limit, post_renew);
}

async fn post_lock(mut req: Request<State>) -> tide::Result {
    let name = name_param(&req)?;
    let request: LockRequest = body::json(&mut req).await?;
    let holder = holder(&request)?;
    let ttl = request.ttl.as_ref().ok_or_else(|| ApiError::bad_request("missing field 'ttl' (seconds)"))?;
    let ttl_ms = locks::ttl_ms("ttl", ttl)?;
    let wait_ms = match &request.wait {
        Some(wait) => locks::wait_ms(wait)?,
        None => 0,
    };
    let acquire = Acquire { name, holder, ttl_ms, wait: Duration::from_millis(wait_ms) };
    let state = req.state();
    // A waiting request ends when the daemon stops, so it does not hold up the drain.
    let stopping = async {
        state.shutdown.wait().await;
        Err(ApiError::new(ErrorCode::ShuttingDown, "the daemon is stopping"))
    };
    let acquired = async { state.locks.acquire(&acquire).await.map_err(ApiError::from) };
    let grant = futures_lite::future::or(acquired, stopping).await?;
    json_response(&LockInfo::from(&grant))
}

async fn post_renew(mut req: Request<State>) -> tide::Result {
    let name = name_param(&req)?;
    let request: LockRequest = body::json(&mut req).await?;
    let holder = holder(&request)?;
    if request.wait.is_some() {
        return Err(ApiError::bad_request("field 'wait' belongs to an acquire, not a renewal").into());
    }
    let ttl_ms = match &request.ttl {
        Some(ttl) => Some(locks::ttl_ms("ttl", ttl)?),
        None => None,
    };
    let grant = req.state().locks.renew(&name, &holder, ttl_ms).await?;
    json_response(&LockInfo::from(&grant))
}

async fn delete_lock(mut req: Request<State>) -> tide::Result {
    let name = name_param(&req)?;
    // The holder in the body, or `?holder=` for clients that send no body with DELETE.
    let mut request: LockRequest = body::json_or_default(&mut req).await?;
    // A `?holder=` is checked even beside a body's holder: the document lists it, so it is
    // never silently ignored.
    if let Some(queried) = body::query(&req, "holder") {
        locks::check_holder(&queried)?;
        request.holder.get_or_insert(queried);
    }
    if request.ttl.is_some() || request.wait.is_some() {
        return Err(ApiError::bad_request("a release takes only 'holder'").into());
    }
    let holder = holder(&request)?;
    let grant = req.state().locks.release(&name, &holder).await?;
    json_response(&Released { released: true, name, token: grant.token })
}

async fn get_lock(req: Request<State>) -> tide::Result {
    let name = name_param(&req)?;
    let grant = req.state().locks.get(&name).await?;
    json_response(&LockInfo::from(&grant))
}

async fn list_locks(req: Request<State>) -> tide::Result {
    let grants = req.state().locks.list().await?;
    json_response(&LockList { locks: grants.iter().map(LockInfo::from).collect() })
}

/// The `:name` parameter, percent-decoded and checked before any body is read.
fn name_param(req: &Request<State>) -> Result<String, ApiError> {
    let name = body::param(req, "name")?;
    locks::check_name(&name)?;
    Ok(name)
}

fn holder(request: &LockRequest) -> Result<String, ApiError> {
    let holder = request.holder.clone().ok_or_else(|| ApiError::bad_request("missing field 'holder'"))?;
    locks::check_holder(&holder)?;
    Ok(holder)
}

pub fn openapi() -> serde_json::Value {
    let info = json!({"$ref": "#/components/schemas/LockInfo"});
    let ok = |schema: serde_json::Value, description: &str| json!({"200": {"description": description, "content": {"application/json": {"schema": schema}}}});
    let error = json!({"$ref": "#/components/responses/Error"});

    let body = |schema: &str| json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
    let with = |mut responses: serde_json::Value, codes: &[&str]| {
        for code in codes {
            responses[*code] = error.clone();
        }
        responses
    };
    let holder = json!({"type": "string", "minLength": 1, "maxLength": locks::MAX_HOLDER_CHARS, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$", "description": "who holds the lock: any printable name the client chooses (e.g. host:pid); no control characters"});
    let lock_name = json!({"type": "string", "minLength": 1, "maxLength": locks::MAX_NAME_BYTES, "pattern": "^[A-Za-z0-9._:/@-]+$"});
    let name_param = json!({"name": "name", "in": "path", "required": true, "schema": lock_name.clone(),
        "description": "the lock's name; '/' travels as %2F"});
    let ttl = json!({"type": "number", "minimum": locks::MIN_TTL_SECS, "maximum": locks::MAX_TTL_SECS, "description": "seconds the grant lasts unless renewed"});
    json!({
        "paths": {
            "/api/v1/locks": {"get": {
                "summary": "Live locks of this daemon, by name", "tags": ["locks"],
                "responses": ok(json!({"type": "object", "required": ["locks"], "properties": {"locks": {"type": "array", "items": info}}}), "the locks")}},
            "/api/v1/locks/{name}": {
                "post": {
                    "summary": "Acquire a lock (a lease with a fencing token); acknowledged once durable", "tags": ["locks"],
                    "description": "Grants the lock to `holder` for `ttl` seconds, waiting up to `wait` seconds while another holder has it. The fencing token increases with every grant of a name and is never given twice, across restarts and crashes. The holder that has the lock already gets the same grant (same token) with a new expiry. 409 code 6001 when another holder has it (after waiting; `error.details` is that grant); 400 code 9003 for a bad name, holder, ttl or wait; 503 code 6004 when 10000 locks are held, 6005 when the journal cannot be written.",
                    "parameters": [name_param.clone()], "requestBody": body("LockAcquire"),
                    "responses": with(ok(info.clone(), "the grant"), &["400", "409", "503"])},
                "get": {
                    "summary": "The live grant of a lock", "tags": ["locks"], "parameters": [name_param.clone()],
                    "description": "404 code 6002 when nobody holds it (released, expired, never taken).",
                    "responses": with(ok(info.clone(), "the grant"), &["404"])},
                "delete": {
                    "summary": "Release a lock", "tags": ["locks"],
                    "description": "`holder` in the body (or as the `holder` query parameter). 409 code 6001 when another holder has it; 404 code 6002 when nobody does.",
                    "parameters": [name_param.clone(), {"name": "holder", "in": "query", "required": false, "schema": holder.clone(), "description": "instead of a body"}],
                    "requestBody": {"required": false, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/LockHolder"}}}},
                    "responses": with(ok(json!({"$ref": "#/components/schemas/LockReleased"}), "released"), &["404", "409"])}
            },
            "/api/v1/locks/{name}/renew": {"post": {
                "summary": "Extend a held lock by its TTL (or a new one)", "tags": ["locks"],
                "description": "Only the holder renews; an expired lock cannot be renewed (404 code 6002: acquire it again, with a new token). 409 code 6001 when another holder has it.",
                "parameters": [name_param], "requestBody": body("LockRenew"),
                "responses": with(ok(info, "the extended grant"), &["404", "409"])}}
        },
        "schemas": {
            "LockInfo": {"type": "object", "required": ["name", "holder", "token", "expiresAt", "acquiredAt", "ttl"], "properties": {
                "name": {"type": "string"}, "holder": {"type": "string"},
                "token": {"type": "integer", "minimum": 1, "description": "fencing token: larger for every grant of this name; pass it as ifFence.token to context writes"},
                "expiresAt": {"type": "integer", "description": "ms since the epoch"},
                "acquiredAt": {"type": "integer", "description": "ms since the epoch of the grant"},
                "ttl": {"type": "number", "description": "seconds"}}},
            "LockAcquire": {"type": "object", "required": ["holder", "ttl"], "additionalProperties": false, "properties": {
                "holder": holder.clone(), "ttl": ttl.clone(),
                "wait": {"type": "number", "minimum": 0, "maximum": locks::MAX_WAIT_SECS, "description": "seconds to wait while another holder has the lock (default 0)"}}},
            "LockRenew": {"type": "object", "required": ["holder"], "additionalProperties": false, "properties": {"holder": holder.clone(), "ttl": ttl}},
            "LockHolder": {"type": "object", "required": ["holder"], "additionalProperties": false, "properties": {"holder": holder}},
            "LockReleased": {"type": "object", "required": ["released", "name", "token"], "properties": {
                "released": {"const": true}, "name": {"type": "string"}, "token": {"type": "integer"}}},
            "Fence": {"type": "object", "required": ["lock", "token"], "additionalProperties": false, "properties": {
                "lock": {"description": "a lock of the daemon that holds the context", "allOf": [lock_name]},
                "token": {"type": "integer", "minimum": 1, "maximum": u64::MAX, "description": "the token of the caller's grant"}}}
        }
    })
}
