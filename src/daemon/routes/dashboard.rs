//! The web dashboard: its embedded files, the login that turns a one-time token into a session
//! cookie, and the few routes it adds to the public API (overview, targets, peers, proxy).
//!
//! The files are served without authentication (they hold no data); every call they make is an
//! API request checked by the guard like any other (a session cookie instead of a key, see
//! `daemon::guard`). The proxy forwards a fixed set of API paths to a target the browser names
//! (a local session or a registry peer), with the credentials this node holds for it; the
//! browser never chooses an address. No route here sends CORS headers.

use serde::Serialize;
use serde_json::json;
use tide::http::Method;
use tide::{Request, Response, StatusCode};

use super::system::json_response;
use super::Mount;
use crate::config::Config;
use crate::daemon::body;
use crate::daemon::error::{ApiError, ErrorCode};
use crate::daemon::guard::{self, Access};
use crate::daemon::state::State;
use crate::dashboard::targets::{self, Reach, TargetId, Unreachable};
use crate::dashboard::{assets, auth, origin, overview};
use crate::peer::Client;

/// The Content-Security-Policy of every dashboard response: nothing inline, nothing foreign.
pub(super) const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";
/// The path of the proxy; the target and the forwarded API path follow.
const PROXY_PREFIX: &str = "/api/v1/dashboard/proxy/";
/// How long a forwarded request (not a stream) may take.
const PROXY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub(super) fn mount(m: &mut Mount<'_>) {
    m.route(Method::Get, "/dashboard", Access::Public, None, get_dashboard)
        .route(Method::Get, "/dashboard/", Access::Public, None, get_asset)
        .route(Method::Get, "/dashboard/login", Access::Public, None, get_login)
        .route(Method::Get, "/dashboard/*path", Access::Public, None, get_asset)
        .route(Method::Post, "/api/v1/dashboard/token", Access::Local, None, post_token)
        .route(Method::Post, "/api/v1/dashboard/logout", Access::Owner, None, post_logout)
        .route(Method::Get, "/api/v1/dashboard/overview", Access::Owner, None, get_overview)
        .route(Method::Get, "/api/v1/dashboard/targets", Access::Owner, None, get_targets)
        .route(Method::Get, "/api/v1/dashboard/peers", Access::Owner, None, get_peers);
    for method in [Method::Get, Method::Post, Method::Put, Method::Delete] {
        m.route(method, "/api/v1/dashboard/proxy/:target/*rest", Access::Owner, None, proxy_request);
    }
}

/// Adds the dashboard's security headers.
fn secure(mut res: Response) -> Response {
    res.insert_header("Content-Security-Policy", CSP);
    res.insert_header("X-Content-Type-Options", "nosniff");
    res.insert_header("Referrer-Policy", "no-referrer");
    res.insert_header("X-Frame-Options", "DENY");
    res
}

async fn get_dashboard(_req: Request<State>) -> tide::Result {
    Ok(secure(Response::builder(StatusCode::Found).header("Location", "/dashboard/").build()))
}

async fn get_asset(req: Request<State>) -> tide::Result {
    if let Err(refusal) = guard::check_browser_host(&req) {
        return Ok(secure(refusal.into_response()));
    }
    let path = req.url().path().strip_prefix("/dashboard/").unwrap_or_default();
    let Some(asset) = assets::find(path) else {
        let missing = ApiError::new(ErrorCode::RouteNotFound, format!("no dashboard file '{path}'"));
        return Ok(secure(missing.into_response()));
    };
    let res = Response::builder(200)
        .header("Content-Type", asset.content_type)
        .header("Cache-Control", "no-cache")
        .body(asset.body)
        .build();
    Ok(secure(res))
}

