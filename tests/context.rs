//! The context store: every route and error, TTLs, limits, revisions, watch, persistence,
//! crash safety and the `loopsy context` CLI.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{wait_until, Daemon, Home, Request};

fn put(d: &Daemon, key: &str, body: Value) -> Value {
    d.req("PUT", &format!("/api/v1/context/{key}")).json(&body).send().expect(200)
}

fn keys(listing: &Value) -> Vec<String> {
    listing["entries"].as_array().unwrap().iter().map(|e| e["key"].as_str().unwrap().to_string()).collect()
}

#[test]
fn put_get_list_and_delete_have_the_1_0_21_shapes() {
    let d = Daemon::start("ctx-shapes");
    let entry = put(&d, "greeting", json!({"value": "hello", "ttl": 60}));
    assert_eq!(entry["key"], "greeting");
    assert_eq!(entry["value"], "hello");
    assert_eq!(entry["fromNodeId"], "local");
    assert_eq!(entry["ttl"], 60);
    assert_eq!(entry["createdAt"], entry["updatedAt"]);
    assert_eq!(entry["expiresAt"].as_u64().unwrap(), entry["updatedAt"].as_u64().unwrap() + 60_000);
    assert_eq!(entry["revision"], 1);
    assert_eq!(d.get("/api/v1/context/greeting").expect(200), entry);
    let plain = put(&d, "plain", json!({"value": "no ttl", "ttl": 0}));
    assert!(plain.get("ttl").is_none() && plain.get("expiresAt").is_none(), "ttl 0 means none: {plain}");

    let listing = d.get("/api/v1/context").expect(200);
    assert_eq!(listing["entries"], json!([entry, plain]));
    assert_eq!(d.get("/api/v1/status").expect(200)["context"]["entries"], 2);

    let deleted = d.req("DELETE", "/api/v1/context/greeting").send().expect(200);
    assert_eq!(deleted, json!({"success": true, "key": "greeting", "revision": 3}));
    let message = d.get("/api/v1/context/greeting").expect_error(404, 5001);
    assert_eq!(message, "Key 'greeting' not found");
    d.req("DELETE", "/api/v1/context/greeting").send().expect_error(404, 5001);
    assert_eq!(keys(&d.get("/api/v1/context").expect(200)), ["plain"]);
}

#[test]
fn listing_keeps_insertion_order_and_filters_by_prefix() {
    let d = Daemon::start("ctx-order");
    for key in ["inbox:bob:1", "b", "inbox:bob:2", "inbox:alice:1"] {
        put(&d, key, json!({"value": key}));
    }
    let first = d.get("/api/v1/context/b").expect(200);
    // So updatedAt can differ from createdAt: the clock (milliseconds) must have moved on.
    let created = first["createdAt"].as_u64().unwrap();
    wait_until(Duration::from_secs(5), "the clock passes createdAt", || {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64 > created
    });
    let overwritten = put(&d, "b", json!({"value": "again"}));
    assert_eq!(overwritten["createdAt"], first["createdAt"], "createdAt is kept");
    assert_ne!(overwritten["updatedAt"], first["updatedAt"]);
    assert_eq!(overwritten["revision"], 5);
    assert_eq!(keys(&d.get("/api/v1/context").expect(200)), ["inbox:bob:1", "b", "inbox:bob:2", "inbox:alice:1"]);
    assert_eq!(keys(&d.get("/api/v1/context?prefix=inbox%3Abob%3A").expect(200)), ["inbox:bob:1", "inbox:bob:2"]);
    assert_eq!(keys(&d.get("/api/v1/context?prefix=").expect(200)).len(), 4);
    assert!(keys(&d.get("/api/v1/context?prefix=nothing").expect(200)).is_empty());
}

