//! Terminal sessions over the REST API and the attach WebSocket: real daemons, real PTYs, a
//! WebSocket client with a vt100 parser of its own that compares screens cell by cell.

mod cli;
mod client;
mod mcp;

use std::time::{Duration, Instant};

use loopsy::peer::Method;
use loopsy::tls::Fingerprint;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde_json::{json, Value};

use crate::support::{wait_until, Daemon, Home, Yaml};
use client::{assert_same_screen, Attach, TermClient};

pub const WAIT: Duration = Duration::from_secs(20);

/// A daemon whose programs see the test's temporary home as `HOME`.
pub fn terminal_daemon(name: &str, change: impl FnOnce(&mut Yaml)) -> Daemon {
    let mut home = Home::new(name);
    let path = home.path().to_string_lossy().into_owned();
    home.env.push(("HOME".into(), path));
    home.env.push(("SHELL".into(), "/bin/sh".into()));
    home.edit_config(change);
    home.start()
}

/// `POST /api/v1/terminals`, expecting 201.
#[track_caller]
pub fn create(daemon: &Daemon, body: Value) -> Value {
    let res = daemon.req("POST", "/api/v1/terminals").json(&body).send();
    assert_eq!(res.status, 201, "{}", res.text());
    res.json()
}

/// A shell with a fixed prompt and no history or rc files.
/// A shell terminal, returned once its first prompt is on the screen: input typed
/// earlier is echoed by the line discipline before the prompt and lands on another line.
fn shell(daemon: &Daemon, name: &str) -> Value {
    let terminal = create(
        daemon,
        json!({"command": "sh", "name": name, "env": {"PS1": "$ ", "ENV": ""}, "cwd": daemon.home.path()}),
    );
    let id = terminal["id"].as_str().unwrap();
    let prompt = daemon.get(&format!("/api/v1/terminals/{id}/screen?waitFor=%24&timeoutMs=10000")).json();
    assert_eq!(prompt["matched"], true, "no prompt: {prompt}");
    terminal
}

/// Live processes of session `sid`, from /proc.
pub fn session_members(sid: u64) -> Vec<u64> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
            let Some((_, after)) = stat.rsplit_once(')') else { return false };
            let fields: Vec<&str> = after.split_whitespace().collect();
            fields.first() != Some(&"Z") && fields.get(3).and_then(|s| s.parse::<u64>().ok()) == Some(sid)
        })
        .collect()
}

/// Reads both clients until their screens agree (or the time is up).
fn settle(a: &mut TermClient, b: &mut TermClient) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        a.pump(Duration::from_millis(100));
        b.pump(Duration::from_millis(100));
        let (sa, sb) = (a.parser.screen(), b.parser.screen());
        if sa.contents_formatted() == sb.contents_formatted() && sa.cursor_position() == sb.cursor_position() {
            // Still equal after a quiet moment: nothing more was on its way.
            a.pump(Duration::from_millis(200));
            b.pump(Duration::from_millis(200));
            if a.parser.screen().contents_formatted() == b.parser.screen().contents_formatted() {
                return;
            }
        }
    }
}