/// `GET /dashboard/login?token=…`: trades the one-time token for a session cookie and sends
/// the browser on to the dashboard, so the token leaves the address bar at once.
async fn get_login(req: Request<State>) -> tide::Result {
    let state = req.state();
    if let Err(refusal) = guard::check_browser_host(&req) {
        return Ok(secure(refusal.into_response()));
    }
    let token = req.url().query_pairs().find(|(k, _)| k == "token").map(|(_, v)| v.into_owned()).unwrap_or_default();
    let Some(session) = state.gate.logins.redeem(&token, crate::clock::now_ms()) else {
        let refusal = ApiError::new(
            ErrorCode::AuthInvalidKey,
            "this dashboard link was used already or has expired; run `loopsy dashboard` again",
        );
        return Ok(secure(refusal.into_response()));
    };
    // `Secure` exactly when the browser came over HTTPS: a Secure cookie set over plain HTTP
    // would never be sent back, and one without it over HTTPS could leak to plain HTTP.
    let over_tls = guard::connection(&req).tls;
    let cookie = origin::session_cookie(state.node.port, &session.secret, auth::SESSION_TTL_MS / 1000, over_tls);
    let res = Response::builder(StatusCode::SeeOther)
        .header("Location", "/dashboard/")
        .header("Set-Cookie", cookie)
        .header("Cache-Control", "no-store")
        .build();
    Ok(secure(res))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenAnswer {
    token: String,
    expires_at: u64,
    /// Where the browser goes with it: `/dashboard/login?token=…`.
    login_path: String,
}

async fn post_token(req: Request<State>) -> tide::Result {
    let token = req.state().gate.logins.issue_token(crate::clock::now_ms());
    let login_path = format!("/dashboard/login?token={}", token.secret);
    json_response(&TokenAnswer { token: token.secret, expires_at: token.expires_at, login_path })
}

async fn post_logout(req: Request<State>) -> tide::Result {
    let state = req.state();
    let name = origin::cookie_name(state.node.port);
    let cookies = req.header("Cookie").map(|v| v.iter().map(|v| v.as_str().to_string()).collect::<Vec<_>>());
    for header in cookies.unwrap_or_default() {
        if let Some(session) = origin::find_cookie(&header, &name) {
            state.gate.logins.end(session);
        }
    }
    let mut res = json_response(&json!({"success": true}))?;
    res.insert_header("Set-Cookie", format!("{name}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"));
    Ok(res)
}

/// The config as it is on disk now (pairing adds keys while the daemon runs), else as loaded.
fn current_config(state: &State) -> Config {
    Config::load(&state.paths).unwrap_or_else(|_| (*state.config).clone())
}

async fn get_overview(req: Request<State>) -> tide::Result {
    let state = req.state();
    let sessions = overview::sessions(&state.paths).await;
    let runtime = state.runtime.lock().expect("runtime lock").clone();
    let node = super::system::status(state);
    let running = sessions.iter().filter(|s| s.state == "running").count();
    json_response(&json!({
        "node": node,
        "url": runtime.as_ref().map(|r| r.url.clone()),
        "tls": state.gate.tls.is_on(),
        "dataDir": state.paths.home(),
        "sessions": sessions,
        "totals": {
            "sessions": sessions.len(),
            "sessionsRunning": running,
            "peers": node.peers.total,
            "peersOnline": node.peers.online,
            "jobsActive": node.jobs.active,
            "contextEntries": node.context.entries,
        },
        "timestamp": crate::clock::now_ms(),
    }))
}

async fn get_targets(req: Request<State>) -> tide::Result {
    let state = req.state();
    let config = current_config(state);
    let main = (*state.paths).clone();
    let found = blocking::unblock(move || crate::sessions::local_sessions(&main)).await;
    let mut list = vec![json!({
        "id": "local", "kind": "local", "label": format!("{} (this daemon)", state.node.hostname),
        "hostname": state.node.hostname, "online": true, "reachable": true,
    })];
    for session in found {
        let running = session.running.is_some();
        list.push(json!({
            "id": format!("session:{}", session.name), "kind": "session", "label": session.name.as_str(),
            "hostname": session.hostname(), "online": running, "reachable": running && session.config.is_some(),
        }));
    }
    for peer in state.fleet.peers.list() {
        let (credential, _) = targets::credential_for(&peer, &config);
        list.push(json!({
            "id": format!("peer:{}", peer.node_id), "kind": "peer",
            "label": peer.name.clone().unwrap_or_else(|| peer.hostname.clone()),
            "hostname": peer.hostname, "address": peer.address, "port": peer.port,
            "online": peer.status == crate::peers::PeerStatus::Online,
            "reachable": credential != targets::Credential::None, "credential": credential.as_str(),
        }));
    }
    json_response(&json!({"targets": list}))
}

async fn get_peers(req: Request<State>) -> tide::Result {
    let state = req.state();
    let config = current_config(state);
    let peers: Vec<serde_json::Value> = state
        .fleet
        .peers
        .list()
        .into_iter()
        .map(|peer| {
            let (credential, _) = targets::credential_for(&peer, &config);
            let pinned = targets::pin_for(&peer, &config).map(|pin| pin.to_string());
            let mut value = serde_json::to_value(&peer).expect("peers serialise");
            value["target"] = format!("peer:{}", peer.node_id).into();
            value["credential"] = credential.as_str().into();
            value["pinned"] = pinned.is_some().into();
            value["fingerprint"] = pinned.into();
            value
        })
        .collect();
    json_response(&json!({"peers": peers}))
}

/// `/api/v1/dashboard/proxy/<target>/api/v1/…`: one API call on a local session or a peer.
async fn proxy_request(mut req: Request<State>) -> tide::Result {
    let target = TargetId::parse(&body::param(&req, "target")?).map_err(ApiError::bad_request)?;
    let method = req.method();
    let forwarded = forwarded_path(req.url().path())
        .filter(|path| targets::forwardable(method.as_ref(), path))
        .ok_or_else(|| {
            ApiError::new(ErrorCode::Forbidden, format!("the dashboard does not forward {method} {}", req.url().path()))
        })?;
    let path_and_query = match req.url().query() {
        Some(query) => format!("{forwarded}?{query}"),
        None => forwarded.clone(),
    };
    if targets::is_websocket(method.as_ref(), &forwarded) {
        return relay_websocket(&req, &target, &path_and_query).await;
    }
    let body = match method {
        Method::Post | Method::Put => body::json_or_default::<Option<serde_json::Value>>(&mut req).await?,
        _ => None,
    };
    let body = body.map(|value| serde_json::to_vec(&value).expect("JSON values serialise"));
    let reach = reach(req.state(), &target).await?;
    let client = Client::pinned(&reach.base, Some(reach.key), reach.pin).with_timeout(PROXY_TIMEOUT);
    if targets::is_event_stream(method.as_ref(), &forwarded) {
        let last_event_id = req.header("Last-Event-ID").map(|v| v.last().as_str().to_string());
        let stream = client.open_events(method, &path_and_query, body, last_event_id.as_deref()).await?;
        return Ok(relay_events(stream));
    }
    let (status, bytes) = client.forward(method, &path_and_query, body).await?;
    // Checked as JSON and re-encoded (what is not JSON is wrapped as an error): up to 64 MiB
    // from the other daemon.
    let status = StatusCode::try_from(status).unwrap_or(StatusCode::BadGateway);
    let small = bytes.len() <= PROXIED_INLINE;
    super::system::json_response_made(status, small, move || {
        serde_json::from_slice::<serde_json::Value>(&bytes)
            .unwrap_or_else(|_| json!({"error": String::from_utf8_lossy(&bytes)}))
    })
    .await
}

/// Proxied answers of at most this many bytes are checked where the request runs.
const PROXIED_INLINE: usize = 64 * 1024;

/// A terminal's WebSocket on a session or peer: this daemon attaches with the credentials it
/// holds and passes frames both ways. The upstream attach happens first, so its refusal is
/// this answer.
async fn relay_websocket(req: &Request<State>, target: &TargetId, path_and_query: &str) -> tide::Result {
    if req.header("Origin").is_none() && req.ext::<guard::Caller>() == Some(&guard::Caller::Dashboard) {
        return Err(ApiError::new(ErrorCode::AuthInvalidKey, "a dashboard WebSocket needs an Origin header").into());
    }
    let handshake = crate::daemon::websocket::handshake(req)?;
    let reach = reach(req.state(), target).await?;
    let client = Client::pinned(&reach.base, Some(reach.key), reach.pin).with_timeout(PROXY_TIMEOUT);
    let (upstream, downstream) = client.websocket(path_and_query).await?;
    Ok(handshake.accept(move |socket| relay_frames(socket, upstream, downstream)))
}

/// Browser frames to the target and the target's frames to the browser, until either ends.
async fn relay_frames(
    socket: crate::daemon::websocket::Socket,
    mut upstream: crate::peer::websocket::Sender,
    mut downstream: crate::peer::websocket::Receiver,
) {
    use crate::peer::websocket::Incoming;
    use async_tungstenite::tungstenite::Message;
    use futures_lite::StreamExt;
    let (mut browser_out, mut browser_in) = socket.split();
    let up = async {
        while let Some(Ok(message)) = browser_in.next().await {
            let sent = match message {
                Message::Binary(bytes) => upstream.send_bytes(&bytes).await,
                Message::Text(text) => match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(value) => upstream.send_control(&value).await,
                    Err(_) => Ok(()),
                },
                Message::Close(_) => break,
                _ => Ok(()),
            };
            if sent.is_err() {
                break;
            }
        }
        upstream.close().await;
    };
    let down = async {
        while let Some(Ok(incoming)) = downstream.next().await {
            let message = match incoming {
                Incoming::Output(bytes) => Message::Binary(bytes.into()),
                Incoming::Control(value) => Message::Text(value.to_string().into()),
            };
            if browser_out.send(message).await.is_err() {
                return;
            }
        }
        let _ = browser_out.close(None).await;
    };
    futures_lite::future::or(up, down).await;
}

