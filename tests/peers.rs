//! The peer registry: API, handshake, persistence, health transitions, CLI and `<peer>` resolution.
//! Several daemons on loopback, with mDNS off (multi-host discovery is in `netlab.rs`).

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::recorder::Recorder;
use crate::support::{wait_until, Daemon, Home};

const WAIT: Duration = Duration::from_secs(15);

fn peers(d: &Daemon) -> Vec<Value> {
    d.get("/api/v1/peers").expect(200)["peers"].as_array().unwrap().clone()
}

fn node_id(d: &Daemon) -> String {
    d.get("/api/v1/identity").expect(200)["nodeId"].as_str().unwrap().to_string()
}

/// A home with a short health interval.
fn quick_home(name: &str) -> Home {
    let home = Home::new(name);
    home.edit_config(|doc| doc["discovery"]["healthInterval"] = 200.into());
    home
}

/// A daemon bound to a fixed port, learnt from a first run on port 0: it can be restarted there.
fn daemon_with_fixed_port(name: &str) -> Daemon {
    let mut daemon = Daemon::start(name);
    let port = daemon.port;
    daemon.stop();
    daemon.home.edit_config(|doc| doc["server"]["port"] = port.into());
    daemon.restart()
}

fn status_of(d: &Daemon, id: &str) -> Option<String> {
    peers(d).iter().find(|p| p["nodeId"] == id).map(|p| p["status"].as_str().unwrap().to_string())
}

#[test]
fn peers_are_added_listed_and_removed_through_the_api() {
    let d = Daemon::start("peers-api");
    assert!(peers(&d).is_empty());
    let added = d
        .req("POST", "/api/v1/peers")
        .json(&json!({"address": "10.9.9.9", "port": 19533, "name": "bob"}))
        .send()
        .expect(200);
    assert_eq!(added["nodeId"], "manual-10.9.9.9:19533");
    assert_eq!(added["port"], 19533);
    assert_eq!(added["hostname"], "10.9.9.9");
    assert_eq!(added["status"], "unknown");
    assert_eq!(added["manuallyAdded"], true);
    assert_eq!(added["name"], "bob");
    for field in ["platform", "version"] {
        assert_eq!(added[field], "unknown");
    }
    // Adding the same address again updates the entry instead of duplicating it.
    d.req("POST", "/api/v1/peers").json(&json!({"address": "10.9.9.9", "port": 19533})).send().expect(200);
    let list = peers(&d);
    assert_eq!(list.len(), 1, "{list:?}");
    let on_disk: Vec<Value> =
        serde_json::from_slice(&std::fs::read(d.home.path().join("peers.json")).unwrap()).unwrap();
    assert_eq!(on_disk[0]["nodeId"], "manual-10.9.9.9:19533", "saved before answering");

    let removed = d.req("DELETE", "/api/v1/peers/manual-10.9.9.9%3A19533").send().expect(200);
    assert_eq!(removed, json!({"success": true, "nodeId": "manual-10.9.9.9:19533"}));
    assert!(peers(&d).is_empty());
    let message = d.req("DELETE", "/api/v1/peers/manual-10.9.9.9%3A19533").send().expect_error(404, 2001);
    assert_eq!(message, "Peer manual-10.9.9.9:19533 not found");
    d.anon("GET", "/api/v1/peers").send().expect_error(401, 1001);
}

#[test]
fn adding_a_peer_validates_every_field() {
    let d = Daemon::start("peers-valid");
    let post = |body: Value| d.req("POST", "/api/v1/peers").json(&body).send().expect_error(400, 9003);
    assert!(post(json!({"address": "10.0.0.2", "port": "19532"})).contains("port"));
    assert!(post(json!({"address": "10.0.0.2", "port": 0})).contains("port"));
    assert!(post(json!({"address": "10.0.0.2", "port": 70000})).contains("port"));
    assert!(post(json!({"address": "10.0.0.2", "port": 1.5})).contains("port"));
    assert!(post(json!({"port": 19532})).contains("address"));
    assert!(post(json!({"address": ""})).contains("address"));
    assert!(post(json!({"address": "a b"})).contains("address"));
    assert!(post(json!({"address": "http://x/y"})).contains("address"));
    assert!(post(json!({"address": "10.0.0.2", "nodeId": "x"})).contains("nodeId"));
    assert!(post(json!({"address": "10.0.0.2", "name": "a/b"})).contains("name"));
    assert!(post(json!({"address": "10.0.0.2", "hostname": "x\u{7}"})).contains("hostname"));
    let own = node_id(&d);
    // Well-formed but this node itself: refused (403), not malformed.
    let message = d.req("POST", "/api/v1/peers").json(&json!({"address": "10.0.0.2", "nodeId": own})).send();
    assert!(message.expect_error(403, 9009).contains("own"));
    // The port defaults to 19532, and IPv6 literals are stored without brackets.
    let added = d.req("POST", "/api/v1/peers").json(&json!({"address": "[fe80::1]"})).send().expect(200);
    assert_eq!((added["address"].as_str(), added["port"].as_u64()), (Some("fe80::1"), Some(19532)));
    assert!(peers(&d).len() == 1, "nothing invalid was stored");
}