#[test]
fn a_long_listing_has_the_same_shape_as_a_short_one() {
    // Past a few dozen entries the daemon encodes the listing on its blocking pool.
    let d = Daemon::start("ctx-long-list");
    let written: Vec<Value> =
        (0..300).map(|i| put(&d, &format!("k{i:03}"), json!({"value": format!("v{i}")}))).collect();
    let listing = d.get("/api/v1/context");
    assert_eq!(listing.header("content-type").map(|v| v.starts_with("application/json")), Some(true));
    assert_eq!(listing.expect(200), json!({"entries": written}));
    assert_eq!(d.get("/api/v1/context?prefix=k29").expect(200), json!({"entries": written[290..300]}));
}

#[test]
fn keys_may_contain_colons_and_encoded_slashes() {
    let d = Daemon::start("ctx-keys");
    put(&d, "inbox:bob:1", json!({"value": "raw colons"}));
    assert_eq!(d.get("/api/v1/context/inbox%3Abob%3A1").expect(200)["value"], "raw colons");
    put(&d, "dir%2Ffile", json!({"value": "slash"}));
    assert_eq!(d.get("/api/v1/context/dir%2Ffile").expect(200)["key"], "dir/file");
    assert_eq!(keys(&d.get("/api/v1/context?prefix=dir%2F").expect(200)), ["dir/file"]);
    d.req("DELETE", "/api/v1/context/dir%2Ffile").send().expect(200);
    // An unencoded slash is another route.
    d.get("/api/v1/context/dir/file").expect_error(404, 9004);
}

#[test]
fn keys_up_to_1024_bytes_work_and_longer_ones_get_a_clear_400() {
    let d = Daemon::start("ctx-longkey");
    // 1.0.21 answered a silent 404 beyond 100 characters.
    let long = "k".repeat(1024);
    put(&d, &long, json!({"value": "v"}));
    assert_eq!(d.get(&format!("/api/v1/context/{long}")).expect(200)["value"], "v");
    d.req("DELETE", &format!("/api/v1/context/{long}")).send().expect(200);
    let too_long = "k".repeat(1025);
    let message = d
        .req("PUT", &format!("/api/v1/context/{too_long}"))
        .json(&json!({"value": "v"}))
        .send()
        .expect_error(400, 9003);
    assert!(message.contains("1 to 1024 bytes") && message.contains("1025"), "{message}");
    d.get(&format!("/api/v1/context/{too_long}")).expect_error(400, 9003);
}

#[test]
fn a_key_named_watch_is_read_through_an_encoded_path() {
    let d = Daemon::start("ctx-watchkey");
    // The path /api/v1/context/watch is the stream's alone, for every method.
    d.req("PUT", "/api/v1/context/watch").json(&json!({"value": "tower"})).send().expect_error(405, 9005);
    put(&d, "%77atch", json!({"value": "tower"}));
    assert_eq!(d.get("/api/v1/context/%77atch").expect(200)["value"], "tower");
    assert_eq!(keys(&d.get("/api/v1/context?prefix=watch").expect(200)), ["watch"]);
    d.loopsy(&["context", "get", "watch"]).success().stdout_has("tower");
    d.req("DELETE", "/api/v1/context/watch").send().expect_error(405, 9005);
    d.req("DELETE", "/api/v1/context/%77atch").send().expect(200);
}

