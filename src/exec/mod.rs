//! Remote execution: the one service behind `POST /execute` and `POST /execute/stream`.
//!
//! [`Executor::start`] checks a request (fields, loader variables, the deny/allow list, the
//! concurrency cap), starts the process in its own group, registers it in the job table and runs
//! it in a task of its own: [`Job::run`] feeds its output to the job's [`JobLog`] (numbered
//! events) until it ends. Clients read the log: `/execute` collects it, `/execute/stream` and the
//! reattach route stream it from any event number, so a client whose connection dropped reads
//! on where it stopped. A request with an idempotency key that names a kept job gets that job,
//! never a second process (`history.rs`). On timeout, cancel (`DELETE`) or when the streaming
//! client of a job without a key goes away, the whole process group gets SIGTERM and, after a
//! grace period, SIGKILL. Output is capped per stream and decoded as UTF-8 without splitting
//! characters. This module knows nothing of HTTP.

pub(crate) mod api;
mod history;
mod log;
mod output;
pub(crate) mod policy;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_io::Timer;
use futures_lite::{future, AsyncReadExt};
use smol::channel::{Receiver, Sender};
use smol::process::{Child, ChildStderr, ChildStdout};

use crate::child_env::{self, Secrets};
use crate::config::Execution;
use crate::process;
pub(crate) use crate::process::SpawnError;
use history::{History, Kept, KeyId, Limits, Lookup};
pub(crate) use log::{Item, JobLog, LogEvent, Numbered, Reader};
use output::{Cap, Utf8Decoder};
pub(crate) use policy::{Policy, Refusal};

/// Longest idempotency key, in bytes.
pub(crate) const MAX_KEY_BYTES: usize = 255;

/// Time between SIGTERM and SIGKILL when a job is stopped.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(2);
/// Bytes read from a pipe at a time.
const READ_CHUNK: usize = 64 * 1024;

/// A request to run something, already decoded from the wire.
#[derive(Debug, Clone, Default)]
pub(crate) struct Spec {
    pub command: String,
    pub args: Vec<String>,
    pub cwd: Option<String>,
    /// Merged over the daemon's environment (without its `LOOPSY_*` variables and keys).
    pub env: BTreeMap<String, String>,
    /// `None`: `execution.defaultTimeout`; at most `execution.maxTimeout`.
    pub timeout: Option<Duration>,
    /// `X-Loopsy-Node-Id` of the caller, `unknown` without it (1.0.21).
    pub from_node_id: String,
    /// Who started the job (`owner`, or a peer's `Caller::label`): only they and the owner
    /// see, read and cancel it.
    pub scope: String,
    pub streamed: bool,
}

/// Why a job was not started.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExecError {
    /// A field of the request is unusable; the message names it.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Every place is taken and the queue is full (or `execution.maxQueued` is 0).
    #[error("Max concurrent jobs ({max}) reached and {queued} requests already wait")]
    Busy { max: usize, queued: usize },
    /// The request waited `execution.queueTimeout` in the queue without getting a place.
    #[error("Max concurrent jobs ({max}) reached; waited {waited_ms} ms in the queue (execution.queueTimeout)")]
    QueueTimeout { max: usize, waited_ms: u64 },
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    #[error("Idempotency-Key '{key}' was used for a different request (job {job_id})")]
    KeyReused { key: String, job_id: String },
    #[error("Idempotency-Key '{key}' already ran job {job_id} (exit code {}); its output is no longer kept", .exit_code.map_or("unknown".to_string(), |code| code.to_string()))]
    Expired { key: String, job_id: String, exit_code: Option<i32> },
}

/// Who asks for a job, and the idempotency key they sent.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    /// Whose the request is (`owner`, or a peer's `Caller::label`): keys are per caller, and
    /// only this caller (or the owner) may reattach to the job.
    pub caller: String,
    pub key: Option<String>,
}

/// What an idempotency key already names: its job (`Some`), nothing yet (`None`), or an error
/// (the key was used for another request, or its job is forgotten).
fn known(history: &History, key: &KeyId, digest: &[u8; 32], attach: Option<u64>) -> Result<Option<Started>, ExecError> {
    match history.lookup(key, digest) {
        Lookup::Kept { job_id, log } => {
            let reader = attach.map(|from| log.attach(from));
            Ok(Some(Started { job_id, log, reader, existing: true }))
        }
        Lookup::Mismatch { job_id } => Err(ExecError::KeyReused { key: key.key.clone(), job_id }),
        Lookup::Forgotten(forgotten) => {
            Err(ExecError::Expired { key: key.key.clone(), job_id: forgotten.job_id, exit_code: forgotten.exit_code })
        }
        Lookup::Unknown => Ok(None),
    }
}

