//! AI task dispatch against stand-in agent CLIs (`tests/agents/{claude,codex,gemini}`), which
//! speak each real CLI's protocol (Claude stream-json with the stdio permission prompt, Codex
//! app-server JSON-RPC, Gemini ACP). Every daemon here runs with its own `HOME` holding the
//! user's global agent settings files, and every test checks they are byte-identical at the end.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::relay::Relay;
use crate::support::{wait_until, Daemon, Home, TempDir};

const AGENTS: [&str; 3] = ["claude", "codex", "gemini"];
const LONG: Duration = Duration::from_secs(20);

/// The user's global agent settings, relative to `HOME` (Claude Code's user config both where
/// it is by default and where CLAUDE_CONFIG_DIR=~/.claude, as the sandbox sets it, puts it).
const SETTINGS: [&str; 5] =
    [".claude/settings.json", ".claude.json", ".claude/.claude.json", ".gemini/settings.json", ".codex/config.toml"];

/// A daemon whose PATH starts with the stand-ins and whose HOME is a fake user home.
struct Agents {
    daemon: Daemon,
    _user_home: TempDir,
    settings: Vec<(PathBuf, Vec<u8>)>,
}

impl std::ops::Deref for Agents {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        self.daemon.stop();
        if std::thread::panicking() {
            return;
        }
        for (path, before) in &self.settings {
            let after = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(&after, before, "{} was changed", path.display());
        }
    }
}

fn start(name: &str, change: impl FnOnce(&mut crate::support::Yaml), env: &[(&str, &str)]) -> Agents {
    let user_home = TempDir::new(&format!("{name}-user"));
    let mut settings = Vec::new();
    for (i, file) in SETTINGS.iter().enumerate() {
        let path = user_home.path().join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let content = format!("{{\"user\": \"settings {i}\", \"hooks\": {{}}}}\n").into_bytes();
        std::fs::write(&path, &content).unwrap();
        settings.push((path, content));
    }
    let mut home = Home::new(name);
    home.edit_config(change);
    home.with_stand_in_agents();
    home.env.push(("HOME".into(), user_home.path().display().to_string()));
    for (k, v) in env {
        home.env.push((k.to_string(), v.to_string()));
    }
    Agents { daemon: home.start(), _user_home: user_home, settings }
}

fn plain(name: &str) -> Agents {
    start(name, |_| {}, &[])
}

fn dispatch(d: &Daemon, body: Value) -> Value {
    d.req("POST", "/api/v1/ai-tasks").json(&body).send().expect(201)
}

fn task(d: &Daemon, id: &str) -> Value {
    d.get(&format!("/api/v1/ai-tasks/{id}")).expect(200)
}

#[track_caller]
fn wait_final(d: &Daemon, id: &str) -> Value {
    let mut info = Value::Null;
    wait_until(LONG, "the task ends", || {
        info = task(d, id);
        info["completedAt"].is_u64()
    });
    assert!(matches!(info["status"].as_str(), Some("completed" | "failed" | "cancelled")), "{info}");
    info
}

#[track_caller]
fn wait_pending(d: &Daemon, id: &str) -> Value {
    let mut info = Value::Null;
    wait_until(LONG, "a permission request", || {
        info = task(d, id);
        assert!(!matches!(info["status"].as_str(), Some("completed" | "failed" | "cancelled")), "ended: {info}");
        info["pendingApproval"].is_object()
    });
    info
}

fn events(d: &Daemon, id: &str) -> Vec<Value> {
    let body = d.get(&format!("/api/v1/ai-tasks/{id}/events")).expect(200);
    assert_eq!(body["count"], body["events"].as_array().unwrap().len());
    body["events"].as_array().unwrap().clone()
}

fn texts(events: &[Value]) -> Vec<String> {
    events.iter().filter(|e| e["type"] == "text").map(|e| e["data"].as_str().unwrap().to_string()).collect()
}

#[track_caller]
fn wait_text(d: &Daemon, id: &str, prefix: &str) -> String {
    let mut found = String::new();
    wait_until(LONG, &format!("a text starting with {prefix:?}"), || {
        match texts(&events(d, id)).into_iter().find(|t| t.starts_with(prefix)) {
            Some(text) => {
                found = text;
                true
            }
            None => false,
        }
    });
    found
}

fn approve(d: &Daemon, id: &str, request_id: &str, approved: bool, message: Option<&str>) -> Value {
    let mut body = json!({"requestId": request_id, "approved": approved});
    if let Some(message) = message {
        body["message"] = message.into();
    }
    d.req("POST", &format!("/api/v1/ai-tasks/{id}/approve")).json(&body).send().expect(200)
}

fn alive(pid: i64) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

fn plain_error(res: &crate::support::Response, status: u16) -> String {
    let body = res.expect(status);
    body["error"].as_str().unwrap_or_else(|| panic!("not a plain error: {body}")).to_string()
}

