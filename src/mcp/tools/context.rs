//! The context tools: set, get, list, delete (with revisions), and broadcast to every peer.

use std::sync::Arc;

use crate::peer::Method;
use serde_json::{json, Value};

use super::{handler, object, peer_property, pretty, target, Args, Outcome, Tool};
use crate::mcp::daemon::DaemonLocator;
use crate::peer::context_path;
use crate::percent;

fn key() -> Value {
    json!({"type": "string", "description": "Context key"})
}

fn peer() -> Value {
    peer_property("holding the context (omit for this machine)")
}

fn fence() -> Value {
    json!({"type": "object", "description": "Only while this lock grant is live: {\"lock\": name, \"token\": fencing token from loopsy_lock_acquire}; a refusal means the lock passed to another holder",
           "properties": {"lock": {"type": "string"}, "token": {"type": "integer", "minimum": 1}}, "required": ["lock", "token"], "additionalProperties": false})
}

fn revision() -> Value {
    json!({"type": "integer", "minimum": 0, "description": "Only if the entry has this revision (0 = only if it does not exist); a mismatch is an error that says the current revision"})
}

pub(super) fn tools() -> Vec<Tool> {
    vec![
        Tool {
            name: "loopsy_context_set",
            description: "Store a shared key-value pair on a remote Loopsy peer (or locally). Optional TTL in seconds; optional ifRevision for safe updates (locks, counters).",
            schema: || object(json!({"key": key(), "value": {"type": "string", "description": "Value to store"}, "ttl": {"type": "integer", "minimum": 1, "description": "Time-to-live in seconds"}, "peer": peer(), "ifRevision": revision(), "ifFence": fence()}), &["key", "value"]),
            run: handler!(set),
        },
        Tool {
            name: "loopsy_context_get",
            description: "Retrieve a shared key-value pair (with its revision) from a remote Loopsy peer (or locally)",
            schema: || object(json!({"key": key(), "peer": peer()}), &["key"]),
            run: handler!(get),
        },
        Tool {
            name: "loopsy_context_list",
            description: "List context entries, optionally filtered by key prefix, on a remote Loopsy peer (or locally)",
            schema: || object(json!({"prefix": {"type": "string", "description": "Key prefix to filter by"}, "peer": peer()}), &[]),
            run: handler!(list),
        },
        Tool {
            name: "loopsy_context_delete",
            description: "Delete a context entry by key on a remote peer or locally; optional ifRevision",
            schema: || object(json!({"key": key(), "peer": peer(), "ifRevision": revision(), "ifFence": fence()}), &["key"]),
            run: handler!(delete),
        },
        Tool {
            name: "loopsy_broadcast_context",
            description: "Set a context key-value pair here and on ALL online peers; reports each peer's result",
            schema: || object(json!({"key": key(), "value": {"type": "string", "description": "Value to store"}, "ttl": {"type": "integer", "minimum": 1, "description": "Time-to-live in seconds"}}), &["key", "value"]),
            run: handler!(broadcast),
        },
    ]
}

fn put_body(args: &Args) -> Value {
    let mut body = json!({"value": args.req("value")});
    if let Some(ttl) = args.u64("ttl") {
        body["ttl"] = ttl.into();
    }
    if let Some(revision) = args.u64("ifRevision") {
        body["ifRevision"] = revision.into();
    }
    if let Some(fence) = args.value("ifFence") {
        body["ifFence"] = fence.clone();
    }
    body
}

async fn set(daemon: Arc<DaemonLocator>, args: Args) -> Outcome {
    let client = target(&daemon, args.str("peer"), &args).await?;
    let path = context_path(args.req("key"));
    let entry: Value = client.call(Method::Put, &path, Some(&put_body(&args))).await.map_err(|e| e.to_string())?;
    Ok(pretty(&entry))
}

async fn get(daemon: Arc<DaemonLocator>, args: Args) -> Outcome {
    let client = target(&daemon, args.str("peer"), &args).await?;
    let entry: Value = client.get(&context_path(args.req("key"))).await.map_err(|e| e.to_string())?;
    Ok(pretty(&entry))
}

async fn list(daemon: Arc<DaemonLocator>, args: Args) -> Outcome {
    let client = target(&daemon, args.str("peer"), &args).await?;
    let path = match args.str("prefix") {
        Some(prefix) => format!("/api/v1/context?prefix={}", percent::encode(prefix)),
        None => "/api/v1/context".to_string(),
    };
    let entries: Value = client.get(&path).await.map_err(|e| e.to_string())?;
    Ok(pretty(&entries))
}

async fn delete(daemon: Arc<DaemonLocator>, args: Args) -> Outcome {
    let client = target(&daemon, args.str("peer"), &args).await?;
    let mut path = context_path(args.req("key"));
    let mut query = Vec::new();
    if let Some(revision) = args.u64("ifRevision") {
        query.push(format!("ifRevision={revision}"));
    }
    if let Some(fence) = args.value("ifFence") {
        let spec = format!("{}:{}", fence["lock"].as_str().unwrap_or_default(), fence["token"]);
        query.push(format!("ifFence={}", percent::encode(&spec)));
    }
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    let answer: Value = client.call(Method::Delete, &path, None::<&()>).await.map_err(|e| e.to_string())?;
    Ok(pretty(&answer))
}

/// Sets the key here, then on every online peer (concurrently), and reports each outcome.
async fn broadcast(daemon: Arc<DaemonLocator>, args: Args) -> Outcome {
    let local = daemon.client().await?;
    let path = context_path(args.req("key"));
    let body = put_body(&args);
    local.call::<Value>(Method::Put, &path, Some(&body)).await.map_err(|e| e.to_string())?;
    let peers: Value = local.get("/api/v1/peers").await.map_err(|e| e.to_string())?;
    let mut results = Vec::new();
    let mut pending = Vec::new();
    for peer in peers["peers"].as_array().into_iter().flatten() {
        let node_id = peer["nodeId"].as_str().unwrap_or_default().to_string();
        if peer["status"] != "online" {
            results.push(
                json!({"nodeId": node_id, "hostname": peer["hostname"], "success": false, "error": "Peer offline"}),
            );
            continue;
        }
        let client = target(&daemon, Some(&node_id), &args).await;
        let (path, body) = (path.clone(), body.clone());
        pending.push(smol::spawn(async move {
            let outcome = match client {
                Ok(client) => client.call::<Value>(Method::Put, &path, Some(&body)).await.map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(_) => json!({"nodeId": node_id, "success": true}),
                Err(error) => json!({"nodeId": node_id, "success": false, "error": error}),
            }
        }));
    }
    for task in pending {
        results.push(task.await);
    }
    Ok(pretty(&json!({"localSet": true, "peers": results})))
}
