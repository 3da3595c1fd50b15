//! Remote execution: `/execute`, `/execute/stream`, `/execute/jobs`, `DELETE /execute/:jobId`
//! and `loopsy exec`.

use std::io::BufRead;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{wait_until, Background, Daemon, Home};

const EXECUTE: &str = "/api/v1/execute";
const STREAM: &str = "/api/v1/execute/stream";
const JOBS: &str = "/api/v1/execute/jobs";

/// Whether `pid` is a live process (a zombie waiting to be reaped counts as gone).
fn alive(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

fn execute(daemon: &Daemon, body: Value) -> Value {
    daemon.req("POST", EXECUTE).json(&body).send().expect(200)
}

fn jobs(daemon: &Daemon) -> Vec<Value> {
    daemon.get(JOBS).expect(200)["jobs"].as_array().unwrap().clone()
}

/// A script that starts a background grandchild, prints its PID, then waits.
fn grandchild_script() -> Value {
    json!(["-c", "sleep 100 & echo $!; sleep 100"])
}

#[test]
fn a_command_runs_and_its_output_and_exit_code_come_back() {
    let daemon = Daemon::start("exec-ok");
    let result = execute(&daemon, json!({"command": "echo", "args": ["hi", "there"]}));
    assert_eq!(result["exitCode"], 0);
    assert_eq!(result["stdout"], "hi there\n");
    assert_eq!(result["stderr"], "");
    assert_eq!(result["killed"], false);
    assert_eq!(result["signal"], Value::Null);
    assert_eq!(result["truncated"], false);
    assert_eq!(result["jobId"].as_str().unwrap().len(), 36, "a UUID: {result}");
    assert!(result["duration"].is_u64());
}

#[test]
fn a_non_zero_exit_is_still_a_200_with_the_code() {
    let daemon = Daemon::start("exec-nonzero");
    let result = execute(&daemon, json!({"command": "sh", "args": ["-c", "echo oops >&2; exit 3"]}));
    assert_eq!(result["exitCode"], 3);
    assert_eq!(result["stderr"], "oops\n");
    assert_eq!(result["killed"], false);
}

#[test]
fn denied_commands_are_refused_through_every_wrapper_and_both_endpoints() {
    let daemon = Daemon::start("exec-deny");
    let dir = crate::support::TempDir::new("victim");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "keep me").unwrap();
    let cwd = dir.path().to_str().unwrap();
    let attempts: &[&[&str]] = &[
        &["rm", "victim"],
        &["/bin/rm", "victim"],
        &["RM", "victim"],
        &["rm.exe", "victim"],
        &["sh", "-c", "rm victim"],
        &["bash", "-lc", "true && rm victim"],
        &["sh", "-c", "echo $(rm victim)"],
        &["sh", "-c", "ls | xargs rm"],
        &["env", "FOO=1", "rm", "victim"],
        &["nohup", "rm", "victim"],
        &["sudo", "-u", "root", "rm", "victim"],
        &["xargs", "rm"],
        &["timeout", "5", "rm", "victim"],
        &["nice", "-n", "5", "rm", "victim"],
        &["find", ".", "-delete"],
    ];
    for argv in attempts {
        let body = json!({"command": argv[0], "args": &argv[1..], "cwd": cwd});
        let message = daemon.req("POST", EXECUTE).json(&body).send().expect_error(403, 3001);
        assert!(message.starts_with("Command 'rm' is denied"), "{argv:?}: {message}");
        let message = daemon.req("POST", STREAM).json(&body).send().expect_error(403, 3001);
        assert!(message.contains("'rm'"), "stream {argv:?}: {message}");
    }
    assert!(victim.exists(), "nothing ran");
    let message = daemon.req("POST", EXECUTE).json(&json!({"command": "sh", "args": ["-c", "rm x"]})).send();
    assert!(message.expect_error(403, 3001).contains("run through sh"));
    assert_eq!(daemon.get("/api/v1/status").expect(200)["jobs"]["total"], 0);
}

#[test]
fn the_allowlist_admits_only_listed_programs() {
    let home = Home::new("exec-allow");
    home.edit_config(|doc| doc["execution"]["allowlist"] = crate::support::yaml(["echo", "sh"]));
    let daemon = home.start();
    assert_eq!(execute(&daemon, json!({"command": "echo", "args": ["ok"]}))["stdout"], "ok\n");
    assert_eq!(execute(&daemon, json!({"command": "sh", "args": ["-c", "cd / && echo ok"]}))["exitCode"], 0);
    for body in [json!({"command": "ls"}), json!({"command": "sh", "args": ["-c", "echo a; ls"]})] {
        let message = daemon.req("POST", EXECUTE).json(&body).send().expect_error(403, 3001);
        assert!(message.contains("'ls' is not in the allowlist"), "{message}");
        daemon.req("POST", STREAM).json(&body).send().expect_error(403, 3001);
    }
}