#[test]
fn bad_values_and_ttls_are_refused_and_name_the_field() {
    let d = Daemon::start("ctx-values");
    let send = |body: Value| d.req("PUT", "/api/v1/context/k").json(&body).send();
    assert_eq!(send(json!({})).expect_error(400, 9003), "Missing value");
    assert_eq!(send(json!({"value": ""})).expect_error(400, 9003), "Missing value");
    assert_eq!(send(json!({"value": null})).expect_error(400, 9003), "Missing value");
    for (body, field) in [
        (json!({"value": 42}), "value"),
        (json!({"value": {"a": 1}}), "value"),
        (json!({"value": "v", "ttl": "5"}), "ttl"),
        (json!({"value": "v", "ifRevision": -1}), "ifRevision"),
    ] {
        let message = send(body.clone()).expect_error(400, 9003);
        assert!(message.contains(&format!("'{field}'")), "{body}: {message}");
    }
    for ttl in [json!(-1), json!(-0.5), json!(1e12)] {
        let message = send(json!({"value": "v", "ttl": ttl})).expect_error(400, 9003);
        assert!(message.contains("ttl"), "{message}");
    }
    d.get("/api/v1/context/k").expect_error(404, 5001);
    let long_node = "n".repeat(200);
    for bad in [long_node.as_str(), "a\tb"] {
        let message = d
            .req("PUT", "/api/v1/context/k")
            .header("X-Loopsy-Node-Id", bad)
            .json(&json!({"value": "v"}))
            .send()
            .expect_error(400, 9003);
        assert!(message.contains("X-Loopsy-Node-Id"), "{message}");
    }
    let entry = d
        .req("PUT", "/api/v1/context/k")
        .header("X-Loopsy-Node-Id", "node-7")
        .json(&json!({"value": "v"}))
        .send()
        .expect(200);
    assert_eq!(entry["fromNodeId"], "node-7");
}

#[test]
fn values_are_limited_to_1_mib_in_bytes() {
    let d = Daemon::start("ctx-size");
    let mib = 1024 * 1024;
    let exactly = "v".repeat(mib);
    put(&d, "big", json!({"value": exactly}));
    assert_eq!(d.get("/api/v1/context/big").expect(200)["value"].as_str().unwrap().len(), mib);
    let message =
        d.req("PUT", "/api/v1/context/big").json(&json!({"value": "v".repeat(mib + 1)})).send().expect_error(400, 5002);
    assert!(message.contains("1048576"), "{message}");
    // 524,289 two-byte characters: fewer than 1 Mi characters, more than 1 MiB.
    d.req("PUT", "/api/v1/context/big").json(&json!({"value": "é".repeat(mib / 2 + 1)})).send().expect_error(400, 5002);
    let message = d
        .req("PUT", "/api/v1/context/big")
        .json(&json!({"value": "v".repeat(mib + 100 * 1024)}))
        .send()
        .expect_error(413, 9006);
    assert!(message.contains("larger than"), "{message}");
    assert_eq!(d.get("/api/v1/context/big").expect(200)["value"].as_str().unwrap().len(), mib, "unchanged");
    // Each request and answer of 1 MiB or more above was followed by a trim of the allocator
    // (memory comes back after a burst): the daemon still holds and serves every byte.
    assert_eq!(d.get("/api/v1/context/big").expect(200)["value"], json!(exactly));
    assert_eq!(put(&d, "small", json!({"value": "after"}))["value"], "after");
}

#[test]
fn at_most_max_entries_live_entries_and_expired_ones_do_not_count() {
    let home = Home::new("ctx-limit");
    home.edit_config(|doc| doc["context"]["maxEntries"] = 1000.into()); // 1.0.21's fixed cap
    let d = home.start();
    for i in 1..1000 {
        put(&d, &format!("k{i}"), json!({"value": "x"}));
    }
    put(&d, "short-lived", json!({"value": "x", "ttl": 1}));
    let message = d.req("PUT", "/api/v1/context/one-more").json(&json!({"value": "x"})).send().expect_error(400, 5003);
    assert_eq!(message, "Max context entries (1000) reached");
    put(&d, "k1", json!({"value": "overwriting is fine"}));
    wait_until(Duration::from_secs(5), "the short-lived entry expires", || {
        d.get("/api/v1/context/short-lived").status == 404
    });
    put(&d, "one-more", json!({"value": "x"}));
    d.req("PUT", "/api/v1/context/two-more").json(&json!({"value": "x"})).send().expect_error(400, 5003);
}

