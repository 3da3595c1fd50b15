//! A raw MCP client: `loopsy --home <home> mcp serve` with piped stdio, one JSON-RPC message per
//! line, so tests see exactly what an agent sees.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use serde_json::{json, Value};

/// A running `loopsy mcp serve`, initialised.
pub struct McpServer {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    next_id: u64,
}

impl McpServer {
    /// Starts the server for the data directory `home` and completes the handshake.
    pub fn spawn(home: &Path) -> McpServer {
        McpServer::spawn_with(home, &[])
    }

    /// Like [`McpServer::spawn`], with the given environment variables (`LOOPSY_*`) set.
    pub fn spawn_with(home: &Path, env: &[(&str, &str)]) -> McpServer {
        let mut child = super::command(super::loopsy_bin())
            .arg("--home")
            .arg(home)
            .args(["mcp", "serve"])
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning loopsy mcp serve");
        let (send, lines) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = send.send(line);
            }
        });
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[mcp] {line}");
            }
        });
        let stdin = child.stdin.take().unwrap();
        let mut server = McpServer { child, stdin, lines, next_id: 1 };
        let init = server.request(
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "0"}}),
        );
        assert_eq!(init["result"]["protocolVersion"], "2025-06-18", "{init}");
        server.send_line(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string());
        server
    }

    fn send_line(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Sends a request and returns the whole response (result or error).
    #[track_caller]
    pub fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send_line(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string());
        loop {
            let line = self.lines.recv_timeout(Duration::from_secs(60)).expect("an answer from the MCP server");
            let message: Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
            if message["id"] == id {
                return message;
            }
        }
    }

    /// Calls a tool; returns its text and whether it is an error result.
    #[track_caller]
    pub fn tool(&mut self, name: &str, arguments: Value) -> (String, bool) {
        let answer = self.request("tools/call", json!({"name": name, "arguments": arguments}));
        let result = &answer["result"];
        assert!(result.is_object(), "a tool result, not a protocol error: {answer}");
        let text = result["content"][0]["text"].as_str().unwrap_or_else(|| panic!("no text: {answer}")).to_string();
        (text, result["isError"] == true)
    }

    /// A successful tool call's text.
    #[track_caller]
    pub fn ok(&mut self, name: &str, arguments: Value) -> String {
        let (text, is_error) = self.tool(name, arguments);
        assert!(!is_error, "{name} failed: {text}");
        text
    }

    /// A failed tool call's text (starting with `Error: `).
    #[track_caller]
    pub fn error(&mut self, name: &str, arguments: Value) -> String {
        let (text, is_error) = self.tool(name, arguments);
        assert!(is_error, "{name} should have failed: {text}");
        assert!(text.starts_with("Error: "), "{text}");
        text
    }
}

impl Drop for McpServer {
    fn drop(&mut self) {
        super::reap(&mut self.child);
    }
}
