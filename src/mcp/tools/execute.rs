//! `loopsy_execute`: run a program on a peer and return its collected result.
//!
//! The request carries an `Idempotency-Key`: when the connection drops (or the answer is slow
//! to come), the same request is sent again and the daemon answers with the job the first one
//! started, so the command runs once and the agent still gets its whole output.

use std::sync::Arc;

use std::time::Duration;

use serde_json::{json, Value};

use super::{handler, object, peer_property, pretty, target, Args, Outcome, Tool};
use crate::mcp::daemon::DaemonLocator;

pub(super) fn tools() -> Vec<Tool> {
    vec![Tool {
        name: "loopsy_execute",
        description: "Run a command on a remote Loopsy peer (or 'local') and return exit code, stdout and stderr. \
                      The program runs without a shell (use e.g. sh -c for pipes); output is capped and reported as truncated; \
                      the peer's default timeout applies when none is given; denied programs are refused.",
        schema: || {
            object(
                json!({
                    "peer": peer_property("to run on"),
                    "command": {"type": "string", "description": "Program to run"},
                    "args": {"type": "array", "items": {"type": "string"}, "description": "Arguments"},
                    "cwd": {"type": "string", "description": "Working directory on the peer"},
                    "timeout": {"type": "integer", "minimum": 1, "description": "Timeout in milliseconds"}
                }),
                &["peer", "command"],
            )
        },
        run: handler!(execute),
    }]
}

async fn execute(daemon: Arc<DaemonLocator>, args: Args) -> Outcome {
    let client = target(&daemon, Some(args.req("peer")), &args).await?;
    let mut body = json!({"command": args.req("command"), "args": args.strings("args")});
    if let Some(cwd) = args.str("cwd") {
        body["cwd"] = cwd.into();
    }
    if let Some(timeout) = args.u64("timeout") {
        body["timeout"] = timeout.into();
    }
    // One answer may take as long as the job runs (the daemon's default timeout is 5 minutes);
    // retries go on for some minutes of unreachable daemon beyond that.
    let wait =
        args.u64("timeout").map_or(Duration::from_secs(330), |ms| Duration::from_millis(ms) + Duration::from_secs(30));
    let client = client.with_timeout(wait);
    let limit = args
        .u64("timeout")
        .map_or(Duration::from_secs(1800), |ms| Duration::from_millis(ms) + Duration::from_secs(300));
    let result: Value = client.post_idempotent("/api/v1/execute", &body, limit).await.map_err(|e| e.to_string())?;
    Ok(pretty(&result))
}
