//! Registering the MCP server with Claude Code, Gemini CLI and Codex CLI (user scope).
//!
//! With the agent's CLI installed, its own `mcp add/remove` does the work; without it, its
//! config file is edited atomically with everything else in it preserved. Both are idempotent.
//! Status is read from the config files, which the agents' CLIs write too.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use serde_json::{json, Value};

use crate::durable::{self, Mode};

/// The server name agents see.
pub(crate) const NAME: &str = "loopsy";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Agent {
    Claude,
    Gemini,
    Codex,
}

pub(crate) const AGENTS: [Agent; 3] = [Agent::Claude, Agent::Gemini, Agent::Codex];

/// How agents start the server: an absolute program and its arguments.
#[derive(Debug, Clone)]
pub(crate) struct ServerCommand {
    pub program: String,
    pub args: Vec<String>,
}

impl Agent {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Agent::Claude => "Claude Code",
            Agent::Gemini => "Gemini CLI",
            Agent::Codex => "Codex CLI",
        }
    }

    fn binary(self) -> &'static str {
        match self {
            Agent::Claude => "claude",
            Agent::Gemini => "gemini",
            Agent::Codex => "codex",
        }
    }

    /// The user-scope config file the agent reads its MCP servers from: under `home`, or where
    /// the agent's own variable moves it (`CLAUDE_CONFIG_DIR` holds `.claude.json` in place of
    /// the home, `GEMINI_CLI_HOME` stands for the home, `CODEX_HOME` for `~/.codex`), as the
    /// agent started from this environment reads it.
    pub(crate) fn config_file(self, home: &Path) -> PathBuf {
        let moved = |variable: &str| std::env::var_os(variable).filter(|v| !v.is_empty()).map(PathBuf::from);
        match self {
            Agent::Claude => moved("CLAUDE_CONFIG_DIR").unwrap_or_else(|| home.to_path_buf()).join(".claude.json"),
            Agent::Gemini => {
                moved("GEMINI_CLI_HOME").unwrap_or_else(|| home.to_path_buf()).join(".gemini/settings.json")
            }
            Agent::Codex => moved("CODEX_HOME").unwrap_or_else(|| home.join(".codex")).join("config.toml"),
        }
    }

    /// The agent's CLI on PATH, if installed.
    pub(crate) fn installed(self) -> Option<PathBuf> {
        crate::process::find_program(self.binary(), None, std::env::var_os("PATH").as_deref()).ok()
    }

    /// Whether this machine has the agent: its CLI, or its config file.
    pub(crate) fn present(self, home: &Path) -> bool {
        self.installed().is_some() || self.config_file(home).exists()
    }

    pub(crate) fn registered(self, home: &Path) -> anyhow::Result<bool> {
        let file = self.config_file(home);
        let Ok(text) = std::fs::read_to_string(&file) else { return Ok(false) };
        Ok(match self {
            Agent::Claude | Agent::Gemini => parse_json(&file, &text)?["mcpServers"].get(NAME).is_some(),
            Agent::Codex => toml_has_table(&text),
        })
    }

    /// Registers the server; running it twice leaves one registration.
    pub(crate) fn add(self, home: &Path, server: &ServerCommand) -> anyhow::Result<()> {
        if let Some(binary) = self.installed() {
            let _ = self.remove_with_cli(&binary);
            return run_cli(&binary, &self.add_args(server));
        }
        match self {
            Agent::Claude | Agent::Gemini => edit_json(&self.config_file(home), |doc| {
                let mut entry = json!({"command": server.program, "args": server.args});
                if self == Agent::Claude {
                    entry = json!({"type": "stdio", "command": server.program, "args": server.args, "env": {}});
                }
                ensure_object(doc)["mcpServers"] = merge_object(doc.get("mcpServers"), NAME, Some(entry));
            }),
            Agent::Codex => edit_toml(&self.config_file(home), Some(server)),
        }
    }

    /// Removes the registration; returns whether there was one.
    pub(crate) fn remove(self, home: &Path) -> anyhow::Result<bool> {
        let was = self.registered(home)?;
        if let Some(binary) = self.installed() {
            let _ = self.remove_with_cli(&binary);
        }
        if self.registered(home)? {
            match self {
                Agent::Claude | Agent::Gemini => edit_json(&self.config_file(home), |doc| {
                    ensure_object(doc)["mcpServers"] = merge_object(doc.get("mcpServers"), NAME, None);
                })?,
                Agent::Codex => edit_toml(&self.config_file(home), None)?,
            }
        }
        Ok(was)
    }

    fn add_args(self, server: &ServerCommand) -> Vec<String> {
        let mut args: Vec<String> = match self {
            Agent::Claude => ["mcp", "add", NAME, "-s", "user", "--", &server.program].map(String::from).to_vec(),
            Agent::Gemini => ["mcp", "add", "-s", "user", NAME, &server.program, "--"].map(String::from).to_vec(),
            Agent::Codex => ["mcp", "add", NAME, "--", &server.program].map(String::from).to_vec(),
        };
        args.extend(server.args.iter().cloned());
        args
    }

    fn remove_with_cli(self, binary: &Path) -> anyhow::Result<()> {
        let args: &[&str] = match self {
            Agent::Claude => &["mcp", "remove", NAME, "-s", "user"],
            Agent::Gemini => &["mcp", "remove", "-s", "user", NAME],
            Agent::Codex => &["mcp", "remove", NAME],
        };
        run_cli(binary, &args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }
}

