//! `/execute`, `/execute/stream`, `/execute/jobs` and `DELETE /execute/:jobId` (§2.5): thin
//! handlers over the one execution service, `exec::Executor`, so both run endpoints apply the
//! same policy, cap, timeout and output limits.

use std::time::Duration;

use serde_json::json;
use smol::channel::Sender;
use tide::http::Method;
use tide::Request;

use super::system::json_response;
use super::Mount;
use crate::daemon::body;
use crate::daemon::error::{ApiError, ErrorCode};
use crate::daemon::guard::Access;
use crate::daemon::rate_limit::Category;
use crate::daemon::sse;
use crate::daemon::state::State;
use crate::exec::api::{CancelResult, ExecRequest, ExecResult, JobEntry, JobList, StreamEvent};
use crate::exec::{ExecError, Gone, Job, Outcome, Pipe, Sink, Spec, Stop};

pub fn mount(m: &mut Mount<'_>) {
    let limit = Some(Category::Execute);
    m.route(Method::Post, "/api/v1/execute", Access::DataPlane, limit, post_execute)
        .route(Method::Post, "/api/v1/execute/stream", Access::DataPlane, limit, post_execute_stream)
        .route(Method::Get, "/api/v1/execute/jobs", Access::DataPlane, limit, get_jobs)
        .route(Method::Delete, "/api/v1/execute/:jobId", Access::DataPlane, limit, delete_job);
}

async fn post_execute(mut req: Request<State>) -> tide::Result {
    let spec = parse_spec(&mut req, false).await?;
    let job = req.state().executor.start(spec).await.map_err(api_error)?;
    let job_id = job.id().to_string();
    let mut collected = Collected::default();
    let outcome = job.run(&mut collected).await;
    json_response(&ExecResult {
        job_id,
        exit_code: outcome.exit_code,
        stdout: collected.stdout,
        stderr: collected.stderr,
        duration: outcome.duration.as_millis() as u64,
        killed: outcome.signal.is_some(),
        signal: outcome.signal_name(),
        timed_out: outcome.stopped == Some(Stop::Timeout),
        cancelled: outcome.stopped == Some(Stop::Cancelled),
        truncated: outcome.stdout_truncated || outcome.stderr_truncated,
        stdout_truncated: outcome.stdout_truncated,
        stderr_truncated: outcome.stderr_truncated,
    })
}

async fn post_execute_stream(mut req: Request<State>) -> tide::Result {
    let spec = parse_spec(&mut req, true).await?;
    let job = req.state().executor.start(spec).await.map_err(api_error)?;
    let job_id = job.id().to_string();
    // A few events in flight: a slow client slows the job down instead of filling memory.
    let (events, receiver) = smol::channel::bounded(16);
    let producer = smol::spawn(stream_job(job, events));
    let mut res = sse::response(receiver, producer);
    res.insert_header("X-Loopsy-Job-Id", job_id);
    Ok(res)
}

async fn get_jobs(req: Request<State>) -> tide::Result {
    let jobs = req.state().executor.jobs().into_iter().map(|job| JobEntry {
        job_id: job.job_id,
        command: job.command,
        args: job.args,
        started_at: job.started_at,
        from_node_id: job.from_node_id,
        pid: job.pid,
        streamed: job.streamed,
    });
    json_response(&JobList { jobs: jobs.collect(), queued: Some(req.state().executor.queued()) })
}

async fn delete_job(req: Request<State>) -> tide::Result {
    let job_id = body::param(&req, "jobId")?;
    if !req.state().executor.cancel(&job_id) {
        return Err(ApiError::new(ErrorCode::ExecJobNotFound, format!("Job {job_id} not found")).into());
    }
    json_response(&CancelResult { success: true, job_id })
}

async fn parse_spec(req: &mut Request<State>, streamed: bool) -> Result<Spec, ApiError> {
    let request: ExecRequest = body::json(req).await?;
    let timeout = match request.timeout {
        None => None,
        Some(ms) if ms.is_finite() && ms > 0.0 => {
            Some(Duration::try_from_secs_f64(ms / 1000.0).unwrap_or(Duration::MAX))
        }
        Some(_) => return Err(ApiError::bad_request("field 'timeout' must be a positive number of milliseconds")),
    };
    let from_node_id = req
        .header("X-Loopsy-Node-Id")
        .map(|values| values.last().as_str().to_string())
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| "unknown".into());
    Ok(Spec {
        command: request.command,
        args: request.args.unwrap_or_default(),
        cwd: request.cwd,
        env: request.env.unwrap_or_default(),
        timeout,
        from_node_id,
        streamed,
    })
}

