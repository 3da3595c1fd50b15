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
pub mod state;
mod watch;

use std::sync::{Arc, Mutex};

use crate::config::Config;
use crate::paths::Paths;
use crate::peers::Registry;
use crate::tasks::Tasks;

pub use decide::{DecideError, Decision};
pub use state::{InboxState, Item, Reader, Start, TargetKind, TargetState, TargetView};
pub use watch::run;

/// The inbox; a cheap-clone handle.
#[derive(Clone)]
pub struct Inbox {
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
}

impl Inbox {
    pub fn new(tasks: Tasks, paths: Arc<Paths>, config: Arc<Config>, registry: Registry, hostname: String) -> Inbox {
        let inbox = Inbox {
            shared: Arc::new(Shared {
                state: Mutex::new(InboxState::default()),
                tasks,
                paths,
                config,
                registry,
                hostname: hostname.clone(),
            }),
        };
        inbox.with(|s| s.upsert_target("local", TargetKind::Local, &hostname, crate::clock::now_ms()));
        inbox
    }

    /// Every request gathered (pending first) and every target.
    pub fn list(&self) -> (Vec<Item>, Vec<TargetView>) {
        self.with(|s| (s.items(), s.targets()))
    }

    /// A reader of the changes, resumed after `last_event_id` when possible.
    pub fn subscribe(&self, last_event_id: Option<&str>) -> Reader {
        self.with(|s| s.subscribe(last_event_id))
    }

    /// Ends every reader (the daemon stops).
    pub fn close(&self) {
        self.with(InboxState::close);
    }

    pub fn hostname(&self) -> &str {
        &self.shared.hostname
    }

    fn with<R>(&self, f: impl FnOnce(&mut InboxState) -> R) -> R {
        f(&mut self.shared.state.lock().expect("inbox lock"))
    }

    fn config(&self) -> Config {
        Config::load(&self.shared.paths).unwrap_or_else(|_| (*self.shared.config).clone())
    }
}
