//! The context map itself: keys in insertion order, TTLs, limits, revisions and
//! compare-and-set. Pure logic: time comes in as `now`, and every operation returns the
//! [`Change`]s it made so the caller can journal and broadcast them. No I/O here.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::entry::{Change, Entry, Ttl, DEFAULT_MAX_ENTRIES, MAX_KEY_BYTES, MAX_VALUE_BYTES};
use super::StoreError;

/// A write as the client asked for it.
#[derive(Debug, Clone)]
pub(crate) struct Put {
    pub value: Arc<str>,
    pub ttl: Option<Ttl>,
    /// Compare-and-set: the revision the key must have now; 0 = the key must not exist.
    pub if_revision: Option<u64>,
    pub from_node_id: String,
}

#[derive(Debug)]
pub(super) struct ContextMap {
    // Invariant: `entries` and `order` hold the same keys; `position` is the key's place in
    // `order`, taken when the key was first inserted and kept across overwrites.
    entries: HashMap<Arc<str>, Slot>,
    order: BTreeMap<u64, Arc<str>>,
    /// Every entry that has an expiry, as `(expiresAt, position)`: expiring entries are found
    /// without a scan, so a peer's TTLs cannot make each sweep cost the whole store.
    // Invariant: holds exactly the entries of `entries` whose `expires_at` is set.
    expiring: BTreeSet<(u64, u64)>,
    next_position: u64,
    /// The highest revision ever given out (also by deletes): the next write takes one more.
    revision: u64,
    /// New keys are refused while this many entries are live.
    max_entries: usize,
    /// The writer of the last new entry, shared by the entries it writes next.
    last_writer: Arc<str>,
}

impl Default for ContextMap {
    fn default() -> ContextMap {
        ContextMap::with_max_entries(DEFAULT_MAX_ENTRIES)
    }
}

#[derive(Debug)]
struct Slot {
    position: u64,
    /// Shared with the answer, the journal's queue, watchers and snapshots: none copies it.
    entry: Arc<Entry>,
}

/// Checks a key's length: 1..=[`MAX_KEY_BYTES`] bytes.
pub(crate) fn check_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(StoreError::BadKey { len: key.len() });
    }
    Ok(())
}

impl ContextMap {
    pub(super) fn with_max_entries(max_entries: usize) -> ContextMap {
        ContextMap {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            expiring: BTreeSet::new(),
            next_position: 0,
            revision: 0,
            max_entries,
            last_writer: Arc::from(""),
        }
    }

    pub(super) fn revision(&self) -> u64 {
        self.revision
    }

    pub(super) fn live_count(&self, now: u64) -> usize {
        self.entries.len() - self.expiring.range(..=(now, u64::MAX)).count()
    }

    /// Creates or replaces `key`.
    pub(super) fn put(&mut self, key: &str, put: Put, now: u64) -> Result<(Arc<Entry>, Vec<Change>), StoreError> {
        check_key(key)?;
        if put.value.len() > MAX_VALUE_BYTES {
            return Err(StoreError::ValueTooLarge { len: put.value.len() });
        }
        let mut changes = Vec::new();
        let current = self.live(key, now, &mut changes).cloned();
        let current_revision = current.as_ref().map_or(0, |entry| entry.revision);
        if let Some(expected) = put.if_revision.filter(|expected| *expected != current_revision) {
            return Err(StoreError::RevisionConflict { key: key.into(), current: current_revision, expected });
        }
        if current.is_none() && self.entries.len() >= self.max_entries {
            changes.extend(self.sweep(now));
            if self.entries.len() >= self.max_entries {
                return Err(StoreError::TooManyEntries { max: self.max_entries });
            }
        }
        self.revision += 1;
        let from_node_id = match &current {
            Some(entry) if *entry.from_node_id == *put.from_node_id => entry.from_node_id.clone(),
            _ if *self.last_writer == *put.from_node_id => self.last_writer.clone(),
            _ => {
                self.last_writer = Arc::from(put.from_node_id);
                self.last_writer.clone()
            }
        };
        let entry = Arc::new(Entry {
            key: current.as_ref().map_or_else(|| Arc::from(key), |entry| entry.key.clone()),
            value: put.value,
            from_node_id,
            created_at: current.map_or(now, |entry| entry.created_at),
            updated_at: now,
            expires_at: put.ttl.as_ref().map(|ttl| now.saturating_add(ttl.millis)),
            ttl: put.ttl.map(|ttl| ttl.seconds),
            revision: self.revision,
        });
        self.insert(entry.clone());
        changes.push(Change::Put(entry.clone()));
        Ok((entry, changes))
    }

    /// The live entry of `key`; an expired one is removed (and reported in `changes`).
    pub(super) fn get(&mut self, key: &str, now: u64, changes: &mut Vec<Change>) -> Option<Arc<Entry>> {
        self.live(key, now, changes).cloned()
    }

