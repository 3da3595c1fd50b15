//! Wire types of `/api/v1/ai-tasks` (PROTOCOL.md §2.8): the dispatch request, the task info,
//! approvals and events, with 1.0.21's member names. The CLI decodes the same types.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Which agent CLI runs a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Agent {
    Claude,
    Gemini,
    Codex,
}

impl Agent {
    pub(crate) const ALL: [Agent; 3] = [Agent::Claude, Agent::Gemini, Agent::Codex];

    /// The executable looked up on the daemon's PATH.
    pub(crate) fn program(self) -> &'static str {
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
pub(crate) enum AgentChoice {
    Claude,
    Gemini,
    Codex,
    #[default]
    Auto,
}

impl AgentChoice {
    pub(crate) fn fixed(self) -> Option<Agent> {
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
pub(crate) enum PermissionMode {
    #[default]
    Default,
    AcceptEdits,
    BypassPermissions,
    DontAsk,
    Plan,
}

impl PermissionMode {
    pub(crate) fn as_str(self) -> &'static str {
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
pub(crate) struct DispatchRequest {
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
pub(crate) enum Status {
    Pending,
    Running,
    WaitingApproval,
    Completed,
    Failed,
    Cancelled,
}

impl Status {
    pub(crate) fn is_final(self) -> bool {
        matches!(self, Status::Completed | Status::Failed | Status::Cancelled)
    }

    pub(crate) fn as_str(self) -> &'static str {
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
pub(crate) struct Approval {
    pub tool_name: String,
    pub tool_input: Value,
    pub request_id: String,
    pub timestamp: u64,
    pub description: String,
}

/// What became of a permission request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ApprovalState {
    /// Waiting for a human.
    Pending,
    Approved,
    Denied,
    /// Nobody answered within `aiTasks.approvalTimeout`: the agent was told no.
    Expired,
    /// Gone unanswered: the agent withdrew it, or the task was cancelled or ended.
    Withdrawn,
}

impl ApprovalState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Denied => "denied",
            ApprovalState::Expired => "expired",
            ApprovalState::Withdrawn => "withdrawn",
        }
    }
}

/// One permission request of a task with what became of it: what the task's daemon publishes
/// on `/api/v1/ai-tasks/approvals` and what the approval inbox gathers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PermissionRecord {
    pub task_id: String,
    pub request_id: String,
    pub agent: Agent,
    /// The task's prompt, cut to [`PROMPT_PREVIEW`] characters.
    pub prompt: String,
    pub cwd: String,
    pub tool_name: String,
    pub tool_input: Value,
    /// Whether `toolInput` was too large and is shown cut (as a string).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tool_input_truncated: bool,
    pub description: String,
    /// Unix milliseconds on the clock of the task's daemon.
    pub requested_at: u64,
    pub state: ApprovalState,
    /// Who decided: `owner`, `dashboard`, a peer's key (`paired:<name>`, `peer:<name>`),
    /// `timeout` (expired), or what withdrew it (`agent`, `cancel`, `exit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// What the decider said it was (an inbox forwarding the decision names itself here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_via: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<u64>,
    /// The note sent to the agent with the decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Characters of a task's prompt shown with its permission requests.
pub(crate) const PROMPT_PREVIEW: usize = 200;
/// A tool input larger than this (as JSON) is shown cut.
pub(crate) const TOOL_INPUT_LIMIT: usize = 256 * 1024;

/// `tool_input` as it is shown with a request: itself, or when larger than
/// [`TOOL_INPUT_LIMIT`] its JSON text cut there (and `true`).
pub(crate) fn bounded_tool_input(tool_input: &Value) -> (Value, bool) {
    let text = tool_input.to_string();
    if text.len() <= TOOL_INPUT_LIMIT {
        return (tool_input.clone(), false);
    }
    let mut end = TOOL_INPUT_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (Value::String(format!("{}… [cut, {} bytes in all]", &text[..end], text.len())), true)
}

/// The task info object of §2.8.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TaskInfo {
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
pub(crate) enum EventType {
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
pub(crate) struct Event {
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
pub(crate) struct ApproveRequest {
    pub request_id: String,
    pub approved: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Chosen by the sender for this one decision: the same decision sent again with the same
    /// id (a retry after a lost answer) is answered 200 again instead of 409.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_id: Option<String>,
    /// What the decider is (recorded as `decidedVia`), e.g. the inbox that forwards it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_via: Option<String>,
}

/// `GET /api/v1/ai-tasks/approvals`: the caller's open requests and the recently decided ones.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PermissionList {
    pub approvals: Vec<PermissionRecord>,
}

/// `GET /api/v1/ai-tasks`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TaskList {
    pub tasks: Vec<TaskInfo>,
}

/// `GET /api/v1/ai-tasks/:taskId/events`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct EventList {
    pub events: Vec<Event>,
    pub count: usize,
}
