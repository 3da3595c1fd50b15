//! The approval inbox (#17, item 1): permission requests of AI tasks on this daemon, on a local
//! session and on a paired LAN peer (netlab) in one list, kept live over SSE, answered from
//! `loopsy approvals --watch` with answers piped to its stdin. Tasks run the stand-in agent
//! CLIs of tests/tasks.rs (the word `tool` makes each ask to run `echo hi > out.txt`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{
    loopsy_bin, loopsy_in, path_with, stand_in_agents, wait_until, Background, Daemon, Home, TempDir,
};

const WAIT: Duration = Duration::from_secs(30);

/// A home whose daemon finds the stand-in agents and has `user_home` as `HOME`.
fn agents_home(name: &str, user_home: &Path) -> Home {
    let mut home = Home::new(name);
    home.edit_config(|doc| doc["server"]["hostname"] = name.into());
    home.with_stand_in_agents();
    home.env.push(("HOME".into(), user_home.display().to_string()));
    home
}

/// Makes `session` a local session of `main` (`<main>/sessions/<name>`).
fn link_session(main: &Path, name: &str, session: &Path) {
    std::fs::create_dir_all(main.join("sessions")).unwrap();
    std::os::unix::fs::symlink(session, main.join("sessions").join(name)).unwrap();
}

/// Dispatches a task that asks for permission; returns its id.
fn ask(d: &Daemon, cwd: &Path) -> String {
    let body = json!({"prompt": "tool", "agent": "claude", "cwd": cwd});
    d.req("POST", "/api/v1/ai-tasks").json(&body).send().expect(201)["taskId"].as_str().unwrap().to_string()
}

fn inbox(d: &Daemon) -> Value {
    d.get("/api/v1/approvals").expect(200)
}

/// The inbox's request of task `task`, once it is there.
#[track_caller]
fn wait_item(d: &Daemon, task: &str, state: &str) -> Value {
    let mut found = Value::Null;
    wait_until(WAIT, &format!("the inbox lists task {task} as {state}"), || {
        let all = inbox(d);
        match all["approvals"].as_array().unwrap().iter().find(|i| i["taskId"] == task) {
            Some(item) if item["state"] == state => {
                found = item.clone();
                true
            }
            _ => false,
        }
    });
    found
}

fn target<'a>(inbox: &'a Value, id: &str) -> &'a Value {
    let targets = inbox["targets"].as_array().unwrap();
    targets.iter().find(|t| t["id"] == id).unwrap_or_else(|| panic!("no target {id}: {targets:?}"))
}

#[track_caller]
fn wait_task(d: &Daemon, task: &str) -> Value {
    let mut info = Value::Null;
    wait_until(WAIT, "the task ends", || {
        info = d.get(&format!("/api/v1/ai-tasks/{task}")).expect(200);
        info["completedAt"].is_u64()
    });
    info
}

fn texts(d: &Daemon, task: &str) -> Vec<String> {
    let events = d.get(&format!("/api/v1/ai-tasks/{task}/events")).expect(200);
    events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "text")
        .map(|e| e["data"].as_str().unwrap().to_string())
        .collect()
}

/// `loopsy approvals --watch` of `home`, answers written to its stdin.
fn watch(home: &Path) -> Background {
    Background::spawn(home, &["approvals", "--watch"])
}

/// Waits for the watch's question number `n` (from 0; a question asked again after an answer
/// it did not understand counts once); returns its first line ("? Bash on … wants approval").
#[track_caller]
fn question(watch: &mut Background, n: usize) -> String {
    let questions = |seen: &[String]| {
        let mut distinct: Vec<String> = Vec::new();
        for line in seen.iter().filter(|l| l.starts_with("? ")) {
            let key = line.split(" wants approval").next().unwrap_or(line);
            if !distinct.iter().any(|d| d.starts_with(key)) {
                distinct.push(line.clone());
            }
        }
        distinct
    };
    wait_until(WAIT, &format!("the watch asks question {}", n + 1), || {
        if questions(&watch.seen).len() <= n {
            let _ = watch.try_line("\u{0}", Duration::from_millis(50));
        }
        questions(&watch.seen).len() > n
    });
    questions(&watch.seen)[n].clone()
}

