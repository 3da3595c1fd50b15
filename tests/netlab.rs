//! Multi-host tests: one daemon per host of a netlab LAN (`../shared/tools/netlab`), all on
//! port 19532 with mDNS on, and python-zeroconf (a standard mDNS stack) in both directions: as a
//! stand-in for a 1.0.21 node our browser must find, and as a browser that must find us.
//!
//! Each lab is a set of network namespaces with no way out, so nothing listens beyond the
//! machine even though the daemons bind 0.0.0.0 inside. The tests need root and `ip netns`, and
//! the zeroconf ones python-zeroconf in `LOOPSY_TEST_PYTHON` (`.ci/run` installs it; `tests/netlab/rogue.py`, a host that claims other nodes' ids over mDNS
//! and records every byte it is sent, too); without
//! them they are skipped loudly, and fail under `CI`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::rogue::assert_no_key_in;
use crate::support::skip::{program, python_with, root};
use crate::support::{
    command, edit_config_in, loopsy_bin, loopsy_in, prerequisite, read_config, run_within, wait_for, Run, TempDir, Yaml,
};

const PORT: u16 = 19532;

fn netlab_tool() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/netlab")
}

/// Why labs cannot be built here, if they cannot.
fn lab_prerequisites() -> Result<(), String> {
    root()?;
    program("ip", "iproute2")?;
    let ip = run_within(command("ip").args(["netns", "list"]), Duration::from_secs(30));
    if ip.code != 0 {
        return Err(format!("`ip netns` does not work here: {}", ip.stderr.trim()));
    }
    Ok(())
}

/// A lab, taken down on drop (which also stops everything spawned in it).
pub(crate) struct Lab {
    name: String,
    hosts: Vec<Host>,
}

/// One host's loopsy home and log.
struct Host {
    home: TempDir,
    log: PathBuf,
}

impl Lab {
    /// `netlab up NAME N`, or `None` (skipped loudly) where labs cannot be built.
    pub(crate) fn up(tag: &str, n: usize) -> Option<Lab> {
        prerequisite(lab_prerequisites())?;
        assert!(netlab_tool().exists(), "{} is missing (shared/ must sit beside the clone)", netlab_tool().display());
        let name = format!("lp{tag}{}", std::process::id() % 100_000);
        let _ = netlab(&["down", &name]);
        let out = netlab(&["up", &name, &n.to_string()]);
        assert_eq!(out.code, 0, "netlab up failed: {}", out.stderr);
        let hosts = (1..=n)
            .map(|i| {
                let home = TempDir::new(&format!("{name}-h{i}"));
                let log = home.path().join("host.log");
                Host { home, log }
            })
            .collect();
        Some(Lab { name, hosts })
    }

    pub(crate) fn ip(&self, i: usize) -> String {
        let out = netlab(&["ip", &self.name, &i.to_string()]);
        out.stdout.trim().to_string()
    }

    pub(crate) fn home(&self, i: usize) -> &Path {
        self.hosts[i - 1].home.path()
    }

    /// Starts a daemon on host `i`: 0.0.0.0:19532, mDNS on, the given health interval.
    pub(crate) fn start_daemon(&self, i: usize, health_interval_ms: u64) {
        self.start_daemon_with(i, health_interval_ms, |_| {});
    }

    /// Like [`Lab::start_daemon`], with variables added to the daemon's environment; returns
    /// the daemon's PID.
    pub(crate) fn start_daemon_env(&self, i: usize, health_interval_ms: u64, env: &[(&str, &str)]) -> i32 {
        self.init_home(i, |doc| {
            doc["discovery"]["enabled"] = true.into();
            doc["discovery"]["healthInterval"] = health_interval_ms.into();
        });
        self.run_daemon_env(i, env)
    }

    /// Like [`Lab::start_daemon`], with a last change to the config; returns the daemon's PID.
    pub(crate) fn start_daemon_with(&self, i: usize, health_interval_ms: u64, change: impl FnOnce(&mut Yaml)) -> i32 {
        self.init_home(i, |doc| {
            doc["discovery"]["enabled"] = true.into();
            doc["discovery"]["healthInterval"] = health_interval_ms.into();
            change(doc);
        });
        self.run_daemon(i)
    }