#[test]
fn the_default_cap_is_100000_entries_not_1_0_21s_1000_and_holds_after_a_restart() {
    let d = Daemon::start("ctx-default-limit");
    for i in 0..1001 {
        put(&d, &format!("k{i}"), json!({"value": "x"}));
    }
    assert_eq!(d.get("/api/v1/status").expect(200)["context"]["entries"], 1001);
    // A lower cap than what is stored: everything is kept, new keys are refused.
    d.home.edit_config(|doc| doc["context"]["maxEntries"] = 10.into());
    let d = d.restart();
    assert_eq!(d.get("/api/v1/status").expect(200)["context"]["entries"], 1001);
    let message = d.req("PUT", "/api/v1/context/new").json(&json!({"value": "x"})).send().expect_error(400, 5003);
    assert_eq!(message, "Max context entries (10) reached");
    put(&d, "k7", json!({"value": "overwriting is fine"}));
}

#[test]
fn entries_expire_from_get_list_and_status() {
    let d = Daemon::start("ctx-ttl");
    let entry = put(&d, "brief", json!({"value": "x", "ttl": 0.3}));
    assert_eq!(entry["ttl"], 0.3);
    assert_eq!(entry["expiresAt"].as_u64().unwrap() - entry["updatedAt"].as_u64().unwrap(), 300);
    put(&d, "lasting", json!({"value": "y"}));
    assert_eq!(d.get("/api/v1/status").expect(200)["context"]["entries"], 2);
    wait_until(Duration::from_secs(5), "the entry expires", || d.get("/api/v1/context/brief").status == 404);
    assert_eq!(keys(&d.get("/api/v1/context").expect(200)), ["lasting"]);
    assert_eq!(d.get("/api/v1/status").expect(200)["context"]["entries"], 1);
    d.req("DELETE", "/api/v1/context/brief").send().expect_error(404, 5001);
}

#[test]
fn if_revision_makes_puts_and_deletes_compare_and_set() {
    let d = Daemon::start("ctx-cas");
    let send = |body: Value| d.req("PUT", "/api/v1/context/lock").json(&body).send();
    let mine = send(json!({"value": "alice", "ifRevision": 0})).expect(200);
    assert_eq!(mine["revision"], 1);
    let res = send(json!({"value": "bob", "ifRevision": 0}));
    let message = res.expect_error(409, 5004);
    assert!(message.contains("current revision is 1"), "{message}");
    assert_eq!(res.json()["error"]["details"], json!({"key": "lock", "currentRevision": 1, "ifRevision": 0}));
    send(json!({"value": "bob", "ifRevision": 7})).expect_error(409, 5004);
    assert_eq!(send(json!({"value": "alice again", "ifRevision": 1})).expect(200)["revision"], 2);
    assert_eq!(d.get("/api/v1/context/lock").expect(200)["value"], "alice again");

    d.req("DELETE", "/api/v1/context/lock?ifRevision=1").send().expect_error(409, 5004);
    d.req("DELETE", "/api/v1/context/lock?ifRevision=0").send().expect_error(409, 5004);
    let message = d.req("DELETE", "/api/v1/context/lock?ifRevision=abc").send().expect_error(400, 9003);
    assert!(message.contains("ifRevision"), "{message}");
    d.req("DELETE", "/api/v1/context/lock?ifRevision=2").send().expect(200);
    d.req("DELETE", "/api/v1/context/lock?ifRevision=2").send().expect_error(409, 5004);
    send(json!({"value": "counter", "ifRevision": 3})).expect_error(409, 5004);
    assert_eq!(send(json!({"value": "free again", "ifRevision": 0})).expect(200)["revision"], 4);
}

