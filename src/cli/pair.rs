//! `loopsy pair`: trust another machine from a 6-digit code.
//!
//! Without an address this machine hosts: it shows a code and waits. With an address it joins
//! the session the other machine hosts. Both sides then show a verification code (SAS) that the
//! humans compare; nothing is saved until both have said yes. The daemons do the cryptography.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use crate::peer::Method;
use anyhow::{bail, Context};
use argh::FromArgs;
use serde_json::{json, Value};

use crate::paths::Paths;
use crate::peer::Client;
use crate::resolve::{parse, PeerSpec};

/// pair with another machine: without an address show a code, with one join using its code
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "pair")]
pub struct Args {
    /// the machine hosting the pairing (`address[:port]`); omit to host it here
    #[argh(positional)]
    address: Option<String>,
    /// the 6-digit code shown on the other machine (asked for when missing)
    #[argh(option)]
    code: Option<String>,
    /// accept the verification code without asking (for scripts that compare it themselves)
    #[argh(switch)]
    yes: bool,
}

pub(super) fn run(args: Args, paths: &Paths) -> anyhow::Result<ExitCode> {
    let config = super::load_config(paths)?;
    let key = config.auth.api_key.clone();
    smol::block_on(async {
        match &args.address {
            None => host(paths, &key, args.yes).await,
            Some(address) => join(paths, &key, address, args.code.as_deref(), args.yes).await,
        }
    })
}

/// A fresh client each time: the daemon may switch to HTTPS during pairing.
fn local(paths: &Paths, key: &str, timeout: Duration) -> anyhow::Result<Client> {
    Ok(Client::local(paths, key)?.with_timeout(timeout))
}

async fn host(paths: &Paths, key: &str, yes: bool) -> anyhow::Result<ExitCode> {
    let started: Value =
        local(paths, key, Duration::from_secs(10))?.call(Method::Post, "/api/v1/pair/start", None::<&()>).await?;
    let code = started["code"].as_str().context("the daemon answered no code")?;
    let port = started["port"].as_u64().unwrap_or(19532);
    println!("Pairing code: {} {}", &code[..3], &code[3..]);
    println!("Valid for 5 minutes, 3 tries per machine. On the other machine run:");
    let addresses: Vec<&str> =
        started["addresses"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    for address in if addresses.is_empty() { vec!["<this machine's address>"] } else { addresses } {
        println!("  loopsy pair {address}:{port}");
    }
    println!("Waiting for the other machine...");
    let mut wrong = 0;
    let mut asked = false;
    loop {
        let status: Value = local(paths, key, Duration::from_secs(10))?.get("/api/v1/pair/status").await?;
        let now_wrong = status["wrongAttempts"].as_u64().unwrap_or(wrong);
        if now_wrong > wrong {
            println!("A wrong code was tried ({now_wrong} so far); further tries are slowed down.");
        }
        wrong = now_wrong;
        match status["state"].as_str().unwrap_or("") {
            "exchanged" if !asked => {
                asked = true;
                let peer = status["peerHostname"].as_str().unwrap_or("the other machine");
                let confirmed = ask_sas(status["sas"].as_str().unwrap_or(""), peer, yes)?;
                let body = json!({"confirmed": confirmed});
                local(paths, key, Duration::from_secs(10))?
                    .call::<Value>(Method::Post, "/api/v1/pair/confirm", Some(&body))
                    .await?;
                if confirmed {
                    println!("Waiting for {peer} to confirm...");
                }
            }
            "done" => {
                let hostname = status["peerHostname"].as_str().unwrap_or("the peer");
                paired(hostname, status["peerName"].as_str().unwrap_or(hostname));
                return Ok(ExitCode::SUCCESS);
            }
            "cancelled" => return refused("Pairing cancelled; nothing was saved."),
            "expired" => return refused("The pairing code expired. Run `loopsy pair` again."),
            _ => {}
        }
        async_io::Timer::after(Duration::from_millis(200)).await;
    }
}

async fn join(paths: &Paths, key: &str, address: &str, code: Option<&str>, yes: bool) -> anyhow::Result<ExitCode> {
    let (host, port) = match parse(address).map_err(|e| anyhow::anyhow!("bad address {e}"))? {
        PeerSpec::Address { host, port } => (host, port),
        PeerSpec::Local => bail!("pair with another machine: give its address, e.g. `loopsy pair 192.168.1.20`"),
    };
    let code = match code {
        Some(code) => code.to_string(),
        None => prompt("Enter the pairing code shown on the other machine: ")?,
    };
    println!("Connecting to {host}:{port}...");
    let body = json!({"address": host, "port": port, "code": code});
    let joined: Value = match local(paths, key, Duration::from_secs(30))?
        .call(Method::Post, "/api/v1/pair/join", Some(&body))
        .await
    {
        Ok(joined) => joined,
        Err(crate::peer::ClientError::Remote { message, .. }) => return refused(&format!("Pairing failed: {message}")),
        Err(other) => return Err(other.into()),
    };
    let peer = joined["peerHostname"].as_str().unwrap_or("the other machine").to_string();
    let confirmed = ask_sas(joined["sas"].as_str().unwrap_or(""), &peer, yes)?;
    if confirmed {
        println!("Waiting for {peer} to confirm...");
    }
    let body = json!({"confirmed": confirmed});
    let client = local(paths, key, Duration::from_secs(330))?;
    match client.call::<Value>(Method::Post, "/api/v1/pair/confirm", Some(&body)).await {
        Ok(answer) if answer["state"] == "done" => {
            paired(&peer, answer["peer"].as_str().unwrap_or(&peer));
            Ok(ExitCode::SUCCESS)
        }
        Ok(_) => refused("Pairing cancelled; nothing was saved."),
        Err(crate::peer::ClientError::Remote { message, .. }) => refused(&format!("Pairing failed: {message}")),
        Err(other) => Err(other.into()),
    }
}

/// The success message; says so when the peer's hostname was taken here by another peer.
fn paired(hostname: &str, name: &str) {
    println!("Paired with {name}. TLS is on; each side holds a key of its own for the other.");
    if name != hostname {
        println!("Another peer here is already named '{hostname}', so this one is named '{name}'.");
    }
}

fn ask_sas(sas: &str, peer: &str, yes: bool) -> anyhow::Result<bool> {
    let shown = if sas.len() == 6 { format!("{} {}", &sas[..3], &sas[3..]) } else { sas.to_string() };
    println!("Verification code: {shown}");
    if yes {
        println!("(accepted with --yes)");
        return Ok(true);
    }
    let answer = prompt(&format!("Does {peer} show the same verification code? [y/N] "))?;
    Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}

fn prompt(question: &str) -> anyhow::Result<String> {
    print!("{question}");
    std::io::stdout().flush()?;
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line)? == 0 {
        bail!("no answer on standard input (use --code and --yes in scripts)");
    }
    Ok(line.trim().to_string())
}

fn refused(message: &str) -> anyhow::Result<ExitCode> {
    eprintln!("{message}");
    Ok(ExitCode::from(1))
}
