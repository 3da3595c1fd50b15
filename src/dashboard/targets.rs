//! Where the dashboard may send a request on the browser's behalf, and with which credentials.
//!
//! The browser names a target, never an address: `local` (this daemon), `session:<name>` (a
//! local session, reached at the URL its `daemon.json` gives, with the key of its own
//! `config.yaml`), or `peer:<nodeId>` (a registry peer, with the credentials stored for it).
//! A peer gets a key only if one is stored for it by name (pairing's `auth.peerKeys`, or
//! `auth.allowedKeys`), or it was added by hand (1.0.21's shared-key model); a peer that was
//! only discovered gets none. No key is ever tried against a host to see whether it works
//! (1.0.21 sprayed every stored key at addresses the browser chose, weakness A5).
//! Only a fixed set of API paths is forwarded.

use crate::config::Config;
use crate::peers::Peer;
use crate::tls::Fingerprint;

use crate::sessions::{LocalSession, SessionName};

/// A target named by the browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TargetId {
    Local,
    Session(SessionName),
    Peer(String),
}

impl TargetId {
    pub(crate) fn parse(text: &str) -> Result<TargetId, String> {
        if text == "local" {
            return Ok(TargetId::Local);
        }
        if let Some(name) = text.strip_prefix("session:") {
            return match SessionName::parse(name) {
                Ok(name) => Ok(TargetId::Session(name)),
                Err(_) => Err(format!("'{name}' is not a session name")),
            };
        }
        if let Some(id) = text.strip_prefix("peer:") {
            // A registry id: a UUID, or `manual-<address>:<port>` until the first probe. Only
            // ids found in the registry are used, so this is a sanity check.
            let ok = (1..=300).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
            return match ok {
                true => Ok(TargetId::Peer(id.to_string())),
                false => Err("the peer's node id is malformed".into()),
            };
        }
        Err("a target is 'local', 'session:<name>' or 'peer:<nodeId>'".into())
    }
}

/// How a peer's requests are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Credential {
    /// The key pairing minted for us (`auth.peerKeys[name]`).
    Paired,
    /// The key stored under the peer's name (`auth.allowedKeys[name]`).
    Named,
    /// This node's own key: the peer was added by hand (1.0.21's shared-key model).
    Own,
    /// Discovered only: nothing is sent to it.
    None,
}

impl Credential {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Credential::Paired => "paired",
            Credential::Named => "named-key",
            Credential::Own => "own-key",
            Credential::None => "none",
        }
    }
}

/// The credential `config` holds for `peer`, with the key itself.
pub(crate) fn credential_for(peer: &Peer, config: &Config) -> (Credential, Option<String>) {
    let named = |map: &std::collections::BTreeMap<String, String>| {
        peer.name.as_ref().and_then(|name| map.get(name)).filter(|key| !key.is_empty()).cloned()
    };
    if let Some(key) = named(&config.auth.peer_keys) {
        return (Credential::Paired, Some(key));
    }
    if let Some(key) = named(&config.auth.allowed_keys) {
        return (Credential::Named, Some(key));
    }
    if peer.manually_added {
        return (Credential::Own, Some(config.auth.api_key.clone()));
    }
    (Credential::None, None)
}

/// The certificate pinned for `peer` (from pairing), if any: then it is reached over TLS only.
pub(crate) fn pin_for(peer: &Peer, config: &Config) -> Option<Fingerprint> {
    crate::resolve::pin_for(peer, config)
}

/// A base URL, the key to present and the certificate to pin.
#[derive(Debug, Clone)]
pub(crate) struct Reach {
    pub base: String,
    pub key: String,
    pub pin: Option<Fingerprint>,
}

/// Why a target cannot be reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Unreachable {
    #[error("no session named '{0}'")]
    UnknownSession(String),
    #[error("session '{0}' is not running")]
    Stopped(String),
    #[error("session '{0}' has no readable config.yaml")]
    NoConfig(String),
    #[error("no peer with node id '{0}' in the registry")]
    UnknownPeer(String),
    #[error(
        "peer '{0}' was only discovered, and no key is stored for it: add it with `loopsy peers add` or pair with it"
    )]
    NoCredential(String),
    #[error("peer '{0}' has no pinned certificate and tls.allowInsecurePeers is false: pair with it first")]
    Unpinned(String),
}

