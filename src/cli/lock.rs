//! `loopsy lock <peer> <name> [--ttl S] [--wait S] -- <cmd>...`: runs a command on this machine
//! while holding a lock on a daemon, like flock(1) across machines; `loopsy locks [<peer>]` lists
//! a daemon's locks.
//!
//! The lock is renewed every third of its TTL while the command runs and released when it ends,
//! whatever way it ends (Ctrl-C included). The command sees `LOOPSY_LOCK_NAME`,
//! `LOOPSY_LOCK_TOKEN`, `LOOPSY_LOCK_HOLDER` and `LOOPSY_LOCK_PEER`, so it can fence its writes
//! (`loopsy context set --fence "$LOOPSY_LOCK_NAME:$LOOPSY_LOCK_TOKEN"`). If the lock is lost (a
//! renewal refused, or no renewal got through before the lock expired), the command is stopped
//! (SIGTERM, SIGKILL 5 s later) and loopsy exits 2: it must not go on believing it holds it.
//!
//! Exit codes: the command's (128 + N after signal N); 1 when the lock is held by another
//! holder (after `--wait`); 2 on errors and a lost lock.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use argh::FromArgs;
use futures_lite::{future, StreamExt};
use serde_json::json;

use crate::locks::api::{LockInfo, LockList, Released};
use crate::paths::Paths;
use crate::peer::retry::{is_transient, Backoff};
use crate::peer::{Client, ClientError, Method};
use crate::percent;
use crate::resolve;

/// run a command while holding a lock on a daemon (like flock across machines)
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "lock")]
pub struct Args {
    /// seconds the lock lasts without a renewal (default 30); it is renewed every third of
    /// that while the command runs
    #[argh(option, default = "30.0")]
    ttl: f64,
    /// seconds to wait while another holder has the lock (default 0: exit 1 at once)
    #[argh(option, default = "0.0")]
    wait: f64,
    /// the holder name to use (default: <hostname>:<pid>)
    #[argh(option)]
    holder: Option<String>,
    /// API key to present (default: the one stored for the peer)
    #[argh(option, short = 'k')]
    key: Option<String>,
    /// the daemon that keeps the lock: `local`, a peer name or address[:port]
    #[argh(positional)]
    peer: String,
    /// the lock's name (A-Z a-z 0-9 . _ - : / @)
    #[argh(positional)]
    name: String,
    /// the command and its arguments, after `--`
    #[argh(positional, greedy)]
    command: Vec<String>,
}

/// list the locks held on a daemon
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "locks")]
pub struct ListArgs {
    /// print {"locks": [...]} as JSON
    #[argh(switch)]
    json: bool,
    /// API key to present (default: the one stored for the peer)
    #[argh(option, short = 'k')]
    key: Option<String>,
    /// the daemon: `local` (default), a peer name or address[:port]
    #[argh(positional, default = "String::from(\"local\")")]
    peer: String,
}

/// After SIGINT, how long the command has to end by itself (a terminal's Ctrl-C reaches it too)
/// before the signal is passed on to it.
const INTERRUPT_GRACE: Duration = Duration::from_secs(1);
/// Between SIGTERM and SIGKILL when the lock is lost.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// A renewal that failed to get through is tried again this soon.
const RETRY: Duration = Duration::from_secs(1);
/// How long an acquire or a release rides out an unreachable daemon.
const RIDE_OUT: Duration = Duration::from_secs(15);

pub(super) fn run(args: Args, paths: &Paths) -> anyhow::Result<ExitCode> {
    if args.command.is_empty() {
        bail!("missing the command to run: loopsy lock <peer> <name> [--ttl S] [--wait S] -- <cmd>...");
    }
    crate::locks::check_name(&args.name)?;
    if !(crate::locks::MIN_TTL_SECS..=crate::locks::MAX_TTL_SECS).contains(&args.ttl) {
        bail!("--ttl must be from {} to {} seconds", crate::locks::MIN_TTL_SECS, crate::locks::MAX_TTL_SECS);
    }
    if !(args.wait >= 0.0 && args.wait.is_finite()) {
        bail!("--wait must be a number of seconds, 0 or more");
    }
    let config = super::load_config(paths)?;
    let target = smol::block_on(resolve::resolve(paths, &config, &args.peer, args.key.as_deref()))?;
    let holder = args.holder.clone().unwrap_or_else(|| format!("{}:{}", config.hostname(), std::process::id()));
    crate::locks::check_holder(&holder)?;
    let lock = Lock { client: target.client.clone(), label: target.label.clone(), name: args.name.clone(), holder };
    smol::block_on(hold(&lock, &args))
}

