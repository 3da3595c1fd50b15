//! Following every target's approvals feed.
//!
//! [`run`] looks at the targets every [`RECONCILE`]: this daemon, each local session (running
//! or not) and each registry peer this node holds a key for (a peer that is one of the local
//! sessions counts once, as the session). A peer the health checker does not see online gets
//! nothing sent to it; a target whose address, key or pin changed is reconnected. Each followed
//! target has one task: this daemon's reads the task registry in-process, the others read
//! `GET /api/v1/ai-tasks/approvals/stream` with `Last-Event-ID`, backing off from 1 s to 30 s
//! (plus jitter) while they cannot, and from the start after a stream that was live.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures_lite::FutureExt;
use serde_json::Value;

use super::state::{TargetKind, TargetState};
use super::Inbox;
use crate::dashboard::targets;
use crate::peer::{Client, ClientError, Method};
use crate::peers::PeerStatus;
use crate::shutdown::Shutdown;
use crate::tasks::api::PermissionRecord;
use crate::tasks::{ApprovalStart, Dispatcher};

/// How often the set of targets is looked at.
const RECONCILE: Duration = Duration::from_secs(2);
/// How long connecting to a target's feed may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A feed silent this long (daemons send a heartbeat every 10 s) is taken as lost.
const IDLE_LIMIT: Duration = Duration::from_secs(35);
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long before a target without a feed (an older daemon) is asked again.
const UNSUPPORTED_RETRY: Duration = Duration::from_secs(300);
/// The path of every daemon's own approvals feed.
pub(super) const FEED_PATH: &str = "/api/v1/ai-tasks/approvals/stream";

/// Follows the targets until the daemon stops.
pub(crate) async fn run(inbox: Inbox, shutdown: Shutdown) {
    let local = smol::spawn(watch_local(inbox.clone(), shutdown.clone()));
    let mut running: HashMap<String, Running> = HashMap::new();
    loop {
        if !inbox.in_use(super::KEEP_FOLLOWING) {
            // Nobody asked for a while: close the feeds and wait until someone does. What was
            // gathered stays listed; each feed starts again from its target's snapshot.
            running.clear();
            let wanted = async {
                inbox.wanted_again().await;
                false
            };
            let stop = async {
                shutdown.wait().await;
                true
            };
            if wanted.or(stop).await {
                break;
            }
            continue;
        }
        let desired = {
            let inbox = inbox.clone();
            blocking::unblock(move || desired_targets(&inbox)).await
        };
        reconcile(&inbox, desired, &mut running);
        let tick = async {
            async_io::Timer::after(RECONCILE).await;
            false
        };
        let stop = async {
            shutdown.wait().await;
            true
        };
        if tick.or(stop).await {
            break;
        }
    }
    drop(running);
    drop(local);
    inbox.close();
}

/// A target the inbox should show, and how to follow it.
#[derive(Debug)]
struct Desired {
    id: String,
    kind: TargetKind,
    name: String,
    follow: Follow,
}

#[derive(Debug)]
enum Follow {
    /// Its feed, at this base URL with this key and pin.
    Remote(targets::Reach),
    /// Nothing to connect to, and why.
    Idle(TargetState, Option<String>),
}

impl Follow {
    /// What identifies a connection: a change means reconnecting.
    fn key(&self) -> Option<String> {
        match self {
            Follow::Remote(reach) => {
                let pin = reach.pin.as_ref().map(|p| p.to_string()).unwrap_or_default();
                let key = crate::random::to_hex(&sha2_digest(reach.key.as_bytes()));
                Some(format!("{}|{key}|{pin}", reach.base))
            }
            Follow::Idle(..) => None,
        }
    }
}

