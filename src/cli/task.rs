//! `loopsy task`: run an AI agent on a peer and watch it, answer its permission requests, list,
//! show and cancel tasks. Everything goes through the peer's `/api/v1/ai-tasks` routes.
//!
//! `task run` prints the agent's text on stdout and everything else (tools, approvals, status)
//! on stderr; `--json` prints every event as one JSON line instead. Exit codes: 0 the task
//! completed, 1 it failed, was cancelled or a request was denied, 2 an error.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use crate::peer::Method;
use anyhow::{bail, Context};
use argh::FromArgs;
use futures_lite::future;
use serde_json::{json, Value};

use crate::paths::Paths;
use crate::peer::Client;
use crate::resolve::{resolve, Target};
use crate::tasks::api::{DispatchRequest, Event, EventType, Status, TaskInfo, TaskList};

/// run and manage AI agent tasks (Claude Code, Gemini CLI, Codex CLI) on a peer
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "task")]
pub struct Args {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum Command {
    Run(RunArgs),
    List(ListArgs),
    Show(ShowArgs),
    Approve(ApproveArgs),
    Deny(DenyArgs),
    Cancel(CancelArgs),
}

/// dispatch a prompt to an agent on <peer> and stream what it does
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "run")]
struct RunArgs {
    /// the peer: local, or its address[:port]
    #[argh(positional)]
    peer: String,
    /// the prompt (several words are joined with spaces)
    #[argh(positional)]
    prompt: Vec<String>,
    /// claude, gemini, codex or auto (default: the first installed)
    #[argh(option, default = "String::from(\"auto\")")]
    agent: String,
    /// working directory on the peer (default: its user's home)
    #[argh(option)]
    cwd: Option<String>,
    /// model name passed to the agent
    #[argh(option)]
    model: Option<String>,
    /// permission mode: default, acceptEdits, plan, dontAsk or bypassPermissions
    #[argh(option)]
    mode: Option<String>,
    /// run the agent with a pseudo-terminal for its output
    #[argh(switch)]
    pty: bool,
    /// approve every permission request without asking
    #[argh(switch)]
    yes: bool,
    /// deny every permission request without asking
    #[argh(switch)]
    deny: bool,
    /// print each event as a JSON line
    #[argh(switch)]
    json: bool,
}

/// list the tasks of <peer>, newest first
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
struct ListArgs {
    /// the peer: local, or its address[:port]
    #[argh(positional)]
    peer: String,
    /// print JSON
    #[argh(switch)]
    json: bool,
}

/// show one task (and with --events its buffered events)
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "show")]
struct ShowArgs {
    /// the peer: local, or its address[:port]
    #[argh(positional)]
    peer: String,
    /// the task id (or a unique prefix)
    #[argh(positional)]
    task: String,
    /// also print the buffered events
    #[argh(switch)]
    events: bool,
    /// print JSON
    #[argh(switch)]
    json: bool,
}

/// approve a pending permission request (default: the oldest one)
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "approve")]
struct ApproveArgs {
    /// the peer: local, or its address[:port]
    #[argh(positional)]
    peer: String,
    /// the task id (or a unique prefix)
    #[argh(positional)]
    task: String,
    /// the request id (default: the task's oldest pending request)
    #[argh(positional)]
    request: Option<String>,
    /// a note for the agent
    #[argh(option)]
    message: Option<String>,
}

/// deny a pending permission request (default: the oldest one)
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "deny")]
struct DenyArgs {
    /// the peer: local, or its address[:port]
    #[argh(positional)]
    peer: String,
    /// the task id (or a unique prefix)
    #[argh(positional)]
    task: String,
    /// the request id (default: the task's oldest pending request)
    #[argh(positional)]
    request: Option<String>,
    /// why, shown to the agent
    #[argh(option)]
    message: Option<String>,
}

/// cancel a running task, or forget a finished one
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "cancel")]
struct CancelArgs {
    /// the peer: local, or its address[:port]
    #[argh(positional)]
    peer: String,
    /// the task id (or a unique prefix)
    #[argh(positional)]
    task: String,
}

