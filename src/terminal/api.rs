//! The wire types of `/api/v1/terminals`, shared by the routes, `loopsy term` and the MCP
//! tools, and the JSON control frames of the attach WebSocket.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `POST /api/v1/terminals`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CreateRequest {
    /// The program; the daemon user's `$SHELL` (else `/bin/sh`) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// The working directory; the daemon user's home when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Added to the daemon's environment (loader variables refused).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Unique among running terminals; `[A-Za-z0-9._-]{1,64}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cols: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u16>,
}

/// One terminal, as listed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TerminalInfo {
    pub id: String,
    pub name: String,
    pub command: String,
    pub args: Vec<String>,
    pub cwd: String,
    /// `own`, `dashboard` or `peer:<name>`.
    pub started_by: String,
    pub created_at: u64,
    pub last_active_at: u64,
    /// `running` or `exited`.
    pub state: String,
    #[serde(default)]
    pub exit_code: Option<i32>,
    pub pid: u32,
    pub cols: u16,
    pub rows: u16,
    /// Clients attached now.
    pub clients: usize,
    #[serde(default)]
    pub title: Option<String>,
}

/// `GET /api/v1/terminals`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TerminalList {
    pub terminals: Vec<TerminalInfo>,
}

/// `POST /api/v1/terminals/:id/input`: text as typed, then named keys (`Enter`, `Ctrl-C`, …).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct InputRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
}

/// `GET /api/v1/terminals/:id/screen`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ScreenAnswer {
    pub id: String,
    /// The visible screen as text, one line per row, trailing blanks trimmed.
    pub screen: String,
    pub cols: u16,
    pub rows: u16,
    pub cursor: Cursor,
    pub state: String,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub title: Option<String>,
    /// Whether the screen contains `waitFor` (true when none was given).
    pub matched: bool,
    /// Whether the wait ended on the timeout.
    pub timed_out: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Cursor {
    pub row: u16,
    pub col: u16,
}

/// A control frame a client sends (a WebSocket text frame).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "camelCase")]
pub(crate) enum ClientControl {
    /// The client's window size changed.
    Resize { cols: u16, rows: u16 },
}

/// The smallest and largest terminal accepted, in cells.
pub(crate) const MIN_SIZE: u16 = 2;
pub(crate) const MAX_SIZE: u16 = 1000;

/// Checks a size from a request.
pub(crate) fn check_size(cols: u16, rows: u16) -> Result<(u16, u16), String> {
    if !(MIN_SIZE..=MAX_SIZE).contains(&cols) || !(MIN_SIZE..=MAX_SIZE).contains(&rows) {
        return Err(format!("a terminal size is {MIN_SIZE} to {MAX_SIZE} columns and rows, not {cols}x{rows}"));
    }
    Ok((cols, rows))
}
