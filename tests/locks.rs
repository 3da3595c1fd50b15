//! Leases and locks with fencing tokens: `/api/v1/locks`, fenced context writes, `loopsy lock`
//! and `loopsy locks`, durability across restarts and `kill -9` under contention. The
//! multi-host contention test is in `netlab.rs`, the MCP tools in `mcp_tools.rs`.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::mcp_stdio::McpServer;
use crate::support::{
    command, loopsy_bin, wait_child, wait_until, Background, Daemon, Home, Request, Response, TempDir,
};

fn lock_path(name: &str) -> String {
    format!("/api/v1/locks/{name}")
}

fn acquire(daemon: &Daemon, name: &str, holder: &str, ttl: f64) -> Response {
    daemon.req("POST", &lock_path(name)).json(&json!({"holder": holder, "ttl": ttl})).send()
}

fn token(response: &Response) -> u64 {
    response.expect(200)["token"].as_u64().unwrap()
}

#[test]
fn a_lock_is_granted_refused_to_others_renewed_and_released_by_its_holder_only() {
    let daemon = Daemon::start("locks-basic");
    let granted = acquire(&daemon, "db", "alice", 30.0).expect(200);
    let first = granted["token"].as_u64().unwrap();
    assert_eq!(
        (granted["name"].as_str(), granted["holder"].as_str(), granted["ttl"].as_f64()),
        (Some("db"), Some("alice"), Some(30.0))
    );
    let expires = granted["expiresAt"].as_u64().unwrap();
    assert!(expires > granted["acquiredAt"].as_u64().unwrap() + 29_000);

    let refused = acquire(&daemon, "db", "bob", 30.0);
    let message = refused.expect_error(409, 6001);
    assert!(message.contains("held by 'alice'"), "{message}");
    assert_eq!(refused.json()["error"]["details"]["holder"], "alice", "409 names the current holder");
    assert_eq!(refused.json()["error"]["details"]["token"], first);

    // The holder asking again gets the same grant (a retried acquire is harmless).
    assert_eq!(token(&acquire(&daemon, "db", "alice", 30.0)), first);
    let shown = daemon.get(&lock_path("db")).expect(200);
    assert_eq!((shown["holder"].as_str(), shown["token"].as_u64()), (Some("alice"), Some(first)));
    let listed = daemon.get("/api/v1/locks").expect(200);
    assert_eq!(listed["locks"].as_array().unwrap().len(), 1);

    let renew = |holder: &str| daemon.req("POST", "/api/v1/locks/db/renew").json(&json!({"holder": holder})).send();
    renew("bob").expect_error(409, 6001);
    let renewed = renew("alice").expect(200);
    assert_eq!(renewed["token"].as_u64(), Some(first), "a renewal keeps the token");
    let release = |holder: &str| daemon.req("DELETE", &lock_path("db")).json(&json!({"holder": holder})).send();
    release("bob").expect_error(409, 6001);
    let released = release("alice").expect(200);
    assert_eq!((released["released"].as_bool(), released["token"].as_u64()), (Some(true), Some(first)));
    daemon.get(&lock_path("db")).expect_error(404, 6002);
    release("alice").expect_error(404, 6002);
    renew("alice").expect_error(404, 6002);
    // A release by query parameter, for clients that send no body with DELETE.
    let next = token(&acquire(&daemon, "db", "bob", 30.0));
    assert!(next > first, "a new grant, a larger token");
    daemon.req("DELETE", &format!("{}?holder=bob", lock_path("db"))).send().expect(200);
    assert!(daemon.get("/api/v1/locks").expect(200)["locks"].as_array().unwrap().is_empty());
}