fn sha2_digest(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

struct Running {
    key: String,
    _task: smol::Task<()>,
}

/// The sessions and the peers with credentials, now (reads the disk: run it off the executor).
fn desired_targets(inbox: &Inbox) -> Vec<Desired> {
    let shared = &inbox.shared;
    let config = inbox.config();
    let mut desired = Vec::new();
    let mut session_ids = HashSet::new();
    for session in crate::sessions::local_sessions(&shared.paths) {
        if let Ok(id) = std::fs::read_to_string(session.paths.node_id_file()) {
            session_ids.insert(id.trim().to_string());
        }
        let follow = match session.running {
            None => Follow::Idle(TargetState::Stopped, None),
            Some(_) => match targets::reach_session(&session) {
                Ok(reach) => Follow::Remote(reach),
                Err(e) => Follow::Idle(TargetState::Down, Some(e.to_string())),
            },
        };
        desired.push(Desired {
            id: format!("session:{}", session.name),
            kind: TargetKind::Session,
            name: session.name.to_string(),
            follow,
        });
    }
    for peer in shared.registry.list() {
        if session_ids.contains(&peer.node_id) {
            continue;
        }
        if targets::credential_for(&peer, &config).0 == targets::Credential::None {
            continue;
        }
        let follow = match peer.status {
            PeerStatus::Online => match targets::reach_peer(&peer, &config) {
                Ok(reach) => Follow::Remote(reach),
                Err(e) => Follow::Idle(TargetState::Down, Some(e.to_string())),
            },
            PeerStatus::Offline => Follow::Idle(TargetState::Offline, Some("its health checks fail".into())),
            PeerStatus::Unknown => Follow::Idle(TargetState::Offline, Some("not reached yet".into())),
        };
        let name = peer.name.clone().unwrap_or_else(|| peer.hostname.clone());
        desired.push(Desired { id: format!("peer:{}", peer.node_id), kind: TargetKind::Peer, name, follow });
    }
    desired
}

fn reconcile(inbox: &Inbox, desired: Vec<Desired>, running: &mut HashMap<String, Running>) {
    let now = crate::clock::now_ms();
    let wanted: HashSet<&str> = desired.iter().map(|d| d.id.as_str()).collect();
    for id in inbox.with(|s| s.target_ids()) {
        if id != "local" && !wanted.contains(id.as_str()) {
            running.remove(&id);
            inbox.with(|s| s.remove_target(&id));
        }
    }
    running.retain(|id, _| wanted.contains(id.as_str()));
    for target in desired {
        inbox.with(|s| s.upsert_target(&target.id, target.kind, &target.name, now));
        let key = target.follow.key();
        match target.follow {
            Follow::Idle(state, why) => {
                running.remove(&target.id);
                inbox.with(|s| s.set_state(&target.id, state, why, now));
            }
            Follow::Remote(reach) => {
                let key = key.expect("a remote target has a key");
                if running.get(&target.id).is_some_and(|r| r.key == key) {
                    continue;
                }
                let task = smol::spawn(watch_remote(inbox.clone(), target.id.clone(), reach));
                running.insert(target.id, Running { key, _task: task });
            }
        }
    }
}

/// This daemon's own tasks, read in-process.
async fn watch_local(inbox: Inbox, shutdown: Shutdown) {
    let id = "local";
    let mut last: Option<String> = None;
    while !shutdown.is_triggered() {
        let stream = inbox.shared.tasks.subscribe_approvals(&Dispatcher::Owner, last.as_deref());
        let now = crate::clock::now_ms();
        inbox.with(|s| s.hello(id, now, now));
        match stream.start {
            ApprovalStart::Snapshot(records) => inbox.with(|s| {
                s.reset(id);
                for record in records {
                    s.record(id, record);
                }
            }),
            ApprovalStart::Replay(changes) => {
                for change in changes {
                    apply_change(&inbox, id, &change.json);
                }
            }
        }
        inbox.with(|s| s.synced(id, crate::clock::now_ms()));
        last = Some(stream.synced_id);
        while let Ok(change) = stream.live.recv().await {
            apply_change(&inbox, id, &change.json);
            last = Some(format!("{}.{}", stream.epoch, change.seq));
        }
        // Fell behind (resume), or the registry let readers go because the daemon stops.
        let pause = async_io::Timer::after(Duration::from_millis(100));
        pause.await;
    }
}

fn apply_change(inbox: &Inbox, target: &str, json: &str) {
    let Ok(value) = serde_json::from_str::<Value>(json) else { return };
    if let Ok(record) = serde_json::from_value::<PermissionRecord>(value["approval"].clone()) {
        inbox.with(|s| s.record(target, record));
    }
}

/// One remote target's feed, for as long as this task lives.
async fn watch_remote(inbox: Inbox, id: String, reach: targets::Reach) {
    let client = Client::pinned(&reach.base, Some(reach.key), reach.pin).with_timeout(CONNECT_TIMEOUT);
    let mut backoff = BACKOFF_FIRST;
    loop {
        inbox.with(|s| s.set_state(&id, TargetState::Connecting, None, crate::clock::now_ms()));
        let last = inbox.with(|s| s.last_event_id(&id));
        let unsupported = || {
            let why = "it has no approvals feed (an older loopsy, or loopsy 1.0.21)".to_string();
            inbox.with(|s| s.set_state(&id, TargetState::Unsupported, Some(why), crate::clock::now_ms()));
            UNSUPPORTED_RETRY
        };
        let wait = match client.open_events(Method::Get, FEED_PATH, None, last.as_deref()).await {
            Ok(stream) => {
                let mut stream = stream.with_idle_limit(IDLE_LIMIT);
                match follow(&inbox, &id, &mut stream).await {
                    Ended::NotAFeed => unsupported(),
                    Ended::Lost { why, was_live } => {
                        inbox.with(|s| s.set_state(&id, TargetState::Down, Some(why), crate::clock::now_ms()));
                        if was_live {
                            backoff = BACKOFF_FIRST;
                        }
                        backoff
                    }
                }
            }
            Err(ClientError::Remote { status: 404 | 405, .. }) => unsupported(),
            Err(e) => {
                inbox.with(|s| s.set_state(&id, TargetState::Down, Some(e.to_string()), crate::clock::now_ms()));
                backoff
            }
        };
        async_io::Timer::after(jitter(wait)).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// How one connection to a target's feed ended.
enum Ended {
    /// What answered is not an approvals feed: a 1.0.21 daemon answers this path as the event
    /// stream of a task named `approvals` (an error event, then the end).
    NotAFeed,
    /// Cut, ended or broken; `was_live` if it had caught up first.
    Lost { why: String, was_live: bool },
}

/// Applies the events of one connection until it ends.
async fn follow(inbox: &Inbox, id: &str, stream: &mut crate::peer::sse::EventStream) -> Ended {
    let mut live = false;
    let mut greeted = false;
    loop {
        let lost = |why: String| Ended::Lost { why, was_live: live };
        let event = match stream.next().await {
            Ok(Some(event)) => event,
            Ok(None) if !greeted => return Ended::NotAFeed,
            Ok(None) => return lost("its feed ended".into()),
            Err(e) => return lost(e.to_string()),
        };
        let Ok(message) = serde_json::from_str::<Value>(&event.data) else {
            return lost("its feed sent something that is not JSON".into());
        };
        let now = crate::clock::now_ms();
        if !greeted && message["type"] != "hello" {
            return Ended::NotAFeed;
        }
        greeted = true;
        match message["type"].as_str() {
            Some("hello") => {
                let remote_now = message["now"].as_u64().unwrap_or(now);
                inbox.with(|s| s.hello(id, remote_now, now));
            }
            Some("reset") => inbox.with(|s| s.reset(id)),
            Some("approval") => {
                if let Ok(record) = serde_json::from_value::<PermissionRecord>(message["approval"].clone()) {
                    inbox.with(|s| s.record(id, record));
                }
            }
            Some("synced") => {
                live = true;
                inbox.with(|s| s.synced(id, now));
            }
            _ => {}
        }
        if let Some(event_id) = &event.id {
            inbox.with(|s| s.seen(id, event_id));
        }
    }
}

/// `wait` plus up to a quarter more, so targets that went down together do not come back in step.
fn jitter(wait: Duration) -> Duration {
    let bytes = crate::random::bytes(2);
    let fraction = u16::from_le_bytes([bytes[0], bytes[1]]) as f64 / u16::MAX as f64;
    wait + wait.mul_f64(fraction / 4.0)
}
