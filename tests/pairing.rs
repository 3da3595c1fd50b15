//! Pairing: SPAKE2 between two daemons, sealed offers, both humans confirm, nothing leaks.

use std::time::Duration;

use loopsy::peer::{Client, ClientError};
use loopsy::tls::Fingerprint;
use serde_json::Value;

use crate::support::proxy::{Proxy, Rewrite};
use crate::support::{Background, Daemon, Home};

const WAIT: Duration = Duration::from_secs(20);

fn named(name: &str) -> Daemon {
    let home = Home::new(name);
    home.edit_config(|doc| doc["server"]["hostname"] = name.into());
    home.start()
}

/// `loopsy pair` on `host`; returns the running CLI and the code it shows.
fn host_session(host: &Daemon, args: &[&str]) -> (Background, String) {
    let mut cli = Background::spawn(host.home.path(), &[&["pair"][..], args].concat());
    let line = cli.wait_line("Pairing code:", WAIT);
    let code: String = line.rsplit(':').next().unwrap().chars().filter(char::is_ascii_digit).collect();
    assert_eq!(code.len(), 6, "{line}");
    (cli, code)
}

fn join(joiner: &Daemon, address: &str, code: &str) -> crate::support::Run {
    joiner.loopsy(&["pair", address, "--code", code, "--yes"])
}

fn url(daemon: &Daemon) -> String {
    daemon.home.runtime(None).unwrap()["url"].as_str().unwrap().to_string()
}

fn config_key(daemon: &Daemon, section: &str, field: &str, name: &str) -> Option<String> {
    daemon.home.config()[section][field][name].as_str().map(String::from)
}

/// A client from `from` to `to` with the key and pin `from` saved for `to`.
fn paired_client(from: &Daemon, to: &Daemon, to_name: &str) -> Client {
    let key = config_key(from, "auth", "peerKeys", to_name).expect("a key for the peer");
    let pin = Fingerprint::parse(&config_key(from, "tls", "pinnedCerts", to_name).expect("a pin")).unwrap();
    Client::pinned(&url(to), Some(key), Some(pin))
}

fn pair(alice: &Daemon, bob: &Daemon) {
    let (host, code) = host_session(alice, &["--yes"]);
    join(bob, &alice.addr, &code).success().stdout_has("Paired with alice");
    let (status, seen) = host.wait(WAIT);
    assert_eq!(status, 0, "{seen:?}");
}

#[test]
fn paired_daemons_talk_over_pinned_tls_with_keys_minted_for_each_other() {
    let alice = named("alice");
    let bob = named("bob");
    pair(&alice, &bob);

    for daemon in [&alice, &bob] {
        assert!(url(daemon).starts_with("https://"), "TLS is turned on by pairing");
        assert_eq!(daemon.home.config()["tls"]["enabled"], true);
    }
    let bob_for_alice = config_key(&bob, "auth", "peerKeys", "alice").unwrap();
    assert_eq!(
        config_key(&alice, "auth", "allowedKeys", "bob").unwrap(),
        bob_for_alice,
        "alice accepts the key she minted for bob"
    );
    assert_ne!(bob_for_alice, alice.key, "master keys are never exchanged");
    assert_ne!(config_key(&alice, "auth", "peerKeys", "bob").unwrap(), bob.key);

    let status: Value = smol::block_on(paired_client(&bob, &alice, "alice").get("/api/v1/status")).unwrap();
    assert_eq!(status["hostname"], "alice", "bob reaches alice, no restart needed");
    let status: Value = smol::block_on(paired_client(&alice, &bob, "bob").get("/api/v1/status")).unwrap();
    assert_eq!(status["hostname"], "bob");

    // Bob's own master key means nothing to alice.
    let pin = Fingerprint::parse(&config_key(&bob, "tls", "pinnedCerts", "alice").unwrap()).unwrap();
    let master = Client::pinned(&url(&alice), Some(bob.key.clone()), Some(pin));
    assert!(matches!(
        smol::block_on(master.get::<Value>("/api/v1/status")),
        Err(ClientError::Remote { status: 403, .. })
    ));
    // Alice knows where bob is.
    let peers = &alice.home.config()["discovery"]["manualPeers"];
    assert_eq!(peers[0]["address"], "127.0.0.1");
    assert_eq!(peers[0]["port"], bob.port);
    assert_eq!(peers[0]["hostname"], "bob");
}

