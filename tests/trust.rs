//! Who may do what (issue 13): the caller classes of ARCHITECTURE.md against real daemons.
//!
//! A legacy peer key (1.0.21 style, in `auth.allowedKeys`) keeps the data plane and is refused
//! every owner route the daemon's own OpenAPI document marks; the owner is the own key from
//! loopback (IPv4-mapped included) and is not held to the peers' rate limits. Callers from
//! another machine are in `netlab.rs`-style labs at the end: the own key from there is a legacy
//! peer, and wrong keys are limited per source address.

use serde_json::{json, Value};

use std::time::Duration;

use crate::support::{wait_until, Daemon, Home, Request};

const LEGACY_KEY: &str = "1e9ac71e9ac71e9ac71e9ac71e9ac71e";

/// A daemon that lists `LEGACY_KEY` as peer `bob`'s key, as 1.0.21 and `loopsy peers add --key` do.
fn with_legacy_peer(name: &str) -> Daemon {
    let home = Home::new(name);
    home.edit_config(|doc| doc["auth"]["allowedKeys"]["bob"] = LEGACY_KEY.into());
    home.start()
}

fn audit(d: &Daemon) -> String {
    std::fs::read_to_string(d.home.path().join("logs/audit.jsonl")).unwrap_or_default()
}

/// Every operation of the daemon's OpenAPI document: (method, path template, access).
fn operations(d: &Daemon) -> Vec<(String, String, String)> {
    let doc = d.anon("GET", "/api/v1/openapi.json").send().expect(200);
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let access = operation["x-loopsy-access"].as_str().unwrap_or_else(|| panic!("{method} {path}: no access"));
            found.push((method.to_uppercase(), path.clone(), access.to_string()));
        }
    }
    assert!(found.len() > 30, "the document lists the routes: {}", found.len());
    found
}

/// A concrete path for a template: parameters get harmless values.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|segment| match segment {
            "{target}" => "local",
            "{rest}" => "api/v1/status",
            s if s.starts_with('{') => "x",
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn as_legacy(d: &Daemon, method: &str, path: &str) -> Request {
    let req = d.anon(method, path).key(LEGACY_KEY);
    match method {
        "POST" | "PUT" => req.json(&json!({})),
        _ => req,
    }
}

#[test]
fn a_legacy_peer_key_is_refused_every_owner_route_and_keeps_the_data_plane() {
    let d = with_legacy_peer("trust-legacy");
    let mut owner_routes = 0;
    for (method, template, access) in operations(&d) {
        let path = concrete(&template);
        match access.as_str() {
            "Owner" | "Local" => {
                let message = as_legacy(&d, &method, &path).send().expect_error(403, 9009);
                assert!(message.contains("owner") && message.contains("bob"), "{method} {path}: {message}");
                owner_routes += 1;
            }
            // Only the head: some of these are event streams.
            "DataPlane" => {
                let status = as_legacy(&d, &method, &path).stream().status;
                assert!(![401, 403].contains(&status), "{method} {path} refused a legacy key: {status}");
            }
            // Terminals admit legacy peers only with `terminals.allowLegacyPeers` (off here).
            "Terminal" => {
                let message = as_legacy(&d, &method, &path).send().expect_error(403, 9009);
                assert!(message.contains("allowLegacyPeers") && message.contains("bob"), "{method} {path}: {message}");
            }
            "Public" => {}
            other => panic!("{method} {template}: unknown access {other}"),
        }
    }
    assert!(owner_routes >= 10, "{owner_routes} owner routes");

    // The named ones, with bodies that would work for the owner; nothing changes.
    let bob = |method: &str, path: &str| d.anon(method, path).key(LEGACY_KEY);
    bob("POST", "/api/v1/peers").json(&json!({"address": "10.9.9.9", "name": "evil"})).send().expect_error(403, 9009);
    let added =
        d.req("POST", "/api/v1/peers").json(&json!({"address": "10.9.9.8", "name": "carol"})).send().expect(200);
    let carol = added["nodeId"].as_str().unwrap();
    bob("DELETE", &format!("/api/v1/peers/{carol}")).send().expect_error(403, 9009);
    let peers = d.get("/api/v1/peers").expect(200);
    let addresses: Vec<&str> =
        peers["peers"].as_array().unwrap().iter().map(|p| p["address"].as_str().unwrap()).collect();
    assert_eq!(addresses, ["10.9.9.8"], "only the owner's change is there");
    bob("POST", "/api/v1/messages").json(&json!({"to": "alice", "body": "hi"})).send().expect_error(403, 9009);
    bob("GET", "/api/v1/messages/status").send().expect_error(403, 9009);
    bob("GET", "/api/v1/dashboard/proxy/local/api/v1/status").send().expect_error(403, 9009);
    bob("POST", "/api/v1/pair/start").send().expect_error(403, 9009);
    bob("POST", "/api/v1/dashboard/token").send().expect_error(403, 9009);

    // The data plane still works.
    let ran = bob("POST", "/api/v1/execute").json(&json!({"command": "echo", "args": ["hi"]})).send().expect(200);
    assert_eq!(ran["stdout"], "hi\n");
    bob("PUT", "/api/v1/context/k").json(&json!({"value": "v"})).send().expect(200);
    assert_eq!(bob("GET", "/api/v1/context/k").send().expect(200)["value"], "v");
    bob("GET", "/api/v1/peers").send().expect(200);
    wait_until(Duration::from_secs(10), "the audit log names the legacy key", || {
        audit(&d).contains(r#""caller":"peer:bob""#)
    });
}

#[test]
fn the_owner_is_not_held_to_the_peers_rate_limits() {
    // The default limits (execute: 30 a minute), not the test harness's "off".
    let home = Home::new("trust-owner-rate");
    home.edit_config(|doc| {
        doc.as_mapping_mut().unwrap().remove("rateLimits");
    });
    let d = home.start();
    let started = std::time::Instant::now();
    for i in 0..100 {
        let run = d.loopsy(&["exec", "local", "echo", &format!("run-{i}")]).success();
        assert!(run.stdout.contains(&format!("run-{i}")), "{}", run.stdout);
    }
    let took = started.elapsed();
    eprintln!("100 loopsy exec as the owner with the default limits (30 a minute for peers): {took:?}");
    assert!(took < Duration::from_secs(60), "100 execs in a minute");
    // A peer's key is held to them.
    drop(d);
    let home = Home::new("trust-peer-rate");
    home.edit_config(|doc| {
        doc.as_mapping_mut().unwrap().remove("rateLimits");
        doc["auth"]["allowedKeys"]["bob"] = LEGACY_KEY.into();
    });
    let d = home.start();
    let exec = || d.anon("POST", "/api/v1/execute").key(LEGACY_KEY).json(&json!({"command": "true"})).send();
    for _ in 0..30 {
        exec().expect(200);
    }
    let refused = exec();
    refused.expect_error(429, 9002);
    let retry_after: u64 = refused.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=2).contains(&retry_after), "one token comes back every 2 s: {retry_after}");
}

