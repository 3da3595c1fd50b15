//! `loopsy enable|disable|service-status`: the daemon as a user service (§12.6); the work is in
//! `crate::service`.

use std::process::ExitCode;

use argh::FromArgs;
use serde_json::json;

use crate::instance::{self, Daemon};
use crate::paths::Paths;
use crate::service::{self, Manager};

/// start the daemon at login through the system's service manager
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "enable")]
pub struct EnableArgs {
    /// print the service definition instead of installing it
    #[argh(switch)]
    print: bool,
    /// with --print: the platform to print for (linux, macos or windows; default this one)
    #[argh(option)]
    platform: Option<String>,
}

/// stop the service and remove it
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "disable")]
pub struct DisableArgs {}

/// show whether the service is installed and the daemon runs
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "service-status")]
pub struct StatusArgs {
    /// print JSON
    #[argh(switch)]
    json: bool,
}

pub(super) fn enable(args: EnableArgs, paths: &Paths) -> anyhow::Result<ExitCode> {
    if args.print {
        let manager = match &args.platform {
            Some(os) => Manager::for_os(os)?,
            None => Manager::for_this_os()?,
        };
        print!("{}", manager.render(&service::spec_for(paths)?)?);
        return Ok(ExitCode::SUCCESS);
    }
    anyhow::ensure!(args.platform.is_none(), "--platform only goes with --print");
    super::load_config(paths)?;
    println!("Platform: {}", std::env::consts::OS);
    let notes = service::enable(paths)?;
    let state = service::state(paths)?;
    println!("loopsy daemon enabled as a {} service ({})", state.manager.name(), state.unit);
    println!("  Logs: {}", paths.daemon_log().display());
    for note in notes {
        println!("note: {note}");
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn disable(_args: DisableArgs, _paths: &Paths) -> anyhow::Result<ExitCode> {
    if service::disable()? {
        println!("loopsy service disabled and removed");
    } else {
        println!("no loopsy service is installed");
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn status(args: StatusArgs, paths: &Paths) -> anyhow::Result<ExitCode> {
    let state = service::state(paths)?;
    let daemon = instance::probe(paths)?;
    let (running, pid, managed_by) = match &daemon {
        Daemon::Running(info) => (true, Some(info.pid), info.managed_by.clone()),
        Daemon::Starting { pid } => (true, Some(*pid), None),
        Daemon::NotRunning => (false, None, None),
    };
    if args.json {
        let out = json!({
            "manager": state.manager.name(),
            "unit": state.unit,
            "enabled": state.installed,
            "forThisHome": state.for_this_home,
            "active": state.active,
            "running": running,
            "pid": pid,
            "managedBy": managed_by,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    let enabled = match (state.installed, state.for_this_home) {
        (false, _) => "disabled".to_string(),
        (true, true) => format!("enabled ({}: {})", state.manager.name(), state.unit),
        (true, false) => format!("enabled for another data directory ({})", state.unit),
    };
    println!("System service: {enabled}");
    let process = match (pid, &managed_by) {
        (Some(pid), Some(manager)) => format!("running (PID {pid}, managed by {manager})"),
        (Some(pid), None) => format!("running (PID {pid}, started by hand)"),
        _ => "stopped".into(),
    };
    println!("Daemon process: {process}");
    if state.installed && state.active.is_none() {
        println!("note: {} cannot be asked about the service here", state.manager.name());
    }
    if !state.installed {
        println!("Run `loopsy enable` to start the daemon at login.");
    }
    Ok(ExitCode::SUCCESS)
}