#[test]
fn revisions_survive_restarts_and_are_never_reused() {
    let d = Daemon::start("ctx-restart");
    put(&d, "a", json!({"value": "1"}));
    put(&d, "b", json!({"value": "2", "ttl": 3600}));
    d.req("DELETE", "/api/v1/context/a").send().expect(200);
    let mut d = d.restart();
    assert_eq!(d.get("/api/v1/context/b").expect(200)["revision"], 2);
    assert_eq!(put(&d, "c", json!({"value": "3"}))["revision"], 4);
    d.req("DELETE", "/api/v1/context/c").send().expect(200);
    d.kill();
    let d = d.restart();
    assert_eq!(put(&d, "d", json!({"value": "4"}))["revision"], 6);
    assert_eq!(keys(&d.get("/api/v1/context").expect(200)), ["b", "d"]);
    let snapshot: Value =
        serde_json::from_str(&std::fs::read_to_string(d.home.path().join("context.json")).unwrap()).unwrap();
    assert_eq!(snapshot[0]["key"], "b");
    assert_eq!(snapshot[0]["revision"], 2, "the snapshot keeps revisions: {snapshot}");
}

#[test]
fn a_1_0_21_context_json_is_imported_on_first_start() {
    let home = Home::new("ctx-import");
    let far = 4_000_000_000_000u64;
    let legacy = json!([
        {"key": "greeting", "value": "hello", "fromNodeId": "local", "createdAt": 1000, "updatedAt": 2000, "ttl": 60, "expiresAt": far},
        {"key": "gone", "value": "old", "fromNodeId": "local", "createdAt": 1000, "updatedAt": 2000, "ttl": 1, "expiresAt": 3000},
        {"key": "inbox:me:1", "value": "{\"from\":\"bob\"}", "fromNodeId": "n1", "createdAt": 5, "updatedAt": 6}
    ]);
    std::fs::write(home.path().join("context.json"), serde_json::to_string_pretty(&legacy).unwrap()).unwrap();
    let d = home.start();
    let listing = d.get("/api/v1/context").expect(200);
    assert_eq!(keys(&listing), ["greeting", "inbox:me:1"]);
    let greeting = &listing["entries"][0];
    assert_eq!((greeting["createdAt"].as_u64(), greeting["expiresAt"].as_u64()), (Some(1000), Some(far)));
    assert_eq!(listing["entries"][1]["fromNodeId"], "n1");
    let revisions: Vec<u64> =
        listing["entries"].as_array().unwrap().iter().map(|e| e["revision"].as_u64().unwrap()).collect();
    assert!(revisions[0] >= 1 && revisions[1] > revisions[0], "{revisions:?}");
    assert!(put(&d, "new", json!({"value": "x"}))["revision"].as_u64().unwrap() > revisions[1]);
    let d = d.restart();
    assert_eq!(d.get("/api/v1/context/greeting").expect(200)["revision"].as_u64().unwrap(), revisions[0]);
}

#[test]
fn watch_streams_puts_deletes_and_expiry_under_a_prefix() {
    let d = Daemon::start("ctx-watch");
    let mut stream = d.req("GET", "/api/v1/context/watch?prefix=job%3A").stream();
    assert_eq!(stream.status, 200);
    assert!(stream.headers.iter().any(|(n, v)| n == "content-type" && v.starts_with("text/event-stream")));
    let entry = put(&d, "job:1", json!({"value": "build"}));
    put(&d, "other", json!({"value": "ignored"}));
    d.req("DELETE", "/api/v1/context/job%3A1").send().expect(200);
    put(&d, "job:2", json!({"value": "test", "ttl": 0.2}));

    let event = stream.next_event().unwrap();
    assert_eq!((event.event.as_deref(), event.id.as_deref()), (Some("put"), Some("1")));
    assert_eq!(event.json(), json!({"type": "put", "key": "job:1", "revision": 1, "entry": entry}));
    let event = stream.next_event().unwrap();
    assert_eq!(event.event.as_deref(), Some("delete"));
    assert_eq!(event.json(), json!({"type": "delete", "key": "job:1", "revision": 3}));
    let event = stream.next_event().unwrap();
    assert_eq!((event.event.as_deref(), event.json()["key"].clone()), (Some("put"), json!("job:2")));
    let event = stream.next_event().unwrap();
    assert_eq!(event.event.as_deref(), Some("expire"));
    assert_eq!(event.json(), json!({"type": "expire", "key": "job:2", "revision": 4}));
    stream.close();
    // A closed watcher costs nothing: writes go on.
    put(&d, "job:3", json!({"value": "after"}));
}

