//! Exec that survives a dropped connection: `Idempotency-Key` on `/execute` and
//! `/execute/stream`, the kept output of recent jobs, `GET /execute/jobs/{id}/stream?from=N`,
//! and `loopsy exec` and the MCP execute tool reattaching after a stalled or cut link (a relay
//! in front of the daemon plays the network). The multi-host version is in `netlab.rs`.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::mcp_stdio::McpServer;
use crate::support::relay::Relay;
use crate::support::{wait_until, Background, Daemon, Home, TempDir};

const EXECUTE: &str = "/api/v1/execute";
const STREAM: &str = "/api/v1/execute/stream";

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(String::from).collect()
}

/// `sh -c <script>`.
fn script(script: &str) -> Value {
    json!({"command": "sh", "args": ["-c", script]})
}

fn job_stream(daemon: &Daemon, job_id: &str, from: &str) -> crate::support::http::Stream {
    daemon.req("GET", &format!("/api/v1/execute/jobs/{job_id}/stream{from}")).stream()
}

fn header<'a>(stream: &'a crate::support::http::Stream, name: &str) -> Option<&'a str> {
    stream.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// Every event of a stream until it ends.
fn all_events(mut stream: crate::support::http::Stream) -> Vec<Value> {
    let mut events = Vec::new();
    while let Some(event) = stream.next_event() {
        let json = event.json();
        // The SSE id is the last event number the event covers (a gap covers several).
        let last = json["seq"].as_u64().unwrap() + json["missed"].as_u64().map_or(0, |missed| missed - 1);
        assert_eq!(event.id, Some(last.to_string()), "{json}");
        events.push(json);
    }
    events
}

fn text_of(events: &[Value]) -> String {
    events.iter().filter(|e| e["type"] == "stdout").map(|e| e["data"].as_str().unwrap()).collect()
}

#[test]
fn the_same_idempotency_key_twice_runs_one_process_and_another_body_is_422() {
    let daemon = Daemon::start("idem");
    let dir = TempDir::new("idem-runs");
    let runs = dir.path().join("runs");
    let body = script(&format!("echo ran >> {}; echo out; exit 4", runs.display()));
    let first = daemon.req("POST", EXECUTE).header("Idempotency-Key", "k-1").json(&body).send().expect(200);
    let again = daemon.req("POST", EXECUTE).header("Idempotency-Key", "k-1").json(&body).send().expect(200);
    assert_eq!(again["jobId"], first["jobId"], "the same job");
    assert_eq!((again["stdout"].as_str(), again["exitCode"].as_u64()), (Some("out\n"), Some(4)));
    // The streaming endpoint with the same key and body is the same job too.
    let stream = daemon.req("POST", STREAM).header("Idempotency-Key", "k-1").json(&body).stream();
    assert_eq!(header(&stream, "x-loopsy-job-id"), first["jobId"].as_str());
    let events = all_events(stream);
    assert_eq!(text_of(&events), "out\n");
    assert_eq!(events.last().unwrap()["exitCode"], 4);
    assert_eq!(lines(&runs), ["ran"], "one process for three requests");

    let other = script(&format!("echo other >> {}", runs.display()));
    let response = daemon.req("POST", EXECUTE).header("Idempotency-Key", "k-1").json(&other).send();
    let message = response.expect_error(422, 3007);
    assert!(message.contains("k-1") && message.contains("different request"), "{message}");
    assert_eq!(response.json()["error"]["details"]["jobId"], first["jobId"]);
    let response = daemon.req("POST", STREAM).header("Idempotency-Key", "k-1").json(&other).send();
    response.expect_error(422, 3007);
    assert_eq!(lines(&runs), ["ran"], "the refused bodies did not run");

    // Another key, or none, is another job.
    daemon.req("POST", EXECUTE).header("Idempotency-Key", "k-2").json(&body).send().expect(200);
    daemon.req("POST", EXECUTE).json(&body).send().expect(200);
    assert_eq!(lines(&runs).len(), 3);

    for bad in ["", "has space", &"x".repeat(256)] {
        let response = daemon.req("POST", EXECUTE).header("Idempotency-Key", bad).json(&body).send();
        let message = response.expect_error(400, 9003);
        assert!(message.contains("Idempotency-Key"), "{bad:?}: {message}");
    }
    assert_eq!(lines(&runs).len(), 3);
}

