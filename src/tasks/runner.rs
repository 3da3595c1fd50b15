//! One task's life: dispatch (checks, per-task directory, spawn), then a supervisor that feeds
//! the agent's output through its driver, forwards decisions, enforces the timeouts and, at the
//! end, classifies the outcome truthfully.
//!
//! Outcome rules (fixing E2): a task stopped by cancel, timeout or shutdown is `cancelled`
//! whatever the agent's exit code; a failed permission channel or an agent-reported failure is
//! `failed`; otherwise a finished turn or exit code 0 is `completed`, and anything else
//! (non-zero exit, a signal nobody sent) is `failed` with the exit status and the last lines of
//! stderr in `error`.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, FutureExt};
use serde_json::{json, Value};

use super::agents::{self, Decision, Driver, Output};
use super::api::{Agent, Approval, ApprovalState, DispatchRequest, EventType, Status, TaskInfo};
use super::events::EventLog;
use super::lines::{clean_terminal_line, LineSplitter};
use super::{DispatchError, Entry, Registry, Tasks, Verdict};
use crate::process::{self, AgentLaunch, Spawned};

/// How long an agent may take to answer the permission-channel handshake (Node start-up).
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Between SIGTERM and SIGKILL to the process group.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// How long an agent may linger after its turn finished and stdin closed.
const LINGER: Duration = Duration::from_secs(10);
/// How long to wait for the output pipes to close after the agent exited (a background
/// grandchild may hold them open).
const DRAIN: Duration = Duration::from_secs(2);
/// Lines of stderr kept for the error message of a failed task.
const STDERR_TAIL: usize = 20;

/// Messages to a supervisor.
pub(super) enum Command {
    Decide { key: String, decision: Decision },
    Cancel,
}

pub(super) fn dispatch(
    tasks: &Tasks,
    request: DispatchRequest,
    from: &str,
    dispatcher: super::Dispatcher,
) -> Result<TaskInfo, DispatchError> {
    let shared = &tasks.shared;
    let cwd = super::validate(&request, &shared.settings)?;
    let (agent, program) = super::resolve_agent(&request)?;
    if let Some(field) = agents::unsupported_option(agent, &request) {
        let problem = format!("is supported by claude only, not by {}", agent.program());
        return Err(DispatchError::Invalid { field, problem });
    }
    agents::flags::check(agent, &request.additional_args)
        .map_err(|refused| DispatchError::Invalid { field: "additionalArgs", problem: refused.to_string() })?;
    check_root_bypass(agent, &request)?;
    let options = agents::Options::from_request(&request, &cwd.to_string_lossy());
    let driver = agents::driver(agent, options);
    let task_id = crate::random::uuid_v4();
    let (control, commands) = smol::channel::unbounded();
    let now = crate::clock::now_ms();
    let info = TaskInfo {
        task_id: task_id.clone(),
        prompt: request.prompt.clone(),
        status: Status::Running,
        started_at: now,
        updated_at: now,
        from_node_id: from.to_string(),
        pid: None,
        model: request.model.clone(),
        agent,
        permission_mode: request.permission_mode,
        cwd: cwd.to_string_lossy().into_owned(),
        pty: request.pty,
        pending_approval: None,
        pending_approvals: Vec::new(),
        session_id: None,
        exit_code: None,
        signal: None,
        completed_at: None,
        error: None,
    };
    // Reserve the slot before spawning, so concurrent dispatches cannot overshoot the cap.
    {
        let mut registry = tasks.lock();
        let max = shared.settings.max_concurrent;
        if registry.active() >= max as usize {
            return Err(DispatchError::TooMany(max));
        }
        registry.created += 1;
        let entry = Entry {
            info,
            dispatcher,
            log: EventLog::new(&task_id),
            order: registry.created,
            pending: Vec::new(),
            decided: Default::default(),
            control: Some(control),
            finished_at: None,
        };
        registry.tasks.insert(task_id.clone(), entry);
    }
    let task_dir = shared.dir.join(&task_id);
    let spawned = start_process(tasks, agent, &program, &cwd, &task_dir, &task_id, driver.as_ref(), request.pty);
    let spawned = match spawned {
        Ok(spawned) => spawned,
        Err(reason) => {
            tasks.lock().tasks.remove(&task_id);
            let _ = std::fs::remove_dir_all(&task_dir);
            return Err(DispatchError::Spawn { program: program.display().to_string(), reason });
        }
    };
    let info = {
        let mut registry = tasks.lock();
        let entry = registry.tasks.get_mut(&task_id).expect("reserved above");
        entry.info.pid = Some(spawned.pid);
        entry.emit(EventType::Status, json!({"status": "running"}));
        entry.info.clone()
    };
    log::info!("AI task {task_id}: {} started as PID {} in {}", agent.program(), spawned.pid, cwd.display());
    let supervisor = Supervisor::new(tasks.clone(), task_id, task_dir, driver, spawned.pid);
    let handle = smol::spawn(supervisor.run(spawned, commands));
    let mut supervisors = shared.supervisors.lock().expect("supervisors lock");
    supervisors.retain(|task| !task.is_finished());
    supervisors.push(handle);
    Ok(info)
}

