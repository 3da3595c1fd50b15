//! Turning a `<peer>` argument into a daemon to talk to.
//!
//! Accepted: `local` (this machine's daemon); a peer of the registry by its name, hostname,
//! node id or node-id prefix (at least 4 characters), or address[:port]; and any other
//! `address[:port]` (IPv4, a dotted host name, or an IPv6 literal in brackets). The registry is
//! read from the local daemon (`GET /api/v1/peers`), or from `peers.json` when it is down. An
//! argument that fits several peers is an error listing them; a bare word that fits none is
//! an error too (not a silent DNS lookup).
//!
//! The key sent to a registry peer with a name is `auth.allowedKeys[<name>]` when present
//! (stored by `peers add --key` / `connect`), else this node's own key as in 1.0.21, but only
//! to peers the user added or named by address: a peer only discovered (mDNS, handshake) has an
//! unauthenticated hostname and address, so finding it by those never sends a key by itself.
//!
//! This module sits above both the client (`peer`) and the registry (`peers`); neither uses it.
//! It is async and blocks no executor: callers outside one (the CLI) wrap it in `block_on`.

use std::time::Duration;

use crate::config::{Config, DEFAULT_PORT};
use crate::paths::Paths;
use crate::peer::{base_url, check_base_url, Client, ClientError};
use crate::peers::Peer;

/// A daemon chosen by the user.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) client: Client,
    /// How to name it in messages: `local`, the peer's name or hostname, or `host:port`.
    pub(crate) label: String,
}

/// How a `<peer>` argument fits the registry.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Found {
    One(Peer),
    Several(Vec<Peer>),
    None,
}

/// Finds `spec` in `peers`: exact name, node id, hostname, address or address:port first;
/// failing those, a node-id prefix of at least 4 characters.
pub(crate) fn find(peers: &[Peer], spec: &str) -> Found {
    let spec = spec.trim();
    let exact: Vec<&Peer> = peers
        .iter()
        .filter(|p| {
            p.name.as_deref() == Some(spec)
                || p.node_id.eq_ignore_ascii_case(spec)
                || p.hostname.eq_ignore_ascii_case(spec)
                || p.address.eq_ignore_ascii_case(spec)
                || p.endpoint().eq_ignore_ascii_case(spec)
        })
        .collect();
    let chosen = if !exact.is_empty() {
        exact
    } else if spec.len() >= 4 {
        let lower = spec.to_ascii_lowercase();
        peers.iter().filter(|p| p.node_id.to_ascii_lowercase().starts_with(&lower)).collect()
    } else {
        Vec::new()
    };
    match chosen.as_slice() {
        [] => Found::None,
        [one] => Found::One((*one).clone()),
        several => Found::Several(several.iter().map(|p| (*p).clone()).collect()),
    }
}

