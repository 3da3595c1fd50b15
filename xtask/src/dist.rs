//! `cargo xtask dist [--debug]`: `target/dist/loopsy-<version>-<target>.tar.gz` with the binary,
//! README.md, LICENSE, shell completions and the man page (both printed by the binary's hidden
//! `generate` command), and a `.sha256` beside it. Release build unless `--debug`.

use std::path::Path;
use std::process::Command;

use anyhow::Context;
use sha2::{Digest, Sha256};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let debug = match args {
        [] => false,
        [flag] if flag == "--debug" => true,
        _ => anyhow::bail!("usage: cargo xtask dist [--debug]"),
    };
    let root = crate::repo_root();
    let bin = crate::build::loopsy(!debug)?;
    let name = format!("loopsy-{}-{}", version(&root)?, target()?);
    let dist = root.join("target/dist");
    let stage = dist.join(&name);
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(stage.join("completions"))?;
    std::fs::create_dir_all(stage.join("man"))?;
    std::fs::copy(&bin, stage.join(bin.file_name().expect("a file name")))?;
    for file in ["README.md", "LICENSE"] {
        std::fs::copy(root.join(file), stage.join(file)).with_context(|| format!("copying {file}"))?;
    }
    for (shell, file) in [("bash", "loopsy.bash"), ("zsh", "_loopsy"), ("fish", "loopsy.fish")] {
        let script = crate::build::run(&bin, &["generate", "completions", shell])?;
        std::fs::write(stage.join("completions").join(file), script)?;
    }
    std::fs::write(stage.join("man/loopsy.1"), crate::build::run(&bin, &["generate", "man"])?)?;

    let archive = dist.join(format!("{name}.tar.gz"));
    let status = Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(&dist)
        .arg(&name)
        .status()
        .context("running tar")?;
    anyhow::ensure!(status.success(), "tar failed");
    let digest = Sha256::digest(std::fs::read(&archive)?);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let sum = dist.join(format!("{name}.tar.gz.sha256"));
    std::fs::write(&sum, format!("{hex}  {name}.tar.gz\n"))?;
    println!("{}\n{}", archive.display(), sum.display());
    Ok(())
}

/// The package version from the root `Cargo.toml`.
fn version(root: &Path) -> anyhow::Result<String> {
    let manifest = std::fs::read_to_string(root.join("Cargo.toml"))?;
    manifest
        .lines()
        .find_map(|line| line.strip_prefix("version = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .map(String::from)
        .context("no version in Cargo.toml")
}

/// The host target triple, from `rustc -vV`.
fn target() -> anyhow::Result<String> {
    let output = Command::new("rustc").arg("-vV").output().context("running rustc -vV")?;
    String::from_utf8(output.stdout)?
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(String::from)
        .context("rustc -vV printed no host")
}