#[test]
fn a_timeout_kills_the_whole_process_group() {
    let daemon = Daemon::start("exec-timeout");
    let started = Instant::now();
    let result = execute(&daemon, json!({"command": "sh", "args": grandchild_script(), "timeout": 500}));
    assert!(started.elapsed() < Duration::from_secs(10), "the timeout ended the job");
    assert_eq!(result["exitCode"], Value::Null);
    assert_eq!(result["killed"], true);
    assert_eq!(result["timedOut"], true);
    assert_eq!(result["signal"], "SIGTERM");
    let grandchild: u64 = result["stdout"].as_str().unwrap().trim().parse().unwrap();
    wait_until(Duration::from_secs(5), "the grandchild is gone", || !alive(grandchild));
    assert!(jobs(&daemon).is_empty());
}

#[test]
fn the_default_timeout_applies_when_the_request_has_none() {
    let home = Home::new("exec-default-timeout");
    home.edit_config(|doc| doc["execution"]["defaultTimeout"] = 300.into());
    let daemon = home.start();
    let result = execute(&daemon, json!({"command": "sleep", "args": ["100"]}));
    assert_eq!(result["timedOut"], true);
    assert_eq!(result["killed"], true);
    assert!(result["duration"].as_u64().unwrap() < 5000, "{result}");
}

#[test]
fn a_program_ignoring_sigterm_is_killed_after_the_grace_period() {
    let daemon = Daemon::start("exec-sigkill");
    let script = json!(["-c", "trap '' TERM; sleep 100 & echo $!; wait"]);
    let result = execute(&daemon, json!({"command": "sh", "args": script, "timeout": 200}));
    assert_eq!(result["signal"], "SIGKILL", "{result}");
    assert!(result["duration"].as_u64().unwrap() >= 2000, "TERM came first, KILL after the grace period: {result}");
    let grandchild: u64 = result["stdout"].as_str().unwrap().trim().parse().unwrap();
    wait_until(Duration::from_secs(5), "the grandchild is gone", || !alive(grandchild));
}

#[test]
fn a_long_collected_answer_is_whole() {
    // Past 64 KiB of output the daemon builds the answer on its blocking pool.
    let daemon = Daemon::start("exec-long");
    let body =
        json!({"command": "sh", "args": ["-c", "head -c 300000 /dev/zero | tr '\\0' y; printf 'e\\n' >&2; exit 3"]});
    let result = execute(&daemon, body);
    let stdout = result["stdout"].as_str().unwrap();
    assert!(stdout.len() == 300_000 && stdout.bytes().all(|b| b == b'y'), "{} bytes", stdout.len());
    assert_eq!(
        (&result["stderr"], &result["exitCode"], &result["truncated"]),
        (&json!("e\n"), &json!(3), &json!(false))
    );
}

#[test]
fn output_beyond_the_cap_is_dropped_and_reported() {
    let home = Home::new("exec-cap");
    home.edit_config(|doc| doc["execution"]["maxOutputBytes"] = 1000.into());
    let daemon = home.start();
    let body = json!({"command": "sh", "args": ["-c", "head -c 20000000 /dev/zero | tr '\\0' x; echo small >&2"]});
    let result = execute(&daemon, body.clone());
    assert_eq!(result["exitCode"], 0, "the program ran to its end: {}", result["stderr"]);
    assert_eq!(result["stdout"].as_str().unwrap().len(), 1000);
    assert_eq!(result["truncated"], true);
    assert_eq!(result["stdoutTruncated"], true);
    assert_eq!(result["stderrTruncated"], false);
    assert_eq!(result["stderr"], "small\n");

    let mut stream = daemon.req("POST", STREAM).json(&body).stream();
    let mut streamed = 0;
    let exit = loop {
        let event = stream.next_event().expect("an exit event").json();
        match event["type"].as_str().unwrap() {
            "stdout" => streamed += event["data"].as_str().unwrap().len(),
            "exit" => break event,
            _ => {}
        }
    };
    assert_eq!(streamed, 1000);
    assert_eq!(exit["truncated"], true);
}

#[test]
fn delete_cancels_a_running_job_and_kills_its_group() {
    let daemon = Daemon::start("exec-cancel");
    let request = daemon.req("POST", EXECUTE).json(&json!({"command": "sh", "args": grandchild_script()}));
    let waiting = std::thread::spawn(move || request.send());
    wait_until(Duration::from_secs(5), "the job is listed", || jobs(&daemon).len() == 1);
    let job_id = jobs(&daemon)[0]["jobId"].as_str().unwrap().to_string();
    let answer = daemon.req("DELETE", &format!("{EXECUTE}/{job_id}")).send().expect(200);
    assert_eq!(answer, json!({"success": true, "jobId": job_id}));
    let result = waiting.join().unwrap().expect(200);
    assert_eq!(result["jobId"], job_id.as_str());
    assert_eq!(result["killed"], true);
    assert_eq!(result["cancelled"], true);
    assert_eq!(result["exitCode"], Value::Null);
    let grandchild: u64 = result["stdout"].as_str().unwrap().trim().parse().unwrap();
    wait_until(Duration::from_secs(5), "the grandchild is gone", || !alive(grandchild));
    assert!(jobs(&daemon).is_empty());
    let message = daemon.req("DELETE", &format!("{EXECUTE}/{job_id}")).send().expect_error(404, 3006);
    assert_eq!(message, format!("Job {job_id} not found"));
}

