//! 1.0.21's peer arguments, accepted as deprecated aliases of `peer`.
//!
//! Prompts, CLAUDE.md files and scripts written for 1.0.21 name a peer with `peerAddress`,
//! `peerPort` and `peerApiKey` (`peerHostname` for messaging, `senderAddress`, `senderPort`,
//! `senderApiKey` for acknowledgements). Before a call is validated, [`translate`] turns them
//! into `peer`: an address and port become `address:port`, which resolves to the registry peer
//! there (its stored key and pin are used); `peerHostname` alone is the peer's name. A key in
//! the arguments is taken out of them at once: it is offered to `resolve` for a peer
//! loopsy has no key of its own for, and never echoed, logged or stored. The result then
//! carries a one-line note that `peer` is the way to go. `tools/list` shows the aliases as
//! deprecated properties ([`schema_properties`]).

use serde_json::{json, Map, Value};

use crate::config::DEFAULT_PORT;

/// Which 1.0.21 arguments a tool had (PROTOCOL.md §7.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// `peerAddress`, `peerPort`, `peerApiKey`.
    Peer,
    /// The same plus `peerHostname` (`loopsy_send_message`).
    PeerAndHostname,
    /// `peerHostname` only (`loopsy_check_ack`).
    Hostname,
    /// `senderAddress`, `senderPort`, `senderApiKey` (`loopsy_ack_message`): the daemon finds
    /// the sender from the message itself, so they are accepted and not needed.
    Sender,
}

fn family(tool: &str) -> Option<Family> {
    Some(match tool {
        "loopsy_execute"
        | "loopsy_transfer_file"
        | "loopsy_list_remote_files"
        | "loopsy_context_set"
        | "loopsy_context_get"
        | "loopsy_context_list"
        | "loopsy_context_delete"
        | "loopsy_peer_status" => Family::Peer,
        "loopsy_send_message" => Family::PeerAndHostname,
        "loopsy_check_ack" => Family::Hostname,
        "loopsy_ack_message" => Family::Sender,
        _ => return None,
    })
}

impl Family {
    fn names(self) -> &'static [&'static str] {
        match self {
            Family::Peer => &["peerAddress", "peerPort", "peerApiKey"],
            Family::PeerAndHostname => &["peerAddress", "peerPort", "peerApiKey", "peerHostname"],
            Family::Hostname => &["peerHostname"],
            Family::Sender => &["senderAddress", "senderPort", "senderApiKey"],
        }
    }
}

/// What a call with 1.0.21 arguments carries beside its translated arguments.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Legacy {
    /// `peerApiKey` / `senderApiKey`, for a peer loopsy holds no key for.
    pub offered_key: Option<String>,
    /// The one-line note for the result.
    pub note: String,
}

impl std::fmt::Debug for Legacy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let offered = if self.offered_key.is_some() { "Some(<redacted>)" } else { "None" };
        f.debug_struct("Legacy").field("offered_key", &offered).field("note", &self.note).finish()
    }
}

