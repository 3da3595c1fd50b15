//! The harness's own guarantees, each with a check that can fail: no test touches the real home
//! or runs a real agent CLI, a missing prerequisite is loud, every HTTP read is bounded and a
//! cut body or stream is an error, and the test files keep the harness's rules.
//!
//! Two tests start this very test binary again (one test, as a child process) in an
//! environment they prepare: the child recognises itself by `LOOPSY_HARNESS_CHILD`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::support::http::StreamError;
use crate::support::mcp_stdio::McpServer;
use crate::support::{
    command, loopsy_bin, path_with, run_within, skip, test_name, wait_until, Background, Daemon, Home, Request, Run,
    TempDir, UserHome,
};

/// What a child run of this binary is for, if this process is one.
fn child_role() -> Option<String> {
    std::env::var("LOOPSY_HARNESS_CHILD").ok()
}

/// Runs the test `name` of this binary alone, in `env` on top of a cleared environment.
fn run_child(name: &str, env: &[(&str, &std::ffi::OsStr)]) -> Run {
    let binary = std::env::current_exe().expect("the test binary");
    let mut child = command(binary);
    child.env_clear().args(["--exact", name, "--nocapture", "--test-threads=1"]);
    for (key, value) in env {
        child.env(key, value);
    }
    run_within(&mut child, Duration::from_secs(300))
}

// ---- Isolation ----

/// The agent config files and the loopsy home of a made-up developer, with their bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut found = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap().flatten() {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                found.insert(path.clone(), None);
                pending.push(path);
            } else {
                found.insert(path.clone(), Some(std::fs::read(&path).unwrap()));
            }
        }
    }
    found
}

/// A stand-in agent CLI that logs every call (`<name> <args>`) to `log` and succeeds.
fn logging_stand_in(bin: &Path, name: &str, log: &Path) {
    let path = bin.join(name);
    std::fs::write(&path, format!("#!/bin/sh\necho \"{name} $*\" >> '{}'\nexit 0\n", log.display())).unwrap();
    let mut permissions = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&path, permissions).unwrap();
}

