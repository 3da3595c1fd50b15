//! `/health`, `/identity`, `/status` and `/openapi.json`: what a node says about itself.

use tide::http::Method;
use tide::{Request, Response};

use super::Mount;
use crate::daemon::guard::Access;
use crate::daemon::state::State;
use crate::identity::{platform, CAPABILITIES, IMPLEMENTATION, PROTOCOL_VERSION};
use crate::system::{ContextCounts, Health, Identity, JobCounts, PeerCounts, Status};

pub(super) fn mount(m: &mut Mount<'_>) {
    m.route(Method::Get, "/api/v1/health", Access::Public, None, get_health)
        .route(Method::Get, "/api/v1/identity", Access::DataPlane, None, get_identity)
        .route(Method::Get, "/api/v1/status", Access::DataPlane, None, get_status)
        .route(Method::Get, "/api/v1/openapi.json", Access::Public, None, get_openapi);
}

async fn get_health(req: Request<State>) -> tide::Result {
    let node = &req.state().node;
    json_response(&Health {
        status: "ok".into(),
        node_id: node.id.to_string(),
        uptime: node.uptime_ms(),
        version: PROTOCOL_VERSION.into(),
    })
}

pub(super) fn identity(state: &State) -> Identity {
    Identity {
        node_id: state.node.id.to_string(),
        hostname: state.node.hostname.clone(),
        platform: platform().into(),
        version: PROTOCOL_VERSION.into(),
        port: state.node.port,
        capabilities: CAPABILITIES.map(String::from).to_vec(),
        implementation: IMPLEMENTATION.into(),
    }
}

async fn get_identity(req: Request<State>) -> tide::Result {
    json_response(&identity(req.state()))
}

async fn get_status(req: Request<State>) -> tide::Result {
    json_response(&status(req.state()))
}

/// This node's `/status` answer.
pub(super) fn status(state: &State) -> Status {
    let (total, online) = state.fleet.peers.counts();
    let (active, jobs_total) = state.work.executor.counts();
    Status {
        node_id: state.node.id.to_string(),
        hostname: state.node.hostname.clone(),
        platform: platform().into(),
        version: PROTOCOL_VERSION.into(),
        uptime: state.node.uptime_ms(),
        peers: PeerCounts { total, online, offline: total - online },
        jobs: JobCounts { active, total: jobs_total },
        context: ContextCounts { entries: state.data.context.live_count(crate::clock::now_ms()) },
        implementation: IMPLEMENTATION.into(),
    }
}

async fn get_openapi(_req: Request<State>) -> tide::Result {
    Ok(Response::builder(200).body(crate::daemon::openapi::document()).content_type(tide::http::mime::JSON).build())
}

/// A 200 with `value` as its JSON body.
pub(super) fn json_response(value: &impl serde::Serialize) -> tide::Result {
    Ok(Response::builder(200).body(tide::Body::from_json(value)?).build())
}

/// A `status` answer with the JSON of what `make` returns, made and encoded where the request
/// runs when `small`, else on the blocking pool: a large answer (many entries, megabytes of
/// output) would hold up the daemon's one executor thread, and everyone else with it.
pub(super) async fn json_response_made<T: serde::Serialize>(
    status: tide::StatusCode,
    small: bool,
    make: impl FnOnce() -> T + Send + 'static,
) -> tide::Result {
    let encode = move || serde_json::to_vec(&make());
    let body = if small { encode() } else { smol::unblock(encode).await }?;
    Ok(Response::builder(status).body(body).content_type(tide::http::mime::JSON).build())
}
