//! Claude Code over pipes: `-p --input-format stream-json --output-format stream-json --verbose
//! --permission-prompt-tool stdio` (AGENT-CLIS.md §4c).
//!
//! Claude asks for permission with `control_request`/`can_use_tool` lines and reads our
//! `control_response` on stdin, so no settings file (global or not) is ever written (E1). The
//! channel is proven by an `initialize` control request before the prompt is sent. Claude's own
//! rules (`--permission-mode`, allowed and disallowed tools) stay in force; only what it would
//! ask a human reaches us.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::{plain_line, text_of, Decision, Driver, Options, Output};
use crate::tasks::api::EventType;

const INIT_REQUEST_ID: &str = "loopsy_init";

pub(super) struct Claude {
    options: Options,
    /// Inputs of open permission requests, by Claude's request id (`allow` must echo them).
    open: HashMap<String, Value>,
    /// Tool names by tool_use id, to name tool results.
    tools: HashMap<String, String>,
    ready: bool,
}

impl Claude {
    pub(super) fn new(options: Options) -> Claude {
        Claude { options, open: HashMap::new(), tools: HashMap::new(), ready: false }
    }

    fn on_control_request(&mut self, message: &Value) -> Vec<Output> {
        let request_id = message["request_id"].as_str().unwrap_or_default().to_string();
        let request = &message["request"];
        if request["subtype"] != "can_use_tool" {
            // Hooks and MCP callbacks are not set up by loopsy; say so rather than leave Claude waiting.
            let subtype = request["subtype"].as_str().unwrap_or("unknown");
            return vec![Output::Write(
                json!({"type": "control_response", "response": {"subtype": "error", "request_id": request_id,
                    "error": format!("loopsy does not handle {subtype} requests")}})
                .to_string(),
            )];
        }
        let tool_name = request["tool_name"].as_str().unwrap_or("unknown").to_string();
        let input = request.get("input").cloned().unwrap_or_else(|| json!({}));
        let mut description =
            text_of(&request["description"]).unwrap_or_else(|| format!("Claude wants to use: {tool_name}"));
        if let Some(path) = text_of(&request["blocked_path"]) {
            description.push_str(&format!(" (path: {path})"));
        }
        self.open.insert(request_id.clone(), input.clone());
        vec![Output::Approval { key: request_id, tool_name, tool_input: input, description }]
    }

    fn on_control_response(&mut self, message: &Value) -> Vec<Output> {
        let response = &message["response"];
        if response["request_id"] != INIT_REQUEST_ID || self.ready {
            return Vec::new();
        }
        if response["subtype"] != "success" {
            let error = text_of(&response["error"]).unwrap_or_else(|| response.to_string());
            return vec![Output::Fail(format!("Claude Code refused the permission channel: {error}"))];
        }
        self.ready = true;
        let user = json!({"type": "user", "message": {"role": "user", "content": self.options.prompt},
            "parent_tool_use_id": null, "session_id": ""});
        vec![Output::Write(user.to_string()), Output::Ready]
    }

    fn on_assistant(&mut self, message: &Value) -> Vec<Output> {
        let mut out = Vec::new();
        for block in message["message"]["content"].as_array().into_iter().flatten() {
            match block["type"].as_str() {
                Some("text") => out.extend(text_of(&block["text"]).map(|t| Output::Event(EventType::Text, t.into()))),
                Some("thinking") => {
                    out.extend(text_of(&block["thinking"]).map(|t| Output::Event(EventType::Thinking, t.into())))
                }
                Some("tool_use") => {
                    let name = block["name"].as_str().unwrap_or("unknown").to_string();
                    if let Some(id) = block["id"].as_str() {
                        self.tools.insert(id.to_string(), name.clone());
                    }
                    out.push(Output::Event(
                        EventType::ToolUse,
                        json!({"name": name, "input": block["input"], "id": block["id"]}),
                    ));
                }
                _ => {}
            }
        }
        out
    }

    fn on_user(&mut self, message: &Value) -> Vec<Output> {
        let mut out = Vec::new();
        for block in message["message"]["content"].as_array().into_iter().flatten() {
            if block["type"] == "tool_result" {
                let id = block["tool_use_id"].as_str().unwrap_or_default();
                let name = self.tools.remove(id).unwrap_or_else(|| "unknown".into());
                out.push(Output::Event(
                    EventType::ToolResult,
                    json!({"name": name, "content": block["content"], "output": message["tool_use_result"],
                        "isError": block["is_error"], "id": id}),
                ));
            }
        }
        out
    }