#[test]
fn retries_racing_each_other_start_one_process_while_other_jobs_run() {
    let daemon = Daemon::start("idem-race");
    let dir = TempDir::new("idem-race-runs");
    let runs = dir.path().join("runs");
    // With another job running, a start spawns on the daemon's blocking pool: the retries
    // overlap the spawn.
    let other = daemon.req("POST", STREAM).json(&json!({"command": "sleep", "args": ["100"]})).stream();
    let body = script(&format!("echo ran >> {}; sleep 0.2; echo out", runs.display()));
    let job_ids: Vec<String> = std::thread::scope(|scope| {
        let retries: Vec<_> = (0..16)
            .map(|_| {
                scope.spawn(|| {
                    let answer = daemon.req("POST", EXECUTE).header("Idempotency-Key", "race").json(&body).send();
                    answer.expect(200)["jobId"].as_str().unwrap().to_string()
                })
            })
            .collect();
        retries.into_iter().map(|retry| retry.join().unwrap()).collect()
    });
    assert!(job_ids.iter().all(|id| *id == job_ids[0]), "one job: {job_ids:?}");
    assert_eq!(lines(&runs), ["ran"], "one process for 16 racing requests");
    other.close();
}

#[test]
fn keys_belong_to_the_caller_that_sent_them() {
    let home = Home::new("idem-callers");
    let bob_key = "bob-key-0123456789abcdef";
    let carol_key = "carol-key-0123456789abcdef";
    home.edit_config(|doc| {
        doc["auth"]["allowedKeys"]["bob"] = bob_key.into();
        doc["auth"]["allowedKeys"]["carol"] = carol_key.into();
    });
    let daemon = home.start();
    let dir = TempDir::new("idem-callers-runs");
    let runs = dir.path().join("runs");
    let body = script(&format!("echo ran >> {}", runs.display()));
    let own = daemon.req("POST", EXECUTE).header("Idempotency-Key", "shared").json(&body).send().expect(200);
    let bobs = crate::support::Request::new(&daemon.addr, "POST", EXECUTE)
        .key(bob_key)
        .header("Idempotency-Key", "shared")
        .json(&body)
        .send()
        .expect(200);
    assert_ne!(own["jobId"], bobs["jobId"], "bob's key does not name the owner's job");
    assert_eq!(lines(&runs).len(), 2);
    // A reattach is for the caller that started the job (bob reads his own, and neither the
    // owner's nor carol's), and for the owner: another caller's job is answered as unknown.
    let path = |id: &Value| format!("/api/v1/execute/jobs/{}/stream", id.as_str().unwrap());
    let as_peer = |key: &str, id: &Value| crate::support::Request::new(&daemon.addr, "GET", &path(id)).key(key);
    as_peer(bob_key, &own["jobId"]).send().expect_error(404, 3006);
    let events = all_events(as_peer(bob_key, &bobs["jobId"]).stream());
    assert_eq!(events.last().unwrap()["type"], "exit", "bob reattaches to his own job");
    as_peer(carol_key, &bobs["jobId"]).send().expect_error(404, 3006);
    as_peer(carol_key, &own["jobId"]).send().expect_error(404, 3006);
    // Nor does carol's key reach bob's job through his Idempotency-Key: hers names her own.
    let carols = crate::support::Request::new(&daemon.addr, "POST", EXECUTE)
        .key(carol_key)
        .header("Idempotency-Key", "shared")
        .json(&body)
        .send()
        .expect(200);
    assert!(carols["jobId"] != bobs["jobId"] && carols["jobId"] != own["jobId"]);
    assert_eq!(lines(&runs).len(), 3);
    let events = all_events(daemon.req("GET", &path(&bobs["jobId"])).stream());
    assert_eq!(events.last().unwrap()["type"], "exit", "the owner reads a peer's job");
}

