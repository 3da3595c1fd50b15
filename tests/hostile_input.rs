//! Nothing a peer sends can panic a handler: ids, keys and names of every format a peer can
//! choose, sent to every route that parses one, get an answer (a JSON error at worst), and the
//! daemon keeps serving everyone else.
//!
//! See: #13 (a peer wrote an inbox entry whose id had a non-ASCII character; from then on every
//! inbox request on that node lost its connection until the key was deleted by hand).

use serde_json::{json, Value};

use crate::support::{Daemon, Home, Request, Response};

const PEER_KEY: &str = "peer-key-0123456789abcdef0123456789";

/// Ids a peer may choose, each aimed at a way a parser can break: a multi-byte character where a
/// byte slice would cut it, 36 bytes that are not a UUID, controls, traversal, percent signs,
/// upper case, and length.
fn hostile_ids() -> Vec<String> {
    let mut ids: Vec<String> = [
        "1-abé0000",
        "1-é-00ff",
        "1-a-00f🙂",
        "é",
        "\u{202e}1-a-00ff",
        "1-a-00ff\u{0}",
        "1-a-00FF",
        "%",
        "%zz",
        "%FF",
        "..",
        "../../etc/passwd",
        "a/b",
        " ",
        "",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    ids.push("é".repeat(18)); // 36 bytes, the length of a node id
    ids.push("🙂".repeat(9));
    ids.push(format!("{}é", "a".repeat(35)));
    // Long, yet short enough that a request line holding it stays within the head limit.
    ids.push("x".repeat(3000));
    ids
}

/// Every byte outside the unreserved set as `%XX`, so any id fits in a request line.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A daemon called `box.lan` that accepts `PEER_KEY` from a legacy peer named `carol`.
fn daemon(name: &str) -> Daemon {
    let home = Home::new(name);
    home.edit_config(|doc| {
        doc["server"]["hostname"] = "box.lan".into();
        doc["auth"]["allowedKeys"]["carol"] = PEER_KEY.into();
    });
    home.start()
}

/// The request went through and was answered as a client error at worst: never a lost
/// connection, never a 500, and every error is JSON.
#[track_caller]
fn answered(request: Request, what: &str) -> Response {
    let response = request.try_send().unwrap_or_else(|e| panic!("{what}: the connection was lost: {e}"));
    assert!(response.status < 500, "{what}: status {}: {}", response.status, response.text());
    if response.status >= 400 {
        let body: Value = serde_json::from_slice(&response.body)
            .unwrap_or_else(|_| panic!("{what}: status {} without a JSON error: {}", response.status, response.text()));
        assert!(body.get("error").is_some(), "{what}: {body}");
    }
    response
}

#[track_caller]
fn no_panic_logged(d: &Daemon) {
    let output = d.output.lock().unwrap();
    assert!(!output.iter().any(|line| line.contains("panicked")), "a handler panicked: {output:#?}");
}

/// The envelope a peer would write, carrying `id`.
fn envelope(id: &str) -> String {
    json!({"from": "carol.lan", "to": "box.lan", "ts": 1_700_000_000_000u64, "id": id, "type": "chat", "body": "hi"})
        .to_string()
}

// See: #13.
#[test]
fn an_inbox_entry_with_a_non_ascii_id_is_skipped_and_the_inbox_keeps_working() {
    let d = daemon("hostile-inbox");
    let bad = "1-abé0000";
    let good = "1700000000001-carol.lan-00ff";
    for id in [bad, good] {
        let key = encode(&format!("inbox:box.lan:{id}"));
        d.req("PUT", &format!("/api/v1/context/{key}"))
            .key(PEER_KEY)
            .json(&json!({"value": envelope(id), "ttl": 3600}))
            .send()
            .expect(200);
    }
    for _ in 0..3 {
        let inbox = answered(d.req("GET", "/api/v1/messages/inbox"), "inbox").expect(200);
        let ids: Vec<&str> = inbox["messages"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
        assert_eq!(ids, [good], "the entry with the non-ASCII id is not a message: {inbox}");
    }
    let text = d.loopsy(&["message", "inbox"]).success();
    assert!(text.stdout.contains(good) && !text.stdout.contains(bad), "{}", text.stdout);
    let refused = answered(d.req("POST", "/api/v1/messages/ack").json(&json!({"id": bad})), "ack");
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(refused.json()["error"]["message"].as_str().unwrap().contains("is not a message id"));
    let refused = answered(
        d.req("POST", "/api/v1/messages/ack").json(&json!({"key": format!("inbox:box.lan:{bad}")})),
        "ack by key",
    );
    assert!(refused.json()["error"]["message"].as_str().unwrap().contains("not hold a valid message"));
    no_panic_logged(&d);
}

/// Every route that takes an id, key or name from the caller, with every hostile id, from the
/// owner (so the request reaches the parser) and from a legacy peer.
#[test]
fn every_peer_supplied_id_format_gets_an_answer_at_every_parser() {
    let d = daemon("hostile-ids");
    let dir = crate::support::TempDir::new("hostile-ids-files");
    let dest = dir.path().join("upload.bin");
    let dest = dest.to_str().unwrap();
    for id in hostile_ids() {
        let e = encode(&id);
        let short: String = id.chars().take(12).collect();
        for key in [d.key.as_str(), PEER_KEY] {
            let who = if key == PEER_KEY { "peer" } else { "owner" };
            let req = |method: &str, path: &str| Request::new(&d.addr, method, path).key(key);
            let what = |route: &str| format!("{who} {route} with {short:?}");
            // Context: keys, prefixes, inbox entries carrying the id, the writer's node id.
            answered(req("PUT", &format!("/api/v1/context/{e}")).json(&json!({"value": "v"})), &what("PUT context"));
            answered(req("GET", &format!("/api/v1/context/{e}")), &what("GET context"));
            let revision = encode(&short);
            answered(req("DELETE", &format!("/api/v1/context/{e}?ifRevision={revision}")), &what("DELETE context"));
            answered(req("GET", &format!("/api/v1/context?prefix={e}")), &what("list context"));
            let inbox_key = encode(&format!("inbox:box.lan:{id}"));
            answered(
                req("PUT", &format!("/api/v1/context/{inbox_key}"))
                    .header("X-Loopsy-Node-Id", &e)
                    .json(&json!({"value": envelope(&id), "ttl": 60})),
                &what("PUT inbox entry"),
            );
            // Messages.
            answered(req("GET", "/api/v1/messages/inbox"), &what("inbox"));
            answered(req("POST", "/api/v1/messages/ack").json(&json!({"id": id})), &what("ack by id"));
            answered(req("POST", "/api/v1/messages/ack").json(&json!({"key": id})), &what("ack by key"));
            answered(req("GET", &format!("/api/v1/messages/status?peer={e}")), &what("message status"));
            answered(req("POST", "/api/v1/messages").json(&json!({"to": id, "body": "x"})), &what("send"));
            // Exec jobs and AI tasks.
            answered(req("DELETE", &format!("/api/v1/execute/{e}")), &what("cancel job"));
            answered(req("GET", &format!("/api/v1/ai-tasks/{e}")), &what("task"));
            answered(req("GET", &format!("/api/v1/ai-tasks/{e}/events")), &what("task events"));
            answered(
                req("POST", &format!("/api/v1/ai-tasks/{e}/approve")).json(&json!({"requestId": id, "approved": true})),
                &what("approve"),
            );
            answered(req("DELETE", &format!("/api/v1/ai-tasks/{e}")), &what("cancel task"));
            // Transfers: upload ids, paths.
            answered(req("GET", &format!("/api/v1/transfer/uploads/{e}?destPath={dest}")), &what("upload status"));
            answered(req("DELETE", &format!("/api/v1/transfer/uploads/{e}?destPath={dest}")), &what("cancel upload"));
            answered(push_with_upload_id(req("POST", "/api/v1/transfer/push"), dest, &id), &what("push"));
            for route in ["pull", "list", "mkdir"] {
                answered(req("POST", &format!("/api/v1/transfer/{route}")).json(&json!({"path": id})), &what(route));
            }
            // The registry and the handshake.
            answered(req("DELETE", &format!("/api/v1/peers/{e}")), &what("remove peer"));
            answered(
                req("POST", "/api/v1/peers").json(&json!({"address": id, "nodeId": id, "hostname": id, "name": id})),
                &what("add peer"),
            );
            let handshake =
                json!({"nodeId": id, "hostname": id, "platform": id, "version": id, "port": 1, "capabilities": [id]});
            answered(req("POST", "/api/v1/peers/handshake").json(&handshake), &what("handshake"));
            // Dashboard targets.
            answered(req("GET", &format!("/api/v1/dashboard/proxy/{e}/api/v1/status")), &what("proxy target"));
            answered(req("GET", &format!("/api/v1/dashboard/proxy/peer%3A{e}/api/v1/status")), &what("proxy peer"));
        }
        // Pairing (no key) and keys themselves.
        let anon = |path: &str| Request::new(&d.addr, "POST", path);
        answered(anon("/api/v1/pair/spake2").json(&json!({"share": id})), "spake2");
        answered(anon("/api/v1/pair/exchange").json(&json!({"confirm": id, "offer": id})), "exchange");
        answered(anon("/api/v1/pair/finish").json(&json!({"confirmed": true, "tag": id})), "finish");
        answered(Request::new(&d.addr, "GET", "/api/v1/status").key(&e), "a key");
    }
    // Everyone else is still served, and the inbox still lists what is valid.
    d.get("/api/v1/health").expect(200);
    let inbox = d.get("/api/v1/messages/inbox").expect(200);
    for message in inbox["messages"].as_array().unwrap() {
        let id = message["id"].as_str().unwrap();
        assert!(id.is_ascii(), "only valid ids are listed: {id:?}");
    }
    no_panic_logged(&d);
}

/// A multipart push whose `uploadId` field is `id`, with a small file part.
fn push_with_upload_id(request: Request, dest: &str, id: &str) -> Request {
    let boundary = "hostile-boundary-7d3f";
    let mut body = Vec::new();
    for (name, value) in [("destPath", dest), ("uploadId", id), ("offset", "0")] {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\
             Content-Type: application/octet-stream\r\n\r\nhello\r\n--{boundary}--\r\n"
        )
        .as_bytes(),
    );
    request.header("Content-Type", &format!("multipart/form-data; boundary={boundary}")).body(body)
}

/// Header lines a peer may send that are not visible ASCII (raw UTF-8, Latin-1, bytes that are
/// no text at all, control characters), in names and values, on a public and on a keyed route.
fn hostile_header_lines() -> Vec<(String, Vec<u8>)> {
    let mut lines: Vec<(String, Vec<u8>)> = Vec::new();
    for (what, value) in [
        ("UTF-8 value", "café".as_bytes().to_vec()),
        ("emoji value", "🙂".as_bytes().to_vec()),
        ("Latin-1 value", b"caf\xe9".to_vec()),
        ("bytes that are no text", b"\xff\xfe\x80".to_vec()),
        ("a control character", b"a\x01b".to_vec()),
        ("a bare CR", b"a\rb".to_vec()),
    ] {
        for name in ["X-Test", "Idempotency-Key", "X-Loopsy-Node-Id", "Last-Event-ID", "Authorization"] {
            let mut line = format!("{name}: ").into_bytes();
            if name == "Authorization" {
                line.extend_from_slice(b"Bearer ");
            }
            line.extend_from_slice(&value);
            lines.push((format!("{name} with {what}"), line));
        }
    }
    let mut name = b"X-T".to_vec();
    name.extend_from_slice("é".as_bytes());
    name.extend_from_slice(b"st: x");
    lines.push(("a non-ASCII header name".into(), name));
    lines
}

// See: #17 (a header value that is not ASCII panicked the connection's task inside async-h1).
#[test]
fn a_header_that_is_not_ascii_gets_a_400_json_error_and_the_daemon_keeps_serving() {
    let d = daemon("hostile-headers");
    for (path, body) in [("/api/v1/health", None), ("/api/v1/execute", Some(r#"{"command":"true"}"#))] {
        for (what, line) in hostile_header_lines() {
            let mut request = format!(
                "{} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n",
                if body.is_some() { "POST" } else { "GET" },
                d.addr,
                d.key
            )
            .into_bytes();
            request.extend_from_slice(&line);
            request.extend_from_slice(b"\r\n");
            if let Some(body) = body {
                request.extend_from_slice(
                    format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()).as_bytes(),
                );
            }
            request.extend_from_slice(b"\r\n");
            request.extend_from_slice(body.unwrap_or_default().as_bytes());
            let mut connection = crate::support::http::Connection::open(&d.addr, std::time::Duration::from_secs(10));
            connection.write(&request).unwrap();
            let response = connection
                .read_response("GET")
                .unwrap_or_else(|e| panic!("{path}, {what}: the connection was lost without an answer: {e}"));
            let message = response.expect_error(400, 9003);
            assert!(message.contains("request header holds the byte"), "{path}, {what}: {message}");
            assert_eq!(response.header("connection"), Some("close"), "{path}, {what}");
        }
    }
    // The daemon is up, serves everyone, and ran nothing for the refused requests.
    d.get("/api/v1/health").expect(200);
    d.req("POST", "/api/v1/execute").json(&json!({"command": "true"})).send().expect(200);
    assert!(d.get("/api/v1/execute/jobs").expect(200)["jobs"].as_array().unwrap().is_empty());
    // Percent-encoding is the way to send such text, and goes through.
    let answer = d.req("GET", "/api/v1/health").header("X-Test", "caf%C3%A9").send();
    answer.expect(200);
    no_panic_logged(&d);
}

#[test]
fn a_pairing_host_name_that_fails_idna_is_refused_not_a_lost_connection() {
    let d = daemon("hostile-idna");
    for address in ["xn--zz", "xn--zz.lan", "a..b", "bad host"] {
        let body = json!({"address": address, "port": 19532, "code": "123456"});
        let response = answered(d.req("POST", "/api/v1/pair/join").json(&body), address);
        assert_eq!(response.status, 400, "{address}: {}", response.text());
    }
    d.get("/api/v1/health").expect(200);
    // The CLI's peer resolution refuses it too, with a message instead of a panic.
    let out = d.loopsy(&["exec", "xn--zz:19532", "--", "true"]);
    assert_ne!(out.code, 101, "the CLI panicked: {}", out.stderr);
    no_panic_logged(&d);
}