/// A job that runs (or ran) for a request.
pub(crate) struct Started {
    pub job_id: String,
    pub log: Arc<JobLog>,
    /// Attached from the event asked for, before the job could produce anything.
    pub reader: Option<Reader>,
    /// The key named a job that already existed: nothing was started.
    pub existing: bool,
}

/// One running job as the job table lists it.
#[derive(Debug, Clone)]
pub(crate) struct JobInfo {
    pub job_id: String,
    pub command: String,
    pub args: Vec<String>,
    pub started_at: u64,
    pub from_node_id: String,
    /// Who started it ([`Spec::scope`]).
    pub scope: String,
    pub pid: u32,
    pub streamed: bool,
}

/// Which pipe a piece of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pipe {
    Stdout,
    Stderr,
}

/// The receiver of a job's output went away; the job is stopped.
#[derive(Debug)]
pub(crate) struct Gone;

/// Where a running job's output goes, as UTF-8 text in arrival order.
pub(crate) trait Sink: Send {
    fn output(&mut self, pipe: Pipe, text: String) -> impl Future<Output = Result<(), Gone>> + Send;
}

/// Why a job was stopped before it ended by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Timeout,
    Cancelled,
    ReceiverGone,
}

/// How a job ended.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    /// `None` when a signal ended it.
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stopped: Option<Stop>,
    pub duration: Duration,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

impl Outcome {
    /// The exit code a shell would show: the code, or 128 + signal number.
    pub(crate) fn shell_code(&self) -> i32 {
        self.exit_code.or(self.signal.map(|signal| 128 + signal)).unwrap_or(0)
    }

    pub(crate) fn signal_name(&self) -> Option<String> {
        self.signal.map(process::signal_name)
    }
}

/// The execution service of one daemon: a cheap-clone handle.
#[derive(Clone)]
pub(crate) struct Executor {
    inner: Arc<Inner>,
}

struct Inner {
    policy: Policy,
    max_concurrent: usize,
    max_queued: usize,
    queue_timeout: Duration,
    default_timeout: Duration,
    max_timeout: Duration,
    /// What the daemon's environment must not pass on to a job.
    secrets: Secrets,
    max_output_bytes: u64,
    keep_output_bytes: usize,
    /// A job nobody reads for this long is stopped: its client is gone for good.
    detached_timeout: Duration,
    table: Mutex<Table>,
    /// Lock order: `history` before `table`.
    history: Mutex<History>,
    /// Keyed starts take turns from their second lookup to the insert (see `start`).
    keyed_turn: smol::lock::Mutex<()>,
    total: AtomicU64,
}

#[derive(Default)]
struct Table {
    /// Reserved slots: jobs being started plus jobs in `jobs`, plus places handed to a waiter
    /// that has not taken it yet.
    active: usize,
    jobs: HashMap<String, Entry>,
    /// Requests waiting for a place, first come first served. A place freed while someone
    /// waits goes straight to the first waiter (`active` does not drop), so a newcomer can never
    /// overtake the queue.
    waiting: VecDeque<Waiter>,
    /// Ticket numbers of waiters.
    next_ticket: u64,
}

struct Waiter {
    ticket: u64,
    /// Told once when the place is handed over (capacity 1, so the send never blocks).
    granted: Sender<()>,
}

struct Entry {
    info: JobInfo,
    cancel: Sender<Stop>,
}

impl Executor {
    pub(crate) fn new(config: &Execution, secrets: Secrets) -> Executor {
        Executor {
            inner: Arc::new(Inner {
                policy: Policy::new(&config.denylist, config.allowlist.as_deref()),
                max_concurrent: config.max_concurrent as usize,
                max_queued: config.max_queued as usize,
                queue_timeout: Duration::from_millis(config.queue_timeout),
                default_timeout: Duration::from_millis(config.default_timeout),
                max_timeout: Duration::from_millis(config.max_timeout),
                secrets,
                max_output_bytes: config.max_output_bytes,
                keep_output_bytes: usize::try_from(config.keep_output_bytes).unwrap_or(usize::MAX),
                detached_timeout: Duration::from_millis(config.detached_timeout),
                table: Mutex::new(Table::default()),
                history: Mutex::new(History::new(Limits {
                    keep_finished: config.keep_finished as usize,
                    finished_ttl_ms: config.finished_ttl,
                    total_bytes: usize::try_from(config.keep_output_total).unwrap_or(usize::MAX),
                })),
                keyed_turn: smol::lock::Mutex::new(()),
                total: AtomicU64::new(0),
            }),
        }
    }

