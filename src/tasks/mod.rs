//! AI task dispatch: runs Claude Code, Gemini CLI or Codex CLI on this machine for a remote
//! caller, streams what the agent does as numbered events and routes its permission requests
//! to a human (PROTOCOL.md §2.8, §8; AGENT-CLIS.md).
//!
//! [`Tasks`] is the registry every route uses; `runner` supervises one agent process;
//! `agents` speaks each CLI's protocol; `process` starts and stops processes; `events` is the
//! bounded event log. Nothing here knows HTTP, and nothing touches the user's agent settings:
//! each task gets a private directory of its own, removed when it ends (E1).

pub(crate) mod agents;
pub(crate) mod api;
mod env;
pub(crate) mod events;
pub(crate) mod lines;
mod runner;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::child_env::Secrets;
use crate::config::AiTasks;
use crate::feed::{Change, Feed};
use api::{
    Agent, Approval, ApprovalState, DispatchRequest, Event, EventType, PermissionMode, PermissionRecord, Status,
    TaskInfo,
};
use events::{EventLog, Stored, Subscriber};

pub(crate) use agents::Decision;

/// Why a dispatch was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DispatchError {
    #[error("{field}: {problem}")]
    Invalid { field: &'static str, problem: String },
    #[error("cwd: {0}")]
    NoSuchDirectory(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} CLI not found in PATH")]
    NotInstalled(&'static str),
    #[error("No AI agent CLI found in PATH. Install claude-code, gemini-cli, or codex-cli.")]
    NoAgent,
    #[error("Max concurrent AI tasks ({0}) reached")]
    TooMany(u32),
    #[error("cannot start {program}: {reason}")]
    Spawn { program: String, reason: String },
}

/// Decided requests kept per task, to answer a second decision with who made the first.
const DECIDED_PER_TASK: usize = 256;
/// Decided requests in a snapshot of the approvals feed (the newest).
const DECIDED_IN_SNAPSHOT: usize = 200;
/// Changes the approvals feed keeps for readers resuming with `Last-Event-ID`.
const FEED_CHANGES: usize = 1000;
const FEED_BYTES: usize = 8 * 1024 * 1024;

/// Why an approval was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApproveError {
    #[error("No pending permission request found for this task")]
    NoPending,
    /// Decided before (or expired, or withdrawn): the first decision stands.
    #[error("{}", decided_text(.0))]
    Decided(Box<PermissionRecord>),
}

/// "this request was already approved by owner (via …) at …".
pub(crate) fn decided_text(record: &PermissionRecord) -> String {
    let by = record.decided_by.as_deref().unwrap_or("someone");
    let via = record.decided_via.as_deref().map(|v| format!(" via {v}")).unwrap_or_default();
    let at = record.decided_at.map(|t| format!(" at {}", crate::clock::iso8601(t))).unwrap_or_default();
    match record.state {
        ApprovalState::Expired => format!("this request expired unanswered{at}: the agent was told no"),
        ApprovalState::Withdrawn => format!("this request was withdrawn ({by}){at}"),
        state => format!("this request was already {} by {by}{via}{at}", state.as_str()),
    }
}

/// A decision on a permission request, and who makes it.
#[derive(Debug, Clone)]
pub(crate) struct Verdict {
    pub approved: bool,
    /// Sent to the agent with the decision.
    pub message: Option<String>,
    /// Who decides (`owner`, `dashboard`, the label of a peer's key, `timeout`).
    pub by: String,
    /// What the decider says it is (an inbox forwarding the decision).
    pub via: Option<String>,
    /// The sender's id for this decision: the same decision sent again is not a second one.
    pub decision_id: Option<String>,
}

/// A decision taken.
#[derive(Debug, Clone)]
pub(crate) struct Settled {
    pub record: PermissionRecord,
    /// The same decision (same `decisionId`) was taken before; nothing changed now.
    pub repeated: bool,
}

/// A decided request, with the id its decider gave the decision.
#[derive(Debug, Clone)]
struct Decided {
    record: PermissionRecord,
    decision_id: Option<String>,
}