pub(super) fn run(args: Args, paths: &Paths) -> anyhow::Result<ExitCode> {
    let config = super::load_config(paths)?;
    let peer = match &args.command {
        Command::Run(a) => &a.peer,
        Command::List(a) => &a.peer,
        Command::Show(a) => &a.peer,
        Command::Approve(a) => &a.peer,
        Command::Deny(a) => &a.peer,
        Command::Cancel(a) => &a.peer,
    };
    let target = smol::block_on(resolve(paths, &config, peer, None))?;
    smol::block_on(async {
        match args.command {
            Command::Run(a) => run_task(a, &target).await,
            Command::List(a) => list(a, &target.client).await,
            Command::Show(a) => show(a, &target.client).await,
            Command::Approve(a) => answer(&target.client, &a.task, a.request, true, a.message).await,
            Command::Deny(a) => answer(&target.client, &a.task, a.request, false, a.message).await,
            Command::Cancel(a) => cancel(&target.client, &a.task).await,
        }
    })
}

async fn run_task(args: RunArgs, target: &Target) -> anyhow::Result<ExitCode> {
    if args.yes && args.deny {
        bail!("--yes and --deny exclude each other");
    }
    if args.prompt.is_empty() {
        bail!("no prompt given");
    }
    let request = json!({"prompt": args.prompt.join(" "), "agent": args.agent, "cwd": args.cwd,
        "model": args.model, "permissionMode": args.mode.as_deref().unwrap_or("default"), "pty": args.pty});
    let mut request: Value = request;
    request.as_object_mut().expect("an object").retain(|_, v| !v.is_null());
    // Checked here too, so a typo is reported before anything is sent.
    let _: DispatchRequest = serde_json::from_value(request.clone()).context("invalid arguments")?;
    let client = &target.client;
    let info: TaskInfo = client.call(Method::Post, "/api/v1/ai-tasks", Some(&request)).await?;
    let task_id = info.task_id.clone();
    if !args.json {
        eprintln!("task {task_id}: {} on {} ({})", agent_name(&info), target.label, info.cwd);
    }
    let mut watcher = Watcher { args: &args, client, task_id: &task_id, denied: false, label: &target.label };
    let interrupted = async {
        cancel_on_interrupt(client.clone(), task_id.clone()).await;
        None
    };
    match future::or(async { Some(watcher.follow().await) }, interrupted).await {
        Some(followed) => followed?,
        None => return Ok(ExitCode::from(INTERRUPTED)),
    }
    let info: TaskInfo = client.get(&format!("/api/v1/ai-tasks/{task_id}")).await?;
    if !args.json {
        match &info.error {
            Some(error) => eprintln!("task {}: {error}", info.status.as_str()),
            None => eprintln!("task {}", info.status.as_str()),
        }
    }
    Ok(match (info.status, watcher.denied) {
        (Status::Completed, false) => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    })
}

fn agent_name(info: &TaskInfo) -> &'static str {
    info.agent.program()
}

/// The exit code after a second Ctrl-C ended the command (a shell's 128 + SIGINT).
const INTERRUPTED: u8 = 130;

/// Ctrl-C cancels the task on the peer; the stream then shows it ending. Returns at a second
/// Ctrl-C (the command then ends at once), never when signals cannot be caught.
async fn cancel_on_interrupt(client: Client, task_id: String) {
    use async_signal::{Signal, Signals};
    use futures_lite::StreamExt;
    if let Ok(mut signals) = Signals::new([Signal::Int]) {
        if signals.next().await.is_some() {
            eprintln!("cancelling task {task_id}…");
            // Sent beside the wait for a second Ctrl-C, which ends the command even while the
            // daemon has not answered.
            let _cancel = smol::spawn(async move {
                let _: Result<Value, _> =
                    client.call(Method::Delete, &format!("/api/v1/ai-tasks/{task_id}"), None::<&()>).await;
            });
            if signals.next().await.is_some() {
                return;
            }
        }
    }
    future::pending().await
}

struct Watcher<'a> {
    args: &'a RunArgs,
    client: &'a Client,
    task_id: &'a str,
    label: &'a str,
    /// Whether this run denied a request (exit code 1).
    denied: bool,
}