#[test]
fn typing_is_echoed_and_a_reattach_at_another_size_shows_the_same_screen() {
    let daemon = terminal_daemon("term-echo", |_| {});
    let terminal = shell(&daemon, "work");
    let id = terminal["id"].as_str().unwrap();
    assert_eq!(terminal["state"], "running");
    assert_eq!(terminal["startedBy"], "own");

    let mut always = TermClient::connect(&daemon, id, Attach::new(&daemon, 80, 24)).unwrap();
    always.type_bytes(b"echo hel''lo-$((6*7))\r");
    always.wait_text("hello-42");

    let mut other = TermClient::connect(&daemon, "work", Attach::new(&daemon, 80, 24)).unwrap();
    other.wait_text("hello-42");
    other.close();
    always.type_bytes(
        b"for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25; do echo row-$i; done\r",
    );
    always.wait_text("row-25");

    // Back at a smaller size: the session shrinks to it and both show the same cells.
    let mut back = TermClient::connect(&daemon, id, Attach::new(&daemon, 60, 18)).unwrap();
    assert_eq!(back.size(), (18, 60));
    always.wait_for("the size change", WAIT, |c| c.size() == (18, 60));
    back.type_bytes(b"echo after-$((1+1))\r");
    always.wait_text("after-2");
    back.wait_text("after-2");
    settle(&mut always, &mut back);
    assert_same_screen(&always, &back);
    let listed = daemon.get(&format!("/api/v1/terminals/{id}")).json();
    assert_eq!(
        (listed["cols"].as_u64(), listed["rows"].as_u64(), listed["clients"].as_u64()),
        (Some(60), Some(18), Some(2))
    );

    // The smaller client leaves: the size grows back to the remaining client's.
    back.close();
    always.wait_for("the size to grow back", WAIT, |c| c.size() == (24, 80));

    // Titles travel as control frames; a client that vanishes without a close frame is
    // detached and the terminal goes on.
    always.type_bytes(b"printf '\\033]2;build-%s\\007' $((2+2))\r");
    always.wait_for("the title", WAIT, |c| c.controls.iter().any(|m| m["type"] == "title" && m["title"] == "build-4"));
    assert_eq!(daemon.get(&format!("/api/v1/terminals/{id}")).json()["title"], "build-4");
    drop(always);
    wait_until(WAIT, "the vanished client to be detached", || {
        daemon.get(&format!("/api/v1/terminals/{id}")).json()["clients"] == 0
    });
    let mut again = TermClient::connect(&daemon, id, Attach::new(&daemon, 80, 24)).unwrap();
    again.wait_text("after-2");
    again.type_bytes(b"echo still-$((9*9))\r");
    again.wait_text("still-81");
}

#[test]
fn a_full_screen_program_redraws_correctly_after_reattach() {
    let Some(vi) = crate::support::prerequisite(crate::support::skip::program("vi", "vim-tiny")) else { return };
    let daemon = terminal_daemon("term-vi", |_| {});
    let file = daemon.home.path().join("poem.txt");
    let lines: Vec<String> = (1..=40).map(|i| format!("line {i:02} of the poem")).collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let terminal = create(
        &daemon,
        json!({"command": vi, "args": ["-u", "NONE", "-i", "NONE", "-n", file], "cwd": daemon.home.path(), "name": "vi", "env": {"TERM": "xterm-256color"}}),
    );
    let id = terminal["id"].as_str().unwrap();
    let mut always = TermClient::connect(&daemon, id, Attach::new(&daemon, 80, 24)).unwrap();
    always.wait_text("line 05 of the poem");
    always.type_bytes(b"10G");
    let late = TermClient::connect(&daemon, id, Attach::new(&daemon, 70, 20)).unwrap();
    assert!(late.parser.screen().alternate_screen(), "vi's alternate screen is part of the snapshot");
    late.close();
    always.wait_for("the size to grow back", WAIT, |c| c.size() == (24, 80));

    // Reattach at another size: vi redraws for it; the reattached client shows what the
    // client attached all along shows.
    let mut back = TermClient::connect(&daemon, id, Attach::new(&daemon, 64, 16)).unwrap();
    always.wait_for("the size change", WAIT, |c| c.size() == (16, 64));
    settle(&mut always, &mut back);
    assert_same_screen(&always, &back);
    let text = back.text();
    assert!(text.contains("line 10 of the poem"), "{text}");
    assert!(back.parser.screen().alternate_screen());

    back.type_bytes(b":q!\r");
    back.wait_for("vi to exit", WAIT, |c| c.exit.is_some());
    assert_eq!(back.exit, Some(0));
}

#[test]
fn two_clients_type_and_a_read_only_client_cannot() {
    let daemon = terminal_daemon("term-clients", |_| {});
    let terminal = shell(&daemon, "shared");
    let id = terminal["id"].as_str().unwrap();
    let mut alice = TermClient::connect(&daemon, id, Attach::new(&daemon, 80, 24)).unwrap();
    let mut bob = TermClient::connect(&daemon, id, Attach::new(&daemon, 80, 24)).unwrap();
    let mut viewer =
        TermClient::connect(&daemon, id, Attach { read_only: true, ..Attach::new(&daemon, 80, 24) }).unwrap();
    assert_eq!(viewer.controls[0]["readOnly"], true);

    alice.type_bytes(b"echo from-$((1))-alice\r");
    bob.wait_text("from-1-alice");
    bob.type_bytes(b"echo from-$((2))-bob\r");
    alice.wait_text("from-2-bob");
    viewer.wait_text("from-2-bob");

    viewer.type_bytes(b"echo from-viewer\r");
    viewer.wait_for("the refusal", WAIT, |c| c.got("error"));
    let refusal = viewer.controls.iter().find(|c| c["type"] == "error").unwrap();
    assert_eq!(refusal["message"], "this client attached read-only");
    alice.type_bytes(b"echo marker-$((3))\r");
    alice.wait_text("marker-3");
    assert!(!alice.text().contains("from-viewer"), "{}", alice.text());

    // A client's window shrinks: everyone follows the smallest size.
    bob.resize(50, 10);
    alice.wait_for("the new size", WAIT, |c| c.size() == (10, 50));
    viewer.wait_for("the new size", WAIT, |c| c.size() == (10, 50));
    alice.type_bytes(b"stty size\r");
    alice.wait_text("10 50");
}