#[test]
fn bad_lock_requests_get_clear_errors() {
    let daemon = Daemon::start("locks-bad");
    let post = |path: &str, body: Value| daemon.req("POST", path).json(&body).send();
    let cases: &[(&str, Value, &str)] = &[
        ("/api/v1/locks/db", json!({"ttl": 30}), "holder"),
        ("/api/v1/locks/db", json!({"holder": "a"}), "ttl"),
        ("/api/v1/locks/db", json!({"holder": "a", "ttl": -1}), "ttl"),
        ("/api/v1/locks/db", json!({"holder": "a", "ttl": 0}), "ttl"),
        ("/api/v1/locks/db", json!({"holder": "a", "ttl": 1e9}), "ttl"),
        ("/api/v1/locks/db", json!({"holder": "a", "ttl": "30"}), "ttl"),
        ("/api/v1/locks/db", json!({"holder": "a", "ttl": 30, "wait": 601}), "wait"),
        ("/api/v1/locks/db", json!({"holder": "a", "ttl": 30, "wait": -1}), "wait"),
        ("/api/v1/locks/db", json!({"holder": "", "ttl": 30}), "holder"),
        ("/api/v1/locks/db", json!({"holder": "a\u{1}", "ttl": 30}), "holder"),
        ("/api/v1/locks/db", json!({"holder": "h".repeat(257), "ttl": 30}), "holder"),
        ("/api/v1/locks/db", json!({"holder": "a", "ttl": 30, "owner": "x"}), "owner"),
        ("/api/v1/locks/a%20b", json!({"holder": "a", "ttl": 30}), "lock name"),
        ("/api/v1/locks/caf%C3%A9", json!({"holder": "a", "ttl": 30}), "lock name"),
        ("/api/v1/locks/%FF", json!({"holder": "a", "ttl": 30}), "UTF-8"),
        ("/api/v1/locks/db/renew", json!({"holder": "a", "wait": 1}), "wait"),
        ("/api/v1/locks/db/renew", json!({}), "holder"),
    ];
    for (path, body, names) in cases {
        let message = post(path, body.clone()).expect_error(400, 9003);
        assert!(message.contains(names), "{path} {body}: {message}");
    }
    let long = format!("/api/v1/locks/{}", "x".repeat(129));
    assert!(post(&long, json!({"holder": "a", "ttl": 30})).expect_error(400, 9003).contains("lock name"));
    daemon
        .req("POST", "/api/v1/locks/db")
        .body("not json")
        .header("Content-Type", "application/json")
        .send()
        .expect_error(400, 9003);
    daemon.req("POST", "/api/v1/locks/db").send().expect_error(400, 9003);
    daemon.req("DELETE", "/api/v1/locks/db").send().expect_error(400, 9003);
    // A `?holder=` is never ignored, even beside the body's.
    daemon.req("DELETE", "/api/v1/locks/db?holder=a%01").json(&json!({"holder": "a"})).send().expect_error(400, 9003);
    Request::new(&daemon.addr, "POST", "/api/v1/locks/db")
        .json(&json!({"holder": "a", "ttl": 30}))
        .send()
        .expect_error(401, 1001);
    assert!(daemon.get("/api/v1/locks").expect(200)["locks"].as_array().unwrap().is_empty(), "nothing was granted");
    // A holder is counted in characters, as the document's maxLength counts them.
    let wide = "é".repeat(256);
    assert_eq!(acquire(&daemon, "wide", &wide, 30.0).expect(200)["holder"], wide.as_str());
}

#[test]
fn a_lock_expires_at_its_ttl_and_a_waiting_acquire_gets_it_when_released() {
    let home = Home::new("locks-ttl");
    // Debug lines say when a request waits for a lock.
    home.edit_config(|doc| doc["logging"]["level"] = "debug".into());
    let daemon = home.start();
    let first = token(&acquire(&daemon, "short", "alice", 0.5));
    let started = Instant::now();
    wait_until(Duration::from_secs(5), "the lock expires", || daemon.get(&lock_path("short")).status == 404);
    assert!(started.elapsed() >= Duration::from_millis(300), "not before its TTL");
    daemon.req("POST", "/api/v1/locks/short/renew").json(&json!({"holder": "alice"})).send().expect_error(404, 6002);
    let second = token(&acquire(&daemon, "short", "bob", 30.0));
    assert!(second > first);

    // Carol waits for bob's lock; it is hers as soon as bob lets go.
    let waiter = std::thread::spawn({
        let (addr, key) = (daemon.addr.clone(), daemon.key.clone());
        move || {
            let started = Instant::now();
            let answer = Request::new(&addr, "POST", "/api/v1/locks/short")
                .key(&key)
                .json(&json!({"holder": "carol", "ttl": 30, "wait": 20}))
                .send();
            (answer, started.elapsed())
        }
    });
    wait_until(Duration::from_secs(10), "carol waits for bob's lock", || {
        daemon.output_has("held by 'bob'") && daemon.output_has("'carol' waits for it")
    });
    daemon.req("DELETE", &lock_path("short")).json(&json!({"holder": "bob"})).send().expect(200);
    let (answer, waited) = waiter.join().unwrap();
    let third = token(&answer);
    assert!(third > second && waited < Duration::from_secs(10), "{third} after {waited:?}");
    // And one that waits in vain is told who has it.
    let refused =
        daemon.req("POST", &lock_path("short")).json(&json!({"holder": "dave", "ttl": 30, "wait": 0.3})).send();
    assert!(refused.expect_error(409, 6001).contains("carol"));
}