#[test]
fn each_agent_answers_a_prompt_and_its_stream_ends_after_exit() {
    let d = plain("ai-hello");
    for agent in AGENTS {
        let info = dispatch(&d, json!({"prompt": "hello", "agent": agent, "cwd": "/"}));
        assert_eq!(info["status"], "running");
        assert_eq!(info["agent"], agent);
        assert_eq!(info["fromNodeId"], "remote");
        assert!(info["pid"].is_u64());
        let id = info["taskId"].as_str().unwrap();
        let mut stream = d.req("GET", &format!("/api/v1/ai-tasks/{id}/stream")).stream();
        assert_eq!(stream.status, 200);
        let content_type = stream.headers.iter().find(|(n, _)| n == "content-type").map(|(_, v)| v.clone());
        assert_eq!(content_type.as_deref(), Some("text/event-stream"));
        let mut seen = Vec::new();
        while let Some(event) = stream.next_event() {
            let json = event.json();
            assert_eq!(event.id.as_deref(), Some(json["seq"].to_string().as_str()), "SSE id is the seq");
            assert_eq!(json["taskId"], id);
            seen.push(json);
        }
        let kinds: Vec<&str> = seen.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(kinds.first(), Some(&"status"), "{kinds:?}");
        assert_eq!(kinds.last(), Some(&"exit"), "the stream ends after exit: {kinds:?}");
        assert!(kinds.contains(&"result"), "{kinds:?}");
        let seqs: Vec<u64> = seen.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
        assert!(texts(&seen).iter().any(|t| t.starts_with("Hello from")), "{seen:?}");
        let info = wait_final(&d, id);
        assert_eq!(info["status"], "completed", "{info}");
        assert_eq!(info["exitCode"], 0);
        assert!(info["sessionId"].is_string(), "{info}");
        assert!(info.get("error").is_none(), "{info}");
    }
    let list = d.get("/api/v1/ai-tasks").expect(200);
    let started: Vec<u64> =
        list["tasks"].as_array().unwrap().iter().map(|t| t["startedAt"].as_u64().unwrap()).collect();
    assert_eq!(started.len(), 3);
    assert!(started.windows(2).all(|w| w[0] >= w[1]), "newest first: {started:?}");
    assert_eq!(list["tasks"][0]["agent"], "gemini");
}

#[test]
fn approving_a_request_lets_each_agent_run_its_tool() {
    let d = plain("ai-approve");
    for agent in AGENTS {
        let work = TempDir::new("ai-approve-ws");
        let cwd = work.path().to_str().unwrap();
        let info = dispatch(&d, json!({"prompt": "tool", "agent": agent, "cwd": cwd}));
        let id = info["taskId"].as_str().unwrap();
        let info = wait_pending(&d, id);
        assert_eq!(info["status"], "waiting_approval");
        let approval = &info["pendingApproval"];
        assert!(approval["toolName"].is_string() && approval["description"].is_string(), "{approval}");
        assert!(approval["toolInput"].to_string().contains("echo hi"), "{approval}");
        let listed = d.get("/api/v1/ai-tasks").expect(200);
        assert_eq!(listed["tasks"][0]["pendingApproval"], *approval, "the list shows the request too");
        let request = events(&d, id).into_iter().find(|e| e["type"] == "permission_request").unwrap();
        assert_eq!(request["data"], *approval);
        assert!(!work.path().join("out.txt").exists(), "nothing ran before the answer");
        let request_id = approval["requestId"].as_str().unwrap();
        let answer = approve(&d, id, request_id, true, None);
        assert_eq!((&answer["success"], &answer["taskId"]), (&json!(true), &json!(id)), "{answer}");
        assert_eq!(
            (&answer["approval"]["state"], &answer["approval"]["decidedBy"]),
            (&json!("approved"), &json!("owner"))
        );
        let info = wait_final(&d, id);
        assert_eq!(info["status"], "completed", "{agent}: {info}");
        assert!(info.get("pendingApproval").is_none());
        assert_eq!(std::fs::read_to_string(work.path().join("out.txt")).unwrap(), "hi\n", "{agent} ran the tool");
        let all = events(&d, id);
        assert!(texts(&all).contains(&"approved".to_string()), "{agent}: {all:?}");
        assert!(all.iter().any(|e| e["type"] == "status" && e["data"]["approved"] == true));
        // The same request cannot be answered twice: the second answer is told who answered.
        let again = d
            .req("POST", &format!("/api/v1/ai-tasks/{id}/approve"))
            .json(&json!({"requestId": request_id, "approved": true}))
            .send();
        assert!(plain_error(&again, 409).starts_with("this request was already approved by owner at "));
        assert_eq!(again.json()["approval"]["state"], "approved");
    }
}

#[test]
fn denying_a_request_keeps_the_tool_from_running() {
    let d = plain("ai-deny");
    for agent in AGENTS {
        let work = TempDir::new("ai-deny-ws");
        let info = dispatch(&d, json!({"prompt": "tool", "agent": agent, "cwd": work.path()}));
        let id = info["taskId"].as_str().unwrap();
        let request_id = wait_pending(&d, id)["pendingApproval"]["requestId"].as_str().unwrap().to_string();
        // A request id of another task is not this task's.
        let other = d
            .req("POST", "/api/v1/ai-tasks/someone-else/approve")
            .json(&json!({"requestId": request_id, "approved": true}))
            .send();
        plain_error(&other, 404);
        approve(&d, id, &request_id, false, Some("not today"));
        let info = wait_final(&d, id);
        assert_eq!(info["status"], "completed", "the agent carries on after a denial: {info}");
        assert!(!work.path().join("out.txt").exists(), "{agent} did not run the tool");
        let said = texts(&events(&d, id));
        assert!(said.iter().any(|t| t.starts_with("denied")), "{agent}: {said:?}");
        if agent == "claude" {
            assert!(said.contains(&"denied: not today".to_string()), "the message reaches Claude: {said:?}");
        }
    }
}

#[test]
fn an_unanswered_request_is_denied_after_the_approval_timeout() {
    let d = start("ai-approval-timeout", |doc| doc["aiTasks"]["approvalTimeout"] = 300.into(), &[]);
    let work = TempDir::new("ai-timeout-ws");
    let id = dispatch(&d, json!({"prompt": "tool", "agent": "claude", "cwd": work.path()}))["taskId"]
        .as_str()
        .unwrap()
        .to_string();
    let info = wait_final(&d, &id);
    assert_eq!(info["status"], "completed", "{info}");
    assert!(!work.path().join("out.txt").exists());
    let all = events(&d, &id);
    assert!(texts(&all).iter().any(|t| t.starts_with("denied: Permission request timed out")), "{all:?}");
    assert!(all.iter().any(|e| e["type"] == "status" && e["data"]["reason"] == "timeout"), "{all:?}");
}

