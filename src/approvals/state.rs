//! The inbox's state, as a pure data structure (no I/O, time passed in): the targets, the
//! requests gathered from each, and the feed of changes that `/api/v1/approvals/stream` serves.
//!
//! A target's feed is applied message by message: `hello` (its clock, to correct times),
//! `reset` (a snapshot begins: records are staged), `approval` (one record), `synced` (the
//! snapshot replaces what the target had; the target is live). Everything a target sends is
//! bounded here: records are checked and cut, and each target keeps at most
//! [`MAX_ITEMS_PER_TARGET`] requests, [`MAX_DECIDED_PER_TARGET`] of them decided, and
//! [`MAX_BYTES_PER_TARGET`] in all (decided ones go first, then the oldest).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::feed::{Change, Feed, Subscriber};
use crate::tasks::api::{bounded_tool_input, ApprovalState, PermissionRecord};

pub(crate) const MAX_ITEMS_PER_TARGET: usize = 500;
pub(crate) const MAX_DECIDED_PER_TARGET: usize = 100;
pub(crate) const MAX_BYTES_PER_TARGET: usize = 8 * 1024 * 1024;
/// Changes kept for readers resuming with `Last-Event-ID`.
const FEED_CHANGES: usize = 2000;
const FEED_BYTES: usize = 16 * 1024 * 1024;

/// What kind of daemon a target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TargetKind {
    /// This daemon.
    Local,
    /// A local session (`<home>/sessions/<name>`).
    Session,
    /// A registry peer this node holds credentials for.
    Peer,
}

/// How the inbox stands with a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TargetState {
    /// Connecting (or reconnecting) to its feed.
    Connecting,
    /// Following its feed: its requests are current.
    Live,
    /// Its feed cannot be reached or broke; retried with back-off (`error` says why).
    Down,
    /// The health checker does not see the peer online; nothing is sent to it until it does.
    Offline,
    /// A session whose daemon is not running.
    Stopped,
    /// It has no approvals feed (an older loopsy, or 1.0.21).
    Unsupported,
}

impl TargetState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TargetState::Connecting => "connecting",
            TargetState::Live => "live",
            TargetState::Down => "down",
            TargetState::Offline => "offline",
            TargetState::Stopped => "stopped",
            TargetState::Unsupported => "unsupported",
        }
    }
}

/// A target as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TargetView {
    /// `local`, `session:<name>` or `peer:<nodeId>` (the dashboard's target names).
    pub id: String,
    pub kind: TargetKind,
    /// The session's name, the peer's name (or hostname), or this daemon's hostname.
    pub name: String,
    pub state: TargetState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Unix ms (local clock) of the last change of state.
    pub since: u64,
    /// Its requests still pending.
    pub pending: usize,
}

/// One permission request in the inbox: a target's record, with times on this daemon's clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Item {
    /// `<target>/<taskId>/<requestId>`.
    pub id: String,
    pub target: String,
    pub target_kind: TargetKind,
    pub target_name: String,
    #[serde(flatten)]
    pub record: PermissionRecord,
}

impl Item {
    pub(crate) fn is_pending(&self) -> bool {
        self.record.state == ApprovalState::Pending
    }
}

/// How a reader of the inbox's feed starts.
pub(crate) enum Start {
    Replay(Vec<Arc<Change<()>>>),
    Snapshot { targets: Vec<TargetView>, items: Vec<Item> },
}

/// A reader of the inbox's feed.
pub(crate) struct Reader {
    pub start: Start,
    pub live: Subscriber<()>,
    pub synced_id: String,
    pub epoch: String,
}

struct Target {
    view: TargetView,
    /// By item id, with the size of each item's JSON.
    items: BTreeMap<String, (Item, usize)>,
    bytes: usize,
    /// This daemon's clock minus the target's (ms), from its latest `hello`.
    skew: i64,
    /// A snapshot being received (`reset` seen, `synced` not yet).
    staging: Option<Vec<PermissionRecord>>,
    /// The id of the last change read from its feed, to resume from.
    last_event_id: Option<String>,
}

/// The inbox's state.
pub(crate) struct InboxState {
    targets: BTreeMap<String, Target>,
    feed: Feed<()>,
}

impl Default for InboxState {
    fn default() -> InboxState {
        InboxState { targets: BTreeMap::new(), feed: Feed::new(FEED_CHANGES, FEED_BYTES) }
    }
}