#[test]
fn a_peer_lists_and_cancels_only_the_jobs_it_started() {
    let home = Home::new("jobs-callers");
    let bob_key = "bob-key-0123456789abcdef";
    let carol_key = "carol-key-0123456789abcdef";
    home.edit_config(|doc| {
        doc["auth"]["allowedKeys"]["bob"] = bob_key.into();
        doc["auth"]["allowedKeys"]["carol"] = carol_key.into();
    });
    let daemon = home.start();
    let as_peer =
        |key: &str, method: &str, path: &str| crate::support::Request::new(&daemon.addr, method, path).key(key);
    // Bob starts a long job (its stream stays open while the test looks at it).
    let _bobs_stream = as_peer(bob_key, "POST", STREAM).json(&json!({"command": "sleep", "args": ["30"]})).stream();
    let jobs = |key: Option<&str>| -> Vec<String> {
        let res = match key {
            Some(key) => as_peer(key, "GET", "/api/v1/execute/jobs").send().expect(200),
            None => daemon.get("/api/v1/execute/jobs").expect(200),
        };
        res["jobs"].as_array().unwrap().iter().map(|j| j["jobId"].as_str().unwrap().to_string()).collect()
    };
    wait_until(Duration::from_secs(10), "bob's job to run", || jobs(Some(bob_key)).len() == 1);
    let id = jobs(Some(bob_key)).remove(0);
    assert_eq!(jobs(None), vec![id.as_str()], "the owner sees every job");
    assert!(jobs(Some(carol_key)).is_empty(), "carol does not see bob's job");
    // Carol cannot cancel it: it is unknown to her.
    as_peer(carol_key, "DELETE", &format!("{EXECUTE}/{id}")).send().expect_error(404, 3006);
    assert_eq!(jobs(Some(bob_key)), vec![id.as_str()], "still running");
    // Bob can cancel his own job.
    as_peer(bob_key, "DELETE", &format!("{EXECUTE}/{id}")).send().expect(200);
    wait_until(Duration::from_secs(10), "the job to stop", || jobs(None).is_empty());
    // The owner cancels a peer's job.
    let _carols_stream = as_peer(carol_key, "POST", STREAM).json(&json!({"command": "sleep", "args": ["30"]})).stream();
    wait_until(Duration::from_secs(10), "carol's job to run", || jobs(None).len() == 1);
    let carols = jobs(None).remove(0);
    daemon.req("DELETE", &format!("{EXECUTE}/{carols}")).send().expect(200);
    wait_until(Duration::from_secs(10), "carol's job to stop", || jobs(None).is_empty());
}

