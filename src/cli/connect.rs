//! `loopsy connect`: the wizard that connects this machine to a peer by address and key.
//!
//! Asks for the peer's address, port, key and a name (each also a flag, so scripts pass
//! `--address --port --key --name --yes` and nothing is asked), stores the key as
//! `auth.allowedKeys[<name>]` and the peer in `discovery.manualPeers`, tells a running daemon
//! (reload and registry), then tests the connection: `/health` for reachability, `/identity`
//! with the key for acceptance. Unlike 1.0.21 it never prints this machine's key.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;
use serde_json::json;

use crate::config::{self, Config, DEFAULT_PORT};
use crate::paths::Paths;
use crate::peer::base_url;
use crate::peer::{Client, ClientError, Method};
use crate::peers::{check_address, check_name};

/// connect this machine to a peer: address, port, key, name, then a connection test
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "connect")]
pub struct Args {
    /// the peer's IP address or host name
    #[argh(option)]
    address: Option<String>,
    /// the peer's port (default 19532)
    #[argh(option)]
    port: Option<u16>,
    /// the peer's API key (`loopsy key show` on the peer)
    #[argh(option)]
    key: Option<String>,
    /// a name for the peer (default peer-<address>)
    #[argh(option)]
    name: Option<String>,
    /// ask nothing: use the flags and the defaults
    #[argh(switch)]
    yes: bool,
}

pub(super) fn run(args: Args, paths: &Paths) -> anyhow::Result<ExitCode> {
    let config = super::load_config(paths)?;
    if !args.yes {
        introduce(&config);
    }
    let address = match args.address {
        Some(address) => address,
        None if args.yes => anyhow::bail!("--address is needed with --yes"),
        None => prompt("Peer address (IP or host name): ", None)?,
    };
    if address.trim().is_empty() {
        eprintln!("Aborted: no address given.");
        return Ok(ExitCode::from(1));
    }
    let address = check_address("address", &address).map_err(|e| anyhow::anyhow!("{e}"))?;
    let port = match args.port {
        Some(port) => port,
        None if args.yes => DEFAULT_PORT,
        None => {
            let text = prompt(&format!("Peer port [{DEFAULT_PORT}]: "), Some(&DEFAULT_PORT.to_string()))?;
            text.trim().parse::<u16>().map_err(|_| anyhow::anyhow!("'{text}' is not a port"))?
        }
    };
    anyhow::ensure!(port > 0, "port: must be 1 to 65535");
    let key = match args.key {
        Some(key) => key,
        None if args.yes => anyhow::bail!("--key is needed with --yes"),
        None => prompt_secret("Peer's API key (run `loopsy key show` on the peer): ")?,
    };
    if key.trim().is_empty() {
        eprintln!("Aborted: no key given.");
        return Ok(ExitCode::from(1));
    }
    super::peers::check_key(key.trim())?;
    let default_name = super::peers::default_name(&address);
    let name = match args.name {
        Some(name) => name,
        None if args.yes => default_name,
        None => prompt(&format!("Name for this peer [{default_name}]: "), Some(&default_name))?,
    };
    check_name("name", &name).map_err(|e| anyhow::anyhow!("{e}"))?;

    save(paths, &address, port, &name)?;
    super::peers::store_key(paths, &name, key.trim())?;
    register_with_daemon(paths, &config, &address, port, &name);
    println!("Saved peer '{name}' ({}) and its key.", endpoint(&address, port));
    test_connection(&address, port, key.trim(), &name)
}

fn introduce(config: &Config) {
    let addresses: Vec<String> =
        crate::discovery::ipv4_interfaces().into_iter().filter(|n| !n.loopback).map(|n| n.addr.to_string()).collect();
    println!("This machine: {} on port {}", addresses.join(", "), config.server.port);
    println!("The peer needs this machine's key too: run `loopsy key show` here (it is not printed).");
    println!();
}

fn endpoint(address: &str, port: u16) -> String {
    if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

/// Adds `{address, port, name}` to the manual peers, or names the entry already there.
fn save(paths: &Paths, address: &str, port: u16, name: &str) -> anyhow::Result<()> {
    config::add_manual_peer(paths, address, port, name)?;
    Ok(())
}

/// Tells a running daemon about the peer now (it would read manualPeers at its next start).
fn register_with_daemon(paths: &Paths, config: &Config, address: &str, port: u16, name: &str) {
    let Ok(client) = Client::local(paths, &config.auth.api_key) else { return };
    let body = json!({"address": address, "port": port, "name": name});
    if let Err(e) = smol::block_on(client.call::<serde_json::Value>(Method::Post, "/api/v1/peers", Some(&body))) {
        eprintln!("loopsy: the running daemon did not take the peer: {e}");
    }
}

/// `/health` (reachable?) then `/identity` with the key (accepted?).
fn test_connection(address: &str, port: u16, key: &str, name: &str) -> anyhow::Result<ExitCode> {
    let url = base_url(address, port);
    let open = Client::new(&url, None).with_timeout(Duration::from_secs(5));
    let health = match smol::block_on(open.get::<serde_json::Value>("/api/v1/health")) {
        Ok(health) => health,
        Err(e) => {
            println!("Could not reach the peer: {e}");
            println!("Check that `loopsy start` runs there, that {url} is the right address and port,");
            println!("and that no firewall blocks TCP port {port}.");
            return Ok(ExitCode::from(1));
        }
    };
    let keyed = Client::new(&url, Some(key.to_string())).with_timeout(Duration::from_secs(5));
    match smol::block_on(keyed.get::<serde_json::Value>("/api/v1/identity")) {
        Ok(identity) => {
            let node = identity["nodeId"].as_str().or(health["nodeId"].as_str()).unwrap_or("?");
            let host = identity["hostname"].as_str().unwrap_or("?");
            println!("Connected! Peer node: {node} ({host})");
            println!("Use '{name}' wherever a command takes a peer, for example `loopsy peers`.");
            Ok(ExitCode::SUCCESS)
        }
        Err(ClientError::Remote { status: 401 | 403, .. }) => {
            println!("The peer answers but refuses the key: check it with `loopsy key show` on the peer.");
            Ok(ExitCode::from(1))
        }
        Err(e) => {
            println!("The peer answers /health but not /identity: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Reads one line; an empty answer takes `default`.
fn prompt(question: &str, default: Option<&str>) -> anyhow::Result<String> {
    print!("{question}");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let answer = line.trim().to_string();
    Ok(match (answer.is_empty(), default) {
        (true, Some(default)) => default.to_string(),
        _ => answer,
    })
}

/// Like `prompt`, without echo when reading from a terminal.
fn prompt_secret(question: &str) -> anyhow::Result<String> {
    #[cfg(unix)]
    {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a termios struct we own.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::isatty(0) == 1 && libc::tcgetattr(0, &mut saved) == 0 {
                let mut quiet = saved;
                quiet.c_lflag &= !libc::ECHO;
                libc::tcsetattr(0, libc::TCSANOW, &quiet);
                let answer = prompt(question, None);
                libc::tcsetattr(0, libc::TCSANOW, &saved);
                println!();
                return answer;
            }
        }
    }
    prompt(question, None)
}