#[test]
fn cancelling_kills_the_process_group_and_reports_cancelled() {
    let d = plain("ai-cancel");
    for (agent, pty) in [("claude", false), ("gemini", true)] {
        let info = dispatch(&d, json!({"prompt": "hang", "agent": agent, "cwd": "/", "pty": pty}));
        let id = info["taskId"].as_str().unwrap();
        let grandchild: i64 = wait_text(&d, id, "grandchild ")["grandchild ".len()..].parse().unwrap();
        assert!(alive(grandchild));
        let res = d.req("DELETE", &format!("/api/v1/ai-tasks/{id}")).send().expect(200);
        assert_eq!(res, json!({"success": true, "taskId": id}));
        let info = wait_final(&d, id);
        // The stand-in exits 0 on SIGTERM: still cancelled (E2).
        assert_eq!(info["status"], "cancelled", "{info}");
        assert_eq!(info["exitCode"], 0, "{info}");
        wait_until(LONG, "the grandchild is gone", || !alive(grandchild));
        assert!(!alive(info["pid"].as_i64().unwrap()));
        // A finished task is forgotten on the second DELETE.
        let res = d.req("DELETE", &format!("/api/v1/ai-tasks/{id}")).send().expect(200);
        assert_eq!(res["deleted"], true);
        plain_error(&d.req("DELETE", &format!("/api/v1/ai-tasks/{id}")).send(), 404);
    }
}

#[test]
fn a_crashing_agent_fails_with_its_exit_code_and_stderr() {
    let d = plain("ai-crash");
    for agent in AGENTS {
        let id = dispatch(&d, json!({"prompt": "crash", "agent": agent, "cwd": "/"}))["taskId"]
            .as_str()
            .unwrap()
            .to_string();
        let info = wait_final(&d, &id);
        assert_eq!(info["status"], "failed", "{info}");
        assert_eq!(info["exitCode"], 3);
        let error = info["error"].as_str().unwrap();
        assert!(error.contains("exited with code 3"), "{error}");
        assert!(error.contains("fatal: the stand-in crashed on purpose"), "{error}");
        let last = events(&d, &id).last().cloned().unwrap();
        assert_eq!(last["type"], "exit");
        assert_eq!(last["data"]["exitCode"], 3);
    }
}

#[test]
fn a_missing_agent_binary_is_a_clear_error() {
    let empty = TempDir::new("ai-empty-path");
    let d = start("ai-missing", |_| {}, &[("PATH", empty.path().to_str().unwrap())]);
    let res = d.req("POST", "/api/v1/ai-tasks").json(&json!({"prompt": "hello", "agent": "claude", "cwd": "/"})).send();
    assert_eq!(plain_error(&res, 503), "claude CLI not found in PATH");
    let res = d.req("POST", "/api/v1/ai-tasks").json(&json!({"prompt": "hello", "cwd": "/"})).send();
    assert!(plain_error(&res, 503).starts_with("No AI agent CLI found in PATH"));
    d.get("/api/v1/health").expect(200);
    assert_eq!(d.get("/api/v1/ai-tasks").expect(200)["tasks"], json!([]));
}

#[test]
fn a_bad_cwd_is_refused_and_the_daemon_keeps_running() {
    let d = plain("ai-cwd");
    for agent in AGENTS {
        // Malformed: 400; well-formed but not a directory here: 404.
        for (cwd, status, expect) in [
            ("/no/such/dir", 404, "cwd: '/no/such/dir'"),
            ("relative/dir", 400, "is not an absolute path"),
            ("/bin/sh", 404, "is not a directory"),
        ] {
            let res =
                d.req("POST", "/api/v1/ai-tasks").json(&json!({"prompt": "hello", "agent": agent, "cwd": cwd})).send();
            let message = plain_error(&res, status);
            assert!(message.contains(expect), "{agent} {cwd}: {message}");
        }
    }
    d.get("/api/v1/health").expect(200);
    let id =
        dispatch(&d, json!({"prompt": "hello", "agent": "gemini", "cwd": "/"}))["taskId"].as_str().unwrap().to_string();
    assert_eq!(wait_final(&d, &id)["status"], "completed");
}

#[test]
fn invalid_requests_are_400s_that_name_the_field() {
    let d = plain("ai-invalid");
    for (body, field) in [
        (json!({"cwd": "/"}), "prompt"),
        (json!({"prompt": "", "cwd": "/"}), "prompt"),
        (json!({"prompt": "hi", "agent": "gpt"}), "agent"),
        (json!({"prompt": "hi", "permissionMode": "yolo"}), "permissionMode"),
        (json!({"prompt": "hi", "cwd": "/", "maxBudgetUsd": -1}), "maxBudgetUsd"),
        (json!({"prompt": "hi", "cwd": "/", "agent": "codex", "allowedTools": ["Bash"]}), "allowedTools"),
        (json!({"prompt": "hi", "additionalArgs": "--x"}), "additionalArgs"),
        (json!({"prompt": "hi", "pty": "yes"}), "pty"),
    ] {
        let res = d.req("POST", "/api/v1/ai-tasks").json(&body).send();
        let message = plain_error(&res, 400);
        assert!(message.contains(field), "{body}: {message}");
    }
    let res = d.req("POST", "/api/v1/ai-tasks").header("Content-Type", "application/json").body("{nope").send();
    plain_error(&res, 400);
    let res = d.req("POST", "/api/v1/ai-tasks/x/approve").json(&json!({"requestId": "", "approved": true})).send();
    assert!(plain_error(&res, 400).contains("requestId"));
    let res = d.req("POST", "/api/v1/ai-tasks/x/approve").json(&json!({"requestId": "r"})).send();
    assert!(plain_error(&res, 400).contains("approved"));
    // No key, no task.
    d.anon("POST", "/api/v1/ai-tasks").json(&json!({"prompt": "hi"})).send().expect_error(401, 1001);
}