#[test]
fn three_wrong_codes_shut_that_machine_out_but_leave_the_session_open() {
    let alice = named("alice");
    let bob = named("bob");
    let (mut host, code) = host_session(&alice, &["--yes"]);
    let wrong = if code == "000000" { "000001" } else { "000000" };
    join(&bob, &alice.addr, wrong).code(1).stderr_has("wrong code (2 attempt(s) left)");
    host.wait_line("A wrong code was tried (1 so far)", WAIT);
    join(&bob, &alice.addr, wrong).code(1).stderr_has("wrong code (1 attempt(s) left)");
    join(&bob, &alice.addr, wrong).code(1).stderr_has("wrong code (0 attempt(s) left)");
    join(&bob, &alice.addr, &code).code(1).stderr_has("this address has tried 3 wrong codes");
    let status = alice.req("GET", "/api/v1/pair/status").send().expect(200);
    assert_eq!((status["state"].as_str(), status["wrongAttempts"].as_u64()), (Some("waiting"), Some(3)), "{status}");
    alice.req("DELETE", "/api/v1/pair").send().expect(200);
    let (status, _) = host.wait(WAIT);
    assert_eq!(status, 1);
    assert!(alice.home.config()["auth"]["allowedKeys"].as_mapping().unwrap().is_empty());
    assert!(bob.home.config()["auth"]["peerKeys"].as_mapping().unwrap().is_empty());
}

// See: #13 (item 6)
#[test]
fn strangers_posting_guesses_cannot_close_the_owners_pairing_session() {
    let alice = named("alice");
    let bob = named("bob");
    let (host, code) = host_session(&alice, &["--yes"]);
    // Anyone may reach the pairing routes; a bogus share spends that address's guesses.
    let guess = |from: &str| {
        alice.anon("POST", "/api/v1/pair/spake2").from(from).json(&serde_json::json!({"share": "04".repeat(65)})).send()
    };
    for _ in 0..3 {
        // Well-formed hex, but no curve point: a spent guess, not a malformed request.
        guess("127.0.0.2").expect_error(409, 8105);
    }
    let refused = guess("127.0.0.2").expect_error(403, 8103);
    assert!(refused.contains("this address has tried 3 wrong codes"), "{refused}");
    // Others wait: guesses after the first three are spaced out.
    let later = guess("127.0.0.3");
    assert_eq!((later.status, later.json()["error"]["code"].as_u64()), (429, Some(8104)), "{}", later.text());
    assert_eq!(later.header("retry-after"), Some("1"));
    // The owner's session is still open, and the real joiner gets through (after the wait).
    join(&bob, &alice.addr, &code).success().stdout_has("Paired with alice");
    let (status, seen) = host.wait(WAIT);
    assert_eq!(status, 0, "{seen:?}");
    assert!(alice.home.config()["auth"]["allowedKeys"]["bob"].is_string());
}

#[test]
fn an_expired_session_is_refused_on_both_sides() {
    let mut home = Home::new("alice");
    home.edit_config(|doc| doc["server"]["hostname"] = "alice".into());
    home.env.push(("LOOPSY_PAIRING_LIFETIME_MS".into(), "300".into()));
    let alice = home.start();
    let bob = named("bob");
    let (host, code) = host_session(&alice, &["--yes"]);
    let (status, seen) = host.wait(WAIT);
    assert_eq!(status, 1);
    assert!(seen.iter().any(|l| l.contains("expired")), "{seen:?}");
    join(&bob, &alice.addr, &code).code(1).stderr_has("expired");
}