/// How to reach local session `session`.
pub(crate) fn reach_session(session: &LocalSession) -> Result<Reach, Unreachable> {
    let running = session.running.as_ref().ok_or_else(|| Unreachable::Stopped(session.name.to_string()))?;
    let config = session.config.as_ref().ok_or_else(|| Unreachable::NoConfig(session.name.to_string()))?;
    let pin = match running.tls {
        true => crate::tls::local_fingerprint(&session.paths),
        false => None,
    };
    Ok(Reach { base: running.url.clone(), key: config.auth.api_key.clone(), pin })
}

/// How to reach registry peer `peer`.
pub(crate) fn reach_peer(peer: &Peer, config: &Config) -> Result<Reach, Unreachable> {
    let (_, key) = credential_for(peer, config);
    let key = key.ok_or_else(|| Unreachable::NoCredential(peer.node_id.clone()))?;
    let pin = pin_for(peer, config);
    if pin.is_none() && !config.tls.allow_insecure_peers {
        return Err(Unreachable::Unpinned(peer.node_id.clone()));
    }
    let base = crate::peer::base_url(&peer.address, peer.port);
    Ok(Reach { base, key, pin })
}

/// Whether the dashboard forwards `method path` (the path after the target, no query).
pub(crate) fn forwardable(method: &str, path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/api/v1/") else { return false };
    let segments: Vec<&str> = rest.split('/').collect();
    let suspicious = |s: &&str| s.is_empty() || s.contains('%') && decodes_to_dots(s) || *s == "." || *s == "..";
    if segments.iter().any(suspicious) {
        return false;
    }
    matches!(
        (method, segments.as_slice()),
        ("GET", ["status" | "identity" | "peers"])
            | ("GET", ["context"] | ["context", _])
            | ("PUT" | "DELETE", ["context", _])
            | ("GET", ["locks"])
            | ("GET", ["messages", "inbox" | "status"])
            | ("POST", ["messages"] | ["messages", "ack"])
            | ("POST", ["execute", "stream"])
            | ("GET", ["execute", "jobs"])
            | ("DELETE", ["execute", _])
            | ("GET" | "POST", ["ai-tasks"])
            | ("GET" | "DELETE", ["ai-tasks", _])
            | ("GET", ["ai-tasks", _, "stream" | "events"])
            | ("POST", ["ai-tasks", _, "approve"])
            | ("GET" | "POST", ["terminals"])
            | ("GET" | "DELETE", ["terminals", _])
            | ("POST", ["terminals", _, "input"])
            | ("GET", ["terminals", _, "screen" | "attach"])
    )
}

/// Whether `method path` is a terminal's WebSocket, relayed frame by frame.
pub(crate) fn is_websocket(method: &str, path: &str) -> bool {
    let segments: Vec<&str> = path.trim_start_matches("/api/v1/").split('/').collect();
    matches!((method, segments.as_slice()), ("GET", ["terminals", _, "attach"]))
}

fn decodes_to_dots(segment: &str) -> bool {
    let lower = segment.to_ascii_lowercase().replace("%2e", ".");
    lower == "." || lower == ".." || lower.contains("%2f") || lower.contains("%5c")
}

