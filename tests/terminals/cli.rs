//! `loopsy term` driven in a real terminal: tmux runs it, `send-keys` types and
//! `capture-pane` reads the screen.

/// The path of `name` on PATH; missing fails under CI=true and is SKIPPED otherwise.
pub fn program(name: &str) -> Option<String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file());
    match found {
        Some(path) => Some(path.to_string_lossy().into_owned()),
        None if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("{name} is missing (.ci/run installs it)"),
        None => {
            eprintln!("SKIPPED: {name} is not installed");
            None
        }
    }
}
