//! Wire types of `/api/v1/ai-tasks` (PROTOCOL.md §2.8): the dispatch request, the task info,
//! approvals and events, with 1.0.21's member names. The CLI decodes the same types.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Which agent CLI runs a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Agent {
    Claude,
    Gemini,
    Codex,
}

impl Agent {
    pub const ALL: [Agent; 3] = [Agent::Claude, Agent::Gemini, Agent::Codex];

    /// The executable looked up on the daemon's PATH.
    pub fn program(self) -> &'static str {
        match self {
            Agent::Claude => "claude",
            Agent::Gemini => "gemini",
            Agent::Codex => "codex",
        }
    }
}

/// `agent` in a dispatch request: one agent, or the first one installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentChoice {
    Claude,
    Gemini,
    Codex,
    #[default]
    Auto,
}

impl AgentChoice {
    pub fn fixed(self) -> Option<Agent> {
        match self {
            AgentChoice::Claude => Some(Agent::Claude),
            AgentChoice::Gemini => Some(Agent::Gemini),
            AgentChoice::Codex => Some(Agent::Codex),
            AgentChoice::Auto => None,
        }
    }
}

/// `permissionMode`: 1.0.21's four values plus Claude Code's `plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PermissionMode {
    #[default]
    Default,
    AcceptEdits,
    BypassPermissions,
    DontAsk,
    Plan,
}

impl PermissionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PermissionMode::Default => "default",
            PermissionMode::AcceptEdits => "acceptEdits",
            PermissionMode::BypassPermissions => "bypassPermissions",
            PermissionMode::DontAsk => "dontAsk",
            PermissionMode::Plan => "plan",
        }
    }
}

/// The body of `POST /api/v1/ai-tasks`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DispatchRequest {
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default)]
    pub agent: AgentChoice,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default)]
    pub permission_mode: PermissionMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_budget_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_tools: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disallowed_tools: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_session_id: Option<String>,
    /// Run the agent with its stdout and stderr on a pseudo-terminal (stdin stays a pipe).
    #[serde(default)]
    pub pty: bool,
}

/// A task's state; `pending` exists on the wire but is never used (a task runs from creation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Running,
    WaitingApproval,
    Completed,
    Failed,
    Cancelled,
}

impl Status {
    pub fn is_final(self) -> bool {
        matches!(self, Status::Completed | Status::Failed | Status::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::WaitingApproval => "waiting_approval",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }
}

/// A permission request waiting for a human.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    pub tool_name: String,
    pub tool_input: Value,
    pub request_id: String,
    pub timestamp: u64,
    pub description: String,
}

/// The task info object of §2.8.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskInfo {
    pub task_id: String,
    pub prompt: String,
    pub status: Status,
    pub started_at: u64,
    pub updated_at: u64,
    pub from_node_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub agent: Agent,
    pub permission_mode: PermissionMode,
    pub cwd: String,
    #[serde(default)]
    pub pty: bool,
    /// The oldest request still waiting (1.0.21 had only one at a time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_approval: Option<Approval>,
    /// Every request still waiting, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_approvals: Vec<Approval>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Present (maybe null) once the agent exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<Option<i32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The kinds of event of §8.6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    Text,
    Thinking,
    ToolUse,
    ToolResult,
    PermissionRequest,
    Status,
    Error,
    Result,
    Exit,
    System,
}

/// One event of a task; `seq` increases by one per event of the task, from 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: EventType,
    pub task_id: String,
    pub timestamp: u64,
    pub data: Value,
    #[serde(default)]
    pub seq: u64,
}

/// The body of `POST /api/v1/ai-tasks/:taskId/approve`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApproveRequest {
    pub request_id: String,
    pub approved: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `GET /api/v1/ai-tasks`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskList {
    pub tasks: Vec<TaskInfo>,
}

/// `GET /api/v1/ai-tasks/:taskId/events`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventList {
    pub events: Vec<Event>,
    pub count: usize,
}
