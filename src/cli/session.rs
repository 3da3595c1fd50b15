//! `loopsy session …`: extra daemons on this machine (PROTOCOL.md §12.8); the work is in
//! `crate::sessions`, this file parses and prints.

use std::process::ExitCode;

use argh::FromArgs;

use crate::paths::Paths;
use crate::sessions::{SessionName, Sessions, Status};

/// run extra daemons (sessions) on this machine
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "session")]
pub struct Args {
    #[argh(subcommand)]
    command: Sub,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum Sub {
    Start(StartArgs),
    StartFleet(FleetArgs),
    Stop(StopArgs),
    StopAll(StopAllArgs),
    Remove(RemoveArgs),
    List(ListArgs),
    Status(StatusArgs),
}

/// start a session daemon (or report it running)
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "start")]
struct StartArgs {
    /// session name: 1 to 64 letters, digits, '.', '_' or '-'
    #[argh(positional)]
    name: String,
    /// first port to try (default: sessions.basePort of the config, 19533)
    #[argh(option)]
    base_port: Option<u16>,
}

/// start sessions worker-1 … worker-N
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "start-fleet")]
struct FleetArgs {
    /// how many workers (default 3)
    #[argh(option, short = 'c', default = "3")]
    count: u32,
    /// first port to try (default: sessions.basePort of the config, 19533)
    #[argh(option)]
    base_port: Option<u16>,
}

/// stop a session daemon
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "stop")]
struct StopArgs {
    /// session name
    #[argh(positional)]
    name: String,
}

/// stop every running session
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "stop-all")]
struct StopAllArgs {}

/// delete a stopped session and its data
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "remove")]
struct RemoveArgs {
    /// session name
    #[argh(positional)]
    name: String,
}

/// list the main daemon and the sessions
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
struct ListArgs {
    /// print JSON: {"main": {...}, "sessions": [...]}
    #[argh(switch)]
    json: bool,
}

/// print a running session's status (its /api/v1/status)
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "status")]
struct StatusArgs {
    /// session name
    #[argh(positional)]
    name: String,
}

pub(super) fn run(args: Args, paths: &Paths) -> anyhow::Result<ExitCode> {
    let sessions = Sessions::current(paths)?;
    match args.command {
        Sub::Start(cmd) => {
            let sessions = sessions.with_base_port(cmd.base_port);
            start_one(&sessions, &parse(&cmd.name)?)?;
        }
        Sub::StartFleet(cmd) => {
            anyhow::ensure!((1..=100).contains(&cmd.count), "--count must be 1 to 100");
            let sessions = sessions.with_base_port(cmd.base_port);
            for i in 1..=cmd.count {
                println!("Starting session {i}/{}...", cmd.count);
                start_one(&sessions, &parse(&format!("worker-{i}"))?)?;
            }
            println!("Fleet of {} sessions started.", cmd.count);
        }
        Sub::Stop(cmd) => match sessions.stop(&parse(&cmd.name)?)? {
            Some(pid) => println!("Session \"{}\" stopped (PID {pid})", cmd.name),
            None => println!("Session \"{}\" is not running", cmd.name),
        },
        Sub::StopAll(_) => {
            if sessions.list()?.sessions.is_empty() {
                println!("No sessions found");
                return Ok(ExitCode::SUCCESS);
            }
            let stopped = sessions.stop_all()?;
            for (name, pid) in &stopped {
                println!("Stopped session \"{name}\" (PID {pid})");
            }
            println!("Stopped {} session(s)", stopped.len());
        }
        Sub::Remove(cmd) => {
            sessions.remove(&parse(&cmd.name)?)?;
            println!("Session \"{}\" removed", cmd.name);
        }
        Sub::List(cmd) => return list(&sessions, cmd.json),
        Sub::Status(cmd) => return status(&sessions, &parse(&cmd.name)?),
    }
    Ok(ExitCode::SUCCESS)
}

fn parse(name: &str) -> anyhow::Result<SessionName> {
    SessionName::parse(name).map_err(anyhow::Error::msg)
}

fn start_one(sessions: &Sessions, name: &SessionName) -> anyhow::Result<()> {
    let started = sessions.start(name)?;
    let session = &started.session;
    let pid = session.pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into());
    if started.already_running {
        println!("Session \"{name}\" already running (PID {pid})");
        return Ok(());
    }
    println!("Session \"{name}\" started");
    println!("  PID:      {pid}");
    println!("  Port:     {}", session.port);
    println!("  Hostname: {}", session.hostname);
    println!("  Data dir: {}", session.data_dir);
    for warning in &started.warnings {
        eprintln!("loopsy: warning: {warning}");
    }
    Ok(())
}

fn list(sessions: &Sessions, json: bool) -> anyhow::Result<ExitCode> {
    let listing = sessions.list()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&listing)?);
        return Ok(ExitCode::SUCCESS);
    }
    if listing.sessions.is_empty() {
        println!("No sessions found");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<16}{:<8}{:<28}{:<8}STATUS", "NAME", "PORT", "HOSTNAME", "PID");
    println!("{}", "-".repeat(70));
    for session in listing.main.iter().chain(&listing.sessions) {
        let port = if session.port == 0 { "?".to_string() } else { session.port.to_string() };
        let pid = session.pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into());
        println!("{:<16}{:<8}{:<28}{:<8}{}", session.name, port, session.hostname, pid, session.status.as_str());
    }
    Ok(ExitCode::SUCCESS)
}

fn status(sessions: &Sessions, name: &SessionName) -> anyhow::Result<ExitCode> {
    let session = sessions.get(name)?;
    if session.status != Status::Running {
        println!("Session \"{name}\" is not running ({})", session.status.as_str());
        return Ok(ExitCode::from(1));
    }
    let client = sessions.client(name)?;
    let status: serde_json::Value = smol::block_on(client.get("/api/v1/status"))
        .map_err(|e| anyhow::anyhow!("session \"{name}\" is not responding: {e}"))?;
    println!("{}", serde_json::to_string_pretty(&status)?);
    Ok(ExitCode::SUCCESS)
}