    /// `loopsy init` on host `i`, then `change` its config (listening on 0.0.0.0:19532 already).
    fn init_home(&self, i: usize, change: impl FnOnce(&mut Yaml)) {
        let home = self.home(i);
        let _ = loopsy_in(home, &["init"]).success();
        edit_config_in(home, |doc| {
            doc["server"]["host"] = "0.0.0.0".into();
            doc["server"]["port"] = PORT.into();
            doc["logging"]["level"] = "debug".into();
            change(doc);
        });
    }

    /// Starts the daemon of host `i`'s existing home; returns its PID once it listens.
    fn run_daemon(&self, i: usize) -> i32 {
        self.run_daemon_env(i, &[])
    }

    /// [`Lab::run_daemon`] with variables added to the daemon's environment.
    fn run_daemon_env(&self, i: usize, env: &[(&str, &str)]) -> i32 {
        let home = self.home(i);
        let _ = std::fs::remove_file(home.join("daemon.json"));
        let home_arg = home.to_str().unwrap();
        let assignments: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut argv: Vec<&str> = vec!["env"];
        argv.extend(assignments.iter().map(String::as_str));
        argv.extend([loopsy_bin(), "--home", home_arg, "start", "--foreground"]);
        let pid = self.spawn(i, &argv);
        self.wait(Duration::from_secs(15), &format!("daemon {i} listens"), || home.join("daemon.json").exists());
        pid
    }

    fn key(&self, i: usize) -> String {
        let doc = read_config(self.home(i));
        doc["auth"]["apiKey"].as_str().unwrap().to_string()
    }

    /// `netlab spawn`; returns the PID (the command itself: netlab's wrappers exec it).
    pub(crate) fn spawn(&self, i: usize, command: &[&str]) -> i32 {
        let (host, log) = (i.to_string(), self.hosts[i - 1].log.to_str().unwrap().to_string());
        let mut args = vec!["spawn", self.name.as_str(), host.as_str(), log.as_str()];
        args.extend(command);
        let out = netlab(&args);
        assert_eq!(out.code, 0, "netlab spawn: {}", out.stderr);
        out.stdout.trim().parse().expect("netlab spawn prints a PID")
    }

    /// `loopsy --home <home of i> ARGS` as host `i`, read line by line, stdin piped.
    pub(crate) fn background_loopsy(&self, i: usize, args: &[&str]) -> crate::support::Background {
        let home = self.home(i).to_str().unwrap().to_string();
        let host = i.to_string();
        let mut command = command(netlab_tool());
        command.args(["exec", &self.name, &host, loopsy_bin(), "--home", &home]).args(args);
        crate::support::Background::start(&mut command)
    }

    /// Runs `loopsy --home <home of i> ARGS` as host `i`.
    pub(crate) fn loopsy(&self, i: usize, args: &[&str]) -> Run {
        let home = self.home(i).to_str().unwrap().to_string();
        let host = i.to_string();
        let mut all = vec!["exec", &self.name, &host, loopsy_bin(), "--home", &home];
        all.extend(args);
        netlab(&all)
    }

    /// Runs `command` as host `i`.
    pub(crate) fn exec(&self, i: usize, command: &[&str]) -> Run {
        let host = i.to_string();
        let mut all = vec!["exec", self.name.as_str(), host.as_str()];
        all.extend(command);
        netlab(&all)
    }

    /// Host `i`'s registry: node id → (status, address).
    fn peers(&self, i: usize) -> Vec<Value> {
        let out = self.loopsy(i, &["peers", "--json"]);
        serde_json::from_str::<Value>(&out.stdout).ok().and_then(|v| v["peers"].as_array().cloned()).unwrap_or_default()
    }

    fn status(&self, i: usize, node_id: &str) -> Option<String> {
        self.peers(i).iter().find(|p| p["nodeId"] == node_id).and_then(|p| p["status"].as_str().map(String::from))
    }

    fn node_id(&self, i: usize) -> String {
        std::fs::read_to_string(self.home(i).join("node-id")).unwrap().trim().to_string()
    }

    /// Polls `condition`; on timeout prints every host's log and fails. Returns the time taken.
    #[track_caller]
    pub(crate) fn wait(&self, limit: Duration, what: &str, condition: impl FnMut() -> bool) -> Duration {
        if let Some(took) = wait_for(limit, condition) {
            return took;
        }
        for (i, host) in self.hosts.iter().enumerate() {
            eprintln!("--- host {} log ---\n{}", i + 1, std::fs::read_to_string(&host.log).unwrap_or_default());
        }
        panic!("timed out after {limit:?} waiting until {what}");
    }

