//! `init`, `start`, `stop`, `restart`, `status`, `key`, `logs`, config errors.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::support::{
    command, loopsy_bin, loopsy_in, run_within, wait_until, Daemon, Home, Request, TempDir, PROCESS_LIMIT,
};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_writes_a_private_config_with_a_fresh_64_hex_key_once() {
    let home = TempDir::new("init");
    loopsy_in(home.path(), &["init"]).success().stdout_has("loopsy initialized");
    let config = home.path().join("config.yaml");
    assert_eq!(mode(&config), 0o600, "the config holds secrets");
    assert_eq!(mode(home.path()), 0o700);
    let key = loopsy_in(home.path(), &["key", "show"]).success().stdout.trim().to_string();
    assert_eq!(key.len(), 64);
    assert!(key.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')), "{key}");
    let text = std::fs::read_to_string(&config).unwrap();
    for block in ["server:", "auth:", "execution:", "transfer:", "rateLimits:", "discovery:", "logging:"] {
        assert!(text.contains(block), "init writes the {block} block:\n{text}");
    }

    loopsy_in(home.path(), &["init"]).success().stdout_has("already initialized");
    assert_eq!(loopsy_in(home.path(), &["key", "show"]).success().stdout.trim(), key, "init is idempotent");

    loopsy_in(home.path(), &["init", "--force"]).success();
    let new_key = loopsy_in(home.path(), &["key", "show"]).success().stdout.trim().to_string();
    assert_ne!(new_key, key, "--force makes a new key");
    let backup = std::fs::read_to_string(home.path().join("config.yaml.bak")).unwrap();
    assert!(backup.contains(&key), "the old config is kept");
    assert_eq!(mode(&home.path().join("config.yaml.bak")), 0o600);
}

#[test]
fn start_runs_the_daemon_in_the_background_until_stop() {
    let home = Home::new("bg");
    let run = home.loopsy(&["start"]).success().stdout_has("loopsy daemon started");
    let info = home.runtime(None).expect("daemon.json is written");
    let url = info["url"].as_str().unwrap();
    assert!(run.stdout.contains(url), "start prints the URL: {}", run.stdout);

    let status = home.loopsy(&["status", "--json"]).success().json();
    assert_eq!(status["running"], true);
    assert_eq!(status["url"], url);
    assert_eq!(status["version"], "1.0.21", "the /status object itself, as 1.0.21 printed it");
    home.loopsy(&["status"]).success().stdout_has("loopsy daemon is running");
    home.loopsy(&["start"]).success().stdout_has("already running");

    let first_pid = info["pid"].as_u64().unwrap();
    home.loopsy(&["restart"]).success().stdout_has("loopsy daemon started");
    let second_pid = home.runtime(None).unwrap()["pid"].as_u64().unwrap();
    assert_ne!(first_pid, second_pid);

    home.loopsy(&["stop"]).success().stdout_has(&format!("stopped (PID {second_pid})"));
    assert!(home.runtime(None).is_none(), "daemon.json is removed on a clean stop");
    assert_eq!(home.loopsy(&["status", "--json"]).code(1).json()["running"], false);
    home.loopsy(&["stop"]).success().stdout_has("not running");
    let log = std::fs::read_to_string(home.path().join("logs/daemon.log")).unwrap();
    assert!(log.contains("listening on"), "the background daemon logs to logs/daemon.log:\n{log}");
}

#[test]
fn start_reports_why_the_daemon_could_not_start() {
    let blocker = Daemon::start("blocker");
    let home = Home::new("clash");
    let port = blocker.port.to_string();
    home.loopsy(&["start", "--port", &port]).code(2).stderr_has("cannot listen on 127.0.0.1:");
}

#[test]
fn the_node_id_is_stable_across_restarts() {
    let daemon = Daemon::start("stable");
    let first = daemon.get("/api/v1/health").expect(200)["nodeId"].clone();
    let daemon = daemon.restart();
    assert_eq!(daemon.get("/api/v1/health").expect(200)["nodeId"], first);
    assert_eq!(daemon.get("/api/v1/identity").expect(200)["nodeId"], first);
}

#[test]
fn a_second_daemon_on_the_same_home_is_refused() {
    let daemon = Daemon::start("twice");
    daemon.loopsy(&["start", "--foreground"]).code(2).stderr_has(&format!(
        "already running for {} (PID {})",
        daemon.home.path().display(),
        daemon.pid()
    ));
}

#[test]
fn stop_never_signals_a_process_a_stale_pid_file_names() {
    let home = Home::new("stale");
    let mut bystander = crate::support::command("sleep").arg("30").spawn().unwrap();
    std::fs::write(home.path().join("daemon.pid"), bystander.id().to_string()).unwrap();
    std::fs::write(home.path().join("daemon.lock"), "").unwrap();
    home.loopsy(&["stop"]).success().stdout_has("not running");
    assert!(bystander.try_wait().unwrap().is_none(), "the unrelated process was signalled");
    assert!(!home.path().join("daemon.pid").exists(), "the stale PID file is cleaned up");
    bystander.kill().unwrap();
    crate::support::wait_child(&mut bystander, Duration::from_secs(10));
}

#[test]
fn sigterm_stops_the_daemon_cleanly() {
    let mut daemon = Daemon::start("term");
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(daemon.home.runtime(None).is_none());
    daemon = daemon.restart();
    daemon.signal(libc::SIGINT);
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)), Some(0));
}

