//! `/api/v1/terminals`: list, create, inspect and kill terminal sessions, type into them, read
//! their screen, and attach over a WebSocket (binary frames are terminal bytes both ways, text
//! frames small JSON control messages).
//!
//! Who may: the owner (own key, dashboard) and paired peers (a key with a pinned certificate);
//! a 1.0.21-style shared key only with `terminals.allowLegacyPeers`.

use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use futures_lite::StreamExt;
use serde_json::json;
use tide::http::Method;
use tide::{Request, StatusCode};

use super::system::json_response;
use super::Mount;
use crate::daemon::body;
use crate::daemon::error::{ApiError, ErrorCode};
use crate::daemon::guard::{Access, Caller};
use crate::daemon::state::State;
use crate::daemon::websocket::{self, Socket};
use crate::terminal::api::{self, ClientControl, CreateRequest, InputRequest, TerminalList};
use crate::terminal::fanout::Frame;
use crate::terminal::{AttachOptions, Attachment, SessionError};

/// The longest a screen read may wait.
const MAX_WAIT: Duration = Duration::from_secs(120);
/// A WebSocket client that sends nothing is pinged this often (dead connections end).
const PING_INTERVAL: Duration = Duration::from_secs(30);

pub(super) fn mount(m: &mut Mount<'_>) {
    m.route(Method::Get, "/api/v1/terminals", Access::Terminal, None, get_terminals)
        .route(Method::Post, "/api/v1/terminals", Access::Terminal, None, post_terminal)
        .route(Method::Get, "/api/v1/terminals/:id", Access::Terminal, None, get_terminal)
        .route(Method::Delete, "/api/v1/terminals/:id", Access::Terminal, None, delete_terminal)
        .route(Method::Get, "/api/v1/terminals/:id/attach", Access::Terminal, None, get_attach)
        .route(Method::Post, "/api/v1/terminals/:id/input", Access::Terminal, None, post_input)
        .route(Method::Get, "/api/v1/terminals/:id/screen", Access::Terminal, None, get_screen);
}

/// The caller, whom the route's `Access::Terminal` already admitted.
fn caller(req: &Request<State>) -> Result<Caller, ApiError> {
    req.ext::<Caller>().cloned().ok_or_else(|| ApiError::internal("no caller on a keyed route"))
}

async fn get_terminals(req: Request<State>) -> tide::Result {
    json_response(&TerminalList { terminals: req.state().work.terminals.list() })
}

async fn post_terminal(mut req: Request<State>) -> tide::Result {
    let caller = caller(&req)?;
    let request: CreateRequest = body::json_or_default(&mut req).await?;
    let info = req.state().work.terminals.create(request, &caller.label())?;
    let mut res = json_response(&info)?;
    res.set_status(StatusCode::Created);
    Ok(res)
}

async fn get_terminal(req: Request<State>) -> tide::Result {
    let id = body::param(&req, "id")?;
    json_response(&req.state().work.terminals.info(&id)?)
}

async fn delete_terminal(req: Request<State>) -> tide::Result {
    let caller = caller(&req)?;
    let id = body::param(&req, "id")?;
    let info = req.state().work.terminals.kill(&id).await?;
    log::info!("terminal {} ({}) killed by {}", info.id, info.name, caller.label());
    json_response(&info)
}

async fn post_input(mut req: Request<State>) -> tide::Result {
    let id = body::param(&req, "id")?;
    let input: InputRequest = body::json(&mut req).await?;
    let mut bytes = input.text.unwrap_or_default().into_bytes();
    for (i, name) in input.keys.iter().enumerate() {
        let key = crate::terminal::keys::bytes(name).ok_or_else(|| {
            ApiError::bad_request(format!(
                "field 'keys[{i}]': unknown key '{name}' (Enter, Tab, Escape, Backspace, Up, Down, Left, Right, Home, \
                 End, PageUp, PageDown, Delete, F1-F12, Ctrl-<letter>, Alt-<char>)"
            ))
        })?;
        bytes.extend(key);
    }
    let session = req.state().work.terminals.find(&id)?;
    session.write(&bytes).await?;
    json_response(&json!({"id": session.id(), "sent": bytes.len()}))
}

