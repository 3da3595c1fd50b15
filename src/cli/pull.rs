//! `loopsy pull <peer> <src> <dest>`: download a file, or with `-r` a directory tree, from a peer.
//!
//! Each file streams into a hidden partial file beside its destination (continued with `Range`
//! after an interruption, also by a later run), is checked against the peer's SHA-256 and
//! size, then fsync'd and renamed into place. A tree is walked with `/transfer/list`: structure,
//! modes and empty directories are recreated; remote symlinks are reported as skipped.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::peer::Method;
use anyhow::Context;
use argh::FromArgs;
use serde::Deserialize;
use serde_json::json;

use super::progress::Progress;
use super::send::TreeReport;
use crate::paths::Paths;
use crate::peer::transfer::Pulled;
use crate::peer::{Client, ClientError};
use crate::resolve::resolve;

/// Attempts per file when the connection breaks (each one resumes).
const ATTEMPTS: u32 = 3;

/// fetch a file (or with -r a directory tree) from a peer
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "pull")]
pub struct Args {
    /// the peer: local, host or host:port
    #[argh(positional)]
    peer: String,
    /// absolute path of the file or directory on the peer
    #[argh(positional)]
    source: String,
    /// local destination; an existing directory (or a path ending in /) receives the file inside
    #[argh(positional)]
    dest: PathBuf,
    /// copy a directory tree (structure, modes, empty directories; symlinks are skipped)
    #[argh(switch, short = 'r')]
    recursive: bool,
    /// show no progress
    #[argh(switch, short = 'q')]
    quiet: bool,
    /// print the result as JSON
    #[argh(switch)]
    json: bool,
    /// key to present to the peer (default: this node's own key)
    #[argh(option, short = 'k')]
    key: Option<String>,
}

/// One entry of `/transfer/list`.
#[derive(Debug, Deserialize)]
struct RemoteEntry {
    name: String,
    path: String,
    #[serde(rename = "type")]
    kind: String,
    /// Absent from 1.0.21 peers.
    mode: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct Listing {
    files: Vec<RemoteEntry>,
}

pub(super) fn run(args: Args, paths: &Paths) -> anyhow::Result<ExitCode> {
    let config = super::load_config(paths)?;
    let target = smol::block_on(resolve(paths, &config, &args.peer, args.key.as_deref()))?;
    if args.recursive {
        return smol::block_on(pull_tree(&target.client, &args)).finish("pulled", args.json);
    }
    let mut dest = args.dest.clone();
    if args.dest.is_dir() || args.dest.as_os_str().to_string_lossy().ends_with('/') {
        let name = args.source.trim_end_matches('/').rsplit('/').next().unwrap_or_default();
        anyhow::ensure!(!name.is_empty(), "'{}' has no file name to use inside {}", args.source, dest.display());
        dest.push(name);
    }
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let pulled =
        smol::block_on(pull_with_retries(&target.client, &args.source, &dest, args.quiet)).map_err(|e| match e {
            ClientError::Remote { code: Some(4002), message, .. } => {
                anyhow::anyhow!("{message} (for a directory, use -r)")
            }
            other => other.into(),
        })?;
    if args.json {
        println!("{}", serde_json::to_string(&pulled)?);
    } else {
        let verified = if pulled.verified { "verified" } else { "not verified: the peer sent no checksum" };
        println!("File pulled: {} ({} bytes, sha256: {}, {verified})", dest.display(), pulled.size, pulled.checksum);
    }
    Ok(ExitCode::SUCCESS)
}

/// Pulls one file; a broken connection is retried, continuing where it stopped.
pub(super) async fn pull_with_retries(
    client: &Client,
    source: &str,
    dest: &Path,
    quiet: bool,
) -> Result<Pulled, ClientError> {
    let progress = Progress::new(source, quiet);
    let mut attempt = 1;
    loop {
        let moved = progress.moved();
        let result = client.pull_file(source, dest, progress.callback()).await;
        progress.finish();
        match result {
            // Only a transfer that got going is retried: a peer that is down stays down.
            Err(e @ (ClientError::Unreachable { .. } | ClientError::Timeout { .. }))
                if attempt < ATTEMPTS && moved.load(std::sync::atomic::Ordering::Relaxed) =>
            {
                if !quiet {
                    eprintln!("loopsy: {e}; resuming {source} (attempt {})", attempt + 1);
                }
                async_io::Timer::after(std::time::Duration::from_secs(u64::from(attempt))).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn list(client: &Client, path: &str) -> Result<Vec<RemoteEntry>, ClientError> {
    let listing: Listing = client.call_retrying(Method::Post, "/api/v1/transfer/list", &json!({"path": path})).await?;
    Ok(listing.files)
}

async fn pull_tree(client: &Client, args: &Args) -> TreeReport {
    let mut report = TreeReport::default();
    let root = args.source.trim_end_matches('/').to_string();
    // (remote directory, local directory) still to copy
    let mut pending = vec![(root.clone(), args.dest.clone())];
    let mut dir_modes: Vec<(PathBuf, Option<u32>)> = Vec::new();
    while let Some((remote, local)) = pending.pop() {
        let entries = match list(client, &remote).await {
            Ok(entries) => entries,
            Err(e) => {
                report.fail(remote, e, args.quiet);
                continue;
            }
        };
        if let Err(e) = std::fs::create_dir_all(&local) {
            report.fail(local.display().to_string(), e, args.quiet);
            continue;
        }
        report.directories += 1;
        let mut entries = entries;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        for entry in entries {
            if entry.name.contains('/') || entry.name == ".." || entry.name == "." || entry.name.is_empty() {
                report.fail(entry.path, "the peer listed an unsafe name", args.quiet);
                continue;
            }
            let target = local.join(&entry.name);
            match entry.kind.as_str() {
                "directory" => {
                    dir_modes.push((target.clone(), entry.mode));
                    pending.push((entry.path, target));
                }
                "file" => match pull_with_retries(client, &entry.path, &target, args.quiet).await {
                    Ok(pulled) => {
                        set_mode(&target, entry.mode);
                        report.files.push(json!({"path": target, "size": pulled.size, "checksum": pulled.checksum}));
                    }
                    Err(e) => report.fail(entry.path, e, args.quiet),
                },
                _ => report.skipped.push(entry.path),
            }
        }
    }
    for (dir, mode) in dir_modes.iter().rev() {
        set_mode(dir, *mode);
    }
    report
}

fn set_mode(path: &Path, mode: Option<u32>) {
    use std::os::unix::fs::PermissionsExt;
    if let Some(mode) = mode {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o777));
    }
}