pub(super) fn list(args: ListArgs, paths: &Paths) -> anyhow::Result<ExitCode> {
    let config = super::load_config(paths)?;
    let target = smol::block_on(resolve::resolve(paths, &config, &args.peer, args.key.as_deref()))?;
    let list: LockList = smol::block_on(target.client.get("/api/v1/locks"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    if list.locks.is_empty() {
        println!("no locks held on {}", target.label);
        return Ok(ExitCode::SUCCESS);
    }
    let now = crate::clock::now_ms();
    println!("{:<32} {:<32} {:>8} {:>10}", "NAME", "HOLDER", "TOKEN", "EXPIRES IN");
    for lock in &list.locks {
        let seconds = lock.expires_at.saturating_sub(now) as f64 / 1000.0;
        println!("{:<32} {:<32} {:>8} {:>9.1}s", lock.name, lock.holder, lock.token, seconds);
    }
    Ok(ExitCode::SUCCESS)
}

/// A lock on one daemon, as this command holds it.
struct Lock {
    client: Client,
    label: String,
    name: String,
    holder: String,
}

impl Lock {
    fn path(&self) -> String {
        format!("/api/v1/locks/{}", percent::encode(&self.name))
    }

    /// Acquires, waiting up to `wait` seconds (in requests of at most the daemon's limit). A
    /// dropped connection is tried again: the same holder asking again gets the same grant, so
    /// an answer lost on the way does not leave a lock that nobody knows it holds.
    async fn acquire(&self, ttl: f64, wait: f64) -> Result<LockInfo, ClientError> {
        let deadline = Instant::now() + Duration::from_secs_f64(wait.min(1e9));
        let mut backoff = Backoff::new(RIDE_OUT);
        loop {
            let left =
                deadline.saturating_duration_since(Instant::now()).as_secs_f64().min(crate::locks::MAX_WAIT_SECS);
            let body = json!({"holder": self.holder, "ttl": ttl, "wait": (left * 1000.0).floor() / 1000.0});
            let client = self.client.clone().with_timeout(Duration::from_secs_f64(left) + Duration::from_secs(30));
            match client.call::<LockInfo>(Method::Post, &self.path(), Some(&body)).await {
                Err(ClientError::Remote { code: Some(6001), .. }) if Instant::now() < deadline => continue,
                Err(e) if is_transient(&e) && backoff.pause().await => continue,
                outcome => return outcome,
            }
        }
    }

    async fn renew(&self) -> Result<LockInfo, ClientError> {
        let client = self.client.clone().with_timeout(Duration::from_secs(5));
        client.call(Method::Post, &format!("{}/renew", self.path()), Some(&json!({"holder": self.holder}))).await
    }

    /// Releases; a dropped connection is tried again for a while (the lock expires anyway).
    async fn release(&self) -> Result<Released, ClientError> {
        let client = self.client.clone().with_timeout(Duration::from_secs(5));
        let mut backoff = Backoff::new(RIDE_OUT);
        loop {
            match client.call(Method::Delete, &self.path(), Some(&json!({"holder": self.holder}))).await {
                Err(e) if is_transient(&e) && backoff.pause().await => continue,
                outcome => return outcome,
            }
        }
    }
}

/// How the command's run ended.
enum End {
    Exited(std::process::ExitStatus),
    Lost(String),
}

async fn hold(lock: &Lock, args: &Args) -> anyhow::Result<ExitCode> {
    use async_signal::{Signal, Signals};
    // Installed first: a Ctrl-C from now on must not kill us with the lock held.
    let mut signals = Signals::new([Signal::Int, Signal::Term, Signal::Hup]).context("installing signal handlers")?;
    let acquired = future::or(async { Some(lock.acquire(args.ttl, args.wait).await) }, async {
        signals.next().await;
        None
    })
    .await;
    let grant = match acquired {
        // Interrupted while waiting: an acquire that raced the signal is given back.
        None => {
            let _ = lock.release().await;
            return Ok(ExitCode::from(130));
        }
        Some(Err(ClientError::Remote { code: Some(6001), message, .. })) => {
            eprintln!("loopsy: {}: {message}", lock.label);
            return Ok(ExitCode::from(1));
        }
        Some(outcome) => outcome.with_context(|| format!("acquiring lock '{}' on {}", lock.name, lock.label))?,
    };
    let (program, rest) = args.command.split_first().expect("checked non-empty");
    let mut command = smol::process::Command::new(program);
    for name in crate::child_env::own_tuning() {
        command.env_remove(name);
    }
    let spawned = command
        .args(rest)
        .env("LOOPSY_LOCK_NAME", &lock.name)
        .env("LOOPSY_LOCK_TOKEN", grant.token.to_string())
        .env("LOOPSY_LOCK_HOLDER", &lock.holder)
        .env("LOOPSY_LOCK_PEER", &args.peer)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let _ = lock.release().await;
            return Err(anyhow!("cannot run '{program}': {e}"));
        }
    };
    let end = supervise(lock, &mut child, grant, &mut signals).await;
    let released = lock.release().await;
    match end {
        End::Exited(status) => {
            if let Err(e) = released {
                eprintln!(
                    "loopsy: could not release lock '{}' on {} (it expires by itself): {e}",
                    lock.name, lock.label
                );
            }
            let code =
                status.code().or_else(|| std::os::unix::process::ExitStatusExt::signal(&status).map(|s| 128 + s));
            Ok(ExitCode::from(u8::try_from(code.unwrap_or(1)).unwrap_or(255)))
        }
        End::Lost(why) => bail!("lost lock '{}' on {}: {why}; the command was stopped", lock.name, lock.label),
    }
}

