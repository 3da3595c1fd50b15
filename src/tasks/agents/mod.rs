//! How each agent CLI is driven: its command line, what to write on its stdin, and how its
//! output lines become task events and permission requests (AGENT-CLIS.md §4c, §6, §7).
//!
//! Every driver is sans-I/O: lines in, [`Output`]s out, so each protocol is unit-tested here
//! without processes. Each one first sets up the agent's two-way permission channel (Claude's
//! `initialize` control request, Codex app-server's and Gemini ACP's `initialize` and session
//! start) and sends the prompt only once that worked: a task never runs without it.

mod claude;
mod codex;
pub(crate) mod flags;
mod gemini;

use serde_json::{json, Value};

use super::api::{Agent, DispatchRequest, EventType, PermissionMode};

/// What a driver wants done.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Output {
    /// One line for the agent's stdin (the newline is added by the writer).
    Write(String),
    Event(EventType, Value),
    /// The agent asks to use a tool. `key` is the driver's own handle for the answer.
    Approval {
        key: String,
        tool_name: String,
        tool_input: Value,
        description: String,
    },
    /// The agent took back a request (it no longer waits for the answer).
    Withdraw {
        key: String,
    },
    SessionId(String),
    /// The permission channel works and the prompt was sent.
    Ready,
    /// The agent reported an error; the task keeps running.
    Error(String),
    /// The turn is over (with an error if it failed): stdin is closed and the agent exits.
    Finished {
        error: Option<String>,
    },
    /// The agent cannot be driven (its channel failed): the task fails and the agent is stopped.
    Fail(String),
}

/// A human's (or the timeout's) answer to a permission request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decision {
    pub approved: bool,
    pub message: Option<String>,
}

impl Decision {
    pub(crate) fn reason(&self) -> String {
        self.message
            .clone()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| if self.approved { "Approved via loopsy" } else { "Denied by user" }.to_string())
    }
}

/// One agent's protocol.
pub(crate) trait Driver: Send {
    /// Arguments after the program name.
    fn args(&self) -> Vec<String>;
    /// What to write as soon as the process runs.
    fn start(&mut self) -> Vec<Output>;
    /// One line of the agent's stdout (already stripped of terminal noise).
    fn on_line(&mut self, line: &str) -> Vec<Output>;
    /// The answer to the request the driver announced as `key`.
    fn on_decision(&mut self, key: &str, decision: &Decision) -> Vec<Output>;
}

/// What a driver needs from the request.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub prompt: String,
    pub cwd: String,
    pub model: Option<String>,
    pub mode: PermissionMode,
    pub max_budget_usd: Option<f64>,
    pub allowed_tools: Vec<String>,
    pub disallowed_tools: Vec<String>,
    pub additional_args: Vec<String>,
    pub resume: Option<String>,
}

impl Options {
    pub(crate) fn from_request(request: &DispatchRequest, cwd: &str) -> Options {
        Options {
            prompt: request.prompt.clone(),
            cwd: cwd.to_string(),
            model: request.model.clone(),
            mode: request.permission_mode,
            max_budget_usd: request.max_budget_usd,
            allowed_tools: request.allowed_tools.clone(),
            disallowed_tools: request.disallowed_tools.clone(),
            additional_args: request.additional_args.clone(),
            resume: request.resume_session_id.clone(),
        }
    }
}

/// The driver for `agent`.
pub(crate) fn driver(agent: Agent, options: Options) -> Box<dyn Driver> {
    match agent {
        Agent::Claude => Box::new(claude::Claude::new(options)),
        Agent::Codex => Box::new(codex::Codex::new(options)),
        Agent::Gemini => Box::new(gemini::Gemini::new(options)),
    }
}

/// Request options only Claude Code understands; other agents refuse them rather than
/// silently ignoring them (1.0.21 ignored them, E4).
pub(crate) fn unsupported_option(agent: Agent, request: &DispatchRequest) -> Option<&'static str> {
    if agent == Agent::Claude {
        return None;
    }
    if request.max_budget_usd.is_some() {
        Some("maxBudgetUsd")
    } else if !request.allowed_tools.is_empty() {
        Some("allowedTools")
    } else if !request.disallowed_tools.is_empty() {
        Some("disallowedTools")
    } else {
        None
    }
}

