//! A context entry and the changes made to the store: the shapes on the wire, in the journal
//! and in `context.json` (one type for all three, so they cannot drift apart).

use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Largest value, in bytes of UTF-8 (1.0.21 counted UTF-16 units, weakness C2).
pub(crate) const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Largest key, in bytes of UTF-8. 1.0.21's router silently 404'd keys over 100 characters.
pub(crate) const MAX_KEY_BYTES: usize = 1024;
/// Most live entries a store holds unless `context.maxEntries` says otherwise (1.0.21: 1000,
/// a cap it needed because it rewrote the whole file on every write).
pub(crate) const DEFAULT_MAX_ENTRIES: usize = 100_000;
/// Longest TTL, in seconds (about 317 years): keeps `expiresAt` exact in a JavaScript number.
pub(crate) const MAX_TTL_SECS: f64 = 1e10;

/// One key with its value, as 1.0.21 shapes it (§2.7) plus `revision`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Entry {
    /// Shared with the table's indexes (one allocation per key, not three).
    pub key: Arc<str>,
    /// Shared, so listing, watching and snapshots copy a pointer, not the bytes.
    #[serde(serialize_with = "serialize_value", deserialize_with = "deserialize_value")]
    pub value: Arc<str>,
    /// Shared between the entries a node wrote in a row.
    pub from_node_id: Arc<str>,
    /// Milliseconds; kept when the key is overwritten.
    pub created_at: u64,
    pub updated_at: u64,
    /// Seconds, as the client sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<serde_json::Number>,
    /// `updatedAt + ttl * 1000`; expired when `expiresAt <= now`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// The store revision of the write that produced this entry.
    pub revision: u64,
}

impl Entry {
    pub(crate) fn is_expired(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

fn serialize_value<S: Serializer>(value: &Arc<str>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(value)
}

fn deserialize_value<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Arc<str>, D::Error> {
    String::deserialize(deserializer).map(Arc::from)
}

/// One change to the store, in revision order: journalled (puts and deletes) and watched (all).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Change {
    /// A key was written; the entry carries the new revision. Shared with the table, the
    /// journal's queue and every watcher.
    Put(Arc<Entry>),
    /// A key was deleted by a client; the delete took `revision`.
    Delete { key: String, revision: u64 },
    /// A key's TTL ran out. Expiry takes no revision of its own: `revision` is the entry's.
    Expire { key: String, revision: u64 },
}

impl Change {
    pub(crate) fn key(&self) -> &str {
        match self {
            Change::Put(entry) => &entry.key,
            Change::Delete { key, .. } | Change::Expire { key, .. } => key,
        }
    }

    pub(crate) fn revision(&self) -> u64 {
        match self {
            Change::Put(entry) => entry.revision,
            Change::Delete { revision, .. } | Change::Expire { revision, .. } => *revision,
        }
    }
}

/// A validated TTL: the number as sent, and the same in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ttl {
    pub seconds: serde_json::Number,
    pub millis: u64,
}

impl Ttl {
    /// `None` for no expiry: an absent TTL, or 0 (1.0.21 treated a falsy TTL as none).
    pub(crate) fn parse(seconds: Option<&serde_json::Number>) -> Result<Option<Ttl>, String> {
        let Some(number) = seconds else { return Ok(None) };
        let value = number.as_f64().unwrap_or(f64::NAN);
        if value == 0.0 {
            return Ok(None);
        }
        if !(value > 0.0 && value <= MAX_TTL_SECS) {
            return Err(format!(
                "ttl must be a positive number of seconds up to {MAX_TTL_SECS:.0} (or 0 for none), got {number}"
            ));
        }
        // At least 1 ms, so a tiny positive TTL still means "expires", never "no expiry".
        let millis = ((value * 1000.0).round() as u64).max(1);
        Ok(Some(Ttl { seconds: number.clone(), millis }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_ttl(json: &str, expect: Result<Option<u64>, &str>) {
        let number: Option<serde_json::Number> = serde_json::from_str(json).unwrap();
        let got = Ttl::parse(number.as_ref()).map(|ttl| ttl.map(|t| t.millis));
        match expect {
            Ok(millis) => assert_eq!(got, Ok(millis), "{json}"),
            Err(text) => assert!(got.as_ref().unwrap_err().contains(text), "{json}: {got:?}"),
        }
    }

    #[test]
    fn ttls() {
        check_ttl("null", Ok(None));
        check_ttl("0", Ok(None));
        check_ttl("0.0", Ok(None));
        check_ttl("60", Ok(Some(60_000)));
        check_ttl("0.25", Ok(Some(250)));
        check_ttl("0.0000001", Ok(Some(1)));
        check_ttl("-1", Err("positive"));
        check_ttl("1e11", Err("positive"));
    }

    #[test]
    fn entries_have_the_1_0_21_shape_plus_revision() {
        let entry = Entry {
            key: "k".into(),
            value: "v".into(),
            from_node_id: "local".into(),
            created_at: 1,
            updated_at: 2,
            ttl: Some(60.into()),
            expires_at: Some(60_002),
            revision: 7,
        };
        let text = serde_json::to_string(&entry).unwrap();
        assert_eq!(
            text,
            r#"{"key":"k","value":"v","fromNodeId":"local","createdAt":1,"updatedAt":2,"ttl":60,"expiresAt":60002,"revision":7}"#
        );
        assert_eq!(serde_json::from_str::<Entry>(&text).unwrap(), entry);
        let no_ttl = Entry { ttl: None, expires_at: None, ..entry };
        assert!(!serde_json::to_string(&no_ttl).unwrap().contains("ttl"), "absent, not null");
    }
}
