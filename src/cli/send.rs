//! `loopsy send <peer> <src> <dest>`: upload a file, or with `-r` a directory tree, to a peer.
//!
//! Files stream from disk (never whole in memory), are verified by SHA-256 on both ends and
//! resume after a cut connection, also across runs. A tree keeps its structure, file and
//! directory modes and empty directories; symlinks are not followed and are reported as skipped.
//! One file failing does not stop the others, but makes the exit code non-zero.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::peer::Method;
use anyhow::{bail, Context};
use argh::FromArgs;
use serde::Serialize;
use serde_json::json;

use super::progress::{human_bytes, Progress};
use crate::paths::Paths;
use crate::peer::transfer::{PushFile, PushReply};
use crate::peer::{Client, ClientError};
use crate::resolve::resolve;

/// Attempts per file when the connection breaks (each one resumes).
const ATTEMPTS: u32 = 3;

/// send a file (or with -r a directory tree) to a peer
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "send")]
pub struct Args {
    /// the peer: local, host or host:port
    #[argh(positional)]
    peer: String,
    /// the local file or directory
    #[argh(positional)]
    source: PathBuf,
    /// absolute destination path on the peer; ending in / puts the file inside that directory
    #[argh(positional)]
    dest: String,
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

/// The outcome of a recursive copy, in either direction.
#[derive(Debug, Default, Serialize)]
pub(super) struct TreeReport {
    /// Files copied: `{path, size, checksum}` (the destination path).
    pub files: Vec<serde_json::Value>,
    pub directories: usize,
    /// Symlinks and special files, not copied.
    pub skipped: Vec<String>,
    pub failed: Vec<Failure>,
}

#[derive(Debug, Serialize)]
pub(super) struct Failure {
    pub path: String,
    pub error: String,
}

impl TreeReport {
    pub(super) fn fail(&mut self, path: impl Into<String>, error: impl std::fmt::Display, quiet: bool) {
        let failure = Failure { path: path.into(), error: error.to_string() };
        if !quiet {
            eprintln!("loopsy: failed: {}: {}", failure.path, failure.error);
        }
        self.failed.push(failure);
    }