/// The one mapping of execution failures to HTTP errors.
fn api_error(err: ExecError) -> ApiError {
    match err {
        ExecError::Invalid(message) => ApiError::bad_request(message),
        ExecError::Refused(refusal) => ApiError::new(ErrorCode::ExecCommandDenied, refusal.to_string()),
        // 1.0.21's code with 429: a client may come back after `Retry-After`.
        busy @ (ExecError::Busy { .. } | ExecError::QueueTimeout { .. }) => {
            ApiError::new(ErrorCode::ExecMaxConcurrent, busy.to_string()).with_retry_after(1)
        }
        ExecError::Spawn(spawn) => ApiError::new(ErrorCode::ExecFailed, format!("Execution failed: {spawn}")),
    }
}

/// `/execute`: output collected in memory (bounded by the executor's cap).
#[derive(Default)]
struct Collected {
    stdout: String,
    stderr: String,
}

impl Sink for Collected {
    fn output(&mut self, pipe: Pipe, text: String) -> impl std::future::Future<Output = Result<(), Gone>> + Send {
        match pipe {
            Pipe::Stdout => self.stdout.push_str(&text),
            Pipe::Stderr => self.stderr.push_str(&text),
        }
        std::future::ready(Ok(()))
    }
}

/// `/execute/stream`: each piece of output becomes a 1.0.21 event.
struct Streamed {
    events: Sender<Vec<u8>>,
    job_id: String,
}

impl Sink for Streamed {
    fn output(&mut self, pipe: Pipe, text: String) -> impl std::future::Future<Output = Result<(), Gone>> + Send {
        let kind = match pipe {
            Pipe::Stdout => "stdout",
            Pipe::Stderr => "stderr",
        };
        let event = sse::data_event(&StreamEvent::text(kind, text, &self.job_id, crate::clock::now_ms()));
        let events = self.events.clone();
        async move { events.send(event).await.map_err(|_| Gone) }
    }
}

async fn stream_job(job: Job, events: Sender<Vec<u8>>) {
    let mut sink = Streamed { events: events.clone(), job_id: job.id().to_string() };
    let outcome = job.run(&mut sink).await;
    let _ = events.send(sse::data_event(&exit_event(&outcome, &sink.job_id))).await;
}

fn exit_event(outcome: &Outcome, job_id: &str) -> StreamEvent {
    StreamEvent {
        exit_code: Some(outcome.exit_code),
        signal: Some(outcome.signal_name()),
        killed: Some(outcome.signal.is_some()),
        timed_out: Some(outcome.stopped == Some(Stop::Timeout)),
        truncated: Some(outcome.stdout_truncated || outcome.stderr_truncated),
        duration: Some(outcome.duration.as_millis() as u64),
        ..StreamEvent::text("exit", outcome.shell_code().to_string(), job_id, crate::clock::now_ms())
    }
}

