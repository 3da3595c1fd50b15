//! The `config.yaml` schema: every section and field with 1.0.21's defaults (camelCase on
//! disk), so a file that names only some keys is merged over the defaults key by key.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub(crate) const DEFAULT_PORT: u16 = 19532;
/// The largest `execution.maxQueued`: each waiter holds its parsed request.
pub(crate) const MAX_QUEUED: u32 = 10_000;

/// The whole configuration file. Every section and field has the 1.0.21 default, so a file
/// that names only some keys is merged over the defaults key by key.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Config {
    pub server: Server,
    pub auth: Auth,
    pub tls: Tls,
    pub execution: Execution,
    pub context: Context,
    pub transfer: Transfer,
    pub rate_limits: RateLimits,
    pub discovery: Discovery,
    pub logging: Logging,
    pub ai_tasks: AiTasks,
    pub sessions: Sessions,
    pub messaging: Messaging,
    pub terminals: Terminals,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Server {
    pub port: u16,
    pub host: String,
    /// The node's name everywhere (identity, messaging, pairing); the OS hostname when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Accepted for 1.0.21 compatibility and ignored: the data directory is `--home`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
    /// Milliseconds from a connection (or a later request's first byte) to its complete head.
    pub header_timeout: u64,
    /// Milliseconds a request body read or a response write may stall before the connection is
    /// closed.
    pub idle_timeout: u64,
    /// Connections open at once (kept below the descriptor limit in any case).
    pub max_connections: u32,
    /// Connections open at once from one source address.
    pub max_connections_per_address: u32,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            port: DEFAULT_PORT,
            host: "0.0.0.0".into(),
            hostname: None,
            data_dir: None,
            header_timeout: 20_000,
            idle_timeout: 20_000,
            max_connections: 4096,
            max_connections_per_address: 128,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Auth {
    /// This node's own key. Required: there is no silent random fallback.
    pub api_key: String,
    /// Peer name to the key that peer presents to us.
    pub allowed_keys: BTreeMap<String, String>,
    /// Peer name to the key we present to that peer, when it differs from `allowedKeys`
    /// (pairing mints a distinct key for each direction).
    pub peer_keys: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Tls {
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_path: Option<String>,
    /// Peer name to the SHA-256 fingerprint (64 lowercase hex) of its certificate.
    pub pinned_certs: BTreeMap<String, String>,
    /// Whether unpinned peers may be reached over plain HTTP (1.0.21 compatibility).
    pub allow_insecure_peers: bool,
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            enabled: false,
            cert_path: None,
            key_path: None,
            pinned_certs: BTreeMap::new(),
            allow_insecure_peers: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Execution {
    pub denylist: Vec<String>,
    /// When present, only these programs may run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowlist: Option<Vec<String>>,
    pub max_concurrent: u32,
    /// Requests that wait (first come, first served) for a place when `maxConcurrent` jobs run;
    /// past them the answer is 429 with `Retry-After`. 0: refuse at once, as 1.0.21 did.
    pub max_queued: u32,
    /// Milliseconds a request may wait in that queue before it is answered 429.
    pub queue_timeout: u64,
    /// Milliseconds; applied when a request gives no timeout.
    pub default_timeout: u64,
    /// Milliseconds; the longest timeout a request may ask for (not in 1.0.21, which had none).
    pub max_timeout: u64,
    /// Cap on each of stdout and stderr, in bytes.
    pub max_output_bytes: u64,
    /// Output of a streamed job kept for clients that reattach, in bytes (the oldest goes
    /// first); a collected job keeps all of its (capped) output until it is evicted.
    pub keep_output_bytes: u64,
    /// Output of all kept jobs together, in bytes: finished jobs are evicted past it.
    pub keep_output_total: u64,
    /// How many finished jobs are kept for reattaching and idempotent retries.
    pub keep_finished: u32,
    /// How long a finished job is kept at most, in milliseconds.
    pub finished_ttl: u64,
    /// A running job that no client has read for this long (milliseconds) is stopped: a client
    /// that sent an idempotency key may reattach within it.
    pub detached_timeout: u64,
}

impl Default for Execution {
    fn default() -> Self {
        Execution {
            denylist: ["rm", "rmdir", "format", "mkfs", "dd", "shutdown", "reboot"].map(String::from).to_vec(),
            allowlist: None,
            max_concurrent: 10,
            max_queued: 64,
            queue_timeout: 30_000,
            default_timeout: 300_000,
            max_timeout: 3_600_000,
            max_output_bytes: 10 * 1024 * 1024,
            keep_output_bytes: 1024 * 1024,
            keep_output_total: 32 * 1024 * 1024,
            keep_finished: 100,
            finished_ttl: 600_000,
            detached_timeout: 60_000,
        }
    }
}

/// The context store (not in 1.0.21's file, which had its limit built in).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Context {
    /// Live entries at most; a new key past it is refused with code 5003. 1.0.21: 1000.
    pub max_entries: u32,
}

impl Default for Context {
    fn default() -> Self {
        Context { max_entries: crate::store::DEFAULT_MAX_ENTRIES as u32 }
    }
}

/// The largest `context.maxEntries`.
pub(crate) const MAX_CONTEXT_ENTRIES: u32 = 10_000_000;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Transfer {
    pub allowed_paths: Vec<String>,
    pub denied_paths: Vec<String>,
    pub max_file_size: u64,
}

impl Default for Transfer {
    fn default() -> Self {
        let home = crate::paths::user_home_dir().unwrap_or_else(|| PathBuf::from("/"));
        let join = |rest: &str| home.join(rest).to_string_lossy().into_owned();
        Transfer {
            allowed_paths: vec![home.to_string_lossy().into_owned()],
            denied_paths: vec![join(".ssh"), join(".gnupg")],
            max_file_size: 1_073_741_824,
        }
    }
}

/// Requests per minute per key; 0 turns a category's limit off.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct RateLimits {
    pub execute: u32,
    pub transfer: u32,
    pub context: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits { execute: 30, transfer: 10, context: 60 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Discovery {
    pub enabled: bool,
    pub manual_peers: Vec<ManualPeer>,
    /// Milliseconds between health checks of each peer.
    pub health_interval: u64,
}

impl Default for Discovery {
    fn default() -> Self {
        Discovery { enabled: true, manual_peers: Vec::new(), health_interval: 15_000 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ManualPeer {
    pub address: String,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The user's name for the peer (its key is `auth.allowedKeys[name]`); not in 1.0.21.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

fn default_port() -> u16 {
    DEFAULT_PORT
}

/// AI task dispatch (`/api/v1/ai-tasks`). Times are milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct AiTasks {
    /// Tasks whose agent process is alive (cancelling ones included); more are answered 429.
    pub max_concurrent: u32,
    /// After this, a task is cancelled with an error event.
    pub timeout: u64,
    /// A permission request nobody answers within this is denied.
    pub approval_timeout: u64,
    /// How many finished tasks (with their events) are kept for inspection.
    pub keep_finished: u32,
    /// How long a finished task is kept at most.
    pub finished_ttl: u64,
    /// Interval of the comment lines that keep an idle event stream open.
    pub heartbeat_interval: u64,
    /// Whether a request may ask for `bypassPermissions` (the agent then runs unsupervised).
    pub allow_bypass_permissions: bool,
}

impl Default for AiTasks {
    fn default() -> Self {
        AiTasks {
            max_concurrent: 3,
            timeout: 1_800_000,
            approval_timeout: 300_000,
            keep_finished: 100,
            finished_ttl: 3_600_000,
            heartbeat_interval: 15_000,
            allow_bypass_permissions: true,
        }
    }
}

/// Extra daemons on this machine (`loopsy session`); not in 1.0.21.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Sessions {
    /// The first port sessions may take; they use at most 100 ports from here (1.0.21: 19533).
    pub base_port: u16,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions { base_port: DEFAULT_PORT + 1 }
    }
}

/// Agent messaging (`/api/v1/messages`): how undelivered messages and acks are retried.
/// Times are milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Messaging {
    /// The wait after the first failed delivery; it doubles after each failure.
    pub retry_initial: u64,
    /// The longest wait between two attempts.
    pub retry_max: u64,
    /// How long one delivery attempt may take.
    pub delivery_timeout: u64,
}

impl Default for Messaging {
    fn default() -> Self {
        Messaging { retry_initial: 1_000, retry_max: 60_000, delivery_timeout: 10_000 }
    }
}

/// Interactive terminal sessions (`/api/v1/terminals`, `loopsy term`); not in 1.0.21.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Terminals {
    /// Whether a key from `auth.allowedKeys` without a pinned certificate (a 1.0.21-style
    /// shared key, not a pairing) may use terminals.
    pub allow_legacy_peers: bool,
    /// Bytes of scrolled-off output kept per terminal and sent to a client that attaches.
    pub scrollback_bytes: u64,
    /// Bytes queued for one client before it skips ahead to a fresh screen.
    pub client_buffer_bytes: u64,
    /// Milliseconds an exited terminal nobody is attached to is kept before it is removed.
    pub reap_exited_after: u64,
    /// Terminals kept at once (running or exited); more are answered 429.
    pub max_sessions: u32,
    /// Clients attached to one terminal at once.
    pub max_clients: u32,
    /// The key that starts a command of `loopsy term attach`, as `C-a` … `C-z`; the command
    /// `d` detaches (tmux style).
    pub detach_prefix: String,
}

impl Default for Terminals {
    fn default() -> Self {
        Terminals {
            allow_legacy_peers: false,
            scrollback_bytes: 1024 * 1024,
            client_buffer_bytes: 4 * 1024 * 1024,
            reap_exited_after: 600_000,
            max_sessions: 32,
            max_clients: 16,
            detach_prefix: "C-a".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Logging {
    pub level: LogLevel,
    /// Accepted for 1.0.21 compatibility; the daemon log lives in `logs/daemon.log`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

impl Default for Logging {
    fn default() -> Self {
        Logging { level: LogLevel::Info, file: None }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Fatal,
    Silent,
}

impl LogLevel {
    pub(crate) fn filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Trace => log::LevelFilter::Trace,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Error | LogLevel::Fatal => log::LevelFilter::Error,
            LogLevel::Silent => log::LevelFilter::Off,
        }
    }
}
