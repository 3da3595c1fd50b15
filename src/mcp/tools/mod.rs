//! The MCP tools: their names, schemas and handlers, one file per area.
//!
//! Tools hold no state: each call asks the daemon through `peer::Client` (the session tools ask
//! the sessions module, whose state is the session directories). Peers are addressed by
//! name, hostname, node-id prefix or address; the daemon supplies the credentials, so no tool
//! needs or returns an API key (1.0.21 passed `peerApiKey` through the model's context). 1.0.21's
//! peer arguments are still accepted as deprecated aliases (`legacy.rs`).

mod approvals;
mod args;
mod context;
mod execute;
mod legacy;
mod locks;
mod messages;
mod peers;
mod sessions;
mod tasks;
mod terminals;
mod transfer;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{json, Value};

pub(super) use args::Args;

use super::daemon::DaemonLocator;
use super::protocol::RpcError;

/// What a tool returns: text for the model, or an error message it can act on.
pub(super) type Outcome = Result<String, String>;
type Run = fn(Arc<DaemonLocator>, Args) -> Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// One tool.
pub(super) struct Tool {
    pub name: &'static str,
    pub description: &'static str,
    /// The JSON Schema of the arguments (an object schema; unknown arguments are refused).
    pub schema: fn() -> Value,
    pub run: Run,
}

/// Every tool, in the order `tools/list` shows them.
fn all() -> Vec<Tool> {
    let mut tools = Vec::new();
    tools.extend(peers::tools());
    tools.extend(execute::tools());
    tools.extend(transfer::tools());
    tools.extend(context::tools());
    tools.extend(locks::tools());
    tools.extend(sessions::tools());
    tools.extend(messages::tools());
    tools.extend(tasks::tools());
    tools.extend(approvals::tools());
    tools.extend(terminals::tools());
    tools
}

pub(super) fn list() -> Value {
    let tools: Vec<Value> = all()
        .iter()
        .map(|tool| {
            let mut schema = (tool.schema)();
            if let (Some(aliases), Some(properties)) =
                (legacy::schema_properties(tool.name), schema["properties"].as_object_mut())
            {
                properties.extend(aliases);
            }
            json!({
                "name": tool.name,
                "description": tool.description,
                "inputSchema": schema,
                "execution": {"taskSupport": "forbidden"},
            })
        })
        .collect();
    json!({"tools": tools})
}

/// `tools/call`: an unknown tool is a protocol error; anything else is a tool result.
pub(super) async fn call(daemon: Arc<DaemonLocator>, params: &Value) -> Result<Value, RpcError> {
    let name =
        params.get("name").and_then(Value::as_str).ok_or_else(|| RpcError::invalid_params("missing tool 'name'"))?;
    let tool = all()
        .into_iter()
        .find(|tool| tool.name == name)
        .ok_or_else(|| RpcError::invalid_params(format!("unknown tool '{name}'; see tools/list")))?;
    let mut arguments = params.get("arguments").cloned().unwrap_or(json!({}));
    let (outcome, note) = match legacy::translate(name, &mut arguments) {
        Err(problem) => (Err(format!("Invalid arguments for {name}: {problem}")), None),
        Ok(legacy) => {
            let (offered_key, note) = legacy.map(|l| (l.offered_key, Some(l.note))).unwrap_or_default();
            let outcome = match Args::validate(arguments, &(tool.schema)()) {
                Ok(args) => (tool.run)(daemon, args.with_offered_key(offered_key)).await,
                Err(problem) => Err(format!("Invalid arguments for {name}: {problem}")),
            };
            (outcome, note)
        }
    };
    // The note is a content item of its own, so the first item stays what 1.0.21 answered
    // (often JSON a script parses).
    let (text, is_error) = match outcome {
        Ok(text) => (text, false),
        Err(message) => (format!("Error: {message}"), true),
    };
    let mut content = vec![json!({"type": "text", "text": text})];
    content.extend(note.map(|note| json!({"type": "text", "text": note})));
    let mut result = json!({"content": content});
    if is_error {
        result["isError"] = true.into();
    }
    Ok(result)
}

/// Boxes an async handler for the table.
macro_rules! handler {
    ($f:path) => {
        |daemon, args| Box::pin($f(daemon, args))
    };
}
pub(crate) use handler;

/// The daemon a tool acts on: `peer` when given (and not `local`), else this machine's. A key
/// the caller offered (`peerApiKey`, see `legacy.rs`) goes only to a peer loopsy has no key for.
pub(super) async fn target(
    daemon: &DaemonLocator,
    peer: Option<&str>,
    args: &Args,
) -> Result<crate::peer::Client, String> {
    use crate::resolve;
    match peer.filter(|p| !p.is_empty() && *p != "local") {
        None => daemon.client().await,
        Some(spec) => {
            let config = daemon.config().await?;
            let target = match args.offered_key() {
                Some(offered) => resolve::resolve_offered(&daemon.paths, &config, spec, offered).await,
                None => resolve::resolve(&daemon.paths, &config, spec, None).await,
            };
            Ok(target.map_err(|e| format!("{e:#}"))?.client)
        }
    }
}

/// Pretty JSON, as 1.0.21's tools answered.
pub(super) fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).expect("JSON serialises")
}

/// A JSON Schema object with these properties and required names, refusing anything else.
pub(super) fn object(properties: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
}

/// The `peer` argument every remote tool takes.
pub(super) fn peer_property(what: &str) -> Value {
    json!({"type": "string", "description": format!("The peer {what}: its name, hostname, node-id prefix or address[:port]; 'local' for this machine")})
}
