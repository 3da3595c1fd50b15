//! The MCP tools for messaging and AI tasks, driven through raw JSON-RPC lines to
//! `loopsy mcp serve` against real daemons: each tool's result text and its error results.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::messages::{messaging_home, pair, register, trust_each_other};
use crate::support::mcp_stdio::McpServer;
use crate::support::{wait_until, Daemon, Home, TempDir};

const WAIT: Duration = Duration::from_secs(20);

/// The line of `text` that starts with `prefix`, without the prefix.
#[track_caller]
fn line_after<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines().find_map(|l| l.strip_prefix(prefix)).unwrap_or_else(|| panic!("no line {prefix:?} in {text:?}"))
}

#[test]
fn the_messaging_tools_send_read_acknowledge_and_report_with_1_0_21_texts() {
    let (alice, bob) = pair("mcp-msg");
    let mut alice_mcp = McpServer::spawn(alice.home.path());
    let mut bob_mcp = McpServer::spawn(bob.home.path());
    assert_eq!(bob_mcp.ok("loopsy_check_inbox", json!({})), "No new messages in inbox.");

    let sent = alice_mcp.ok("loopsy_send_message", json!({"peer": "bob", "type": "request", "body": "please review"}));
    let id = line_after(&sent, "ID: ").to_string();
    assert_eq!(
        sent,
        format!(
            "Message sent!\nID: {id}\nTo: bob.lan (127.0.0.1:{})\nType: request\nInbox key: inbox:bob.lan:{id}\nDelivery: delivered",
            bob.port
        )
    );
    let chat = alice_mcp.ok("loopsy_send_message", json!({"peer": "bob", "body": "default type"}));
    assert_eq!(line_after(&chat, "Type: "), "chat");
    let chat_id = line_after(&chat, "ID: ").to_string();

    let inbox = bob_mcp.ok("loopsy_check_inbox", json!({}));
    assert_eq!(
        inbox,
        format!(
            "2 message(s):\n\n[request] From: alice.lan | ID: {id}\n  Body: please review\n  Key: inbox:bob.lan:{id}\n\n\
             [chat] From: alice.lan | ID: {chat_id}\n  Body: default type\n  Key: inbox:bob.lan:{chat_id}"
        )
    );
    let key = format!("inbox:bob.lan:{id}");
    assert_eq!(
        bob_mcp.ok("loopsy_ack_message", json!({"messageKey": key, "messageId": id})),
        format!("ACK sent for message {id} and inbox entry cleaned up.")
    );
    assert_eq!(
        alice_mcp.ok("loopsy_check_ack", json!({"peer": "bob"})),
        format!(
            "Last ACK from bob: {id}\n\nMessages to bob.lan:\n  {id} [request] delivered, acknowledged\n  {chat_id} [chat] delivered, not acknowledged"
        )
    );
    assert_eq!(
        bob_mcp.ok("loopsy_check_ack", json!({"peer": "alice"})),
        "No ACK received from alice yet.\n\nNo messages to alice.lan on record."
    );

    // Errors an agent can act on; no tool takes a key.
    assert!(alice_mcp
        .error("loopsy_send_message", json!({"peer": "carol", "body": "x"}))
        .contains("unknown peer 'carol'"));
    let refused = alice_mcp.error("loopsy_send_message", json!({"peer": "bob", "body": "x", "apiKey": "k"}));
    assert!(refused.contains("unknown argument 'apiKey'"), "{refused}");
    assert!(alice_mcp
        .error("loopsy_send_message", json!({"peer": "bob", "body": "x", "type": "ack"}))
        .contains("'type'"));
    assert!(alice_mcp.error("loopsy_send_message", json!({"peer": "bob"})).contains("'body' is required"));
    assert!(bob_mcp.error("loopsy_ack_message", json!({"messageKey": key})).contains("no message"));
    assert!(bob_mcp.error("loopsy_ack_message", json!({})).contains("'messageKey' is required"));
    let chat_key = format!("inbox:bob.lan:{chat_id}");
    assert!(bob_mcp
        .error("loopsy_ack_message", json!({"messageKey": chat_key, "messageId": id}))
        .contains(&format!("not {id}")));
    assert!(alice_mcp.error("loopsy_check_ack", json!({"peer": "carol"})).contains("unknown peer"));
    let listed = alice_mcp.request("tools/list", json!({}));
    let names: Vec<&str> =
        listed["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    for name in ["loopsy_send_message", "loopsy_check_inbox", "loopsy_ack_message", "loopsy_check_ack"] {
        assert!(names.contains(&name), "{names:?}");
    }
    // No tool needs a key: 1.0.21's `peerApiKey`/`senderApiKey` are deprecated aliases only.
    for tool in listed["result"]["tools"].as_array().unwrap() {
        for (name, property) in tool["inputSchema"]["properties"].as_object().unwrap() {
            assert!(!name.to_lowercase().contains("apikey") || property["deprecated"] == true, "{name}");
        }
        assert!(!tool["inputSchema"]["required"].to_string().to_lowercase().contains("apikey"));
    }
}

