//! `loopsy approvals`: the permission requests of AI tasks on this machine, its sessions and
//! its peers, from the local daemon's approval inbox (`/api/v1/approvals`).
//!
//! Without `--watch` it lists the pending ones and exits. With `--watch` it follows the inbox
//! and asks about each request as it arrives (approve / deny / skip, with the full tool input),
//! reading the answers from stdin line by line, so it works with a pipe as well as a terminal;
//! it stops when stdin ends. A request decided elsewhere in the meantime is reported, and an
//! answer to it is refused by the daemon that holds it (409, naming who decided).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;
use futures_lite::FutureExt;
use serde_json::{json, Value};

use crate::approvals::{Item, TargetKind, TargetState, TargetView};
use crate::paths::Paths;
use crate::peer::{Client, ClientError, Method};
use crate::tasks::api::ApprovalState;

/// list and answer the permission requests of AI tasks here, in local sessions and on peers
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "approvals")]
pub struct Args {
    /// ask about each request as it arrives (approve / deny / skip), answers read from stdin
    #[argh(switch)]
    watch: bool,
    /// also list requests already decided, expired or withdrawn
    #[argh(switch)]
    all: bool,
    /// print JSON
    #[argh(switch)]
    json: bool,
}

pub(super) fn run(args: Args, paths: &Paths) -> anyhow::Result<ExitCode> {
    let config = super::load_config(paths)?;
    let client = Client::local(paths, &config.auth.api_key)?;
    if args.watch && args.json {
        anyhow::bail!("--watch and --json exclude each other");
    }
    smol::block_on(async {
        match args.watch {
            true => watch(client).await,
            false => list(&client, &args).await,
        }
    })
}

async fn list(client: &Client, args: &Args) -> anyhow::Result<ExitCode> {
    let inbox: Value = client.get("/api/v1/approvals").await?;
    let items: Vec<Item> = serde_json::from_value(inbox["approvals"].clone())?;
    let targets: Vec<TargetView> = serde_json::from_value(inbox["targets"].clone())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&inbox)?);
        return Ok(ExitCode::SUCCESS);
    }
    let now = crate::clock::now_ms();
    let shown: Vec<&Item> = items.iter().filter(|i| args.all || i.is_pending()).collect();
    if shown.is_empty() {
        println!("{}", if args.all { "no approval requests" } else { "no pending approval requests" });
    } else {
        let mut rows = vec![["WHERE", "TASK", "AGENT", "TOOL", "INPUT", "AGE", "STATE"].map(String::from).to_vec()];
        for item in &shown {
            let r = &item.record;
            let mut state = r.state.as_str().to_string();
            if let Some(by) = &r.decided_by {
                state.push_str(&format!(" ({by})"));
            }
            rows.push(vec![
                place(item),
                r.task_id.chars().take(8).collect(),
                r.agent.program().to_string(),
                r.tool_name.clone(),
                short(&r.tool_input, 60),
                age(now.saturating_sub(r.requested_at)),
                state,
            ]);
        }
        let columns = if args.all { 7 } else { 6 };
        print_table(&rows, columns);
    }
    for target in targets.iter().filter(|t| !matches!(t.state, TargetState::Live)) {
        let why = target.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
        eprintln!("{} is {}{why}", describe(target), target.state.as_str());
    }
    Ok(ExitCode::SUCCESS)
}

/// Where a request waits, as a person names it.
fn place(item: &Item) -> String {
    match item.target_kind {
        TargetKind::Local => "local".into(),
        TargetKind::Session => format!("session {}", item.target_name),
        TargetKind::Peer => item.target_name.clone(),
    }
}

fn describe(target: &TargetView) -> String {
    match target.kind {
        TargetKind::Local => "this daemon".into(),
        TargetKind::Session => format!("session {}", target.name),
        TargetKind::Peer => format!("peer {}", target.name),
    }
}

fn print_table(rows: &[Vec<String>], columns: usize) {
    let widths: Vec<usize> =
        (0..columns).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    for row in rows {
        let cells: Vec<String> = (0..columns)
            .map(|c| match c + 1 == columns {
                true => row[c].clone(),
                false => format!("{:<width$}", row[c], width = widths[c]),
            })
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
}

/// A value on one line, cut to `max` characters.
fn short(value: &Value, max: usize) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let text = text.replace(['\n', '\r', '\t'], " ");
    match text.chars().count() > max {
        true => format!("{}…", text.chars().take(max - 1).collect::<String>()),
        false => text,
    }
}

fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// What the watch hears.
enum Update {
    /// A change from the inbox's event stream.
    Change(Value),
    /// The stream was lost (and is being resumed).
    Notice(String),
    /// The stream cannot be had any more.
    Fatal(String),
}

/// Reads the inbox's event stream into `updates`, resuming after a cut with `Last-Event-ID`.
async fn follow(client: Client, updates: smol::channel::Sender<Update>) {
    let mut last: Option<String> = None;
    let mut failures = 0u32;
    loop {
        let why = match client.open_events(Method::Get, "/api/v1/approvals/stream", None, last.as_deref()).await {
            Ok(stream) => {
                let mut stream = stream.with_idle_limit(Duration::from_secs(35));
                loop {
                    match stream.next().await {
                        Ok(Some(event)) => {
                            failures = 0;
                            if let Some(id) = event.id {
                                last = Some(id);
                            }
                            let Ok(change) = serde_json::from_str::<Value>(&event.data) else { continue };
                            if updates.send(Update::Change(change)).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break "the daemon ended the stream".to_string(),
                        Err(e) => break e.to_string(),
                    }
                }
            }
            Err(e @ ClientError::Remote { .. }) => {
                let _ = updates.send(Update::Fatal(e.to_string())).await;
                return;
            }
            Err(e) => e.to_string(),
        };
        failures += 1;
        if failures > 10 {
            let _ = updates.send(Update::Fatal(format!("lost the approval inbox: {why}"))).await;
            return;
        }
        if updates.send(Update::Notice(format!("lost the approval inbox ({why}); reconnecting"))).await.is_err() {
            return;
        }
        async_io::Timer::after(Duration::from_secs(failures.min(5) as u64)).await;
    }
}

/// The watch's picture of the inbox, and whom it asked about what.
#[derive(Default)]
struct Watch {
    items: BTreeMap<String, Item>,
    targets: BTreeMap<String, TargetView>,
    /// A snapshot being received.
    staging: Option<(BTreeMap<String, Item>, BTreeMap<String, TargetView>)>,
    /// Requests to ask about, in arrival order.
    queue: VecDeque<String>,
    /// Requests shown (asked, answered or skipped): never asked again.
    asked: HashSet<String>,
    /// The request waiting for an answer now.
    current: Option<String>,
}

impl Watch {
    fn apply(&mut self, change: &Value) {
        match change["type"].as_str() {
            Some("reset") => self.staging = Some(Default::default()),
            Some("synced") => {
                if let Some((items, targets)) = self.staging.take() {
                    self.items.retain(|id, _| items.contains_key(id));
                    self.targets.retain(|id, _| targets.contains_key(id));
                    for target in targets.into_values() {
                        self.target(target);
                    }
                    let mut all: Vec<Item> = items.into_values().collect();
                    all.sort_by_key(|i| i.record.requested_at);
                    for item in all {
                        self.update(item);
                    }
                }
            }
            Some("approval") => {
                let Ok(item) = serde_json::from_value::<Item>(change["approval"].clone()) else { return };
                match self.staging.as_mut() {
                    Some((items, _)) => {
                        items.insert(item.id.clone(), item);
                    }
                    None => self.update(item),
                }
            }
            Some("removed") => {
                if let Some(id) = change["id"].as_str() {
                    self.items.remove(id);
                }
            }
            Some("target") => {
                let Ok(target) = serde_json::from_value::<TargetView>(change["target"].clone()) else { return };
                match self.staging.as_mut() {
                    Some((_, targets)) => {
                        targets.insert(target.id.clone(), target);
                    }
                    None => self.target(target),
                }
            }
            Some("targetRemoved") => {
                if let Some(id) = change["id"].as_str() {
                    self.targets.remove(id);
                    self.items.retain(|_, item| item.target != id);
                }
            }
            _ => {}
        }
    }

    fn update(&mut self, item: Item) {
        let before = self.items.insert(item.id.clone(), item.clone());
        let was_pending = before.as_ref().map(Item::is_pending);
        if item.is_pending() && before.is_none() && !self.asked.contains(&item.id) {
            self.queue.push_back(item.id.clone());
        }
        if !item.is_pending() && was_pending == Some(true) && self.asked.contains(&item.id) {
            let meanwhile = if self.current.as_deref() == Some(item.id.as_str()) {
                " (meanwhile: an answer now will be refused)"
            } else {
                ""
            };
            println!("  {} — {}{meanwhile}", title(&item), outcome(&item));
        }
    }

    fn target(&mut self, target: TargetView) {
        let before = self.targets.insert(target.id.clone(), target.clone()).map(|t| t.state);
        let trouble = matches!(target.state, TargetState::Down | TargetState::Unsupported);
        if trouble && before != Some(target.state) {
            let why = target.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
            eprintln!("loopsy: {} is {}{why}", describe(&target), target.state.as_str());
        } else if target.state == TargetState::Live && matches!(before, Some(TargetState::Down)) {
            eprintln!("loopsy: {} is back", describe(&target));
        }
    }

    /// The next request to ask about, if any still waits.
    fn next(&mut self) -> Option<Item> {
        while let Some(id) = self.queue.pop_front() {
            if let Some(item) = self.items.get(&id).filter(|i| i.is_pending() && !self.asked.contains(&i.id)) {
                self.asked.insert(id.clone());
                self.current = Some(id);
                return Some(item.clone());
            }
        }
        None
    }
}

/// "Bash on session w1 (task 1a2b3c4d, claude)".
fn title(item: &Item) -> String {
    let r = &item.record;
    format!(
        "{} on {} (task {}, {})",
        r.tool_name,
        place(item),
        r.task_id.chars().take(8).collect::<String>(),
        r.agent.program()
    )
}

/// "approved by owner via …", "expired: the agent was told no".
fn outcome(item: &Item) -> String {
    let r = &item.record;
    match r.state {
        ApprovalState::Expired => "expired unanswered: the agent was told no".into(),
        ApprovalState::Withdrawn => format!("withdrawn ({})", r.decided_by.as_deref().unwrap_or("?")),
        state => {
            let via = r.decided_via.as_deref().map(|v| format!(" via {v}")).unwrap_or_default();
            format!("{} by {}{via}", state.as_str(), r.decided_by.as_deref().unwrap_or("?"))
        }
    }
}

fn show(item: &Item, interactive: bool) {
    let r = &item.record;
    let now = crate::clock::now_ms();
    println!();
    println!("? {} wants approval, asked {} ago", title(item), age(now.saturating_sub(r.requested_at)));
    if !r.description.is_empty() {
        println!("  {}", r.description);
    }
    println!("  prompt: {}", r.prompt.replace('\n', " "));
    println!("  cwd:    {}", r.cwd);
    let input = serde_json::to_string_pretty(&r.tool_input).unwrap_or_default();
    println!("  input:{}", if r.tool_input_truncated { " (cut: it is larger than 256 KiB)" } else { "" });
    for line in input.lines() {
        println!("    {line}");
    }
    let prompt = "approve / deny / skip? [a/d/s] ";
    if interactive {
        print!("{prompt}");
    } else {
        println!("{prompt}");
    }
    let _ = std::io::stdout().flush();
}

/// Answers read ahead of their questions, at most.
const TYPED_AHEAD: usize = 16;

/// An answer typed for a request.
enum Answer {
    Approve,
    Deny(Option<String>),
    Skip,
}

fn parse_answer(line: &str) -> Option<Answer> {
    let line = line.trim();
    let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    match word.to_ascii_lowercase().as_str() {
        "a" | "approve" | "y" | "yes" => Some(Answer::Approve),
        "d" | "deny" | "n" | "no" => Some(Answer::Deny((!rest.is_empty()).then(|| rest.to_string()))),
        "s" | "skip" | "" => Some(Answer::Skip),
        _ => None,
    }
}

async fn watch(client: Client) -> anyhow::Result<ExitCode> {
    let interactive = std::io::stdin().is_terminal();
    // Bounded: `yes a | loopsy approvals --watch` must not fill the memory with answers.
    let (line_sender, lines) = smol::channel::bounded::<Option<String>>(TYPED_AHEAD);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if line_sender.send_blocking(Some(line)).is_err() {
                return;
            }
        }
        let _ = line_sender.send_blocking(None);
    });
    let (sender, updates) = smol::channel::bounded(64);
    let _follower = smol::spawn(follow(client.clone(), sender));
    let mut watch = Watch::default();
    // Lines typed (or piped) before their question are kept for it, in order.
    let mut typed: VecDeque<String> = VecDeque::new();
    let mut stdin_open = true;
    eprintln!("watching the approval inbox; answer each request with a (approve), d [reason] (deny) or s (skip)");
    loop {
        if watch.current.is_none() {
            if let Some(item) = watch.next() {
                show(&item, interactive);
            }
        }
        if let (Some(id), Some(line)) = (watch.current.clone(), typed.front().cloned()) {
            typed.pop_front();
            answer(&client, &mut watch, &id, &line, interactive).await;
            continue;
        }
        if !stdin_open && typed.is_empty() {
            eprintln!("loopsy: stdin ended; stopping");
            return Ok(ExitCode::SUCCESS);
        }
        enum Heard {
            Update(Option<Update>),
            Line(Option<String>),
        }
        let update = async { Heard::Update(updates.recv().await.ok()) };
        let heard = match stdin_open && typed.len() < TYPED_AHEAD {
            true => update.or(async { Heard::Line(lines.recv().await.ok().flatten()) }).await,
            false => update.await,
        };
        match heard {
            Heard::Update(Some(Update::Change(change))) => watch.apply(&change),
            Heard::Update(Some(Update::Notice(text))) => eprintln!("loopsy: {text}"),
            Heard::Update(Some(Update::Fatal(text))) => anyhow::bail!("{text}"),
            Heard::Update(None) => anyhow::bail!("lost the approval inbox"),
            Heard::Line(None) => stdin_open = false,
            Heard::Line(Some(line)) => typed.push_back(line),
        }
    }
}