    /// Checks `spec` and starts it (deny/allow list, then a place under the concurrency cap,
    /// waiting in the queue when all are taken, then spawn), or finds the job its idempotency
    /// key names. `attach` attaches a reader from that event.
    pub(crate) async fn start(&self, spec: Spec, origin: Origin, attach: Option<u64>) -> Result<Started, ExecError> {
        validate(&spec)?;
        if let Some(timeout) = spec.timeout.filter(|t| *t > self.inner.max_timeout) {
            return Err(ExecError::Invalid(format!(
                "field 'timeout' asks for {} ms; this node allows at most {} ms (execution.maxTimeout)",
                timeout.as_millis(),
                self.inner.max_timeout.as_millis()
            )));
        }
        let digest = digest(&spec);
        let key = match origin.key {
            Some(key) => {
                check_key(&key)?;
                Some(KeyId { caller: origin.caller.clone(), key })
            }
            None => None,
        };
        // A retry of a known job needs no place under the cap: answered before the queue.
        if let Some(key) = &key {
            let history = self.inner.history.lock().expect("job history lock");
            if let Some(found) = known(&history, key, &digest, attach)? {
                return Ok(found);
            }
        }
        self.inner.policy.check(&spec.command, &spec.args)?;
        // No lock is held while waiting for a place.
        let slot = self.reserve().await?;
        // A streamed job keeps a window of its output for reattaching clients; a collected one
        // keeps all of it (bounded by its cap), since its answer is built from the log.
        let limit = spec.streamed.then_some(self.inner.keep_output_bytes);
        // A keyed request takes its turn from the second lookup to the insert, so two retries
        // racing each other start one process. The turn is an async lock: the spawn may wait
        // for the blocking pool meanwhile. A request without a key has nothing to look up and
        // does not hold up others while it spawns.
        let turn = match &key {
            Some(key) => {
                let turn = self.inner.keyed_turn.lock().await;
                if let Some(found) = known(&self.inner.history.lock().expect("job history lock"), key, &digest, attach)?
                {
                    return Ok(found); // the place goes back with `slot`
                }
                Some(turn)
            }
            None => None,
        };
        // A spawn (fork and exec) blocks the thread doing it. On an otherwise idle daemon it is
        // done right here: a hand-off to another thread would cost more than it saves. While
        // other jobs run, their output and exits would wait behind it on the daemon's one
        // executor thread, so it is done on the blocking pool.
        let job = if self.only_job() { self.spawn(spec, slot)? } else { self.spawn_on_pool(spec, slot).await? };
        let log = Arc::new(JobLog::new(limit));
        let reader = attach.map(|from| log.attach(from));
        let job_id = job.id.clone();
        let kept = Kept { owner: origin.caller, key, digest, log: log.clone(), finished_at: None, exit_code: None };
        self.inner.history.lock().expect("job history lock").insert(&job_id, kept);
        drop(turn);
        // The job ends when its process does, and the daemon kills every process when it stops,
        // so this task cannot outlive the daemon's work.
        smol::spawn(self.clone().drive(job, log.clone())).detach();
        Ok(Started { job_id, log, reader, existing: false })
    }

    /// Runs `job` to its end, into `log`, then files it as finished. A job that nobody has read
    /// for `execution.detachedTimeout` (its client dropped and never came back) is stopped.
    async fn drive(self, job: Job, log: Arc<JobLog>) {
        let job_id = job.id.clone();
        let mut sink = LogSink { log: log.clone() };
        let orphaned = async {
            log.detached_for(self.inner.detached_timeout).await;
            self.stop(&job_id, Stop::ReceiverGone);
            future::pending::<Outcome>().await
        };
        let outcome = future::or(job.run(&mut sink), orphaned).await;
        let exit_code = outcome.shell_code();
        let now = crate::clock::now_ms();
        // Filed as finished before anyone hears of the end: a client that got its answer and
        // sends the next request finds the history (eviction, forgotten keys) up to date.
        self.inner.history.lock().expect("job history lock").finish(&job_id, Some(exit_code), now);
        log.finish(outcome, now);
    }