    /// The lines of host `i`'s log, each parsed as JSON where it is JSON.
    fn json_lines(&self, i: usize) -> Vec<Value> {
        let log = std::fs::read_to_string(&self.hosts[i - 1].log).unwrap_or_default();
        log.lines().filter_map(|line| serde_json::from_str(line).ok()).collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = netlab(&["down", &self.name]);
    }
}

fn netlab(args: &[&str]) -> Run {
    run_within(command(netlab_tool()).args(args), Duration::from_secs(120))
}

#[test]
fn daemons_on_a_lan_discover_each_other_and_follow_a_partition_and_its_healing() {
    let interval = Duration::from_millis(500);
    let Some(lab) = Lab::up("p", 3) else { return };
    for i in 1..=3 {
        lab.start_daemon(i, interval.as_millis() as u64);
    }
    let ids: Vec<String> = (1..=3).map(|i| lab.node_id(i)).collect();
    let all_online = |i: usize| {
        let peers = lab.peers(i);
        (1..=3).filter(|j| *j != i).all(|j| {
            peers.iter().any(|p| p["nodeId"] == ids[j - 1] && p["status"] == "online" && p["address"] == lab.ip(j))
        }) && peers.len() == 2
    };
    let took =
        lab.wait(Duration::from_secs(20), "every daemon sees the two others online", || (1..=3).all(&all_online));
    eprintln!("discovery took {took:?}");
    let peers = lab.peers(1);
    let h2 = peers.iter().find(|p| p["nodeId"] == ids[1]).unwrap();
    assert_eq!(h2["port"], PORT);
    assert_eq!(h2["hostname"], format!("{}-h2", lab.name));
    assert_eq!(h2["version"], "1.0.21");

    let out = netlab(&["partition", &lab.name, "1", "2"]);
    assert_eq!(out.code, 0, "{out:?}");
    // Three failed probes, each at most an interval apart plus its timeout; the bound is there so
    // a daemon that never notices fails, not to measure how fast it notices.
    let limit = interval * 10 + Duration::from_secs(10);
    let took = lab.wait(limit, "hosts 1 and 2 see each other offline", || {
        lab.status(1, &ids[1]).as_deref() == Some("offline") && lab.status(2, &ids[0]).as_deref() == Some("offline")
    });
    eprintln!("partition detected after {took:?} (interval {interval:?})");
    assert_eq!(lab.status(3, &ids[0]).as_deref(), Some("online"), "host 3 still sees host 1");
    assert_eq!(lab.status(3, &ids[1]).as_deref(), Some("online"), "host 3 still sees host 2");
    assert_eq!(lab.status(1, &ids[2]).as_deref(), Some("online"));

    let out = netlab(&["heal", &lab.name, "1", "2"]);
    assert_eq!(out.code, 0, "{out:?}");
    let took = lab.wait(Duration::from_secs(20), "hosts 1 and 2 see each other online again", || {
        lab.status(1, &ids[1]).as_deref() == Some("online") && lab.status(2, &ids[0]).as_deref() == Some("online")
    });
    eprintln!("healing noticed after {took:?}");
    assert_eq!(lab.peers(1).len(), 2, "no duplicates");
}

#[test]
fn a_stopping_daemon_says_goodbye_and_its_peers_mark_it_offline_at_once() {
    // A long health interval: only a goodbye can explain a prompt offline.
    let interval_ms = 60_000;
    let Some(lab) = Lab::up("g", 2) else { return };
    lab.start_daemon(1, interval_ms);
    lab.start_daemon(2, interval_ms);
    let (id1, id2) = (lab.node_id(1), lab.node_id(2));
    lab.wait(Duration::from_secs(20), "hosts 1 and 2 see each other", || {
        lab.status(1, &id2).as_deref() == Some("online") && lab.status(2, &id1).as_deref() == Some("online")
    });
    let stop = lab.loopsy(2, &["stop"]);
    assert_eq!(stop.code, 0, "stop: {}", stop.stderr);
    // Well within one health interval, so no probe can have noticed first.
    let took = lab.wait(Duration::from_secs(20), "host 1 sees host 2 offline after its goodbye", || {
        lab.status(1, &id2).as_deref() == Some("offline")
    });
    eprintln!("goodbye honoured after {took:?} (health interval {interval_ms} ms)");
}

