//! Wire types of the system routes (§2.1–2.3): what 1.0.21 clients parse. The daemon answers
//! with them (`daemon/routes/system.rs`); the CLI (`loopsy status`) and doctor read them, so
//! neither needs the daemon's code.

use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Health {
    pub status: String,
    pub node_id: String,
    pub uptime: u64,
    pub version: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Identity {
    pub node_id: String,
    pub hostname: String,
    pub platform: String,
    pub version: String,
    pub port: u16,
    pub capabilities: Vec<String>,
    /// Added by this implementation: which software answers (`loopsy-rs/<version>`).
    pub implementation: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Status {
    pub node_id: String,
    pub hostname: String,
    pub platform: String,
    pub version: String,
    pub uptime: u64,
    pub peers: PeerCounts,
    pub jobs: JobCounts,
    pub context: ContextCounts,
    pub implementation: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct PeerCounts {
    pub total: usize,
    pub online: usize,
    pub offline: usize,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct JobCounts {
    pub active: usize,
    pub total: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct ContextCounts {
    pub entries: usize,
}