pub fn openapi() -> serde_json::Value {
    let schema = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    let json_body = |name: &str| json!({"required": true, "content": {"application/json": {"schema": schema(name)}}});
    let ok = |name: &str, description: &str| json!({"200": {"description": description, "content": {"application/json": {"schema": schema(name)}}}});
    let policy = "The deny/allow list (`execution.denylist`, `execution.allowlist`) is checked on the base name of every program the request would start: it sees through shells (`sh -c`, `bash -lc`, split at `;`, `&&`, `||`, `|`, newlines and command substitutions), wrappers (`env`, `nohup`, `sudo`, `xargs`, `timeout`, `nice`, `exec`, `command`, `busybox`, `find -exec`) and paths, and ignores case and `.exe`; an entry also covers its family (`mkfs` covers `mkfs.ext4`, `mke2fs` and `mkswap`; `shutdown` covers `poweroff`, `halt` and `systemctl poweroff`). It is a guard-rail against mistakes, not a sandbox: interpreters (`python -c`), script files and shell expansions get past it. Only an OS-level boundary (another user, a container) confines what a caller can run.";
    let semantics = "No shell is involved: `command` is the program, `args` its arguments. stdin is /dev/null; stdout and stderr are each capped at `execution.maxOutputBytes` (the rest is read and dropped, `truncated` reports it); `execution.defaultTimeout` applies without `timeout`, and `timeout` may not exceed `execution.maxTimeout`. The process inherits the daemon's environment without its `LOOPSY_*` variables and without any variable holding one of the daemon's keys; `env` is merged over that. On timeout or cancel the job's whole process group gets SIGTERM, then SIGKILL 2 s later. While `execution.maxConcurrent` jobs run (both endpoints count), a request waits in a first-come-first-served queue of at most `execution.maxQueued` requests (default 64) for at most `execution.queueTimeout` ms (default 30 s); past the queue, or after that wait, the answer is 429 code 3003 with `Retry-After` (1.0.21 answered 400 at once). Errors: 400 code 3001 (denied), 429 code 3003 (too many jobs), 400 code 3004 (bad `cwd`, program not found), 9003 (invalid body, a relative `cwd`, a `timeout` over `execution.maxTimeout`, loader variables such as LD_PRELOAD in `env`).";
    json!({
        "paths": {
            "/api/v1/execute": {"post": {
                "summary": "Run a program and wait for its result", "tags": ["execute"],
                "description": format!("{semantics}\n\n{policy}"),
                "requestBody": json_body("ExecRequest"),
                "responses": ok("ExecResult", "the program ended (any exit code, or a signal)")}},
            "/api/v1/execute/stream": {"post": {
                "summary": "Run a program and stream its output as Server-Sent Events", "tags": ["execute"],
                "description": format!("Same body, checks and limits as /api/v1/execute; errors found before the start are JSON errors. Each event is `data: <StreamEvent JSON>` and a blank line; `: ping` comments come after 10 s of quiet. The stream ends after the `exit` (or `error`) event. The job id is in the `X-Loopsy-Job-Id` header; the job is listed and cancellable while it runs, and closing the connection kills its process group.\n\n{policy}"),
                "requestBody": json_body("ExecRequest"),
                "responses": {"200": {"description": "the event stream", "headers": {"X-Loopsy-Job-Id": {"schema": {"type": "string", "format": "uuid"}}},
                    "content": {"text/event-stream": {"schema": {"type": "string"}, "itemSchema": schema("StreamEvent")}}}}}},
            "/api/v1/execute/jobs": {"get": {
                "summary": "Running jobs of both endpoints", "tags": ["execute"],
                "responses": ok("JobList", "the running jobs, oldest first")}},
            "/api/v1/execute/{jobId}": {"delete": {
                "summary": "Cancel a running job: SIGTERM to its process group, SIGKILL after 2 s", "tags": ["execute"],
                "description": "Answers at once; the job's own request then ends with `killed: true` (`cancelled: true`). Unknown id: 404 code 3006.",
                "parameters": [{"name": "jobId", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {
                    "200": {"description": "the job was asked to stop", "content": {"application/json": {"schema": schema("CancelResult")}}},
                    "404": {"$ref": "#/components/responses/Error"}}}}
        },
        "schemas": {
            "ExecRequest": {"type": "object", "required": ["command"], "properties": {
                "command": {"type": "string", "minLength": 1, "description": "program name (looked up on PATH) or path"},
                "args": {"type": "array", "items": {"type": "string"}},
                "cwd": {"type": "string", "description": "working directory: an absolute path that exists"},
                "env": {"type": "object", "additionalProperties": {"type": "string"}, "description": "merged over the daemon's environment; LD_* and DYLD_* are refused"},
                "timeout": {"type": "number", "exclusiveMinimum": 0, "description": "milliseconds; default execution.defaultTimeout, at most execution.maxTimeout"},
                "stream": {"type": "boolean", "description": "ignored (1.0.21 compatibility)"}}},
            "ExecResult": {"type": "object", "required": ["jobId", "exitCode", "stdout", "stderr", "duration", "killed"], "properties": {
                "jobId": {"type": "string", "format": "uuid"},
                "exitCode": {"type": ["integer", "null"], "description": "null when a signal ended the process"},
                "stdout": {"type": "string"}, "stderr": {"type": "string"},
                "duration": {"type": "integer", "description": "milliseconds"},
                "killed": {"type": "boolean", "description": "ended by a signal"},
                "signal": {"type": ["string", "null"], "examples": ["SIGTERM"]},
                "timedOut": {"type": "boolean"}, "cancelled": {"type": "boolean"},
                "truncated": {"type": "boolean", "description": "stdout or stderr exceeded execution.maxOutputBytes"},
                "stdoutTruncated": {"type": "boolean"}, "stderrTruncated": {"type": "boolean"}}},
            "StreamEvent": {"type": "object", "required": ["type", "data", "jobId", "timestamp"], "properties": {
                "type": {"enum": ["stdout", "stderr", "exit", "error"]},
                "data": {"type": "string", "description": "output text; for exit the exit code as a string, 128+N after signal N"},
                "jobId": {"type": "string", "format": "uuid"}, "timestamp": {"type": "integer", "description": "Unix milliseconds"},
                "exitCode": {"type": ["integer", "null"], "description": "exit only"}, "signal": {"type": ["string", "null"], "description": "exit only"},
                "killed": {"type": "boolean"}, "timedOut": {"type": "boolean"}, "truncated": {"type": "boolean"}, "duration": {"type": "integer"}}},
            "JobList": {"type": "object", "required": ["jobs"], "properties": {
                "queued": {"type": "integer", "description": "requests waiting for a place under execution.maxConcurrent (not in 1.0.21)"},
                "jobs": {"type": "array", "items": {"type": "object",
                "required": ["jobId", "command", "args", "startedAt", "fromNodeId", "pid"], "properties": {
                "jobId": {"type": "string"}, "command": {"type": "string"}, "args": {"type": "array", "items": {"type": "string"}},
                "startedAt": {"type": "integer"}, "fromNodeId": {"type": "string", "description": "X-Loopsy-Node-Id of the caller, else unknown"},
                "pid": {"type": "integer"}, "streamed": {"type": "boolean"}}}}}},
            "CancelResult": {"type": "object", "required": ["success", "jobId"], "properties": {
                "success": {"const": true}, "jobId": {"type": "string"}}}
        }
    })
}
