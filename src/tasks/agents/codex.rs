//! Codex CLI as `codex app-server`: JSON-RPC over stdio (AGENT-CLIS.md §6).
//!
//! `codex exec` forces the approval policy "never", so approvals are impossible there; the
//! app-server asks with `item/commandExecution/requestApproval` and
//! `item/fileChange/requestApproval` and takes `accept`/`decline`. Sequence: `initialize`,
//! `initialized`, `thread/start` (or `thread/resume`) with the approval policy and sandbox of
//! the permission mode, then `turn/start` with the prompt; `turn/completed` ends the task.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::{parse_rpc, plain_line, text_of, Decision, Driver, Options, Output, Rpc, RpcWriter};
use crate::tasks::api::{EventType, PermissionMode};

const INITIALIZE: u64 = 1;
const THREAD: u64 = 2;
const TURN: u64 = 3;
/// The app-server's messages carry no `"jsonrpc"` member.
const RPC: RpcWriter = RpcWriter { jsonrpc: false };

pub(super) struct Codex {
    options: Options,
    /// Open approval requests: our key to the JSON-RPC id and whether it is a legacy (v1) one.
    open: HashMap<String, (Value, bool)>,
    /// Items seen starting, by id, to describe file-change approvals.
    items: HashMap<String, Value>,
    thread_id: Option<String>,
    last_message: Option<String>,
}

impl Codex {
    pub(super) fn new(options: Options) -> Codex {
        Codex { options, open: HashMap::new(), items: HashMap::new(), thread_id: None, last_message: None }
    }

    fn on_response(&mut self, id: u64, result: Result<Value, String>) -> Vec<Output> {
        let result = match result {
            Ok(result) => result,
            Err(error) if id == TURN => return vec![Output::Finished { error: Some(format!("codex: {error}")) }],
            Err(error) => return vec![Output::Fail(format!("codex app-server refused the session: {error}"))],
        };
        match id {
            INITIALIZE => {
                let (policy, sandbox) = policy(self.options.mode);
                let mut params = json!({"cwd": self.options.cwd, "approvalPolicy": policy, "sandbox": sandbox});
                if let Some(model) = &self.options.model {
                    params["model"] = model.clone().into();
                }
                let thread = match &self.options.resume {
                    Some(thread_id) => {
                        params["threadId"] = thread_id.clone().into();
                        RPC.request(THREAD, "thread/resume", params)
                    }
                    None => RPC.request(THREAD, "thread/start", params),
                };
                vec![RPC.notification("initialized", json!({})), thread]
            }
            THREAD => {
                let thread_id = text_of(&result["thread"]["id"])
                    .or_else(|| text_of(&result["threadId"]))
                    .or_else(|| self.options.resume.clone());
                let Some(thread_id) = thread_id else {
                    return vec![Output::Fail(format!("codex app-server started no thread: {result}"))];
                };
                self.thread_id = Some(thread_id.clone());
                let turn = RPC.request(
                    TURN,
                    "turn/start",
                    json!({"threadId": thread_id, "input": [{"type": "text", "text": self.options.prompt}]}),
                );
                vec![Output::SessionId(thread_id), turn, Output::Ready]
            }
            _ => Vec::new(),
        }
    }

    fn on_request(&mut self, id: Value, method: &str, params: &Value) -> Vec<Output> {
        let key = id.to_string();
        let (tool_name, tool_input, what, legacy) = match method {
            "item/commandExecution/requestApproval" | "execCommandApproval" => {
                let command = match &params["command"] {
                    Value::Array(parts) => parts.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "),
                    other => other.as_str().unwrap_or_default().to_string(),
                };
                let what = format!("Codex wants to run: {command}");
                ("command", json!({"command": command, "cwd": params["cwd"]}), what, method == "execCommandApproval")
            }
            "item/fileChange/requestApproval" | "applyPatchApproval" => {
                let item = params["itemId"].as_str().and_then(|i| self.items.get(i)).cloned();
                let changes = item.map(|i| i["changes"].clone()).unwrap_or_else(|| params["fileChanges"].clone());
                let input = json!({"changes": changes, "grantRoot": params["grantRoot"]});
                ("file_change", input, "Codex wants to change files".to_string(), method == "applyPatchApproval")
            }
            _ => return vec![RPC.unsupported(&id, method)],
        };
        let description = match text_of(&params["reason"]) {
            Some(reason) => format!("{what} ({reason})"),
            None => what,
        };
        self.open.insert(key.clone(), (id, legacy));
        vec![Output::Approval { key, tool_name: tool_name.into(), tool_input, description }]
    }

