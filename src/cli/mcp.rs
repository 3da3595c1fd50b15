//! `loopsy mcp serve|add|remove|status`: the MCP server and its registration with agents.

use std::process::ExitCode;

use anyhow::Context;
use argh::FromArgs;
use serde_json::json;

use crate::mcp::register::{Agent, ServerCommand, AGENTS};
use crate::paths::Paths;

/// the MCP server for AI agents, and its registration with Claude Code, Gemini CLI and Codex CLI
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "mcp")]
pub struct Args {
    #[argh(subcommand)]
    action: Action,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum Action {
    Serve(Serve),
    Add(Add),
    Remove(Remove),
    Status(Status),
}

/// run the MCP server on stdin/stdout (agents start this)
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "serve")]
struct Serve {}

/// register the MCP server with every agent found on this machine
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "add")]
struct Add {}

/// remove the MCP server from every agent
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "remove")]
struct Remove {}

/// show, per agent, whether the MCP server is registered
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "status")]
struct Status {
    /// print JSON
    #[argh(switch)]
    json: bool,
}

pub(super) fn run(args: Args, paths: &Paths) -> anyhow::Result<ExitCode> {
    match args.action {
        Action::Serve(_) => {
            crate::logger::init(log::LevelFilter::Warn);
            crate::mcp::serve(crate::mcp::DaemonLocator::new(paths.clone()))?;
            Ok(ExitCode::SUCCESS)
        }
        Action::Add(_) => {
            let registered = register_present(paths)?;
            if registered == 0 {
                println!("No AI coding agent found (Claude Code, Gemini CLI, Codex CLI).");
                println!("Register by hand with the command: {}", server_command(paths)?.display());
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
        Action::Remove(_) => remove(),
        Action::Status(status) => show_status(status.json),
    }
}

fn user_home() -> anyhow::Result<std::path::PathBuf> {
    crate::paths::user_home_dir().context("cannot find the home directory (HOME)")
}

/// How agents start our server: this binary, absolute, with `--home` when not the default.
pub(super) fn server_command(paths: &Paths) -> anyhow::Result<ServerCommand> {
    let exe = std::env::current_exe().context("finding the loopsy binary")?;
    let program = exe.canonicalize().unwrap_or(exe).to_string_lossy().into_owned();
    let mut args = Vec::new();
    if Some(paths.home().to_path_buf()) != crate::paths::user_home_dir().map(|h| h.join(".loopsy")) {
        args.extend(["--home".to_string(), paths.home().to_string_lossy().into_owned()]);
    }
    args.extend(["mcp".to_string(), "serve".to_string()]);
    Ok(ServerCommand { program, args })
}

impl ServerCommand {
    pub(crate) fn display(&self) -> String {
        std::iter::once(self.program.as_str()).chain(self.args.iter().map(String::as_str)).collect::<Vec<_>>().join(" ")
    }
}

/// Registers with every agent present here; prints one line per agent; returns how many.
pub(super) fn register_present(paths: &Paths) -> anyhow::Result<usize> {
    let home = user_home()?;
    let server = server_command(paths)?;
    let mut registered = 0;
    for agent in AGENTS.into_iter().filter(|agent| agent.present(&home)) {
        match agent.add(&home, &server) {
            Ok(()) => {
                registered += 1;
                println!("  Registered with {}", agent.label());
            }
            Err(e) => println!("  Failed to register with {}: {e:#}", agent.label()),
        }
    }
    Ok(registered)
}

fn remove() -> anyhow::Result<ExitCode> {
    let home = user_home()?;
    let mut removed = 0;
    for agent in AGENTS {
        match agent.remove(&home) {
            Ok(true) => {
                removed += 1;
                println!("  Unregistered from {}", agent.label());
            }
            Ok(false) => {}
            Err(e) => println!("  Failed to unregister from {}: {e:#}", agent.label()),
        }
    }
    if removed == 0 {
        println!("No registration found to remove.");
    }
    Ok(ExitCode::SUCCESS)
}

fn show_status(as_json: bool) -> anyhow::Result<ExitCode> {
    let home = user_home()?;
    let mut rows = Vec::new();
    for agent in AGENTS {
        let state = match agent.registered(&home) {
            Ok(true) => "registered",
            Ok(false) if agent.present(&home) => "not registered",
            Ok(false) => "not installed",
            Err(_) => "could not check",
        };
        rows.push((agent, state));
    }
    if as_json {
        let map: serde_json::Map<String, serde_json::Value> =
            rows.iter().map(|(agent, state)| (key(*agent).to_string(), json!(state))).collect();
        println!("{}", serde_json::to_string_pretty(&map)?);
    } else {
        for (agent, state) in &rows {
            println!("  {}: {state}", agent.label());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn key(agent: Agent) -> &'static str {
    match agent {
        Agent::Claude => "claude",
        Agent::Gemini => "gemini",
        Agent::Codex => "codex",
    }
}