    /// Prints the summary (or JSON) and gives the exit code: 2 if anything failed.
    pub(super) fn finish(self, verb: &str, json: bool) -> anyhow::Result<ExitCode> {
        let failed = self.failed.len();
        if json {
            println!("{}", serde_json::to_string_pretty(&self)?);
        } else {
            let bytes: u64 = self.files.iter().filter_map(|f| f["size"].as_u64()).sum();
            println!(
                "{verb} {} file(s) ({}) and {} directorie(s); {} skipped, {failed} failed",
                self.files.len(),
                human_bytes(bytes),
                self.directories,
                self.skipped.len()
            );
            for skipped in &self.skipped {
                println!("  skipped (not a regular file or directory): {skipped}");
            }
        }
        if failed > 0 {
            bail!("{failed} item(s) failed");
        }
        Ok(ExitCode::SUCCESS)
    }
}

pub(super) fn run(args: Args, paths: &Paths) -> anyhow::Result<ExitCode> {
    let config = super::load_config(paths)?;
    let target = smol::block_on(resolve(paths, &config, &args.peer, args.key.as_deref()))?;
    let meta = std::fs::metadata(&args.source).with_context(|| format!("cannot read {}", args.source.display()))?;
    if meta.is_dir() {
        if !args.recursive {
            bail!("{} is a directory: use -r to send a tree", args.source.display());
        }
        return smol::block_on(send_tree(&target.client, &args)).finish("sent", args.json);
    }
    let mut dest = args.dest.clone();
    if dest.ends_with('/') {
        dest.push_str(&file_name(&args.source)?);
    }
    let job = PushFile { source: args.source.clone(), dest_path: dest, mode: Some(mode_of(&meta)) };
    let reply = smol::block_on(push_with_retries(&target.client, &job, args.quiet))?;
    if args.json {
        println!(
            "{}",
            json!({"path": reply.path, "size": reply.size, "checksum": reply.checksum, "duration": reply.duration, "resumedFrom": reply.resumed_from})
        );
    } else {
        println!("File sent: {} ({} bytes, sha256: {})", reply.path, reply.size, reply.checksum);
    }
    Ok(ExitCode::SUCCESS)
}

/// Pushes one file; a broken connection is retried, continuing where it stopped.
pub(super) async fn push_with_retries(client: &Client, job: &PushFile, quiet: bool) -> Result<PushReply, ClientError> {
    let progress = Progress::new(job.source.display().to_string(), quiet);
    let mut attempt = 1;
    loop {
        let moved = progress.moved();
        let result = client.push_file(job, progress.callback()).await;
        progress.finish();
        match result {
            // Only a transfer that got going is retried: a peer that is down stays down.
            Err(e @ (ClientError::Unreachable { .. } | ClientError::Timeout { .. }))
                if attempt < ATTEMPTS && moved.load(std::sync::atomic::Ordering::Relaxed) =>
            {
                if !quiet {
                    eprintln!("loopsy: {e}; resuming {} (attempt {})", job.source.display(), attempt + 1);
                }
                async_io::Timer::after(std::time::Duration::from_secs(u64::from(attempt))).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn send_tree(client: &Client, args: &Args) -> TreeReport {
    let mut report = TreeReport::default();
    let root = args.dest.trim_end_matches('/').to_string();
    let entries = walk(&args.source, &mut report, args.quiet);
    let mut dirs = vec![(String::new(), mode_of_path(&args.source))];
    dirs.extend(entries.iter().filter(|e| e.kind == Kind::Dir).map(|e| (e.rel.clone(), e.mode)));
    // Directories first (writable while being filled), their modes last, deepest first.
    for (rel, _) in &dirs {
        let remote = join(&root, rel);
        match mkdir(client, &remote, None).await {
            Ok(()) => report.directories += 1,
            Err(e) if rel.is_empty() => {
                report.fail(remote, e, args.quiet);
                return report;
            }
            Err(e) => report.fail(remote, e, args.quiet),
        }
    }
    for entry in &entries {
        let remote = join(&root, &entry.rel);
        match entry.kind {
            Kind::Dir => {}
            Kind::Other => report.skipped.push(entry.path.display().to_string()),
            Kind::File => {
                let job = PushFile { source: entry.path.clone(), dest_path: remote.clone(), mode: Some(entry.mode) };
                match push_with_retries(client, &job, args.quiet).await {
                    Ok(reply) => {
                        report.files.push(json!({"path": remote, "size": reply.size, "checksum": reply.checksum}))
                    }
                    Err(e) => report.fail(entry.path.display().to_string(), e, args.quiet),
                }
            }
        }
    }
    for (rel, mode) in dirs.iter().rev() {
        let remote = join(&root, rel);
        if let Err(e) = mkdir(client, &remote, Some(*mode)).await {
            report.fail(remote, e, args.quiet);
        }
    }
    report
}

async fn mkdir(client: &Client, path: &str, mode: Option<u32>) -> Result<(), ClientError> {
    let body = json!({"path": path, "mode": mode.map(|m| format!("{m:o}"))});
    client.call_retrying::<serde_json::Value>(Method::Post, "/api/v1/transfer/mkdir", &body).await.map(|_| ())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    /// Symlinks, sockets, devices: not copied.
    Other,
}

struct Entry {
    path: PathBuf,
    /// `/`-separated path below the root.
    rel: String,
    kind: Kind,
    mode: u32,
}

/// Every entry below `root`, parents before children, names sorted; symlinks are not followed.
fn walk(root: &Path, report: &mut TreeReport, quiet: bool) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut pending = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = pending.pop() {
        let mut names: Vec<_> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries.flatten().collect(),
            Err(e) => {
                report.fail(dir.display().to_string(), e, quiet);
                continue;
            }
        };
        names.sort_by_key(|e| e.file_name());
        let mut subdirs = Vec::new();
        for entry in names {
            let Some(name) = entry.file_name().to_str().map(String::from) else {
                report.fail(entry.path().display().to_string(), "the name is not UTF-8", quiet);
                continue;
            };
            let child_rel = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            let Ok(meta) = std::fs::symlink_metadata(entry.path()) else { continue };
            let kind = if meta.is_dir() {
                Kind::Dir
            } else if meta.is_file() {
                Kind::File
            } else {
                Kind::Other
            };
            if kind == Kind::Dir {
                subdirs.push((entry.path(), child_rel.clone()));
            }
            out.push(Entry { path: entry.path(), rel: child_rel, kind, mode: mode_of(&meta) });
        }
        pending.extend(subdirs.into_iter().rev());
    }
    out
}

fn join(root: &str, rel: &str) -> String {
    if rel.is_empty() {
        root.to_string()
    } else {
        format!("{root}/{rel}")
    }
}

fn file_name(path: &Path) -> anyhow::Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(String::from)
        .with_context(|| format!("{} has no usable file name", path.display()))
}

fn mode_of(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o777
}

fn mode_of_path(path: &Path) -> u32 {
    std::fs::metadata(path).map(|m| mode_of(&m)).unwrap_or(0o755)
}