/// Renews the lock until the command ends; stops the command if the lock is lost.
async fn supervise(
    lock: &Lock,
    child: &mut smol::process::Child,
    mut grant: LockInfo,
    signals: &mut async_signal::Signals,
) -> End {
    let pid = child.id() as libc::pid_t;
    let every = Duration::from_secs_f64((grant.ttl / 3.0).max(0.05));
    let mut next_renewal = Instant::now() + every;
    let mut interrupted_at: Option<Instant> = None;
    loop {
        enum Wake {
            Exited(std::io::Result<std::process::ExitStatus>),
            Renew,
            Signal(Option<std::io::Result<async_signal::Signal>>),
            PassInterrupt,
        }
        let pass_at = interrupted_at.map(|at| at + INTERRUPT_GRACE);
        let timers = async {
            match pass_at {
                Some(at) if at < next_renewal => {
                    async_io::Timer::at(at).await;
                    Wake::PassInterrupt
                }
                _ => {
                    async_io::Timer::at(next_renewal).await;
                    Wake::Renew
                }
            }
        };
        let wake = future::or(
            async { Wake::Exited(child.status().await) },
            future::or(async { Wake::Signal(signals.next().await) }, timers),
        )
        .await;
        match wake {
            Wake::Exited(Ok(status)) => return End::Exited(status),
            Wake::Exited(Err(e)) => return End::Lost(format!("cannot wait for the command: {e}")),
            Wake::Signal(Some(Ok(async_signal::Signal::Int))) => {
                // From a terminal, the command got it as well; give it a moment to end first.
                interrupted_at.get_or_insert_with(Instant::now);
            }
            // SIGTERM and SIGHUP come from a supervisor, not a terminal: pass them on.
            Wake::Signal(Some(Ok(signal))) => send(pid, signal as libc::c_int),
            Wake::Signal(_) => {}
            Wake::PassInterrupt => {
                send(pid, libc::SIGINT);
                interrupted_at = Some(Instant::now() + Duration::from_secs(3600));
            }
            Wake::Renew => match lock.renew().await {
                Ok(renewed) => {
                    grant = renewed;
                    next_renewal = Instant::now() + every;
                }
                Err(ClientError::Remote { status: 404 | 409, message, .. }) => {
                    stop(child, pid).await;
                    return End::Lost(message);
                }
                Err(e) if crate::clock::now_ms() + RETRY.as_millis() as u64 >= grant.expires_at => {
                    stop(child, pid).await;
                    return End::Lost(format!("no renewal got through before it expired ({e})"));
                }
                Err(_) => next_renewal = Instant::now() + RETRY,
            },
        }
    }
}

fn send(pid: libc::pid_t, signal: libc::c_int) {
    // SAFETY: kill(2) on the PID of our own child, which we have not reaped yet (so the PID
    // cannot have been reused).
    unsafe {
        libc::kill(pid, signal);
    }
}

/// SIGTERM, then SIGKILL if the command is still running after the grace period.
async fn stop(child: &mut smol::process::Child, pid: libc::pid_t) {
    send(pid, libc::SIGTERM);
    let exited = crate::clock::timeout(KILL_GRACE, child.status()).await.is_some_and(|status| status.is_ok());
    if !exited {
        send(pid, libc::SIGKILL);
        let _ = child.status().await;
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::{Command, Loopsy};
    use argh::FromArgs;

    #[test]
    fn options_may_follow_the_lock_and_the_command_comes_after_the_dashes() {
        let parsed = Loopsy::from_args(
            &["loopsy"],
            &["lock", "local", "db", "--ttl", "5", "--wait", "2.5", "--", "sh", "-c", "echo --ttl"],
        )
        .unwrap();
        let Command::Lock(args) = parsed.command else { panic!("not lock") };
        assert_eq!((args.peer.as_str(), args.name.as_str(), args.ttl, args.wait), ("local", "db", 5.0, 2.5));
        assert_eq!(args.command, ["sh", "-c", "echo --ttl"]);
    }
}
