//! Gemini CLI as `gemini --acp`: the Agent Client Protocol, JSON-RPC 2.0 over stdio
//! (AGENT-CLIS.md §7).
//!
//! In ACP the default mode asks for permission (`session/request_permission`), where headless
//! `-p` mode would silently drop the shell tool. Sequence: `initialize`, `session/new` (or
//! `session/load` to resume), `session/prompt`; its answer ends the task. `dontAsk` has no ACP
//! equivalent, so this driver itself declines every request in that mode.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::{parse_rpc, plain_line, text_of, Decision, Driver, Options, Output, Rpc, RpcWriter};
use crate::tasks::api::{EventType, PermissionMode};

const INITIALIZE: u64 = 1;
const SESSION: u64 = 2;
const PROMPT: u64 = 3;
const RPC: RpcWriter = RpcWriter { jsonrpc: true };

pub(super) struct Gemini {
    options: Options,
    /// Open permission requests: our key to the JSON-RPC id and the offered options.
    open: HashMap<String, (Value, Vec<Value>)>,
    /// Tool call titles by id, to name results.
    tools: HashMap<String, String>,
    session_id: Option<String>,
    /// The agent's message so far (it arrives in chunks).
    message: String,
}

impl Gemini {
    pub(super) fn new(options: Options) -> Gemini {
        Gemini { options, open: HashMap::new(), tools: HashMap::new(), session_id: None, message: String::new() }
    }

    fn on_response(&mut self, id: u64, result: Result<Value, String>) -> Vec<Output> {
        let result = match result {
            Ok(result) => result,
            Err(error) if id == PROMPT => return vec![Output::Finished { error: Some(format!("gemini: {error}")) }],
            Err(error) => return vec![Output::Fail(format!("gemini --acp refused the session: {error}"))],
        };
        match id {
            INITIALIZE => {
                let mut params = json!({"cwd": self.options.cwd, "mcpServers": []});
                vec![match &self.options.resume {
                    Some(session) => {
                        params["sessionId"] = session.clone().into();
                        RPC.request(SESSION, "session/load", params)
                    }
                    None => RPC.request(SESSION, "session/new", params),
                }]
            }
            SESSION => {
                let Some(session) = text_of(&result["sessionId"]).or_else(|| self.options.resume.clone()) else {
                    return vec![Output::Fail(format!("gemini --acp opened no session: {result}"))];
                };
                self.session_id = Some(session.clone());
                let prompt = RPC.request(
                    PROMPT,
                    "session/prompt",
                    json!({"sessionId": session, "prompt": [{"type": "text", "text": self.options.prompt}]}),
                );
                vec![Output::SessionId(session), prompt, Output::Ready]
            }
            PROMPT => {
                let stop = result["stopReason"].as_str().unwrap_or("end_turn").to_string();
                let text = (!self.message.is_empty()).then(|| self.message.clone());
                let data = json!({"text": text, "stopReason": stop, "sessionId": self.session_id});
                let error = matches!(stop.as_str(), "refusal" | "max_tokens" | "max_turn_requests")
                    .then(|| format!("gemini stopped: {stop}"));
                vec![Output::Event(EventType::Result, data), Output::Finished { error }]
            }
            _ => Vec::new(),
        }
    }

