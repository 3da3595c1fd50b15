//! The `loopsy` binary: parse arguments, dispatch, map errors to exit codes.

use std::process::ExitCode;

use argh::FromArgs;
use loopsy::cli::{self, Loopsy};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).is_some_and(|a| a == "--version" || a == "-V") {
        println!("loopsy {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let words: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    // Packaging helpers, kept out of `--help`.
    if words.first() == Some(&"generate") {
        return match cli::generate::main(&words[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("loopsy: error: {err:#}");
                ExitCode::from(2)
            }
        };
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

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}