#[test]
fn unknown_tasks_are_404_except_their_empty_event_list() {
    let d = plain("ai-unknown");
    assert_eq!(plain_error(&d.get("/api/v1/ai-tasks/nope"), 404), "Task not found");
    assert_eq!(plain_error(&d.req("GET", "/api/v1/ai-tasks/nope/stream").send(), 404), "Task not found");
    assert_eq!(plain_error(&d.req("DELETE", "/api/v1/ai-tasks/nope").send(), 404), "Task not found");
    assert_eq!(d.get("/api/v1/ai-tasks/nope/events").expect(200), json!({"events": [], "count": 0}));
}

#[test]
fn the_concurrency_cap_counts_tasks_still_being_cancelled() {
    let d = start("ai-cap", |doc| doc["aiTasks"]["maxConcurrent"] = 2.into(), &[]);
    let first = dispatch(&d, json!({"prompt": "stubborn", "agent": "codex", "cwd": "/"}));
    let second = dispatch(&d, json!({"prompt": "hang", "agent": "codex", "cwd": "/"}));
    let res = d.req("POST", "/api/v1/ai-tasks").json(&json!({"prompt": "hello", "cwd": "/"})).send();
    assert_eq!(plain_error(&res, 429), "Max concurrent AI tasks (2) reached");
    let first_id = first["taskId"].as_str().unwrap();
    wait_text(&d, first_id, "grandchild ");
    d.req("DELETE", &format!("/api/v1/ai-tasks/{first_id}")).send().expect(200);
    assert_eq!(task(&d, first_id)["status"], "cancelled");
    // It ignores SIGTERM, so it is alive until the SIGKILL five seconds later: still counted (E10).
    let res = d.req("POST", "/api/v1/ai-tasks").json(&json!({"prompt": "hello", "cwd": "/"})).send();
    plain_error(&res, 429);
    let info = wait_final(&d, first_id);
    assert_eq!(info["signal"], 9, "{info}");
    assert_eq!(info["status"], "cancelled");
    dispatch(&d, json!({"prompt": "hello", "cwd": "/"}));
    d.req("DELETE", &format!("/api/v1/ai-tasks/{}", second["taskId"].as_str().unwrap())).send().expect(200);
}

#[test]
fn streams_resume_after_since_or_last_event_id() {
    let d = plain("ai-replay");
    let id = dispatch(&d, json!({"prompt": "spam 5", "agent": "claude", "cwd": "/"}))["taskId"]
        .as_str()
        .unwrap()
        .to_string();
    wait_final(&d, &id);
    let total = events(&d, &id).len() as u64;
    let read = |since: Option<&str>, last: Option<&str>| {
        let path = match since {
            Some(s) => format!("/api/v1/ai-tasks/{id}/stream?since={s}"),
            None => format!("/api/v1/ai-tasks/{id}/stream"),
        };
        let mut req = d.req("GET", &path);
        if let Some(last) = last {
            req = req.header("Last-Event-ID", last);
        }
        let mut stream = req.stream();
        let mut seqs = Vec::new();
        let mut closing = None;
        while let Some(event) = stream.next_event() {
            match event.id {
                Some(id) => seqs.push(id.parse::<u64>().unwrap()),
                None => closing = Some(event.json()),
            }
        }
        (seqs, closing.expect("a finished task's stream ends with a status event"))
    };
    let (seqs, closing) = read(Some("3"), None);
    assert_eq!(seqs, (4..=total).collect::<Vec<_>>());
    assert_eq!(closing["type"], "status");
    assert_eq!(closing["data"]["status"], "completed");
    assert_eq!(read(None, Some("5")).0, (6..=total).collect::<Vec<_>>());
    assert_eq!(read(Some("1"), Some("7")).0, (8..=total).collect::<Vec<_>>(), "Last-Event-ID wins");
    assert_eq!(read(Some("bogus"), None).0.len() as u64, total);
    assert!(read(Some(&total.to_string()), None).0.is_empty());
}

#[test]
fn a_live_stream_has_heartbeats_and_ends_after_exit() {
    use std::io::BufRead;
    let d = start("ai-live", |doc| doc["aiTasks"]["heartbeatInterval"] = 200.into(), &[]);
    let id = dispatch(&d, json!({"prompt": "tool", "agent": "gemini", "cwd": "/tmp"}))["taskId"]
        .as_str()
        .unwrap()
        .to_string();
    let request_id = wait_pending(&d, &id)["pendingApproval"]["requestId"].as_str().unwrap().to_string();
    let mut stream = d.req("GET", &format!("/api/v1/ai-tasks/{id}/stream")).stream();
    let mut line = String::new();
    let mut heartbeat = false;
    for _ in 0..100 {
        line.clear();
        stream.body.read_line(&mut line).unwrap();
        if line.starts_with(':') {
            heartbeat = true;
            break;
        }
    }
    assert!(heartbeat, "no heartbeat comment while the task waits");
    approve(&d, &id, &request_id, false, None);
    let mut last = None;
    while let Some(event) = stream.next_event() {
        last = Some(event.json());
    }
    assert_eq!(last.unwrap()["type"], "exit", "the server closed the stream after exit");
}