/// Starts a foreground daemon in `home` whose stderr is whatever `setup` leaves, and nothing
/// else of the harness attached; returns it once it answers.
fn start_bare(home: &Home, setup: impl FnOnce(&mut std::process::Command)) -> std::process::Child {
    let mut daemon = crate::support::command(crate::support::loopsy_bin());
    daemon.arg("--home").arg(home.path()).args(["start", "--foreground"]);
    daemon.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null());
    setup(&mut daemon);
    let mut child = daemon.spawn().expect("spawning the daemon");
    let pid = child.id();
    wait_until(Duration::from_secs(15), "the daemon listens", || {
        assert!(child.try_wait().unwrap().is_none(), "the daemon exited during start-up");
        home.runtime(Some(pid)).is_some()
    });
    let addr = home.runtime(Some(pid)).unwrap()["url"].as_str().unwrap().trim_start_matches("http://").to_string();
    // Requests, each logged at debug level, into a stderr that cannot take them.
    for _ in 0..3 {
        crate::support::Request::new(&addr, "GET", "/api/v1/health").send().expect(200);
    }
    child
}

/// SIGTERM, then the daemon must exit 0 and clean up after itself.
#[track_caller]
fn assert_stops_cleanly(home: &Home, mut child: std::process::Child) {
    // SAFETY: kill(2) on the child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = crate::support::wait_child(&mut child, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "the daemon stopped cleanly: {status}");
    assert!(home.runtime(None).is_none(), "daemon.json is removed");
    assert!(!home.path().join("daemon.pid").exists(), "daemon.pid is removed");
}

// See: #17 (the logger's eprintln! panicked on a closed stderr, and SIGTERM no longer stopped
// the daemon).
#[test]
fn a_daemon_whose_stderr_nobody_reads_still_stops_on_sigterm() {
    let home = Home::new("stderr-gone");
    home.edit_config(|doc| doc["logging"]["level"] = "debug".into());
    let mut child = start_bare(&home, |daemon| {
        daemon.stderr(std::process::Stdio::piped());
    });
    // The reading end goes away (a terminal closed, a starter that exited): writes get EPIPE.
    drop(child.stderr.take());
    for _ in 0..3 {
        let addr = home.runtime(None).unwrap()["url"].as_str().unwrap().trim_start_matches("http://").to_string();
        crate::support::Request::new(&addr, "GET", "/api/v1/health").send().expect(200);
    }
    assert_stops_cleanly(&home, child);
}

