//! `config.yaml`: the 1.0.21 schema and defaults (`schema.rs`), parsed once into an immutable
//! [`Config`], and the typed operations that change the file (`edit.rs`).
//!
//! Loading never guesses: a missing, malformed or invalid file is an error that names the file,
//! the field and what is wrong (1.0.21 silently started with a random key instead). This module
//! is the only one that knows the file's format (serde_yaml) and its key paths: everyone else
//! reads a [`Config`] and changes the file through an operation of [`edit`].

mod edit;
mod schema;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub(crate) use edit::{
    add_manual_peer, allow_key, forget_peer, make_local_only, move_manual_peer, replace, save_pairing, set_api_key,
    LocalOnly, Pairing,
};
pub(crate) use schema::*;

use crate::paths::Paths;

/// Why a configuration could not be used. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("no config at {}: run `loopsy init` first", path.display())]
    Missing { path: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("invalid config {}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    /// A fresh configuration with a new key, as `loopsy init` writes it.
    pub(crate) fn new_with_key(api_key: String) -> Config {
        let mut config = Config::default();
        config.auth.api_key = api_key;
        config
    }

    /// Reads, parses and validates `config.yaml`.
    pub(crate) fn load(paths: &Paths) -> Result<Config, ConfigError> {
        let path = paths.config_file();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ConfigError::Missing { path }),
            Err(source) => return Err(ConfigError::Unreadable { path, source }),
        };
        Config::parse(&text).map_err(|message| ConfigError::Invalid { path, message })
    }

    /// Parses and validates YAML text; the error names the field and what is wrong.
    pub(crate) fn parse(text: &str) -> Result<Config, String> {
        let config: Config = if text.trim().is_empty() {
            return Err("the file is empty".into());
        } else {
            serde_yaml::from_str(text).map_err(|e| e.to_string())?
        };
        config.validate()?;
        Ok(config)
    }

    /// `config.yaml` of `paths` as typed values, without validation: `None` when it is missing
    /// or does not parse. For looking at another data directory's config (a session's), where
    /// what can be read beats nothing; a daemon or command uses [`Config::load`].
    pub(crate) fn read_unchecked(paths: &Paths) -> Option<Config> {
        let text = std::fs::read_to_string(paths.config_file()).ok()?;
        serde_yaml::from_str(&text).ok()
    }

    /// Keys present in `text` that the schema does not know (typos, newer versions).
    pub(crate) fn unknown_keys(text: &str) -> Vec<String> {
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
    pub(crate) fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("config serialises")
    }

    /// The node's name: `server.hostname`, else the OS hostname.
    pub(crate) fn hostname(&self) -> String {
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
}