impl InboxState {
    /// Adds a target (connecting) or renames it.
    pub(crate) fn upsert_target(&mut self, id: &str, kind: TargetKind, name: &str, now: u64) {
        match self.targets.get_mut(id) {
            Some(target) if target.view.name == name && target.view.kind == kind => return,
            Some(target) => {
                target.view.name = name.to_string();
                target.view.kind = kind;
                for (item, _) in target.items.values_mut() {
                    item.target_name = name.to_string();
                }
            }
            None => {
                let view = TargetView {
                    id: id.to_string(),
                    kind,
                    name: name.to_string(),
                    state: TargetState::Connecting,
                    error: None,
                    since: now,
                    pending: 0,
                };
                let target =
                    Target { view, items: BTreeMap::new(), bytes: 0, skew: 0, staging: None, last_event_id: None };
                self.targets.insert(id.to_string(), target);
            }
        }
        self.publish_target(id);
    }

    /// Forgets a target and its requests.
    pub(crate) fn remove_target(&mut self, id: &str) {
        if self.targets.remove(id).is_some() {
            self.feed.push((), json!({"type": "targetRemoved", "id": id}).to_string());
        }
    }

    pub(crate) fn target_ids(&self) -> Vec<String> {
        self.targets.keys().cloned().collect()
    }

    pub(crate) fn set_state(&mut self, id: &str, state: TargetState, error: Option<String>, now: u64) {
        let Some(target) = self.targets.get_mut(id) else { return };
        if target.view.state == state && target.view.error == error {
            return;
        }
        if target.view.state != state {
            target.view.since = now;
        }
        target.view.state = state;
        target.view.error = error;
        if state != TargetState::Live {
            target.staging = None;
        }
        if state == TargetState::Stopped {
            // Its daemon is gone and its agents with it: nothing of it waits any more. (A target
            // that is down or offline keeps what it had: that may well still wait there.)
            target.last_event_id = None;
            let ids: Vec<String> = target.items.keys().cloned().collect();
            for item in ids {
                self.remove_item(id, &item);
            }
        }
        self.publish_target(id);
    }

    /// Where to resume the target's feed.
    pub(crate) fn last_event_id(&self, id: &str) -> Option<String> {
        self.targets.get(id).and_then(|t| t.last_event_id.clone())
    }

    /// A new connection to the target's feed began; `remote_now` is its clock.
    pub(crate) fn hello(&mut self, id: &str, remote_now: u64, now: u64) {
        if let Some(target) = self.targets.get_mut(id) {
            target.skew = clamp(now).saturating_sub(clamp(remote_now));
            target.staging = None;
        }
    }

    /// A snapshot begins.
    pub(crate) fn reset(&mut self, id: &str) {
        if let Some(target) = self.targets.get_mut(id) {
            target.staging = Some(Vec::new());
        }
    }

    /// The target's feed id of what was just applied.
    pub(crate) fn seen(&mut self, id: &str, event_id: &str) {
        if let Some(target) = self.targets.get_mut(id) {
            if event_id.len() <= 100 {
                target.last_event_id = Some(event_id.to_string());
            }
        }
    }

    /// One record from the target: staged during a snapshot, else applied. Returns the item
    /// as listed now (`None` when staged or refused).
    pub(crate) fn record(&mut self, id: &str, record: PermissionRecord) -> Option<Item> {
        let record = sanitize(record)?;
        let target = self.targets.get_mut(id)?;
        if let Some(staging) = target.staging.as_mut() {
            if staging.len() < MAX_ITEMS_PER_TARGET * 2 {
                staging.push(record);
            }
            return None;
        }
        let item = self.upsert(id, record);
        self.enforce_bounds(id);
        self.publish_target(id);
        item.filter(|item| self.targets.get(id).is_some_and(|t| t.items.contains_key(&item.id)))
    }

    /// The snapshot is complete (or a resume caught up): the target is live.
    pub(crate) fn synced(&mut self, id: &str, now: u64) {
        let Some(target) = self.targets.get_mut(id) else { return };
        if let Some(records) = target.staging.take() {
            let keep: std::collections::BTreeSet<String> =
                records.iter().map(|r| item_id(id, &r.task_id, &r.request_id)).collect();
            let gone: Vec<String> = target.items.keys().filter(|k| !keep.contains(*k)).cloned().collect();
            for item_id in gone {
                self.remove_item(id, &item_id);
            }
            for record in records {
                self.upsert(id, record);
            }
            self.enforce_bounds(id);
        }
        self.set_state(id, TargetState::Live, None, now);
        self.publish_target(id);
    }