#[test]
fn finished_tasks_and_events_stay_within_their_bounds() {
    let d = start("ai-evict", |doc| doc["aiTasks"]["keepFinished"] = 2.into(), &[]);
    let mut ids = Vec::new();
    for i in 0..4 {
        let prompt = if i == 0 { "spam 600" } else { "hello" };
        let id = dispatch(&d, json!({"prompt": prompt, "agent": "codex", "cwd": "/"}))["taskId"]
            .as_str()
            .unwrap()
            .to_string();
        if i == 0 {
            wait_final(&d, &id);
            let all = events(&d, &id);
            assert_eq!(all.len(), 500, "at most 500 events per task");
            assert!(all[0]["seq"].as_u64().unwrap() > 1, "the oldest went first");
            assert_eq!(all.last().unwrap()["type"], "exit");
        }
        wait_final(&d, &id);
        ids.push(id);
    }
    let listed: Vec<String> = d.get("/api/v1/ai-tasks").expect(200)["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["taskId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, [ids[3].clone(), ids[2].clone()]);
    plain_error(&d.get(&format!("/api/v1/ai-tasks/{}", ids[0])), 404);
    assert_eq!(events(&d, &ids[0]).len(), 0);
}

#[test]
fn a_task_times_out_into_cancelled_with_an_error_event() {
    let d = start("ai-timeout", |doc| doc["aiTasks"]["timeout"] = 700.into(), &[]);
    let id =
        dispatch(&d, json!({"prompt": "hang", "agent": "claude", "cwd": "/"}))["taskId"].as_str().unwrap().to_string();
    let info = wait_final(&d, &id);
    assert_eq!(info["status"], "cancelled");
    assert_eq!(info["error"], "Task timed out");
    let all = events(&d, &id);
    assert!(all.iter().any(|e| e["type"] == "error" && e["data"] == "Task timed out after 0.7 s"), "{all:?}");
}

#[test]
fn pty_mode_gives_the_agent_a_terminal_and_still_parses_its_output() {
    let d = plain("ai-pty");
    for agent in AGENTS {
        let id = dispatch(&d, json!({"prompt": "env", "agent": agent, "cwd": "/", "pty": true}))["taskId"]
            .as_str()
            .unwrap()
            .to_string();
        let report: Value = serde_json::from_str(&wait_text(&d, &id, "{\"argv\"")).unwrap();
        assert_eq!(report["stdoutTty"], true, "{agent}");
        assert_eq!(report["stdinTty"], false, "{agent}: stdin stays a clean pipe");
        let info = wait_final(&d, &id);
        assert_eq!(info["status"], "completed", "{agent}: {info}");
        assert_eq!(info["pty"], true);
    }
    let work = TempDir::new("ai-pty-ws");
    let id = dispatch(&d, json!({"prompt": "tool", "agent": "claude", "cwd": work.path(), "pty": true}))["taskId"]
        .as_str()
        .unwrap()
        .to_string();
    let request_id = wait_pending(&d, &id)["pendingApproval"]["requestId"].as_str().unwrap().to_string();
    approve(&d, &id, &request_id, true, None);
    assert_eq!(wait_final(&d, &id)["status"], "completed");
    assert!(work.path().join("out.txt").exists());
}

#[test]
fn agents_get_a_clean_environment_and_a_private_directory() {
    let d = start(
        "ai-env",
        |_| {},
        &[
            ("CLAUDECODE", "1"),
            ("CLAUDE_CODE_ENTRYPOINT", "cli"),
            ("ANTHROPIC_API_KEY", "sk-user-key"),
            ("GEMINI_CLI", "1"),
        ],
    );
    for agent in AGENTS {
        let info = d
            .req("POST", "/api/v1/ai-tasks")
            .header("X-Loopsy-Node-Id", "node-b")
            .json(&json!({"prompt": "env", "agent": agent, "cwd": "/tmp", "model": "m1"}))
            .send()
            .expect(201);
        assert_eq!(info["fromNodeId"], "node-b");
        let id = info["taskId"].as_str().unwrap().to_string();
        let text = wait_text(&d, &id, "{\"argv\"");
        assert!(!text.contains(&d.key), "{agent}: the daemon's key reached the agent");
        let report: Value = serde_json::from_str(&text).unwrap();
        let env = &report["env"];
        assert_eq!(report["cwd"], "/tmp");
        assert_eq!(env["LOOPSY_TASK_ID"], id);
        assert_eq!(report["pgid"], report["pid"], "{agent} leads its own process group");
        let tmp = PathBuf::from(env["TMPDIR"].as_str().unwrap());
        assert_eq!(tmp, d.home.path().join("tasks").join(&id));
        if agent == "claude" {
            assert!(env.get("CLAUDECODE").is_none() && env.get("CLAUDE_CODE_ENTRYPOINT").is_none(), "{env}");
            assert_eq!(env["ANTHROPIC_API_KEY"], "sk-user-key", "the user's API key stays");
            assert!(report["argv"].to_string().contains("\"--model\",\"m1\""), "{report}");
        }
        if agent == "gemini" {
            assert!(env.get("GEMINI_CLI").is_none());
            assert!(report["argv"].to_string().contains("\"-m\",\"m1\""), "{report}");
        }
        assert_eq!(wait_final(&d, &id)["status"], "completed");
        assert!(!tmp.exists(), "the per-task directory is removed");
    }
}