#[test]
fn a_fenced_context_write_from_the_old_holder_is_refused() {
    let daemon = Daemon::start("locks-fence");
    let old = token(&acquire(&daemon, "config", "alice", 0.5));
    let put = |value: &str, token: u64| {
        daemon
            .req("PUT", "/api/v1/context/settings")
            .json(&json!({"value": value, "ifFence": {"lock": "config", "token": token}}))
            .send()
    };
    assert_eq!(put("alice's", old).expect(200)["value"], "alice's", "the live grant writes");
    wait_until(Duration::from_secs(5), "alice's lock expires", || daemon.get(&lock_path("config")).status == 404);
    let refused = put("stale", old);
    assert!(refused.expect_error(409, 6003).contains("not held"));
    let new = token(&acquire(&daemon, "config", "bob", 30.0));
    let refused = put("stale", old);
    let message = refused.expect_error(409, 6003);
    assert!(message.contains("bob") && message.contains(&new.to_string()), "{message}");
    assert_eq!(refused.json()["error"]["details"]["current"]["token"], new);
    put("bob's", new).expect(200);
    assert_eq!(daemon.get("/api/v1/context/settings").expect(200)["value"], "bob's", "the stale write never landed");
    // Deletes are fenced too; a fence naming another lock, or a malformed one, is refused.
    let delete = |query: &str| daemon.req("DELETE", &format!("/api/v1/context/settings?ifFence={query}")).send();
    delete(&format!("config:{old}")).expect_error(409, 6003);
    delete(&format!("other:{new}")).expect_error(409, 6003);
    delete("config").expect_error(400, 9003);
    let bad = daemon
        .req("PUT", "/api/v1/context/settings")
        .json(&json!({"value": "x", "ifFence": {"lock": "config"}}))
        .send();
    bad.expect_error(400, 9003);
    let bad = daemon
        .req("PUT", "/api/v1/context/settings")
        .json(&json!({"value": "x", "ifFence": {"lock": "a b", "token": 1}}))
        .send();
    assert!(bad.expect_error(400, 9003).contains("ifFence.lock"));
    assert_eq!(daemon.get("/api/v1/context/settings").expect(200)["value"], "bob's");
    // The CLI: a refused fence is an answer (exit 1), a live one writes.
    daemon
        .loopsy(&["context", "set", "settings", "late", "--fence", &format!("config:{old}")])
        .code(1)
        .stderr_has("fenced write refused");
    daemon.loopsy(&["context", "set", "settings", "cli", "--fence", &format!("config:{new}")]).success();
    daemon.loopsy(&["context", "delete", "settings", "--fence", &format!("config:{new}")]).success();
}

