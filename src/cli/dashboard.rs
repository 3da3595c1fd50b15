//! `loopsy dashboard`: logs a browser in to the local daemon's web dashboard.
//!
//! Asks the daemon (own key, from this machine) for a one-time token and opens
//! `/dashboard/login?token=…`, which the daemon trades for a session cookie. The browser is
//! started with the URL as one argument (never through a shell); without one, the URL is
//! printed. The link works once, for 60 s.

use std::process::{Command, ExitCode, Stdio};

use argh::FromArgs;
use serde::Deserialize;

use crate::paths::Paths;
use crate::peer::{Client, Method};

/// open the web dashboard in a browser, logged in with a one-time link
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "dashboard")]
pub struct Args {
    /// only print the login link (valid once, for 60 s); do not start a browser
    #[argh(switch)]
    print_url: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenAnswer {
    login_path: String,
}

pub(super) fn run(args: Args, paths: &Paths) -> anyhow::Result<ExitCode> {
    let config = super::load_config(paths)?;
    let client = Client::local(paths, &config.auth.api_key)?;
    let answer: TokenAnswer = smol::block_on(client.call(Method::Post, "/api/v1/dashboard/token", None::<&()>))?;
    let url = format!("{}{}", client.base(), answer.login_path);
    if args.print_url {
        println!("{url}");
        return Ok(ExitCode::SUCCESS);
    }
    if client.base().starts_with("https://") {
        eprintln!("note: the daemon's certificate is self-signed; the browser will ask you to accept it");
    }
    match browser() {
        Some(program) if open_with(&program, &url) => {
            eprintln!("opened the dashboard in your browser ({}/dashboard/)", client.base());
        }
        _ => {
            eprintln!("no browser to open; use this link (it works once, for 60 s):");
            println!("{url}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The program that opens a URL here: `$BROWSER`, else `open` on macOS, else `xdg-open` when
/// a graphical session exists.
fn browser() -> Option<String> {
    if let Some(program) = std::env::var("BROWSER").ok().filter(|p| !p.trim().is_empty()) {
        return Some(program);
    }
    if cfg!(target_os = "macos") {
        return Some("open".into());
    }
    let graphical = std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
    graphical.then(|| "xdg-open".to_string())
}

/// Runs `program <url>` (the URL as a single argument) and says whether it succeeded.
fn open_with(program: &str, url: &str) -> bool {
    let mut command = Command::new(program);
    for name in crate::child_env::own_tuning() {
        command.env_remove(name);
    }
    command
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}
