//! `loopsy logs`: the audit log as in 1.0.21 (one JSON line per request), or with `--daemon`
//! the daemon's own log; optionally followed.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;

use crate::paths::Paths;

/// print the audit log (one JSON line per request), or the daemon log
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "logs")]
pub struct Args {
    /// the daemon's own log (logs/daemon.log) instead of the audit log
    #[argh(switch)]
    daemon: bool,
    /// the audit log (the default; accepted for older scripts)
    #[argh(switch)]
    audit: bool,
    /// keep printing new lines as they are written
    #[argh(switch, short = 'f')]
    follow: bool,
    /// how many of the last lines to print first (default 50)
    #[argh(option, short = 'n', default = "50")]
    lines: usize,
}

pub(super) fn run(args: Args, paths: &Paths) -> anyhow::Result<ExitCode> {
    if args.daemon && args.audit {
        anyhow::bail!("--daemon and --audit name different logs: give one");
    }
    let path = if args.daemon { paths.daemon_log() } else { paths.audit_log() };
    if !path.exists() && !args.follow {
        eprintln!("No logs found at {}. Is the daemon running?", path.display());
        return Ok(ExitCode::from(1));
    }
    let mut out = std::io::stdout().lock();
    let mut offset = print_tail(&path, args.lines, &mut out)?;
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        std::thread::sleep(Duration::from_millis(200));
        offset = print_new(&path, offset, &mut out)?;
    }
}

/// Prints the last `lines` lines; returns the offset printed up to.
fn print_tail(path: &Path, lines: usize, out: &mut impl Write) -> anyhow::Result<u64> {
    let Ok(mut file) = File::open(path) else { return Ok(0) };
    let len = file.metadata()?.len();
    // Read a bounded window from the end: enough for `lines` ordinary lines.
    let window = (lines as u64 * 512).clamp(4096, len.max(4096));
    let start = len.saturating_sub(window);
    file.seek(SeekFrom::Start(start))?;
    let mut text = Vec::new();
    file.read_to_end(&mut text)?;
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    // A window that starts mid-file begins with a partial line: drop it.
    let skip_partial = usize::from(start > 0);
    let complete = &all[skip_partial.min(all.len())..];
    for line in &complete[complete.len().saturating_sub(lines)..] {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(start + text.len() as u64)
}

/// Prints what was appended since `offset`; starts over when the file was rotated.
fn print_new(path: &Path, offset: u64, out: &mut impl Write) -> anyhow::Result<u64> {
    let Ok(mut file) = File::open(path) else { return Ok(0) };
    let len = file.metadata()?.len();
    let from = if len < offset { 0 } else { offset };
    file.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)?;
    out.write_all(&buf)?;
    out.flush()?;
    Ok(from + buf.len() as u64)
}