    fn on_update(&mut self, update: &Value) -> Vec<Output> {
        let text = || text_of(&update["content"]["text"]);
        match update["sessionUpdate"].as_str().unwrap_or_default() {
            "agent_message_chunk" => {
                let Some(text) = text() else { return Vec::new() };
                self.message.push_str(&text);
                vec![Output::Event(EventType::Text, text.into())]
            }
            "agent_thought_chunk" => text().map(|t| Output::Event(EventType::Thinking, t.into())).into_iter().collect(),
            "tool_call" => {
                let id = update["toolCallId"].as_str().unwrap_or_default().to_string();
                let name = text_of(&update["title"]).or_else(|| text_of(&update["kind"])).unwrap_or("tool".into());
                self.tools.insert(id.clone(), name.clone());
                let input = update.get("rawInput").cloned().unwrap_or_else(|| json!({"title": update["title"]}));
                vec![Output::Event(
                    EventType::ToolUse,
                    json!({"name": name, "input": input, "kind": update["kind"], "id": id}),
                )]
            }
            "tool_call_update" => {
                let status = update["status"].as_str().unwrap_or_default();
                if !matches!(status, "completed" | "failed") {
                    return Vec::new();
                }
                let id = update["toolCallId"].as_str().unwrap_or_default();
                let name = self.tools.remove(id).unwrap_or_else(|| "tool".into());
                vec![Output::Event(
                    EventType::ToolResult,
                    json!({"name": name, "content": update["content"], "output": update["rawOutput"], "status": status, "id": id}),
                )]
            }
            "plan" => vec![Output::Event(EventType::System, json!({"subtype": "plan", "update": update}))],
            _ => Vec::new(),
        }
    }

    fn on_permission(&mut self, id: Value, params: &Value) -> Vec<Output> {
        let call = &params["toolCall"];
        let title = text_of(&call["title"]).unwrap_or_else(|| "a tool".into());
        let kind = text_of(&call["kind"]).unwrap_or_else(|| "tool".into());
        let input = call.get("rawInput").cloned().unwrap_or_else(|| json!({"title": title}));
        let options = params["options"].as_array().cloned().unwrap_or_default();
        let key = id.to_string();
        self.open.insert(key.clone(), (id, options));
        let approval = Output::Approval {
            key: key.clone(),
            tool_name: kind.clone(),
            tool_input: input,
            description: format!("Gemini wants to {kind}: {title}"),
        };
        if self.options.mode == PermissionMode::DontAsk {
            let mut out = vec![approval];
            let message = Some("permission mode dontAsk".to_string());
            out.extend(self.on_decision(&key, &Decision { approved: false, message }));
            out.push(Output::Withdraw { key });
            return out;
        }
        vec![approval]
    }
}

impl Driver for Gemini {
    fn args(&self) -> Vec<String> {
        let mut args = vec!["--acp".to_string()];
        if let Some(model) = &self.options.model {
            args.extend(["-m".into(), model.clone()]);
        }
        let mode = match self.options.mode {
            PermissionMode::BypassPermissions => Some("yolo"),
            PermissionMode::AcceptEdits => Some("auto_edit"),
            PermissionMode::Plan => Some("plan"),
            PermissionMode::Default | PermissionMode::DontAsk => None,
        };
        if let Some(mode) = mode {
            args.extend(["--approval-mode".into(), mode.into()]);
        }
        args.extend(self.options.additional_args.iter().cloned());
        args
    }

    fn start(&mut self) -> Vec<Output> {
        vec![RPC.request(
            INITIALIZE,
            "initialize",
            json!({"protocolVersion": 1, "clientCapabilities": {"fs": {"readTextFile": false, "writeTextFile": false}, "terminal": false}}),
        )]
    }

    fn on_line(&mut self, line: &str) -> Vec<Output> {
        let Ok(message) = serde_json::from_str::<Value>(line) else { return plain_line(line) };
        match parse_rpc(&message) {
            Some(Rpc::Response { id, result }) => self.on_response(id, result),
            Some(Rpc::Request { id, method, params }) if method == "session/request_permission" => {
                self.on_permission(id, &params)
            }
            Some(Rpc::Request { id, method, .. }) => vec![RPC.unsupported(&id, &method)],
            Some(Rpc::Notification { method, params }) if method == "session/update" => {
                self.on_update(&params["update"])
            }
            Some(Rpc::Notification { .. }) => Vec::new(),
            None => vec![Output::Event(EventType::System, message)],
        }
    }

