//! Wire types of the execution routes (§2.5): what 1.0.21 clients send and parse, plus the
//! members this implementation adds (`signal`, `timedOut`, `truncated`, …). Shared by the
//! daemon's routes and the `loopsy exec` CLI.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The body of `POST /execute` and `POST /execute/stream`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ExecRequest {
    pub command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// Milliseconds; 1.0.21 clients may send fractions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// Accepted and ignored, as in 1.0.21.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
}

/// The answer of `POST /execute`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ExecResult {
    pub job_id: String,
    /// `null` when a signal ended the process.
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Milliseconds from spawn to the end.
    pub duration: u64,
    /// The process ended by a signal (timeout, cancel, or from outside).
    pub killed: bool,
    /// `SIGTERM`, `SIGKILL`, … when `killed`.
    pub signal: Option<String>,
    #[serde(default)]
    pub timed_out: bool,
    #[serde(default)]
    pub cancelled: bool,
    /// Either stream hit `execution.maxOutputBytes`.
    #[serde(default)]
    pub truncated: bool,
    #[serde(default)]
    pub stdout_truncated: bool,
    #[serde(default)]
    pub stderr_truncated: bool,
}

/// One running job in `GET /execute/jobs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JobEntry {
    pub job_id: String,
    pub command: String,
    pub args: Vec<String>,
    pub started_at: u64,
    pub from_node_id: String,
    pub pid: u32,
    /// Started through `/execute/stream`.
    #[serde(default)]
    pub streamed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct JobList {
    pub jobs: Vec<JobEntry>,
    /// Requests waiting for a place under `execution.maxConcurrent` (not in 1.0.21).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued: Option<usize>,
}

/// The answer of `DELETE /execute/:jobId`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CancelResult {
    pub success: bool,
    pub job_id: String,
}

/// The JSON of one `/execute/stream` event: `type` is `stdout`, `stderr`, `exit` or `error`.
/// For `exit`, `data` is the exit code as a string (128 + N after signal N, never 1.0.21's "0"),
/// and the members after `timestamp` say more.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StreamEvent {
    /// `stdout`, `stderr`, `exit`, `error`, or `gap` (events no longer kept, on a reattach).
    #[serde(rename = "type")]
    pub kind: String,
    pub data: String,
    pub job_id: String,
    pub timestamp: u64,
    /// The event's number in the job (from 1; the SSE `id` too): reattach after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// For `gap`: how many events from `seq` on are missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<Option<i32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub killed: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timed_out: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<u64>,
}

impl StreamEvent {
    /// A `stdout`, `stderr` or `error` event.
    pub(crate) fn text(kind: &str, data: String, job_id: &str, timestamp: u64) -> StreamEvent {
        StreamEvent {
            kind: kind.into(),
            data,
            job_id: job_id.into(),
            timestamp,
            seq: None,
            missed: None,
            exit_code: None,
            signal: None,
            killed: None,
            timed_out: None,
            cancelled: None,
            truncated: None,
            duration: None,
        }
    }

    /// The exit code a shell would report for an `exit` event: `exitCode`, else `data`.
    pub(crate) fn shell_code(&self) -> Option<i32> {
        self.exit_code.flatten().or_else(|| self.data.trim().parse().ok())
    }
}
