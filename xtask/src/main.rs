//! `cargo xtask <task>`: project chores plain cargo cannot do.
//!
//! Tasks: `bench` (every benchmark, printed as a table and written as JSON), `fleet` (local
//! sessions), `dist` (release archive), `units` (reviewed service units), `e2e` (multi-daemon
//! scenarios), `link-order` (the release binary's hot functions, profiled), `tidy` (the owners
//! of ARCHITECTURE.md, checked).

mod bench;
mod build;
mod dist;
mod e2e;
mod fleet;
mod http;
mod isolation;
mod link_order;
mod node;
mod reference;
mod slowloris;
mod terminal_bench;
mod tidy;
mod tls_client;
mod units;

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("bench") => bench::run(&args[1..]),
        Some("fleet") => fleet::run(&args[1..]),
        Some("dist") => dist::run(&args[1..]),
        Some("units") => units::run(&args[1..]),
        Some("e2e") => e2e::run(&args[1..]),
        Some("link-order") => link_order::run(&args[1..]),
        Some("tidy") => tidy::run(&args[1..]),
        // Started by the slowloris benchmark, one per batch of connections.
        Some("slowloris-worker") => slowloris::worker(&args[1..]),
        Some("help") | Some("--help") | None => {
            println!(
                "usage: cargo xtask <task>\n\ntasks:\n  \
                 bench [--json FILE] [--only NAME,...] [--reference DIR]\n  \
                                                            run the benchmarks (DIR: a built 1.0.21 to measure beside)\n  \
                 fleet [--count N] [--down] [--home DIR]    start (or stop) N local sessions\n  \
                 dist [--debug]                             build target/dist/loopsy-<version>-<target>.tar.gz\n  \
                 units                                      write the generated service units into dist/units/\n  \
                 e2e [TEST ARGS]                            run the multi-session and netlab scenarios\n  \
                 link-order [--idle SECS]                   profile the daemons and rewrite src/build/link-order.txt\n  \
                 tidy                                       check that every stack and format keeps to its owner"
            );
            Ok(())
        }
        Some(other) => Err(anyhow::anyhow!("unknown task '{other}'; see `cargo xtask help`")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// The repository root (the parent of `xtask/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the repo").to_path_buf()
}