    /// Deletes `key`; `if_revision` as for [`ContextMap::put`].
    pub(super) fn delete(
        &mut self,
        key: &str,
        if_revision: Option<u64>,
        now: u64,
    ) -> Result<(u64, Vec<Change>), StoreError> {
        let mut changes = Vec::new();
        let current = self.live(key, now, &mut changes).map_or(0, |entry| entry.revision);
        if let Some(expected) = if_revision.filter(|expected| *expected != current) {
            return Err(StoreError::RevisionConflict { key: key.into(), current, expected });
        }
        if current == 0 {
            return Err(StoreError::NotFound { key: key.into() });
        }
        self.remove(key);
        self.revision += 1;
        changes.push(Change::Delete { key: key.into(), revision: self.revision });
        Ok((self.revision, changes))
    }

    /// Live entries whose key starts with `prefix`, in insertion order; expired ones are removed.
    pub(super) fn list(&mut self, prefix: &str, now: u64, changes: &mut Vec<Change>) -> Vec<Arc<Entry>> {
        changes.extend(self.sweep(now));
        self.order.values().filter(|key| key.starts_with(prefix)).map(|key| self.entries[key].entry.clone()).collect()
    }

    /// Every entry in insertion order, expired or not (for snapshots).
    pub(super) fn entries(&self) -> Vec<Arc<Entry>> {
        self.order.values().map(|key| self.entries[key].entry.clone()).collect()
    }

    /// Removes every expired entry, in the order they expired.
    pub(super) fn sweep(&mut self, now: u64) -> Vec<Change> {
        let due: Vec<u64> = self.expiring.range(..=(now, u64::MAX)).map(|(_, position)| *position).collect();
        due.into_iter()
            .map(|position| {
                let key = self.order[&position].clone();
                let entry = self.remove(&key).expect("indexed keys exist");
                Change::Expire { key: key.to_string(), revision: entry.revision }
            })
            .collect()
    }

    /// When the next entry expires, if any does.
    pub(super) fn next_expiry(&self) -> Option<u64> {
        self.expiring.first().map(|(at, _)| *at)
    }

    /// Replays a journalled or snapshotted change (no checks: it was accepted once).
    pub(super) fn apply(&mut self, change: Change) {
        self.revision = self.revision.max(change.revision());
        match change {
            Change::Put(entry) => self.insert(entry),
            Change::Delete { key, .. } | Change::Expire { key, .. } => {
                self.remove(&key);
            }
        }
    }

    /// Raises the revision counter to at least `revision` (a journal's base).
    pub(super) fn raise_revision(&mut self, revision: u64) {
        self.revision = self.revision.max(revision);
    }

    /// Gives entries that have no revision yet (imported from 1.0.21) fresh ones, in order.
    pub(super) fn number_unrevisioned(&mut self) -> usize {
        let keys: Vec<Arc<str>> =
            self.order.values().filter(|k| self.entries[*k].entry.revision == 0).cloned().collect();
        for key in &keys {
            self.revision += 1;
            Arc::make_mut(&mut self.entries.get_mut(key).expect("listed keys exist").entry).revision = self.revision;
        }
        keys.len()
    }

    fn live(&mut self, key: &str, now: u64, changes: &mut Vec<Change>) -> Option<&Arc<Entry>> {
        if self.entries.get(key).is_some_and(|slot| slot.entry.is_expired(now)) {
            let entry = self.remove(key).expect("checked above");
            changes.push(Change::Expire { key: key.into(), revision: entry.revision });
        }
        self.entries.get(key).map(|slot| &slot.entry)
    }

    fn insert(&mut self, entry: Arc<Entry>) {
        if let Some(slot) = self.entries.get_mut(&entry.key) {
            if let Some(at) = slot.entry.expires_at {
                self.expiring.remove(&(at, slot.position));
            }
            if let Some(at) = entry.expires_at {
                self.expiring.insert((at, slot.position));
            }
            slot.entry = entry;
            return;
        }
        let position = self.next_position;
        self.next_position += 1;
        if let Some(at) = entry.expires_at {
            self.expiring.insert((at, position));
        }
        self.order.insert(position, entry.key.clone());
        self.entries.insert(entry.key.clone(), Slot { position, entry });
    }

