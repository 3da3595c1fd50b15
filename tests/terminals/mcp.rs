//! The terminal MCP tools from the official Python SDK (`tests/mcp/sdk_client.py`): an agent
//! starts python3 on a peer, types `1+1` and Enter, and reads the screen until `2` is on it.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{command, loopsy_bin, run_within};

#[test]
fn an_agent_drives_a_python_repl_through_the_terminal_tools() {
    let Some(python) = crate::support::prerequisite(crate::support::skip::python_with(&["mcp"])) else { return };
    let daemon = super::terminal_daemon("term-mcp", |_| {});
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/sdk_client.py");
    let plan = json!([
        {"name": "loopsy_terminal_start", "arguments": {"peer": "local", "command": "python3", "args": ["-q"], "name": "repl", "cols": 60, "rows": 12}},
        {"name": "loopsy_terminal_send", "arguments": {"peer": "local", "id": "repl", "text": "1+1", "keys": ["Enter"]}},
        {"name": "loopsy_terminal_read", "arguments": {"peer": "local", "id": "repl", "waitFor": "2", "timeoutMs": 20000}},
        {"name": "loopsy_terminal_send", "arguments": {"peer": "local", "id": "repl", "text": "print('x' * 3)", "keys": ["Enter"]}},
        {"name": "loopsy_terminal_read", "arguments": {"peer": "local", "id": "repl", "waitFor": "xxx", "timeoutMs": 20000}},
        {"name": "loopsy_terminal_read", "arguments": {"peer": "local", "id": "repl", "waitFor": "never shown", "timeoutMs": 300}},
        {"name": "loopsy_terminal_list", "arguments": {"peer": "local"}},
        {"name": "loopsy_terminal_send", "arguments": {"peer": "local", "id": "repl", "keys": ["Hyper-Q"]}},
        {"name": "loopsy_terminal_send", "arguments": {"peer": "local", "id": "repl"}},
        {"name": "loopsy_terminal_send", "arguments": {"peer": "local", "id": "repl", "keys": ["Ctrl-D"]}},
        {"name": "loopsy_terminal_read", "arguments": {"peer": "local", "id": "repl", "quietMs": 200, "timeoutMs": 20000}},
        {"name": "loopsy_terminal_kill", "arguments": {"peer": "local", "id": "repl"}},
        {"name": "loopsy_terminal_read", "arguments": {"peer": "local", "id": "repl"}}
    ]);
    let home = daemon.home.path().to_str().unwrap();
    let out = run_within(
        command(&python).args([script, "2025-06-18", &plan.to_string(), loopsy_bin(), "--home", home, "mcp", "serve"]),
        Duration::from_secs(120),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let seen: Value = serde_json::from_str(&out.stdout).unwrap();
    let calls = seen["calls"].as_array().unwrap();
    let text = |i: usize| calls[i]["text"].as_str().unwrap().to_string();
    let ok = |i: usize| assert!(calls[i]["isError"] == false, "{}: {}", calls[i]["name"], calls[i]["text"]);

    ok(0);
    let started: Value = serde_json::from_str(&text(0)).unwrap();
    assert_eq!((started["name"].as_str(), started["state"].as_str()), (Some("repl"), Some("running")));
    assert_eq!(started["id"].as_str().map(str::len), Some(36), "the start answer carries the id");
    ok(1);
    ok(2);
    let screen = text(2);
    assert!(screen.lines().any(|line| line == "2"), "the screen shows the answer:\n{screen}");
    assert!(screen.contains(">>> 1+1"), "{screen}");
    ok(4);
    assert!(text(4).lines().any(|line| line == "xxx"), "{}", text(4));
    ok(5);
    assert!(text(5).ends_with("['never shown' did not appear]"), "{}", text(5));
    ok(6);
    assert!(text(6).contains("\"repl\""));
    assert!(calls[7]["isError"] == true && text(7).contains("Hyper-Q"), "{}", text(7));
    assert!(calls[8]["isError"] == true && text(8).contains("text, keys or both"), "{}", text(8));
    ok(9);
    ok(10);
    assert!(text(10).contains("exited with code 0"), "Ctrl-D ended python:\n{}", text(10));
    ok(11);
    assert!(calls[12]["isError"] == true && text(12).contains("no terminal 'repl'"), "{}", text(12));
}
