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

pub fn mount(m: &mut Mount<'_>) {
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
    json_response(&TerminalList { terminals: req.state().terminals.list() })
}

async fn post_terminal(mut req: Request<State>) -> tide::Result {
    let caller = caller(&req)?;
    let request: CreateRequest = body::json_or_default(&mut req).await?;
    let info = req.state().terminals.create(request, &caller.label())?;
    let mut res = json_response(&info)?;
    res.set_status(StatusCode::Created);
    Ok(res)
}

async fn get_terminal(req: Request<State>) -> tide::Result {
    let id = body::param(&req, "id")?;
    json_response(&req.state().terminals.info(&id)?)
}

async fn delete_terminal(req: Request<State>) -> tide::Result {
    let caller = caller(&req)?;
    let id = body::param(&req, "id")?;
    let info = req.state().terminals.kill(&id).await?;
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
    let session = req.state().terminals.find(&id)?;
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
    let session = req.state().terminals.find(&id)?;
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
    let session = req.state().terminals.find(&id)?;
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

pub fn openapi() -> serde_json::Value {
    let who = "Own key, a dashboard session, or a paired peer's key (a shared key without a pinned certificate \
               only with terminals.allowLegacyPeers; else 403).";
    let id = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"},
        "description": "the terminal's id, its name (a running one first) or an id prefix of at least 4 characters"});
    let info = json!({"$ref": "#/components/schemas/Terminal"});
    let error = json!({"$ref": "#/components/responses/Error"});
    json!({
        "paths": {
            "/api/v1/terminals": {
                "get": {"summary": "Terminal sessions of this daemon", "tags": ["terminals"], "description": who,
                    "responses": {"200": {"description": "the terminals", "content": {"application/json": {"schema": {
                        "type": "object", "required": ["terminals"], "properties": {"terminals": {"type": "array", "items": info}}}}}}}},
                "post": {"summary": "Start a program on a new PTY", "tags": ["terminals"],
                    "description": format!("{who} Sessions live in memory: they survive clients detaching, not a daemon restart. The daemon's deny/allow list applies to the command (403 code 3001); a program or cwd that cannot be used is 404 code 3004; loader variables (LD_*, DYLD_*) are refused (400); the daemon's keys never reach the environment. 429 (8002) past terminals.maxSessions; 409 (8004) for a name a running terminal has."),
                    "requestBody": {"required": false, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TerminalCreate"}}}},
                    "responses": {"201": {"description": "started", "content": {"application/json": {"schema": info}}}, "400": error, "403": error, "404": error, "409": error, "429": error}}
            },
            "/api/v1/terminals/{id}": {
                "get": {"summary": "One terminal", "tags": ["terminals"], "description": who, "parameters": [id],
                    "responses": {"200": {"description": "the terminal", "content": {"application/json": {"schema": info}}}, "404": error}},
                "delete": {"summary": "Kill a terminal and forget it", "tags": ["terminals"], "parameters": [id],
                    "description": format!("{who} Every process of the terminal's session gets SIGHUP and SIGTERM, SIGKILL after 2 s; attached clients get an exit frame. An exited terminal is just removed."),
                    "responses": {"200": {"description": "its last state", "content": {"application/json": {"schema": info}}}, "404": error}}
            },
            "/api/v1/terminals/{id}/attach": {
                "get": {"summary": "Attach over a WebSocket (RFC 6455)", "tags": ["terminals"],
                    "description": format!("{who} A browser authenticates with the dashboard cookie and must send Origin. Binary frames carry terminal bytes both ways (input is refused for readOnly clients). Text frames are JSON control messages: from the server `{{\"type\":\"attached\",id,name,cols,rows,readOnly,title}}` first, then the screen at the size in force (resized first: the size is the smallest of the attached clients'), then live output with `{{\"type\":\"size\",cols,rows}}` when the size changes, `{{\"type\":\"title\",title}}`, `{{\"type\":\"skipped\",bytes}}` before a fresh screen when this client fell more than terminals.clientBufferBytes behind, `{{\"type\":\"error\",message}}`, and last `{{\"type\":\"exit\",code}}` before the close; from the client `{{\"type\":\"resize\",cols,rows}}`. 426 without Upgrade: websocket."),
                    "parameters": [
                        id,
                        {"name": "cols", "in": "query", "schema": {"type": "integer", "minimum": 2, "maximum": 1000, "default": 80}},
                        {"name": "rows", "in": "query", "schema": {"type": "integer", "minimum": 2, "maximum": 1000, "default": 24}},
                        {"name": "readOnly", "in": "query", "schema": {"enum": ["1", "true", "0", "false"]}}
                    ],
                    "responses": {"101": {"description": "switched to the WebSocket protocol"}, "400": error, "404": error, "426": error, "429": error}}
            },
            "/api/v1/terminals/{id}/input": {
                "post": {"summary": "Type into a terminal: text, then named keys", "tags": ["terminals"], "description": who, "parameters": [id],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "properties": {
                        "text": {"type": "string"},
                        "keys": {"type": "array", "items": {"type": "string", "pattern": crate::terminal::keys::pattern()}, "description": "Enter, Tab, Escape, Backspace, Up, Down, Left, Right, Home, End, PageUp, PageDown, Delete, F1-F12, Ctrl-<letter>, Alt-<char> (case-insensitive; the pattern lists every name and alias)"}},
                        "additionalProperties": false}}}},
                    "responses": {"200": {"description": "sent", "content": {"application/json": {"schema": {"type": "object", "properties": {"id": {"type": "string"}, "sent": {"type": "integer"}}}}}}, "400": error, "404": error, "409": error}}
            },
            "/api/v1/terminals/{id}/screen": {
                "get": {"summary": "The screen as text, after an optional wait", "tags": ["terminals"],
                    "description": format!("{who} Waits until the screen contains waitFor, or until no output came for quietMs, or timeoutMs (default 10000, at most 120000) passed, or the program exited; then answers the visible screen from the screen model."),
                    "parameters": [
                        id,
                        {"name": "waitFor", "in": "query", "schema": {"type": "string"}},
                        {"name": "quietMs", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": u64::MAX}},
                        {"name": "timeoutMs", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": u64::MAX}, "description": "more than 120000 waits 120000"}
                    ],
                    "responses": {"200": {"description": "the screen", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TerminalScreen"}}}}, "404": error}}
            }
        },
        "schemas": {
            "Terminal": {"type": "object", "required": ["id", "name", "command", "state", "createdAt", "cols", "rows"], "properties": {
                "id": {"type": "string"}, "name": {"type": "string"}, "command": {"type": "string"},
                "args": {"type": "array", "items": {"type": "string"}}, "cwd": {"type": "string"},
                "startedBy": {"type": "string", "examples": ["own", "dashboard", "peer:bob"]},
                "createdAt": {"type": "integer"}, "lastActiveAt": {"type": "integer"},
                "state": {"enum": ["running", "exited"]}, "exitCode": {"type": ["integer", "null"]},
                "pid": {"type": "integer"}, "cols": {"type": "integer"}, "rows": {"type": "integer"},
                "clients": {"type": "integer"}, "title": {"type": ["string", "null"]}}},
            "TerminalCreate": {"type": "object", "additionalProperties": false, "properties": {
                "command": {"type": "string", "pattern": "^[^\\u0000]*\\S[^\\u0000]*$", "description": "default: the daemon user's $SHELL; not blank, no NUL"},
                "args": {"type": "array", "items": {"type": "string", "pattern": "^[^\\u0000]*$"}},
                "cwd": {"type": "string", "pattern": "^/[^\\u0000]*$", "description": "an absolute path (default: the daemon user's home); one that is not an existing directory is 404 code 3004"},
                "env": {"type": "object", "propertyNames": {"pattern": "^(?!LD_|DYLD_)[^=\\u0000]+$"}, "additionalProperties": {"type": "string", "pattern": "^[^\\u0000]*$"},
                    "description": "added to the daemon's environment; loader variables (LD_*, DYLD_*) are refused"},
                "name": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
                "cols": {"type": "integer", "minimum": 2, "maximum": 1000}, "rows": {"type": "integer", "minimum": 2, "maximum": 1000}}},
            "TerminalScreen": {"type": "object", "required": ["id", "screen", "cols", "rows", "state", "matched", "timedOut"], "properties": {
                "id": {"type": "string"}, "screen": {"type": "string"}, "cols": {"type": "integer"}, "rows": {"type": "integer"},
                "cursor": {"type": "object", "properties": {"row": {"type": "integer"}, "col": {"type": "integer"}}},
                "state": {"enum": ["running", "exited"]}, "exitCode": {"type": ["integer", "null"]},
                "title": {"type": ["string", "null"]}, "matched": {"type": "boolean"}, "timedOut": {"type": "boolean"}}}
        }
    })
}
