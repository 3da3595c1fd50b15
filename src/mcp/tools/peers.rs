//! `loopsy_list_peers`, `loopsy_peer_status`.

use std::sync::Arc;

use serde_json::{json, Value};

use super::{handler, object, peer_property, pretty, target, Args, Outcome, Tool};
use crate::mcp::daemon::DaemonLocator;

pub(super) fn tools() -> Vec<Tool> {
    vec![
        Tool {
            name: "loopsy_list_peers",
            description: "List all Loopsy peers on the network with their status (online/offline)",
            schema: || object(json!({}), &[]),
            run: handler!(list_peers),
        },
        Tool {
            name: "loopsy_peer_status",
            description: "Get detailed status information for a specific Loopsy peer",
            schema: || object(json!({"peer": peer_property("to ask")}), &["peer"]),
            run: handler!(peer_status),
        },
    ]
}

async fn list_peers(daemon: Arc<DaemonLocator>, _args: Args) -> Outcome {
    let client = daemon.client().await?;
    let peers: Value = client.get("/api/v1/peers").await.map_err(|e| e.to_string())?;
    Ok(pretty(&peers))
}

async fn peer_status(daemon: Arc<DaemonLocator>, args: Args) -> Outcome {
    let client = target(&daemon, Some(args.req("peer")), &args).await?;
    let status: Value = client.get("/api/v1/status").await.map_err(|e| e.to_string())?;
    Ok(pretty(&status))
}