#[test]
fn a_daemon_started_without_a_stderr_logs_into_dev_null_and_stops_on_sigterm() {
    use std::os::unix::process::CommandExt;
    let home = Home::new("stderr-closed");
    home.edit_config(|doc| doc["logging"]["level"] = "debug".into());
    let child = start_bare(&home, |daemon| {
        // SAFETY: close(2) is async-signal-safe; the child has only its own descriptors here.
        unsafe {
            daemon.pre_exec(|| {
                libc::close(2);
                Ok(())
            });
        }
    });
    // Descriptor 2 is /dev/null (Rust's runtime opens it at start), not the first file the
    // daemon opened, where its logs would land.
    let stderr = std::fs::read_link(format!("/proc/{}/fd/2", child.id())).unwrap();
    assert_eq!(stderr, std::path::Path::new("/dev/null"));
    let config = std::fs::read_to_string(home.config_path()).unwrap();
    assert!(!config.contains("DEBUG"), "no log line went into the config: {config}");
    assert_stops_cleanly(&home, child);
}

#[track_caller]
fn check_config_error(yaml: &str, expect: &[&str]) {
    let home = Home::new("badconfig");
    std::fs::write(home.config_path(), yaml).unwrap();
    let run = home.loopsy(&["start", "--foreground"]).code(2);
    let config_path = home.config_path().display().to_string();
    for text in [config_path.as_str()].iter().chain(expect) {
        assert!(run.stderr.contains(text), "the error should mention {text:?}: {}", run.stderr);
    }
    home.loopsy(&["start"]).code(2).stderr_has(expect[0]);
}

#[test]
fn an_invalid_config_stops_the_daemon_with_an_error_naming_file_and_field() {
    let key = "0123456789abcdef0123456789abcdef";
    check_config_error("server: [unclosed\n", &["line 1"]);
    check_config_error("server:\n  port: 19532\n", &["auth.apiKey"]);
    check_config_error(&format!("auth:\n  apiKey: {key}\nserver:\n  port: high\n"), &["server.port", "invalid"]);
    check_config_error(
        &format!("auth:\n  apiKey: {key}\nexecution:\n  maxConcurrent: 0\n"),
        &["execution.maxConcurrent"],
    );
    check_config_error("", &["empty"]);
}

#[test]
fn commands_without_a_config_say_to_run_init() {
    let home = TempDir::new("noinit");
    for args in [&["start"][..], &["start", "--foreground"], &["status"], &["key", "show"]] {
        loopsy_in(home.path(), args).code(2).stderr_has("run `loopsy init` first");
    }
}

#[test]
fn unknown_config_keys_are_warned_about_not_fatal() {
    let home = Home::new("unknown");
    home.edit_config(|doc| doc["execution"]["maxConcurent"] = 3.into());
    let daemon = home.start();
    wait_until(Duration::from_secs(5), "the warning is logged", || {
        daemon.output_has("unknown key 'execution.maxConcurent'")
    });
}

#[test]
fn a_generated_key_takes_effect_without_a_restart() {
    let daemon = Daemon::start("rekey");
    let old_key = daemon.key.clone();
    daemon.loopsy(&["key", "generate"]).success().stdout_has("uses it now");
    let new_key = daemon.home.key();
    assert_ne!(new_key, old_key);
    daemon.anon("GET", "/api/v1/status").key(&old_key).send().expect_error(403, 1002);
    daemon.anon("GET", "/api/v1/status").key(&new_key).send().expect(200);
    assert_eq!(mode(&daemon.home.config_path()), 0o600);
}

#[test]
fn the_home_can_be_relocated_with_loopsy_home() {
    let home = TempDir::new("envhome");
    crate::support::run_within(
        crate::support::command(crate::support::loopsy_bin()).arg("init").env("LOOPSY_HOME", home.path()),
        crate::support::PROCESS_LIMIT,
    )
    .success();
    assert!(home.path().join("config.yaml").exists());
    assert!(home.path().join("node-id").exists());
}