// See: #17 (item 1)
#[test]
fn one_inbox_lists_this_daemon_and_a_session_and_the_watch_decides_each_exactly_once() {
    let user_home = TempDir::new("appr-user");
    let (main_work, session_work) = (TempDir::new("appr-main-ws"), TempDir::new("appr-w1-ws"));
    let session = agents_home("appr-w1", user_home.path());
    let main = agents_home("appr-main", user_home.path());
    link_session(main.path(), "w1", session.path());
    let session = session.start();
    let main = main.start();
    let here = ask(&main, main_work.path());
    let there = ask(&session, session_work.path());

    let mine = wait_item(&main, &here, "pending");
    let theirs = wait_item(&main, &there, "pending");
    assert_eq!((mine["target"].as_str(), mine["targetKind"].as_str()), (Some("local"), Some("local")));
    assert_eq!((theirs["target"].as_str(), theirs["targetName"].as_str()), (Some("session:w1"), Some("w1")));
    for item in [&mine, &theirs] {
        assert_eq!((item["agent"].as_str(), item["toolName"].as_str()), (Some("claude"), Some("Bash")), "{item}");
        assert_eq!(item["toolInput"]["command"], "echo hi > out.txt", "{item}");
        assert!(item["ageMs"].is_u64() && item["requestedAt"].is_u64(), "{item}");
    }
    let all = inbox(&main);
    assert_eq!(all["pending"], 2, "{all}");
    assert_eq!(target(&all, "local")["state"], "live");
    assert_eq!(target(&all, "session:w1")["state"], "live");
    assert_eq!(target(&all, "session:w1")["pending"], 1);

    let listed = main.loopsy(&["approvals"]).success();
    let lines: Vec<&str> = listed.stdout.lines().collect();
    assert!(lines[0].starts_with("WHERE") && lines[0].contains("TASK") && lines[0].ends_with("AGE"), "{listed:?}");
    for (place, task) in [("local ", &here), ("session w1 ", &there)] {
        let row = lines.iter().find(|l| l.starts_with(place)).unwrap_or_else(|| panic!("no {place}row: {listed:?}"));
        assert!(row.contains(&task[..8]) && row.contains("claude") && row.contains("Bash"), "{row}");
        assert!(row.contains(r#"{"command":"echo hi > out.txt""#), "{row}");
    }

    // The watch asks about each, oldest first, with the full input; the answers go to the
    // daemon holding each request.
    let mut cli = watch(main.home.path());
    let mut decided = Vec::new();
    // (This daemon's request is approved and the session's denied, whichever is asked first.)
    for n in 0..2 {
        let question = question(&mut cli, n);
        assert!(question.starts_with("? Bash on ") && question.contains(", claude) wants approval"), "{question}");
        let local = question.starts_with("? Bash on local ");
        let (task, answer) = if local { (&here, "a") } else { (&there, "d not now") };
        assert!(question.contains(&format!("task {}", &task[..8])), "{question}");
        cli.answer(answer);
        let outcome = if answer == "a" { "approved: " } else { "denied: " };
        cli.wait_line(&format!("  {outcome}{}", &question[2..question.find(" wants").unwrap()]), WAIT);
        decided.push((task.clone(), answer == "a"));
    }
    let seen = cli.seen.join("\n");
    assert!(seen.contains(r#"      "command": "echo hi > out.txt","#), "the full input, pretty: {seen}");
    assert!(seen.contains("  Write hi") && seen.contains("  prompt: tool"), "{seen}");
    for (task, approved) in &decided {
        let (daemon, work) = if *task == here { (&main, &main_work) } else { (&session, &session_work) };
        let info = wait_task(daemon, task);
        assert_eq!(info["status"], "completed", "{info}");
        assert_eq!(work.path().join("out.txt").exists(), *approved, "the decision reached the right task");
        if !approved {
            assert!(texts(daemon, task).contains(&"denied: not now".to_string()), "the reason reached the agent");
        }
    }

    // A second decision, from the inbox or at the task's own daemon, is refused and names the first.
    for (task, approved) in &decided {
        let item = wait_item(&main, task, if *approved { "approved" } else { "denied" });
        assert_eq!(item["decidedBy"], "owner", "{item}");
        assert_eq!(item["decidedVia"], "the approvals inbox on appr-main", "{item}");
        let again =
            json!({"target": item["target"], "taskId": task, "requestId": item["requestId"], "approved": !approved});
        let refused = main.req("POST", "/api/v1/approvals/decide").json(&again).send();
        let message = refused.expect_error(409, 6101);
        let first = if *approved { "approved" } else { "denied" };
        assert!(
            message.contains(&format!("already {first} by owner via the approvals inbox on appr-main at ")),
            "{message}"
        );
        assert_eq!(refused.json()["error"]["details"]["approval"]["state"], first);
    }
    let (task, _) = decided.iter().find(|(t, _)| *t == there).unwrap();
    let request = wait_item(&main, task, "denied")["requestId"].clone();
    let direct = session
        .req("POST", &format!("/api/v1/ai-tasks/{task}/approve"))
        .json(&json!({"requestId": request, "approved": true}))
        .send();
    assert_eq!(direct.status, 409, "{}", direct.text());
    assert!(direct.json()["error"].as_str().unwrap().contains("already denied by owner"), "{}", direct.text());

    // A session that stops shows as stopped; the list still answers.
    let mut session = session;
    session.stop();
    wait_until(WAIT, "the stopped session shows as such", || target(&inbox(&main), "session:w1")["state"] == "stopped");
    assert_eq!(target(&inbox(&main), "local")["state"], "live");
    let listed = main.loopsy(&["approvals"]).success();
    assert!(listed.stderr.contains("session w1 is stopped"), "{listed:?}");
    assert!(listed.stdout.contains("no pending approval requests"), "{listed:?}");
}

// See: #17 (item 1): a request that timed out shows as expired, never approved.
#[test]
fn the_inbox_follows_other_daemons_only_once_someone_asks_for_it() {
    let user_home = TempDir::new("appr-lazy-user");
    let session = agents_home("appr-lazy-w1", user_home.path());
    let main = agents_home("appr-lazy-main", user_home.path());
    link_session(main.path(), "w1", session.path());
    let session = session.start();
    let main = main.start();
    // The session's audit log shows every request of the main daemon's inbox to its feed.
    let audit = session.home.path().join("logs/audit.jsonl");
    let feed_requests =
        || std::fs::read_to_string(&audit).unwrap_or_default().matches("/api/v1/ai-tasks/approvals/stream").count();
    // An idle inbox opens no feed (it would within its 2 s reconcile tick if it were always on).
    assert!(
        crate::support::wait_for(Duration::from_secs(4), || feed_requests() > 0).is_none(),
        "the inbox followed the session's feed before anyone asked"
    );
    // Asked for once, it follows the session.
    inbox(&main);
    wait_until(Duration::from_secs(20), "the inbox to follow the session's feed", || feed_requests() > 0);
    wait_until(Duration::from_secs(20), "the session to be live in the inbox", || {
        inbox(&main)["targets"].as_array().unwrap().iter().any(|t| t["id"] == "session:w1" && t["state"] == "live")
    });
}

#[test]
fn an_unanswered_request_expires_and_a_late_approval_is_refused() {
    let user_home = TempDir::new("appr-exp-user");
    let work = TempDir::new("appr-exp-ws");
    let session = agents_home("appr-exp-w1", user_home.path());
    session.edit_config(|doc| doc["aiTasks"]["approvalTimeout"] = 5000.into());
    let main = agents_home("appr-exp-main", user_home.path());
    link_session(main.path(), "w1", session.path());
    let session = session.start();
    let main = main.start();
    // The watch runs before the agent asks, so it sees the request long before it expires.
    let mut cli = watch(main.home.path());
    let task = ask(&session, work.path());
    let question = question(&mut cli, 0);
    assert!(question.contains("on session w1"), "{question}");
    // Nobody answers: it expires on the session, and the watch says so.
    cli.wait_line("expired unanswered: the agent was told no (meanwhile: an answer now will be refused)", WAIT);
    cli.answer("a");
    let refused = cli.wait_line("  not decided: ", WAIT);
    assert!(refused.contains("session:w1: this request expired unanswered at "), "{refused}");
    let item = wait_item(&main, &task, "expired");
    assert_eq!(item["decidedBy"], "timeout", "{item}");
    let info = wait_task(&session, &task);
    assert_eq!(info["status"], "completed", "{info}");
    assert!(!work.path().join("out.txt").exists(), "an expired request never runs the tool");
    assert!(texts(&session, &task).iter().any(|t| t.starts_with("denied: Permission request timed out")));
    let again = json!({"target": "session:w1", "taskId": task, "requestId": item["requestId"], "approved": true});
    let message = main.req("POST", "/api/v1/approvals/decide").json(&again).send().expect_error(409, 6101);
    assert!(message.contains("expired unanswered"), "{message}");
    let listed = main.loopsy(&["approvals", "--all"]).success();
    assert!(listed.stdout.lines().any(|l| l.contains(&task[..8]) && l.ends_with("expired (timeout)")), "{listed:?}");
}

// See: #17 (item 1)
#[test]
fn the_same_decision_sent_twice_is_taken_once_and_another_decision_gets_409() {
    let user_home = TempDir::new("appr-once-user");
    let work = TempDir::new("appr-once-ws");
    let d = agents_home("appr-once", user_home.path()).start();
    let task = ask(&d, work.path());
    let request = wait_item(&d, &task, "pending")["requestId"].as_str().unwrap().to_string();
    let path = format!("/api/v1/ai-tasks/{task}/approve");
    let decide = |body: Value| d.req("POST", &path).json(&body).send();
    let bad = decide(json!({"requestId": request, "approved": true, "decisionId": "x".repeat(129)}));
    assert!(bad.expect(400)["error"].as_str().unwrap().contains("decisionId"));
    let first = json!({"requestId": request, "approved": true, "decisionId": "d-1", "decidedVia": "a test"});
    let taken = decide(first.clone()).expect(200);
    assert_eq!((taken["approval"]["state"].as_str(), taken.get("repeated")), (Some("approved"), None), "{taken}");
    let repeated = decide(first).expect(200);
    assert_eq!(repeated["repeated"], true, "a retry of the same decision is not a second one: {repeated}");
    for other in [
        json!({"requestId": request, "approved": false, "decisionId": "d-1"}),
        json!({"requestId": request, "approved": true, "decisionId": "d-2"}),
        json!({"requestId": request, "approved": true}),
    ] {
        let refused = decide(other);
        assert_eq!(refused.status, 409, "{}", refused.text());
        let body = refused.json();
        assert!(body["error"]
            .as_str()
            .unwrap()
            .starts_with("this request was already approved by owner via a test at "));
        assert_eq!(body["approval"]["decidedVia"], "a test");
    }
    assert_eq!(wait_task(&d, &task)["status"], "completed");
    assert_eq!(std::fs::read_to_string(work.path().join("out.txt")).unwrap(), "hi\n", "the tool ran once");
    // The daemon's own feed and list show it decided.
    let own = d.get("/api/v1/ai-tasks/approvals").expect(200);
    assert_eq!(own["approvals"][0]["state"], "approved", "{own}");
}

// See: #17 (item 1): the inbox is the owner's; peers get 403 (paired peers: netlab test below).
#[test]
fn a_peer_key_gets_403_on_the_approvals_routes_and_sees_only_its_own_requests() {
    let (bob_key, carol_key) = ("b0b-key-0123456789abcdef", "ca201-key-0123456789abcdef");
    let user_home = TempDir::new("appr-keys-user");
    let work = TempDir::new("appr-keys-ws");
    let home = agents_home("appr-keys", user_home.path());
    home.edit_config(|doc| {
        doc["auth"]["allowedKeys"]["bob"] = bob_key.into();
        doc["auth"]["allowedKeys"]["carol"] = carol_key.into();
    });
    let d = home.start();
    let decision = json!({"target": "local", "taskId": "t", "requestId": "r", "approved": true});
    for (method, path) in
        [("GET", "/api/v1/approvals"), ("GET", "/api/v1/approvals/stream"), ("POST", "/api/v1/approvals/decide")]
    {
        let request = |key: &str| d.anon(method, path).key(key).json(&decision).send();
        request(bob_key).expect_error(403, 9009);
        d.anon(method, path).json(&decision).send().expect_error(401, 1001);
    }
    // Bob's own task is in Bob's view of this daemon's feed; Carol sees nothing of it.
    let body = json!({"prompt": "tool", "agent": "claude", "cwd": work.path()});
    let task = d.anon("POST", "/api/v1/ai-tasks").key(bob_key).json(&body).send().expect(201);
    let task = task["taskId"].as_str().unwrap();
    wait_item(&d, task, "pending");
    let view = |key: &str| d.anon("GET", "/api/v1/ai-tasks/approvals").key(key).send().expect(200);
    assert_eq!(view(bob_key)["approvals"][0]["taskId"], task);
    assert_eq!(view(carol_key)["approvals"], json!([]));
    let mut stream = d.anon("GET", "/api/v1/ai-tasks/approvals/stream").key(carol_key).stream();
    let kinds: Vec<String> =
        (0..2).map(|_| stream.next_event().unwrap().json()["type"].as_str().unwrap().to_string()).collect();
    assert_eq!(kinds, ["hello", "reset"]);
    assert_eq!(stream.next_event().unwrap().json()["type"], "synced", "nothing of Bob's in between");
    d.req("DELETE", &format!("/api/v1/ai-tasks/{task}")).send().expect(200);
    let item = wait_item(&d, task, "withdrawn");
    assert_eq!(item["decidedBy"], "cancel", "{item}");
}

// See: #17 (item 1)
#[test]
fn the_inbox_stream_resumes_after_last_event_id_and_the_task_feed_too() {
    let user_home = TempDir::new("appr-sse-user");
    let work = TempDir::new("appr-sse-ws");
    let d = agents_home("appr-sse", user_home.path()).start();
    let mut stream = d.req("GET", "/api/v1/approvals/stream").stream();
    assert_eq!(stream.next_event().unwrap().json()["type"], "reset");
    let last = loop {
        let event = stream.next_event().unwrap();
        if event.json()["type"] == "synced" {
            break event.id.clone().expect("synced carries an id");
        }
    };
    stream.close();
    let task = ask(&d, work.path());
    wait_item(&d, &task, "pending");
    // Resumed: only what changed since, with ids, then synced.
    let mut resumed = d.req("GET", "/api/v1/approvals/stream").header("Last-Event-ID", &last).stream();
    let mut seen = Vec::new();
    loop {
        let event = resumed.next_event().unwrap();
        let json = event.json();
        assert!(event.id.is_some(), "{json}");
        if json["type"] == "synced" {
            break;
        }
        seen.push(json);
    }
    assert!(seen.iter().all(|e| e["type"] != "reset"), "no snapshot when resumed: {seen:?}");
    assert!(seen.iter().any(|e| e["type"] == "approval" && e["approval"]["taskId"] == task.as_str()), "{seen:?}");
    // The task's daemon's own feed resumes the same way; an unknown id gets a snapshot.
    let mut feed = d.req("GET", "/api/v1/ai-tasks/approvals/stream").header("Last-Event-ID", "stale.3").stream();
    let kinds: Vec<String> =
        (0..4).map(|_| feed.next_event().unwrap().json()["type"].as_str().unwrap().to_string()).collect();
    assert_eq!(kinds, ["hello", "reset", "approval", "synced"]);
}

/// A loopback TCP relay that forwards as bytes come (event streams too), records each
/// connection's request head and response, and can cut every open connection at once.
struct CutProxy {
    port: u16,
    open: Arc<Mutex<Vec<TcpStream>>>,
    /// (request bytes, response bytes) per connection.
    seen: Arc<Mutex<Vec<(Recorded, Recorded)>>>,
}

/// What passed one way on one connection.
type Recorded = Arc<Mutex<Vec<u8>>>;

impl CutProxy {
    fn start(target: String) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (open, seen) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
        let (open2, seen2) = (open.clone(), seen.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let Ok(server) = TcpStream::connect(&target) else { continue };
                let (request, response) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
                seen2.lock().unwrap().push((request.clone(), response.clone()));
                let mut open = open2.lock().unwrap();
                open.push(client.try_clone().unwrap());
                open.push(server.try_clone().unwrap());
                relay(client.try_clone().unwrap(), server.try_clone().unwrap(), request);
                relay(server, client, response);
            }
        });
        CutProxy { port, open, seen }
    }

    /// Closes every connection open now, both ways.
    fn cut(&self) {
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    /// (request, response) of each connection that asked for `path`, in order.
    fn exchanges(&self, path: &str) -> Vec<(String, String)> {
        let line = format!("GET {path} ");
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .map(|(q, a)| {
                (
                    String::from_utf8_lossy(&q.lock().unwrap()).into_owned(),
                    String::from_utf8_lossy(&a.lock().unwrap()).into_owned(),
                )
            })
            .filter(|(q, _)| q.starts_with(&line))
            .collect()
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// Copies `from` to `to` on a thread, recording what passed.
fn relay(mut from: TcpStream, mut to: TcpStream, record: Recorded) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || to.write_all(&buf[..n]).is_err() {
                break;
            }
            record.lock().unwrap().extend_from_slice(&buf[..n]);
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

// See: #17 (item 1): a cut feed is resumed where it stopped, and nothing is missed.
#[test]
fn a_cut_feed_is_resumed_with_last_event_id_and_what_came_meanwhile_arrives() {
    let user_home = TempDir::new("appr-cut-user");
    let work = TempDir::new("appr-cut-ws");
    let bee = agents_home("appr-cut-bee", user_home.path()).start();
    let proxy = CutProxy::start(bee.addr.clone());
    let main = Home::new("appr-cut");
    main.edit_config(|doc| doc["auth"]["allowedKeys"]["bee"] = bee.key.clone().into());
    let main = main.start();
    main.req("POST", "/api/v1/peers")
        .json(&json!({"address": "127.0.0.1", "port": proxy.port, "name": "bee"}))
        .send()
        .expect(200);
    let first = ask(&bee, work.path());
    let item = wait_item(&main, &first, "pending");
    assert_eq!((item["targetKind"].as_str(), item["targetName"].as_str()), (Some("peer"), Some("bee")), "{item}");
    let peer = item["target"].as_str().unwrap().to_string();
    assert_eq!(target(&inbox(&main), &peer)["state"], "live");
    let feed = "/api/v1/ai-tasks/approvals/stream";
    let before = proxy.exchanges(feed).len();
    assert!(before >= 1);

    proxy.cut();
    let second = ask(&bee, work.path());
    wait_item(&main, &second, "pending");
    let exchanges = proxy.exchanges(feed);
    assert_eq!(exchanges.len(), before + 1, "one reconnection");
    let (request, response) = &exchanges[before];
    let resumed_from =
        request.lines().find_map(|l| l.strip_prefix("last-event-id: ").or(l.strip_prefix("Last-Event-ID: ")));
    let resumed_from = resumed_from.unwrap_or_else(|| panic!("no Last-Event-ID: {request}"));
    assert!(
        exchanges[before - 1].1.contains(&format!("id: {resumed_from}\r\n"))
            || exchanges[before - 1].1.contains(&format!("id: {resumed_from}\n")),
        "it resumed after the last id it read: {resumed_from}"
    );
    assert!(!response.contains(r#""type":"reset""#), "resumed, not a new snapshot: {response}");
    assert!(response.contains(&second), "what came meanwhile was replayed: {response}");
    // Both are still decided where they wait.
    for task in [&first, &second] {
        let item = wait_item(&main, task, "pending");
        let decision = json!({"target": peer, "taskId": task, "requestId": item["requestId"], "approved": false});
        let decided = main.req("POST", "/api/v1/approvals/decide").json(&decision).send().expect(200);
        assert_eq!(decided["approval"]["state"], "denied", "{decided}");
        assert_eq!(decided["approval"]["decidedBy"], "owner", "bee's own key: the owner there");
    }
}

/// A loopsy 1.0.21 node on loopback, as far as the inbox meets one: it answers health checks,
/// and the approvals feed's path as 1.0.21 does (the stream of an unknown task named
/// `approvals`: one error event, then the end). Returns its port.
fn old_node(node_id: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut client in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let _ = client.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && client.read(&mut byte).is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let (kind, body) = if head.starts_with("GET /api/v1/health ") {
                    (
                        "application/json",
                        json!({"status": "ok", "nodeId": node_id, "uptime": 1, "version": "1.0.21"}).to_string(),
                    )
                } else if head.starts_with("GET /api/v1/ai-tasks/approvals/stream ") {
                    let event =
                        json!({"type": "error", "taskId": "approvals", "timestamp": 1, "data": "Task not found"});
                    ("text/event-stream", format!("data: {event}\n\n"))
                } else {
                    ("application/json", r#"{"error":"Not found"}"#.to_string())
                };
                let status =
                    if kind == "application/json" && body.contains("Not found") { "404 Not Found" } else { "200 OK" };
                let answer = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = client.write_all(answer.as_bytes());
            });
        }
    });
    port
}

// See: #17 (item 1): a peer without the feed is shown as such, and the rest of the list works.
#[test]
fn a_1_0_21_peer_shows_as_unsupported_and_the_inbox_carries_on() {
    let user_home = TempDir::new("appr-old-user");
    let work = TempDir::new("appr-old-ws");
    let node_id = "1021abcd-2222-4333-8444-555555555555";
    let port = old_node(node_id);
    let home = agents_home("appr-old", user_home.path());
    home.edit_config(|doc| doc["auth"]["allowedKeys"]["old"] = "old-node-key-0123456789abcdef".into());
    let d = home.start();
    d.req("POST", "/api/v1/peers")
        .json(&json!({"address": "127.0.0.1", "port": port, "name": "old"}))
        .send()
        .expect(200);
    let id = format!("peer:{node_id}");
    wait_until(WAIT, "the old node shows as unsupported", || {
        let all = inbox(&d);
        all["targets"].as_array().unwrap().iter().any(|t| t["id"] == id.as_str() && t["state"] == "unsupported")
    });
    let all = inbox(&d);
    assert!(target(&all, &id)["error"].as_str().unwrap().contains("1.0.21"), "{all}");
    let task = ask(&d, work.path());
    wait_item(&d, &task, "pending");
    let listed = d.loopsy(&["approvals"]).success();
    assert!(listed.stdout.contains(&task[..8]), "{listed:?}");
    assert!(listed.stderr.contains("peer old is unsupported: it has no approvals feed"), "{listed:?}");
}

// See: #17 (item 1): every way a decision or the CLI can fail says why.
#[test]
fn bad_decisions_and_a_missing_daemon_are_clear_errors() {
    let user_home = TempDir::new("appr-bad-user");
    let stopped = Home::new("appr-bad-w1");
    let main = agents_home("appr-bad", user_home.path());
    link_session(main.path(), "w1", stopped.path());
    let d = main.start();
    let decide = |body: Value| d.req("POST", "/api/v1/approvals/decide").json(&body).send();
    let body = |target: &str, task: &str| json!({"target": target, "taskId": task, "requestId": "r", "approved": true});
    assert!(decide(body("10.0.0.1:19532", "t")).expect_error(400, 9003).contains("target"));
    decide(body("session:nope", "t")).expect_error(404, 2001);
    decide(body("peer:0000aaaa-0000-4000-8000-000000000000", "t")).expect_error(404, 2001);
    assert!(decide(body("session:w1", "t")).expect_error(502, 2003).contains("not running"));
    assert!(decide(body("local", "no-such-task")).expect_error(404, 6102).contains("has no request r"));
    decide(body("local", "")).expect_error(400, 9003);
    let mut extra = body("local", "t");
    extra["approvedBy"] = "me".into();
    decide(extra).expect_error(400, 9003);
    // (The inbox starts following its targets when first asked for: the session appears then.)
    wait_until(WAIT, "the stopped session is listed as such", || {
        inbox(&d)["targets"].as_array().unwrap().iter().any(|t| t["id"] == "session:w1" && t["state"] == "stopped")
    });

    d.loopsy(&["approvals", "--watch", "--json"]).code(2).stderr_has("exclude each other");
    let mut d = d;
    d.stop();
    d.loopsy(&["approvals"]).code(2).stderr_has("not running");
    d.loopsy(&["approvals", "--watch"]).code(2).stderr_has("not running");
}

// ---- Netlab: a paired peer on another host ----

// See: #17 (item 1)
#[test]
fn on_a_lan_this_daemon_a_session_and_a_paired_peer_share_one_inbox_and_one_watch() {
    let Some(lab) = crate::netlab::Lab::up("ap", 2) else { return };
    let path = path_with(&[&stand_in_agents()]);
    let path = path.to_str().unwrap();
    lab.start_daemon_env(1, 1000, &[("PATH", path)]);
    lab.start_daemon_env(2, 1000, &[("PATH", path)]);
    let h2 = crate::netlab::pair(&lab, 1, 2);
    let h1 = format!("{}-h1", h2.strip_suffix("-h2").unwrap());
    // A local session of host 1: a second daemon there, in <home>/sessions/w1.
    let session = lab.home(1).join("sessions/w1");
    std::fs::create_dir_all(&session).unwrap();
    let _ = loopsy_in(&session, &["init"]).success();
    crate::support::edit_config_in(&session, |doc| {
        doc["server"]["host"] = "127.0.0.1".into();
        doc["server"]["port"] = 19533.into();
        doc["discovery"]["enabled"] = false.into();
    });
    let session_home = session.to_str().unwrap();
    let path_var = format!("PATH={path}");
    lab.spawn(1, &["env", &path_var, loopsy_bin(), "--home", session_home, "start", "--foreground"]);
    lab.wait(WAIT, "the session listens", || session.join("daemon.json").exists());

    // Three agents ask: on host 1, on its session, and on host 2 (dispatched by host 1 with the
    // key host 2 minted for it, over pinned TLS).
    let (here, there, peer) = (TempDir::new("appr-lab-1"), TempDir::new("appr-lab-w1"), TempDir::new("appr-lab-2"));
    let cwd = |dir: &TempDir| dir.path().to_str().unwrap().to_string();
    let (here_cwd, there_cwd, peer_cwd) = (cwd(&here), cwd(&there), cwd(&peer));
    let tool = |cwd: &str| ["tool", "--agent", "claude", "--cwd", cwd].map(String::from);
    let args =
        |head: &[&str], cwd: &str| -> Vec<String> { head.iter().map(|s| s.to_string()).chain(tool(cwd)).collect() };
    let spawn = |argv: Vec<String>| lab.spawn(1, &argv.iter().map(String::as_str).collect::<Vec<_>>());
    let home1 = lab.home(1).to_str().unwrap().to_string();
    spawn(args(&[loopsy_bin(), "--home", &home1, "task", "run", "local"], &here_cwd));
    spawn(args(&[loopsy_bin(), "--home", session_home, "task", "run", "local"], &there_cwd));
    spawn(args(&[loopsy_bin(), "--home", &home1, "task", "run", &h2], &peer_cwd));
    let listed = |args: &[&str]| -> Value {
        let out = lab.loopsy(1, &[&["approvals", "--json"][..], args].concat());
        assert_eq!(out.code, 0, "{}", out.stderr);
        serde_json::from_str(&out.stdout).unwrap()
    };
    let mut pending = Vec::new();
    lab.wait(WAIT, "host 1's inbox lists all three requests", || {
        let all = listed(&[]);
        pending = all["approvals"].as_array().unwrap().iter().filter(|i| i["state"] == "pending").cloned().collect();
        pending.len() == 3
    });
    let kinds: Vec<(&str, &str)> =
        pending.iter().map(|i| (i["targetKind"].as_str().unwrap(), i["targetName"].as_str().unwrap())).collect();
    for expected in [("local", h1.as_str()), ("session", "w1"), ("peer", h2.as_str())] {
        assert!(kinds.contains(&expected), "{expected:?} in {kinds:?}");
    }
    assert!(pending.iter().all(|i| i["toolInput"]["command"] == "echo hi > out.txt"), "{pending:?}");
    let item = pending.iter().find(|i| i["targetKind"] == "peer").unwrap().clone();
    let peer_target = item["target"].as_str().unwrap().to_string();
    assert!(peer_target.starts_with("peer:"), "{item}");
    let table = lab.loopsy(1, &["approvals"]);
    for place in ["local ".to_string(), "session w1 ".to_string(), format!("{h2} ")] {
        let found = table.stdout.lines().any(|l| l.starts_with(&place) && l.contains("Bash"));
        assert!(found, "{place}: {}", table.stdout);
    }

    // One watch answers all three; each answer reaches the daemon that holds the request.
    let mut cli = lab.background_loopsy(1, &["approvals", "--watch"]);
    for n in 0..3 {
        let question = question(&mut cli, n);
        let places = ["local", "session w1", h2.as_str()];
        let place = places.into_iter().find(|p| question.starts_with(&format!("? Bash on {p} (task ")));
        let place = place.unwrap_or_else(|| panic!("{question}"));
        if n == 0 {
            cli.answer("maybe");
            cli.wait_line("please answer a (approve), d [reason] (deny) or s (skip)", WAIT);
        }
        let deny = place == "session w1";
        cli.answer(if deny { "d not here" } else { "a" });
        let outcome = if deny { "denied" } else { "approved" };
        cli.wait_line(&format!("  {outcome}: Bash on {place} (task"), WAIT);
    }
    lab.wait(WAIT, "the approved tools ran, here and on host 2", || {
        here.path().join("out.txt").exists() && peer.path().join("out.txt").exists()
    });
    assert!(!there.path().join("out.txt").exists(), "the session's request was denied");
    let decided =
        listed(&["--all"])["approvals"].as_array().unwrap().iter().find(|i| i["id"] == item["id"]).cloned().unwrap();
    assert_eq!(decided["state"], "approved", "{decided}");
    assert_eq!(decided["decidedBy"], format!("paired:{h1}"), "host 2 knows who decided: {decided}");
    assert_eq!(decided["decidedVia"], format!("the approvals inbox on {h1}"));

    // A second decision through host 1's inbox is refused by host 2, naming the first.
    let key1 = crate::netlab::config_of(&lab, 1)["auth"]["apiKey"].as_str().unwrap().to_string();
    let again =
        json!({"target": peer_target, "taskId": item["taskId"], "requestId": item["requestId"], "approved": false});
    let auth = format!("Authorization: Bearer {key1}");
    let local_url = "http://127.0.0.1:19532/api/v1/approvals/decide";
    let args = ["-H", &auth, "-H", "Content-Type: application/json", "-d", &again.to_string(), local_url];
    let Some((status, body)) = crate::netlab::curl(&lab, 1, &args) else { return };
    assert_eq!(status, 409, "{body}");
    assert!(body.contains(&format!("already approved by paired:{h1} via the approvals inbox on {h1}")), "{body}");

    // Host 2's paired key is a peer's key on host 1: no approvals routes.
    let key2 = crate::netlab::config_of(&lab, 2)["auth"]["peerKeys"][h1.as_str()].as_str().unwrap().to_string();
    let auth = format!("Authorization: Bearer {key2}");
    let decision = again.to_string();
    for (path, post) in
        [("/api/v1/approvals", false), ("/api/v1/approvals/stream", false), ("/api/v1/approvals/decide", true)]
    {
        let url = format!("https://{}:19532{path}", lab.ip(1));
        let mut args = vec!["-k", "-H", &auth];
        if post {
            args.extend(["-H", "Content-Type: application/json", "-d", &decision]);
        }
        args.push(&url);
        let (status, body) = crate::netlab::curl(&lab, 2, &args).unwrap();
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.contains("9009"), "{body}");
    }

    // Host 2 goes away: it shows as down (or offline), the rest of the list still answers.
    let stop = lab.loopsy(2, &["stop"]);
    assert_eq!(stop.code, 0, "{}", stop.stderr);
    lab.wait(WAIT, "host 2 shows as down", || {
        let all = listed(&[]);
        let t = all["targets"].as_array().unwrap().iter().find(|t| t["id"] == peer_target.as_str()).cloned();
        t.is_some_and(|t| t["state"] == "down" || t["state"] == "offline")
    });
    let out = lab.loopsy(1, &["approvals"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains(&format!("peer {h2} is ")), "{}", out.stderr);
    drop(cli);
}