#[test]
fn a_handshake_records_the_caller_at_its_source_address_and_answers_with_our_identity() {
    let d = Daemon::start("handshake");
    let caller = "5b0c7c52-3c1e-4d7a-9f61-8d1c2b3a4e5f";
    let body = json!({"nodeId": caller, "hostname": "alice", "platform": "darwin", "version": "1.0.21",
                      "port": 19599, "capabilities": ["execute", "context"]});
    let identity = d.req("POST", "/api/v1/peers/handshake").json(&body).send().expect(200);
    assert_eq!(identity["nodeId"], node_id(&d).as_str());
    assert_eq!(identity["capabilities"], json!(["execute", "transfer", "context", "ai-tasks"]));
    let list = peers(&d);
    assert_eq!(list.len(), 1);
    let peer = &list[0];
    assert_eq!(peer["nodeId"], caller);
    assert_eq!(peer["address"], "127.0.0.1", "the TCP source, not anything the body says");
    assert_eq!((peer["port"].as_u64(), peer["hostname"].as_str()), (Some(19599), Some("alice")));
    assert_eq!(peer["platform"], "darwin");
    assert_eq!(peer["manuallyAdded"], false);
    assert!(peer["lastSeen"].as_u64().unwrap() > 0);

    let refused = |change: &dyn Fn(&mut Value), field: &str| {
        let mut bad = body.clone();
        change(&mut bad);
        let message = d.req("POST", "/api/v1/peers/handshake").json(&bad).send().expect_error(400, 9003);
        assert!(message.contains(field), "{message:?} should name {field}");
    };
    for field in ["nodeId", "hostname", "platform", "version", "port", "capabilities"] {
        refused(&|b| drop(b.as_object_mut().unwrap().remove(field)), field);
    }
    refused(&|b| b["nodeId"] = "not-a-uuid".into(), "nodeId");
    refused(&|b| b["port"] = "19599".into(), "port");
    refused(&|b| b["port"] = 0.into(), "port");
    refused(&|b| b["hostname"] = "".into(), "hostname");
    refused(&|b| b["platform"] = "x".repeat(100).into(), "platform");
    refused(&|b| b["capabilities"] = json!(["<img src=x>"]), "capabilities");
    refused(&|b| b["capabilities"] = json!("execute"), "capabilities");
    let own = node_id(&d);
    let mut itself = body.clone();
    itself["nodeId"] = own.clone().into();
    assert!(d.req("POST", "/api/v1/peers/handshake").json(&itself).send().expect_error(403, 9009).contains("own id"));
    assert_eq!(peers(&d).len(), 1, "refused handshakes change nothing");
}

#[test]
fn a_peer_added_by_address_is_probed_and_takes_its_real_node_id() {
    let b = Daemon::start("probed-b");
    let a = quick_home("probed-a").start();
    let b_id = node_id(&b);
    a.req("POST", "/api/v1/peers")
        .json(&json!({"address": "127.0.0.1", "port": b.port, "name": "bob"}))
        .send()
        .expect(200);
    wait_until(WAIT, "A sees B online under its node id", || status_of(&a, &b_id).as_deref() == Some("online"));
    let list = peers(&a);
    assert_eq!(list.len(), 1, "the manual entry became B's entry: {list:?}");
    assert_eq!((list[0]["name"].as_str(), list[0]["manuallyAdded"].as_bool()), (Some("bob"), Some(true)));
    assert_eq!(list[0]["version"], "1.0.21");
}