#[test]
fn closing_the_stream_kills_the_job_group() {
    let daemon = Daemon::start("exec-disconnect");
    let mut stream = daemon.req("POST", STREAM).json(&json!({"command": "sh", "args": grandchild_script()})).stream();
    assert_eq!(stream.status, 200);
    let event = stream.next_event().expect("the PID line").json();
    let grandchild: u64 = event["data"].as_str().unwrap().trim().parse().unwrap();
    assert!(alive(grandchild));
    assert_eq!(jobs(&daemon).len(), 1, "streamed jobs are listed");
    stream.close();
    wait_until(Duration::from_secs(5), "the grandchild is gone", || !alive(grandchild));
    wait_until(Duration::from_secs(5), "the job is no longer listed", || jobs(&daemon).is_empty());
}

#[test]
fn a_collected_job_runs_to_its_end_after_its_client_hangs_up() {
    use std::io::Write;
    let daemon = Daemon::start("exec-collect-hangup");
    let marker = daemon.home.path().join("finished");
    let script = format!("sleep 1; echo done > '{}'", marker.display());
    let body = json!({"command": "sh", "args": ["-c", script]}).to_string();
    let mut conn = std::net::TcpStream::connect(&daemon.addr).unwrap();
    write!(
        conn,
        "POST {EXECUTE} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        daemon.addr,
        daemon.key,
        body.len()
    )
    .unwrap();
    wait_until(Duration::from_secs(5), "the job is listed", || jobs(&daemon).len() == 1);
    drop(conn);
    wait_until(Duration::from_secs(10), "the job wrote its file", || {
        std::fs::read_to_string(&marker).is_ok_and(|text| text == "done\n")
    });
    wait_until(Duration::from_secs(5), "the job is no longer listed", || jobs(&daemon).is_empty());
}

#[test]
fn a_streamed_job_can_be_cancelled_and_reports_the_signal() {
    let daemon = Daemon::start("exec-stream-cancel");
    let mut stream =
        daemon.req("POST", STREAM).json(&json!({"command": "sh", "args": ["-c", "echo go; sleep 100"]})).stream();
    let job_id = stream.headers.iter().find(|(n, _)| n == "x-loopsy-job-id").unwrap().1.clone();
    assert_eq!(stream.next_event().unwrap().json()["data"], "go\n");
    daemon.req("DELETE", &format!("{EXECUTE}/{job_id}")).send().expect(200);
    let exit = stream.next_event().unwrap().json();
    assert_eq!(exit["type"], "exit");
    assert_eq!(exit["data"], "143", "not 1.0.21's \"0\" for a signal death");
    assert_eq!(exit["exitCode"], Value::Null);
    assert_eq!(exit["signal"], "SIGTERM");
    assert_eq!(exit["killed"], true);
    assert_eq!(exit["jobId"], job_id.as_str());
    assert!(stream.next_event().is_none(), "the stream ends after exit");
}

#[test]
fn stream_events_have_the_1_0_21_shape() {
    let daemon = Daemon::start("exec-stream");
    let body = json!({"command": "sh", "args": ["-c", "echo out; sleep 0.1; echo err >&2; exit 7"]});
    let mut stream = daemon.req("POST", STREAM).json(&body).stream();
    assert_eq!(stream.status, 200);
    let content_type = stream.headers.iter().find(|(n, _)| n == "content-type").unwrap().1.clone();
    assert!(content_type.starts_with("text/event-stream"), "{content_type}");
    let mut events = Vec::new();
    while let Some(event) = stream.next_event() {
        events.push(event.json());
    }
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["stdout", "stderr", "exit"]);
    let job_id = events[0]["jobId"].as_str().unwrap();
    assert_eq!(job_id.len(), 36);
    for event in &events {
        assert_eq!(event["jobId"], job_id);
        assert!(event["timestamp"].is_u64());
        assert!(event["data"].is_string());
    }
    assert_eq!(events[0]["data"], "out\n");
    assert_eq!(events[1]["data"], "err\n");
    assert_eq!(events[2]["data"], "7");
    assert_eq!(events[2]["exitCode"], 7);
    assert_eq!(events[2]["killed"], false);
}

