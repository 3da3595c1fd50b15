//! `/api/v1/pair/*`: the pairing endpoints (see `daemon::pairing` for the service).
//!
//! Two kinds: control routes for the local CLI (own key, from this machine only), and the
//! routes the other daemon calls during a run (no key: it has none yet; the SPAKE2 channel
//! protects what they carry).

use serde::Deserialize;
use serde_json::json;
use tide::http::{Method, StatusCode};
use tide::Request;

use super::system::json_response;
use super::Mount;
use crate::daemon::body;
use crate::daemon::error::ApiError;
use crate::daemon::guard::Access;
use crate::daemon::state::State;
use crate::pairing::wire::{Exchange, FinishRequest, JoinRequest, Share};

pub(super) fn mount(m: &mut Mount<'_>) {
    m.route(Method::Post, "/api/v1/pair/start", Access::Local, None, start_pairing)
        .route(Method::Get, "/api/v1/pair/status", Access::Local, None, get_pairing_status)
        .route(Method::Post, "/api/v1/pair/join", Access::Local, None, join_pairing)
        .route(Method::Post, "/api/v1/pair/confirm", Access::Local, None, confirm_pairing)
        .route(Method::Delete, "/api/v1/pair", Access::Local, None, cancel_pairing)
        .route(Method::Post, "/api/v1/pair/spake2", Access::Public, None, post_spake2)
        .route(Method::Post, "/api/v1/pair/exchange", Access::Public, None, post_exchange)
        .route(Method::Post, "/api/v1/pair/finish", Access::Public, None, post_finish)
        .route(Method::Post, "/api/v1/pair/initiate", Access::Public, None, post_legacy_initiate);
}

async fn start_pairing(req: Request<State>) -> tide::Result {
    json_response(&req.state().fleet.pairing.start(req.state())?)
}

async fn get_pairing_status(req: Request<State>) -> tide::Result {
    json_response(&req.state().fleet.pairing.status())
}

async fn join_pairing(mut req: Request<State>) -> tide::Result {
    let request: JoinRequest = body::json(&mut req).await?;
    let state = req.state().clone();
    json_response(&state.fleet.pairing.join(&state, request).await?)
}

#[derive(Deserialize)]
struct Confirm {
    confirmed: bool,
}

async fn confirm_pairing(mut req: Request<State>) -> tide::Result {
    let confirm: Confirm = body::json(&mut req).await?;
    let state = req.state().clone();
    json_response(&state.fleet.pairing.confirm(&state, confirm.confirmed).await?)
}

async fn cancel_pairing(req: Request<State>) -> tide::Result {
    req.state().fleet.pairing.cancel();
    json_response(&json!({"success": true}))
}

/// The connection's source address: pairing counts guesses per address.
fn source(req: &Request<State>) -> Result<std::net::IpAddr, ApiError> {
    req.peer_addr()
        .and_then(|addr| addr.parse::<std::net::SocketAddr>().ok())
        .map(|addr| addr.ip().to_canonical())
        .ok_or_else(|| ApiError::internal("the connection has no source address"))
}

async fn post_spake2(mut req: Request<State>) -> tide::Result {
    let share: Share = body::json(&mut req).await?;
    let from = source(&req)?;
    json_response(&req.state().fleet.pairing.host_spake2(&share, from)?)
}

async fn post_exchange(mut req: Request<State>) -> tide::Result {
    let exchange: Exchange = body::json(&mut req).await?;
    let from = source(&req)?;
    json_response(&req.state().fleet.pairing.host_exchange(&exchange, from)?)
}

async fn post_finish(mut req: Request<State>) -> tide::Result {
    let finish: FinishRequest = body::json(&mut req).await?;
    let state = req.state().clone();
    json_response(&state.fleet.pairing.host_finish(&state, &finish)?)
}

/// 1.0.21's pairing sent both API keys in clear: refused, with the way forward.
async fn post_legacy_initiate(_req: Request<State>) -> tide::Result {
    Err(ApiError::plain(
        StatusCode::UpgradeRequired,
        "this node pairs with loopsy's secure pairing only (1.0.21 pairing sends keys in clear); \
         connect with `loopsy peers add <address> --key <key>` instead",
    )
    .into())
}