#[test]
fn a_message_to_a_peer_that_is_down_is_reported_queued_and_tools_say_when_the_daemon_is_down() {
    let (alice_home, bob_home) = (messaging_home("mcp-down-a", "alice.lan"), messaging_home("mcp-down-b", "bob.lan"));
    trust_each_other(&alice_home, &bob_home);
    let mut bob = bob_home.start();
    let bob_port = bob.port;
    bob.stop();
    let mut alice = alice_home.start();
    register(&alice, "bob", bob_port);
    let mut mcp = McpServer::spawn(alice.home.path());
    let sent = mcp.ok("loopsy_send_message", json!({"peer": "bob", "body": "are you there?"}));
    let delivery = line_after(&sent, "Delivery: ");
    assert!(delivery.starts_with("queued (cannot reach"), "{sent}");
    assert!(delivery.ends_with("the daemon retries until it is delivered or expires (1 h)"), "{sent}");
    wait_until(WAIT, "a retry", || {
        mcp.ok("loopsy_check_ack", json!({"peer": "bob"})).contains("attempt(s); last error")
    });

    alice.stop();
    for (tool, arguments) in [
        ("loopsy_check_inbox", json!({})),
        ("loopsy_send_message", json!({"peer": "bob", "body": "x"})),
        ("loopsy_check_ack", json!({"peer": "bob"})),
        ("loopsy_ack_message", json!({"messageKey": "inbox:alice.lan:1-x-0000"})),
    ] {
        let text = mcp.error(tool, arguments);
        assert!(text.contains("not running") && text.contains("loopsy start"), "{tool}: {text}");
    }
    drop(bob);
}

/// A daemon whose PATH starts with the stand-in agent CLIs (see tests/tasks.rs).
fn agents_daemon(home: Home, user_home: &Path) -> Daemon {
    let mut home = home;
    home.with_stand_in_agents();
    home.env.push(("HOME".into(), user_home.display().to_string()));
    home.start()
}