/// Acquire-release loops of several clients on one lock while the daemon is killed and
/// restarted: every acknowledged token is unique, and every token granted after a restart is
/// larger than every token granted before it.
#[test]
fn tokens_strictly_increase_across_restarts_and_kill_9_under_contention() {
    let mut daemon = Daemon::start("locks-crash");
    let address = Arc::new(Mutex::new(daemon.addr.clone()));
    let key = daemon.key.clone();
    // (epoch, client, token) of every acknowledged grant.
    let granted = Arc::new(Mutex::new(Vec::<(usize, usize, u64)>::new()));
    let epoch = Arc::new(Mutex::new(0usize));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let (address, key, granted, epoch, stop) =
                (address.clone(), key.clone(), granted.clone(), epoch.clone(), stop.clone());
            std::thread::spawn(move || {
                let holder = format!("client-{client}");
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let addr = address.lock().unwrap().clone();
                    let seen_epoch = *epoch.lock().unwrap();
                    let body = json!({"holder": holder, "ttl": 5, "wait": 2});
                    let request = Request::new(&addr, "POST", "/api/v1/locks/shared")
                        .key(&key)
                        .json(&body)
                        .timeout(Duration::from_secs(5));
                    let Ok(answer) = request.try_send() else { continue };
                    if answer.status != 200 {
                        continue;
                    }
                    let token = answer.json()["token"].as_u64().unwrap();
                    // Only grants known to come from one daemon: no restart while in flight.
                    if *epoch.lock().unwrap() == seen_epoch {
                        granted.lock().unwrap().push((seen_epoch, client, token));
                    }
                    // Released for sure before the next acquire (across a restart too), or the
                    // next acquire would get this very grant back, as a holder asking again does.
                    wait_until(Duration::from_secs(60), "the release is answered", || {
                        let addr = address.lock().unwrap().clone();
                        let release = Request::new(&addr, "DELETE", "/api/v1/locks/shared").key(&key);
                        let release = release.json(&json!({"holder": holder})).timeout(Duration::from_secs(5));
                        release.try_send().is_ok_and(|answer| [200, 404, 409].contains(&answer.status))
                    });
                }
            })
        })
        .collect();
    let wait_for_grants = |count: usize| {
        wait_until(Duration::from_secs(30), &format!("{count} grants"), || granted.lock().unwrap().len() >= count);
    };
    wait_for_grants(40);
    // A clean restart, then three crashes.
    for (round, crash) in [false, true, true, true].into_iter().enumerate() {
        if crash {
            daemon.kill();
        } else {
            daemon.stop();
        }
        *epoch.lock().unwrap() = round + 1;
        daemon = daemon.restart();
        *address.lock().unwrap() = daemon.addr.clone();
        let before = granted.lock().unwrap().len();
        wait_for_grants(before + 40);
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for client in clients {
        client.join().unwrap();
    }
    let granted = granted.lock().unwrap().clone();
    let tokens: BTreeSet<u64> = granted.iter().map(|(_, _, token)| *token).collect();
    assert_eq!(tokens.len(), granted.len(), "a token was granted twice: {granted:?}");
    // Every token a later daemon granted is larger than every token an earlier one granted.
    for (epoch, _, token) in &granted {
        for (other_epoch, _, other) in &granted {
            if other_epoch < epoch {
                assert!(token > other, "token {token} (epoch {epoch}) after {other} (epoch {other_epoch})");
            }
        }
    }
    for client in 0..4 {
        let mine: Vec<u64> = granted.iter().filter(|(_, c, _)| *c == client).map(|(_, _, t)| *t).collect();
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "client {client}: {mine:?}");
    }
    eprintln!("{} grants, tokens {:?}..{:?}", granted.len(), tokens.first(), tokens.last());
}

#[test]
fn a_held_lock_and_its_token_survive_kill_9() {
    let mut daemon = Daemon::start("locks-kill");
    let held = acquire(&daemon, "db", "alice", 300.0).expect(200);
    daemon.kill();
    let daemon = daemon.restart();
    let shown = daemon.get(&lock_path("db")).expect(200);
    assert_eq!(shown, held, "the grant is back as it was acknowledged");
    acquire(&daemon, "db", "bob", 30.0).expect_error(409, 6001);
    daemon.req("DELETE", &lock_path("db")).json(&json!({"holder": "alice"})).send().expect(200);
    assert!(token(&acquire(&daemon, "db", "bob", 30.0)) > held["token"].as_u64().unwrap());
}

