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
use crate::daemon::guard::{self, Access};
use crate::daemon::rate_limit::Category;
use crate::daemon::sse;
use crate::daemon::state::State;
use crate::exec::api::{CancelResult, ExecRequest, ExecResult, JobEntry, JobList, StreamEvent};
use crate::exec::{Executor, Item, LogEvent, Numbered, Origin, Outcome, Pipe, Reader, Spec, Stop};

pub fn mount(m: &mut Mount<'_>) {
    let limit = Some(Category::Execute);
    m.route(Method::Post, "/api/v1/execute", Access::DataPlane, limit, post_execute)
        .route(Method::Post, "/api/v1/execute/stream", Access::DataPlane, limit, post_execute_stream)
        .route(Method::Get, "/api/v1/execute/jobs", Access::DataPlane, limit, get_jobs)
        .route(Method::Get, "/api/v1/execute/jobs/:jobId/stream", Access::DataPlane, limit, get_job_stream)
        .route(Method::Delete, "/api/v1/execute/:jobId", Access::DataPlane, limit, delete_job);
}

/// Heartbeats of a stream a client means to reattach to (it sent an idempotency key, or is
/// reattaching): frequent, so a stalled connection is noticed within seconds. Announced in
/// `X-Loopsy-Heartbeat` (milliseconds).
const REATTACH_HEARTBEAT: Duration = Duration::from_millis(500);

async fn post_execute(mut req: Request<State>) -> tide::Result {
    let spec = parse_spec(&mut req, false).await?;
    let origin = origin(&req)?;
    let started = req.state().executor.start(spec, origin, None).await?;
    let (events, dropped) = started.log.collect().await;
    if dropped {
        // Only a retry can get here: a job started by /execute keeps all of its output.
        return Err(ApiError::new(
            ErrorCode::ExecJobExpired,
            format!(
                "the output of job {} is no longer complete; read what is kept with GET /api/v1/execute/jobs/{}/stream",
                started.job_id, started.job_id
            ),
        )
        .into());
    }
    let (mut stdout, mut stderr, mut outcome) = (String::new(), String::new(), None);
    for numbered in &events {
        match &*numbered.event {
            LogEvent::Output { pipe: Pipe::Stdout, text, .. } => stdout.push_str(text),
            LogEvent::Output { pipe: Pipe::Stderr, text, .. } => stderr.push_str(text),
            LogEvent::Exit { outcome: ended, .. } => outcome = Some(ended.clone()),
        }
    }
    let outcome = outcome.expect("a collected log ends with the exit");
    json_response(&ExecResult {
        job_id: started.job_id,
        exit_code: outcome.exit_code,
        stdout,
        stderr,
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
    let origin = origin(&req)?;
    let keyed = origin.key.is_some();
    // A retry with the same key may say where it stopped reading.
    let from = last_event_id(&req)?.map_or(1, |last| last + 1);
    let executor = req.state().executor.clone();
    let started = executor.start(spec, origin, Some(from)).await?;
    let reader = started.reader.expect("attached at start");
    // Without a key nobody can come back for the job: when its client goes, it goes (1.0.21).
    let on_drop = (!keyed && !started.existing).then(|| StopOnDrop { executor, job_id: started.job_id.clone() });
    Ok(stream_response(reader, started.job_id, keyed, on_drop))
}

async fn get_job_stream(req: Request<State>) -> tide::Result {
    let job_id = body::param(&req, "jobId")?;
    let from = match body::query(&req, "from") {
        Some(text) => text.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("query parameter 'from' must be an event number (0 or more), got '{text}'"))
        })?,
        None => last_event_id(&req)?.map_or(1, |last| last + 1),
    };
    let (scope, owner) = scope(&req)?;
    // Another caller's job is answered as if it did not exist.
    let reader = req
        .state()
        .executor
        .reattach(&job_id, &scope, owner, from)
        .ok_or_else(|| ApiError::new(ErrorCode::ExecJobNotFound, format!("Job {job_id} not found")))?;
    Ok(stream_response(reader, job_id, true, None))
}

