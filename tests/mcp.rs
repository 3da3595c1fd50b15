//! The MCP server: raw JSON-RPC lines, the official Python SDK as a real client, registration
//! with the agents' config files.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::mcp_stdio::McpServer;
use crate::support::relay::Relay;
use crate::support::{
    command, loopsy_bin, loopsy_in, prerequisite, run_within, wait_child, wait_until, Daemon, Home, Run, TempDir,
    UserHome,
};

/// `loopsy --home <home> mcp serve`, spoken to line by line.
struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Server {
    fn start(home: &std::path::Path) -> Server {
        let mut child = command(loopsy_bin())
            .arg("--home")
            .arg(home)
            .args(["mcp", "serve"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = send.send(line);
            }
        });
        Server { stdin: child.stdin.take(), child, lines }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    #[track_caller]
    fn next(&self) -> Value {
        let line = self.lines.recv_timeout(Duration::from_secs(20)).expect("an answer");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("stdout carries only JSON-RPC ({e}): {line}"))
    }

    /// Ends the input and returns every line the server wrote until it exited.
    #[track_caller]
    fn close_and_collect(mut self) -> (Option<i32>, Vec<Value>) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut rest = Vec::new();
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => rest.push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!("the server did not close its output after its input ended"),
            }
        }
        let status = wait_child(&mut self.child, Duration::from_secs(20));
        (status.code(), rest)
    }

    #[track_caller]
    fn request(&mut self, id: u64, method: &str, params: Value) -> Value {
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string());
        let answer = self.next();
        assert_eq!(answer["id"], id, "{answer}");
        answer
    }

    fn call(&mut self, id: u64, name: &str, arguments: Value) -> (bool, String) {
        let answer = self.request(id, "tools/call", json!({"name": name, "arguments": arguments}));
        let result = &answer["result"];
        (result["isError"] == true, result["content"][0]["text"].as_str().unwrap_or_default().to_string())
    }

    fn close(self) -> Option<i32> {
        let (code, rest) = self.close_and_collect();
        assert!(rest.is_empty(), "nothing was pending: {rest:?}");
        code
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        crate::support::reap(&mut self.child);
    }
}

