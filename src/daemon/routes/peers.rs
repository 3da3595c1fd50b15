//! `/api/v1/peers`: list, add, remove, and the handshake of §2.4.
//!
//! Thin handlers: parse and validate the body (a bad field is a 400 that names it, never the
//! 500 of 1.0.21), call the registry, save, answer. Persisted before answering, so a peer added
//! through the API survives a crash right after.

use serde::Deserialize;
use serde_json::json;
use tide::http::Method;
use tide::Request;

use super::system::{identity, json_response};
use super::Mount;
use crate::config::DEFAULT_PORT;
use crate::daemon::body;
use crate::daemon::error::{ApiError, ErrorCode};
use crate::daemon::guard::{self, Access, Caller};
use crate::daemon::state::State;
use crate::peers::health::Nudge;
use crate::peers::registry::{Applied, ManualAdd, ProbeOutcome};
use crate::peers::{self, check_address, check_capabilities, check_name, check_node_id, check_text, Announced, Via};

pub(super) fn mount(m: &mut Mount<'_>) {
    m.route(Method::Get, "/api/v1/peers", Access::DataPlane, None, get_peers)
        .route(Method::Post, "/api/v1/peers", Access::Owner, None, post_peer)
        .route(Method::Post, "/api/v1/peers/handshake", Access::DataPlane, None, post_handshake)
        .route(Method::Delete, "/api/v1/peers/:nodeId", Access::Owner, None, delete_peer)
        .route(Method::Post, "/api/v1/peers/:nodeId/confirm", Access::Local, None, confirm_peer);
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfirmAddress {
    address: String,
    port: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddPeer {
    address: String,
    port: Option<u16>,
    node_id: Option<String>,
    hostname: Option<String>,
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Handshake {
    node_id: String,
    hostname: String,
    platform: String,
    version: String,
    port: u16,
    capabilities: Vec<String>,
}

fn bad(e: peers::Invalid) -> ApiError {
    let message = format!("invalid field '{}': {}", e.field, e.problem);
    // Well-formed, but this node itself: not a request's form, a fact about this node.
    if e.problem == OWN_ID {
        return ApiError::new(ErrorCode::Forbidden, message);
    }
    ApiError::bad_request(message)
}

/// The registry's refusal of this node's own id.
const OWN_ID: &str = "is this node's own id";

async fn get_peers(req: Request<State>) -> tide::Result {
    json_response(&json!({"peers": req.state().fleet.peers.list()}))
}

async fn post_peer(mut req: Request<State>) -> tide::Result {
    let body: AddPeer = body::json(&mut req).await?;
    let port = body.port.unwrap_or(DEFAULT_PORT);
    if port == 0 {
        return Err(bad(peers::Invalid { field: "port", problem: "must be 1 to 65535".into() }).into());
    }
    let address = check_address("address", &body.address).map_err(bad)?;
    if let Some(id) = &body.node_id {
        check_node_id("nodeId", id).map_err(bad)?;
    }
    if let Some(hostname) = &body.hostname {
        check_text("hostname", hostname, 253).map_err(bad)?;
    }
    if let Some(name) = &body.name {
        check_name("name", name).map_err(bad)?;
    }
    let state = req.state();
    let add =
        ManualAdd { address, port, node_id: body.node_id, hostname: body.hostname, name: body.name, fingerprint: None };
    let peer = state.fleet.peers.add_manual(add).map_err(bad)?;
    save(state).await?;
    state.fleet.nudger.send(Nudge::ProbeNow(peer.node_id.clone()));
    json_response(&peer)
}

async fn delete_peer(req: Request<State>) -> tide::Result {
    let node_id = body::param(&req, "nodeId")?;
    let state = req.state();
    if state.fleet.peers.remove(&node_id).is_none() {
        return Err(ApiError::new(ErrorCode::PeerNotFound, format!("Peer {node_id} not found")).into());
    }
    save(state).await?;
    json_response(&json!({"success": true, "nodeId": node_id}))
}

/// The owner moves a peer to an address it vouches for (typically its sighting): the one way a
/// bound entry follows a peer that changed address without proving a pinned certificate.
async fn confirm_peer(mut req: Request<State>) -> tide::Result {
    let node_id = body::param(&req, "nodeId")?;
    let body: ConfirmAddress = body::json(&mut req).await?;
    let state = req.state().clone();
    let before = state
        .fleet
        .peers
        .get(&node_id)
        .ok_or_else(|| ApiError::new(ErrorCode::PeerNotFound, format!("Peer {node_id} not found")))?;
    let port = match body.port {
        Some(port) => port,
        None => before
            .seen_at
            .as_ref()
            .filter(|s| s.address.eq_ignore_ascii_case(&body.address))
            .map_or(before.port, |s| s.port),
    };
    if port == 0 {
        return Err(bad(peers::Invalid { field: "port", problem: "must be 1 to 65535".into() }).into());
    }
    let address = check_address("address", &body.address).map_err(bad)?;
    let peer = state
        .fleet
        .peers
        .confirm_address(&node_id, &address, port)
        .ok_or_else(|| ApiError::new(ErrorCode::PeerNotFound, format!("Peer {node_id} not found")))?;
    let paths = state.paths.clone();
    let (from, to) = ((before.address.clone(), before.port), (address.clone(), port));
    blocking::unblock(move || crate::config::move_manual_peer(&paths, (&from.0, from.1), (&to.0, to.1)))
        .await
        .map_err(|e| ApiError::internal(format!("cannot update discovery.manualPeers: {e:#}")))?;
    save(&state).await?;
    state.fleet.nudger.send(Nudge::ProbeNow(peer.node_id.clone()));
    log::info!("the owner confirmed peer {} at {}", peer.node_id, peer.endpoint());
    json_response(&peer)
}

async fn post_handshake(mut req: Request<State>) -> tide::Result {
    let body: Handshake = body::json(&mut req).await?;
    let source = req
        .peer_addr()
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.ip().to_canonical())
        .ok_or_else(|| ApiError::internal("the connection has no source address"))?;
    if body.port == 0 {
        return Err(bad(peers::Invalid { field: "port", problem: "must be 1 to 65535".into() }).into());
    }
    check_capabilities("capabilities", &body.capabilities).map_err(bad)?;
    let announced = Announced {
        node_id: body.node_id,
        hostname: body.hostname,
        address: source.to_string(),
        port: body.port,
        platform: body.platform,
        version: body.version,
        capabilities: body.capabilities,
    };
    announced.validate().map_err(bad)?;
    let state = req.state();
    if announced.node_id == state.node.id.as_str() {
        return Err(ApiError::new(ErrorCode::Forbidden, format!("invalid field 'nodeId': {OWN_ID}")).into());
    }
    let caller = guard::caller(&req).cloned().ok_or_else(|| ApiError::internal("the handshake has no caller"))?;
    check_own_entry(&caller, &announced, &state.fleet.peers.list())?;
    // The caller is at the source address by definition, but which node it is, only its word
    // says: an entry bound elsewhere keeps its address and records the claim as a sighting; a
    // pinned one is probed there with its pin, which moves it if the certificate is proven.
    let claim = ProbeOutcome::Answered {
        node_id: announced.node_id.clone(),
        version: announced.version.clone(),
        proven_pin: None,
    };
    match state.fleet.peers.apply_announcement(&announced, Via::Handshake, &claim) {
        Applied::Sighted(peer) if peer.fingerprint.is_some() => {
            state.fleet.nudger.send(Nudge::Candidate(announced.clone(), Via::Handshake))
        }
        _ => state.fleet.nudger.send(Nudge::ProbeNow(announced.node_id.clone())),
    }
    save(state).await?;
    json_response(&identity(state))
}

/// A peer's handshake may only speak for its own registry entry: the one named like the key
/// it presented (pairing and `loopsy peers add --key --name` name it so). The owner may
/// introduce any node.
fn check_own_entry(caller: &Caller, announced: &Announced, registry: &[peers::Peer]) -> Result<(), ApiError> {
    let node_id = announced.node_id.as_str();
    let name = match caller {
        Caller::Owner | Caller::Dashboard => return Ok(()),
        Caller::Paired(name) | Caller::Legacy(name) => name,
        Caller::OwnKeyRemote => {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "this node's own key names no peer: a handshake needs the key stored for the peer it describes",
            ))
        }
    };
    let refuse = |message: String| Err(ApiError::new(ErrorCode::Forbidden, message));
    let Some(own) = registry.iter().find(|peer| peer.name.as_deref() == Some(name.as_str())) else {
        return refuse(format!(
            "no registry entry is named '{name}' (the name of the key presented): the owner adds it"
        ));
    };
    if own.node_id == node_id {
        return Ok(());
    }
    // An entry added by address learns its node id from the first answer there: from its own
    // address and port, a handshake may give it an id no other entry has (it merges into it).
    let unknown = !registry.iter().any(|peer| peer.node_id == node_id);
    if own.is_provisional() && own.is_at(&announced.address, announced.port) && unknown {
        return Ok(());
    }
    refuse(format!(
        "the key presented belongs to peer '{name}' (node {}); it cannot speak for node {node_id}",
        own.node_id
    ))
}