/// How a reader of the approvals feed starts.
pub(crate) enum ApprovalStart {
    /// The changes since its `Last-Event-ID` (already filtered for it).
    Replay(Vec<Arc<Change<Dispatcher>>>),
    /// Everything it may see now: open requests and the recently decided ones.
    Snapshot(Vec<PermissionRecord>),
}

/// A reader of the approvals feed: how it starts, then the live changes (unfiltered).
pub(crate) struct ApprovalStream {
    pub start: ApprovalStart,
    pub live: crate::feed::Subscriber<Dispatcher>,
    /// The SSE id that marks the reader as up to date.
    pub synced_id: String,
    /// The feed's epoch, to make the ids of live changes (`<epoch>.<seq>`).
    pub epoch: String,
}

/// Who dispatched a task, and who is asking about one: the owner may see and decide every
/// task; a peer only the tasks its own key dispatched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Dispatcher {
    Owner,
    /// A peer, by the label of the key it presented (`guard::Caller::label`).
    Peer(String),
}

impl Dispatcher {
    /// Whether this asker may see and decide a task `dispatcher` started.
    pub(crate) fn may_act_on(&self, dispatcher: &Dispatcher) -> bool {
        *self == Dispatcher::Owner || self == dispatcher
    }
}

/// Where a stream resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Since {
    /// Events with a sequence number above this.
    Seq(u64),
    /// Events with a timestamp above this (1.0.21 clients send milliseconds).
    Timestamp(u64),
}

impl Since {
    /// `?since=` values this large are 1.0.21 millisecond timestamps, not sequence numbers.
    pub(crate) fn parse(value: u64) -> Since {
        if value >= 1_000_000_000_000 {
            Since::Timestamp(value)
        } else {
            Since::Seq(value)
        }
    }
}

/// What a stream starts with.
pub(crate) struct Subscription {
    pub replay: Vec<Arc<Stored>>,
    /// `None` when the task already ended.
    pub live: Option<Subscriber>,
    pub status: Status,
}

/// The registry of AI tasks; a cheap-clone handle.
#[derive(Clone)]
pub(crate) struct Tasks {
    shared: Arc<Shared>,
}

struct Shared {
    settings: AiTasks,
    /// Parent of the per-task private directories.
    dir: PathBuf,
    /// Values that must never reach an agent's environment (the daemon's keys).
    secrets: Secrets,
    registry: Mutex<Registry>,
    /// The supervisors, owned here; finished ones are pruned on each dispatch.
    supervisors: Mutex<Vec<smol::Task<()>>>,
}

struct Registry {
    tasks: HashMap<String, Entry>,
    created: u64,
    /// Every change of a permission request, for `/api/v1/ai-tasks/approvals/stream`.
    feed: Feed<Dispatcher>,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry { tasks: HashMap::new(), created: 0, feed: Feed::new(FEED_CHANGES, FEED_BYTES) }
    }
}

struct Entry {
    info: TaskInfo,
    dispatcher: Dispatcher,
    log: EventLog,
    /// Dispatch order, to sort tasks started in the same millisecond.
    order: u64,
    /// Open permission requests with the driver's key for each, oldest first.
    pending: Vec<(Approval, String)>,
    /// Requests no longer open, oldest first (at most [`DECIDED_PER_TASK`]).
    decided: VecDeque<Decided>,
    /// To the supervisor; present exactly while the agent process lives.
    control: Option<smol::channel::Sender<runner::Command>>,
    finished_at: Option<Instant>,
}

impl Entry {
    fn emit(&mut self, kind: EventType, data: Value) {
        let now = crate::clock::now_ms();
        self.info.updated_at = now;
        self.log.push(kind, data, now);
    }

    /// Cancelled from now on, whatever the agent's exit says (E2); open requests are withdrawn.
    fn mark_cancelled(&mut self, feed: &mut Feed<Dispatcher>) {
        if self.info.status == Status::Cancelled {
            return;
        }
        self.info.status = Status::Cancelled;
        self.withdraw_all("cancel", feed);
        self.emit(EventType::Status, json!({"status": "cancelled"}));
    }