#[test]
fn a_bad_cwd_or_a_missing_program_is_a_400_that_says_which() {
    let daemon = Daemon::start("exec-spawn");
    // The daemon spawns where the request runs when no other job does, and on its blocking pool
    // while one runs: both ways answer alike.
    for busy in [false, true] {
        let other =
            busy.then(|| daemon.req("POST", STREAM).json(&json!({"command": "sleep", "args": ["100"]})).stream());
        for endpoint in [EXECUTE, STREAM] {
            let send = |body: Value| daemon.req("POST", endpoint).json(&body).send().expect_error(404, 3004);
            let message = send(json!({"command": "ls", "cwd": "/no/such/dir"}));
            assert!(message.contains("working directory '/no/such/dir' does not exist"), "{message}");
            let message = send(json!({"command": "ls", "cwd": "/etc/passwd"}));
            assert!(message.contains("'/etc/passwd' is not a directory"), "{message}");
            let message = send(json!({"command": "no-such-program-xyz"}));
            assert!(message.contains("program 'no-such-program-xyz' not found on PATH"), "{message}");
            let message = send(json!({"command": "./nope", "cwd": "/"}));
            assert!(message.contains("program './nope' does not exist"), "{message}");
        }
        let done = execute(
            &daemon,
            json!({"command": "sh", "args": ["-c", "pwd; echo $X >&2"], "cwd": "/tmp", "env": {"X": "y"}}),
        );
        assert_eq!(
            (&done["stdout"], &done["stderr"], &done["exitCode"]),
            (&json!("/tmp\n"), &json!("y\n"), &json!(0)),
            "busy: {busy}"
        );
        assert_eq!(jobs(&daemon).len(), usize::from(busy), "failed starts leave no job behind (busy: {busy})");
        if let Some(other) = other {
            other.close();
        }
    }
}

#[test]
fn malformed_bodies_are_400s_that_name_the_field() {
    let daemon = Daemon::start("exec-bodies");
    let cases = [
        (json!({}), "command"),
        (json!({"command": ""}), "command"),
        (json!({"command": 5}), "command"),
        (json!({"command": "echo", "args": "x"}), "args"),
        (json!({"command": "echo", "args": [1]}), "args[0]"),
        (json!({"command": "echo", "timeout": -5}), "timeout"),
        (json!({"command": "echo", "timeout": 0}), "timeout"),
        (json!({"command": "echo", "timeout": "soon"}), "timeout"),
        (json!({"command": "echo", "env": {"A": 1}}), "env"),
        (json!({"command": "echo", "cwd": 3}), "cwd"),
        (json!("echo"), "invalid JSON body"),
    ];
    for (body, field) in cases {
        for endpoint in [EXECUTE, STREAM] {
            let message = daemon.req("POST", endpoint).json(&body).send().expect_error(400, 9003);
            assert!(message.contains(field), "{body} on {endpoint}: {message}");
        }
    }
    let res = daemon.req("POST", EXECUTE).header("Content-Type", "application/json").body("{not json").send();
    res.expect_error(400, 9003);
}

#[test]
fn loader_variables_are_refused_and_other_env_is_merged() {
    let daemon = Daemon::start("exec-env");
    for name in ["LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "DYLD_INSERT_LIBRARIES"] {
        let body = json!({"command": "true", "env": {name: "/tmp/evil.so"}});
        let message = daemon.req("POST", EXECUTE).json(&body).send().expect_error(400, 9003);
        assert!(message.contains(name), "{message}");
        daemon.req("POST", STREAM).json(&body).send().expect_error(400, 9003);
    }
    let result = execute(
        &daemon,
        json!({"command": "sh", "args": ["-c", "echo $FOO; echo ${HOME:+home-set}"], "env": {"FOO": "bar"}}),
    );
    assert_eq!(result["stdout"], "bar\nhome-set\n", "request env over the daemon's environment");
}

fn queued(daemon: &Daemon) -> u64 {
    daemon.get(JOBS).expect(200)["queued"].as_u64().unwrap()
}

/// A 429 of the exec queue: 1.0.21's code 3003, with `Retry-After`.
#[track_caller]
fn expect_busy(res: crate::support::http::Response) -> String {
    let message = res.expect_error(429, 3003);
    let retry: u64 = res.header("Retry-After").expect("Retry-After on a 429").parse().unwrap();
    assert!(retry >= 1, "Retry-After {retry}");
    message
}

#[test]
fn without_a_queue_the_concurrency_cap_answers_at_once_and_frees_up() {
    let home = Home::new("exec-cap-jobs");
    home.edit_config(|doc| {
        doc["execution"]["maxConcurrent"] = 2.into();
        doc["execution"]["maxQueued"] = 0.into();
    });
    let daemon = home.start();
    let request = daemon.req("POST", EXECUTE).json(&json!({"command": "sleep", "args": ["100"]}));
    let waiting = std::thread::spawn(move || request.send());
    let mut stream = daemon.req("POST", STREAM).json(&json!({"command": "sleep", "args": ["100"]})).stream();
    assert_eq!(stream.status, 200);
    wait_until(Duration::from_secs(5), "both jobs run", || jobs(&daemon).len() == 2);

    let started = Instant::now();
    let message = expect_busy(daemon.req("POST", EXECUTE).json(&json!({"command": "echo"})).send());
    assert!(message.starts_with("Max concurrent jobs (2) reached"), "{message}");
    expect_busy(daemon.req("POST", STREAM).json(&json!({"command": "echo"})).send());
    assert!(started.elapsed() < Duration::from_secs(2), "refused at once, not queued");

    for job in jobs(&daemon) {
        daemon.req("DELETE", &format!("{EXECUTE}/{}", job["jobId"].as_str().unwrap())).send().expect(200);
    }
    assert_eq!(waiting.join().unwrap().expect(200)["killed"], true);
    while stream.next_event().is_some() {}
    wait_until(Duration::from_secs(5), "the jobs ended", || jobs(&daemon).is_empty());
    assert_eq!(execute(&daemon, json!({"command": "echo", "args": ["again"]}))["stdout"], "again\n");
}

