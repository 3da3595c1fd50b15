//! Which `additionalArgs` an AI task may pass to its agent: per agent, a list of flags that
//! cannot loosen approvals, load settings, widen what the agent may touch or break the protocol
//! loopsy speaks with it. Everything else is refused before anything runs.
//!
//! 1.0.21 appended `additionalArgs` verbatim, so `--dangerously-skip-permissions`,
//! `--permission-mode`, `--settings`, `--permission-prompt-tool` (Claude), `-c
//! approval_policy=never` (Codex) or `--yolo` (Gemini) defeated every approval and
//! `aiTasks.allowBypassPermissions: false`. An allow list fails closed when a CLI grows a new
//! dangerous flag; a deny list would not.

use super::Agent;

/// What follows a flag.
#[derive(Debug, Clone, Copy)]
enum Takes {
    Nothing,
    /// Any text (a model name, a prompt addition).
    Text,
    /// A whole number.
    Number,
    /// One of these words.
    OneOf(&'static [&'static str]),
    /// `key=value` for Codex's `-c`, with a key from this list and the value it takes.
    Setting(&'static [(&'static str, Takes)]),
}

/// One allowed flag, under all of its spellings.
struct Flag {
    names: &'static [&'static str],
    takes: Takes,
}

const CLAUDE: &[Flag] = &[
    Flag { names: &["--model"], takes: Takes::Text },
    Flag { names: &["--fallback-model"], takes: Takes::Text },
    Flag { names: &["--effort"], takes: Takes::OneOf(&["low", "medium", "high", "xhigh", "max"]) },
    Flag { names: &["--max-turns"], takes: Takes::Number },
    Flag { names: &["--append-system-prompt"], takes: Takes::Text },
    // Narrows what the agent may do; loopsy's own `disallowedTools` field passes the same flag.
    Flag { names: &["--disallowedTools", "--disallowed-tools"], takes: Takes::Text },
    Flag { names: &["--name", "-n"], takes: Takes::Text },
    Flag { names: &["--verbose"], takes: Takes::Nothing },
    Flag { names: &["--include-partial-messages"], takes: Takes::Nothing },
    Flag { names: &["--no-session-persistence"], takes: Takes::Nothing },
];

const CODEX_SETTINGS: &[(&str, Takes)] = &[
    ("model_reasoning_effort", Takes::OneOf(&["minimal", "low", "medium", "high", "xhigh"])),
    ("model_reasoning_summary", Takes::OneOf(&["auto", "concise", "detailed", "none"])),
    ("model_verbosity", Takes::OneOf(&["low", "medium", "high"])),
    ("hide_agent_reasoning", Takes::OneOf(&["true", "false"])),
];

/// `codex app-server` takes its model and policies over JSON-RPC from loopsy; on its command
/// line only a few presentation settings are harmless.
const CODEX: &[Flag] = &[Flag { names: &["-c", "--config"], takes: Takes::Setting(CODEX_SETTINGS) }];

const GEMINI: &[Flag] = &[Flag { names: &["--model", "-m"], takes: Takes::Text }];

fn allowed(agent: Agent) -> &'static [Flag] {
    match agent {
        Agent::Claude => CLAUDE,
        Agent::Codex => CODEX,
        Agent::Gemini => GEMINI,
    }
}

/// Why `additionalArgs` was refused; the message names the argument.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{argument}' {problem}")]
pub(crate) struct Refused {
    pub argument: String,
    pub problem: String,
}

