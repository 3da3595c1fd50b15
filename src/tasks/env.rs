//! An agent's environment: the daemon's, minus what would make a nested agent refuse to start
//! or talk to the wrong parent, minus the daemon's own variables and keys. Starting and stopping
//! the agent is `crate::process`'s.

use std::collections::BTreeMap;

use super::api::Agent;

/// The agent's environment: the daemon's, minus what would make a nested agent refuse to start
/// or talk to the wrong parent (PROTOCOL.md §8.3), minus the daemon's own variables and anything
/// carrying one of `secrets` (`child_env`: the daemon's keys never reach an agent, C3). API keys
/// the user set for the agent stay.
pub(super) fn agent_env(
    agent: Agent,
    vars: impl IntoIterator<Item = (String, String)>,
    secrets: &[String],
) -> BTreeMap<String, String> {
    crate::child_env::inherited(vars, secrets).into_iter().filter(|(name, _)| keep_var(agent, name)).collect()
}

fn keep_var(agent: Agent, name: &str) -> bool {
    const KEPT: &[&str] = &[
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_BASE_URL",
        "CLAUDE_CODE_OAUTH_TOKEN",
        "CLAUDE_CODE_GIT_BASH_PATH",
        "CLAUDE_CONFIG_DIR",
        "GEMINI_API_KEY",
        "CODEX_API_KEY",
        "CODEX_HOME",
    ];
    if KEPT.contains(&name) {
        return true;
    }
    match agent {
        Agent::Claude => {
            !(name.starts_with("CLAUDE")
                || name.starts_with("ANTHROPIC_")
                || name.starts_with("OTEL_")
                || name == "MCP_")
        }
        Agent::Gemini => !(name.starts_with("GEMINI_") || name == "GEMINI_CLI"),
        Agent::Codex => !name.starts_with("CODEX_"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(agent: Agent, names: &[&str]) -> Vec<String> {
        let vars = names.iter().map(|n| (n.to_string(), format!("v-{n}")));
        agent_env(agent, vars, &["v-SECRET".into()]).into_keys().collect()
    }

    #[test]
    fn nested_agent_variables_are_cleared_and_api_keys_kept() {
        let names = [
            "PATH",
            "HOME",
            "CLAUDECODE",
            "CLAUDE_CODE_ENTRYPOINT",
            "CLAUDE_CODE_SSE_PORT",
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_MODEL",
            "OTEL_EXPORTER",
            "LOOPSY_API_KEY",
            "GEMINI_CLI",
            "GEMINI_API_KEY",
            "CODEX_SANDBOX",
            "SECRET",
        ];
        assert_eq!(
            env(Agent::Claude, &names),
            ["ANTHROPIC_API_KEY", "CODEX_SANDBOX", "GEMINI_API_KEY", "GEMINI_CLI", "HOME", "PATH"]
        );
        assert_eq!(
            env(Agent::Gemini, &names),
            [
                "ANTHROPIC_API_KEY",
                "ANTHROPIC_MODEL",
                "CLAUDECODE",
                "CLAUDE_CODE_ENTRYPOINT",
                "CLAUDE_CODE_SSE_PORT",
                "CODEX_SANDBOX",
                "GEMINI_API_KEY",
                "HOME",
                "OTEL_EXPORTER",
                "PATH"
            ]
        );
        assert!(!env(Agent::Codex, &names).contains(&"CODEX_SANDBOX".to_string()));
    }
}
