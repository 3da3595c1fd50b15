//! The peer registry: who this node knows, where to reach them and whether they answer.
//!
//! [`Peer`] is the §2.4 object of 1.0.21 (also the element of `peers.json`); [`registry`] keeps
//! them keyed by the stable node id, persisted atomically; [`health`] probes them. Every field
//! that comes from outside (HTTP bodies, handshakes, mDNS, an old `peers.json`) goes through the
//! validators here first. This module knows no tide and no mDNS library.

pub(crate) mod health;
pub(crate) mod local;
pub(crate) mod registry;

use serde::{Deserialize, Serialize};

pub(crate) use registry::Registry;

/// Consecutive failed probes after which a peer is offline (1.0.21's constant).
pub(crate) const FAILURES_BEFORE_OFFLINE: u32 = 3;

/// Prefix of the node id given to a manual peer until a probe learns its real one.
pub(crate) const MANUAL_PREFIX: &str = "manual-";

/// A peer as 1.0.21 describes it (§2.4), plus an optional user-given `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Peer {
    pub node_id: String,
    pub hostname: String,
    pub address: String,
    pub port: u16,
    pub platform: String,
    pub version: String,
    pub capabilities: Vec<String>,
    pub status: PeerStatus,
    /// Unix milliseconds of the last successful contact; 0 = never.
    pub last_seen: u64,
    /// Consecutive failed health checks.
    pub failure_count: u32,
    /// Always false, as in 1.0.21 (kept for its clients).
    pub trusted: bool,
    pub manually_added: bool,
    /// The user's name for the peer (`peers add --name`, `connect`); keys are stored under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The pinned certificate fingerprint (from pairing): the peer is reached over TLS only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Where unauthenticated evidence last placed a bound entry other than where it is; shown
    /// to the owner (`loopsy peers`), never followed (see [`Peer::is_bound`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen_at: Option<Box<Sighting>>,
}

/// A bound peer seen at another address by a source that proves nothing (mDNS, a handshake,
/// another entry's probe). The owner may move the entry there (`loopsy peers confirm`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Sighting {
    pub address: String,
    pub port: u16,
    /// Unix milliseconds of the latest such evidence.
    pub at: u64,
    pub via: Via,
    /// Whether `/health` at that address answered with this node id (which anyone can do).
    pub answers: bool,
}

/// Where a claim that a node is at some address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Via {
    /// An mDNS announcement.
    Mdns,
    /// `POST /api/v1/peers/handshake` from that address.
    Handshake,
    /// The health probe of an entry the owner added at that address.
    Probe,
}

impl Via {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Via::Mdns => "mdns",
            Via::Handshake => "handshake",
            Via::Probe => "probe",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum PeerStatus {
    Online,
    Offline,
    Unknown,
}

impl PeerStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PeerStatus::Online => "online",
            PeerStatus::Offline => "offline",
            PeerStatus::Unknown => "unknown",
        }
    }
}

impl Peer {
    /// A manual peer as 1.0.21 constructs it: `manual-<address>:<port>` until probed.
    pub(crate) fn manual(address: &str, port: u16) -> Peer {
        Peer {
            node_id: manual_id(address, port),
            hostname: address.to_string(),
            address: address.to_string(),
            port,
            platform: "unknown".into(),
            version: "unknown".into(),
            capabilities: Vec::new(),
            status: PeerStatus::Unknown,
            last_seen: 0,
            failure_count: 0,
            trusted: false,
            manually_added: true,
            name: None,
            fingerprint: None,
            seen_at: None,
        }
    }

    /// Whether the owner vouched for this entry: it has a pinned certificate (pairing), a name
    /// (keys are stored under names) or was added by hand (it gets this node's own key). A bound
    /// entry is sent keys, so unauthenticated evidence never moves it: only the owner does
    /// (`peers confirm`, `peers add`), or a probe that proved its pinned certificate.
    pub(crate) fn is_bound(&self) -> bool {
        self.fingerprint.is_some() || self.name.is_some() || self.manually_added
    }

    /// Whether this entry still waits for a probe to learn the real node id.
    pub(crate) fn is_provisional(&self) -> bool {
        self.node_id.starts_with(MANUAL_PREFIX)
    }

    /// Whether this entry is reached at `address:port` (addresses compare case-insensitively).
    pub(crate) fn is_at(&self, address: &str, port: u16) -> bool {
        self.port == port && self.address.eq_ignore_ascii_case(address)
    }

    /// `address:port`, with IPv6 literals in brackets.
    pub(crate) fn endpoint(&self) -> String {
        if self.address.contains(':') {
            format!("[{}]:{}", self.address, self.port)
        } else {
            format!("{}:{}", self.address, self.port)
        }
    }
}

pub(crate) fn manual_id(address: &str, port: u16) -> String {
    format!("{MANUAL_PREFIX}{address}:{port}")
}

/// What a peer says about itself (handshake, mDNS TXT), already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Announced {
    pub node_id: String,
    pub hostname: String,
    pub address: String,
    pub port: u16,
    pub platform: String,
    pub version: String,
    pub capabilities: Vec<String>,
}

/// Why a field was refused; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub(crate) struct Invalid {
    pub field: &'static str,
    pub problem: String,
}

fn invalid(field: &'static str, problem: impl Into<String>) -> Invalid {
    Invalid { field, problem: problem.into() }
}

