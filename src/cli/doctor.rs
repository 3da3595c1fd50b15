//! `loopsy doctor`: runs `crate::doctor`'s checks and prints them as §12.3's table (or JSON);
//! exits 1 when a check fails (warnings do not).

use std::process::ExitCode;

use argh::FromArgs;
use serde_json::json;

use crate::doctor::{self, Level};
use crate::paths::Paths;

/// check this node's setup and say how to fix what is wrong
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "doctor")]
pub struct Args {
    /// print JSON: {"checks": [{"name", "status", "message", "fix"}], "failed", "warnings"}
    #[argh(switch)]
    json: bool,
}

pub(super) fn run(args: Args, paths: &Paths) -> anyhow::Result<ExitCode> {
    let checks = doctor::run(paths, crate::clock::now_ms());
    let failed = checks.iter().filter(|c| c.status == Level::Fail).count();
    let warnings = checks.iter().filter(|c| c.status == Level::Warn).count();
    if args.json {
        let out = json!({"checks": checks, "failed": failed, "warnings": warnings});
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("Loopsy Health Check");
        println!("{}", "-".repeat(50));
        for check in &checks {
            let tag = match check.status {
                Level::Ok => "OK  ",
                Level::Warn => "WARN",
                Level::Fail => "FAIL",
            };
            println!("  [{tag}] {:<10} {}", check.name, check.message);
            if let Some(fix) = check.fix.as_ref().filter(|_| check.status != Level::Ok) {
                println!("          Fix: {fix}");
            }
        }
        println!();
        if failed == 0 {
            println!(
                "All checks passed!{}",
                if warnings > 0 { format!(" ({warnings} warning(s))") } else { String::new() }
            );
        } else {
            println!("{failed} check(s) failed.");
        }
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