/// Host `joiner` pairs with host `host` (both daemons running); returns the joiner's name as
/// the host knows it.
pub(crate) fn pair(lab: &Lab, host: usize, joiner: usize) -> String {
    let home = lab.home(host).to_str().unwrap().to_string();
    lab.spawn(host, &[loopsy_bin(), "--home", &home, "pair", "--yes"]);
    let log = |i: usize| std::fs::read_to_string(&lab.hosts[i - 1].log).unwrap_or_default();
    lab.wait(Duration::from_secs(15), "the host shows a code", || log(host).contains("Pairing code:"));
    let line = log(host).lines().find(|l| l.contains("Pairing code:")).unwrap().to_string();
    let code: String = line.rsplit(':').next().unwrap().chars().filter(char::is_ascii_digit).collect();
    let out = lab.loopsy(joiner, &["pair", &format!("{}:{PORT}", lab.ip(host)), "--code", &code, "--yes"]);
    assert!((out.code == 0), "pairing: {}{}", out.stdout, out.stderr);
    lab.wait(Duration::from_secs(10), "the host finishes too", || log(host).contains("Paired with"));
    format!("{}-h{joiner}", lab.name)
}

/// Host `i`'s `config.yaml`.
pub(crate) fn config_of(lab: &Lab, i: usize) -> Yaml {
    read_config(lab.home(i))
}

/// Every key host `i`'s config holds.
fn keys_of(lab: &Lab, i: usize) -> Vec<String> {
    let config = read_config(lab.home(i));
    let auth = &config["auth"];
    let mut keys = vec![auth["apiKey"].as_str().unwrap().to_string()];
    for map in [&auth["allowedKeys"], &auth["peerKeys"]] {
        keys.extend(map.as_mapping().into_iter().flatten().filter_map(|(_, v)| v.as_str().map(String::from)));
    }
    keys
}

// See: #13 (item 1)
#[test]
fn a_rogue_claiming_a_paired_and_a_legacy_peers_ids_moves_nothing_and_gets_no_key() {
    let Some(lab) = Lab::up("ro", 4) else { return };
    let Some(python) = prerequisite(python_with(&["zeroconf"])) else { return };
    let python = python.to_str().unwrap().to_string();
    for i in 1..=3 {
        lab.start_daemon(i, 500);
    }
    let (id2, id3) = (lab.node_id(2), lab.node_id(3));
    let (ip2, ip3, ip4) = (lab.ip(2), lab.ip(3), lab.ip(4));
    let paired = pair(&lab, 1, 2);
    let key3 = keys_of(&lab, 3)[0].clone();
    let added = lab.loopsy(1, &["peers", "add", &ip3, &PORT.to_string(), "--name", "legacy", "--key", &key3]);
    assert!((added.code == 0), "{}", added.stderr);
    let entry = |id: &str| lab.peers(1).into_iter().find(|p| p["nodeId"] == id);
    lab.wait(Duration::from_secs(10), "host 1 knows both peers where they are", || {
        entry(&id2).is_some_and(|p| p["address"] == ip2.as_str() && p["status"] == "online")
            && entry(&id3).is_some_and(|p| p["address"] == ip3.as_str() && p["name"] == "legacy")
    });

    let record = lab.home(4).join("rogue-received");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/netlab/rogue.py");
    let claims = [format!("{id2}:{PORT}"), format!("{id3}:{}", PORT + 1)];
    let argv = [&python, script.to_str().unwrap(), record.to_str().unwrap(), &ip4, &claims[0], &claims[1]];
    lab.spawn(4, &argv);
    lab.wait(Duration::from_secs(20), "host 1 records both claims as sightings", || {
        entry(&id2).is_some_and(|p| p["seenAt"]["address"] == ip4.as_str())
            && entry(&id3).is_some_and(|p| p["seenAt"]["address"] == ip4.as_str() && p["seenAt"]["answers"] == true)
    });
    assert_eq!(entry(&id2).unwrap()["address"], ip2.as_str(), "the paired peer stays");
    assert_eq!(entry(&id3).unwrap()["address"], ip3.as_str(), "the legacy peer stays");
    let listing = lab.loopsy(1, &["peers"]).stdout;
    for port in [PORT, PORT + 1] {
        assert!(listing.contains(&format!("seen at {ip4}:{port}")), "{listing}");
    }

    // Everything that carries a key still reaches the real peers.
    for (peer, host) in [(paired.as_str(), 2), ("legacy", 3)] {
        let out = lab.loopsy(1, &["exec", peer, "hostname"]);
        assert!((out.code == 0), "exec {peer}: {}", out.stderr);
        assert_eq!(out.stdout.trim(), format!("{}-h{host}", lab.name));
        let out = lab.loopsy(1, &["context", "set", "k", "v", "--peer", peer]);
        assert!((out.code == 0), "context {peer}: {}", out.stderr);
    }
    let received = std::fs::read(&record).unwrap_or_default();
    assert!(String::from_utf8_lossy(&received).contains("GET /api/v1/health "), "the rogue was probed");
    let keys: Vec<String> = (1..=3).flat_map(|i| keys_of(&lab, i)).collect();
    assert_no_key_in(&received, &keys.iter().map(String::as_str).collect::<Vec<_>>());
}