#[test]
fn either_side_saying_no_cancels_and_saves_nothing() {
    let alice = named("alice");
    let bob = named("bob");
    let before = (std::fs::read(alice.home.config_path()).unwrap(), std::fs::read(bob.home.config_path()).unwrap());

    // The joiner says no.
    let (host, code) = host_session(&alice, &[]);
    let mut joiner = Background::spawn(bob.home.path(), &["pair", &alice.addr, "--code", &code]);
    joiner.wait_line("Verification code:", WAIT);
    joiner.answer("n");
    let (status, seen) = joiner.wait(WAIT);
    assert_eq!(status, 1);
    assert!(seen.iter().any(|l| l.contains("cancelled")), "{seen:?}");
    let (status, seen) = host.wait(WAIT);
    assert_eq!(status, 1, "{seen:?}");
    assert!(seen.iter().any(|l| l.contains("cancelled")), "the host is told: {seen:?}");

    // The host says no.
    let (mut host, code) = host_session(&alice, &[]);
    let joiner = Background::spawn(bob.home.path(), &["pair", &alice.addr, "--code", &code, "--yes"]);
    host.wait_line("Verification code:", WAIT);
    host.answer("no");
    let (status, seen) = joiner.wait(WAIT);
    assert_eq!(status, 1, "{seen:?}");
    assert!(seen.iter().any(|l| l.contains("cancelled")), "{seen:?}");
    assert_eq!(host.wait(WAIT).0, 1);

    assert_eq!(std::fs::read(alice.home.config_path()).unwrap(), before.0, "nothing written on the host");
    assert_eq!(std::fs::read(bob.home.config_path()).unwrap(), before.1, "nothing written on the joiner");
    assert!(url(&alice).starts_with("http://"), "TLS stays as it was");
}