#[test]
fn a_probe_never_carries_a_key() {
    // A recording stand-in for a node: every byte the health checker sends is kept.
    let node = "0b5e7000-0000-4000-8000-000000000001".to_string();
    let answer = json!({"status": "ok", "nodeId": node, "uptime": 1, "version": "1.0.21"});
    let recorder = Recorder::start(move |request| {
        if request.path == "/api/v1/health" {
            (200, answer.clone())
        } else {
            (404, json!({"error": {"code": 5001, "message": "not found"}}))
        }
    });
    // A has keys it could be tempted to send: its own, and one stored for the peer's name.
    let bob_key = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";
    let home = quick_home("probe-keys");
    home.edit_config(|doc| doc["auth"]["allowedKeys"]["bob"] = bob_key.into());
    let a = home.start();
    a.req("POST", "/api/v1/peers")
        .json(&json!({"address": "127.0.0.1", "port": recorder.port, "name": "bob"}))
        .send()
        .expect(200);
    wait_until(WAIT, "A sees the recorded node online", || status_of(&a, &node).as_deref() == Some("online"));
    wait_until(WAIT, "a few probes", || recorder.requests().len() >= 3);
    for request in recorder.requests() {
        assert_eq!((request.method.as_str(), request.path.as_str()), ("GET", "/api/v1/health"), "{request:?}");
        assert!(request.header("authorization").is_none(), "a probe sent credentials: {request:?}");
    }
    let raw = String::from_utf8_lossy(&recorder.raw()).to_ascii_lowercase();
    assert!(raw.contains("get /api/v1/health"), "the recording holds the probes: {raw}");
    for secret in [a.key.as_str(), bob_key] {
        assert!(!raw.contains(secret), "a key went out with a probe: {raw}");
    }
    assert!(!raw.contains("authorization") && !raw.contains("bearer"), "{raw}");
}

#[test]
fn manual_peers_from_the_config_are_registered_at_start_and_restarts_add_no_duplicates() {
    let b = Daemon::start("manual-b");
    let b_id = node_id(&b);
    let home = quick_home("manual-a");
    home.edit_config(|doc| {
        doc["discovery"]["manualPeers"] = json_to_yaml(json!([{"address": "127.0.0.1", "port": b.port, "name": "bob"}]))
    });
    let a = home.start();
    wait_until(WAIT, "the configured peer is online", || status_of(&a, &b_id).as_deref() == Some("online"));
    let a = a.restart();
    // At start the configured entry is merged into the known node, not added beside it.
    let list = peers(&a);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["nodeId"], b_id.as_str());
    wait_until(WAIT, "still online after the restart", || status_of(&a, &b_id).as_deref() == Some("online"));
    assert_eq!(peers(&a).len(), 1);
    assert_eq!(peers(&a)[0]["name"], "bob");
}

fn json_to_yaml(value: Value) -> crate::support::Yaml {
    crate::support::yaml(value)
}

#[test]
fn a_killed_peer_goes_offline_and_comes_back_online_by_itself() {
    let mut b = daemon_with_fixed_port("flap-b");
    let b_id = node_id(&b);
    let a = quick_home("flap-a").start();
    a.req("POST", "/api/v1/peers").json(&json!({"address": "127.0.0.1", "port": b.port})).send().expect(200);
    wait_until(WAIT, "B online", || status_of(&a, &b_id).as_deref() == Some("online"));
    let counts = a.get("/api/v1/status").expect(200)["peers"].clone();
    assert_eq!(counts, json!({"total": 1, "online": 1, "offline": 0}));

    b.kill();
    wait_until(WAIT, "B offline", || status_of(&a, &b_id).as_deref() == Some("offline"));
    let counts = a.get("/api/v1/status").expect(200)["peers"].clone();
    assert_eq!(counts, json!({"total": 1, "online": 0, "offline": 1}));
    let failures = peers(&a)[0]["failureCount"].as_u64().unwrap();
    assert!(failures >= 3, "{failures}");

    let b = b.restart();
    wait_until(WAIT, "B online again without anyone re-adding it", || {
        status_of(&a, &b_id).as_deref() == Some("online")
    });
    assert_eq!(peers(&a)[0]["failureCount"], 0);
    drop(b);
}

#[test]
fn the_registry_survives_a_crash_and_a_bad_file_is_kept_aside() {
    let mut d = Daemon::start("persist");
    d.req("POST", "/api/v1/peers").json(&json!({"address": "10.9.9.8", "name": "carol"})).send().expect(200);
    d.kill();
    let mut d = d.restart();
    let list = peers(&d);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["name"], "carol");

    d.stop();
    let file = d.home.path().join("peers.json");
    std::fs::write(&file, b"[{\"nodeId\": oops").unwrap();
    let d = d.restart();
    assert!(peers(&d).is_empty());
    let kept: Vec<_> = std::fs::read_dir(d.home.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("peers.json.invalid-"))
        .collect();
    assert_eq!(kept.len(), 1, "the bad file is kept aside");
    assert_eq!(std::fs::read(kept[0].path()).unwrap(), b"[{\"nodeId\": oops");
    assert!(d.output_has("peers.json"), "the problem is logged");
}

