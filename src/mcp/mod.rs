//! The MCP server (`loopsy mcp serve`): newline-delimited JSON-RPC 2.0 on stdio.
//!
//! Requests run concurrently; answers go through one writer that flushes after every message;
//! `notifications/cancelled` drops the running request. Nothing but protocol reaches stdout
//! (logs go to stderr). The server keeps no state of its own: every tool asks the daemon.
//! It stops on end of input, SIGINT or SIGTERM.

mod daemon;
mod prompts;
pub(crate) mod protocol;
pub(crate) mod register;
mod resources;
mod tools;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_lite::{AsyncBufReadExt, AsyncWriteExt, StreamExt};
use serde_json::{json, Value};

pub(crate) use daemon::DaemonLocator;
use protocol::{Incoming, RpcError, METHOD_NOT_FOUND};

/// Serves MCP on stdin/stdout until the input ends.
pub(crate) fn serve(daemon: DaemonLocator) -> anyhow::Result<()> {
    smol::block_on(run(Arc::new(daemon)))
}

type Running = Arc<Mutex<HashMap<String, smol::Task<()>>>>;

async fn run(daemon: Arc<DaemonLocator>) -> anyhow::Result<()> {
    let (out, outbox) = smol::channel::unbounded::<Value>();
    let writer = smol::spawn(async move {
        let mut stdout = blocking::Unblock::new(std::io::stdout());
        while let Ok(message) = outbox.recv().await {
            let mut line = serde_json::to_vec(&message).expect("JSON serialises");
            line.push(b'\n');
            if stdout.write_all(&line).await.is_err() || stdout.flush().await.is_err() {
                break;
            }
        }
    });
    let running: Running = Arc::default();
    let mut lines = futures_lite::io::BufReader::new(blocking::Unblock::new(std::io::stdin())).lines();
    let mut signals = async_signal::Signals::new([async_signal::Signal::Int, async_signal::Signal::Term])?;
    loop {
        let next = futures_lite::future::or(async { lines.next().await }, async {
            signals.next().await;
            None
        });
        let Some(Ok(line)) = next.await else { break };
        if line.trim().is_empty() {
            continue;
        }
        for message in protocol::parse_line(&line) {
            dispatch(message, &daemon, &out, &running);
        }
    }
    // Answer what is still running, briefly, then stop.
    let pending: Vec<smol::Task<()>> = running.lock().expect("running lock").drain().map(|(_, task)| task).collect();
    let finish = async {
        for task in pending {
            task.await;
        }
    };
    crate::clock::timeout(std::time::Duration::from_secs(5), finish).await;
    drop(out);
    writer.await;
    Ok(())
}

fn dispatch(message: Incoming, daemon: &Arc<DaemonLocator>, out: &smol::channel::Sender<Value>, running: &Running) {
    match message {
        Incoming::Request { id, method, params } => {
            let (daemon, out, running_now) = (daemon.clone(), out.clone(), running.clone());
            let key = id.to_string();
            let task_key = key.clone();
            // Held across spawn and insert, so a fast task cannot remove itself before it is in.
            let mut table = running.lock().expect("running lock");
            let task = smol::spawn(async move {
                let answer = match handle(&daemon, &method, &params).await {
                    Ok(result) => protocol::result(&id, result),
                    Err(error) => protocol::error(&id, &error),
                };
                running_now.lock().expect("running lock").remove(&task_key);
                let _ = out.send(answer).await;
            });
            table.insert(key, task);
        }
        Incoming::Notification { method, params } if method == "notifications/cancelled" => {
            if let Some(id) = params.get("requestId") {
                // Dropping the task cancels it; a cancelled request gets no answer.
                running.lock().expect("running lock").remove(&id.to_string());
            }
        }
        Incoming::Notification { .. } | Incoming::Response => {}
        Incoming::Invalid { id, error } => {
            let _ = out.try_send(protocol::error(&id, &error));
        }
    }
}

async fn handle(daemon: &Arc<DaemonLocator>, method: &str, params: &Value) -> Result<Value, RpcError> {
    match method {
        "initialize" => Ok(initialize(params)),
        "ping" => Ok(json!({})),
        "tools/list" => Ok(tools::list()),
        "tools/call" => tools::call(daemon.clone(), params).await,
        "resources/list" => Ok(resources::list()),
        "resources/read" => resources::read(daemon, params).await,
        "resources/templates/list" => Ok(json!({"resourceTemplates": []})),
        "prompts/list" => Ok(prompts::list()),
        "prompts/get" => prompts::get(params),
        other => Err(RpcError::new(METHOD_NOT_FOUND, format!("method not found: {other}"))),
    }
}

fn initialize(params: &Value) -> Value {
    let version = protocol::negotiate(params.get("protocolVersion").and_then(Value::as_str));
    json!({
        "protocolVersion": version,
        "capabilities": {
            "tools": {"listChanged": false},
            "resources": {"listChanged": false, "subscribe": false},
            "prompts": {"listChanged": false}
        },
        "serverInfo": {"name": "loopsy", "version": env!("CARGO_PKG_VERSION")},
        "instructions": "loopsy connects this machine to agents on other machines: see the loopsy_help prompt."
    })
}