/// The registry as the local daemon has it, or as `peers.json` has it when the daemon is down.
pub(crate) async fn registry_peers(paths: &Paths, config: &Config) -> Vec<Peer> {
    #[derive(serde::Deserialize)]
    struct List {
        peers: Vec<Peer>,
    }
    if let Ok(client) = local_client(paths, &config.auth.api_key).await {
        let client = client.with_timeout(Duration::from_secs(3));
        if let Ok(list) = client.get::<List>("/api/v1/peers").await {
            return list.peers;
        }
    }
    smol::fs::read(paths.peers_file())
        .await
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// [`Client::local`] off the executor: finding the running daemon asks the kernel about its lock
/// and reads `daemon.json` (and its certificate), which are blocking calls.
async fn local_client(paths: &Paths, key: &str) -> Result<Client, ClientError> {
    let (paths, key) = (paths.clone(), key.to_string());
    smol::unblock(move || Client::local(&paths, &key)).await
}

/// The key to send to registry `peer`, found as `spec`; `explicit` is a `--key` flag.
pub(crate) fn key_for(peer: &Peer, spec: &str, config: &Config, explicit: Option<&str>) -> Result<String, String> {
    if let Some(key) = explicit {
        return Ok(key.to_string());
    }
    // Pairing stores the key we present under auth.peerKeys; `peers add --key` (1.0.21's
    // symmetric model) under auth.allowedKeys.
    if let Some(stored) = stored_key(peer, config) {
        return Ok(stored.clone());
    }
    let spec = spec.trim();
    let by_address = peer.address.eq_ignore_ascii_case(spec) || peer.endpoint().eq_ignore_ascii_case(spec);
    if peer.manually_added || by_address {
        return Ok(config.auth.api_key.clone());
    }
    Err(format!(
        "peer '{spec}' ({}) was discovered, not added: its name and address come from an unauthenticated \
         announcement, so no key is sent to it by itself; add it with `loopsy peers add {} {} --name <name> \
         --key <its key>`, or give the key with --key",
        peer.endpoint(),
        peer.address,
        peer.port
    ))
}

/// The certificate pinned for `peer`: its registry entry's, or `tls.pinnedCerts` under its name.
pub(crate) fn pin_for(peer: &Peer, config: &Config) -> Option<crate::tls::Fingerprint> {
    peer.fingerprint
        .as_deref()
        .or_else(|| peer.name.as_ref().and_then(|name| config.tls.pinned_certs.get(name)).map(String::as_str))
        .and_then(crate::tls::Fingerprint::parse)
}

/// One line per peer, for "which one did you mean" messages.
pub(crate) fn describe(peer: &Peer) -> String {
    let name = peer.name.as_deref().map(|n| format!(" name={n}")).unwrap_or_default();
    format!("{}  {}  {}{name}", peer.node_id, peer.endpoint(), peer.hostname)
}

/// A parsed `<peer>` argument.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PeerSpec {
    Local,
    Address { host: String, port: u16 },
}

/// Parses `local`, `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 literal.
pub(crate) fn parse(spec: &str) -> Result<PeerSpec, String> {
    if matches!(spec.trim(), "local" | "self") {
        return Ok(PeerSpec::Local);
    }
    let (host, port) = split_address(spec)?;
    Ok(PeerSpec::Address { host, port: port.unwrap_or(DEFAULT_PORT) })
}

/// Splits `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 literal into the host and
/// the port, if one is written.
pub(crate) fn split_address(spec: &str) -> Result<(String, Option<u16>), String> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err("the peer is empty".into());
    }
    let (host, port) = if let Some(rest) = spec.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| format!("'{spec}': missing ']'"))?;
        let port = match after.strip_prefix(':') {
            Some(port) => Some(port),
            None if after.is_empty() => None,
            None => return Err(format!("'{spec}': unexpected text after ']'")),
        };
        (host.to_string(), port)
    } else if spec.matches(':').count() > 1 {
        (spec.to_string(), None) // a bare IPv6 literal
    } else {
        match spec.split_once(':') {
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (spec.to_string(), None),
        }
    };
    let port = match port {
        Some(text) => {
            Some(text.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| format!("'{spec}': bad port '{text}'"))?)
        }
        None => None,
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(format!("'{spec}' is not an address"));
    }
    Ok((host, port))
}

/// Which key to send, beside the ones stored for a peer.
#[derive(Clone, Copy)]
enum Key<'a> {
    /// `--key`: sent whatever is stored.
    Explicit(Option<&'a str>),
    /// A key the caller offers (1.0.21's `peerApiKey` in an MCP call): sent only to a peer with
    /// no key stored under its name, and to an address the registry does not know.
    Offered(&'a str),
}

/// The key stored for `peer` under its name: the one pairing minted (`auth.peerKeys`) or the
/// one `peers add --key` / `connect` stored (`auth.allowedKeys`).
pub(crate) fn stored_key<'a>(peer: &Peer, config: &'a Config) -> Option<&'a String> {
    let name = peer.name.as_ref()?;
    config.auth.peer_keys.get(name).or_else(|| config.auth.allowed_keys.get(name))
}

