//! The typed operations that change `config.yaml`, and the one read-modify-write behind them.
//!
//! The file is edited as a YAML document, not rewritten from a [`Config`], so keys this version
//! does not know survive. Every operation runs under `.config.lock` (exclusive between
//! processes), checks that the result is still a valid configuration (or writes nothing) and
//! replaces the file atomically with mode 0600. No other module knows a key path of the file:
//! a writer that needs another change adds an operation here.

use serde_yaml::{Mapping, Value};

use super::{Config, ConfigError, DEFAULT_PORT};
use crate::durable;
use crate::paths::Paths;

/// Writes `config` as the whole file (`loopsy init`, a session's generated config): validated
/// first, under the lock, 0600.
pub(crate) fn replace(paths: &Paths, config: &Config) -> anyhow::Result<()> {
    let path = paths.config_file();
    let text = config.to_yaml();
    Config::parse(&text).map_err(|message| ConfigError::Invalid { path: path.clone(), message })?;
    durable::create_private_dir(paths.home())?;
    let _lock = crate::instance::FileLock::exclusive(&paths.config_lock())?;
    durable::write(&path, text.as_bytes(), durable::Mode::Secret)
}

/// Makes `key` this node's own key (`loopsy key generate`).
pub(crate) fn set_api_key(paths: &Paths, key: &str) -> anyhow::Result<Config> {
    edit(paths, |doc| {
        set(doc, &["auth", "apiKey"], key.into());
        Ok(())
    })
}

/// Accepts `key` from the peer `name` (`loopsy peers add --key`, `loopsy connect`).
pub(crate) fn allow_key(paths: &Paths, name: &str, key: &str) -> anyhow::Result<Config> {
    edit(paths, |doc| {
        set(doc, &["auth", "allowedKeys", name], key.into());
        Ok(())
    })
}

/// Adds `{address, port, name}` to the manual peers, or names the entry already at that
/// address and port (`loopsy connect`).
pub(crate) fn add_manual_peer(paths: &Paths, address: &str, port: u16, name: &str) -> anyhow::Result<Config> {
    edit(paths, |doc| {
        let list = manual_peers(doc)?;
        match list.iter_mut().find(|entry| is_at(entry, address, port)) {
            Some(entry) => entry["name"] = name.into(),
            None => list.push(peer_entry(address, port, None, name)),
        }
        Ok(())
    })
}

/// Moves the manual peer entries at `from` (address, port) to `to`, so a peer the owner
/// confirmed at a new address is registered there after a restart too. Returns whether an
/// entry was moved (a peer only discovered has none).
pub(crate) fn move_manual_peer(paths: &Paths, from: (&str, u16), to: (&str, u16)) -> anyhow::Result<bool> {
    let mut moved = false;
    edit(paths, |doc| {
        for entry in manual_peers(doc)?.iter_mut().filter(|entry| is_at(entry, from.0, from.1)) {
            entry["address"] = to.0.into();
            entry["port"] = u64::from(to.1).into();
            moved = true;
        }
        Ok(())
    })?;
    Ok(moved)
}

/// Removes what the config holds for a peer: its keys both ways and its pin under any of
/// `names`, and its manual entries at `address:port` (`loopsy peers remove`). Returns the key
/// it presented to us, if there was one.
pub(crate) fn forget_peer(paths: &Paths, names: &[&str], address: &str, port: u16) -> anyhow::Result<Option<String>> {
    let mut accepted = None;
    edit(paths, |doc| {
        for name in names {
            if let Some(key) = remove(doc, &["auth", "allowedKeys", name]) {
                accepted = key.as_str().map(String::from);
            }
            remove(doc, &["auth", "peerKeys", name]);
            remove(doc, &["tls", "pinnedCerts", name]);
        }
        manual_peers(doc)?.retain(|entry| !is_at(entry, address, port));
        Ok(())
    })?;
    Ok(accepted)
}

/// A completed pairing, as both daemons save it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pairing<'a> {
    pub hostname: &'a str,
    /// Where the peer is reached.
    pub address: &'a str,
    pub port: u16,
    /// The peer's certificate fingerprint, to pin.
    pub fingerprint: &'a str,
    /// The key we minted for the peer: it presents it to us (`auth.allowedKeys`).
    pub accepted_key: &'a str,
    /// The key the peer minted for us: we present it (`auth.peerKeys`).
    pub presented_key: &'a str,
}

