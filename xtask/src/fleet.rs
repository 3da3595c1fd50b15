//! `cargo xtask fleet [--count N] [--down] [--home DIR]`: N local sessions of a debug build, for
//! trying multi-agent setups by hand (home `target/fleet` unless `--home`).

use std::path::PathBuf;

use anyhow::Context;

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut count = 3u32;
    let mut down = false;
    let mut home = crate::repo_root().join("target/fleet");
    let mut words = args.iter();
    while let Some(word) = words.next() {
        match word.as_str() {
            "--count" | "-c" => count = words.next().context("--count needs a number")?.parse().context("--count")?,
            "--down" => down = true,
            "--home" => home = PathBuf::from(words.next().context("--home needs a directory")?),
            other => anyhow::bail!("unknown argument '{other}' (fleet [--count N] [--down] [--home DIR])"),
        }
    }
    let bin = crate::build::loopsy(false)?;
    let home_arg = home.to_string_lossy().into_owned();
    if down {
        print!("{}", crate::build::run(&bin, &["--home", &home_arg, "session", "stop-all"])?);
        return Ok(());
    }
    if !home.join("config.yaml").exists() {
        crate::build::run(&bin, &["--home", &home_arg, "init"])?;
        // Loopback only, not announced on the LAN.
        crate::build::run(&bin, &["generate", "local-config", &home_arg])?;
    }
    let count_arg = count.to_string();
    crate::build::run(&bin, &["--home", &home_arg, "session", "start-fleet", "--count", &count_arg])?;
    let listing: serde_json::Value =
        serde_json::from_str(&crate::build::run(&bin, &["--home", &home_arg, "session", "list", "--json"])?)?;
    println!("{:<12} {:<7} {:<24} {:<9} KEY", "NAME", "PORT", "URL", "STATUS");
    for session in listing["sessions"].as_array().into_iter().flatten() {
        let port = session["port"].as_u64().unwrap_or(0);
        println!(
            "{:<12} {:<7} {:<24} {:<9} {}/config.yaml (auth.apiKey)",
            session["name"].as_str().unwrap_or("?"),
            port,
            format!("http://127.0.0.1:{port}"),
            session["status"].as_str().unwrap_or("?"),
            session["dataDir"].as_str().unwrap_or("?"),
        );
    }
    println!("\nuse one: loopsy --home {home_arg}/sessions/worker-1 status; stop them: cargo xtask fleet --down");
    Ok(())
}
