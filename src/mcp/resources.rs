//! MCP resources: `loopsy://peers`, `loopsy://status`, `loopsy://context` (PROTOCOL.md §7.4).

use serde_json::{json, Value};

use super::daemon::DaemonLocator;
use super::protocol::RpcError;

struct Resource {
    uri: &'static str,
    name: &'static str,
    description: &'static str,
    path: &'static str,
    /// What the text says when the daemon cannot be asked.
    fallback: fn(&str) -> Value,
}

const RESOURCES: [Resource; 3] = [
    Resource {
        uri: "loopsy://peers",
        name: "peers",
        description: "List of all known Loopsy peers and their status",
        path: "/api/v1/peers",
        fallback: |error| json!({"peers": [], "error": error}),
    },
    Resource {
        uri: "loopsy://status",
        name: "status",
        description: "Current Loopsy daemon status",
        path: "/api/v1/status",
        fallback: |error| json!({"error": error}),
    },
    Resource {
        uri: "loopsy://context",
        name: "context",
        description: "All context entries stored locally",
        path: "/api/v1/context",
        fallback: |error| json!({"entries": [], "error": error}),
    },
];

pub(super) fn list() -> Value {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .map(|r| json!({"uri": r.uri, "name": r.name, "description": r.description, "mimeType": "application/json"}))
        .collect();
    json!({"resources": resources})
}

pub(super) async fn read(daemon: &DaemonLocator, params: &Value) -> Result<Value, RpcError> {
    let uri = params.get("uri").and_then(Value::as_str).ok_or_else(|| RpcError::invalid_params("missing 'uri'"))?;
    let resource = RESOURCES
        .iter()
        .find(|r| r.uri == uri)
        .ok_or_else(|| RpcError::new(-32002, format!("unknown resource '{uri}'; see resources/list")))?;
    let value = match daemon.client().await {
        Ok(client) => match client.get::<Value>(resource.path).await {
            Ok(value) => value,
            Err(e) => (resource.fallback)(&e.to_string()),
        },
        Err(message) => (resource.fallback)(&message),
    };
    let text = serde_json::to_string_pretty(&value).expect("JSON serialises");
    Ok(json!({"contents": [{"uri": uri, "mimeType": "application/json", "text": text}]}))
}
