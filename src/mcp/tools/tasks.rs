//! AI-task tools (beyond 1.0.21's MCP): dispatch a task to a peer's agent CLI, follow it, list
//! tasks. They call the peer's `/api/v1/ai-tasks` (PROTOCOL.md §2.8). No tool answers a permission
//! request: agents may see them, only a human decides (`loopsy approvals`, the dashboard).

use std::sync::Arc;

use crate::peer::Method;
use serde_json::{json, Value};

use super::{handler, object, peer_property, pretty, target, Args, Outcome, Tool};
use crate::mcp::daemon::DaemonLocator;
use crate::peer::ClientError;
use crate::percent;

/// Events shown by `loopsy_task_status`, newest last.
const SUMMARY_EVENTS: usize = 10;
/// Characters of one event shown.
const SUMMARY_WIDTH: usize = 300;

fn task_id() -> Value {
    json!({"type": "string", "description": "The task id (taskId) from loopsy_task_dispatch or loopsy_task_list"})
}

pub(super) fn tools() -> Vec<Tool> {
    vec![
        Tool {
            name: "loopsy_task_dispatch",
            description: "Start an AI coding agent (Claude Code, Codex or Gemini CLI) on a peer with a prompt. \
                          Returns the task info; follow it with loopsy_task_status. Its permission requests \
                          are answered by a human (loopsy approvals, the dashboard), never by an agent.",
            schema: || {
                object(
                    json!({
                        "peer": peer_property("to run the agent on"),
                        "prompt": {"type": "string", "description": "What the agent should do"},
                        "agent": {"type": "string", "enum": ["claude", "codex", "gemini", "auto"], "default": "auto", "description": "Which agent CLI (auto: the first one installed)"},
                        "cwd": {"type": "string", "description": "Working directory on the peer (default: the peer user's home)"},
                        "model": {"type": "string", "description": "Model name passed to the agent"},
                        "permissionMode": {"type": "string", "enum": ["default", "acceptEdits", "bypassPermissions", "dontAsk", "plan"], "default": "default", "description": "How the agent asks for permission"}
                    }),
                    &["peer", "prompt"],
                )
            },
            run: handler!(dispatch),
        },
        Tool {
            name: "loopsy_task_status",
            description: "Get an AI task's info (status, exit code, error) and a summary of its latest events: \
                          texts, results, errors and pending permission requests.",
            schema: || {
                object(json!({"peer": peer_property("running the task"), "taskId": task_id()}), &["peer", "taskId"])
            },
            run: handler!(status),
        },
        Tool {
            name: "loopsy_task_list",
            description: "List the AI tasks of a peer (or of this machine), newest first",
            schema: || object(json!({"peer": peer_property("to ask (omit for this machine)")}), &[]),
            run: handler!(list),
        },
    ]
}

async fn dispatch(daemon: Arc<DaemonLocator>, args: Args) -> Outcome {
    let client = target(&daemon, Some(args.req("peer")), &args).await?;
    let mut body = json!({"prompt": args.req("prompt")});
    for name in ["agent", "cwd", "model", "permissionMode"] {
        if let Some(value) = args.str(name) {
            body[name] = value.into();
        }
    }
    let info: Value = client.call(Method::Post, "/api/v1/ai-tasks", Some(&body)).await.map_err(|e| e.to_string())?;
    Ok(pretty(&info))
}

async fn status(daemon: Arc<DaemonLocator>, args: Args) -> Outcome {
    let (peer, task_id) = (args.req("peer"), args.req("taskId"));
    let client = target(&daemon, Some(peer), &args).await?;
    let path = format!("/api/v1/ai-tasks/{}", percent::encode(task_id));
    let info: Value = client.get(&path).await.map_err(|e| task_error(e, task_id, peer))?;
    let events: Value = client.get(&format!("{path}/events")).await.map_err(|e| e.to_string())?;
    Ok(format!("{}\n\n{}", pretty(&info), summary(&info, &events["events"])))
}

async fn list(daemon: Arc<DaemonLocator>, args: Args) -> Outcome {
    let client = target(&daemon, args.str("peer"), &args).await?;
    let tasks: Value = client.get("/api/v1/ai-tasks").await.map_err(|e| e.to_string())?;
    Ok(pretty(&tasks))
}

fn task_error(error: ClientError, task_id: &str, peer: &str) -> String {
    match error {
        ClientError::Remote { status: 404, .. } => format!(
            "task '{task_id}' not found on {peer} (finished tasks are forgotten after a while; see loopsy_task_list)"
        ),
        other => other.to_string(),
    }
}

/// The latest texts, results, errors and status changes, and what waits for an answer.
fn summary(info: &Value, events: &Value) -> String {
    let shown: Vec<&Value> = events
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            matches!(e["type"].as_str(), Some("text" | "result" | "error" | "permission_request" | "status" | "exit"))
        })
        .collect();
    let mut text = String::from("Latest events:");
    if shown.is_empty() {
        text.push_str("\n  (none yet)");
    }
    for event in &shown[shown.len().saturating_sub(SUMMARY_EVENTS)..] {
        let data = match &event["data"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        text.push_str(&format!("\n  [{}] {}", event["type"].as_str().unwrap_or("?"), clip(&data)));
    }
    let pending = info["pendingApprovals"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| info.get("pendingApproval").filter(|p| p.is_object()).cloned().into_iter().collect());
    if !pending.is_empty() {
        text.push_str("\nPending approvals (a human answers them with `loopsy approvals` or the dashboard):");
        for approval in pending {
            text.push_str(&format!(
                "\n  requestId {}: {} ({} {})",
                approval["requestId"].as_str().unwrap_or("?"),
                approval["description"].as_str().unwrap_or(""),
                approval["toolName"].as_str().unwrap_or("?"),
                clip(&approval["toolInput"].to_string())
            ));
        }
    }
    text
}

fn clip(text: &str) -> String {
    let one_line = text.replace('\n', " ");
    if one_line.chars().count() <= SUMMARY_WIDTH {
        return one_line;
    }
    let cut: String = one_line.chars().take(SUMMARY_WIDTH).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_shows_the_latest_events_and_pending_approvals() {
        let events = json!([
            {"type": "system", "data": {"x": 1}},
            {"type": "text", "data": "Hello\nthere"},
            {"type": "tool_use", "data": {}},
            {"type": "result", "data": {"text": "done"}}
        ]);
        let info = json!({"pendingApprovals": [{"requestId": "r1", "description": "Claude wants to use: Bash", "toolName": "Bash", "toolInput": {"command": "ls"}}]});
        assert_eq!(
            summary(&info, &events),
            "Latest events:\n  [text] Hello there\n  [result] {\"text\":\"done\"}\nPending approvals (a human answers them with `loopsy approvals` or the dashboard):\n  requestId r1: Claude wants to use: Bash (Bash {\"command\":\"ls\"})"
        );
        assert_eq!(summary(&json!({}), &json!([])), "Latest events:\n  (none yet)");
        let many: Vec<Value> = (0..30).map(|i| json!({"type": "text", "data": format!("t{i}")})).collect();
        let text = summary(&json!({}), &Value::Array(many));
        assert!(text.contains("t29") && text.contains("t20") && !text.contains("t19"), "{text}");
        assert_eq!(clip(&"x".repeat(400)).chars().count(), SUMMARY_WIDTH + 1);
    }
}