#[test]
fn over_the_cap_requests_wait_in_order_and_past_the_queue_get_429() {
    let home = Home::new("exec-queue");
    home.edit_config(|doc| {
        doc["execution"]["maxConcurrent"] = 1.into();
        doc["execution"]["maxQueued"] = 3.into();
    });
    let log = home.path().join("order.log");
    let daemon = home.start();
    // The one place is taken until the blocker is cancelled.
    let blocker = daemon.req("POST", EXECUTE).json(&json!({"command": "sleep", "args": ["100"]}));
    let blocker = std::thread::spawn(move || blocker.send());
    wait_until(Duration::from_secs(5), "the blocker runs", || jobs(&daemon).len() == 1);

    // Three requests queue up, one after the other (each appends its name to the log).
    let mut waiting = Vec::new();
    for (i, name) in ["first", "second", "third"].into_iter().enumerate() {
        let script = format!("echo {name} >> '{}'", log.display());
        let request = daemon.req("POST", EXECUTE).json(&json!({"command": "sh", "args": ["-c", script]}));
        waiting.push(std::thread::spawn(move || request.send()));
        wait_until(Duration::from_secs(5), "the request is queued", || queued(&daemon) == i as u64 + 1);
    }
    assert_eq!(jobs(&daemon).len(), 1, "queued requests do not run");
    assert_eq!(daemon.get("/api/v1/status").expect(200)["jobs"]["active"], 1);

    // Past the queue: refused at once on both endpoints.
    let started = Instant::now();
    let message = expect_busy(daemon.req("POST", EXECUTE).json(&json!({"command": "echo"})).send());
    assert!(message.contains("Max concurrent jobs (1) reached") && message.contains("3 requests"), "{message}");
    expect_busy(daemon.req("POST", STREAM).json(&json!({"command": "echo"})).send());
    assert!(started.elapsed() < Duration::from_secs(5), "refused at once, not queued");
    assert_eq!(queued(&daemon), 3);

    let blocker_id = jobs(&daemon)[0]["jobId"].as_str().unwrap().to_string();
    daemon.req("DELETE", &format!("{EXECUTE}/{blocker_id}")).send().expect(200);
    assert_eq!(blocker.join().unwrap().expect(200)["killed"], true);
    for request in waiting {
        assert_eq!(request.join().unwrap().expect(200)["exitCode"], 0);
    }
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "first\nsecond\nthird\n", "served in arrival order");
    assert_eq!(queued(&daemon), 0);
    assert_eq!(execute(&daemon, json!({"command": "echo", "args": ["again"]}))["stdout"], "again\n");
}

#[test]
fn a_request_that_waits_longer_than_the_queue_timeout_gets_429_and_leaves_the_queue() {
    let home = Home::new("exec-queue-timeout");
    home.edit_config(|doc| {
        doc["execution"]["maxConcurrent"] = 1.into();
        doc["execution"]["queueTimeout"] = 300.into();
    });
    let daemon = home.start();
    let mut stream = daemon.req("POST", STREAM).json(&json!({"command": "sleep", "args": ["100"]})).stream();
    assert_eq!(stream.status, 200);
    wait_until(Duration::from_secs(5), "the blocker runs", || jobs(&daemon).len() == 1);

    let started = Instant::now();
    let message = expect_busy(daemon.req("POST", EXECUTE).json(&json!({"command": "echo"})).send());
    assert!(started.elapsed() >= Duration::from_millis(300), "it waited for its turn first");
    assert!(message.contains("execution.queueTimeout"), "{message}");
    assert_eq!(queued(&daemon), 0, "a request that gave up leaves the queue");

    // The place it did not get is not lost: the next request runs once the blocker ends.
    let blocker_id = jobs(&daemon)[0]["jobId"].as_str().unwrap().to_string();
    daemon.req("DELETE", &format!("{EXECUTE}/{blocker_id}")).send().expect(200);
    while stream.next_event().is_some() {}
    wait_until(Duration::from_secs(5), "the blocker ended", || jobs(&daemon).is_empty());
    assert_eq!(execute(&daemon, json!({"command": "echo", "args": ["next"]}))["stdout"], "next\n");
}