/// The API path after `/api/v1/dashboard/proxy/<target>`, still percent-encoded as sent.
fn forwarded_path(raw: &str) -> Option<String> {
    let (_, rest) = raw.strip_prefix(PROXY_PREFIX)?.split_once('/')?;
    Some(format!("/{rest}"))
}

/// Where `target` is and the credentials for it.
async fn reach(state: &State, target: &TargetId) -> Result<Reach, ApiError> {
    match target {
        TargetId::Local => {
            let url = state.runtime.lock().expect("runtime lock").as_ref().map(|r| r.url.clone());
            let url = url.ok_or_else(|| ApiError::new(ErrorCode::ShuttingDown, "the daemon is not ready"))?;
            let pin = if state.gate.tls.is_on() { crate::tls::local_fingerprint(&state.paths) } else { None };
            // The current key: the owner may have rotated it since the daemon started.
            Ok(Reach { base: url, key: state.gate.keyring.own_key(), pin })
        }
        TargetId::Session(name) => {
            let (main, name) = ((*state.paths).clone(), name.clone());
            let found = blocking::unblock(move || {
                crate::sessions::local_session(&main, &name).ok_or(Unreachable::UnknownSession(name.to_string()))
            })
            .await?;
            targets::reach_session(&found).map_err(ApiError::from)
        }
        TargetId::Peer(node_id) => {
            let peer = state.fleet.peers.list().into_iter().find(|p| &p.node_id == node_id);
            let peer = peer.ok_or_else(|| ApiError::from(Unreachable::UnknownPeer(node_id.clone())))?;
            targets::reach_peer(&peer, &current_config(state)).map_err(ApiError::from)
        }
    }
}

