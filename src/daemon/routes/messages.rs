//! `/api/v1/messages`: agent messaging (PROTOCOL.md §6) delivered by the daemon, with a durable
//! outbox, per-message acks and delivery status. The work is in `crate::messages`.

use serde::Deserialize;
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

pub(super) fn mount(m: &mut Mount<'_>) {
    let limit = Some(Category::Context);
    m.route(Method::Post, "/api/v1/messages", Access::Owner, limit, post_message)
        .route(Method::Get, "/api/v1/messages/inbox", Access::Owner, limit, get_inbox)
        .route(Method::Post, "/api/v1/messages/ack", Access::Owner, limit, post_ack)
        .route(Method::Get, "/api/v1/messages/status", Access::Owner, limit, get_status);
}

async fn post_message(mut req: Request<State>) -> tide::Result {
    let request: SendRequest = body::json(&mut req).await?;
    let sent = req.state().fleet.messages.send(request).await?;
    json_response(&sent)
}

async fn get_inbox(req: Request<State>) -> tide::Result {
    json_response(&req.state().fleet.messages.inbox().await?)
}

async fn post_ack(mut req: Request<State>) -> tide::Result {
    let request: AckRequest = body::json(&mut req).await?;
    let sent = req.state().fleet.messages.ack(request).await?;
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
    json_response(&req.state().fleet.messages.status(&peer).await?)
}
