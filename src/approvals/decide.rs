//! Forwarding a decision to the daemon that holds the request.
//!
//! This daemon's tasks are decided in-process; a session or a peer gets
//! `POST /api/v1/ai-tasks/<task>/approve` with the credentials the dashboard would use, a
//! `decisionId` made for this one decision and `decidedVia` naming this inbox. That daemon
//! decides exactly once: a lost answer is retried with the same `decisionId` (and answered
//! 200 again, not 409), while any other second decision gets the first one back as a 409.

use std::time::Duration;

use serde_json::{json, Value};

use super::state::{Item, TargetKind};
use super::Inbox;
use crate::dashboard::targets;
use crate::peer::{Client, ClientError, Method};
use crate::percent;
use crate::tasks::api::PermissionRecord;
use crate::tasks::{ApproveError, Verdict};

/// How long one attempt to deliver a decision may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts to deliver a decision whose answer was lost (same `decisionId` each time).
const ATTEMPTS: usize = 3;

/// A decision the owner takes in the inbox.
#[derive(Debug, Clone)]
pub(crate) struct Decision {
    /// `local`, `session:<name>` or `peer:<nodeId>`.
    pub target: String,
    pub task_id: String,
    pub request_id: String,
    pub approved: bool,
    pub message: Option<String>,
    /// How the owner reached the inbox (`dashboard`, or none for the API and the CLI).
    pub channel: Option<String>,
}

/// Why a decision was not taken.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecideError {
    #[error("{0}")]
    UnknownTarget(String),
    /// Cannot reach the target (it may or may not have the decision when the answer was lost).
    #[error("{0}")]
    Unreachable(String),
    /// The target has no such open request (nor a decided one).
    #[error("{0}")]
    NoSuchRequest(String),
    /// Decided before (or expired, or withdrawn): the first decision.
    #[error("{message}")]
    Decided { message: String, item: Option<Box<Item>> },
    /// The target refused or failed otherwise.
    #[error("{0}")]
    Refused(String),
}

impl Inbox {
    /// Delivers `decision` to its target; returns the request as decided.
    pub(crate) async fn decide(&self, decision: Decision) -> Result<Item, DecideError> {
        let via = match &decision.channel {
            Some(channel) => format!("the approvals inbox on {} ({channel})", self.hostname()),
            None => format!("the approvals inbox on {}", self.hostname()),
        };
        if decision.target == "local" {
            return self.decide_here(decision, via);
        }
        let reach = self.reach(&decision.target).await?;
        let client = Client::pinned(&reach.base, Some(reach.key), reach.pin).with_timeout(ATTEMPT_TIMEOUT);
        let path = format!("/api/v1/ai-tasks/{}/approve", percent::encode(&decision.task_id));
        let mut body = json!({
            "requestId": decision.request_id, "approved": decision.approved,
            "decisionId": crate::random::hex(16), "decidedVia": via,
        });
        if let Some(message) = &decision.message {
            body["message"] = message.clone().into();
        }
        let bytes = serde_json::to_vec(&body).expect("JSON serialises");
        let mut attempt = 0;
        let (status, answer) = loop {
            attempt += 1;
            match client.forward(Method::Post, &path, Some(bytes.clone())).await {
                Ok(answer) => break answer,
                Err(e @ (ClientError::Unreachable { .. } | ClientError::Timeout { .. })) if attempt < ATTEMPTS => {
                    log::info!("approvals: delivering a decision to {}: {e}; retrying", decision.target);
                    async_io::Timer::after(Duration::from_millis(500 * attempt as u64)).await;
                }
                Err(e) => {
                    return Err(DecideError::Unreachable(format!(
                        "cannot deliver the decision to {}: {e}; it may not have arrived (deciding again is safe: \
                         a decision that did arrive is answered as such)",
                        decision.target
                    )))
                }
            }
        };
        let answer: Value = serde_json::from_slice(&answer).unwrap_or_default();
        let record = serde_json::from_value::<PermissionRecord>(answer["approval"].clone()).ok();
        let item = record.map(|r| self.listed(&decision.target, r));
        let message = answer["error"].as_str().unwrap_or_default().to_string();
        match status {
            200 => item.ok_or_else(|| {
                DecideError::Refused(format!("{} took the decision but did not say how it stands", decision.target))
            }),
            409 => Err(DecideError::Decided {
                message: format!("{}: {message}", decision.target),
                item: item.map(Box::new),
            }),
            400 | 404 => Err(DecideError::NoSuchRequest(format!("{}: {message}", decision.target))),
            status => Err(DecideError::Refused(format!("{} answered {status}: {message}", decision.target))),
        }
    }

    fn decide_here(&self, decision: Decision, via: String) -> Result<Item, DecideError> {
        let verdict = Verdict {
            approved: decision.approved,
            message: decision.message,
            by: "owner".into(),
            via: Some(via),
            decision_id: None,
        };
        let target = decision.target.as_str();
        match self.shared.tasks.approve(&decision.task_id, &decision.request_id, verdict) {
            Ok(settled) => Ok(self.listed(target, settled.record)),
            Err(ApproveError::NoPending) => Err(DecideError::NoSuchRequest(format!(
                "{target}: task {} has no request {}",
                decision.task_id, decision.request_id
            ))),
            Err(ApproveError::Decided(record)) => {
                let message = format!("{target}: {}", crate::tasks::decided_text(&record));
                Err(DecideError::Decided { message, item: Some(Box::new(self.listed(target, *record))) })
            }
        }
    }

    /// `record` of `target` applied to the inbox, as listed (or as it would be, were the
    /// target not in the inbox now).
    fn listed(&self, target: &str, record: PermissionRecord) -> Item {
        let listed = self.with(|s| s.record(target, record.clone()));
        listed.unwrap_or_else(|| {
            let kind = match target.split(':').next() {
                Some("session") => TargetKind::Session,
                Some("peer") => TargetKind::Peer,
                _ => TargetKind::Local,
            };
            Item {
                id: super::state::item_id(target, &record.task_id, &record.request_id),
                target: target.to_string(),
                target_kind: kind,
                target_name: target.to_string(),
                record,
            }
        })
    }

    /// The base URL, key and pin of a session or peer target.
    async fn reach(&self, target: &str) -> Result<targets::Reach, DecideError> {
        let unknown = || DecideError::UnknownTarget(format!("no target '{target}' in the approvals inbox"));
        match targets::TargetId::parse(target).map_err(|_| unknown())? {
            targets::TargetId::Local => Err(unknown()),
            targets::TargetId::Session(name) => {
                let main = (*self.shared.paths).clone();
                let found = blocking::unblock(move || crate::sessions::local_session(&main, &name))
                    .await
                    .ok_or_else(unknown)?;
                targets::reach_session(&found).map_err(|e| DecideError::Unreachable(e.to_string()))
            }
            targets::TargetId::Peer(node_id) => {
                let peer = self.shared.registry.get(&node_id).ok_or_else(unknown)?;
                let config = {
                    let inbox = self.clone();
                    blocking::unblock(move || inbox.config()).await
                };
                targets::reach_peer(&peer, &config).map_err(|e| DecideError::Unreachable(e.to_string()))
            }
        }
    }
}
