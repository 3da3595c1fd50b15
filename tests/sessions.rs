//! Sessions: extra daemons in `<home>/sessions/<name>/` (`loopsy session …`, §9.5).
//!
//! Each test picks a random high base port (`sessions.basePort`) so parallel tests and a real
//! daemon on 19533 do not collide; the sessions module skips ports that do not bind anyway.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::support::mcp_stdio::McpServer;
use crate::support::{loopsy_in, wait_until, Daemon, Home};

/// A home whose sessions start from a random base port, stopped on drop.
pub struct Fleet {
    pub home: PathBuf,
}

impl Fleet {
    pub fn configure(home: &Home) {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let base = 20_000 + (nanos ^ std::process::id()) % 9_000;
        home.edit_config(|doc| doc["sessions"]["basePort"] = (base as u64).into());
    }

    pub fn new(home: &Path) -> Fleet {
        Fleet { home: home.to_path_buf() }
    }

    pub fn list(&self) -> Value {
        loopsy_in(&self.home, &["session", "list", "--json"]).success().json()
    }

    pub fn session(&self, name: &str) -> Value {
        let list = self.list();
        list["sessions"].as_array().unwrap().iter().find(|s| s["name"] == name).cloned().unwrap_or(Value::Null)
    }

    pub fn dir(&self, name: &str) -> PathBuf {
        self.home.join("sessions").join(name)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = loopsy_in(&self.home, &["session", "stop-all"]);
    }
}

fn main_with_fleet(label: &str) -> (Daemon, Fleet) {
    let home = Home::new(label);
    Fleet::configure(&home);
    let daemon = home.start();
    let fleet = Fleet::new(daemon.home.path());
    (daemon, fleet)
}

#[test]
fn a_fleet_of_three_runs_commands_across_workers_and_stops() {
    let (main, fleet) = main_with_fleet("fleet");
    main.loopsy(&["session", "start-fleet", "--count", "3"])
        .success()
        .stdout_has("Starting session 1/3...")
        .stdout_has("Fleet of 3 sessions started.");

    let hostname = main.get("/api/v1/identity").expect(200)["hostname"].as_str().unwrap().to_string();
    let list = fleet.list();
    assert_eq!(list["main"]["status"], "running");
    assert_eq!(list["main"]["port"], main.port);
    let sessions = list["sessions"].as_array().unwrap();
    let names: Vec<&str> = sessions.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["worker-1", "worker-2", "worker-3"]);
    let mut ports: Vec<u64> = sessions.iter().map(|s| s["port"].as_u64().unwrap()).collect();
    for (i, session) in sessions.iter().enumerate() {
        assert_eq!(session["status"], "running", "{session}");
        assert_eq!(session["hostname"], format!("{hostname}-worker-{}", i + 1));
        assert!(session["pid"].as_u64().unwrap() > 0);
    }
    ports.dedup();
    assert_eq!(ports.len(), 3, "distinct ports: {ports:?}");

    // The main daemon knows every worker by name, and workers know each other.
    let peers = main.get("/api/v1/peers").expect(200);
    let mut known: Vec<&str> = peers["peers"].as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
    known.sort();
    assert_eq!(known, ["worker-1", "worker-2", "worker-3"]);
    loopsy_in(&fleet.dir("worker-1"), &["exec", "worker-2", "echo", "hi"]).success().stdout_has("hi");
    loopsy_in(&fleet.dir("worker-3"), &["exec", "main", "echo", "from-3"]).success().stdout_has("from-3");

    main.loopsy(&["session", "stop", "worker-2"]).success().stdout_has("Session \"worker-2\" stopped (PID");
    assert_eq!(fleet.session("worker-2")["status"], "stopped");
    main.loopsy(&["session", "status", "worker-2"]).code(1).stdout_has("is not running");
    let status = main.loopsy(&["session", "status", "worker-1"]).success().json();
    assert_eq!(status["hostname"], format!("{hostname}-worker-1"));
    main.loopsy(&["session", "stop", "worker-2"]).success().stdout_has("is not running");

    main.loopsy(&["session", "stop-all"]).success().stdout_has("Stopped 2 session(s)");
    let list = fleet.list();
    assert!(list["sessions"].as_array().unwrap().iter().all(|s| s["status"] == "stopped"), "{list}");
    main.loopsy(&["session", "list"]).success().stdout_has("worker-3").stdout_has("stopped");
}