/// `curl ARGS` as host `i`: (HTTP status, body); fails under CI=true when curl is missing.
pub(crate) fn curl(lab: &Lab, i: usize, args: &[&str]) -> Option<(u16, String)> {
    prerequisite(program("curl", "curl"))?;
    let host = i.to_string();
    let mut all = vec!["exec", &lab.name, &host, "curl", "-sS", "--max-time", "5", "-w", "\n%{http_code}"];
    all.extend(args);
    let out = netlab(&all);
    let text = out.stdout.clone();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    Some((status.trim().parse().unwrap_or(0), body.to_string()))
}

// See: #13 (item 8)
#[test]
fn with_tls_on_plain_http_from_the_lan_is_served_only_while_insecure_peers_are_allowed() {
    let Some(lab) = Lab::up("pl", 2) else { return };
    lab.start_daemon_with(1, 1000, |doc| {
        doc["tls"]["enabled"] = true.into();
        doc["tls"]["allowInsecurePeers"] = false.into();
    });
    let plain = format!("http://{}:{PORT}/api/v1/health", lab.ip(1));
    let Some((status, body)) = curl(&lab, 2, &[&plain]) else { return };
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("9020") && body.contains("allowInsecurePeers"), "{body}");
    let https = format!("https://{}:{PORT}/api/v1/health", lab.ip(1));
    assert_eq!(curl(&lab, 2, &["-k", &https]).unwrap().0, 200, "HTTPS on the same port");
    let local = format!("http://localhost:{PORT}/api/v1/health");
    assert_eq!(curl(&lab, 1, &[&local]).unwrap().0, 200, "the machine's own tools keep plain HTTP");

    // Allowing insecure peers (and SIGHUP, as after any config change) serves the LAN again.
    edit_config_in(lab.home(1), |doc| doc["tls"]["allowInsecurePeers"] = true.into());
    let runtime: Value = serde_json::from_slice(&std::fs::read(lab.home(1).join("daemon.json")).unwrap()).unwrap();
    // SAFETY: kill(2) on the PID the daemon wrote for itself, alive in this test.
    assert_eq!(unsafe { libc::kill(runtime["pid"].as_i64().unwrap() as i32, libc::SIGHUP) }, 0);
    lab.wait(Duration::from_secs(5), "plain HTTP from host 2 is served", || {
        curl(&lab, 2, &[&plain]).is_some_and(|(status, _)| status == 200)
    });
}

