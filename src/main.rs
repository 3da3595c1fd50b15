//! The `loopsy` binary: parse arguments, dispatch, map errors to exit codes.

use std::process::ExitCode;

use argh::FromArgs;
use loopsy::cli::{self, Loopsy};

fn main() -> ExitCode {
    // smol's global executor runs one thread unless told otherwise; the daemon serves every
    // connection on it, so give it one per core (2 to 8). Set before any thread exists.
    if std::env::var_os("SMOL_THREADS").is_none() {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8);
        std::env::set_var("SMOL_THREADS", threads.to_string());
    }
    let args: Vec<String> = std::env::args().collect();
    let words: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    if asks_version(&words) {
        println!("{}", cli::version());
        return ExitCode::SUCCESS;
    }
    let parsed = match Loopsy::from_args(&["loopsy"], &words) {
        Ok(parsed) => parsed,
        Err(early) => {
            return match early.status {
                Ok(()) => {
                    print!("{}", early.output);
                    ExitCode::SUCCESS
                }
                Err(()) => {
                    eprint!("{}", early.output);
                    eprintln!("Run `loopsy help` for usage.");
                    ExitCode::from(2)
                }
            };
        }
    };
    match cli::run(parsed) {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("loopsy: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// `--version` or `-V` in place of a command (after global options such as `--home DIR`).
fn asks_version(words: &[&str]) -> bool {
    let mut rest = words;
    while let ["--home", _, tail @ ..] = rest {
        rest = tail;
    }
    matches!(rest.first(), Some(&"--version" | &"-V"))
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}