/// Claude Code refuses bypass modes as root unless `IS_SANDBOX=1` (AGENT-CLIS.md §3): say so
/// up front instead of failing after 201.
fn check_root_bypass(agent: Agent, request: &DispatchRequest) -> Result<(), DispatchError> {
    let bypass = request.permission_mode == super::api::PermissionMode::BypassPermissions;
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if agent == Agent::Claude && bypass && root && std::env::var_os("IS_SANDBOX").is_none_or(|v| v != "1") {
        return Err(DispatchError::Invalid {
            field: "permissionMode",
            problem: "Claude Code refuses bypassPermissions as root; if this machine is a sandbox, start the \
                      daemon with IS_SANDBOX=1"
                .into(),
        });
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn start_process(
    tasks: &Tasks,
    agent: Agent,
    program: &std::path::Path,
    cwd: &std::path::Path,
    task_dir: &std::path::Path,
    task_id: &str,
    driver: &dyn Driver,
    pty: bool,
) -> Result<Spawned, String> {
    crate::durable::create_private_dir(task_dir).map_err(|e| format!("{e:#}"))?;
    let secrets = tasks.shared.secrets.current();
    let mut env = super::env::agent_env(agent, std::env::vars(), &secrets);
    env.insert("LOOPSY_TASK_ID".into(), task_id.into());
    // The agent's temporary files (Claude's `claude-<uid>`…) go to the private task directory.
    env.insert("TMPDIR".into(), task_dir.to_string_lossy().into_owned());
    let args = driver.args();
    let launch = AgentLaunch { program, args: &args, cwd, env: &env, pty };
    process::spawn_agent(&launch).map_err(|e| e.to_string())
}

/// What the supervisor hears.
enum Message {
    Stdout(String),
    Stderr(String),
    StreamEnd,
    Exited(std::io::Result<ExitStatus>),
    Command(Command),
}

/// Why the supervisor stops the agent itself.
#[derive(Debug, Clone, PartialEq)]
enum Stop {
    Cancelled,
    TimedOut,
    Failed(String),
    /// The turn finished and stdin is closed, but the agent did not exit.
    Lingering,
}

struct Supervisor {
    tasks: Tasks,
    task_id: String,
    task_dir: PathBuf,
    driver: Box<dyn Driver>,
    pgid: u32,
    stdin: Option<Pin<Box<dyn AsyncWrite + Send>>>,
    ready: bool,
    /// `Some(error)` once the driver said the turn is over.
    finished: Option<Option<String>>,
    stop: Option<Stop>,
    kill_at: Option<Instant>,
    linger_at: Option<Instant>,
    stderr_tail: VecDeque<String>,
    /// The last error the agent reported.
    agent_error: Option<String>,
    /// Approval timers by request id; dropping one cancels it.
    timers: HashMap<String, smol::Task<()>>,
    /// The driver's keys by our request ids.
    keys: HashMap<String, String>,
}

impl Supervisor {
    fn new(tasks: Tasks, task_id: String, task_dir: PathBuf, driver: Box<dyn Driver>, pgid: u32) -> Supervisor {
        Supervisor {
            tasks,
            task_id,
            task_dir,
            driver,
            pgid,
            stdin: None,
            ready: false,
            finished: None,
            stop: None,
            kill_at: None,
            linger_at: None,
            stderr_tail: VecDeque::new(),
            agent_error: None,
            timers: HashMap::new(),
            keys: HashMap::new(),
        }
    }

    async fn run(mut self, spawned: Spawned, commands: smol::channel::Receiver<Command>) {
        let (sender, messages) = smol::channel::unbounded();
        let pty = spawned.stderr.is_none();
        let mut readers = vec![smol::spawn(read_lines(spawned.stdout, pty, sender.clone(), Message::Stdout))];
        let mut streams = 1;
        if let Some(stderr) = spawned.stderr {
            readers.push(smol::spawn(read_lines(stderr, false, sender.clone(), Message::Stderr)));
            streams += 1;
        }
        let exit = spawned.exit;
        let exit_sender = sender.clone();
        let _waiter = smol::spawn(async move {
            let _ = exit_sender.send(Message::Exited(exit.await)).await;
        });
        let forward = sender.clone();
        let _commands = smol::spawn(async move {
            while let Ok(command) = commands.recv().await {
                if forward.send(Message::Command(command)).await.is_err() {
                    break;
                }
            }
        });
        drop(sender);
        self.stdin = Some(spawned.stdin);
        let outputs = self.driver.start();
        self.apply(outputs).await;

        let started = Instant::now();
        let deadline = started + Duration::from_millis(self.tasks.settings().timeout);
        let setup_deadline = started + SETUP_TIMEOUT;
        let mut exited: Option<std::io::Result<ExitStatus>> = None;
        let mut drain_until: Option<Instant> = None;
        loop {
            if exited.is_some() && (streams == 0 || drain_until.is_some_and(|t| Instant::now() >= t)) {
                break;
            }
            let mut wake: Option<Instant> = None;
            let mut consider = |t: Instant| wake = Some(wake.map_or(t, |w: Instant| w.min(t)));
            match (&exited, drain_until) {
                (Some(_), Some(until)) => consider(until),
                _ => {
                    if self.stop.is_none() {
                        consider(deadline);
                        if !self.ready {
                            consider(setup_deadline);
                        }
                    }
                    self.kill_at.into_iter().chain(self.linger_at).for_each(&mut consider);
                }
            }
            let timer = async {
                match wake {
                    Some(at) => async_io::Timer::at(at).await,
                    None => async_io::Timer::never().await,
                };
                None
            };
            let message = async { messages.recv().await.ok() };
            match message.or(timer).await {
                Some(Message::Stdout(line)) => self.on_stdout(line).await,
                Some(Message::Stderr(line)) => self.on_stderr(line),
                Some(Message::StreamEnd) => streams -= 1,
                Some(Message::Exited(status)) => {
                    exited = Some(status);
                    drain_until = Some(Instant::now() + DRAIN);
                    if self.stop.is_some() {
                        // Stopped on purpose: take the tool processes it left along.
                        process::signal_group(self.pgid, libc::SIGKILL);
                    }
                }
                Some(Message::Command(Command::Decide { key, decision })) => {
                    let outputs = self.driver.on_decision(&key, &decision);
                    self.apply(outputs).await;
                }
                Some(Message::Command(Command::Cancel)) => self.request_stop(Stop::Cancelled),
                None if exited.is_none() => self.on_timer(deadline, setup_deadline),
                None => {}
            }
        }
        drop(readers);
        let status = exited.expect("the loop ends after the exit");
        // The agent's TMPDIR may hold any tree it left: removed on the blocking pool, before
        // the task is reported finished.
        let dir = self.task_dir.clone();
        smol::unblock(move || std::fs::remove_dir_all(dir)).await.ok();
        self.finish(status);
    }

    fn on_timer(&mut self, deadline: Instant, setup_deadline: Instant) {
        let now = Instant::now();
        if self.kill_at.is_some_and(|t| now >= t) {
            self.kill_at = None;
            process::signal_group(self.pgid, libc::SIGKILL);
        }
        if self.linger_at.is_some_and(|t| now >= t) {
            self.linger_at = None;
            self.request_stop(Stop::Lingering);
        }
        if now >= deadline && self.stop.is_none() {
            let seconds = self.tasks.settings().timeout as f64 / 1000.0;
            self.with_entry(|entry| entry.emit(EventType::Error, json!(format!("Task timed out after {seconds} s"))));
            self.request_stop(Stop::TimedOut);
        }
        if !self.ready && now >= setup_deadline && self.stop.is_none() {
            let seconds = SETUP_TIMEOUT.as_secs();
            self.request_stop(Stop::Failed(format!(
                "the agent did not set up its permission channel within {seconds} s; the prompt was not sent"
            )));
        }
    }

    /// TERM to the group now, KILL after the grace period. The first reason stays the reason.
    fn request_stop(&mut self, stop: Stop) {
        if self.stop.is_some() {
            return;
        }
        if matches!(stop, Stop::Cancelled | Stop::TimedOut) {
            let mut registry = self.tasks.lock();
            let Registry { tasks, feed, .. } = &mut *registry;
            if let Some(entry) = tasks.get_mut(&self.task_id) {
                entry.mark_cancelled(feed);
            }
            drop(registry);
            self.timers.clear();
        }
        self.stop = Some(stop);
        self.stdin = None;
        process::signal_group(self.pgid, libc::SIGTERM);
        self.kill_at = Some(Instant::now() + KILL_GRACE);
    }

    async fn on_stdout(&mut self, line: String) {
        let outputs = self.driver.on_line(&line);
        self.apply(outputs).await;
    }

    fn on_stderr(&mut self, line: String) {
        let line = clean_terminal_line(&line);
        if line.trim().is_empty() {
            return;
        }
        log::debug!("AI task {} stderr: {line}", self.task_id);
        let short: String = line.chars().take(500).collect();
        if self.stderr_tail.len() == STDERR_TAIL {
            self.stderr_tail.pop_front();
        }
        self.stderr_tail.push_back(short);
        self.with_entry(|entry| entry.emit(EventType::System, json!({"subtype": "stderr", "line": line})));
    }

    async fn apply(&mut self, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Write(line) => self.write(line).await,
                Output::Event(kind, data) => self.with_entry(|entry| entry.emit(kind, data)),
                Output::Approval { key, tool_name, tool_input, description } => {
                    self.open_approval(key, tool_name, tool_input, description)
                }
                Output::Withdraw { key } => self.withdraw(&key),
                Output::SessionId(id) => self.with_entry(|entry| entry.info.session_id = Some(id)),
                Output::Ready => self.ready = true,
                Output::Error(message) => self.agent_error = Some(message),
                Output::Finished { error } => {
                    self.finished = Some(error);
                    // Closing stdin ends one-shot runs (Claude exits after `result` once it is closed).
                    self.stdin = None;
                    self.linger_at = Some(Instant::now() + LINGER);
                }
                Output::Fail(message) => self.request_stop(Stop::Failed(message)),
            }
        }
    }

    async fn write(&mut self, mut line: String) {
        let Some(stdin) = self.stdin.as_mut() else { return };
        line.push('\n');
        let written = async {
            stdin.write_all(line.as_bytes()).await?;
            stdin.flush().await
        };
        if let Err(e) = written.await {
            log::debug!("AI task {}: writing to the agent failed: {e}", self.task_id);
            self.stdin = None;
        }
    }

    fn open_approval(&mut self, key: String, tool_name: String, tool_input: Value, description: String) {
        if self.stop.is_some() {
            return;
        }
        let now = crate::clock::now_ms();
        let request_id = format!("{now}-{}", crate::random::hex(8));
        let approval = Approval { tool_name, tool_input, request_id: request_id.clone(), timestamp: now, description };
        self.keys.insert(request_id.clone(), key.clone());
        {
            let mut registry = self.tasks.lock();
            let Registry { tasks, feed, .. } = &mut *registry;
            if let Some(entry) = tasks.get_mut(&self.task_id) {
                entry.open(approval, key, feed);
            }
        }
        let timeout = Duration::from_millis(self.tasks.settings().approval_timeout);
        let (tasks, task_id, id) = (self.tasks.clone(), self.task_id.clone(), request_id.clone());
        let timer = smol::spawn(async move {
            async_io::Timer::after(timeout).await;
            let message = format!("Permission request timed out after {} s", timeout.as_secs_f64());
            let verdict =
                Verdict { approved: false, message: Some(message), by: "timeout".into(), via: None, decision_id: None };
            let _ = tasks.decide(&task_id, &id, verdict, true);
        });
        self.timers.insert(request_id, timer);
    }

    fn withdraw(&mut self, key: &str) {
        let Some(request_id) = self.keys.iter().find(|(_, k)| *k == key).map(|(id, _)| id.clone()) else { return };
        self.keys.remove(&request_id);
        self.timers.remove(&request_id);
        let mut registry = self.tasks.lock();
        let Registry { tasks, feed, .. } = &mut *registry;
        let Some(entry) = tasks.get_mut(&self.task_id) else { return };
        if let Some(position) = entry.pending.iter().position(|(a, _)| a.request_id == request_id) {
            let (approval, _) = entry.pending.remove(position);
            entry.refresh_pending();
            entry.settle(&approval, ApprovalState::Withdrawn, "agent".into(), None, None, None, feed);
            entry.emit(EventType::Status, json!({"status": entry.info.status, "withdrawn": request_id}));
        }
    }

    fn with_entry(&self, change: impl FnOnce(&mut Entry)) {
        if let Some(entry) = self.tasks.lock().tasks.get_mut(&self.task_id) {
            change(entry);
        }
    }

    /// The final status and error, from why we stopped, what the driver said and the exit.
    fn outcome(&self, exit: &std::io::Result<ExitStatus>) -> (Status, Option<String>) {
        use std::os::unix::process::ExitStatusExt;
        let (code, signal) = match exit {
            Ok(status) => (status.code(), status.signal()),
            Err(_) => (None, None),
        };
        let describe = || {
            let status = match (code, signal, exit) {
                (Some(code), _, _) => format!("exited with code {code}"),
                (None, Some(signal), _) => format!("was killed by signal {signal}"),
                (_, _, Err(e)) => format!("could not be waited for: {e}"),
                _ => "ended".into(),
            };
            let mut text = format!("{} {status}", self.program());
            if let Some(error) = &self.agent_error {
                text.push_str(&format!(": {error}"));
            }
            if !self.stderr_tail.is_empty() {
                let tail: Vec<&str> = self.stderr_tail.iter().map(String::as_str).collect();
                text.push_str(&format!("; stderr: {}", tail.join("\n")));
            }
            text
        };
        match (&self.stop, &self.finished) {
            (Some(Stop::Cancelled), _) => (Status::Cancelled, Some("Cancelled".into())),
            (Some(Stop::TimedOut), _) => (Status::Cancelled, Some("Task timed out".into())),
            (Some(Stop::Failed(message)), _) => (Status::Failed, Some(message.clone())),
            (_, Some(Some(error))) => (Status::Failed, Some(error.clone())),
            (Some(Stop::Lingering), Some(None)) => (Status::Completed, None),
            (_, Some(None)) if code == Some(0) => (Status::Completed, None),
            (None, None) if code == Some(0) && self.ready => (Status::Completed, None),
            (None, None) if code == Some(0) => {
                (Status::Failed, Some(format!("{}; the permission channel was never set up", describe())))
            }
            _ => (Status::Failed, Some(describe())),
        }
    }

    fn program(&self) -> &'static str {
        self.tasks.get(&self.task_id).map(|i| i.agent.program()).unwrap_or("agent")
    }

    fn finish(mut self, exit: std::io::Result<ExitStatus>) {
        use std::os::unix::process::ExitStatusExt;
        let (status, error) = self.outcome(&exit);
        let (code, signal) = match &exit {
            Ok(s) => (s.code(), s.signal()),
            Err(_) => (None, None),
        };
        self.timers.clear();
        log::info!("AI task {}: {} ({:?})", self.task_id, status.as_str(), error.as_deref().unwrap_or("no error"));
        let settings = self.tasks.settings().clone();
        let mut registry = self.tasks.lock();
        let Registry { tasks, feed, .. } = &mut *registry;
        if let Some(entry) = tasks.get_mut(&self.task_id) {
            let now = crate::clock::now_ms();
            entry.withdraw_all("exit", feed);
            entry.info.status = status;
            entry.refresh_pending();
            entry.info.error = error.or(entry.info.error.take());
            entry.info.exit_code = Some(code);
            entry.info.signal = signal;
            entry.info.completed_at = Some(now);
            entry.control = None;
            entry.finished_at = Some(Instant::now());
            entry.emit(EventType::Status, json!({"status": status}));
            entry.emit(EventType::Exit, json!({"exitCode": code, "signal": signal}));
        }
        registry.evict(&settings);
    }
}

/// Reads `stream` line by line into `sender`; the PTY's lines are cleaned first.
async fn read_lines(
    mut stream: Pin<Box<dyn AsyncRead + Send>>,
    pty: bool,
    sender: smol::channel::Sender<Message>,
    wrap: fn(String) -> Message,
) {
    let mut splitter = LineSplitter::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for line in splitter.push(&buf[..n]) {
            if sender.send(wrap(clean(line, pty))).await.is_err() {
                return;
            }
        }
    }
    if let Some(line) = splitter.finish() {
        let _ = sender.send(wrap(clean(line, pty))).await;
    }
    let _ = sender.send(Message::StreamEnd).await;
}

fn clean(line: String, pty: bool) -> String {
    if pty {
        clean_terminal_line(&line)
    } else {
        line.strip_suffix('\r').map(String::from).unwrap_or(line)
    }
}
