//! MCP prompts: `loopsy_help` and `loopsy_coordinate` (PROTOCOL.md §7.5), written for this tool.

use serde_json::{json, Value};

use super::protocol::RpcError;

const HELP: &str = r#"# loopsy: working with agents on other machines

loopsy connects this machine to other machines running loopsy on the LAN. Peers are named by their name, hostname, node-id prefix or `address[:port]`; the daemon holds every key, so no tool takes or returns one.

## Finding peers
- `loopsy_list_peers`: every known peer, online or not.
- `loopsy_peer_status`: the status of one peer.

## Messages (durable, acknowledged one by one)
- `loopsy_send_message`: send a `chat`, `request`, `response` or `broadcast` message to a peer. If it is offline the message waits in the outbox and is retried until it is delivered or expires.
- `loopsy_check_inbox`: messages addressed to this machine, oldest first.
- `loopsy_ack_message`: acknowledge a message (the sender sees it with `loopsy_check_ack`) and remove it from the inbox.
- `loopsy_check_ack`: which of your messages a peer has acknowledged.

## Working on a peer
- `loopsy_execute`: run a program on a peer (no shell unless you run one, e.g. `sh -c`); output is capped and the result says if it was truncated.
- `loopsy_transfer_file`: push a file to a peer or pull one from it; checksums are verified.
- `loopsy_list_remote_files`: list a directory on a peer.
- `loopsy_context_set` / `_get` / `_list` / `_delete`: a shared key-value store on any peer (or here when `peer` is omitted), with TTLs and revisions: pass `ifRevision` to update only what you last read (0 = create only), which makes locks and counters safe.
- `loopsy_broadcast_context`: set a key on every online peer; the result lists each peer's outcome.

## AI agents on a peer
- `loopsy_task_dispatch`: start Claude Code, Codex or Gemini CLI on a peer with a prompt.
- `loopsy_task_status`: a task's state and its latest events, with the permission requests waiting for an answer.
- `loopsy_approvals_list`: every permission request waiting for a human, here, in sessions and on peers. Only a human answers them (`loopsy approvals`, the dashboard); no tool approves or denies.
- `loopsy_task_list`: the tasks of a peer, newest first.

## Sessions on this machine
- `loopsy_session_list`, `loopsy_session_start`, `loopsy_session_stop`, `loopsy_session_remove`: extra daemons (workers) on this machine.

## How to work with another agent
1. `loopsy_list_peers` and pick the peer.
2. `loopsy_send_message` with type `request` describing the work.
3. Poll `loopsy_check_inbox` every 5 to 10 seconds while a conversation is active.
4. `loopsy_ack_message` each message you have handled.
5. Use `loopsy_execute`, `loopsy_transfer_file` and the context tools for the work itself.

## Protocol details
Messages are context entries: `inbox:<recipient hostname>:<message id>` on the recipient, `outbox:<message id>` on the sender, and acknowledgements under `ack:<acknowledger hostname>` (the latest id, as loopsy 1.0.21 did) and `ack:<acknowledger hostname>:<message id>` (one per message). The value is the JSON envelope `{from, to, ts, id, type, body}`; ids look like `<ms>-<hostname>-<hex>`. Messages live 3600 s, acknowledgements 7200 s.
"#;

pub(super) fn list() -> Value {
    json!({"prompts": [
        {"name": "loopsy_help", "description": "Get help with using Loopsy tools for cross-machine communication"},
        {"name": "loopsy_coordinate", "description": "Start a coordination session with an agent on another machine",
         "arguments": [
            {"name": "peer", "description": "The peer to coordinate with (name, hostname or address)", "required": true},
            {"name": "task", "description": "The task you want to coordinate on", "required": true}
         ]}
    ]})
}

pub(super) fn get(params: &Value) -> Result<Value, RpcError> {
    let name = params.get("name").and_then(Value::as_str).ok_or_else(|| RpcError::invalid_params("missing 'name'"))?;
    let arguments = params.get("arguments").cloned().unwrap_or(json!({}));
    let argument =
        |names: &[&str]| names.iter().find_map(|n| arguments.get(*n).and_then(Value::as_str).map(String::from));
    let (description, text) = match name {
        "loopsy_help" => ("How to use loopsy", HELP.to_string()),
        "loopsy_coordinate" => {
            // 1.0.21 called the argument `peerAddress`: still accepted.
            let peer = argument(&["peer", "peerAddress"])
                .ok_or_else(|| RpcError::invalid_params("missing argument 'peer'"))?;
            let task = argument(&["task"]).ok_or_else(|| RpcError::invalid_params("missing argument 'task'"))?;
            ("Coordinate with another machine", coordinate(&peer, &task))
        }
        other => return Err(RpcError::invalid_params(format!("unknown prompt '{other}'; see prompts/list"))),
    };
    Ok(json!({"description": description, "messages": [{"role": "user", "content": {"type": "text", "text": text}}]}))
}

fn coordinate(peer: &str, task: &str) -> String {
    format!(
        "Coordinate with the agent on the loopsy peer `{peer}` on this task:\n\n{task}\n\n\
         1. Check that `{peer}` is online with `loopsy_peer_status`.\n\
         2. Send it a `request` message describing the task and what you need from it (`loopsy_send_message`).\n\
         3. Poll `loopsy_check_inbox` every 5 to 10 seconds for its replies.\n\
         4. Acknowledge each reply with `loopsy_ack_message`.\n\
         5. Run what you need on `{peer}` with `loopsy_execute`, and share state with the context tools.\n\
         6. Move files with `loopsy_transfer_file`.\n\n\
         Use the messaging tools for every exchange, so both sides keep a record."
    )
}