async fn get_jobs(req: Request<State>) -> tide::Result {
    // A peer sees the jobs it started; the owner sees all.
    let (scope, owner) = scope(&req)?;
    let jobs = req.state().executor.jobs().into_iter().filter(|job| owner || job.scope == scope).map(|job| JobEntry {
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
    // Another caller's job is answered as if it did not exist.
    let (scope, owner) = scope(&req)?;
    if !req.state().executor.cancel_for(&job_id, &scope, owner) {
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
    let (scope, _) = scope(req)?;
    Ok(Spec {
        command: request.command,
        args: request.args.unwrap_or_default(),
        cwd: request.cwd,
        env: request.env.unwrap_or_default(),
        timeout,
        from_node_id,
        scope,
        streamed,
    })
}

/// Whose idempotency keys and jobs a request reaches, and whether that is the owner's: its own
/// key from loopback and the dashboard are one owner; a peer is known by its key's name
/// (`Caller::label`), so one peer can neither replay nor read another's jobs.
fn scope(req: &Request<State>) -> Result<(String, bool), ApiError> {
    match guard::caller(req) {
        Some(caller) if caller.is_owner() => Ok(("owner".into(), true)),
        Some(caller) => Ok((caller.label(), false)),
        None => Err(ApiError::internal("an execute route without a caller")),
    }
}

/// The caller's scope and the `Idempotency-Key` of a request.
fn origin(req: &Request<State>) -> Result<Origin, ApiError> {
    let (caller, _) = scope(req)?;
    let key = match req.header("Idempotency-Key").map(|values| values.iter().collect::<Vec<_>>()) {
        None => None,
        Some(values) if values.len() == 1 => Some(values[0].as_str().trim().to_string()),
        Some(_) => return Err(ApiError::bad_request("send one 'Idempotency-Key' header, not several")),
    };
    Ok(Origin { caller, key })
}

/// `Last-Event-ID`, the number of the last event a client read.
fn last_event_id(req: &Request<State>) -> Result<Option<u64>, ApiError> {
    match req.header("Last-Event-ID").map(|values| values.last().as_str().trim().to_string()) {
        None => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| {
            ApiError::bad_request(format!("header 'Last-Event-ID' must be an event number, got '{text}'"))
        }),
    }
}

/// Stops the job of a stream without a key when its client goes away before the end.
struct StopOnDrop {
    executor: Executor,
    job_id: String,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        // A job that has ended is no longer in the table: then this does nothing.
        self.executor.stop(&self.job_id, Stop::ReceiverGone);
    }
}

/// An event stream of `reader`: each event numbered (`id:` and `seq`), as 1.0.21's JSON.
fn stream_response(reader: Reader, job_id: String, reattachable: bool, on_drop: Option<StopOnDrop>) -> tide::Response {
    // A few events in flight: a slow client slows the job down (up to the log's stall limit)
    // instead of filling memory.
    let (events, receiver) = smol::channel::bounded(16);
    let producer = smol::spawn(pump(reader, job_id.clone(), events, on_drop));
    let heartbeat = if reattachable { REATTACH_HEARTBEAT } else { sse::HEARTBEAT };
    let mut res = sse::response_every(receiver, producer, heartbeat);
    res.insert_header("X-Loopsy-Job-Id", job_id);
    if reattachable {
        res.insert_header("X-Loopsy-Heartbeat", heartbeat.as_millis().to_string());
    }
    res
}

/// Reads the job's log into the stream until its exit event has gone out.
/// `_stop` lives as long as the stream: dropped early, it stops the job; dropped after the exit
/// event, it finds the job gone from the table and does nothing.
async fn pump(mut reader: Reader, job_id: String, events: Sender<Vec<u8>>, _stop: Option<StopOnDrop>) {
    while let Some(item) = reader.next().await {
        let (seq, event) = match item {
            Item::Event(numbered) => (numbered.seq, stream_event(&numbered, &job_id)),
            Item::Gap { from, to } => {
                let data = format!("events {from} to {} are no longer kept", to - 1);
                let event = StreamEvent {
                    seq: Some(from),
                    missed: Some(to - from),
                    ..StreamEvent::text("gap", data, &job_id, crate::clock::now_ms())
                };
                (to - 1, event)
            }
        };
        if events.send(sse::numbered_event(seq, &event)).await.is_err() {
            return;
        }
    }
}

fn stream_event(numbered: &Numbered, job_id: &str) -> StreamEvent {
    let mut event = match &*numbered.event {
        LogEvent::Output { pipe, text, at } => {
            let kind = match pipe {
                Pipe::Stdout => "stdout",
                Pipe::Stderr => "stderr",
            };
            StreamEvent::text(kind, text.clone(), job_id, *at)
        }
        LogEvent::Exit { outcome, at } => exit_event(outcome, job_id, *at),
    };
    event.seq = Some(numbered.seq);
    event
}

fn exit_event(outcome: &Outcome, job_id: &str, at: u64) -> StreamEvent {
    StreamEvent {
        exit_code: Some(outcome.exit_code),
        signal: Some(outcome.signal_name()),
        killed: Some(outcome.signal.is_some()),
        timed_out: Some(outcome.stopped == Some(Stop::Timeout)),
        cancelled: Some(outcome.stopped == Some(Stop::Cancelled)),
        truncated: Some(outcome.stdout_truncated || outcome.stderr_truncated),
        duration: Some(outcome.duration.as_millis() as u64),
        ..StreamEvent::text("exit", outcome.shell_code().to_string(), job_id, at)
    }
}

pub fn openapi() -> serde_json::Value {
    let schema = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    let json_body = |name: &str| json!({"required": true, "content": {"application/json": {"schema": schema(name)}}});
    let ok = |name: &str, description: &str| json!({"200": {"description": description, "content": {"application/json": {"schema": schema(name)}}}});
    let policy = "The deny/allow list (`execution.denylist`, `execution.allowlist`) is checked on the base name of every program the request would start: it sees through shells (`sh -c`, `bash -lc`, split at `;`, `&&`, `||`, `|`, newlines and command substitutions), wrappers (`env`, `nohup`, `sudo`, `xargs`, `timeout`, `nice`, `exec`, `command`, `busybox`, `find -exec`) and paths, and ignores case and `.exe`; an entry also covers its family (`mkfs` covers `mkfs.ext4`, `mke2fs` and `mkswap`; `shutdown` covers `poweroff`, `halt` and `systemctl poweroff`). It is a guard-rail against mistakes, not a sandbox: interpreters (`python -c`), script files and shell expansions get past it. Only an OS-level boundary (another user, a container) confines what a caller can run.";
    let idempotency = "An `Idempotency-Key` header (1 to 255 visible ASCII characters, per caller) makes the request safe to send again: the same key and body name the same job (running or finished, while it is kept), never a second process; the same key with another body is 422 code 3007; a key whose job is no longer kept is 410 code 3008 (with `error.details.exitCode`), the command is not run again. Such a job survives its client: read it again with `GET /api/v1/execute/jobs/{jobId}/stream` (a job nobody reads for `execution.detachedTimeout` ms is stopped). Kept: `execution.keepFinished` finished jobs for `execution.finishedTtl` ms, `execution.keepOutputTotal` bytes of output in all, and of a streamed job the last `execution.keepOutputBytes`.";
    let idempotency_header = json!({"name": "Idempotency-Key", "in": "header", "required": false, "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"}, "description": "send the request again after a dropped connection without running the command twice"});
    let semantics = "No shell is involved: `command` is the program, `args` its arguments. stdin is /dev/null; stdout and stderr are each capped at `execution.maxOutputBytes` (the rest is read and dropped, `truncated` reports it); `execution.defaultTimeout` applies without `timeout`, and `timeout` may not exceed `execution.maxTimeout`. The process inherits the daemon's environment without its `LOOPSY_*` variables and without any variable holding one of the daemon's keys; `env` is merged over that. On timeout or cancel the job's whole process group gets SIGTERM, then SIGKILL 2 s later. While `execution.maxConcurrent` jobs run (both endpoints count), a request waits in a first-come-first-served queue of at most `execution.maxQueued` requests (default 64) for at most `execution.queueTimeout` ms (default 30 s); past the queue, or after that wait, the answer is 429 code 3003 with `Retry-After` (1.0.21 answered 400 at once). Errors: 403 code 3001 (the deny/allow list refused it), 404 code 3004 (the program or `cwd` could not be used, e.g. not found), 429 code 3003 (too many jobs), 400 code 9003 (invalid body, a relative `cwd`, a `timeout` over `execution.maxTimeout`, loader variables such as LD_PRELOAD in `env`). 1.0.21 answered 3001 and 3004 with 400; its clients read only the code and message.";
    json!({
        "paths": {
            "/api/v1/execute": {"post": {
                "summary": "Run a program and wait for its result", "tags": ["execute"],
                "description": format!("{semantics}\n\n{idempotency} A retried /execute whose job kept only part of its output (it was started by /execute/stream) is 410 code 3008.\n\n{policy}"),
                "parameters": [idempotency_header.clone()],
                "requestBody": json_body("ExecRequest"),
                "responses": {
                    "200": ok("ExecResult", "the program ended (any exit code, or a signal)")["200"].clone(),
                    "403": {"$ref": "#/components/responses/Error"},
                    "404": {"$ref": "#/components/responses/Error"},
                    "410": {"$ref": "#/components/responses/Error"},
                    "422": {"$ref": "#/components/responses/Error"},
                    "429": crate::daemon::openapi::busy()}}},
            "/api/v1/execute/stream": {"post": {
                "summary": "Run a program and stream its output as Server-Sent Events", "tags": ["execute"],
                "description": format!("Same body, checks and limits as /api/v1/execute; errors found before the start are JSON errors. Each event is `id: <seq>`, `data: <StreamEvent JSON>` and a blank line (events are numbered from 1 in the job, the exit last); `: ping` comments come after 10 s of quiet (0.5 s with an Idempotency-Key, announced in `X-Loopsy-Heartbeat`). The stream ends after the `exit` (or `error`) event. The job id is in the `X-Loopsy-Job-Id` header; the job is listed and cancellable while it runs. Without an Idempotency-Key, closing the connection kills its process group (as in 1.0.21); with one, the job runs on and its client reattaches.\n\n{idempotency} A retry may send `Last-Event-ID` to resume after that event.\n\n{policy}"),
                "parameters": [idempotency_header, {"name": "Last-Event-ID", "in": "header", "required": false, "schema": {"type": "integer", "minimum": 0}, "description": "with an Idempotency-Key naming a job: the last event read; the stream resumes after it"}],
                "requestBody": json_body("ExecRequest"),
                "responses": {"200": {"description": "the event stream", "headers": {"X-Loopsy-Job-Id": {"schema": {"type": "string", "format": "uuid"}}, "X-Loopsy-Heartbeat": {"schema": {"type": "integer"}, "description": "milliseconds between heartbeats, with an Idempotency-Key"}},
                    "content": crate::daemon::openapi::event_stream(schema("StreamEvent"))},
                    "403": {"$ref": "#/components/responses/Error"},
                    "404": {"$ref": "#/components/responses/Error"},
                    "410": {"$ref": "#/components/responses/Error"},
                    "422": {"$ref": "#/components/responses/Error"},
                    "429": crate::daemon::openapi::busy()}}},
            "/api/v1/execute/jobs/{jobId}/stream": {"get": {
                "summary": "Reattach to a running or finished job's event stream, from an event number", "tags": ["execute"],
                "description": "The events of a kept job from `from` on (default: after `Last-Event-ID`, else from 1), then live ones until the exit event; the same framing as /execute/stream, heartbeats every 0.5 s (`X-Loopsy-Heartbeat`). If the events asked for are no longer kept, a `gap` event comes first (`seq` = the first missing one, `missed` = how many). Only the caller that started the job, or this node's owner, may read it; anyone else, and an unknown or evicted job, get 404 code 3006. A bad `from` is 400.",
                "parameters": [
                    {"name": "jobId", "in": "path", "required": true, "schema": {"type": "string"}},
                    {"name": "from", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 0}, "description": "the first event number wanted (1 = the beginning)"},
                    {"name": "Last-Event-ID", "in": "header", "required": false, "schema": {"type": "integer", "minimum": 0}, "description": "the last event read (without `from`)"}],
                "responses": {
                    "200": {"description": "the event stream", "headers": {"X-Loopsy-Job-Id": {"schema": {"type": "string"}}, "X-Loopsy-Heartbeat": {"schema": {"type": "integer"}}},
                        "content": crate::daemon::openapi::event_stream(schema("StreamEvent"))},
                    "400": {"$ref": "#/components/responses/Error"}, "404": {"$ref": "#/components/responses/Error"}}}},
            "/api/v1/execute/jobs": {"get": {
                "summary": "Running jobs of both endpoints", "tags": ["execute"],
                "description": "A peer sees the jobs it started; this node's owner sees all.",
                "responses": ok("JobList", "the running jobs, oldest first")}},
            "/api/v1/execute/{jobId}": {"delete": {
                "summary": "Cancel a running job: SIGTERM to its process group, SIGKILL after 2 s", "tags": ["execute"],
                "description": "Answers at once; the job's own request then ends with `killed: true` (`cancelled: true`). Only the caller that started the job, or this node's owner, may cancel it; an unknown id, and another caller's job, get 404 code 3006.",
                "parameters": [{"name": "jobId", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {
                    "200": {"description": "the job was asked to stop", "content": {"application/json": {"schema": schema("CancelResult")}}},
                    "404": {"$ref": "#/components/responses/Error"}}}}
        },
        "schemas": {
            "ExecRequest": {"type": "object", "required": ["command"], "properties": {
                "command": {"type": "string", "pattern": "^[^\\u0000]+$", "description": "program name (looked up on PATH) or path; no NUL"},
                "args": {"type": "array", "items": {"type": "string", "pattern": "^[^\\u0000]*$"}},
                "cwd": {"type": "string", "pattern": "^/[^\\u0000]*$", "description": "working directory: an absolute path that exists (404 code 3004 otherwise)"},
                "env": {"type": "object", "additionalProperties": {"type": "string", "pattern": "^[^\\u0000]*$"},
                    "propertyNames": {"pattern": "^[^=\\u0000]+$", "not": {"pattern": "^(LD_|DYLD_)"}},
                    "description": "merged over the daemon's environment; names without '=' or NUL; LD_* and DYLD_* are refused"},
                "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600000, "description": "milliseconds; default execution.defaultTimeout, at most execution.maxTimeout (3600000 unless configured otherwise)"},
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
                "type": {"enum": ["stdout", "stderr", "exit", "error", "gap"], "description": "gap: on a reattach, events no longer kept"},
                "seq": {"type": "integer", "minimum": 1, "description": "the event's number in the job (also its SSE id); for gap, the first missing one"},
                "missed": {"type": "integer", "description": "gap only: how many events are missing"},
                "cancelled": {"type": "boolean", "description": "exit only: stopped by DELETE"},
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
