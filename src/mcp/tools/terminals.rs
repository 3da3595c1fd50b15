//! Terminal tools: an agent drives a REPL, a debugger or a full-screen program on a peer
//! through `/api/v1/terminals` (start, type text and named keys, read the screen as text from
//! the daemon's screen model after waiting for text or quiet, list, kill).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::{handler, object, peer_property, pretty, target, Args, Outcome, Tool};
use crate::mcp::daemon::DaemonLocator;
use crate::peer::Method;
use crate::percent;
use crate::terminal::api::{CreateRequest, InputRequest, ScreenAnswer};

/// The longest a read may wait (the daemon's own limit).
const MAX_WAIT_MS: u64 = 120_000;

fn terminal_id() -> Value {
    json!({"type": "string", "description": "The terminal's id (from loopsy_terminal_start or loopsy_terminal_list) or its name"})
}

pub(super) fn tools() -> Vec<Tool> {
    vec![
        Tool {
            name: "loopsy_terminal_start",
            description: "Start an interactive program (a shell, python3, a debugger, vim, an agent CLI) in a \
                          terminal on a peer. It keeps running until killed; drive it with loopsy_terminal_send \
                          and loopsy_terminal_read. Returns JSON with the terminal's id.",
            schema: || {
                object(
                    json!({
                        "peer": peer_property("to run on"),
                        "command": {"type": "string", "description": "Program to run (default: the peer user's shell)"},
                        "args": {"type": "array", "items": {"type": "string"}, "description": "Arguments"},
                        "cwd": {"type": "string", "description": "Working directory on the peer (default: the peer user's home)"},
                        "name": {"type": "string", "description": "A name to use instead of the id ([A-Za-z0-9._-], unique among running terminals)"},
                        "cols": {"type": "integer", "minimum": 2, "maximum": 1000, "description": "Columns (default 80)"},
                        "rows": {"type": "integer", "minimum": 2, "maximum": 1000, "description": "Rows (default 24)"}
                    }),
                    &["peer"],
                )
            },
            run: handler!(start),
        },
        Tool {
            name: "loopsy_terminal_send",
            description: "Type into a terminal: the text as is, then the named keys in order (Enter, Tab, Escape, \
                          Backspace, Up, Down, Left, Right, Home, End, PageUp, PageDown, Delete, F1-F12, \
                          Ctrl-<letter> such as Ctrl-C, Alt-<char>). Text is not followed by Enter unless you add it.",
            schema: || {
                object(
                    json!({
                        "peer": peer_property("running the terminal"),
                        "id": terminal_id(),
                        "text": {"type": "string", "description": "Text to type"},
                        "keys": {"type": "array", "items": {"type": "string"}, "description": "Named keys pressed after the text, e.g. [\"Enter\"]"}
                    }),
                    &["peer", "id"],
                )
            },
            run: handler!(send),
        },
        Tool {
            name: "loopsy_terminal_read",
            description: "Read a terminal's screen as text (what a person would see, from the daemon's screen \
                          model). With waitFor, waits until the screen contains that text; with quietMs, until no \
                          output came for that long; at most timeoutMs (default 10000). Says when the wait timed \
                          out or the program exited.",
            schema: || {
                object(
                    json!({
                        "peer": peer_property("running the terminal"),
                        "id": terminal_id(),
                        "waitFor": {"type": "string", "description": "Text to wait for on the screen"},
                        "quietMs": {"type": "integer", "minimum": 1, "description": "Return once the output has been quiet this long"},
                        "timeoutMs": {"type": "integer", "minimum": 1, "maximum": MAX_WAIT_MS, "description": "Longest wait (default 10000)"}
                    }),
                    &["peer", "id"],
                )
            },
            run: handler!(read),
        },
        Tool {
            name: "loopsy_terminal_list",
            description: "List the terminals on a peer: id, name, command, state (running/exited, exit code), size, \
                          attached clients.",
            schema: || object(json!({"peer": peer_property("to ask")}), &["peer"]),
            run: handler!(list),
        },
        Tool {
            name: "loopsy_terminal_kill",
            description: "Kill a terminal's programs (hang-up, then SIGKILL after 2 s) and forget it. Returns its \
                          last state with the exit code.",
            schema: || {
                object(json!({"peer": peer_property("running the terminal"), "id": terminal_id()}), &["peer", "id"])
            },
            run: handler!(kill),
        },
    ]
}

fn path(args: &Args, rest: &str) -> String {
    format!("/api/v1/terminals/{}{rest}", percent::encode(args.req("id")))
}

