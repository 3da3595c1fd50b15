//! 1.0.21's MCP argument sets (PROTOCOL.md §7.3: `peerAddress`, `peerPort`, `peerApiKey`,
//! `peerHostname`, `sender*`) still work: an address resolves to the known peer there with its
//! stored key, a key in the arguments is used only where loopsy holds none and is never echoed
//! or stored, and every such result carries a note that `peer` is preferred.

use serde_json::{json, Value};

use crate::messages::{messaging_home, register, trust_each_other};
use crate::support::mcp_stdio::McpServer;
use crate::support::{Daemon, Home, TempDir};

/// A tool call's result: (first text, whether it is an error, the note if any).
fn call(mcp: &mut McpServer, tool: &str, arguments: Value) -> (String, bool, Option<String>) {
    let answer = mcp.request("tools/call", json!({"name": tool, "arguments": arguments}));
    let result = &answer["result"];
    let content = result["content"].as_array().unwrap_or_else(|| panic!("a tool result: {answer}"));
    let text = content[0]["text"].as_str().unwrap().to_string();
    let note = content.get(1).map(|item| item["text"].as_str().unwrap().to_string());
    (text, result["isError"] == true, note)
}

#[track_caller]
fn ok_with_note(mcp: &mut McpServer, tool: &str, arguments: Value) -> String {
    let (text, is_error, note) = call(mcp, tool, arguments);
    assert!(!is_error, "{tool} failed: {text}");
    let note = note.unwrap_or_else(|| panic!("{tool}: no note about `peer`"));
    assert!(note.starts_with("Note: ") && note.contains("pass `peer` instead") && !note.contains('\n'), "{note}");
    text
}

fn with_transfer_dir(home: &Home, dir: &std::path::Path) {
    home.edit_config(|doc| doc["transfer"]["allowedPaths"] = vec![dir.to_string_lossy().into_owned()].into());
}

#[test]
fn the_1_0_21_argument_sets_reach_the_known_peer_with_its_stored_key() {
    let files = TempDir::new("alias-files");
    let (alice, bob) = (messaging_home("alias-a", "alice.lan"), messaging_home("alias-b", "bob.lan"));
    trust_each_other(&alice, &bob);
    with_transfer_dir(&bob, files.path());
    let (alice, bob) = (alice.start(), bob.start());
    register(&alice, "bob", bob.port);
    register(&bob, "alice", alice.port);
    let mut mcp = McpServer::spawn(alice.home.path());
    let mut bob_mcp = McpServer::spawn(bob.home.path());
    // The key a 1.0.21 prompt carries is not the one loopsy holds for bob: it must not be sent.
    let stale = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let at = json!({"peerAddress": "127.0.0.1", "peerPort": bob.port, "peerApiKey": stale});
    let with = |extra: Value| {
        let mut args = at.clone();
        args.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        args
    };

    let ran = ok_with_note(
        &mut mcp,
        "loopsy_execute",
        with(json!({"command": "echo", "args": ["hi"], "cwd": "/", "timeout": 5000})),
    );
    assert_eq!(serde_json::from_str::<Value>(&ran).unwrap()["stdout"], "hi\n", "the first item is still the JSON");
    let status = ok_with_note(&mut mcp, "loopsy_peer_status", at.clone());
    assert_eq!(serde_json::from_str::<Value>(&status).unwrap()["hostname"], "bob.lan");

    let local = files.path().join("local.txt");
    std::fs::write(&local, "payload").unwrap();
    let remote = files.path().join("remote.txt");
    let push = json!({"direction": "push", "sourcePath": local, "destPath": remote});
    ok_with_note(&mut mcp, "loopsy_transfer_file", with(push));
    assert_eq!(std::fs::read_to_string(&remote).unwrap(), "payload");
    let back = files.path().join("back.txt");
    let pulled = ok_with_note(
        &mut mcp,
        "loopsy_transfer_file",
        with(json!({"direction": "pull", "sourcePath": remote, "destPath": back})),
    );
    assert!(pulled.starts_with("File pulled from peer and saved to"), "{pulled}");
    let listing = ok_with_note(&mut mcp, "loopsy_list_remote_files", with(json!({"path": files.path()})));
    assert!(listing.contains("remote.txt"), "{listing}");

    ok_with_note(&mut mcp, "loopsy_context_set", with(json!({"key": "build", "value": "green", "ttl": 600})));
    assert_eq!(bob.get("/api/v1/context/build").expect(200)["value"], "green");
    let got = ok_with_note(&mut mcp, "loopsy_context_get", with(json!({"key": "build"})));
    assert_eq!(serde_json::from_str::<Value>(&got).unwrap()["value"], "green");
    let listed = ok_with_note(&mut mcp, "loopsy_context_list", with(json!({"prefix": "bu"})));
    assert!(listed.contains("\"build\""), "{listed}");
    ok_with_note(&mut mcp, "loopsy_context_delete", with(json!({"key": "build"})));
    bob.get("/api/v1/context/build").expect_error(404, 5001);
    // 1.0.21: context tools without an address act on this machine.
    ok_with_note(&mut mcp, "loopsy_context_set", json!({"key": "here", "value": "v", "peerApiKey": stale}));
    assert_eq!(alice.get("/api/v1/context/here").expect(200)["value"], "v");

    let sent = ok_with_note(
        &mut mcp,
        "loopsy_send_message",
        with(json!({"peerHostname": "bob.lan", "type": "request", "body": "please review"})),
    );
    let id = sent.lines().find_map(|l| l.strip_prefix("ID: ")).unwrap().to_string();
    assert!(sent.contains(&format!("Inbox key: inbox:bob.lan:{id}")), "{sent}");
    let acked = ok_with_note(
        &mut bob_mcp,
        "loopsy_ack_message",
        json!({"senderAddress": "127.0.0.1", "senderPort": alice.port, "senderApiKey": stale,
               "messageKey": format!("inbox:bob.lan:{id}"), "messageId": id}),
    );
    assert_eq!(acked, format!("ACK sent for message {id} and inbox entry cleaned up."));
    crate::support::wait_until(std::time::Duration::from_secs(15), "the ack arrives", || {
        call(&mut mcp, "loopsy_check_ack", json!({"peerHostname": "bob.lan"}))
            .0
            .starts_with(&format!("Last ACK from bob.lan: {id}"))
    });

    // The stale key went nowhere: not in any file of either home.
    for home in [alice.home.path(), bob.home.path()] {
        assert_no_file_holds(home, stale);
    }
}

