//! Wire types of the lock routes (`/api/v1/locks`), shared by the daemon's routes, `loopsy lock`
//! and the MCP lock tools. Times are Unix milliseconds, durations seconds.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Grant;

/// A held lock: the answer of acquire, renew and `GET /locks/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LockInfo {
    pub name: String,
    pub holder: String,
    /// The fencing token: larger for every grant of this name.
    pub token: u64,
    pub expires_at: u64,
    pub acquired_at: u64,
    /// Seconds the grant lasts from each acquire or renewal.
    pub ttl: f64,
}

impl From<&Grant> for LockInfo {
    fn from(grant: &Grant) -> LockInfo {
        LockInfo {
            name: grant.name.clone(),
            holder: grant.holder.clone(),
            token: grant.token,
            expires_at: grant.expires_at,
            acquired_at: grant.acquired_at,
            ttl: grant.ttl_ms as f64 / 1000.0,
        }
    }
}

/// `GET /api/v1/locks`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LockList {
    pub locks: Vec<LockInfo>,
}

/// The answer of `DELETE /api/v1/locks/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Released {
    pub released: bool,
    pub name: String,
    pub token: u64,
}

/// The body of `POST /api/v1/locks/{name}`, `.../renew` and `DELETE /api/v1/locks/{name}`.
/// Everything is optional here so a missing field gets an error that names it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct LockRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// Seconds (required to acquire, optional to renew).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Value>,
    /// Seconds to wait while another holder has the lock (acquire only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<Value>,
}

/// `ifFence` of a context write: the write happens only while this grant is live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Fence {
    pub lock: String,
    pub token: u64,
}