#[test]
fn watch_streams_end_when_the_daemon_stops() {
    let mut d = Daemon::start("ctx-watchstop");
    let mut stream = d.req("GET", "/api/v1/context/watch").stream();
    put(&d, "k", json!({"value": "v"}));
    assert_eq!(stream.next_event().unwrap().event.as_deref(), Some("put"));
    let started = std::time::Instant::now();
    d.signal(libc::SIGTERM);
    assert!(stream.next_event().is_none(), "the stream ends");
    assert_eq!(d.wait_exit(Duration::from_secs(8)), Some(0));
    assert!(started.elapsed() < Duration::from_secs(5), "the open stream does not hold up the stop");
}

/// What one writer thread of the crash test saw.
#[derive(Default)]
struct Written {
    /// Key to the value of its last acknowledged put.
    puts: std::collections::HashMap<String, String>,
    deletes: Vec<String>,
    /// The put that had no answer when the daemon died: it may or may not have landed.
    in_flight: Option<(String, String)>,
}

/// Puts to its own 100 keys (then overwrites them) and deletes its share of `del-*`, as fast
/// as the daemon answers, until the daemon is gone.
fn write_until_the_daemon_dies(addr: &str, key: &str, worker: usize, acked: &AtomicUsize) -> Written {
    let mut written = Written::default();
    for i in 0.. {
        let deleting = worker < 2 && i % 2 == 1 && i / 2 < 100;
        let (request, name, value) = if deleting {
            let name = format!("del-{}", worker * 100 + i / 2);
            (Request::new(addr, "DELETE", &format!("/api/v1/context/{name}")), name, String::new())
        } else {
            let name = format!("w{worker}-{}", i % 100);
            let value = format!("value {i} of {name}");
            let request = Request::new(addr, "PUT", &format!("/api/v1/context/{name}")).json(&json!({"value": value}));
            written.in_flight = Some((name.clone(), value.clone()));
            (request, name, value)
        };
        match request.key(key).timeout(Duration::from_secs(10)).try_send() {
            Ok(res) if res.status == 200 && deleting => written.deletes.push(name),
            Ok(res) if res.status == 200 => {
                written.puts.insert(name, value);
                written.in_flight = None;
                acked.fetch_add(1, Ordering::SeqCst);
            }
            Ok(res) => panic!("{name}: unexpected {} {}", res.status, res.text()),
            Err(_) => return written, // The daemon is gone.
        }
    }
    unreachable!()
}

#[test]
fn every_acknowledged_write_survives_kill_9_during_a_write_load() {
    let mut d = Daemon::start("ctx-crash");
    for i in 0..200 {
        put(&d, &format!("del-{i}"), json!({"value": "doomed"}));
    }
    let acked = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..6)
        .map(|worker| {
            let (addr, key, acked) = (d.addr.clone(), d.key.clone(), acked.clone());
            std::thread::spawn(move || write_until_the_daemon_dies(&addr, &key, worker, &acked))
        })
        .collect();
    wait_until(Duration::from_secs(60), "over a thousand writes are acknowledged", || {
        acked.load(Ordering::SeqCst) >= 1200
    });
    d.kill();
    let written: Vec<Written> = workers.into_iter().map(|worker| worker.join().unwrap()).collect();
    let d = d.restart();
    let listing = d.get("/api/v1/context").expect(200);
    let stored: std::collections::HashMap<String, String> = listing["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["key"].as_str().unwrap().to_string(), e["value"].as_str().unwrap().to_string()))
        .collect();
    let (mut puts, mut deletes) = (0, 0);
    for worker in &written {
        for (name, value) in &worker.puts {
            let got = stored.get(name).unwrap_or_else(|| panic!("acknowledged put of {name} was lost"));
            let landed_later = worker.in_flight.as_ref().is_some_and(|(n, v)| n == name && v == got);
            assert!(got == value || landed_later, "{name}: acknowledged {value:?}, found {got:?}");
        }
        for name in &worker.deletes {
            assert!(!stored.contains_key(name), "acknowledged delete of {name} was lost");
        }
        puts += worker.puts.len();
        deletes += worker.deletes.len();
    }
    assert!(deletes > 0);
    eprintln!(
        "{} acknowledged writes before kill -9 ({puts} keys, {deletes} deletes); all kept",
        acked.load(Ordering::SeqCst)
    );
}