/// Saves a completed pairing in one edit: keys both ways, the pin, TLS on, and the peer as a
/// named manual peer at its address (replacing an entry there). `choose_name` picks the name it
/// is saved under, given a test of whether this config already uses a name for another peer (a
/// pin of another certificate, a 1.0.21 key, a key we present), which must never be
/// overwritten. Returns the new config and the name.
pub(crate) fn save_pairing(
    paths: &Paths,
    pairing: &Pairing,
    choose_name: impl FnOnce(&dyn Fn(&str) -> bool) -> String,
) -> anyhow::Result<(Config, String)> {
    let mut chosen = String::new();
    let config = edit(paths, |doc| {
        let taken = |candidate: &str| {
            let pinned = doc["tls"]["pinnedCerts"][candidate].as_str();
            if pinned == Some(pairing.fingerprint) {
                return false;
            }
            pinned.is_some()
                || !doc["auth"]["allowedKeys"][candidate].is_null()
                || !doc["auth"]["peerKeys"][candidate].is_null()
        };
        let name = choose_name(&taken);
        set(doc, &["auth", "allowedKeys", &name], pairing.accepted_key.into());
        set(doc, &["auth", "peerKeys", &name], pairing.presented_key.into());
        set(doc, &["tls", "pinnedCerts", &name], pairing.fingerprint.into());
        set(doc, &["tls", "enabled"], true.into());
        let list = manual_peers(doc)?;
        list.retain(|entry| !is_at(entry, pairing.address, pairing.port));
        list.push(peer_entry(pairing.address, pairing.port, Some(pairing.hostname), &name));
        chosen = name;
        Ok(())
    })?;
    Ok((config, chosen))
}

/// A data directory for benchmarks and fleets (`loopsy generate local-config`): listening on
/// loopback only, not announced on the LAN.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LocalOnly {
    /// The port to listen on (0: any free port); the configured one when `None`.
    pub port: Option<u16>,
    /// Turns the per-key rate limits off (a benchmark measures the daemon, not its limits).
    pub unlimited: bool,
    /// Turns TLS on (the daemon makes its certificate at start); loopback clients keep plain HTTP.
    pub tls: bool,
}

/// Applies [`LocalOnly`].
pub(crate) fn make_local_only(paths: &Paths, local: LocalOnly) -> anyhow::Result<Config> {
    edit(paths, |doc| {
        set(doc, &["server", "host"], "127.0.0.1".into());
        if let Some(port) = local.port {
            set(doc, &["server", "port"], u64::from(port).into());
        }
        set(doc, &["discovery", "enabled"], false.into());
        if local.unlimited {
            for category in ["execute", "transfer", "context"] {
                set(doc, &["rateLimits", category], 0u64.into());
            }
        }
        if local.tls {
            set(doc, &["tls", "enabled"], true.into());
        }
        Ok(())
    })
}

/// Read-modify-write of `config.yaml` under an exclusive lock, replaced atomically (0600).
///
/// The closure edits the YAML document, so keys this version does not know survive. The result
/// must still be a valid configuration, or nothing is written.
fn edit(paths: &Paths, change: impl FnOnce(&mut Value) -> anyhow::Result<()>) -> anyhow::Result<Config> {
    use anyhow::Context;
    durable::create_private_dir(paths.home())?;
    let _lock = crate::instance::FileLock::exclusive(&paths.config_lock())?;
    let path = paths.config_file();
    let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow::Error::new(ConfigError::Missing { path: path.clone() }),
        _ => anyhow::Error::new(ConfigError::Unreadable { path: path.clone(), source: e }),
    })?;
    let mut doc: Value =
        serde_yaml::from_str(&text).map_err(|e| ConfigError::Invalid { path: path.clone(), message: e.to_string() })?;
    change(&mut doc)?;
    let new_text = serde_yaml::to_string(&doc).context("serialising the config")?;
    let config = Config::parse(&new_text).map_err(|message| ConfigError::Invalid { path: path.clone(), message })?;
    durable::write(&path, new_text.as_bytes(), durable::Mode::Secret)?;
    Ok(config)
}

