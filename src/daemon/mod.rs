//! The daemon: the HTTP server and everything it owns. The only module that knows tide.
//!
//! [`run`] takes the instance lock, binds, announces where it listens (`daemon.json`), serves
//! until SIGTERM/SIGINT, then stops accepting, lets in-flight requests finish for a bounded
//! time, folds the context journal into `context.json`, flushes the audit log and exits.

pub(crate) mod audit;
pub(crate) mod body;
pub(crate) mod conn;
pub(crate) mod error;
pub(crate) mod guard;
pub(crate) mod listener;
pub(crate) mod memory;
pub(crate) mod methods;
pub(crate) mod openapi;
pub(crate) mod pairing;
pub(crate) mod rate_limit;
mod request_log;
pub(crate) mod routes;
pub(crate) mod sendfile;
pub(crate) mod sse;
pub(crate) mod state;
pub(crate) mod websocket;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use futures_lite::StreamExt;

use crate::config::Config;
use crate::identity::NodeId;
use crate::instance::{self, FileLock, RuntimeInfo};
use crate::paths::Paths;
use state::State;

/// How long in-flight requests may take to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the tide application: middleware and every route.
pub(crate) fn app(state: State) -> (tide::Server<State>, Vec<routes::RouteSpec>) {
    let mut app = tide::with_state(state);
    app.with(request_log::Record);
    app.with(tide::utils::After(error::render));
    let specs = routes::mount(&mut app);
    (app, specs)
}