#[test]
fn the_cli_sets_gets_lists_and_deletes() {
    let d = Daemon::start("ctx-cli");
    let set = d.loopsy(&["context", "set", "inbox:me:1", "hello world", "--ttl", "60"]).success();
    assert!(set.stdout.starts_with("Context set:"), "{}", set.stdout);
    d.loopsy(&["context", "get", "inbox:me:1"]).success().stdout_has("hello world\n");
    let entry =
        serde_json::from_str::<Value>(&d.loopsy(&["context", "get", "inbox:me:1", "--json"]).success().stdout).unwrap();
    assert_eq!((entry["ttl"].clone(), entry["revision"].clone()), (json!(60), json!(1)));
    d.loopsy(&["context", "set", "a/b", "slashed"]).success();
    d.loopsy(&["context", "list"])
        .success()
        .stdout_has("  inbox:me:1 = hello world (expires in ")
        .stdout_has("s)\n  a/b = slashed\n");
    let listing = d.loopsy(&["context", "list", "--prefix", "inbox:", "--json"]).success().json();
    assert_eq!(keys(&listing), ["inbox:me:1"]);
    d.loopsy(&["context", "set", "a/b", "x", "--if-revision", "0"]).code(1).stderr_has("current revision is 2");
    d.loopsy(&["context", "delete", "a/b", "--if-revision", "2"]).success().stdout_has("Deleted key: a/b");
    d.loopsy(&["context", "get", "a/b"]).code(1).stderr_has("Key 'a/b' not found");
    d.loopsy(&["context", "delete", "a/b"]).code(1);
    d.loopsy(&["context", "set", "k", "v", "--ttl", "soon"]).code(2).stderr_has("--ttl");
    d.loopsy(&["context", "set", "k", "v", "--ttl", "-5"]).code(2).stderr_has("ttl");
    d.loopsy(&["context", "delete", "inbox:me:1"]).success();
    d.loopsy(&["context", "list"]).success().stdout_has("No context entries");
}

#[test]
fn the_cli_reaches_another_daemon_with_peer() {
    let alice = Daemon::start("ctx-alice");
    let bob_home = Home::new("ctx-bob");
    bob_home.edit_config(|doc| doc["auth"]["allowedKeys"]["alice"] = alice.key.clone().into());
    let bob = bob_home.start();
    let peer = format!("127.0.0.1:{}", bob.port);
    alice.loopsy(&["context", "set", "from", "alice", "--peer", &peer]).success();
    assert_eq!(bob.get("/api/v1/context/from").expect(200)["value"], "alice");
    alice.loopsy(&["context", "get", "from", "--peer", &peer]).success().stdout_has("alice");
    alice.loopsy(&["context", "get", "from"]).code(1);
    alice.loopsy(&["context", "list", "--peer", &peer]).success().stdout_has("from = alice");
    alice.loopsy(&["context", "delete", "from", "--peer", &peer]).success();
    bob.get("/api/v1/context/from").expect_error(404, 5001);
    drop(bob);
    alice.loopsy(&["context", "get", "from", "--peer", &peer]).code(2).stderr_has("cannot reach");
}

