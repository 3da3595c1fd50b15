//! `/api/v1/messages`: agent messaging (PROTOCOL.md §6) delivered by the daemon, with a durable
//! outbox, per-message acks and delivery status. The work is in `crate::messages`.

use serde::Deserialize;
use tide::http::Method;
use tide::Request;

use super::context::store_error;
use super::system::json_response;
use super::Mount;
use crate::daemon::body;
use crate::daemon::error::{ApiError, ErrorCode};
use crate::daemon::guard::Access;
use crate::daemon::rate_limit::Category;
use crate::daemon::state::State;
use crate::messages::api::{AckRequest, SendRequest};
use crate::messages::MessageError;

pub fn mount(m: &mut Mount<'_>) {
    let limit = Some(Category::Context);
    m.route(Method::Post, "/api/v1/messages", Access::Owner, limit, post_message)
        .route(Method::Get, "/api/v1/messages/inbox", Access::Owner, limit, get_inbox)
        .route(Method::Post, "/api/v1/messages/ack", Access::Owner, limit, post_ack)
        .route(Method::Get, "/api/v1/messages/status", Access::Owner, limit, get_status);
}

async fn post_message(mut req: Request<State>) -> tide::Result {
    let request: SendRequest = body::json(&mut req).await?;
    let sent = req.state().messages.send(request).await.map_err(message_error)?;
    json_response(&sent)
}

async fn get_inbox(req: Request<State>) -> tide::Result {
    json_response(&req.state().messages.inbox().await.map_err(message_error)?)
}

async fn post_ack(mut req: Request<State>) -> tide::Result {
    let request: AckRequest = body::json(&mut req).await?;
    let sent = req.state().messages.ack(request).await.map_err(message_error)?;
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
    json_response(&req.state().messages.status(&peer).await.map_err(message_error)?)
}

/// The one mapping from messaging errors to HTTP errors.
fn message_error(error: MessageError) -> ApiError {
    let message = error.to_string();
    match error {
        MessageError::Invalid(_) => ApiError::bad_request(message),
        // Well-formed, but this node holds no key for that peer: refused, not malformed.
        MessageError::NoRoute(_) => ApiError::new(ErrorCode::Forbidden, message),
        MessageError::UnknownPeer(_) => ApiError::new(ErrorCode::PeerNotFound, message),
        MessageError::NotFound(_) => ApiError::new(ErrorCode::MessageNotFound, message),
        MessageError::Full(_) => ApiError::new(ErrorCode::OutboxFull, message).with_retry_after(60),
        MessageError::Store(e) => store_error(e),
        MessageError::Storage(_) => ApiError::new(ErrorCode::ContextStorageFailed, message),
    }
}