#[test]
fn a_fleet_of_twenty_starts_and_stops_cleanly() {
    let (main, fleet) = main_with_fleet("fleet20");
    main.loopsy(&["session", "start-fleet", "--count", "20"]).success().stdout_has("Fleet of 20 sessions started.");
    let list = fleet.list();
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 20);
    assert!(sessions.iter().all(|s| s["status"] == "running"), "{list}");
    let mut ports: Vec<u64> = sessions.iter().map(|s| s["port"].as_u64().unwrap()).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 20, "distinct ports");
    let pids: Vec<u64> = sessions.iter().map(|s| s["pid"].as_u64().unwrap()).collect();
    // Every session answers, and knows the others by name.
    let peers = loopsy_in(&fleet.dir("worker-20"), &["peers", "--json"]).success().json();
    let named = peers["peers"].as_array().map_or(0, |p| p.iter().filter(|p| p["name"].is_string()).count());
    assert!(named >= 20, "worker-20 knows the main daemon and the other 19: {peers}");

    main.loopsy(&["session", "stop-all"]).success().stdout_has("Stopped 20 session(s)");
    let list = fleet.list();
    assert!(list["sessions"].as_array().unwrap().iter().all(|s| s["status"] == "stopped"), "{list}");
    for pid in pids {
        // Gone, or a zombie waiting for whoever adopted it to reap it.
        let gone = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_or(true, |stat| stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'));
        assert!(gone, "session process {pid} is gone");
    }
    for i in 1..=20 {
        let dir = fleet.dir(&format!("worker-{i}"));
        assert!(!dir.join("daemon.json").exists() && !dir.join("daemon.pid").exists(), "worker-{i} cleaned up");
    }
    main.get("/api/v1/health").expect(200);
}

/// Local sessions learn each other's liveness from the kernel (the instance lock and a pidfd of
/// its holder), not from HTTP probes: with a ten-minute health interval, where polling would take
/// half an hour to notice, a killed session is offline for its peers within seconds.
#[test]
fn a_killed_session_is_offline_for_its_peers_at_once_and_online_again_after_a_restart() {
    let home = Home::new("fleetlive");
    Fleet::configure(&home);
    home.edit_config(|doc| doc["discovery"]["healthInterval"] = 600_000u64.into());
    let main = home.start();
    let fleet = Fleet::new(main.home.path());
    main.loopsy(&["session", "start-fleet", "--count", "3"]).success();
    let status_seen_by = |home: &Path, name: &str| -> String {
        let peers = loopsy_in(home, &["peers", "--json"]).success().json();
        let peer = peers["peers"].as_array().and_then(|p| p.iter().find(|p| p["name"] == name).cloned());
        peer.and_then(|p| p["status"].as_str().map(str::to_string)).unwrap_or_default()
    };
    let (w1, main_home) = (fleet.dir("worker-1"), main.home.path().to_path_buf());
    let online = |name: &str| status_seen_by(&w1, name) == "online" && status_seen_by(&main_home, name) == "online";
    wait_until(Duration::from_secs(20), "worker-1 and main see worker-2 and worker-3 online", || {
        online("worker-2") && status_seen_by(&w1, "worker-3") == "online"
    });

    for round in 0..2 {
        let pid = fleet.session("worker-2")["pid"].as_u64().unwrap() as i32;
        // SAFETY: kill(2) on a session daemon this test started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        wait_until(Duration::from_secs(20), "worker-1 and main see the killed worker-2 offline", || {
            status_seen_by(&w1, "worker-2") == "offline" && status_seen_by(&main_home, "worker-2") == "offline"
        });
        assert_eq!(status_seen_by(&w1, "worker-3"), "online", "round {round}: the others stay online");
        main.loopsy(&["session", "start", "worker-2"]).success().stdout_has("started");
        wait_until(Duration::from_secs(20), "the restarted worker-2 is online again", || online("worker-2"));
    }
    main.loopsy(&["session", "stop-all"]).success().stdout_has("Stopped 3 session(s)");
    wait_until(Duration::from_secs(20), "main sees the stopped sessions offline", || {
        (1..=3).all(|i| status_seen_by(&main_home, &format!("worker-{i}")) == "offline")
    });
}

