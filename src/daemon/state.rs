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
use crate::transfer::push::TransferContext;

/// Shared by every request; each field owns its own locking.
#[derive(Clone)]
pub struct State {
    /// Resolved once at start, never mutated.
    pub config: Arc<Config>,
    pub paths: Arc<Paths>,
    pub node: Arc<Node>,
    /// The accepted keys; reloaded from `config.yaml` on SIGHUP.
    pub keyring: Keyring,
    pub limiter: Arc<RateLimiter>,
    pub audit: Audit,
    pub shutdown: Shutdown,
    /// The context store (`/api/v1/context`).
    pub context: Store,
    /// Whether new connections get TLS; pairing turns it on at run time.
    pub tls: super::listener::TlsSwitch,
    /// The one pairing session (host or joiner) of this daemon.
    pub pairing: super::pairing::Pairing,
    /// What `daemon.json` says, kept to rewrite it when TLS is turned on.
    pub runtime: Arc<std::sync::Mutex<Option<crate::instance::RuntimeInfo>>>,
    /// The peer registry (`peers.json`).
    pub peers: Registry,
    /// Asks the health checker to look at a peer now.
    pub nudger: Nudger,
    /// Running jobs of `/execute` and `/execute/stream`.
    pub executor: Executor,
    /// Path policy, size limit and the bookkeeping of uploads in progress.
    pub transfer: Arc<TransferContext>,
    /// Dashboard login tokens and browser sessions (memory only).
    pub logins: crate::dashboard::auth::Logins,
    /// The names a browser may use for this machine in `Host` (DNS-rebinding check).
    pub host_names: Arc<crate::dashboard::origin::HostNames>,
}

/// This daemon as others see it.
#[derive(Debug)]
pub struct Node {
    pub id: NodeId,
    pub hostname: String,
    /// The port actually bound (differs from the config with `--port 0`).
    pub port: u16,
    pub started: Instant,
}

impl Node {
    pub fn uptime_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}
