//! `loopsy key show|generate`: the node's own API key.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use argh::FromArgs;

use crate::config;
use crate::instance::{self, Signalled};
use crate::paths::Paths;

/// show or replace this node's API key
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "key")]
pub struct Args {
    #[argh(subcommand)]
    action: Action,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum Action {
    Show(Show),
    Generate(Generate),
}

/// print the API key
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "show")]
struct Show {}

/// replace the API key with a new random one; a running daemon switches at once
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "generate")]
struct Generate {}

pub(super) fn run(args: Args, paths: &Paths) -> anyhow::Result<ExitCode> {
    match args.action {
        Action::Show(_) => {
            println!("{}", super::load_config(paths)?.auth.api_key);
            Ok(ExitCode::SUCCESS)
        }
        Action::Generate(_) => generate(paths),
    }
}

fn generate(paths: &Paths) -> anyhow::Result<ExitCode> {
    let key = crate::random::api_key();
    let config = config::set_api_key(paths, &key)?;
    println!("New API key generated and stored in {}.", paths.config_file().display());
    match instance::signal(paths, libc::SIGHUP)? {
        Signalled::Sent { pid } => {
            wait_until_key_accepted(paths, &config.auth.api_key)?;
            println!("The running daemon (PID {pid}) uses it now.");
        }
        Signalled::NotRunning => println!("The daemon will use it when it starts."),
    }
    println!("Peers that hold the old key need the new one (`loopsy key show`).");
    Ok(ExitCode::SUCCESS)
}

/// The daemon reloads keys asynchronously on SIGHUP: confirm before saying so.
/// After a SIGHUP that removed `key`: confirm the daemon refuses it now.
pub(super) fn wait_until_key_refused(paths: &Paths, key: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let client = crate::peer::Client::local(paths, key)?.with_timeout(Duration::from_secs(2));
        let refused = matches!(
            smol::block_on(client.get::<serde_json::Value>("/api/v1/status")),
            Err(crate::peer::ClientError::Remote { status: 403, .. })
        );
        if refused {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "the running daemon still accepts the removed key; restart it");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(super) fn wait_until_key_accepted(paths: &Paths, key: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let client = crate::peer::Client::local(paths, key)?.with_timeout(Duration::from_secs(2));
        let accepted = smol::block_on(client.get::<serde_json::Value>("/api/v1/status")).is_ok();
        if accepted {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "the running daemon did not take the new key; restart it");
        std::thread::sleep(Duration::from_millis(20));
    }
}