#[test]
fn a_key_in_the_arguments_is_used_only_for_a_peer_loopsy_holds_no_key_for() {
    let alice = Daemon::start("offer-a");
    // Carol: not in alice's registry. Dave: in it (added by hand), with no key stored for him.
    let (carol, dave) = (Daemon::start("offer-c"), Daemon::start("offer-d"));
    alice
        .req("POST", "/api/v1/peers")
        .json(&json!({"address": "127.0.0.1", "port": dave.port, "name": "dave"}))
        .send()
        .expect(200);
    let mut mcp = McpServer::spawn(alice.home.path());
    for peer in [&carol, &dave] {
        let at = json!({"peerAddress": "127.0.0.1", "peerPort": peer.port});
        // Without a key alice's own is sent, which they do not accept...
        let (text, is_error, note) = call(&mut mcp, "loopsy_peer_status", at.clone());
        assert!(is_error && text.contains("Invalid API key"), "{text}");
        assert!(note.is_some(), "errors carry the note too");
        // ...with theirs it works, and a wrong one is refused without being repeated.
        let mut with_key = at.clone();
        with_key["peerApiKey"] = peer.key.clone().into();
        let status = ok_with_note(&mut mcp, "loopsy_peer_status", with_key);
        assert_eq!(
            serde_json::from_str::<Value>(&status).unwrap()["nodeId"],
            peer.get("/api/v1/status").expect(200)["nodeId"]
        );
        let wrong = "f".repeat(64);
        let mut with_wrong = at.clone();
        with_wrong["peerApiKey"] = wrong.clone().into();
        let (text, is_error, note) = call(&mut mcp, "loopsy_peer_status", with_wrong);
        assert!(is_error && !text.contains(&wrong) && !note.unwrap().contains(&wrong), "{text}");
        assert!(!text.contains(&peer.key), "{text}");
    }
    for home in [alice.home.path(), carol.home.path(), dave.home.path()] {
        assert_no_file_holds(home, &"f".repeat(64));
    }
    assert_no_file_holds(alice.home.path(), &carol.key);
    assert_no_file_holds(alice.home.path(), &dave.key);
}

#[test]
fn tools_list_advertises_peer_and_the_aliases_as_deprecated() {
    let home = Home::new("alias-list");
    let mut mcp = McpServer::spawn(home.path());
    let tools = mcp.request("tools/list", json!({}))["result"]["tools"].as_array().unwrap().clone();
    let schema = |name: &str| tools.iter().find(|t| t["name"] == name).unwrap()["inputSchema"].clone();
    for (tool, aliases) in [
        ("loopsy_execute", &["peerAddress", "peerPort", "peerApiKey"][..]),
        ("loopsy_transfer_file", &["peerAddress", "peerPort", "peerApiKey"]),
        ("loopsy_context_get", &["peerAddress", "peerPort", "peerApiKey"]),
        ("loopsy_send_message", &["peerAddress", "peerPort", "peerApiKey", "peerHostname"]),
        ("loopsy_ack_message", &["senderAddress", "senderPort", "senderApiKey"]),
        ("loopsy_check_ack", &["peerHostname"]),
    ] {
        let schema = schema(tool);
        assert!(
            !schema["required"].as_array().unwrap().iter().any(|r| aliases.contains(&r.as_str().unwrap())),
            "{tool}"
        );
        for alias in aliases {
            assert_eq!(schema["properties"][alias]["deprecated"], true, "{tool}.{alias}");
        }
        if tool != "loopsy_ack_message" {
            assert!(schema["properties"]["peer"].is_object(), "{tool} still advertises peer");
            assert!(schema["properties"]["peer"].get("deprecated").is_none());
        }
    }
    // Tools 1.0.21 did not have keep refusing what they do not know.
    let (text, is_error, _) = call(&mut mcp, "loopsy_task_list", json!({"peerAddress": "127.0.0.1"}));
    assert!(is_error && text.contains("unknown argument 'peerAddress'"), "{text}");
    let (text, is_error, _) =
        call(&mut mcp, "loopsy_execute", json!({"peerAddress": "127.0.0.1", "peerPort": 0, "command": "ls"}));
    assert!(is_error && text.contains("'peerPort' must be a port"), "{text}");
}

/// No file under `dir` contains `secret`.
#[track_caller]
fn assert_no_file_holds(dir: &std::path::Path, secret: &str) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                assert!(!String::from_utf8_lossy(&bytes).contains(secret), "{} holds the key", path.display());
            }
        }
    }
}
