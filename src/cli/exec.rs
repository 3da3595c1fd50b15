//! `loopsy exec <peer> <cmd> [args..]`: run a program on a daemon and show its output live.
//!
//! Streams through `/execute/stream` (stdout to stdout, stderr to stderr, as it arrives) and
//! exits with the remote exit code (128 + N after signal N); `--json` waits on `/execute` and
//! prints the collected result. Refusals and unreachable peers are errors (exit 2).
//!
//! Every request carries an `Idempotency-Key`, so a dropped connection loses nothing: the
//! stream is reattached (`GET /execute/jobs/{id}/stream?from=N`) and goes on after the last
//! event printed, and a retried request never starts the command twice. A stream is taken as
//! dropped when the daemon's announced heartbeat (`X-Loopsy-Heartbeat`) has been missing four
//! times. Ctrl-C cancels the remote job (a second one exits at once).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail};
use argh::FromArgs;
use futures_lite::{future, StreamExt};

use crate::exec::api::{ExecRequest, ExecResult, StreamEvent};
use crate::paths::Paths;
use crate::peer::retry::{is_rate_limited, is_transient, Backoff};
use crate::peer::sse::EventStream;
use crate::peer::{Client, ClientError, Method};
use crate::resolve;

/// How long the daemon may stay out of reach before `loopsy exec` gives up on the job.
const RECONNECT_LIMIT: Duration = Duration::from_secs(600);
/// How long one reconnection attempt waits for the daemon's answer.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// The exit code after Ctrl-C ended the command (a shell's 128 + SIGINT).
const INTERRUPTED: i32 = 130;

/// run a command on a peer and stream its output
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "exec")]
pub struct Args {
    /// milliseconds after which the remote process group is killed (default: the peer's
    /// execution.defaultTimeout)
    #[argh(option, short = 't')]
    timeout: Option<u64>,
    /// working directory on the peer
    #[argh(option)]
    cwd: Option<String>,
    /// wait for the end and print the result as JSON instead of streaming
    #[argh(switch)]
    json: bool,
    /// API key to present (default: this node's own key)
    #[argh(option, short = 'k')]
    key: Option<String>,
    /// the daemon: `local` or address[:port]
    #[argh(positional)]
    peer: String,
    /// the program and its arguments (options for exec go before <peer>)
    #[argh(positional, greedy)]
    command: Vec<String>,
}

pub(super) fn run(args: Args, paths: &Paths) -> anyhow::Result<ExitCode> {
    let config = super::load_config(paths)?;
    let target = smol::block_on(resolve::resolve(paths, &config, &args.peer, args.key.as_deref()))?;
    let Some((command, rest)) = args.command.split_first() else {
        bail!("missing the command to run: loopsy exec <peer> <cmd> [args..]");
    };
    let request = ExecRequest {
        command: command.clone(),
        args: Some(rest.to_vec()),
        cwd: args.cwd.clone(),
        timeout: args.timeout.map(|ms| ms as f64),
        ..ExecRequest::default()
    };
    let code = if args.json {
        smol::block_on(collect(&target, &request, args.timeout))?
    } else {
        smol::block_on(stream(&target, &request))?
    };
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(255)))
}

/// `--json`: one `/execute` call (sent again after a dropped connection, with the same key);
/// prints the result, returns the remote exit code.
async fn collect(target: &resolve::Target, request: &ExecRequest, timeout: Option<u64>) -> anyhow::Result<i32> {
    // The daemon bounds the run; wait at least that long (its default is 5 minutes).
    let wait = Duration::from_millis(timeout.unwrap_or(24 * 3600 * 1000)) + Duration::from_secs(30);
    let client = target.client.clone().with_timeout(wait);
    let result: ExecResult = client.post_idempotent("/api/v1/execute", request, wait + RECONNECT_LIMIT).await?;
    println!("{}", serde_json::to_string_pretty(&result)?);
    let signal_code = result.signal.as_deref().and_then(signal_number).map(|n| 128 + n);
    Ok(result.exit_code.or(signal_code).unwrap_or(if result.killed { 137 } else { 0 }))
}

/// Where a followed job stands.
#[derive(Debug, Default)]
struct Progress {
    job_id: Option<String>,
    /// The last event printed (events come numbered from 1).
    last_seq: u64,
    /// The daemon's heartbeat interval: it can be reattached to.
    heartbeat: Option<Duration>,
}