#[test]
fn a_stream_is_reattached_from_any_event_number_while_it_runs_and_after_it_ended() {
    let daemon = Daemon::start("reattach");
    let body = script("for i in 1 2 3 4 5 6; do echo line $i; sleep 0.15; done; exit 2");
    let mut stream = daemon.req("POST", STREAM).header("Idempotency-Key", "r-1").json(&body).stream();
    assert_eq!(header(&stream, "x-loopsy-heartbeat"), Some("500"), "a keyed stream announces its heartbeat");
    let job_id = header(&stream, "x-loopsy-job-id").unwrap().to_string();
    let first = stream.next_event().unwrap();
    assert_eq!((first.id.as_deref(), first.json()["seq"].as_u64()), (Some("1"), Some(1)));
    assert_eq!(first.json()["data"], "line 1\n");
    stream.close(); // the client goes away: a keyed job keeps running

    let events = all_events(job_stream(&daemon, &job_id, "?from=3"));
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [3, 4, 5, 6, 7], "from event 3 to the exit");
    assert_eq!(text_of(&events), "line 3\nline 4\nline 5\nline 6\n");
    let exit = events.last().unwrap();
    assert_eq!(
        (exit["type"].as_str(), exit["exitCode"].as_i64(), exit["data"].as_str()),
        (Some("exit"), Some(2), Some("2"))
    );

    // After the end: the whole job again, from Last-Event-ID too, and nothing past the exit.
    let everything = all_events(job_stream(&daemon, &job_id, ""));
    assert_eq!(text_of(&everything), "line 1\nline 2\nline 3\nline 4\nline 5\nline 6\n");
    let resumed =
        daemon.req("GET", &format!("/api/v1/execute/jobs/{job_id}/stream")).header("Last-Event-ID", "5").stream();
    assert_eq!(all_events(resumed).len(), 2, "event 6 and the exit");
    assert!(all_events(job_stream(&daemon, &job_id, "?from=8")).is_empty());
    // The same key on POST, saying where it stopped, resumes as well.
    let retried =
        daemon.req("POST", STREAM).header("Idempotency-Key", "r-1").header("Last-Event-ID", "6").json(&body).stream();
    let tail = all_events(retried);
    assert_eq!((tail.len(), tail[0]["type"].as_str()), (1, Some("exit")));

    let path = format!("/api/v1/execute/jobs/{job_id}/stream?from=x");
    daemon.req("GET", &path).send().expect_error(400, 9003);
    daemon.req("GET", "/api/v1/execute/jobs/no-such-job/stream").send().expect_error(404, 3006);
}

#[test]
fn kept_output_is_bounded_per_job_and_forgotten_jobs_still_do_not_run_twice() {
    let home = Home::new("retention");
    home.edit_config(|doc| {
        doc["execution"]["keepOutputBytes"] = 65536.into();
        doc["execution"]["keepFinished"] = 1.into();
    });
    let daemon = home.start();
    let dir = TempDir::new("retention-runs");
    let runs = dir.path().join("runs");
    // 200 KB of output with nobody reading: only the last 64 KiB are kept.
    let big = script(&format!("echo ran >> {}; head -c 200000 /dev/zero | tr '\\0' x; echo", runs.display()));
    let stream = daemon.req("POST", STREAM).header("Idempotency-Key", "big").json(&big).stream();
    let job_id = header(&stream, "x-loopsy-job-id").unwrap().to_string();
    stream.close();
    // Nobody reads now, so the job runs to its end without waiting for anyone.
    wait_until(Duration::from_secs(20), "the job ended", || {
        daemon.get("/api/v1/execute/jobs").json()["jobs"].as_array().unwrap().is_empty()
    });
    let events = all_events(job_stream(&daemon, &job_id, ""));
    let gap = &events[0];
    assert_eq!((gap["type"].as_str(), gap["seq"].as_u64()), (Some("gap"), Some(1)), "{gap}");
    let kept = text_of(&events).len();
    assert!(kept > 0 && kept <= 65_536, "kept {kept} bytes");
    // A collected retry of a job whose output is incomplete says so instead of lying.
    let response = daemon.req("POST", EXECUTE).header("Idempotency-Key", "big").json(&big).send();
    let message = response.expect_error(410, 3008);
    assert!(message.contains("no longer complete"), "{message}");

    // With keepFinished 1, the next finished job evicts it; its key is still remembered.
    daemon.req("POST", EXECUTE).json(&script("true")).send().expect(200);
    let response = daemon.req("POST", STREAM).header("Idempotency-Key", "big").json(&big).send();
    let message = response.expect_error(410, 3008);
    assert!(message.contains(&job_id) && message.contains("exit code 0"), "{message}");
    assert_eq!(lines(&runs), ["ran"], "never run twice");
}