#[test]
fn the_openapi_document_describes_the_context_routes() {
    let d = Daemon::start("ctx-openapi");
    let doc = d.anon("GET", "/api/v1/openapi.json").send().expect(200);
    for (path, method) in [
        ("/api/v1/context", "get"),
        ("/api/v1/context/watch", "get"),
        ("/api/v1/context/{key}", "put"),
        ("/api/v1/context/{key}", "get"),
        ("/api/v1/context/{key}", "delete"),
    ] {
        assert!(doc["paths"][path][method]["responses"]["200"].is_object(), "{method} {path}");
    }
    assert!(doc["components"]["schemas"]["ContextEntry"]["properties"]["revision"].is_object());
    assert!(doc["paths"]["/api/v1/context/{key}"]["put"]["responses"]["409"].is_object());
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack.windows(needle.len()).position(|w| w == needle).expect("the bytes are in the journal")
}

// See: #13 (a corrupt frame in the middle of the journal silently dropped every later write, and
// the compaction at start erased the evidence).
#[test]
fn a_journal_damaged_in_the_middle_stops_the_daemon_with_a_clear_error_and_is_kept() {
    let mut d = Daemon::start("ctx-journal-damage");
    for i in 0..3 {
        put(&d, &format!("k{i}"), json!({"value": format!("value-{i}")}));
    }
    d.kill(); // no clean stop, so the changes are still in the journal
    let journal = d.home.path().join("context.journal");
    let mut bytes = std::fs::read(&journal).unwrap();
    let at = find(&bytes, b"value-1");
    bytes[at] ^= 0x01; // one flipped bit in the middle frame
    std::fs::write(&journal, &bytes).unwrap();
    let snapshot_before = std::fs::read(d.home.path().join("context.json")).ok();

    let run = d.home.loopsy(&["start", "--foreground"]).code(2);
    assert!(run.stderr.contains("context.journal is damaged in the middle"), "{}", run.stderr);
    assert!(run.stderr.contains("truncate -s"), "the error says what to do: {}", run.stderr);
    d.home.loopsy(&["start"]).code(2).stderr_has("damaged in the middle");
    assert_eq!(std::fs::read(&journal).unwrap(), bytes, "the journal is left exactly as it was");
    assert_eq!(std::fs::read(d.home.path().join("context.json")).ok(), snapshot_before, "no compaction ran");

    // Following the advice (cut at the damage) starts the daemon with the changes before it.
    let offset = run.stderr.split("frame at byte ").nth(1).unwrap().split(' ').next().unwrap();
    let offset: u64 = offset.parse().unwrap();
    std::fs::OpenOptions::new().write(true).open(&journal).unwrap().set_len(offset).unwrap();
    let d = d.restart();
    assert_eq!(keys(&d.get("/api/v1/context").expect(200)), ["k0"]);
}

#[test]
fn a_torn_last_write_is_still_recovered_at_start() {
    let mut d = Daemon::start("ctx-journal-torn");
    for i in 0..3 {
        put(&d, &format!("k{i}"), json!({"value": format!("value-{i}")}));
    }
    d.kill();
    let journal = d.home.path().join("context.journal");
    let bytes = std::fs::read(&journal).unwrap();
    // The last frame cut short, as a crash in the middle of an append leaves it.
    std::fs::write(&journal, &bytes[..bytes.len() - 5]).unwrap();
    let d = d.restart();
    assert_eq!(keys(&d.get("/api/v1/context").expect(200)), ["k0", "k1"]);
    // A crash tears only an append in progress, never acknowledged: its revision is free again.
    assert_eq!(put(&d, "k3", json!({"value": "after"}))["revision"], 3);
    let logged = d.output.lock().unwrap().join("\n");
    assert!(logged.contains("a write cut short by a crash"), "{logged}");
}