/// Streams the output; returns the remote exit code.
async fn stream(target: &resolve::Target, request: &ExecRequest) -> anyhow::Result<i32> {
    let key = crate::random::uuid_v4();
    let client = target.client.clone().with_header("Idempotency-Key", &key);
    let mut progress = Progress::default();
    let (cancel, cancelled) = smol::channel::bounded::<()>(1);
    let followed = follow(&client, target, request, &mut progress, &cancelled);
    future::or(followed, async {
        forward_interrupts(cancel).await;
        Ok(INTERRUPTED)
    })
    .await
}

/// Turns the first Ctrl-C into a request to cancel; returns at the second one (the command then
/// ends at once), never when signals cannot be caught.
async fn forward_interrupts(cancel: smol::channel::Sender<()>) {
    use async_signal::{Signal, Signals};
    if let Ok(mut signals) = Signals::new([Signal::Int]) {
        if signals.next().await.is_some() {
            let _ = cancel.send(()).await;
            if signals.next().await.is_some() {
                return;
            }
        }
    }
    future::pending().await
}

/// Prints the job's events until its exit, reattaching after every dropped connection.
async fn follow(
    client: &Client,
    target: &resolve::Target,
    request: &ExecRequest,
    progress: &mut Progress,
    cancelled: &smol::channel::Receiver<()>,
) -> anyhow::Result<i32> {
    let mut backoff = Backoff::new(RECONNECT_LIMIT);
    let mut events = match client.post_events("/api/v1/execute/stream", request).await {
        Ok(events) => events,
        Err(e) if is_transient(&e) => reconnect(client, target, request, progress, &mut backoff, e).await?,
        Err(e) => return Err(e.into()),
    };
    let mut cancel_sent = false;
    loop {
        note_stream(&mut events, progress);
        let next = future::or(async { Some(events.next().await) }, async {
            if cancel_sent {
                future::pending::<()>().await;
            }
            let _ = cancelled.recv().await;
            None
        })
        .await;
        let error = match next {
            // Ctrl-C: cancel the job; its exit event then ends the stream.
            None => {
                cancel_sent = true;
                if !cancel_job(target, progress).await {
                    return Ok(INTERRUPTED);
                }
                continue;
            }
            Some(Ok(Some(event))) => {
                backoff.reset(RECONNECT_LIMIT);
                let Ok(event) = serde_json::from_str::<StreamEvent>(&event.data) else {
                    continue; // not an execution event (a future event type)
                };
                if let Some(code) = show(target, progress, &event)? {
                    return Ok(code);
                }
                continue;
            }
            Some(Ok(None)) => ClientError::Unreachable {
                url: target.client.base().to_string(),
                reason: "the stream ended before the command finished".into(),
            },
            Some(Err(e)) => e,
        };
        if progress.heartbeat.is_none() || !is_transient(&error) {
            // A daemon that cannot be reattached to (1.0.21), or a real refusal.
            bail!("{}: {error}", target.label);
        }
        events = reconnect(client, target, request, progress, &mut backoff, error).await?;
    }
}

/// Takes the job id and the heartbeat from a freshly opened stream.
fn note_stream(events: &mut EventStream, progress: &mut Progress) {
    if progress.job_id.is_none() {
        progress.job_id = events.header("X-Loopsy-Job-Id");
    }
    let heartbeat = events.header("X-Loopsy-Heartbeat").and_then(|ms| ms.parse::<u64>().ok());
    if let Some(ms) = heartbeat {
        let heartbeat = Duration::from_millis(ms.max(1));
        progress.heartbeat = Some(heartbeat);
        events.set_idle_limit((heartbeat * 4).max(Duration::from_secs(2)));
    }
}

/// Prints one event unless it was printed before; `Some(code)` at the exit.
fn show(target: &resolve::Target, progress: &mut Progress, event: &StreamEvent) -> anyhow::Result<Option<i32>> {
    if let Some(seq) = event.seq {
        if seq <= progress.last_seq {
            return Ok(None); // printed before the connection dropped
        }
        progress.last_seq = seq + event.missed.unwrap_or(1) - 1;
    }
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    match event.kind.as_str() {
        "stdout" => {
            stdout.write_all(event.data.as_bytes())?;
            stdout.flush()?;
        }
        "stderr" => {
            stderr.write_all(event.data.as_bytes())?;
            stderr.flush()?;
        }
        "gap" => eprintln!("loopsy: {}: some output was lost: {}", target.label, event.data),
        "exit" => {
            return event.shell_code().map(Some).ok_or_else(|| anyhow!("{}: unreadable exit event", target.label));
        }
        "error" => bail!("{}: {}", target.label, event.data),
        _ => {}
    }
    Ok(None)
}

