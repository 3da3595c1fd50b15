//! The dashboard's aggregate of this machine: the daemon serving it and every local session,
//! each asked for its `/api/v1/status` with its own key, all at once, with a short timeout.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::targets;
use crate::paths::Paths;
use crate::sessions::{self, LocalSession};

/// How long a session's status may take before it counts as unreachable.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// One local session in the overview.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionView {
    pub name: String,
    /// The dashboard target naming it: `session:<name>`.
    pub target: String,
    pub hostname: String,
    pub port: Option<u16>,
    pub url: Option<String>,
    pub pid: Option<u32>,
    /// `running`, `stopped` or `unreachable` (its daemon holds the lock but does not answer).
    pub state: &'static str,
    /// Its `/api/v1/status` answer, when running.
    pub status: Option<Value>,
    pub error: Option<String>,
}

/// Every session of `home` with its status, in name order.
pub(crate) async fn sessions(main: &Paths) -> Vec<SessionView> {
    let found = {
        let main = main.clone();
        blocking::unblock(move || sessions::local_sessions(&main)).await
    };
    let probes: Vec<smol::Task<SessionView>> = found.into_iter().map(|s| smol::spawn(probe(s))).collect();
    let mut views = Vec::with_capacity(probes.len());
    for probe in probes {
        views.push(probe.await);
    }
    views
}

async fn probe(session: LocalSession) -> SessionView {
    let mut view = SessionView {
        name: session.name.to_string(),
        target: format!("session:{}", session.name),
        hostname: session.hostname(),
        port: session.running.as_ref().map(|r| r.port).or(session.config.as_ref().map(|c| c.server.port)),
        url: session.running.as_ref().map(|r| r.url.clone()),
        pid: session.running.as_ref().map(|r| r.pid),
        state: "stopped",
        status: None,
        error: None,
    };
    if session.running.is_none() {
        return view;
    }
    let reach = match targets::reach_session(&session) {
        Ok(reach) => reach,
        Err(e) => {
            view.state = "unreachable";
            view.error = Some(e.to_string());
            return view;
        }
    };
    let client = crate::peer::Client::pinned(&reach.base, Some(reach.key), reach.pin).with_timeout(PROBE_TIMEOUT);
    match client.get::<Value>("/api/v1/status").await {
        Ok(status) => {
            if let Some(hostname) = status["hostname"].as_str() {
                view.hostname = hostname.to_string();
            }
            view.state = "running";
            view.status = Some(status);
        }
        Err(e) => {
            view.state = "unreachable";
            view.error = Some(e.to_string());
        }
    }
    view
}