// See: #17 (item 1): agents may list approvals but never decide them.
#[test]
fn the_task_tools_dispatch_follow_and_list_tasks_on_a_peer_and_only_a_human_approves() {
    let user_home = TempDir::new("mcp-tasks-user");
    let (alice_home, bob_home) = (Home::new("mcp-tasks-a"), Home::new("mcp-tasks-b"));
    trust_each_other(&alice_home, &bob_home);
    let bob = agents_daemon(bob_home, user_home.path());
    let alice = alice_home.start();
    register(&alice, "bob", bob.port);
    let mut mcp = McpServer::spawn(alice.home.path());
    let work = TempDir::new("mcp-tasks-work");
    let cwd = work.path().to_str().unwrap();

    let info = mcp.ok("loopsy_task_dispatch", json!({"peer": "bob", "prompt": "tool", "agent": "claude", "cwd": cwd}));
    let info: serde_json::Value = serde_json::from_str(&info).expect("the task info as JSON");
    assert_eq!((info["status"].as_str(), info["agent"].as_str()), (Some("running"), Some("claude")));
    let task_id = info["taskId"].as_str().unwrap().to_string();

    let mut status = String::new();
    wait_until(WAIT, "a pending approval", || {
        status = mcp.ok("loopsy_task_status", json!({"peer": "bob", "taskId": task_id}));
        status.contains("Pending approvals")
    });
    assert!(status.contains("\"status\": \"waiting_approval\""), "{status}");
    assert!(status.contains("Latest events:") && status.contains("[permission_request]"), "{status}");
    let request_id = line_after(&status, "  requestId ").split(':').next().unwrap().to_string();
    assert!(status.contains("a human answers them with `loopsy approvals`"), "{status}");
    // The agent sees the request in the approval inbox, and has no tool to answer it.
    let mut listed = String::new();
    wait_until(WAIT, "alice's inbox lists bob's request", || {
        listed = mcp.ok("loopsy_approvals_list", json!({}));
        listed.contains(&task_id)
    });
    assert!(listed.starts_with("1 permission request(s):\n- Bash on bob ("), "{listed}");
    assert!(listed.contains("echo hi > out.txt"), "{listed}");
    let tools = mcp.request("tools/list", json!({}));
    let names: Vec<&str> =
        tools["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"loopsy_approvals_list"), "{names:?}");
    for word in ["approve", "deny", "decide"] {
        assert!(!names.iter().any(|n| n.contains(word)), "a tool that decides: {names:?}");
    }
    let refused = mcp.request(
        "tools/call",
        json!({"name": "loopsy_task_approve", "arguments": {"peer": "bob", "taskId": task_id, "requestId": request_id, "approved": true}}),
    );
    assert!(refused["error"]["message"].as_str().unwrap().contains("unknown tool"), "{refused}");
    // The human decides, in alice's inbox.
    let decision =
        json!({"target": listed_target(&alice), "taskId": task_id, "requestId": request_id, "approved": true});
    alice.req("POST", "/api/v1/approvals/decide").json(&decision).send().expect(200);
    wait_until(WAIT, "the task completes", || {
        status = mcp.ok("loopsy_task_status", json!({"peer": "bob", "taskId": task_id}));
        status.contains("\"status\": \"completed\"")
    });
    assert!(status.contains("[result]") && status.contains("[exit]"), "{status}");
    assert!(!status.contains("Pending approvals"), "{status}");
    assert!(work.path().join("out.txt").exists(), "the approved tool ran");

    let listed = mcp.ok("loopsy_task_list", json!({"peer": "bob"}));
    assert!(listed.contains(&task_id), "{listed}");
    let local = mcp.ok("loopsy_task_list", json!({}));
    assert!(!local.contains(&task_id), "this machine ran no task: {local}");

    // Errors an agent can act on.
    let missing = mcp.error("loopsy_task_status", json!({"peer": "bob", "taskId": "no-such-task"}));
    assert!(
        missing.contains("task 'no-such-task' not found on bob") && missing.contains("loopsy_task_list"),
        "{missing}"
    );
    assert!(mcp
        .error("loopsy_task_dispatch", json!({"peer": "carol", "prompt": "hello"}))
        .contains("unknown peer 'carol'"));
    assert!(mcp.error("loopsy_task_dispatch", json!({"peer": "bob"})).contains("'prompt' is required"));
    assert!(mcp
        .error("loopsy_task_dispatch", json!({"peer": "bob", "prompt": "x", "agent": "gpt"}))
        .contains("'agent'"));
}

/// The inbox's target id of alice's only peer.
fn listed_target(alice: &Daemon) -> String {
    let inbox = alice.get("/api/v1/approvals").expect(200);
    inbox["approvals"][0]["target"].as_str().unwrap().to_string()
}