    /// `approval` of this task as a record in `state`.
    fn record(&self, approval: &Approval, state: ApprovalState) -> PermissionRecord {
        let (tool_input, tool_input_truncated) = api::bounded_tool_input(&approval.tool_input);
        PermissionRecord {
            task_id: self.info.task_id.clone(),
            request_id: approval.request_id.clone(),
            agent: self.info.agent,
            prompt: self.info.prompt.chars().take(api::PROMPT_PREVIEW).collect(),
            cwd: self.info.cwd.clone(),
            tool_name: approval.tool_name.clone(),
            tool_input,
            tool_input_truncated,
            description: approval.description.clone(),
            requested_at: approval.timestamp,
            state,
            decided_by: None,
            decided_via: None,
            decided_at: None,
            message: None,
        }
    }

    /// A new open request (the agent asked).
    fn open(&mut self, approval: Approval, key: String, feed: &mut Feed<Dispatcher>) {
        publish(feed, &self.dispatcher, &self.record(&approval, ApprovalState::Pending));
        self.emit(EventType::PermissionRequest, serde_json::to_value(&approval).expect("serialises"));
        self.pending.push((approval, key));
        self.refresh_pending();
    }

    /// Records how `approval` (no longer pending) ended, and tells the feed.
    #[allow(clippy::too_many_arguments)]
    fn settle(
        &mut self,
        approval: &Approval,
        state: ApprovalState,
        by: String,
        via: Option<String>,
        message: Option<String>,
        decision_id: Option<String>,
        feed: &mut Feed<Dispatcher>,
    ) -> PermissionRecord {
        let mut record = self.record(approval, state);
        record.decided_by = Some(by);
        record.decided_via = via;
        record.decided_at = Some(crate::clock::now_ms());
        record.message = message;
        publish(feed, &self.dispatcher, &record);
        if self.decided.len() == DECIDED_PER_TASK {
            self.decided.pop_front();
        }
        self.decided.push_back(Decided { record: record.clone(), decision_id });
        record
    }

    /// Every open request is withdrawn (`by`: `cancel`, `exit`).
    fn withdraw_all(&mut self, by: &str, feed: &mut Feed<Dispatcher>) {
        for (approval, _) in std::mem::take(&mut self.pending) {
            self.settle(&approval, ApprovalState::Withdrawn, by.into(), None, None, None, feed);
        }
        self.refresh_pending();
    }

    fn refresh_pending(&mut self) {
        self.info.pending_approvals = self.pending.iter().map(|(a, _)| a.clone()).collect();
        self.info.pending_approval = self.info.pending_approvals.first().cloned();
        if !self.info.status.is_final() {
            self.info.status = if self.pending.is_empty() { Status::Running } else { Status::WaitingApproval };
        }
    }
}

/// Tells the approvals feed about `record` of a task `dispatcher` started.
fn publish(feed: &mut Feed<Dispatcher>, dispatcher: &Dispatcher, record: &PermissionRecord) {
    let json = serde_json::to_string(&json!({"type": "approval", "approval": record})).expect("records serialise");
    feed.push(dispatcher.clone(), json);
}