#[test]
fn logs_prints_the_audit_log_and_the_daemon_log_and_follows() {
    let daemon = Daemon::start("logs");
    daemon.get("/api/v1/status").expect(200);
    // The foreground test daemon logs to stderr; the file belongs to background daemons.
    daemon.loopsy(&["logs", "--daemon"]).code(1).stderr_has("No logs found");
    std::fs::write(daemon.home.path().join("logs/daemon.log"), "first line\nsecond line\n").unwrap();
    let last = daemon.loopsy(&["logs", "--daemon", "-n", "1"]).success();
    assert_eq!(last.stdout, "second line\n");
    // Without a flag: the audit log, as 1.0.21's `loopsy logs` (and `--audit`, as before).
    wait_until(Duration::from_secs(5), "the audit line is written", || {
        daemon.loopsy(&["logs"]).stdout.contains("/api/v1/status")
    });
    let audit = daemon.loopsy(&["logs", "--audit"]).success();
    assert!(
        audit.stdout.lines().all(|line| serde_json::from_str::<serde_json::Value>(line).is_ok()),
        "{}",
        audit.stdout
    );
    daemon.loopsy(&["logs", "--audit", "--daemon"]).code(2).stderr_has("give one");

    let mut follower = crate::support::Background::spawn(daemon.home.path(), &["logs", "--audit", "-f", "-n", "0"]);
    // The follower prints only lines written after it started, and says nothing when it has:
    // request until one of the requests shows up.
    let mut followed = String::new();
    wait_until(Duration::from_secs(20), "a followed line", || {
        daemon.get("/api/v1/identity").expect(200);
        follower.try_line("/api/v1/identity", Duration::from_millis(200)).map(|line| followed = line).is_some()
    });
    assert!(followed.contains("/api/v1/identity"), "{followed}");
    assert!(follower.running(), "-f keeps following");
}

#[test]
fn every_command_has_help() {
    let home = TempDir::new("help");
    for args in [
        &["help"][..],
        &["init", "--help"],
        &["start", "--help"],
        &["stop", "--help"],
        &["restart", "--help"],
        &["status", "--help"],
        &["key", "--help"],
        &["key", "generate", "--help"],
        &["logs", "--help"],
    ] {
        let run = loopsy_in(home.path(), args).success();
        assert!(run.stdout.contains("Usage:"), "{args:?}: {}", run.stdout);
    }
    loopsy_in(home.path(), &["frobnicate"]).code(2).stderr_has("Unrecognized argument");
}

#[test]
fn a_background_daemon_does_not_keep_descriptors_its_starter_held() {
    // See: a build lock held by `flock … cargo …` stayed locked as long as daemons started under
    // it ran, because they inherited its descriptor.
    let home = Home::new("fds");
    let marker = home.path().join("held-open");
    let script = format!(
        "exec 7>'{}'; exec '{}' --home '{}' start",
        marker.display(),
        crate::support::loopsy_bin(),
        home.path().display()
    );
    crate::support::run_within(crate::support::command("sh").args(["-c", &script]), crate::support::PROCESS_LIMIT)
        .success();
    let pid = home.runtime(None).unwrap()["pid"].as_u64().unwrap();
    let fd7 = std::fs::read_link(format!("/proc/{pid}/fd/7"));
    // Stopped before asserting: a daemon left running would keep the descriptor held.
    home.loopsy(&["stop"]).success();
    assert!(fd7.map_or(true, |target| target != marker), "the daemon kept its starter's descriptor 7");
}