#[test]
fn a_1_0_21_node_announced_by_python_zeroconf_is_discovered_and_its_goodbye_honoured() {
    let Some(python) = prerequisite(python_with(&["zeroconf"])) else { return };
    let interval_ms = 60_000;
    let Some(lab) = Lab::up("z", 2) else { return };
    lab.start_daemon(1, interval_ms);
    let fake_id = "1021abcd-2222-4333-8444-555555555555";
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/netlab/fake_1_0_21.py");
    let ip2 = lab.ip(2);
    let python = python.to_str().unwrap();
    let fake_pid = lab.spawn(2, &[python, script.to_str().unwrap(), fake_id, &ip2, &PORT.to_string()]);
    let took = lab.wait(Duration::from_secs(20), "host 1 finds the 1.0.21 node", || {
        lab.peers(1).iter().any(|p| p["nodeId"] == fake_id && p["status"] == "online")
    });
    eprintln!("1.0.21 node discovered after {took:?}");
    let peers = lab.peers(1);
    let fake = peers.iter().find(|p| p["nodeId"] == fake_id).unwrap();
    assert_eq!(fake["address"], ip2.as_str(), "its A record was resolved");
    assert_eq!(fake["hostname"], format!("{}-h2", lab.name), "the SRV target, the bare OS hostname");
    assert_eq!((fake["port"].as_u64(), fake["platform"].as_str()), (Some(PORT as u64), Some("linux")));
    assert_eq!(fake["capabilities"], serde_json::json!(["execute", "transfer", "context", "ai-tasks"]));
    // Its stack's goodbye (TTL 0) is honoured, long before a probe would notice.
    // SAFETY: kill(2) on the PID netlab reported for the process it started.
    assert_eq!(unsafe { libc::kill(fake_pid, libc::SIGTERM) }, 0);
    lab.wait(Duration::from_secs(20), "host 1 sees the 1.0.21 node offline after its goodbye", || {
        lab.status(1, fake_id).as_deref() == Some("offline")
    });
}

#[test]
fn python_zeroconf_resolves_our_announcement_and_sees_our_goodbye() {
    let Some(python) = prerequisite(python_with(&["zeroconf"])) else { return };
    let Some(lab) = Lab::up("b", 2) else { return };
    lab.start_daemon(1, 1000);
    let id1 = lab.node_id(1);
    let (ip1, ip2) = (lab.ip(1), lab.ip(2));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/netlab/zeroconf_browse.py");
    lab.spawn(2, &[python.to_str().unwrap(), script.to_str().unwrap(), &ip2, "60"]);
    let name = format!("loopsy-{}._loopsy._tcp.local.", &id1[..8]);
    let mut added = Value::Null;
    lab.wait(Duration::from_secs(30), "python-zeroconf resolves host 1's service", || {
        match lab.json_lines(2).into_iter().find(|e| e["event"] == "added" && e["name"] == name.as_str()) {
            Some(event) => {
                added = event;
                true
            }
            None => false,
        }
    });
    assert_eq!(added["port"], PORT, "{added}");
    assert!(added["addresses"].as_array().unwrap().iter().any(|a| a == ip1.as_str()), "{added}");
    let properties = &added["properties"];
    assert_eq!(properties["nodeId"], id1.as_str(), "{added}");
    assert_eq!(properties["version"], "1.0.21", "{added}");
    assert_eq!(properties["platform"], "linux", "{added}");
    assert_eq!(properties["capabilities"], "execute,transfer,context,ai-tasks", "{added}");
    assert!(added["server"].as_str().is_some_and(|s| s.ends_with(".local.")), "{added}");
    let stop = lab.loopsy(1, &["stop"]);
    assert_eq!(stop.code, 0, "stop: {}", stop.stderr);
    lab.wait(Duration::from_secs(20), "python-zeroconf sees the service go", || {
        lab.json_lines(2).iter().any(|e| e["event"] == "removed" && e["name"] == name.as_str())
    });
}

#[test]
fn two_lan_hosts_pair_and_then_work_together_over_pinned_tls() {
    let Some(lab) = Lab::up("pr", 2) else { return };
    lab.start_daemon(1, 1000);
    lab.start_daemon(2, 1000);
    let home1 = lab.home(1).to_str().unwrap().to_string();
    lab.spawn(1, &[loopsy_bin(), "--home", &home1, "pair", "--yes"]);
    let log = |i: usize| std::fs::read_to_string(&lab.hosts[i - 1].log).unwrap_or_default();
    lab.wait(Duration::from_secs(15), "host 1 shows a code", || log(1).contains("Pairing code:"));
    let line = log(1).lines().find(|l| l.contains("Pairing code:")).unwrap().to_string();
    let code: String = line.rsplit(':').next().unwrap().chars().filter(char::is_ascii_digit).collect();

    let out = lab.loopsy(2, &["pair", &format!("{}:{PORT}", lab.ip(1)), "--code", &code, "--yes"]);
    let stdout = &out.stdout;
    assert_eq!(out.code, 0, "pairing from host 2: {stdout}{}", out.stderr);
    let host1 = format!("{}-h1", lab.name);
    assert!(stdout.contains(&format!("Paired with {host1}")), "{stdout}");
    lab.wait(Duration::from_secs(10), "host 1 finishes too", || log(1).contains("Paired with"));

    // Host 2 reaches host 1 by name, over TLS pinned to the certificate learnt while pairing.
    let out = lab.loopsy(2, &["exec", &host1, "hostname"]);
    assert_eq!(out.code, 0, "exec: {}", out.stderr);
    assert_eq!(out.stdout.trim(), host1);
    let config = read_config(lab.home(2));
    assert!(config["tls"]["pinnedCerts"][host1.as_str()].is_string());
    assert_eq!(config["tls"]["enabled"], true);
}