    fn on_notification(&mut self, method: &str, params: &Value) -> Vec<Output> {
        let item = &params["item"];
        match method {
            "item/started" => {
                if let Some(id) = item["id"].as_str() {
                    self.items.insert(id.to_string(), item.clone());
                }
                tool_use(item).into_iter().collect()
            }
            "item/completed" => {
                if let Some(id) = item["id"].as_str() {
                    self.items.remove(id);
                }
                self.completed_item(item)
            }
            "turn/completed" => {
                let turn = &params["turn"];
                let status = turn["status"].as_str().unwrap_or("completed");
                let error = match status {
                    "completed" => None,
                    other => {
                        Some(text_of(&turn["error"]["message"]).unwrap_or_else(|| format!("codex turn ended: {other}")))
                    }
                };
                let data = json!({"text": self.last_message, "status": status, "sessionId": self.thread_id});
                vec![Output::Event(EventType::Result, data), Output::Finished { error }]
            }
            "error" => {
                let message = text_of(&params["error"]["message"]).unwrap_or_else(|| params.to_string());
                let mut out = vec![Output::Event(EventType::Error, params.clone())];
                if params["willRetry"] != true {
                    out.insert(0, Output::Error(message));
                }
                out
            }
            "thread/started" => vec![Output::Event(EventType::System, json!({"subtype": method, "params": params}))],
            // Deltas repeat what `item/completed` says in full; the rest is bookkeeping.
            _ => Vec::new(),
        }
    }

    fn completed_item(&mut self, item: &Value) -> Vec<Output> {
        match item["type"].as_str().unwrap_or_default() {
            "agentMessage" => {
                let text = text_of(&item["text"]);
                self.last_message = text.clone().or(self.last_message.take());
                text.map(|t| Output::Event(EventType::Text, t.into())).into_iter().collect()
            }
            "reasoning" => {
                let parts = item["summary"].as_array().or(item["content"].as_array());
                let text: Vec<&str> = parts.into_iter().flatten().filter_map(Value::as_str).collect();
                let text = if text.is_empty() { text_of(&item["text"]).unwrap_or_default() } else { text.join("\n") };
                (!text.is_empty()).then(|| Output::Event(EventType::Thinking, text.into())).into_iter().collect()
            }
            "commandExecution" => vec![Output::Event(
                EventType::ToolResult,
                json!({"name": "command", "content": item["aggregatedOutput"], "exitCode": item["exitCode"],
                    "status": item["status"], "id": item["id"]}),
            )],
            "fileChange" => vec![Output::Event(
                EventType::ToolResult,
                json!({"name": "file_change", "content": item["changes"], "status": item["status"], "id": item["id"]}),
            )],
            "mcpToolCall" => vec![Output::Event(
                EventType::ToolResult,
                json!({"name": item["tool"], "content": item["result"], "status": item["status"], "id": item["id"]}),
            )],
            "userMessage" => Vec::new(),
            _ => vec![Output::Event(EventType::System, json!({"subtype": "item", "item": item}))],
        }
    }
}

fn tool_use(item: &Value) -> Option<Output> {
    let (name, input) = match item["type"].as_str()? {
        "commandExecution" => ("command".into(), json!({"command": item["command"], "cwd": item["cwd"]})),
        "fileChange" => ("file_change".into(), json!({"changes": item["changes"]})),
        "mcpToolCall" => (item["tool"].as_str().unwrap_or("mcp").to_string(), item["arguments"].clone()),
        _ => return None,
    };
    Some(Output::Event(EventType::ToolUse, json!({"name": name, "input": input, "id": item["id"]})))
}

/// Approval policy and sandbox for each permission mode.
fn policy(mode: PermissionMode) -> (&'static str, &'static str) {
    match mode {
        // Ask before every command that is not known to be safe.
        PermissionMode::Default => ("untrusted", "workspace-write"),
        // Work inside the workspace freely, ask to go beyond it.
        PermissionMode::AcceptEdits => ("on-request", "workspace-write"),
        PermissionMode::Plan => ("untrusted", "read-only"),
        // Never ask: what the sandbox forbids just fails.
        PermissionMode::DontAsk => ("never", "workspace-write"),
        PermissionMode::BypassPermissions => ("never", "danger-full-access"),
    }
}

impl Driver for Codex {
    fn args(&self) -> Vec<String> {
        let mut args = vec!["app-server".to_string()];
        args.extend(self.options.additional_args.iter().cloned());
        args
    }

    fn start(&mut self) -> Vec<Output> {
        vec![RPC.request(
            INITIALIZE,
            "initialize",
            json!({"clientInfo": {"name": "loopsy", "title": "loopsy", "version": env!("CARGO_PKG_VERSION")}}),
        )]
    }

