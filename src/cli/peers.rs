//! `loopsy peers [add|remove|confirm]`: the local daemon's peer registry.
//!
//! Listing works with the daemon down (it reads `peers.json`); adding, removing and confirming
//! go through the running daemon. A peer the owner vouched for is never moved by what the LAN
//! says about it: the listing shows where it was "seen at" instead, and `confirm` moves it. A key given with `add --key` is stored as `auth.allowedKeys[<name>]` and
//! the running daemon is told to reload (SIGHUP), so it takes effect at once.

use std::process::ExitCode;

use anyhow::Context;
use argh::FromArgs;
use serde_json::json;

use crate::config::{self, Config, DEFAULT_PORT};
use crate::instance::{self, Signalled};
use crate::paths::Paths;
use crate::peer::{Client, Method};
use crate::peers::{check_address, check_name, Peer};
use crate::resolve::{self, Found};

/// list the known peers, or add or remove one
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "peers")]
pub struct Args {
    /// print JSON ({"peers": [...]})
    #[argh(switch)]
    json: bool,
    #[argh(subcommand)]
    action: Option<Action>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum Action {
    Add(Add),
    Remove(Remove),
    Confirm(Confirm),
}

/// add a peer by address (and port, default 19532)
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "add")]
struct Add {
    /// the peer's IP address or host name
    #[argh(positional)]
    address: String,
    /// the peer's port (default 19532)
    #[argh(positional)]
    port: Option<u16>,
    /// a name for the peer, usable wherever a command takes <peer>
    #[argh(option)]
    name: Option<String>,
    /// the peer's API key, stored as auth.allowedKeys[<name>] and sent to that peer
    #[argh(option)]
    key: Option<String>,
    /// print the stored peer as JSON
    #[argh(switch)]
    json: bool,
}

/// forget a peer (by name, hostname, node id or prefix, or address[:port])
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "remove")]
struct Remove {
    /// the peer
    #[argh(positional)]
    peer: String,
}

/// move a peer to a new address you vouch for (e.g. where `loopsy peers` saw it)
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "confirm")]
struct Confirm {
    /// the peer (name, hostname, node id or prefix, or its current address[:port])
    #[argh(positional)]
    peer: String,
    /// its new address[:port] (the port defaults to the sighting's, else the current one)
    #[argh(positional)]
    address: String,
    /// print the peer as JSON
    #[argh(switch)]
    json: bool,
}

pub(super) fn run(args: Args, paths: &Paths) -> anyhow::Result<ExitCode> {
    let config = super::load_config(paths)?;
    match args.action {
        None => list(paths, &config, args.json),
        Some(Action::Add(add)) => self::add(paths, &config, add),
        Some(Action::Remove(remove)) => self::remove(paths, &config, remove),
        Some(Action::Confirm(confirm)) => self::confirm(paths, &config, confirm),
    }
}