#[test]
fn a_stalled_client_skips_ahead_without_holding_up_the_others() {
    let daemon = terminal_daemon("term-slow", |doc| doc["terminals"]["clientBufferBytes"] = 65536.into());
    let terminal = shell(&daemon, "flood");
    let id = terminal["id"].as_str().unwrap();
    let mut fast = TermClient::connect(&daemon, id, Attach::new(&daemon, 80, 24)).unwrap();
    let mut slow = TermClient::connect(&daemon, id, Attach::new(&daemon, 80, 24)).unwrap();
    slow.stall();
    let total = 16_000_000;
    fast.type_bytes(format!("head -c {total} /dev/zero | tr '\\0' x; echo; echo end-$((40+2))\r").as_bytes());
    fast.wait_for("all the output", Duration::from_secs(120), |c| c.text().contains("end-42"));
    assert!(fast.received >= total, "the fast client got {} of {total} bytes", fast.received);

    // The stalled client catches up with a fresh screen instead of 16 MB of backlog.
    slow.resume();
    slow.wait_for("the skip", Duration::from_secs(60), |c| c.got("skipped") && c.text().contains("end-42"));
    assert!(slow.received < total, "the stalled client was sent everything ({} bytes)", slow.received);
    settle(&mut fast, &mut slow);
    assert_same_screen(&fast, &slow);
}

#[test]
fn kill_ends_the_whole_session_and_tells_the_clients() {
    let daemon = terminal_daemon("term-kill", |_| {});
    let terminal = create(
        &daemon,
        json!({"command": "sh", "args": ["-c", "sleep 1000 & sleep 1001; echo never"], "name": "sleepy"}),
    );
    let pid = terminal["pid"].as_u64().unwrap();
    let mut client = TermClient::connect(&daemon, "sleepy", Attach::new(&daemon, 80, 24)).unwrap();
    wait_until(WAIT, "both sleeps", || session_members(pid).len() == 3);

    let killed = daemon.req("DELETE", "/api/v1/terminals/sleepy").send();
    assert_eq!(killed.status, 200, "{}", killed.text());
    assert_eq!(killed.json()["state"], "exited");
    client.wait_for("the exit frame", WAIT, |c| c.exit.is_some() && c.closed);
    assert!(client.exit.unwrap() > 128, "killed by a signal: {:?}", client.exit);
    assert_eq!(session_members(pid), Vec::<u64>::new(), "every process of the terminal is gone");
    assert_eq!(daemon.get("/api/v1/terminals/sleepy").status, 404);
    assert_eq!(daemon.get("/api/v1/terminals").json()["terminals"], json!([]));
}

#[test]
fn an_exited_terminal_is_kept_for_a_while_then_reaped() {
    let daemon = terminal_daemon("term-reap", |doc| doc["terminals"]["reapExitedAfter"] = 400.into());
    let terminal = create(&daemon, json!({"command": "sh", "args": ["-c", "echo bye; exit 3"]}));
    let id = terminal["id"].as_str().unwrap().to_string();
    assert_eq!(terminal["name"], "sh-1");
    wait_until(WAIT, "the exit", || daemon.get(&format!("/api/v1/terminals/{id}")).json()["state"] == "exited");
    let info = daemon.get(&format!("/api/v1/terminals/{id}")).json();
    assert_eq!(info["exitCode"], 3);
    // Attached to after the exit: the last screen and the exit code.
    let mut client = TermClient::connect(&daemon, &id, Attach::new(&daemon, 80, 24)).unwrap();
    client.wait_for("the exit", WAIT, |c| c.exit == Some(3));
    assert!(client.text().contains("bye"));
    drop(client);
    wait_until(WAIT, "the reaping", || daemon.get(&format!("/api/v1/terminals/{id}")).status == 404);
}

