//! `loopsy exec <peer> <cmd> [args..]`: run a program on a daemon and show its output live.
//!
//! Streams through `/execute/stream` (stdout to stdout, stderr to stderr, as it arrives) and
//! exits with the remote exit code (128 + N after signal N); `--json` waits on `/execute` and
//! prints the collected result. Refusals and unreachable peers are errors (exit 2).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail};
use argh::FromArgs;
use surf::http::Method;

use crate::exec::api::{ExecRequest, ExecResult, StreamEvent};
use crate::paths::Paths;
use crate::peer::resolve;

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

pub fn run(args: Args, paths: &Paths) -> anyhow::Result<ExitCode> {
    let config = super::load_config(paths)?;
    let target = resolve::resolve(paths, &config, &args.peer, args.key.as_deref())?;
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

/// `--json`: one `/execute` call; prints the result, returns the remote exit code.
async fn collect(target: &resolve::Target, request: &ExecRequest, timeout: Option<u64>) -> anyhow::Result<i32> {
    // The daemon bounds the run; wait at least that long (its default is 5 minutes).
    let wait = Duration::from_millis(timeout.unwrap_or(24 * 3600 * 1000)) + Duration::from_secs(30);
    let client = target.client.clone().with_timeout(wait);
    let result: ExecResult = client.call(Method::Post, "/api/v1/execute", Some(request)).await?;
    println!("{}", serde_json::to_string_pretty(&result)?);
    let signal_code = result.signal.as_deref().and_then(signal_number).map(|n| 128 + n);
    Ok(result.exit_code.or(signal_code).unwrap_or(if result.killed { 137 } else { 0 }))
}

/// Streams the output; returns the remote exit code.
async fn stream(target: &resolve::Target, request: &ExecRequest) -> anyhow::Result<i32> {
    let mut events = target.client.post_events("/api/v1/execute/stream", request).await?;
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    while let Some(event) = events.next().await? {
        let Ok(event) = serde_json::from_str::<StreamEvent>(&event.data) else {
            continue; // not an execution event (a future event type)
        };
        match event.kind.as_str() {
            "stdout" => {
                stdout.write_all(event.data.as_bytes())?;
                stdout.flush()?;
            }
            "stderr" => {
                stderr.write_all(event.data.as_bytes())?;
                stderr.flush()?;
            }
            "exit" => {
                return event.shell_code().ok_or_else(|| anyhow!("{}: unreadable exit event", target.label));
            }
            "error" => bail!("{}: {}", target.label, event.data),
            _ => {}
        }
    }
    bail!("{}: the stream ended before the command finished", target.label)
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
