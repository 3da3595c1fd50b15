//! The lock tools: acquire, renew and release a lease with a fencing token on a daemon, so
//! agents on several machines can take turns on a shared resource.

use std::sync::Arc;

use serde_json::{json, Value};

use super::{handler, object, peer_property, pretty, target, Args, Outcome, Tool};
use crate::mcp::daemon::DaemonLocator;
use crate::peer::Method;
use crate::percent;

fn name() -> Value {
    json!({"type": "string", "description": "The lock's name (A-Z a-z 0-9 . _ - : / @), e.g. 'deploy/prod'"})
}

fn holder() -> Value {
    json!({"type": "string", "description": "Who holds the lock (default: this MCP server, mcp:<hostname>:<pid>); use the same holder to renew and release"})
}

fn peer() -> Value {
    peer_property("that keeps the lock (omit for this machine)")
}

pub(super) fn tools() -> Vec<Tool> {
    vec![
        Tool {
            name: "loopsy_lock_acquire",
            description: "Acquire a lock (a lease) on a Loopsy daemon so agents take turns on a shared resource. Returns the holder, \
                          the fencing token and expiresAt; renew before expiresAt or the lock expires. Pass the token as ifFence to \
                          context writes so a write made after the lock passed to another agent is refused. Fails if another holder \
                          has it (after waiting up to 'wait' seconds).",
            schema: || {
                object(
                    json!({"name": name(), "ttl": {"type": "number", "description": "Seconds the lock lasts without a renewal (0.1 to 86400)"},
                           "wait": {"type": "number", "description": "Seconds to wait while another holder has it (0 to 600; default 0)"},
                           "holder": holder(), "peer": peer()}),
                    &["name", "ttl"],
                )
            },
            run: handler!(acquire),
        },
        Tool {
            name: "loopsy_lock_renew",
            description: "Renew a lock this holder has, for its TTL (or a new 'ttl') from now. Fails if the lock expired or passed to another holder: then stop using the resource.",
            schema: || {
                object(
                    json!({"name": name(), "ttl": {"type": "number", "description": "New TTL in seconds (default: the lock's)"}, "holder": holder(), "peer": peer()}),
                    &["name"],
                )
            },
            run: handler!(renew),
        },
        Tool {
            name: "loopsy_lock_release",
            description: "Release a lock this holder has, so the next agent can take it.",
            schema: || object(json!({"name": name(), "holder": holder(), "peer": peer()}), &["name"]),
            run: handler!(release),
        },
    ]
}

/// This MCP server as a holder: stable for its life, distinct from other servers.
fn default_holder() -> String {
    format!("mcp:{}:{}", crate::identity::os_hostname(), std::process::id())
}

fn lock_path(args: &Args) -> String {
    format!("/api/v1/locks/{}", percent::encode(args.req("name")))
}

fn body(args: &Args, with: &[&str]) -> Value {
    let mut body = json!({"holder": args.str("holder").map_or_else(default_holder, String::from)});
    for name in with {
        if let Some(value) = args.value(name) {
            body[*name] = value.clone();
        }
    }
    body
}

async fn acquire(daemon: Arc<DaemonLocator>, args: Args) -> Outcome {
    let client = target(&daemon, args.str("peer"), &args).await?;
    // The request may wait up to 600 s for the lock.
    let client = client.with_timeout(std::time::Duration::from_secs(630));
    let grant: Value = client
        .call(Method::Post, &lock_path(&args), Some(&body(&args, &["ttl", "wait"])))
        .await
        .map_err(|e| e.to_string())?;
    Ok(pretty(&grant))
}

async fn renew(daemon: Arc<DaemonLocator>, args: Args) -> Outcome {
    let client = target(&daemon, args.str("peer"), &args).await?;
    let path = format!("{}/renew", lock_path(&args));
    let grant: Value =
        client.call(Method::Post, &path, Some(&body(&args, &["ttl"]))).await.map_err(|e| e.to_string())?;
    Ok(pretty(&grant))
}

async fn release(daemon: Arc<DaemonLocator>, args: Args) -> Outcome {
    let client = target(&daemon, args.str("peer"), &args).await?;
    let answer: Value =
        client.call(Method::Delete, &lock_path(&args), Some(&body(&args, &[]))).await.map_err(|e| e.to_string())?;
    Ok(pretty(&answer))
}