    fn on_result(&mut self, message: &Value) -> Vec<Output> {
        let mut out = Vec::new();
        let session = text_of(&message["session_id"]);
        if let Some(session) = &session {
            out.push(Output::SessionId(session.clone()));
        }
        let mut data = json!({"text": message["result"], "cost": message["total_cost_usd"],
            "duration": message["duration_ms"], "sessionId": session});
        data.as_object_mut().expect("an object").retain(|_, v| !v.is_null());
        out.push(Output::Event(EventType::Result, data));
        // An API failure is `is_error: true` with subtype "success" (AGENT-CLIS.md §3).
        let failed = message["is_error"] == true || message["subtype"].as_str().is_some_and(|s| s.starts_with("error"));
        let error = failed
            .then(|| text_of(&message["result"]).unwrap_or_else(|| format!("Claude Code: {}", message["subtype"])));
        out.push(Output::Finished { error });
        out
    }
}

impl Driver for Claude {
    fn args(&self) -> Vec<String> {
        let o = &self.options;
        let mut args: Vec<String> = [
            "-p",
            "--input-format",
            "stream-json",
            "--output-format",
            "stream-json",
            "--verbose",
            "--permission-prompt-tool",
            "stdio",
        ]
        .map(String::from)
        .to_vec();
        // Claude Code knows all five modes by these names (1.0.21 passed none of them, E4).
        args.extend(["--permission-mode".into(), o.mode.as_str().into()]);
        if let Some(model) = &o.model {
            args.extend(["--model".into(), model.clone()]);
        }
        if let Some(budget) = o.max_budget_usd {
            args.extend(["--max-budget-usd".into(), budget.to_string()]);
        }
        if !o.allowed_tools.is_empty() {
            args.extend(["--allowedTools".into(), o.allowed_tools.join(" ")]);
        }
        if !o.disallowed_tools.is_empty() {
            args.extend(["--disallowedTools".into(), o.disallowed_tools.join(" ")]);
        }
        if let Some(session) = &o.resume {
            args.extend(["--resume".into(), session.clone()]);
        }
        args.extend(o.additional_args.iter().cloned());
        args
    }

    fn start(&mut self) -> Vec<Output> {
        let init =
            json!({"type": "control_request", "request_id": INIT_REQUEST_ID, "request": {"subtype": "initialize"}});
        vec![Output::Write(init.to_string())]
    }

    fn on_line(&mut self, line: &str) -> Vec<Output> {
        let Ok(message) = serde_json::from_str::<Value>(line) else { return plain_line(line) };
        match message["type"].as_str().unwrap_or_default() {
            "control_request" => self.on_control_request(&message),
            "control_response" => self.on_control_response(&message),
            "control_cancel_request" => {
                let key = message["request_id"].as_str().unwrap_or_default().to_string();
                self.open.remove(&key);
                vec![Output::Withdraw { key }]
            }
            "assistant" => self.on_assistant(&message),
            "user" => self.on_user(&message),
            "result" => self.on_result(&message),
            "system" => {
                let mut out: Vec<Output> = text_of(&message["session_id"]).map(Output::SessionId).into_iter().collect();
                out.push(Output::Event(EventType::System, message));
                out
            }
            "error" => {
                let text = text_of(&message["message"])
                    .or_else(|| text_of(&message["error"]))
                    .unwrap_or_else(|| message.to_string());
                vec![Output::Error(text), Output::Event(EventType::Error, message)]
            }
            // Partial messages, rate-limit notices, keep-alives: nothing a reader of the task needs.
            "stream_event" | "rate_limit_event" | "keep_alive" => Vec::new(),
            _ => vec![Output::Event(EventType::System, message)],
        }
    }