#[test]
fn jobs_are_listed_with_their_details_and_counted_in_status() {
    let daemon = Daemon::start("exec-jobs");
    execute(&daemon, json!({"command": "true"}));
    let stream = daemon
        .req("POST", STREAM)
        .header("X-Loopsy-Node-Id", "alice-node")
        .json(&json!({"command": "sleep", "args": ["100"]}))
        .stream();
    let job_id = stream.headers.iter().find(|(n, _)| n == "x-loopsy-job-id").unwrap().1.clone();
    wait_until(Duration::from_secs(5), "the job is listed", || jobs(&daemon).len() == 1);
    let job = &jobs(&daemon)[0];
    assert_eq!(job["jobId"], job_id.as_str());
    assert_eq!(job["command"], "sleep");
    assert_eq!(job["args"], json!(["100"]));
    assert_eq!(job["fromNodeId"], "alice-node");
    assert_eq!(job["streamed"], true);
    assert!(job["startedAt"].as_u64().unwrap() > 1_600_000_000_000);
    assert!(alive(job["pid"].as_u64().unwrap()));
    let status = daemon.get("/api/v1/status").expect(200);
    assert_eq!(status["jobs"], json!({"active": 1, "total": 2}));

    stream.close();
    wait_until(Duration::from_secs(5), "the job ended", || jobs(&daemon).is_empty());
    assert_eq!(daemon.get("/api/v1/status").expect(200)["jobs"], json!({"active": 0, "total": 2}));
}

#[test]
fn utf8_split_across_chunks_arrives_intact() {
    let daemon = Daemon::start("exec-utf8");
    // The three bytes of '€' in two writes, far enough apart to be two reads.
    let body = json!({"command": "sh", "args": ["-c", "printf '\\342\\202'; sleep 0.3; printf '\\254 ok\\n'"]});
    assert_eq!(execute(&daemon, body.clone())["stdout"], "€ ok\n");
    let mut stream = daemon.req("POST", STREAM).json(&body).stream();
    let mut text = String::new();
    while let Some(event) = stream.next_event() {
        let event = event.json();
        if event["type"] == "stdout" {
            text.push_str(event["data"].as_str().unwrap());
        }
    }
    assert_eq!(text, "€ ok\n");
}

#[test]
fn stdin_is_dev_null() {
    let daemon = Daemon::start("exec-stdin");
    let started = Instant::now();
    let result = execute(&daemon, json!({"command": "cat", "timeout": 20000}));
    assert_eq!(result["exitCode"], 0);
    assert_eq!(result["stdout"], "");
    assert!(started.elapsed() < Duration::from_secs(5), "cat saw end of input at once");
}