#[test]
fn loopsy_exec_rides_out_a_stalled_link_and_prints_everything_once() {
    let daemon = Daemon::start("exec-stall");
    let relay = Relay::start(&daemon.addr);
    let dir = TempDir::new("exec-stall-runs");
    let runs = dir.path().join("runs");
    let command =
        format!("for i in $(seq 1 40); do echo line $i; echo $i >> {}; sleep 0.1; done; exit 3", runs.display());
    let mut cli = Background::spawn(daemon.home.path(), &["exec", &relay.addr, "sh", "-c", &command]);
    cli.wait_line("line 8", Duration::from_secs(20));
    relay.freeze();
    let frozen_at = Instant::now();
    let before = relay.connections();
    cli.wait_line("reattaching to job", Duration::from_secs(10));
    eprintln!("the CLI noticed the stall after {:?}", frozen_at.elapsed());
    // Its first attempts hang in the frozen link too.
    wait_until(Duration::from_secs(10), "a reattach attempt meets the frozen link", || relay.connections() > before);
    relay.thaw();
    let (code, seen) = cli.wait(Duration::from_secs(30));
    assert_eq!(code, 3, "the command's exit code: {seen:?}");
    let printed: Vec<&String> = seen.iter().filter(|l| l.starts_with("line ")).collect();
    let expected: Vec<String> = (1..=40).map(|i| format!("line {i}")).collect();
    assert_eq!(printed, expected.iter().collect::<Vec<_>>(), "every line once, in order");
    assert_eq!(lines(&runs).len(), 40, "the command ran once");
    assert!(relay.connections() >= 2, "it reconnected");
}

#[test]
fn loopsy_exec_rides_out_cut_connections() {
    let daemon = Daemon::start("exec-cut");
    let relay = Relay::start(&daemon.addr);
    let dir = TempDir::new("exec-cut-runs");
    let runs = dir.path().join("runs");
    let command = format!("for i in $(seq 1 30); do echo line $i; echo $i >> {}; sleep 0.1; done", runs.display());
    let mut cli = Background::spawn(daemon.home.path(), &["exec", &relay.addr, "sh", "-c", &command]);
    cli.wait_line("line 5", Duration::from_secs(20));
    relay.cut();
    cli.wait_line("line 15", Duration::from_secs(20));
    relay.cut();
    let (code, seen) = cli.wait(Duration::from_secs(30));
    assert_eq!(code, 0, "{seen:?}");
    let printed: Vec<&String> = seen.iter().filter(|l| l.starts_with("line ")).collect();
    assert_eq!(printed.len(), 30, "{seen:?}");
    assert_eq!(lines(&runs).len(), 30);
}

#[test]
fn ctrl_c_on_loopsy_exec_cancels_the_remote_job() {
    let daemon = Daemon::start("exec-ctrl-c");
    let mut cli = Background::spawn(daemon.home.path(), &["exec", "local", "sh", "-c", "echo started; sleep 60"]);
    cli.wait_line("started", Duration::from_secs(20));
    cli.signal(libc::SIGINT);
    let (code, seen) = cli.wait(Duration::from_secs(20));
    assert_eq!(code, 143, "the remote job got SIGTERM: {seen:?}");
    assert!(seen.iter().any(|l| l.contains("cancelling job")), "{seen:?}");
    wait_until(Duration::from_secs(5), "no job is left", || {
        daemon.get("/api/v1/execute/jobs").json()["jobs"].as_array().unwrap().is_empty()
    });
}

#[test]
fn a_second_ctrl_c_ends_loopsy_exec_at_once_with_130() {
    let daemon = Daemon::start("exec-ctrl-c-twice");
    let relay = Relay::start(&daemon.addr);
    let mut cli = Background::spawn(daemon.home.path(), &["exec", &relay.addr, "sh", "-c", "echo started; sleep 60"]);
    cli.wait_line("started", Duration::from_secs(20));
    // The cancel request cannot arrive: only the second Ctrl-C can end the command.
    relay.freeze();
    cli.signal(libc::SIGINT);
    cli.wait_line("cancelling job", Duration::from_secs(20));
    cli.signal(libc::SIGINT);
    let (code, seen) = cli.wait(Duration::from_secs(20));
    assert_eq!(code, 130, "{seen:?}");
    assert!(!seen.iter().any(|l| l.contains("could not cancel")), "ended by the second Ctrl-C: {seen:?}");
}

