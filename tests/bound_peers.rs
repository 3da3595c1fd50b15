//! Registry entries bound to identity (issue 13, item 1): a peer the owner added, named or
//! paired never moves on what the network says about it. A rogue on another loopback address
//! claims such a peer's node id (by handshake, and by answering `/health` with it); the entry
//! stays, the claim shows as "seen at", commands keep reaching the real peer, no key reaches the
//! rogue, and only the owner's `loopsy peers confirm` or the peer's pinned certificate moves it.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::rogue::Rogue;
use crate::support::skip::program;
use crate::support::{command, prerequisite, run_within, wait_until, Background, Daemon, Home, PROCESS_LIMIT};

const WAIT: Duration = Duration::from_secs(20);
const CAROL_KEY: &str = "carol-legacy-key-0123456789abcdef";

fn node_id(d: &Daemon) -> String {
    std::fs::read_to_string(d.home.path().join("node-id")).unwrap().trim().to_string()
}

fn peer(d: &Daemon, id: &str) -> Option<Value> {
    let list = d.get("/api/v1/peers").expect(200);
    list["peers"].as_array().unwrap().iter().find(|p| p["nodeId"] == id).cloned()
}

fn named(name: &str) -> Home {
    let home = Home::new(name);
    home.edit_config(|doc| {
        doc["server"]["hostname"] = name.into();
        doc["discovery"]["healthInterval"] = 300.into();
    });
    home
}

