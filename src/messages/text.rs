//! The human (and agent) texts of messaging results: 1.0.21's MCP result texts (PROTOCOL.md
//! §7.3, items 13–16), with the delivery state added. Shared by the MCP tools and the CLI.

use super::api::{Inbox, Sent, StatusReport};

/// `loopsy_send_message`: 1.0.21's five lines, then the delivery state.
pub(crate) fn sent(sent: &Sent) -> String {
    format!(
        "Message sent!\nID: {}\nTo: {} ({})\nType: {}\nInbox key: {}\n{}",
        sent.id,
        sent.to,
        sent.endpoint,
        sent.kind.as_str(),
        sent.key,
        delivery(sent, "the daemon retries until it is delivered or expires (1 h)")
    )
}

/// `loopsy_check_inbox`.
pub(crate) fn inbox(inbox: &Inbox) -> String {
    if inbox.messages.is_empty() {
        return "No new messages in inbox.".into();
    }
    let blocks: Vec<String> = inbox
        .messages
        .iter()
        .map(|m| {
            let e = &m.envelope;
            format!("[{}] From: {} | ID: {}\n  Body: {}\n  Key: {}", e.kind.as_str(), e.from, e.id, e.body, m.key)
        })
        .collect();
    format!("{} message(s):\n\n{}", inbox.messages.len(), blocks.join("\n\n"))
}

/// `loopsy_ack_message`.
pub(crate) fn acked(sent: &Sent) -> String {
    let mut text = format!("ACK sent for message {} and inbox entry cleaned up.", sent.id);
    if sent.state != "delivered" {
        text.push('\n');
        text.push_str(&delivery(sent, &format!("the ack is retried until {} can be reached", sent.to)));
    }
    text
}

/// `loopsy_check_ack`: 1.0.21's line about the latest ack, then one line per message.
pub(crate) fn status(report: &StatusReport, peer: &str) -> String {
    let mut text = match &report.last_ack {
        Some(id) => format!("Last ACK from {peer}: {id}"),
        None => format!("No ACK received from {peer} yet."),
    };
    if report.messages.is_empty() {
        text.push_str(&format!("\n\nNo messages to {} on record.", report.hostname));
        return text;
    }
    text.push_str(&format!("\n\nMessages to {}:", report.hostname));
    for message in &report.messages {
        let mut state = message.state.clone();
        if message.state == "queued" || message.state == "expired" {
            state.push_str(&format!(" ({} attempt(s)", message.attempts));
            if let Some(error) = &message.last_error {
                state.push_str(&format!("; last error: {error}"));
            }
            state.push(')');
        }
        let acked = if message.acked { "acknowledged" } else { "not acknowledged" };
        text.push_str(&format!("\n  {} [{}] {state}, {acked}", message.id, message.kind.as_str()));
    }
    text
}

fn delivery(sent: &Sent, retry: &str) -> String {
    match &sent.error {
        None if sent.state == "delivered" => "Delivery: delivered".into(),
        Some(error) => format!("Delivery: {} ({error}); {retry}", sent.state),
        None => format!("Delivery: {}; {retry}", sent.state),
    }
}

#[cfg(test)]
mod tests {
    use super::super::api::{InboxMessage, MessageStatus};
    use super::super::envelope::{Envelope, MessageType};
    use super::*;

    fn sent_as(state: &str, error: Option<&str>) -> Sent {
        Sent {
            id: "1-vm-0001".into(),
            key: "inbox:leo:1-vm-0001".into(),
            to: "leo".into(),
            endpoint: "10.0.0.2:19532".into(),
            kind: MessageType::Request,
            state: state.into(),
            error: error.map(String::from),
        }
    }

    #[test]
    fn texts_keep_1_0_21_lines_and_add_the_delivery_state() {
        assert_eq!(
            sent(&sent_as("delivered", None)),
            "Message sent!\nID: 1-vm-0001\nTo: leo (10.0.0.2:19532)\nType: request\nInbox key: inbox:leo:1-vm-0001\nDelivery: delivered"
        );
        assert!(sent(&sent_as("queued", Some("cannot reach")))
            .ends_with("Delivery: queued (cannot reach); the daemon retries until it is delivered or expires (1 h)"));
        assert_eq!(acked(&sent_as("delivered", None)), "ACK sent for message 1-vm-0001 and inbox entry cleaned up.");
        assert!(acked(&sent_as("queued", Some("down")))
            .contains("\nDelivery: queued (down); the ack is retried until leo can be reached"));
    }

    #[test]
    fn inbox_texts() {
        assert_eq!(inbox(&Inbox { messages: vec![] }), "No new messages in inbox.");
        let message = |id: &str| InboxMessage {
            key: format!("inbox:leo:{id}"),
            envelope: Envelope {
                from: "vm".into(),
                to: "leo".into(),
                ts: 1,
                id: id.into(),
                kind: MessageType::Chat,
                body: "hi".into(),
            },
        };
        assert_eq!(
            inbox(&Inbox { messages: vec![message("1-vm-0001"), message("2-vm-0002")] }),
            "2 message(s):\n\n[chat] From: vm | ID: 1-vm-0001\n  Body: hi\n  Key: inbox:leo:1-vm-0001\n\n[chat] From: vm | ID: 2-vm-0002\n  Body: hi\n  Key: inbox:leo:2-vm-0002"
        );
    }

    #[test]
    fn status_texts() {
        let mut report = StatusReport {
            peer: "leo".into(),
            node_id: "n".into(),
            hostname: "leo.lan".into(),
            last_ack: None,
            messages: vec![],
        };
        assert_eq!(status(&report, "leo"), "No ACK received from leo yet.\n\nNo messages to leo.lan on record.");
        report.last_ack = Some("1-vm-0001".into());
        let message = |id: &str, state: &str, acked: bool| MessageStatus {
            id: id.into(),
            ts: 1,
            kind: MessageType::Chat,
            state: state.into(),
            attempts: 3,
            last_error: (state == "queued").then(|| "down".into()),
            delivered_at: None,
            acked,
        };
        report.messages = vec![message("1-vm-0001", "delivered", true), message("2-vm-0002", "queued", false)];
        assert_eq!(
            status(&report, "leo"),
            "Last ACK from leo: 1-vm-0001\n\nMessages to leo.lan:\n  1-vm-0001 [chat] delivered, acknowledged\n  2-vm-0002 [chat] queued (3 attempt(s); last error: down), not acknowledged"
        );
    }
}