#[test]
fn bypass_permissions_needs_an_explicit_request_and_is_refused_as_root_without_a_sandbox() {
    let root = unsafe { libc::geteuid() } == 0;
    let d = plain("ai-bypass");
    let res = d
        .req("POST", "/api/v1/ai-tasks")
        .json(&json!({"prompt": "tool", "agent": "claude", "cwd": "/tmp", "permissionMode": "bypassPermissions"}))
        .send();
    if root {
        let message = plain_error(&res, 400);
        assert!(message.contains("permissionMode") && message.contains("IS_SANDBOX=1"), "{message}");
    } else {
        res.expect(201);
    }
    drop(d);
    let work = TempDir::new("ai-bypass-ws");
    let d = start("ai-sandbox", |_| {}, &[("IS_SANDBOX", "1")]);
    for agent in AGENTS {
        let id = dispatch(
            &d,
            json!({"prompt": "tool", "agent": agent, "cwd": work.path(), "permissionMode": "bypassPermissions"}),
        )["taskId"]
            .as_str()
            .unwrap()
            .to_string();
        let info = wait_final(&d, &id);
        assert_eq!(info["status"], "completed", "{agent}: {info}");
        assert_eq!(info["permissionMode"], "bypassPermissions");
        assert!(!events(&d, &id).iter().any(|e| e["type"] == "permission_request"), "{agent} asked nothing");
    }
    drop(d);
    let d = start("ai-nobypass", |doc| doc["aiTasks"]["allowBypassPermissions"] = false.into(), &[("IS_SANDBOX", "1")]);
    let res = d
        .req("POST", "/api/v1/ai-tasks")
        .json(&json!({"prompt": "hi", "cwd": "/", "permissionMode": "bypassPermissions"}))
        .send();
    assert!(plain_error(&res, 403).contains("allowBypassPermissions"));
}

#[test]
fn a_refused_permission_channel_fails_the_task_before_the_prompt_is_sent() {
    // The stand-in refuses the permission channel's initialize request.
    let d = start("ai-channel", |_| {}, &[("STANDIN_INIT_ERROR", "1")]);
    let id =
        dispatch(&d, json!({"prompt": "hello", "agent": "claude", "cwd": "/"}))["taskId"].as_str().unwrap().to_string();
    let info = wait_final(&d, &id);
    assert_eq!(info["status"], "failed", "{info}");
    assert!(info["error"].as_str().unwrap().contains("permission channel"), "{info}");
    assert!(texts(&events(&d, &id)).is_empty(), "the agent never got the prompt");
}

#[test]
fn the_ai_task_routes_are_documented() {
    let d = plain("ai-openapi");
    let doc = d.anon("GET", "/api/v1/openapi.json").send().expect(200);
    for (path, method) in [
        ("/api/v1/ai-tasks", "post"),
        ("/api/v1/ai-tasks", "get"),
        ("/api/v1/ai-tasks/{taskId}", "get"),
        ("/api/v1/ai-tasks/{taskId}", "delete"),
        ("/api/v1/ai-tasks/{taskId}/events", "get"),
        ("/api/v1/ai-tasks/{taskId}/stream", "get"),
        ("/api/v1/ai-tasks/{taskId}/approve", "post"),
    ] {
        assert!(
            doc["paths"][path][method]["responses"]["200"].is_object()
                || doc["paths"][path][method]["responses"]["201"].is_object(),
            "{method} {path}"
        );
        assert_eq!(doc["paths"][path][method]["responses"]["401"]["$ref"], "#/components/responses/Error");
    }
    assert!(doc["components"]["schemas"]["DispatchRequest"]["properties"]["pty"].is_object());
}

#[test]
fn task_run_streams_the_agent_and_exits_by_outcome() {
    let d = plain("ai-cli-run");
    let run = d.loopsy(&["task", "run", "local", "hello", "--agent", "codex", "--cwd", "/"]).success();
    assert!(run.stdout.contains("Hello from codex"), "{run:?}");
    assert!(run.stderr.contains("task completed"), "{run:?}");
    let work = TempDir::new("ai-cli-ws");
    let cwd = work.path().to_str().unwrap();
    let run = d.loopsy(&["task", "run", "local", "tool", "--agent", "claude", "--cwd", cwd, "--yes"]).success();
    assert!(run.stdout.contains("approved"), "{run:?}");
    assert!(run.stderr.contains("Bash wants approval"), "{run:?}");
    assert!(work.path().join("out.txt").exists());
    std::fs::remove_file(work.path().join("out.txt")).unwrap();
    let run = d.loopsy(&["task", "run", "local", "tool", "--agent", "gemini", "--cwd", cwd, "--deny"]).code(1);
    assert!(run.stdout.contains("denied"), "{run:?}");
    assert!(!work.path().join("out.txt").exists());
    let run = d.loopsy(&["task", "run", "local", "crash", "--agent", "codex", "--cwd", "/"]).code(1);
    assert!(run.stderr.contains("task failed") && run.stderr.contains("exited with code 3"), "{run:?}");
    let run = d.loopsy(&["task", "run", "local", "hello", "--agent", "gemini", "--cwd", "/", "--json"]).success();
    let lines: Vec<Value> = run.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.first().unwrap()["seq"], 1);
    assert_eq!(lines.last().unwrap()["type"], "exit");
    d.loopsy(&["task", "run", "local", "hello", "--cwd", "/no/such/dir"]).code(2).stderr_has("cwd");
}

#[test]
fn task_run_without_a_terminal_waits_for_an_approval_from_elsewhere() {
    let d = plain("ai-cli-wait");
    let work = TempDir::new("ai-cli-wait-ws");
    let mut run = crate::support::Background::spawn(
        d.home.path(),
        &["task", "run", "local", "tool", "--agent", "codex", "--cwd", work.path().to_str().unwrap()],
    );
    let line = run.wait_line("waiting for approval: loopsy task approve local", LONG);
    let task = line.split_whitespace().nth(7).unwrap().to_string();
    let shown = d.loopsy(&["task", "show", "local", &task[..8]]).success();
    assert!(shown.stdout.contains("waiting_approval") && shown.stdout.contains("Pending:"), "{shown:?}");
    d.loopsy(&["task", "approve", "local", &task]).success().stdout_has("approved");
    let (code, _) = run.wait(LONG);
    assert_eq!(code, 0);
    assert!(work.path().join("out.txt").exists());
    d.loopsy(&["task", "approve", "local", &task]).code(1);
}

