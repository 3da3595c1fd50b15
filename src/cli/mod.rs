//! The command line: one file per subcommand, each with its `argh` struct and a `run`.

mod approvals;
mod connect;
mod context;
mod daemon;
mod dashboard;
mod doctor;
mod exec;
pub mod generate;
mod init;
mod key;
mod lock;
mod logs;
mod ls;
mod mcp;
mod message;
mod pair;
mod peers;
mod progress;
mod pull;
mod send;
mod service;
mod session;
mod status;
mod task;
mod term;

use std::path::PathBuf;
use std::process::ExitCode;

use argh::FromArgs;

use crate::config::Config;
use crate::paths::Paths;

/// Let AI coding agents on different machines work together over the LAN.
#[derive(FromArgs, Debug)]
pub struct Loopsy {
    /// data directory (default: $LOOPSY_HOME, else ~/.loopsy)
    #[argh(option)]
    pub home: Option<PathBuf>,
    #[argh(subcommand)]
    pub command: Command,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    Init(init::Args),
    Start(daemon::StartArgs),
    Stop(daemon::StopArgs),
    Restart(daemon::RestartArgs),
    Status(status::Args),
    Dashboard(dashboard::Args),
    Exec(exec::Args),
    Lock(lock::Args),
    Locks(lock::ListArgs),
    Key(key::Args),
    Logs(logs::Args),
    Mcp(mcp::Args),
    Message(message::Args),
    Context(context::Args),
    Pair(pair::Args),
    Peers(peers::Args),
    Connect(connect::Args),
    Send(send::Args),
    Pull(pull::Args),
    Ls(ls::Args),
    Task(task::Args),
    Approvals(approvals::Args),
    Term(term::Args),
    Session(session::Args),
    Doctor(doctor::Args),
    Enable(service::EnableArgs),
    Disable(service::DisableArgs),
    ServiceStatus(service::StatusArgs),
    Generate(generate::Args),
    Version(VersionArgs),
}

/// print the version
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "version")]
pub struct VersionArgs {}

/// Gives smol's global executor its threads (`SMOL_THREADS`, read when it first runs), unless
/// the user set them. Call before any thread exists.
///
/// The daemon gets one: that thread both waits for I/O and runs what the I/O wakes, so no
/// request hops between threads on its way (with two, async-executor hands nearly every
/// readiness to the other thread: ~0.1 ms of an `echo` exec's 1.3 ms). What would hold that
/// thread up has threads of its own: spawns while other jobs run, journal and file writes,
/// fsyncs, hashing. Other commands (CLI, MCP server) get one per core, 2 to 8.
pub fn set_executor_threads(args: &Loopsy) {
    let daemon = matches!(&args.command, Command::Start(start) if start.in_foreground());
    crate::child_env::set_executor_threads(if daemon {
        1
    } else {
        std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8)
    });
}

/// Runs the parsed command. Exit codes: 0 success, 1 "ran fine, the answer is no", 2 error.
pub fn run(args: Loopsy) -> anyhow::Result<ExitCode> {
    // Printed from the command tree alone: no data directory needed.
    if let Command::Generate(cmd) = args.command {
        generate::run(cmd)?;
        return Ok(ExitCode::SUCCESS);
    }
    let paths = Paths::resolve(args.home.as_deref())?;
    match args.command {
        Command::Init(cmd) => init::run(cmd, &paths),
        Command::Start(cmd) => daemon::start(cmd, &paths),
        Command::Stop(cmd) => daemon::stop(cmd, &paths),
        Command::Restart(cmd) => daemon::restart(cmd, &paths),
        Command::Status(cmd) => status::run(cmd, &paths),
        Command::Dashboard(cmd) => dashboard::run(cmd, &paths),
        Command::Exec(cmd) => exec::run(cmd, &paths),
        Command::Lock(cmd) => lock::run(cmd, &paths),
        Command::Locks(cmd) => lock::list(cmd, &paths),
        Command::Key(cmd) => key::run(cmd, &paths),
        Command::Logs(cmd) => logs::run(cmd, &paths),
        Command::Mcp(cmd) => mcp::run(cmd, &paths),
        Command::Message(cmd) => message::run(cmd, &paths),
        Command::Context(cmd) => context::run(cmd, &paths),
        Command::Pair(cmd) => pair::run(cmd, &paths),
        Command::Peers(cmd) => peers::run(cmd, &paths),
        Command::Connect(cmd) => connect::run(cmd, &paths),
        Command::Send(cmd) => send::run(cmd, &paths),
        Command::Pull(cmd) => pull::run(cmd, &paths),
        Command::Ls(cmd) => ls::run(cmd, &paths),
        Command::Task(cmd) => task::run(cmd, &paths),
        Command::Approvals(cmd) => approvals::run(cmd, &paths),
        Command::Term(cmd) => term::run(cmd, &paths),
        Command::Session(cmd) => session::run(cmd, &paths),
        Command::Doctor(cmd) => doctor::run(cmd, &paths),
        Command::Enable(cmd) => service::enable(cmd, &paths),
        Command::Disable(cmd) => service::disable(cmd, &paths),
        Command::ServiceStatus(cmd) => service::status(cmd, &paths),
        Command::Generate(_) => unreachable!("dispatched above"),
        Command::Version(_) => {
            println!("{}", version());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `loopsy 0.1.0 (protocol 1.0.21)`: `loopsy version`, `--version` and `-V`.
pub fn version() -> String {
    format!("loopsy {} (protocol {})", env!("CARGO_PKG_VERSION"), crate::identity::PROTOCOL_VERSION)
}

/// Loads the config of `paths` for a command that needs it.
fn load_config(paths: &Paths) -> anyhow::Result<Config> {
    Ok(Config::load(paths)?)
}