fn size(args: &Args, name: &str) -> Option<u16> {
    args.u64(name).and_then(|n| u16::try_from(n).ok())
}

async fn start(daemon: Arc<DaemonLocator>, args: Args) -> Outcome {
    let client = target(&daemon, Some(args.req("peer")), &args).await?;
    let request = CreateRequest {
        command: args.str("command").map(String::from),
        args: args.strings("args"),
        cwd: args.str("cwd").map(String::from),
        name: args.str("name").map(String::from),
        cols: size(&args, "cols"),
        rows: size(&args, "rows"),
        ..Default::default()
    };
    let info: Value =
        client.call(Method::Post, "/api/v1/terminals", Some(&request)).await.map_err(|e| e.to_string())?;
    Ok(pretty(&info))
}

async fn send(daemon: Arc<DaemonLocator>, args: Args) -> Outcome {
    let client = target(&daemon, Some(args.req("peer")), &args).await?;
    let input = InputRequest { text: args.str("text").map(String::from), keys: args.strings("keys") };
    if input.text.as_deref().is_none_or(str::is_empty) && input.keys.is_empty() {
        return Err("give text, keys or both".into());
    }
    let sent: Value =
        client.call(Method::Post, &path(&args, "/input"), Some(&input)).await.map_err(|e| e.to_string())?;
    Ok(format!("Sent {} byte(s) to terminal {}.", sent["sent"], args.req("id")))
}

async fn read(daemon: Arc<DaemonLocator>, args: Args) -> Outcome {
    let timeout = args.u64("timeoutMs").unwrap_or(10_000).min(MAX_WAIT_MS);
    let client = target(&daemon, Some(args.req("peer")), &args)
        .await?
        .with_timeout(Duration::from_millis(timeout) + Duration::from_secs(15));
    let mut query = vec![format!("timeoutMs={timeout}")];
    if let Some(text) = args.str("waitFor") {
        query.push(format!("waitFor={}", percent::encode(text)));
    }
    if let Some(quiet) = args.u64("quietMs") {
        query.push(format!("quietMs={quiet}"));
    }
    let answer: ScreenAnswer =
        client.get(&path(&args, &format!("/screen?{}", query.join("&")))).await.map_err(|e| e.to_string())?;
    Ok(render(&answer, args.str("waitFor")))
}

/// The screen, then a line saying how the wait ended when that matters.
fn render(answer: &ScreenAnswer, wait_for: Option<&str>) -> String {
    let mut text = answer.screen.clone();
    let mut notes = Vec::new();
    if let Some(code) = answer.exit_code {
        notes.push(format!("the program exited with code {code}"));
    }
    match wait_for {
        Some(wanted) if !answer.matched => notes.push(format!("'{wanted}' did not appear")),
        None if answer.timed_out => notes.push("the output did not go quiet before the timeout".into()),
        _ => {}
    }
    if !notes.is_empty() {
        text.push_str(&format!("\n[{}]", notes.join("; ")));
    }
    text
}

async fn list(daemon: Arc<DaemonLocator>, args: Args) -> Outcome {
    let client = target(&daemon, Some(args.req("peer")), &args).await?;
    let list: Value = client.get("/api/v1/terminals").await.map_err(|e| e.to_string())?;
    Ok(pretty(&list))
}

async fn kill(daemon: Arc<DaemonLocator>, args: Args) -> Outcome {
    let client = target(&daemon, Some(args.req("peer")), &args).await?;
    let info: Value = client.call(Method::Delete, &path(&args, ""), None::<&()>).await.map_err(|e| e.to_string())?;
    Ok(pretty(&info))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(matched: bool, timed_out: bool, exit_code: Option<i32>) -> ScreenAnswer {
        ScreenAnswer {
            id: "t".into(),
            screen: ">>> 1+1\n2".into(),
            cols: 80,
            rows: 24,
            cursor: crate::terminal::api::Cursor { row: 2, col: 4 },
            state: if exit_code.is_some() { "exited" } else { "running" }.into(),
            exit_code,
            title: None,
            matched,
            timed_out,
        }
    }

    #[test]
    fn a_read_is_the_screen_with_a_note_when_the_wait_fell_short() {
        assert_eq!(render(&answer(true, false, None), Some("2")), ">>> 1+1\n2");
        assert_eq!(render(&answer(false, true, None), Some("3")), ">>> 1+1\n2\n['3' did not appear]");
        assert_eq!(
            render(&answer(true, true, Some(0)), None),
            ">>> 1+1\n2\n[the program exited with code 0; the output did not go quiet before the timeout]"
        );
    }
}
