//! `State`: what every handler can reach, as a struct of cheap-clone handles.

use std::sync::Arc;
use std::time::Instant;

use super::audit::Audit;
use super::guard::Keyring;
use super::rate_limit::RateLimiter;
use crate::config::Config;
use crate::identity::NodeId;
use crate::paths::Paths;
use crate::shutdown::Shutdown;

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
    /// Whether new connections get TLS; pairing turns it on at run time.
    pub tls: super::listener::TlsSwitch,
    /// The one pairing session (host or joiner) of this daemon.
    pub pairing: super::pairing::Pairing,
    /// The AI tasks (agent processes, their events and approvals).
    pub tasks: crate::tasks::Tasks,
    /// What `daemon.json` says, kept to rewrite it when TLS is turned on.
    pub runtime: Arc<std::sync::Mutex<Option<crate::instance::RuntimeInfo>>>,
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
