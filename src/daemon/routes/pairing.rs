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

pub fn mount(m: &mut Mount<'_>) {
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
    json_response(&req.state().pairing.start(req.state())?)
}

async fn get_pairing_status(req: Request<State>) -> tide::Result {
    json_response(&req.state().pairing.status())
}

async fn join_pairing(mut req: Request<State>) -> tide::Result {
    let request: JoinRequest = body::json(&mut req).await?;
    let state = req.state().clone();
    json_response(&state.pairing.join(&state, request).await?)
}

#[derive(Deserialize)]
struct Confirm {
    confirmed: bool,
}

async fn confirm_pairing(mut req: Request<State>) -> tide::Result {
    let confirm: Confirm = body::json(&mut req).await?;
    let state = req.state().clone();
    json_response(&state.pairing.confirm(&state, confirm.confirmed).await?)
}

async fn cancel_pairing(req: Request<State>) -> tide::Result {
    req.state().pairing.cancel();
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
    json_response(&req.state().pairing.host_spake2(&share, from)?)
}

async fn post_exchange(mut req: Request<State>) -> tide::Result {
    let exchange: Exchange = body::json(&mut req).await?;
    let from = source(&req)?;
    json_response(&req.state().pairing.host_exchange(&exchange, from)?)
}

async fn post_finish(mut req: Request<State>) -> tide::Result {
    let finish: FinishRequest = body::json(&mut req).await?;
    let state = req.state().clone();
    json_response(&state.pairing.host_finish(&state, &finish)?)
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

pub fn openapi() -> serde_json::Value {
    let object = |props: serde_json::Value, required: &[&str]| json!({"type": "object", "required": required, "properties": props});
    // What `from_hex` takes: pairs of hex digits.
    let hex = json!({"type": "string", "pattern": "^([0-9a-fA-F]{2})*$"});
    let error = |description: &str| json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let op = |summary: &str, public: bool, request: Option<serde_json::Value>, response: serde_json::Value| {
        let mut op = json!({"summary": summary, "tags": ["pairing"],
            "description": "Errors: 8101 no session (404), 8102 expired (410), 8103 wrong code, out of guesses, or a sealed message that does not open (403), 8104 wait for Retry-After (429), 8105 a session is active or was cancelled, or a message that does not fit it (a share that is no curve point, a step out of order) (409), 8106 malformed: not hex, not 6 digits, not a usable address (400), 2003 the other machine cannot be reached (502).",
            "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": response}}},
                          "400": error("a field is malformed (not hex, not 6 digits)"),
                          "403": error("wrong code, this address used its three guesses, or a sealed message does not open"),
                          "404": error("no pairing session here"),
                          "409": error("a pairing session is already active or was cancelled, or the message does not fit it"),
                          "410": error("the pairing session expired (five minutes)"),
                          "429": error("guesses are spaced out: wait for Retry-After")}});
        if public {
            op["security"] = json!([]);
        }
        if let Some(schema) = request {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": schema}}});
        }
        op
    };
    let mut join = op(
        "Join the session hosted by another machine (loopback only); answers the SAS to compare",
        false,
        Some(object(
            json!({
            "address": crate::daemon::openapi::address_schema("the host's address or host name"),
            "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 19532},
            "code": {"type": "string", "pattern": "^[ -]*([0-9][ -]*){6}$", "description": "the 6 digits the host shows (spaces and dashes ignored)"}}),
            &["address", "code"],
        )),
        object(
            json!({"sas": {"type": "string"}, "peerHostname": {"type": "string"}, "peerNodeId": {"type": "string"}}),
            &["sas"],
        ),
    );
    join["responses"]["502"] = error("the host cannot be reached, or answered something else than a loopsy daemon");
    let mut initiate = op(
        "1.0.21's clear-text pairing: always refused with 426 and the way forward",
        true,
        None,
        json!({"type": "object"}),
    );
    initiate["responses"] = json!({"426": error("always: 1.0.21's pairing sent both keys in clear; pair with `loopsy pair`, or connect with `loopsy peers add <address> --key <key>`")});
    json!({
        "paths": {
            "/api/v1/pair/start": {"post": op("Start hosting a pairing session (own key, loopback only); answers the 6-digit code", false, None,
                object(json!({"code": {"type": "string"}, "expiresAt": {"type": "integer"}, "port": {"type": "integer"}, "addresses": {"type": "array", "items": {"type": "string"}}}), &["code", "expiresAt"]))},
            "/api/v1/pair/status": {"get": op("The local pairing session: role, state, SAS once keys are exchanged (loopback only)", false, None,
                object(json!({"role": {"enum": ["none", "host", "joiner"]}, "state": {"type": "string"}, "sas": {"type": "string"}, "attempts": {"type": "integer", "description": "guesses made so far, from anyone"}, "wrongAttempts": {"type": "integer"}, "peerHostname": {"type": "string"}}), &["role"]))},
            "/api/v1/pair/join": {"post": join},
            "/api/v1/pair/confirm": {"post": op("The local human's answer to the SAS (loopback only); on the joiner it waits for the host's answer", false,
                Some(object(json!({"confirmed": {"type": "boolean"}}), &["confirmed"])), json!({"type": "object"}))},
            "/api/v1/pair": {"delete": op("Cancel the local pairing session (loopback only)", false, None, json!({"type": "object"}))},
            "/api/v1/pair/spake2": {"post": op("Daemon to daemon: the joiner's SPAKE2 share (RFC 9382, P-256); each answered call is one guess: three per source address (then 403), and after three in all each further guess waits 1 s, doubling to 30 s (429 with Retry-After)", true,
                Some(object(json!({"share": hex}), &["share"])), object(json!({"share": hex, "confirm": hex}), &["share", "confirm"]))},
            "/api/v1/pair/exchange": {"post": op("Daemon to daemon: the joiner's key confirmation and sealed offer; answers the host's sealed offer", true,
                Some(object(json!({"confirm": hex, "offer": hex}), &["confirm", "offer"])), object(json!({"offer": hex}), &["offer"]))},
            "/api/v1/pair/finish": {"post": op("Daemon to daemon: the joiner's human's answer, authenticated by a tag; answers waiting, done (with the host's tag) or cancelled", true,
                Some(object(json!({"confirmed": {"type": "boolean"}, "tag": hex}), &["confirmed", "tag"])),
                object(json!({"state": {"enum": ["waiting", "done", "cancelled"]}, "tag": hex}), &["state"]))},
            "/api/v1/pair/initiate": {"post": initiate}
        },
        "schemas": {}
    })
}
