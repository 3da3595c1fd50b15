//! `loopsy_session_list`, `_start`, `_stop`, `_remove` (§7.3 tools 9–12).
//!
//! 1.0.21 went through the daemon's unauthenticated dashboard routes; these call the sessions
//! module directly (the MCP server runs on the machine whose sessions it manages; the state
//! lives in the session directories, not here). Results are §9.6 session objects.

use std::sync::Arc;

use serde_json::{json, Value};

use super::{handler, object, pretty, Args, Outcome, Tool};
use crate::mcp::daemon::DaemonLocator;
use crate::sessions::{SessionName, Sessions};

fn name() -> Value {
    json!({"type": "string", "description": "Session name: 1 to 64 letters, digits, '.', '_' or '-' (e.g. worker-1)"})
}

pub(super) fn tools() -> Vec<Tool> {
    vec![
        Tool {
            name: "loopsy_session_list",
            description: "List all Loopsy sessions (workers) with their status, port, and hostname",
            schema: || object(json!({}), &[]),
            run: handler!(list),
        },
        Tool {
            name: "loopsy_session_start",
            description: "Start a new Loopsy worker session. Creates a new daemon instance on a free port.",
            schema: || object(json!({"name": name()}), &["name"]),
            run: handler!(start),
        },
        Tool {
            name: "loopsy_session_stop",
            description: "Stop a running Loopsy worker session",
            schema: || object(json!({"name": name()}), &["name"]),
            run: handler!(stop),
        },
        Tool {
            name: "loopsy_session_remove",
            description: "Stop and remove a Loopsy worker session, deleting its configuration and data",
            schema: || object(json!({"name": name()}), &["name"]),
            run: handler!(remove),
        },
    ]
}

/// Runs `work` on the blocking pool (sessions start processes and wait for them).
async fn on_sessions<T: Send + 'static>(
    daemon: &DaemonLocator,
    work: impl FnOnce(Sessions) -> anyhow::Result<T> + Send + 'static,
) -> Result<T, String> {
    let sessions = Sessions::current(&daemon.paths).map_err(|e| format!("{e:#}"))?;
    blocking::unblock(move || work(sessions)).await.map_err(|e| format!("{e:#}"))
}

fn session_name(args: &Args) -> Result<SessionName, String> {
    SessionName::parse(args.req("name"))
}

async fn list(daemon: Arc<DaemonLocator>, _args: Args) -> Outcome {
    let listing = on_sessions(&daemon, |sessions| sessions.list()).await?;
    Ok(pretty(&json!(listing)))
}

async fn start(daemon: Arc<DaemonLocator>, args: Args) -> Outcome {
    let name = session_name(&args)?;
    let started = on_sessions(&daemon, move |sessions| sessions.start(&name)).await?;
    let mut result = json!(started.session);
    if started.already_running {
        result["alreadyRunning"] = json!(true);
    }
    if !started.warnings.is_empty() {
        result["warnings"] = json!(started.warnings);
    }
    Ok(pretty(&result))
}

async fn stop(daemon: Arc<DaemonLocator>, args: Args) -> Outcome {
    let name = session_name(&args)?;
    let session = on_sessions(&daemon, move |sessions| {
        sessions.stop(&name)?;
        sessions.get(&name)
    })
    .await?;
    Ok(pretty(&json!(session)))
}

async fn remove(daemon: Arc<DaemonLocator>, args: Args) -> Outcome {
    let name = session_name(&args)?;
    let removed = name.to_string();
    on_sessions(&daemon, move |sessions| {
        sessions.stop(&name)?;
        sessions.remove(&name)
    })
    .await?;
    Ok(pretty(&json!({"success": true, "name": removed})))
}
