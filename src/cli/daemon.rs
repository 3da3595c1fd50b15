//! `loopsy start|stop|restart`: the daemon's lifecycle.
//!
//! `start` launches `loopsy start --foreground` detached, with its output in `logs/daemon.log`,
//! and returns once the daemon answers `/health` (or reports why it did not come up).
//! `stop` signals only the process that holds the instance lock (see `instance`).
//! A daemon run by a service manager (`managedBy` in `daemon.json`, or an installed unit for this
//! data directory) is started, stopped and restarted through that manager (`crate::service`).

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use argh::FromArgs;

use crate::config::Config;
use crate::instance::{self, Daemon};
use crate::paths::Paths;
use crate::service::{self, Manager};

/// How long `start` waits for the daemon to answer.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Rotate the daemon log at start once it is bigger than this.
const DAEMON_LOG_MAX: u64 = 10 * 1024 * 1024;

/// start the daemon in the background (or in the foreground for service managers and tests)
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "start")]
pub struct StartArgs {
    /// run in this process, logging to stderr, until SIGTERM or SIGINT
    #[argh(switch)]
    foreground: bool,
    /// listen on this port instead of server.port (0 picks a free one)
    #[argh(option)]
    port: Option<u16>,
    /// listen on this address instead of server.host
    #[argh(option)]
    host: Option<String>,
    /// name of the service manager running this daemon (set by generated units)
    #[argh(option)]
    managed_by: Option<String>,
}

impl StartArgs {
    /// Whether this command runs the daemon in this process.
    pub(super) fn in_foreground(&self) -> bool {
        self.foreground
    }
}

/// stop the running daemon gracefully
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "stop")]
pub struct StopArgs {
    /// seconds to wait for the daemon to exit (default 20)
    #[argh(option, default = "20")]
    timeout: u64,
}

/// stop the daemon if it runs, then start it
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "restart")]
pub struct RestartArgs {
    /// listen on this port instead of server.port
    #[argh(option)]
    port: Option<u16>,
    /// listen on this address instead of server.host
    #[argh(option)]
    host: Option<String>,
}

pub(super) fn start(args: StartArgs, paths: &Paths) -> anyhow::Result<ExitCode> {
    let mut config = super::load_config(paths)?;
    if let Some(port) = args.port {
        config.server.port = port;
    }
    if let Some(host) = &args.host {
        host.parse::<std::net::IpAddr>().with_context(|| format!("--host '{host}' is not an IP address"))?;
        config.server.host = host.clone();
    }
    if args.foreground {
        crate::logger::init(config.logging.level.filter());
        for key in Config::unknown_keys(&std::fs::read_to_string(paths.config_file()).unwrap_or_default()) {
            log::warn!("{}: unknown key '{key}' ignored", paths.config_file().display());
        }
        crate::daemon::run(paths.clone(), config, args.managed_by)?;
        return Ok(ExitCode::SUCCESS);
    }
    start_background(paths, &config, args.port, args.host.as_deref())
}

fn start_background(paths: &Paths, config: &Config, port: Option<u16>, host: Option<&str>) -> anyhow::Result<ExitCode> {
    match instance::probe(paths)? {
        Daemon::Running(info) => {
            match &info.managed_by {
                Some(manager) => {
                    println!("loopsy daemon already running under {manager} (PID {}) at {}", info.pid, info.url)
                }
                None => println!("loopsy daemon already running (PID {}) at {}", info.pid, info.url),
            }
            return Ok(ExitCode::SUCCESS);
        }
        Daemon::Starting { pid } => {
            println!("loopsy daemon already starting (PID {pid})");
            return Ok(ExitCode::SUCCESS);
        }
        Daemon::NotRunning => {}
    }
    if let Some(manager) = service::installed_for(paths) {
        return start_managed(paths, manager, false);
    }
    std::fs::create_dir_all(paths.logs_dir())?;
    let log_path = paths.daemon_log();
    rotate_if_large(&log_path);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let log_start = log.metadata()?.len();

    let exe = std::env::current_exe().context("finding the loopsy binary")?;
    let mut command = Command::new(exe);
    command.arg("--home").arg(paths.home()).args(["start", "--foreground"]);
    if let Some(port) = port {
        command.args(["--port", &port.to_string()]);
    }
    if let Some(host) = host {
        command.args(["--host", host]);
    }
    command.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    detach(&mut command);
    let mut child = command.spawn().context("spawning the daemon")?;
    let pid = child.id();

    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            let output = read_from(&log_path, log_start);
            bail!("the daemon exited during start-up ({status}):\n{}", output.trim_end());
        }
        if let Daemon::Running(info) = instance::probe(paths)? {
            if info.pid == pid && healthy(paths) {
                println!("loopsy daemon started (PID {pid}) at {}", info.url);
                println!("  Logs: {}", log_path.display());
                let _ = config;
                return Ok(ExitCode::SUCCESS);
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the daemon (PID {pid}) did not answer within {} s; see {}",
                START_TIMEOUT.as_secs(),
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn healthy(paths: &Paths) -> bool {
    let Ok(client) = crate::peer::Client::local(paths, "") else { return false };
    smol::block_on(client.with_timeout(Duration::from_secs(2)).get::<serde_json::Value>("/api/v1/health")).is_ok()
}

/// A new session, so the daemon outlives the terminal and its signals.
fn detach(command: &mut Command) {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                close_inherited_on_exec();
                Ok(())
            });
        }
    }
}