/// Runs the daemon of `paths` in this process until it is told to stop.
pub(crate) fn run(paths: Paths, config: Config, managed_by: Option<String>) -> anyhow::Result<()> {
    crate::durable::create_private_dir(paths.home())?;
    std::fs::create_dir_all(paths.logs_dir()).context("creating the logs directory")?;
    let _instance = FileLock::try_exclusive(&paths.lock_file())?.ok_or_else(|| {
        let pid = instance::lock_holder(&paths.lock_file()).ok().flatten().unwrap_or(0);
        anyhow!("a daemon is already running for {} (PID {pid})", paths.home().display())
    })?;
    let node_id = NodeId::load_or_create(&paths)?;
    // Before any thread of the daemon's exists and allocates.
    memory::fix_thresholds();
    // `serve` runs on the executor's thread; this one only waits for it to end. Were it to run
    // `serve` itself, it would be a second thread taking turns at waiting for I/O, and every
    // readiness it picked up would be handed over to the executor's thread. A panic of `serve`
    // is raised again here, as itself.
    let serving = std::panic::AssertUnwindSafe(serve(paths, config, node_id, managed_by));
    match futures_lite::future::block_on(smol::spawn(futures_lite::FutureExt::catch_unwind(serving))) {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

async fn serve(paths: Paths, config: Config, node_id: NodeId, managed_by: Option<String>) -> anyhow::Result<()> {
    let descriptors = conn::raise_descriptor_limit();
    let host: IpAddr = config.server.host.parse().context("server.host")?;
    let address = SocketAddr::new(host, config.server.port);
    let listener = crate::netif::listen(address).with_context(|| format!("cannot listen on {address}"))?;
    let bound = listener.local_addr()?;
    let (state, nudges) = State::open(Arc::new(paths), config, node_id, bound.port())?;
    // Reading a large context store leaves freed pages between the entries it keeps.
    memory::give_back_soon();
    let paths = state.paths.clone();
    let (registry, context, transfer) =
        (state.fleet.peers.clone(), state.data.context.clone(), state.data.transfer.clone());
    // Installed before `daemon.json` says we are up: a SIGTERM right after must stop us
    // cleanly, not kill us with the default action.
    let signals =
        async_signal::Signals::new([async_signal::Signal::Term, async_signal::Signal::Int, async_signal::Signal::Hup])
            .context("installing signal handlers")?;
    let (app, _) = app(state.clone());
    if state.config.tls.enabled {
        enable_tls(&state)?;
    }
    announce(&state, bound, managed_by)?;

    let saver = smol::spawn(registry.clone().run_saver(state.shutdown.clone()));
    let interval = Duration::from_millis(state.config.discovery.health_interval);
    let family = crate::peers::local::Family::of(paths.home());
    let _health = smol::spawn(crate::peers::health::run(registry, interval, nudges, state.shutdown.clone(), family));
    let discovery = start_discovery(&state, bound);
    let _signals = smol::spawn(handle_signals(state.clone(), signals));
    let _sweeper = smol::spawn(sweep_partial_uploads(transfer, state.shutdown.clone()));
    let expiry = smol::spawn(context.clone().expire_entries());
    let retries = smol::spawn(state.fleet.messages.clone().run_retries(state.shutdown.clone()));
    let _approvals = smol::spawn(crate::approvals::run(state.fleet.approvals.clone(), state.shutdown.clone()));
    let _reaper = smol::spawn(state.work.terminals.clone().run_reaper(state.shutdown.clone()));
    // Watch streams count as in-flight requests: end them as soon as the stop begins.
    let _end_watches = smol::spawn({
        let (shutdown, context) = (state.shutdown.clone(), context.clone());
        async move {
            shutdown.wait().await;
            context.close_watchers();
        }
    });
    let in_flight = listener::InFlight::default();
    let _trimmer = smol::spawn(in_flight.quiet().trim_when_quiet(memory::QUIET, state.shutdown.clone()));
    let limits = conn::Limits::from_config(&state.config.server, descriptors);
    listener::serve(listener, state.gate.tls.clone(), app, state.shutdown.clone(), in_flight.clone(), limits).await;

    log::info!("shutting down: {} request(s) in flight", in_flight.count());
    // Agents are not left running unsupervised (and their streams end with them).
    state.work.tasks.kill_all();
    // Terminals do not survive the daemon: their programs are hung up (and their clients told).
    state.work.terminals.kill_all().await;
    if let Some(discovery) = discovery {
        blocking::unblock(move || discovery.stop()).await;
    }
    let left = in_flight.drain(DRAIN_TIMEOUT).await;
    if left > 0 {
        log::warn!("{left} request(s) still running after {} s; stopping anyway", DRAIN_TIMEOUT.as_secs());
    }
    // Jobs do not outlive the daemon (as in 1.0.21); none is left after a drained stop.
    state.work.executor.kill_all();
    // Before the store closes: an attempt under way reads the outbox from it.
    retries.await;
    drop(expiry);
    // Writes what is queued and folds the journal into context.json.
    blocking::unblock(move || context.close()).await;
    let locks = state.data.locks.clone();
    blocking::unblock(move || locks.close()).await;
    state.gate.audit.close();
    saver.await;
    RuntimeInfo::remove(&paths);
    log::info!("stopped");
    Ok(())
}

/// Writes `daemon.json` (and `daemon.pid`): from now on clients find this daemon.
fn announce(state: &State, bound: SocketAddr, managed_by: Option<String>) -> anyhow::Result<()> {
    let url = runtime_url(bound, state.gate.tls.is_on());
    let runtime = RuntimeInfo {
        pid: std::process::id(),
        url: url.clone(),
        port: bound.port(),
        tls: state.gate.tls.is_on(),
        started_at: crate::clock::now_ms(),
        version: crate::identity::IMPLEMENTATION.into(),
        managed_by,
    };
    runtime.write(&state.paths)?;
    *state.runtime.lock().expect("runtime lock") = Some(runtime);
    log::info!("listening on {url} as node {} ({})", state.node.id, state.node.hostname);
    Ok(())
}

/// Turns HTTPS on for new connections (making the certificate if needed) and says so in
/// `daemon.json`; returns the certificate's fingerprint.
pub(crate) fn enable_tls(state: &State) -> anyhow::Result<crate::tls::Fingerprint> {
    let identity = crate::tls::Identity::load_or_create(&state.paths, &state.node.hostname)?;
    if !state.gate.tls.is_on() {
        state.gate.tls.enable(crate::tls::acceptor(&identity)?);
        log::info!("TLS on; certificate fingerprint {}", identity.fingerprint);
        let mut runtime = state.runtime.lock().expect("runtime lock");
        if let Some(info) = runtime.as_mut() {
            info.tls = true;
            info.url = info.url.replacen("http://", "https://", 1);
            info.write(&state.paths)?;
        }
    }
    Ok(identity.fingerprint)
}

fn runtime_url(bound: SocketAddr, tls: bool) -> String {
    format!("{}://{}", if tls { "https" } else { "http" }, client_address(bound))
}

/// mDNS, unless `discovery.enabled` is false; a failure to start it is logged, not fatal.
fn start_discovery(state: &State, bound: SocketAddr) -> Option<crate::discovery::Discovery> {
    if !state.config.discovery.enabled {
        return None;
    }
    let advert = crate::discovery::Advert::for_listener(state.node.id.as_str(), &state.node.hostname, bound);
    match advert.and_then(|advert| crate::discovery::Discovery::start(advert, state.fleet.nudger.clone())) {
        Ok(discovery) => Some(discovery),
        Err(e) => {
            log::error!("mDNS discovery is off: {e:#}");
            None
        }
    }
}

/// Deletes partial uploads unused for `PART_TTL`, hourly, until shutdown.
async fn sweep_partial_uploads(
    transfer: Arc<crate::transfer::push::TransferContext>,
    shutdown: crate::shutdown::Shutdown,
) {
    loop {
        if !shutdown.sleep(Duration::from_secs(3600)).await {
            return;
        }
        let journal = transfer.journal.clone();
        let removed = blocking::unblock(move || journal.sweep(crate::transfer::PART_TTL)).await;
        if removed > 0 {
            log::info!("removed {removed} partial upload(s) unused for 24 h");
        }
    }
}

/// SIGTERM and SIGINT stop the daemon; SIGHUP reloads the keys from `config.yaml`.
async fn handle_signals(state: State, mut signals: async_signal::Signals) {
    use async_signal::Signal;
    while let Some(Ok(signal)) = signals.next().await {
        match signal {
            Signal::Hup => reload_keys(&state),
            _ => {
                log::info!("received {signal:?}");
                state.shutdown.trigger();
            }
        }
    }
}

fn reload_keys(state: &State) {
    match Config::load(&state.paths) {
        Ok(config) => {
            state.gate.keyring.replace(&config);
            state.gate.tls.set_insecure_peers(config.tls.allow_insecure_peers);
            log::info!("reloaded keys from {}", state.paths.config_file().display());
        }
        Err(e) => log::error!("keeping the current keys: {e}"),
    }
}

/// Where a local client reaches a daemon bound to `bound`.
pub(crate) fn client_address(bound: SocketAddr) -> SocketAddr {
    let ip = match bound.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, bound.port())
}