    /// A reader of job `job_id` from event `from`, for `caller` (its starter) or the owner.
    /// `None` when there is no such job, or it is not theirs to read.
    pub(crate) fn reattach(&self, job_id: &str, caller: &str, owner: bool, from: u64) -> Option<Reader> {
        let mut history = self.inner.history.lock().expect("job history lock");
        history.evict(crate::clock::now_ms());
        let kept = history.get(job_id).filter(|kept| owner || kept.owner == caller)?;
        Some(kept.log.attach(from))
    }

    fn spawn(&self, spec: Spec, slot: Slot<'_>) -> Result<Job, ExecError> {
        let env = self.job_env(&spec);
        let launch =
            process::JobLaunch { command: &spec.command, args: &spec.args, cwd: spec.cwd.as_deref(), env: &env };
        let child = process::spawn_job(&launch)?;
        self.spawned(spec, slot, child)
    }

    /// [`Executor::spawn`] on a thread of the blocking pool.
    async fn spawn_on_pool(&self, spec: Spec, slot: Slot<'_>) -> Result<Job, ExecError> {
        let env = self.job_env(&spec);
        let (spec, child) = smol::unblock(move || {
            let launch =
                process::JobLaunch { command: &spec.command, args: &spec.args, cwd: spec.cwd.as_deref(), env: &env };
            let child = process::spawn_job(&launch);
            (spec, child)
        })
        .await;
        self.spawned(spec, slot, child?)
    }

    /// The daemon's environment without its secrets, then what the caller asked for.
    fn job_env(&self, spec: &Spec) -> BTreeMap<String, String> {
        let mut env = child_env::inherited(std::env::vars(), &self.inner.secrets.current());
        env.extend(spec.env.iter().map(|(name, value)| (name.clone(), value.clone())));
        env
    }

    /// Files a started `child` as job of `spec`, in the place `slot` held for it.
    fn spawned(&self, spec: Spec, slot: Slot<'_>, mut child: smol::process::Child) -> Result<Job, ExecError> {
        let started = Instant::now();
        let pid = child.id();
        let job_id = crate::random::uuid_v4();
        let (cancel, cancelled) = smol::channel::bounded(1);
        let info = JobInfo {
            job_id: job_id.clone(),
            command: spec.command,
            args: spec.args,
            started_at: crate::clock::now_ms(),
            from_node_id: spec.from_node_id,
            scope: spec.scope,
            pid,
            streamed: spec.streamed,
        };
        self.inner.table.lock().expect("job table lock").jobs.insert(job_id.clone(), Entry { info, cancel });
        slot.keep(); // the job holds the place now; its Drop releases it
        self.inner.total.fetch_add(1, Ordering::Relaxed);
        let timeout = spec.timeout.unwrap_or(self.inner.default_timeout);
        Ok(Job {
            id: job_id,
            pgid: pid,
            stdout: child.stdout.take().expect("stdout is piped"),
            stderr: child.stderr.take().expect("stderr is piped"),
            child,
            cancelled,
            started,
            deadline: started.checked_add(timeout),
            cap: self.inner.max_output_bytes,
            finished: false,
            executor: self.clone(),
        })
    }

    /// Whether the place being filled is the only one taken: no other job runs or is starting.
    fn only_job(&self) -> bool {
        self.inner.table.lock().expect("job table lock").active <= 1
    }