#[test]
fn stopping_the_daemon_hangs_up_every_terminal_program() {
    let mut daemon = terminal_daemon("term-stop", |_| {});
    // One program ignores the hangup and the TERM: it is killed after the grace period.
    let stubborn =
        create(&daemon, json!({"command": "sh", "args": ["-c", "trap '' HUP TERM; sleep 1000 & sleep 1001"]}));
    let plain = create(&daemon, json!({"command": "sleep", "args": ["1000"]}));
    let pids = [stubborn["pid"].as_u64().unwrap(), plain["pid"].as_u64().unwrap()];
    wait_until(WAIT, "the programs", || session_members(pids[0]).len() == 3 && session_members(pids[1]).len() == 1);
    let mut client =
        TermClient::connect(&daemon, stubborn["id"].as_str().unwrap(), Attach::new(&daemon, 80, 24)).unwrap();
    daemon.stop();
    client.wait_for("the exit frame", WAIT, |c| c.exit.is_some() || c.closed);
    for pid in pids {
        assert_eq!(session_members(pid), Vec::<u64>::new(), "session {pid} is gone");
    }
}

#[test]
fn refusals_are_clear_errors() {
    let daemon = terminal_daemon("term-errors", |doc| {
        doc["terminals"]["maxSessions"] = 2.into();
        doc["terminals"]["maxClients"] = 1.into();
    });
    let status = |method: &str, path: &str, body: Value| {
        let res = daemon.req(method, path).json(&body).send();
        (res.status, res.json())
    };
    let (code, body) = status("POST", "/api/v1/terminals", json!({"command": "rm", "args": ["-rf", "/tmp/x"]}));
    assert_eq!((code, body["error"]["code"].as_u64()), (403, Some(3001)), "{body}");
    let (code, body) = status("POST", "/api/v1/terminals", json!({"command": "no-such-program-here"}));
    assert_eq!((code, body["error"]["code"].as_u64()), (404, Some(3004)), "{body}");
    let (code, body) = status("POST", "/api/v1/terminals", json!({"command": "sh", "cwd": "/no/such/dir"}));
    assert_eq!((code, body["error"]["code"].as_u64()), (404, Some(3004)), "{body}");
    let (code, body) = status("POST", "/api/v1/terminals", json!({"command": "sh", "cwd": "relative/dir"}));
    assert_eq!((code, body["error"]["code"].as_u64()), (400, Some(9003)), "{body}");
    let (code, body) = status("POST", "/api/v1/terminals", json!({"command": "sh", "env": {"LD_PRELOAD": "/x.so"}}));
    assert_eq!(code, 400, "{body}");
    let (code, body) = status("POST", "/api/v1/terminals", json!({"command": "sh", "cols": 1, "rows": 5000}));
    assert_eq!(code, 400, "{body}");
    let (code, body) = status("POST", "/api/v1/terminals", json!({"command": "sh", "name": "../x"}));
    assert_eq!(code, 400, "{body}");
    let (code, body) = status("POST", "/api/v1/terminals", json!({"command": "sh", "bogus": 1}));
    assert!(code == 400 && body["error"]["message"].as_str().unwrap().contains("bogus"), "{body}");

    shell(&daemon, "one");
    let (code, body) = status("POST", "/api/v1/terminals", json!({"command": "sh", "name": "one"}));
    assert_eq!((code, body["error"]["code"].as_u64()), (409, Some(8004)), "{body}");
    shell(&daemon, "two");
    let (code, body) = status("POST", "/api/v1/terminals", json!({"command": "sh"}));
    assert_eq!((code, body["error"]["code"].as_u64()), (429, Some(8002)), "{body}");
    // No body at all (no Content-Type either) is the default request, not a media type refused.
    let bare = daemon.req("POST", "/api/v1/terminals").send();
    assert_eq!((bare.status, bare.json()["error"]["code"].as_u64()), (429, Some(8002)), "{}", bare.text());

    assert_eq!(daemon.get("/api/v1/terminals/nothing").status, 404);
    let (code, body) = status("POST", "/api/v1/terminals/one/input", json!({"keys": ["Hyper-Q"]}));
    assert!(code == 400 && body["error"]["message"].as_str().unwrap().contains("Hyper-Q"), "{body}");

    // WebSocket handshakes: not an upgrade, a bad size, one client too many.
    let plain = daemon.get("/api/v1/terminals/one/attach");
    assert_eq!(plain.status, 426, "{}", plain.text());
    // The request is judged before it has to be a WebSocket: what is wrong with it comes first.
    daemon.get("/api/v1/terminals/one/attach?rows=5000").expect_error(400, 9003);
    daemon.get("/api/v1/terminals/one/attach?readOnly=yes").expect_error(400, 9003);
    daemon.get("/api/v1/terminals/nothing/attach").expect_error(404, 8001);
    let too_small = TermClient::connect(&daemon, "one", Attach::new(&daemon, 1, 24)).err().unwrap();
    assert_eq!(too_small.0, 400);
    let first = TermClient::connect(&daemon, "one", Attach::new(&daemon, 80, 24)).unwrap();
    let second = TermClient::connect(&daemon, "one", Attach::new(&daemon, 80, 24)).err().unwrap();
    assert_eq!(second.0, 429, "{}", second.1);
    drop(first);
}