/// Resolves `spec` to a client. `key` overrides the key sent (default: the key stored for the
/// peer's name, else this node's own key).
pub(crate) async fn resolve(paths: &Paths, config: &Config, spec: &str, key: Option<&str>) -> anyhow::Result<Target> {
    resolve_with(paths, config, spec, Key::Explicit(key)).await
}

/// Resolves `spec` like [`resolve`], with a key `offered` by the caller that is used only where
/// loopsy holds no key of its own for the peer (see [`stored_key`]); the peer's stored key and
/// pin win. The offered key is never stored or logged.
pub(crate) async fn resolve_offered(
    paths: &Paths,
    config: &Config,
    spec: &str,
    offered: &str,
) -> anyhow::Result<Target> {
    resolve_with(paths, config, spec, Key::Offered(offered)).await
}

async fn resolve_with(paths: &Paths, config: &Config, spec: &str, choice: Key<'_>) -> anyhow::Result<Target> {
    let (key, offered) = match choice {
        Key::Explicit(key) => (key, None),
        Key::Offered(offered) => (None, Some(offered)),
    };
    if matches!(spec.trim(), "local" | "self") {
        let key = key.unwrap_or(&config.auth.api_key);
        let client = local_client(paths, key).await.map_err(|e: ClientError| anyhow::anyhow!(e))?;
        return Ok(Target { client, label: "local".into() });
    }
    match find(&registry_peers(paths, config).await, spec) {
        Found::One(peer) => {
            let key = match (offered, stored_key(&peer, config)) {
                (Some(offered), None) => offered.to_string(),
                _ => key_for(&peer, spec, config, key).map_err(|e| anyhow::anyhow!(e))?,
            };
            let label = peer.name.clone().unwrap_or_else(|| peer.hostname.clone());
            let pin = pin_for(&peer, config);
            if pin.is_none() && !config.tls.allow_insecure_peers {
                anyhow::bail!(
                    "peer '{label}' has no pinned certificate and tls.allowInsecurePeers is false: \
                     pair with it (`loopsy pair`) to reach it over TLS"
                );
            }
            let client = Client::pinned(&base_url(&peer.address, peer.port), Some(key), pin);
            Ok(Target { client, label })
        }
        Found::Several(peers) => {
            let lines: Vec<String> = peers.iter().map(|p| format!("  {}", describe(p))).collect();
            anyhow::bail!(
                "'{spec}' is ambiguous: it fits {} peers:\n{}\nuse a name, a longer node id or address:port",
                peers.len(),
                lines.join("\n")
            )
        }
        Found::None => {
            let parsed = parse(spec).map_err(|e| anyhow::anyhow!("unknown peer {e}"))?;
            let PeerSpec::Address { host, port } = parsed else { unreachable!("local handled above") };
            let looks_like_address = host.contains(['.', ':']) || host == "localhost" || spec.contains(':');
            if !looks_like_address {
                anyhow::bail!(
                    "unknown peer '{spec}': no peer in the registry has that name, hostname or node id \
                     (see `loopsy peers`); for a host name use '{spec}:<port>'"
                );
            }
            // Only an IP or a host name becomes a URL (the HTTP client panics on some other hosts).
            let host = crate::peers::check_address("peer", &host).map_err(|e| anyhow::anyhow!("unknown peer {e}"))?;
            check_base_url(&base_url(&host, port)).map_err(|e| anyhow::anyhow!("unknown peer {e}"))?;
            let label = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
            if !config.tls.allow_insecure_peers {
                anyhow::bail!(
                    "{label} is not a paired peer and tls.allowInsecurePeers is false: pair with it first (`loopsy pair {label}`)"
                );
            }
            let key = key.or(offered).unwrap_or(&config.auth.api_key).to_string();
            Ok(Target { client: Client::new(&base_url(&host, port), Some(key)), label })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(spec: &str, expect: Result<PeerSpec, &str>) {
        let got = parse(spec);
        match expect {
            Ok(spec) => assert_eq!(got, Ok(spec)),
            Err(text) => assert!(got.as_ref().unwrap_err().contains(text), "{got:?}"),
        }
    }

    fn addr(host: &str, port: u16) -> Result<PeerSpec, &'static str> {
        Ok(PeerSpec::Address { host: host.into(), port })
    }

    #[test]
    fn peer_arguments() {
        check("local", Ok(PeerSpec::Local));
        check("10.0.0.2", addr("10.0.0.2", 19532));
        check("10.0.0.2:19533", addr("10.0.0.2", 19533));
        check("box.lan:8080", addr("box.lan", 8080));
        check("[fe80::1]:9", addr("fe80::1", 9));
        check("[::1]", addr("::1", 19532));
        check("fe80::1", addr("fe80::1", 19532));
        check("host:0", Err("bad port"));
        check("host:x", Err("bad port"));
        check("", Err("empty"));
        check("a b", Err("not an address"));
        assert_eq!(base_url("::1", 5), "http://[::1]:5");
    }

    fn peer(id: &str, address: &str, port: u16, hostname: &str, name: Option<&str>) -> Peer {
        let mut peer = Peer::manual(address, port);
        peer.node_id = id.into();
        peer.hostname = hostname.into();
        peer.name = name.map(String::from);
        peer
    }

    #[test]
    fn registry_peers_are_found_by_name_hostname_id_or_address() {
        let peers = [
            peer("aaaa1111-0000-4000-8000-000000000001", "10.0.0.2", 19532, "box", Some("bob")),
            peer("aaaa2222-0000-4000-8000-000000000002", "10.0.0.3", 19532, "vm", None),
            peer("bbbb3333-0000-4000-8000-000000000003", "10.0.0.3", 19533, "vm2", None),
        ];
        let id = |found: Found| match found {
            Found::One(p) => p.node_id[..8].to_string(),
            other => panic!("{other:?}"),
        };
        assert_eq!(id(find(&peers, "bob")), "aaaa1111");
        assert_eq!(id(find(&peers, "BOX")), "aaaa1111");
        assert_eq!(id(find(&peers, "aaaa2")), "aaaa2222");
        assert_eq!(id(find(&peers, "10.0.0.3:19533")), "bbbb3333");
        assert_eq!(id(find(&peers, "10.0.0.2")), "aaaa1111");
        assert!(matches!(find(&peers, "aaaa"), Found::Several(list) if list.len() == 2));
        assert!(matches!(find(&peers, "10.0.0.3"), Found::Several(list) if list.len() == 2));
        assert_eq!(find(&peers, "aaa"), Found::None, "prefixes need 4 characters");
        assert_eq!(find(&peers, "carol"), Found::None);
    }

    #[test]
    fn discovered_peers_get_no_key_unless_named_by_address_or_given_one() {
        let mut config = Config::new_with_key("own-key-0123456789abcdef".into());
        config.auth.allowed_keys.insert("bob".into(), "bob-key-0123456789abcdef".into());
        let mut found = peer("aaaa1111-0000-4000-8000-000000000001", "10.0.0.2", 19532, "box", None);
        found.manually_added = false;
        assert!(key_for(&found, "box", &config, None).unwrap_err().contains("discovered"));
        assert!(key_for(&found, "aaaa1111", &config, None).is_err());
        assert_eq!(key_for(&found, "10.0.0.2", &config, None).unwrap(), "own-key-0123456789abcdef");
        assert_eq!(key_for(&found, "box", &config, Some("flag-key")).unwrap(), "flag-key");
        found.name = Some("bob".into());
        assert_eq!(key_for(&found, "bob", &config, None).unwrap(), "bob-key-0123456789abcdef");
        found.name = None;
        found.manually_added = true;
        assert_eq!(key_for(&found, "box", &config, None).unwrap(), "own-key-0123456789abcdef");
    }
}
