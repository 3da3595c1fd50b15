//! `loopsy_approvals_list`: the approval inbox of the local daemon (`/api/v1/approvals`), so an
//! agent can see what waits for a human across this machine, its sessions and its peers. There
//! is deliberately no tool that approves or denies: only a human decides (`loopsy approvals`,
//! the dashboard).

use std::sync::Arc;

use serde_json::{json, Value};

use super::{handler, object, Args, Outcome, Tool};
use crate::mcp::daemon::DaemonLocator;

pub(super) fn tools() -> Vec<Tool> {
    vec![Tool {
        name: "loopsy_approvals_list",
        description: "List the permission requests of AI tasks waiting for a human, on this machine, its \
                      sessions and its peers (where, task, agent, tool, input, age), and which of those \
                      places cannot be reached. Read-only: agents cannot approve or deny; a human answers \
                      with `loopsy approvals` or the dashboard.",
        schema: || {
            object(
                json!({"all": {"type": "boolean", "default": false, "description": "Also list requests already decided, expired or withdrawn"}}),
                &[],
            )
        },
        run: handler!(list),
    }]
}

async fn list(daemon: Arc<DaemonLocator>, args: Args) -> Outcome {
    let client = daemon.client().await?;
    let inbox: Value = client.get("/api/v1/approvals").await.map_err(|e| e.to_string())?;
    Ok(render(&inbox, args.bool("all").unwrap_or(false)))
}

/// One line per request, then the places that cannot be reached.
fn render(inbox: &Value, all: bool) -> String {
    let items: Vec<&Value> =
        inbox["approvals"].as_array().into_iter().flatten().filter(|i| all || i["state"] == "pending").collect();
    let mut text = match (items.is_empty(), all) {
        (true, false) => "No permission request is waiting for a human.".to_string(),
        (true, true) => "No permission requests.".to_string(),
        (false, _) => format!("{} permission request(s):", items.len()),
    };
    for item in items {
        let input = item["toolInput"].to_string();
        let input: String = input.chars().take(300).collect();
        let mut line = format!(
            "\n- {} on {} ({}): task {} ({}), {}s ago: {}",
            item["toolName"].as_str().unwrap_or("?"),
            item["targetName"].as_str().unwrap_or("?"),
            item["target"].as_str().unwrap_or("?"),
            item["taskId"].as_str().unwrap_or("?"),
            item["agent"].as_str().unwrap_or("?"),
            item["ageMs"].as_u64().unwrap_or(0) / 1000,
            input,
        );
        if item["state"] != "pending" {
            line.push_str(&format!(
                " [{} by {}]",
                item["state"].as_str().unwrap_or("?"),
                item["decidedBy"].as_str().unwrap_or("?")
            ));
        }
        text.push_str(&line);
    }
    for target in inbox["targets"].as_array().into_iter().flatten().filter(|t| t["state"] != "live") {
        let why = target["error"].as_str().map(|e| format!(": {e}")).unwrap_or_default();
        text.push_str(&format!(
            "\n({} {} is {}{why})",
            target["kind"].as_str().unwrap_or("?"),
            target["name"].as_str().unwrap_or("?"),
            target["state"].as_str().unwrap_or("?")
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_names_place_task_tool_and_input_and_the_unreachable_places() {
        let inbox = json!({
            "approvals": [
                {"state": "pending", "toolName": "Bash", "targetName": "w1", "target": "session:w1", "taskId": "t1", "agent": "claude", "ageMs": 5_400, "toolInput": {"command": "ls"}},
                {"state": "approved", "toolName": "Edit", "targetName": "bob", "target": "peer:x", "taskId": "t2", "agent": "codex", "ageMs": 1, "toolInput": {}, "decidedBy": "owner"}
            ],
            "targets": [{"kind": "peer", "name": "carol", "state": "down", "error": "refused"}, {"kind": "local", "name": "me", "state": "live"}]
        });
        assert_eq!(
            render(&inbox, false),
            "1 permission request(s):\n- Bash on w1 (session:w1): task t1 (claude), 5s ago: {\"command\":\"ls\"}\n(peer carol is down: refused)"
        );
        assert!(render(&inbox, true).contains("[approved by owner]"));
        assert!(render(&json!({}), false).starts_with("No permission request is waiting"));
    }
}