impl Watcher<'_> {
    /// Streams events until `exit`, reconnecting after the last sequence number seen.
    async fn follow(&mut self) -> anyhow::Result<()> {
        let path = format!("/api/v1/ai-tasks/{}/stream", self.task_id);
        let mut last: Option<u64> = None;
        let mut failures = 0;
        loop {
            let mut stream = match self.client.events(&path, last, Duration::from_secs(90)).await {
                Ok(stream) => stream,
                Err(e) if failures < 5 => {
                    failures += 1;
                    eprintln!("loopsy: reconnecting to {}: {e}", self.label);
                    async_io::Timer::after(Duration::from_secs(1)).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            loop {
                let event = match stream.next().await {
                    Ok(Some(event)) => event,
                    // Ended without `exit` (a finished task's replay, or the server stopped).
                    Ok(None) => break,
                    Err(_) => break,
                };
                let Some(id) = event.id.as_deref().and_then(|id| id.parse::<u64>().ok()) else {
                    // The closing status of a finished task: it is over.
                    return Ok(());
                };
                failures = 0;
                last = Some(id);
                let event: Event = serde_json::from_str(&event.data).context("an event from the peer")?;
                if self.handle(&event).await? {
                    return Ok(());
                }
            }
            let info: TaskInfo = self.client.get(&format!("/api/v1/ai-tasks/{}", self.task_id)).await?;
            if info.completed_at.is_some() && last.is_some() {
                return Ok(());
            }
            failures += 1;
            if failures > 5 {
                bail!("lost the event stream of task {}", self.task_id);
            }
        }
    }

    /// Shows one event; true at `exit`.
    async fn handle(&mut self, event: &Event) -> anyhow::Result<bool> {
        if self.args.json {
            println!("{}", serde_json::to_string(event)?);
        } else {
            render(event);
        }
        if event.kind == EventType::PermissionRequest {
            self.decide(&event.data).await?;
        }
        Ok(event.kind == EventType::Exit)
    }

    async fn decide(&mut self, approval: &Value) -> anyhow::Result<()> {
        let request_id = approval["requestId"].as_str().unwrap_or_default().to_string();
        let approved = if self.args.yes {
            true
        } else if self.args.deny {
            false
        } else if std::io::stdin().is_terminal() {
            let question = format!("allow {}? [y/N] ", approval["toolName"].as_str().unwrap_or("this tool"));
            blocking::unblock(move || ask(&question)).await?
        } else {
            eprintln!(
                "waiting for approval: loopsy task approve {} {} {request_id} (or deny)",
                self.label, self.task_id
            );
            return Ok(());
        };
        let body = json!({"requestId": request_id, "approved": approved});
        let path = format!("/api/v1/ai-tasks/{}/approve", self.task_id);
        match self.client.call::<Value>(Method::Post, &path, Some(&body)).await {
            Ok(_) => self.denied |= !approved,
            // Someone else answered first, or it timed out: the stream will say.
            Err(e) => eprintln!("loopsy: could not answer: {e}"),
        }
        Ok(())
    }
}

fn ask(question: &str) -> anyhow::Result<bool> {
    eprint!("{question}");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}

/// One event for a human: the agent's words on stdout, the rest on stderr.
fn render(event: &Event) {
    let data = &event.data;
    match event.kind {
        EventType::Text => println!("{}", data.as_str().unwrap_or_default()),
        EventType::Thinking => eprintln!("[thinking] {}", data.as_str().unwrap_or_default()),
        EventType::ToolUse => eprintln!("→ {} {}", data["name"].as_str().unwrap_or("tool"), short(&data["input"])),
        EventType::ToolResult => eprintln!("← {} {}", data["name"].as_str().unwrap_or("tool"), short(&data["content"])),
        EventType::PermissionRequest => eprintln!(
            "? {} wants approval: {}\n  {}",
            data["toolName"].as_str().unwrap_or("tool"),
            data["description"].as_str().unwrap_or_default(),
            short(&data["toolInput"])
        ),
        EventType::Status => {
            if let Some(approved) = data["approved"].as_bool() {
                let reason = data["reason"].as_str().map(|r| format!(" ({r})")).unwrap_or_default();
                eprintln!("  {}{reason}", if approved { "approved" } else { "denied" });
            }
        }
        EventType::Error => eprintln!("error: {}", data.as_str().map(String::from).unwrap_or_else(|| data.to_string())),
        EventType::Result => {
            if let Some(cost) = data["cost"].as_f64() {
                eprintln!("(cost ${cost:.4})");
            }
        }
        EventType::System | EventType::Exit => {}
    }
}

/// A value on one line, cut to a readable length.
fn short(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.replace('\n', " "),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    if text.chars().count() > 200 {
        format!("{}…", text.chars().take(200).collect::<String>())
    } else {
        text
    }
}

async fn list(args: ListArgs, client: &Client) -> anyhow::Result<ExitCode> {
    let list: TaskList = client.get("/api/v1/ai-tasks").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    if list.tasks.is_empty() {
        println!("no tasks");
    }
    for task in &list.tasks {
        let prompt: String = task.prompt.chars().take(50).collect();
        let started = crate::clock::iso8601(task.started_at);
        println!(
            "{}  {:<16}  {:<6}  {}  {prompt}",
            task.task_id,
            task.status.as_str(),
            task.agent.program(),
            started.get(..19).unwrap_or(&started)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The full id of `task`, which may be a unique prefix of one.
async fn task_id(client: &Client, task: &str) -> anyhow::Result<String> {
    if task.len() == 36 {
        return Ok(task.to_string());
    }
    let list: TaskList = client.get("/api/v1/ai-tasks").await?;
    let matches: Vec<&TaskInfo> = list.tasks.iter().filter(|t| t.task_id.starts_with(task)).collect();
    match &matches[..] {
        [one] => Ok(one.task_id.clone()),
        [] => bail!("no task {task}"),
        _ => bail!("'{task}' matches {} tasks; give more of the id", matches.len()),
    }
}

async fn show(args: ShowArgs, client: &Client) -> anyhow::Result<ExitCode> {
    let id = task_id(client, &args.task).await?;
    let info: Value = client.get(&format!("/api/v1/ai-tasks/{id}")).await?;
    let events: Value =
        if args.events { client.get(&format!("/api/v1/ai-tasks/{id}/events")).await? } else { Value::Null };
    if args.json {
        let out = if args.events { json!({"task": info, "events": events["events"]}) } else { info };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    let info: TaskInfo = serde_json::from_value(info)?;
    let mut rows = vec![
        ("Task", info.task_id.clone()),
        ("Status", info.status.as_str().to_string()),
        ("Agent", info.agent.program().to_string()),
        ("Mode", info.permission_mode.as_str().to_string()),
        ("Cwd", info.cwd.clone()),
        ("Started", crate::clock::iso8601(info.started_at)),
        ("Prompt", info.prompt.clone()),
    ];
    if let Some(session) = &info.session_id {
        rows.push(("Session", session.clone()));
    }
    if let Some(code) = info.exit_code {
        rows.push((
            "Exit",
            code.map(|c| c.to_string()).unwrap_or_else(|| format!("signal {}", info.signal.unwrap_or(0))),
        ));
    }
    if let Some(error) = &info.error {
        rows.push(("Error", error.clone()));
    }
    for (name, value) in rows {
        println!("{:<9} {value}", format!("{name}:"));
    }
    for approval in &info.pending_approvals {
        println!("Pending:  {} {} — {}", approval.request_id, approval.tool_name, approval.description);
    }
    if args.events {
        for event in serde_json::from_value::<Vec<Event>>(events["events"].clone())? {
            render(&event);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn answer(
    client: &Client,
    task: &str,
    request: Option<String>,
    approved: bool,
    message: Option<String>,
) -> anyhow::Result<ExitCode> {
    let id = task_id(client, task).await?;
    let request_id = match request {
        Some(request) => request,
        None => {
            let info: TaskInfo = client.get(&format!("/api/v1/ai-tasks/{id}")).await?;
            match info.pending_approval {
                Some(approval) => approval.request_id,
                None => {
                    eprintln!("task {id} has no pending permission request");
                    return Ok(ExitCode::from(1));
                }
            }
        }
    };
    let mut body = json!({"requestId": request_id, "approved": approved});
    if let Some(message) = message {
        body["message"] = message.into();
    }
    let _: Value = client.call(Method::Post, &format!("/api/v1/ai-tasks/{id}/approve"), Some(&body)).await?;
    println!("{} {request_id}", if approved { "approved" } else { "denied" });
    Ok(ExitCode::SUCCESS)
}

async fn cancel(client: &Client, task: &str) -> anyhow::Result<ExitCode> {
    let id = task_id(client, task).await?;
    let result: Value = client.call(Method::Delete, &format!("/api/v1/ai-tasks/{id}"), None::<&()>).await?;
    if result["deleted"] == true {
        println!("forgot finished task {id}");
    } else {
        println!("cancelling task {id}");
    }
    Ok(ExitCode::SUCCESS)
}