/// Arguments are passed as a vector, never through a shell (1.0.21 built shell strings, H6).
fn run_cli(binary: &Path, args: &[String]) -> anyhow::Result<()> {
    let output = Command::new(binary)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("running {}", binary.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "{} {} failed: {}",
        binary.display(),
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

fn parse_json(file: &Path, text: &str) -> anyhow::Result<Value> {
    if text.trim().is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_str(text).with_context(|| format!("{} is not valid JSON; not touching it", file.display()))
}

fn ensure_object(doc: &mut Value) -> &mut Value {
    if !doc.is_object() {
        *doc = json!({});
    }
    doc
}

/// `map` with `key` set to `value` (or removed), other members kept in their order.
fn merge_object(map: Option<&Value>, key: &str, value: Option<Value>) -> Value {
    let mut object = map.and_then(Value::as_object).cloned().unwrap_or_default();
    match value {
        Some(value) => object.insert(key.to_string(), value),
        None => object.shift_remove(key),
    };
    Value::Object(object)
}

fn edit_json(file: &Path, change: impl FnOnce(&mut Value)) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut doc = parse_json(file, &text)?;
    change(&mut doc);
    let mut out = serde_json::to_string_pretty(&doc)?;
    out.push('\n');
    durable::write(file, out.as_bytes(), Mode::Secret)
}

/// Whether `config.toml` has our `[mcp_servers.loopsy]` table.
fn toml_has_table(text: &str) -> bool {
    text.lines().any(|line| is_our_header(line.trim()))
}

fn is_our_header(line: &str) -> bool {
    let header = format!("[mcp_servers.{NAME}");
    line.starts_with(&header) && (line[header.len()..].starts_with(']') || line[header.len()..].starts_with('.'))
}

/// Rewrites `config.toml` without our tables, then appends the new one (if any). Every other
/// line is kept as it was, comments included.
fn edit_toml(file: &Path, server: Option<&ServerCommand>) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut kept = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            inside = is_our_header(trimmed);
        }
        if !inside {
            kept.push(line);
        }
    }
    while kept.last().is_some_and(|l| l.trim().is_empty()) {
        kept.pop();
    }
    let mut out = kept.join("\n");
    if let Some(server) = server {
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        let args: Vec<String> = server.args.iter().map(|a| toml_string(a)).collect();
        out.push_str(&format!(
            "[mcp_servers.{NAME}]\ncommand = {}\nargs = [{}]",
            toml_string(&server.program),
            args.join(", ")
        ));
    }
    out.push('\n');
    durable::write(file, out.as_bytes(), Mode::Secret)
}

fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_edits_keep_everything_else() {
        let dir = std::env::temp_dir().join(format!("loopsy-toml-{}", crate::random::hex(6)));
        let file = dir.join("config.toml");
        std::fs::create_dir_all(&dir).unwrap();
        let before = "# my settings\nmodel = \"o3\"\n\n[mcp_servers.other]\ncommand = \"x\"\n\n[mcp_servers.loopsy]\ncommand = \"old\"\n\n[mcp_servers.loopsy.env]\nA = \"1\"\n\n[profiles.fast]\nmodel = \"mini\"\n";
        std::fs::write(&file, before).unwrap();
        let server = ServerCommand { program: "/opt/lo\"opsy".into(), args: vec!["mcp".into(), "serve".into()] };
        edit_toml(&file, Some(&server)).unwrap();
        edit_toml(&file, Some(&server)).unwrap();
        let after = std::fs::read_to_string(&file).unwrap();
        assert_eq!(after.matches("[mcp_servers.loopsy]").count(), 1, "{after}");
        assert!(!after.contains("[mcp_servers.loopsy.env]"));
        assert!(after.contains("# my settings\nmodel = \"o3\""));
        assert!(after.contains("[mcp_servers.other]\ncommand = \"x\""));
        assert!(after.contains("[profiles.fast]\nmodel = \"mini\""));
        assert!(after.contains("command = \"/opt/lo\\\"opsy\"\nargs = [\"mcp\", \"serve\"]"), "{after}");
        assert!(toml_has_table(&after));
        edit_toml(&file, None).unwrap();
        let removed = std::fs::read_to_string(&file).unwrap();
        assert!(!toml_has_table(&removed));
        assert!(removed.contains("[profiles.fast]"));
        assert!(!toml_has_table("[mcp_servers.loopsyx]\n"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