/// Sets `doc.a.b.c = value`, creating mappings on the way.
fn set(doc: &mut Value, keys: &[&str], value: Value) {
    let mut node = doc;
    for key in &keys[..keys.len() - 1] {
        if !node.is_mapping() {
            *node = Value::Mapping(Mapping::new());
        }
        let map = node.as_mapping_mut().expect("made a mapping above");
        node = map.entry(Value::from(*key)).or_insert_with(|| Value::Mapping(Mapping::new()));
    }
    if !node.is_mapping() {
        *node = Value::Mapping(Mapping::new());
    }
    node.as_mapping_mut().expect("made a mapping above").insert(Value::from(keys[keys.len() - 1]), value);
}

/// Removes `doc.a.b.c`; returns the removed value.
fn remove(doc: &mut Value, keys: &[&str]) -> Option<Value> {
    let mut node = doc;
    for key in &keys[..keys.len() - 1] {
        node = node.as_mapping_mut()?.get_mut(*key)?;
    }
    node.as_mapping_mut()?.remove(keys[keys.len() - 1])
}

/// `discovery.manualPeers`, made an empty list when absent; an error when it is something else.
fn manual_peers(doc: &mut Value) -> anyhow::Result<&mut Vec<Value>> {
    if doc["discovery"]["manualPeers"].is_null() {
        set(doc, &["discovery", "manualPeers"], Value::Sequence(Vec::new()));
    }
    doc["discovery"]["manualPeers"]
        .as_sequence_mut()
        .ok_or_else(|| anyhow::anyhow!("discovery.manualPeers in config.yaml is not a list"))
}

/// Whether a manual peer entry is at `address:port` (the address compared without regard to
/// ASCII case; an entry without a port is at the default port).
fn is_at(entry: &Value, address: &str, port: u16) -> bool {
    entry["address"].as_str().is_some_and(|a| a.eq_ignore_ascii_case(address))
        && entry["port"].as_u64().unwrap_or(u64::from(DEFAULT_PORT)) == u64::from(port)
}