/// One incoming JSON-RPC message (Codex app-server, Gemini ACP).
#[derive(Debug, PartialEq)]
enum Rpc {
    /// The agent asks us something and waits for the answer.
    Request {
        id: Value,
        method: String,
        params: Value,
    },
    Notification {
        method: String,
        params: Value,
    },
    Response {
        id: u64,
        result: Result<Value, String>,
    },
}

fn parse_rpc(message: &Value) -> Option<Rpc> {
    let method = message.get("method").and_then(Value::as_str);
    let params = message.get("params").cloned().unwrap_or(Value::Null);
    match (method, message.get("id")) {
        (Some(method), Some(id)) if !id.is_null() => {
            Some(Rpc::Request { id: id.clone(), method: method.to_string(), params })
        }
        (Some(method), _) => Some(Rpc::Notification { method: method.to_string(), params }),
        (None, Some(id)) => {
            let id = id.as_u64().or_else(|| id.as_str().and_then(|s| s.parse().ok()))?;
            let result = match message.get("error") {
                Some(error) => Err(error
                    .get("message")
                    .and_then(Value::as_str)
                    .map(String::from)
                    .unwrap_or_else(|| error.to_string())),
                None => Ok(message.get("result").cloned().unwrap_or(Value::Null)),
            };
            Some(Rpc::Response { id, result })
        }
        (None, None) => None,
    }
}

/// Writes JSON-RPC messages; Codex's app-server leaves out the `"jsonrpc":"2.0"` member.
#[derive(Debug, Clone, Copy)]
struct RpcWriter {
    jsonrpc: bool,
}

impl RpcWriter {
    fn line(self, mut message: Value) -> Output {
        if self.jsonrpc {
            message["jsonrpc"] = "2.0".into();
        }
        Output::Write(message.to_string())
    }

    fn request(self, id: u64, method: &str, params: Value) -> Output {
        self.line(json!({"id": id, "method": method, "params": params}))
    }

    fn notification(self, method: &str, params: Value) -> Output {
        self.line(json!({"method": method, "params": params}))
    }

    fn result(self, id: &Value, result: Value) -> Output {
        self.line(json!({"id": id, "result": result}))
    }

    fn unsupported(self, id: &Value, method: &str) -> Output {
        let error = json!({"code": -32601, "message": format!("loopsy does not support {method}")});
        self.line(json!({"id": id, "error": error}))
    }
}

/// A line that is not JSON: shown as text (1.0.21 did the same).
fn plain_line(line: &str) -> Vec<Output> {
    if line.trim().is_empty() {
        Vec::new()
    } else {
        vec![Output::Event(EventType::Text, Value::String(line.to_string()))]
    }
}

fn text_of(value: &Value) -> Option<String> {
    value.as_str().map(String::from).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_rpc_messages_are_told_apart() {
        let check = |text: &str| parse_rpc(&serde_json::from_str(text).unwrap());
        assert_eq!(
            check(r#"{"id":0,"method":"session/request_permission","params":{"a":1}}"#),
            Some(Rpc::Request { id: json!(0), method: "session/request_permission".into(), params: json!({"a":1}) })
        );
        assert_eq!(
            check(r#"{"method":"turn/completed"}"#),
            Some(Rpc::Notification { method: "turn/completed".into(), params: Value::Null })
        );
        assert_eq!(check(r#"{"id":2,"result":{"x":1}}"#), Some(Rpc::Response { id: 2, result: Ok(json!({"x":1})) }));
        assert_eq!(
            check(r#"{"id":"3","error":{"code":-1,"message":"nope"}}"#),
            Some(Rpc::Response { id: 3, result: Err("nope".into()) })
        );
        assert_eq!(check(r#"{"hello":1}"#), None);
    }
}
