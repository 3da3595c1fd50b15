//! Agent messaging between two daemons on loopback: send, inbox, ack and status; the 1.0.21
//! key layout on both sides; a recipient that is down at send time; re-deliveries after acks.
//!
//! Hostnames are set in each config (`alice.lan`, `bob.lan`); each daemon registers the other
//! by address with a short name (`alice`, `bob`) and accepts its key through `auth.allowedKeys`,
//! so messaging names are learnt from `/status` as with a peer added by address.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{wait_until, Daemon, Home};

const WAIT: Duration = Duration::from_secs(15);

/// A home with a messaging name and fast retries.
pub(crate) fn messaging_home(name: &str, hostname: &str) -> Home {
    let home = Home::new(name);
    home.edit_config(|doc| {
        doc["server"]["hostname"] = hostname.into();
        doc["messaging"]["retryInitial"] = 50.into();
        doc["messaging"]["retryMax"] = 200.into();
        doc["messaging"]["deliveryTimeout"] = 2000.into();
    });
    home
}

/// Each home accepts the other's key (stored under the other's name, which is also the key it
/// presents to that peer, 1.0.21's symmetric model).
pub(crate) fn trust_each_other(alice: &Home, bob: &Home) {
    let (alice_key, bob_key) = (alice.key(), bob.key());
    alice.edit_config(|doc| doc["auth"]["allowedKeys"]["bob"] = bob_key.into());
    bob.edit_config(|doc| doc["auth"]["allowedKeys"]["alice"] = alice_key.into());
}

pub(crate) fn register(d: &Daemon, name: &str, port: u16) {
    d.req("POST", "/api/v1/peers")
        .json(&json!({"address": "127.0.0.1", "port": port, "name": name}))
        .send()
        .expect(200);
}

/// Alice and Bob, running, each registered with the other.
pub(crate) fn pair(label: &str) -> (Daemon, Daemon) {
    let (alice, bob) =
        (messaging_home(&format!("{label}-a"), "alice.lan"), messaging_home(&format!("{label}-b"), "bob.lan"));
    trust_each_other(&alice, &bob);
    let (alice, bob) = (alice.start(), bob.start());
    register(&alice, "bob", bob.port);
    register(&bob, "alice", alice.port);
    (alice, bob)
}

/// A stopped daemon whose home is bound to a fixed port (learnt from a first run on port 0).
fn stopped_at_fixed_port(home: Home) -> Daemon {
    let mut daemon = home.start();
    let port = daemon.port;
    daemon.stop();
    daemon.home.edit_config(|doc| doc["server"]["port"] = port.into());
    daemon
}

fn send(d: &Daemon, to: &str, kind: &str, body: &str) -> Value {
    d.req("POST", "/api/v1/messages").json(&json!({"to": to, "type": kind, "body": body})).send().expect(200)
}

fn inbox(d: &Daemon) -> Vec<Value> {
    d.get("/api/v1/messages/inbox").expect(200)["messages"].as_array().unwrap().clone()
}

fn status(d: &Daemon, peer: &str) -> Value {
    d.get(&format!("/api/v1/messages/status?peer={peer}")).expect(200)
}

fn entry(d: &Daemon, key: &str) -> Value {
    d.get(&format!("/api/v1/context/{}", key.replace(':', "%3A"))).expect(200)
}

fn has_entry(d: &Daemon, key: &str) -> bool {
    d.get(&format!("/api/v1/context/{}", key.replace(':', "%3A"))).status == 200
}

#[track_caller]
fn assert_ttl(entry: &Value, seconds: u64) {
    assert_eq!(entry["ttl"], seconds, "{entry}");
    let lifetime = entry["expiresAt"].as_u64().unwrap() - entry["updatedAt"].as_u64().unwrap();
    assert_eq!(lifetime, seconds * 1000, "{entry}");
}