async fn save(state: &State) -> Result<(), ApiError> {
    let registry = state.fleet.peers.clone();
    blocking::unblock(move || registry.save_now()).await.map_err(|e| {
        log::error!("cannot save the peer list: {e:#}");
        ApiError::internal("cannot save the peer list; see the daemon log")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(node_id: &str, name: Option<&str>, address: &str) -> peers::Peer {
        let mut peer = peers::Peer::manual(address, 19532);
        if !node_id.is_empty() {
            peer.node_id = node_id.into();
        }
        peer.name = name.map(String::from);
        peer
    }

    #[track_caller]
    fn check(caller: Caller, node_id: &str, from: &str, expect: Result<(), &str>) {
        let registry = [
            entry("aaaaaaaa-0000-4000-8000-000000000001", Some("bob"), "10.0.0.2"),
            entry("aaaaaaaa-0000-4000-8000-000000000002", None, "10.0.0.3"),
            entry("", Some("carol"), "10.0.0.4"),
        ];
        let announced = Announced {
            node_id: node_id.into(),
            hostname: "h".into(),
            address: from.into(),
            port: 19532,
            platform: "linux".into(),
            version: "1.0.21".into(),
            capabilities: Vec::new(),
        };
        match (check_own_entry(&caller, &announced, &registry), expect) {
            (Ok(()), Ok(())) => {}
            (Err(e), Err(part)) => {
                assert_eq!(e.code(), Some(ErrorCode::Forbidden));
                assert!(e.message().contains(part), "{} should mention {part}", e.message());
            }
            (found, expect) => panic!("{caller:?} {node_id} from {from}: {found:?}, expected {expect:?}"),
        }
    }

    #[test]
    fn a_handshake_speaks_only_for_the_entry_named_like_its_key() {
        let bob = "aaaaaaaa-0000-4000-8000-000000000001";
        let other = "aaaaaaaa-0000-4000-8000-000000000002";
        let new = "aaaaaaaa-0000-4000-8000-000000000009";
        check(Caller::Owner, other, "127.0.0.1", Ok(()));
        check(Caller::Dashboard, new, "127.0.0.1", Ok(()));
        check(Caller::Legacy("bob".into()), bob, "10.0.0.9", Ok(()));
        check(Caller::Paired("bob".into()), bob, "10.0.0.2", Ok(()));
        check(Caller::Legacy("bob".into()), other, "10.0.0.3", Err("cannot speak for node"));
        check(Caller::Legacy("bob".into()), new, "10.0.0.2", Err("cannot speak for node"));
        check(Caller::Legacy("dave".into()), new, "10.0.0.5", Err("no registry entry is named 'dave'"));
        check(Caller::OwnKeyRemote, new, "10.0.0.5", Err("own key names no peer"));
        // Carol's entry was added by address and has no node id yet: from there, a new id is hers.
        check(Caller::Legacy("carol".into()), new, "10.0.0.4", Ok(()));
        check(Caller::Legacy("carol".into()), new, "10.0.0.5", Err("cannot speak for node"));
        check(Caller::Legacy("carol".into()), other, "10.0.0.4", Err("cannot speak for node"));
    }
}