#[test]
fn hostile_session_names_are_refused_and_nothing_outside_is_touched() {
    let home = Home::new("hostile");
    let victim = home.path().join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("precious"), "keep").unwrap();
    std::fs::create_dir_all(home.path().join("sessions")).unwrap();
    std::os::unix::fs::symlink(&victim, home.path().join("sessions/evil")).unwrap();

    let long = "x".repeat(65);
    for name in ["..", "../x", "../victim", "a/b", "", long.as_str(), ".", "main", "a b"] {
        for command in ["start", "stop", "remove", "status"] {
            home.loopsy(&["session", command, name]).code(2).stderr_has("invalid session name");
        }
    }
    home.loopsy(&["session", "remove", "evil"]).code(2).stderr_has("symlink");
    home.loopsy(&["session", "start", "evil"]).code(2).stderr_has("symlink");
    assert_eq!(std::fs::read_to_string(victim.join("precious")).unwrap(), "keep");
    assert!(home.config_path().exists());
    let entries: Vec<String> = std::fs::read_dir(home.path().join("sessions"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".lock")
        .collect();
    assert_eq!(entries, ["evil"], "nothing was created in the sessions directory");
    home.loopsy(&["session", "list"]).success().stdout_has("No sessions found");
}

#[test]
fn concurrent_starts_get_distinct_ports() {
    let home = Home::new("concurrent");
    Fleet::configure(&home);
    let fleet = Fleet::new(home.path());
    let starts: Vec<crate::support::Background> = (1..=4)
        .map(|i| crate::support::Background::spawn(home.path(), &["session", "start", &format!("s{i}")]))
        .collect();
    for start in starts {
        let (code, output) = start.wait(Duration::from_secs(60));
        assert_eq!(code, 0, "{output:?}");
    }
    let list = fleet.list();
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 4);
    let mut ports: Vec<u64> = sessions.iter().map(|s| s["port"].as_u64().unwrap()).collect();
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 4, "{list}");
    assert!(sessions.iter().all(|s| s["status"] == "running"), "{list}");
    assert!(list["main"]["status"] == "stopped", "no main daemon runs: {list}");
}