/// `<ms>-<host>-<4 lowercase hex>`, the pattern 1.0.21's check_inbox accepts.
fn is_1_0_21_id(id: &str) -> bool {
    let (digits, rest) = id.split_once('-').unwrap_or_default();
    let (host, hex) = rest.rsplit_once('-').unwrap_or_default();
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !host.is_empty()
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && hex.len() == 4
        && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[test]
fn a_message_is_sent_read_acknowledged_and_reported_per_message() {
    let (alice, bob) = pair("msg-basic");
    let first = send(&alice, "bob", "request", "can you run the tests?");
    assert_eq!(first["state"], "delivered", "{first}");
    assert_eq!(first["to"], "bob.lan", "the name learnt from bob's /status");
    assert_eq!(first["endpoint"], format!("127.0.0.1:{}", bob.port));
    let id = first["id"].as_str().unwrap().to_string();
    assert!(is_1_0_21_id(&id) && id.contains("-alice.lan-"), "{id}");
    assert_eq!(first["key"], format!("inbox:bob.lan:{id}"));
    assert!(first.get("error").is_none(), "{first}");
    let second = send(&alice, "bob.lan", "chat", "second");
    assert_ne!(second["id"], first["id"]);

    let messages = inbox(&bob);
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(messages[0]["id"], id.as_str(), "oldest first");
    assert_eq!(messages[0]["from"], "alice.lan");
    assert_eq!(messages[0]["to"], "bob.lan");
    assert_eq!(messages[0]["type"], "request");
    assert_eq!(messages[0]["body"], "can you run the tests?");
    assert_eq!(messages[0]["key"], format!("inbox:bob.lan:{id}"));
    assert!(inbox(&alice).is_empty());

    let report = status(&alice, "bob");
    assert_eq!((report["hostname"].as_str(), report.get("lastAck")), (Some("bob.lan"), None));
    let states: Vec<(&str, bool)> = report["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["state"].as_str().unwrap(), m["acked"].as_bool().unwrap()))
        .collect();
    assert_eq!(states, [("delivered", false), ("delivered", false)]);

    let acked =
        bob.req("POST", "/api/v1/messages/ack").json(&json!({"key": format!("inbox:bob.lan:{id}")})).send().expect(200);
    assert_eq!((acked["state"].as_str(), acked["to"].as_str()), (Some("delivered"), Some("alice.lan")));
    assert_eq!(acked["id"], id.as_str());
    assert_eq!(inbox(&bob).len(), 1, "the acknowledged message left the inbox");

    let report = status(&alice, "bob");
    assert_eq!(report["lastAck"], id.as_str());
    let acks: Vec<bool> =
        report["messages"].as_array().unwrap().iter().map(|m| m["acked"].as_bool().unwrap()).collect();
    assert_eq!(acks, [true, false], "each message is acknowledged by itself");
    // Acknowledging by id alone works too.
    let second_id = second["id"].as_str().unwrap();
    bob.req("POST", "/api/v1/messages/ack").json(&json!({"id": second_id})).send().expect(200);
    let report = status(&alice, "bob");
    assert_eq!(report["lastAck"], second_id);
    assert!(report["messages"].as_array().unwrap().iter().all(|m| m["acked"] == true), "{report}");
    assert!(inbox(&bob).is_empty());
}

#[test]
fn both_daemons_hold_exactly_the_keys_and_values_of_1_0_21() {
    let (alice, bob) = pair("msg-interop");
    let sent = send(&alice, "bob", "chat", "say \"hi\"\nplease");
    let id = sent["id"].as_str().unwrap();
    let outbox = entry(&alice, &format!("outbox:{id}"));
    let value = outbox["value"].as_str().unwrap();
    let ts = id.split('-').next().unwrap();
    assert_eq!(
        value,
        format!(
            r#"{{"from":"alice.lan","to":"bob.lan","ts":{ts},"id":"{id}","type":"chat","body":"say \"hi\"\nplease"}}"#
        ),
        "compact JSON, members in 1.0.21's order"
    );
    assert_ttl(&outbox, 3600);
    let inbox_entry = entry(&bob, &format!("inbox:bob.lan:{id}"));
    assert_eq!(inbox_entry["value"], value);
    assert_ttl(&inbox_entry, 3600);
    let listed = bob.get("/api/v1/context?prefix=inbox:").expect(200);
    assert_eq!(listed["entries"].as_array().unwrap().len(), 1, "one key per message: {listed}");

    bob.req("POST", "/api/v1/messages/ack").json(&json!({"key": format!("inbox:bob.lan:{id}")})).send().expect(200);
    let latest = entry(&alice, "ack:bob.lan");
    assert_eq!(latest["value"], id, "1.0.21's ack key: the plain id");
    assert_ttl(&latest, 7200);
    let own = entry(&alice, &format!("ack:bob.lan:{id}"));
    assert_eq!(own["value"], id);
    assert_ttl(&own, 7200);
    assert!(!has_entry(&bob, &format!("inbox:bob.lan:{id}")), "the inbox entry is deleted");
    assert!(has_entry(&alice, &format!("outbox:{id}")), "the outbox entry stays until its TTL");
    let keys: Vec<String> = bob.get("/api/v1/context").expect(200)["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_string())
        .collect();
    assert!(keys.is_empty(), "nothing else is written on the recipient: {keys:?}");
}

#[test]
fn a_message_put_by_hand_as_1_0_21_does_shows_in_the_inbox_and_can_be_acknowledged() {
    let (alice, bob) = pair("msg-manual");
    let id = "1795473442108-alice.lan-78dc";
    let envelope =
        format!(r#"{{"from":"alice.lan","to":"bob.lan","ts":1795473442108,"id":"{id}","type":"chat","body":"hi"}}"#);
    // What 1.0.21's loopsy_send_message does: a plain context PUT on the recipient.
    bob.anon("PUT", &format!("/api/v1/context/inbox%3Abob.lan%3A{id}"))
        .key(&alice.key)
        .json(&json!({"value": envelope, "ttl": 3600}))
        .send()
        .expect(200);
    let invalid = [
        r#"not json"#.to_string(),
        envelope.replace(id, "1-alice.lan-XYZW"),
        envelope.replace(r#""type":"chat""#, r#""type":"shout""#),
        envelope.replace(r#","body":"hi""#, ""),
    ];
    for (i, value) in invalid.iter().enumerate() {
        bob.req("PUT", &format!("/api/v1/context/inbox%3Abob.lan%3Abad{i}"))
            .json(&json!({"value": value}))
            .send()
            .expect(200);
    }
    bob.req("PUT", "/api/v1/context/inbox%3Acarol%3Ax").json(&json!({"value": envelope})).send().expect(200);
    let messages = inbox(&bob);
    assert_eq!(messages.len(), 1, "invalid envelopes and other inboxes are skipped: {messages:?}");
    assert_eq!((messages[0]["id"].as_str(), messages[0]["body"].as_str()), (Some(id), Some("hi")));

    let acked = bob
        .req("POST", "/api/v1/messages/ack")
        .json(&json!({"key": format!("inbox:bob.lan:{id}"), "id": id}))
        .send()
        .expect(200);
    assert_eq!(acked["state"], "delivered", "the sender is found by its hostname: {acked}");
    assert_eq!(entry(&alice, "ack:bob.lan")["value"], id);
    // Alice's status lists what a 1.0.21 client put in her outbox by itself.
    alice
        .req("PUT", &format!("/api/v1/context/outbox%3A{id}"))
        .json(&json!({"value": envelope, "ttl": 3600}))
        .send()
        .expect(200);
    let report = status(&alice, "bob");
    assert_eq!(report["messages"][0]["state"], "unknown", "{report}");
    assert_eq!(report["messages"][0]["acked"], true, "{report}");
}

#[test]
fn a_recipient_that_is_down_gets_the_message_once_it_is_back_and_its_ack_travels_the_same_way() {
    let (alice_home, bob_home) =
        (messaging_home("msg-offline-a", "alice.lan"), messaging_home("msg-offline-b", "bob.lan"));
    trust_each_other(&alice_home, &bob_home);
    let bob = stopped_at_fixed_port(bob_home);
    let mut alice = stopped_at_fixed_port(alice_home).restart();
    register(&alice, "bob", bob.port);

    let sent = send(&alice, "bob", "request", "while you were away");
    assert_eq!(sent["state"], "queued", "{sent}");
    assert!(sent["error"].as_str().unwrap().contains("cannot reach"), "{sent}");
    let id = sent["id"].as_str().unwrap().to_string();
    wait_until(WAIT, "a few retries", || status(&alice, "bob")["messages"][0]["attempts"].as_u64().unwrap() >= 3);
    let queued = &status(&alice, "bob")["messages"][0];
    assert_eq!(queued["state"], "queued", "{queued}");
    assert!(queued["lastError"].is_string(), "{queued}");

    // The outbox survives a crash of the sender.
    alice.kill();
    let alice = alice.restart();
    let bob = bob.restart();
    register(&bob, "alice", alice.port);
    wait_until(WAIT, "the message reached bob", || !inbox(&bob).is_empty());
    wait_until(WAIT, "alice sees it delivered", || status(&alice, "bob")["messages"][0]["state"] == "delivered");
    let messages = inbox(&bob);
    assert_eq!(messages.len(), 1, "exactly once: {messages:?}");
    assert_eq!(messages[0]["id"], id.as_str());
    assert_eq!(messages[0]["to"], "bob.lan", "the name learnt once bob answered");
    let outbox = entry(&alice, &format!("outbox:{id}"));
    assert!(outbox["value"].as_str().unwrap().contains(r#""to":"bob.lan""#), "{outbox}");
    // Failed attempts are counted in memory only (the book is not rewritten for each).
    assert!(status(&alice, "bob")["messages"][0]["attempts"].as_u64().unwrap() >= 1);

    // Now the sender is down when the recipient acknowledges.
    let mut alice = alice;
    alice.stop();
    let acked = bob.req("POST", "/api/v1/messages/ack").json(&json!({"id": id})).send().expect(200);
    assert_eq!(acked["state"], "queued", "{acked}");
    assert!(inbox(&bob).is_empty(), "removed here at once");
    let alice = alice.restart();
    wait_until(WAIT, "the ack reached alice", || {
        has_entry(&alice, &format!("ack:bob.lan:{id}")) && has_entry(&alice, "ack:bob.lan")
    });
    assert_eq!(entry(&alice, "ack:bob.lan")["value"], id.as_str());
    let report = status(&alice, "bob");
    assert_eq!(
        (report["messages"][0]["state"].as_str(), report["messages"][0]["acked"].as_bool()),
        (Some("delivered"), Some(true))
    );
}

#[test]
fn a_message_delivered_again_after_its_ack_does_not_reappear() {
    let (alice, bob) = pair("msg-dedup");
    let sent = send(&alice, "bob", "chat", "once");
    let id = sent["id"].as_str().unwrap();
    let key = format!("inbox%3Abob.lan%3A{id}");
    let value = entry(&bob, &format!("inbox:bob.lan:{id}"))["value"].clone();
    // Before the ack, a re-delivery only rewrites the same key.
    bob.anon("PUT", &format!("/api/v1/context/{key}"))
        .key(&alice.key)
        .json(&json!({"value": value, "ttl": 3600}))
        .send()
        .expect(200);
    assert_eq!(inbox(&bob).len(), 1);
    bob.req("POST", "/api/v1/messages/ack").json(&json!({"id": id})).send().expect(200);
    // A retry that crossed the ack (the sender never saw the first answer).
    let again = bob
        .anon("PUT", &format!("/api/v1/context/{key}"))
        .key(&alice.key)
        .json(&json!({"value": value, "ttl": 3600}))
        .send()
        .expect(200);
    assert_eq!(again["revision"], 0, "answered, not stored: {again}");
    assert!(inbox(&bob).is_empty(), "the acknowledged message does not come back");
    assert!(!has_entry(&bob, &format!("inbox:bob.lan:{id}")));
    // Other keys and other messages are stored as usual.
    bob.req("PUT", "/api/v1/context/notes").json(&json!({"value": value})).send().expect(200);
    assert!(has_entry(&bob, "notes"));
    send(&alice, "bob", "chat", "twice");
    assert_eq!(inbox(&bob).len(), 1);
    // Still dropped after a restart of the recipient.
    let bob = bob.restart();
    let put = bob.anon("PUT", &format!("/api/v1/context/{key}")).key(&alice.key);
    put.json(&json!({"value": value, "ttl": 3600})).send().expect(200);
    assert_eq!(inbox(&bob).len(), 1);
    assert!(!has_entry(&bob, &format!("inbox:bob.lan:{id}")));
}

#[test]
fn bad_requests_get_errors_that_say_what_to_do() {
    let (alice, bob) = pair("msg-errors");
    let post = |body: Value| alice.req("POST", "/api/v1/messages").json(&body).send();
    assert!(post(json!({"to": "carol", "body": "x"})).expect_error(404, 2001).contains("unknown peer 'carol'"));
    assert!(post(json!({"to": "bob"})).expect_error(400, 9003).contains("body"));
    assert!(post(json!({"body": "x"})).expect_error(400, 9003).contains("to"));
    assert!(post(json!({"to": "bob", "body": "x", "type": "shout"})).expect_error(400, 9003).contains("type"));
    assert!(post(json!({"to": "bob", "body": "x", "peerApiKey": "k"})).expect_error(400, 9003).contains("peerApiKey"));
    let big = "x".repeat(256 * 1024 + 1);
    assert!(post(json!({"to": "bob", "body": big})).expect_error(400, 9003).contains("at most"));
    alice.anon("POST", "/api/v1/messages").json(&json!({"to": "bob", "body": "x"})).send().expect_error(401, 1001);
    // A peer that only introduced itself is never sent a key by itself.
    let eve = json!({"nodeId": "5b0c7c52-3c1e-4d7a-9f61-8d1c2b3a4e5f", "hostname": "eve.lan", "platform": "linux",
                     "version": "1.0.21", "port": 1, "capabilities": []});
    alice.req("POST", "/api/v1/peers/handshake").json(&eve).send().expect(200);
    let refused = post(json!({"to": "eve.lan", "body": "x"})).expect_error(400, 9003);
    assert!(refused.contains("discovered"), "{refused}");
    alice.anon("GET", "/api/v1/messages/inbox").key("wrong-key-0123456789").send().expect_error(403, 1002);

    let ack = |body: Value| bob.req("POST", "/api/v1/messages/ack").json(&body).send();
    assert!(ack(json!({"key": "inbox:bob.lan:1-x-0000"})).expect_error(404, 7001).contains("no message"));
    assert!(ack(json!({"key": "notes"})).expect_error(400, 9003).contains("not an inbox key"));
    assert!(ack(json!({})).expect_error(400, 9003).contains("'key'"));
    let sent = send(&alice, "bob", "chat", "hi");
    let key = sent["key"].as_str().unwrap();
    assert!(ack(json!({"key": key, "id": "1-alice.lan-0000"}))
        .expect_error(400, 9003)
        .contains("not 1-alice.lan-0000"));
    // A message from a node nobody registered: its ack could not reach it.
    let stranger = r#"{"from":"carol.lan","to":"bob.lan","ts":5,"id":"5-carol.lan-0001","type":"chat","body":"?"}"#;
    bob.req("PUT", "/api/v1/context/inbox%3Abob.lan%3A5-carol.lan-0001")
        .json(&json!({"value": stranger}))
        .send()
        .expect(200);
    let message = ack(json!({"id": "5-carol.lan-0001"})).expect_error(404, 2001);
    assert!(message.contains("carol.lan") && message.contains("loopsy peers add"), "{message}");
    assert_eq!(inbox(&bob).len(), 2, "a failed ack changes nothing");

    alice.get("/api/v1/messages/status").expect_error(400, 9003);
    alice.get("/api/v1/messages/status?peer=carol").expect_error(404, 2001);
}

#[test]
fn the_message_command_sends_lists_acknowledges_and_reports() {
    let (alice, bob) = pair("msg-cli");
    let out = alice.loopsy(&["message", "send", "bob", "hello from the cli", "--type", "request"]).success();
    assert!(out.stdout.contains("Message sent") && out.stdout.contains("delivered"), "{}", out.stdout);
    let listed = bob.loopsy(&["message", "inbox", "--json"]).success().json();
    let key = listed["messages"][0]["key"].as_str().unwrap().to_string();
    bob.loopsy(&["message", "inbox"])
        .success()
        .stdout_has("[request] From: alice.lan")
        .stdout_has("hello from the cli");
    bob.loopsy(&["message", "ack", &key]).success().stdout_has("ACK sent");
    bob.loopsy(&["message", "inbox"]).success().stdout_has("No new messages");
    let report = alice.loopsy(&["message", "status", "bob", "--json"]).success().json();
    assert_eq!(report["messages"][0]["acked"], true, "{report}");
    alice.loopsy(&["message", "status", "bob"]).success().stdout_has("delivered, acknowledged");
    alice.loopsy(&["message", "send", "carol", "x"]).code(2).stderr_has("unknown peer 'carol'");
    bob.loopsy(&["message", "ack", &key]).code(1).stderr_has("no message");
    alice.loopsy(&["message", "send", "bob", "x", "--type", "shout"]).code(2).stderr_has("type");
}

/// A forged envelope for `id`: what someone who may write alice's context would put there.
fn forged(id: &str) -> String {
    json!({"from": "alice.lan", "to": "bob.lan", "ts": 1, "id": id, "type": "chat", "body": "forged words"}).to_string()
}

// See: #13 (item 10): a queued message was re-read from `outbox:<id>` at delivery, which anyone
// allowed to write the context could change.
#[test]
fn a_queued_message_is_delivered_as_it_was_sent_whatever_happens_to_its_outbox_entry() {
    let (alice_home, bob_home) = (messaging_home("msg-kept-a", "alice.lan"), messaging_home("msg-kept-b", "bob.lan"));
    trust_each_other(&alice_home, &bob_home);
    let bob_key = bob_home.key();
    let mut bob = stopped_at_fixed_port(bob_home);
    let alice = alice_home.start();
    register(&alice, "bob", bob.port);

    // Bob is down; two messages wait in alice's outbox, and a peer of alice's rewrites one
    // outbox entry and deletes the other.
    let first = send(&alice, "bob", "chat", "the first, as written");
    let second = send(&alice, "bob", "request", "the second, as written");
    let (first, second) = (first["id"].as_str().unwrap().to_string(), second["id"].as_str().unwrap().to_string());
    let put = |id: &str| {
        alice
            .req("PUT", &format!("/api/v1/context/outbox%3A{id}"))
            .key(&bob_key)
            .json(&json!({"value": forged(id), "ttl": 3600}))
            .send()
            .expect(200)
    };
    put(&first);
    alice.req("DELETE", &format!("/api/v1/context/outbox%3A{second}")).key(&bob_key).send().expect(200);

    let restarted = bob.restart();
    wait_until(WAIT, "both messages reached bob", || inbox(&restarted).len() == 2);
    let bodies: Vec<(String, String)> = inbox(&restarted)
        .iter()
        .map(|m| (m["id"].as_str().unwrap().to_string(), m["body"].as_str().unwrap().to_string()))
        .collect();
    assert!(bodies.contains(&(first.clone(), "the first, as written".into())), "{bodies:?}");
    assert!(bodies.contains(&(second.clone(), "the second, as written".into())), "{bodies:?}");

    // Once bob's name is known the message is not rewritten at delivery; the same holds.
    bob = restarted;
    bob.stop();
    let third = send(&alice, "bob", "chat", "the third, as written")["id"].as_str().unwrap().to_string();
    put(&third);
    let bob = bob.restart();
    wait_until(WAIT, "the third reached bob", || inbox(&bob).len() == 3);
    let third_body = inbox(&bob).into_iter().find(|m| m["id"] == third.as_str()).unwrap()["body"].clone();
    assert_eq!(third_body, "the third, as written");
    wait_until(WAIT, "alice sees them delivered", || {
        status(&alice, "bob")["messages"].as_array().unwrap().iter().all(|m| m["state"] == "delivered")
    });
    wait_until(WAIT, "delivered messages are not kept", || {
        std::fs::read_dir(alice.home.path().join("outbox")).map(|d| d.count()).unwrap_or(0) == 0
    });
}
