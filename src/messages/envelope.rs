//! The messaging convention of 1.0.21 (PROTOCOL.md §6), exactly: the envelope, its id, the
//! context keys and their TTLs. Pure: time and randomness come in as arguments.
//!
//! Beyond 1.0.21: the per-message ack key `ack:<acknowledger>:<id>` (weakness G2), and ids whose
//! hostname part is made to fit 1.0.21's pattern whatever the hostname is (G1).

use serde::{Deserialize, Serialize};

/// Seconds an inbox and an outbox entry live (1.0.21's `MESSAGE_TTL`).
pub(crate) const MESSAGE_TTL_SECS: u64 = 3600;
/// Seconds an ack entry lives (1.0.21's `ACK_TTL`).
pub(crate) const ACK_TTL_SECS: u64 = 7200;
/// Longest hostname part of an id: keeps `inbox:<host>:<id>` short (1.0.21's router refused
/// keys over 100 characters).
const MAX_ID_HOST: usize = 32;

/// The `type` of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum MessageType {
    Chat,
    Request,
    Response,
    Ack,
    Broadcast,
}

impl MessageType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            MessageType::Chat => "chat",
            MessageType::Request => "request",
            MessageType::Response => "response",
            MessageType::Ack => "ack",
            MessageType::Broadcast => "broadcast",
        }
    }
}

/// A message as 1.0.21 stores it: members in this order, compact JSON, as a context value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Envelope {
    pub from: String,
    pub to: String,
    pub ts: u64,
    pub id: String,
    #[serde(rename = "type")]
    pub kind: MessageType,
    pub body: String,
}

impl Envelope {
    /// The context value: `{"from":…,"to":…,"ts":…,"id":…,"type":…,"body":…}`.
    pub(crate) fn to_value(&self) -> String {
        serde_json::to_string(self).expect("envelopes serialise")
    }

    /// Parses and validates a context value as 1.0.21's `check_inbox` does; `None` if invalid.
    pub(crate) fn parse(value: &str) -> Option<Envelope> {
        let envelope: Envelope = serde_json::from_str(value).ok()?;
        let valid =
            !envelope.from.is_empty() && !envelope.to.is_empty() && envelope.ts > 0 && is_valid_id(&envelope.id);
        valid.then_some(envelope)
    }
}

/// Just the id of a value that looks like an envelope (the duplicate check on context PUTs).
pub(crate) fn envelope_id(value: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: String,
    }
    serde_json::from_str::<IdOnly>(value).ok().map(|e| e.id)
}

/// `<ms>-<host>-<4 lowercase hex>`, where `<host>` is `hostname` with every character outside
/// `[A-Za-z0-9_.-]` replaced by `_` and cut to 32 characters, so 1.0.21 accepts it.
pub(crate) fn new_id(now_ms: u64, hostname: &str, random: u16) -> String {
    let mut host: String = hostname
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '_' })
        .take(MAX_ID_HOST)
        .collect();
    if host.is_empty() {
        host.push_str("node");
    }
    format!("{now_ms}-{host}-{random:04x}")
}

