//! `/health`, `/identity`, `/status` and `/openapi.json`: what a node says about itself.

use serde_json::json;
use tide::http::Method;
use tide::{Request, Response};

use super::Mount;
use crate::daemon::guard::Access;
use crate::daemon::state::State;
use crate::identity::{platform, CAPABILITIES, IMPLEMENTATION, PROTOCOL_VERSION};
use crate::system::{ContextCounts, Health, Identity, JobCounts, PeerCounts, Status};

pub fn mount(m: &mut Mount<'_>) {
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

pub fn identity(state: &State) -> Identity {
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
pub fn status(state: &State) -> Status {
    let (total, online) = state.peers.counts();
    let (active, jobs_total) = state.executor.counts();
    Status {
        node_id: state.node.id.to_string(),
        hostname: state.node.hostname.clone(),
        platform: platform().into(),
        version: PROTOCOL_VERSION.into(),
        uptime: state.node.uptime_ms(),
        peers: PeerCounts { total, online, offline: total - online },
        jobs: JobCounts { active, total: jobs_total },
        context: ContextCounts { entries: state.context.live_count(crate::clock::now_ms()) },
        implementation: IMPLEMENTATION.into(),
    }
}

async fn get_openapi(_req: Request<State>) -> tide::Result {
    Ok(Response::builder(200).body(crate::daemon::openapi::document()).content_type(tide::http::mime::JSON).build())
}

/// A 200 with `value` as its JSON body.
pub fn json_response(value: &impl serde::Serialize) -> tide::Result {
    Ok(Response::builder(200).body(tide::Body::from_json(value)?).build())
}

pub fn openapi() -> serde_json::Value {
    let ok = |schema: &str, description: &str| json!({"200": {"description": description, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}}});
    json!({
        "paths": {
            "/api/v1/health": {"get": {
                "summary": "Liveness probe; needs no key", "security": [], "tags": ["system"],
                "responses": ok("Health", "the daemon is up")}},
            "/api/v1/identity": {"get": {
                "summary": "Who this node is", "tags": ["system"],
                "responses": ok("Identity", "this node's identity")}},
            "/api/v1/status": {"get": {
                "summary": "Identity plus counts of peers, jobs and context entries", "tags": ["system"],
                "responses": ok("Status", "this node's status")}},
            "/api/v1/openapi.json": {"get": {
                "summary": "This document", "security": [], "tags": ["system"],
                "responses": {"200": {"description": "the OpenAPI document", "content": {"application/json": {"schema": {"type": "object"}}}}}}}
        },
        "schemas": {
            "Health": {"type": "object", "required": ["status", "nodeId", "uptime", "version"], "properties": {
                "status": {"const": "ok"}, "nodeId": {"type": "string", "format": "uuid"},
                "uptime": {"type": "integer", "description": "milliseconds since start"},
                "version": {"type": "string", "description": "protocol version, 1.0.21"}}},
            "Identity": {"type": "object", "required": ["nodeId", "hostname", "platform", "version", "port", "capabilities"], "properties": {
                "nodeId": {"type": "string", "format": "uuid", "description": "stable across restarts"},
                "hostname": {"type": "string"}, "platform": {"type": "string", "examples": ["linux", "darwin", "win32"]},
                "version": {"type": "string"}, "port": {"type": "integer"},
                "capabilities": {"type": "array", "items": {"type": "string"}},
                "implementation": {"type": "string", "examples": ["loopsy-rs/1.1.0"]}}},
            "Status": {"type": "object", "required": ["nodeId", "hostname", "platform", "version", "uptime", "peers", "jobs", "context"], "properties": {
                "nodeId": {"type": "string"}, "hostname": {"type": "string"}, "platform": {"type": "string"},
                "version": {"type": "string"}, "uptime": {"type": "integer"}, "implementation": {"type": "string"},
                "peers": {"type": "object", "properties": {"total": {"type": "integer"}, "online": {"type": "integer"}, "offline": {"type": "integer"}}},
                "jobs": {"type": "object", "properties": {"active": {"type": "integer"}, "total": {"type": "integer"}}},
                "context": {"type": "object", "properties": {"entries": {"type": "integer"}}}}}
        }
    })
}