#[test]
fn loopsy_lock_holds_the_lock_while_the_command_runs_and_exits_with_its_code() {
    let daemon = Daemon::start("locks-cli");
    let dir = TempDir::new("locks-cli");
    let out = dir.path().join("out");
    // TTL 1 s, a 2.5 s command: renewals keep it held.
    let script = format!(
        "echo \"$LOOPSY_LOCK_NAME $LOOPSY_LOCK_TOKEN $LOOPSY_LOCK_HOLDER [${{SMOL_THREADS-}}] [${{LOOPSY_SMOL_THREADS-}}]\" > {}; sleep 2.5; exit 7",
        out.display()
    );
    let cli = Background::spawn(
        daemon.home.path(),
        &["lock", "local", "build", "--ttl", "1", "--holder", "ci-1", "--", "sh", "-c", &script],
    );
    wait_until(Duration::from_secs(10), "the command runs", || {
        out.exists() && !std::fs::read_to_string(&out).unwrap().is_empty()
    });
    let seen = std::fs::read_to_string(&out).unwrap();
    let shown = daemon.get(&lock_path("build")).expect(200);
    // ... and not the CLI's own executor tuning (a SMOL_THREADS of the user's it does see).
    let users = std::env::var("SMOL_THREADS").unwrap_or_default();
    assert_eq!(seen.trim(), format!("build {} ci-1 [{users}] []", shown["token"]), "the command sees the lock");
    // Another holder is refused at once (exit 1), or waits with --wait.
    daemon.loopsy(&["lock", "local", "build", "--", "true"]).code(1).stderr_has("held by 'ci-1'");
    // Renewals keep it held past the expiry of its first grant (the command runs 2.5 s).
    let first_expiry = shown["expiresAt"].as_u64().unwrap();
    wait_until(Duration::from_secs(10), "the clock passes the first expiry, the lock still held", || {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        let held = daemon.get(&lock_path("build"));
        assert_eq!(held.status, 200, "renewed past its 1 s TTL: {}", held.text());
        assert_eq!(held.json()["token"], shown["token"], "the same grant");
        now > first_expiry + 100
    });
    let waited = daemon
        .loopsy(&["lock", "local", "build", "--wait", "20", "--", "sh", "-c", "echo got $LOOPSY_LOCK_TOKEN"])
        .success();
    let (code, _) = cli.wait(Duration::from_secs(10));
    assert_eq!(code, 7, "the command's exit code");
    let later: u64 = waited.stdout.trim().strip_prefix("got ").unwrap().parse().unwrap();
    assert!(later > shown["token"].as_u64().unwrap());
    daemon.get(&lock_path("build")).expect_error(404, 6002);
    let listed = daemon.loopsy(&["locks", "local", "--json"]).success().json();
    assert_eq!(listed, json!({"locks": []}));
    daemon.loopsy(&["lock", "local", "build", "--ttl", "0", "--", "true"]).code(2).stderr_has("--ttl");
    daemon.loopsy(&["lock", "local", "bad name", "--", "true"]).code(2).stderr_has("lock name");
    daemon.loopsy(&["lock", "local", "build"]).code(2).stderr_has("missing the command");
    daemon.loopsy(&["lock", "local", "build", "--", "/no/such/program"]).code(2).stderr_has("cannot run");
    daemon.get(&lock_path("build")).expect_error(404, 6002);
}