/// 1.0.21's id pattern: `^\d+-[A-Za-z0-9_.-]+-[a-f0-9]{4}$`.
///
/// Ids come from peers (envelopes in inbox entries, ack requests), so this works on bytes and
/// never slices a string: any text, ASCII or not, gets an answer instead of a panic.
pub(crate) fn is_valid_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    let Some(first_dash) = bytes.iter().position(|&b| b == b'-') else { return false };
    let (digits, rest) = (&bytes[..first_dash], &bytes[first_dash + 1..]);
    // `rest` is `<host>-<4 hex>`: at least one host byte, the dash and four hex digits.
    let Some(host_len) = rest.len().checked_sub(5).filter(|&n| n > 0) else { return false };
    let (host, tail) = rest.split_at(host_len);
    !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
        && host.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && tail[0] == b'-'
        && tail[1..].iter().all(|&b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `inbox:<recipient hostname>:<id>`, on the recipient.
pub(crate) fn inbox_key(recipient: &str, id: &str) -> String {
    format!("inbox:{recipient}:{id}")
}

/// The prefix of every message for `recipient`.
pub(crate) fn inbox_prefix(recipient: &str) -> String {
    format!("inbox:{recipient}:")
}

/// `outbox:<id>`, on the sender.
pub(crate) fn outbox_key(id: &str) -> String {
    format!("outbox:{id}")
}

/// `ack:<acknowledger hostname>`: the latest id it acknowledged (1.0.21), on the sender.
pub(crate) fn latest_ack_key(acknowledger: &str) -> String {
    format!("ack:{acknowledger}")
}

/// `ack:<acknowledger hostname>:<id>`: one per acknowledged message, on the sender.
pub(crate) fn ack_key(acknowledger: &str, id: &str) -> String {
    format!("ack:{acknowledger}:{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_are_compact_json_in_1_0_21_member_order() {
        let envelope = Envelope {
            from: "vm".into(),
            to: "leo".into(),
            ts: 1795473442108,
            id: "1795473442108-vm-78dc".into(),
            kind: MessageType::Chat,
            body: "hi".into(),
        };
        let value = envelope.to_value();
        assert_eq!(
            value,
            r#"{"from":"vm","to":"leo","ts":1795473442108,"id":"1795473442108-vm-78dc","type":"chat","body":"hi"}"#
        );
        assert_eq!(Envelope::parse(&value), Some(envelope));
        assert_eq!(envelope_id(&value).as_deref(), Some("1795473442108-vm-78dc"));
    }

    #[track_caller]
    fn check_parse(value: &str, valid: bool) {
        assert_eq!(Envelope::parse(value).is_some(), valid, "{value}");
    }

    #[test]
    fn invalid_envelopes_are_refused_as_1_0_21_refuses_them() {
        let ok = r#"{"from":"a","to":"b","ts":1,"id":"1-a-00ff","type":"request","body":""}"#;
        check_parse(ok, true);
        check_parse(&ok.replace(r#""from":"a""#, r#""from":"""#), false);
        check_parse(&ok.replace(r#""ts":1"#, r#""ts":0"#), false);
        check_parse(&ok.replace(r#""ts":1"#, r#""ts":"1""#), false);
        check_parse(&ok.replace("1-a-00ff", "1-a-00FF"), false);
        check_parse(&ok.replace("request", "shout"), false);
        check_parse(&ok.replace(r#","body":"""#, ""), false);
        check_parse("not json", false);
    }

    #[track_caller]
    fn check_id(id: &str, valid: bool) {
        assert_eq!(is_valid_id(id), valid, "{id}");
    }

    #[test]
    fn ids_follow_the_1_0_21_pattern() {
        check_id("1771732800000-kai-a3f2", true);
        check_id("1-my-host.lan-0000", true);
        check_id("1-a-b-ffff", true);
        check_id("x-kai-a3f2", false);
        check_id("-kai-a3f2", false);
        check_id("1--a3f2", false);
        check_id("1-kai-a3f", false);
        check_id("1-kai-a3fg", false);
        check_id("1-k i-a3f2", false);
        check_id("1-kai_a3f2", false);
    }

    /// The pattern, written differently (over characters, from the right), as an oracle.
    fn id_oracle(id: &str) -> bool {
        let chars: Vec<char> = id.chars().collect();
        let n = chars.len();
        if n < 8 || chars[n - 5] != '-' || !chars[n - 4..].iter().all(|c| matches!(c, '0'..='9' | 'a'..='f')) {
            return false;
        }
        let Some(dash) = chars.iter().position(|&c| c == '-').filter(|&d| d + 1 < n - 5) else { return false };
        let host = &chars[dash + 1..n - 5];
        dash > 0
            && chars[..dash].iter().all(char::is_ascii_digit)
            && !host.is_empty()
            && host.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    }

    // See: #13 (a non-ASCII id in an inbox entry made every inbox request panic).
    #[test]
    fn any_text_is_judged_as_an_id_without_panicking() {
        let inputs = crate::fuzz::inputs(
            &["1-a-00ff", "1771732800000-kai-a3f2", "1-my-host.lan-0000"],
            "0123456789abcdef-_.xyz",
            13,
            20_000,
        );
        for id in &inputs {
            assert_eq!(is_valid_id(id), id_oracle(id), "{id:?}");
            let value =
                format!(r#"{{"from":"a","to":"b","ts":1,"id":{},"type":"chat","body":""}}"#, serde_json::json!(id));
            assert_eq!(Envelope::parse(&value).is_some(), id_oracle(id), "{id:?}");
            assert_eq!(envelope_id(&value).as_deref(), Some(id.as_str()));
        }
        for value in crate::fuzz::inputs(
            &[r#"{"from":"a","to":"b","ts":1,"id":"1-a-00ff","type":"chat","body":""}"#],
            "{}\":,0123456789abcdef-",
            14,
            5_000,
        ) {
            let _ = (Envelope::parse(&value), envelope_id(&value));
        }
        check_id("1-abé0000", false);
        check_id("1-é-00ff", false);
        check_id("1-a-00f🙂", false);
    }

    #[test]
    fn new_ids_fit_the_pattern_whatever_the_hostname() {
        assert_eq!(new_id(17, "kai", 0xa3f2), "17-kai-a3f2");
        assert_eq!(new_id(17, "kai", 7), "17-kai-0007");
        assert_eq!(new_id(17, "Léo's Mac", 1), "17-L_o_s_Mac-0001");
        assert_eq!(new_id(17, "", 1), "17-node-0001");
        let long = new_id(17, &"h".repeat(200), 1);
        assert!(is_valid_id(&long) && long.len() < 50, "{long}");
        for host in ["kai", "Léo's Mac", "a:b", "🙂"] {
            assert!(is_valid_id(&new_id(1, host, 0xffff)), "{host}");
        }
    }

    #[test]
    fn keys_have_the_1_0_21_layout() {
        assert_eq!(inbox_key("leo", "1-vm-0001"), "inbox:leo:1-vm-0001");
        assert_eq!(inbox_prefix("leo"), "inbox:leo:");
        assert_eq!(outbox_key("1-vm-0001"), "outbox:1-vm-0001");
        assert_eq!(latest_ack_key("leo"), "ack:leo");
        assert_eq!(ack_key("leo", "1-vm-0001"), "ack:leo:1-vm-0001");
    }
}