#[test]
fn ctrl_c_ends_loopsy_exec_with_130_when_the_daemon_cannot_take_the_cancel() {
    let daemon = Daemon::start("exec-ctrl-c-unreachable");
    let relay = Relay::start(&daemon.addr);
    let mut cli = Background::spawn(daemon.home.path(), &["exec", &relay.addr, "sh", "-c", "echo started; sleep 60"]);
    cli.wait_line("started", Duration::from_secs(20));
    relay.freeze();
    cli.signal(libc::SIGINT);
    let (code, seen) = cli.wait(Duration::from_secs(30));
    assert_eq!(code, 130, "{seen:?}");
    assert!(seen.iter().any(|l| l.contains("could not cancel job")), "{seen:?}");
}

#[test]
fn the_mcp_execute_tool_gets_the_whole_result_of_one_run_across_a_dropped_connection() {
    let daemon = Daemon::start("mcp-exec-drop");
    let relay = Relay::start(&daemon.addr);
    let dir = TempDir::new("mcp-exec-runs");
    let runs = dir.path().join("runs");
    let command = format!("echo ran >> {}; echo before; sleep 2; echo after", runs.display());
    let cutter = std::thread::spawn({
        let (addr, key) = (daemon.addr.clone(), daemon.key.clone());
        move || {
            wait_until(Duration::from_secs(20), "the job runs", || {
                let jobs = crate::support::Request::new(&addr, "GET", "/api/v1/execute/jobs").key(&key).send();
                !jobs.json()["jobs"].as_array().unwrap().is_empty()
            });
        }
    });
    let mut server = McpServer::spawn(daemon.home.path());
    let call = std::thread::scope(|scope| {
        let answer = scope.spawn(|| {
            server.ok("loopsy_execute", json!({"peer": relay.addr, "command": "sh", "args": ["-c", command]}))
        });
        cutter.join().unwrap();
        relay.cut();
        answer.join().unwrap()
    });
    let result: Value = serde_json::from_str(&call).unwrap();
    assert_eq!(result["stdout"], "before\nafter\n", "{result}");
    assert_eq!(result["exitCode"], 0);
    assert_eq!(lines(&runs), ["ran"], "one run");
    assert!(relay.connections() >= 2, "it came back for the result");
}

#[test]
fn a_keyed_job_whose_client_never_comes_back_is_stopped_after_the_detached_timeout() {
    let home = Home::new("orphan");
    home.edit_config(|doc| doc["execution"]["detachedTimeout"] = 700.into());
    let daemon = home.start();
    let stream =
        daemon.req("POST", STREAM).header("Idempotency-Key", "gone").json(&script("echo started; sleep 60")).stream();
    let job_id = header(&stream, "x-loopsy-job-id").unwrap().to_string();
    stream.close();
    let closed = Instant::now();
    wait_until(Duration::from_secs(10), "the orphaned job is stopped", || {
        daemon.get("/api/v1/execute/jobs").json()["jobs"].as_array().unwrap().is_empty()
    });
    assert!(closed.elapsed() >= Duration::from_millis(600), "not before the timeout: {:?}", closed.elapsed());
    let events = all_events(job_stream(&daemon, &job_id, ""));
    let exit = events.last().unwrap();
    assert_eq!((exit["type"].as_str(), exit["signal"].as_str()), (Some("exit"), Some("SIGTERM")), "{exit}");
    assert_eq!(text_of(&events), "started\n", "its output is still there to read");
}