/// Whether the answer to `method path` is an event stream.
pub(crate) fn is_event_stream(method: &str, path: &str) -> bool {
    let segments: Vec<&str> = path.trim_start_matches("/api/v1/").split('/').collect();
    matches!(
        (method, segments.as_slice()),
        ("GET", ["context", "watch"]) | ("POST", ["execute", "stream"]) | ("GET", ["ai-tasks", _, "stream"])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_named_never_addressed() {
        assert_eq!(TargetId::parse("local"), Ok(TargetId::Local));
        assert_eq!(TargetId::parse("session:w1"), Ok(TargetId::Session(SessionName::parse("w1").unwrap())));
        let id = "aaaa1111-0000-4000-8000-000000000001";
        assert_eq!(TargetId::parse(&format!("peer:{id}")), Ok(TargetId::Peer(id.into())));
        for bad in ["session:..", "session:a/b", "10.0.0.1:19532", "peer:", "http://evil", ""] {
            assert!(TargetId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_the_dashboards_api_paths_are_forwarded() {
        for (method, path) in [
            ("GET", "/api/v1/status"),
            ("GET", "/api/v1/context"),
            ("GET", "/api/v1/context/watch"),
            ("PUT", "/api/v1/context/inbox%3Abox%3A1"),
            ("DELETE", "/api/v1/context/k"),
            ("GET", "/api/v1/messages/inbox"),
            ("GET", "/api/v1/messages/status"),
            ("POST", "/api/v1/messages"),
            ("POST", "/api/v1/messages/ack"),
            ("POST", "/api/v1/execute/stream"),
            ("POST", "/api/v1/ai-tasks"),
            ("GET", "/api/v1/ai-tasks/t1/stream"),
            ("POST", "/api/v1/ai-tasks/t1/approve"),
            ("DELETE", "/api/v1/ai-tasks/t1"),
            ("GET", "/api/v1/locks"),
        ] {
            assert!(forwardable(method, path), "{method} {path}");
        }
        for (method, path) in [
            ("POST", "/api/v1/execute"),
            ("POST", "/api/v1/peers"),
            ("POST", "/api/v1/pair/start"),
            ("POST", "/api/v1/transfer/pull"),
            ("GET", "/api/v1/dashboard/overview"),
            ("GET", "/api/v1/context/../status"),
            ("GET", "/api/v1/context/%2E%2E"),
            ("GET", "/api/v1/context/a%2Fb"),
            ("GET", "/api/v1//status"),
            ("GET", "/status"),
            ("PATCH", "/api/v1/context/k"),
            ("POST", "/api/v1/locks/db"),
            ("DELETE", "/api/v1/locks/db"),
            ("DELETE", "/api/v1/messages"),
            ("POST", "/api/v1/messages/inbox"),
        ] {
            assert!(!forwardable(method, path), "{method} {path}");
        }
    }

    #[test]
    fn event_streams_are_recognised() {
        assert!(is_event_stream("GET", "/api/v1/context/watch"));
        assert!(is_event_stream("POST", "/api/v1/execute/stream"));
        assert!(is_event_stream("GET", "/api/v1/ai-tasks/x/stream"));
        assert!(!is_event_stream("GET", "/api/v1/context/k"));
    }

    fn peer(manual: bool, name: Option<&str>) -> Peer {
        let mut peer = Peer::manual("10.0.0.2", 19532);
        peer.manually_added = manual;
        peer.name = name.map(String::from);
        peer
    }

    #[test]
    fn a_peer_gets_the_key_stored_for_it_or_none() {
        let mut config = Config::new_with_key("own-key-0123456789".into());
        config.auth.allowed_keys.insert("bob".into(), "bob-in".into());
        config.auth.peer_keys.insert("carol".into(), "carol-out".into());
        config.auth.allowed_keys.insert("carol".into(), "carol-in".into());
        assert_eq!(credential_for(&peer(false, None), &config), (Credential::None, None));
        assert_eq!(credential_for(&peer(true, None), &config), (Credential::Own, Some("own-key-0123456789".into())));
        assert_eq!(credential_for(&peer(false, Some("bob")), &config), (Credential::Named, Some("bob-in".into())));
        assert_eq!(
            credential_for(&peer(false, Some("carol")), &config),
            (Credential::Paired, Some("carol-out".into()))
        );
        assert!(matches!(reach_peer(&peer(false, None), &config), Err(Unreachable::NoCredential(_))));
        assert_eq!(reach_peer(&peer(true, None), &config).unwrap().base, "http://10.0.0.2:19532");
        config.tls.allow_insecure_peers = false;
        assert!(matches!(reach_peer(&peer(true, None), &config), Err(Unreachable::Unpinned(_))));
    }
}