/// Opens the job's stream again after the event last printed: by its id when the daemon told
/// it, else by sending the request again with the same key (only to a daemon that honours it).
async fn reconnect(
    client: &Client,
    target: &resolve::Target,
    request: &ExecRequest,
    progress: &mut Progress,
    backoff: &mut Backoff,
    cause: ClientError,
) -> anyhow::Result<EventStream> {
    let from = progress.last_seq + 1;
    match &progress.job_id {
        Some(job_id) => eprintln!(
            "loopsy: lost the connection to {} ({cause}); reattaching to job {job_id} at event {from}",
            target.label
        ),
        None => eprintln!("loopsy: lost the connection to {} ({cause}); trying again", target.label),
    }
    let attempt_client = client.clone().with_timeout(ATTEMPT_TIMEOUT);
    if progress.job_id.is_none() {
        // Nothing started that we know of: a daemon that is down is an error at once.
        match target.client.honours_idempotency_keys().await {
            Ok(true) => {}
            Ok(false) => bail!("{}: {cause} (a daemon without idempotent exec: not sent again)", target.label),
            Err(_) => bail!("{}: {cause}", target.label),
        }
    }
    loop {
        let attempt = match &progress.job_id {
            Some(job_id) => {
                let path = format!("/api/v1/execute/jobs/{}/stream?from={from}", crate::percent::encode(job_id));
                attempt_client.open_events(Method::Get, &path, None, None).await
            }
            None => {
                let body = serde_json::to_vec(request).map_err(|e| anyhow!("encoding the request: {e}"))?;
                let last = (progress.last_seq > 0).then(|| progress.last_seq.to_string());
                attempt_client.open_events(Method::Post, "/api/v1/execute/stream", Some(body), last.as_deref()).await
            }
        };
        match attempt {
            Ok(events) => {
                if progress.job_id.is_some() {
                    eprintln!("loopsy: reattached to {}", target.label);
                }
                return Ok(events);
            }
            Err(e) if (is_transient(&e) || is_rate_limited(&e)) && backoff.pause().await => continue,
            Err(e) if is_transient(&e) || is_rate_limited(&e) => {
                bail!("{}: gave up reattaching after {} s: {e}", target.label, RECONNECT_LIMIT.as_secs())
            }
            Err(e) => bail!("{}: cannot reattach to the job: {e}", target.label),
        }
    }
}

/// Asks the daemon to cancel the job (Ctrl-C); false when there is none to cancel or the daemon
/// did not take the request (the command then ends at once).
async fn cancel_job(target: &resolve::Target, progress: &Progress) -> bool {
    let Some(job_id) = &progress.job_id else {
        return false;
    };
    eprintln!("loopsy: cancelling job {job_id}…");
    let client = target.client.clone().with_timeout(ATTEMPT_TIMEOUT);
    let path = format!("/api/v1/execute/{}", crate::percent::encode(job_id));
    if let Err(e) = client.call::<serde_json::Value>(Method::Delete, &path, None::<&()>).await {
        eprintln!("loopsy: could not cancel job {job_id}: {e}");
        return false;
    }
    true
}

/// `SIGTERM` → 15, for the signals whose numbers are the same on every Unix.
fn signal_number(name: &str) -> Option<i32> {
    let number = match name {
        "SIGHUP" => 1,
        "SIGINT" => 2,
        "SIGQUIT" => 3,
        "SIGABRT" => 6,
        "SIGKILL" => 9,
        "SIGSEGV" => 11,
        "SIGPIPE" => 13,
        "SIGALRM" => 14,
        "SIGTERM" => 15,
        other => return other.strip_prefix("SIG").and_then(|n| n.parse().ok()),
    };
    Some(number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Command, Loopsy};

    #[test]
    fn options_go_before_the_peer_and_the_command_keeps_its_own_flags() {
        let parsed =
            Loopsy::from_args(&["loopsy"], &["exec", "--timeout", "500", "--json", "local", "ls", "-la", "--json"])
                .unwrap();
        let Command::Exec(args) = parsed.command else { panic!("not exec") };
        assert_eq!(args.timeout, Some(500));
        assert!(args.json);
        assert_eq!(args.peer, "local");
        assert_eq!(args.command, ["ls", "-la", "--json"]);
    }

    #[test]
    fn signal_names_map_to_numbers() {
        assert_eq!(signal_number("SIGTERM"), Some(15));
        assert_eq!(signal_number("SIG40"), Some(40));
        assert_eq!(signal_number("bogus"), None);
    }
}
