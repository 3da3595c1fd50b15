//! `/execute`, `/execute/stream`, `/execute/jobs` and `DELETE /execute/:jobId` (§2.5): thin
//! handlers over the one execution service, `exec::Executor`, so both run endpoints apply the
//! same policy, cap, timeout and output limits.

use std::time::Duration;

use smol::channel::Sender;
use tide::http::Method;
use tide::Request;

use super::system::{json_response, json_response_made};
use super::Mount;
use crate::daemon::body;
use crate::daemon::error::{ApiError, ErrorCode};
use crate::daemon::guard::{self, Access};
use crate::daemon::rate_limit::Category;
use crate::daemon::sse;
use crate::daemon::state::State;
use crate::exec::api::{CancelResult, ExecRequest, ExecResult, JobEntry, JobList, StreamEvent};
use crate::exec::{Executor, Item, LogEvent, Numbered, Origin, Outcome, Pipe, Reader, Spec, Stop};

pub(super) fn mount(m: &mut Mount<'_>) {
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
    let started = req.state().work.executor.start(spec, origin, None).await?;
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
    // Up to `execution.maxOutputBytes` of each pipe to gather and escape.
    let size: usize = events
        .iter()
        .map(|numbered| match &*numbered.event {
            LogEvent::Output { text, .. } => text.len(),
            LogEvent::Exit { .. } => 0,
        })
        .sum();
    let job_id = started.job_id;
    json_response_made(tide::StatusCode::Ok, size <= ANSWERED_INLINE, move || collected(job_id, &events)).await
}

/// Collected answers with at most this much output are built where the request runs.
const ANSWERED_INLINE: usize = 64 * 1024;

/// The answer of `POST /execute` from the whole log of job `job_id`.
fn collected(job_id: String, events: &[Numbered]) -> ExecResult {
    let (mut stdout, mut stderr, mut outcome) = (String::new(), String::new(), None);
    for numbered in events {
        match &*numbered.event {
            LogEvent::Output { pipe: Pipe::Stdout, text, .. } => stdout.push_str(text),
            LogEvent::Output { pipe: Pipe::Stderr, text, .. } => stderr.push_str(text),
            LogEvent::Exit { outcome: ended, .. } => outcome = Some(ended.clone()),
        }
    }
    let outcome: Outcome = outcome.expect("a collected log ends with the exit");
    ExecResult {
        job_id,
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
    }
}

async fn post_execute_stream(mut req: Request<State>) -> tide::Result {
    let spec = parse_spec(&mut req, true).await?;
    let origin = origin(&req)?;
    let keyed = origin.key.is_some();
    // A retry with the same key may say where it stopped reading.
    let from = last_event_id(&req)?.map_or(1, |last| last + 1);
    let executor = req.state().work.executor.clone();
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
        .work
        .executor
        .reattach(&job_id, &scope, owner, from)
        .ok_or_else(|| ApiError::new(ErrorCode::ExecJobNotFound, format!("Job {job_id} not found")))?;
    Ok(stream_response(reader, job_id, true, None))
}

async fn get_jobs(req: Request<State>) -> tide::Result {
    // A peer sees the jobs it started; the owner sees all.
    let (scope, owner) = scope(&req)?;
    let jobs =
        req.state().work.executor.jobs().into_iter().filter(|job| owner || job.scope == scope).map(|job| JobEntry {
            job_id: job.job_id,
            command: job.command,
            args: job.args,
            started_at: job.started_at,
            from_node_id: job.from_node_id,
            pid: job.pid,
            streamed: job.streamed,
        });
    json_response(&JobList { jobs: jobs.collect(), queued: Some(req.state().work.executor.queued()) })
}

async fn delete_job(req: Request<State>) -> tide::Result {
    let job_id = body::param(&req, "jobId")?;
    // Another caller's job is answered as if it did not exist.
    let (scope, owner) = scope(&req)?;
    if !req.state().work.executor.cancel_for(&job_id, &scope, owner) {
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