/// Rewrites the 1.0.21 arguments of `tool` in `arguments` into `peer`. `Ok(None)`: there were
/// none (or the tool never had them: they stay, and validation refuses them as unknown).
pub(super) fn translate(tool: &str, arguments: &mut Value) -> Result<Option<Legacy>, String> {
    let Some(family) = family(tool) else { return Ok(None) };
    let Some(given) = arguments.as_object_mut() else { return Ok(None) };
    let mut taken = Map::new();
    for name in family.names() {
        if let Some(value) = given.remove(*name) {
            taken.insert(name.to_string(), value);
        }
    }
    if taken.is_empty() {
        return Ok(None);
    }
    let used: Vec<&str> = family.names().iter().copied().filter(|n| taken.contains_key(*n)).collect();
    let text = |name: &str| -> Result<Option<String>, String> {
        match taken.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
            Some(_) => Err(format!("'{name}' must be a string")),
        }
    };
    let port = |name: &str| -> Result<u16, String> {
        let port = match taken.get(name) {
            None | Some(Value::Null) => return Ok(DEFAULT_PORT),
            Some(Value::Number(n)) => n.as_f64().filter(|p| p.fract() == 0.0).map(|p| p as i64),
            Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
            Some(_) => None,
        };
        port.and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("'{name}' must be a port (1-65535)"))
    };
    let (address, port_value, key) = match family {
        Family::Sender => (text("senderAddress")?, port("senderPort")?, text("senderApiKey")?),
        _ => (text("peerAddress")?, port("peerPort")?, text("peerApiKey")?),
    };
    let hostname = text("peerHostname")?;
    let derived = match (family, &address, &hostname) {
        (Family::Sender, _, _) => None,
        (_, Some(address), _) => Some(endpoint(address, port_value)?),
        (_, None, Some(hostname)) => Some(hostname.clone()),
        (_, None, None) => None,
    };
    let has_peer = given.get("peer").is_some_and(|p| !p.is_null());
    if let (Some(derived), false) = (&derived, has_peer) {
        given.insert("peer".into(), derived.clone().into());
    }
    let note = note(family, &used, derived.as_deref(), has_peer);
    Ok(Some(Legacy { offered_key: if family == Family::Sender { None } else { key }, note }))
}

/// `address:port`, with an IPv6 literal in brackets; refuses what is not an address.
fn endpoint(address: &str, port: u16) -> Result<String, String> {
    let host = address.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || matches!(c, '/' | '[' | ']' | '@')) {
        return Err("'peerAddress' is not an address".into());
    }
    Ok(if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") })
}

fn note(family: Family, used: &[&str], derived: Option<&str>, had_peer: bool) -> String {
    let names = used.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
    let what = match (family, derived, had_peer) {
        (Family::Sender, _, _) => "are not needed: the daemon knows each message's sender".to_string(),
        (_, _, true) => "were ignored because `peer` was given".to_string(),
        (_, Some(derived), false) => format!("were read as \"peer\": \"{derived}\""),
        (_, None, false) => "name no peer, so this machine was used".to_string(),
    };
    format!(
        "Note: {names} (loopsy 1.0.21's arguments) {what}; pass `peer` instead, a peer's name from \
         loopsy_list_peers (or address:port): loopsy holds the keys."
    )
}