    fn remove(&mut self, key: &str) -> Option<Arc<Entry>> {
        let slot = self.entries.remove(key)?;
        self.order.remove(&slot.position);
        if let Some(at) = slot.entry.expires_at {
            self.expiring.remove(&(at, slot.position));
        }
        Some(slot.entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(value: &str) -> Put {
        Put { value: value.into(), ttl: None, if_revision: None, from_node_id: "local".into() }
    }

    fn with_ttl(value: &str, millis: u64) -> Put {
        Put { ttl: Some(Ttl { seconds: (millis / 1000).into(), millis }), ..put(value) }
    }

    fn keys(map: &mut ContextMap, prefix: &str, now: u64) -> Vec<String> {
        map.list(prefix, now, &mut Vec::new()).into_iter().map(|e| e.key.to_string()).collect()
    }

    #[test]
    fn an_overwrite_keeps_the_position_and_created_at_and_takes_a_new_revision() {
        let mut map = ContextMap::default();
        map.put("a", put("1"), 10).unwrap();
        map.put("b", put("2"), 20).unwrap();
        let (entry, changes) = map.put("a", put("3"), 30).unwrap();
        assert_eq!((entry.created_at, entry.updated_at, entry.revision), (10, 30, 3));
        assert_eq!(changes, vec![Change::Put(entry)]);
        assert_eq!(keys(&mut map, "", 40), ["a", "b"]);
        map.delete("a", None, 50).unwrap();
        map.put("a", put("4"), 60).unwrap();
        assert_eq!(keys(&mut map, "", 70), ["b", "a"], "a deleted key comes back at the end");
        assert_eq!(map.revision(), 5);
    }

    #[test]
    fn a_key_is_one_allocation_and_a_writer_is_shared_by_its_entries() {
        let mut map = ContextMap::default();
        let from = |node: &str| Put { from_node_id: node.into(), ..put("v") };
        let (a, _) = map.put("a", from("n1"), 1).unwrap();
        let (b, _) = map.put("b", from("n1"), 2).unwrap();
        let (c, _) = map.put("c", from("n2"), 3).unwrap();
        assert!(Arc::ptr_eq(&a.from_node_id, &b.from_node_id), "one writer in a row: one string");
        assert_eq!((&*a.from_node_id, &*c.from_node_id), ("n1", "n2"));
        let (a2, _) = map.put("a", from("n1"), 4).unwrap();
        assert!(Arc::ptr_eq(&a2.from_node_id, &a.from_node_id), "an overwrite by the same writer keeps it");
        assert!(Arc::ptr_eq(&a2.key, &a.key), "an overwrite keeps the key's allocation");
        let (in_table, slot) = map.entries.get_key_value("a").unwrap();
        assert!(Arc::ptr_eq(in_table, &a2.key) && Arc::ptr_eq(&map.order[&slot.position], &a2.key));
        let (a3, _) = map.put("a", from("n2"), 5).unwrap();
        assert_eq!(&*a3.from_node_id, "n2", "another writer is recorded as itself");
        check_indexes(&map);
    }

    #[test]
    fn prefixes_filter_the_listing() {
        let mut map = ContextMap::default();
        for key in ["inbox:bob:1", "inbox:alice:1", "outbox:1", "inbox:bob:2"] {
            map.put(key, put("x"), 1).unwrap();
        }
        assert_eq!(keys(&mut map, "inbox:bob:", 2), ["inbox:bob:1", "inbox:bob:2"]);
        assert_eq!(keys(&mut map, "nothing", 2), Vec::<String>::new());
    }

    #[test]
    fn expired_entries_disappear_and_are_reported_once() {
        let mut map = ContextMap::default();
        map.put("short", with_ttl("x", 100), 1000).unwrap();
        map.put("long", with_ttl("y", 10_000), 1000).unwrap();
        assert_eq!(map.next_expiry(), Some(1100));
        let mut changes = Vec::new();
        assert!(map.get("short", 1099, &mut changes).is_some());
        assert!(map.get("short", 1100, &mut changes).is_none(), "expired when expiresAt <= now");
        assert_eq!(changes, vec![Change::Expire { key: "short".into(), revision: 1 }]);
        assert!(map.sweep(1100).is_empty());
        assert_eq!(map.live_count(1100), 1);
        assert_eq!(map.sweep(11_000), vec![Change::Expire { key: "long".into(), revision: 2 }]);
    }

    /// The map's invariants: `order` and `expiring` index exactly what `entries` holds.
    fn check_indexes(map: &ContextMap) {
        assert_eq!(map.order.len(), map.entries.len());
        for (position, key) in &map.order {
            assert_eq!(map.entries[key].position, *position);
        }
        let expiring: BTreeSet<(u64, u64)> =
            map.entries.values().filter_map(|slot| Some((slot.entry.expires_at?, slot.position))).collect();
        assert_eq!(map.expiring, expiring);
    }

    #[test]
    fn expiry_is_indexed_through_overwrites_deletes_and_sweeps() {
        let mut map = ContextMap::default();
        for i in 0..1000u64 {
            // Expiring 1 ms apart, in reverse order of insertion, every third without a TTL.
            let value = if i % 3 == 0 { put("x") } else { with_ttl("x", 10_000 - i) };
            map.put(&format!("k{i}"), value, 0).unwrap();
        }
        check_indexes(&map);
        map.put("k1", put("no ttl now"), 1).unwrap();
        map.put("k3", with_ttl("a ttl now", 5), 1).unwrap();
        map.put("k2", with_ttl("later", 20_000), 1).unwrap();
        map.delete("k4", None, 2).unwrap();
        check_indexes(&map);
        assert_eq!(map.next_expiry(), Some(6), "k3's");
        let swept: Vec<String> = map.sweep(9_500).into_iter().map(|change| change.key().to_string()).collect();
        assert_eq!(swept[..3], ["k3", "k998", "k997"], "in the order they expired");
        assert!(swept.iter().all(|key| key != "k1" && key != "k2" && key != "k0"));
        check_indexes(&map);
        // 999 keys after the delete: 334 had expired by 9,500 (k3, and k500..k999 but each
        // third); 334 never expire, k2 expires at 20,001, the rest by 9,999.
        assert_eq!(swept.len(), 334);
        assert_eq!(map.live_count(9_500), 665);
        assert_eq!(map.live_count(10_000), 335);
        assert_eq!(map.live_count(30_000), 334);
        assert!(map.sweep(9_500).is_empty(), "reported once");
    }

    #[test]
    fn compare_and_set() {
        let mut map = ContextMap::default();
        let conflict = |err: StoreError| match err {
            StoreError::RevisionConflict { current, expected, .. } => (current, expected),
            other => panic!("{other:?}"),
        };
        let (entry, _) = map.put("lock", Put { if_revision: Some(0), ..put("me") }, 1).unwrap();
        assert_eq!(entry.revision, 1);
        assert_eq!(conflict(map.put("lock", Put { if_revision: Some(0), ..put("you") }, 2).unwrap_err()), (1, 0));
        assert_eq!(conflict(map.put("lock", Put { if_revision: Some(5), ..put("you") }, 2).unwrap_err()), (1, 5));
        map.put("lock", Put { if_revision: Some(1), ..put("me again") }, 3).unwrap();
        assert_eq!(conflict(map.delete("lock", Some(1), 4).unwrap_err()), (2, 1));
        assert_eq!(map.delete("lock", Some(2), 4).unwrap().0, 3);
        assert_eq!(conflict(map.delete("lock", Some(2), 5).unwrap_err()), (0, 2));
        assert!(matches!(map.delete("lock", Some(0), 5), Err(StoreError::NotFound { .. })));
        assert_eq!(map.revision(), 3, "refused writes take no revision");
    }

    #[test]
    fn the_entry_limit_counts_only_live_entries() {
        let mut map = ContextMap::with_max_entries(1000);
        map.put("dying", with_ttl("x", 10), 0).unwrap();
        for i in 1..1000 {
            map.put(&format!("k{i}"), put("x"), 0).unwrap();
        }
        let err = map.put("new", put("x"), 5).unwrap_err();
        assert!(matches!(err, StoreError::TooManyEntries { max: 1000 }));
        assert_eq!(err.to_string(), "Max context entries (1000) reached", "1.0.21's message");
        map.put("k1", put("overwrite is fine"), 5).unwrap();
        let (_, changes) = map.put("new", put("x"), 10).unwrap();
        assert_eq!(changes.len(), 2, "the sweep that made room is reported: {changes:?}");
        assert!(matches!(map.put("newer", put("x"), 10), Err(StoreError::TooManyEntries { .. })));
    }

    #[test]
    fn keys_and_values_are_measured_in_bytes() {
        let mut map = ContextMap::default();
        assert!(matches!(map.put("", put("x"), 0), Err(StoreError::BadKey { len: 0 })));
        let long_key = "é".repeat(MAX_KEY_BYTES / 2);
        map.put(&long_key, put("x"), 0).unwrap();
        assert!(matches!(map.put(&format!("{long_key}x"), put("x"), 0), Err(StoreError::BadKey { .. })));
        map.put("big", put(&"v".repeat(MAX_VALUE_BYTES)), 0).unwrap();
        let too_big = "é".repeat(MAX_VALUE_BYTES / 2 + 1);
        assert!(matches!(map.put("big", put(&too_big), 0), Err(StoreError::ValueTooLarge { .. })));
    }

    #[test]
    fn replay_rebuilds_the_same_map() {
        let mut map = ContextMap::default();
        let mut log = Vec::new();
        log.extend(map.put("a", put("1"), 1).unwrap().1);
        log.extend(map.put("b", put("2"), 2).unwrap().1);
        log.extend(map.delete("a", None, 3).unwrap().1);
        log.extend(map.put("b", put("3"), 4).unwrap().1);
        let mut replayed = ContextMap::default();
        for change in log {
            replayed.apply(change);
        }
        assert_eq!(replayed.entries(), map.entries());
        assert_eq!(replayed.revision(), 4);
    }
}