#[test]
fn a_killed_session_shows_as_crashed_and_restarts_on_its_port() {
    let home = Home::new("crash");
    Fleet::configure(&home);
    let fleet = Fleet::new(home.path());
    home.loopsy(&["session", "start", "w1"]).success().stdout_has("Session \"w1\" started");
    home.loopsy(&["session", "start", "w1"]).success().stdout_has("already running");
    let before = fleet.session("w1");
    let pid = before["pid"].as_u64().unwrap() as i32;
    // SAFETY: kill(2) on the session daemon this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    wait_until(Duration::from_secs(10), "the session shows as crashed", || fleet.session("w1")["status"] == "crashed");
    home.loopsy(&["session", "list"]).success().stdout_has("crashed");
    home.loopsy(&["session", "remove", "w1"]).success();
    assert!(!fleet.dir("w1").exists());

    home.loopsy(&["session", "start", "w1"]).success();
    let first = fleet.session("w1");
    home.loopsy(&["session", "remove", "w1"]).code(2).stderr_has("still running. Stop it first");
    let pid = first["pid"].as_u64().unwrap() as i32;
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    wait_until(Duration::from_secs(10), "the session shows as crashed", || fleet.session("w1")["status"] == "crashed");
    home.loopsy(&["session", "start", "w1"]).success().stdout_has("started");
    let again = fleet.session("w1");
    assert_eq!(again["status"], "running");
    assert_ne!(again["pid"], first["pid"]);
    assert_eq!(again["port"], first["port"], "a restarted session keeps its port");
    home.loopsy(&["session", "stop", "w1"]).success();
    home.loopsy(&["session", "remove", "w1"]).success().stdout_has("Session \"w1\" removed");
    assert!(!fleet.dir("w1").exists());
    home.loopsy(&["session", "remove", "w1"]).code(2).stderr_has("no session named");
}

#[test]
fn session_start_needs_the_main_config() {
    let dir = crate::support::TempDir::new("noconfig");
    loopsy_in(dir.path(), &["session", "start", "w1"]).code(2).stderr_has("loopsy init");
}

/// `loopsy mcp serve` for a data directory (the harness's bounded client).
struct Mcp(McpServer);

impl Mcp {
    fn start(home: &Path) -> Mcp {
        Mcp(McpServer::spawn(home))
    }

    fn request(&mut self, method: &str, params: Value) -> Value {
        self.0.request(method, params)
    }

    /// Calls a tool; returns (is_error, text).
    fn call(&mut self, tool: &str, arguments: Value) -> (bool, String) {
        let (text, is_error) = self.0.tool(tool, arguments);
        (is_error, text)
    }
}

#[test]
fn mcp_session_tools_start_list_stop_and_remove_sessions() {
    let (main, fleet) = main_with_fleet("mcp-sessions");
    let mut mcp = Mcp::start(main.home.path());
    let tools = mcp.request("tools/list", serde_json::json!({}));
    let names: Vec<&str> =
        tools["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    for tool in ["loopsy_session_list", "loopsy_session_start", "loopsy_session_stop", "loopsy_session_remove"] {
        assert!(names.contains(&tool), "{tool} missing from {names:?}");
    }

    let (error, text) = mcp.call("loopsy_session_start", serde_json::json!({"name": "m1"}));
    assert!(!error, "{text}");
    let session: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(session["name"], "m1");
    assert_eq!(session["status"], "running");
    assert!(text.contains("\n  \"port\""), "pretty JSON: {text}");
    assert_eq!(fleet.session("m1")["port"], session["port"]);

    let (_, text) = mcp.call("loopsy_session_list", serde_json::json!({}));
    let listing: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(listing["main"]["status"], "running");
    assert_eq!(listing["sessions"][0]["name"], "m1");

    let (error, text) = mcp.call("loopsy_session_start", serde_json::json!({"name": "../evil"}));
    assert!(error && text.contains("invalid session name"), "{text}");
    let (error, text) = mcp.call("loopsy_session_remove", serde_json::json!({"name": ".."}));
    assert!(error && text.contains("invalid session name"), "{text}");
    assert!(main.home.config_path().exists());

    let (error, text) = mcp.call("loopsy_session_stop", serde_json::json!({"name": "m1"}));
    assert!(!error, "{text}");
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["status"], "stopped");
    let (error, text) = mcp.call("loopsy_session_start", serde_json::json!({"name": "m1"}));
    assert!(!error, "{text}");
    let (error, text) = mcp.call("loopsy_session_remove", serde_json::json!({"name": "m1"}));
    assert!(!error, "{text}");
    assert!(!fleet.dir("m1").exists());
    let (error, text) = mcp.call("loopsy_session_stop", serde_json::json!({"name": "m1"}));
    assert!(error && text.contains("no session named"), "{text}");
}