fn peer_entry(address: &str, port: u16, hostname: Option<&str>, name: &str) -> Value {
    let mut entry = Mapping::new();
    entry.insert("address".into(), address.into());
    entry.insert("port".into(), u64::from(port).into());
    if let Some(hostname) = hostname {
        entry.insert("hostname".into(), hostname.into());
    }
    entry.insert("name".into(), name.into());
    Value::Mapping(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    /// A data directory holding `yaml` as its config.
    fn home(name: &str, yaml: &str) -> (Paths, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("loopsy-config-{name}-{}", crate::random::hex(6)));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.yaml"), yaml).unwrap();
        (Paths::from_dir(&dir).unwrap(), dir)
    }

    fn doc(paths: &Paths) -> Value {
        serde_yaml::from_str(&std::fs::read_to_string(paths.config_file()).unwrap()).unwrap()
    }

    #[test]
    fn set_creates_missing_mappings() {
        let mut doc: Value = serde_yaml::from_str("auth: {apiKey: x}\nkeep: 1\n").unwrap();
        set(&mut doc, &["auth", "apiKey"], "y".into());
        set(&mut doc, &["tls", "pinnedCerts", "bob"], "f".into());
        assert_eq!(doc["auth"]["apiKey"], "y");
        assert_eq!(doc["tls"]["pinnedCerts"]["bob"], "f");
        assert_eq!(doc["keep"], 1);
    }

    #[test]
    fn operations_keep_unknown_keys_and_refuse_an_invalid_result() {
        let (paths, dir) = home("unknown", &format!("auth: {{apiKey: {KEY}}}\nfuture: {{setting: 1}}\n"));
        let config = allow_key(&paths, "bob", "bob-key-0123456789abcdef").unwrap();
        assert_eq!(config.auth.allowed_keys["bob"], "bob-key-0123456789abcdef");
        assert_eq!(doc(&paths)["future"]["setting"], 1, "a key this version does not know survives");
        assert!(set_api_key(&paths, "short").is_err(), "an invalid result is refused");
        assert_eq!(doc(&paths)["auth"]["apiKey"], KEY, "and nothing is written");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn manual_peers_are_added_named_moved_and_forgotten() {
        let (paths, dir) =
            home("peers", &format!("auth: {{apiKey: {KEY}}}\ndiscovery: {{manualPeers: [{{address: 10.0.0.2}}]}}\n"));
        add_manual_peer(&paths, "10.0.0.2", DEFAULT_PORT, "bob").unwrap();
        let config = add_manual_peer(&paths, "10.0.0.3", 19600, "carol").unwrap();
        let peers: Vec<_> =
            config.discovery.manual_peers.iter().map(|p| (p.address.as_str(), p.port, p.name.as_deref())).collect();
        assert_eq!(peers, [("10.0.0.2", DEFAULT_PORT, Some("bob")), ("10.0.0.3", 19600, Some("carol"))]);
        assert!(move_manual_peer(&paths, ("10.0.0.3", 19600), ("10.0.0.4", 19601)).unwrap());
        assert!(!move_manual_peer(&paths, ("10.0.0.9", 19600), ("10.0.0.4", 19601)).unwrap());
        allow_key(&paths, "carol", "carol-key-0123456789abcdef").unwrap();
        let forgotten = forget_peer(&paths, &["carol", "carol-host"], "10.0.0.4", 19601).unwrap();
        assert_eq!(forgotten.as_deref(), Some("carol-key-0123456789abcdef"));
        let config = Config::load(&paths).unwrap();
        assert!(config.auth.allowed_keys.is_empty());
        assert_eq!(config.discovery.manual_peers.len(), 1);
        std::fs::write(paths.config_file(), format!("auth: {{apiKey: {KEY}}}\ndiscovery: {{manualPeers: 3}}\n"))
            .unwrap();
        assert!(add_manual_peer(&paths, "10.0.0.2", 1, "x").is_err(), "manualPeers that is not a list");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_pairing_is_saved_whole_under_a_name_no_other_peer_uses() {
        let pin = "a".repeat(64);
        let (paths, dir) = home(
            "pairing",
            &format!(
                "auth: {{apiKey: {KEY}, allowedKeys: {{box: legacy-key-0123456789abcdef}}}}\n\
                 discovery: {{manualPeers: [{{address: 10.0.0.5, port: 19532, name: old}}]}}\n"
            ),
        );
        let pairing = Pairing {
            hostname: "box",
            address: "10.0.0.5",
            port: 19532,
            fingerprint: &pin,
            accepted_key: "accepted-0123456789abcdef",
            presented_key: "presented-0123456789abcdef",
        };
        let (config, name) = save_pairing(&paths, &pairing, |taken| {
            assert!(taken("box"), "a 1.0.21 key has that name");
            assert!(!taken("free"));
            "box-12345678".into()
        })
        .unwrap();
        assert_eq!(name, "box-12345678");
        assert_eq!(config.auth.allowed_keys["box"], "legacy-key-0123456789abcdef", "never overwritten");
        assert_eq!(config.auth.allowed_keys[&name], "accepted-0123456789abcdef");
        assert_eq!(config.auth.peer_keys[&name], "presented-0123456789abcdef");
        assert_eq!(config.tls.pinned_certs[&name], pin);
        assert!(config.tls.enabled);
        let peers = &config.discovery.manual_peers;
        assert_eq!(peers.len(), 1, "the entry at the address is replaced");
        assert_eq!((peers[0].name.as_deref(), peers[0].hostname.as_deref()), (Some(name.as_str()), Some("box")));
        // The same certificate again: its own name is not taken.
        save_pairing(&paths, &pairing, |taken| {
            assert!(!taken("box-12345678"));
            "box-12345678".into()
        })
        .unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn local_only_listens_on_loopback_without_discovery() {
        let (paths, dir) = home("local", &format!("auth: {{apiKey: {KEY}}}\n"));
        let config = make_local_only(&paths, LocalOnly { port: Some(0), unlimited: true, tls: false }).unwrap();
        assert_eq!((config.server.host.as_str(), config.server.port), ("127.0.0.1", 0));
        assert!(!config.discovery.enabled);
        assert!(!config.tls.enabled);
        assert_eq!((config.rate_limits.execute, config.rate_limits.transfer, config.rate_limits.context), (0, 0, 0));
        let config = make_local_only(&paths, LocalOnly::default()).unwrap();
        assert_eq!(config.server.port, 0, "the port is kept");
        let config = make_local_only(&paths, LocalOnly { tls: true, ..LocalOnly::default() }).unwrap();
        assert!(config.tls.enabled);
        let _ = std::fs::remove_dir_all(dir);
    }
}
