//! `loopsy ls <peer> <path>`: list a directory on a peer (`/transfer/list`).

use std::process::ExitCode;

use crate::peer::Method;
use argh::FromArgs;
use serde_json::json;

use super::progress::human_bytes;
use crate::paths::Paths;
use crate::resolve::resolve;

/// list a directory on a peer
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "ls")]
pub struct Args {
    /// the peer: local, host or host:port
    #[argh(positional)]
    peer: String,
    /// absolute path of the directory on the peer
    #[argh(positional)]
    path: String,
    /// print the peer's answer as JSON
    #[argh(switch)]
    json: bool,
    /// key to present to the peer (default: this node's own key)
    #[argh(option, short = 'k')]
    key: Option<String>,
}

pub(super) fn run(args: Args, paths: &Paths) -> anyhow::Result<ExitCode> {
    let config = super::load_config(paths)?;
    let target = smol::block_on(resolve(paths, &config, &args.peer, args.key.as_deref()))?;
    let body = json!({"path": args.path});
    let listing: serde_json::Value =
        smol::block_on(target.client.call_retrying(Method::Post, "/api/v1/transfer/list", &body))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&listing)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut files = listing["files"].as_array().cloned().unwrap_or_default();
    files.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    for file in &files {
        println!("{}", line(file));
    }
    if listing["truncated"] == true {
        eprintln!("loopsy: the listing was cut off by the peer after {} entries", files.len());
    }
    Ok(ExitCode::SUCCESS)
}

/// `d 755  4.0 KiB  2026-01-02T03:04:05.000Z  name/`
fn line(file: &serde_json::Value) -> String {
    let kind = file["type"].as_str().unwrap_or("file");
    let (mark, suffix) = match kind {
        "directory" => ('d', "/"),
        "symlink" => ('l', "@"),
        _ => ('-', ""),
    };
    let mode = file["mode"].as_u64().map(|m| format!("{m:03o}")).unwrap_or_else(|| "---".into());
    let size = human_bytes(file["size"].as_u64().unwrap_or(0));
    let modified = crate::clock::iso8601(file["modified"].as_f64().unwrap_or(0.0) as u64);
    format!("{mark} {mode} {size:>10}  {modified}  {}{suffix}", file["name"].as_str().unwrap_or(""))
}
