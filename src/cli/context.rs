//! `loopsy context set|get|list|delete`: the context store of the local daemon or of a peer.
//!
//! Exit codes: 0 done; 1 the key does not exist, or is not at the `--if-revision` asked for
//! (the answer is no); 2 anything else went wrong.

use std::process::ExitCode;

use crate::paths::Paths;
use crate::peer::{ClientError, Method};
use crate::resolve::{self, Target};
use argh::FromArgs;
use serde_json::{json, Value};

/// read and write the key-value context store of a daemon
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "context")]
pub struct Args {
    #[argh(subcommand)]
    action: Action,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum Action {
    Set(Set),
    Get(Get),
    List(List),
    Delete(Delete),
}

/// set a key to a value and print the stored entry
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "set")]
struct Set {
    /// the key (up to 1024 bytes; may contain ':' and '/')
    #[argh(positional)]
    key: String,
    /// the value (up to 1 MiB; use -- before a value that starts with '-')
    #[argh(positional)]
    value: String,
    /// seconds until the entry expires (default: never)
    #[argh(option)]
    ttl: Option<String>,
    /// only write if the key is at this revision; 0: only if it does not exist (else exit 1)
    #[argh(option)]
    if_revision: Option<u64>,
    /// only write while this lock grant is live, given as <lock>:<token> (else exit 1); inside
    /// `loopsy lock`: "$LOOPSY_LOCK_NAME:$LOOPSY_LOCK_TOKEN"
    #[argh(option)]
    fence: Option<String>,
    /// daemon to use: local (default) or address[:port]
    #[argh(option, default = "String::from(\"local\")")]
    peer: String,
}

/// print the value of a key (exit 1 if it does not exist)
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "get")]
struct Get {
    /// the key
    #[argh(positional)]
    key: String,
    /// print the whole entry as JSON
    #[argh(switch)]
    json: bool,
    /// daemon to use: local (default) or address[:port]
    #[argh(option, default = "String::from(\"local\")")]
    peer: String,
}

/// list the entries, in insertion order
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
struct List {
    /// only keys that start with this
    #[argh(option)]
    prefix: Option<String>,
    /// print {"entries": [...]} as JSON
    #[argh(switch)]
    json: bool,
    /// daemon to use: local (default) or address[:port]
    #[argh(option, default = "String::from(\"local\")")]
    peer: String,
}

/// delete a key (exit 1 if it does not exist)
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "delete")]
struct Delete {
    /// the key
    #[argh(positional)]
    key: String,
    /// only delete if the key is at this revision (else exit 1)
    #[argh(option)]
    if_revision: Option<u64>,
    /// only delete while this lock grant is live, given as <lock>:<token> (else exit 1)
    #[argh(option)]
    fence: Option<String>,
    /// daemon to use: local (default) or address[:port]
    #[argh(option, default = "String::from(\"local\")")]
    peer: String,
}

pub(super) fn run(args: Args, paths: &Paths) -> anyhow::Result<ExitCode> {
    let config = super::load_config(paths)?;
    let target = |spec: &str| smol::block_on(resolve::resolve(paths, &config, spec, None));
    let outcome = match args.action {
        Action::Set(cmd) => set(&target(&cmd.peer)?, cmd),
        Action::Get(cmd) => get(&target(&cmd.peer)?, cmd),
        Action::List(cmd) => list(&target(&cmd.peer)?, cmd),
        Action::Delete(cmd) => delete(&target(&cmd.peer)?, cmd),
    };
    match outcome {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => match e.downcast_ref::<ClientError>() {
            // Not found (5001), revision conflicts (5004) and refused fences (6003) are
            // answers, not failures.
            Some(ClientError::Remote { code: Some(5001 | 5004 | 6003), message, .. }) => {
                eprintln!("{message}");
                Ok(ExitCode::from(1))
            }
            _ => Err(e),
        },
    }
}