#[test]
fn the_own_key_from_ipv4_mapped_loopback_is_the_owner() {
    let home = Home::new("trust-mapped");
    home.edit_config(|doc| doc["server"]["host"] = "::ffff:127.0.0.1".into());
    let d = home.start();
    assert!(d.url.contains("[::ffff:127.0.0.1]"), "{}", d.url);
    // An IPv4 client on a dual-stack socket shows up as ::ffff:127.0.0.1.
    d.req("POST", "/api/v1/peers").json(&json!({"address": "10.9.9.7"})).send().expect(200);
    d.loopsy(&["peers", "add", "10.9.9.6"]).success();
    let mut line = Value::Null;
    wait_until(Duration::from_secs(10), "the audit line", || {
        let text = audit(&d);
        let found =
            text.lines().find(|l| l.contains(r#""path":"/api/v1/peers""#)).map(|l| serde_json::from_str(l).unwrap());
        line = found.unwrap_or(Value::Null);
        !line.is_null()
    });
    assert_eq!((line["fromIp"].as_str(), line["caller"].as_str()), (Some("::ffff:127.0.0.1"), Some("own")), "{line}");
}

/// An HTTP client run inside a lab host: sends `count` requests, prints one JSON line each
/// (status, `Retry-After`, body).
const CLIENT_PY: &str = r#"
import json, sys, urllib.request, urllib.error
url, method, key, body, count = sys.argv[1:6]
for _ in range(int(count)):
    req = urllib.request.Request(url, method=method, data=body.encode() or None,
                                 headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            status, headers, text = res.status, res.headers, res.read()
    except urllib.error.HTTPError as err:
        status, headers, text = err.code, err.headers, err.read()
    print(json.dumps({"status": status, "retryAfter": headers.get("Retry-After"), "body": json.loads(text or "null")}))
"#;

/// `count` requests from lab host `from` to host 1's daemon; the answers in order.
fn from_host(
    lab: &crate::netlab::Lab,
    from: usize,
    method: &str,
    path: &str,
    key: &str,
    body: &str,
    count: usize,
) -> Vec<Value> {
    let python = std::env::var("LOOPSY_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let url = format!("http://{}:19532{path}", lab.ip(1));
    let out = lab.exec(from, &[&python, "-c", CLIENT_PY, &url, method, key, body, &count.to_string()]);
    assert!((out.code == 0), "client: {}", out.stderr);
    out.stdout.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

#[track_caller]
fn status_and_code(answer: &Value) -> (u64, u64) {
    (answer["status"].as_u64().unwrap(), answer["body"]["error"]["code"].as_u64().unwrap_or(0))
}

#[test]
fn from_another_host_the_own_key_is_a_legacy_peer_and_wrong_keys_are_limited_per_address() {
    let Some(lab) = crate::netlab::Lab::up("t", 3) else { return };
    lab.start_daemon(1, 60_000);
    let own_key = lab_key(&lab);
    let add = lab.loopsy(1, &["peers", "add", &lab.ip(2), "--name", "bob", "--key", LEGACY_KEY]);
    assert!((add.code == 0), "{}", add.stderr);
    let add_peer = r#"{"address": "10.9.9.9"}"#;
    let echo = r#"{"command": "echo", "args": ["hi"]}"#;
    for key in [own_key.as_str(), LEGACY_KEY] {
        let refused = &from_host(&lab, 2, "POST", "/api/v1/peers", key, add_peer, 1)[0];
        assert_eq!(status_and_code(refused), (403, 9009), "{refused}");
        let ran = &from_host(&lab, 2, "POST", "/api/v1/execute", key, echo, 1)[0];
        assert_eq!((ran["status"].as_u64(), ran["body"]["stdout"].as_str()), (Some(200), Some("hi\n")), "{ran}");
    }
    let message =
        from_host(&lab, 2, "POST", "/api/v1/peers", &own_key, add_peer, 1)[0]["body"]["error"]["message"].clone();
    assert!(message.as_str().unwrap().contains("own key from another machine"), "{message}");
    // On host 1 itself the same key is the owner.
    let local = lab.loopsy(1, &["peers", "add", "10.9.9.8"]);
    assert!((local.code == 0), "{}", local.stderr);

    // Ten wrong keys from host 3, then host 3 is refused before its key is looked at...
    let wrong = from_host(&lab, 3, "GET", "/api/v1/status", "wrong-key-0123456789abcdef", "", 11);
    for answer in &wrong[..10] {
        assert_eq!(status_and_code(answer), (403, 1002), "{answer}");
    }
    assert_eq!(status_and_code(&wrong[10]), (429, 9002), "{}", wrong[10]);
    let retry_after: u64 = wrong[10]["retryAfter"].as_str().expect("Retry-After").parse().unwrap();
    assert!((1..=6).contains(&retry_after), "{retry_after}");
    let locked = &from_host(&lab, 3, "GET", "/api/v1/status", LEGACY_KEY, "", 1)[0];
    assert_eq!(status_and_code(locked), (429, 9002), "even with a good key: {locked}");
    // ...while host 2 and the owner on host 1 are not affected.
    let fine = &from_host(&lab, 2, "GET", "/api/v1/status", LEGACY_KEY, "", 1)[0];
    assert_eq!(fine["status"], 200, "{fine}");
    let peers = lab.loopsy(1, &["peers"]);
    assert!((peers.code == 0), "{}", peers.stderr);
}

fn lab_key(lab: &crate::netlab::Lab) -> String {
    let config = crate::support::read_config(lab.home(1));
    config["auth"]["apiKey"].as_str().unwrap().to_string()
}

fn handshake(node_id: &str, port: u16) -> Value {
    json!({"nodeId": node_id, "hostname": "claimed", "platform": "linux", "version": "1.0.21", "port": port, "capabilities": []})
}

#[test]
fn a_handshake_touches_only_the_entry_of_the_key_it_presents() {
    let d = with_legacy_peer("trust-handshake");
    let (bob_id, carol_id) = ("b0b0b0b0-0000-4000-8000-000000000001", "c0c0c0c0-0000-4000-8000-000000000001");
    let carol = json!({"address": "10.9.9.5", "nodeId": carol_id, "name": "carol", "hostname": "carol-host"});
    d.req("POST", "/api/v1/peers").json(&carol).send().expect(200);
    // Bob's entry, added by address (its node id unknown yet), where his handshakes come from.
    d.req("POST", "/api/v1/peers")
        .json(&json!({"address": "127.0.0.1", "port": 19999, "name": "bob"}))
        .send()
        .expect(200);
    let bob = |body: Value| d.anon("POST", "/api/v1/peers/handshake").key(LEGACY_KEY).json(&body).send();

    let refused = bob(handshake(carol_id, 19532)).expect_error(403, 9009);
    assert!(refused.contains("bob") && refused.contains(carol_id), "{refused}");
    bob(handshake(bob_id, 19532)).expect_error(403, 9009);
    bob(handshake(bob_id, 19999)).expect(200);
    bob(handshake(bob_id, 19999)).expect(200);

    let peers = d.get("/api/v1/peers").expect(200)["peers"].as_array().unwrap().clone();
    let find = |name: &str| peers.iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("{name}: {peers:?}"));
    assert_eq!(
        (find("carol")["nodeId"].as_str(), find("carol")["address"].as_str()),
        (Some(carol_id), Some("10.9.9.5"))
    );
    assert_eq!(find("carol")["hostname"], "carol-host", "carol's entry is untouched");
    assert_eq!(find("bob")["nodeId"], bob_id, "bob's own entry learnt its node id");
    assert_eq!(peers.len(), 2, "{peers:?}");
    // The owner may introduce anyone.
    d.req("POST", "/api/v1/peers/handshake")
        .json(&handshake("d0d0d0d0-0000-4000-8000-000000000001", 19532))
        .send()
        .expect(200);
}