/// Checks `args` (a request's `additionalArgs`) against `agent`'s list.
pub(crate) fn check(agent: Agent, args: &[String]) -> Result<(), Refused> {
    let refuse = |argument: &str, problem: String| Err(Refused { argument: argument.to_string(), problem });
    let list = allowed(agent);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value)),
            _ => (arg.as_str(), None),
        };
        let Some(flag) = list.iter().find(|flag| flag.names.contains(&name)) else {
            let names: Vec<&str> = list.iter().map(|flag| flag.names[0]).collect();
            let problem = match name.starts_with('-') {
                true => format!("is not allowed for {}: allowed flags are {}", agent.program(), names.join(", ")),
                false => "is not a flag: additionalArgs holds flags and their values only".to_string(),
            };
            return refuse(name, problem);
        };
        let value = match (flag.takes, inline) {
            (Takes::Nothing, None) => continue,
            (Takes::Nothing, Some(_)) => return refuse(arg, "takes no value".into()),
            (_, Some(value)) => value,
            (_, None) => match args.next() {
                Some(value) => value.as_str(),
                None => return refuse(name, "needs a value".into()),
            },
        };
        check_value(flag.takes, value).or_else(|problem| refuse(name, problem))?;
    }
    Ok(())
}

/// Whether `value` suits `takes`; the problem otherwise.
fn check_value(takes: Takes, value: &str) -> Result<(), String> {
    // The agent's own parser might read a value starting with '-' as a flag of its own.
    if value.starts_with('-') {
        return Err(format!("has a value that starts with '-' ({value:?})"));
    }
    match takes {
        Takes::Nothing => Err("takes no value".into()),
        Takes::Text if value.trim().is_empty() => Err("needs a value".into()),
        Takes::Text => Ok(()),
        Takes::Number if !value.is_empty() && value.len() <= 9 && value.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
        Takes::Number => Err(format!("takes a whole number, not {value:?}")),
        Takes::OneOf(words) if words.contains(&value) => Ok(()),
        Takes::OneOf(words) => Err(format!("takes one of {}, not {value:?}", words.join(", "))),
        Takes::Setting(settings) => {
            let (key, setting) = value.split_once('=').ok_or_else(|| format!("takes key=value, not {value:?}"))?;
            let Some((_, takes)) = settings.iter().find(|(known, _)| *known == key) else {
                let keys: Vec<&str> = settings.iter().map(|(key, _)| *key).collect();
                return Err(format!("may set only {}, not {key:?}", keys.join(", ")));
            };
            check_value(*takes, setting).map_err(|problem| format!("{key}: {problem}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_args(agent: Agent, args: &[&str], expect: Result<(), &str>) {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        match (check(agent, &args), expect) {
            (Ok(()), Ok(())) => {}
            (Err(refused), Err(part)) => {
                let message = refused.to_string();
                assert!(message.contains(part), "{args:?}: {message} should mention {part}");
            }
            (found, expect) => panic!("{agent:?} {args:?}: {found:?}, expected {expect:?}"),
        }
    }

    /// The flags AGENT-CLIS.md and the issue name as escapes, per agent.
    const DANGEROUS: &[(Agent, &[&str])] = &[
        (Agent::Claude, &["--dangerously-skip-permissions"]),
        (Agent::Claude, &["--allow-dangerously-skip-permissions"]),
        (Agent::Claude, &["--permission-mode", "bypassPermissions"]),
        (Agent::Claude, &["--permission-mode=bypassPermissions"]),
        (Agent::Claude, &["--settings", "{\"permissions\":{\"allow\":[\"Bash\"]}}"]),
        (Agent::Claude, &["--setting-sources", "user"]),
        (Agent::Claude, &["--permission-prompt-tool", "mcp__evil__allow"]),
        (Agent::Claude, &["--mcp-config", "{}"]),
        (Agent::Claude, &["--allowedTools", "Bash"]),
        (Agent::Claude, &["--allowed-tools", "Bash"]),
        (Agent::Claude, &["--add-dir", "/"]),
        (Agent::Claude, &["--input-format", "text"]),
        (Agent::Claude, &["--resume", "x"]),
        (Agent::Claude, &["--plugin-dir", "/tmp"]),
        (Agent::Codex, &["--dangerously-bypass-approvals-and-sandbox"]),
        (Agent::Codex, &["-c", "approval_policy=never"]),
        (Agent::Codex, &["-c", "sandbox_mode=danger-full-access"]),
        (Agent::Codex, &["--config=approval_policy=\"never\""]),
        (Agent::Codex, &["-s", "danger-full-access"]),
        (Agent::Codex, &["--sandbox", "danger-full-access"]),
        (Agent::Codex, &["--dangerously-bypass-hook-trust"]),
        (Agent::Codex, &["--approve-for-me"]),
        (Agent::Codex, &["-p", "evil-profile"]),
        (Agent::Codex, &["--enable", "hooks"]),
        (Agent::Gemini, &["--yolo"]),
        (Agent::Gemini, &["-y"]),
        (Agent::Gemini, &["--approval-mode", "yolo"]),
        (Agent::Gemini, &["--approval-mode=auto_edit"]),
        (Agent::Gemini, &["--policy", "/tmp/allow.toml"]),
        (Agent::Gemini, &["--admin-policy", "/tmp/allow.toml"]),
        (Agent::Gemini, &["--allowed-tools", "run_shell_command"]),
        (Agent::Gemini, &["--allowed-mcp-server-names", "evil"]),
        (Agent::Gemini, &["-e", "evil"]),
        (Agent::Gemini, &["--include-directories", "/"]),
        (Agent::Gemini, &["--skip-trust"]),
    ];

    #[test]
    fn every_dangerous_flag_is_refused_by_name() {
        for (agent, args) in DANGEROUS {
            let flag = args[0].split_once('=').map_or(args[0], |(name, _)| name);
            check_args(*agent, args, Err(flag));
        }
    }

    #[test]
    fn harmless_flags_pass_with_their_values() {
        check_args(Agent::Claude, &[], Ok(()));
        check_args(Agent::Claude, &["--model", "sonnet", "--effort=high", "--max-turns", "3", "--verbose"], Ok(()));
        check_args(Agent::Claude, &["--append-system-prompt", "be brief", "--disallowedTools", "Bash"], Ok(()));
        check_args(Agent::Codex, &["-c", "model_reasoning_effort=high", "--config=model_verbosity=low"], Ok(()));
        check_args(Agent::Gemini, &["-m", "gemini-2.5-pro"], Ok(()));
        check_args(Agent::Gemini, &["--model=gemini-2.5-pro"], Ok(()));
    }

    #[test]
    fn values_cannot_smuggle_flags_or_break_the_rules() {
        check_args(Agent::Claude, &["--model", "--dangerously-skip-permissions"], Err("starts with '-'"));
        check_args(Agent::Claude, &["--model"], Err("needs a value"));
        check_args(Agent::Claude, &["--model="], Err("needs a value"));
        check_args(Agent::Claude, &["--verbose=1"], Err("takes no value"));
        check_args(Agent::Claude, &["--effort", "ultra"], Err("takes one of"));
        check_args(Agent::Claude, &["--max-turns", "3x"], Err("whole number"));
        check_args(Agent::Claude, &["sneaky prompt"], Err("is not a flag"));
        check_args(Agent::Claude, &["--"], Err("is not allowed for claude"));
        check_args(Agent::Claude, &["--mod", "x"], Err("'--mod' is not allowed"));
        check_args(Agent::Gemini, &["--approvalMode", "yolo"], Err("'--approvalMode'"));
        check_args(Agent::Codex, &["-c", "model_verbosity"], Err("key=value"));
        check_args(Agent::Codex, &["-c", "model_verbosity=loud"], Err("model_verbosity: takes one of"));
        check_args(Agent::Codex, &["-c", "model=evil"], Err("may set only"));
        check_args(Agent::Codex, &["-cmodel_verbosity=low"], Err("'-cmodel_verbosity=low' is not allowed"));
        // Odd bytes anywhere never panic and are refused or passed on as text.
        for odd in ["--mödel", "=", "-", "--=x", "\u{1F600}", "--model=\u{0}"] {
            let _ = check(Agent::Claude, &[odd.to_string()]);
        }
    }
}
