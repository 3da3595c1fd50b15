//! `/api/v1/locks`: leases with fencing tokens over HTTP. Handlers parse, call `locks::Locks` and
//! render; the rules (expiry, tokens, durability) live in `src/locks/`.
//!
//! Locks are data-plane routes (`Access::DataPlane`): the owner, paired and legacy peers may take
//! turns on a resource of this node. A holder is a name the client chooses; whoever knows it may
//! renew or release the lock, as with the context store's keys.

use std::time::Duration;

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

pub(super) fn mount(m: &mut Mount<'_>) {
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
    let acquired = async { state.data.locks.acquire(&acquire).await.map_err(ApiError::from) };
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
    let grant = req.state().data.locks.renew(&name, &holder, ttl_ms).await?;
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
    let grant = req.state().data.locks.release(&name, &holder).await?;
    json_response(&Released { released: true, name, token: grant.token })
}

async fn get_lock(req: Request<State>) -> tide::Result {
    let name = name_param(&req)?;
    let grant = req.state().data.locks.get(&name).await?;
    json_response(&LockInfo::from(&grant))
}

async fn list_locks(req: Request<State>) -> tide::Result {
    let grants = req.state().data.locks.list().await?;
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
