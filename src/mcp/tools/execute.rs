//! `loopsy_execute`: run a program on a peer and return its collected result.

use std::sync::Arc;

use serde_json::{json, Value};
use surf::http::Method;

use super::{handler, object, peer_property, pretty, target, Args, Outcome, Tool};
use crate::mcp::daemon::DaemonLocator;

pub fn tools() -> Vec<Tool> {
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
    let client = target(&daemon, Some(args.req("peer")), &args)?;
    let mut body = json!({"command": args.req("command"), "args": args.strings("args")});
    if let Some(cwd) = args.str("cwd") {
        body["cwd"] = cwd.into();
    }
    if let Some(timeout) = args.u64("timeout") {
        body["timeout"] = timeout.into();
    }
    let result: Value = client.call(Method::Post, "/api/v1/execute", Some(&body)).await.map_err(|e| e.to_string())?;
    Ok(pretty(&result))
}