#[test]
fn only_the_owner_and_paired_peers_may_use_terminals() {
    let legacy_key = "legacy-key-0123456789abcdef";
    let paired_key = "paired-key-0123456789abcdef";
    let setup = |allow: bool| {
        move |doc: &mut Yaml| {
            doc["tls"]["enabled"] = true.into();
            doc["auth"]["allowedKeys"]["old"] = legacy_key.into();
            // What pairing writes for a peer: the key minted for it, ours for it, its pin.
            doc["auth"]["allowedKeys"]["friend"] = paired_key.into();
            doc["auth"]["peerKeys"]["friend"] = "to-friend-0123456789abcdef".into();
            doc["tls"]["pinnedCerts"]["friend"] = "a".repeat(64).into();
            doc["terminals"]["allowLegacyPeers"] = allow.into();
        }
    };
    let daemon = terminal_daemon("term-auth", setup(false));
    let terminal = shell(&daemon, "mine");
    let id = terminal["id"].as_str().unwrap();
    let cert = CertificateDer::from_pem_file(daemon.home.path().join("tls/cert.pem")).unwrap();
    let pin = Fingerprint::of_der(&cert);
    let friend_client =
        loopsy::peer::Client::pinned(&format!("https://{}", daemon.addr), Some(paired_key.into()), Some(pin.clone()));

    assert_eq!(daemon.anon("GET", "/api/v1/terminals").send().status, 401);
    assert_eq!(daemon.anon("GET", "/api/v1/terminals").key("wrong-key-0123456789abcdef").send().status, 403);
    let legacy = daemon.anon("GET", "/api/v1/terminals").key(legacy_key).send();
    assert_eq!(legacy.status, 403, "{}", legacy.text());
    assert_eq!(legacy.json()["error"]["code"], 9009, "{}", legacy.text());
    assert!(legacy.text().contains("allowLegacyPeers"), "{}", legacy.text());
    let legacy_create = daemon.anon("POST", "/api/v1/terminals").key(legacy_key).json(&json!({"command": "sh"})).send();
    assert_eq!(legacy_create.status, 403);
    let attach = |key: Option<&str>, tls: Option<Fingerprint>| {
        let auth = key.map(|k| format!("Bearer {k}"));
        TermClient::connect(&daemon, id, Attach { auth, tls, ..Attach::new(&daemon, 80, 24) })
    };
    assert_eq!(attach(None, None).err().unwrap().0, 401);
    assert_eq!(attach(Some("wrong-key-0123456789abcdef"), None).err().unwrap().0, 403);
    assert_eq!(attach(Some(legacy_key), None).err().unwrap().0, 403);
    // A paired key counts only over TLS: in the clear it is refused.
    assert_eq!(attach(Some(paired_key), None).err().unwrap().0, 403);

    let listed: serde_json::Value = smol::block_on(friend_client.get("/api/v1/terminals")).unwrap();
    assert_eq!(listed["terminals"][0]["name"], "mine", "{listed}");
    let mut friend = attach(Some(paired_key), Some(pin.clone())).unwrap();
    friend.type_bytes(b"echo friend-$((5*5))\r");
    friend.wait_text("friend-25");
    let made: serde_json::Value =
        smol::block_on(friend_client.call(Method::Post, "/api/v1/terminals", Some(&json!({"command": "sh"})))).unwrap();
    assert_eq!(made["startedBy"], "paired:friend", "{made}");
    drop(friend);
    drop(daemon);

    let open = terminal_daemon("term-auth-legacy", setup(true));
    assert_eq!(open.anon("GET", "/api/v1/terminals").key(legacy_key).send().status, 200);
}

