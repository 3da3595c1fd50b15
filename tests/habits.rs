//! What 1.0.21 users type keeps working: `status --json`, `logs`, `--version`, session order,
//! completions and the man page in plain sight.

use crate::support::{loopsy_in, Home, TempDir};

#[test]
fn version_names_the_protocol() {
    let home = TempDir::new("version");
    let expected = format!("loopsy {} (protocol 1.0.21)\n", env!("CARGO_PKG_VERSION"));
    assert_eq!(expected, "loopsy 0.1.0 (protocol 1.0.21)\n");
    for flag in ["--version", "-V", "version"] {
        assert_eq!(loopsy_in(home.path(), &[flag]).success().stdout, expected, "{flag}");
    }
}

#[test]
fn status_json_is_the_status_object_with_the_cli_facts_beside_it() {
    let daemon = Home::new("status-json").start();
    let printed = daemon.loopsy(&["status", "--json"]).success().json();
    let served = daemon.get("/api/v1/status").expect(200);
    for field in ["nodeId", "hostname", "platform", "version", "peers", "jobs", "context", "implementation"] {
        assert_eq!(printed[field], served[field], "{field}: {printed}");
    }
    assert!(printed["uptime"].is_u64());
    assert_eq!(printed["running"], true);
    assert_eq!(printed["pid"], daemon.pid());
    assert_eq!(printed["url"], daemon.url.as_str());
}

#[test]
fn session_list_sorts_names_naturally() {
    let home = Home::new("natural");
    for name in ["worker-10", "worker-2", "worker-1", "alpha"] {
        loopsy_in(&home.path().join("sessions").join(name), &["init"]).success();
    }
    let list = home.loopsy(&["session", "list", "--json"]).success().json();
    let names: Vec<&str> = list["sessions"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alpha", "worker-1", "worker-2", "worker-10"]);
    let table = home.loopsy(&["session", "list"]).success().stdout;
    let at = |name: &str| table.find(&format!("{name} ")).unwrap_or_else(|| panic!("{name} in {table}"));
    assert!(at("worker-2") < at("worker-10"), "{table}");
}

#[test]
fn completions_and_the_man_page_are_in_help_and_work() {
    let home = TempDir::new("generate");
    let help = loopsy_in(home.path(), &["help"]).success().stdout;
    assert!(help.lines().any(|l| l.trim_start().starts_with("generate") && l.contains("completions")), "{help}");
    let bash = loopsy_in(home.path(), &["generate", "completions", "bash"]).success().stdout;
    assert!(bash.contains("-F _loopsy loopsy") && bash.contains("session") && bash.contains("generate"), "{bash}");
    let zsh = loopsy_in(home.path(), &["generate", "completions", "zsh"]).success().stdout;
    assert!(zsh.starts_with("#compdef loopsy"), "{zsh}");
    let fish = loopsy_in(home.path(), &["generate", "completions", "fish"]).success().stdout;
    assert!(fish.contains("complete -c loopsy"), "{fish}");
    let man = loopsy_in(home.path(), &["generate", "man"]).success().stdout;
    assert!(man.starts_with(".TH") || man.contains("\n.TH"), "{}", &man[..200.min(man.len())]);
    loopsy_in(home.path(), &["generate", "completions", "tcsh"]).code(2).stderr_has("bash, zsh or fish");
    loopsy_in(home.path(), &["generate", "--help"]).success().stdout_has("completions");
    // README says how to install them.
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for line in [
        "loopsy generate completions bash",
        "loopsy generate completions zsh",
        "loopsy generate completions fish",
        "loopsy generate man",
    ] {
        assert!(readme.contains(line), "README shows `{line}`");
    }
}
