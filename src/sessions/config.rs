//! A session's `config.yaml`, generated from the main one (§9.5 step 4), as a pure function.
//!
//! Regenerated at every start so a session follows the main config (keys, limits), but what the
//! session learnt on its own (pairings: `auth.allowedKeys`/`peerKeys` entries, `tls` pins and
//! switch, non-loopback manual peers) is merged back from its previous file rather than wiped,
//! which 1.0.21 did.

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::{Config, ManualPeer};

/// What a session config is made from.
#[derive(Debug, Clone)]
pub(super) struct SessionConfig<'a> {
    pub main: &'a Config,
    /// The main data directory: denied to the session's file transfer.
    pub main_home: &'a Path,
    pub hostname: String,
    pub port: u16,
    /// The main daemon and the running sessions, as the session should know them.
    pub peers: Vec<ManualPeer>,
}

impl SessionConfig<'_> {
    /// The session's configuration, merged with `previous` (its last `config.yaml`, if any).
    pub(super) fn render(&self, previous: Option<&Config>) -> Config {
        let mut config = self.main.clone();
        config.server.port = self.port;
        config.server.hostname = Some(self.hostname.clone());
        config.server.data_dir = None;
        // Sessions listen where the main daemon does (1.0.21 always used 0.0.0.0) and never
        // serve TLS unless their own pairing turned it on (merged below).
        config.tls.enabled = false;
        config.tls.cert_path = None;
        config.tls.key_path = None;
        config.transfer.denied_paths.push(self.main_home.to_string_lossy().into_owned());
        config.discovery.enabled = false;
        let mut peers = self.peers.clone();
        peers.extend(self.main.discovery.manual_peers.iter().filter(|p| !is_loopback(&p.address)).cloned());
        config.discovery.manual_peers = peers;
        if let Some(previous) = previous {
            merge_local(&mut config, previous);
        }
        config
    }
}

/// Keeps the session-local additions of `previous` that the generated `config` lacks.
fn merge_local(config: &mut Config, previous: &Config) {
    let keep = |generated: &mut BTreeMap<String, String>, old: &BTreeMap<String, String>| {
        for (name, value) in old {
            generated.entry(name.clone()).or_insert_with(|| value.clone());
        }
    };
    keep(&mut config.auth.allowed_keys, &previous.auth.allowed_keys);
    keep(&mut config.auth.peer_keys, &previous.auth.peer_keys);
    keep(&mut config.tls.pinned_certs, &previous.tls.pinned_certs);
    if previous.tls.enabled {
        config.tls.enabled = true;
    }
    let peers = &mut config.discovery.manual_peers;
    for old in &previous.discovery.manual_peers {
        let present = peers.iter().any(|p| p.address == old.address && p.port == old.port);
        if !old.address.is_empty() && !is_loopback(&old.address) && !present {
            peers.push(old.clone());
        }
    }
}

/// Loopback entries are the main daemon and sibling sessions: regenerated, never carried over.
fn is_loopback(address: &str) -> bool {
    address == "localhost" || address.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.to_canonical().is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    fn main_config() -> Config {
        let mut config = Config::new_with_key(KEY.into());
        config.server.host = "127.0.0.1".into();
        config.auth.allowed_keys.insert("bob".into(), "bob-key-0123456789abcdef".into());
        config.discovery.manual_peers = vec![
            ManualPeer { address: "10.0.0.9".into(), port: 19532, hostname: None, name: Some("bob".into()) },
            ManualPeer { address: "127.0.0.1".into(), port: 19540, hostname: None, name: None },
        ];
        config
    }

    fn session(main: &Config) -> SessionConfig<'_> {
        SessionConfig {
            main,
            main_home: Path::new("/home/u/.loopsy"),
            hostname: "box-w1".into(),
            port: 19533,
            peers: vec![ManualPeer {
                address: "127.0.0.1".into(),
                port: 19532,
                hostname: Some("box".into()),
                name: Some("main".into()),
            }],
        }
    }

    #[test]
    fn a_fresh_session_copies_keys_and_host_and_turns_discovery_off() {
        let main = main_config();
        let config = session(&main).render(None);
        assert_eq!(Config::parse(&config.to_yaml()).unwrap(), config, "valid");
        assert_eq!(config.server.port, 19533);
        assert_eq!(config.server.host, "127.0.0.1");
        assert_eq!(config.server.hostname.as_deref(), Some("box-w1"));
        assert_eq!(config.auth.api_key, KEY);
        assert_eq!(config.auth.allowed_keys, main.auth.allowed_keys);
        assert!(!config.discovery.enabled);
        assert!(!config.tls.enabled);
        assert!(config.transfer.denied_paths.contains(&"/home/u/.loopsy".to_string()));
        let peers: Vec<(&str, u16)> =
            config.discovery.manual_peers.iter().map(|p| (p.address.as_str(), p.port)).collect();
        assert_eq!(peers, [("127.0.0.1", 19532), ("10.0.0.9", 19532)], "stale loopback entries are dropped");
    }

    #[test]
    fn session_local_pairings_survive_a_restart() {
        let main = main_config();
        let previous = Config::parse(&format!(
            "auth: {{apiKey: old-key-0123456789abcdef, allowedKeys: {{carol: carol-key-0123456789abcdef, bob: stale-0123456789abcdef}}, peerKeys: {{carol: to-carol-0123456789abcdef}}}}\n\
             tls: {{enabled: true, pinnedCerts: {{carol: '{}'}}}}\n\
             discovery: {{manualPeers: [{{address: 10.0.0.7, port: 19532, name: carol}}, {{address: 127.0.0.1, port: 19999}}]}}\n",
            "a".repeat(64)
        ))
        .unwrap();
        let config = session(&main).render(Some(&previous));
        assert_eq!(Config::parse(&config.to_yaml()).unwrap(), config, "valid");
        assert_eq!(config.auth.api_key, KEY, "the key follows the main config");
        assert_eq!(config.auth.allowed_keys["carol"], "carol-key-0123456789abcdef");
        assert_eq!(config.auth.allowed_keys["bob"], "bob-key-0123456789abcdef", "main wins for shared names");
        assert_eq!(config.auth.peer_keys["carol"], "to-carol-0123456789abcdef");
        assert_eq!(config.tls.pinned_certs["carol"], "a".repeat(64));
        assert!(config.tls.enabled);
        let ports: Vec<(&str, u16)> =
            config.discovery.manual_peers.iter().map(|p| (p.address.as_str(), p.port)).collect();
        assert_eq!(ports, [("127.0.0.1", 19532), ("10.0.0.9", 19532), ("10.0.0.7", 19532)]);
    }
}
