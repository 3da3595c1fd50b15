//! The approval inbox: the pending tool-permission requests of AI tasks on this daemon, its
//! local sessions and every registry peer it holds credentials for, in one list a human answers
//! (`/api/v1/approvals`, `loopsy approvals`, the dashboard's Approvals view).
//!
//! Each target publishes its own requests on `GET /api/v1/ai-tasks/approvals/stream` (only the
//! tasks the caller may see: a peer sees the tasks its key dispatched there). `watch` follows
//! every target's feed: this daemon's in-process, the others over SSE with the credentials the
//! dashboard would use, resuming with `Last-Event-ID` after a cut and backing off while a target
//! is down. `state` keeps what was gathered (bounded per target) and the feed of changes this
//! daemon serves. `decide` forwards a decision to the target that holds the request: that
//! daemon decides exactly once (a second decision is a 409 naming the first), so two inboxes
//! cannot both win.
//!
//! No tide here; the routes are `daemon/routes/approvals.rs`.

mod decide;
pub(crate) mod state;
mod watch;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::paths::Paths;
use crate::peers::Registry;
use crate::tasks::Tasks;

pub(crate) use decide::{DecideError, Decision};
pub(crate) use state::{InboxState, Item, Reader, Start, TargetKind, TargetState, TargetView};
pub(crate) use watch::run;

/// The inbox; a cheap-clone handle.
#[derive(Clone)]
pub(crate) struct Inbox {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<InboxState>,
    /// This daemon's tasks (the `local` target, followed in-process).
    tasks: Tasks,
    /// Where the sessions are, and the config on disk (pairing adds keys while we run).
    paths: Arc<Paths>,
    /// The config as loaded, when the one on disk cannot be read.
    config: Arc<Config>,
    registry: Registry,
    /// This daemon's hostname, named in the decisions it forwards.
    hostname: String,
    /// When someone last asked for the inbox: it follows the other daemons only while it is
    /// used, so an idle fleet keeps no feeds open and reads no disk for it.
    wanted: Mutex<Option<Instant>>,
    /// Wakes the watcher when the inbox is wanted again.
    wake: (smol::channel::Sender<()>, smol::channel::Receiver<()>),
}

/// How long the inbox keeps following the other daemons after it was last asked for (or its
/// last reader left).
pub(crate) const KEEP_FOLLOWING: Duration = Duration::from_secs(600);

impl Inbox {
    pub(crate) fn new(
        tasks: Tasks,
        paths: Arc<Paths>,
        config: Arc<Config>,
        registry: Registry,
        hostname: String,
    ) -> Inbox {
        let inbox = Inbox {
            shared: Arc::new(Shared {
                state: Mutex::new(InboxState::default()),
                tasks,
                paths,
                config,
                registry,
                hostname: hostname.clone(),
                wanted: Mutex::new(None),
                wake: smol::channel::bounded(1),
            }),
        };
        inbox.with(|s| s.upsert_target("local", TargetKind::Local, &hostname, crate::clock::now_ms()));
        inbox
    }

    /// Every request gathered (pending first) and every target.
    pub(crate) fn list(&self) -> (Vec<Item>, Vec<TargetView>) {
        self.want();
        self.with(|s| (s.items(), s.targets()))
    }

    /// A reader of the changes, resumed after `last_event_id` when possible.
    pub(crate) fn subscribe(&self, last_event_id: Option<&str>) -> Reader {
        self.want();
        self.with(|s| s.subscribe(last_event_id))
    }

    /// Someone asks for the inbox: follow the other daemons (again) for [`KEEP_FOLLOWING`].
    pub(crate) fn want(&self) {
        *self.shared.wanted.lock().expect("inbox lock") = Some(Instant::now());
        let _ = self.shared.wake.0.try_send(());
    }

    /// Whether the inbox is used: asked for within `keep`, or read by a stream now (which also
    /// counts as asked for).
    fn in_use(&self, keep: Duration) -> bool {
        if self.with(InboxState::has_readers) {
            *self.shared.wanted.lock().expect("inbox lock") = Some(Instant::now());
            return true;
        }
        self.shared.wanted.lock().expect("inbox lock").is_some_and(|at| at.elapsed() < keep)
    }

    /// Until the inbox is wanted again.
    async fn wanted_again(&self) {
        let _ = self.shared.wake.1.recv().await;
    }

    /// Ends every reader (the daemon stops).
    pub(crate) fn close(&self) {
        self.with(InboxState::close);
    }

    pub(crate) fn hostname(&self) -> &str {
        &self.shared.hostname
    }

    fn with<R>(&self, f: impl FnOnce(&mut InboxState) -> R) -> R {
        f(&mut self.shared.state.lock().expect("inbox lock"))
    }

    fn config(&self) -> Config {
        Config::load(&self.shared.paths).unwrap_or_else(|_| (*self.shared.config).clone())
    }
}