#[test]
fn loopsy_lock_releases_on_ctrl_c_and_stops_the_command_when_the_lock_is_lost() {
    let daemon = Daemon::start("locks-cli-signals");
    // Ctrl-C in a terminal reaches the whole foreground group: the command and loopsy.
    let dir = TempDir::new("locks-cli-signals");
    let started = dir.path().join("started");
    let script = format!("echo > {}; exec sleep 60", started.display());
    let mut cli = command(loopsy_bin())
        .arg("--home")
        .arg(daemon.home.path())
        .args(["lock", "local", "job", "--", "sh", "-c", &script])
        .process_group(0)
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), "the command runs under the lock", || started.exists());
    daemon.get(&lock_path("job")).expect(200);
    // SAFETY: kill(2) on the process group of the child just spawned.
    assert_eq!(unsafe { libc::kill(-(cli.id() as i32), libc::SIGINT) }, 0);
    let status = wait_child(&mut cli, Duration::from_secs(15));
    assert_eq!(status.code(), Some(130), "the command died of SIGINT: 128 + 2");
    daemon.get(&lock_path("job")).expect_error(404, 6002);

    // The lock is taken away (here: released by its holder name from elsewhere).
    let cli = Background::spawn(
        daemon.home.path(),
        &["lock", "local", "job", "--ttl", "0.6", "--holder", "me", "--", "sleep", "60"],
    );
    wait_until(Duration::from_secs(10), "the lock is held", || daemon.get(&lock_path("job")).status == 200);
    daemon.req("DELETE", &lock_path("job")).json(&json!({"holder": "me"})).send().expect(200);
    token(&acquire(&daemon, "job", "thief", 30.0));
    let started = Instant::now();
    let (code, seen) = cli.wait(Duration::from_secs(15));
    assert_eq!(code, 2, "{seen:?}");
    assert!(seen.iter().any(|l| l.contains("lost lock 'job'")), "{seen:?}");
    assert!(started.elapsed() < Duration::from_secs(8), "stopped at the next renewal");
    assert_eq!(daemon.get(&lock_path("job")).expect(200)["holder"], "thief", "the thief's lock is untouched");
}

#[test]
fn agents_take_turns_through_the_mcp_lock_tools_and_fence_their_writes() {
    let daemon = Daemon::start("locks-mcp");
    let mut first = McpServer::spawn(daemon.home.path());
    let mut second = McpServer::spawn(daemon.home.path());
    let grant: Value =
        serde_json::from_str(&first.ok("loopsy_lock_acquire", json!({"name": "deploy", "ttl": 30}))).unwrap();
    let old = grant["token"].as_u64().unwrap();
    assert!(grant["holder"].as_str().unwrap().starts_with("mcp:"), "{grant}");
    assert!(second.error("loopsy_lock_acquire", json!({"name": "deploy", "ttl": 30})).contains("held by"));
    assert!(second.error("loopsy_lock_renew", json!({"name": "deploy"})).contains("not by"));
    assert!(second.error("loopsy_lock_release", json!({"name": "deploy"})).contains("not by"));
    let renewed: Value =
        serde_json::from_str(&first.ok("loopsy_lock_renew", json!({"name": "deploy", "ttl": 60}))).unwrap();
    assert_eq!((renewed["token"].as_u64(), renewed["ttl"].as_f64()), (Some(old), Some(60.0)));
    let fence = |token: u64| json!({"lock": "deploy", "token": token});
    first.ok("loopsy_context_set", json!({"key": "release", "value": "v1", "ifFence": fence(old)}));
    first.ok("loopsy_lock_release", json!({"name": "deploy"}));
    let taken: Value =
        serde_json::from_str(&second.ok("loopsy_lock_acquire", json!({"name": "deploy", "ttl": 30, "wait": 1})))
            .unwrap();
    let new = taken["token"].as_u64().unwrap();
    assert!(new > old);
    let refused = first.error("loopsy_context_set", json!({"key": "release", "value": "stale", "ifFence": fence(old)}));
    assert!(refused.contains("fenced write refused"), "{refused}");
    first.error("loopsy_context_delete", json!({"key": "release", "ifFence": fence(old)}));
    second.ok("loopsy_context_set", json!({"key": "release", "value": "v2", "ifFence": fence(new)}));
    assert_eq!(daemon.get("/api/v1/context/release").expect(200)["value"], "v2");
    second.ok("loopsy_context_delete", json!({"key": "release", "ifFence": fence(new)}));
    assert!(first.error("loopsy_lock_acquire", json!({"name": "no spaces", "ttl": 30})).contains("lock name"));
    assert!(first.error("loopsy_lock_acquire", json!({"name": "x"})).contains("'ttl' is required"));
    assert!(first.error("loopsy_lock_acquire", json!({"name": "x", "ttl": -5})).contains("ttl"));
    second.ok("loopsy_lock_release", json!({"name": "deploy", "holder": taken["holder"]}));
}
