//! `State`: what every handler can reach, as a struct of cheap-clone handles.

use std::sync::Arc;
use std::time::Instant;

use super::audit::Audit;
use super::guard::Keyring;
use super::rate_limit::RateLimiter;
use crate::config::Config;
use crate::exec::Executor;
use crate::identity::NodeId;
use crate::paths::Paths;
use crate::peers::health::Nudger;
use crate::peers::Registry;
use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::transfer::policy::PathPolicy;
use crate::transfer::push::TransferContext;

/// Shared by every request: this node, its configuration, and four services of cheap-clone
/// handles, each of which owns its own locking.
#[derive(Clone)]
pub(crate) struct State {
    /// Resolved once at start, never mutated.
    pub config: Arc<Config>,
    pub paths: Arc<Paths>,
    pub node: Arc<Node>,
    pub shutdown: Shutdown,
    /// What `daemon.json` says, kept to rewrite it when TLS is turned on.
    pub runtime: Arc<std::sync::Mutex<Option<crate::instance::RuntimeInfo>>>,
    /// Who may come in, and what they did.
    pub gate: Gate,
    /// What the node keeps for others: context, locks, files.
    pub data: Data,
    /// What runs here on request: commands, AI tasks, terminals.
    pub work: Work,
    /// The other daemons: registry, health, pairing, messaging, approvals.
    pub fleet: Fleet,
}

/// Admission: keys, rate limits, TLS, the dashboard's logins and host names, the audit log.
#[derive(Clone)]
pub(crate) struct Gate {
    /// The accepted keys; reloaded from `config.yaml` on SIGHUP.
    pub keyring: Keyring,
    pub limiter: Arc<RateLimiter>,
    pub audit: Audit,
    /// Whether new connections get TLS (pairing turns it on at run time) and whether plain
    /// HTTP from other machines is served beside it.
    pub tls: super::listener::TlsSwitch,
    /// Dashboard login tokens and browser sessions (memory only).
    pub logins: crate::dashboard::auth::Logins,
    /// The names a browser may use for this machine in `Host` (DNS-rebinding check).
    pub host_names: Arc<crate::dashboard::origin::HostNames>,
}

/// Durable data: the context store, the lock table, transfers.
#[derive(Clone)]
pub(crate) struct Data {
    /// The context store (`/api/v1/context`).
    pub context: Store,
    /// The lock table (`/api/v1/locks`), which also fences context writes.
    pub locks: crate::locks::Locks,
    /// Path policy, size limit and the bookkeeping of uploads in progress.
    pub transfer: Arc<TransferContext>,
}

/// Processes: commands, AI tasks, terminals.
#[derive(Clone)]
pub(crate) struct Work {
    /// Running jobs of `/execute` and `/execute/stream`.
    pub executor: Executor,
    /// The AI tasks (agent processes, their events and approvals).
    pub tasks: crate::tasks::Tasks,
    /// Interactive terminal sessions (`/api/v1/terminals`), in memory only.
    pub terminals: crate::terminal::Terminals,
}

/// The other daemons.
#[derive(Clone)]
pub(crate) struct Fleet {
    /// The peer registry (`peers.json`).
    pub peers: Registry,
    /// Asks the health checker to look at a peer now.
    pub nudger: Nudger,
    /// The one pairing session (host or joiner) of this daemon.
    pub pairing: super::pairing::Pairing,
    /// Agent messaging: the outbox, its retries, and acknowledged ids (`/api/v1/messages`).
    pub messages: crate::messages::Messages,
    /// The approval inbox across this daemon, its sessions and its peers (`/api/v1/approvals`).
    pub approvals: crate::approvals::Inbox,
}

impl State {
    /// Opens everything a daemon serves from: the context store, the peer registry (with the
    /// configured manual peers), the transfer bookkeeping. Returns the health checker's queue of
    /// nudges beside the state; background tasks are started by `daemon::serve`.
    pub(crate) fn open(
        paths: Arc<Paths>,
        config: Config,
        node_id: NodeId,
        port: u16,
    ) -> anyhow::Result<(State, smol::channel::Receiver<crate::peers::health::Nudge>)> {
        use anyhow::Context;
        let context = Store::open(&paths, config.context.max_entries as usize).context("opening the context store")?;
        let locks = crate::locks::Locks::open(&paths).context("opening the lock table")?;
        let registry = Registry::load(&paths.peers_file(), node_id.as_str());
        registry.add_configured(&config.discovery.manual_peers, &config.tls.pinned_certs);
        let (nudger, nudges) = crate::peers::health::channel();
        let config = Arc::new(config);
        let hostname = config.hostname();
        let messages = crate::messages::Messages::open(
            paths.clone(),
            config.clone(),
            &hostname,
            context.clone(),
            registry.clone(),
        );
        // Child processes (commands, agents) never inherit the daemon's keys (weakness C3).
        let secrets = crate::child_env::Secrets::new(paths.clone(), &config);
        let tasks = crate::tasks::Tasks::new(config.ai_tasks.clone(), &paths.tasks_dir(), secrets.clone());
        let approvals = crate::approvals::Inbox::new(
            tasks.clone(),
            paths.clone(),
            config.clone(),
            registry.clone(),
            hostname.clone(),
        );
        let state = State {
            node: Arc::new(Node { id: node_id, hostname, port, started: Instant::now() }),
            shutdown: Shutdown::new(),
            runtime: Arc::new(std::sync::Mutex::new(None)),
            gate: Gate {
                keyring: Keyring::new(&config),
                limiter: Arc::new(RateLimiter::new(config.rate_limits.clone())),
                audit: Audit::start(paths.audit_log(), super::audit::Rotation::default()),
                tls: super::listener::TlsSwitch::new(config.tls.allow_insecure_peers),
                logins: Default::default(),
                host_names: Arc::new(crate::dashboard::origin::HostNames::new(&[
                    config.hostname(),
                    crate::identity::os_hostname(),
                ])),
            },
            data: Data {
                context,
                locks,
                transfer: Arc::new(TransferContext::open(
                    &paths.transfer_dir(),
                    PathPolicy::new(&config.transfer.allowed_paths, &config.transfer.denied_paths).deny(paths.home()),
                    config.transfer.max_file_size,
                )),
            },
            work: Work {
                executor: Executor::new(&config.execution, secrets.clone()),
                tasks,
                terminals: crate::terminal::Terminals::new(&config, secrets),
            },
            fleet: Fleet { peers: registry, nudger, pairing: super::pairing::Pairing::default(), messages, approvals },
            config,
            paths,
        };
        Ok((state, nudges))
    }
}

/// This daemon as others see it.
#[derive(Debug)]
pub(crate) struct Node {
    pub id: NodeId,
    pub hostname: String,
    /// The port actually bound (differs from the config with `--port 0`).
    pub port: u16,
    pub started: Instant,
}

impl Node {
    pub(crate) fn uptime_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}