    /// A place under `execution.maxConcurrent`: at once when one is free, else after waiting
    /// in the FIFO queue (at most `execution.maxQueued` waiters, each at most
    /// `execution.queueTimeout`).
    async fn reserve(&self) -> Result<Slot<'_>, ExecError> {
        let (ticket, granted) = {
            let mut table = self.inner.table.lock().expect("job table lock");
            if table.active < self.inner.max_concurrent && table.waiting.is_empty() {
                table.active += 1;
                return Ok(Slot { executor: self, kept: false });
            }
            if table.waiting.len() >= self.inner.max_queued {
                return Err(ExecError::Busy { max: self.inner.max_concurrent, queued: table.waiting.len() });
            }
            let ticket = table.next_ticket;
            table.next_ticket += 1;
            let (sender, receiver) = smol::channel::bounded(1);
            table.waiting.push_back(Waiter { ticket, granted: sender });
            (ticket, receiver)
        };
        // Dropped unfinished (timeout, or the request's future dropped): leaves the queue, or
        // passes on a place handed over meanwhile.
        let mut place = Queued { executor: self, ticket, done: false };
        let waited = Instant::now();
        let got = crate::clock::timeout(self.inner.queue_timeout, granted.recv()).await.is_some_and(|r| r.is_ok());
        if got || place.granted_meanwhile() {
            place.done = true;
            return Ok(Slot { executor: self, kept: false });
        }
        Err(ExecError::QueueTimeout { max: self.inner.max_concurrent, waited_ms: waited.elapsed().as_millis() as u64 })
    }

    /// Gives up a place: to the first waiter if there is one, else back to the pool.
    fn release(&self, job_id: Option<&str>) {
        let mut table = self.inner.table.lock().expect("job table lock");
        if let Some(job_id) = job_id {
            table.jobs.remove(job_id);
        }
        // The waiter's channel is never full or closed while it is in the queue (it removes
        // itself under this lock before dropping the receiver), so this hands the place over.
        match table.waiting.pop_front() {
            Some(waiter) => {
                let _ = waiter.granted.try_send(());
            }
            None => table.active -= 1,
        }
    }

    /// Requests waiting in the queue for a place.
    pub(crate) fn queued(&self) -> usize {
        self.inner.table.lock().expect("job table lock").waiting.len()
    }

    /// Asks a running job to stop; false if there is no such job.
    pub(crate) fn cancel(&self, job_id: &str) -> bool {
        self.stop(job_id, Stop::Cancelled)
    }

    /// Asks a running job to stop for the caller `scope` (its starter) or the owner; false if
    /// there is no such job, or it is not theirs.
    pub(crate) fn cancel_for(&self, job_id: &str, scope: &str, owner: bool) -> bool {
        let theirs = {
            let table = self.inner.table.lock().expect("job table lock");
            table.jobs.get(job_id).is_some_and(|entry| owner || entry.info.scope == scope)
        };
        theirs && self.cancel(job_id)
    }

    /// Stops a running job for `reason`; false if there is no such job.
    pub(crate) fn stop(&self, job_id: &str, reason: Stop) -> bool {
        let table = self.inner.table.lock().expect("job table lock");
        match table.jobs.get(job_id) {
            Some(entry) => {
                let _ = entry.cancel.try_send(reason); // full: already asked
                true
            }
            None => false,
        }
    }

    /// The running jobs, oldest first.
    pub(crate) fn jobs(&self) -> Vec<JobInfo> {
        let table = self.inner.table.lock().expect("job table lock");
        let mut jobs: Vec<JobInfo> = table.jobs.values().map(|entry| entry.info.clone()).collect();
        jobs.sort_by(|a, b| a.started_at.cmp(&b.started_at).then_with(|| a.job_id.cmp(&b.job_id)));
        jobs
    }

    /// (running jobs, jobs started since the daemon started).
    pub(crate) fn counts(&self) -> (usize, u64) {
        let running = self.inner.table.lock().expect("job table lock").jobs.len();
        (running, self.inner.total.load(Ordering::Relaxed))
    }

    /// SIGKILLs every running job's process group (the daemon is exiting).
    pub(crate) fn kill_all(&self) {
        let table = self.inner.table.lock().expect("job table lock");
        for entry in table.jobs.values() {
            process::signal_group(entry.info.pid, libc::SIGKILL);
        }
    }
}

/// A reserved place under the concurrency cap, returned if the spawn fails.
struct Slot<'a> {
    executor: &'a Executor,
    kept: bool,
}

impl Slot<'_> {
    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.executor.release(None);
        }
    }
}

/// A request's place in the queue while it waits.
struct Queued<'a> {
    executor: &'a Executor,
    ticket: u64,
    /// The place was taken (it belongs to a `Slot` now).
    done: bool,
}