#[test]
fn ctrl_c_on_task_run_cancels_the_task_and_a_second_one_ends_it_with_130() {
    let d = plain("ai-cli-ctrl-c");
    let work = TempDir::new("ai-cli-ctrl-c-ws");
    let cwd = work.path().to_str().unwrap();
    // Once: the task is cancelled and the run ends by its outcome.
    let mut run = crate::support::Background::spawn(
        d.home.path(),
        &["task", "run", "local", "tool", "--agent", "codex", "--cwd", cwd],
    );
    run.wait_line("waiting for approval", LONG);
    run.signal(libc::SIGINT);
    let (code, seen) = run.wait(LONG);
    assert_eq!(code, 1, "{seen:?}");
    assert!(seen.iter().any(|l| l.contains("cancelling task")), "{seen:?}");
    // Twice, with a daemon that cannot be reached any more: the second ends the run at once.
    let relay = Relay::start(&d.addr);
    let mut run = crate::support::Background::spawn(
        d.home.path(),
        &["task", "run", &relay.addr, "tool", "--agent", "codex", "--cwd", cwd],
    );
    run.wait_line("waiting for approval", LONG);
    relay.freeze();
    run.signal(libc::SIGINT);
    run.wait_line("cancelling task", LONG);
    run.signal(libc::SIGINT);
    let (code, seen) = run.wait(LONG);
    assert_eq!(code, 130, "{seen:?}");
}

#[test]
fn task_list_show_deny_and_cancel_manage_tasks() {
    let d = plain("ai-cli-manage");
    let id = dispatch(&d, json!({"prompt": "tool", "agent": "gemini", "cwd": "/tmp"}))["taskId"]
        .as_str()
        .unwrap()
        .to_string();
    wait_pending(&d, &id);
    let listed = d.loopsy(&["task", "list", "local", "--json"]).success().json();
    assert_eq!(listed["tasks"][0]["taskId"], id);
    d.loopsy(&["task", "list", "local"]).success().stdout_has(&id);
    d.loopsy(&["task", "deny", "local", &id, "--message", "no"]).success().stdout_has("denied");
    wait_final(&d, &id);
    let shown = d.loopsy(&["task", "show", "local", &id, "--json", "--events"]).success().json();
    assert_eq!(shown["task"]["status"], "completed");
    assert!(shown["events"].as_array().unwrap().len() > 3);
    let hang =
        dispatch(&d, json!({"prompt": "hang", "agent": "claude", "cwd": "/"}))["taskId"].as_str().unwrap().to_string();
    d.loopsy(&["task", "cancel", "local", &hang]).success().stdout_has("cancelling");
    assert_eq!(wait_final(&d, &hang)["status"], "cancelled");
    d.loopsy(&["task", "cancel", "local", &hang]).success().stdout_has("forgot");
    d.loopsy(&["task", "show", "local", &hang]).code(2).stderr_has("Task not found");
    d.loopsy(&["task", "show", "local", "ffff"]).code(2).stderr_has("no task ffff");
}

#[test]
fn stopping_the_daemon_kills_its_agents_and_removes_their_directories() {
    let d = plain("ai-shutdown");
    let id = dispatch(&d, json!({"prompt": "stubborn", "agent": "codex", "cwd": "/"}))["taskId"]
        .as_str()
        .unwrap()
        .to_string();
    let grandchild: i64 = wait_text(&d, &id, "grandchild ")["grandchild ".len()..].parse().unwrap();
    let pid = task(&d, &id)["pid"].as_i64().unwrap();
    let tasks_dir = d.home.path().join("tasks");
    assert!(tasks_dir.join(&id).is_dir());
    let mut d = d;
    d.daemon.signal(libc::SIGTERM);
    d.daemon.wait_exit(LONG);
    wait_until(LONG, "the agent and its grandchild are gone", || !alive(pid) && !alive(grandchild));
    assert!(!tasks_dir.exists(), "per-task directories are removed");
}