    /// Every request, pending first (oldest first), then decided ones (newest first).
    pub(crate) fn items(&self) -> Vec<Item> {
        let mut items: Vec<Item> =
            self.targets.values().flat_map(|t| t.items.values().map(|(item, _)| item.clone())).collect();
        items.sort_by_key(|item| match item.is_pending() {
            true => (0, item.record.requested_at as i128),
            false => (1, -(item.record.decided_at.unwrap_or(0) as i128)),
        });
        items
    }

    pub(crate) fn targets(&self) -> Vec<TargetView> {
        self.targets.values().map(|t| t.view.clone()).collect()
    }

    /// A reader of the changes: resumed after `last_event_id` when possible, else a snapshot.
    pub(crate) fn subscribe(&mut self, last_event_id: Option<&str>) -> Reader {
        let start = match last_event_id.and_then(|id| self.feed.resume(id)) {
            Some(changes) => Start::Replay(changes),
            None => Start::Snapshot { targets: self.targets(), items: self.items() },
        };
        let synced_id = self.feed.id(self.feed.last_seq());
        let epoch = self.feed.epoch().to_string();
        Reader { start, live: self.feed.subscribe(), synced_id, epoch }
    }

    /// Ends every reader (the daemon stops).
    pub(crate) fn close(&mut self) {
        self.feed.close();
    }

    /// Whether a reader follows the inbox's changes now.
    pub(crate) fn has_readers(&mut self) -> bool {
        self.feed.has_subscribers()
    }