#[test]
fn the_peers_command_adds_lists_and_removes_peers_and_stores_their_key() {
    let b = Daemon::start("cli-b");
    let b_id = node_id(&b);
    let a = quick_home("cli-a").start();
    let port = b.port.to_string();
    let out = a.loopsy(&["peers", "add", "127.0.0.1", &port, "--name", "bob", "--key", &b.key]).success();
    assert!(out.stdout.contains("Peer added"), "{}", out.stdout);
    assert!(!out.stdout.contains(&b.key), "the key is not echoed");
    assert_eq!(a.home.config()["auth"]["allowedKeys"]["bob"].as_str(), Some(b.key.as_str()));
    // The running daemon took the key at once (SIGHUP): it accepts it now.
    a.anon("GET", "/api/v1/status").key(&b.key).send().expect(200);

    wait_until(WAIT, "bob online", || status_of(&a, &b_id).as_deref() == Some("online"));
    a.loopsy(&["peers"]).success().stdout_has("bob").stdout_has(&b_id[..8]).stdout_has("online");
    let listed = a.loopsy(&["peers", "--json"]).success().json();
    assert_eq!(listed["peers"][0]["nodeId"], b_id.as_str());

    a.loopsy(&["peers", "add", "10.9.9.7"]).success();
    a.loopsy(&["peers", "add", "10.9.9.6"]).success();
    let ambiguous = a.loopsy(&["peers", "remove", "manual-10.9.9"]).code(2);
    assert!(ambiguous.stderr.contains("ambiguous"), "{}", ambiguous.stderr);
    assert!(ambiguous.stderr.contains("10.9.9.7") && ambiguous.stderr.contains("10.9.9.6"), "{}", ambiguous.stderr);
    a.loopsy(&["peers", "remove", "nobody"]).code(2).stderr_has("unknown peer 'nobody'");
    a.loopsy(&["peers", "remove", "10.9.9.7"]).success().stdout_has("Peer removed");
    a.loopsy(&["peers", "remove", &b_id[..6]]).success().stdout_has(&b_id);
    let left = peers(&a);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["address"], "10.9.9.6");

    a.loopsy(&["peers", "add", "a b"]).code(2).stderr_has("address");
    a.loopsy(&["peers", "add", "10.0.0.1", "--key", "short"]).code(2).stderr_has("16 characters");
}

#[test]
fn peers_are_listed_from_the_saved_file_when_the_daemon_is_down() {
    let mut d = Daemon::start("cli-down");
    d.req("POST", "/api/v1/peers").json(&json!({"address": "10.9.9.5", "name": "dave"})).send().expect(200);
    d.stop();
    let out = d.loopsy(&["peers"]).success().stdout_has("dave");
    assert!(out.stderr.contains("not running"), "{}", out.stderr);
    d.loopsy(&["peers", "add", "10.9.9.4"]).code(2).stderr_has("not running");
}

#[test]
fn connect_with_flags_stores_the_peer_and_its_key_and_tests_the_connection() {
    let b = Daemon::start("connect-b");
    let b_id = node_id(&b);
    let a = quick_home("connect-a").start();
    let port = b.port.to_string();
    let args = ["connect", "--yes", "--address", "127.0.0.1", "--port", &port, "--key", &b.key, "--name", "bob"];
    let out = a.loopsy(&args).success();
    assert!(out.stdout.contains(&format!("Connected! Peer node: {b_id}")), "{}", out.stdout);
    assert!(!out.stdout.contains(&a.key) && !out.stderr.contains(&a.key), "this machine's key is never printed");
    let config = a.home.config();
    assert_eq!(config["auth"]["allowedKeys"]["bob"].as_str(), Some(b.key.as_str()));
    let manual = &config["discovery"]["manualPeers"][0];
    assert_eq!((manual["address"].as_str(), manual["port"].as_u64()), (Some("127.0.0.1"), Some(b.port as u64)));
    assert_eq!(manual["name"], "bob");
    wait_until(WAIT, "bob registered and online", || status_of(&a, &b_id).as_deref() == Some("online"));

    // Connecting again does not duplicate the configured peer; a wrong key is reported.
    let wrong = [
        "connect",
        "--yes",
        "--address",
        "127.0.0.1",
        "--port",
        &port,
        "--key",
        "wrong-key-0123456789",
        "--name",
        "bob",
    ];
    a.loopsy(&wrong).code(1).stdout_has("refuses the key");
    assert_eq!(a.home.config()["discovery"]["manualPeers"].as_sequence().unwrap().len(), 1);
    // An unreachable peer is reported with exit code 1; missing flags with --yes are errors.
    a.loopsy(&["connect", "--yes", "--address", "127.0.0.1", "--port", "1", "--key", &b.key])
        .code(1)
        .stdout_has("Could not reach");
    a.loopsy(&["connect", "--yes", "--address", "127.0.0.1"]).code(2).stderr_has("--key");
    // Interactive with nothing on stdin: aborted, nothing stored.
    a.loopsy(&["connect"]).code(1).stderr_has("Aborted");
}
