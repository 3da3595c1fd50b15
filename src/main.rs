//! The `loopsy` binary: parse arguments, dispatch, map errors to exit codes.

use std::process::ExitCode;

use argh::FromArgs;
use loopsy::cli::{self, Loopsy};

fn main() -> ExitCode {
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
    // Parsing starts no thread: this is still before any thread exists.
    cli::set_executor_threads(&parsed);
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