/// Hosts 1 and 2 as 1.0.21-style peers of host 3: discovery off (so an address names no
/// registry entry), and host 3 accepting their own keys as `h1` and `h2`.
fn start_clients_and_server(lab: &Lab, clients: &[usize], server: usize) -> i32 {
    for i in clients {
        lab.init_home(*i, |doc| doc["discovery"]["enabled"] = false.into());
    }
    let keys: Vec<(String, String)> = clients.iter().map(|i| (format!("h{i}"), lab.key(*i))).collect();
    lab.start_daemon_with(server, 60_000, |doc| {
        doc["discovery"]["enabled"] = false.into();
        for (name, key) in &keys {
            doc["auth"]["allowedKeys"][name.as_str()] = key.as_str().into();
        }
    })
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn two_lan_hosts_take_turns_on_a_lock_of_a_third_across_its_kill_9_and_stale_writes_are_fenced() {
    let Some(lab) = Lab::up("lk", 3) else { return };
    let server_pid = start_clients_and_server(&lab, &[1, 2], 3);
    let peer = format!("{}:{PORT}", lab.ip(3));
    let work = TempDir::new("netlab-locks");
    let log = work.path().join("turns.log");
    // Under the lock: note the turn, write to host 3's context fenced by the token, note the end.
    let body = work.path().join("body.sh");
    std::fs::write(
        &body,
        r#"echo "begin $LOOPSY_LOCK_TOKEN $TAG" >> "$LOG"
sleep 0.2
"$LOOPSY" --home "$HOME_DIR" context set last "$TAG:$LOOPSY_LOCK_TOKEN" --peer "$PEER" --fence "$LOOPSY_LOCK_NAME:$LOOPSY_LOCK_TOKEN" > /dev/null || echo "refused $LOOPSY_LOCK_TOKEN $TAG" >> "$LOG"
echo "end $LOOPSY_LOCK_TOKEN $TAG" >> "$LOG"
"#,
    )
    .unwrap();
    let rounds = 6;
    let turns = work.path().join("turns.sh");
    std::fs::write(
        &turns,
        format!(
            r#"n=0
while [ $n -lt {rounds} ]; do
  if "$LOOPSY" --home "$HOME_DIR" lock "$PEER" shared --ttl 10 --wait 60 -- sh "$BODY"; then n=$((n+1)); else sleep 0.2; fi
done
echo finished >> "$LOG.$TAG"
"#
        ),
    )
    .unwrap();
    for i in [1, 2] {
        let vars = [
            format!("LOOPSY={}", loopsy_bin()),
            format!("HOME_DIR={}", lab.home(i).display()),
            format!("PEER={peer}"),
            format!("LOG={}", log.display()),
            format!("BODY={}", body.display()),
            format!("TAG=h{i}"),
        ];
        let mut command: Vec<&str> = vec!["env"];
        command.extend(vars.iter().map(String::as_str));
        command.extend(["sh", turns.to_str().unwrap()]);
        lab.spawn(i, &command);
    }
    let ends = || read(&log).lines().filter(|l| l.starts_with("end ")).count();
    lab.wait(Duration::from_secs(60), "four turns", || ends() >= 4);
    // kill -9 of the lock's daemon in the middle of the contention, then a restart.
    // SAFETY: kill(2) on the PID netlab reported for the daemon it started.
    assert_eq!(unsafe { libc::kill(server_pid, libc::SIGKILL) }, 0);
    lab.run_daemon(3);
    let finished = |i: usize| read(&PathBuf::from(format!("{}.h{i}", log.display()))).contains("finished");
    lab.wait(Duration::from_secs(120), "both hosts finish their turns", || finished(1) && finished(2));

    let text = read(&log);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4 * rounds, "begin and end of every turn, no refusal:\n{text}");
    let mut last_token = 0;
    for pair in lines.chunks(2) {
        let (begin, end) = (pair[0], pair[1]);
        let token: u64 = begin.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert_eq!(begin.replacen("begin", "end", 1), end, "turns never overlap:\n{text}");
        assert!(token > last_token, "tokens strictly increase, across the kill -9 too:\n{text}");
        last_token = token;
    }
    assert!(text.contains(" h1\n") && text.contains(" h2\n"), "both hosts had turns:\n{text}");
    let last = lines.last().unwrap().split_whitespace().collect::<Vec<_>>();
    let stored = lab.loopsy(1, &["context", "get", "last", "--peer", &peer]);
    assert_eq!(stored.stdout.trim(), format!("{}:{}", last[2], last[1]), "the last turn's write");

    // A holder whose lock has passed on cannot write stale data.
    let first = lab.loopsy(1, &["lock", &peer, "fenced", "--", "sh", "-c", "echo $LOOPSY_LOCK_TOKEN"]);
    let old = first.success().stdout.trim().to_string();
    let holding = work.path().join("holding");
    let home2 = lab.home(2).to_str().unwrap().to_string();
    let hold = format!("echo $LOOPSY_LOCK_TOKEN > {}; sleep 30", holding.display());
    lab.spawn(2, &[loopsy_bin(), "--home", &home2, "lock", &peer, "fenced", "--", "sh", "-c", &hold]);
    lab.wait(Duration::from_secs(15), "host 2 holds the lock", || !read(&holding).is_empty());
    let stale =
        lab.loopsy(1, &["context", "set", "config", "stale", "--peer", &peer, "--fence", &format!("fenced:{old}")]);
    stale.code(1).stderr_has("fenced write refused");
    let current = read(&holding).trim().to_string();
    let fresh =
        lab.loopsy(2, &["context", "set", "config", "fresh", "--peer", &peer, "--fence", &format!("fenced:{current}")]);
    fresh.success();
}

