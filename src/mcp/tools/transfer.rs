//! `loopsy_transfer_file` (push or pull, streamed and verified), `loopsy_list_remote_files`.

use std::path::PathBuf;
use std::sync::Arc;

use crate::peer::Method;
use serde_json::{json, Value};

use super::{handler, object, peer_property, pretty, target, Args, Outcome, Tool};
use crate::mcp::daemon::DaemonLocator;
use crate::peer::transfer::PushFile;

pub(super) fn tools() -> Vec<Tool> {
    vec![
        Tool {
            name: "loopsy_transfer_file",
            description: "Transfer a file between this machine and a remote Loopsy peer (push or pull). Streams from \
                          disk, verifies the SHA-256 on both ends and resumes an interrupted transfer.",
            schema: || {
                object(
                    json!({
                        "direction": {"type": "string", "enum": ["push", "pull"], "description": "push: local to peer; pull: peer to local"},
                        "peer": peer_property("to exchange the file with"),
                        "sourcePath": {"type": "string", "description": "Absolute path of the file to send (local for push, on the peer for pull)"},
                        "destPath": {"type": "string", "description": "Absolute path to write (on the peer for push, local for pull)"}
                    }),
                    &["direction", "peer", "sourcePath", "destPath"],
                )
            },
            run: handler!(transfer_file),
        },
        Tool {
            name: "loopsy_list_remote_files",
            description: "List files in a directory on a remote Loopsy peer",
            schema: || {
                object(
                    json!({"peer": peer_property("to list on"), "path": {"type": "string", "description": "Absolute directory path on the peer"}}),
                    &["peer", "path"],
                )
            },
            run: handler!(list_remote_files),
        },
    ]
}

async fn transfer_file(daemon: Arc<DaemonLocator>, args: Args) -> Outcome {
    let client = target(&daemon, Some(args.req("peer")), &args).await?;
    let (source, dest) = (args.req("sourcePath"), args.req("destPath"));
    let quiet: crate::peer::transfer::OnProgress = Arc::new(|_, _| {});
    if args.req("direction") == "push" {
        let local = PathBuf::from(source);
        if !local.is_absolute() {
            return Err(format!("sourcePath '{source}' must be an absolute path on this machine"));
        }
        let job = PushFile { source: local, dest_path: dest.to_string(), mode: None };
        let reply = client.push_file(&job, quiet).await.map_err(|e| e.to_string())?;
        Ok(pretty(&serde_json::to_value(reply).expect("push replies serialise")))
    } else {
        let local = PathBuf::from(dest);
        if !local.is_absolute() {
            return Err(format!("destPath '{dest}' must be an absolute path on this machine"));
        }
        let pulled = client.pull_file(source, &local, quiet).await.map_err(|e| e.to_string())?;
        Ok(format!(
            "File pulled from peer and saved to {} ({} bytes, sha256 {}{})",
            pulled.path.display(),
            pulled.size,
            pulled.checksum,
            if pulled.verified { ", verified" } else { "" }
        ))
    }
}

async fn list_remote_files(daemon: Arc<DaemonLocator>, args: Args) -> Outcome {
    let client = target(&daemon, Some(args.req("peer")), &args).await?;
    let body = json!({"path": args.req("path")});
    let listing: Value =
        client.call(Method::Post, "/api/v1/transfer/list", Some(&body)).await.map_err(|e| e.to_string())?;
    Ok(pretty(&listing))
}
