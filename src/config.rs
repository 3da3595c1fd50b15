//! `config.yaml`: the 1.0.21 schema and defaults, parsed once into an immutable [`Config`].
//!
//! Loading never guesses: a missing, malformed or invalid file is an error that names the file,
//! the field and what is wrong (1.0.21 silently started with a random key instead). Writers go
//! through [`edit`], which serialises read-modify-write cycles between processes and replaces the
//! file atomically with mode 0600.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::durable;
use crate::paths::Paths;

pub const DEFAULT_PORT: u16 = 19532;
/// The largest `execution.maxQueued`: each waiter holds its parsed request.
pub const MAX_QUEUED: u32 = 10_000;

/// The whole configuration file. Every section and field has the 1.0.21 default, so a file
/// that names only some keys is merged over the defaults key by key.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Config {
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
pub struct Server {
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
pub struct Auth {
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
pub struct Tls {
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
pub struct Execution {
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
pub struct Context {
    /// Live entries at most; a new key past it is refused with code 5003. 1.0.21: 1000.
    pub max_entries: u32,
}

impl Default for Context {
    fn default() -> Self {
        Context { max_entries: crate::store::DEFAULT_MAX_ENTRIES as u32 }
    }
}

/// The largest `context.maxEntries`.
pub const MAX_CONTEXT_ENTRIES: u32 = 10_000_000;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Transfer {
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
pub struct RateLimits {
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
pub struct Discovery {
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
pub struct ManualPeer {
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
pub struct AiTasks {
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
pub struct Sessions {
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
pub struct Messaging {
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
pub struct Terminals {
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
pub struct Logging {
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
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Fatal,
    Silent,
}

impl LogLevel {
    pub fn filter(self) -> log::LevelFilter {
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

/// Why a configuration could not be used. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no config at {}: run `loopsy init` first", path.display())]
    Missing { path: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("invalid config {}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    /// A fresh configuration with a new key, as `loopsy init` writes it.
    pub fn new_with_key(api_key: String) -> Config {
        let mut config = Config::default();
        config.auth.api_key = api_key;
        config
    }

    /// Reads, parses and validates `config.yaml`.
    pub fn load(paths: &Paths) -> Result<Config, ConfigError> {
        let path = paths.config_file();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ConfigError::Missing { path }),
            Err(source) => return Err(ConfigError::Unreadable { path, source }),
        };
        Config::parse(&text).map_err(|message| ConfigError::Invalid { path, message })
    }

    /// Parses and validates YAML text; the error names the field and what is wrong.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = if text.trim().is_empty() {
            return Err("the file is empty".into());
        } else {
            serde_yaml::from_str(text).map_err(|e| e.to_string())?
        };
        config.validate()?;
        Ok(config)
    }

    /// Keys present in `text` that the schema does not know (typos, newer versions).
    pub fn unknown_keys(text: &str) -> Vec<String> {
        let Ok(doc) = serde_yaml::from_str::<serde_yaml::Value>(text) else { return Vec::new() };
        let known = serde_yaml::to_value(Config::fully_populated()).expect("config serialises");
        let mut unknown = Vec::new();
        collect_unknown(&doc, &known, "", &mut unknown);
        unknown
    }

    fn validate(&self) -> Result<(), String> {
        let key = &self.auth.api_key;
        if key.trim().is_empty() {
            return Err("auth.apiKey: missing or empty (run `loopsy key generate`)".into());
        }
        if key.len() < 16 {
            return Err("auth.apiKey: too short, at least 16 characters are needed".into());
        }
        for (field, keys) in [("allowedKeys", &self.auth.allowed_keys), ("peerKeys", &self.auth.peer_keys)] {
            for (name, value) in keys {
                if value.trim().len() < 16 {
                    return Err(format!("auth.{field}.{name}: empty or shorter than 16 characters"));
                }
            }
        }
        if self.server.host.parse::<IpAddr>().is_err() {
            return Err(format!("server.host: '{}' is not an IP address", self.server.host));
        }
        if let Some(hostname) = &self.server.hostname {
            if hostname.trim().is_empty() || hostname.len() > 253 {
                return Err("server.hostname: must be 1 to 253 characters".into());
            }
        }
        for (field, value) in [("headerTimeout", self.server.header_timeout), ("idleTimeout", self.server.idle_timeout)]
        {
            if value < 50 {
                return Err(format!("server.{field}: must be at least 50 milliseconds"));
            }
        }
        for (field, value) in [
            ("maxConnections", self.server.max_connections),
            ("maxConnectionsPerAddress", self.server.max_connections_per_address),
        ] {
            if value == 0 {
                return Err(format!("server.{field}: must be at least 1"));
            }
        }
        for (name, fingerprint) in &self.tls.pinned_certs {
            let hex = fingerprint.len() == 64 && fingerprint.bytes().all(|c| c.is_ascii_hexdigit());
            if !hex {
                return Err(format!("tls.pinnedCerts.{name}: not a 64-hex-digit SHA-256 fingerprint"));
            }
        }
        if self.execution.max_concurrent == 0 {
            return Err("execution.maxConcurrent: must be at least 1".into());
        }
        if self.execution.max_queued > MAX_QUEUED {
            return Err(format!("execution.maxQueued: at most {MAX_QUEUED}"));
        }
        if self.execution.queue_timeout == 0 {
            return Err("execution.queueTimeout: must be a positive number of milliseconds".into());
        }
        if !(1..=MAX_CONTEXT_ENTRIES).contains(&self.context.max_entries) {
            return Err(format!("context.maxEntries: must be 1 to {MAX_CONTEXT_ENTRIES}"));
        }
        if self.execution.default_timeout == 0 {
            return Err("execution.defaultTimeout: must be a positive number of milliseconds".into());
        }
        if self.execution.default_timeout > self.execution.max_timeout {
            return Err(format!(
                "execution.defaultTimeout: {} ms is more than execution.maxTimeout ({} ms)",
                self.execution.default_timeout, self.execution.max_timeout
            ));
        }
        if self.execution.keep_output_bytes < 64 * 1024 {
            return Err("execution.keepOutputBytes: must be at least 65536 bytes".into());
        }
        for (field, list) in [
            ("transfer.allowedPaths", &self.transfer.allowed_paths),
            ("transfer.deniedPaths", &self.transfer.denied_paths),
        ] {
            if let Some(bad) = list.iter().find(|p| !Path::new(p).is_absolute()) {
                return Err(format!("{field}: '{bad}' is not an absolute path"));
            }
        }
        let ai = &self.ai_tasks;
        if ai.max_concurrent == 0 {
            return Err("aiTasks.maxConcurrent: must be at least 1".into());
        }
        for (field, value, min) in [
            ("timeout", ai.timeout, 100),
            ("approvalTimeout", ai.approval_timeout, 100),
            ("finishedTtl", ai.finished_ttl, 0),
            ("heartbeatInterval", ai.heartbeat_interval, 100),
        ] {
            if value < min {
                return Err(format!("aiTasks.{field}: must be at least {min} milliseconds"));
            }
        }
        let messaging = &self.messaging;
        for (field, value) in [
            ("retryInitial", messaging.retry_initial),
            ("retryMax", messaging.retry_max),
            ("deliveryTimeout", messaging.delivery_timeout),
        ] {
            if value < 10 {
                return Err(format!("messaging.{field}: must be at least 10 milliseconds"));
            }
        }
        if messaging.retry_max < messaging.retry_initial {
            return Err("messaging.retryMax: must not be below messaging.retryInitial".into());
        }
        if self.transfer.max_file_size == 0 {
            return Err("transfer.maxFileSize: must be positive".into());
        }
        if self.sessions.base_port == 0 || self.sessions.base_port > u16::MAX - 99 {
            return Err("sessions.basePort: must be 1 to 65436 (sessions use 100 ports from it)".into());
        }
        let terminals = &self.terminals;
        if terminals.client_buffer_bytes < 64 * 1024 {
            return Err("terminals.clientBufferBytes: must be at least 65536".into());
        }
        if terminals.max_sessions == 0 || terminals.max_clients == 0 {
            return Err("terminals.maxSessions and terminals.maxClients: must be at least 1".into());
        }
        if terminals.scrollback_bytes > 256 * 1024 * 1024 {
            return Err("terminals.scrollbackBytes: at most 268435456".into());
        }
        if crate::terminal::keys::prefix_byte(&terminals.detach_prefix).is_none() {
            return Err(format!("terminals.detachPrefix: '{}' is not a control key like C-a", terminals.detach_prefix));
        }
        if self.discovery.health_interval < 100 {
            return Err("discovery.healthInterval: must be at least 100 milliseconds".into());
        }
        for (i, peer) in self.discovery.manual_peers.iter().enumerate() {
            if peer.address.trim().is_empty() {
                return Err(format!("discovery.manualPeers[{i}].address: must not be empty"));
            }
            if peer.port == 0 {
                return Err(format!("discovery.manualPeers[{i}].port: must be 1 to 65535"));
            }
        }
        Ok(())
    }

    /// Every optional field set, so serialising it names every known key.
    fn fully_populated() -> Config {
        let mut config = Config::default();
        config.server.hostname = Some(String::new());
        config.server.data_dir = Some(String::new());
        config.tls.cert_path = Some(String::new());
        config.tls.key_path = Some(String::new());
        config.execution.allowlist = Some(Vec::new());
        config.logging.file = Some(String::new());
        config.discovery.manual_peers = vec![ManualPeer {
            address: String::new(),
            port: 1,
            hostname: Some(String::new()),
            name: Some(String::new()),
        }];
        config
    }

    /// YAML text of this configuration.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("config serialises")
    }

    /// The node's name: `server.hostname`, else the OS hostname.
    pub fn hostname(&self) -> String {
        self.server.hostname.clone().unwrap_or_else(crate::identity::os_hostname)
    }
}

/// Maps whose keys are the user's own names, not schema fields.
const FREE_FORM: &[&str] = &["auth.allowedKeys", "auth.peerKeys", "tls.pinnedCerts"];

fn collect_unknown(doc: &serde_yaml::Value, known: &serde_yaml::Value, prefix: &str, out: &mut Vec<String>) {
    use serde_yaml::Value;
    if FREE_FORM.contains(&prefix) {
        return;
    }
    match (doc, known) {
        (Value::Mapping(doc), Value::Mapping(known)) => {
            for (key, value) in doc {
                let name = key.as_str().map(String::from).unwrap_or_else(|| format!("{key:?}"));
                let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
                match known.get(key) {
                    Some(known_value) => collect_unknown(value, known_value, &path, out),
                    None => out.push(path),
                }
            }
        }
        (Value::Sequence(items), Value::Sequence(known)) if !known.is_empty() => {
            for (i, item) in items.iter().enumerate() {
                collect_unknown(item, &known[0], &format!("{prefix}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Read-modify-write of `config.yaml` under an exclusive lock, replaced atomically (0600).
///
/// The closure edits the YAML document, so keys this version does not know survive. The result
/// must still be a valid configuration, or nothing is written.
pub fn edit(
    paths: &Paths,
    change: impl FnOnce(&mut serde_yaml::Value) -> anyhow::Result<()>,
) -> anyhow::Result<Config> {
    use anyhow::Context;
    durable::create_private_dir(paths.home())?;
    let _lock = crate::instance::FileLock::exclusive(&paths.config_lock())?;
    let path = paths.config_file();
    let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow::Error::new(ConfigError::Missing { path: path.clone() }),
        _ => anyhow::Error::new(ConfigError::Unreadable { path: path.clone(), source: e }),
    })?;
    let mut doc: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| ConfigError::Invalid { path: path.clone(), message: e.to_string() })?;
    change(&mut doc)?;
    let new_text = serde_yaml::to_string(&doc).context("serialising the config")?;
    let config = Config::parse(&new_text).map_err(|message| ConfigError::Invalid { path: path.clone(), message })?;
    durable::write(&path, new_text.as_bytes(), durable::Mode::Secret)?;
    Ok(config)
}

/// Sets `doc.a.b.c = value`, creating mappings on the way.
pub fn set_path(doc: &mut serde_yaml::Value, keys: &[&str], value: serde_yaml::Value) {
    use serde_yaml::Value;
    let mut node = doc;
    for key in &keys[..keys.len() - 1] {
        if !node.is_mapping() {
            *node = Value::Mapping(Default::default());
        }
        let map = node.as_mapping_mut().expect("made a mapping above");
        node = map.entry(Value::from(*key)).or_insert_with(|| Value::Mapping(Default::default()));
    }
    if !node.is_mapping() {
        *node = Value::Mapping(Default::default());
    }
    node.as_mapping_mut().expect("made a mapping above").insert(Value::from(keys[keys.len() - 1]), value);
}

/// Removes `doc.a.b.c`; returns the removed value.
pub fn remove_path(doc: &mut serde_yaml::Value, keys: &[&str]) -> Option<serde_yaml::Value> {
    let mut node = doc;
    for key in &keys[..keys.len() - 1] {
        node = node.as_mapping_mut()?.get_mut(*key)?;
    }
    node.as_mapping_mut()?.remove(keys[keys.len() - 1])
}

/// Moves the `discovery.manualPeers` entries at `from` (address, port) to `to`, so a peer the
/// owner confirmed at a new address is registered there after a restart too. Returns whether an
/// entry was moved (a peer only discovered has none).
pub fn move_manual_peer(paths: &Paths, from: (&str, u16), to: (&str, u16)) -> anyhow::Result<bool> {
    let mut moved = false;
    edit(paths, |doc| {
        if let Some(list) = doc["discovery"]["manualPeers"].as_sequence_mut() {
            for entry in list.iter_mut() {
                let at = entry["address"].as_str().is_some_and(|a| a.eq_ignore_ascii_case(from.0))
                    && entry["port"].as_u64().unwrap_or(u64::from(DEFAULT_PORT)) == u64::from(from.1);
                if at {
                    entry["address"] = to.0.into();
                    entry["port"] = u64::from(to.1).into();
                    moved = true;
                }
            }
        }
        Ok(())
    })?;
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    #[track_caller]
    fn check_error(yaml: &str, expect: &str) {
        let err = Config::parse(yaml).unwrap_err();
        assert!(err.contains(expect), "error {err:?} should mention {expect:?}");
    }

    #[test]
    fn a_partial_file_is_merged_over_the_defaults() {
        let config = Config::parse(&format!("auth:\n  apiKey: {KEY}\nexecution:\n  maxConcurrent: 2\n")).unwrap();
        assert_eq!(config.server.port, 19532);
        assert_eq!(config.execution.max_concurrent, 2);
        assert_eq!(config.execution.denylist.len(), 7, "missing lists keep the default");
        assert_eq!(config.rate_limits.context, 60);
        assert!(config.tls.allow_insecure_peers);
    }

    #[test]
    fn an_empty_list_replaces_the_default() {
        let config = Config::parse(&format!("auth: {{apiKey: {KEY}}}\nexecution: {{denylist: []}}\n")).unwrap();
        assert!(config.execution.denylist.is_empty());
    }

    #[test]
    fn invalid_files_name_the_field() {
        check_error("server: {port: 19532}\n", "auth.apiKey");
        check_error(&format!("auth: {{apiKey: {KEY}}}\nserver: {{port: abc}}\n"), "server.port");
        check_error(&format!("auth: {{apiKey: {KEY}}}\nserver: {{port: 70000}}\n"), "server.port");
        check_error(&format!("auth: {{apiKey: {KEY}}}\nserver: {{host: nowhere}}\n"), "server.host");
        check_error(&format!("auth: {{apiKey: {KEY}, allowedKeys: {{bob: ''}}}}\n"), "auth.allowedKeys.bob");
        check_error(&format!("auth: {{apiKey: {KEY}}}\nexecution: {{maxConcurrent: 0}}\n"), "execution.maxConcurrent");
        check_error(&format!("auth: {{apiKey: {KEY}}}\nexecution: {{maxTimeout: 1000}}\n"), "execution.defaultTimeout");
        check_error(&format!("auth: {{apiKey: {KEY}}}\nexecution: {{maxQueued: 10001}}\n"), "execution.maxQueued");
        check_error(&format!("auth: {{apiKey: {KEY}}}\nexecution: {{queueTimeout: 0}}\n"), "execution.queueTimeout");
        check_error(&format!("auth: {{apiKey: {KEY}}}\ncontext: {{maxEntries: 0}}\n"), "context.maxEntries");
        check_error(&format!("auth: {{apiKey: {KEY}}}\ntransfer: {{allowedPaths: [rel]}}\n"), "transfer.allowedPaths");
        check_error(&format!("auth: {{apiKey: {KEY}}}\nlogging: {{level: loud}}\n"), "logging.level");
        check_error(&format!("auth: {{apiKey: {KEY}}}\naiTasks: {{maxConcurrent: 0}}\n"), "aiTasks.maxConcurrent");
        check_error(&format!("auth: {{apiKey: {KEY}}}\naiTasks: {{timeout: 5}}\n"), "aiTasks.timeout");
        check_error(&format!("auth: {{apiKey: {KEY}}}\naiTasks: {{approvalTimeout: -1}}\n"), "aiTasks.approvalTimeout");
        check_error(&format!("auth: {{apiKey: {KEY}}}\nmessaging: {{retryInitial: 1}}\n"), "messaging.retryInitial");
        check_error(
            &format!("auth: {{apiKey: {KEY}}}\nmessaging: {{retryInitial: 5000, retryMax: 1000}}\n"),
            "messaging.retryMax",
        );
        check_error(&format!("auth: {{apiKey: {KEY}}}\nserver: {{headerTimeout: 10}}\n"), "server.headerTimeout");
        check_error(&format!("auth: {{apiKey: {KEY}}}\nserver: {{idleTimeout: 0}}\n"), "server.idleTimeout");
        check_error(&format!("auth: {{apiKey: {KEY}}}\nserver: {{maxConnections: 0}}\n"), "server.maxConnections");
        check_error(
            &format!("auth: {{apiKey: {KEY}}}\nserver: {{maxConnectionsPerAddress: 0}}\n"),
            "server.maxConnectionsPerAddress",
        );
        check_error("auth: [unclosed\n", "line 1");
        check_error("", "empty");
    }

    #[test]
    fn unknown_keys_are_reported_with_their_path() {
        let yaml = format!(
            "auth: {{apiKey: {KEY}, allowedKeys: {{anyname: {KEY}}}}}\nexecution: {{maxConcurent: 3}}\nextra: 1\n\
             discovery: {{manualPeers: [{{address: a, prot: 1}}]}}\n"
        );
        assert_eq!(Config::unknown_keys(&yaml), ["execution.maxConcurent", "extra", "discovery.manualPeers[0].prot"]);
    }

    #[test]
    fn the_written_config_reads_back_identically() {
        let config = Config::new_with_key(KEY.into());
        assert_eq!(Config::parse(&config.to_yaml()).unwrap(), config);
        assert!(Config::unknown_keys(&config.to_yaml()).is_empty());
    }

    #[test]
    fn set_path_creates_missing_mappings() {
        let mut doc: serde_yaml::Value = serde_yaml::from_str("auth: {apiKey: x}\nkeep: 1\n").unwrap();
        set_path(&mut doc, &["auth", "apiKey"], "y".into());
        set_path(&mut doc, &["tls", "pinnedCerts", "bob"], "f".into());
        assert_eq!(doc["auth"]["apiKey"], "y");
        assert_eq!(doc["tls"]["pinnedCerts"]["bob"], "f");
        assert_eq!(doc["keep"], 1);
    }
}