/// Every spelling of a secret an eavesdropper could look for.
fn encodings(key: &str) -> Vec<Vec<u8>> {
    let raw_bytes: Vec<u8> =
        (0..key.len()).step_by(2).filter_map(|i| u8::from_str_radix(&key[i..i + 2], 16).ok()).collect();
    let hex_of_text: String = key.bytes().map(|b| format!("{b:02x}")).collect();
    let mut forms = vec![
        key.as_bytes().to_vec(),
        key.to_uppercase().into_bytes(),
        hex_of_text.clone().into_bytes(),
        hex_of_text.to_uppercase().into_bytes(),
    ];
    for data in [key.as_bytes().to_vec(), raw_bytes.clone()] {
        let b64 = base64(&data);
        forms.push(b64.trim_end_matches('=').as_bytes().to_vec());
        forms.push(b64.replace('+', "-").replace('/', "_").trim_end_matches('=').as_bytes().to_vec());
    }
    forms.push(raw_bytes);
    forms
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn an_eavesdropper_recording_a_pairing_finds_no_key_in_any_encoding() {
    let alice = named("alice");
    let bob = named("bob");
    let proxy = Proxy::start(&alice.addr, None);
    let (host, code) = host_session(&alice, &["--yes"]);
    join(&bob, &proxy.addr, &code).success();
    assert_eq!(host.wait(WAIT).0, 0);
    let recording = proxy.recording();
    assert!(recording.len() > 500, "the pairing went through the proxy");
    let keys = [
        alice.key.clone(),
        bob.key.clone(),
        config_key(&alice, "auth", "allowedKeys", "bob").unwrap(),
        config_key(&alice, "auth", "peerKeys", "bob").unwrap(),
    ];
    for key in &keys {
        for form in encodings(key) {
            assert!(
                !recording.windows(form.len()).any(|w| w == form.as_slice()),
                "a key appears on the wire: {}",
                String::from_utf8_lossy(&form)
            );
        }
    }
}

#[test]
fn a_man_in_the_middle_replacing_the_share_makes_confirmation_fail() {
    let alice = named("alice");
    let bob = named("bob");
    let rewrite: Rewrite = std::sync::Arc::new(|path: &str, body: Vec<u8>| {
        if path != "/api/v1/pair/spake2" {
            return body;
        }
        // The attacker answers with a share of its own, made with a guessed code.
        let own = loopsy::pairing::session::Joiner::new(&loopsy::pairing::session::Code::parse("424242").unwrap());
        serde_json::to_vec(&serde_json::json!({"share": own.share()})).unwrap()
    });
    let proxy = Proxy::start(&alice.addr, Some(rewrite));
    let (host, code) = host_session(&alice, &["--yes"]);
    join(&bob, &proxy.addr, &code).code(1).stderr_has("wrong code");
    drop(host);
    assert!(alice.home.config()["auth"]["allowedKeys"].as_mapping().unwrap().is_empty());
    assert!(bob.home.config()["tls"]["pinnedCerts"].as_mapping().unwrap().is_empty());
}

#[test]
fn after_pairing_a_server_with_another_certificate_is_refused() {
    let alice = named("alice");
    let bob = named("bob");
    pair(&alice, &bob);
    let client = paired_client(&bob, &alice, "alice");
    let alice_home = alice.home.path().to_path_buf();
    let alice = alice.restart();
    smol::block_on(paired_client(&bob, &alice, "alice").get::<Value>("/api/v1/status"))
        .expect("same certificate after a restart");
    drop(client);
    // A different certificate at alice's address: refused, naming the peer.
    std::fs::remove_dir_all(alice_home.join("tls")).unwrap();
    let alice = alice.restart();
    match smol::block_on(paired_client(&bob, &alice, "alice").get::<Value>("/api/v1/status")) {
        Err(ClientError::Tls { url, reason }) => {
            assert!(url.contains(&alice.port.to_string()), "{url}");
            assert!(reason.contains("invalid peer certificate"), "{reason}");
        }
        other => panic!("a new certificate must be refused: {other:?}"),
    }
}

#[test]
fn peers_remove_revokes_the_paired_key_at_once() {
    let alice = named("alice");
    let bob = named("bob");
    pair(&alice, &bob);
    let client = paired_client(&bob, &alice, "alice");
    smol::block_on(client.get::<Value>("/api/v1/status")).unwrap();
    alice.loopsy(&["peers", "remove", "bob"]).success().stdout_has("refused from now on");
    assert!(
        matches!(smol::block_on(client.get::<Value>("/api/v1/status")), Err(ClientError::Remote { status: 403, .. })),
        "no wait, no restart"
    );
    let config = alice.home.config();
    assert!(config["auth"]["allowedKeys"].get("bob").is_none());
    assert!(config["auth"]["peerKeys"].get("bob").is_none());
    assert!(config["tls"]["pinnedCerts"].get("bob").is_none());
    assert!(config["discovery"]["manualPeers"].as_sequence().unwrap().is_empty());
}

#[test]
fn after_pairing_peers_are_used_by_name_over_pinned_tls() {
    let mut alice_home = Home::new("alice");
    alice_home.edit_config(|doc| {
        doc["server"]["hostname"] = "alice".into();
        doc["discovery"]["healthInterval"] = 200.into();
    });
    alice_home.env.clear();
    let alice = alice_home.start();
    let bob = named("bob");
    pair(&alice, &bob);
    bob.loopsy(&["exec", "alice", "echo", "over", "tls"]).success().stdout_has("over tls");
    bob.loopsy(&["context", "set", "greeting", "hello", "--peer", "alice"]).success();
    assert_eq!(alice.loopsy(&["context", "get", "greeting"]).success().stdout.trim(), "hello");
    // The health checker reaches the paired peer over TLS with its pin.
    crate::support::wait_until(Duration::from_secs(10), "alice sees bob online", || {
        let peers = alice.loopsy(&["peers", "--json"]).json();
        peers
            .as_array()
            .into_iter()
            .flatten()
            .chain(peers["peers"].as_array().into_iter().flatten())
            .any(|p| p["hostname"] == "bob" && p["status"] == "online" && p["fingerprint"].is_string())
    });
}

#[test]
fn pairing_control_is_for_the_local_owner_only() {
    let home = Home::new("alice");
    let peer_key = "5eed5eed5eed5eed5eed5eed5eed5eed";
    home.edit_config(|doc| doc["auth"]["allowedKeys"]["carol"] = peer_key.into());
    let alice = home.start();
    alice.anon("POST", "/api/v1/pair/start").send().expect_error(401, 1001);
    alice.anon("POST", "/api/v1/pair/start").key(peer_key).send().expect_error(403, 9009);
    alice.anon("GET", "/api/v1/pair/status").key(peer_key).send().expect_error(403, 9009);
    alice.req("POST", "/api/v1/pair/start").send().expect(200);
    // One session at a time (pairing's codes are 8101-8106; terminals have 8001-8004).
    alice.req("POST", "/api/v1/pair/start").send().expect_error(409, 8105);
}

#[test]
fn a_1_0_21_pairing_request_is_refused_with_the_way_forward() {
    let alice = named("alice");
    let res = alice
        .anon("POST", "/api/v1/pair/initiate")
        .json(&serde_json::json!({"publicKey": "x", "inviteCode": "123456", "hostname": "old", "apiKey": "k"}))
        .send();
    assert_eq!(res.status, 426);
    assert!(res.json()["error"].as_str().unwrap().contains("peers add"), "{}", res.text());
}

#[test]
fn joining_a_1_0_21_node_says_how_to_connect_instead() {
    // A stand-in for a 1.0.21 daemon: its framework answers unknown pairing routes like this.
    // (The recorder reads each request whole: answering before the body arrived would reset.)
    let node = crate::support::recorder::Recorder::start(|request| {
        if request.path == "/api/v1/health" {
            (200, serde_json::json!({"status": "ok", "nodeId": "x", "uptime": 1, "version": "1.0.21"}))
        } else {
            let message = format!("Route {}:{} not found", request.method, request.path);
            (404, serde_json::json!({"message": message, "error": "Not Found", "statusCode": 404}))
        }
    });
    let addr = node.addr.clone();
    let bob = named("bob");
    join(&bob, &addr, "123456").code(1).stderr_has("loopsy peers add");
}

#[test]
fn pairing_never_overwrites_a_legacy_peer_of_the_same_name() {
    let legacy_key = "1e9ac71e9ac71e9ac71e9ac71e9ac71e";
    let alice = named("alice");
    alice.loopsy(&["peers", "add", "10.9.9.9", "--name", "bob", "--key", legacy_key]).success();
    let bob = named("bob");
    let (mut host, code) = host_session(&alice, &["--yes"]);
    let joined = join(&bob, &alice.addr, &code).success();
    assert!(joined.stdout.contains("Paired with alice"), "{}", joined.stdout);
    let renamed = host.wait_line("Paired with bob-", WAIT);
    let name = renamed.split_whitespace().nth(2).unwrap().trim_end_matches('.').to_string();
    host.wait_line("Another peer here is already named 'bob'", WAIT);
    assert_eq!(config_key(&alice, "auth", "allowedKeys", "bob").as_deref(), Some(legacy_key), "the legacy key stays");
    assert!(
        config_key(&alice, "auth", "peerKeys", &name).is_some()
            && config_key(&alice, "tls", "pinnedCerts", &name).is_some()
    );
    // Both work, each as what it is.
    let alice_pin = Fingerprint::parse(&config_key(&bob, "tls", "pinnedCerts", "alice").unwrap()).unwrap();
    let legacy = Client::pinned(&url(&alice), Some(legacy_key.into()), Some(alice_pin));
    let _: Value = smol::block_on(legacy.get("/api/v1/status")).unwrap();
    let status: Value = smol::block_on(paired_client(&bob, &alice, "alice").get("/api/v1/status")).unwrap();
    assert_eq!(status["hostname"], "alice");
    let audit = || std::fs::read_to_string(alice.home.path().join("logs/audit.jsonl")).unwrap_or_default();
    crate::support::wait_until(WAIT, "alice's audit log names both callers", || {
        let audit = audit();
        audit.contains(r#""caller":"peer:bob""#) && audit.contains(&format!(r#""caller":"paired:{name}""#))
    });
    let peers = alice.loopsy(&["peers", "--json"]).success().json();
    let names: Vec<&str> = peers["peers"].as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names.iter().filter(|n| **n == "bob").count(), 1, "{names:?}");
    assert!(names.contains(&name.as_str()), "{names:?}");
}