#[test]
fn the_harness_never_touches_the_real_home_or_runs_a_real_agent() {
    if child_role().as_deref() == Some("sentinel") {
        return exercise_the_harness();
    }
    // A developer's machine: agent configs and a loopsy home in HOME, the three agent CLIs on
    // PATH (stand-ins that log every call), and loopsy's and the agents' variables exported.
    let sentinel = TempDir::new("sentinel");
    let (home, bin, log) = (sentinel.path().join("home"), sentinel.path().join("bin"), sentinel.path().join("calls"));
    for (file, text) in [
        (".claude.json", r#"{"numStartups": 7, "mcpServers": {"mine": {"command": "x"}}}"#),
        (".claude/settings.json", r#"{"hooks": {}}"#),
        (".gemini/settings.json", r#"{"theme": "dark", "mcpServers": {}}"#),
        (".codex/config.toml", "model = \"o3\"\n"),
        (".loopsy/config.yaml", "auth:\n  apiKey: the-developers-own-key\n"),
        (".config/systemd/user/other.service", "[Unit]\nDescription=someone else's\n"),
    ] {
        let path = home.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    std::fs::create_dir_all(&bin).unwrap();
    for agent in crate::support::isolation::AGENT_CLIS {
        logging_stand_in(&bin, agent, &log);
    }
    // The stand-ins log (else "never called" below would prove nothing).
    run_within(command(bin.join("claude")).arg("--version"), Duration::from_secs(30)).success();
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "claude --version\n");
    std::fs::remove_file(&log).unwrap();

    let before = snapshot(&home);
    // The developer's PATH, as the test process got it, behind the agent CLIs.
    let developer_path = std::env::var_os(["PA", "TH"].concat()).unwrap_or_default();
    let path =
        std::env::join_paths(std::iter::once(bin.clone()).chain(std::env::split_paths(&developer_path))).unwrap();
    let loopsy_home = home.join(".loopsy");
    let child = run_child(
        &test_name(),
        &[
            ("LOOPSY_HARNESS_CHILD", "sentinel".as_ref()),
            ("LOOPSY_SENTINEL_BIN", bin.as_os_str()),
            ("HOME", home.as_os_str()),
            ("PATH", &path),
            ("XDG_CONFIG_HOME", home.join(".config").as_os_str()),
            ("CODEX_HOME", home.join(".codex").as_os_str()),
            ("CLAUDE_CONFIG_DIR", home.join(".claude").as_os_str()),
            ("GEMINI_CLI_HOME", home.as_os_str()),
            ("LOOPSY_HOME", loopsy_home.as_os_str()),
            ("LOOPSY_API_KEY", "the-developers-own-key".as_ref()),
            ("ANTHROPIC_API_KEY", "sk-the-developers-own".as_ref()),
            ("TMPDIR", std::env::temp_dir().as_os_str()),
        ],
    );
    assert_eq!(child.code, 0, "the child run failed:\n{}\n{}", child.stdout, child.stderr);
    assert!(child.stdout.contains("1 passed"), "the child ran the exercise: {}", child.stdout);

    let after = snapshot(&home);
    for (path, content) in &before {
        assert_eq!(after.get(path), Some(content), "{} was changed or removed", path.display());
    }
    let added: Vec<&PathBuf> = after.keys().filter(|path| !before.contains_key(*path)).collect();
    assert!(added.is_empty(), "the tests created {added:?} in the real home");
    // Only the calls the exercise asked for: `mcp add` with the stand-ins put on PATH on purpose.
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    let mut calls: Vec<&str> = calls.lines().collect();
    calls.sort();
    assert_eq!(calls.len(), 6, "{calls:#?}");
    for agent in crate::support::isolation::AGENT_CLIS {
        assert!(calls.iter().any(|c| c.starts_with(&format!("{agent} mcp add"))), "{agent}: {calls:#?}");
        assert!(calls.iter().any(|c| c.starts_with(&format!("{agent} mcp remove"))), "{agent}: {calls:#?}");
    }
}

/// The child's part: what tests do every day, under the made-up developer's environment.
fn exercise_the_harness() {
    let sentinel_bin = PathBuf::from(std::env::var_os("LOOPSY_SENTINEL_BIN").expect("set by the parent"));
    // `init` (registers with every agent it finds), `mcp add`, `mcp status`, a CLI in the
    // background, the MCP server.
    let home = Home::new("sentinel-init");
    let add = home.loopsy(&["mcp", "add"]);
    assert!(add.stdout.contains("No AI coding agent found"), "no agent is found: {add:?}");
    home.loopsy(&["mcp", "status"]).success();
    let (code, _) = Background::spawn(home.path(), &["status"]).wait(Duration::from_secs(60));
    assert_eq!(code, 1, "no daemon runs");
    // An AI task with the default PATH: no agent CLI is found at all...
    let daemon = home.start();
    let res = daemon.req("POST", "/api/v1/ai-tasks").json(&json!({"prompt": "hello", "cwd": "/"})).send();
    assert_eq!(res.status, 400, "{}", res.text());
    let mut server = McpServer::spawn(daemon.home.path());
    server.ok("loopsy_list_peers", json!({}));
    drop(server);
    drop(daemon);
    // ...and with the test's stand-ins asked for, those run (not the machine's).
    let mut with_agents = Home::new("sentinel-task");
    with_agents.with_stand_in_agents();
    let with_agents_home = Home::new("sentinel-register");
    let daemon = with_agents.start();
    let task = daemon.req("POST", "/api/v1/ai-tasks").json(&json!({"prompt": "hello", "agent": "claude", "cwd": "/"}));
    let id = task.send().expect(201)["taskId"].as_str().unwrap().to_string();
    wait_until(Duration::from_secs(30), "the stand-in task completes", || {
        daemon.get(&format!("/api/v1/ai-tasks/{id}")).expect(200)["status"] == "completed"
    });
    // Where a test does ask for the machine's agent CLIs (here, the sentinel's), they are used.
    let user = TempDir::new("sentinel-user");
    run_within(
        command(loopsy_bin())
            .arg("--home")
            .arg(with_agents_home.path())
            .args(["mcp", "add"])
            .user_home(user.path())
            .env("PATH", path_with(&[&sentinel_bin])),
        Duration::from_secs(60),
    )
    .success();
}

#[test]
fn every_process_gets_the_sandbox_environment() {
    let sandbox = crate::support::isolation::sandbox();
    let env = run_within(command("env").env("LOOPSY_EXTRA", "given"), Duration::from_secs(30)).success();
    let vars: BTreeMap<&str, &str> = env.stdout.lines().filter_map(|l| l.split_once('=')).collect();
    let home = sandbox.home();
    assert_eq!(vars.get("HOME").copied(), home.to_str());
    for (name, under) in [
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_DATA_HOME", ".local/share"),
        ("XDG_STATE_HOME", ".local/state"),
        ("XDG_CACHE_HOME", ".cache"),
        ("CODEX_HOME", ".codex"),
        ("CLAUDE_CONFIG_DIR", ".claude"),
    ] {
        assert_eq!(vars.get(name).copied(), home.join(under).to_str(), "{name}");
    }
    assert_eq!(vars.get("GEMINI_CLI_HOME").copied(), home.to_str());
    assert_eq!(vars.get("XDG_RUNTIME_DIR").copied(), sandbox.runtime_dir().to_str());
    assert_eq!(vars.get("LOOPSY_EXTRA").copied(), Some("given"));
    let leaked: Vec<&&str> = vars
        .keys()
        .filter(|name| {
            name.starts_with("LOOPSY_HOME")
                || name.starts_with("LOOPSY_API")
                || name.starts_with("ANTHROPIC")
                || name.starts_with("OPENAI")
                || name.starts_with("GEMINI_API")
                || name.starts_with("DBUS")
        })
        .collect();
    assert!(leaked.is_empty(), "{leaked:?} crossed into a test process");
    for dir in std::env::split_paths(vars["PATH"]) {
        for agent in crate::support::isolation::AGENT_CLIS {
            assert!(!dir.join(agent).exists(), "{agent} is reachable through {}", dir.display());
        }
    }
}

#[test]
fn the_running_test_is_known_by_name() {
    assert_eq!(test_name(), "harness::the_running_test_is_known_by_name");
}

// ---- Loud skips ----

#[test]
fn a_missing_prerequisite_fails_under_ci_and_is_counted_otherwise() {
    if child_role().as_deref() == Some("skip") {
        skip("a prerequisite this test made up is missing");
        return;
    }
    let records = TempDir::new("skip-records");
    let name = test_name();
    let strict = run_child(
        &name,
        &[
            ("LOOPSY_HARNESS_CHILD", "skip".as_ref()),
            ("CI", "true".as_ref()),
            ("LOOPSY_SKIP_RECORDS", records.path().as_os_str()),
        ],
    );
    assert_ne!(strict.code, 0, "under CI a skip fails: {strict:?}");
    assert!(strict.stdout.contains("1 failed"), "{strict:?}");
    assert!(
        strict.stderr.contains("a prerequisite is missing and CI is set") || strict.stdout.contains("CI is set"),
        "{strict:?}"
    );
    let loud = run_child(
        &name,
        &[("LOOPSY_HARNESS_CHILD", "skip".as_ref()), ("LOOPSY_SKIP_RECORDS", records.path().as_os_str())],
    );
    assert_eq!(loud.code, 0, "{loud:?}");
    let said = format!("SKIPPED: {name}: a prerequisite this test made up is missing");
    assert!(loud.stderr.contains(&said), "the skip is printed: {loud:?}");
    assert!(loud.stderr.contains("1 test(s) SKIPPED"), "and counted at the end of the run: {loud:?}");
    let recorded: Vec<String> = std::fs::read_dir(records.path())
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(recorded, [format!("{name}: a prerequisite this test made up is missing\n")]);
}

#[test]
fn a_hanging_test_is_stopped_by_the_watchdog_with_everything_it_started() {
    if child_role().as_deref() == Some("hang") {
        let daemon = Daemon::start("watchdog");
        eprintln!("daemon pid {}", daemon.pid());
        loop {
            std::thread::park();
        }
    }
    let run =
        run_child(&test_name(), &[("LOOPSY_HARNESS_CHILD", "hang".as_ref()), ("LOOPSY_TEST_TIMEOUT", "3".as_ref())]);
    assert_ne!(run.code, 0, "{run:?}");
    let said = format!("watchdog: test {} is still running after 3s", test_name());
    assert!(run.stderr.contains(&said), "{run:?}");
    let pid: i32 = run
        .stderr
        .lines()
        .find_map(|line| line.strip_prefix("daemon pid "))
        .unwrap_or_else(|| panic!("the child started a daemon: {run:?}"))
        .parse()
        .unwrap();
    // SAFETY: signal 0 only checks whether the process exists.
    wait_until(Duration::from_secs(10), "the hung test's daemon is gone", || unsafe { libc::kill(pid, 0) } != 0);
}

#[test]
fn node_versions_are_compared_with_the_engines_range() {
    use crate::support::skip::node_satisfies;
    assert!(node_satisfies("20.20.2", ">=18"));
    assert!(node_satisfies("18.20.4", ">=18"));
    assert!(!node_satisfies("18.20.4", ">=20"));
    assert!(node_satisfies("20.0.0", ">=20"));
    assert!(!node_satisfies("16.9.1", ">=16.10"));
}

// ---- Bounded, strict HTTP ----

/// A one-shot server on loopback: writes `reply` to the first connection, then `end`s it.
fn one_shot(reply: &'static [u8], end: End) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let (mut client, _) = listener.accept().unwrap();
        let mut request = [0u8; 4096];
        let _ = client.read(&mut request);
        client.write_all(reply).unwrap();
        match end {
            End::Close => drop(client),
            End::Reset => {
                // SO_LINGER 0: close sends a RST instead of a FIN.
                let linger = libc::linger { l_onoff: 1, l_linger: 0 };
                // SAFETY: setsockopt on a socket this thread owns, with a valid linger struct.
                unsafe {
                    libc::setsockopt(
                        std::os::unix::io::AsRawFd::as_raw_fd(&client),
                        libc::SOL_SOCKET,
                        libc::SO_LINGER,
                        (&linger as *const libc::linger).cast(),
                        std::mem::size_of::<libc::linger>() as libc::socklen_t,
                    );
                }
                drop(client);
            }
            // Silent until the client goes away.
            End::Stall => drop(client.read_to_end(&mut Vec::new())),
        }
    });
    addr
}

#[derive(Clone, Copy)]
enum End {
    Close,
    Reset,
    Stall,
}

fn get(addr: &str) -> Request {
    Request::new(addr, "GET", "/").timeout(Duration::from_millis(500))
}

#[test]
fn a_truncated_body_is_an_error_not_a_short_body() {
    let short = one_shot(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345", End::Close);
    let error = get(&short).try_send().unwrap_err();
    assert!(error.to_string().contains("5 of 10 bytes"), "{error}");
    let unfinished = one_shot(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", End::Close);
    let error = get(&unfinished).try_send().unwrap_err();
    assert!(error.to_string().contains("last chunk"), "{error}");
    let cut_chunk = one_shot(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nhel", End::Close);
    assert!(get(&cut_chunk).try_send().is_err());
    let whole = one_shot(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", End::Stall);
    assert_eq!(get(&whole).send().body, b"hello", "a complete chunked body ends at its last chunk");
}

#[test]
fn a_silent_server_times_out_instead_of_hanging() {
    let silent = one_shot(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12", End::Stall);
    let started = std::time::Instant::now();
    let error = get(&silent).try_send().unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::TimedOut, "{error}");
    assert!(started.elapsed() < Duration::from_secs(20), "bounded by the request's timeout");
}

const EVENT_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";

fn event_stream(rest: &'static [u8], end: End) -> crate::support::http::Stream {
    let reply: &'static [u8] = [EVENT_HEAD, rest].concat().leak();
    get(&one_shot(reply, end)).stream()
}

#[test]
fn an_event_stream_tells_its_clean_end_from_a_timeout_a_reset_and_a_cut() {
    let mut clean = event_stream(b"d\r\ndata: first\n\n\r\n0\r\n\r\n", End::Stall);
    assert_eq!(clean.next_event().unwrap().data, "first");
    clean.expect_end();

    let mut stalled = event_stream(b"d\r\ndata: first\n\n\r\n", End::Stall);
    assert_eq!(stalled.next_event().unwrap().data, "first");
    assert!(matches!(stalled.try_next_event(), Err(StreamError::TimedOut(_))));

    let mut cut = event_stream(b"d\r\ndata: first\n\n\r\n", End::Close);
    assert_eq!(cut.next_event().unwrap().data, "first");
    assert!(matches!(cut.try_next_event(), Err(StreamError::Cut(_))));

    let mut reset = event_stream(b"d\r\ndata: first\n\n\r\n", End::Reset);
    // The reset may come before the event is read; either way it is never a clean end.
    let outcome = match reset.try_next_event() {
        Ok(Some(_)) => reset.try_next_event(),
        other => other,
    };
    assert!(matches!(outcome, Err(StreamError::Reset(_))), "{outcome:?}");

    let mut half = event_stream(b"6\r\ndata: \r\n0\r\n\r\n", End::Stall);
    assert!(matches!(half.try_next_event(), Err(StreamError::Cut(_))), "an event cut in its middle");
}

// ---- The rules of the test files ----

/// What no test file may contain, outside `tests/support` (and why). Spelled in pieces so this
/// file does not match itself.
fn rules() -> Vec<(String, &'static str)> {
    vec![
        (["Command", "::new("].concat(), "start processes with support::command (isolation)"),
        (["var(\"", "PATH\")"].concat(), "use support::path_with, not the developer's PATH"),
        (["var_os(\"", "PATH\")"].concat(), "use support::path_with, not the developer's PATH"),
        (["var(\"", "HOME\")"].concat(), "never read the developer's HOME"),
        (["var_os(\"", "HOME\")"].concat(), "never read the developer's HOME"),
        (["var(\"", "CI\")"].concat(), "skip with support::skip / prerequisite"),
        (["thread::", "sleep("].concat(), "wait for a condition (support::wait_until), never a fixed sleep"),
        ([".output", "()"].concat(), "bounded waits: support::run_within"),
        ([".status", "()"].concat(), "bounded waits: support::run_within"),
        ([".wait", "()"].concat(), "bounded waits: support::wait_child or reap"),
        ([".wait_with", "_output("].concat(), "bounded waits: support::run_within"),
        (["eprintln!(\"", "skip"].concat(), "skip loudly with support::skip"),
        (["eprintln!(\"", "SKIP"].concat(), "skip loudly with support::skip"),
    ]
}

#[test]
fn tests_follow_the_harness_rules() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut files = Vec::new();
    let mut pending = vec![root.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path != root.join("support") && !path.ends_with("node_modules") {
                    pending.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    assert!(files.len() > 10, "the test files are found: {files:?}");
    let mut broken = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (number, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for (pattern, why) in rules() {
                if line.contains(&pattern) {
                    broken.push(format!("{}:{}: `{pattern}`: {why}", file.display(), number + 1));
                }
            }
        }
    }
    assert!(broken.is_empty(), "tests/support/mod.rs describes the rules:\n{}", broken.join("\n"));
}

#[test]
fn the_rules_catch_what_they_are_about() {
    let offending =
        format!("    let out = std::process::{}(\"x\"){};", ["Command", "::new"].concat(), [".output", "()"].concat());
    let hits: Vec<&str> = rules().iter().filter(|(p, _)| offending.contains(p.as_str())).map(|(_, why)| *why).collect();
    assert_eq!(hits.len(), 2, "{hits:?}");
    // And a sleeping test would be caught too.
    let sleeping = ["std::thread::", "sleep(d)"].concat();
    assert!(rules().iter().any(|(p, _)| sleeping.contains(p.as_str())));
}