    fn upsert(&mut self, target_id: &str, mut record: PermissionRecord) -> Option<Item> {
        let target = self.targets.get_mut(target_id)?;
        let skew = target.skew;
        record.requested_at = shift(record.requested_at, skew);
        record.decided_at = record.decided_at.map(|t| shift(t, skew));
        let id = item_id(target_id, &record.task_id, &record.request_id);
        if let Some((old, _)) = target.items.get(&id) {
            // A later state never goes back to pending (a replayed snapshot may be older).
            if !old.is_pending() && record.state == ApprovalState::Pending {
                return Some(old.clone());
            }
            if old.record == record {
                return Some(old.clone());
            }
        }
        let item = Item {
            id: id.clone(),
            target: target_id.to_string(),
            target_kind: target.view.kind,
            target_name: target.view.name.clone(),
            record,
        };
        let text = serde_json::to_string(&item).expect("items serialise");
        if let Some((_, size)) = target.items.insert(id, (item.clone(), text.len())) {
            target.bytes -= size;
        }
        target.bytes += text.len();
        self.feed.push((), format!(r#"{{"type":"approval","approval":{text}}}"#));
        Some(item)
    }

    fn remove_item(&mut self, target_id: &str, item_id: &str) {
        let Some(target) = self.targets.get_mut(target_id) else { return };
        if let Some((_, size)) = target.items.remove(item_id) {
            target.bytes -= size;
            self.feed.push((), json!({"type": "removed", "id": item_id}).to_string());
        }
    }

    /// Drops decided requests beyond their bound, then, while over the bounds, decided ones
    /// before pending ones, oldest first.
    fn enforce_bounds(&mut self, target_id: &str) {
        loop {
            let Some(target) = self.targets.get(target_id) else { return };
            let decided = target.items.values().filter(|(i, _)| !i.is_pending()).count();
            let over = target.items.len() > MAX_ITEMS_PER_TARGET || target.bytes > MAX_BYTES_PER_TARGET;
            if !over && decided <= MAX_DECIDED_PER_TARGET {
                return;
            }
            let victim = target
                .items
                .values()
                .min_by_key(|(item, _)| match item.is_pending() {
                    false => (0, item.record.decided_at.unwrap_or(0)),
                    true => (1, item.record.requested_at),
                })
                .map(|(item, _)| item.id.clone());
            match victim {
                Some(victim) => self.remove_item(target_id, &victim),
                None => return,
            }
        }
    }

    /// Publishes the target as it is now (with its pending count).
    fn publish_target(&mut self, id: &str) {
        let Some(target) = self.targets.get_mut(id) else { return };
        target.view.pending = target.items.values().filter(|(item, _)| item.is_pending()).count();
        let text = serde_json::to_string(&json!({"type": "target", "target": target.view})).expect("serialises");
        self.feed.push((), text);
    }
}

/// A time of a target's clock on this daemon's.
fn shift(time: u64, skew: i64) -> u64 {
    clamp(time).saturating_add(skew).max(0) as u64
}

fn clamp(time: u64) -> i64 {
    time.min(i64::MAX as u64) as i64
}

pub(crate) fn item_id(target: &str, task_id: &str, request_id: &str) -> String {
    format!("{target}/{task_id}/{request_id}")
}

/// A record as the inbox keeps it, or `None` when its ids are unusable. Everything a peer
/// sends is cut to a sensible length.
fn sanitize(mut record: PermissionRecord) -> Option<PermissionRecord> {
    let id_ok = |id: &str| (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
    if !id_ok(&record.task_id) || !id_ok(&record.request_id) {
        return None;
    }
    let cut = |text: &mut String, max: usize| {
        if text.chars().count() > max {
            *text = text.chars().take(max).collect::<String>() + "…";
        }
    };
    cut(&mut record.prompt, crate::tasks::api::PROMPT_PREVIEW);
    cut(&mut record.cwd, 4096);
    cut(&mut record.tool_name, 256);
    cut(&mut record.description, 4096);
    for text in [&mut record.decided_by, &mut record.decided_via].into_iter().flatten() {
        cut(text, 256);
    }
    if let Some(message) = record.message.as_mut() {
        cut(message, 4096);
    }
    let (tool_input, truncated) = bounded_tool_input(&record.tool_input);
    record.tool_input = tool_input;
    record.tool_input_truncated |= truncated;
    Some(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::api::Agent;

    fn record(task: &str, request: &str, state: ApprovalState, at: u64) -> PermissionRecord {
        PermissionRecord {
            task_id: task.into(),
            request_id: request.into(),
            agent: Agent::Claude,
            prompt: "p".into(),
            cwd: "/".into(),
            tool_name: "Bash".into(),
            tool_input: json!({"command": "ls"}),
            tool_input_truncated: false,
            description: "d".into(),
            requested_at: at,
            state,
            decided_by: (state != ApprovalState::Pending).then(|| "owner".into()),
            decided_via: None,
            decided_at: (state != ApprovalState::Pending).then_some(at.saturating_add(1)),
            message: None,
        }
    }

    fn kinds(changes: &[Arc<Change<()>>]) -> Vec<String> {
        changes
            .iter()
            .map(|c| serde_json::from_str::<serde_json::Value>(&c.json).unwrap()["type"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn a_snapshot_replaces_what_a_target_had_and_times_follow_this_clock() {
        let mut inbox = InboxState::default();
        inbox.upsert_target("peer:b", TargetKind::Peer, "bob", 0);
        inbox.hello("peer:b", 1_000, 1_500);
        inbox.record("peer:b", record("t1", "r1", ApprovalState::Pending, 900)).unwrap();
        inbox.record("peer:b", record("t1", "r2", ApprovalState::Pending, 950)).unwrap();
        assert_eq!(inbox.items()[0].record.requested_at, 1_400, "shifted by the skew");
        let reader = inbox.subscribe(None);
        inbox.reset("peer:b");
        assert!(inbox.record("peer:b", record("t1", "r2", ApprovalState::Approved, 960)).is_none(), "staged");
        assert_eq!(inbox.items().len(), 2, "nothing changes before synced");
        inbox.synced("peer:b", 2_000);
        let items = inbox.items();
        assert_eq!(items.len(), 1, "{items:?}");
        assert_eq!((items[0].id.as_str(), items[0].record.state), ("peer:b/t1/r2", ApprovalState::Approved));
        assert_eq!(inbox.targets()[0].state, TargetState::Live);
        let mut seen = Vec::new();
        while let Ok(change) = reader.live.try_recv() {
            seen.push(change);
        }
        assert_eq!(kinds(&seen), ["removed", "approval", "target", "target"]);
        // A stale pending record never reopens a decided request.
        inbox.record("peer:b", record("t1", "r2", ApprovalState::Pending, 960));
        assert_eq!(inbox.items()[0].record.state, ApprovalState::Approved);
    }

    #[test]
    fn a_reader_resumes_or_gets_a_snapshot() {
        let mut inbox = InboxState::default();
        inbox.upsert_target("local", TargetKind::Local, "me", 0);
        inbox.record("local", record("t", "r", ApprovalState::Pending, 1));
        let first = inbox.subscribe(None);
        let Start::Snapshot { targets, items } = first.start else { panic!("a snapshot first") };
        assert_eq!((targets.len(), items.len()), (1, 1));
        inbox.set_state("local", TargetState::Down, Some("gone".into()), 5);
        let again = inbox.subscribe(Some(&first.synced_id));
        let Start::Replay(changes) = again.start else { panic!("resumed") };
        assert_eq!(kinds(&changes), ["target"]);
        assert!(matches!(inbox.subscribe(Some("nope.1")).start, Start::Snapshot { .. }));
        inbox.upsert_target("session:w", TargetKind::Session, "w", 0);
        inbox.record("session:w", record("t", "r", ApprovalState::Pending, 1));
        inbox.set_state("session:w", TargetState::Down, Some("cut".into()), 6);
        assert_eq!(inbox.items().len(), 2, "a target that is down keeps what may still wait there");
        inbox.set_state("session:w", TargetState::Stopped, None, 7);
        assert_eq!(inbox.items().len(), 1, "a stopped session's requests are gone with its daemon");
        inbox.remove_target("local");
        inbox.remove_target("session:w");
        assert!(inbox.items().is_empty() && inbox.targets().is_empty());
    }

    #[test]
    fn each_target_is_bounded_and_hostile_records_are_cut_or_refused() {
        let mut inbox = InboxState::default();
        inbox.upsert_target("peer:x", TargetKind::Peer, "x", 0);
        for i in 0..MAX_DECIDED_PER_TARGET + 10 {
            inbox.record("peer:x", record("t", &format!("d{i}"), ApprovalState::Denied, i as u64));
        }
        for i in 0..MAX_ITEMS_PER_TARGET + 10 {
            inbox.record("peer:x", record("t", &format!("p{i}"), ApprovalState::Pending, 1_000 + i as u64));
        }
        let items = inbox.items();
        assert_eq!(items.len(), MAX_ITEMS_PER_TARGET);
        assert!(items.iter().all(Item::is_pending), "decided ones go first");
        assert_eq!(items[0].record.request_id, "p10", "then the oldest");
        let mut big = record("t", "big", ApprovalState::Pending, 5_000);
        big.tool_input = json!({"command": "x".repeat(1 << 20)});
        big.description = "d".repeat(100_000);
        let item = inbox.record("peer:x", big).unwrap();
        assert!(item.record.tool_input_truncated && item.record.tool_input.to_string().len() < 300 * 1024);
        assert!(item.record.description.len() < 5_000);
        for (task, request) in [("", "r"), ("t", ""), ("a/b", "r"), ("t", &"r".repeat(129)), ("t\n", "r")] {
            assert!(inbox.record("peer:x", record(task, request, ApprovalState::Pending, 1)).is_none());
        }
        assert!(inbox.targets.get("peer:x").unwrap().bytes <= MAX_BYTES_PER_TARGET);
        assert!(inbox.record("peer:none", record("t", "r", ApprovalState::Pending, 1)).is_none());
    }

    /// A target's feed is a peer's text: any field, any clock.
    #[test]
    fn any_record_and_any_clock_from_a_target_is_kept_cut_or_refused_without_panicking() {
        let inputs =
            crate::fuzz::inputs(&["1796390105109-8dba5cd0609a6b44", "Bash", "/tmp"], "0123456789abcdef-/", 27, 3_000);
        let mut inbox = InboxState::default();
        inbox.upsert_target("peer:f", TargetKind::Peer, "f", 0);
        let reader = inbox.subscribe(None);
        let mut rng = crate::fuzz::Rng::new(28);
        for (i, text) in inputs.iter().enumerate() {
            let clock = [0, 1, u64::MAX, i64::MAX as u64, rng.next()][i % 5];
            inbox.hello("peer:f", clock, [0, u64::MAX, 1_796_390_105_109][i % 3]);
            let mut r = record(text, &format!("r{i}"), ApprovalState::Pending, clock);
            if i % 3 == 0 {
                r = record("t", text, ApprovalState::Denied, rng.next());
            }
            r.tool_name = text.clone();
            r.description = text.repeat(i % 7);
            r.decided_by = Some(text.clone());
            r.tool_input = json!({"command": text});
            if let Some(item) = inbox.record("peer:f", r) {
                assert!(!item.record.task_id.contains('/') && item.record.task_id.len() <= 128, "{item:?}");
                assert!(!item.record.request_id.contains('/') && item.record.request_id.len() <= 128, "{item:?}");
                assert_eq!(item.id, item_id("peer:f", &item.record.task_id, &item.record.request_id));
            }
            if i % 500 == 0 {
                inbox.reset("peer:f");
            }
            if i % 500 == 250 {
                inbox.synced("peer:f", clock);
            }
            while let Ok(change) = reader.live.try_recv() {
                serde_json::from_str::<serde_json::Value>(&change.json).expect("changes are JSON");
            }
        }
        let target = inbox.targets.get("peer:f").unwrap();
        assert!(target.items.len() <= MAX_ITEMS_PER_TARGET && target.bytes <= MAX_BYTES_PER_TARGET);
    }
}