    fn on_line(&mut self, line: &str) -> Vec<Output> {
        let Ok(message) = serde_json::from_str::<Value>(line) else { return plain_line(line) };
        match parse_rpc(&message) {
            Some(Rpc::Response { id, result }) => self.on_response(id, result),
            Some(Rpc::Request { id, method, params }) => self.on_request(id, &method, &params),
            Some(Rpc::Notification { method, params }) => self.on_notification(&method, &params),
            None => vec![Output::Event(EventType::System, message)],
        }
    }

    fn on_decision(&mut self, key: &str, decision: &Decision) -> Vec<Output> {
        let Some((id, legacy)) = self.open.remove(key) else { return Vec::new() };
        let answer = match (legacy, decision.approved) {
            (false, true) => "accept",
            (false, false) => "decline",
            (true, true) => "approved",
            (true, false) => "denied",
        };
        vec![RPC.result(&id, json!({"decision": answer}))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codex(mode: PermissionMode) -> Codex {
        Codex::new(Options {
            prompt: "fix it".into(),
            cwd: "/ws".into(),
            model: None,
            mode,
            max_budget_usd: None,
            allowed_tools: Vec::new(),
            disallowed_tools: Vec::new(),
            additional_args: Vec::new(),
            resume: None,
        })
    }

    fn written(out: &[Output]) -> Vec<Value> {
        out.iter()
            .filter_map(|o| match o {
                Output::Write(line) => Some(serde_json::from_str(line).unwrap()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_session_starts_with_the_approval_policy_then_the_turn() {
        let mut c = codex(PermissionMode::Default);
        assert_eq!(written(&c.start())[0]["method"], "initialize");
        let out = written(&c.on_line(r#"{"id":1,"result":{"userAgent":"codex"}}"#));
        assert_eq!(out[0]["method"], "initialized");
        assert_eq!(out[1]["method"], "thread/start");
        assert_eq!(out[1]["params"]["approvalPolicy"], "untrusted");
        assert_eq!(out[1]["params"]["cwd"], "/ws");
        let out = c.on_line(r#"{"id":2,"result":{"thread":{"id":"th1"}}}"#);
        assert_eq!(out[0], Output::SessionId("th1".into()));
        assert_eq!(written(&out)[0]["params"]["input"][0]["text"], "fix it");
        assert_eq!(out.last(), Some(&Output::Ready));
        let out = codex(PermissionMode::Default).on_line(r#"{"id":1,"error":{"code":-1,"message":"bad"}}"#);
        assert!(matches!(&out[..], [Output::Fail(e)] if e.contains("bad")));
    }

    #[test]
    fn a_session_id_resumes_the_thread() {
        let mut c = codex(PermissionMode::BypassPermissions);
        c.options.resume = Some("th0".into());
        let out = written(&c.on_line(r#"{"id":1,"result":{}}"#));
        assert_eq!(out[1]["method"], "thread/resume");
        assert_eq!(out[1]["params"]["threadId"], "th0");
        assert_eq!(out[1]["params"]["approvalPolicy"], "never");
        let out = c.on_line(r#"{"id":2,"result":{}}"#);
        assert_eq!(out[0], Output::SessionId("th0".into()));
    }

    #[test]
    fn command_approvals_are_answered_accept_or_decline() {
        let mut c = codex(PermissionMode::Default);
        let out = c.on_line(
            r#"{"method":"item/commandExecution/requestApproval","id":0,"params":{"command":"/bin/bash -lc 'echo hi'","cwd":"/ws","reason":"needs to"}}"#,
        );
        let [Output::Approval { key, tool_name, description, .. }] = &out[..] else { panic!("{out:?}") };
        assert_eq!(tool_name, "command");
        assert!(description.contains("echo hi") && description.contains("needs to"));
        let answer = written(&c.on_decision(key, &Decision { approved: false, message: None }));
        assert_eq!(answer[0], json!({"id": 0, "result": {"decision": "decline"}}));
    }

    #[test]
    fn items_and_turn_completion_become_events() {
        let mut c = codex(PermissionMode::Default);
        let out = c.on_line(
            r#"{"method":"item/started","params":{"item":{"id":"i1","type":"commandExecution","command":"ls"}}}"#,
        );
        assert!(matches!(&out[0], Output::Event(EventType::ToolUse, d) if d["input"]["command"] == "ls"));
        c.on_line(r#"{"method":"item/completed","params":{"item":{"id":"i2","type":"agentMessage","text":"done"}}}"#);
        let out = c.on_line(
            r#"{"method":"turn/completed","params":{"turn":{"id":"t","status":"failed","error":{"message":"boom"}}}}"#,
        );
        assert!(matches!(&out[0], Output::Event(EventType::Result, d) if d["text"] == "done"));
        assert_eq!(out[1], Output::Finished { error: Some("boom".into()) });
        let unknown = c.on_line(r#"{"method":"fs/readFile","id":9,"params":{}}"#);
        assert!(written(&unknown)[0]["error"]["code"] == -32601);
    }
}