impl Queued<'_> {
    /// Whether the place was handed over (the waiter is no longer in the queue); if not, takes
    /// the waiter out so no place goes to it later.
    fn granted_meanwhile(&mut self) -> bool {
        let mut table = self.executor.inner.table.lock().expect("job table lock");
        match table.waiting.iter().position(|w| w.ticket == self.ticket) {
            Some(at) => {
                table.waiting.remove(at);
                self.done = true; // nothing to give back
                false
            }
            None => true,
        }
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if self.granted_meanwhile() {
            // A place was handed to us, and nobody will use it.
            self.executor.release(None);
        }
    }
}

/// Loader variables let a caller inject code into every program run (weakness D5).
fn is_dangerous_env(name: &str) -> bool {
    name.starts_with("LD_") || name.starts_with("DYLD_")
}

/// An idempotency key: 1 to [`MAX_KEY_BYTES`] visible ASCII characters.
fn check_key(key: &str) -> Result<(), ExecError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ExecError::Invalid(format!(
            "header 'Idempotency-Key' must be 1 to {MAX_KEY_BYTES} visible ASCII characters"
        )));
    }
    Ok(())
}

/// What makes two requests the same request: everything that decides what runs.
fn digest(spec: &Spec) -> [u8; 32] {
    use sha2::Digest;
    let timeout = spec.timeout.map(|timeout| timeout.as_millis());
    let described = serde_json::to_vec(&(&spec.command, &spec.args, &spec.cwd, &spec.env, timeout))
        .expect("strings and maps serialise");
    sha2::Sha256::digest(&described).into()
}

/// Output into a job's log.
struct LogSink {
    log: Arc<JobLog>,
}

impl Sink for LogSink {
    fn output(&mut self, pipe: Pipe, text: String) -> impl Future<Output = Result<(), Gone>> + Send {
        let log = self.log.clone();
        async move {
            log.push(pipe, text, crate::clock::now_ms()).await;
            Ok(())
        }
    }
}

fn validate(spec: &Spec) -> Result<(), ExecError> {
    let invalid = |message: String| Err(ExecError::Invalid(message));
    if spec.command.is_empty() {
        return invalid("field 'command' must not be empty".into());
    }
    if spec.command.contains('\0') {
        return invalid("field 'command' must not contain NUL".into());
    }
    if let Some(i) = spec.args.iter().position(|arg| arg.contains('\0')) {
        return invalid(format!("field 'args[{i}]' must not contain NUL"));
    }
    if spec.cwd.as_deref().is_some_and(|cwd| cwd.is_empty() || cwd.contains('\0')) {
        return invalid("field 'cwd' must be a non-empty path without NUL".into());
    }
    // A relative directory would be resolved against the daemon's own, which the caller cannot
    // know or rely on.
    if let Some(cwd) = spec.cwd.as_deref().filter(|cwd| !std::path::Path::new(cwd).is_absolute()) {
        return invalid(format!("field 'cwd' must be an absolute path, not '{cwd}'"));
    }
    for (name, value) in &spec.env {
        if name.is_empty() || name.contains(['=', '\0']) || value.contains('\0') {
            return invalid(format!(
                "field 'env.{name}': names must be non-empty without '=' or NUL, values without NUL"
            ));
        }
        if is_dangerous_env(name) {
            return invalid(format!(
                "field 'env.{name}': loader variables (LD_*, DYLD_*) cannot be set through a remote request"
            ));
        }
    }
    Ok(())
}

/// A started job. Dropping it before [`Job::run`] finished stops its process group.
pub(crate) struct Job {
    id: String,
    pgid: u32,
    child: Child,
    stdout: ChildStdout,
    stderr: ChildStderr,
    cancelled: Receiver<Stop>,
    started: Instant,
    /// `None`: the timeout is too large to matter.
    deadline: Option<Instant>,
    cap: u64,
    finished: bool,
    executor: Executor,
}

/// One thing the run loop waits for.
enum Event {
    Read(Pipe, std::io::Result<usize>),
    Deadline,
    Cancel(Stop),
    Kill,
}

/// One pipe of a running job: its reader, decoder and cap.
struct PipeState {
    open: bool,
    buf: Vec<u8>,
    cap: Cap,
    decoder: Utf8Decoder,
}

impl PipeState {
    fn new(cap: u64) -> PipeState {
        PipeState { open: true, buf: vec![0; READ_CHUNK], cap: Cap::new(cap), decoder: Utf8Decoder::default() }
    }