/// The deprecated alias properties of `tool`, for `tools/list`.
pub(super) fn schema_properties(tool: &str) -> Option<Map<String, Value>> {
    let family = family(tool)?;
    let describe = |text: &str| format!("Deprecated (loopsy 1.0.21): {text}");
    let mut properties = Map::new();
    for name in family.names() {
        let property = match *name {
            "peerAddress" | "senderAddress" => {
                json!({"type": "string", "deprecated": true, "description": describe("the peer's address; with the port it names a known peer. Use `peer`.")})
            }
            "peerPort" | "senderPort" => {
                json!({"type": "integer", "minimum": 1, "maximum": 65535, "default": DEFAULT_PORT, "deprecated": true, "description": describe("the peer's port. Use `peer`.")})
            }
            "peerApiKey" | "senderApiKey" => {
                json!({"type": "string", "deprecated": true, "description": describe("used only for a peer loopsy has no key for; never stored. Use `peer`: loopsy holds the keys.")})
            }
            _ => {
                json!({"type": "string", "deprecated": true, "description": describe("the peer's hostname. Use `peer`.")})
            }
        };
        properties.insert(name.to_string(), property);
    }
    Some(properties)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(tool: &str, mut arguments: Value) -> (Value, Option<Legacy>) {
        let legacy = translate(tool, &mut arguments).unwrap();
        (arguments, legacy)
    }

    #[test]
    fn address_and_port_become_peer_and_the_key_leaves_the_arguments() {
        let (args, legacy) = run(
            "loopsy_execute",
            json!({"peerAddress": "10.0.0.5", "peerPort": 19533, "peerApiKey": "k3y", "command": "ls"}),
        );
        assert_eq!(args, json!({"command": "ls", "peer": "10.0.0.5:19533"}));
        let legacy = legacy.unwrap();
        assert_eq!(legacy.offered_key.as_deref(), Some("k3y"));
        assert!(
            !legacy.note.contains("k3y") && legacy.note.contains("\"peer\": \"10.0.0.5:19533\""),
            "{}",
            legacy.note
        );
        assert!(!format!("{legacy:?}").contains("k3y"), "Debug redacts the key");
        let (args, _) = run("loopsy_peer_status", json!({"peerAddress": "fe80::1", "peerApiKey": "k"}));
        assert_eq!(args["peer"], "[fe80::1]:19532", "the default port; IPv6 in brackets");
        let (args, _) = run("loopsy_peer_status", json!({"peerAddress": "box.lan", "peerPort": "19540"}));
        assert_eq!(args["peer"], "box.lan:19540");
    }

    #[test]
    fn hostnames_senders_and_peer_itself() {
        let (args, _) = run("loopsy_check_ack", json!({"peerHostname": "bob.lan"}));
        assert_eq!(args, json!({"peer": "bob.lan"}));
        let (args, legacy) = run(
            "loopsy_send_message",
            json!({"peerAddress": "127.0.0.1", "peerPort": 1234, "peerApiKey": "k", "peerHostname": "bob", "body": "hi"}),
        );
        assert_eq!(args, json!({"peer": "127.0.0.1:1234", "body": "hi"}));
        assert!(legacy.unwrap().note.contains("`peerHostname`"));
        let (args, legacy) = run(
            "loopsy_ack_message",
            json!({"senderAddress": "10.0.0.1", "senderPort": 19532, "senderApiKey": "k", "messageKey": "inbox:a:b", "messageId": "b"}),
        );
        assert_eq!(args, json!({"messageKey": "inbox:a:b", "messageId": "b"}));
        let legacy = legacy.unwrap();
        assert_eq!(legacy.offered_key, None);
        assert!(legacy.note.contains("not needed"));
        let (args, legacy) = run("loopsy_context_get", json!({"key": "k", "peer": "alice", "peerAddress": "10.0.0.9"}));
        assert_eq!(args, json!({"key": "k", "peer": "alice"}), "`peer` wins");
        assert!(legacy.unwrap().note.contains("ignored"));
        let (args, legacy) = run("loopsy_context_get", json!({"key": "k", "peerApiKey": "k"}));
        assert_eq!(args, json!({"key": "k"}), "a key alone names no peer: this machine, as in 1.0.21");
        assert!(legacy.unwrap().note.contains("this machine"));
    }

    #[test]
    fn tools_without_aliases_and_bad_values() {
        let (args, legacy) = run("loopsy_task_list", json!({"peerAddress": "10.0.0.1"}));
        assert_eq!(args, json!({"peerAddress": "10.0.0.1"}), "left for validation to refuse");
        assert!(legacy.is_none());
        assert!(run("loopsy_context_list", json!({"prefix": "a"})).1.is_none());
        for (arguments, problem) in [
            (json!({"peerAddress": 5}), "'peerAddress' must be a string"),
            (json!({"peerAddress": "a", "peerPort": 70000}), "'peerPort' must be a port"),
            (json!({"peerAddress": "a", "peerPort": 1.5}), "'peerPort' must be a port"),
            (json!({"peerAddress": "a", "peerPort": 0}), "'peerPort' must be a port"),
            (json!({"peerAddress": "a b"}), "not an address"),
            (json!({"peerAddress": "x", "peerApiKey": ["k"]}), "'peerApiKey' must be a string"),
        ] {
            let mut arguments = arguments;
            let err = translate("loopsy_execute", &mut arguments).unwrap_err();
            assert!(err.contains(problem), "{err}");
        }
    }

    #[test]
    fn every_alias_family_has_its_schema_properties() {
        for tool in ["loopsy_execute", "loopsy_send_message", "loopsy_check_ack", "loopsy_ack_message"] {
            let properties = schema_properties(tool).unwrap();
            assert!(properties.values().all(|p| p["deprecated"] == true), "{tool}");
        }
        assert!(schema_properties("loopsy_list_peers").is_none());
    }
}