/// The target's events, passed on one by one as they arrive (ids and event names kept).
fn relay_events(mut stream: crate::peer::sse::EventStream) -> Response {
    let (sender, receiver) = smol::channel::bounded(16);
    let producer = smol::spawn(async move {
        while let Ok(Some(event)) = stream.next().await {
            if sender.send(event_frame(&event)).await.is_err() {
                return;
            }
        }
    });
    crate::daemon::sse::response(receiver, producer)
}

fn event_frame(event: &crate::peer::sse::Event) -> Vec<u8> {
    let mut frame = String::new();
    if let Some(name) = &event.event {
        frame.push_str(&format!("event: {name}\n"));
    }
    if let Some(id) = &event.id {
        frame.push_str(&format!("id: {id}\n"));
    }
    for line in event.data.split('\n') {
        frame.push_str(&format!("data: {line}\n"));
    }
    frame.push('\n');
    frame.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forwarded_path_keeps_its_encoding() {
        assert_eq!(
            forwarded_path("/api/v1/dashboard/proxy/session:w1/api/v1/context/inbox%3Ab").as_deref(),
            Some("/api/v1/context/inbox%3Ab")
        );
        assert_eq!(forwarded_path("/api/v1/dashboard/proxy/local").as_deref(), None);
    }

    #[test]
    fn relayed_events_keep_names_ids_and_lines() {
        let event = crate::peer::sse::Event { event: Some("put".into()), id: Some("7".into()), data: "a\nb".into() };
        assert_eq!(String::from_utf8(event_frame(&event)).unwrap(), "event: put\nid: 7\ndata: a\ndata: b\n\n");
    }
}