/// A handshake claiming `claimed`'s node id at `port`, sent from `from` with `key`.
/// A handshake over TLS, as a paired peer sends it: its minted key is refused over plain HTTP.
fn claim_over_tls(d: &Daemon, from: &str, key: &str, claimed: &str, port: u16) -> u16 {
    let body = json!({"nodeId": claimed, "hostname": "bob", "platform": "linux", "version": "1.0.21",
                      "port": port, "capabilities": ["execute"]});
    let url = format!("https://127.0.0.1:{}/api/v1/peers/handshake", d.port);
    let curl = prerequisite(program("curl", "curl")).expect("curl (the harness skipped the test)");
    let out = run_within(
        command(&curl)
            .args(["-sk", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}", "--interface", from])
            .args(["-H", &format!("Authorization: Bearer {key}"), "-H", "Content-Type: application/json"])
            .args(["--data", &body.to_string(), &url]),
        PROCESS_LIMIT,
    );
    out.stdout.trim().parse().expect("curl prints the status")
}

fn claim(d: &Daemon, from: &str, key: &str, claimed: &str, port: u16) -> u16 {
    let body = json!({"nodeId": claimed, "hostname": "bob", "platform": "linux", "version": "1.0.21",
                      "port": port, "capabilities": ["execute"]});
    d.anon("POST", "/api/v1/peers/handshake").from(from).key(key).json(&body).send().status
}

#[test]
fn a_legacy_peer_stays_put_when_a_rogue_claims_its_id_and_the_owner_alone_moves_it() {
    let bob = Daemon::start("bound-bob");
    let home = named("bound-alice");
    home.edit_config(|doc| doc["auth"]["allowedKeys"]["carol"] = CAROL_KEY.into());
    let alice = home.start();
    let bob_id = node_id(&bob);
    let bob_at = format!("127.0.0.1:{}", bob.port);
    alice.loopsy(&["peers", "add", "127.0.0.1", &bob.port.to_string(), "--name", "bob", "--key", &bob.key]).success();
    wait_until(WAIT, "alice knows bob by his node id", || {
        peer(&alice, &bob_id).is_some_and(|p| p["status"] == "online")
    });

    let rogue = Rogue::start("127.0.0.2", &bob_id);
    // A legacy peer's handshake from the rogue's address, claiming bob's id (refused outright
    // or recorded as a sighting: either way bob's entry stays).
    let status = claim(&alice, "127.0.0.2", CAROL_KEY, &bob_id, rogue.port);
    assert!(matches!(status, 200 | 403), "handshake answered {status}");
    let entry = peer(&alice, &bob_id).unwrap();
    assert_eq!(format!("{}:{}", entry["address"].as_str().unwrap(), entry["port"]), bob_at, "{entry}");
    // The owner adds the rogue's address by hand; its probe answers with bob's id.
    alice.req("POST", "/api/v1/peers").json(&json!({"address": "127.0.0.2", "port": rogue.port})).send().expect(200);
    wait_until(WAIT, "the rogue's answer shows as bob's sighting", || {
        peer(&alice, &bob_id).is_some_and(|p| p["seenAt"]["via"] == "probe" && p["seenAt"]["port"] == rogue.port)
    });
    let entry = peer(&alice, &bob_id).unwrap();
    assert_eq!(format!("{}:{}", entry["address"].as_str().unwrap(), entry["port"]), bob_at, "{entry}");
    assert_eq!((entry["name"].as_str(), entry["seenAt"]["address"].as_str()), (Some("bob"), Some("127.0.0.2")));
    assert_eq!(entry["seenAt"]["answers"], true);
    let listing = alice.loopsy(&["peers"]).success();
    assert!(listing.stdout.contains(&format!("seen at {}", rogue.endpoint())), "{}", listing.stdout);
    assert!(listing.stdout.contains("loopsy peers confirm bob"), "{}", listing.stdout);

    // Everything that carries a key still goes to the real bob.
    alice.loopsy(&["exec", "bob", "echo", "hi"]).success().stdout_has("hi");
    alice.loopsy(&["context", "set", "where", "bob's", "--peer", "bob"]).success();
    assert_eq!(bob.get("/api/v1/context/where").expect(200)["value"], "bob's");
    let sent = alice.req("POST", "/api/v1/messages").json(&json!({"to": "bob", "type": "chat", "body": "hi"})).send();
    assert_eq!(sent.expect(200)["endpoint"], bob_at.as_str());
    assert!(rogue.connections() > 0, "the rogue was probed");
    rogue.assert_no_key(&[&alice.key, &bob.key, CAROL_KEY]);
    let received = String::from_utf8_lossy(&rogue.received()).into_owned();
    assert!(
        received.lines().filter(|l| l.contains(" HTTP/1.1")).all(|l| l.starts_with("GET /api/v1/health ")),
        "{received}"
    );

    // Only the owner moves it, not a peer's key.
    let body = json!({"address": "127.0.0.2", "port": rogue.port});
    let path = format!("/api/v1/peers/{bob_id}/confirm");
    assert_eq!(alice.anon("POST", &path).key(CAROL_KEY).json(&body).send().status, 403);
    assert_eq!(peer(&alice, &bob_id).unwrap()["port"], bob.port);
    let out = alice.loopsy(&["peers", "confirm", "bob", &rogue.endpoint()]).success();
    assert!(out.stdout.contains(&format!("now reached at {}", rogue.endpoint())), "{}", out.stdout);
    let entry = peer(&alice, &bob_id).unwrap();
    assert_eq!((entry["address"].as_str(), entry["port"].as_u64()), (Some("127.0.0.2"), Some(u64::from(rogue.port))));
    assert!(entry.get("seenAt").is_none(), "{entry}");
    alice.loopsy(&["peers", "confirm", "nobody", "127.0.0.9"]).code(2).stderr_has("unknown peer");
    alice.loopsy(&["peers", "confirm", "bob", "not an address"]).code(2);
}

/// `loopsy pair` between two loopback daemons, as in tests/pairing.rs.
fn pair(alice: &Daemon, bob: &Daemon) {
    let mut host = Background::spawn(alice.home.path(), &["pair", "--yes"]);
    let line = host.wait_line("Pairing code:", WAIT);
    let code: String = line.rsplit(':').next().unwrap().chars().filter(char::is_ascii_digit).collect();
    bob.loopsy(&["pair", &alice.addr, "--code", &code, "--yes"]).success();
    let (status, seen) = host.wait(WAIT);
    assert_eq!(status, 0, "{seen:?}");
}

#[test]
fn a_paired_peer_moves_only_to_where_its_pinned_certificate_answers() {
    let alice = named("pin-alice").start();
    let mut bob = named("pin-bob").start();
    pair(&alice, &bob);
    let bob_id = node_id(&bob);
    wait_until(WAIT, "alice sees bob online", || peer(&alice, &bob_id).is_some_and(|p| p["status"] == "online"));
    let bobs_key = bob.home.config()["auth"]["peerKeys"]["pin-alice"].as_str().unwrap().to_string();
    let alices_key = alice.home.config()["auth"]["peerKeys"]["pin-bob"].as_str().unwrap().to_string();

    let rogue = Rogue::start("127.0.0.2", &bob_id);
    // Even with bob's own minted key, a claim from elsewhere only triggers a probe there with
    // bob's pin, which the rogue cannot pass.
    assert_eq!(claim(&alice, "127.0.0.2", &bobs_key, &bob_id, rogue.port), 403, "a minted key over plain HTTP");
    assert_eq!(claim_over_tls(&alice, "127.0.0.2", &bobs_key, &bob_id, rogue.port), 200);
    wait_until(WAIT, "the failed pinned probe shows as a sighting", || {
        peer(&alice, &bob_id).is_some_and(|p| p["seenAt"]["port"] == rogue.port && p["seenAt"]["answers"] == false)
    });
    assert!(rogue.connections() > 0, "the claimed address was probed");
    assert_eq!(peer(&alice, &bob_id).unwrap()["port"], bob.port);
    alice.loopsy(&["exec", "pin-bob", "echo", "hi"]).success().stdout_has("hi");
    rogue.assert_no_key(&[&alice.key, &bob.key, &bobs_key, &alices_key]);

    // Bob really moves (same certificate, another port) and says so: the pinned probe of the
    // new place proves it, and the entry follows without the owner.
    bob.stop();
    bob.home.edit_config(|doc| doc["server"]["port"] = 0.into());
    let bob = bob.restart();
    assert_eq!(claim_over_tls(&alice, "127.0.0.1", &bobs_key, &bob_id, bob.port), 200);
    wait_until(WAIT, "bob's entry follows him to the proven address", || {
        peer(&alice, &bob_id).is_some_and(|p| p["port"] == bob.port && p.get("seenAt").is_none())
    });
    alice.loopsy(&["exec", "pin-bob", "echo", "moved"]).success().stdout_has("moved");
}