fn list(paths: &Paths, config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    if Client::local(paths, &config.auth.api_key).is_err() {
        eprintln!("loopsy: the daemon is not running; showing the saved peer list");
    }
    let peers = smol::block_on(resolve::registry_peers(paths, config));
    if json {
        println!("{}", serde_json::to_string_pretty(&json!({"peers": peers}))?);
        return Ok(ExitCode::SUCCESS);
    }
    if peers.is_empty() {
        println!("No peers found");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<9} {:<24} {:<20} {:<14} {:<8} LAST SEEN", "NODE", "ADDRESS", "HOSTNAME", "NAME", "STATUS");
    for peer in &peers {
        println!("{}", row(peer));
        if let Some(line) = sighting(peer) {
            println!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The "seen at" line under a bound peer that unauthenticated evidence placed elsewhere.
fn sighting(peer: &Peer) -> Option<String> {
    let seen = peer.seen_at.as_ref()?;
    let at = if seen.address.contains(':') {
        format!("[{}]:{}", seen.address, seen.port)
    } else {
        format!("{}:{}", seen.address, seen.port)
    };
    let answers = match (seen.answers, peer.fingerprint.is_some()) {
        (true, _) => "answers as this node, unauthenticated",
        (false, true) => "did not prove its pinned certificate",
        (false, false) => "did not answer as this node",
    };
    let ago = ago(crate::clock::now_ms().saturating_sub(seen.at));
    let who = peer.name.clone().unwrap_or_else(|| peer.node_id.chars().take(8).collect());
    Some(format!(
        "          seen at {at} ({}, {ago}; {answers}): not followed; if it moved there: loopsy peers confirm {who} {at}",
        seen.via.as_str()
    ))
}

fn row(peer: &Peer) -> String {
    let short: String = peer.node_id.chars().take(8).collect();
    let seen = match peer.last_seen {
        0 => "never".to_string(),
        ms => ago(crate::clock::now_ms().saturating_sub(ms)),
    };
    format!(
        "{short:<9} {:<24} {:<20} {:<14} {:<8} {seen}",
        peer.endpoint(),
        peer.hostname,
        peer.name.as_deref().unwrap_or("-"),
        peer.status.as_str()
    )
}

fn ago(ms: u64) -> String {
    match ms / 1000 {
        0..=59 => format!("{}s ago", ms / 1000),
        s @ 60..=3599 => format!("{}m ago", s / 60),
        s => format!("{}h ago", s / 3600),
    }
}

fn add(paths: &Paths, config: &Config, args: Add) -> anyhow::Result<ExitCode> {
    let address = check_address("address", &args.address).map_err(|e| anyhow::anyhow!("{e}"))?;
    let port = args.port.unwrap_or(DEFAULT_PORT);
    anyhow::ensure!(port > 0, "port: must be 1 to 65535");
    let name = match (&args.name, &args.key) {
        (Some(name), _) => Some(name.clone()),
        (None, Some(_)) => Some(default_name(&address)),
        (None, None) => None,
    };
    if let Some(name) = &name {
        check_name("--name", name).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    if let Some(key) = &args.key {
        check_key(key)?;
    }
    let client = Client::local(paths, &config.auth.api_key)?;
    let body = json!({"address": address, "port": port, "name": name});
    let peer: Peer = smol::block_on(client.call(Method::Post, "/api/v1/peers", Some(&body)))?;
    if let (Some(key), Some(name)) = (&args.key, &name) {
        store_key(paths, name, key)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&peer)?);
    } else {
        println!("Peer added:");
        println!("{}", row(&peer));
        if let Some(name) = &name {
            let stored = if args.key.is_some() { " (its key is stored under that name)" } else { "" };
            println!("Use '{name}' wherever a command takes a peer{stored}.");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `peer-<address>`, as 1.0.21's connect wizard named peers, made a valid name.
pub(super) fn default_name(address: &str) -> String {
    let cleaned: String =
        address.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '-' }).collect();
    format!("peer-{cleaned}").chars().take(64).collect()
}

pub(super) fn check_key(key: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        key.len() >= 16 && !key.chars().any(char::is_whitespace),
        "the key must be at least 16 characters without spaces"
    );
    Ok(())
}

/// Stores `key` as `auth.allowedKeys[name]` and makes a running daemon take it.
pub(super) fn store_key(paths: &Paths, name: &str, key: &str) -> anyhow::Result<()> {
    config::allow_key(paths, name, key).context("storing the peer's key")?;
    if let Signalled::Sent { .. } = instance::signal(paths, libc::SIGHUP)? {
        super::key::wait_until_key_accepted(paths, key)?;
    }
    Ok(())
}

fn confirm(paths: &Paths, config: &Config, args: Confirm) -> anyhow::Result<ExitCode> {
    let client = Client::local(paths, &config.auth.api_key)?;
    let peer = find_one(paths, config, &args.peer)?;
    let (address, port) = resolve::split_address(&args.address).map_err(|e| anyhow::anyhow!(e))?;
    let address = check_address("address", &address).map_err(|e| anyhow::anyhow!("{e}"))?;
    let path = format!("/api/v1/peers/{}/confirm", crate::percent::encode(&peer.node_id));
    let body = json!({"address": address, "port": port});
    let moved: Peer = smol::block_on(client.call(Method::Post, &path, Some(&body)))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&moved)?);
    } else {
        let label = moved.name.clone().unwrap_or_else(|| moved.hostname.clone());
        println!("{label} is now reached at {} (was {}).", moved.endpoint(), peer.endpoint());
    }
    Ok(ExitCode::SUCCESS)
}

/// The one registry peer `spec` names, or an error listing the candidates.
fn find_one(paths: &Paths, config: &Config, spec: &str) -> anyhow::Result<Peer> {
    match resolve::find(&smol::block_on(resolve::registry_peers(paths, config)), spec) {
        Found::One(peer) => Ok(peer),
        Found::Several(peers) => {
            eprintln!("loopsy: '{spec}' is ambiguous: it fits {} peers:", peers.len());
            for peer in &peers {
                eprintln!("  {}", resolve::describe(peer));
            }
            anyhow::bail!("use a name, a longer node id or address:port");
        }
        Found::None => anyhow::bail!("unknown peer '{spec}' (see `loopsy peers`)"),
    }
}

fn remove(paths: &Paths, config: &Config, args: Remove) -> anyhow::Result<ExitCode> {
    let client = Client::local(paths, &config.auth.api_key)?;
    let peer = find_one(paths, config, &args.peer)?;
    let path = format!("/api/v1/peers/{}", crate::percent::encode(&peer.node_id));
    let _: serde_json::Value = smol::block_on(client.call(Method::Delete, &path, None::<&()>))?;
    println!("Peer removed: {} ({})", peer.node_id, peer.endpoint());
    let revoked = revoke(paths, &peer)?;
    if let Some(key) = revoked {
        if let Signalled::Sent { .. } = instance::signal(paths, libc::SIGHUP)? {
            super::key::wait_until_key_refused(paths, &key)?;
        }
        println!("Its key, certificate pin and address were removed: it is refused from now on.");
    }
    Ok(ExitCode::SUCCESS)
}

/// Removes everything the config holds for `peer` (keys both ways, pin, manual entry), under
/// its name or hostname; returns the key it presented to us, if there was one.
fn revoke(paths: &Paths, peer: &crate::peers::Peer) -> anyhow::Result<Option<String>> {
    let names: Vec<&str> = peer.name.iter().map(String::as_str).chain([peer.hostname.as_str()]).collect();
    config::forget_peer(paths, &names, &peer.address, peer.port).context("removing the peer's keys")
}