#[test]
fn execute_routes_are_rate_limited_for_peers() {
    let home = Home::new("exec-rate");
    let peer_key = "9e9e9e9e9e9e9e9e9e9e9e9e9e9e9e9e";
    home.edit_config(|doc| {
        doc["rateLimits"]["execute"] = 2.into();
        doc["auth"]["allowedKeys"]["bob"] = peer_key.into();
    });
    let daemon = home.start();
    let bob = |method: &str, path: &str| daemon.anon(method, path).key(peer_key);
    bob("POST", EXECUTE).json(&json!({"command": "true"})).send().expect(200);
    bob("GET", JOBS).send().expect(200);
    let res = bob("POST", EXECUTE).json(&json!({"command": "true"})).send();
    let message = res.expect_error(429, 9002);
    assert!(message.contains("execute"), "{message}");
    assert!(res.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    bob("POST", STREAM).json(&json!({"command": "true"})).send().expect_error(429, 9002);
    // Other categories are not affected, nor is the owner.
    bob("GET", "/api/v1/status").send().expect(200);
    execute(&daemon, json!({"command": "true"}));
}

#[test]
fn the_execute_routes_are_in_the_openapi_document() {
    let daemon = Daemon::start("exec-openapi");
    let doc = daemon.anon("GET", "/api/v1/openapi.json").send().expect(200);
    for (path, method) in [(EXECUTE, "post"), (STREAM, "post"), (JOBS, "get"), ("/api/v1/execute/{jobId}", "delete")] {
        assert!(doc["paths"][path][method]["responses"]["200"].is_object(), "{method} {path}");
    }
    let description = doc["paths"][EXECUTE]["post"]["description"].as_str().unwrap();
    assert!(description.contains("not a sandbox"), "{description}");
    assert!(doc["components"]["schemas"]["ExecRequest"].is_object());
}

#[test]
fn loopsy_exec_streams_output_live_and_exits_with_the_remote_code() {
    let home = Home::new("cli-exec");
    // The CLI's job outlives a dropped connection (it may reattach) until nobody has read it for
    // this long.
    home.edit_config(|doc| doc["execution"]["detachedTimeout"] = 500.into());
    let daemon = home.start();
    let run = daemon.loopsy(&["exec", "local", "sh", "-c", "echo out; echo err >&2; exit 5"]).code(5);
    assert_eq!(run.stdout, "out\n");
    assert_eq!(run.stderr, "err\n");
    daemon.loopsy(&["exec", "local", "true"]).success();

    // Live: the first line is shown while the command still runs; killing the CLI ends the job
    // once it has not come back within execution.detachedTimeout.
    let mut cli = Background::spawn(daemon.home.path(), &["exec", "local", "sh", "-c", "echo first; sleep 100"]);
    assert_eq!(cli.wait_line("first", Duration::from_secs(20)), "first");
    assert!(cli.running(), "still running");
    assert_eq!(jobs(&daemon).len(), 1);
    cli.signal(libc::SIGKILL);
    cli.wait(Duration::from_secs(10));
    wait_until(Duration::from_secs(5), "the remote job ended with the CLI", || jobs(&daemon).is_empty());
}

#[test]
fn loopsy_exec_options_json_timeout_and_cwd() {
    let daemon = Daemon::start("cli-exec-json");
    let run = daemon.loopsy(&["exec", "--json", "--cwd", "/tmp", "local", "sh", "-c", "pwd; exit 4"]).code(4);
    let result = run.json();
    assert_eq!(result["stdout"], "/tmp\n");
    assert_eq!(result["exitCode"], 4);
    daemon.loopsy(&["exec", "--timeout", "300", "local", "sleep", "100"]).code(143);
    let run = daemon.loopsy(&["exec", "--json", "--timeout", "300", "local", "sleep", "100"]).code(143);
    assert_eq!(run.json()["signal"], "SIGTERM");
    let address = format!("127.0.0.1:{}", daemon.port);
    let run = daemon.loopsy(&["exec", "--key", &daemon.key, &address, "echo", "by", "address"]).success();
    assert_eq!(run.stdout, "by address\n");
}

#[test]
fn loopsy_exec_errors_are_clear_and_exit_2() {
    let daemon = Daemon::start("cli-exec-errors");
    daemon.loopsy(&["exec", "local", "rm", "-rf", "/tmp/nothing"]).code(2).stderr_has("Command 'rm' is denied");
    daemon.loopsy(&["exec", "local", "no-such-program-xyz"]).code(2).stderr_has("not found on PATH");
    daemon.loopsy(&["exec", "--key", "wrong-key-000000000000", "local", "true"]).code(2).stderr_has("Invalid API key");
    daemon.loopsy(&["exec", "local"]).code(2).stderr_has("missing the command");
    // Port 1 on loopback: nothing listens there.
    daemon.loopsy(&["exec", "127.0.0.1:1", "true"]).code(2).stderr_has("cannot reach");

    let idle = Home::new("cli-exec-nodaemon");
    idle.loopsy(&["exec", "local", "true"]).code(2).stderr_has("not running");
}

#[test]
fn a_quiet_stream_sends_heartbeat_comments() {
    let daemon = Daemon::start("exec-heartbeat");
    let mut stream = daemon.req("POST", STREAM).json(&json!({"command": "sleep", "args": ["100"]})).stream();
    let started = Instant::now();
    let mut line = String::new();
    while line.trim_end() != ": ping" {
        line.clear();
        assert!(stream.body.read_line(&mut line).unwrap() > 0, "the stream ended early");
        assert!(started.elapsed() < Duration::from_secs(20), "no heartbeat within 20 s");
    }
    assert!(started.elapsed() >= Duration::from_secs(5), "heartbeats only after a quiet spell");
    stream.close();
    wait_until(Duration::from_secs(5), "the job ended", || jobs(&daemon).is_empty());
}

// See: #13 (item 9).
#[test]
fn a_timeout_beyond_execution_max_timeout_is_refused_and_one_within_it_runs() {
    let home = Home::new("exec-max-timeout");
    home.edit_config(|doc| doc["execution"]["maxTimeout"] = 400_000.into());
    let daemon = home.start();
    for endpoint in [EXECUTE, STREAM] {
        let body = json!({"command": "echo", "args": ["never"], "timeout": 400_001});
        let message = daemon.req("POST", endpoint).json(&body).send().expect_error(400, 9003);
        assert!(message.contains("execution.maxTimeout") && message.contains("400000"), "{message}");
    }
    assert!(jobs(&daemon).is_empty());
    let result = execute(&daemon, json!({"command": "echo", "args": ["ok"], "timeout": 400_000}));
    assert_eq!(result["stdout"], "ok\n");
    // The default cap is an hour; a 1.0.21 client asking for a day is told so.
    let default = Daemon::start("exec-max-timeout-default");
    let message = default
        .req("POST", EXECUTE)
        .json(&json!({"command": "true", "timeout": 86_400_000}))
        .send()
        .expect_error(400, 9003);
    assert!(message.contains("3600000"), "{message}");
    default.loopsy(&["exec", "--timeout", "86400000", "local", "true"]).code(2).stderr_has("execution.maxTimeout");
}

#[test]
fn a_config_whose_default_timeout_exceeds_the_cap_is_refused_at_start() {
    let home = Home::new("exec-max-timeout-config");
    home.edit_config(|doc| doc["execution"]["maxTimeout"] = 1000.into());
    home.loopsy(&["start", "--foreground"]).code(2).stderr_has("execution.defaultTimeout");
}

#[test]
fn a_relative_cwd_is_refused_and_nothing_runs() {
    let daemon = Daemon::start("exec-relative-cwd");
    for cwd in ["tmp", ".", "./", "../tmp", "~"] {
        for endpoint in [EXECUTE, STREAM] {
            let body = json!({"command": "pwd", "cwd": cwd});
            let message = daemon.req("POST", endpoint).json(&body).send().expect_error(400, 9003);
            assert!(message.contains("'cwd' must be an absolute path"), "{cwd}: {message}");
        }
    }
    assert_eq!(execute(&daemon, json!({"command": "pwd", "cwd": "/"}))["stdout"], "/\n");
    assert_eq!(daemon.get("/api/v1/status").expect(200)["jobs"]["total"], 1, "only the absolute one ran");
}

#[test]
fn a_denied_name_refuses_its_whole_family_and_nothing_runs() {
    // Stand-ins on PATH that would leave a mark if they ran.
    let bin = crate::support::TempDir::new("exec-family-bin");
    let mark = bin.path().join("ran");
    for name in ["mkfs.ext4", "mke2fs", "mkswap", "poweroff", "systemctl", "shred"] {
        let script = bin.path().join(name);
        std::fs::write(&script, format!("#!/bin/sh\necho {name} >> '{}'\n", mark.display())).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let daemon = Daemon::start("exec-family");
    let path = format!("{}:/usr/bin:/bin", bin.path().display());
    let cases = [
        (json!({"command": "mkfs.ext4", "args": ["/dev/sdz1"]}), "Command 'mkfs.ext4' is denied (as 'mkfs'"),
        (json!({"command": "mke2fs", "args": ["/dev/sdz1"]}), "Command 'mke2fs' is denied (as 'mkfs'"),
        (json!({"command": "sh", "args": ["-c", "mkswap /dev/sdz2"]}), "Command 'mkswap' is denied"),
        (json!({"command": "systemctl", "args": ["poweroff"]}), "Command 'poweroff' is denied (as 'shutdown'"),
        (json!({"command": "poweroff"}), "Command 'poweroff' is denied"),
        (json!({"command": "shred", "args": ["-u", "x"]}), "Command 'shred' is denied (as 'rm'"),
    ];
    for (mut body, expected) in cases {
        body["env"] = json!({"PATH": path});
        for endpoint in [EXECUTE, STREAM] {
            let message = daemon.req("POST", endpoint).json(&body).send().expect_error(403, 3001);
            assert!(message.starts_with(expected), "{body}: {message}");
        }
    }
    assert!(!mark.exists(), "a denied program ran: {:?}", std::fs::read_to_string(&mark));
    let allowed = json!({"command": "systemctl", "args": ["status"], "env": {"PATH": path}});
    assert_eq!(execute(&daemon, allowed)["exitCode"], 0, "systemctl itself is not denied");
    assert_eq!(std::fs::read_to_string(&mark).unwrap(), "systemctl\n");
}

#[test]
fn commands_never_see_the_daemons_variables_or_keys_even_keys_added_later() {
    let later_key = "later-peer-key-0123456789abcdef";
    let mut home = Home::new("exec-secrets");
    let own_key = home.key();
    for (name, value) in [
        ("LOOPSY_API_KEY", own_key.as_str()),
        ("LOOPSY_SOMETHING", "daemon-only"),
        ("MY_TOKEN", own_key.as_str()),
        ("AUTH_HEADER", &format!("Authorization: Bearer {own_key}")),
        ("LATER", later_key),
        ("ORDINARY", "visible"),
    ] {
        home.env.push((name.into(), value.into()));
    }
    let daemon = home.start();
    let env_of = |endpoint: &str| -> String {
        let body = json!({"command": "env", "env": {"FROM_REQUEST": "yes"}});
        let res = daemon.req("POST", endpoint).json(&body).send();
        assert_eq!(res.status, 200, "{}", res.text());
        if endpoint == EXECUTE {
            res.json()["stdout"].as_str().unwrap().to_string()
        } else {
            res.text()
        }
    };
    for endpoint in [EXECUTE, STREAM] {
        let env = env_of(endpoint);
        assert!(env.contains("ORDINARY=visible") && env.contains("FROM_REQUEST=yes"), "{env}");
        assert!(env.contains(&format!("LATER={later_key}")), "not a key yet: {env}");
        assert!(!env.contains("LOOPSY_"), "{endpoint}: {env}");
        assert!(!env.contains(&own_key), "{endpoint}: the daemon's key reached the command: {env}");
    }
    // The key becomes one of the daemon's (a pairing or a hand edit): from now on it is kept back.
    daemon.home.edit_config(|doc| doc["auth"]["allowedKeys"]["carol"] = later_key.into());
    for endpoint in [EXECUTE, STREAM] {
        let env = env_of(endpoint);
        assert!(env.contains("ORDINARY=visible") && !env.contains(later_key), "{endpoint}: {env}");
    }
}