    /// The text to pass on for a read of `n` bytes (0 = end of stream).
    fn text(&mut self, n: usize) -> String {
        if n == 0 {
            self.open = false;
            return if self.cap.truncated() { String::new() } else { self.decoder.finish() };
        }
        let admitted = self.cap.admit(&self.buf[..n]);
        if admitted.is_empty() {
            String::new()
        } else {
            self.decoder.push(admitted)
        }
    }
}

impl Job {
    /// Runs the job to its end, passing output to `sink`.
    pub(crate) async fn run(mut self, sink: &mut impl Sink) -> Outcome {
        let mut out = PipeState::new(self.cap);
        let mut err = PipeState::new(self.cap);
        let mut stopped: Option<Stop> = None;
        let mut kill_at: Option<Instant> = None;
        let mut sink_gone = false;
        while out.open || err.open {
            let may_stop = stopped.is_none();
            let event = match self.next_event(&mut out, &mut err, may_stop, kill_at).await {
                Event::Read(pipe, result) => {
                    let state = if pipe == Pipe::Stdout { &mut out } else { &mut err };
                    let text = state.text(*result.as_ref().unwrap_or(&0));
                    if text.is_empty() || sink_gone {
                        continue;
                    }
                    // The sink may make the job wait (a slow reader); stops apply meanwhile. A
                    // piece of output cut off by a stop is dropped with the job.
                    let stops = stop_events(
                        may_stop.then_some(self.deadline).flatten(),
                        may_stop.then_some(&self.cancelled),
                        kill_at,
                    );
                    match future::or(async { Ok(sink.output(pipe, text).await) }, async { Err(stops.await) }).await {
                        Ok(Ok(())) => continue,
                        Ok(Err(Gone)) => {
                            sink_gone = true;
                            Event::Cancel(Stop::ReceiverGone)
                        }
                        Err(event) => event,
                    }
                }
                event => event,
            };
            let reason = match event {
                Event::Read(..) => None,
                Event::Deadline => Some(Stop::Timeout),
                Event::Cancel(reason) => Some(reason),
                Event::Kill => {
                    process::signal_group(self.pgid, libc::SIGKILL);
                    kill_at = None;
                    None
                }
            };
            if let (Some(reason), None) = (reason, stopped) {
                stopped = Some(reason);
                kill_at = Some(self.terminate());
            }
        }
        let status = self.wait_exit(&mut stopped, &mut kill_at).await;
        self.finished = true;
        if let Some(kill_at) = kill_at {
            escalate_later(self.pgid, kill_at);
        }
        Outcome {
            exit_code: status.as_ref().and_then(|s| s.code()),
            signal: status.as_ref().and_then(|s| s.signal()),
            stopped,
            duration: self.started.elapsed(),
            stdout_truncated: out.cap.truncated(),
            stderr_truncated: err.cap.truncated(),
        }
    }

    /// Waits for whichever comes first: output on an open pipe, the deadline, a cancel, the
    /// SIGKILL escalation.
    async fn next_event(
        &mut self,
        out: &mut PipeState,
        err: &mut PipeState,
        may_stop: bool,
        kill_at: Option<Instant>,
    ) -> Event {
        let (stdout, stderr, cancelled) = (&mut self.stdout, &mut self.stderr, &self.cancelled);
        let read_out = async {
            if !out.open {
                return future::pending().await;
            }
            Event::Read(Pipe::Stdout, stdout.read(&mut out.buf).await)
        };
        let read_err = async {
            if !err.open {
                return future::pending().await;
            }
            Event::Read(Pipe::Stderr, stderr.read(&mut err.buf).await)
        };
        let stops = stop_events(may_stop.then_some(self.deadline).flatten(), may_stop.then_some(cancelled), kill_at);
        future::or(future::or(read_out, read_err), stops).await
    }

    /// Waits for the process to exit, still honouring the deadline, cancels and escalation
    /// (a program may close its output and keep running).
    async fn wait_exit(
        &mut self,
        stopped: &mut Option<Stop>,
        kill_at: &mut Option<Instant>,
    ) -> Option<std::process::ExitStatus> {
        loop {
            let may_stop = stopped.is_none();
            let (child, cancelled) = (&mut self.child, &self.cancelled);
            let stops =
                stop_events(may_stop.then_some(self.deadline).flatten(), may_stop.then_some(cancelled), *kill_at);
            let exited = async { Ok::<_, Event>(child.status().await) };
            match future::or(exited, async { Err(stops.await) }).await {
                Ok(status) => return status.ok(),
                Err(Event::Kill) => {
                    process::signal_group(self.pgid, libc::SIGKILL);
                    *kill_at = None;
                }
                Err(Event::Deadline) => {
                    *stopped = Some(Stop::Timeout);
                    *kill_at = Some(self.terminate());
                }
                Err(Event::Cancel(reason)) => {
                    *stopped = Some(reason);
                    *kill_at = Some(self.terminate());
                }
                Err(Event::Read(..)) => unreachable!("stop events are not reads"),
            }
        }
    }