// See: #13 (item 10): `--home` on an existing directory deleted `tasks/`, `transfer/staging/`
// and unknown files in `transfer/journal/`, and made the directory 0700.
#[test]
fn a_home_that_already_holds_the_users_files_keeps_them_and_its_mode() {
    let dir = TempDir::new("home-existing");
    let root = dir.path().to_path_buf();
    let users_files = [
        "notes.txt",
        "tasks/todo.md",
        "tasks/0a1b2c3d-0000-4000-8000-00000000000z/plan.md",
        "tasks/project/src/main.rs",
        "transfer/staging/photo.jpg",
        "transfer/staging/.staged.other",
        "transfer/journal/readme.txt",
        "transfer/journal/ffff.json",
        "sessions/mine/file.txt",
        "logs/mine.log",
    ];
    for file in users_files {
        let path = root.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("the user's {file}")).unwrap();
    }
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(root.join("tasks"), std::fs::Permissions::from_mode(0o755)).unwrap();

    loopsy_in(&root, &["init"]).success();
    let home = Home { dir, name: "home-existing".into(), env: Vec::new() };
    home.edit_config(|doc| {
        doc["server"]["host"] = "127.0.0.1".into();
        doc["server"]["port"] = 0.into();
        doc["discovery"]["enabled"] = false.into();
    });
    let mut daemon = home.start();
    daemon.get("/api/v1/status").expect(200);
    daemon.stop(); // the daemon's exit cleans up its task directories too
    let mut daemon = daemon.restart();
    daemon.stop();
    daemon.home.loopsy(&["session", "remove", "mine"]).code(2).stderr_has("not a loopsy session");

    for file in users_files {
        let text = std::fs::read_to_string(root.join(file)).unwrap_or_else(|e| panic!("{file} was removed: {e}"));
        assert_eq!(text, format!("the user's {file}"));
    }
    assert_eq!(mode(&root), 0o755, "the directory's mode is the user's");
    assert_eq!(mode(&root.join("tasks")), 0o755);
    assert_eq!(mode(&root.join("config.yaml")), 0o600, "loopsy's own secrets are still private");
}

/// The executor threads of process `pid`. smol names them `smol-N`; a thread one of them
/// starts without a name inherits its name, so the distinct names are counted.
fn executor_threads(pid: u64) -> usize {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    let names: std::collections::BTreeSet<String> = tasks
        .filter_map(|task| std::fs::read_to_string(task.unwrap().path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .filter(|name| name.starts_with("smol-"))
        .collect();
    names.len()
}

#[test]
fn the_daemon_runs_one_executor_thread_unless_its_user_sets_smol_threads() {
    let home = Home::new("threads");
    let key = home.key();
    // `smol_threads`: the variable as the user's shell has it when they run `loopsy start`.
    let start = |smol_threads: Option<&str>| {
        let mut start = command(loopsy_bin());
        match smol_threads {
            Some(threads) => start.env("SMOL_THREADS", threads),
            None => start.env_remove("SMOL_THREADS"),
        };
        run_within(start.arg("--home").arg(home.path()).arg("start"), PROCESS_LIMIT).success();
        let info = home.runtime(None).expect("daemon.json");
        let pid = info["pid"].as_u64().unwrap();
        let env = Request::new(&format!("127.0.0.1:{}", info["port"]), "POST", "/api/v1/execute")
            .key(&key)
            .json(&serde_json::json!({"command": "env"}))
            .send()
            .expect(200)["stdout"]
            .as_str()
            .unwrap()
            .to_string();
        (executor_threads(pid), env)
    };

    // The CLI that starts it gives itself a thread per core (at least 2): its daemon still has one.
    let (threads, env) = start(None);
    assert_eq!(threads, 1, "the daemon's executor threads");
    assert!(!env.contains("SMOL_THREADS"), "loopsy's own tuning is not the job's: {env}");
    home.loopsy(&["stop"]).success();

    // The user's choice stands, for the daemon and (like any variable of theirs) its jobs.
    let (threads, env) = start(Some("3"));
    assert_eq!(threads, 3, "the daemon's executor threads");
    assert!(env.lines().any(|line| line == "SMOL_THREADS=3"), "{env}");
    assert!(!env.contains("LOOPSY_"), "{env}");
    home.loopsy(&["stop"]).success();
}