#[test]
fn input_takes_named_keys_and_a_screen_read_waits_for_text() {
    let daemon = terminal_daemon("term-rest", |_| {});
    let terminal = shell(&daemon, "rest");
    let id = terminal["id"].as_str().unwrap();
    let sent = daemon
        .req("POST", &format!("/api/v1/terminals/{id}/input"))
        .json(&json!({"text": "echo rest-$((20+1))", "keys": ["Enter"]}))
        .send();
    assert_eq!(sent.status, 200, "{}", sent.text());
    let screen = daemon.get(&format!("/api/v1/terminals/{id}/screen?waitFor=rest-21&timeoutMs=10000")).json();
    assert_eq!(screen["matched"], true, "{screen}");
    assert!(screen["screen"].as_str().unwrap().lines().any(|l| l == "rest-21"), "{screen}");
    let quiet = daemon.get(&format!("/api/v1/terminals/{id}/screen?quietMs=200")).json();
    assert_eq!((quiet["timedOut"].as_bool(), quiet["matched"].as_bool()), (Some(false), Some(true)));
    let missing = daemon.get(&format!("/api/v1/terminals/{id}/screen?waitFor=never-there&timeoutMs=300")).json();
    assert_eq!((missing["matched"].as_bool(), missing["timedOut"].as_bool()), (Some(false), Some(true)));

    // Ctrl-C interrupts a running program; Ctrl-D ends the shell. The keys wait for the sleep
    // to run (its shell has made it the terminal's foreground before exec) and to end.
    let sid = terminal["pid"].as_u64().unwrap();
    let sleeping = || {
        session_members(sid)
            .iter()
            .any(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "sleep"))
    };
    daemon
        .req("POST", &format!("/api/v1/terminals/{id}/input"))
        .json(&json!({"text": "sleep 1000", "keys": ["Enter"]}))
        .send();
    wait_until(WAIT, "the sleep to run", sleeping);
    daemon.req("POST", &format!("/api/v1/terminals/{id}/input")).json(&json!({"keys": ["Ctrl-C"]})).send();
    wait_until(WAIT, "Ctrl-C to end the sleep", || !sleeping());
    daemon
        .req("POST", &format!("/api/v1/terminals/{id}/input"))
        .json(&json!({"text": "echo back-$((3*3))", "keys": ["Enter", "Ctrl-D"]}))
        .send();
    wait_until(WAIT, "the shell to end", || daemon.get(&format!("/api/v1/terminals/{id}")).json()["state"] == "exited");
    let last = daemon.get(&format!("/api/v1/terminals/{id}/screen")).json();
    assert!(last["screen"].as_str().unwrap().contains("back-9"), "{last}");
    let refused = daemon.req("POST", &format!("/api/v1/terminals/{id}/input")).json(&json!({"text": "x"})).send();
    assert_eq!((refused.status, refused.json()["error"]["code"].as_u64()), (409, Some(8003)));

    // A program that never reads: typing gives up instead of hanging the caller.
    let deaf = create(&daemon, json!({"command": "sh", "args": ["-c", "stty raw; exec sleep 1000"]}));
    let deaf_id = deaf["id"].as_str().unwrap();
    wait_until(WAIT, "the stty", || session_members(deaf["pid"].as_u64().unwrap()).len() == 1);
    let flood = "y".repeat(900 * 1024);
    let started = Instant::now();
    let blocked =
        daemon.req("POST", &format!("/api/v1/terminals/{deaf_id}/input")).json(&json!({"text": flood})).send();
    assert_eq!(blocked.status, 409, "{}", blocked.text());
    assert!(blocked.text().contains("not reading its input"), "{}", blocked.text());
    assert!(started.elapsed() < Duration::from_secs(15));
}
