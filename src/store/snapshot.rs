//! `context.json`: the snapshot of the store, in 1.0.21's format (§9.3) plus `revision`.
//!
//! Reading is lenient so a file written by 1.0.21 imports: entries without a revision get one,
//! non-string values (1.0.21 stored numbers as numbers) become their JSON text, string TTLs are
//! read as numbers, and entries that cannot be used are skipped with a warning. A file that is
//! not a JSON array at all is moved aside, never silently overwritten.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use serde::Deserialize;
use serde_json::Value;

use super::entry::{Entry, Ttl};
use super::map::check_key;
use crate::durable::{self, Mode};

/// An entry as some version of loopsy may have written it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    key: String,
    value: Value,
    from_node_id: Option<String>,
    created_at: Option<f64>,
    updated_at: Option<f64>,
    ttl: Option<Value>,
    expires_at: Option<f64>,
    revision: Option<u64>,
}

/// Reads the snapshot at `path`; entries keep the file's order. Missing file: no entries.
/// Entries with no revision have revision 0.
///
/// The array is read one element at a time: only one entry's JSON tree exists at once, not the
/// whole file's (at 100,000 entries that was ~70 MB more at start-up, and much of it stayed
/// resident, scattered between the entries kept).
pub(super) fn load(path: &Path, now: u64) -> anyhow::Result<Vec<Arc<Entry>>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut reader = serde_json::Deserializer::from_slice(&bytes);
    match serde::Deserializer::deserialize_seq(&mut reader, Each { path })
        .and_then(|entries| reader.end().map(|()| entries))
    {
        Ok(entries) => Ok(entries),
        Err(e) => {
            let aside = path.with_file_name(format!("context.json.unreadable-{now}"));
            std::fs::rename(path, &aside).with_context(|| format!("moving {} aside", path.display()))?;
            log::warn!("{} is not a JSON array of entries ({e}); moved it to {}", path.display(), aside.display());
            Ok(Vec::new())
        }
    }
}

/// Reads a JSON array element by element, keeping the usable entries and skipping the others
/// with a warning.
struct Each<'a> {
    path: &'a Path,
}

impl<'de> serde::de::Visitor<'de> for Each<'_> {
    type Value = Vec<Arc<Entry>>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON array of entries")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut items: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        let mut index = 0;
        while let Some(item) = items.next_element::<Value>()? {
            match serde_json::from_value::<Stored>(item).map_err(|e| e.to_string()).and_then(convert) {
                Ok(entry) => entries.push(Arc::new(entry)),
                Err(reason) => log::warn!("{}: skipping entry {index}: {reason}", self.path.display()),
            }
            index += 1;
        }
        Ok(entries)
    }
}

fn convert(stored: Stored) -> Result<Entry, String> {
    check_key(&stored.key).map_err(|e| e.to_string())?;
    let value = match stored.value {
        Value::String(text) => text,
        Value::Null => return Err("the value is null".into()),
        other => other.to_string(),
    };
    let ttl = match stored.ttl {
        Some(Value::Number(number)) => Some(number),
        Some(Value::String(text)) => text.trim().parse::<serde_json::Number>().ok(),
        _ => None,
    };
    let ttl = Ttl::parse(ttl.as_ref()).unwrap_or(None);
    let updated_at = stored.updated_at.or(stored.created_at).unwrap_or(0.0) as u64;
    let expires_at = match (&ttl, stored.expires_at) {
        (None, _) => None,
        (Some(_), Some(at)) => Some(at as u64),
        (Some(ttl), None) => Some(updated_at.saturating_add(ttl.millis)),
    };
    Ok(Entry {
        key: stored.key.into(),
        value: value.into(),
        from_node_id: stored.from_node_id.as_deref().unwrap_or("local").into(),
        created_at: stored.created_at.map_or(updated_at, |at| at as u64),
        updated_at,
        ttl: ttl.map(|ttl| ttl.seconds),
        expires_at,
        revision: stored.revision.unwrap_or(0),
    })
}

/// Replaces the snapshot at `path` atomically and durably; returns its size in bytes.
pub(super) fn write(path: &Path, entries: &[Arc<Entry>]) -> anyhow::Result<u64> {
    let bytes = serde_json::to_vec_pretty(entries).context("encoding the context snapshot")?;
    durable::write(path, &bytes, Mode::Secret)?;
    Ok(bytes.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_1_0_21_file_imports_leniently() {
        let dir = std::env::temp_dir().join(format!("loopsy-snapshot-{}", crate::random::hex(6)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("context.json");
        let text = r#"[
          {"key":"greeting","value":"hello","fromNodeId":"local","createdAt":1000,"updatedAt":2000,"ttl":60,"expiresAt":62000},
          {"key":"count","value":42,"fromNodeId":"n1","createdAt":5,"updatedAt":6},
          {"key":"stringy","value":"x","fromNodeId":"local","createdAt":5,"updatedAt":6,"ttl":"5"},
          {"key":"nothing","value":null,"fromNodeId":"local","createdAt":5,"updatedAt":6},
          {"value":"no key"},
          {"key":"kept","value":"v","fromNodeId":"local","createdAt":5,"updatedAt":6,"revision":9}
        ]"#;
        std::fs::write(&path, text).unwrap();
        let entries = load(&path, 0).unwrap();
        let summary: Vec<_> = entries
            .iter()
            .map(|e| (&*e.key, &*e.value, e.expires_at, e.revision, e.ttl.as_ref().map(|t| t.to_string())))
            .collect();
        assert_eq!(
            summary,
            [
                ("greeting", "hello", Some(62000), 0, Some("60".to_string())),
                ("count", "42", None, 0, None),
                ("stringy", "x", Some(5006), 0, Some("5".to_string())),
                ("kept", "v", None, 9, None),
            ]
        );
        write(&path, &entries).unwrap();
        assert_eq!(load(&path, 0).unwrap(), entries, "what is written reads back the same");

        for (now, broken) in [(77, "{ not an array"), (78, r#"[{"key":"a","value":"v"},"#), (79, "[] []")] {
            std::fs::write(&path, broken).unwrap();
            assert!(load(&path, now).unwrap().is_empty(), "{broken}: nothing is taken from a broken file");
            assert!(!path.exists());
            let aside = dir.join(format!("context.json.unreadable-{now}"));
            assert_eq!(std::fs::read_to_string(aside).unwrap(), broken, "moved aside as it was");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