/// Removes the per-task directories below `dir` (named by task id, a UUID), then `dir` if that
/// left it empty. Nothing else is touched: the data directory may be a directory of the user's,
/// with a `tasks/` of its own.
fn remove_task_dirs(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let is_task = entry.file_name().to_str().is_some_and(|name| crate::peers::check_node_id("", name).is_ok());
        if is_task && entry.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

impl Tasks {
    /// An empty registry; per-task directories go below `dir` (leftovers of a crash are removed).
    pub(crate) fn new(settings: AiTasks, dir: &Path, secrets: Secrets) -> Tasks {
        remove_task_dirs(dir);
        Tasks {
            shared: Arc::new(Shared {
                settings,
                dir: dir.to_path_buf(),
                secrets,
                registry: Mutex::new(Registry::default()),
                supervisors: Mutex::new(Vec::new()),
            }),
        }
    }

    pub(crate) fn settings(&self) -> &AiTasks {
        &self.shared.settings
    }

    /// Validates, starts the agent and returns the new task (status `running`).
    pub(crate) fn dispatch(
        &self,
        request: DispatchRequest,
        from_node_id: &str,
        dispatcher: Dispatcher,
    ) -> Result<TaskInfo, DispatchError> {
        runner::dispatch(self, request, from_node_id, dispatcher)
    }

    /// Every task `asker` may see, newest first.
    pub(crate) fn list(&self, asker: &Dispatcher) -> Vec<TaskInfo> {
        let mut registry = self.lock();
        registry.evict(&self.shared.settings);
        let mut entries: Vec<&Entry> = registry.tasks.values().filter(|e| asker.may_act_on(&e.dispatcher)).collect();
        entries.sort_by_key(|e| std::cmp::Reverse((e.info.started_at, e.order)));
        entries.into_iter().map(|e| e.info.clone()).collect()
    }

    /// Who dispatched `task_id`, if it exists.
    pub(crate) fn dispatcher(&self, task_id: &str) -> Option<Dispatcher> {
        self.lock().tasks.get(task_id).map(|e| e.dispatcher.clone())
    }

    pub(crate) fn get(&self, task_id: &str) -> Option<TaskInfo> {
        self.lock().tasks.get(task_id).map(|e| e.info.clone())
    }

    /// The buffered events (empty for an unknown task, as in 1.0.21).
    pub(crate) fn events(&self, task_id: &str) -> Vec<Event> {
        self.lock().tasks.get(task_id).map(|e| e.log.all()).unwrap_or_default()
    }

    /// Replay and live events in one step, so nothing falls in between.
    pub(crate) fn subscribe(&self, task_id: &str, since: Since) -> Option<Subscription> {
        let mut registry = self.lock();
        let entry = registry.tasks.get_mut(task_id)?;
        let replay = match since {
            Since::Seq(seq) => entry.log.since(seq),
            Since::Timestamp(ms) => entry.log.since_timestamp(ms),
        };
        Some(Subscription { replay, live: entry.log.subscribe(), status: entry.info.status })
    }

    /// Answers the open request `request_id` of `task_id`, exactly once: a request decided
    /// before (expired, withdrawn) is [`ApproveError::Decided`] with the first decision, unless
    /// this is that same decision again (same `decision_id` and answer).
    pub(crate) fn approve(&self, task_id: &str, request_id: &str, verdict: Verdict) -> Result<Settled, ApproveError> {
        self.decide(task_id, request_id, verdict, false)
    }

    fn decide(
        &self,
        task_id: &str,
        request_id: &str,
        verdict: Verdict,
        timed_out: bool,
    ) -> Result<Settled, ApproveError> {
        let mut guard = self.lock();
        let Registry { tasks, feed, .. } = &mut *guard;
        let entry = tasks.get_mut(task_id).ok_or(ApproveError::NoPending)?;
        let state = match (timed_out, verdict.approved) {
            (true, _) => ApprovalState::Expired,
            (false, true) => ApprovalState::Approved,
            (false, false) => ApprovalState::Denied,
        };
        let Some(position) = entry.pending.iter().position(|(a, _)| a.request_id == request_id) else {
            let earlier = entry.decided.iter().rev().find(|d| d.record.request_id == request_id);
            return match earlier {
                Some(d) if !timed_out && d.decision_id.is_some() && d.decision_id == verdict.decision_id => {
                    match d.record.state == state {
                        true => Ok(Settled { record: d.record.clone(), repeated: true }),
                        false => Err(ApproveError::Decided(Box::new(d.record.clone()))),
                    }
                }
                Some(d) => Err(ApproveError::Decided(Box::new(d.record.clone()))),
                None => Err(ApproveError::NoPending),
            };
        };
        let (approval, key) = entry.pending.remove(position);
        entry.refresh_pending();
        let Verdict { approved, message, by, via, decision_id } = verdict;
        let record = entry.settle(&approval, state, by, via, message.clone(), decision_id, feed);
        let mut data = json!({"status": entry.info.status, "approved": approved, "requestId": request_id});
        if timed_out {
            data["reason"] = "timeout".into();
        }
        entry.emit(EventType::Status, data);
        if let Some(control) = &entry.control {
            let _ = control.try_send(runner::Command::Decide { key, decision: Decision { approved, message } });
        }
        Ok(Settled { record, repeated: false })
    }

    /// The permission requests `asker` may see: the open ones and the recently decided ones,
    /// oldest first.
    pub(crate) fn permission_records(&self, asker: &Dispatcher) -> Vec<PermissionRecord> {
        records(&self.lock(), asker)
    }

    /// A reader of the approvals feed for `asker`, resuming after `last_event_id` when the
    /// feed still can, else starting from a snapshot; taken in one step, so nothing falls in
    /// between.
    pub(crate) fn subscribe_approvals(&self, asker: &Dispatcher, last_event_id: Option<&str>) -> ApprovalStream {
        let mut registry = self.lock();
        let start = match last_event_id.and_then(|id| registry.feed.resume(id)) {
            Some(changes) => ApprovalStart::Replay(changes.into_iter().filter(|c| asker.may_act_on(&c.tag)).collect()),
            None => ApprovalStart::Snapshot(records(&registry, asker)),
        };
        let synced_id = registry.feed.id(registry.feed.last_seq());
        let epoch = registry.feed.epoch().to_string();
        ApprovalStream { start, live: registry.feed.subscribe(), synced_id, epoch }
    }

    /// Cancels a running task (`Some(false)`) or forgets a finished one (`Some(true)`).
    pub(crate) fn cancel_or_forget(&self, task_id: &str) -> Option<bool> {
        let mut registry = self.lock();
        let entry = registry.tasks.get_mut(task_id)?;
        match &entry.control {
            Some(control) => {
                let _ = control.try_send(runner::Command::Cancel);
                let Registry { tasks, feed, .. } = &mut *registry;
                if let Some(entry) = tasks.get_mut(task_id) {
                    entry.mark_cancelled(feed);
                }
                Some(false)
            }
            None => {
                registry.tasks.remove(task_id);
                Some(true)
            }
        }
    }

    /// Kills every agent's process group at once; the daemon is exiting. Readers of the
    /// approvals feed are let go.
    pub(crate) fn kill_all(&self) {
        let mut registry = self.lock();
        registry.feed.close();
        for entry in registry.tasks.values().filter(|e| e.control.is_some()) {
            if let Some(pid) = entry.info.pid {
                crate::process::signal_group(pid, libc::SIGKILL);
            }
        }
        remove_task_dirs(&self.shared.dir);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.shared.registry.lock().expect("task registry lock")
    }
}

/// The open requests and the newest decided ones `asker` may see, oldest first.
fn records(registry: &Registry, asker: &Dispatcher) -> Vec<PermissionRecord> {
    let visible: Vec<&Entry> = registry.tasks.values().filter(|e| asker.may_act_on(&e.dispatcher)).collect();
    let mut decided: Vec<&PermissionRecord> =
        visible.iter().flat_map(|e| e.decided.iter().map(|d| &d.record)).collect();
    decided.sort_by_key(|r| std::cmp::Reverse(r.decided_at));
    decided.truncate(DECIDED_IN_SNAPSHOT);
    let mut all: Vec<PermissionRecord> = visible
        .iter()
        .flat_map(|e| e.pending.iter().map(|(a, _)| e.record(a, ApprovalState::Pending)))
        .chain(decided.into_iter().cloned())
        .collect();
    all.sort_by_key(|r| r.requested_at);
    all
}

impl Registry {
    /// Tasks whose agent process is alive, cancelling ones included (E10).
    fn active(&self) -> usize {
        self.tasks.values().filter(|e| e.control.is_some()).count()
    }

    /// Drops finished tasks beyond the count and age bounds, oldest first (E6).
    fn evict(&mut self, settings: &AiTasks) {
        let ttl = Duration::from_millis(settings.finished_ttl);
        let mut finished: Vec<(Instant, String)> =
            self.tasks.iter().filter_map(|(id, e)| e.finished_at.map(|at| (at, id.clone()))).collect();
        finished.sort();
        let excess = finished.len().saturating_sub(settings.keep_finished as usize);
        for (i, (at, id)) in finished.into_iter().enumerate() {
            if i < excess || at.elapsed() >= ttl {
                self.tasks.remove(&id);
            }
        }
    }
}

/// The agent a request resolves to on this machine, and its executable.
fn resolve_agent(request: &DispatchRequest) -> Result<(Agent, PathBuf), DispatchError> {
    let path = std::env::var_os("PATH");
    match request.agent.fixed() {
        Some(agent) => crate::process::find_program(agent.program(), None, path.as_deref())
            .ok()
            .map(|p| (agent, p))
            .ok_or(DispatchError::NotInstalled(agent.program())),
        None => Agent::ALL
            .into_iter()
            .find_map(|agent| {
                crate::process::find_program(agent.program(), None, path.as_deref()).ok().map(|p| (agent, p))
            })
            .ok_or(DispatchError::NoAgent),
    }
}

/// Checks what can be checked before anything starts; returns the working directory.
fn validate(request: &DispatchRequest, settings: &AiTasks) -> Result<PathBuf, DispatchError> {
    let invalid = |field, problem: &str| DispatchError::Invalid { field, problem: problem.to_string() };
    if request.prompt.trim().is_empty() {
        return Err(invalid("prompt", "must not be empty"));
    }
    if request.max_budget_usd.is_some_and(|b| !(b.is_finite() && b > 0.0)) {
        return Err(invalid("maxBudgetUsd", "must be a number greater than 0"));
    }
    if request.model.as_deref().is_some_and(|m| m.trim().is_empty()) {
        return Err(invalid("model", "must not be empty"));
    }
    if request.resume_session_id.as_deref().is_some_and(|m| m.trim().is_empty()) {
        return Err(invalid("resumeSessionId", "must not be empty"));
    }
    let strings = [&request.prompt]
        .into_iter()
        .chain(&request.additional_args)
        .chain(&request.allowed_tools)
        .chain(&request.disallowed_tools);
    if strings.into_iter().any(|s| s.contains('\0')) {
        return Err(invalid("prompt", "arguments must not contain NUL characters"));
    }
    if request.permission_mode == PermissionMode::BypassPermissions && !settings.allow_bypass_permissions {
        return Err(DispatchError::Forbidden(
            "permissionMode bypassPermissions is disabled on this node (aiTasks.allowBypassPermissions)".into(),
        ));
    }
    let cwd = match &request.cwd {
        Some(cwd) => PathBuf::from(cwd),
        None => crate::paths::user_home_dir().ok_or_else(|| invalid("cwd", "not given and HOME is not set"))?,
    };
    if !cwd.is_absolute() {
        return Err(invalid("cwd", &format!("'{}' is not an absolute path", cwd.display())));
    }
    match std::fs::metadata(&cwd) {
        Ok(meta) if meta.is_dir() => Ok(cwd),
        Ok(_) => Err(DispatchError::NoSuchDirectory(format!("'{}' is not a directory", cwd.display()))),
        Err(e) => Err(DispatchError::NoSuchDirectory(format!("'{}': {e}", cwd.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(request: serde_json::Value, expect: &str) {
        let request: DispatchRequest = serde_json::from_value(request).unwrap();
        match validate(&request, &AiTasks::default()) {
            Ok(cwd) => assert_eq!(cwd.to_str().unwrap(), expect),
            Err(e) => assert!(e.to_string().contains(expect), "{e} should mention {expect}"),
        }
    }

    #[test]
    fn requests_are_validated_field_by_field() {
        check(json!({"prompt": "hi", "cwd": "/"}), "/");
        check(json!({"prompt": "  ", "cwd": "/"}), "prompt: must not be empty");
        check(json!({"prompt": "hi", "cwd": "rel"}), "cwd: 'rel' is not an absolute path");
        check(json!({"prompt": "hi", "cwd": "/no/such/dir"}), "cwd: '/no/such/dir'");
        check(json!({"prompt": "hi", "cwd": "/bin/sh"}), "is not a directory");
        check(json!({"prompt": "hi", "cwd": "/", "maxBudgetUsd": 0}), "maxBudgetUsd");
        check(json!({"prompt": "hi", "cwd": "/", "model": ""}), "model");
        check(json!({"prompt": "hi", "cwd": "/", "additionalArgs": ["a\u{0}b"]}), "NUL");
    }

    #[test]
    fn large_since_values_are_timestamps() {
        assert_eq!(Since::parse(12), Since::Seq(12));
        assert_eq!(Since::parse(1_795_473_345_036), Since::Timestamp(1_795_473_345_036));
    }
}