/// Takes `line` as the answer to the request `id` asked about.
async fn answer(client: &Client, watch: &mut Watch, id: &str, line: &str, interactive: bool) {
    let Some(item) = watch.items.get(id).cloned() else {
        watch.current = None;
        return;
    };
    match parse_answer(line) {
        None => {
            println!("please answer a (approve), d [reason] (deny) or s (skip)");
            show(&item, interactive);
        }
        Some(Answer::Skip) => {
            println!("  skipped");
            watch.current = None;
        }
        Some(Answer::Approve) => decide(client, watch, &item, true, None).await,
        Some(Answer::Deny(reason)) => decide(client, watch, &item, false, reason).await,
    }
}

async fn decide(client: &Client, watch: &mut Watch, item: &Item, approved: bool, message: Option<String>) {
    watch.current = None;
    let mut body = json!({"target": item.target, "taskId": item.record.task_id,
        "requestId": item.record.request_id, "approved": approved});
    if let Some(message) = message {
        body["message"] = message.into();
    }
    match client.call::<Value>(Method::Post, "/api/v1/approvals/decide", Some(&body)).await {
        Ok(answer) => {
            if let Ok(decided) = serde_json::from_value::<Item>(answer["approval"].clone()) {
                watch.items.insert(decided.id.clone(), decided);
            }
            println!("  {}: {}", if approved { "approved" } else { "denied" }, title(item));
        }
        Err(ClientError::Remote { status: 409, message, .. }) => println!("  not decided: {message}"),
        Err(e) => println!("  not decided: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_leniently() {
        assert!(matches!(parse_answer(" A "), Some(Answer::Approve)));
        assert!(matches!(parse_answer("yes"), Some(Answer::Approve)));
        assert!(matches!(parse_answer("d"), Some(Answer::Deny(None))));
        assert!(matches!(parse_answer("deny  not today "), Some(Answer::Deny(Some(m))) if m == "not today"));
        assert!(matches!(parse_answer(""), Some(Answer::Skip)));
        assert!(matches!(parse_answer("skip"), Some(Answer::Skip)));
        assert!(parse_answer("maybe").is_none());
    }

    #[test]
    fn ages_and_inputs_fit_a_line() {
        assert_eq!(age(5_400), "5s");
        assert_eq!(age(125_000), "2m");
        assert_eq!(age(7_300_000), "2h");
        assert_eq!(age(200_000_000), "2d");
        assert_eq!(short(&json!({"command": "a\nb"}), 60), r#"{"command":"a\nb"}"#);
        assert_eq!(short(&json!("x".repeat(100)), 10).chars().count(), 10);
    }
}