    fn on_decision(&mut self, key: &str, decision: &Decision) -> Vec<Output> {
        let Some(input) = self.open.remove(key) else { return Vec::new() };
        // `allow` must carry `updatedInput` (AGENT-CLIS.md §4b).
        let answer = if decision.approved {
            json!({"behavior": "allow", "updatedInput": input})
        } else {
            json!({"behavior": "deny", "message": decision.reason()})
        };
        let line = json!({"type": "control_response", "response": {"subtype": "success", "request_id": key, "response": answer}});
        vec![Output::Write(line.to_string())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::agents::Options;
    use crate::tasks::api::PermissionMode;

    fn options(mode: PermissionMode) -> Options {
        Options {
            prompt: "do it".into(),
            cwd: "/ws".into(),
            model: Some("sonnet".into()),
            mode,
            max_budget_usd: Some(2.0),
            allowed_tools: vec!["Bash".into(), "Read".into()],
            disallowed_tools: Vec::new(),
            additional_args: vec!["--foo".into()],
            resume: None,
        }
    }

    #[test]
    fn the_command_line_asks_for_stream_json_and_the_stdio_permission_channel() {
        let args = Claude::new(options(PermissionMode::AcceptEdits)).args().join(" ");
        assert_eq!(
            args,
            "-p --input-format stream-json --output-format stream-json --verbose --permission-prompt-tool stdio \
             --permission-mode acceptEdits --model sonnet --max-budget-usd 2 --allowedTools Bash Read --foo"
        );
    }

    #[test]
    fn the_prompt_is_sent_only_after_the_channel_answered() {
        let mut claude = Claude::new(options(PermissionMode::Default));
        let start = claude.start();
        assert!(matches!(&start[..], [Output::Write(line)] if line.contains("initialize")));
        assert!(claude
            .on_line(r#"{"type":"system","subtype":"init","session_id":"s1"}"#)
            .contains(&Output::SessionId("s1".into())));
        let out = claude.on_line(
            r#"{"type":"control_response","response":{"subtype":"success","request_id":"loopsy_init","response":{}}}"#,
        );
        assert!(matches!(&out[..], [Output::Write(user), Output::Ready] if user.contains(r#""content":"do it""#)));
        let mut refused = Claude::new(options(PermissionMode::Default));
        let out = refused.on_line(
            r#"{"type":"control_response","response":{"subtype":"error","request_id":"loopsy_init","error":"no"}}"#,
        );
        assert!(matches!(&out[..], [Output::Fail(e)] if e.contains("no")));
    }

    #[test]
    fn a_permission_request_is_answered_with_allow_and_the_input_or_deny() {
        let mut claude = Claude::new(options(PermissionMode::Default));
        let out = claude.on_line(
            r#"{"type":"control_request","request_id":"r1","request":{"subtype":"can_use_tool","tool_name":"Bash","input":{"command":"echo hi"},"description":"Say hi","tool_use_id":"t1"}}"#,
        );
        assert_eq!(
            out,
            [Output::Approval {
                key: "r1".into(),
                tool_name: "Bash".into(),
                tool_input: json!({"command": "echo hi"}),
                description: "Say hi".into()
            }]
        );
        let allow = claude.on_decision("r1", &Decision { approved: true, message: None });
        let Output::Write(line) = &allow[0] else { panic!("{allow:?}") };
        let line: Value = serde_json::from_str(line).unwrap();
        assert_eq!(line["response"]["request_id"], "r1");
        assert_eq!(line["response"]["response"], json!({"behavior": "allow", "updatedInput": {"command": "echo hi"}}));
        assert!(claude.on_decision("r1", &Decision { approved: true, message: None }).is_empty(), "answered once");
        claude.on_line(r#"{"type":"control_request","request_id":"r2","request":{"subtype":"can_use_tool","tool_name":"Write","input":{}}}"#);
        let deny = claude.on_decision("r2", &Decision { approved: false, message: Some("not now".into()) });
        assert!(matches!(&deny[0], Output::Write(l) if l.contains(r#""behavior":"deny","message":"not now""#)));
    }

    #[test]
    fn stream_lines_become_events() {
        let mut claude = Claude::new(options(PermissionMode::Default));
        let out = claude.on_line(
            r#"{"type":"assistant","message":{"content":[{"type":"thinking","thinking":"hmm"},{"type":"text","text":"Hi"},{"type":"tool_use","id":"t1","name":"Bash","input":{"command":"ls"}}]}}"#,
        );
        assert_eq!(out[0], Output::Event(EventType::Thinking, json!("hmm")));
        assert_eq!(out[1], Output::Event(EventType::Text, json!("Hi")));
        assert!(matches!(&out[2], Output::Event(EventType::ToolUse, d) if d["name"] == "Bash"));
        let out = claude.on_line(
            r#"{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t1","content":"a b","is_error":false}]}}"#,
        );
        assert!(
            matches!(&out[0], Output::Event(EventType::ToolResult, d) if d["name"] == "Bash" && d["content"] == "a b")
        );
        let out = claude.on_line(
            r#"{"type":"result","subtype":"success","is_error":true,"result":"API Error: 400 x","session_id":"s"}"#,
        );
        assert!(out.contains(&Output::Finished { error: Some("API Error: 400 x".into()) }));
        assert_eq!(claude.on_line("not json"), [Output::Event(EventType::Text, json!("not json"))]);
    }
}
