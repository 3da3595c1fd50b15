//! `loopsy message send|inbox|ack|status`: agent messaging through the local daemon, which
//! delivers, retries and acknowledges (routes `/api/v1/messages`).
//!
//! Exit codes: 0 done (a queued message counts: the daemon delivers it later); 1 the message to
//! acknowledge is not in the inbox; 2 anything else.

use std::process::ExitCode;

use argh::FromArgs;

use crate::messages::api::{AckRequest, Inbox, SendRequest, Sent, StatusReport};
use crate::messages::envelope::MessageType;
use crate::messages::text;
use crate::paths::Paths;
use crate::peer::{Client, ClientError, Method};
use crate::percent;

/// send messages to peers' agents, read this machine's inbox, acknowledge
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "message")]
pub struct Args {
    #[argh(subcommand)]
    action: Action,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum Action {
    Send(SendArgs),
    Inbox(InboxArgs),
    Ack(AckArgs),
    Status(StatusArgs),
}

/// send a message to a peer (delivered now, or retried until it is back)
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "send")]
struct SendArgs {
    /// the peer: name, hostname, node id (prefix) or address[:port]
    #[argh(positional)]
    peer: String,
    /// the message text
    #[argh(positional)]
    body: String,
    /// chat (default), request, response or broadcast
    #[argh(option, long = "type", default = "String::from(\"chat\")")]
    kind: String,
    /// print the result as JSON
    #[argh(switch)]
    json: bool,
}

/// list the messages in this machine's inbox, oldest first
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "inbox")]
struct InboxArgs {
    /// print {"messages": [...]} as JSON
    #[argh(switch)]
    json: bool,
}

/// acknowledge a message (by its inbox key) and remove it from the inbox
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "ack")]
struct AckArgs {
    /// the inbox key (inbox:<host>:<id>) or the message id
    #[argh(positional)]
    key: String,
}

/// show delivery and acknowledgement of each message sent to a peer
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "status")]
struct StatusArgs {
    /// the peer: name, hostname, node id (prefix) or address[:port]
    #[argh(positional)]
    peer: String,
    /// print the report as JSON
    #[argh(switch)]
    json: bool,
}

pub(super) fn run(args: Args, paths: &Paths) -> anyhow::Result<ExitCode> {
    let config = super::load_config(paths)?;
    let client = Client::local(paths, &config.auth.api_key)?;
    smol::block_on(async {
        match args.action {
            Action::Send(cmd) => send(&client, cmd).await,
            Action::Inbox(cmd) => inbox(&client, cmd).await,
            Action::Ack(cmd) => ack(&client, cmd).await,
            Action::Status(cmd) => status(&client, cmd).await,
        }
    })
}

async fn send(client: &Client, cmd: SendArgs) -> anyhow::Result<ExitCode> {
    let kind: MessageType = serde_json::from_value(cmd.kind.clone().into())
        .map_err(|_| anyhow::anyhow!("--type must be chat, request, response or broadcast, not '{}'", cmd.kind))?;
    let request = SendRequest { to: cmd.peer, kind, body: cmd.body };
    let sent: Sent = client.call(Method::Post, "/api/v1/messages", Some(&request)).await?;
    if cmd.json {
        println!("{}", serde_json::to_string_pretty(&sent)?);
    } else {
        println!("{}", text::sent(&sent));
    }
    Ok(ExitCode::SUCCESS)
}

async fn inbox(client: &Client, cmd: InboxArgs) -> anyhow::Result<ExitCode> {
    let inbox: Inbox = client.get("/api/v1/messages/inbox").await?;
    if cmd.json {
        println!("{}", serde_json::to_string_pretty(&inbox)?);
    } else {
        println!("{}", text::inbox(&inbox));
    }
    Ok(ExitCode::SUCCESS)
}

async fn ack(client: &Client, cmd: AckArgs) -> anyhow::Result<ExitCode> {
    let request = if cmd.key.starts_with("inbox:") {
        AckRequest { key: Some(cmd.key), id: None }
    } else {
        AckRequest { key: None, id: Some(cmd.key) }
    };
    match client.call::<Sent>(Method::Post, "/api/v1/messages/ack", Some(&request)).await {
        Ok(sent) => {
            println!("{}", text::acked(&sent));
            Ok(ExitCode::SUCCESS)
        }
        Err(ClientError::Remote { code: Some(7001), message, .. }) => {
            eprintln!("{message}");
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}

async fn status(client: &Client, cmd: StatusArgs) -> anyhow::Result<ExitCode> {
    let path = format!("/api/v1/messages/status?peer={}", percent::encode(&cmd.peer));
    let report: StatusReport = client.get(&path).await?;
    if cmd.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", text::status(&report, &cmd.peer));
    }
    Ok(ExitCode::SUCCESS)
}