#[test]
fn dangerous_additional_args_are_refused_by_name_and_no_agent_runs() {
    let logs = TempDir::new("ai-args-log");
    let log = logs.path().join("calls.log");
    let d = start("ai-args", |_| {}, &[("STANDIN_CALL_LOG", log.to_str().unwrap())]);
    // (agent, additionalArgs, the flag the refusal names)
    let dangerous: [(&str, &[&str], &str); 12] = [
        ("claude", &["--dangerously-skip-permissions"], "--dangerously-skip-permissions"),
        ("claude", &["--permission-mode", "bypassPermissions"], "--permission-mode"),
        ("claude", &["--settings", r#"{"permissions":{"allow":["Bash"]}}"#], "--settings"),
        ("claude", &["--permission-prompt-tool", "mcp__evil__allow"], "--permission-prompt-tool"),
        ("claude", &["--model", "x", "--allowedTools", "Bash"], "--allowedTools"),
        ("codex", &["--dangerously-bypass-approvals-and-sandbox"], "--dangerously-bypass-approvals-and-sandbox"),
        ("codex", &["-c", "approval_policy=never"], "-c"),
        ("codex", &["--sandbox", "danger-full-access"], "--sandbox"),
        ("gemini", &["--yolo"], "--yolo"),
        ("gemini", &["--approval-mode", "yolo"], "--approval-mode"),
        ("gemini", &["--policy", "/tmp/allow-all.toml"], "--policy"),
        ("gemini", &["--model", "--yolo"], "--model"),
    ];
    for (agent, args, flag) in dangerous {
        let body = json!({"prompt": "hello", "agent": agent, "additionalArgs": args});
        let message = plain_error(&d.req("POST", "/api/v1/ai-tasks").json(&body).send(), 400);
        assert!(message.starts_with(&format!("additionalArgs: '{flag}'")), "{agent} {args:?}: {message}");
    }
    assert_eq!(d.get("/api/v1/ai-tasks").expect(200)["tasks"], json!([]), "no task was created");
    assert!(!log.exists(), "no agent ran: {:?}", std::fs::read_to_string(&log));
    // A harmless flag passes, and the stand-in's log works.
    let info = dispatch(&d, json!({"prompt": "hello", "agent": "claude", "additionalArgs": ["--effort", "high"]}));
    wait_final(&d, info["taskId"].as_str().unwrap());
    let calls = std::fs::read_to_string(&log).unwrap();
    assert!(calls.contains(r#""--effort", "high""#), "{calls}");
}

#[test]
fn only_the_dispatching_key_and_the_owner_see_and_decide_a_task() {
    let (bob_key, carol_key) = ("b0b-key-0123456789abcdef", "ca501-key-0123456789abcdef");
    let d = start(
        "ai-owners",
        |doc| {
            doc["auth"]["allowedKeys"]["bob"] = bob_key.into();
            doc["auth"]["allowedKeys"]["carol"] = carol_key.into();
        },
        &[],
    );
    let work = TempDir::new("ai-owners-ws");
    let as_key = |key: &str, method: &str, path: &str| d.anon(method, path).key(key);
    let body = json!({"prompt": "tool", "agent": "claude", "cwd": work.path()});
    let bobs = as_key(bob_key, "POST", "/api/v1/ai-tasks").json(&body).send().expect(201);
    let id = bobs["taskId"].as_str().unwrap();
    let request_id = wait_pending(&d, id)["pendingApproval"]["requestId"].as_str().unwrap().to_string();
    let task = format!("/api/v1/ai-tasks/{id}");
    let approve_path = format!("{task}/approve");
    for approved in [true, false] {
        let answer = json!({"requestId": request_id, "approved": approved});
        let refused = as_key(carol_key, "POST", &approve_path).json(&answer).send();
        assert!(plain_error(&refused, 403).contains("another caller"), "approve/deny by another key");
    }
    plain_error(&as_key(carol_key, "DELETE", &task).send(), 403);
    plain_error(&as_key(carol_key, "GET", &task).send(), 403);
    plain_error(&as_key(carol_key, "GET", &format!("{task}/events")).send(), 403);
    plain_error(&as_key(carol_key, "GET", &format!("{task}/stream")).send(), 403);
    assert_eq!(as_key(carol_key, "GET", "/api/v1/ai-tasks").send().expect(200)["tasks"], json!([]));
    assert_eq!(task_status(&d, id), "waiting_approval", "nothing another key did had an effect");
    // Bob sees it and decides it.
    assert_eq!(as_key(bob_key, "GET", "/api/v1/ai-tasks").send().expect(200)["tasks"][0]["taskId"], id);
    let answer = json!({"requestId": request_id, "approved": true});
    as_key(bob_key, "POST", &approve_path).json(&answer).send().expect(200);
    assert_eq!(wait_final(&d, id)["status"], "completed");
    // The owner decides anyone's task; nobody else decides the owner's.
    let owners = dispatch(&d, json!({"prompt": "hang", "agent": "claude"}));
    let owners_task = format!("/api/v1/ai-tasks/{}", owners["taskId"].as_str().unwrap());
    plain_error(&as_key(bob_key, "DELETE", &owners_task).send(), 403);
    assert_eq!(as_key(bob_key, "GET", "/api/v1/ai-tasks").send().expect(200)["tasks"].as_array().unwrap().len(), 1);
    d.req("DELETE", &owners_task).send().expect(200);
    let bobs_hang =
        as_key(bob_key, "POST", "/api/v1/ai-tasks").json(&json!({"prompt": "hang", "agent": "claude"})).send();
    let bobs_hang = format!("/api/v1/ai-tasks/{}", bobs_hang.expect(201)["taskId"].as_str().unwrap());
    d.req("DELETE", &bobs_hang).send().expect(200);
}

fn task_status(d: &Daemon, id: &str) -> String {
    task(d, id)["status"].as_str().unwrap().to_string()
}

// See: #13 (item 9): the daemon's own variables and keys stay with it, keys added later too.
#[test]
fn agents_never_see_the_daemons_variables_or_keys_even_keys_added_later() {
    let later_key = "later-peer-key-0123456789abcdef";
    let own_key = {
        let probe = Home::new("ai-secrets-probe");
        probe.key()
    };
    let d = start(
        "ai-secrets",
        |doc| doc["auth"]["apiKey"] = own_key.clone().into(),
        &[("LOOPSY_SOMETHING", "daemon-only"), ("MY_TOKEN", &own_key), ("LATER", later_key), ("ORDINARY", "visible")],
    );
    let env_of = |agent: &str| -> Value {
        let id = dispatch(&d, json!({"prompt": "env", "agent": agent, "cwd": "/tmp"}))["taskId"]
            .as_str()
            .unwrap()
            .to_string();
        let text = wait_text(&d, &id, "{\"argv\"");
        wait_final(&d, &id);
        serde_json::from_str::<Value>(&text).unwrap()["env"].clone()
    };
    for agent in AGENTS {
        let env = env_of(agent);
        assert_eq!(env["ORDINARY"], "visible", "{agent}: {env}");
        assert_eq!(env["LATER"], later_key, "{agent}: not a key yet");
        assert!(env.get("LOOPSY_SOMETHING").is_none() && env.get("MY_TOKEN").is_none(), "{agent}: {env}");
        assert!(!env.to_string().contains(&own_key), "{agent}: {env}");
    }
    d.home.edit_config(|doc| doc["auth"]["peerKeys"]["carol"] = later_key.into());
    for agent in AGENTS {
        let env = env_of(agent);
        assert_eq!(env["ORDINARY"], "visible", "{agent}: {env}");
        assert!(env.get("LATER").is_none(), "{agent}: a key the daemon holds now reached the agent: {env}");
    }
}