    /// SIGTERM to the group; returns when SIGKILL is due.
    fn terminate(&self) -> Instant {
        process::signal_group(self.pgid, libc::SIGTERM);
        Instant::now() + KILL_GRACE
    }
}

/// The deadline, a cancel request and the SIGKILL escalation, whichever is enabled and first.
async fn stop_events(deadline: Option<Instant>, cancelled: Option<&Receiver<Stop>>, kill_at: Option<Instant>) -> Event {
    let at = |when: Option<Instant>| async move {
        match when {
            Some(when) => {
                Timer::at(when).await;
            }
            None => future::pending::<()>().await,
        }
    };
    let deadline = async {
        at(deadline).await;
        Event::Deadline
    };
    let cancel = async {
        match cancelled {
            Some(receiver) => match receiver.recv().await {
                Ok(reason) => Event::Cancel(reason),
                Err(_) => future::pending().await,
            },
            _ => future::pending().await,
        }
    };
    let kill = async {
        at(kill_at).await;
        Event::Kill
    };
    future::or(kill, future::or(deadline, cancel)).await
}

/// After the job's own process is gone, other members of its group may still be handling
/// SIGTERM: SIGKILL them when the grace period ends. (The group id cannot be reused while any
/// member lives, so this cannot hit an unrelated group unless the group vanished meanwhile and
/// the PID wrapped around within the grace period.)
fn escalate_later(pgid: u32, kill_at: Instant) {
    if !process::signal_group(pgid, 0) {
        return;
    }
    smol::spawn(async move {
        Timer::at(kill_at).await;
        process::signal_group(pgid, libc::SIGKILL);
    })
    .detach();
}

impl Drop for Job {
    fn drop(&mut self) {
        if !self.finished {
            // Dropped while running: the receiver of its output is gone.
            let kill_at = self.terminate();
            escalate_later(self.pgid, kill_at);
        }
        self.executor.release(Some(&self.id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(command: &str) -> Spec {
        Spec { command: command.into(), from_node_id: "unknown".into(), ..Spec::default() }
    }

    #[test]
    fn requests_are_validated_field_by_field() {
        let message = |spec: Spec| match validate(&spec) {
            Err(ExecError::Invalid(message)) => message,
            other => panic!("{other:?}"),
        };
        assert!(message(spec("")).contains("'command'"));
        assert!(message(Spec { args: vec!["ok".into(), "a\0".into()], ..spec("ls") }).contains("'args[1]'"));
        assert!(message(Spec { cwd: Some(String::new()), ..spec("ls") }).contains("'cwd'"));
        for name in ["LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "DYLD_INSERT_LIBRARIES"] {
            let env = BTreeMap::from([(name.to_string(), "/tmp/x.so".to_string())]);
            assert!(message(Spec { env, ..spec("ls") }).contains(name));
        }
        let env = BTreeMap::from([("A=B".to_string(), "x".to_string())]);
        assert!(message(Spec { env, ..spec("ls") }).contains("env.A=B"));
        let env = BTreeMap::from([("OLD_PATH".to_string(), "x".to_string()), ("PATH".to_string(), "/bin".to_string())]);
        assert!(validate(&Spec { env, ..spec("ls") }).is_ok());
    }

    #[test]
    fn the_shell_code_of_a_signal_death_is_128_plus_the_signal() {
        let outcome = Outcome {
            exit_code: None,
            signal: Some(15),
            stopped: Some(Stop::Timeout),
            duration: Duration::ZERO,
            stdout_truncated: false,
            stderr_truncated: false,
        };
        assert_eq!(outcome.shell_code(), 143);
        assert_eq!(outcome.signal_name().as_deref(), Some("SIGTERM"));
        assert_eq!(Outcome { exit_code: Some(3), signal: None, ..outcome }.shell_code(), 3);
    }
}