async fn get_screen(req: Request<State>) -> tide::Result {
    let id = body::param(&req, "id")?;
    let query = Query::of(&req);
    let wait_for = query.get("waitFor").filter(|s| !s.is_empty());
    let millis = |name: &str| -> Result<Option<Duration>, ApiError> {
        match query.get(name) {
            None => Ok(None),
            Some(text) => text
                .parse::<u64>()
                .map(|ms| Some(Duration::from_millis(ms).min(MAX_WAIT)))
                .map_err(|_| ApiError::bad_request(format!("query '{name}': not a number of milliseconds"))),
        }
    };
    let quiet = millis("quietMs")?;
    let timeout = millis("timeoutMs")?.unwrap_or(Duration::from_secs(10));
    let session = req.state().work.terminals.find(&id)?;
    let (answer, _) = session.wait_screen(wait_for.as_deref(), quiet, timeout).await;
    json_response(&answer)
}

/// `GET /api/v1/terminals/:id/attach?cols=&rows=&readOnly=`: the WebSocket.
async fn get_attach(req: Request<State>) -> tide::Result {
    let caller = caller(&req)?;
    if caller == Caller::Dashboard && req.header("Origin").is_none() {
        // Browsers always send Origin on a WebSocket; without it the cookie is not enough.
        return Err(ApiError::new(ErrorCode::AuthInvalidKey, "a dashboard WebSocket needs an Origin header").into());
    }
    // The request is judged first (400, 404), then whether it is a WebSocket at all (426).
    let id = body::param(&req, "id")?;
    let query = Query::of(&req);
    let number = |name: &str, default: u16| -> Result<u16, ApiError> {
        match query.get(name) {
            None => Ok(default),
            Some(text) => {
                text.parse().map_err(|_| ApiError::bad_request(format!("query '{name}': not a number of cells")))
            }
        }
    };
    let (cols, rows) = api::check_size(number("cols", 80)?, number("rows", 24)?).map_err(ApiError::bad_request)?;
    let read_only = match query.get("readOnly").as_deref() {
        None | Some("0" | "false") => false,
        Some("1" | "true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!("query 'readOnly': '{other}' is not 1, true, 0 or false")).into())
        }
    };
    let session = req.state().work.terminals.find(&id)?;
    let handshake = websocket::handshake(&req)?;
    let attachment = session.attach(AttachOptions { cols, rows, read_only })?;
    log::info!(
        "{} attached to terminal {} ({cols}x{rows}{})",
        caller.label(),
        session.id(),
        if read_only { ", read-only" } else { "" }
    );
    Ok(handshake.accept(move |socket| serve_client(socket, attachment)))
}

/// Moves frames between one WebSocket client and its attachment until either side ends.
async fn serve_client(socket: Socket, attachment: Attachment) {
    let (mut sender, mut receiver) = socket.split();
    let writer = async {
        loop {
            let next = crate::clock::timeout(PING_INTERVAL, attachment.next_frames()).await;
            let Some(frames) = next else {
                if sender.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
                continue;
            };
            if frames.is_empty() {
                return;
            }
            for frame in frames {
                let (message, last) = match frame {
                    Frame::Output(bytes) => (Message::Binary(bytes.into()), false),
                    Frame::Control(value) => (Message::Text(value.to_string().into()), false),
                    Frame::End(value) => (Message::Text(value.to_string().into()), true),
                };
                if sender.send(message).await.is_err() {
                    return;
                }
                if last {
                    let _ = sender.close(None).await;
                    return;
                }
            }
        }
    };
    let reader = async {
        while let Some(Ok(message)) = receiver.next().await {
            match message {
                Message::Binary(bytes) => match attachment.input(&bytes).await {
                    Ok(()) => {}
                    Err(SessionError::ReadOnly) => {
                        attachment.notify(json!({"type": "error", "message": "this client attached read-only"}))
                    }
                    // The exit frame is on its way.
                    Err(SessionError::Exited(_)) => {}
                    Err(e) => attachment.notify(json!({"type": "error", "message": e.to_string()})),
                },
                Message::Text(text) => match serde_json::from_str::<ClientControl>(&text) {
                    Ok(ClientControl::Resize { cols, rows }) => match api::check_size(cols, rows) {
                        Ok((cols, rows)) => attachment.resize(cols, rows),
                        Err(problem) => attachment.notify(json!({"type": "error", "message": problem})),
                    },
                    Err(e) => attachment.notify(json!({"type": "error", "message": format!("bad control frame: {e}")})),
                },
                Message::Close(_) => return,
                _ => {}
            }
        }
    };
    futures_lite::future::or(writer, reader).await;
}

/// The decoded query string.
struct Query(Vec<(String, String)>);

impl Query {
    fn of(req: &Request<State>) -> Query {
        Query(req.url().query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
    }

    fn get(&self, name: &str) -> Option<String> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }
}