#[test]
fn initialize_echoes_every_supported_version_and_answers_the_newest_otherwise() {
    let home = Home::new("mcpinit");
    let mut server = Server::start(home.path());
    for (i, version) in ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"].iter().enumerate() {
        let answer = server.request(
            i as u64 + 1,
            "initialize",
            json!({"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}),
        );
        assert_eq!(answer["result"]["protocolVersion"], *version);
        assert_eq!(answer["result"]["serverInfo"]["name"], "loopsy");
    }
    let answer = server.request(9, "initialize", json!({"protocolVersion": "2099-01-01"}));
    assert_eq!(answer["result"]["protocolVersion"], "2025-11-25");
    server.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    assert_eq!(server.request(10, "ping", json!({}))["result"], json!({}), "notifications get no answer");
    assert_eq!(server.close(), Some(0), "the server exits at the end of its input");
}

#[test]
fn malformed_lines_unknown_methods_and_bad_params_get_json_rpc_errors() {
    let home = Home::new("mcperrors");
    let mut server = Server::start(home.path());
    server.send("this is not json");
    let answer = server.next();
    assert_eq!((answer["id"].clone(), answer["error"]["code"].clone()), (Value::Null, json!(-32700)));
    server.send(r#"{"id":1,"method":"ping"}"#);
    assert_eq!(server.next()["error"]["code"], -32600);
    server.send(r#"{"jsonrpc":"2.0","id":"s","method":"server/discover"}"#);
    let answer = server.next();
    assert_eq!((answer["id"].clone(), answer["error"]["code"].clone()), (json!("s"), json!(-32601)));
    assert_eq!(server.request(2, "tools/call", json!({"name": "no_such_tool"}))["error"]["code"], -32602);
    assert_eq!(server.request(3, "resources/read", json!({"uri": "loopsy://nope"}))["error"]["code"], -32002);
    assert_eq!(server.request(4, "prompts/get", json!({"name": "loopsy_coordinate"}))["error"]["code"], -32602);
    // Bad tool arguments are a tool error an agent can act on, not a protocol error.
    let (is_error, text) = server.call(5, "loopsy_context_get", json!({"key": "k", "apiKey": "secret"}));
    assert!(is_error && text.contains("unknown argument 'apiKey'") && !text.contains("secret"), "{text}");
    let (is_error, text) = server.call(6, "loopsy_execute", json!({"command": "ls"}));
    assert!(is_error && text.contains("'peer' is required"), "{text}");
    // A batch gets every answer; the server is still there.
    server.send(r#"[{"jsonrpc":"2.0","id":7,"method":"ping"},{"jsonrpc":"2.0","id":8,"method":"ping","_meta":{}}]"#);
    let ids = [server.next()["id"].clone(), server.next()["id"].clone()];
    assert!(ids.contains(&json!(7)) && ids.contains(&json!(8)));
    assert_eq!(server.request(9, "ping", json!({"_meta": {"progressToken": 1}}))["result"], json!({}));
}

#[test]
fn tools_say_when_the_daemon_is_down_and_the_server_stays_up() {
    let home = Home::new("mcpdown");
    let mut server = Server::start(home.path());
    let (is_error, text) = server.call(1, "loopsy_list_peers", json!({}));
    assert!(is_error, "{text}");
    assert!(text.contains("not running") && text.contains("loopsy start"), "{text}");
    let answer = server.request(2, "resources/read", json!({"uri": "loopsy://status"}));
    assert!(answer["result"]["contents"][0]["text"].as_str().unwrap().contains("not running"));
    assert_eq!(server.request(3, "ping", json!({}))["result"], json!({}));
}

#[test]
fn a_cancelled_request_gets_no_answer_and_others_go_on() {
    // The call runs a command that waits for a file: once it exists the command ends at once, so
    // an uncancelled call would be answered before the server's output ends (no timeout decides).
    let daemon = Daemon::start("mcpcancel");
    let work = TempDir::new("mcpcancel-work");
    let (pid_file, go) = (work.path().join("pid"), work.path().join("go"));
    let script = format!(
        "echo $$ > '{}'; while [ ! -e '{}' ]; do sleep 0.02; done; echo released",
        pid_file.display(),
        go.display()
    );
    let mut server = Server::start(daemon.home.path());
    let call =
        json!({"name": "loopsy_execute", "arguments": {"peer": "local", "command": "sh", "args": ["-c", script]}});
    server.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": call}).to_string());
    wait_until(Duration::from_secs(20), "the command runs", || {
        std::fs::read_to_string(&pid_file).is_ok_and(|text| text.ends_with('\n'))
    });
    server.send(r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1,"reason":"user"}}"#);
    // Messages are handled in order: once the ping is answered, the cancellation was handled.
    assert_eq!(server.request(2, "ping", json!({}))["result"], json!({}));
    // Released, the command ends at once; the server answers what is still running before it
    // exits at the end of its input, so only a cancelled call stays unanswered.
    std::fs::write(&go, "").unwrap();
    let (code, rest) = server.close_and_collect();
    // (Before `work` and its `go` file are removed, which would keep the command looping.)
    wait_until(Duration::from_secs(20), "the released command ends", || {
        daemon.get("/api/v1/execute/jobs").expect(200)["jobs"].as_array().is_some_and(|jobs| jobs.is_empty())
    });
    assert_eq!(code, Some(0));
    assert!(rest.iter().all(|message| message["id"] != 1), "the cancelled call was answered: {rest:?}");
    assert!(rest.is_empty(), "nothing else was pending: {rest:?}");
}

#[test]
fn tools_act_on_named_peers_without_ever_seeing_a_key() {
    let alice = Daemon::start("mcpalice");
    let bob_home = Home::new("mcpbob");
    bob_home.edit_config(|doc| {
        doc["auth"]["allowedKeys"]["alice"] = alice.key.clone().into();
        doc["transfer"]["allowedPaths"] = vec![std::env::temp_dir().to_string_lossy().into_owned()].into();
    });
    let bob = bob_home.start();
    let mut server = Server::start(alice.home.path());
    let tools = server.request(1, "tools/list", json!({}));
    let text = tools.to_string();
    assert!(!text.contains(&alice.key), "tools/list holds no key");
    // 1.0.21's `peerApiKey` is only there as a deprecated alias (tests/mcp_aliases.rs).
    for tool in tools["result"]["tools"].as_array().unwrap() {
        for (name, property) in tool["inputSchema"]["properties"].as_object().unwrap() {
            if name.to_lowercase().contains("apikey") {
                assert_eq!(property["deprecated"], true, "{}.{name}", tool["name"]);
            }
        }
    }
    let bob_at = format!("127.0.0.1:{}", bob.port);
    let (is_error, text) = server.call(2, "loopsy_context_set", json!({"key": "k", "value": "v1", "peer": bob_at}));
    assert!(!is_error, "{text}");
    assert_eq!(bob.get("/api/v1/context/k").expect(200)["value"], "v1");
    let revision = serde_json::from_str::<Value>(&text).unwrap()["revision"].as_u64().unwrap();
    let (is_error, text) = server.call(
        3,
        "loopsy_context_set",
        json!({"key": "k", "value": "v2", "peer": bob_at, "ifRevision": revision + 5}),
    );
    assert!(is_error && text.contains("revision"), "CAS conflicts are tool errors: {text}");
    let (is_error, text) = server.call(4, "loopsy_execute", json!({"peer": bob_at, "command": "echo", "args": ["hi"]}));
    assert!(!is_error && text.contains("\"stdout\": \"hi\\n\""), "{text}");
    let (is_error, text) =
        server.call(5, "loopsy_execute", json!({"peer": bob_at, "command": "rm", "args": ["-rf", "/tmp/x"]}));
    assert!(is_error && text.contains("denied"), "{text}");
    let (is_error, text) = server.call(6, "loopsy_peer_status", json!({"peer": "nosuchpeer"}));
    assert!(is_error && text.contains("unknown peer"), "{text}");
    let source = TempDir::new("mcp-transfer");
    let file = source.path().join("payload.txt").to_str().unwrap().to_string();
    std::fs::write(&file, "payload").unwrap();
    let dest = format!("{}/pushed.txt", std::env::temp_dir().join(format!("mcpx-{}", bob.port)).display());
    std::fs::create_dir_all(std::path::Path::new(&dest).parent().unwrap()).unwrap();
    let (is_error, text) = server.call(
        7,
        "loopsy_transfer_file",
        json!({"direction": "push", "peer": bob_at, "sourcePath": file, "destPath": dest}),
    );
    assert!(!is_error, "{text}");
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "payload");
    let _ = std::fs::remove_dir_all(std::path::Path::new(&dest).parent().unwrap());
}

/// `loopsy_execute` of a command that appends a line to `file`: how many times it ran is the
/// number of lines.
fn append_once(server: &mut McpServer, file: &std::path::Path) -> (String, bool) {
    let script = format!("echo ran >> '{}'", file.display());
    server.tool("loopsy_execute", json!({"peer": "local", "command": "sh", "args": ["-c", script]}))
}

fn runs(file: &std::path::Path) -> usize {
    std::fs::read_to_string(file).map(|text| text.lines().count()).unwrap_or(0)
}

#[test]
fn sequential_tool_calls_share_one_connection_and_a_closed_one_is_replaced_without_running_twice() {
    let daemon = Daemon::start("mcpkeep");
    // The relay counts the connections the MCP server opens to the daemon, and can close them.
    let relay = Relay::start(&daemon.addr);
    let port = relay.port.to_string();
    let mut server =
        McpServer::spawn_with(daemon.home.path(), &[("LOOPSY_API_KEY", daemon.key.as_str()), ("LOOPSY_PORT", &port)]);
    let file = daemon.home.path().join("runs.txt");
    for call in 1..=20 {
        let (text, is_error) = append_once(&mut server, &file);
        assert!(!is_error, "{text}");
        assert_eq!(runs(&file), call);
    }
    let text = server.ok("loopsy_context_set", json!({"key": "k", "value": "v"}));
    assert!(text.contains('k'), "{text}");
    assert_eq!(relay.connections(), 1, "21 sequential calls over one kept connection");
    // The kept connection is closed under the server (as a daemon's stop or idle timeout does):
    // it is noticed before it is used, so even a call that is never retried (a context write)
    // goes through, on a new connection.
    relay.cut();
    server.ok("loopsy_context_set", json!({"key": "k", "value": "w"}));
    assert_eq!(relay.connections(), 2);
    let (text, is_error) = append_once(&mut server, &file);
    assert!(!is_error, "{text}");
    assert_eq!((runs(&file), relay.connections()), (21, 2));
    relay.cut();
    let (text, is_error) = append_once(&mut server, &file);
    assert!(!is_error, "{text}");
    assert_eq!(runs(&file), 22, "the command ran exactly once");
    assert_eq!(relay.connections(), 3);
}

#[test]
fn the_mcp_server_rides_a_daemon_restart_on_its_port_and_says_when_it_is_gone() {
    let home = Home::new("mcprestart");
    let daemon = home.start();
    // The restarted daemon listens where the first one did: the client and its kept (now
    // closed) connection stay the same.
    let port = daemon.port;
    daemon.home.edit_config(|doc| doc["server"]["port"] = port.into());
    let mut server = McpServer::spawn(daemon.home.path());
    let file = daemon.home.path().join("runs.txt");
    let (text, is_error) = append_once(&mut server, &file);
    assert!(!is_error, "{text}");
    let mut daemon = daemon.restart();
    assert_eq!(daemon.port, port);
    let (text, is_error) = append_once(&mut server, &file);
    assert!(!is_error, "{text}");
    assert_eq!(runs(&file), 2, "each call ran exactly once");
    daemon.kill();
    let text = server.error("loopsy_execute", json!({"peer": "local", "command": "echo", "args": ["x"]}));
    assert!(text.contains("not running") && text.contains("loopsy start"), "{text}");
    assert_eq!(runs(&file), 2);
}

#[test]
fn a_new_api_key_is_picked_up_by_a_running_mcp_server() {
    let daemon = Daemon::start("mcpnewkey");
    let mut server = McpServer::spawn(daemon.home.path());
    server.ok("loopsy_context_set", json!({"key": "before", "value": "1"}));
    let _ = daemon.loopsy(&["key", "generate"]).success();
    assert_ne!(daemon.home.key(), daemon.key, "the key changed");
    let text = server.ok("loopsy_context_get", json!({"key": "before"}));
    assert!(text.contains('1'), "{text}");
    server.ok("loopsy_context_set", json!({"key": "after", "value": "2"}));
}

#[test]
fn the_mcp_server_works_against_a_tls_daemon() {
    let home = Home::new("mcptls");
    home.edit_config(|doc| doc["tls"]["enabled"] = true.into());
    let daemon = home.start();
    let mut server = Server::start(daemon.home.path());
    let (is_error, text) = server.call(1, "loopsy_context_set", json!({"key": "over", "value": "tls"}));
    assert!(!is_error, "{text}");
    let answer = server.request(2, "resources/read", json!({"uri": "loopsy://status"}));
    assert!(answer["result"]["contents"][0]["text"].as_str().unwrap().contains("nodeId"));
}

#[test]
fn the_official_python_sdk_drives_every_tool_resource_and_prompt() {
    let Some(python) = prerequisite(crate::support::skip::python_with(&["mcp"])) else { return };
    let home = Home::new("mcpsdk");
    let files = TempDir::new("mcpsdk-files");
    std::fs::write(files.path().join("listed-by-the-sdk.txt"), "x").unwrap();
    let dir = files.path().to_string_lossy().into_owned();
    home.edit_config(|doc| doc["transfer"]["allowedPaths"] = vec![dir.clone()].into());
    let daemon = home.start();
    let node_id = daemon.anon("GET", "/api/v1/health").send().expect(200)["nodeId"].as_str().unwrap().to_string();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/sdk_client.py");
    // Every call with what its result must be: an error or not, and a text it must contain.
    let plan: Vec<(Value, bool, String)> = vec![
        (json!({"name": "loopsy_list_peers"}), false, r#""peers": []"#.into()),
        (
            json!({"name": "loopsy_peer_status", "arguments": {"peer": "local"}}),
            false,
            format!(r#""nodeId": "{node_id}""#),
        ),
        (
            json!({"name": "loopsy_context_set", "arguments": {"key": "sdk", "value": "yes", "ttl": 60}}),
            false,
            r#""ttl": 60"#.into(),
        ),
        (json!({"name": "loopsy_context_get", "arguments": {"key": "sdk"}}), false, r#""value": "yes""#.into()),
        (json!({"name": "loopsy_context_list", "arguments": {"prefix": "s"}}), false, r#""key": "sdk""#.into()),
        (json!({"name": "loopsy_context_delete", "arguments": {"key": "sdk"}}), false, r#""success": true"#.into()),
        (json!({"name": "loopsy_context_get", "arguments": {"key": "sdk"}}), true, "Key 'sdk' not found".into()),
        (
            json!({"name": "loopsy_execute", "arguments": {"peer": "local", "command": "echo", "args": ["sdk"]}}),
            false,
            r#""stdout": "sdk\n""#.into(),
        ),
        (
            json!({"name": "loopsy_list_remote_files", "arguments": {"peer": "local", "path": dir}}),
            false,
            r#""name": "listed-by-the-sdk.txt""#.into(),
        ),
        (
            json!({"name": "loopsy_broadcast_context", "arguments": {"key": "all", "value": "x"}}),
            false,
            r#""localSet": true"#.into(),
        ),
        (json!({"name": "loopsy_execute", "arguments": {"peer": "local"}}), true, "'command' is required".into()),
        (
            json!({"name": "loopsy_transfer_file", "arguments": {"direction": "pull", "peer": "local", "sourcePath": "/nope", "destPath": "relative"}}),
            true,
            "must be an absolute path".into(),
        ),
        (json!({"name": "loopsy_session_list"}), false, format!(r#""port": {}"#, daemon.port)),
        (
            json!({"name": "loopsy_session_start", "arguments": {"name": ".."}}),
            true,
            "invalid session name '..'".into(),
        ),
        (
            json!({"name": "loopsy_session_stop", "arguments": {"name": "no-such-session"}}),
            true,
            "no session named 'no-such-session'".into(),
        ),
        (
            json!({"name": "loopsy_session_remove", "arguments": {"name": "no-such-session"}}),
            true,
            "no session named 'no-such-session'".into(),
        ),
        (
            json!({"name": "loopsy_send_message", "arguments": {"peer": "nosuchpeer", "body": "hi"}}),
            true,
            "unknown peer 'nosuchpeer'".into(),
        ),
        (json!({"name": "loopsy_check_inbox"}), false, "No new messages".into()),
        (
            json!({"name": "loopsy_ack_message", "arguments": {"messageKey": "inbox:nobody:1-x-abcd"}}),
            true,
            "no message 'inbox:nobody:1-x-abcd'".into(),
        ),
        (
            json!({"name": "loopsy_check_ack", "arguments": {"peer": "nosuchpeer"}}),
            true,
            "unknown peer 'nosuchpeer'".into(),
        ),
        (json!({"name": "loopsy_task_list"}), false, r#""tasks": []"#.into()),
        (
            json!({"name": "loopsy_task_dispatch", "arguments": {"peer": "nosuchpeer", "prompt": "p"}}),
            true,
            "unknown peer 'nosuchpeer'".into(),
        ),
        (
            json!({"name": "loopsy_task_status", "arguments": {"peer": "local", "taskId": "nope"}}),
            true,
            "task 'nope' not found".into(),
        ),
        (json!({"name": "loopsy_approvals_list"}), false, "No permission request is waiting for a human".into()),
        (
            json!({"name": "loopsy_lock_acquire", "arguments": {"name": "sdk-lock", "ttl": 30}}),
            false,
            r#""token": "#.into(),
        ),
        (
            json!({"name": "loopsy_lock_renew", "arguments": {"name": "sdk-lock"}}),
            false,
            r#""name": "sdk-lock""#.into(),
        ),
        (
            json!({"name": "loopsy_lock_release", "arguments": {"name": "sdk-lock"}}),
            false,
            r#""released": true"#.into(),
        ),
        (json!({"name": "loopsy_terminal_list", "arguments": {"peer": "local"}}), false, r#""terminals""#.into()),
        (
            json!({"name": "loopsy_terminal_start", "arguments": {"peer": "local", "command": "no-such-program-here"}}),
            true,
            "no-such-program-here".into(),
        ),
        (
            json!({"name": "loopsy_terminal_send", "arguments": {"peer": "local", "id": "nope", "text": "x"}}),
            true,
            "nope".into(),
        ),
        (json!({"name": "loopsy_terminal_read", "arguments": {"peer": "local", "id": "nope"}}), true, "nope".into()),
        (json!({"name": "loopsy_terminal_kill", "arguments": {"peer": "local", "id": "nope"}}), true, "nope".into()),
    ];
    let calls_json = Value::Array(plan.iter().map(|(call, _, _)| call.clone()).collect());
    for version in ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"] {
        let home = daemon.home.path().to_str().unwrap();
        let out = run_within(
            command(&python).args([
                script,
                version,
                &calls_json.to_string(),
                loopsy_bin(),
                "--home",
                home,
                "mcp",
                "serve",
            ]),
            Duration::from_secs(120),
        );
        assert_eq!(out.code, 0, "{version}: {}", out.stderr);
        let seen: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(seen["protocolVersion"], version);
        assert_eq!(seen["serverName"], "loopsy");
        let calls = seen["calls"].as_array().unwrap();
        assert_eq!(calls.len(), plan.len(), "every planned call has a result");
        for (i, ((call, expect_error, expect_text), got)) in plan.iter().zip(calls).enumerate() {
            let text = got["text"].as_str().unwrap_or_else(|| panic!("call {i} has no text: {got}"));
            assert_eq!(got["name"], call["name"], "call {i}");
            assert_eq!(got["isError"], *expect_error, "{version} call {i} {}: {text}", call["name"]);
            assert!(
                text.contains(expect_text.as_str()),
                "{version} call {i} {}: {expect_text:?} not in {text}",
                call["name"]
            );
            if *expect_error {
                assert!(text.starts_with("Error: "), "{version} call {i}: {text}");
            }
        }
        let called: std::collections::BTreeSet<&str> = calls.iter().filter_map(|c| c["name"].as_str()).collect();
        let listed: std::collections::BTreeSet<&str> =
            seen["tools"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        assert_eq!(called, listed, "every listed tool is called");
        let resources = seen["resources"].as_object().unwrap();
        assert_eq!(resources.len(), 3, "{resources:?}");
        let resource = |uri: &str| -> Value {
            serde_json::from_str(resources[uri].as_str().unwrap_or_else(|| panic!("{uri} is read")))
                .unwrap_or_else(|e| panic!("{uri} is JSON: {e}"))
        };
        assert_eq!(resource("loopsy://peers"), json!({"peers": []}));
        assert_eq!(resource("loopsy://status")["nodeId"], node_id.as_str());
        let context = resource("loopsy://context");
        assert!(
            context["entries"].as_array().unwrap().iter().any(|e| e["key"] == "all" && e["value"] == "x"),
            "{context}"
        );
        let prompts = seen["prompts"].as_object().unwrap();
        assert_eq!(prompts.len(), 2, "{prompts:?}");
        assert!(prompts["loopsy_help"].as_str().unwrap().contains("loopsy_send_message"));
        assert!(prompts["loopsy_coordinate"].as_str().unwrap().contains("bob"));
        assert_eq!(seen["templates"], 0);
        assert_eq!(seen["ping"], true, "the final ping was answered");
        for (name, schema) in seen["schemas"].as_object().unwrap() {
            assert_eq!(schema["additionalProperties"], false, "{name}");
        }
    }
}

/// A home for the agents' config files; loopsy runs with HOME pointing there.
fn agents_home() -> TempDir {
    TempDir::new("agents")
}

fn loopsy_with_home(
    user_home: &std::path::Path,
    data: &std::path::Path,
    path_env: &std::ffi::OsStr,
    args: &[&str],
) -> Run {
    run_within(
        command(loopsy_bin()).arg("--home").arg(data).args(args).user_home(user_home).env("PATH", path_env),
        crate::support::PROCESS_LIMIT,
    )
}

/// A `PATH` with the usual system programs and no agent CLI at all.
fn bare_path() -> std::ffi::OsString {
    crate::support::path_with(&[])
}

#[test]
fn registration_edits_the_agents_config_files_and_keeps_everything_else() {
    let user = agents_home();
    let data = TempDir::new("agentsdata");
    let _ = loopsy_in(data.path(), &["init"]).success();
    let bare_path = &bare_path();
    // No agent on this machine.
    loopsy_with_home(user.path(), data.path(), bare_path, &["mcp", "add"])
        .code(1)
        .stdout_has("No AI coding agent found");
    let status = loopsy_with_home(user.path(), data.path(), bare_path, &["mcp", "status", "--json"]).success().json();
    assert_eq!(status, json!({"claude": "not installed", "gemini": "not installed", "codex": "not installed"}));

    // Where the agents started from this environment read them: the sandbox moves Claude
    // Code's config with CLAUDE_CONFIG_DIR (~/.claude), Gemini's with GEMINI_CLI_HOME (~) and
    // Codex's with CODEX_HOME (~/.codex).
    let claude = user.path().join(".claude/.claude.json");
    let gemini = user.path().join(".gemini/settings.json");
    let codex = user.path().join(".codex/config.toml");
    std::fs::create_dir_all(claude.parent().unwrap()).unwrap();
    std::fs::create_dir_all(gemini.parent().unwrap()).unwrap();
    std::fs::create_dir_all(codex.parent().unwrap()).unwrap();
    std::fs::write(&claude, r#"{"numStartups": 3, "mcpServers": {"other": {"command": "x"}}, "projects": {"/p": {}}}"#)
        .unwrap();
    std::fs::write(&gemini, r#"{"theme": "dark", "mcpServers": {}}"#).unwrap();
    std::fs::write(&codex, "model = \"o3\"\n\n[mcp_servers.other]\ncommand = \"y\"\n").unwrap();

    for _ in 0..2 {
        loopsy_with_home(user.path(), data.path(), bare_path, &["mcp", "add"])
            .success()
            .stdout_has("Registered with Codex CLI");
    }
    let claude_json: Value = serde_json::from_str(&std::fs::read_to_string(&claude).unwrap()).unwrap();
    assert_eq!(claude_json["numStartups"], 3);
    assert_eq!(claude_json["mcpServers"]["other"]["command"], "x");
    let entry = &claude_json["mcpServers"]["loopsy"];
    assert!(std::path::Path::new(entry["command"].as_str().unwrap()).is_absolute());
    let home_arg = data.path().to_str().unwrap();
    assert_eq!(entry["args"], json!(["--home", home_arg, "mcp", "serve"]));
    let gemini_json: Value = serde_json::from_str(&std::fs::read_to_string(&gemini).unwrap()).unwrap();
    assert_eq!(gemini_json["theme"], "dark");
    assert!(gemini_json["mcpServers"]["loopsy"]["command"].is_string());
    let codex_text = std::fs::read_to_string(&codex).unwrap();
    assert_eq!(codex_text.matches("[mcp_servers.loopsy]").count(), 1, "add twice = once:\n{codex_text}");
    assert!(codex_text.contains("model = \"o3\"") && codex_text.contains("[mcp_servers.other]"));
    let status = loopsy_with_home(user.path(), data.path(), bare_path, &["mcp", "status", "--json"]).success().json();
    assert_eq!(status, json!({"claude": "registered", "gemini": "registered", "codex": "registered"}));

    loopsy_with_home(user.path(), data.path(), bare_path, &["mcp", "remove"])
        .success()
        .stdout_has("Unregistered from Claude Code");
    let claude_json: Value = serde_json::from_str(&std::fs::read_to_string(&claude).unwrap()).unwrap();
    assert!(claude_json["mcpServers"].get("loopsy").is_none());
    assert_eq!(claude_json["mcpServers"]["other"]["command"], "x");
    assert!(!std::fs::read_to_string(&codex).unwrap().contains("loopsy"));
    let status = loopsy_with_home(user.path(), data.path(), bare_path, &["mcp", "status", "--json"]).success().json();
    assert_eq!(status["claude"], "not registered");
}

#[test]
fn an_installed_agent_cli_registers_through_its_own_mcp_commands() {
    let user = agents_home();
    let data = TempDir::new("agentscli");
    let _ = loopsy_in(data.path(), &["init"]).success();
    let bin = user.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = user.path().join("claude.log");
    let script = format!("#!/bin/sh\necho \"$@\" >> '{}'\nexit 0\n", log.display());
    std::fs::write(bin.join("claude"), script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("claude"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path_env = crate::support::path_with(&[&bin]);
    loopsy_with_home(user.path(), data.path(), &path_env, &["mcp", "add"])
        .success()
        .stdout_has("Registered with Claude Code");
    let calls = std::fs::read_to_string(&log).unwrap();
    assert!(calls.contains("mcp remove loopsy -s user"), "{calls}");
    let add = calls.lines().find(|l| l.starts_with("mcp add")).expect("an add call");
    assert!(add.starts_with("mcp add loopsy -s user -- /"), "user scope, absolute path: {add}");
    assert!(add.ends_with("mcp serve"), "{add}");
}

#[test]
fn init_registers_with_the_agents_it_finds() {
    let user = agents_home();
    let data = TempDir::new("initagents");
    std::fs::write(user.path().join(".claude.json"), "{}").unwrap();
    // Without CLAUDE_CONFIG_DIR, Claude Code's user config is ~/.claude.json.
    let mut init = command(loopsy_bin());
    init.arg("--home").arg(data.path()).arg("init").user_home(user.path());
    init.env("PATH", bare_path()).env_remove("CLAUDE_CONFIG_DIR");
    run_within(&mut init, crate::support::PROCESS_LIMIT).success().stdout_has("Registered with Claude Code");
    let claude: Value =
        serde_json::from_str(&std::fs::read_to_string(user.path().join(".claude.json")).unwrap()).unwrap();
    assert!(claude["mcpServers"]["loopsy"].is_object());
}

#[test]
fn registration_follows_claude_config_dir() {
    let user = agents_home();
    let data = TempDir::new("claudedir");
    let _ = loopsy_in(data.path(), &["init"]).success();
    let elsewhere = TempDir::new("claudeconfig");
    let moved = elsewhere.path().join(".claude.json");
    std::fs::write(&moved, r#"{"numStartups": 1}"#).unwrap();
    std::fs::write(user.path().join(".claude.json"), "{}").unwrap();
    let run = |args: &[&str]| {
        let mut command = command(loopsy_bin());
        command.arg("--home").arg(data.path()).args(args).user_home(user.path());
        command.env("PATH", bare_path()).env("CLAUDE_CONFIG_DIR", elsewhere.path());
        run_within(&mut command, crate::support::PROCESS_LIMIT)
    };
    run(&["mcp", "add"]).success().stdout_has("Registered with Claude Code");
    let claude: Value = serde_json::from_str(&std::fs::read_to_string(&moved).unwrap()).unwrap();
    assert!(claude["mcpServers"]["loopsy"].is_object(), "{claude}");
    assert_eq!(claude["numStartups"], 1);
    assert_eq!(
        std::fs::read_to_string(user.path().join(".claude.json")).unwrap(),
        "{}",
        "the home's file is not Claude's"
    );
    assert_eq!(run(&["mcp", "status", "--json"]).success().json()["claude"], "registered");
    run(&["mcp", "remove"]).success().stdout_has("Unregistered from Claude Code");
    let claude: Value = serde_json::from_str(&std::fs::read_to_string(&moved).unwrap()).unwrap();
    assert!(claude["mcpServers"].get("loopsy").is_none(), "{claude}");
}