/// A canonical UUID (any version): the only node ids accepted from the network.
pub(crate) fn check_node_id(field: &'static str, id: &str) -> Result<(), Invalid> {
    let ok = id.len() == 36
        && id.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    if ok {
        Ok(())
    } else {
        Err(invalid(field, "must be a node id (a UUID such as 9d48d4d4-a2c2-4b34-8b2a-14ec07805e65)"))
    }
}

/// An IP literal (IPv6 with or without brackets) or a DNS host name; returned normalised
/// (brackets removed, IPv6 in canonical form).
pub(crate) fn check_address(field: &'static str, address: &str) -> Result<String, Invalid> {
    let trimmed = address.trim();
    let unbracketed = trimmed.strip_prefix('[').and_then(|a| a.strip_suffix(']')).unwrap_or(trimmed);
    if let Ok(ip) = unbracketed.parse::<std::net::IpAddr>() {
        if ip.is_unspecified() || ip.is_multicast() {
            return Err(invalid(field, format!("'{unbracketed}' cannot be a peer's address")));
        }
        return Ok(ip.to_string());
    }
    if unbracketed.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if !is_host_name(unbracketed) {
        return Err(invalid(field, format!("'{}' is neither an IP address nor a host name", printable(unbracketed))));
    }
    Ok(unbracketed.to_string())
}

/// RFC 1123 host name: dot-separated labels of letters, digits, '-' and '_', at most 253 bytes.
pub(crate) fn is_host_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A display string from the network: 1..=max printable characters, no control characters.
pub(crate) fn check_text(field: &'static str, text: &str, max: usize) -> Result<(), Invalid> {
    if text.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if text.chars().count() > max {
        return Err(invalid(field, format!("longer than {max} characters")));
    }
    if text.chars().any(char::is_control) {
        return Err(invalid(field, "contains control characters"));
    }
    Ok(())
}

/// Capabilities: at most 16 short tokens of lowercase letters, digits and '-'.
pub(crate) fn check_capabilities(field: &'static str, capabilities: &[String]) -> Result<(), Invalid> {
    if capabilities.len() > 16 {
        return Err(invalid(field, "more than 16 entries"));
    }
    for capability in capabilities {
        let ok = !capability.is_empty()
            && capability.len() <= 32
            && capability.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(invalid(field, format!("'{}' is not a capability name", printable(capability))));
        }
    }
    Ok(())
}

/// A peer name (`--name`, `auth.allowedKeys` key): 1..=64 of letters, digits, '.', '_', '-'.
pub(crate) fn check_name(field: &'static str, name: &str) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(field, "must be 1 to 64 letters, digits, '.', '_' or '-'"))
    }
}

impl Announced {
    /// Checks every field; the first problem found is returned, naming its field.
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        check_node_id("nodeId", &self.node_id)?;
        check_text("hostname", &self.hostname, 253)?;
        check_address("address", &self.address)?;
        if self.port == 0 {
            return Err(invalid("port", "must be 1 to 65535"));
        }
        check_text("platform", &self.platform, 32)?;
        check_text("version", &self.version, 64)?;
        check_capabilities("capabilities", &self.capabilities)
    }
}

/// At most 64 characters of `text` with control characters replaced, for error messages.
fn printable(text: &str) -> String {
    text.chars().take(64).map(|c| if c.is_control() { '?' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announced() -> Announced {
        Announced {
            node_id: "9d48d4d4-a2c2-4b34-8b2a-14ec07805e65".into(),
            hostname: "box".into(),
            address: "10.0.0.2".into(),
            port: 19532,
            platform: "linux".into(),
            version: "1.0.21".into(),
            capabilities: vec!["execute".into(), "ai-tasks".into()],
        }
    }

    #[test]
    fn announcements_are_validated_field_by_field() {
        assert_eq!(announced().validate(), Ok(()));
        let field = |change: fn(&mut Announced)| {
            let mut a = announced();
            change(&mut a);
            a.validate().unwrap_err().field
        };
        assert_eq!(field(|a| a.node_id = "manual-x".into()), "nodeId");
        assert_eq!(field(|a| a.hostname = "a\u{1b}[31m".into()), "hostname");
        assert_eq!(field(|a| a.hostname = " ".into()), "hostname");
        assert_eq!(field(|a| a.address = "10.0.0.2/24".into()), "address");
        assert_eq!(field(|a| a.address = "0.0.0.0".into()), "address");
        assert_eq!(field(|a| a.port = 0), "port");
        assert_eq!(field(|a| a.platform = "x".repeat(33)), "platform");
        assert_eq!(field(|a| a.capabilities = vec!["<script>".into()]), "capabilities");
    }

    #[test]
    fn addresses_are_normalised() {
        assert_eq!(check_address("a", "[fe80::1]").unwrap(), "fe80::1");
        assert_eq!(check_address("a", " box.lan ").unwrap(), "box.lan");
        assert_eq!(check_address("a", "10.1.2.3").unwrap(), "10.1.2.3");
        for bad in ["", "a b", "http://x", "x@y", "-x", "a..b", "224.0.0.251"] {
            assert!(check_address("a", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn names_are_short_tokens() {
        assert!(check_name("name", "bob-laptop.1").is_ok());
        assert!(check_name("name", "").is_err());
        assert!(check_name("name", "a/b").is_err());
    }
}
