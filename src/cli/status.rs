//! `loopsy status`: is the daemon running, and what does it say about itself.

use std::process::ExitCode;

use argh::FromArgs;
use serde_json::json;

use crate::instance::{self, Daemon};
use crate::paths::Paths;
use crate::system::Status;

/// show whether the daemon runs and its status
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "status")]
pub struct Args {
    /// print the daemon's /status object (as 1.0.21 did) with "running", "pid", "url" beside it;
    /// {"running": false} when it is not running
    #[argh(switch)]
    json: bool,
}

pub(super) fn run(args: Args, paths: &Paths) -> anyhow::Result<ExitCode> {
    let config = super::load_config(paths)?;
    let info = match instance::probe(paths)? {
        Daemon::Running(info) => info,
        Daemon::NotRunning | Daemon::Starting { .. } => {
            if args.json {
                println!("{}", json!({"running": false}));
            } else {
                println!("loopsy daemon is not running (start it with `loopsy start`)");
            }
            return Ok(ExitCode::from(1));
        }
    };
    let client = crate::peer::Client::local(paths, &config.auth.api_key)?;
    let answer: serde_json::Value = smol::block_on(client.get("/api/v1/status"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status_json(answer, info.pid, &info.url))?);
        return Ok(ExitCode::SUCCESS);
    }
    let status: Status = serde_json::from_value(answer)?;
    println!("loopsy daemon is running");
    let rows = [
        ("PID", info.pid.to_string()),
        ("URL", info.url.clone()),
        ("Node ID", status.node_id.clone()),
        ("Hostname", status.hostname.clone()),
        ("Version", format!("{} (protocol {})", status.implementation, status.version)),
        ("Uptime", human_duration(status.uptime)),
        ("Peers", format!("{} online, {} total", status.peers.online, status.peers.total)),
        ("Jobs", format!("{} running", status.jobs.active)),
        ("Context", format!("{} entries", status.context.entries)),
        ("Data", paths.home().display().to_string()),
    ];
    for (name, value) in rows {
        println!("  {:<9} {value}", format!("{name}:"));
    }
    Ok(ExitCode::SUCCESS)
}

/// The `/status` object as the daemon sent it (1.0.21's `loopsy status` printed exactly that),
/// with what the CLI knows beside it.
fn status_json(mut status: serde_json::Value, pid: u32, url: &str) -> serde_json::Value {
    if let Some(object) = status.as_object_mut() {
        object.insert("running".into(), true.into());
        object.insert("pid".into(), pid.into());
        object.insert("url".into(), url.into());
    }
    status
}

fn human_duration(ms: u64) -> String {
    let secs = ms / 1000;
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m {}s", secs / 60, secs % 60),
        _ => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
    }
}