    fn on_decision(&mut self, key: &str, decision: &Decision) -> Vec<Output> {
        let Some((id, options)) = self.open.remove(key) else { return Vec::new() };
        let wanted: &[&str] =
            if decision.approved { &["allow_once", "allow_always"] } else { &["reject_once", "reject_always"] };
        let chosen = wanted
            .iter()
            .find_map(|kind| options.iter().find(|o| o["kind"] == *kind))
            .and_then(|o| o["optionId"].as_str());
        let outcome = match chosen {
            Some(option) => json!({"outcome": {"outcome": "selected", "optionId": option}}),
            // No fitting option: "cancelled" never grants anything.
            None => json!({"outcome": {"outcome": "cancelled"}}),
        };
        vec![RPC.result(&id, outcome)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gemini(mode: PermissionMode) -> Gemini {
        Gemini::new(Options {
            prompt: "go".into(),
            cwd: "/ws".into(),
            model: Some("flash".into()),
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

    const PERMISSION: &str = r#"{"jsonrpc":"2.0","method":"session/request_permission","id":0,"params":{"sessionId":"s","options":[{"optionId":"proceed_always","kind":"allow_always"},{"optionId":"proceed_once","kind":"allow_once"},{"optionId":"cancel","kind":"reject_once"}],"toolCall":{"toolCallId":"c1","title":"echo hello > x.txt","kind":"execute"}}}"#;

    #[test]
    fn the_session_opens_before_the_prompt() {
        let mut g = gemini(PermissionMode::Default);
        assert_eq!(g.args(), ["--acp", "-m", "flash"]);
        assert_eq!(written(&g.start())[0]["params"]["protocolVersion"], 1);
        let out = written(&g.on_line(r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":1}}"#));
        assert_eq!(out[0]["method"], "session/new");
        let out = g.on_line(r#"{"jsonrpc":"2.0","id":2,"result":{"sessionId":"s9"}}"#);
        assert_eq!(written(&out)[0]["params"]["sessionId"], "s9");
        assert_eq!(out.last(), Some(&Output::Ready));
        g.on_line(r#"{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"s9","update":{"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"Hi"}}}}"#);
        let out = g.on_line(r#"{"jsonrpc":"2.0","id":3,"result":{"stopReason":"end_turn"}}"#);
        assert!(matches!(&out[0], Output::Event(EventType::Result, d) if d["text"] == "Hi"));
        assert_eq!(out[1], Output::Finished { error: None });
    }

    #[test]
    fn permission_requests_select_an_allow_or_reject_option() {
        let mut g = gemini(PermissionMode::Default);
        let out = g.on_line(PERMISSION);
        let [Output::Approval { key, tool_name, description, .. }] = &out[..] else { panic!("{out:?}") };
        assert_eq!(tool_name, "execute");
        assert!(description.contains("echo hello"));
        let answer = written(&g.on_decision(key, &Decision { approved: true, message: None }));
        assert_eq!(answer[0]["result"]["outcome"], json!({"outcome": "selected", "optionId": "proceed_once"}));
        g.on_line(PERMISSION);
        let answer = written(&g.on_decision("0", &Decision { approved: false, message: None }));
        assert_eq!(answer[0]["result"]["outcome"]["optionId"], "cancel");
    }

    #[test]
    fn a_session_id_loads_the_session() {
        let mut g = gemini(PermissionMode::BypassPermissions);
        g.options.resume = Some("s0".into());
        assert_eq!(g.args(), ["--acp", "-m", "flash", "--approval-mode", "yolo"]);
        let out = written(&g.on_line(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#));
        assert_eq!(out[0]["method"], "session/load");
        assert_eq!(out[0]["params"]["sessionId"], "s0");
        let out = written(&g.on_line(r#"{"jsonrpc":"2.0","id":2,"result":null}"#));
        assert_eq!(out[0]["params"]["sessionId"], "s0");
    }

    #[test]
    fn dont_ask_mode_declines_by_itself() {
        let mut g = gemini(PermissionMode::DontAsk);
        let out = g.on_line(PERMISSION);
        assert_eq!(written(&out)[0]["result"]["outcome"]["optionId"], "cancel");
        assert!(matches!(out.last(), Some(Output::Withdraw { .. })));
    }
}