fn set(target: &Target, cmd: Set) -> anyhow::Result<()> {
    let mut body = json!({ "value": cmd.value });
    if let Some(text) = &cmd.ttl {
        let seconds: serde_json::Number =
            text.trim().parse().map_err(|_| anyhow::anyhow!("--ttl must be a number of seconds, got '{text}'"))?;
        body["ttl"] = Value::Number(seconds);
    }
    if let Some(revision) = cmd.if_revision {
        body["ifRevision"] = revision.into();
    }
    if let Some(fence) = &cmd.fence {
        let (lock, token) = parse_fence(fence)?;
        body["ifFence"] = json!({"lock": lock, "token": token});
    }
    let entry: Value = smol::block_on(target.client.call(Method::Put, &entry_path(&cmd.key), Some(&body)))?;
    println!("Context set:\n{}", serde_json::to_string_pretty(&entry).expect("JSON values serialise"));
    Ok(())
}

fn get(target: &Target, cmd: Get) -> anyhow::Result<()> {
    let entry: Value = smol::block_on(target.client.get(&entry_path(&cmd.key)))?;
    if cmd.json {
        println!("{}", serde_json::to_string_pretty(&entry).expect("JSON values serialise"));
    } else {
        println!("{}", entry["value"].as_str().unwrap_or_default());
    }
    Ok(())
}

fn list(target: &Target, cmd: List) -> anyhow::Result<()> {
    let path = match &cmd.prefix {
        Some(prefix) => format!("/api/v1/context?prefix={}", crate::percent::encode(prefix)),
        None => "/api/v1/context".to_string(),
    };
    let listing: Value = smol::block_on(target.client.get(&path))?;
    if cmd.json {
        println!("{}", serde_json::to_string_pretty(&listing).expect("JSON values serialise"));
        return Ok(());
    }
    let entries = listing["entries"].as_array().cloned().unwrap_or_default();
    if entries.is_empty() {
        println!("No context entries");
    }
    let now = crate::clock::now_ms();
    for entry in entries {
        println!("{}", list_line(&entry, now));
    }
    Ok(())
}

fn delete(target: &Target, cmd: Delete) -> anyhow::Result<()> {
    let mut query = Vec::new();
    if let Some(revision) = cmd.if_revision {
        query.push(format!("ifRevision={revision}"));
    }
    if let Some(fence) = &cmd.fence {
        let (lock, token) = parse_fence(fence)?;
        query.push(format!("ifFence={}", crate::percent::encode(&format!("{lock}:{token}"))));
    }
    let mut path = entry_path(&cmd.key);
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    let _: Value = smol::block_on(target.client.call(Method::Delete, &path, None::<&()>))?;
    println!("Deleted key: {}", cmd.key);
    Ok(())
}

/// `--fence <lock>:<token>` (a lock name may contain ':', the token does not).
fn parse_fence(text: &str) -> anyhow::Result<(String, u64)> {
    let parsed = text.rsplit_once(':').and_then(|(lock, token)| Some((lock.to_string(), token.parse().ok()?)));
    parsed
        .filter(|(lock, _)| !lock.is_empty())
        .ok_or_else(|| anyhow::anyhow!("--fence must be <lock>:<token>, got '{text}'"))
}

fn entry_path(key: &str) -> String {
    crate::peer::context_path(key)
}

/// `  <key> = <first 80 chars of value>[...][ (expires in <n>s)]`, as 1.0.21 prints it.
fn list_line(entry: &Value, now: u64) -> String {
    let key = entry["key"].as_str().unwrap_or_default();
    let value = entry["value"].as_str().unwrap_or_default();
    let mut line = format!("  {key} = {}", value.chars().take(80).collect::<String>());
    if value.chars().count() > 80 {
        line.push_str("...");
    }
    if let Some(expires_at) = entry["expiresAt"].as_u64() {
        line.push_str(&format!(" (expires in {}s)", expires_at.saturating_sub(now).div_ceil(1000)));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_list_lines() {
        assert_eq!(entry_path("inbox:bob:1"), "/api/v1/context/inbox%3Abob%3A1");
        assert_eq!(entry_path("a/b"), "/api/v1/context/a%2Fb");
        assert_eq!(entry_path("watch"), "/api/v1/context/%77atch");
        assert_eq!(entry_path("watchers"), "/api/v1/context/watchers");
        let long = "x".repeat(81);
        assert_eq!(list_line(&json!({"key": "k", "value": long}), 0), format!("  k = {}...", "x".repeat(80)));
        assert_eq!(list_line(&json!({"key": "k", "value": "v", "expiresAt": 5_500}), 1_000), "  k = v (expires in 5s)");
    }
}
