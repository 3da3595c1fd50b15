//! `loopsy init`: create the data directory, a config with a new key, and the node identity.

use std::process::ExitCode;

use argh::FromArgs;

use crate::config::{self, Config};
use crate::durable::{self, Mode};
use crate::identity::NodeId;
use crate::paths::Paths;

/// create the config with a new API key (does nothing if it exists)
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "init")]
pub struct Args {
    /// start over: write a fresh config with a new key (the old one is kept as config.yaml.bak)
    #[argh(switch)]
    force: bool,
}

pub(super) fn run(args: Args, paths: &Paths) -> anyhow::Result<ExitCode> {
    let config_file = paths.config_file();
    let exists = config_file.exists();
    if exists && !args.force {
        println!("loopsy is already initialized: {}", config_file.display());
        println!("For a new API key run `loopsy key generate`; to start over, `loopsy init --force`.");
        return Ok(ExitCode::SUCCESS);
    }
    durable::create_private_dir(paths.home())?;
    std::fs::create_dir_all(paths.logs_dir())?;
    if exists {
        let old = std::fs::read(&config_file)?;
        durable::write(&config_file.with_extension("yaml.bak"), &old, Mode::Secret)?;
    }
    let config = Config::new_with_key(crate::random::api_key());
    config::replace(paths, &config)?;
    let node_id = NodeId::load_or_create(paths)?;
    println!("loopsy initialized");
    println!("  Config:  {}", config_file.display());
    println!("  Node ID: {node_id}");
    println!("  API key: new, stored in the config (see it with `loopsy key show`)");
    if exists {
        println!("  Backup:  {}", config_file.with_extension("yaml.bak").display());
    }
    println!();
    println!("MCP server for AI agents:");
    if super::mcp::register_present(paths)? == 0 {
        println!("  no agent found yet; later run `loopsy mcp add`");
    }
    println!();
    println!("Next steps:");
    println!("  loopsy start               start the daemon");
    println!("  loopsy status              check that it runs");
    Ok(ExitCode::SUCCESS)
}
