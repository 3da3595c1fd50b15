//! Building and locating the `loopsy` binary for the tasks that run it.

use std::path::PathBuf;
use std::process::Command;

/// `cargo build` of the loopsy binary; returns its path.
pub fn loopsy(release: bool) -> anyhow::Result<PathBuf> {
    let mut args = vec!["build", "--package", "loopsy", "--bin", "loopsy"];
    if release {
        args.push("--release");
    }
    let status = Command::new(env!("CARGO")).args(&args).current_dir(crate::repo_root()).status()?;
    anyhow::ensure!(status.success(), "cargo {} failed", args.join(" "));
    let profile = if release { "release" } else { "debug" };
    Ok(crate::repo_root().join("target").join(profile).join(format!("loopsy{}", std::env::consts::EXE_SUFFIX)))
}

/// Runs `loopsy <args>`; returns its stdout, or an error with its stderr.
pub fn run(bin: &std::path::Path, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(bin).args(args).output()?;
    anyhow::ensure!(
        output.status.success(),
        "loopsy {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}