/// Marks every descriptor above stderr close-on-exec: the daemon must not keep what its starter
/// happened to hold open (a lock, a pipe) for its whole life. Only async-signal-safe calls.
#[cfg(unix)]
fn close_inherited_on_exec() {
    #[cfg(target_os = "linux")]
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on descriptors.
    let done = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) } == 0;
    #[cfg(not(target_os = "linux"))]
    let done = false;
    if !done {
        for fd in 3..1024 {
            // SAFETY: fcntl on a descriptor number; invalid ones just fail.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
}

fn rotate_if_large(path: &std::path::Path) {
    if std::fs::metadata(path).is_ok_and(|m| m.len() > DAEMON_LOG_MAX) {
        let _ = std::fs::rename(path, path.with_extension("log.1"));
    }
}

fn read_from(path: &std::path::Path, offset: u64) -> String {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let _ = file.seek(SeekFrom::Start(offset));
        let _ = file.read_to_string(&mut text);
    }
    text
}

pub(super) fn stop(args: StopArgs, paths: &Paths) -> anyhow::Result<ExitCode> {
    if let Daemon::Running(info) = instance::probe(paths)? {
        if let Some(name) = &info.managed_by {
            stop_managed(paths, name, info.pid, Duration::from_secs(args.timeout))?;
            println!("loopsy daemon stopped through {name} (PID {})", info.pid);
            return Ok(ExitCode::SUCCESS);
        }
    }
    match stop_daemon(paths, Duration::from_secs(args.timeout))? {
        Some(pid) => println!("loopsy daemon stopped (PID {pid})"),
        None => println!("loopsy daemon is not running"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Stops the daemon of `paths`; returns its PID, or `None` if none was running.
fn stop_daemon(paths: &Paths, timeout: Duration) -> anyhow::Result<Option<u32>> {
    instance::terminate(paths, timeout)
}

pub(super) fn restart(args: RestartArgs, paths: &Paths) -> anyhow::Result<ExitCode> {
    super::load_config(paths)?;
    let managed = match instance::probe(paths)? {
        Daemon::Running(info) => info.managed_by.as_deref().and_then(Manager::from_name),
        _ => None,
    };
    if let Some(manager) = managed.or_else(|| service::installed_for(paths)) {
        return start_managed(paths, manager, true);
    }
    if let Some(pid) = stop_daemon(paths, Duration::from_secs(20))? {
        println!("loopsy daemon stopped (PID {pid})");
    }
    start(StartArgs { foreground: false, port: args.port, host: args.host, managed_by: None }, paths)
}

/// Stops a daemon a service manager runs: through the manager, since a signal alone would be
/// undone by its restart policy (or leave it believing the service failed).
fn stop_managed(paths: &Paths, name: &str, pid: u32, timeout: Duration) -> anyhow::Result<()> {
    let Some(manager) = Manager::from_name(name) else {
        bail!("the daemon (PID {pid}) is managed by {name}; stop it through {name}");
    };
    let command = manager.stop_command();
    if let Err(e) = service::run(&command) {
        bail!(
            "the daemon (PID {pid}) is managed by {name}, and stopping it through {name} failed: {e:#}\n\
             stop it with: {}",
            command.join(" ")
        );
    }
    let deadline = Instant::now() + timeout;
    while instance::lock_holder(&paths.lock_file())? == Some(pid) {
        if Instant::now() > deadline {
            bail!("the daemon (PID {pid}) did not stop within {} s", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// (Re)starts the daemon through the service manager whose unit runs it, and waits for it.
fn start_managed(paths: &Paths, manager: Manager, restart: bool) -> anyhow::Result<ExitCode> {
    let old_pid = match instance::probe(paths)? {
        Daemon::Running(info) => Some(info.pid),
        _ => None,
    };
    let commands = manager.start_commands(restart);
    let (last, before) = commands.split_last().expect("at least one command");
    for command in before {
        let _ = service::run(command);
    }
    if let Err(e) = service::run(last) {
        bail!(
            "the daemon is managed by {} (installed unit), and `{}` failed: {e:#}\n\
             run it yourself, or `loopsy disable` to start the daemon by hand",
            manager.name(),
            last.join(" ")
        );
    }
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Daemon::Running(info) = instance::probe(paths)? {
            if Some(info.pid) != old_pid && healthy(paths) {
                println!("loopsy daemon started by {} (PID {}) at {}", manager.name(), info.pid, info.url);
                println!("  Logs: {}", paths.daemon_log().display());
                return Ok(ExitCode::SUCCESS);
            }
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not bring the daemon up within {} s; see {}",
                manager.name(),
                START_TIMEOUT.as_secs(),
                paths.daemon_log().display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