#[test]
fn loopsy_exec_across_a_partition_prints_the_whole_output_once_and_runs_the_command_once() {
    let Some(lab) = Lab::up("ex", 2) else { return };
    start_clients_and_server(&lab, &[1], 2);
    let peer = format!("{}:{PORT}", lab.ip(2));
    let work = TempDir::new("netlab-exec");
    let [out, err, code, runs] = ["out", "err", "code", "runs"].map(|name| work.path().join(name));
    // A command that prints for 10 s and appends to a file as it goes.
    let command =
        format!("for i in $(seq 1 100); do echo line $i; echo $i >> {}; sleep 0.1; done; exit 3", runs.display());
    let home1 = lab.home(1).to_str().unwrap().to_string();
    let cli = format!(
        "{} --home {home1} exec {peer} sh -c '{command}' > {} 2> {}; echo $? > {}",
        loopsy_bin(),
        out.display(),
        err.display(),
        code.display()
    );
    let started = Instant::now();
    lab.spawn(1, &["sh", "-c", &cli]);
    lab.wait(Duration::from_secs(20), "the output flows", || read(&out).contains("line 30"));
    // Partitioned at about 3 s, healed at about 6 s.
    let partitioned = Instant::now();
    eprintln!("partition at {:?}", started.elapsed());
    netlab(&["partition", &lab.name, "1", "2"]).success();
    lab.wait(Duration::from_secs(10), "the CLI notices the dropped link", || read(&err).contains("reattaching"));
    eprintln!("noticed after {:?} of partition", partitioned.elapsed());
    lab.wait(Duration::from_secs(10), "three seconds of partition", || partitioned.elapsed() >= Duration::from_secs(3));
    netlab(&["heal", &lab.name, "1", "2"]).success();
    eprintln!("healed at {:?}", started.elapsed());
    lab.wait(Duration::from_secs(60), "the CLI exits", || !read(&code).is_empty());
    let expected: String = (1..=100).map(|i| format!("line {i}\n")).collect();
    assert_eq!(read(&out), expected, "the whole output, once, in order; stderr: {}", read(&err));
    assert_eq!(read(&code).trim(), "3", "the command's exit code; stderr: {}", read(&err));
    assert_eq!(read(&runs).lines().count(), 100, "the command ran once");
    assert!(read(&err).contains("reattached"), "{}", read(&err));
}
